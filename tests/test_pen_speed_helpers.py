"""The pen stage's shortcuts give exactly what they stand for."""
import numpy as np
import pytest
from scipy import ndimage

from coverage import pen


@pytest.mark.parametrize("seed", range(4))
def test_dilated_equals_binary_dilation(seed):
    rng = np.random.default_rng(seed)
    for shape in [(1, 1), (7, 5), (40, 61)]:
        for density in (0.0, 0.002, 0.05, 0.6):
            mask = rng.random(shape) < density
            if rng.random() < 0.5 and mask.size > 4:
                mask[0, -1] = True   # at the grid's edge
            for iterations in (1, 2, 3):
                np.testing.assert_array_equal(pen._dilated(mask, iterations),
                                              ndimage.binary_dilation(mask, iterations=iterations))


def test_resample_lines_equal_resample_one_by_one():
    rng = np.random.default_rng(0)
    lines = [np.cumsum(rng.normal(size=(int(rng.integers(1, 30)), 2)), axis=0) for _ in range(40)]
    lines += [np.array([[1.0, 2.0], [1.0, 2.0]]), np.array([[0.0, 0.0], [3.0, 4.0]])]
    long = [line for line in lines[:40] if len(line) >= 2]     # through paths.resample at once
    for mixed in (lines, long):
        samples, starts = pen._resample_lines(mixed, pen.SAMPLE_MM)
        pieces = [pen._resample(np.asarray(line), pen.SAMPLE_MM) for line in mixed]
        np.testing.assert_array_equal(samples, np.concatenate(pieces))
        np.testing.assert_array_equal(np.diff(starts), [len(x) for x in pieces])


def test_run_cumsum_equals_cumsum_per_run():
    rng = np.random.default_rng(1)
    step = rng.uniform(0, 3, 500) ** 3
    bounds = np.concatenate([[0], np.sort(rng.choice(np.arange(2, 498), 40, replace=False)), [500]])
    bounds = bounds[np.concatenate([[True], np.diff(bounds) >= 2])]
    got = pen._run_cumsum(step, bounds)
    for a, b in zip(bounds[:-1], bounds[1:]):
        np.testing.assert_array_equal(got[a:b], np.concatenate([[0.0], np.cumsum(step[a + 1:b])]))


class _PlacerReference:
    """StampPlacer.place as it was written before place_along."""

    def __init__(self):
        self.carry = 0.5

    def place(self, uv, per_mm):
        if len(uv) < 2:
            return np.empty((0, 2)), np.empty(0)
        seg = np.linalg.norm(np.diff(uv, axis=0), axis=1)
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (per_mm[1:] + per_mm[:-1]) * seg)]) + self.carry
        total = cum[-1]
        ks = np.arange(1, int(np.floor(total)) + 1, dtype=np.float64)
        self.carry = total - np.floor(total)
        if not len(ks):
            return np.empty((0, 2)), np.empty(0)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        at = np.interp(ks, cum, s)
        return np.stack([np.interp(at, s, uv[:, 0]), np.interp(at, s, uv[:, 1])], axis=1), at


def test_place_along_equals_place():
    rng = np.random.default_rng(2)
    a, b = _PlacerReference(), pen.StampPlacer()
    for _ in range(30):
        uv = np.cumsum(rng.normal(size=(int(rng.integers(2, 60)), 2)), axis=0)
        per_mm = rng.uniform(0, 2, len(uv))
        seg = np.linalg.norm(np.diff(uv, axis=0), axis=1)
        count = np.concatenate([[0.0], np.cumsum(0.5 * (per_mm[1:] + per_mm[:-1]) * seg)])
        got = b.place_along(uv, count, np.concatenate([[0.0], np.cumsum(seg)]))
        want = a.place(uv, per_mm)
        for x, y in zip(got, want):
            np.testing.assert_array_equal(x, y)
        assert a.carry == b.carry
        np.testing.assert_array_equal(pen.StampPlacer().place(uv, per_mm)[1], _PlacerReference().place(uv, per_mm)[1])


def test_resample_lines_with_some_lines_of_no_length():
    rng = np.random.default_rng(3)
    lines = [np.cumsum(rng.normal(size=(int(rng.integers(2, 9)), 2)), axis=0) for _ in range(12)]
    for k in (0, 5, 11):
        lines[k] = np.repeat(lines[k][:1], 2, axis=0)
    samples, starts = pen._resample_lines(lines, 0.125)
    pieces = [pen._resample(line, 0.125) for line in lines]
    np.testing.assert_array_equal(samples, np.concatenate(pieces))
    np.testing.assert_array_equal(np.diff(starts), [len(x) for x in pieces])
    assert len(pieces[5]) == 1
