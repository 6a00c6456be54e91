"""Puncture simulation: where every needle of a device enters the skin, and how deep.

Roller: a rigid drum rolling without slip along runs (``coverage._ext.drum``), with a
NumPy reference beside it. The simulation works in the chart (each run carries its chart
path, the chart vector of one skin millimetre across, and the cross curvature) and the
punctures are lifted onto the face afterwards.

Pen: a flat cartridge of needles stamped perpendicular to the skin (``coverage._ext.pen``),
with a NumPy reference beside it. Each needle is placed on the skin through the chart and
its gap to the cartridge face is measured along the stamp's normal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import lifting
from ._ext import drum as _drum
from ._ext import pen as _pen


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
    """An upper bound of the touchdowns of every ring along the runs: the quotient is rounded,
    so a touchdown exactly at a run's end may count one more than floor(...) + 1 says."""
    if len(runs.s) == 0:
        return 0
    s_end = runs.s[np.maximum(runs.start[1:] - 1, 0)]
    long_enough = (runs.start[1:] - runs.start[:-1]) >= 2
    per_ring = np.floor((s_end[:, None] - runs.phase[:, None] - pitch * ring_phase[None, :]) / pitch) + 2
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
        n_k = int(np.floor((s[-1] - runs.phase[m]) / pitch)) + 2   # one more than floor says: see _event_count
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


# --- pen ---------------------------------------------------------------------------------

GOLDEN_ANGLE_RAD = np.pi * (3.0 - np.sqrt(5.0))
_FAR_MM = 1e9  # stamp centres beyond this (or infinite) are treated as NaN: off the chart


@dataclass(frozen=True)
class StampHits:
    """Every needle of k stamps of an N-needle cartridge; row ``i * N + j`` is needle j of stamp i.

    Rows of a stamp whose centre is off the chart are NaN (uv too); a needle off the chart
    keeps its uv and has NaN points, depth and gap. Only ``fired`` rows are punctures.
    """

    uv: np.ndarray        # (k * N, 2) float, chart mm
    points: np.ndarray    # (k * N, 3) float, surface mm
    depth_mm: np.ndarray  # (k * N,) float, setting minus the positive part of the gap
    stamp: np.ndarray     # (k * N,) int
    needle: np.ndarray    # (k * N,) int
    fired: np.ndarray     # (k * N,) bool
    gap_mm: np.ndarray    # (k * N,) float, cartridge face to skin along the stamp normal (convex > 0)


def needle_layout(needles: int, footprint_diameter_mm: float, needle_diameter_mm: float) -> np.ndarray:
    """Needle offsets ``(needles, 2) float`` (skin mm) from the cartridge axis: a Vogel sunflower.

    Needle j sits at radius ``R sqrt((j + 0.5) / N)`` and angle ``j`` golden angles, with
    ``R`` the footprint radius minus the needle radius, so every needle lies inside the footprint.
    """
    if int(needles) != needles or needles < 1:
        raise ValueError(f"needles = {needles!r}; expected a whole number of needles >= 1")
    if not 0.0 <= needle_diameter_mm < footprint_diameter_mm:
        raise ValueError(f"needle_diameter_mm = {needle_diameter_mm!r} with footprint_diameter_mm = "
                         f"{footprint_diameter_mm!r}; a needle must be thinner than the footprint")
    j = np.arange(int(needles), dtype=np.float64)
    r = (footprint_diameter_mm - needle_diameter_mm) / 2.0 * np.sqrt((j + 0.5) / needles)
    angle = j * GOLDEN_ANGLE_RAD
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)


