"""Chart raster reads: the value of a regular chart grid's cell under chart points.

A raster ``values (h, w)`` with lower-left corner ``origin (2,)`` and square cells of side
``cell`` (chart mm) holds at chart point p the value of cell ``floor((p - origin) / cell)``
(column from u, row from v); points off the grid, or NaN, read ``outside``. On top of the
plain read (:func:`lookup`):

* the least value over points set off from each point (:func:`lookup_min`,
  :func:`offset_min`, :func:`rect_min`): a drum's needle band or outline against a
  clearance raster, without building the points;
* reads of a grid once per column at given heights (:func:`column_values`,
  :func:`column_step`, :func:`column_mode`): the roller's line placement in a turned frame;
* a boolean occupancy raster under bands of points (:func:`band_taken`, :func:`band_take`),
  with off-grid points clipped onto its border;
* the roller's line placement step (:func:`line_step`), the distance of grid cells to a
  region (:func:`clearance`) and the least value in a window along paths (:func:`window_min`).

The roller asks these tens of thousands of times per plan with a few hundred points each,
so the per-call cost matters as much as the per-point one. The compiled kernels
(``coverage._ext.raster``) build every point with NumPy's arithmetic in the reference's
order and equal the NumPy references below bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from ._ext import raster as _kernel


def _points(uv) -> np.ndarray:
    return np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 2)


def lookup(values: np.ndarray, origin, cell: float, uv, outside: float) -> np.ndarray:
    """Raster values ``(k,) float`` at chart points ``uv (k, 2)``; ``outside`` off the grid or at NaN.

    values : (h, w) array of any real or bool dtype (read as float64)
    """
    uv = _points(uv)
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"a raster is (h, w); got values of shape {values.shape}")
    u0, v0, cell = float(origin[0]), float(origin[1]), float(cell)
    out = np.empty(len(uv), dtype=np.float64)
    if values.dtype == np.float64 and values.flags.c_contiguous:
        _kernel.nearest(values, uv, u0, v0, cell, float(outside), out)
        return out
    # other dtypes: find the cells, then gather (no float64 copy of a large raster per call)
    h, w = values.shape
    flat = np.empty(len(uv), dtype=np.int64)
    _kernel.cells(uv, u0, v0, cell, w, h, flat)
    out.fill(outside)
    ok = flat >= 0
    out[ok] = values.reshape(-1)[flat[ok]]
    return out


def lookup_min(values: np.ndarray, origin, cell: float, uv, group: int, outside: float) -> np.ndarray:
    """Least raster value ``(n,) float`` over each run of ``group`` consecutive chart points
    ``uv (n * group, 2)`` (NaN if any is NaN), reading ``outside`` off the grid.

    Equal to ``lookup(...).reshape(n, group).min(axis=1)`` without the intermediate array.
    """
    uv = _points(uv)
    group = int(group)
    if group < 1 or len(uv) % group:
        raise ValueError(f"group = {group}: it must be positive and divide the {len(uv)} points")
    out = np.empty(len(uv) // group, dtype=np.float64)
    _kernel.nearest_min(_raster(values), uv, group, float(origin[0]), float(origin[1]), float(cell), float(outside),
                        out)
    return out


def _raster(values) -> np.ndarray:
    values = np.ascontiguousarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"a raster is (h, w); got values of shape {values.shape}")
    return values


def _vectors(x, n: int, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.shape != (n, 2):
        raise ValueError(f"{name} has shape {x.shape}; one chart vector per point, ({n}, 2), is needed")
    return x


def _offsets(x, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        raise ValueError(f"{name} is empty: at least one offset is needed")
    return x


def offset_min(values: np.ndarray, origin, cell: float, uv, direction, offsets, scale=None,
               outside: float = np.inf) -> np.ndarray:
    """Least raster value ``(n,) float`` over points set off from each chart point along its
    own direction: ``uv[i] + (offsets[j] * scale[i]) * direction[i]`` for every j (without
    ``scale``: ``uv[i] + offsets[j] * direction[i]``); NaN if any value read is NaN.

    uv, direction : (n, 2) float (chart)
    offsets : (m,) float, m >= 1
    scale : (n,) float, optional
    """
    uv = _points(uv)
    n = len(uv)
    direction = _vectors(direction, n, "direction")
    offsets = _offsets(offsets, "offsets")
    scaled = scale is not None
    scale = np.ascontiguousarray(scale if scaled else (), dtype=np.float64).reshape(-1)
    if scaled and len(scale) != n:
        raise ValueError(f"scale has {len(scale)} values; one per point ({n}) is needed")
    out = np.empty(n, dtype=np.float64)
    _kernel.offset_min(_raster(values), uv, direction, scale, scaled, offsets,
                       float(origin[0]), float(origin[1]), float(cell), float(outside), out)
    return out


def rect_min(values: np.ndarray, origin, cell: float, uv, dir_a, dir_b, off_a, off_b,
             outside: float = np.inf) -> np.ndarray:
    """Least raster value ``(n,) float`` over a grid of points around each chart point:
    ``(uv[i] + off_a[j] * dir_a[i]) + off_b[j] * dir_b[i]`` for every j; NaN if any is NaN.

    uv, dir_a, dir_b : (n, 2) float (chart)
    off_a, off_b : (m,) float, m >= 1
    """
    uv = _points(uv)
    n = len(uv)
    off_a, off_b = _offsets(off_a, "off_a"), _offsets(off_b, "off_b")
    if len(off_a) != len(off_b):
        raise ValueError(f"off_a has {len(off_a)} values and off_b {len(off_b)}; they pair up")
    out = np.empty(n, dtype=np.float64)
    _kernel.rect_min(_raster(values), uv, _vectors(dir_a, n, "dir_a"), _vectors(dir_b, n, "dir_b"), off_a, off_b,
                     float(origin[0]), float(origin[1]), float(cell), float(outside), out)
    return out


def column_values(field: np.ndarray, v, v0: float, step: float) -> np.ndarray:
    """A field ``(rows, cols)`` on rows ``v0 + r * step`` read once per column at heights
    ``v (cols,)``: the nearest row (``numpy.round``), NaN off the rows or at NaN."""
    field = _raster(field)
    v = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    if len(v) != field.shape[1]:
        raise ValueError(f"v has {len(v)} values; one per column ({field.shape[1]}) is needed")
    out = np.empty(len(v), dtype=np.float64)
    _kernel.column_values(field, v, float(v0), float(step), out)
    return out


def _band_args(taken, uv, across, half, scale, f) -> tuple:
    if taken.dtype != np.bool_ or taken.ndim != 2 or not taken.flags.c_contiguous:
        raise ValueError(f"taken must be a C-contiguous (h, w) bool raster; got {taken.dtype} {taken.shape}")
    if taken.size == 0:
        raise ValueError("taken is empty: an occupancy raster needs at least one cell")
    uv = _points(uv)
    n = len(uv)
    half = np.ascontiguousarray(half, dtype=np.float64).reshape(-1)
    scale = np.ascontiguousarray(scale, dtype=np.float64).reshape(-1)
    if len(half) != n or len(scale) != n:
        raise ValueError(f"half ({len(half)}) and scale ({len(scale)}) need one value per point ({n})")
    return uv, _vectors(across, n, "across"), half, scale, _offsets(f, "f")


def band_taken(taken: np.ndarray, origin, cell: float, uv, across, half, scale, f) -> np.ndarray:
    """Whether any cell under each point's band is set ``(n,) bool``.

    The band of point i: ``uv[i] + ((f[j] * half[i]) / scale[i]) * across[i]`` for every j;
    its cells ``floor((p - origin) / cell)`` clipped onto the raster (so a point off the
    grid reads its nearest border cell).

    taken : (h, w) bool, C-contiguous
    uv, across : (n, 2) float (chart)
    half, scale : (n,) float
    f : (m,) float, m >= 1
    """
    uv, across, half, scale, f = _band_args(taken, uv, across, half, scale, f)
    out = np.empty(len(uv), dtype=np.bool_)
    _kernel.band_taken(taken.view(np.uint8), uv, across, half, scale, f, float(origin[0]), float(origin[1]),
                       float(cell), out.view(np.uint8))
    return out


def band_take(taken: np.ndarray, origin, cell: float, uv, across, half, scale, f) -> None:
    """Set every cell under the points' bands (see :func:`band_taken`) in ``taken``, in place."""
    uv, across, half, scale, f = _band_args(taken, uv, across, half, scale, f)
    _kernel.band_take(taken.view(np.uint8), uv, across, half, scale, f, float(origin[0]), float(origin[1]),
                      float(cell))


