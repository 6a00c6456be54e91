"""The roller's kernels against their NumPy references, bit for bit, on seeded random inputs:
chart raster reads (coverage.raster) and path resampling (coverage.paths)."""
import numpy as np
import pytest

from coverage import paths, raster

ORIGIN = (-3.25, 1.5)
CELL = 0.5


def _raster(rng, h=37, w=53, nan=True):
    values = rng.normal(size=(h, w))
    if nan:
        values[rng.integers(0, h, 5), rng.integers(0, w, 5)] = np.nan
    return values


def _points(rng, n):
    """Chart points around and beyond a 53 x 37 grid of 0.5 mm at ORIGIN, some NaN or infinite,
    some exactly on cell edges."""
    uv = rng.uniform(-20.0, 45.0, size=(n, 2))
    uv[::7] = np.round(uv[::7] * 2) / 2 + np.asarray(ORIGIN) % CELL   # on cell edges
    uv[3::41] = np.nan
    uv[5::43, 0] = np.inf
    uv[6::47, 1] = -np.inf
    uv[8::53] = [1e300, -1e300]
    return uv


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookup_matches_reference(seed):
    rng = np.random.default_rng(seed)
    values, uv = _raster(rng), _points(rng, 3000)
    for outside in (-1.0, np.inf, np.nan):
        with np.errstate(invalid="ignore"):
            ref = raster.lookup_reference(values, ORIGIN, CELL, uv, outside)
        assert _same(raster.lookup(values, ORIGIN, CELL, uv, outside), ref)
    # other dtypes read as float64 (the pen's masks and labels)
    for other in (values > 0, np.nan_to_num(values * 10).astype(np.int64), np.asfortranarray(values)):
        with np.errstate(invalid="ignore"):
            ref = raster.lookup_reference(other, ORIGIN, CELL, uv, 0)
        assert _same(raster.lookup(other, ORIGIN, CELL, uv, 0), ref)


def test_lookup_by_hand():
    values = np.arange(6.0).reshape(2, 3)     # rows v, columns u; cells of 1 mm from (0, 0)
    uv = [[0.0, 0.0], [2.999, 1.999], [1.0, 1.0], [3.0, 0.5], [-0.001, 0.5], [np.nan, 0.0]]
    np.testing.assert_array_equal(raster.lookup(values, (0.0, 0.0), 1.0, uv, -7.0), [0, 5, 4, -7, -7, -7])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimum_reads_match_reference(seed):
    rng = np.random.default_rng(seed)
    values = _raster(rng)
    n = 800
    uv = _points(rng, n)
    direction = rng.normal(size=(n, 2))
    dir_b = rng.normal(size=(n, 2))
    offsets = np.linspace(-6.0, 6.0, 11)
    scale = rng.uniform(0.5, 3.0, n)
    with np.errstate(invalid="ignore"):
        assert _same(raster.lookup_min(values, ORIGIN, CELL, np.repeat(uv, 4, axis=0), 4, np.inf),
                     raster.lookup_min_reference(values, ORIGIN, CELL, np.repeat(uv, 4, axis=0), 4, np.inf))
        for s in (None, scale):
            assert _same(raster.offset_min(values, ORIGIN, CELL, uv, direction, offsets, s, -1.0),
                         raster.offset_min_reference(values, ORIGIN, CELL, uv, direction, offsets, s, -1.0))
        ga, gb = np.meshgrid(np.linspace(-10, 10, 5), np.linspace(-4, 4, 3))
        assert _same(raster.rect_min(values, ORIGIN, CELL, uv, direction, dir_b, ga.ravel(), gb.ravel(), np.inf),
                     raster.rect_min_reference(values, ORIGIN, CELL, uv, direction, dir_b, ga.ravel(), gb.ravel(),
                                               np.inf))


