"""The planner's contour generator (roller.CONTOUR_OPTIONS): ContourPy's threaded algorithm on
one thread, which lets go of the GIL while it marches, must trace exactly the lines of its
serial algorithm (the one the planner used before): the same lines, points and order."""
import contourpy
import numpy as np
import pytest
from scipy import ndimage

from coverage.roller import CONTOUR_OPTIONS


def _lines(z, levels, **options):
    h, w = z.shape
    x, y = 0.25 * np.arange(w) - 3.0, 0.25 * np.arange(h) + 1.5
    gen = contourpy.contour_generator(x, y, z, **options)
    return [gen.lines(level) for level in levels]


def _same(a, b) -> bool:
    return all(len(p) == len(q) and all(u.shape == v.shape and np.array_equal(u, v) for u, v in zip(p, q))
               for p, q in zip(a, b)) and len(a) == len(b)


def test_options_are_threaded_on_one_thread():
    gen = contourpy.contour_generator(np.arange(3.0), np.arange(3.0), np.zeros((3, 3)), **CONTOUR_OPTIONS)
    assert isinstance(gen, contourpy.ThreadedContourGenerator)
    assert gen.thread_count == 1
    assert gen.line_type == contourpy.LineType.Separate


@pytest.mark.parametrize("seed", range(6))
def test_threaded_traces_the_serial_lines(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 160, size=2)
    z = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(1.0, 6.0))
    if seed % 2:
        # unobserved patches and far values, as the planner's distance rasters hold
        z[rng.random((h, w)) < 0.03] = np.nan
        z[rng.random((h, w)) < 0.01] = np.inf
    finite = z[np.isfinite(z)]
    levels = list(np.linspace(finite.min(), finite.max(), 25)[1:-1]) + [float(finite[0])]   # a level on a sample
    serial = _lines(z, levels, line_type="Separate")
    threaded = _lines(z, levels, **CONTOUR_OPTIONS)
    assert sum(len(lines) for lines in serial) > 0
    assert _same(serial, threaded)


def test_a_hand_worked_square():
    # a 3 x 3 grid, 1 in the middle: the 0.5 contour is the diamond through the edge midpoints
    z = np.zeros((3, 3))
    z[1, 1] = 1.0
    gen = contourpy.contour_generator(np.arange(3.0), np.arange(3.0), z, **CONTOUR_OPTIONS)
    (line,) = gen.lines(0.5)
    assert np.array_equal(line[0], line[-1])          # a closed loop
    assert sorted(map(tuple, line[:-1])) == [(0.5, 1.0), (1.0, 0.5), (1.0, 1.5), (1.5, 1.0)]


def test_the_planners_fields():
    # the distance to the keep-outs on the bundled face's texel grid, traced by the pen's
    # contour_lines, against the serial algorithm
    from coverage import pen as _pen
    from coverage.density import texel_grid
    from coverage.face import Face
    from coverage.zones import ZoneMap

    grid = texel_grid(ZoneMap.default(Face.default()))
    distance = _pen.distance_to(grid, (grid.tri >= 0) & (grid.label < 0))
    levels = [0.5, 1.0, 2.5, 4.0, 7.5]
    h, w = grid.shape
    x = grid.origin[0] + (np.arange(w) + 0.5) * grid.cell_mm
    y = grid.origin[1] + (np.arange(h) + 0.5) * grid.cell_mm
    serial = contourpy.contour_generator(x, y, distance, line_type="Separate")
    traced = _pen.contour_lines(grid, distance, levels)
    assert sum(len(lines) for lines in traced) > 10
    assert _same([serial.lines(level) for level in levels], traced)