def column_step(scale: np.ndarray, v, v0: float, step: float, c: float) -> np.ndarray:
    """The line ``(cols,)`` a chart distance ``c / lam`` beyond heights ``v (cols,)`` on a
    field ``scale (rows, cols)`` (read as :func:`column_values` reads), per column:
    ``lam`` is the scale at v averaged with the scale where ``v + c / scale(v)`` lands (the
    scale at v alone where that read is not finite). NaN where the scale at v is NaN."""
    scale = _raster(scale)
    v = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    if len(v) != scale.shape[1]:
        raise ValueError(f"v has {len(v)} values; one per column ({scale.shape[1]}) is needed")
    out = np.empty(len(v), dtype=np.float64)
    _kernel.column_step(scale, v, float(v0), float(step), float(c), out)
    return out


def _lazy_fields(lazy, *fields) -> None:
    """Refuse fields that are not ``lazy``'s own (a :class:`FrameFields`): its kernel fills the
    cells of its own arrays, so the fields read must be those arrays, not copies."""
    if lazy is not None and not all(f is own for f, own in zip(fields, (lazy.scale, lazy.codes)) if f is not None):
        raise ValueError("lazy fields: pass the FrameFields' own scale and codes arrays")


class FrameFields:
    """A sweep frame's fields made point by point when first read (``coverage._ext.raster.FrameFill``):
    ``scale`` and ``codes`` ``(rows, cols)`` and the band behind each code, ``band``, each
    made as ``frame_fields`` makes it where a line kernel given this as ``lazy`` reads it
    (:func:`column_mode`, :func:`line_step`, :func:`line_walk`); ``codes`` index ``levels``,
    every band a point can show, ascending (-1: NaN). :meth:`fill` makes the points asked,
    :meth:`fill_all` every point."""

    def __init__(self, kernel, rows: int, cols: int, levels: np.ndarray, known: np.ndarray, scale: np.ndarray,
                 band: np.ndarray, codes: np.ndarray):
        self.kernel, self.levels = kernel, levels
        self.known = known.reshape(rows, cols)
        self.scale, self.band, self.codes = scale.reshape(rows, cols), band.reshape(rows, cols), codes.reshape(rows, cols)

    def fill(self, points) -> None:
        self.kernel.fill_points(np.ascontiguousarray(points, dtype=np.int64).reshape(-1))

    def fill_row(self, row: int) -> None:
        cols = self.scale.shape[1]
        self.fill(np.arange(cols, dtype=np.int64) + int(row) * cols)

    def fill_all(self) -> None:
        self.fill(np.flatnonzero(self.known.reshape(-1) == 0))


