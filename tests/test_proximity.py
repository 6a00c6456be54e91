"""Closest points on a mesh: kernel vs NumPy reference, hand cases, search limits."""
import types

import numpy as np
import pytest
import trimesh

from coverage import proximity


def _unit_triangle():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return vertices, np.array([[0, 1, 2]])


@pytest.mark.parametrize("query, expect_bary, expect_dist", [
    ([0.25, 0.25, 2.0], [0.5, 0.25, 0.25], 2.0),            # above the interior
    ([-1.0, -1.0, 0.0], [1.0, 0.0, 0.0], np.sqrt(2.0)),     # beyond vertex 0
    ([0.5, -3.0, 4.0], [0.5, 0.5, 0.0], 5.0),               # beside edge 0-1 (3-4-5)
    ([2.0, 2.0, 0.0], [0.0, 0.5, 0.5], np.sqrt(4.5)),       # beside the hypotenuse
])
def test_closest_point_by_hand(query, expect_bary, expect_dist):
    vertices, faces = _unit_triangle()
    grid = proximity.build_grid(vertices, faces, cell=0.3)
    tri, bary, dist = proximity.closest_points(grid, np.array([query]))
    assert tri[0] == 0
    np.testing.assert_allclose(bary[0], expect_bary, atol=1e-12)
    np.testing.assert_allclose(dist[0], expect_dist, rtol=1e-12)


