"""roller._within_reach_of_standing (one compiled pass: a count over each path's sliding
window) against its NumPy twin (prefix sums): equal on a hand-worked case and on seeded
random masks and paths (empty paths, one-sample paths, reaches of 0 and beyond a path)."""
import numpy as np
import pytest

from coverage import roller


def test_hand_worked_reach():
    ok = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], dtype=bool)
    starts = np.array([0, 5, 5, 10, 12])   # paths: rows 0-4, an empty one, 5-9, 10-11
    near, live = roller._within_reach_of_standing(ok, starts[:-1], starts[1:], 1)
    # row 3 stands: rows 2-4 are near (not 5: another path); rows 10-11 both near row 11
    assert near.astype(int).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    assert live.tolist() == [True, False, False, True]
    near, _ = roller._within_reach_of_standing(ok, starts[:-1], starts[1:], 0)
    assert np.array_equal(near, ok)


@pytest.mark.parametrize("seed", range(5))
def test_random_reach(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 40, int(rng.integers(1, 60)))
    sizes[rng.random(len(sizes)) < 0.1] = 1
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(starts[-1])
    ok = rng.random(n) < rng.choice([0.01, 0.1, 0.5])
    for reach in (0, 1, 3, 21, 100):
        got = roller._within_reach_of_standing(ok, starts[:-1], starts[1:], reach)
        ref = roller._within_reach_of_standing_reference(ok, starts[:-1], starts[1:], reach)
        for a, b in zip(got, ref):
            assert a.dtype == bool and np.array_equal(a, b)
        # and _near_standing, built on it, as before: the ends of the live paths added
        out = roller._near_standing(ok, starts, reach)
        expect, live = ref
        expect = expect.copy()
        live = live & (starts[1:] > starts[:-1])
        expect[starts[:-1][live]] = True
        expect[starts[1:][live] - 1] = True
        assert np.array_equal(out, expect)
