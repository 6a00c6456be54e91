"""The pen's glide speed profile (plan.pen_speed_profile): the compiled kernel against its
NumPy twin on seeded paths, bit for bit, and a case worked by hand; and the
stamps a path drops as too close for the top stamp rate (plan._too_close)."""
from types import SimpleNamespace

import numpy as np
import pytest

from coverage._ext import pen as pen_kernel
from coverage.plan import _too_close, _too_close_reference, pen_speed_profile, pen_speed_profile_reference
from coverage.protocol import Protocol

PEN = Protocol.default().pen


def _kernel(skin_s, stamp_skin, speed, pen):
    out = np.empty(len(skin_s) - 1)
    assert pen_kernel.speed_profile(np.ascontiguousarray(skin_s, dtype=np.float64),
                                    np.ascontiguousarray(stamp_skin, dtype=np.float64), float(speed),
                                    float(pen.stamp_hz_max), float(pen.speed_mm_s_min), out) == 0
    return out


@pytest.mark.parametrize("seed", range(12))
def test_kernel_equals_twin_on_seeded_paths(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    skin_s = np.concatenate([[0.0], np.cumsum(rng.exponential(rng.uniform(0.05, 2.0), n - 1))])
    m = int(rng.integers(0, 60))
    stamp_skin = np.sort(rng.uniform(-1.0, skin_s[-1] + 1.0, m))
    if m > 3 and seed % 3 == 0:
        stamp_skin[1] = stamp_skin[2]                  # two stamps at one place
        stamp_skin[-1] = skin_s[n // 2]                # a stamp exactly on a sample
        stamp_skin = np.sort(stamp_skin)
    if seed % 4 == 1:
        skin_s = skin_s[::-1].copy()                   # samples against the stamps' order
    pen = SimpleNamespace(stamp_hz_max=float(rng.uniform(50, 200)), speed_mm_s_min=float(rng.uniform(1, 20)))
    speed = float(rng.uniform(5, 200))
    want = pen_speed_profile_reference(skin_s, stamp_skin, speed, pen)
    got = _kernel(skin_s, stamp_skin, speed, pen)
    assert want.dtype == got.dtype and np.array_equal(want.view(np.int64), got.view(np.int64))
    assert np.array_equal(pen_speed_profile(skin_s, stamp_skin, speed, pen).view(np.int64), want.view(np.int64))


def test_dense_stamps_slow_the_segments_that_span_them():
    # samples every mm; stamps every mm but 0.25 mm apart at 4.5 and 4.75; at 100 Hz an
    # interval of L mm allows 100 L mm/s. Segment 4 (4 to 5 mm) spans the intervals 3.5-4.5,
    # 4.5-4.75 and 4.75-5.5: the least, 25 mm/s; segment 5 (5 to 6) spans 4.75-5.5 and 5.5-6.5:
    # 75; every other one intervals of 1 mm: 100 (under the planned 150); none under 20
    pen = SimpleNamespace(stamp_hz_max=100.0, speed_mm_s_min=20.0)
    skin_s = np.arange(0.0, 9.0)
    stamps = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 4.75, 5.5, 6.5, 7.5])
    got = pen_speed_profile(skin_s, stamps, 150.0, pen)
    assert got.tolist() == [100.0, 100.0, 100.0, 100.0, 25.0, 75.0, 100.0, 100.0]
    assert np.array_equal(got, pen_speed_profile_reference(skin_s, stamps, 150.0, pen))
    # the pen's minimum holds: at 60 Hz segment 4 would glide at 15 mm/s
    slow = SimpleNamespace(stamp_hz_max=60.0, speed_mm_s_min=20.0)
    assert pen_speed_profile(skin_s, stamps, 150.0, slow)[4] == 20.0


def test_few_stamps_and_odd_input_read_as_the_twin():
    pen = PEN
    skin_s = np.linspace(0.0, 30.0, 61)
    for stamps in (np.empty(0), np.array([12.0]), np.array([3.0, np.nan]), np.array([9.0, 4.0, 20.0])):
        got = pen_speed_profile(skin_s, stamps, 120.0, pen)
        want = pen_speed_profile_reference(skin_s, stamps, 120.0, pen)
        assert np.array_equal(got, want, equal_nan=True)
    assert (pen_speed_profile(skin_s, np.array([12.0]), 120.0, pen) == 120.0).all()
    # the kernel refuses such input, writing nothing, and the wrapper asks the twin
    out = np.full(60, -1.0)
    assert pen_kernel.speed_profile(skin_s, np.array([3.0, np.nan]), 120.0, 100.0, 20.0, out) == 1
    assert pen_kernel.speed_profile(skin_s, np.array([9.0, 4.0]), 120.0, 100.0, 20.0, out) == 1
    assert (out == -1.0).all()
    with_nan = skin_s.copy()
    with_nan[7] = np.nan
    assert np.array_equal(pen_speed_profile(with_nan, np.array([1.0, 2.0]), 120.0, pen),
                          pen_speed_profile_reference(with_nan, np.array([1.0, 2.0]), 120.0, pen), equal_nan=True)


def test_too_close_drops_by_hand():
    # gap 1 mm: 0 stays; 0.5 is too close to 0 and goes; 1.2 is 1.2 beyond 0 and stays
    # (the gap counts from the last stamp kept); 2.1 is 0.9 beyond 1.2 and goes; 2.3 stays
    got = _too_close(np.array([0.0, 0.5, 1.2, 2.1, 2.3]), 1.0)
    assert got.tolist() == [False, True, False, True, False]
    # a stamp must lie a little more than the gap beyond (1e-9 relative, for rounding):
    # exactly one gap is too close
    assert _too_close(np.array([0.0, 1.0, 2.0 + 1e-6]), 1.0).tolist() == [False, True, False]
    assert not _too_close(np.array([0.0, 1.0 + 1e-6, 2.0 + 2e-6]), 1.0).any()
    assert _too_close(np.array([5.0]), 1.0).tolist() == [False]
    assert _too_close(np.empty(0), 1.0).shape == (0,)


@pytest.mark.parametrize("seed", range(8))
def test_too_close_equals_the_stamp_by_stamp_loop(seed):
    # spaced stamps (the vectorised test decides: nothing to drop) and crowded ones (the loop)
    rng = np.random.default_rng(seed)
    gap = float(rng.uniform(0.05, 1.0))
    for scale in (1.5, 1.0, 0.6):
        s = np.cumsum(rng.uniform(scale * gap, 3 * gap, int(rng.integers(0, 50))))
        if seed % 2 and len(s) > 4:
            s[3] = np.nan                                  # a stamp read as NaN: kept, as the loop keeps it
        want = _too_close_reference(s, gap)
        got = _too_close(s, gap)
        assert got.dtype == bool and got.tolist() == want.tolist()
        if scale == 1.5:
            assert not got.any()
    assert _too_close_reference(np.array([0.0, 0.1, 0.2, 5.0]), 1.0).tolist() == [False, True, True, False]