def _noisy_sphere(seed):
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=30.0)
    vertices = sphere.vertices * rng.uniform(0.9, 1.1, (len(sphere.vertices), 1))
    return rng, np.ascontiguousarray(vertices), np.ascontiguousarray(sphere.faces, dtype=np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closest_points_match_reference(seed):
    rng, vertices, faces = _noisy_sphere(seed)
    query = rng.normal(size=(3000, 3)) * 25.0
    query[:20] = np.nan
    grid = proximity.build_grid(vertices, faces)
    tri, bary, dist = proximity.closest_points(grid, query)
    tri_ref, bary_ref, dist_ref = proximity.closest_points_reference(vertices, faces, query)
    np.testing.assert_allclose(dist, dist_ref, atol=1e-9)
    found = tri >= 0
    assert found[20:].all() and not found[:20].any()
    p = np.einsum("kj,kjd->kd", bary[found], vertices[faces[tri[found]]])
    p_ref = np.einsum("kj,kjd->kd", bary_ref[found], vertices[faces[tri_ref[found]]])
    np.testing.assert_allclose(p, p_ref, atol=1e-7)
    # where the picks differ the point is a tie on a shared vertex or edge of both triangles
    differ = np.nonzero(found & (tri != tri_ref))[0]
    shared = [len(set(faces[tri[k]]) & set(faces[tri_ref[k]])) for k in differ]
    assert all(n >= 1 for n in shared)
    assert (np.sort(bary[differ], axis=1)[:, 0] < 1e-9).all()


def test_max_dist_limits_the_search():
    rng, vertices, faces = _noisy_sphere(3)
    query = rng.normal(size=(2000, 3)) * 40.0
    grid = proximity.build_grid(vertices, faces)
    _, _, full = proximity.closest_points(grid, query)
    tri, _, dist = proximity.closest_points(grid, query, max_dist=4.0)
    tri_ref, _, dist_ref = proximity.closest_points_reference(vertices, faces, query, max_dist=4.0)
    near = full < 4.0
    assert 0.05 < near.mean() < 0.95
    np.testing.assert_array_equal(tri >= 0, near)
    np.testing.assert_array_equal(tri_ref >= 0, near)
    np.testing.assert_allclose(dist[near], full[near])
    assert (dist[~near] == -1).all()


def test_grid_cell_size_does_not_change_distances():
    rng, vertices, faces = _noisy_sphere(4)
    query = rng.normal(size=(1000, 3)) * 50.0
    answers = [proximity.closest_points(proximity.build_grid(vertices, faces, cell), query)[2]
               for cell in (0.5, 4.0, 40.0)]
    for d in answers[1:]:
        np.testing.assert_allclose(d, answers[0], atol=1e-9)


def test_min_cell_raises_the_default_cell_only():
    # a unit right triangle's first edge is 1 long: the default cell is twice the median
    # first edge, 2; min_cell lifts it to 3.5 and leaves it where it is already larger
    vertices, faces = _unit_triangle()
    assert proximity.build_grid(vertices, faces).cell == 2.0
    assert proximity.build_grid(vertices, faces, min_cell=3.5).cell == 3.5
    assert proximity.build_grid(vertices, faces, min_cell=1.0).cell == 2.0
    assert proximity.build_grid(vertices, faces, cell=0.5, min_cell=1.5).cell == 1.5
    one = proximity.build_grid(vertices, faces, min_cell=3.5)
    assert tuple(one.dims) == (1, 1, 1)


def test_query_far_outside_the_grid():
    vertices, faces = _unit_triangle()
    grid = proximity.build_grid(vertices, faces)
    tri, bary, dist = proximity.closest_points(grid, np.array([[1000.0, 0.0, 0.0], [0.0, 0.0, -500.0]]))
    assert tri.tolist() == [0, 0]
    np.testing.assert_allclose(dist, [999.0, 500.0])


def test_search_order_does_not_change_answers():
    """Large batches are searched in grid order, small ones as given: the answers are the same bits."""
    rng, vertices, faces = _noisy_sphere(5)
    query = np.concatenate([rng.normal(size=(3000, 3)) * 30.0,
                            vertices[rng.integers(0, len(vertices), 500)],            # exact ties
                            [[np.nan, 0.0, 0.0], [np.inf, 1.0, 2.0], [1e6, 0.0, 0.0]]])
    assert len(query) >= proximity._SORT_MIN > 100
    grid = proximity.build_grid(vertices, faces)
    assert len(proximity.search_order(grid, query)) == len(query)
    assert len(proximity.search_order(grid, query[:100])) == 0
    # finite limits: the default one depends on the batch, and chunks must search alike
    for max_dist in (1e4, 3.0):
        whole = proximity.closest_points(grid, query, max_dist)
        parts = [proximity.closest_points(grid, query[i:i + 100], max_dist) for i in range(0, len(query), 100)]
        for got, expect in zip(whole, (np.concatenate(p) for p in zip(*parts))):
            np.testing.assert_array_equal(got, expect)
        shuffle = rng.permutation(len(query))
        for got, expect in zip(proximity.closest_points(grid, query[shuffle], max_dist), whole):
            np.testing.assert_array_equal(got, expect[shuffle])


def test_search_order_equals_the_reference(rng):
    """The kernel's order is the reference's stable sort of cell ids, NaN, infinities and
    points beyond the grid included, on grids small and large (one, two and three radix
    passes)."""
    rng2, vertices, faces = _noisy_sphere(5)
    query = np.concatenate([rng.normal(size=(5000, 3)) * 30.0,
                            vertices[rng.integers(0, len(vertices), 800)],
                            [[np.nan, 0.0, 0.0], [np.inf, 1.0, 2.0], [-np.inf, 0.0, 0.0], [1e6, -1e6, 0.0]]])
    grids = [proximity.build_grid(vertices, faces, cell=cell) for cell in (None, 50.0)]
    # search_order reads only the grid's frame: frames of 500k and 9M cells need two and three passes
    for cell, dims in ((0.8, [100, 100, 50]), (0.2, [300, 300, 100])):
        grids.append(types.SimpleNamespace(origin=np.array([-40.0, -30.0, -20.0]), cell=cell, dims=np.array(dims)))
    for grid in grids:
        got = proximity.search_order(grid, query)
        np.testing.assert_array_equal(got, proximity.search_order_reference(grid, query))
        assert sorted(got.tolist()) == list(range(len(query)))
    sizes = [int(np.prod(grid.dims)) for grid in grids]
    assert max(sizes[:2]) <= 2 ** 11 < sizes[2] <= 2 ** 22 < sizes[3]


def test_grid_keeps_each_triangle_as_one_record():
    _, vertices, faces = _noisy_sphere(6)
    grid = proximity.build_grid(vertices, faces)
    corners = vertices[faces]
    np.testing.assert_array_equal(grid.corners, corners.reshape(-1, 9))
    np.testing.assert_array_equal(grid.lo, corners.min(axis=1))
    np.testing.assert_array_equal(grid.hi, corners.max(axis=1))
    assert grid.triangles.flags.c_contiguous and grid.triangles.shape == (len(faces), 15)


def test_cell_boxes_are_the_kernels_cells_cut_to_their_triangles():
    """MeshGrid.cell_boxes, cell by cell: the kernels' box (origin + index * cell, cell id
    (z * ny + y) * nx + x), cut to the union of its triangles' boxes where that leaves one."""
    _, vertices, faces = _noisy_sphere(4)
    grid = proximity.build_grid(vertices, faces, cell=3.0)
    nx, ny, nz = (int(d) for d in grid.dims)
    boxes = grid.item_boxes
    got = grid.cell_boxes
    assert got.shape == (nx * ny * nz, 6) and got.flags.c_contiguous
    for c in range(nx * ny * nz):
        xyz = np.array([c % nx, c // nx % ny, c // (nx * ny)])
        lo = grid.origin + xyz.astype(np.float64) * grid.cell
        hi = grid.origin + (xyz + 1).astype(np.float64) * grid.cell
        k0, k1 = grid.start[c], grid.start[c + 1]
        if k1 > k0:
            clo = np.maximum(lo, boxes[k0:k1, :3].min(axis=0))
            chi = np.minimum(hi, boxes[k0:k1, 3:].max(axis=0))
            cut = clo <= chi
            lo, hi = np.where(cut, clo, lo), np.where(cut, chi, hi)
        np.testing.assert_array_equal(got[c], np.concatenate([lo, hi]))
