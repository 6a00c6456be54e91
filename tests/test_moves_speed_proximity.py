"""The guided closest-point search (``proximity.closest_points_guessed``: each search
bounded from the start by a guessed triangle, cells skipped by their boxes cut to their
triangles): the same answers, bit for bit, as ``closest_points``, whatever the guesses, and
the NumPy reference's distances."""
import numpy as np
import pytest
import trimesh

from coverage import proximity


def _noisy_sphere(seed):
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=30.0)
    vertices = sphere.vertices * rng.uniform(0.9, 1.1, (len(sphere.vertices), 1))
    return rng, np.ascontiguousarray(vertices), np.ascontiguousarray(sphere.faces, dtype=np.int64)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _guesses(rng, n, m):
    """Good, bad, none and out-of-range guesses, mixed."""
    return np.where(rng.random(n) < 0.2, -1, rng.integers(-3, m + 3, n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_guessed_search_matches_reference_and_plain_search(seed):
    rng, vertices, faces = _noisy_sphere(seed)
    query = rng.normal(size=(3000, 3)) * 25.0
    query[:20] = np.nan
    query[20:25] = [np.inf, 0.0, 0.0]
    for cell in (None, 3.0, 9.0):
        grid = proximity.build_grid(vertices, faces, cell)
        plain = proximity.closest_points(grid, query)
        for guess in (None, _guesses(rng, len(query), len(faces)), plain[0]):
            got = proximity.closest_points_guessed(grid, query, guess)
            assert _same(got, plain)
    tri_ref, bary_ref, dist_ref = proximity.closest_points_reference(vertices, faces, query)
    tri, bary, dist = proximity.closest_points_guessed(proximity.build_grid(vertices, faces), query)
    found = tri >= 0
    assert found[25:].all() and not found[:25].any()
    np.testing.assert_allclose(dist[found], dist_ref[found], atol=1e-9)
    p = np.einsum("kj,kjd->kd", bary[found], vertices[faces[tri[found]]])
    p_ref = np.einsum("kj,kjd->kd", bary_ref[found], vertices[faces[tri_ref[found]]])
    np.testing.assert_allclose(p, p_ref, atol=1e-7)


@pytest.mark.parametrize("max_dist", [0.5, 4.0, 12.0])
def test_guessed_search_with_a_limit(max_dist):
    rng, vertices, faces = _noisy_sphere(3)
    query = rng.normal(size=(2000, 3)) * 40.0
    grid = proximity.build_grid(vertices, faces)
    plain = proximity.closest_points(grid, query, max_dist)
    assert 0 < (plain[0] >= 0).sum() < len(query)
    for guess in (None, _guesses(rng, len(query), len(faces))):
        assert _same(proximity.closest_points_guessed(grid, query, guess, max_dist), plain)
    tri_ref, _, dist_ref = proximity.closest_points_reference(vertices, faces, query, max_dist=max_dist)
    np.testing.assert_array_equal(plain[0] >= 0, tri_ref >= 0)


def test_guessed_search_in_any_order_and_batch():
    """Small batches are searched as given, big ones in grid order; queries along a path
    (each guessing its neighbour's answer) and shuffled ones, ties on vertices included."""
    rng, vertices, faces = _noisy_sphere(5)
    path = np.linspace([-50.0, -40.0, -30.0], [45.0, 50.0, 35.0], 700) + rng.normal(0.0, 0.3, (700, 3))
    query = np.concatenate([path, vertices[rng.integers(0, len(vertices), 300)],
                            rng.normal(size=(600, 3)) * 30.0, [[1e6, 0.0, 0.0]]])
    grid = proximity.build_grid(vertices, faces)
    plain = proximity.closest_points(grid, query)
    assert _same(proximity.closest_points_guessed(grid, query), plain)
    shuffle = rng.permutation(len(query))
    assert _same(proximity.closest_points_guessed(grid, query[shuffle]), [x[shuffle] for x in plain])
    for i in range(0, len(query), 97):
        part = slice(i, i + 97)
        assert _same(proximity.closest_points_guessed(grid, query[part], plain[0][part][::-1]),
                     [x[part] for x in plain])


def test_guessed_search_on_the_face_from_the_air(default_face):
    """Points a few millimetres off the skin, as the moves search them, on the face's own grid
    and a coarser one; each guessing where it was a little earlier."""
    rng = np.random.default_rng(7)
    pick = rng.choice(len(default_face.vertices), 3000)
    points = default_face.vertices[pick] + default_face.normals[pick] * rng.uniform(-2.0, 15.0, (3000, 1))
    grid = default_face.surface_grid
    for g in (grid, proximity.build_grid(grid.vertices, grid.faces, cell=2.0 * grid.cell)):
        plain = proximity.closest_points(g, points)
        moved = proximity.closest_points(g, points + rng.normal(0.0, 0.5, points.shape))[0]
        for guess in (None, moved):
            assert _same(proximity.closest_points_guessed(g, points, guess), plain)
        for max_dist in (4.0, 11.0):
            assert _same(proximity.closest_points_guessed(g, points, moved, max_dist),
                         proximity.closest_points(g, points, max_dist))


def test_cell_boxes_hold_their_triangles_parts():
    """Each cell's cut box holds the part of every box binned in it that lies in the cell."""
    _, vertices, faces = _noisy_sphere(6)
    grid = proximity.build_grid(vertices, faces, cell=4.0)
    boxes, cells = grid.item_boxes, grid.cell_boxes
    np.testing.assert_array_equal(boxes, grid.triangles[grid.items, :6])
    owner = np.repeat(np.arange(len(grid.start) - 1), np.diff(grid.start))
    nx, ny = int(grid.dims[0]), int(grid.dims[1])
    xyz = np.stack([owner % nx, owner // nx % ny, owner // (nx * ny)], axis=1).astype(np.float64)
    lo, hi = grid.origin + xyz * grid.cell, grid.origin + (xyz + 1) * grid.cell
    part_lo, part_hi = np.maximum(lo, boxes[:, :3]), np.minimum(hi, boxes[:, 3:])
    inside = (part_lo <= part_hi).all(axis=1)
    assert inside.mean() > 0.99
    assert (cells[owner[inside], :3] <= part_lo[inside]).all() and (part_hi[inside] <= cells[owner[inside], 3:]).all()
    assert (cells[:, :3] <= cells[:, 3:]).all()
