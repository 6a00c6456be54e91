"""Chart paths resampled at even steps of skin length, many paths at once.

A chart path (``(n, 2)`` chart points, in order) and its lift onto the skin (``(n, 3)``
points) have an arc length on the skin at every point; the path resampled at ``step_mm`` has
``max(2, ceil(length / step_mm) + 1)`` points evenly spaced in that arc length, each
coordinate interpolated linearly between the path's points. The roller resamples thousands
of short paths per plan: the compiled kernel (``coverage._ext.paths``) does them in one call,
with NumPy's own arithmetic (``numpy.cumsum``, ``numpy.linspace``, ``numpy.interp``), so it
equals :func:`resample_reference` bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from ._ext import paths as _kernel


def _starts(starts, n: int) -> np.ndarray:
    starts = np.ascontiguousarray(starts, dtype=np.int64).reshape(-1)
    if len(starts) < 1 or starts[0] != 0 or starts[-1] != n or (np.diff(starts) < 0).any():
        raise ValueError(f"starts must rise from 0 to the {n} points; got {starts.tolist()[:8]}...")
    return starts


def resample(uv: np.ndarray, points: np.ndarray, starts, step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Every path resampled at ``step_mm`` of skin length.

    uv : (n, 2) float, the paths' chart points side by side
    points : (n, 3) float, their lift onto the skin (mm)
    starts : (p + 1,) int, path i is rows ``starts[i]:starts[i + 1]``
    step_mm : float > 0

    Returns ``(out (m, 2) float, out_starts (p + 1,) int)``: path i resampled is rows
    ``out_starts[i]:out_starts[i + 1]`` of out. A path of fewer than two points is kept as
    it is (as :func:`resample_reference` keeps it).
    """
    uv = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 2)
    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) != len(uv):
        raise ValueError(f"{len(points)} lifted points for {len(uv)} chart points; one each is needed")
    starts = _starts(starts, len(uv))
    step_mm = float(step_mm)
    if not step_mm > 0:
        raise ValueError(f"step_mm = {step_mm}: a resampling step must be positive")
    sizes = np.diff(starts)
    # np.linalg.norm(np.diff(points, axis=0), axis=1) after a 0, row by row as per path, and
    # whether every uv and seg is finite
    seg = np.empty(len(uv))
    finite = _kernel.segments(uv, points, seg)
    if not (finite and (sizes >= 2).all()):
        # what the kernel does not take (a path under two points, a non-finite value): per
        # path with the reference, which keeps or refuses it as it should
        pieces = [resample_reference(uv[a:b], points[a:b], step_mm) for a, b in zip(starts[:-1], starts[1:])]
        out_starts = np.concatenate([[0], np.cumsum([len(x) for x in pieces])]).astype(np.int64)
        return (np.concatenate(pieces) if pieces else np.empty((0, 2))), out_starts
    arc, out_starts = sample_layout(seg, starts, step_mm)
    out = np.empty((int(out_starts[-1]), 2))
    _kernel.resample(uv, arc, starts, out_starts, out)
    return out, out_starts


def sample_layout(seg: np.ndarray, starts: np.ndarray, step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Where the kernel's resampling puts each path's samples: ``(arc (n,) float, out_starts
    (p + 1,) int)``, every point's arc length along its path and the rows of ``out`` path i
    fills (``out_starts[i]:out_starts[i + 1]``), from the segment lengths ``seg (n,)`` (the
    first point's of each path is not read) of paths of two points or more, finite."""
    arc = np.empty(len(seg))
    counts = np.empty(len(starts) - 1, dtype=np.int64)
    _kernel.arc_lengths(seg, starts, step_mm, arc, counts)
    out_starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out_starts[1:])
    return arc, out_starts


# --- NumPy reference (tests compare the kernel with it) ------------------------------------

def resample_reference(uv: np.ndarray, points: np.ndarray, step_mm: float) -> np.ndarray:
    """One path ``(n, 2)`` with its lift ``(n, 3)`` resampled at ``step_mm`` of skin length."""
    if len(uv) < 2:
        return uv
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(math.ceil(s[-1] / step_mm)) + 1)
    target = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(target, s, uv[:, 0]), np.interp(target, s, uv[:, 1])], axis=1)
