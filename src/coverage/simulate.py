"""Puncture simulation: where every needle of a device enters the skin, and how deep.

Roller: a rigid drum rolling without slip along runs (``coverage._ext.drum``), with a
NumPy reference beside it. The simulation works in the chart (each run carries its chart
path, the chart vector of one skin millimetre across, and the cross curvature) and the
punctures are lifted onto the face afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._ext import drum as _drum


@dataclass(frozen=True)
class RunArrays:
    """Runs packed end to end: run m covers rows ``start[m]:start[m + 1]``."""

    s: np.ndarray        # (n,) arc length on the skin from the run's start (mm)
    uv: np.ndarray       # (n, 2) chart path
    across: np.ndarray   # (n, 2) chart vector of one skin mm to the left of travel
    kappa: np.ndarray    # (n,) normal curvature across the drum (1/mm, convex > 0)
    start: np.ndarray    # (m + 1,) int
    phase: np.ndarray    # (m,) arc length of ring 0's first needle (mm)


@dataclass(frozen=True)
class Punctures:
    """Needle entries in firing order."""

    uv: np.ndarray        # (k, 2) chart
    depth_mm: np.ndarray  # (k,) effective depth (needle length minus gap)
    run: np.ndarray       # (k,) int, index of the run (stroke) that made it
    ring: np.ndarray      # (k,) int, drum ring
    s_mm: np.ndarray      # (k,) arc length along its run when it fired


def _ring_order(ring_phase: np.ndarray) -> np.ndarray:
    return np.argsort(ring_phase, kind="stable").astype(np.int64)


def _event_count(runs: RunArrays, pitch: float, ring_phase: np.ndarray) -> int:
    s_end = runs.s[np.maximum(runs.start[1:] - 1, 0)]
    long_enough = (runs.start[1:] - runs.start[:-1]) >= 2
    per_ring = np.floor((s_end[:, None] - runs.phase[:, None] - pitch * ring_phase[None, :]) / pitch) + 1
    return int(np.maximum(per_ring, 0)[long_enough].sum())


def roll(runs: RunArrays, drum) -> Punctures:
    """Every puncture of a drum (:class:`coverage.roller.Drum`) rolling along the runs."""
    ring_phase = np.ascontiguousarray(drum.ring_phase, dtype=np.float64)
    capacity = _event_count(runs, drum.needle_pitch_mm, ring_phase)
    out_uv = np.empty((capacity, 2))
    out_depth = np.empty(capacity)
    out_run = np.empty(capacity, dtype=np.int64)
    out_ring = np.empty(capacity, dtype=np.int64)
    out_s = np.empty(capacity)
    count = _drum.roll(np.ascontiguousarray(runs.s, dtype=np.float64), np.ascontiguousarray(runs.uv, dtype=np.float64),
                       np.ascontiguousarray(runs.across, dtype=np.float64),
                       np.ascontiguousarray(runs.kappa, dtype=np.float64),
                       np.ascontiguousarray(runs.start, dtype=np.int64), np.ascontiguousarray(runs.phase, dtype=np.float64),
                       np.ascontiguousarray(drum.ring_x_mm, dtype=np.float64), ring_phase, _ring_order(ring_phase),
                       drum.needle_pitch_mm, drum.needle_length_mm, drum.gap_tolerance * drum.needle_length_mm,
                       drum.width_mm / 2.0, out_uv, out_depth, out_run, out_ring, out_s)
    return Punctures(out_uv[:count], out_depth[:count], out_run[:count], out_ring[:count], out_s[:count])


def roll_reference(runs: RunArrays, drum) -> Punctures:
    """NumPy twin of :func:`roll`: the same events, one run at a time."""
    ring_x = drum.ring_x_mm
    ring_phase = drum.ring_phase
    order = _ring_order(ring_phase)
    pitch = drum.needle_pitch_mm
    half = drum.width_mm / 2.0
    max_gap = drum.gap_tolerance * drum.needle_length_mm
    parts = []
    for m in range(len(runs.start) - 1):
        a, b = runs.start[m], runs.start[m + 1]
        if b - a < 2:
            continue
        s = runs.s[a:b]
        n_k = int(np.floor((s[-1] - runs.phase[m]) / pitch)) + 1
        k = np.repeat(np.arange(max(n_k, 0)), len(order))
        ring = np.tile(order, max(n_k, 0))
        se = runs.phase[m] + pitch * (k + ring_phase[ring])
        keep = se <= s[-1]
        se, ring = se[keep], ring[keep]
        x = ring_x[ring]
        kap = np.interp(se, s, runs.kappa[a:b])
        gap = np.where(kap >= 0, kap * x * x / 2.0, -kap * (half * half - x * x) / 2.0)
        hit = gap <= max_gap
        uv = np.stack([np.interp(se, s, runs.uv[a:b, j]) + x * np.interp(se, s, runs.across[a:b, j])
                       for j in range(2)], axis=1)
        parts.append((uv[hit], drum.needle_length_mm - gap[hit], np.full(hit.sum(), m), ring[hit], se[hit]))
    if not parts:
        return Punctures(np.empty((0, 2)), np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    return Punctures(*(np.concatenate(p) for p in zip(*parts)))
