"""Puncture density: punctures per cm^2 of skin in a 1 cm^2 window around every point.

Density is computed on a texel grid over the chart. Each texel knows the triangle under its
centre, its skin area (chart area x that triangle's area scale) and its zone. The window
of a texel is the square of texels whose skin area is ~1 cm^2 (its chart side shrinks
where the chart is stretched); density there is the punctures in the window divided by
the *treatable* skin area in the window, so zone edges are not under-counted.

Two counts are kept: nominal (every needle entry the device fired) and distinct channels
(punctures within one needle diameter of an earlier one merge into its channel).

Kernels (``coverage._ext.density``) and their NumPy references live side by side here.
"""
from __future__ import annotations

import functools
import math
import threading
import weakref
from dataclasses import asdict, dataclass

import numpy as np

from ._ext import density as _kernel
from .chart import weighted_percentile, weighted_percentiles

WINDOW_MM2 = 100.0        # 1 cm^2
DEFAULT_TEXEL_MM = 0.5
IN_BAND_LOW = 0.9         # the band is [0.9 x target, cap]
# a puncture counts for the face only if it lies this close to the surface
ON_SURFACE_MM = 0.5


# --- kernels and references --------------------------------------------------------------

def splat(uv: np.ndarray, origin: np.ndarray, cell: float, shape: tuple,
          weight: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Sum ``weight`` (default 1) of chart points ``(k, 2)`` into texels; returns (grid, dropped)."""
    uv = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 2)
    if weight is None:
        weight = np.empty(0)  # the kernel adds 1 per point
    else:
        weight = np.ascontiguousarray(weight, dtype=np.float64).reshape(-1)
        if len(weight) != len(uv):
            raise ValueError(f"weight has {len(weight)} values for {len(uv)} points; give one per point")
    grid = np.zeros(shape, dtype=np.float64)
    cell = float(cell)
    # x * (1 / cell) == x / cell for every x exactly when cell is a power of two (0.5 mm texels)
    inv_cell = 1.0 / cell if cell > 0 and math.frexp(cell)[0] == 0.5 and math.isfinite(1.0 / cell) else 0.0
    dropped = _kernel.splat(uv, weight, float(origin[0]), float(origin[1]), cell, inv_cell, grid)
    return grid, int(dropped)


def splat_reference(uv, origin, cell, shape, weight=None):
    """NumPy twin of :func:`splat`."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    weight = np.ones(len(uv)) if weight is None else np.asarray(weight, dtype=np.float64)
    h, w = shape
    with np.errstate(invalid="ignore"):
        f = (uv - np.asarray(origin)) / cell
        ok = (f[:, 0] >= 0) & (f[:, 1] >= 0) & (f[:, 0] < w) & (f[:, 1] < h)
    ix = f[ok, 0].astype(np.int64)
    iy = f[ok, 1].astype(np.int64)
    grid = np.bincount(iy * w + ix, weights=weight[ok], minlength=h * w).reshape(h, w)
    return grid, int((~ok).sum())


def window_sums(values: np.ndarray, half_u: np.ndarray, half_v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over each masked texel's window (rows +-half_v, columns +-half_u)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    h, w = values.shape
    out = np.empty((h, w), dtype=np.float64)
    sat = np.empty((h + 1, w + 1), dtype=np.float64)
    _kernel.window_sums(values, np.ascontiguousarray(half_u, dtype=np.int64),
                        np.ascontiguousarray(half_v, dtype=np.int64),
                        np.ascontiguousarray(mask, dtype=np.uint8), sat, out)
    return out


def window_sums_reference(values, half_u, half_v, mask):
    """NumPy twin of :func:`window_sums`, straight from the definition (no summed-area table).

    For every offset in the largest window, each texel adds its neighbour at that offset if
    the offset lies within its own window.
    """
    values = np.asarray(values, dtype=np.float64)
    h, w = values.shape
    hu_max = int(half_u[mask.astype(bool)].max(initial=0))
    hv_max = int(half_v[mask.astype(bool)].max(initial=0))
    padded = np.zeros((h + 2 * hv_max, w + 2 * hu_max))
    padded[hv_max:hv_max + h, hu_max:hu_max + w] = values
    out = np.zeros((h, w))
    for dv in range(-hv_max, hv_max + 1):
        row_ok = np.abs(dv) <= half_v
        for du in range(-hu_max, hu_max + 1):
            take = row_ok & (np.abs(du) <= half_u)
            out += np.where(take, padded[hv_max + dv:hv_max + dv + h, hu_max + du:hu_max + du + w], 0.0)
    return np.where(mask.astype(bool), out, 0.0)



def window_spread(values: np.ndarray, half_u: np.ndarray, half_v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The adjoint of :func:`window_sums`: each masked texel's value added over its window,
    ``out[t] = sum of values[p] over masked p whose window holds t``.

    values, half_u, half_v, mask : (h, w); the gradient of any function of window sums
    with respect to the texel values is the spread of its gradient with respect to the sums.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    h, w = values.shape
    out = np.empty((h, w), dtype=np.float64)
    corners = np.empty((h + 1, w + 1), dtype=np.float64)
    _kernel.window_spread(values, np.ascontiguousarray(half_u, dtype=np.int64),
                          np.ascontiguousarray(half_v, dtype=np.int64),
                          np.ascontiguousarray(mask, dtype=np.uint8), corners, out)
    return out


def window_spread_reference(values, half_u, half_v, mask):
    """NumPy twin of :func:`window_spread`, straight from the definition: every masked
    texel adds its value to each texel of its window."""
    values = np.asarray(values, dtype=np.float64)
    h, w = values.shape
    out = np.zeros((h, w))
    for i, j in zip(*np.nonzero(np.asarray(mask, dtype=bool))):
        hv, hu = half_v[i, j], half_u[i, j]
        out[max(i - hv, 0):i + hv + 1, max(j - hu, 0):j + hu + 1] += values[i, j]
    return out


def fit_objective(*args) -> tuple[float, float]:
    """The pen fit's objective in one compiled pass: see :class:`coverage.pen_fit.FitObjective`
    (its NumPy twin is :func:`coverage.pen_fit.objective_reference`)."""
    return _kernel.fit_objective(*args)


FIT_TEXEL_LIMIT = 2 ** 31   # fit_texels' offsets into the (h + 1, w + 1) tables are 32-bit


def fit_texels(half_u: np.ndarray, half_v: np.ndarray, mask: np.ndarray, per_count: np.ndarray, low: np.ndarray,
               high: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texels of an ``(h, w)`` grid as :func:`fit_objective` goes through them, fixed for
    a fit: ``(runs, windows, consts)``.

    A texel off the mask has the density ``per_count x 0.0`` whatever the weights; where both
    its terms ``(scale x under) x under`` and ``(scale x over) x over`` are then +-0 it adds
    nothing to the sums (neither is ever -0: they start at +0 and sums of nonzero numbers
    round to +0) and nothing to the gradient (the mask keeps it out of the windows), and the
    kernel passes it over. ``runs (2 r,) int32``: the other texels as flat ``[a, b)`` pairs,
    ascending; per texel of the runs in order, ``windows (k, 3) int32``: the offset of its
    window's first corner ``(i0, j0)`` in the ``(h + 1, w + 1)`` tables, ``j1 - j0`` and
    ``(i1 - i0) (w + 1)`` (the window clipped to the grid), or ``w, 0, 0`` off the mask (the
    first row of the summed-area table is +0 throughout: its density is ``per_count x 0.0``;
    and the last column of the corners is never read: its gradient goes nowhere);
    ``consts (k, 4) float64``: its ``per_count, low, high, scale``."""
    h, w = np.shape(mask)
    if (h + 1) * (w + 1) >= FIT_TEXEL_LIMIT:
        raise ValueError("fit_texels: grid too large for 32-bit offsets")
    c = np.ascontiguousarray
    args = (c(half_u, dtype=np.int64), c(half_v, dtype=np.int64), c(np.asarray(mask) != 0, dtype=np.uint8),
            *(c(a, dtype=np.float64) for a in (per_count, low, high, scale)))
    n_runs, n = _kernel.fit_texels(*args, np.empty(0, dtype=np.int32), np.empty((0, 3), dtype=np.int32),
                                   np.empty((0, 4)))
    runs, windows, consts = np.empty(n_runs, dtype=np.int32), np.empty((n, 3), dtype=np.int32), np.empty((n, 4))
    if n_runs and _kernel.fit_texels(*args, runs, windows, consts)[0] < 0:
        raise ValueError("fit_texels: windows too large for 32-bit offsets")
    return runs, windows, consts


def fit_texels_reference(half_u, half_v, mask, per_count, low, high, scale):
    """NumPy twin of :func:`fit_texels`."""
    h, w = np.shape(mask)
    if (h + 1) * (w + 1) >= FIT_TEXEL_LIMIT:
        raise ValueError("fit_texels: grid too large for 32-bit offsets")
    mask = np.asarray(mask).ravel() != 0
    pc, lo, hi, sc = (np.asarray(a, dtype=np.float64).ravel() for a in (per_count, low, high, scale))
    with np.errstate(all="ignore"):
        # the terms off the mask, computed as the kernel computes them
        d = pc * 0.0
        a, b = lo - d, d - hi
        u = np.where(a <= 0.0, 0.0, a)
        o = np.where(b <= 0.0, 0.0, b)
        live = mask | ~(((sc * u) * u == 0.0) & ((sc * o) * o == 0.0))
    edges = np.flatnonzero(np.diff(np.concatenate([[False], live, [False]]).astype(np.int8)))
    runs = edges.astype(np.int32)
    idx = np.flatnonzero(live)
    i, j = np.divmod(idx, w) if w else (idx, idx)
    hu = np.asarray(half_u).ravel()[idx].astype(np.int64)
    hv = np.asarray(half_v).ravel()[idx].astype(np.int64)
    # _window's clipping
    i0, i1 = np.maximum(i - hv, 0), np.minimum(i + hv + 1, h)
    j0, j1 = np.maximum(j - hu, 0), np.minimum(j + hu + 1, w)
    on = mask[idx]
    windows = np.stack([np.where(on, i0 * (w + 1) + j0, w), np.where(on, j1 - j0, 0),
                        np.where(on, (i1 - i0) * (w + 1), 0)], axis=1)
    if windows.size and (windows[:, 0] + windows[:, 1] + windows[:, 2]).max() >= FIT_TEXEL_LIMIT:
        raise ValueError("fit_texels: windows too large for 32-bit offsets")
    consts = np.stack([pc[idx], lo[idx], hi[idx], sc[idx]], axis=1)
    return runs, np.ascontiguousarray(windows, dtype=np.int32), np.ascontiguousarray(consts)


def band_gradient(*args) -> None:
    """The repair's band gradient in one compiled pass: see :class:`coverage.pen_fit.BandGradient`."""
    _kernel.band_gradient(*args)


class WindowStamps:
    """The stamps with a puncture in a texel's window: the distinct columns of a
    ``(h * w, m)`` CSR matrix over the rows of the window's texels, ascending (as
    :func:`numpy.unique` of them)."""

    def __init__(self, by_texel, shape: tuple):
        self.by_texel = by_texel
        self.indptr = np.ascontiguousarray(by_texel.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(by_texel.indices, dtype=np.int64)
        self.shape = tuple(int(x) for x in shape)
        self.seen = np.zeros(by_texel.shape[1], dtype=np.uint8)
        self.out = np.empty(by_texel.shape[1], dtype=np.int64)

    def __call__(self, i: int, j: int, hu: int, hv: int) -> np.ndarray:
        h, w = self.shape
        i0, i1 = max(i - hv, 0), min(i + hv + 1, h)
        j0, j1 = max(j - hu, 0), min(j + hu + 1, w)
        if i1 <= i0 or j1 <= j0:
            return np.empty(0, dtype=np.int64)
        n = _kernel.window_stamps(self.indptr, self.indices, i0, i1, j0, j1, w, self.seen, self.out)
        return np.sort(self.out[:n])

    def reference(self, i: int, j: int, hu: int, hv: int) -> np.ndarray:
        """NumPy twin of :meth:`__call__` (each window row a contiguous run of texels)."""
        h, w = self.shape
        by_texel = self.by_texel
        j0, j1 = max(j - hu, 0), min(j + hu + 1, w)
        rows = np.arange(max(i - hv, 0), min(i + hv + 1, h))
        starts = by_texel.indptr[rows * w + j0]
        ends = by_texel.indptr[rows * w + j1]
        return np.unique(np.concatenate([by_texel.indices[a:b] for a, b in zip(starts, ends)]
                                        + [np.empty(0, dtype=by_texel.indices.dtype)]))


class StampEffects:
    """What single stamps do to a windowed density map, each weighed over the texels whose
    windows its punctures fall in (the pen fit's repair: :mod:`coverage.pen_fit`).

    stamps : ``(h * w, m)`` scipy sparse -- column s holds stamp s's punctures per texel
    per_count : (h * w,) float -- density (per cm^2) one puncture adds to a texel's window
        (0 where a texel's window does not count)
    half_u, half_v : (h * w,) int -- window half-sizes; low, high : (h * w,) float -- each
    texel's band; area : (h * w,) float -- its skin area
    """

    def __init__(self, stamps, shape: tuple, per_count, half_u, half_v, low, high, area):
        csc = stamps.tocsc()
        self.indptr = np.ascontiguousarray(csc.indptr, dtype=np.int64)
        self.texels = np.ascontiguousarray(csc.indices, dtype=np.int64)
        self.counts = np.ascontiguousarray(csc.data, dtype=np.float64)
        self.shape = tuple(int(x) for x in shape)
        self.per_count = np.ascontiguousarray(per_count, dtype=np.float64)
        self.half_u = np.ascontiguousarray(half_u, dtype=np.int64)
        self.half_v = np.ascontiguousarray(half_v, dtype=np.int64)
        self.low = np.ascontiguousarray(low, dtype=np.float64)
        self.high = np.ascontiguousarray(high, dtype=np.float64)
        self.area = np.ascontiguousarray(area, dtype=np.float64)
        counted = self.per_count != 0
        self.reach = int(max(self.half_u[counted].max(initial=0), self.half_v[counted].max(initial=0)))
        # finite areas and floors: a texel whose state does not change adds exactly 0 (skipped)
        self.finite = bool(np.isfinite(self.area).all() and np.isfinite(self.low).all())
        # each stamp's punctures; whole counts >= 0 (needles) and per_count >= 0 make every
        # window count exact whatever box it is summed over (the tracked kernels' terms)
        m = len(self.indptr) - 1
        totals = np.bincount(np.repeat(np.arange(m), np.diff(self.indptr)), self.counts, minlength=m)
        self.whole = bool(self.finite and np.all(self.counts >= 0) and np.array_equal(self.counts, np.floor(self.counts))
                          and totals.max(initial=0) < 2 ** 30 and np.all(self.per_count >= 0)
                          and np.isfinite(self.per_count).all())
        self.totals = np.ascontiguousarray(totals, dtype=np.int32) if self.whole else None
        self._tracked = None

    def effects(self, columns, sign: float, density: np.ndarray) -> np.ndarray:
        """``(k, 3)`` for adding (``sign`` +1) or removing (-1) each stamp of ``columns`` alone to
        ``density (h * w,)``: area entering the band minus area leaving it, area newly over
        ``high`` minus area no longer over it, shortfall filled (area x the fraction of
        ``low`` made up)."""
        columns = np.ascontiguousarray(columns, dtype=np.int64)
        out = np.empty((len(columns), 3))
        h, w = self.shape
        if density is self._tracked:
            self._effects_tracked(columns, np.empty(0, dtype=np.int64), float(sign), out)
            return out
        _kernel.stamp_effects(self.indptr, self.texels, self.counts, columns, float(sign), density, self.low,
                              self.high, self.area, self.per_count, self.half_u, self.half_v, h, w, self.reach, out,
                              self.finite)
        return out

    def apply(self, column: int, sign: float, density: np.ndarray) -> None:
        """Add (``sign`` +1) or remove (-1) stamp ``column``'s punctures to ``density`` in place."""
        h, w = self.shape
        if density is self._tracked:
            if _kernel.stamp_apply_tracked(self.indptr, self.texels, self.counts, int(column), float(sign), density,
                                           self.per_count, self.low, self.high, self.half_u, self.half_v, self._ext_u,
                                           self._ext_v, self._cap, *self._rooms, h, w):
                raise MemoryError("StampEffects.apply: out of memory")
            return
        _kernel.stamp_apply(self.indptr, self.texels, self.counts, int(column), float(sign), density,
                            self.per_count, self.half_u, self.half_v, h, w, self.reach)

    def entries(self, columns) -> tuple[np.ndarray, np.ndarray]:
        """Where stamps ``columns`` keep their punctures: ``(position in columns, index into
        texels and counts)`` of every entry, column by column."""
        columns = np.asarray(columns, dtype=np.int64)
        lengths = self.indptr[columns + 1] - self.indptr[columns]
        take = np.repeat(self.indptr[columns] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        return np.repeat(np.arange(len(columns)), lengths), take

    def touching(self, columns, mask: np.ndarray) -> np.ndarray:
        """``(k,) bool``: which stamps of ``columns`` have a puncture on a texel of ``mask``
        (h * w,) bool."""
        columns = np.ascontiguousarray(columns, dtype=np.int64)
        out = np.empty(len(columns), dtype=np.uint8)
        _kernel.stamps_touching(self.indptr, self.texels, columns, np.ascontiguousarray(mask, dtype=bool).view(np.uint8),
                                out)
        return out.view(bool)

    def touching_reference(self, columns, mask: np.ndarray) -> np.ndarray:
        """NumPy twin of :meth:`touching`."""
        owner, take = self.entries(columns)
        return np.bincount(owner, np.asarray(mask, dtype=bool)[self.texels[take]], minlength=len(columns)) > 0

    def swap_effects(self, removed, added, density: np.ndarray) -> np.ndarray:
        """``(k, 3)`` like :meth:`effects` for removing stamp ``removed[i]`` and adding
        ``added[i]`` together (a stamp moved to another candidate): the pair is weighed as one
        stamp whose punctures are ``added``'s minus ``removed``'s."""
        if density is self._tracked:
            removed = np.ascontiguousarray(removed, dtype=np.int64)
            added = np.ascontiguousarray(added, dtype=np.int64)
            if removed.shape != added.shape or removed.ndim != 1:
                raise ValueError(f"{len(removed)} stamps removed and {len(added)} added; give them in pairs")
            out = np.empty((len(removed), 3))
            if len(removed):
                self._effects_tracked(added, removed, 1.0, out)
            return out
        pairs = np.stack([np.asarray(removed, dtype=np.int64), np.asarray(added, dtype=np.int64)], axis=1)
        # each pair's punctures: the removed stamp's (negated), then the added one's
        owner, take = self.entries(pairs.ravel())
        indptr = np.zeros(len(pairs) + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner // 2, minlength=len(pairs)), out=indptr[1:])
        texels = np.ascontiguousarray(self.texels[take])
        counts = np.ascontiguousarray(np.where(owner % 2 == 0, -self.counts[take], self.counts[take]))
        out = np.empty((len(pairs), 3))
        h, w = self.shape
        _kernel.stamp_effects(indptr, texels, counts, np.arange(len(pairs), dtype=np.int64), 1.0, density,
                              self.low, self.high, self.area, self.per_count, self.half_u, self.half_v, h, w,
                              self.reach, out, self.finite)
        return out

    def track(self, density: np.ndarray) -> bool:
        """Weigh stamps against ``density`` (h * w,) (float64, contiguous) from now on with the
        tracked kernels, which give :meth:`effects`, :meth:`swap_effects` and :meth:`apply` bit
        for bit: each texel's room (:meth:`rooms`) lets them pass over the texels a stamp's
        punctures cannot move out of their state, and each stamp is weighed only over the
        texels whose windows can hold one of its punctures. ``density`` must from then on
        change only through :meth:`apply` (which keeps the rooms). Only with whole puncture
        counts >= 0 and per_count >= 0 (:attr:`whole`); returns whether it is tracked."""
        self._tracked = None
        h, w = self.shape
        if not (self.whole and isinstance(density, np.ndarray) and density.dtype == np.float64
                and density.ndim == 1 and density.flags.c_contiguous and len(density) == h * w):
            return False
        self.prepare_tracking()
        self._rooms = self.rooms(density)
        self._tracked = density
        return True

    def prepare_tracking(self) -> None:
        """What :meth:`track` needs whatever the density (the texels' reach extents and the
        largest count), made once; a plan makes it with the repair's other parts, beside
        the fit. Nothing to make without whole counts."""
        if self.whole and not hasattr(self, "_ext_u"):
            self._ext_u, self._ext_v = self.reach_extents()
            self._cap = int(self.totals.max(initial=0))

    def reach_extents(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ext_u, ext_v)`` (h * w,) int32: per texel t, the widest window half (along u, along
        v) of a counted texel within reach of t; every texel whose window holds t lies within
        ``ext_v`` rows and ``ext_u`` columns of it."""
        from scipy import ndimage

        h, w = self.shape
        counted = self.per_count != 0
        hu = np.where(counted, self.half_u, 0).reshape(h, w)
        hv = np.where(counted, self.half_v, 0).reshape(h, w)
        ru, rv = int(hu.max(initial=0)), int(hv.max(initial=0))
        size = (2 * rv + 1, 2 * ru + 1)
        ext_u = ndimage.maximum_filter(hu, size=size, mode="constant", cval=0)
        ext_v = ndimage.maximum_filter(hv, size=size, mode="constant", cval=0)
        return (np.ascontiguousarray(ext_u.ravel(), dtype=np.int32),
                np.ascontiguousarray(ext_v.ravel(), dtype=np.int32))

    def rooms(self, density: np.ndarray, cap: int | None = None) -> tuple:
        """``(up, down, block_up, block_down)`` int32: per texel (h * w,) the most punctures (up
        to ``cap``, default the most any stamp has) its window may gain, or lose, with the
        texel adding nothing to :meth:`effects`' sums, and the least of each over every run
        of 8 texels of a row (h * ceil(w / 8),) (:func:`coverage._ext.density.stamp_rooms`).
        Only with :attr:`whole` counts."""
        h, w = self.shape
        cap = int(self.totals.max(initial=0)) if cap is None else int(cap)
        up, down = np.empty(h * w, dtype=np.int32), np.empty(h * w, dtype=np.int32)
        nb = -(-w // 8)
        block_up, block_down = np.empty(h * nb, dtype=np.int32), np.empty(h * nb, dtype=np.int32)
        _kernel.stamp_rooms(np.ascontiguousarray(density, dtype=np.float64), self.per_count, self.low, self.high, cap,
                            0, h, 0, w, w, up, down, block_up, block_down)
        return up, down, block_up, block_down

    def _effects_tracked(self, plus, minus, sign, out):
        h, w = self.shape
        if _kernel.stamp_effects_tracked(self.indptr, self.texels, self.counts, self.totals, plus, minus, sign,
                                         self._tracked, self.low, self.high, self.area, self.per_count, self.half_u,
                                         self.half_v, self._ext_u, self._ext_v, *self._rooms, h, w, out):
            raise MemoryError("StampEffects.effects: out of memory")

    PATCH_MODES = ("drop", "add", "shift")     # repair_pass's modes 0, 1, 2

    def patch_moves(self, mode: str, ks, tries: int, fire: np.ndarray, blocked: np.ndarray, hit, grad: np.ndarray,
                    windows: WindowStamps, groups=None, steps=None) -> np.ndarray:
        """One round of the repair's moves (:func:`coverage.pen_fit.repair`), patch by patch,
        against the tracked density (:meth:`track`), in one compiled pass
        (:func:`coverage._ext.density.repair_pass`).

        ``ks`` the patches' worst texels, in order; each weighs the stamps with a puncture in
        its window (``windows``): ``mode`` "drop" removes a fired stamp, "add" adds one
        (never one ``blocked``, nor one touching ``hit`` (h * w,) bool, or None: no texel;
        those that would lift a window over its mark are blocked), "shift" moves a fired one
        by one of ``steps`` within its path (``groups (m,)``). ``tries``: how many stamps (or
        moves) the gradient ``grad (m,)`` ranks first are weighed exactly. ``fire`` and
        ``blocked`` ((m,) bool) change in place, as the density. Returns ``(len(ks), 2)``
        int: each patch's (removed, added) stamps, -1 for none. The same moves as
        :meth:`patch_moves_reference`, bit for bit."""
        if self._tracked is None:
            raise ValueError("StampEffects.patch_moves: the density is not tracked (see track)")
        if mode not in self.PATCH_MODES:
            raise KeyError(mode)
        if tries < 0:
            raise ValueError(f"StampEffects.patch_moves: tries = {tries}; give 0 or more")
        code = self.PATCH_MODES.index(mode)
        ks = np.ascontiguousarray(ks, dtype=np.int64)
        for name, a in (("fire", fire), ("blocked", blocked)):
            if not (isinstance(a, np.ndarray) and a.dtype == bool and a.flags.c_contiguous
                    and a.shape == self.totals.shape):
                raise ValueError(f"StampEffects.patch_moves: {name} must be a contiguous (m,) bool array")
        hit = (np.empty(0, dtype=np.uint8) if hit is None
               else np.ascontiguousarray(hit, dtype=bool).ravel().view(np.uint8))
        steps = np.ascontiguousarray(np.zeros(0) if steps is None else steps, dtype=np.int64)
        groups = np.ascontiguousarray(np.zeros(0) if groups is None else groups, dtype=np.int64)
        moved = np.empty((len(ks), 2), dtype=np.int64)
        h, w = self.shape
        n = _kernel.repair_pass(code, ks, int(tries), steps, windows.indptr, windows.indices, fire.view(np.uint8),
                                blocked.view(np.uint8), hit, groups, np.ascontiguousarray(grad, dtype=np.float64),
                                self.indptr, self.texels, self.counts, self.totals, self._tracked, self.low, self.high,
                                self.area, self.per_count, self.half_u, self.half_v, self._ext_u, self._ext_v,
                                self._cap, *self._rooms, h, w, moved)
        if n < 0:
            raise MemoryError("StampEffects.patch_moves: out of memory")
        return moved

    def patch_moves_reference(self, mode: str, ks, tries: int, fire: np.ndarray, blocked: np.ndarray, hit,
                              grad: np.ndarray, windows: WindowStamps, groups=None, steps=None,
                              density: np.ndarray | None = None) -> np.ndarray:
        """NumPy twin of :meth:`patch_moves`, on ``density`` (default the tracked one): the
        moves weighed by :meth:`effects` and :meth:`swap_effects`, made by :meth:`apply`."""
        if mode not in self.PATCH_MODES:
            raise KeyError(mode)
        if tries < 0:
            raise ValueError(f"StampEffects.patch_moves_reference: tries = {tries}; give 0 or more")
        d = self._tracked if density is None else density
        w = self.shape[1]
        m = len(fire)
        hit = None if hit is None else np.asarray(hit, dtype=bool).ravel()

        def touching(cols):
            return np.zeros(len(cols), dtype=bool) if hit is None else self.touching(cols, hit)

        moved = np.full((len(ks), 2), -1, dtype=np.int64)
        for q, k in enumerate(ks):
            i, j = divmod(int(k), w)
            cols = windows(i, j, int(self.half_u[k]), int(self.half_v[k]))
            if mode == "drop":
                cols = cols[fire[cols]]
                if not len(cols):
                    continue
                tries_ = cols[np.argsort(-grad[cols], kind="stable")][:tries]
                gained, more_over, _ = self.effects(tries_, -1.0, d).T
                # of the stamps whose loss takes skin off the mark, the one that keeps the most
                # skin in band (then takes the most off)
                order = np.lexsort((more_over, -gained))
                order = order[more_over[order] < 0]
                if not len(order):
                    # over by more than any one stamp takes off: the stamp with the most needles
                    # in the window (then keeping the most skin in band)
                    owner, take = self.entries(tries_)
                    t = self.texels[take]
                    inside = (np.abs(t // w - i) <= self.half_v[k]) & (np.abs(t % w - j) <= self.half_u[k])
                    inside = np.bincount(owner, self.counts[take] * inside, minlength=len(tries_))
                    order = np.lexsort((-gained, -inside))[:1]
                    order = order[inside[order] > 0]
                if len(order):
                    best = int(tries_[order[0]])
                    fire[best] = False
                    self.apply(best, -1.0, d)
                    moved[q, 0] = best
            elif mode == "add":
                cols = cols[~fire[cols] & ~blocked[cols]]
                cols = cols[~touching(cols)]    # no stamp adds to a window over its mark
                if not len(cols):
                    continue
                tries_ = cols[np.argsort(grad[cols], kind="stable")][:tries]
                gained, more_over, filled = self.effects(tries_, 1.0, d).T
                blocked[tries_[more_over > 0]] = True
                ok = (more_over <= 0) & (gained >= 0) & ((gained > 0) | (filled > 0))
                order = np.lexsort((-filled, -gained))         # most in band, then most shortfall filled
                order = order[ok[order]]
                if len(order):
                    best = int(tries_[order[0]])
                    fire[best] = True
                    self.apply(best, 1.0, d)
                    moved[q, 1] = best
            else:
                fired = cols[fire[cols]]
                steps_ = np.asarray(steps, dtype=np.int64)
                gone = np.repeat(fired, len(steps_))
                come = gone + np.tile(steps_, len(fired))
                keep = (come >= 0) & (come < m)
                gone, come = gone[keep], come[keep]
                keep = (groups[come] == groups[gone]) & ~fire[come]
                gone, come = gone[keep], come[keep]
                keep = ~touching(come)
                gone, come = gone[keep], come[keep]
                if len(gone) > tries:
                    # the gradient's estimate of each move's change to the band penalty, least first
                    first = np.argsort(grad[come] - grad[gone], kind="stable")[:tries]
                    gone, come = gone[first], come[first]
                if not len(gone):
                    continue
                gained, more_over, filled = self.swap_effects(gone, come, d).T
                useful = (more_over <= 0) & ((gained > 0) | ((gained == 0) & (filled > 0)))
                order = np.lexsort((-filled, -gained))
                order = order[useful[order]]
                if len(order):
                    best = int(order[0])
                    fire[gone[best]], fire[come[best]] = False, True
                    self.apply(gone[best], -1.0, d)
                    self.apply(come[best], 1.0, d)
                    moved[q] = gone[best], come[best]
        return moved

    # --- NumPy twins ----------------------------------------------------------------------

    def _unchanged_reference(self, before, after, p):
        lo, hi = self.low[p], self.high[p]
        a = np.where(lo > before, lo - before, 0.0)
        b = np.where(lo > after, lo - after, 0.0)
        in_b, in_a = (before >= lo) & (before <= hi), (after >= lo) & (after <= hi)
        return (in_a == in_b) & ((after > hi) == (before > hi)) & ~((lo > 0) & (a != b))

    def rooms_reference(self, density: np.ndarray, cap: int | None = None) -> tuple:
        """NumPy twin of :meth:`rooms`: every count 0..cap tried."""
        cap = int(self.totals.max(initial=0)) if cap is None else int(cap)
        p = np.arange(len(self.per_count))
        density = np.asarray(density, dtype=np.float64)
        out = []
        for sign in (1.0, -1.0):
            room = np.full(len(p), cap, dtype=np.int64)
            still = np.ones(len(p), dtype=bool)
            for k in range(1, cap + 1):
                changed = still & ~self._unchanged_reference(density, density + sign * self.per_count * float(k), p)
                room[changed] = k - 1
                still &= ~changed
            room[self.per_count == 0] = 2 ** 31 - 1
            out.append(room.astype(np.int32))
        h, w = self.shape
        nb = -(-w // 8)
        for room in out[:2]:
            padded = np.full((h, nb * 8), 2 ** 31 - 1, dtype=np.int32)
            padded[:, :w] = room.reshape(h, w)
            out.append(padded.reshape(h, nb, 8).min(axis=2).ravel())
        return tuple(out)

    def _change_reference(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """``(texels, density change)`` of one stamp over the box its windows can reach."""
        h, w = self.shape
        lo, hi = self.indptr[column], self.indptr[column + 1]
        if hi == lo:
            return np.empty(0, np.int64), np.empty(0)
        ti, tj = np.divmod(self.texels[lo:hi], w)
        r = self.reach
        i0, i1 = max(ti.min() - r, 0), min(ti.max() + r + 1, h)
        j0, j1 = max(tj.min() - r, 0), min(tj.max() + r + 1, w)
        pi, pj = (a.ravel() for a in np.meshgrid(np.arange(i0, i1), np.arange(j0, j1), indexing="ij"))
        p = pi * w + pj
        inside = ((np.abs(pi[:, None] - ti[None]) <= self.half_v[p][:, None])
                  & (np.abs(pj[:, None] - tj[None]) <= self.half_u[p][:, None]))
        return p, self.per_count[p] * (inside @ self.counts[lo:hi])

    def effects_reference(self, columns, sign: float, density: np.ndarray) -> np.ndarray:
        """NumPy twin of :meth:`effects`."""
        out = np.zeros((len(columns), 3))
        for k, c in enumerate(columns):
            p, change = self._change_reference(int(c))
            before = density[p]
            after = before + sign * change
            lo, hi, area = self.low[p], self.high[p], self.area[p]
            in_before, in_after = (before >= lo) & (before <= hi), (after >= lo) & (after <= hi)
            with np.errstate(divide="ignore", invalid="ignore"):
                filled = np.where(lo > 0, (np.clip(lo - before, 0, None) - np.clip(lo - after, 0, None)) / lo, 0.0)
            out[k] = (area @ (in_after.astype(float) - in_before), area @ ((after > hi).astype(float) - (before > hi)),
                      area @ filled)
        return out

    def apply_reference(self, column: int, sign: float, density: np.ndarray) -> np.ndarray:
        """NumPy twin of :meth:`apply` (returns the new density)."""
        p, change = self._change_reference(int(column))
        out = np.array(density, dtype=np.float64)
        out[p] += sign * change
        return out


def merge_channels(points: np.ndarray, radius_mm: float) -> np.ndarray:
    """Channel of each puncture ``(k,) int``: the index of the earlier puncture it merged into.

    In firing order, a puncture within ``radius_mm`` of an existing channel (its first
    puncture) joins the earliest such channel; otherwise it opens its own (index = itself).
    """
    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    out = np.empty(len(points), dtype=np.int64)
    _kernel.merge_channels(points, float(radius_mm), out)
    return out


def merge_channels_reference(points, radius_mm):
    """Python twin of :func:`merge_channels` (a dict of cells, one puncture at a time)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cells: dict = {}
    out = np.empty(len(points), dtype=np.int64)
    r2 = radius_mm * radius_mm
    keys = np.floor(points / radius_mm).astype(np.int64)
    for i, (p, key) in enumerate(zip(points, map(tuple, keys))):
        found = -1
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    for head in cells.get((key[0] + dx, key[1] + dy, key[2] + dz), ()):
                        d = points[head] - p
                        if d @ d <= r2 and (found < 0 or head < found):
                            found = head
        if found >= 0:
            out[i] = found
        else:
            out[i] = i
            cells.setdefault(key, []).append(i)
    return out


# --- texel grid --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TexelGrid:
    """A texel grid over the chart with each texel's skin area, zone and 1 cm^2 window."""

    origin: np.ndarray        # (2,) chart mm, lower-left corner of texel (0, 0)
    cell_mm: float            # texel side in the chart
    tri: np.ndarray           # (h, w) int, triangle under the texel centre (-1 off the chart)
    area_mm2: np.ndarray      # (h, w) float, skin area of the texel (integrated at edges)
    label: np.ndarray         # (h, w) int, zone index (ZoneMap.names), -1 if not treatable
    half_u: np.ndarray        # (h, w) int, window half-width in texels along u
    half_v: np.ndarray        # (h, w) int, along v
    window_area_mm2: np.ndarray  # (h, w) float, treatable skin area in each texel's window

    @property
    def shape(self) -> tuple:
        return self.tri.shape

    @property
    def treatable(self) -> np.ndarray:
        return self.label >= 0

    def centres(self) -> np.ndarray:
        """Chart coordinates of all texel centres ``(h * w, 2)``, row-major."""
        return texel_centres(self.origin, self.cell_mm, self.shape)


def texel_centres(origin: np.ndarray, cell_mm: float, shape: tuple) -> np.ndarray:
    """Chart coordinates ``(h * w, 2)`` of the centres of an ``(h, w)`` texel grid, row-major."""
    h, w = shape
    uu, vv = np.meshgrid(origin[0] + (np.arange(w) + 0.5) * cell_mm, origin[1] + (np.arange(h) + 0.5) * cell_mm)
    return np.stack([uu.ravel(), vv.ravel()], axis=1)


SUPERSAMPLE = 4  # per texel side, on texels at a chart or zone boundary


_LAYOUTS = weakref.WeakKeyDictionary()    # face -> {cell_mm: texel_layout}
_LAYOUT_LOCK = threading.Lock()


def texel_layout(face, cell_mm: float = DEFAULT_TEXEL_MM) -> tuple:
    """The texel grid's layout on a face, which reads the face alone (not its zones):
    ``(origin (2,), (h, w), centres (h * w, 2), tri (h * w,) int)``, each centre's chart
    triangle (-1 off the chart). Made once per face and cell, whichever thread asks first
    (a plan asks for it beside its zone map, :func:`coverage.plan._face_parts`); read-only."""
    key = float(cell_mm)
    with _LAYOUT_LOCK:
        per_face = _LAYOUTS.setdefault(face, {})
        found = per_face.get(key)
        if found is None:
            uv = face.uv
            origin = uv.min(axis=0) - cell_mm
            w, h = (int(x) for x in np.ceil((uv.max(axis=0) + cell_mm - origin) / cell_mm))
            centres = texel_centres(origin, cell_mm, (h, w))
            tri, _ = face.locate(centres)
            for a in (origin, centres, tri):
                a.flags.writeable = False
            found = per_face[key] = (origin, (h, w), centres, tri)
    return found


def texel_grid(zones, cell_mm: float = DEFAULT_TEXEL_MM, window_mm2: float = WINDOW_MM2) -> TexelGrid:
    """The texel grid of a zone map's face (skin areas, labels and windows).

    A texel's zone is the one under its centre. Its skin area and treatable area are
    integrated over ``SUPERSAMPLE^2`` sub-samples where the texel straddles the chart's edge
    or a zone or keep-out boundary, so windows at edges are neither padded nor clipped.
    """
    face = zones.face
    origin, (h, w), centres, tri = texel_layout(face, cell_mm)
    origin, tri = origin.copy(), tri.copy()     # the grid's own (the layout is shared)
    scale = np.where(tri >= 0, face.area_scale[np.maximum(tri, 0)], 0.0)
    # a texel off the chart is in no zone whatever its centre's label: the zones are asked
    # only about the centres on the chart (label_at answers each point on its own)
    on_chart = tri >= 0
    label = np.full(len(centres), -1, dtype=np.int64)
    label[on_chart] = zones.label_at(centres[on_chart])
    area = scale * cell_mm * cell_mm
    treat_area = np.where(label >= 0, area, 0.0)

    # texels whose 8 neighbours do not all share their state straddle a boundary
    state = label.reshape(h, w) * 2 + (tri.reshape(h, w) >= 0)
    padded = np.pad(state, 1, mode="edge")
    edge = np.zeros((h, w), dtype=bool)
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            edge |= padded[1 + dv:1 + dv + h, 1 + du:1 + du + w] != state
    idx = np.nonzero(edge.ravel())[0]
    if len(idx):
        k = SUPERSAMPLE
        offsets = (np.stack(np.meshgrid(np.arange(k), np.arange(k)), -1).reshape(-1, 2) + 0.5) / k - 0.5
        sub = (centres[idx][:, None, :] + offsets[None] * cell_mm).reshape(-1, 2)
        sub_tri, _ = face.locate(sub)
        sub_scale = np.where(sub_tri >= 0, face.area_scale[np.maximum(sub_tri, 0)], 0.0)
        # likewise a sub-sample off the chart is not treatable: only those on it are asked
        sub_on = sub_tri >= 0
        sub_treat = np.zeros(len(sub), dtype=bool)
        sub_treat[sub_on] = zones.label_at(sub[sub_on]) >= 0
        sub_area = (sub_scale * (cell_mm / k) ** 2).reshape(len(idx), k * k)
        area[idx] = sub_area.sum(axis=1)
        treat_area[idx] = (sub_area * sub_treat.reshape(len(idx), k * k)).sum(axis=1)

    label = label.reshape(h, w)
    treatable = label >= 0
    half_u, half_v = window_halves(scale.reshape(h, w), tri.reshape(h, w) >= 0, treatable, cell_mm, window_mm2)
    window_area = window_sums(treat_area.reshape(h, w), half_u, half_v, treatable)
    return TexelGrid(origin, float(cell_mm), tri.reshape(h, w), area.reshape(h, w), label, half_u, half_v,
                     window_area)


WINDOW_TRIES = ((0, 0), (-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (1, 1))  # the (half_u, half_v) changes
                                                                         # window_halves weighs, in order


def window_halves(scale: np.ndarray, on_chart: np.ndarray, mask: np.ndarray, cell_mm: float,
                  window_mm2: float = WINDOW_MM2) -> tuple[np.ndarray, np.ndarray]:
    """Each texel's window ``(half_u, half_v)`` ``(h, w)`` int: ``(2 half_u + 1) x (2 half_v +
    1)`` texels whose skin area is nearest ``window_mm2`` (in ratio).

    The first guess is the square of ``(2 half + 1)`` texels a side that covers
    ``window_mm2`` at the texel's own ``scale`` (skin mm^2 per chart mm^2). On a curved face
    the scale changes across a window, and whole texels step its side by two: that square's
    skin ran from 0.74 to 1.27 cm^2 on the bundled face (0.90 to 1.12 for 98 % of the
    windows wholly on the chart). So, for the texels of ``mask``, the windows whose halves
    change by one of :data:`WINDOW_TRIES` (near squares) are weighed by their skin area: the
    texels' count times the mean scale of those on the chart (``on_chart``: a window cut by
    the chart's edge or the grid's is taken as whole at its on-chart part's scale) times a
    texel's chart area; the nearest is kept, the first tried among equals. The bundled
    face's windows then cover 0.89 to 1.12 cm^2 (0.95 to 1.05 for 98 %). Texels off
    ``mask`` keep the first guess. One compiled pass over two summed-area tables
    (:func:`coverage._ext.density.window_halves`); the same halves as
    :func:`window_halves_reference`."""
    half, nominal, on, mask = _window_guess(scale, on_chart, mask, cell_mm, window_mm2)
    out_u, out_v = np.empty_like(half), np.empty_like(half)
    _kernel.window_halves(nominal, on.view(np.uint8), mask.view(np.uint8), half,
                          np.ascontiguousarray(WINDOW_TRIES, dtype=np.int64), float(cell_mm), float(window_mm2),
                          out_u, out_v)
    return out_u, out_v


def _window_guess(scale, on_chart, mask, cell_mm: float, window_mm2: float) -> tuple:
    """:func:`window_halves`' first guess ``half (h, w) int``, the scale on the chart (0 off
    it) and the two masks, contiguous."""
    scale = np.ascontiguousarray(scale, dtype=np.float64)
    h, w = scale.shape
    side = np.sqrt(window_mm2 / np.maximum(scale, 1e-12)) / cell_mm
    half = np.ascontiguousarray(np.clip(np.rint((side - 1.0) / 2.0), 0, max(h, w)), dtype=np.int64)
    on = np.ascontiguousarray(on_chart, dtype=bool)
    return half, np.where(on, scale, 0.0), on, np.ascontiguousarray(mask, dtype=bool)


def window_halves_reference(scale: np.ndarray, on_chart: np.ndarray, mask: np.ndarray, cell_mm: float,
                            window_mm2: float = WINDOW_MM2) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`window_halves`: the summed-area tables by ``numpy.cumsum``, each
    try weighed over the whole grid at once."""
    half, nominal, on, mask = _window_guess(scale, on_chart, mask, cell_mm, window_mm2)
    h, w = half.shape
    tables = []
    for values in (nominal, on.astype(np.float64)):
        table = np.zeros((h + 1, w + 1))
        table[1:, 1:] = np.cumsum(np.cumsum(values, axis=0), axis=1)
        tables.append(table)
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    best = np.full((h, w), -1.0)
    best_u, best_v = half.copy(), half.copy()
    for du, dv in WINDOW_TRIES:
        hu, hv = np.maximum(half + du, 0), np.maximum(half + dv, 0)
        i0, i1 = np.maximum(rows - hv, 0), np.minimum(rows + hv + 1, h)
        j0, j1 = np.maximum(cols - hu, 0), np.minimum(cols + hu + 1, w)
        total, count = (((t[i1, j1] - t[i0, j1]) - t[i1, j0]) + t[i0, j0] for t in tables)
        with np.errstate(divide="ignore", invalid="ignore"):
            skin = ((2 * hu + 1) * (2 * hv + 1)).astype(np.float64) * (cell_mm * cell_mm) * total / count
            miss = np.where(skin >= window_mm2, skin / window_mm2, window_mm2 / skin)
        better = mask & (count > 0) & ((best < 0) | (miss < best))
        best = np.where(better, miss, best)
        best_u = np.where(better, hu, best_u)
        best_v = np.where(better, hv, best_v)
    return best_u, best_v


# --- density maps and statistics ---------------------------------------------------------

@dataclass(frozen=True)
class ZoneStats:
    """Dose statistics of one zone (densities in punctures/cm^2, fractions of treatable area)."""

    name: str
    area_cm2: float
    target_per_cm2: float
    cap_per_cm2: float
    mean: float
    p5: float
    p50: float
    p95: float
    max: float
    in_band_fraction: float
    over_cap_fraction: float
    distinct_mean: float
    distinct_p5: float

    def as_dict(self) -> dict:
        return asdict(self)


class DensityMap:
    """Windowed nominal and distinct-channel density of a set of punctures over a face."""

    def __init__(self, zones, grid: TexelGrid, uv: np.ndarray, channel: np.ndarray, off_surface: int):
        self.zones = zones
        self.grid = grid
        self.uv = uv
        self.channel = channel
        self.off_surface = off_surface
        h, w = grid.shape
        self.counts, self.off_chart = splat(uv, grid.origin, grid.cell_mm, (h, w))
        distinct = channel == np.arange(len(channel))
        self.distinct_counts, _ = splat(uv[distinct], grid.origin, grid.cell_mm, (h, w))
        self.nominal_per_cm2 = self._windowed(self.counts)
        self.distinct_per_cm2 = self._windowed(self.distinct_counts)

    def _windowed(self, counts: np.ndarray) -> np.ndarray:
        g = self.grid
        sums = window_sums(counts, g.half_u, g.half_v, g.treatable)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = 100.0 * sums / g.window_area_mm2
        return np.where(g.treatable, out, np.nan)

    @property
    def n_punctures(self) -> int:
        return int(len(self.channel))

    @property
    def n_channels(self) -> int:
        return int((self.channel == np.arange(len(self.channel))).sum())

    @functools.cached_property
    def punctures_outside_treatable(self) -> int:
        """Punctures landing on texels that are not treatable skin (or off the chart)."""
        g = self.grid
        return int(self.counts[~g.treatable].sum()) + self.off_chart + self.off_surface

    def zone_stats(self, name: str) -> ZoneStats:
        """Statistics of one zone (area-weighted over its treatable texels)."""
        index = self.zones.names.index(name)
        dose = self.zones.dose(name)
        sel = self.grid.label == index
        weight = self.grid.area_mm2[sel]
        nominal = self.nominal_per_cm2[sel]
        distinct = self.distinct_per_cm2[sel]
        target, cap = dose.target_per_cm2, dose.cap_per_cm2
        if weight.sum() <= 0:
            nan = math.nan
            return ZoneStats(name, self.zones.area_cm2(name), target, cap, nan, nan, nan, nan, nan, nan, nan, nan, nan)
        total = weight.sum()
        p5, p50, p95 = weighted_percentiles(nominal, weight, (5, 50, 95))    # one sort for the three
        return ZoneStats(
            name=name,
            area_cm2=self.zones.area_cm2(name),
            target_per_cm2=target,
            cap_per_cm2=cap,
            mean=float((nominal * weight).sum() / total),
            p5=p5, p50=p50, p95=p95,
            max=float(nominal.max()),
            in_band_fraction=float(weight[(nominal >= IN_BAND_LOW * target) & (nominal <= cap)].sum() / total),
            over_cap_fraction=float(weight[nominal > cap].sum() / total),
            distinct_mean=float((distinct * weight).sum() / total),
            distinct_p5=weighted_percentile(distinct, weight, 5),
        )

    def stats(self) -> dict:
        """``name -> ZoneStats`` for every zone."""
        return {name: self.zone_stats(name) for name in self.zones.names}

    def table(self) -> str:
        """The per-zone statistics as a plain-text table."""
        head = (f"{'zone':<18}{'area cm2':>9}{'target':>8}{'cap':>8}{'mean':>8}{'p5':>8}{'p95':>8}"
                f"{'max':>8}{'in band':>9}{'over cap':>9}")
        rows = [head, "-" * len(head)]
        for s in self.stats().values():
            rows.append(f"{s.name:<18}{s.area_cm2:9.1f}{s.target_per_cm2:8.0f}{s.cap_per_cm2:8.0f}"
                        f"{s.mean:8.1f}{s.p5:8.1f}{s.p95:8.1f}{s.max:8.1f}"
                        f"{100 * s.in_band_fraction:8.1f}%{100 * s.over_cap_fraction:8.1f}%")
        return "\n".join(rows)


def density(face, zones, punctures: np.ndarray, *, cell_mm: float = DEFAULT_TEXEL_MM,
            channel_radius_mm: float | None = None, grid: TexelGrid | None = None) -> DensityMap:
    """Density map of punctures over a face's zones.

    punctures : (k, 3) or (k, 2) float
        Puncture positions in firing order: points on the face (mm, the face's frame;
        points farther than 0.5 mm from the surface are counted as off the surface, not
        mapped), or chart points (mm; points off the chart are counted as off the surface).
    channel_radius_mm : float, optional
        Punctures this close merge into one channel (default: the pen needle diameter).
    grid : TexelGrid, optional
        A precomputed :func:`texel_grid` of ``zones`` (reuse it across many maps).
    """
    punctures = np.asarray(punctures, dtype=np.float64)
    if punctures.ndim != 2 or punctures.shape[1] not in (2, 3):
        raise ValueError(f"punctures have shape {punctures.shape}; expected (k, 3) surface points or (k, 2) chart points")
    if grid is None:
        grid = texel_grid(zones, cell_mm)
    radius = zones.protocol.pen.needle_diameter_mm if channel_radius_mm is None else channel_radius_mm
    if punctures.shape[1] == 2:
        lifted = face.lift(punctures)
        uv, points, on = punctures, lifted.points, lifted.inside
    else:
        flat = face.flatten(punctures, max_dist_mm=ON_SURFACE_MM)
        uv, points, on = flat.uv, punctures, flat.tri >= 0
    # channels merge in 3D, on the skin, whatever the input
    channel = merge_channels(points[on], radius)
    return DensityMap(zones, grid, uv[on], channel, int((~on).sum()))
