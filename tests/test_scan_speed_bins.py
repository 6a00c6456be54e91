"""lifting.bin_boxes (a counting sort in the lift kernel) against its NumPy reference, and
the scan's search grid shared by keep_face and fit_template."""
import numpy as np
import pytest

from coverage import lifting, proximity


def _same(a, b):
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


def test_bin_boxes_by_hand():
    # a 3 x 2 grid of unit cells from (0, 0); cells numbered u fastest: row v=0 is 0 1 2
    boxes_lo = np.array([[0.5, 0.5], [1.2, 0.1], [-4.0, 1.5], [2.5, 9.0]])
    boxes_hi = np.array([[1.5, 0.6], [1.3, 1.9], [0.2, 1.7], [7.0, 9.5]])
    start, items = lifting.bin_boxes(boxes_lo, boxes_hi, np.zeros(2), 1.0, (3, 2))
    # box 0: cells 0, 1; box 1: cells 1, 4; box 2 (clipped): cell 3; box 3 (clipped): cell 5
    cells = [items[start[c]:start[c + 1]].tolist() for c in range(6)]
    assert cells == [[0], [0, 1], [], [2], [1], [3]]
    assert _same((start, items), lifting.bin_boxes_reference(boxes_lo, boxes_hi, np.zeros(2), 1.0, (3, 2)))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bin_boxes_equals_reference_on_random_boxes(d, seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        m = int(rng.integers(0, 400))
        lo = rng.uniform(-12.0, 12.0, (m, d))
        hi = lo + rng.uniform(0.0, 6.0, (m, d))
        if m > 10:
            # boxes outside the grid, NaN (clip to cell 0, as NumPy's cast does) and huge
            # values past int64 (NumPy's cast gives INT64_MIN there: clipped to 0 as well)
            hi[:3] = lo[:3] = -50.0
            lo[3, 0] = hi[3, 0] = np.nan
            lo[4, -1] = -1e30
            lo[5] = hi[5] = 1.0   # a point: one cell
            lo[6, 0] = hi[6, 0] = 1e30
        origin = rng.uniform(-10.0, 0.0, d)
        cell = float(rng.uniform(0.3, 4.0))
        shape = tuple(int(x) for x in rng.integers(1, 12, d))
        with np.errstate(invalid="ignore"):
            reference = lifting.bin_boxes_reference(lo, hi, origin, cell, shape)
        assert _same(lifting.bin_boxes(lo, hi, origin, cell, shape), reference)


def test_bin_boxes_on_a_mesh_grid_equals_reference(rng):
    vertices = rng.uniform(0.0, 30.0, (300, 3))
    faces = rng.integers(0, 300, (500, 3))
    grid = proximity.build_grid(vertices, faces)
    corners = vertices[faces]
    reference = lifting.bin_boxes_reference(corners.min(axis=1), corners.max(axis=1), grid.origin, grid.cell,
                                            tuple(int(x) for x in grid.dims))
    assert _same((grid.start, grid.items), reference)


def test_fit_template_with_the_shared_grid_is_the_same(default_face):
    from coverage import scan, synthetic
    from coverage import template as _template

    made = synthetic.make_scan(default_face, units="mm", pitch_mm=2.0, seed=3)
    vertices, faces, _ = scan.repair_mesh(made.vertices, made.faces)
    grid = proximity.build_grid(vertices, faces)
    tpl = _template.template(default_face.subdivisions)
    own = scan.fit_template(vertices, faces, made.landmarks, tpl, tolerance_mm=4.0, smoothing=1.0)
    shared = scan.fit_template(vertices, faces, made.landmarks, tpl, tolerance_mm=4.0, smoothing=1.0, grid=grid)
    for name in ("vertices", "unobserved", "distance", "pose"):
        assert np.array_equal(getattr(own, name), getattr(shared, name))


def test_kept_grid_answers_as_a_fresh_grid(rng):
    from coverage import scan

    # a sheet of triangles plus far specks; keep a random half of the triangles
    vertices = rng.uniform(0.0, 40.0, (600, 3))
    vertices[:, 2] *= 0.1
    faces = rng.integers(0, 600, (900, 3))
    kept = rng.random(900) < 0.6
    grid = proximity.build_grid(vertices, faces)
    small_v, small_f = scan._compact(vertices, faces[kept])
    sub = scan.kept_grid(grid, kept, small_v, small_f)
    fresh = proximity.build_grid(small_v, small_f)
    np.testing.assert_array_equal(sub.triangles, fresh.triangles)
    for c in range(len(sub.start) - 1):   # ascending within every cell
        assert np.all(np.diff(sub.items[sub.start[c]:sub.start[c + 1]]) > 0)
    query = rng.uniform(-5.0, 45.0, (3000, 3))
    query[:200] = small_v[rng.integers(0, len(small_v), 200)]    # ties on shared vertices
    for max_dist in (2.0, np.inf):
        a = proximity.closest_points(sub, query, max_dist=max_dist)
        b = proximity.closest_points(fresh, query, max_dist=max_dist)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_kept_grid_by_hand():
    from coverage import scan

    # two triangles in one cell, the first dropped: the cell lists the second as triangle 0
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, 0], [0.8, 0.2, 0], [0.2, 0.8, 0]])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    grid = proximity.build_grid(vertices, faces, cell=10.0)
    assert grid.items.tolist() == [0, 1]
    sub = scan.kept_grid(grid, np.array([False, True]), vertices[3:], np.array([[0, 1, 2]]))
    assert sub.items.tolist() == [0] and sub.start.tolist() == [0, 1]
    tri, _, dist = proximity.closest_points(sub, np.array([[0.3, 0.3, 1.0]]))
    assert tri.tolist() == [0] and dist.tolist() == [1.0]


def test_chart_grid_boxes_corner_by_corner_equal_min_max(rng):
    from scipy.spatial import Delaunay

    uv = rng.uniform(-50, 50, (500, 2))
    faces = Delaunay(uv).simplices.astype(np.int64)
    grid = lifting.build_grid(uv, faces)
    corners = uv[faces]
    start, items = lifting.bin_boxes_reference(corners.min(axis=1), corners.max(axis=1), grid.origin, grid.cell,
                                               grid.shape)
    np.testing.assert_array_equal(grid.start, start)
    np.testing.assert_array_equal(grid.items, items)
    np.testing.assert_array_equal(grid.affine, lifting.inverse_affine(corners))


@pytest.mark.parametrize("cell", [0.1, 0.3, 1.0 / 3.0, 1.8484447346695672, 2.0])
def test_bin_boxes_on_cell_edges_equals_reference(cell):
    # box ends on the cells' edges or one rounding either side of them: where the kernel's
    # product by 1 / cell and the reference's quotient could fall on different sides of
    # an integer, the kernel divides too
    rng = np.random.default_rng(5)
    origin = np.array([-1.3, 0.7, 2.1])
    edge = origin + rng.integers(-2, 14, (400, 3)) * cell
    lo = np.nextafter(edge, edge + rng.choice([-1.0, 0.0, 1.0], edge.shape))
    far = edge + rng.integers(0, 3, (400, 3)) * cell
    hi = np.maximum(lo, np.nextafter(far, far + rng.choice([-1.0, 0.0, 1.0], far.shape)))
    reference = lifting.bin_boxes_reference(lo, hi, origin, cell, (12, 12, 12))
    assert _same(lifting.bin_boxes(lo, hi, origin, cell, (12, 12, 12)), reference)