def column_mode(codes: np.ndarray, v, v0: float, step: float, levels: int, lazy: FrameFields | None = None) -> int:
    """The most frequent code of a field ``codes (rows, cols) int`` (each in ``[0, levels)``,
    or negative for none) read once per column at heights ``v (cols,)`` as
    :func:`column_values` reads; the smallest code on a tie, -1 if no column reads one. A code
    read at or beyond ``levels`` is refused (ValueError). ``lazy``: the codes are its own,
    each cell made where first read."""
    _lazy_fields(lazy, None, codes)
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError(f"codes is a (rows, cols) field; got shape {codes.shape}")
    v = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    if len(v) != codes.shape[1]:
        raise ValueError(f"v has {len(v)} values; one per column ({codes.shape[1]}) is needed")
    # the kernel reports a code read at or beyond the levels (-2): the codes are refused then.
    # A code no column reads does not change the mode, so the whole field is not scanned for
    # one on every call (the roller asks each of its lines' designs of one frame's field)
    mode = int(_kernel.column_mode(codes, v, float(v0), float(step), np.empty(max(int(levels), 0), dtype=np.int64),
                                   None if lazy is None else lazy.kernel))
    if mode == -2:
        raise ValueError(f"codes run up to {int(codes.max())}; levels = {levels} must exceed them")
    return mode



def _line_arrays(scale, codes, levels, weights, v) -> tuple:
    """The line kernels' arrays, contiguous and typed, checked to have one column per value of ``v``."""
    scale = _raster(scale)
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    levels = np.ascontiguousarray(levels, dtype=np.float64).reshape(-1)
    weights = np.ascontiguousarray(weights, dtype=np.float64).reshape(-1)
    v = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    if scale.shape[1] != len(v) or codes.shape != scale.shape:
        raise ValueError(f"scale {scale.shape} and codes {codes.shape} need one column per value of v ({len(v)})")
    return scale, codes, levels, weights, v