def _per_stamp(name: str, value, k: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return np.full(k, float(array))
    if array.shape != (k,):
        raise ValueError(f"{name} has shape {array.shape}; expected a number or one value per stamp ({k},)")
    return np.ascontiguousarray(array)


def _stamp_inputs(centres_uv, angles_rad, depth_mm, layout, gap_tolerance) -> tuple:
    """Validated ``(centres (k, 2), angles (k,), depth (k,), layout (N, 2), gap_tolerance)``."""
    centres = np.ascontiguousarray(centres_uv, dtype=np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f"centres_uv has shape {centres.shape}; expected (k, 2) chart points (mm)")
    far = ~(np.abs(centres) <= _FAR_MM).all(axis=1)
    if far.any():
        # off the chart anyway; the kernel's cell arithmetic is only defined for finite, sane values
        centres = centres.copy()
        centres[far] = np.nan
    k = len(centres)
    angles = _per_stamp("angles_rad", angles_rad, k)
    depth = _per_stamp("depth_mm", depth_mm, k)
    layout = np.ascontiguousarray(layout, dtype=np.float64)
    if layout.ndim != 2 or layout.shape[1] != 2 or not np.isfinite(layout).all():
        raise ValueError(f"layout has shape {layout.shape}; expected finite (N, 2) needle offsets (mm), "
                         "e.g. needle_layout(...)")
    if not np.isfinite(angles).all():
        raise ValueError(f"angles_rad[{int(np.argmin(np.isfinite(angles)))}] is not finite")
    if not (np.isfinite(depth) & (depth > 0)).all():
        bad = int(np.argmin(np.isfinite(depth) & (depth > 0)))
        raise ValueError(f"depth_mm[{bad}] = {depth[bad]}; depths must be finite and > 0 mm")
    if not (np.isfinite(gap_tolerance) and gap_tolerance >= 0):
        raise ValueError(f"gap_tolerance = {gap_tolerance!r}; expected a finite fraction of the depth >= 0")
    return centres, angles, depth, layout, float(gap_tolerance)


def _visit_order(grid: lifting.TriangleGrid, centres: np.ndarray) -> np.ndarray:
    """Stamps ``(k,) int`` sorted by their chart grid cell, row by row.

    The kernel visits stamps in this order so that neighbouring stamps find their triangles
    still in cache; randomly ordered stamps run about 1.5x faster this way.
    """
    shape = np.asarray(grid.shape)
    cell = np.floor((np.nan_to_num(centres) - grid.origin) / grid.cell)
    cell = np.clip(cell, -1, shape).astype(np.int64)
    return np.argsort(cell[:, 1] * (shape[0] + 2) + cell[:, 0], kind="stable")


def stamp(face, centres_uv, angles_rad, depth_mm, layout, gap_tolerance: float) -> StampHits:
    """Every needle of k cartridge stamps on ``face`` (:class:`coverage.Face`).

    centres_uv : (k, 2) float
        Chart points (mm) of the cartridge axis; a centre off the chart (or NaN) stamps nothing.
    angles_rad : (k,) float or float
        Cartridge rotation: needle offsets are ``Rot(angle) @ layout[j]`` in the skin frame
        (e1 = the chart u axis on the skin, made normal to n; e2 = n x e1).
    depth_mm : (k,) float or float
        Depth setting per stamp (mm).
    layout : (N, 2) float
        Needle offsets (skin mm) from the cartridge axis, e.g. :func:`needle_layout`.
    gap_tolerance : float
        A needle fires if its gap is at most this fraction of the depth setting.

    The cartridge face is the tangent plane at the lifted centre c (normal n). A needle's chart
    point is ``centre + M @ offset`` with ``M = pinv(J) [e1 e2]``, J the chart Jacobian at the
    centre; its gap is ``(c + offset on the plane - p) . n`` to its lifted skin point p. The
    effective depth is the setting minus the positive part of the gap (skin rising into the
    cartridge, gap < 0, is pressed flat: depth never exceeds the setting).
    """
    centres, angles, depth, layout, tol = _stamp_inputs(centres_uv, angles_rad, depth_mm, layout, gap_tolerance)
    rows = len(centres) * len(layout)
    uv = np.empty((rows, 2))
    points = np.empty((rows, 3))
    depth_out = np.empty(rows)
    stamp_id = np.empty(rows, dtype=np.int64)
    needle = np.empty(rows, dtype=np.int64)
    fired = np.empty(rows, dtype=bool)
    gap = np.empty(rows)
    jacobian = np.ascontiguousarray(face.jacobian, dtype=np.float64).reshape(-1, 6)
    _pen.stamp(face.chart_grid.affine, np.ascontiguousarray(face.faces, dtype=np.int64), face._frames, jacobian,
               centres, angles, depth, layout, _visit_order(face.chart_grid, centres),
               *lifting._grid_args(face.chart_grid), 1e-9, tol,
               uv, points, depth_out, stamp_id, needle, fired.view(np.uint8), gap)
    return StampHits(uv, points, depth_out, stamp_id, needle, fired, gap)


def stamp_reference(face, centres_uv, angles_rad, depth_mm, layout, gap_tolerance: float) -> StampHits:
    """NumPy twin of :func:`stamp`, vectorised over all stamps and needles."""
    centres, angles, depth, layout, tol = _stamp_inputs(centres_uv, angles_rad, depth_mm, layout, gap_tolerance)
    k, n_needles = len(centres), len(layout)
    grid, faces = face.chart_grid, face.faces
    tri_c, bary_c = lifting.locate_reference(grid, centres)
    c = lifting.interpolate_reference(face.vertices, faces, tri_c, bary_c)
    n = lifting.interpolate_reference(face.normals, faces, tri_c, bary_c, normalize=True)
    jac = face.jacobian[np.maximum(tri_c, 0)]                       # (k, 3, 2)
    ju = jac[:, :, 0]
    e1 = ju - np.sum(ju * n, axis=1, keepdims=True) * n
    length = np.linalg.norm(e1, axis=1)
    g = np.transpose(jac, (0, 2, 1)) @ jac
    ok = (tri_c >= 0) & (length > 0) & (g[:, 0, 0] * g[:, 1, 1] - g[:, 0, 1] ** 2 > 0)
    e1 = np.divide(e1, length[:, None], out=np.full_like(e1, np.nan), where=ok[:, None])
    e2 = np.cross(n, e1)
    m = np.full((k, 2, 2), np.nan)
    m[ok] = np.linalg.pinv(jac[ok]) @ np.stack([e1[ok], e2[ok]], axis=2)
    c[~ok] = np.nan
    n[~ok] = np.nan

    cos, sin = np.cos(angles), np.sin(angles)
    rot = np.stack([np.stack([cos, -sin], axis=1), np.stack([sin, cos], axis=1)], axis=1)  # (k, 2, 2)
    offset = np.einsum("kab,jb->kja", rot, layout)                                          # (k, N, 2)
    uv = (centres[:, None, :] + np.einsum("kab,kjb->kja", m, offset)).reshape(-1, 2)
    tri, bary = lifting.locate_reference(grid, uv)
    on = tri >= 0
    points = lifting.interpolate_reference(face.vertices, faces, tri, bary)
    points[~on] = np.nan
    plane = c[:, None, :] + offset[..., :1] * e1[:, None, :] + offset[..., 1:] * e2[:, None, :]
    gap = np.sum((plane.reshape(-1, 3) - points) * np.repeat(n, n_needles, axis=0), axis=1)
    setting = np.repeat(depth, n_needles)
    fired = on & np.repeat(ok, n_needles) & (gap <= tol * setting)
    return StampHits(uv, points, setting - np.maximum(gap, 0.0), np.repeat(np.arange(k, dtype=np.int64), n_needles),
                     np.tile(np.arange(n_needles, dtype=np.int64), k), fired, gap)
