"""raster.line_walk (a line family's steps in one kernel call) against its NumPy reference
(line_step_reference step by step) and against raster.line_step step by step, on seeded
random fields; and ZoneSweeps.lines against the step-by-step loop it replaced."""
import numpy as np
import pytest

from coverage import Protocol, raster, roller


def _same(a, b):
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _walk_by_steps(step_fn, scale, codes, levels, v, v0, step, sign, w0, forced, fallback, weights, lo, hi):
    found, w = [], w0
    while True:
        v, w = step_fn(scale, codes, levels, v, v0, step, sign, w, forced, fallback, weights)
        inside = np.isfinite(v) & (v >= lo) & (v <= hi)
        if not inside.any():
            return found
        found.append((v, float(w)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_line_walk_matches_reference(seed):
    rng = np.random.default_rng(seed)
    rows, cols = 220, 60
    v0, step = -7.1, 0.25
    lo, hi = v0, v0 + (rows - 1) * step
    walked = 0
    for trial in range(12):
        scale = rng.uniform(0.6, 1.6, size=(rows, cols))
        scale[rng.random(scale.shape) < 0.02] = np.nan
        levels = np.sort(rng.choice(np.arange(2.0, 6.5, 0.625), size=int(rng.integers(0, 5)), replace=False))
        codes = rng.integers(-1, max(len(levels), 1), size=(rows, cols)) if len(levels) else np.full((rows, cols), -1)
        codes = np.repeat(codes[::8], 8, axis=0)[:rows]
        v = np.full(cols, lo + rng.uniform(0, hi - lo)) + rng.normal(0, 0.5, cols)
        v[rng.random(cols) < 0.05] = np.nan
        sign = float(rng.choice([-1.0, 1.0]))
        w0 = float(rng.choice(levels)) if len(levels) and trial % 3 else float(rng.uniform(2, 6))
        forced = float(rng.uniform(2, 6)) if trial % 4 == 3 else None
        weights = roller.gaussian_weights(float(rng.choice([5.0, 2.0])))
        chunk = int(rng.choice([1, 3, 64]))     # the kernel's buffer filled and refilled
        with np.errstate(invalid="ignore"):
            out = raster.line_walk(scale, codes, levels, v, v0, step, sign, w0, forced, 9.5, weights, lo, hi, chunk)
            ref = raster.line_walk_reference(scale, codes, levels, v, v0, step, sign, w0, forced, 9.5, weights, lo, hi)
            steps = _walk_by_steps(raster.line_step, scale, codes, levels, v, v0, step, sign, w0, forced, 9.5,
                                   weights, lo, hi)
        assert len(out) == len(ref) == len(steps)
        walked += len(out)
        for (a, wa), (b, wb), (c, wc) in zip(out, ref, steps):
            assert _same(a, b) and _same(a, c) and wa == wb == wc
    assert walked > 12


def test_line_walk_refuses_a_code_beyond_its_levels():
    with pytest.raises(ValueError, match="levels"):
        raster.line_walk(np.ones((4, 5)), np.full((4, 5), 3), [1.0, 2.0], np.zeros(5), 0.0, 1.0, 1.0, 1.0, None,
                         9.5, roller.gaussian_weights(2.0), 0.0, 3.0)


def test_line_walk_off_the_symmetric_path_is_the_reference():
    rng = np.random.default_rng(5)
    scale = rng.uniform(0.8, 1.2, size=(80, 20))
    codes = np.full((80, 20), -1)
    weights = np.array([0.1, 0.3, 0.5, 0.2, 0.1])
    v = np.full(20, 5.0)
    out = raster.line_walk(scale, codes, [], v, 0.0, 0.25, 1.0, 2.0, None, 2.0, weights, 0.0, 19.75)
    ref = raster.line_walk_reference(scale, codes, [], v, 0.0, 0.25, 1.0, 2.0, None, 2.0, weights, 0.0, 19.75)
    assert len(out) == len(ref) > 0
    assert all(_same(a, b) and wa == wb for (a, wa), (b, wb) in zip(out, ref))


def _lines_by_steps(sweeps, offset):
    """ZoneSweeps.lines as it was: self._step in a Python loop."""
    row = int(np.clip(np.searchsorted(sweeps.v_rows, sweeps.v_mid), 0, len(sweeps.v_rows) - 1))
    v0 = np.full(len(sweeps.u_cols), sweeps.v_mid)
    w0 = sweeps._design(v0)
    v0 = v0 + offset * w0 / sweeps.scale[row]
    w0 = sweeps._design(v0)
    found = [(0, v0, w0)]
    for sign in (1.0, -1.0):
        v, w, k = v0, w0, 0
        while True:
            v, w = sweeps._step(v, w, sign)
            k += int(sign)
            inside = np.isfinite(v) & (v >= sweeps.v_rows[0]) & (v <= sweeps.v_rows[-1])
            if not inside.any():
                break
            found.append((k, v, w))
    found.sort(key=lambda item: item[0])
    return [(k, np.stack([sweeps.u_cols, v], axis=1) @ sweeps.to_chart.T, w) for k, v, w in found]


@pytest.mark.parametrize("region_index, direction, offset", [(0, 0, 0.0), (1, 1, 0.25), (0, 3, 0.6)])
def test_zone_lines_equal_the_step_loop(default_face, default_zones, region_index, direction, offset):
    protocol = Protocol.default()
    clearance = roller.keepout_clearance(default_zones)
    region = roller.roller_regions(default_zones, protocol)[region_index]
    dose = protocol.zone(region.zones[0])
    drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
    theta = dose.directions_deg[direction % len(dose.directions_deg)]
    conform = roller.conformity(default_face, drum, theta)
    families = [roller.ZoneSweeps(default_zones, region, drum, theta, conform, clearance)]
    families += [roller.ZoneSweeps(default_zones, region, drum, theta, conform, clearance, width)
                 for width in roller.band_widths(default_face, default_zones, region, conform)[:1]]
    for sweeps in families:
        mine, theirs = sweeps.lines(offset), _lines_by_steps(sweeps, offset)
        assert len(mine) == len(theirs) > 3
        for (ka, a, wa), (kb, b, wb) in zip(mine, theirs):
            assert ka == kb and wa == wb and _same(a, b)


@pytest.mark.parametrize("seed", [0, 1])
def test_stacked_product_equals_line_by_line(seed):
    """ZoneSweeps.lines multiplies every line's points at once: each as alone."""
    rng = np.random.default_rng(seed)
    for cols in (1, 2, 7, 101, 251, 1000):
        angle = rng.uniform(0, np.pi)
        to_chart = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        u = np.arange(cols) * 1.0 + rng.uniform(-50, 50)
        lines = rng.uniform(-80, 80, size=(int(rng.integers(1, 40)), cols))
        lines[rng.random(lines.shape) < 0.05] = np.nan
        pts = np.empty((len(lines), cols, 2))
        pts[:, :, 0] = u
        pts[:, :, 1] = lines
        stacked = pts @ to_chart.T
        for i, v in enumerate(lines):
            assert _same(stacked[i], np.stack([u, v], axis=1) @ to_chart.T)
