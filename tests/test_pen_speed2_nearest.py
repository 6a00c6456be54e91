"""A zone's stamp field goes to the nearest path sample: binned search == the KD-tree's."""
import numpy as np
import pytest

from coverage import pen


def _lines(rng, n_lines, step=0.25):
    out = []
    for _ in range(n_lines):
        a = rng.uniform(-40, 40, 2)
        t = rng.uniform(0, 2 * np.pi)
        k = int(rng.integers(1, 120))
        out.append(a + np.arange(k)[:, None] * step * np.array([np.cos(t), np.sin(t)]))
    return np.concatenate(out)


@pytest.mark.parametrize("seed", range(4))
def test_nearest_within_equals_the_kd_tree(seed):
    rng = np.random.default_rng(seed)
    samples = _lines(rng, 30)
    # repeated samples (a run ending where the next starts) and texel-centre points, some
    # exactly between two samples
    samples = np.concatenate([samples, samples[rng.integers(0, len(samples), 40)]])
    points = np.concatenate([
        np.stack(np.meshgrid(np.arange(-50, 50, 0.5) + 0.25, np.arange(-50, 50, 0.5) + 0.25), -1).reshape(-1, 2),
        rng.uniform(-60, 60, (3000, 2)),
        (samples[:200] + samples[1:201]) / 2,
    ])
    for reach in (0.3, 1.0, 3.75, 25.0):
        got = pen._nearest_within(samples, points, reach)
        want = pen._nearest_within_reference(samples, points, reach)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert (got[0] >= 0).any()


def test_nearest_within_edge_cases():
    one = np.array([[1.0, 2.0]])
    pts = np.array([[1.0, 2.5], [-3.0, 0.0], [100.0, 100.0], [1.0, 2.0]])
    for samples in (one, np.repeat(one, 3, axis=0), np.array([[1.0, 2.0], [1.0, 3.0]])):
        for reach in (0.5, 1.0, np.inf, 0.0):
            got = pen._nearest_within(samples, pts, reach)
            want = pen._nearest_within_reference(samples, pts, reach)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    empty = pen._nearest_within(one, np.empty((0, 2)), 1.0)
    assert empty[0].shape == (0,) and empty[1].shape == (0,)