def line_step(scale: np.ndarray, codes: np.ndarray, levels, v, v0: float, step: float, sign: float, w0: float,
              forced_mm, fallback_mm: float, weights, lazy: FrameFields | None = None) -> tuple[np.ndarray, float]:
    """One step of the roller's line placement across the columns of a turned grid:
    ``(next line (cols,), its design w1)``.

    Up to three rounds, until w1 settles: the next line
    ``nxt = column_step(scale, v, v0, step, sign * ((w0 + w1) / 2))`` (w1 starts at w0) and
    its design ``w1``: ``forced_mm`` if given, else ``levels[column_mode(codes, nxt, ...)]``
    (``fallback_mm`` if no column reads a code). Then nxt smoothed by ``weights`` (odd,
    ``scipy.ndimage.correlate1d`` weights, mode ``nearest``) ignoring and keeping its NaN:
    the correlation of its finite values over that of its finite mask, NaN where it is not
    finite (nxt as it is if nothing is). See :func:`line_step_reference`.

    scale : (rows, cols) float; codes : (rows, cols) int, each < len(levels); levels : (m,) float
    v : (cols,) float
    lazy : the fields are its own, each cell made where first read
    """
    _lazy_fields(lazy, scale, codes)
    scale, codes, levels, weights, v = _line_arrays(scale, codes, levels, weights, v)
    cols = len(v)
    # scipy's symmetric path (an odd count, pairs within DBL_EPSILON); any other: the reference
    if not _kernel.symmetric(weights):
        if lazy is not None:
            lazy.fill_all()
        return line_step_reference(scale, codes, levels, v, v0, step, sign, w0, forced_mm, fallback_mm, weights)
    out = np.empty(cols)
    scratch = np.empty((3, cols))
    status = np.zeros(1, dtype=np.int64)
    w1 = _kernel.line_step(scale, codes, levels, v, float(v0), float(step), float(sign), float(w0),
                           forced_mm is not None, 0.0 if forced_mm is None else float(forced_mm),
                           float(fallback_mm), weights, np.empty(len(levels), dtype=np.int64),
                           scratch[0], scratch[1], scratch[2], out, status, None if lazy is None else lazy.kernel)
    if status[0]:
        raise ValueError(f"codes read up to {int(codes.max())}; levels ({len(levels)}) must exceed them")
    return out, float(w1)


def line_walk(scale: np.ndarray, codes: np.ndarray, levels, v, v0: float, step: float, sign: float, w0: float,
              forced_mm, fallback_mm: float, weights, lo: float, hi: float, chunk: int = 64,
              lazy: FrameFields | None = None) -> list:
    """Lines stepped from ``v`` (design ``w0``) one after another by :func:`line_step`, each
    from the one before, while a line has a finite column within ``[lo, hi]``:
    ``[(line (cols,), its design), ...]`` in order (the first line with none ends the walk,
    unkept). All steps in one kernel call per ``chunk`` lines. See :func:`line_walk_reference`.
    ``lazy``: the fields are its own, each cell made where first read.
    """
    _lazy_fields(lazy, scale, codes)
    scale, codes, levels, weights, v = _line_arrays(scale, codes, levels, weights, v)
    cols = len(v)
    if not _kernel.symmetric(weights):
        if lazy is not None:
            lazy.fill_all()
        return line_walk_reference(scale, codes, levels, v, v0, step, sign, w0, forced_mm, fallback_mm, weights,
                                   lo, hi)
    chunk = max(int(chunk), 1)
    counts, scratch, status = np.empty(len(levels), dtype=np.int64), np.empty((3, cols)), np.zeros(1, dtype=np.int64)
    found, w = [], float(w0)
    while True:
        lines, designs = np.empty((chunk, cols)), np.empty(chunk)
        kept = _kernel.line_walk(scale, codes, levels, v, float(v0), float(step), float(sign), w,
                                 forced_mm is not None, 0.0 if forced_mm is None else float(forced_mm),
                                 float(fallback_mm), weights, float(lo), float(hi), counts, scratch[0], scratch[1],
                                 scratch[2], lines, designs, status, None if lazy is None else lazy.kernel)
        if status[0]:
            raise ValueError(f"codes read up to {int(codes.max())}; levels ({len(levels)}) must exceed them")
        found += [(lines[i], float(designs[i])) for i in range(kept)]
        if kept < chunk:
            return found
        v, w = lines[kept - 1], float(designs[kept - 1])


