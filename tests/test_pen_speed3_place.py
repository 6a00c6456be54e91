"""Stamps placed run after run by the compiled pass == StampPlacer.place_along run by run,
bit for bit (positions, arc lengths and the carry passed on)."""
import numpy as np
import pytest

from coverage import pen


def _pass(rng, n_runs):
    runs, counts, arcs = [], [], []
    for _ in range(n_runs):
        n = int(rng.integers(1, 60))
        uv = np.cumsum(rng.normal(size=(n, 2)) * rng.choice([0.25, 1e-9, 3.0]), axis=0) + rng.normal(size=2) * 40
        if n > 3:
            uv[2] = uv[1]                                   # a zero-length segment: flat arc
        seg = np.linalg.norm(np.diff(uv, axis=0), axis=1)
        per_mm = rng.uniform(0, 3, n) * (rng.random(n) < 0.7)   # stretches of no stamps: flat count
        step = np.concatenate([[0.0], 0.5 * (per_mm[1:] + per_mm[:-1]) * seg])
        runs.append(uv)
        counts.append(np.concatenate([[0.0], np.cumsum(step[1:])]))
        arcs.append(np.concatenate([[0.0], np.cumsum(seg)]))
    bounds = np.concatenate([[0], np.cumsum([len(r) for r in runs])]).astype(np.int64)
    return np.concatenate(runs), np.concatenate(counts), np.concatenate(arcs), bounds


def _compare(samples, count, arc, bounds, carry):
    a, b = pen.StampPlacer(), pen.StampPlacer()
    a.carry = b.carry = carry
    got = pen._place_runs(a, samples, count, arc, bounds)
    want = pen._place_runs_reference(b, samples, count, arc, bounds)
    assert len(got) == len(want)
    for (gs, ga), (ws, wa) in zip(got, want):
        assert gs.shape == ws.shape and ga.shape == wa.shape
        np.testing.assert_array_equal(gs, ws)
        np.testing.assert_array_equal(ga, wa)
    assert a.carry == b.carry
    return got, a.carry


@pytest.mark.parametrize("seed", range(8))
def test_place_runs_equal_place_along_run_by_run(seed):
    rng = np.random.default_rng(seed)
    for n_runs in (1, 2, 7, 40):
        samples, count, arc, bounds = _pass(rng, n_runs)
        for carry in (0.5, rng.uniform(), 0.0, np.nextafter(1.0, 0.0)):
            got, _ = _compare(samples, count, arc, bounds, carry)
        assert sum(len(s) for s, _ in got) > 0 or n_runs < 7


def test_place_runs_fall_back_on_non_finite_or_falling_values():
    rng = np.random.default_rng(11)
    samples, count, arc, bounds = _pass(rng, 6)
    samples[5, 0] = np.nan
    with np.errstate(invalid="ignore"):
        _compare(samples, count, arc, bounds, 0.5)
    samples, count, arc, bounds = _pass(rng, 6)
    count = count.copy()
    i = int(bounds[1]) + 1
    count[i] = count[i - 1] - 1.0 if bounds[2] - bounds[1] > 2 else count[i]
    _compare(samples, count, arc, bounds, 0.5)


def test_place_runs_by_hand():
    # one run along u, 4 mm long, 1 stamp per mm, carry 0.5: stamps at 0.5, 1.5, 2.5, 3.5 mm;
    # then a single-sample run (no stamps, carry kept); then 1 mm at 0.5 per mm from (10, 0)
    samples = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [9.0, 9.0], [10.0, 0.0], [10.0, 1.0]])
    count = np.array([0.0, 2.0, 4.0, 0.0, 0.0, 0.5])
    arc = np.array([0.0, 2.0, 4.0, 0.0, 0.0, 1.0])
    bounds = np.array([0, 3, 4, 6])
    got, carry = _compare(samples, count, arc, bounds, 0.5)
    np.testing.assert_array_equal(got[0][1], [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_array_equal(got[0][0], [[0.5, 0.0], [1.5, 0.0], [2.5, 0.0], [3.5, 0.0]])
    assert got[1][0].shape == (0, 2)
    np.testing.assert_array_equal(got[2][1], [1.0])         # carry 0.5 after run 0: 0.5 + 0.5 per mm reaches 1 at 1 mm
    np.testing.assert_array_equal(got[2][0], [[10.0, 1.0]])
    assert carry == 0.0
