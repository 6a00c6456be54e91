"""Fitting the pen's stamps to the dose exactly, needle by needle.

The dose field of :mod:`coverage.pen` models where the cartridge stamps: each stamp's
needles spread evenly over a box the size of its footprint. The real needles land where
the cartridge puts them on the curved skin (some miss), stamps sit on strokes a few
millimetres apart, and the density is counted in 1 cm^2 windows: near zone borders,
exclusions and on the nose a plan made from the model misses the band. Here the stamps
are fitted with the real needles instead:

1. **Candidates.** Along every pen stroke (main passes, spaced for the pen's share of each
   zone's dose once the roller's punctures are counted (:func:`pen_share`); fine-cartridge
   loops along the keep-outs) a candidate stamp every :data:`CANDIDATE_MM` of chart travel, simulated with
   the cartridge kernel; a candidate any of whose needles would land on skin it may not
   touch is dropped (the rule every stamp of a plan obeys).
2. **Fit.** The punctures per texel are ``base + A x``: ``A`` holds each candidate's fired
   needles per texel, ``x`` in [0, 1] how much of a stamp fires there. The windowed
   density ``D = c W(base + A x)`` (``W`` the 1 cm^2 window sums, ``c`` 100 / treatable
   window area) is pushed into ``[low, high]`` per texel, inside each zone's band with a
   margin for rounding: squared shortfalls, a window over ``high`` weighing
   :data:`OVER_WEIGHT` times more, minimised by a projected quasi-Newton method (L-BFGS
   steps over the weights not held at a bound, each weight scaled by the objective's
   curvature along it) whose gradient pulls the window sums back with their adjoint
   (:func:`density.window_spread`).
3. **Rounding.** Along each stroke the running sum of ``x`` fires a stamp each time it
   crosses ``k + 1/2`` (error diffusion): every stamp sits on a simulated candidate, its
   needles and all, and each stretch of a stroke keeps its fitted dose to half a stamp.
4. **Repair.** Windows that rounding left outside their band are mended stamp by stamp,
   each change weighed exactly (:class:`density.StampEffects`): stamps dropped, added,
   and last moved a candidate or two along their path, where a millimetre decides which
   windows a stamp's needles count in.

The plan's cap guard runs on the result as on any stamps.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse

from .density import (FIT_TEXEL_LIMIT, IN_BAND_LOW, StampEffects, TexelGrid, WindowStamps, fit_texels, window_spread,
                      window_sums)

CANDIDATE_MM = 0.5        # chart travel between candidate stamps along a path
LOW_RATIO = 1.0           # fit the density up to this x target (0.9 is the band's floor)
HIGH_RATIO = 1.15         # and down to this x target ...
CAP_RATIO = 0.93          # ... or this x cap, whichever is lower
OVER_WEIGHT = 2.0         # a window over its high mark weighs this much more than a shortfall (5 let
                          # the lower-target zone win every border with a higher one: on the
                          # synthetic scans the cheeks' rims fell 1 to 2 points further)
FIT_ITERATIONS = 50       # the fit's steps, preconditioned (60 before stop 26, without: the same objective;
                          # at 40 some zone of the synthetic scans fell 0.3 points in band)
FIT_MEMORY = 5            # the L-BFGS pairs the fit keeps
FINE_NEAR_KEEPOUT_MM = 6.0  # fine-cartridge lines run this close to every keep-out (chart mm) ...
FINE_BEYOND_UNREACHED_MM = 2.0  # ... and over the skin no main needle reaches and this far around it
                                # (the widest window half over it until stop 14: scan sessions
                                # 8 to 15 % longer, their least zones no better)
FINE_EVERYWHERE_STAMPS = 2.0  # the fine cartridge goes all over a zone whose band is narrower than this
                              # many main stamps' punctures per cm^2
DAB_MM = 0.02             # chart length of a touch-up dab (fine_dabs): one candidate stamp at its middle
ROUND_SPREAD = 0.6180339887498949  # each path's rounding offset steps by this (1 / golden ratio: round_along)


# --- targets and the window operator ----------------------------------------------------

@dataclass
class DoseTargets:
    """Per texel: where the fit pushes the density (per cm^2) and how much each texel counts."""

    low: np.ndarray      # (h, w) push up to this
    high: np.ndarray     # (h, w) push down to this
    scale: np.ndarray    # (h, w) 1 / target^2 x skin area: the weight of a texel's squared miss
    treat: np.ndarray    # (h, w) bool


def dose_targets(zones, grid: TexelGrid) -> DoseTargets:
    """The fit's targets on every treatable texel: ``[LOW_RATIO, min(HIGH_RATIO x target,
    CAP_RATIO x cap)]`` of its zone, inside the band ``[0.9 x target, cap]``."""
    names = zones.names
    target = np.array([zones.dose(n).target_per_cm2 for n in names], dtype=np.float64)
    cap = np.array([zones.dose(n).cap_per_cm2 for n in names], dtype=np.float64)
    treat = grid.label >= 0
    lab = np.maximum(grid.label, 0)
    t, c = target[lab], cap[lab]
    low = np.where(treat, np.maximum(LOW_RATIO * t, IN_BAND_LOW * t), 0.0)
    high = np.where(treat, np.maximum(np.minimum(HIGH_RATIO * t, CAP_RATIO * c), low), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(treat, grid.area_mm2 / np.maximum(t, 1e-9) ** 2, 0.0)
    return DoseTargets(low, high, scale, treat)


class WindowedDose:
    """Punctures per texel -> windowed density (per cm^2) on a texel grid, and back."""

    def __init__(self, grid: TexelGrid):
        self.grid = grid
        self.treat = grid.label >= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            self.per_count = np.where(self.treat & (grid.window_area_mm2 > 0), 100.0 / grid.window_area_mm2, 0.0)

    def density(self, counts: np.ndarray) -> np.ndarray:
        g = self.grid
        return self.per_count * window_sums(counts, g.half_u, g.half_v, self.treat)

    def pull_back(self, residual: np.ndarray) -> np.ndarray:
        """The adjoint of :meth:`density`: d(sum residual * density) / d counts."""
        g = self.grid
        return window_spread(residual * self.per_count, g.half_u, g.half_v, self.treat)


def shortfall(d: np.ndarray, targets: DoseTargets) -> tuple[float, np.ndarray]:
    """The fit's objective at densities ``d`` and its gradient with respect to ``d``."""
    under = np.maximum(targets.low - d, 0.0)
    over = np.maximum(d - targets.high, 0.0)    # high is inf off the treatable skin
    miss = OVER_WEIGHT * over - under
    value = float(np.einsum("ij,ij,ij->", targets.scale, under, under)
                  + OVER_WEIGHT * np.einsum("ij,ij,ij->", targets.scale, over, over))
    return value, 2.0 * targets.scale * miss


# --- candidates ----------------------------------------------------------------------------