def test_minimum_reads_by_hand():
    values = np.array([[5.0, 4.0, 3.0, 2.0]])      # one row of 1 mm cells from (0, 0)
    uv = np.array([[0.5, 0.5], [0.5, 0.5]])
    right = np.array([[1.0, 0.0], [1.0, 0.0]])
    # 0.5 + {0, 1, 2} along +u: cells 0, 1, 2 -> 3; with scale 0.5: 0.5 + {0, 0.5, 1}: cells 0, 1 -> 4
    np.testing.assert_array_equal(raster.offset_min(values, (0, 0), 1.0, uv, right, [0, 1, 2]), [3.0, 3.0])
    np.testing.assert_array_equal(raster.offset_min(values, (0, 0), 1.0, uv, right, [0, 1, 2], [0.5, 1.0]),
                                  [4.0, 3.0])
    # off the grid reads "outside"; a NaN cell wins
    np.testing.assert_array_equal(raster.offset_min(values, (0, 0), 1.0, uv, right, [0, 9], None, -1.0), [-1, -1])
    values[0, 1] = np.nan
    assert np.isnan(raster.offset_min(values, (0, 0), 1.0, uv[:1], right[:1], [0, 1, 2])).all()
    with pytest.raises(ValueError, match="offsets"):
        raster.offset_min(values, (0, 0), 1.0, uv, right, [])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_column_reads_match_reference(seed):
    rng = np.random.default_rng(seed)
    rows, cols = 120, 64
    field = rng.uniform(0.5, 2.0, size=(rows, cols))
    field[rng.random(field.shape) < 0.05] = np.nan
    codes = rng.integers(-1, 4, size=(rows, cols))
    v0, step = -7.3, 0.25
    for _ in range(20):
        v = rng.uniform(v0 - 5, v0 + rows * step + 5, cols)
        v[rng.random(cols) < 0.1] = np.nan
        v[::9] = v0 + np.round((v[::9] - v0) / step) * step + step / 2     # halfway: rounds to even
        with np.errstate(invalid="ignore"):
            assert _same(raster.column_values(field, v, v0, step), raster.column_values_reference(field, v, v0, step))
            for c in (2.5, -1.75, 0.0):
                assert _same(raster.column_step(field, v, v0, step, c),
                             raster.column_step_reference(field, v, v0, step, c))
            assert raster.column_mode(codes, v, v0, step, 4) == raster.column_mode_reference(codes, v, v0, step, 4)
    # ties go to the smallest code, none read is -1
    codes = np.array([[2, 1, 1, 2, 0]])
    assert raster.column_mode(codes, np.zeros(5), 0.0, 1.0, 3) == 1
    assert raster.column_mode(codes, np.full(5, 9.0), 0.0, 1.0, 3) == -1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_band_occupancy_matches_reference(seed):
    rng = np.random.default_rng(seed)
    taken = rng.random((60, 80)) < 0.03
    n = 600
    uv = rng.uniform(-15.0, 55.0, size=(n, 2))
    uv[::50] = np.nan                           # numpy casts NaN to the int64 minimum: border cell 0
    across = rng.normal(size=(n, 2))
    half = rng.uniform(0.0, 6.0, n)
    scale = rng.uniform(0.4, 2.0, n)
    f = np.linspace(-1.0, 1.0, 13)
    with np.errstate(invalid="ignore"):
        ref = raster.band_taken_reference(taken, ORIGIN, CELL, uv, across, half, scale, f)
    assert _same(raster.band_taken(taken, ORIGIN, CELL, uv, across, half, scale, f), ref)
    mine, theirs = taken.copy(), taken.copy()
    raster.band_take(mine, ORIGIN, CELL, uv, across, half, scale, f)
    with np.errstate(invalid="ignore"):
        raster.band_take_reference(theirs, ORIGIN, CELL, uv, across, half, scale, f)
    assert np.array_equal(mine, theirs)
    with pytest.raises(ValueError, match="bool"):
        raster.band_taken(taken.astype(np.uint8), ORIGIN, CELL, uv, across, half, scale, f)


# --- path resampling ------------------------------------------------------------------------

def _paths(rng, count):
    sizes = rng.integers(2, 80, count)
    uv = rng.normal(size=(sizes.sum(), 2)) * rng.uniform(0.1, 40.0)
    points = np.cumsum(rng.normal(size=(sizes.sum(), 3)) * rng.uniform(0.01, 2.0), axis=0)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return uv, points, starts


