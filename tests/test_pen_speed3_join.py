"""join_paths' segment lengths and distances, FootprintClearance's boxes and
StampPlacer.place_along's output give exactly what they stand for, bit for bit."""
import math

import numpy as np
import pytest

from coverage import pen


def _points(rng, n):
    scale = 10.0 ** rng.uniform(-13, 3)
    return np.cumsum(rng.normal(size=(n, 2)) * scale, axis=0) + rng.normal(size=2) * 50


@pytest.mark.parametrize("seed", range(6))
def test_segment_lengths_equal_norm_of_diff(seed):
    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 3, 17, 400):
        uv = _points(rng, n)
        if n > 3 and seed % 2:
            uv[rng.integers(0, n, 3)] = [np.nan, np.inf, -np.inf][seed % 3]
            uv[1] = uv[0]                               # a zero-length segment
        got = pen._segment_lengths(uv)
        want = np.linalg.norm(np.diff(uv, axis=0), axis=1)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(pen._segment_lengths_reference(uv), want)
        # a non-contiguous view and other dtypes go the same way
        np.testing.assert_array_equal(pen._segment_lengths(np.asfortranarray(uv)), want)
        np.testing.assert_array_equal(pen._segment_lengths(uv.astype(np.float32)),
                                      np.linalg.norm(np.diff(uv.astype(np.float32), axis=0), axis=1))


def test_segment_lengths_by_hand():
    uv = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [0.0, 0.0], [-5.0, 12.0]])
    np.testing.assert_array_equal(pen._segment_lengths(uv), [5.0, 0.0, 5.0, 13.0])


@pytest.mark.parametrize("seed", range(4))
def test_point_distance_equals_norm(seed):
    rng = np.random.default_rng(seed)
    for _ in range(2000):
        a, b = _points(rng, 2)
        assert pen._point_distance(a, b) == float(np.linalg.norm(b - a))
    assert pen._point_distance(np.array([1.0, 1.0]), np.array([4.0, 5.0])) == 5.0
    assert math.isnan(pen._point_distance(np.array([np.nan, 0.0]), np.array([0.0, 0.0])))
    assert pen._point_distance(np.array([1, 1]), np.array([4, 5])) == 5.0   # ints: by norm


@pytest.mark.parametrize("seed", range(4))
def test_in_box_equals_all_along_rows(seed):
    rng = np.random.default_rng(seed)
    for k in (0, 1, 9, 1000):
        points = rng.normal(size=(k, 3)) * 30
        if k > 3:
            points[:3] = [[np.nan, 0, 0], [np.inf, 0, 0], [-10.0, -5.0, 3.0]]     # and one on the box
        lo, hi = np.array([-10.0, -5.0, -20.0]), np.array([10.0, 25.0, 3.0])
        want = ((points >= lo) & (points <= hi)).all(axis=1)
        np.testing.assert_array_equal(pen._in_box(points, lo, hi), want)
        np.testing.assert_array_equal(pen._in_box_reference(points, lo, hi), want)
    assert pen._in_box(np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), np.zeros(3), np.ones(3)).tolist() == [True, False]


def test_place_along_equals_stacked_interp():
    rng = np.random.default_rng(3)
    for _ in range(50):
        uv = _points(rng, int(rng.integers(2, 40)))
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(uv, axis=0), axis=1))])
        count = np.concatenate([[0.0], np.cumsum(rng.uniform(0, 2, len(uv) - 1))])
        placer = pen.StampPlacer()
        carry = placer.carry = rng.uniform()
        stamps, at = placer.place_along(uv, count, s)
        total = count[-1] + carry
        ks = np.arange(1, int(math.floor(total)) + 1, dtype=np.float64)
        if not len(ks):
            assert stamps.shape == (0, 2)
            continue
        want_at = np.interp(ks, count + carry, s)
        np.testing.assert_array_equal(at, want_at)
        np.testing.assert_array_equal(stamps, np.stack([np.interp(want_at, s, uv[:, 0]),
                                                        np.interp(want_at, s, uv[:, 1])], axis=1))


@pytest.mark.parametrize("seed", range(3))
def test_glide_moves_equal_resampled_stacks(seed):
    rng = np.random.default_rng(seed)
    froms = [rng.normal(size=2) * 20 for _ in range(60)]
    tos = [a + rng.normal(size=2) * 10.0 ** rng.uniform(-14, 1.5) for a in froms]
    tos[3] = froms[3].copy()                     # a glide of no length
    tos[7] = froms[7] + [1e-13, 0.0]
    got = pen.glide_moves(froms, tos)
    samples, starts = pen._resample_lines([np.stack([a, b]) for a, b in zip(froms, tos)], pen.SAMPLE_MM / 2)
    want = [samples[a:b] for a, b in zip(starts[:-1], starts[1:])]
    assert len(got) == len(want)
    for g, w, a, b in zip(got, want, froms, tos):
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(g, pen._resample(np.stack([a, b]), pen.SAMPLE_MM / 2))
    # all of one kind: every glide of no length, and none
    same = pen.glide_moves(froms[:4], [a.copy() for a in froms[:4]])
    for g, a in zip(same, froms[:4]):
        np.testing.assert_array_equal(g, a[None])
    assert pen.glide_moves([], []) == []
    by_hand = pen.glide_moves([np.array([0.0, 0.0])], [np.array([0.25, 0.0])])
    np.testing.assert_array_equal(by_hand[0], [[0.0, 0.0], [0.125, 0.0], [0.25, 0.0]])