def candidate_arcs(uv: np.ndarray, step: float = CANDIDATE_MM) -> tuple[np.ndarray, np.ndarray]:
    """Candidate stamp centres ``(m, 2)`` every ``step`` of chart travel along a path
    ``(n, 2)``, half a step in from its start, and their chart arc lengths ``(m,)``."""
    seg = np.linalg.norm(np.diff(uv, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if len(uv) < 2 or s[-1] <= 0:
        return np.empty((0, 2)), np.empty(0)
    at = np.arange(0.5 * step, s[-1], step)
    if not len(at):
        at = np.array([0.5 * s[-1]])
    return np.stack([np.interp(at, s, uv[:, 0]), np.interp(at, s, uv[:, 1])], axis=1), at


def candidate_arcs_many(paths_uv: list, step: float = CANDIDATE_MM) -> list:
    """``[candidate_arcs(uv, step) for uv in paths_uv]`` over all the paths at once: their
    arc lengths as :func:`chart_arcs_many` makes them, then the centres' counts and the
    centres in two compiled passes (:func:`coverage._ext.paths.candidate_counts` and
    ``candidate_fill``: NumPy's ``arange`` and ``interp`` arithmetic, in its order), each
    path's arrays its own; where a point is not finite or the step not positive, the twin
    itself (:func:`candidate_arcs_many_reference`)."""
    from ._ext import paths as _paths_kernel

    paths_uv = [np.asarray(uv, dtype=np.float64).reshape(-1, 2) for uv in paths_uv]
    step = float(step)
    if not paths_uv:
        return []
    uv = np.ascontiguousarray(np.concatenate(paths_uv))
    if not (np.isfinite(uv).all() and math.isfinite(step) and step > 0):
        return candidate_arcs_many_reference(paths_uv, step)
    s, starts = _joined_arcs(uv, [len(x) for x in paths_uv])
    counts = np.empty(len(paths_uv), dtype=np.int64)
    _paths_kernel.candidate_counts(s, starts, 0.5 * step, step, counts)
    out_starts = np.zeros(len(paths_uv) + 1, dtype=np.int64)
    np.cumsum(counts, out=out_starts[1:])
    centres, at = np.empty((int(out_starts[-1]), 2)), np.empty(int(out_starts[-1]))
    _paths_kernel.candidate_fill(uv, s, starts, 0.5 * step, step, out_starts, centres, at)
    return [(centres[a:b], at[a:b]) for a, b in zip(out_starts[:-1].tolist(), out_starts[1:].tolist())]


def candidate_arcs_many_reference(paths_uv: list, step: float = CANDIDATE_MM) -> list:
    """NumPy twin of :func:`candidate_arcs_many`: :func:`candidate_arcs` path by path."""
    return [candidate_arcs(np.asarray(uv, dtype=np.float64).reshape(-1, 2), step) for uv in paths_uv]


def needle_columns(grid: TexelGrid, hits_uv: np.ndarray, fired: np.ndarray, needles: int) -> sparse.csc_array:
    """``(texels, k)`` CSC: column ``i`` holds stamp ``i``'s fired needles (rows ``i * needles
    ...`` of ``hits_uv``) counted in their texels (:func:`needle_columns_reference`), built
    in one compiled pass (:func:`coverage.density.needle_columns`) with each column's rows
    ascending and summed, as SciPy's conversion leaves them."""
    from ._ext import density as _kernel

    h, w = grid.shape
    uv = np.ascontiguousarray(hits_uv, dtype=np.float64).reshape(-1, 2)
    n = len(uv)
    k = n // needles
    if h * w >= 2 ** 31 or n >= 2 ** 31:
        return needle_columns_reference(grid, hits_uv, fired, needles)
    indptr, indices, data = np.empty(k + 1, np.int32), np.empty(n, np.int32), np.empty(n)
    cell = float(grid.cell_mm)
    # x / cell == x * (1 / cell) exactly when the cell is a power of two (0.5 mm here)
    inv_cell = 1.0 / cell if cell > 0 and math.frexp(cell)[0] == 0.5 else 0.0
    nnz = _kernel.needle_columns(uv, np.ascontiguousarray(fired, dtype=bool).view(np.uint8), int(needles),
                                 float(grid.origin[0]), float(grid.origin[1]), cell, inv_cell, h, w, indptr,
                                 indices, data)
    out = sparse.csc_array((data[:nnz], indices[:nnz], indptr), shape=(h * w, k))
    out.has_sorted_indices = True
    out.has_canonical_format = True
    return out


def needle_columns_reference(grid: TexelGrid, hits_uv: np.ndarray, fired: np.ndarray, needles: int) -> sparse.csc_array:
    """NumPy twin of :func:`needle_columns`: the texel of every fired needle, and SciPy's COO
    to CSC conversion summing each column's repeats."""
    h, w = grid.shape
    k = len(hits_uv) // needles
    f = np.floor((hits_uv - grid.origin) / grid.cell_mm)
    with np.errstate(invalid="ignore"):     # NaN compares False: off the grid
        ok = fired & (f[:, 0] >= 0) & (f[:, 1] >= 0) & (f[:, 0] < w) & (f[:, 1] < h)
    ij = f[ok].astype(np.int64)
    rows = ij[:, 1] * w + ij[:, 0]
    cols = np.repeat(np.arange(k), needles)[ok]
    return sparse.csr_array((np.ones(len(rows)), (rows, cols)), shape=(h * w, k)).tocsc()


# --- the fit -------------------------------------------------------------------------------

def fit(grid: TexelGrid, targets: DoseTargets, base: np.ndarray, spread: sparse.csr_array,
        x0: np.ndarray | None = None, upper: np.ndarray | None = None,
        iterations: int = FIT_ITERATIONS, layout: tuple | None = None, precondition: bool = True) -> np.ndarray:
    """Stamp weights ``x (m,)`` in ``[0, upper]`` (default 1) whose punctures
    ``base + spread @ x`` bring the windowed density into ``targets``.

    A projected quasi-Newton method (the two-metric projection of Bertsekas 1982 with
    limited-memory BFGS steps, as in Kim, Sra and Dhillon 2010): each step holds the
    weights at a bound whose gradient pushes them out of the box, takes an L-BFGS direction
    over the others (:data:`FIT_MEMORY` pairs, restricted to those weights), projects it
    onto the box and backtracks until the objective falls enough; one objective evaluation
    per step almost always. Neighbouring stamps' windows overlap, so the problem is badly
    conditioned: on the bundled face a spectral projected gradient took 198 evaluations to
    reach what this reaches in 46. SciPy's L-BFGS-B matches this step for step but spends more in its own
    Cauchy-point bookkeeping than the objective costs (1.9 ms a step against 1.6 ms on the
    bundled face's 22,508 stamps). The step's own arithmetic (the two-loop product and its
    slope, the projection, the new pair) is compiled too (:func:`_lbfgs_direction`,
    :func:`_projected_step`, :func:`_step_pair`), each sum taken in one fixed order: the
    same weights on any machine, where NumPy's dot products sum in as many lanes as the
    machine's vectors hold. ``layout``: :func:`fit_layout` of the grid and ``targets``, if
    made already.

    ``precondition``: the steps are taken in scaled weights ``y = s x`` (box ``[0, s upper]``),
    ``s`` each stamp's :func:`_weight_scales` (a diagonal preconditioner: the square root of
    the objective's curvature along the weight, about): the stamps' curvatures differ
    tenfold on the bundled face (zones' targets, windows cut by the zone edges), and the
    scaled fit reaches in 50 steps about the objective the plain one reaches in 60 (11.23
    against 11.15 on the bundled face, 11.75 in 50, with stop 29's windows; 10.99 against
    10.97 before them, 11.02 against 11.06 before stop 28's dabs).
    """
    m = spread.shape[1]
    if not m:
        return np.zeros(0)
    hi = np.ones(m) if upper is None else np.ascontiguousarray(upper, dtype=np.float64)
    objective = FitObjective(grid, targets, base, spread, layout)
    x = np.zeros(m) if x0 is None else np.clip(np.asarray(x0, dtype=np.float64), 0.0, hi)
    if not precondition:
        return _projected_lbfgs(objective, x, hi, iterations)
    scale = _weight_scales(objective.op, targets, spread)

    def scaled(y):
        f, g = objective(np.minimum(y / scale, hi))
        return f, g / scale

    return np.minimum(_projected_lbfgs(scaled, x * scale, hi * scale, iterations) / scale, hi)


def _projected_lbfgs(objective, x: np.ndarray, hi: np.ndarray, iterations: int) -> np.ndarray:
    """:func:`fit`'s steps from weights ``x`` in the box ``[0, hi]`` of ``objective(x) ->
    (value, gradient)``: the weights after ``iterations`` steps, or where no descent is left."""
    f, g = objective(x)
    pairs = _Pairs(len(x))       # the latest steps s and gradient changes y
    for _ in range(iterations):
        d, slope = _lbfgs_direction(x, g, hi, pairs)
        if slope >= -1e-12 * max(abs(f), 1.0):
            break     # no descent left: every free weight's gradient is ~0
        lam = 1.0
        while True:
            x_new, moved = _projected_step(x, d, g, hi, lam)
            f_new, g_new = objective(x_new)
            # Armijo's test along the projected path (its slope is g . (x_new - x))
            if f_new <= f + 1e-4 * moved or lam < 1e-6:
                break
            lam *= 0.5
        pairs.add(x_new, x, g_new, g)
        x, f, g = x_new, f_new, g_new
    return x


def _weight_scales(op: WindowedDose, targets: DoseTargets, spread) -> np.ndarray:
    """Each stamp's weight scale for :func:`fit`: ``sqrt(h / median(h))``, ``h`` the
    objective's curvature along the stamp's weight as if every window's term were active and
    each of its needles counted in windows of its own (``spread^T window_spread(scale x
    per_count^2)``: each needle's texel weighed by every window over it; the cross terms
    between a stamp's needles left out). ``h`` is floored at 1e-6 of its median. Each
    stamp's sum is taken in its column's stored order (``numpy.bincount``), so the scales,
    like the fit's steps, are the same on any machine. ``op``: the fit's :class:`WindowedDose`
    (its grid and each window's count per puncture)."""
    grid = op.grid
    w = np.ascontiguousarray(np.where(targets.treat, targets.scale * op.per_count ** 2, 0.0))
    v = window_spread(w, grid.half_u, grid.half_v, grid.label >= 0).ravel()
    a = sparse.csc_array(spread)
    m = a.shape[1]
    column = np.repeat(np.arange(m), np.diff(a.indptr))
    h = np.bincount(column, weights=np.asarray(a.data, dtype=np.float64) * v[a.indices], minlength=m)
    mid = float(np.median(h)) if m else 1.0
    return np.sqrt(np.maximum(h, 1e-6 * mid) / mid) if mid > 0 else np.ones(m)


class _Pairs:
    """The fit's latest :data:`FIT_MEMORY` pairs (step ``s``, gradient change ``y``), oldest
    first, as rows of two ``(FIT_MEMORY + 1, m)`` buffers: a new pair is written into the
    spare row and kept only if ``s . y > 0``, the oldest row then being the spare. Iterates
    as ``(s, y)`` pairs (:func:`_lbfgs_direction_reference` reads them so)."""

    def __init__(self, m: int, memory: int = FIT_MEMORY):
        self.s, self.y = np.empty((memory + 1, m)), np.empty((memory + 1, m))
        self.rows = collections.deque(maxlen=memory)
        self.spare = 0

    def add(self, x_new, x, g_new, g) -> None:
        row = self.spare
        if _step_pair(x_new, x, g_new, g, self.s[row], self.y[row]) > 0.0:
            unused = [r for r in range(len(self.s)) if r != row and r not in self.rows]
            self.spare = self.rows[0] if len(self.rows) == self.rows.maxlen else unused[0]
            self.rows.append(row)

    def row_array(self) -> np.ndarray:
        return np.array(self.rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return ((self.s[r], self.y[r]) for r in self.rows)

    def __reversed__(self):
        return ((self.s[r], self.y[r]) for r in reversed(self.rows))


def _lbfgs_direction(x: np.ndarray, g: np.ndarray, hi: np.ndarray, pairs) -> tuple:
    """The fit's step ``(m,)`` and its slope ``g . step`` (:func:`_lbfgs_direction_reference`),
    in one compiled pass (:func:`coverage.density.lbfgs_direction`, each sum in a fixed order
    on every machine); ``pairs``: a :class:`_Pairs`, or ``(s, y)`` pairs oldest first."""
    from ._ext import density as _kernel

    if isinstance(pairs, _Pairs):
        s, y, rows = pairs.s, pairs.y, pairs.row_array()
    else:
        pairs = list(pairs)
        m = len(x)
        s = np.ascontiguousarray(np.reshape([p[0] for p in pairs], (len(pairs), m)), dtype=np.float64)
        y = np.ascontiguousarray(np.reshape([p[1] for p in pairs], (len(pairs), m)), dtype=np.float64)
        rows = np.arange(len(pairs), dtype=np.int64)
    c = np.ascontiguousarray
    q = np.empty(len(x))
    slope = _kernel.lbfgs_direction(c(x, dtype=np.float64), c(g, dtype=np.float64), c(hi, dtype=np.float64), s, y,
                                    rows, q)
    return q, float(slope)


def _lbfgs_direction_reference(x: np.ndarray, g: np.ndarray, hi: np.ndarray, pairs) -> tuple:
    """The fit's step ``(m,)`` from weights ``x`` with gradient ``g`` in the box ``[0, hi]``,
    and its slope ``g . step``:
    zero on the weights held at a bound (at 0 with ``g > 0``, at ``hi`` with ``g < 0``), the
    L-BFGS two-loop product ``-H g`` over the others with the ``pairs`` ``(s, y)`` restricted
    to them (a pair whose restricted ``s . y`` is not positive is left out); with no pair, the
    projected gradient's step scaled so its largest move is 1."""
    free = (~(((x <= 0.0) & (g > 0.0)) | ((x >= hi) & (g < 0.0)))).astype(np.float64)
    q = -g * free
    kept = []
    for s, y in reversed(pairs):
        sf, yf = s * free, y * free
        sy = _dot(sf, yf)
        if sy <= 0.0:
            continue
        a = _dot(sf, q) / sy
        q -= a * yf
        kept.append((a, sy, sf, yf))
    if kept:
        _, sy, _, yf = kept[0]
        q *= sy / _dot(yf, yf)
    else:
        q *= 1.0 / max(float(np.abs(np.clip(x - g, 0.0, hi) - x).max()), 1e-12)
    for a, sy, sf, yf in reversed(kept):
        q += (a - _dot(yf, q) / sy) * sf
    return q, _dot(g, q)


def _projected_step(x: np.ndarray, d: np.ndarray, g: np.ndarray, hi: np.ndarray, lam: float) -> tuple:
    """``(x_new = clip(x + lam d, 0, hi), g . (x_new - x))`` (:func:`_projected_step_reference`),
    in one compiled pass."""
    from ._ext import density as _kernel

    c = np.ascontiguousarray
    out = np.empty(len(x))
    moved = _kernel.projected_step(c(x, dtype=np.float64), c(d, dtype=np.float64), c(g, dtype=np.float64),
                                   c(hi, dtype=np.float64), float(lam), out)
    return out, float(moved)


def _projected_step_reference(x: np.ndarray, d: np.ndarray, g: np.ndarray, hi: np.ndarray, lam: float) -> tuple:
    """NumPy twin of :func:`_projected_step`."""
    out = np.clip(x + lam * d, 0.0, hi)
    return out, _dot(g, out - x)


def _step_pair(x_new: np.ndarray, x: np.ndarray, g_new: np.ndarray, g: np.ndarray, s_out: np.ndarray,
               y_out: np.ndarray) -> float:
    """``s = x_new - x`` and ``y = g_new - g`` into ``s_out`` and ``y_out`` (contiguous float64
    rows); returns ``s . y`` (:func:`_step_pair_reference`)."""
    from ._ext import density as _kernel

    c = np.ascontiguousarray
    return float(_kernel.step_pair(c(x_new, dtype=np.float64), c(x, dtype=np.float64), c(g_new, dtype=np.float64),
                                   c(g, dtype=np.float64), s_out, y_out))


def _step_pair_reference(x_new: np.ndarray, x: np.ndarray, g_new: np.ndarray, g: np.ndarray, s_out: np.ndarray,
                         y_out: np.ndarray) -> float:
    """NumPy twin of :func:`_step_pair`."""
    np.subtract(x_new, x, out=s_out)
    np.subtract(g_new, g, out=y_out)
    return _dot(s_out, y_out)


def fit_layout(grid: TexelGrid, targets: DoseTargets) -> tuple | None:
    """The texels :class:`FitObjective` goes through, with their windows and constants
    (:func:`coverage.density.fit_texels` of the grid's windows and ``targets``): fixed for a
    fit and independent of its stamps, so a plan makes it on its other thread while the
    stamps are found. None where the grid is too large for the compiled objective."""
    h, w = grid.shape
    if (h + 1) * (w + 1) >= FIT_TEXEL_LIMIT // 2:
        return None
    op = WindowedDose(grid)
    return fit_texels(grid.half_u, grid.half_v, op.treat, op.per_count, targets.low, targets.high, targets.scale)


class FitObjective:
    """The fit's objective and its gradient at stamp weights ``x``: ``(value, (m,) gradient)``
    of :func:`shortfall` at the windowed density of ``base + spread @ x``, in one compiled
    pass (:func:`coverage.density.fit_objective`), equal bit for bit to
    :func:`objective_reference`. ``layout``: :func:`fit_layout` of the same grid and
    targets, if made already."""

    def __init__(self, grid: TexelGrid, targets: DoseTargets, base: np.ndarray, spread, layout: tuple | None = None):
        self.grid, self.targets, self.spread = grid, targets, spread
        self.op = WindowedDose(grid)
        self.shape = shape = grid.shape
        self.base = np.ascontiguousarray(np.asarray(base, dtype=np.float64).reshape(shape))
        self.spread_t = spread.T.tocsr()
        # the product A x adds each texel's stamps in the order scipy's product does: by
        # column for a CSC matrix (the kernel scatters A^T's rows, which are A's columns as
        # stored), by column index for a CSR one if it stores each row's columns ascending
        # once (A^T as a converted CSR then lists them so)
        st = self.spread_t
        usable = spread.format == "csc" or (spread.format == "csr" and spread.has_canonical_format)
        h, w = shape
        small = (usable and st.format == "csr" and max(st.nnz, *spread.shape) < 2 ** 31
                 and max(int(np.max(grid.half_u, initial=0)), int(np.max(grid.half_v, initial=0))) < 2 ** 31
                 and (h + 1) * (w + 1) < FIT_TEXEL_LIMIT // 2)
        self.compiled = bool(small)
        if not self.compiled:
            return
        # the kernel is bound by memory traffic: 32-bit indices, and the matrix's values as
        # float32 where that holds every one of them exactly (counts of needles)
        data = np.asarray(st.data, dtype=np.float64)
        narrow = np.float32 if np.array_equal(data.astype(np.float32).astype(np.float64), data) else np.float64
        i32 = np.int32
        self.cols = (np.ascontiguousarray(st.indptr, dtype=i32), np.ascontiguousarray(st.indices, dtype=i32),
                     np.ascontiguousarray(st.data, dtype=narrow))
        # the texels whose terms can be other than 0, each with its window and constants
        self.texels = fit_layout(grid, targets) if layout is None else layout
        self.sat, self.corners = np.empty((h + 1, w + 1)), np.empty((h + 1, w + 1))
        self.spread_out = np.empty(shape)

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        if not self.compiled:
            return objective_reference(x, self.grid, self.targets, self.base, self.spread, self.spread_t)
        from .density import fit_objective

        grad = np.empty(self.spread.shape[1])
        # the two sums of squares as shortfall's einsums add them
        under, over = fit_objective(*self.cols, np.ascontiguousarray(x, dtype=np.float64), self.base,
                                    *self.texels, OVER_WEIGHT, self.sat, self.corners, self.spread_out, grad)
        return float(under + OVER_WEIGHT * over), grad


class BandGradient:
    """The gradient ``(m,)`` of :func:`shortfall` with respect to the stamp weights at
    densities ``d``, pulled back through the windows and ``spread`` (the repair's ranking of
    stamps): compiled (:func:`coverage.density.band_gradient`), equal bit for bit to
    :meth:`reference`."""

    def __init__(self, grid: TexelGrid, targets: DoseTargets, spread):
        self.grid, self.targets = grid, targets
        self.op = WindowedDose(grid)
        self.spread_t = st = spread.T.tocsr()
        self.m = spread.shape[1]
        self.compiled = (st.format == "csr" and max(st.nnz, *spread.shape) < 2 ** 31
                         and max(int(np.max(grid.half_u, initial=0)), int(np.max(grid.half_v, initial=0))) < 2 ** 31)
        if not self.compiled:
            return
        c, i32 = np.ascontiguousarray, np.int32
        self.args = (c(grid.half_u, dtype=i32), c(grid.half_v, dtype=i32), c(self.op.treat, dtype=np.uint8),
                     c(self.op.per_count, dtype=np.float64), c(targets.low, dtype=np.float64),
                     c(targets.high, dtype=np.float64), c(targets.scale, dtype=np.float64), OVER_WEIGHT,
                     c(st.indptr, dtype=i32), c(st.indices, dtype=i32), c(st.data, dtype=np.float64))
        h, w = grid.shape
        self.corners, self.spread_out = np.empty((h + 1, w + 1)), np.empty((h, w))

    def __call__(self, d: np.ndarray) -> np.ndarray:
        if not self.compiled:
            return self.reference(d)
        from .density import band_gradient

        grad = np.empty(self.m)
        band_gradient(np.ascontiguousarray(d, dtype=np.float64).reshape(self.grid.shape), *self.args, self.corners,
                      self.spread_out, grad)
        return grad

    def reference(self, d: np.ndarray) -> np.ndarray:
        _, grad_d = shortfall(np.asarray(d).reshape(self.grid.shape), self.targets)
        return self.spread_t @ self.op.pull_back(grad_d).ravel()


def objective_reference(x, grid: TexelGrid, targets: DoseTargets, base: np.ndarray, spread, spread_t=None):
    """NumPy twin of :class:`FitObjective`."""
    op = WindowedDose(grid)
    spread_t = spread.T.tocsr() if spread_t is None else spread_t
    counts = (np.asarray(base, dtype=np.float64).ravel() + spread @ x).reshape(grid.shape)
    value, grad_d = shortfall(op.density(counts), targets)
    return value, spread_t @ op.pull_back(grad_d).ravel()


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # not BLAS: a multi-threaded BLAS on busy cores takes ~10 ms for what this does in 0.05
    return float(np.einsum("i,i->", a, b))


def round_along(x: np.ndarray, groups: np.ndarray, spread: float = ROUND_SPREAD) -> np.ndarray:
    """Which candidates fire ``(m,) bool``: along each group (a path, candidates in travel
    order, groups contiguous), the running sum of ``x`` fires one each time it crosses
    ``k + 1 - o``, the group's offset ``o`` the fractional part of ``1/2 + g x spread``
    (``g`` its group; ``spread = 0``: every group at one half, as until stop 29).

    Rounding each path alone from the same offset fires neighbouring paths of like weights
    side by side: their stamps' needles stack into the same windows (over the cap, which the
    repair then drops, leaving the skin around under its band) while the windows between
    get none. Offsets spread by the golden ratio (:data:`ROUND_SPREAD`) stagger them, the
    consecutive paths' offsets as far apart as a low-discrepancy sequence puts them. Each
    group still fires its sum to within one stamp. One compiled pass
    (:func:`coverage._ext.density.round_along`), the same as :func:`round_along_reference`
    bit for bit."""
    from ._ext import density as _kernel

    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    groups = np.ascontiguousarray(groups, dtype=np.int64).reshape(-1)
    if groups.shape != x.shape:
        raise ValueError(f"round_along: {len(x)} weights and {len(groups)} groups; give one group per weight")
    fire = np.zeros(len(x), dtype=bool)
    _kernel.round_along(x, groups, float(spread), fire.view(np.uint8))
    return fire


def round_along_reference(x: np.ndarray, groups: np.ndarray, spread: float = ROUND_SPREAD) -> np.ndarray:
    """NumPy twin of :func:`round_along`: group by group, the floored running sums' steps."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)
    fire = np.zeros(len(x), dtype=bool)
    if not len(x):
        return fire
    starts = np.nonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))[0]
    ends = np.concatenate([starts[1:], [len(x)]])
    for a, b in zip(starts, ends):
        offset = 0.5 + float(groups[a]) * float(spread)
        offset = offset - math.floor(offset)
        running = np.floor(np.cumsum(x[a:b]) + offset)
        fire[a:b] = np.diff(np.concatenate([[0.0], running])) > 0
    return fire


def in_band(zones, grid: TexelGrid, d: np.ndarray) -> dict:
    """Share of each zone's skin (texel areas) within ``[0.9 x target, cap]`` at densities ``d``."""
    out = {}
    for k, name in enumerate(zones.names):
        sel = grid.label == k
        area = grid.area_mm2[sel]
        if area.sum() <= 0:
            continue
        dose = zones.dose(name)
        ok = (d[sel] >= IN_BAND_LOW * dose.target_per_cm2) & (d[sel] <= dose.cap_per_cm2)
        out[name] = float(area[ok].sum() / area.sum())
    return out


# --- the pen's part of a plan --------------------------------------------------------------

def _needs_pen(grid: TexelGrid, problem, delivered: np.ndarray, pen_zone: np.ndarray,
               targets: DoseTargets) -> np.ndarray:
    """Texels ``(h, w) bool`` where the pen's paths go: within a window and a footprint of
    pen-zone skin that the windowed density ``delivered`` of the fixed punctures leaves under
    its fit target."""
    under = pen_zone & (delivered < targets.low)
    if not under.any():
        return under
    reach = int(grid.half_u[under].max()) + problem.foot_texels
    return ndimage.maximum_filter(under.astype(np.uint8), size=2 * reach + 1) > 0


def candidate_stamps(face, zones, protocol, grid: TexelGrid, paths: list, pen, first_stamp: int,
                     arcs: list | None = None):
    """Candidate stamps every :data:`CANDIDATE_MM` along ``paths`` (one cartridge), simulated
    and checked needle by needle: ``(paths with their candidates as stamps, Stamps, kept
    candidate rows)``; ``arcs``: each path's :func:`candidate_arcs`, if already made."""
    from . import pen as _pen

    with_candidates = []
    for i, p in enumerate(paths):
        uv, s = candidate_arcs(p.uv) if arcs is None else arcs[i]
        with_candidates.append(dataclasses.replace(p, stamp_uv=uv, stamp_s=s))
    stamps, _ = _pen.simulate_paths(face, zones, protocol, with_candidates, first_stamp=first_stamp, pen=pen,
                                    grid=grid)
    return with_candidates, stamps, np.nonzero(stamps.keep)[0]


def _with_arcs(make, *args):
    """``make(*args)`` (a tuple ending in a cartridge's paths, or None) with each path's
    :func:`candidate_arcs` after it (made on the thread that made the paths)."""
    got = make(*args)
    return None if got is None else (*got, candidate_arcs_many([p.uv for p in got[-1]]))


def _joined_candidates(head: tuple, tail: tuple) -> tuple:
    """:func:`candidate_stamps` of two runs of one cartridge's paths, the second's stamps
    counted on from the first's, joined: what one call with all the paths gives."""
    from . import pen as _pen
    from .simulate import StampHits

    (paths_a, a, kept_a), (paths_b, b, kept_b) = head, tail
    n = len(a.uv)
    hits = StampHits(*(np.concatenate([getattr(a.hits, f.name), getattr(b.hits, f.name)])
                       for f in dataclasses.fields(StampHits)))
    hits.stamp[len(a.hits.stamp):] += n
    stamps = _pen.Stamps(paths_a + paths_b, np.concatenate([a.path, b.path + len(paths_a)]),
                         np.concatenate([a.uv, b.uv]), np.concatenate([a.depth_mm, b.depth_mm]), hits,
                         np.concatenate([a.keep, b.keep]), a.needles)
    return paths_a + paths_b, stamps, np.concatenate([kept_a, kept_b + n])


def dose_fields(zones, grid: TexelGrid, protocol, pen_zones: list, base: np.ndarray | None = None) -> tuple:
    """The pen's dose problems over ``base`` (punctures per texel already planned; None: to
    be given, as :func:`fitted_pen` does): ``(the main cartridge's, the fine one's or None)``.
    Nothing in them but their ``base`` reads the punctures, so a plan builds them while the
    roller is planned (each on its own: :func:`dose_field_of`)."""
    from . import pen as _pen

    clearance = _pen.FootprintClearance(zones)
    return tuple(dose_field_of(zones, grid, protocol, pen_zones, cartridge, clearance, base)
                 for cartridge in ("main", "fine"))


def dose_field_of(zones, grid: TexelGrid, protocol, pen_zones: list, cartridge: str, clearance,
                  base: np.ndarray | None = None):
    """The dose problem of one of the pen's cartridges (``"main"``, or ``"fine"``: None if the
    protocol's pen has none) over ``base``; ``clearance``: the zone map's
    :class:`coverage.pen.FootprintClearance`, which both share."""
    from . import pen as _pen

    pen = protocol.pen if cartridge == "main" else _pen.fine_cartridge(protocol.pen)
    if pen is None:
        return None
    return _pen.dose_field(zones, grid, protocol, base, set(pen_zones), pen=pen, exclusions=clearance)


def fitted_pen(face, zones, protocol, grid: TexelGrid, fixed: np.ndarray, pen_zones: list,
               completion: bool = False, tasks=None, fields: tuple | None = None, before_fit=None):
    """The pen's stamps over the punctures ``fixed`` (per texel) already planned: main passes
    (crossed raster lines or contour loops per zone) and fine-cartridge touch-up loops along
    the keep-outs and wherever the main footprint cannot reach, their stamps fitted to the
    dose needle by needle.

    ``completion``: finish a session over punctures already delivered (:mod:`coverage.resume`):
    only windows under 0.9 x target are worked on and only stamps with a needle in one of
    them may fire (skin at dose is left alone), and a window the delivery already put over
    its cap gets nothing more (its cap is what it holds).

    ``tasks``: the plan's threads (:class:`coverage.tasks.Tasks`; default one): the fine
    cartridge's paths and candidates are built on them beside the main one's.
    ``fields``: :func:`dose_fields` of these zones, grid and pen zones, if already built
    (their ``base`` is set to ``fixed`` here); the fine cartridge's may be a piece of
    ``tasks`` still being built (read by the fine cartridge's own piece, so the main paths
    need not wait for it). ``before_fit()`` is called once every candidate is made, before
    the fit (a plan hands its other thread work there).

    Returns ``(stamp sets [main cartridge, fine cartridge], settings per zone, the main
    dose field, stamps dropped as unsafe, stamps dropped for the cap)``.
    """
    from . import pen as _pen
    from .tasks import serial

    tasks = tasks or serial()

    pen = protocol.pen
    names = zones.names
    pen_zone = np.isin(grid.label, [names.index(n) for n in pen_zones])
    if fields is None:
        fields = dose_fields(zones, grid, protocol, pen_zones)
    main_field, fine_field = fields
    problem = None if main_field is None else dataclasses.replace(main_field, base=fixed)
    delivered = WindowedDose(grid).density(fixed)     # what the fixed punctures give every window
    share = pen_share(zones, grid, delivered, pen_zones)
    settings = {n: _pen.pen_settings(pen, zones.dose(n), share[n]) for n in pen_zones}
    targets = dose_targets(zones, grid)
    helps = None
    if completion:
        already = grid.label >= 0
        already &= delivered > problem.cap
        problem.cap = np.where(already, delivered * (1.0 + 1e-6), problem.cap)
        targets.high = np.where(already, 0.0, targets.high)
        target = np.array([zones.dose(n).target_per_cm2 for n in names])[np.maximum(grid.label, 0)]
        under = pen_zone & (delivered < IN_BAND_LOW * target)
        targets.low = np.where(under, targets.low, np.minimum(targets.low, delivered))
        helps = window_spread(under.astype(np.float64), grid.half_u, grid.half_v, grid.label >= 0) > 0
    need = _needs_pen(grid, problem, delivered, pen_zone, targets)
    # the fine cartridge's paths read nothing of the main one's: built beside them on the
    # plan's threads; then each cartridge's candidates (the fine stamps' rotations count on
    # from the main one's)
    fine = _pen.fine_cartridge(pen)
    main_q = need * 1.0
    # the main cartridge's contour loops traced ahead on the plan's other thread, before its
    # fine paths (which end well before the main ones): the main paths read each level
    # traced, or trace it where the other thread has not yet (on one thread: never run,
    # its result is not read)
    tasks.submit(_pen.trace_loop_levels, problem, zones, pen_zones, main_q, settings, lend=False)
    # (each cartridge's candidate centres along its paths made where its paths are: the
    # counts number the stamps across the cartridges and the parts below)
    fine_part = None if fine is None else tasks.submit(
        _with_arcs, _fine_part, zones, grid, pen_zones, pen, fine, problem, fine_field, fixed, settings, need, pen_zone)
    # the fit's texel layout reads only the grid and the targets: made when a thread is free
    # (the fine cartridge's paths are done before the main one's)
    layout = tasks.submit(fit_layout, grid, targets)
    main_paths = _pen.field_paths(problem, zones, pen_zones, main_q, settings)
    cartridges, arcs = [(pen, problem, settings, main_paths)], [candidate_arcs_many([p.uv for p in main_paths])]
    if fine_part is not None and (got := fine_part.result()) is not None:
        fine_problem, fine_settings, fine_paths, fine_arcs = got
        cartridges.append((fine, fine_problem, fine_settings, fine_paths))
        arcs.append(fine_arcs)
    counts = [np.array([len(a[1]) for a in per_path], dtype=np.int64) for per_path in arcs]
    first_stamps = np.cumsum([0] + [int(n.sum()) for n in counts[:-1]])
    # each part's needle columns made where the part's candidates are (a completion filters
    # the candidates first: there, after they are all made)
    columns_here = helps is None
    candidates = [tasks.submit(_candidates_with_columns, columns_here, face, zones, protocol, grid, paths, cartridge,
                               int(first), a)
                  for (cartridge, _, _, paths), first, a in zip(cartridges[1:], first_stamps[1:], arcs[1:])]
    # the main cartridge's later paths on the plan's other thread too, so each thread
    # simulates about half the needles of every candidate (the stamps are simulated one by
    # one: the parts give what one call gives)
    main_paths, cut = cartridges[0][3], len(cartridges[0][3])
    if tasks.threads > 1 and len(main_paths) > 1:
        # a stamp costs about as much as 14 needles more than its own (measured: 1.6 us a
        # stamp and 0.12 us a needle on the bundled face)
        work = [int(n.sum()) * (c[0].needles + 14) for n, c in zip(counts, cartridges)]
        cut = int(np.clip(np.searchsorted(np.cumsum(counts[0]) * (pen.needles + 14), 0.5 * sum(work)), 1,
                          len(main_paths) - 1))
    later = None if cut == len(main_paths) else tasks.submit(
        _candidates_with_columns, columns_here, face, zones, protocol, grid, main_paths[cut:], pen,
        int(counts[0][:cut].sum()), arcs[0][cut:])
    main = [_candidates_with_columns(columns_here, face, zones, protocol, grid, main_paths[:cut], pen, 0,
                                     arcs[0][:cut])] + ([later.result()] if later is not None else [])
    others = [c.result() for c in candidates]
    if columns_here:
        # every candidate of every cartridge in one fit: the parts' columns side by side, as
        # the columns of the joined candidates; the main cartridge's parts joined on the
        # other thread beside the fit (only what follows the fit reads the joined stamps)
        blocks = [b for _, b in main + others]
        found = [(pen, [p for (part, _) in main for p in part[0]],
                  tasks.submit(_joined_parts, [part for part, _ in main], lend=False))]
        found += [(cartridge, part[0], part) for (cartridge, *_), (part, _) in zip(cartridges[1:], others)]
        spread = sparse.hstack(blocks, format="csc") if blocks else sparse.csc_array((grid.tri.size, 0))
    else:
        found, spread = _completion_columns(grid, cartridges, [_joined_parts([part for part, _ in main])]
                                            + [part for part, _ in others], helps)
    # what the repair reads of the candidates, made beside the fit (on the plan's other thread
    # before the roller's moves that before_fit hands it)
    repair_parts = tasks.submit(RepairParts, grid, zones, fixed, spread, problem.cap, lend=False) \
        if spread.shape[1] else None
    # each candidate path's arc lengths, which choosing its stamps cuts it by: made there too
    path_arcs = [tasks.submit(_chart_arcs_of, with_candidates, lend=False) for _, with_candidates, _ in found]
    if before_fit is not None:
        before_fit()
    x = fit(grid, targets, fixed, spread, layout=layout.result())
    found = [(cartridge, with_candidates, *(part.result() if hasattr(part, "result") else part)[1:])
             for cartridge, with_candidates, part in found]
    # round along each path, then mend the windows rounding left outside their band; the
    # stamps that fire are the candidates themselves (as simulated, needles and all)
    groups, paths_before = [], 0
    for _, with_candidates, stamps, kept in found:
        groups.append(stamps.path[kept] + paths_before)
        paths_before += len(with_candidates)
    groups = np.concatenate(groups) if groups else np.empty(0, np.int64)
    fire = round_along(x, groups)
    fire = repair(grid, zones, fixed, spread, fire, cap=problem.cap, groups=groups,
                  parts=None if repair_parts is None else repair_parts.result())
    picks, offset = [], 0
    for (cartridge, with_candidates, stamps, kept), (_, field_, _, _), arcs in zip(found, cartridges, path_arcs):
        chosen = np.zeros(len(stamps.uv), dtype=bool)
        chosen[kept[fire[offset:offset + len(kept)]]] = True
        offset += len(kept)
        picks.append((stamps, chosen, field_, zones, arcs))
    # each cartridge's stamps selected on a thread of its own (each set is its own)
    sets = tasks.map(_select_picked, picks)
    unsafe = 0   # only safe candidates are fitted
    capped = _pen.cap_guard(problem, fixed, sets)
    return sets, settings, problem, unsafe, capped


def _select_picked(pick: tuple):
    """:func:`select` of one cartridge's ``(stamps, chosen, field, zones, a piece giving
    each path's chart arcs)``."""
    stamps, chosen, field_, zones, arcs = pick
    return select(stamps, chosen, field_, zones, arcs.result())


def _candidates_with_columns(columns: bool, face, zones, protocol, grid: TexelGrid, paths: list, pen, first_stamp: int,
                             arcs: list):
    """:func:`candidate_stamps` of ``paths`` and, if ``columns``, their :func:`needle_columns`
    (each kept stamp a column: the columns of these candidates among any others, side by
    side), else None."""
    part = candidate_stamps(face, zones, protocol, grid, paths, pen, first_stamp, arcs)
    if not columns:
        return part, None
    return part, _kept_columns(grid, part[1], part[2])


def _kept_columns(grid: TexelGrid, stamps, kept: np.ndarray) -> sparse.csc_array:
    """:func:`needle_columns` of the candidate stamps ``kept`` of ``stamps`` (one column each)."""
    rows = np.repeat(np.isin(np.arange(len(stamps.uv)), kept), stamps.needles)
    return needle_columns(grid, stamps.hits.uv[rows], stamps.hits.fired[rows], stamps.needles)


def _joined_parts(parts: list) -> tuple:
    """One cartridge's :func:`candidate_stamps` parts (paths one after the other) joined
    (:func:`_joined_candidates`): what one call with all the paths gives."""
    joined = parts[0]
    for part in parts[1:]:
        joined = _joined_candidates(joined, part)
    return joined


def _completion_columns(grid: TexelGrid, cartridges: list, candidates: list, helps: np.ndarray) -> tuple:
    """A completion's candidates, each cartridge's filtered (no stamp fires whose needles
    all count only in windows at dose: ``helps`` (h, w) bool, the texels whose window is
    under its floor), and their needle columns side by side: ``([(cartridge, paths,
    (paths, stamps, kept))], spread)``."""
    found, blocks = [], []
    for (cartridge, *_), (with_candidates, stamps, kept) in zip(cartridges, candidates):
        if len(kept):
            f = np.floor((stamps.hits.uv - grid.origin) / grid.cell_mm)
            ij = np.where(np.isfinite(f), f, -1).astype(np.int64)
            h, w = grid.shape
            on = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < w) & (ij[:, 1] < h) & stamps.hits.fired
            useful = np.zeros(len(on), dtype=bool)
            useful[on] = helps[ij[on, 1], ij[on, 0]]
            kept = kept[useful.reshape(-1, stamps.needles)[kept].any(axis=1)]
        blocks.append(_kept_columns(grid, stamps, kept))
        found.append((cartridge, with_candidates, (with_candidates, stamps, kept)))
    return found, sparse.hstack(blocks, format="csc") if blocks else sparse.csc_array((grid.tri.size, 0))


def dilated_square(mask: np.ndarray, r: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, structure=np.ones((2 r + 1, 2 r + 1), bool))``: each
    texel set where a texel of ``mask`` lies within ``r`` rows and columns, none beyond the
    grid. As a maximum filter over the square (two passes of a running maximum): the same
    texels, tens of times faster than the dilation's sweep over the structure's 841 offsets
    at r = 14 (the main footprint's reach in 0.25 mm texels)."""
    mask = np.asarray(mask, dtype=bool)
    if r < 1:
        return mask.copy()
    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * int(r) + 1, mode="constant", cval=0) > 0


def _fine_part(zones, grid: TexelGrid, pen_zones: list, pen, fine, problem, fine_field, fixed: np.ndarray,
               settings: dict, need: np.ndarray, pen_zone: np.ndarray):
    """The fine cartridge's dose problem over ``fixed`` (``fine_field``: its field, or a piece
    giving it) and :func:`_fine_paths` ``(problem, settings, paths)``, or None where it has
    nothing to do."""
    if hasattr(fine_field, "result"):
        fine_field = fine_field.result()
    fine_problem = None if fine_field is None else dataclasses.replace(fine_field, base=fixed)
    got = _fine_paths(zones, grid, pen_zones, pen, fine, problem, fine_problem, settings, need, pen_zone)
    return None if got is None else (fine_problem, *got)


def _fine_paths(zones, grid: TexelGrid, pen_zones: list, pen, fine, problem, fine_problem, settings: dict,
                need: np.ndarray, pen_zone: np.ndarray):
    """The fine cartridge's paths in :func:`fitted_pen` and their settings per zone
    ``(settings, paths)``, or None where it has nothing to do (``pen``: the main cartridge)."""
    from . import pen as _pen

    # the fine cartridge goes where no needle of the main one can land, and along every
    # keep-out (exclusions, margins, unobserved skin) where the main footprint's needles
    # thin out: within FINE_NEAR_KEEPOUT_MM of it; its loops cover that skin and
    # FINE_BEYOND_UNREACHED_MM around it, and the fit decides what it stamps there
    r = int(math.ceil(0.5 * pen.footprint_diameter_mm / grid.cell_mm))
    main_reach = dilated_square(problem.allowed, r)
    keepout = (grid.tri >= 0) & (grid.label < 0)
    near_keepout = _pen.distance_to(grid, keepout) <= FINE_NEAR_KEEPOUT_MM
    unreached = need & pen_zone & (~main_reach | near_keepout)
    # and all over a zone whose band is narrower than FINE_EVERYWHERE_STAMPS main stamps'
    # punctures in a 1 cm^2 window (a low target: one main stamp is then about the band)
    narrow = [k for k, n in enumerate(zones.names) if n in pen_zones and (
        zones.dose(n).cap_per_cm2 - IN_BAND_LOW * zones.dose(n).target_per_cm2 < FINE_EVERYWHERE_STAMPS * pen.needles)]
    if narrow:
        unreached |= need & np.isin(grid.label, narrow)
    if not unreached.any():
        return None
    beyond = max(int(round(FINE_BEYOND_UNREACHED_MM / grid.cell_mm)), 1)
    region = ndimage.maximum_filter(unreached.astype(np.uint8), size=2 * beyond + 1) > 0
    region &= fine_problem.allowed
    fine_settings = {n: _pen.pen_settings(fine, zones.dose(n)) for n in pen_zones}
    first = {n: settings[n].passes for n in pen_zones}
    # loops at constant distances from the forbidden skin: a few long strokes around
    # each keep-out rather than a raster's many short runs across a thin band
    paths = _pen.field_paths(fine_problem, zones, pen_zones, region * 1.0, fine_settings, pattern="touch-up",
                             passes=1, first_pass=first, loops=True)
    # then dabs where a pocket's allowed centres lie off every loop (the loops follow the
    # skin distance; the allowed centres, the footprint's clearance in 3D), for the skin
    # the main cartridge hardly reaches: farther than its median needle radius from every
    # main centre (only the outer needles of the stamps at the edge of where they may stand
    # reach it, thinly); the texels beyond it in rows or columns first, then each exactly
    far = 0.5 * pen.footprint_diameter_mm / math.sqrt(2.0)
    skin = unreached & ~dilated_square(problem.allowed, int(math.floor(far / math.sqrt(2.0) / grid.cell_mm)))
    rows, cols = np.nonzero(skin)
    skin[rows, cols] = _none_within(problem.allowed, rows, cols, far / grid.cell_mm)
    return fine_settings, paths + fine_dabs(zones, grid, fine_problem, fine_settings, first, skin, region, paths)


def _disk(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The row and column offsets ``(di, dj)`` of the texels whose centres lie within
    ``radius`` texels of a texel's centre (itself included)."""
    reach = int(math.floor(radius))
    di, dj = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    within = di * di + dj * dj <= radius * radius
    return di[within], dj[within]


def _none_within(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: float) -> np.ndarray:
    """Whether no texel of ``mask (h, w) bool`` has its centre within ``radius`` texels of
    texel ``(rows[i], cols[i])``'s, for each i (texels off the grid are not in the mask)."""
    di, dj = _disk(radius)
    reach = int(math.floor(radius))
    padded = np.pad(np.asarray(mask, dtype=bool), reach)
    return ~padded[rows[:, None] + reach + di, cols[:, None] + reach + dj].any(axis=1)


def fine_dabs(zones, grid: TexelGrid, problem, settings: dict, first: dict, skin: np.ndarray, region: np.ndarray,
              paths: list) -> list:
    """Touch-up paths through the fine cartridge's allowed centres that can reach ``skin``
    (texels the main cartridge hardly reaches) no needle of its loops ``paths`` reaches;
    the fit then decides what they stamp.

    Between two keep-outs (a nostril's margin and the lip's, say) the skin where the fine
    footprint may stand can be a few scattered texels that no loop passes (the loops follow
    the skin distance to the forbidden skin; where a footprint may stand is decided by its
    clearance in 3D), and the skin around them is left under its band. Here every centre
    of ``region`` (allowed, near the skin to reach) within a footprint radius of a texel of
    ``skin`` lying more than a footprint radius from every sample of ``paths``, and on no
    texel a sample lies on, gets a dab: a path of one candidate stamp at its texel's
    centre; a zone's dabs, in a nearest-first chain, are joined by glides where
    :func:`coverage.pen.join_paths` allows (a pocket's dabs make one short stroke).
    Distances are chart distances between texel centres (a path's samples at their
    texels), read in the box around ``skin`` widened by two footprint radii (every texel
    and sample they read lies in it). Every stamp is still checked needle by needle
    and fitted under the cap as any other."""
    from . import pen as _pen

    h, w = grid.shape
    rows, cols = np.flatnonzero(skin.any(axis=1)), np.flatnonzero(skin.any(axis=0))
    if not len(rows):
        return []
    radius = 0.5 * problem.footprint_mm
    m = 2 * int(math.ceil(radius / grid.cell_mm)) + 1
    r0, r1 = max(int(rows[0]) - m, 0), min(int(rows[-1]) + m + 1, h)
    c0, c1 = max(int(cols[0]) - m, 0), min(int(cols[-1]) + m + 1, w)
    on_path = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    if paths:
        on_path = _pen.texel_counts(grid, np.concatenate([p.uv for p in paths]))[r0:r1, c0:c1] > 0
    # the skin no sample lies within a footprint radius of
    sr, sc = np.nonzero(skin[r0:r1, c0:c1])
    keep = _none_within(on_path, sr, sc, radius / grid.cell_mm)
    sr, sc = sr[keep], sc[keep]
    if not len(sr):
        return []
    # the centres within a footprint radius of it, on no sample's texel
    di, dj = _disk(radius / grid.cell_mm)
    spots = np.zeros(on_path.shape, dtype=bool)
    tr, tc = (sr[:, None] + di).ravel(), (sc[:, None] + dj).ravel()
    inside = (tr >= 0) & (tr < r1 - r0) & (tc >= 0) & (tc < c1 - c0)
    spots[tr[inside], tc[inside]] = True
    spots &= region[r0:r1, c0:c1] & ~on_path
    at_r, at_c = np.nonzero(spots)
    at_r, at_c = at_r + r0, at_c + c0
    centres = _pen._centres(grid).reshape(h, w, 2)[at_r, at_c]
    depth = problem.depth_mm[at_r, at_c]
    label = grid.label[at_r, at_c]
    # each dab's two samples, DAB_MM apart across its centre, and its stamp there
    ends = centres[:, None, :] + np.array([[-0.5 * DAB_MM, 0.0], [0.5 * DAB_MM, 0.0]])
    at = np.array([0.5 * DAB_MM])
    dabs = []
    for k, name in enumerate(zones.names):
        mine = np.flatnonzero((label == k) & np.isfinite(depth))
        if name not in settings or not len(mine):
            continue
        line0 = 1 + max([p.line for p in paths if p.zone == name], default=-1)
        speed = settings[name].speed_mm_s
        zone_dabs = [_pen.PenPath(name, first[name], line0 + i, None, "touch-up", float(depth[j]), speed, ends[j],
                                  centres[j:j + 1], at, problem.needles, problem.footprint_mm)
                     for i, j in enumerate(mine[_nearest_chain(centres[mine])].tolist())]
        dabs += _pen.join_paths(zone_dabs, problem, zones)
    return dabs


def _nearest_chain(points: np.ndarray) -> np.ndarray:
    """An order of ``points (n, 2)``: the first, then each time the nearest of those left
    (the lowest index among equally near ones), so consecutive points lie close together."""
    n = len(points)
    order = np.empty(n, dtype=np.int64)
    left = np.ones(n, dtype=bool)
    current = 0
    for k in range(n):
        order[k] = current
        left[current] = False
        if k + 1 < n:
            d = np.where(left, np.hypot(*(points - points[current]).T), np.inf)
            current = int(np.argmin(d))
    return order


def pen_share(zones, grid: TexelGrid, delivered: np.ndarray, names: list) -> dict:
    """Per zone: the mean dose (per cm^2, over its treatable skin by area) the pen must add to
    the windowed density ``delivered`` (:meth:`WindowedDose.density` of the punctures already
    planned) to bring every window to the middle of its band, or None where nothing is
    delivered there and the whole of it is left to the pen (:func:`coverage.pen.pen_settings`
    then aims at the middle of the band itself).

    The pen's passes are laid for this share: where the roller delivered most of a zone's
    dose, the pen adds a fraction of it, and its lines spread as wide as
    :func:`coverage.pen.pen_settings` allows rather than gliding over the whole zone at the
    spacing of a full dose with its stamps far apart."""
    from .pen import AIM_RATIO, _zone_box

    d = np.asarray(delivered)
    out = {}
    for name in names:
        # the zone's texels, read in its box (they all lie there) in the grid's row-major
        # order: the same values, in the same order, as over the whole grid
        k = zones.names.index(name)
        box = _zone_box(grid, k, 0)
        label, area_mm2, dk = (np.asarray(a)[box] if box is not None else np.asarray(a)[:0]
                               for a in (grid.label, grid.area_mm2, d))
        sel = (label == k) & (area_mm2 > 0)
        aim = zones.dose(name).target_per_cm2 * AIM_RATIO
        if not sel.any() or not (dk[sel] > 0).any():
            out[name] = None
            continue
        area = area_mm2[sel]
        out[name] = float(np.sum(np.maximum(aim - dk[sel], 0.0) * area) / area.sum())
    return out


def select(stamps, chosen: np.ndarray, problem=None, zones=None, arcs: list | None = None):
    """The stamps ``chosen (S,) bool`` of a :class:`coverage.pen.Stamps`, as their own set,
    needles and all: their paths (those with a chosen stamp, each keeping only those,
    trimmed to its first and last), and, given the cartridge's dose field ``problem`` and
    the ``zones``, consecutive paths joined by glides in contact where
    :func:`coverage.pen.join_paths` allows (paths the fit left without a stamp no longer
    stand between them). ``arcs``: each path's :func:`chart_arcs`, if made already."""
    from . import pen as _pen
    from .simulate import StampHits

    starts = np.searchsorted(stamps.path, np.arange(len(stamps.paths) + 1))
    paths = []
    for i, p in enumerate(stamps.paths):
        mine = chosen[starts[i]:starts[i + 1]]
        if mine.any():
            paths.append(_trimmed(p, p.stamp_uv[mine], p.stamp_s[mine], None if arcs is None else arcs[i]))
    if problem is not None and zones is not None:
        paths = _pen.join_paths(paths, problem, zones)
    index = np.repeat(np.arange(len(paths)), [len(p.stamp_uv) for p in paths])
    rows = np.flatnonzero(np.repeat(chosen, stamps.needles))     # the chosen stamps' needle rows, once
    h = stamps.hits
    hits = StampHits(h.uv[rows], h.points[rows], h.depth_mm[rows], np.repeat(np.arange(int(chosen.sum())),
                     stamps.needles), h.needle[rows], h.fired[rows], h.gap_mm[rows])
    return _pen.Stamps(paths, index, stamps.uv[chosen], stamps.depth_mm[chosen], hits,
                       np.ones(int(chosen.sum()), dtype=bool), stamps.needles, field=problem)


def chart_arcs(uv: np.ndarray) -> np.ndarray:
    """A chart path's arc length ``(n,)`` (mm) at each of its samples ``(n, 2)``."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(uv, axis=0), axis=1))])


def chart_arcs_many(paths_uv: list) -> list:
    """``[chart_arcs(uv) for uv in paths_uv]``: every path's segment lengths in one compiled
    pass and their running sums, path by path, in another (:func:`coverage.pen._segment_lengths`,
    :func:`coverage.pen._run_cumsum`: NumPy's arithmetic in its order), each path's arc
    lengths its own (views of one array); where a point is not finite, the twin itself
    (:func:`chart_arcs_many_reference`)."""
    paths_uv = [np.asarray(uv, dtype=np.float64).reshape(-1, 2) for uv in paths_uv]
    if not paths_uv or any(len(uv) == 0 for uv in paths_uv):
        return chart_arcs_many_reference(paths_uv)
    uv = np.ascontiguousarray(np.concatenate(paths_uv))
    if not np.isfinite(uv).all():
        return chart_arcs_many_reference(paths_uv)
    s, bounds = _joined_arcs(uv, [len(x) for x in paths_uv])
    return np.split(s, bounds[1:-1])


def _joined_arcs(uv: np.ndarray, sizes: list) -> tuple:
    """The chart arc lengths ``(n,)`` of paths stored end to end in ``uv`` ``(n, 2)`` float64
    (``sizes``: each path's rows), each path's from 0 at its first row, and the paths' row
    bounds ``(p + 1,)``: every segment's length in one compiled pass and each path's running
    sums in another (:func:`coverage.pen._segment_lengths`, :func:`coverage.pen._run_cumsum`:
    NumPy's arithmetic in its order)."""
    from . import pen as _pen

    bounds = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    step = np.zeros(len(uv))
    step[1:] = _pen._segment_lengths(uv)     # across two paths' ends: not read
    return _pen._run_cumsum(step, bounds), bounds


def chart_arcs_many_reference(paths_uv: list) -> list:
    """NumPy twin of :func:`chart_arcs_many`: :func:`chart_arcs` path by path."""
    return [chart_arcs(np.asarray(uv, dtype=np.float64).reshape(-1, 2)) for uv in paths_uv]


def _chart_arcs_of(paths: list) -> list:
    """:func:`chart_arcs` of each path."""
    return chart_arcs_many([p.uv for p in paths])


def _trimmed(path, stamp_uv: np.ndarray, stamp_s: np.ndarray, s: np.ndarray | None = None):
    """``path`` carrying only the given stamps, cut to the samples around its first and last
    (``s``: its :func:`chart_arcs`, if made already)."""
    if s is None:
        s = chart_arcs(path.uv)
    a = max(0, int(np.searchsorted(s, stamp_s[0], side="right")) - 1)
    b = min(len(s), int(np.searchsorted(s, stamp_s[-1], side="left")) + 1)
    b = max(b, min(a + 2, len(s)))
    # dataclasses.replace without its checks (a PenPath holds no field derived from another)
    out = copy.copy(path)
    out.uv, out.stamp_uv, out.stamp_s = path.uv[a:b], stamp_uv, stamp_s - s[a]
    return out


REPAIR_ROUNDS = 40
REPAIR_CAP_RATIO = 0.98   # the repair keeps every window this far under its cap: room for a re-lifted
                          # plan on a slightly compressed face, and for float noise
REPAIR_TRIES = 40     # candidate stamps weighed exactly per patch and round
REPAIR_TRIES_STALLED = 120  # ... once a round with that many moved nothing: the gradient's first
                           # picks are then the stamps that would lift a window over its cap
SHIFT_STEPS = 2          # a fired stamp may move this many candidates along its path (1 mm) ...
SHIFT_TRIES = 30         # ... this many moves weighed exactly per patch and round ...
SHIFT_ROUNDS = 5         # ... for at most this many rounds ...
SHIFT_ZONE_BELOW = 0.98  # ... in the zones with less of their skin in band than this


class RepairParts:
    """What :func:`repair` reads that does not depend on which stamps fire: the bands, the
    band gradient, the stamps' effects (ready to track a density) and the window index of
    ``spread`` over ``fixed`` (``cap`` as :func:`repair` takes it). A plan makes them on its
    other thread while the fit runs. Read by one repair only (its stamps' effects then
    track that repair's density)."""

    def __init__(self, grid: TexelGrid, zones, fixed: np.ndarray, spread: sparse.csc_array,
                 cap: np.ndarray | None = None):
        shape = grid.shape
        names = zones.names
        target = np.array([zones.dose(n).target_per_cm2 for n in names], dtype=np.float64)
        treat = grid.label >= 0
        lab = np.maximum(grid.label, 0)
        if cap is None:
            cap = np.array([zones.dose(n).cap_per_cm2 for n in names], dtype=np.float64)[lab]
        self.op = WindowedDose(grid)
        self.treat = treat
        self.low = np.where(treat, IN_BAND_LOW * target[lab], 0.0).ravel()
        self.high = np.where(treat, cap * REPAIR_CAP_RATIO, np.inf).ravel()
        self.area = np.where(treat, grid.area_mm2, 0.0).ravel()
        band = DoseTargets(self.low.reshape(shape) * 1.005, np.where(treat, cap * 0.995, np.inf),
                           np.where(treat, grid.area_mm2 / target[lab] ** 2, 0.0), treat)
        self.windows = WindowStamps(spread.tocsr(), shape)
        self.band_gradient = BandGradient(grid, band, spread)
        self.effects = StampEffects(spread, shape, self.op.per_count.ravel(), grid.half_u.ravel(),
                                    grid.half_v.ravel(), self.low, self.high, self.area)
        self.effects.prepare_tracking()
        self.base = np.asarray(fixed, dtype=np.float64).ravel()
        self.used = False


def repair(grid: TexelGrid, zones, fixed: np.ndarray, spread: sparse.csc_array, fire: np.ndarray,
           rounds: int = REPAIR_ROUNDS, cap: np.ndarray | None = None,
           groups: np.ndarray | None = None, parts: RepairParts | None = None, compiled: bool = True) -> np.ndarray:
    """Mend, stamp by stamp and exactly, the windows that rounding left outside their band.

    Each round takes the worst window of every separate patch of skin over
    ``REPAIR_CAP_RATIO x`` its cap and
    drops the fired stamp with needles in it whose loss keeps the most skin in band and
    takes the most off the cap (weighing the stamps the band penalty's gradient ranks
    first, each exactly; where no single drop takes skin off the mark, the stamp with the
    most needles in the window); then the worst window of every patch under 0.9 x target
    gets the unfired stamp that brings the most skin into band (or fills the most shortfall)
    without lifting any window over its cap or adding to one already over it. Each patch
    weighs ``REPAIR_TRIES`` stamps (the first by the gradient, ties in stamp order); once a
    round moves nothing, ``REPAIR_TRIES_STALLED`` before giving up. Then, given each
    candidate's path (``groups (m,)``, candidates in travel order), fired stamps move along
    their paths where that brings skin into band (:func:`_shift`). ``cap``: per texel
    (h, w), instead of each zone's. ``parts``: :class:`RepairParts` of the same grid, zones,
    ``fixed``, ``spread`` and ``cap``, if made already. A round's patches run in one
    compiled pass (:meth:`StampEffects.patch_moves`) where the stamps' effects track the
    density; ``compiled=False`` (or untracked) runs the NumPy twin of those passes, which
    gives the same stamps bit for bit. Returns the new ``fire (m,) bool``.
    """
    fire = np.array(fire, dtype=bool)
    if not len(fire):
        return fire
    if parts is None:
        parts = RepairParts(grid, zones, fixed, spread, cap)
    elif parts.used:
        raise ValueError("repair: these RepairParts were read by a repair already; make new ones")
    parts.used = True
    op, treat, low, high, area = parts.op, parts.treat, parts.low, parts.high, parts.area
    band_gradient, effects, base, windows = parts.band_gradient, parts.effects, parts.base, parts.windows
    shape = grid.shape
    blocked = np.zeros(len(fire), dtype=bool)

    def raises(mask):
        # the texels whose windows hold a texel of mask: a stamp with a puncture on one of
        # them adds to a window of mask (None: mask has none)
        if not mask.any():
            return None
        return window_spread(mask.reshape(shape).astype(np.float64), grid.half_u, grid.half_v, treat).ravel() > 0

    scratch = np.empty(shape[0] * shape[1], dtype=np.int64)

    def worst_per_patch(mask, badness):
        return patch_worst(mask, badness, shape, scratch)

    d = op.density((base + spread @ fire.astype(np.float64)).reshape(shape)).ravel()
    # d changes only through the effects' moves from here on: the effects are weighed against
    # it by the tracked kernels (the same values, most texels passed over)
    if effects.track(d) and compiled:
        moves_of = effects.patch_moves
    else:
        moves_of = functools.partial(effects.patch_moves_reference, density=d)
    n_tries = REPAIR_TRIES
    still = False       # whether d is as the round before left it, with nothing moved
    for _ in range(rounds):
        if not still:
            # what the round reads of d: as the round before read it if nothing moved since
            over, under = d > high, treat.ravel() & (d < low)
            if not over.any() and not under.any():
                break
            grad = band_gradient(d)
            worst_over, hit = worst_per_patch(over, d - high), raises(over)
        # the drops' choices are explained at StampEffects.patch_moves: of the stamps whose
        # loss takes skin off the mark, the one that keeps the most skin in band (the windows
        # over it are mostly a lower-target zone's beside a higher one, and the stamp that
        # lowers them most is often one the higher zone's rim needs)
        dropped = moves_of("drop", worst_over, n_tries, fire, blocked, None, grad, windows)
        if not still or (dropped >= 0).any():
            # the windows under their band, after the drops
            worst_under = worst_per_patch(under & ~over, low - d)
        # no stamp adds to a window over its mark
        added = moves_of("add", worst_under, n_tries, fire, blocked, hit, grad, windows)
        still = not (dropped >= 0).any() and not (added >= 0).any()
        if still:
            if n_tries < REPAIR_TRIES_STALLED:
                n_tries = REPAIR_TRIES_STALLED
                continue
            break
    if groups is not None:
        # (the last round's gradient is of d as it is where that round moved nothing)
        _shift(grid, zones, groups, fire, d, moves_of, blocked, band_gradient, worst_per_patch, windows, raises, low,
               high, area, grad if still else None)
    return fire


def patch_worst(mask: np.ndarray, badness: np.ndarray, shape: tuple, scratch: np.ndarray | None = None) -> np.ndarray:
    """The worst texel of every patch of ``mask`` (flat ``(h * w,)`` bool over a grid of
    ``shape``): the patches 8-connected and in the order of their first texel in raster
    order, in each the texel of the largest ``badness (h * w,)`` (NaN below every number;
    among equal ones the first in raster order), as flat indices ``(patches,)``. One compiled
    pass over the mask (:func:`coverage._ext.density.patch_worst`); the same texels as
    :func:`patch_worst_reference`. ``scratch``: ``(h * w,) int64`` to use, if any."""
    from ._ext import density as _kernel

    h, w = (int(x) for x in shape)
    mask = np.ascontiguousarray(mask, dtype=bool).reshape(-1)
    badness = np.ascontiguousarray(badness, dtype=np.float64).reshape(-1)
    if mask.shape != (h * w,) or badness.shape != (h * w,):
        raise ValueError(f"patch_worst: mask and badness must hold {h} x {w} texels")
    if scratch is None or scratch.dtype != np.int64 or scratch.shape != (h * w,) or not scratch.flags.c_contiguous:
        scratch = np.empty(h * w, dtype=np.int64)
    out = np.empty(int(np.count_nonzero(mask)), dtype=np.int64)
    n = _kernel.patch_worst(mask.view(np.uint8), h, w, badness, scratch, out)
    return out[:n]


def patch_worst_reference(mask: np.ndarray, badness: np.ndarray, shape: tuple) -> np.ndarray:
    """NumPy (SciPy) twin of :func:`patch_worst`: the patches labelled by ``ndimage.label``
    (a 3 x 3 structure; labels go in raster order) on the box around the mask, each
    patch's texels sorted by badness, largest first (a stable sort: ties in raster order)."""
    h, w = (int(x) for x in shape)
    mask = np.asarray(mask, dtype=bool).reshape(h, w)
    badness = np.asarray(badness, dtype=np.float64).reshape(-1)
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return np.empty(0, dtype=np.int64)
    cols = np.flatnonzero(mask.any(axis=0))
    r0, c0, bw = rows[0], cols[0], cols[-1] + 1 - cols[0]
    patches, n = ndimage.label(mask[r0:rows[-1] + 1, c0:cols[-1] + 1], structure=np.ones((3, 3), bool))
    if not n:
        return np.empty(0, dtype=np.int64)
    local = np.flatnonzero(patches)
    patch = patches.ravel()[local]
    idx = (local // bw + r0) * w + local % bw + c0
    order = np.lexsort((-badness[idx], patch))
    return idx[order[np.searchsorted(patch[order], np.arange(1, n + 1))]].astype(np.int64)


def _shift(grid: TexelGrid, zones, groups: np.ndarray, fire: np.ndarray, d: np.ndarray, moves_of, blocked,
           band_gradient, worst_per_patch, windows, raises, low, high, area, grad=None) -> None:
    """The repair's last step, in place on ``fire`` and ``d``: move fired stamps along their
    path to a neighbouring candidate (:data:`SHIFT_STEPS` each way) where that brings skin
    into band without lifting any window over its mark.

    Rounding puts each stamp wherever the running sum crosses a half; between two zones
    whose bands do not meet (a cheek's floor, 225 /cm^2, over a periorbital band's cap,
    187.5) the density must climb within a window's width, and there a millimetre decides
    which side of a window's edge a stamp's needles fall. Each round, in the zones with
    less than :data:`SHIFT_ZONE_BELOW` of their skin in band, the worst window of every
    patch under its floor weighs the moves of the stamps with needles in it, the
    :data:`SHIFT_TRIES` the band penalty's gradient ranks first each exactly
    (:meth:`StampEffects.swap_effects`), and takes the one bringing the most skin into band
    (``moves_of``: :meth:`StampEffects.patch_moves` or its twin). ``grad``: ``band_gradient(d)``
    if already made.
    """
    label = grid.label.ravel()
    treat = label >= 0
    lab = np.maximum(label, 0)
    n_zones = len(zones.names)
    total = np.bincount(lab[treat], area[treat], minlength=n_zones)
    steps = np.array([t for t in range(-SHIFT_STEPS, SHIFT_STEPS + 1) if t])
    for _ in range(SHIFT_ROUNDS):
        over, under = d > high, treat & (d < low)
        ok = treat & ~over & ~under
        # each zone's skin in band: the texels out add +0 (numpy sums each bin in texel
        # order: the same sums as over the texels in alone), with no gathers
        weak = np.bincount(lab, np.where(ok, area, 0.0), minlength=n_zones) < SHIFT_ZONE_BELOW * total
        focus = under & ~over & weak[lab]
        if not focus.any():
            break
        grad = band_gradient(d) if grad is None else grad
        moved = moves_of("shift", worst_per_patch(focus, low - d), SHIFT_TRIES, fire, blocked, raises(over), grad,
                         windows, groups, steps)
        moves = int((moved[:, 0] >= 0).sum())
        if not moves:
            break
        grad = None       # d has moved
