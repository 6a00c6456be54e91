"""The pen fit's needle matrix built by the compiled kernel (coverage.density.needle_columns)
against its NumPy twin (SciPy's COO conversion), on seeded random stamps and by hand."""
from types import SimpleNamespace

import numpy as np
import pytest

from coverage import pen_fit


def _grid(h, w, cell, origin=(-3.25, 7.5)):
    return SimpleNamespace(shape=(h, w), origin=np.array(origin), cell_mm=cell)


def _same(a, b):
    assert a.shape == b.shape
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data) and a.data.dtype == b.data.dtype == np.float64
    assert a.has_canonical_format


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cell", [0.5, 0.3, 1.0])
@pytest.mark.parametrize("needles", [1, 5, 12])
def test_kernel_equals_its_twin_on_random_stamps(seed, cell, needles):
    rng = np.random.default_rng(100 * seed + needles)
    grid = _grid(23, 31, cell)
    k = 200
    # stamps around the grid and past its edges, needles bunched so that several share a texel
    centres = grid.origin + rng.uniform(-2, 34, (k, 2)) * cell
    uv = (centres[:, None] + rng.normal(scale=0.8 * cell, size=(k, needles, 2))).reshape(-1, 2)
    uv[rng.random(len(uv)) < 0.02] = np.nan
    uv[rng.random(len(uv)) < 0.01, 0] = np.inf
    uv[rng.random(len(uv)) < 0.01, 1] = -1e300
    # some needles exactly on texel lines
    on_line = rng.random(len(uv)) < 0.05
    uv[on_line] = grid.origin + rng.integers(-1, 33, (on_line.sum(), 2)) * cell
    fired = rng.random(len(uv)) < 0.8
    _same(pen_fit.needle_columns(grid, uv, fired, needles), pen_fit.needle_columns_reference(grid, uv, fired, needles))


def test_needle_columns_by_hand():
    # a 2 x 3 grid of 0.5 mm texels from (0, 0); stamps of 3 needles:
    # stamp 0: texels (1, 0), (1, 0) again and (0, 1) -> rows 1 (count 2) and 3
    # stamp 1: unfired, off the grid (u = 1.5 is past the last column), NaN -> empty
    # stamp 2: (2, 1) and (0, 0) -> rows 0 and 5, ascending
    grid = _grid(2, 3, 0.5, origin=(0.0, 0.0))
    uv = np.array([[0.6, 0.1], [0.9, 0.4], [0.2, 0.7],
                   [0.1, 0.1], [1.5, 0.2], [np.nan, 0.1],
                   [1.2, 0.9], [0.0, 0.0], [-0.1, 0.2]])
    fired = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1], dtype=bool)
    m = pen_fit.needle_columns(grid, uv, fired, 3)
    assert m.shape == (6, 3)
    assert m.indptr.tolist() == [0, 2, 2, 4]
    assert m.indices.tolist() == [1, 3, 0, 5]
    assert m.data.tolist() == [2.0, 1.0, 1.0, 1.0]
    _same(m, pen_fit.needle_columns_reference(grid, uv, fired, 3))


def test_no_stamp_gives_an_empty_matrix():
    grid = _grid(4, 5, 0.5)
    m = pen_fit.needle_columns(grid, np.empty((0, 2)), np.empty(0, bool), 12)
    assert m.shape == (20, 0) and m.nnz == 0
