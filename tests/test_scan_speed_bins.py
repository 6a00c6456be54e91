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