def line_walk_reference(scale: np.ndarray, codes: np.ndarray, levels, v, v0: float, step: float, sign: float,
                        w0: float, forced_mm, fallback_mm: float, weights, lo: float, hi: float) -> list:
    """NumPy twin of :func:`line_walk`: :func:`line_step_reference` step by step."""
    found, w = [], w0
    while True:
        v, w = line_step_reference(scale, codes, levels, v, v0, step, sign, w, forced_mm, fallback_mm, weights)
        with np.errstate(invalid="ignore"):
            inside = np.isfinite(v) & (v >= lo) & (v <= hi)
        if not inside.any():
            return found
        found.append((v, float(w)))


def clearance(away: np.ndarray, cell: float) -> np.ndarray:
    """Distance (chart mm, a lower bound) from each cell of a grid ``away (h, w) bool`` to the
    nearest cell not away, less one cell diagonal; -1 at the cells not away.

    The exact Euclidean distance transform in cells (as ``scipy.ndimage.distance_transform_edt``
    gives it: the square root of a whole number), times ``cell``, less ``cell * sqrt(2)``.
    A grid with no cell that is not away is left to that reference.
    """
    away = np.ascontiguousarray(away, dtype=np.bool_)
    if away.ndim != 2:
        raise ValueError(f"away is an (h, w) grid; got shape {away.shape}")
    cell = float(cell)
    h, w = away.shape
    if away.size == 0 or away.all():
        return clearance_reference(away, cell)
    out = np.empty((h, w))
    _kernel.clearance(away.view(np.uint8), cell, cell * math.sqrt(2.0), out, np.empty((h, w), dtype=np.int64),
                      np.empty(w, dtype=np.int64), np.empty(w, dtype=np.int64))
    return out


def window_min(values, first, stop, reach: int) -> np.ndarray:
    """``scipy.ndimage.minimum_filter1d(values[a:b], 2 * reach + 1, mode="nearest")`` of each
    path ``a, b = first[i], stop[i]`` (disjoint), side by side ``(n,)``: the least value
    within ``reach`` rows of each row, the window clipped to its path; rows in no path keep
    their value. See :func:`window_min_reference` (which answers where a value is NaN or -0)."""
    values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    first = np.ascontiguousarray(first, dtype=np.int64).reshape(-1)
    stop = np.ascontiguousarray(stop, dtype=np.int64).reshape(-1)
    n = len(values)
    if len(first) != len(stop) or (first < 0).any() or (stop > n).any() or (stop < first).any():
        raise ValueError(f"paths first:stop must lie within the {n} values")
    reach = int(reach)
    if reach < 0:
        raise ValueError(f"reach = {reach}: a window reaches zero rows or more")
    if np.isnan(values).any() or (np.signbit(values) & (values == 0)).any():
        return window_min_reference(values, first, stop, reach)
    out = values.copy()
    _kernel.window_min(values, first, stop, reach, out)
    return out

# --- NumPy references (tests compare the kernels with these) -------------------------------

def lookup_reference(values: np.ndarray, origin, cell: float, uv, outside: float) -> np.ndarray:
    """NumPy twin of :func:`lookup`."""
    f = np.floor((np.asarray(uv, dtype=np.float64).reshape(-1, 2) - np.asarray(origin, dtype=np.float64)) / cell)
    ij = np.nan_to_num(f, nan=-1.0, posinf=-1.0, neginf=-1.0).astype(np.int64)
    h, w = values.shape
    ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < w) & (ij[:, 1] < h)
    out = np.full(len(ij), outside, dtype=np.float64)
    out[ok] = values[ij[ok, 1], ij[ok, 0]]
    return out


def lookup_min_reference(values: np.ndarray, origin, cell: float, uv, group: int, outside: float) -> np.ndarray:
    """NumPy twin of :func:`lookup_min`."""
    return lookup_reference(values, origin, cell, uv, outside).reshape(-1, group).min(axis=1)