@pytest.mark.parametrize("seed", range(6))
def test_resample_matches_reference(seed):
    rng = np.random.default_rng(seed)
    for trial in range(60):
        uv, points, starts = _paths(rng, int(rng.integers(1, 8)))
        if trial % 3 == 0:   # repeated points: zero steps, ties in the arc length
            k = rng.integers(0, len(points) - 1, 6)
            points[k + 1] = points[k]
        if trial % 11 == 0:  # a path that does not move on the skin at all
            points[starts[0]:starts[1]] = points[starts[0]]
        step = float(rng.choice([0.5, 0.25, 1.0, 0.37]))
        out, out_starts = paths.resample(uv, points, starts, step)
        for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            ref = paths.resample_reference(uv[a:b], points[a:b], step)
            assert _same(out[out_starts[i]:out_starts[i + 1]], ref), (seed, trial, i)


def test_resample_by_hand_and_edge_cases():
    # a straight 2 mm path on flat skin: 5 samples 0.5 mm apart, its ends kept
    uv = np.array([[0.0, 0.0], [2.0, 0.0]])
    points = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    out, starts = paths.resample(uv, points, [0, 2], 0.5)
    np.testing.assert_array_equal(out, [[0, 0], [0.5, 0], [1, 0], [1.5, 0], [2, 0]])
    assert starts.tolist() == [0, 5]
    # a one-point path is kept as it is, next to a normal one
    uv3 = np.array([[5.0, 5.0], [0.0, 0.0], [2.0, 0.0]])
    out, starts = paths.resample(uv3, np.vstack([[[9, 9, 9]], points]), [0, 1, 3], 0.5)
    assert starts.tolist() == [0, 1, 6]
    np.testing.assert_array_equal(out[0], [5.0, 5.0])
    # a non-finite lift is refused as the reference refuses it
    with pytest.raises(ValueError):
        paths.resample(uv, np.array([[0.0, 0, 0], [np.nan, 0, 0]]), [0, 2], 0.5)
    with pytest.raises(ValueError, match="starts"):
        paths.resample(uv, points, [0, 3], 0.5)
    # an infinite chart point, or a lift whose steps overflow: each path by the reference
    rng = np.random.default_rng(11)
    uv, points, starts = _paths(rng, 4)
    u = uv.copy()
    u[starts[1] + 1, 0] = np.inf
    with np.errstate(invalid="ignore"):
        out, out_starts = paths.resample(u, points, starts, 0.5)
        for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            assert _same(out[out_starts[i]:out_starts[i + 1]], paths.resample_reference(u[a:b], points[a:b], 0.5))
    p = points.copy()
    p[starts[2]:starts[3]] *= 1e300
    with np.errstate(invalid="ignore", over="ignore"):
        with pytest.raises(OverflowError):       # an infinite arc length, as the reference finds it
            paths.resample_reference(uv[starts[2]:starts[3]], p[starts[2]:starts[3]], 0.5)
        with pytest.raises(OverflowError):
            paths.resample(uv, p, starts, 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_line_step_matches_reference(seed):
    from coverage.roller import gaussian_weights

    rng = np.random.default_rng(seed)
    rows, cols = 160, 70
    v0, step = -11.3, 0.25
    for trial in range(30):
        scale = rng.uniform(0.6, 1.6, size=(rows, cols))
        scale[rng.random(scale.shape) < 0.03] = np.nan
        levels = np.sort(rng.choice(np.arange(4.0, 10.5, 0.625), size=int(rng.integers(0, 5)), replace=False))
        codes = rng.integers(-1, max(len(levels), 1), size=(rows, cols)) if len(levels) else np.full((rows, cols), -1)
        # codes in bands, so the design settles after one, two or three rounds
        codes = np.repeat(codes[::8], 8, axis=0)[:rows]
        v = rng.uniform(v0 - 3, v0 + rows * step + 3, cols)
        v[rng.random(cols) < 0.1] = np.nan
        if trial % 10 == 9:
            v[:] = np.nan                            # nothing finite: the line as it is
        sign = float(rng.choice([-1.0, 1.0]))
        w0 = float(rng.choice(levels)) if len(levels) and trial % 3 else float(rng.uniform(3, 11))
        forced = float(rng.uniform(3, 11)) if trial % 4 == 3 else None
        weights = gaussian_weights(float(rng.choice([5.0, 2.0, 0.8])))
        with np.errstate(invalid="ignore"):
            ref, w_ref = raster.line_step_reference(scale, codes, levels, v, v0, step, sign, w0, forced, 9.5, weights)
            out, w = raster.line_step(scale, codes, levels, v, v0, step, sign, w0, forced, 9.5, weights)
        assert _same(out, ref) and w == w_ref
    # a code beyond the levels is refused (the reference fails on it too)
    with pytest.raises(ValueError, match="levels"):
        raster.line_step(np.ones((4, 5)), np.full((4, 5), 3), [1.0, 2.0], np.zeros(5), 0.0, 1.0, 1.0, 1.0, None,
                         9.5, gaussian_weights(2.0))
    # weights off scipy's symmetric path go to the reference
    weights = np.array([0.1, 0.3, 0.5, 0.2, 0.1])
    v = rng.uniform(v0, v0 + rows * step, cols)
    with np.errstate(invalid="ignore"):
        ref, w_ref = raster.line_step_reference(scale, codes, levels, v, v0, step, 1.0, 5.0, None, 9.5, weights)
        out, w = raster.line_step(scale, codes, levels, v, v0, step, 1.0, 5.0, None, 9.5, weights)
    assert _same(out, ref) and w == w_ref


def test_line_step_smooths_as_the_roller_did():
    """The kernel's smoothing is roller._smooth_nan (the roller's own before the kernel)."""
    from coverage import roller

    rng = np.random.default_rng(7)
    v = rng.uniform(-5, 5, 90)
    v[rng.random(90) < 0.2] = np.nan
    sigma = roller.LINE_SMOOTH_MM / roller.COLUMN_STEP_MM
    # a forced zero design on a unit scale: one round, a zero step, the line lands on v
    # itself where its row is on the field (NaN elsewhere), then is smoothed
    rows = np.round(v + 0.125)
    with np.errstate(invalid="ignore"):
        on = np.isfinite(v) & (rows >= 0) & (rows < 4)
        out, w = raster.line_step(np.ones((4, 90)), np.full((4, 90), -1), [], v, -0.125, 1.0, 1.0, 0.0, 0.0, 7.0,
                                  roller.gaussian_weights(sigma))
    assert on.sum() > 10 and w == 0.0
    assert _same(out, roller._smooth_nan(np.where(on, v, np.nan), sigma))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_window_min_matches_reference(seed):
    rng = np.random.default_rng(seed)
    for trial in range(30):
        sizes = rng.integers(0, 120, int(rng.integers(1, 12)))
        n = int(sizes.sum())
        values = rng.normal(size=n)
        values[rng.random(n) < 0.3] = np.inf
        values[rng.random(n) < 0.1] = np.round(values[rng.random(n) < 0.1][:1].sum())  # ties
        if trial % 5 == 4 and n:
            values[rng.integers(0, n)] = np.nan if trial % 10 == 4 else -0.0   # left to the reference
        starts = np.concatenate([[0], np.cumsum(sizes)])
        live = rng.random(len(sizes)) < 0.8
        first, stop = starts[:-1][live], starts[1:][live]
        reach = int(rng.integers(0, 30))
        out = raster.window_min(values, first, stop, reach)
        assert _same(out, raster.window_min_reference(values, first, stop, reach))
        assert np.array_equal(np.signbit(out), np.signbit(raster.window_min_reference(values, first, stop, reach)))
    with pytest.raises(ValueError, match="within"):
        raster.window_min(np.zeros(3), [0], [4], 1)


def test_window_min_by_hand():
    # rows 0:5 and 6:8 are paths, row 5 is in none (kept); the window is clipped to its path
    values = np.array([5.0, 3.0, 8.0, 7.0, 1.0, -4.0, 9.0, 2.0])
    out = raster.window_min(values, [0, 6], [5, 8], 1)
    np.testing.assert_array_equal(out, [3.0, 3.0, 3.0, 1.0, 1.0, -4.0, 2.0, 2.0])
    np.testing.assert_array_equal(raster.window_min(values, [0, 6], [5, 8], 0), values)
    # a reach longer than the path: every row its path's least
    np.testing.assert_array_equal(raster.window_min(values, [0, 6], [5, 8], 50),
                                  [1.0, 1.0, 1.0, 1.0, 1.0, -4.0, 2.0, 2.0])
    # a value rising after the least leaves the deque's front only when the window passes it
    rising = np.array([4.0, 0.0, 1.0, 2.0, 3.0, 5.0, 6.0])
    np.testing.assert_array_equal(raster.window_min(rising, [0], [7], 2), [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize("cell", [0.25, 1.0, 4.0, 2.0 ** -30, 0.3, 0.7, 1e-310, 3.0])
def test_reads_match_reference_for_any_cell(cell):
    """Power-of-two cells are read by multiplying with their inverse (the same number as the
    division), others by dividing: both equal the references, on points at cell edges."""
    rng = np.random.default_rng(int(cell * 1000) % 97)
    values = _raster(rng)
    h, w = values.shape
    n = 700
    uv = np.asarray(ORIGIN) + rng.uniform(-0.2, 1.2, (n, 2)) * np.array([w, h]) * cell
    uv[::5] = np.asarray(ORIGIN) + np.round((uv[::5] - np.asarray(ORIGIN)) / cell) * cell     # on edges
    uv[1::37] = np.nan
    direction = rng.normal(size=(n, 2)) * cell
    dir_b = rng.normal(size=(n, 2)) * cell
    offsets = np.linspace(-6.0, 6.0, 11)
    scale = rng.uniform(0.5, 3.0, n)
    ga, gb = np.meshgrid(np.linspace(-10, 10, 5), np.linspace(-4, 4, 3))
    with np.errstate(invalid="ignore", over="ignore"):
        for outside in (-1.0, np.inf):
            assert _same(raster.lookup(values, ORIGIN, cell, uv, outside),
                         raster.lookup_reference(values, ORIGIN, cell, uv, outside))
        assert _same(raster.lookup(values > 0, ORIGIN, cell, uv, 0), raster.lookup_reference(values > 0, ORIGIN, cell,
                                                                                              uv, 0))
        assert _same(raster.lookup_min(values, ORIGIN, cell, np.repeat(uv, 3, axis=0), 3, np.inf),
                     raster.lookup_min_reference(values, ORIGIN, cell, np.repeat(uv, 3, axis=0), 3, np.inf))
        for s in (None, scale):
            assert _same(raster.offset_min(values, ORIGIN, cell, uv, direction, offsets, s, -1.0),
                         raster.offset_min_reference(values, ORIGIN, cell, uv, direction, offsets, s, -1.0))
        assert _same(raster.rect_min(values, ORIGIN, cell, uv, direction, dir_b, ga.ravel(), gb.ravel(), np.inf),
                     raster.rect_min_reference(values, ORIGIN, cell, uv, direction, dir_b, ga.ravel(), gb.ravel(),
                                               np.inf))


def test_reads_with_many_offsets_and_empty_rasters():
    """rect_min beyond its blocked path (more than 512 offsets), and reads of an empty raster."""
    rng = np.random.default_rng(21)
    values = _raster(rng)
    n = 300
    uv = _points(rng, n)
    dir_a, dir_b = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    ga, gb = np.meshgrid(np.linspace(-10, 10, 30), np.linspace(-4, 4, 20))     # 600 offsets
    with np.errstate(invalid="ignore"):
        assert _same(raster.rect_min(values, ORIGIN, CELL, uv, dir_a, dir_b, ga.ravel(), gb.ravel(), -1.0),
                     raster.rect_min_reference(values, ORIGIN, CELL, uv, dir_a, dir_b, ga.ravel(), gb.ravel(), -1.0))
        offsets = np.linspace(-8.0, 8.0, 530)
        for sc in (None, rng.uniform(0.5, 2.0, n)):
            assert _same(raster.offset_min(values, ORIGIN, CELL, uv, dir_a, offsets, sc, -1.0),
                         raster.offset_min_reference(values, ORIGIN, CELL, uv, dir_a, offsets, sc, -1.0))
        for empty in (np.zeros((0, 5)), np.zeros((4, 0))):
            assert _same(raster.offset_min(empty, ORIGIN, CELL, uv, dir_a, [0.0, 1.0], None, 3.0),
                         raster.offset_min_reference(empty, ORIGIN, CELL, uv, dir_a, [0.0, 1.0], None, 3.0))
            assert _same(raster.lookup(empty, ORIGIN, CELL, uv, -2.0),
                         raster.lookup_reference(empty, ORIGIN, CELL, uv, -2.0))
            assert _same(raster.rect_min(empty, ORIGIN, CELL, uv, dir_a, dir_b, [0.0, 1.0], [1.0, 0.0], 3.0),
                         raster.rect_min_reference(empty, ORIGIN, CELL, uv, dir_a, dir_b, [0.0, 1.0], [1.0, 0.0], 3.0))
