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