def offset_min_reference(values: np.ndarray, origin, cell: float, uv, direction, offsets, scale=None,
                         outside: float = np.inf) -> np.ndarray:
    """NumPy twin of :func:`offset_min`."""
    uv, direction = np.asarray(uv, dtype=np.float64), np.asarray(direction, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.float64)
    if scale is None:
        pts = uv[:, None, :] + offsets[None, :, None] * direction[:, None, :]
    else:
        pts = uv[:, None, :] + (offsets[None, :, None] * np.asarray(scale, dtype=np.float64)[:, None, None]) \
            * direction[:, None, :]
    return lookup_min_reference(values, origin, cell, pts.reshape(-1, 2), len(offsets), outside)


def rect_min_reference(values: np.ndarray, origin, cell: float, uv, dir_a, dir_b, off_a, off_b,
                       outside: float = np.inf) -> np.ndarray:
    """NumPy twin of :func:`rect_min`."""
    uv = np.asarray(uv, dtype=np.float64)
    off_a, off_b = np.asarray(off_a, dtype=np.float64), np.asarray(off_b, dtype=np.float64)
    pts = (uv[:, None, :] + off_a[None, :, None] * np.asarray(dir_a, dtype=np.float64)[:, None, :]
           + off_b[None, :, None] * np.asarray(dir_b, dtype=np.float64)[:, None, :])
    return lookup_min_reference(values, origin, cell, pts.reshape(-1, 2), len(off_a), outside)


def column_values_reference(field: np.ndarray, v, v0: float, step: float) -> np.ndarray:
    """NumPy twin of :func:`column_values`."""
    row = np.round((np.asarray(v, dtype=np.float64) - v0) / step)
    ok = np.isfinite(row) & (row >= 0) & (row < field.shape[0])
    out = np.full(len(row), np.nan)
    cols = np.nonzero(ok)[0]
    out[cols] = field[row[cols].astype(np.int64), cols]
    return out


def _band_cells_reference(shape, origin, cell: float, uv, across, half, scale, f) -> tuple:
    uv, across = np.asarray(uv, dtype=np.float64), np.asarray(across, dtype=np.float64)
    half, scale, f = (np.asarray(x, dtype=np.float64) for x in (half, scale, f))
    pts = uv[:, None, :] + (f[None, :, None] * half[:, None, None] / scale[:, None, None]) * across[:, None, :]
    with np.errstate(invalid="ignore"):
        ij = np.floor((pts - np.asarray(origin, dtype=np.float64)) / cell).astype(np.int64)
    h, w = shape
    return np.clip(ij[..., 1], 0, h - 1), np.clip(ij[..., 0], 0, w - 1)


def band_taken_reference(taken: np.ndarray, origin, cell: float, uv, across, half, scale, f) -> np.ndarray:
    """NumPy twin of :func:`band_taken`."""
    rows, cols = _band_cells_reference(taken.shape, origin, cell, uv, across, half, scale, f)
    return taken[rows, cols].any(axis=1)


def band_take_reference(taken: np.ndarray, origin, cell: float, uv, across, half, scale, f) -> None:
    """NumPy twin of :func:`band_take`."""
    rows, cols = _band_cells_reference(taken.shape, origin, cell, uv, across, half, scale, f)
    taken[rows.ravel(), cols.ravel()] = True


def column_mode_reference(codes: np.ndarray, v, v0: float, step: float, levels: int) -> int:
    """NumPy twin of :func:`column_mode`."""
    row = np.round((np.asarray(v, dtype=np.float64) - v0) / step)
    ok = np.isfinite(row) & (row >= 0) & (row < codes.shape[0])
    cols = np.nonzero(ok)[0]
    read = codes[row[cols].astype(np.int64), cols]
    read = read[read >= 0]
    if len(read) == 0:
        return -1
    return int(np.argmax(np.bincount(read, minlength=levels)))


def column_step_reference(scale: np.ndarray, v, v0: float, step: float, c: float) -> np.ndarray:
    """NumPy twin of :func:`column_step`."""
    v = np.asarray(v, dtype=np.float64)
    lam = column_values_reference(scale, v, v0, step)
    nxt = v + c / lam
    lam_next = column_values_reference(scale, nxt, v0, step)
    return v + c / np.where(np.isfinite(lam_next), (lam + lam_next) / 2.0, lam)


