"""A pass's runs from the samples on active texels only (the compiled resample-and-look-up
pass) == every sample resampled and looked up, bit for bit; and the shared resampling
kernel still equals its NumPy reference."""
from types import SimpleNamespace

import numpy as np
import pytest
import shapely

from coverage import pen
from coverage import paths as _paths


def _grid(rng):
    cell = float(rng.choice([0.5, 0.37, 1.0]))
    h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
    origin = rng.normal(size=2) * 20
    return SimpleNamespace(origin=origin, cell_mm=cell, shape=(h, w)), h, w


def _lines(rng, grid, h, w, n_lines, odd=False):
    lo = grid.origin - 3.0
    hi = grid.origin + np.array([w, h]) * grid.cell_mm + 3.0
    lines = []
    for k in range(n_lines):
        kind = rng.integers(0, 3)
        if kind == 0:      # a loop of many points
            m = int(rng.integers(8, 300))
            t = np.linspace(0, 2 * np.pi, m)
            c = rng.uniform(lo, hi)
            r = rng.uniform(1, 0.6 * (hi - lo).max())
            line = c + np.stack([np.cos(t), np.sin(t)], axis=1) * r * rng.uniform(0.5, 1.0, size=2)
        elif kind == 1:    # a straight line across
            line = rng.uniform(lo - 2, hi + 2, size=(2, 2))
        else:              # a wiggle
            m = int(rng.integers(2, 40))
            line = np.cumsum(rng.normal(size=(m, 2)), axis=0) + rng.uniform(lo, hi)
        lines.append(line)
    if odd:
        lines[0] = lines[0][:1]                                    # one point: its own sample
        lines[-1] = np.repeat(lines[-1][:1], 3, axis=0)           # no length
    return lines


def _mask(rng, h, w):
    return rng.random((h, w)) < rng.choice([0.05, 0.4, 0.9])


@pytest.mark.parametrize("seed", range(10))
def test_line_samples_on_equals_reference(seed):
    rng = np.random.default_rng(seed)
    grid, h, w = _grid(rng)
    lines = _lines(rng, grid, h, w, int(rng.integers(1, 12)), odd=seed % 3 == 2)
    mask = _mask(rng, h, w)
    got = pen._line_samples_on(lines, pen.SAMPLE_MM, grid, mask)
    want = pen._line_samples_on_reference(lines, pen.SAMPLE_MM, grid, mask)
    for g, x in zip(got, want):
        assert g.dtype == x.dtype and g.shape == x.shape
        np.testing.assert_array_equal(g, x)
    # the reference keeps the samples that fall on the mask, out of all of them
    samples, starts = pen._resample_lines(lines, pen.SAMPLE_MM)
    assert 0 < len(want[0]) < len(samples)


def test_line_samples_on_uses_the_kernel(monkeypatch):
    rng = np.random.default_rng(5)
    grid, h, w = _grid(rng)
    lines = _lines(rng, grid, h, w, 6)
    mask = _mask(rng, h, w)
    want = pen._line_samples_on_reference(lines, pen.SAMPLE_MM, grid, mask)

    def refuse(*args):
        raise AssertionError("the reference was asked")

    monkeypatch.setattr(pen, "_line_samples_on_reference", refuse)
    got = pen._line_samples_on(lines, pen.SAMPLE_MM, grid, mask)
    for g, x in zip(got, want):
        np.testing.assert_array_equal(g, x)


def test_line_samples_on_by_hand():
    grid = SimpleNamespace(origin=np.array([0.0, 0.0]), cell_mm=1.0, shape=(2, 4))
    mask = np.array([[False, True, True, False], [False, False, False, False]])
    # a line along v = 0.5 from u = 0 to 4 at steps of 1: samples 0, 1, 2, 3, 4; on 1 and 2
    samples, line, index = pen._line_samples_on([np.array([[0.0, 0.5], [4.0, 0.5]])], 1.0, grid, mask)
    np.testing.assert_array_equal(samples, [[1.0, 0.5], [2.0, 0.5]])
    np.testing.assert_array_equal(line, [0, 0])
    np.testing.assert_array_equal(index, [1, 2])


@pytest.mark.parametrize("seed", range(6))
def test_resample_kernel_equals_reference(seed):
    rng = np.random.default_rng(100 + seed)
    grid, h, w = _grid(rng)
    lines = _lines(rng, grid, h, w, 8)
    uv = np.concatenate(lines)
    points = np.concatenate([uv, rng.normal(size=(len(uv), 1))], axis=1)
    starts = np.concatenate([[0], np.cumsum([len(x) for x in lines])])
    out, out_starts = _paths.resample(uv, points, starts, 0.3)
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        np.testing.assert_array_equal(out[out_starts[i]:out_starts[i + 1]],
                                      _paths.resample_reference(uv[a:b], points[a:b], 0.3))


class _Clearance:
    """A pointwise stand-in for FootprintClearance: clear away from one chart point."""

    def __init__(self, centre, radius):
        self.centre, self.radius = centre, radius

    def clear(self, uv, radius_mm):
        return np.linalg.norm(np.asarray(uv) - self.centre, axis=1) > self.radius + radius_mm


@pytest.mark.parametrize("seed", range(10))
def test_pass_runs_equals_reference(seed):
    rng = np.random.default_rng(200 + seed)
    grid, h, w = _grid(rng)
    lines = _lines(rng, grid, h, w, int(rng.integers(1, 14)), odd=seed % 4 == 3)
    active = rng.random((h, w)) < 0.85
    # depth in blocks (runs split where it steps), NaN on a few texels
    depth = np.where(rng.random((h, w)) < 0.5, 1.0, 1.5)
    depth = np.repeat(np.repeat(depth[::8, ::8], 8, axis=0), 8, axis=1)[:h, :w].copy()
    depth[rng.random((h, w)) < 0.02] = np.nan
    near = rng.random((h, w)) < 0.3
    middle = grid.origin + np.array([w, h]) * grid.cell_mm / 2
    polygon = shapely.Point(*middle).buffer(0.45 * min(h, w) * grid.cell_mm)
    for clearance in (None, _Clearance(middle + 2.0, 1.5)):
        problem = SimpleNamespace(clearance=clearance, near_exclusion=near, depth_mm=depth, footprint_mm=2.0)
        got = pen._pass_runs(problem, grid, active, polygon, lines)
        want = pen._pass_runs_reference(problem, grid, active, polygon, lines)
        assert len(got) == len(want) and len(want) > 0
        for (gj, gs, gd), (wj, ws, wd) in zip(got, want):
            assert type(gj) is type(wj) is int and gj == wj
            assert gs.shape == ws.shape
            np.testing.assert_array_equal(gs, ws)
            assert gd == wd
    assert pen._pass_runs(problem, grid, active, polygon, []) == []
