"""roller.ends_blocked (the drum run on past each path's end, one compiled pass stopping at
the first outline point over a keep-out) against roller.ends_blocked_reference (every point
built with NumPy and read): equal on a hand-worked raster and on seeded random ends,
frames and rasters (NaN points and values, points off the raster, cells that are powers of
two or not)."""
import numpy as np
import pytest

from coverage import roller


def test_hand_worked_ends():
    values = np.full((4, 4), 5.0)
    values[2, 3] = 0.1                 # the cell u in [3, 4), v in [2, 3): a keep-out nearby
    r = roller.ChartRaster(np.zeros(2), 1.0, values)
    uv = np.array([[1.5, 2.5], [1.5, 2.5]])
    along = np.array([[1.0, 0.0], [1.0, 0.0]])
    across = np.array([[0.0, 1.0], [0.0, 1.0]])
    sign = np.array([1.0, -1.0])        # the first end runs on towards +u, the second towards -u
    ahead, steps, need = np.array([1.0, 2.0]), np.array([-0.5, 0.0, 0.5]), np.array([1.0, 1.0])
    # +u: 2 mm ahead the outline's edge (3.5, 2.0) reads 0.1 < 1; -u: (0.5, *) reads 5, (-0.5, *) is off
    args = (r, uv, along, across, sign, ahead, steps, need)
    assert roller.ends_blocked(*args).tolist() == [True, False]
    assert roller.ends_blocked_reference(*args).tolist() == [True, False]
    # a need of 0.1 is met (not below): nothing blocks
    assert not roller.ends_blocked(r, uv, along, across, sign, ahead, steps, np.array([0.1, 0.1])).any()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_ends(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(x) for x in rng.integers(5, 80, 2))
    values = rng.uniform(-1.0, 4.0, (h, w))
    values[rng.random((h, w)) < 0.02] = np.nan
    cell = float(rng.choice([0.25, 0.5, 0.3, 1.0]))
    r = roller.ChartRaster(rng.uniform(-5, 5, 2), cell, values)
    e = int(rng.integers(0, 300))
    uv = r.origin + rng.uniform(-2, 1.1, (e, 2)) * np.array([w, h]) * cell
    uv[rng.random(e) < 0.03] = np.nan
    along, across = rng.normal(0, 0.6, (e, 2)), rng.normal(0, 0.6, (e, 2))
    sign = rng.choice([-1.0, 1.0], e)
    ahead = np.linspace(0.0, float(rng.uniform(2, 12)), int(rng.integers(2, 25)))[1:]
    steps = np.linspace(-5.0, 5.0, int(rng.integers(1, 9)))
    need = rng.uniform(-0.5, 3.0, e)
    args = (r, uv, along, across, sign, ahead, steps, need)
    got, ref = roller.ends_blocked(*args), roller.ends_blocked_reference(*args)
    assert got.dtype == bool and np.array_equal(got, ref)
    if e > 50:
        assert 0 < got.sum() < e