def line_step_reference(scale: np.ndarray, codes: np.ndarray, levels, v, v0: float, step: float, sign: float,
                        w0: float, forced_mm, fallback_mm: float, weights) -> tuple[np.ndarray, float]:
    """NumPy twin of :func:`line_step`."""
    from scipy import ndimage

    levels = np.asarray(levels, dtype=np.float64)

    def design(x):
        if forced_mm is not None:
            return forced_mm
        mode = column_mode_reference(codes, x, v0, step, len(levels))
        return fallback_mm if mode < 0 else float(levels[mode])

    w1 = w0
    for _ in range(3):
        nxt = column_step_reference(scale, v, v0, step, sign * ((w0 + w1) / 2.0))
        w1, was = design(nxt), w1
        if w1 == was:
            break
    ok = np.isfinite(nxt)
    if not ok.any():
        return nxt, w1
    weight, total = ndimage.correlate1d(np.stack([ok.astype(float), np.where(ok, nxt, 0.0)]),
                                        np.asarray(weights, dtype=np.float64), axis=-1, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / weight
    return np.where(ok, out, np.nan), w1


def clearance_reference(away: np.ndarray, cell: float) -> np.ndarray:
    """NumPy (SciPy) twin of :func:`clearance`."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(away) * cell - cell * math.sqrt(2.0)
    return np.where(away, dist, -1.0)


def window_min_reference(values, first, stop, reach: int) -> np.ndarray:
    """NumPy (SciPy) twin of :func:`window_min`."""
    from scipy import ndimage

    out = np.array(values, dtype=np.float64)
    for a, b in zip(np.asarray(first).tolist(), np.asarray(stop).tolist()):
        if b > a:
            out[a:b] = ndimage.minimum_filter1d(out[a:b], size=2 * int(reach) + 1, mode="nearest")
    return out


def grid_crossings(seg: np.ndarray, x, y, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """``(inside, unsure)`` ``(len(y), len(x)) bool`` of a grid (``x``, ``y`` ascending) against
    boundary segments ``seg (m, 4)`` = (ax, ay, bx, by): a segment crosses the rows
    ``min(ay, by) <= y < max(ay, by)`` at ``ax + (y - ay) * (bx - ax) / (by - ay)``; inside
    where an odd count of a row's crossings lies right of the point (``xc > x``), unsure where
    one lies within ``tol`` of it. One compiled pass (``coverage._ext.raster.grid_crossings``):
    equal to :func:`grid_crossings_reference`."""
    seg = np.ascontiguousarray(seg, dtype=np.float64).reshape(-1, 4)
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    y = np.ascontiguousarray(y, dtype=np.float64).reshape(-1)
    h, w = len(y), len(x)
    lo_y, hi_y = np.minimum(seg[:, 1], seg[:, 3]), np.maximum(seg[:, 1], seg[:, 3])
    row_lo = np.searchsorted(y, lo_y, "left").astype(np.int64)      # first row at or above lo_y
    row_hi = np.searchsorted(y, hi_y, "left").astype(np.int64)      # first row at or above hi_y
    per_row = np.zeros(h + 1, dtype=np.int64)
    np.add.at(per_row, row_lo, 1)
    np.add.at(per_row, row_hi, -1)
    row_start = np.concatenate([[0], np.cumsum(np.cumsum(per_row)[:h])]).astype(np.int64)
    inside, unsure = np.empty((h, w), dtype=np.uint8), np.empty((h, w), dtype=np.uint8)
    _kernel.grid_crossings(seg, x, y, row_lo, row_hi, row_start, float(tol), np.empty(int(row_start[-1])), inside,
                           unsure)
    return inside.view(bool), unsure.view(bool)


def grid_crossings_reference(seg: np.ndarray, x, y, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`grid_crossings`: each row's crossings, then every point against them."""
    seg = np.asarray(seg, dtype=np.float64).reshape(-1, 4)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inside = np.zeros((len(y), len(x)), dtype=bool)
    unsure = np.zeros((len(y), len(x)), dtype=bool)
    ax, ay, bx, by = seg.T
    for i, yy in enumerate(y.tolist()):
        on = (np.minimum(ay, by) <= yy) & (yy < np.maximum(ay, by))
        xc = ax[on] + (yy - ay[on]) * (bx[on] - ax[on]) / (by[on] - ay[on])
        inside[i] = ((xc[None, :] > x[:, None]).sum(axis=1) % 2) == 1
        unsure[i] = (np.abs(xc[None, :] - x[:, None]) <= tol).any(axis=1)
    return inside, unsure
