"""Surface lifting: chart points -> triangle + barycentric -> 3D position and unit normal.

The chart triangulation is binned into a uniform grid of cells (each cell lists the
triangles whose bounding box overlaps it); a query visits only its own cell. The compiled
kernel (``coverage._ext.lift``) and the NumPy reference below share these semantics:

* a point inside several triangles (on a shared edge) takes the first in cell order;
* a point inside none takes the least-outside triangle if its smallest barycentric is
  ``>= -eps`` (so points on the chart boundary still lift), else triangle ``-1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._ext import lift as _kernel


@dataclass(frozen=True, eq=False)
class TriangleGrid:
    """Uniform grid over a 2D triangulation: cell ``c`` lists ``items[start[c]:start[c+1]]``."""

    affine: np.ndarray   # (m, 6) float, per triangle (ax, ay, M): (l1, l2) = M (p - a)
    origin: np.ndarray   # (2,) float, lower-left corner
    cell: float          # cell side (chart mm)
    shape: tuple         # (nu, nv) cells along u and v
    start: np.ndarray    # (nu * nv + 1,) int
    items: np.ndarray    # (k,) int, triangle ids, ascending within a cell


def _cell_ranges(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, cell: float, shape) -> tuple:
    first = np.floor((lo - origin) / cell).astype(np.int64)
    last = np.floor((hi - origin) / cell).astype(np.int64)
    upper = np.asarray(shape, dtype=np.int64) - 1
    return np.clip(first, 0, upper), np.clip(last, 0, upper)


def bin_boxes(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, cell: float, shape) -> tuple:
    """CSR lists of the boxes ``[lo, hi]`` (``(m, d) float``, ``d <= 3``) overlapping each grid cell.

    Cells are numbered with the first axis fastest. Returns ``(start, items)`` with items
    ascending within each cell. One counting sort in the kernel (two passes over the
    boxes' cell ranges) instead of the reference's argsort of every (box, cell) pair.
    """
    lo = np.ascontiguousarray(lo, dtype=np.float64)
    hi = np.ascontiguousarray(hi, dtype=np.float64)
    if lo.ndim != 2 or lo.shape != hi.shape or not 1 <= lo.shape[1] <= 3:
        return bin_boxes_reference(lo, hi, origin, cell, shape)
    dims = np.ascontiguousarray(shape, dtype=np.int64)
    origin = np.ascontiguousarray(origin, dtype=np.float64)
    m = len(lo)
    first = np.empty((m, 3), dtype=np.int64)
    last = np.empty((m, 3), dtype=np.int64)
    start = np.empty(int(np.prod(dims)) + 1, dtype=np.int64)
    items = np.empty(_kernel.bin_count(lo, hi, origin, float(cell), dims, first, last, start), dtype=np.int64)
    _kernel.bin_fill(first, last, dims, start, items)
    return start, items


def bin_boxes_reference(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, cell: float, shape) -> tuple:
    """NumPy twin of :func:`bin_boxes` (any dimension ``d``): every (box, cell) pair listed,
    then stably sorted by cell."""
    first, last = _cell_ranges(lo, hi, origin, cell, shape)
    span = last - first + 1
    counts = np.prod(span, axis=1)
    box = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    # offset of each (box, cell) pair inside its box's range, unravelled per axis
    local = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    cell_id = np.zeros_like(local)
    stride = 1
    for axis in range(lo.shape[1]):
        s = span[box, axis]
        coord = first[box, axis] + local % s
        local //= s
        cell_id += coord * stride
        stride *= int(shape[axis])
    order = np.argsort(cell_id, kind="stable")
    start = np.zeros(stride + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell_id, minlength=stride), out=start[1:])
    return start, np.ascontiguousarray(box[order])


def build_grid(uv: np.ndarray, faces: np.ndarray, cell: float | None = None) -> TriangleGrid:
    """Bin a chart triangulation (``uv (n, 2)``, ``faces (m, 3)``) into a uniform grid.

    The default cell is 1.5 x the median chart edge: a handful of candidates per query.
    """
    uv = np.asarray(uv, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    corners = uv[faces]
    # the boxes corner by corner (as min/max over axis 1, several times faster)
    lo = np.minimum(np.minimum(corners[:, 0], corners[:, 1]), corners[:, 2])
    hi = np.maximum(np.maximum(corners[:, 0], corners[:, 1]), corners[:, 2])
    if cell is None:
        edge = np.linalg.norm(corners[:, 1] - corners[:, 0], axis=1)
        cell = 1.5 * float(np.median(edge))
    pad = 1e-9 * max(1.0, float(np.abs(uv).max()))
    origin = uv.min(axis=0) - pad
    shape = tuple(int(x) for x in np.floor((uv.max(axis=0) + pad - origin) / cell).astype(np.int64) + 1)
    start, items = bin_boxes(lo, hi, origin, cell, shape)
    return TriangleGrid(inverse_affine(corners), origin, float(cell), shape, start, items)


def inverse_affine(corners: np.ndarray) -> np.ndarray:
    """Per triangle ``(a, M)`` ``(m, 6) float`` with ``(l1, l2) = M (p - a)``; NaN if degenerate.

    Precomputing M spares each point-in-triangle test its division.
    """
    a = corners[:, 0]
    v0 = corners[:, 1] - a
    v1 = corners[:, 2] - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(den != 0, 1.0 / den, np.nan)
    m = np.stack([v1[:, 1] * inv, -v1[:, 0] * inv, -v0[:, 1] * inv, v0[:, 0] * inv], axis=1)
    return np.ascontiguousarray(np.concatenate([a, m], axis=1))


def _grid_args(grid: TriangleGrid) -> tuple:
    return (grid.start, grid.items, float(grid.origin[0]), float(grid.origin[1]), grid.cell,
            grid.shape[0], grid.shape[1])


def locate(grid: TriangleGrid, query: np.ndarray, eps: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Triangle ``(k,) int`` (-1 outside) and barycentrics ``(k, 3) float`` of chart points."""
    query = np.ascontiguousarray(query, dtype=np.float64).reshape(-1, 2)
    tri = np.empty(len(query), dtype=np.int64)
    bary = np.empty((len(query), 3), dtype=np.float64)
    _kernel.locate(grid.affine, query, *_grid_args(grid), float(eps), tri, bary)
    return tri, bary


def frames(positions: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Positions and normals side by side ``(n, 6) float``, the layout :func:`lift` reads."""
    return np.ascontiguousarray(np.concatenate([positions, normals], axis=1), dtype=np.float64)


def lift(grid: TriangleGrid, faces: np.ndarray, vertex_frames: np.ndarray, query: np.ndarray,
         eps: float = 1e-9):
    """Locate chart points and interpolate positions and unit normals in one pass.

    ``vertex_frames`` is :func:`frames` of the surface. Returns ``(tri (k,) int,
    bary (k, 3), points (k, 3), normals (k, 3))``; rows outside the chart have
    ``tri = -1`` and NaN points and normals.
    """
    query = np.ascontiguousarray(query, dtype=np.float64).reshape(-1, 2)
    k = len(query)
    tri = np.empty(k, dtype=np.int64)
    bary = np.empty((k, 3))
    points = np.empty((k, 3))
    unit = np.empty((k, 3))
    _kernel.lift(grid.affine, np.ascontiguousarray(faces, dtype=np.int64), vertex_frames, query,
                 *_grid_args(grid), float(eps), tri, bary, points, unit)
    return tri, bary, points, unit


def interpolate(values: np.ndarray, faces: np.ndarray, tri: np.ndarray, bary: np.ndarray,
                normalize: bool = False) -> np.ndarray:
    """Barycentric interpolation of per-vertex ``values (n, k)``; rows with ``tri < 0`` are 0."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty((len(tri), values.shape[1]), dtype=np.float64)
    _kernel.interpolate(values, np.ascontiguousarray(faces, dtype=np.int64),
                        np.ascontiguousarray(tri, dtype=np.int64),
                        np.ascontiguousarray(bary, dtype=np.float64), bool(normalize), out)
    return out


def cell_labels(u_edges: np.ndarray, v_edges: np.ndarray, state: np.ndarray, uv: np.ndarray):
    """Labels of chart points from a grid of marked cells (:class:`coverage.zones.LabelCells`).

    u_edges : (nu + 1,) float, v_edges : (nv + 1,) float
        Cell edges, evenly spaced (the cell index is read from the first step, then checked
        against the cell's own edges).
    state : (nv, nu) int32
        Each cell's label, -1 for none, -2 where its points must be asked one by one.
    uv : (k, 2) float

    Returns ``(labels (k,) int64, rest (j,) int64)``: the label of each point whose cell
    (closed edges) holds it and is marked, -1 for points outside the grid (and at ``rest``),
    and the indices of the points left to ask. The NumPy twin is
    ``coverage.zones.LabelCells.lookup_reference``.
    """
    uv = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 2)
    out = np.empty(len(uv), dtype=np.int64)
    rest = np.empty(len(uv), dtype=np.int64)
    n = _kernel.label_lookup(np.ascontiguousarray(u_edges, dtype=np.float64),
                             np.ascontiguousarray(v_edges, dtype=np.float64),
                             np.ascontiguousarray(state, dtype=np.int32), uv, out, rest)
    return out, rest[:n].copy()


# --- NumPy references (tests compare the kernels with these; benchmarks time both) -------

def barycentric_reference(affine: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Barycentrics ``(k, 3)`` of points ``p (k, 2)`` in triangles given by ``affine (k, 6)``."""
    dx = p[:, 0] - affine[:, 0]
    dy = p[:, 1] - affine[:, 1]
    l1 = affine[:, 2] * dx + affine[:, 3] * dy
    l2 = affine[:, 4] * dx + affine[:, 5] * dy
    return np.stack([1.0 - l1 - l2, l1, l2], axis=1)


def locate_reference(grid: TriangleGrid, query: np.ndarray, eps: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`locate` (same grid, same tie rules), vectorised over all pairs."""
    query = np.asarray(query, dtype=np.float64).reshape(-1, 2)
    k = len(query)
    tri = np.full(k, -1, dtype=np.int64)
    bary = np.zeros((k, 3), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        cell = np.floor((query - grid.origin) / grid.cell)
        valid = np.all((cell >= 0) & (cell < np.asarray(grid.shape)), axis=1)
    qid = np.nonzero(valid)[0]
    c = cell[qid, 1].astype(np.int64) * grid.shape[0] + cell[qid, 0].astype(np.int64)
    counts = grid.start[c + 1] - grid.start[c]
    pair_q = np.repeat(qid, counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_t = grid.items[np.repeat(grid.start[c], counts) + offset]
    lam = barycentric_reference(grid.affine[pair_t], query[pair_q])
    m = lam.min(axis=1)
    m[np.isnan(m)] = -np.inf  # degenerate triangles never hold a point
    # per query: the first pair with m >= 0, else the first pair with the largest m
    inside = m >= 0.0
    rank = np.where(inside, 0, 1)
    order = np.lexsort((offset, np.where(inside, 0.0, -m), rank, pair_q))
    _, first = np.unique(pair_q[order], return_index=True)
    pick = order[first]
    keep = m[pick] >= -eps
    tri[pair_q[pick[keep]]] = pair_t[pick[keep]]
    bary[pair_q[pick[keep]]] = lam[pick[keep]]
    return tri, bary


def interpolate_reference(values: np.ndarray, faces: np.ndarray, tri: np.ndarray, bary: np.ndarray,
                          normalize: bool = False) -> np.ndarray:
    """NumPy twin of :func:`interpolate`."""
    values = np.asarray(values, dtype=np.float64)
    out = np.einsum("kj,kjd->kd", bary, values[faces[np.maximum(tri, 0)]])
    if normalize:
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norm, out=out, where=norm > 0)
    out[tri < 0] = 0.0
    return out
