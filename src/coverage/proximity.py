"""Closest points on a triangle mesh (3D): projecting scans, flattening punctures.

The compiled kernel (``coverage._ext.proximity``) bins triangle boxes into a uniform 3D
grid and searches shells of cells outwards from the query until one holds a candidate,
then the cells of the ball that candidate's distance bounds; big batches are searched in
grid order (:func:`search_order`), so that neighbouring queries share the cache. The NumPy
reference gets its candidates from a KD-tree of triangle centroids instead, so the two
share no search code. Both return, for each query, the triangle with the smallest distance
below ``max_dist`` (ties: the lowest triangle index), the closest point's barycentrics and
the distance; ``-1`` / ``-1.0`` when nothing is that close.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ._ext import proximity as _kernel
from .lifting import bin_boxes

# the grid never holds more than this many cells per triangle (bounds memory on scans
# with large empty boxes: shoulders, background)
_MAX_CELLS_PER_TRIANGLE = 4
# queries searched in grid order from this many on (see search_order)
_SORT_MIN = 512


@dataclass(frozen=True, eq=False)
class MeshGrid:
    """A triangle mesh and the uniform grid of its triangle boxes."""

    vertices: np.ndarray   # (n, 3) float
    faces: np.ndarray      # (m, 3) int
    triangles: np.ndarray  # (m, 15) float, per triangle its box (lo, hi) then corners a, b, c
    origin: np.ndarray     # (3,) float
    cell: float
    dims: np.ndarray       # (3,) int
    start: np.ndarray      # (cells + 1,) int
    items: np.ndarray      # (k,) int

    @property
    def corners(self) -> np.ndarray:
        """``(m, 9) float``: each triangle's corners a, b, c packed."""
        return self.triangles[:, 6:]

    @property
    def lo(self) -> np.ndarray:
        """``(m, 3) float``: lower corners of the triangle boxes."""
        return self.triangles[:, :3]

    @property
    def hi(self) -> np.ndarray:
        """``(m, 3) float``: upper corners of the triangle boxes."""
        return self.triangles[:, 3:6]

    @functools.cached_property
    def item_boxes(self) -> np.ndarray:
        """``(k, 6) float``: the box (lo, hi) of each item's triangle, in item order (the
        guided search reads them in a stream instead of gathering them; stored axis by
        axis, a transposed view of :attr:`item_boxes_by_axis`)."""
        return self.item_boxes_by_axis.T

    @functools.cached_property
    def item_boxes_by_axis(self) -> np.ndarray:
        """``(6, k) float``: :attr:`item_boxes` axis by axis (lo x, lo y, lo z, hi x, ...)."""
        # the boxes transposed first (one row per axis), then each row gathered: the same
        # values, a third of the time of gathering (k, 6) rows and transposing them
        return np.take(np.ascontiguousarray(self.triangles[:, :6].T), self.items, axis=1)

    @functools.cached_property
    def cell_boxes(self) -> np.ndarray:
        """``(cells, 6) float``: each cell's box (lo, hi) cut, axis by axis, to the union of
        its triangles' boxes (where that leaves a box); an empty cell's is its own box.

        Every point of a triangle in the cell lies in both, so the cut box holds whatever
        the cell stands for: the guided search skips the cell when even that box is too far.
        """
        nx, ny, nz = (int(d) for d in self.dims)
        out = np.empty((nz, ny, nx, 6))
        # the kernels' cell box, computed as they compute it: origin + index * cell, axis by
        # axis and broadcast (cell id (z * ny + y) * nx + x), not cell by cell: the same
        # values, several times faster on a face's 230k cells
        for j, n, shape in ((0, nx, (1, 1, -1)), (1, ny, (1, -1, 1)), (2, nz, (-1, 1, 1))):
            index = np.arange(n)
            out[..., j] = (self.origin[j] + index.astype(np.float64) * self.cell).reshape(shape)
            out[..., 3 + j] = (self.origin[j] + (index + 1).astype(np.float64) * self.cell).reshape(shape)
        out = out.reshape(-1, 6)
        count = np.diff(self.start)
        full = np.flatnonzero(count)
        if len(full):
            lo, hi = out[full, :3], out[full, 3:]
            boxes = self.item_boxes
            ilo = np.minimum.reduceat(boxes[:, :3], self.start[full], axis=0)
            ihi = np.maximum.reduceat(boxes[:, 3:], self.start[full], axis=0)
            clo, chi = np.maximum(lo, ilo), np.minimum(hi, ihi)
            cut = clo <= chi
            out[full, :3] = np.where(cut, clo, lo)
            out[full, 3:] = np.where(cut, chi, hi)
        return out


def build_grid(vertices: np.ndarray, faces: np.ndarray, cell: float | None = None,
               min_cell: float = 0.0) -> MeshGrid:
    """Bin a mesh's triangles into a uniform 3D grid (cell ~2 x median edge by default, at
    least ``min_cell``)."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    corners = vertices[faces]
    # the boxes corner by corner (as min/max over axis 1, several times faster)
    lo = np.minimum(np.minimum(corners[:, 0], corners[:, 1]), corners[:, 2])
    hi = np.maximum(np.maximum(corners[:, 0], corners[:, 1]), corners[:, 2])
    origin = vertices.min(axis=0)
    extent = np.maximum(vertices.max(axis=0) - origin, 1e-9)
    if cell is None:
        edge = np.linalg.norm(corners[:, 1] - corners[:, 0], axis=1)
        cell = 2.0 * float(np.median(edge)) if len(edge) else 1.0
    cell = max(float(cell), float(min_cell))
    floor_cell = float(np.cbrt(np.prod(extent) / (_MAX_CELLS_PER_TRIANGLE * max(len(faces), 1))))
    cell = max(float(cell), floor_cell, 1e-6)
    dims = np.floor(extent / cell).astype(np.int64) + 1
    start, items = bin_boxes(lo, hi, origin, cell, tuple(int(d) for d in dims))
    # what the search reads of a triangle (its box, then its corners) in one 120-byte record
    triangles = np.concatenate([lo, hi, corners.reshape(-1, 9)], axis=1)
    return MeshGrid(vertices, faces, triangles, origin, cell, dims, start, items)


def closest_points(grid: MeshGrid, query: np.ndarray, max_dist: float = np.inf):
    """Closest point on the mesh for each query point ``(k, 3) float``.

    Returns ``(tri (k,) int, bary (k, 3) float, dist (k,) float)``; ``tri = -1`` and
    ``dist = -1`` where no triangle is nearer than ``max_dist`` (or the query is not finite).
    """
    query = np.ascontiguousarray(query, dtype=np.float64).reshape(-1, 3)
    k = len(query)
    tri = np.empty(k, dtype=np.int64)
    bary = np.empty((k, 3), dtype=np.float64)
    dist = np.empty(k, dtype=np.float64)
    if not np.isfinite(max_dist):
        max_dist = float(np.linalg.norm(grid.dims * grid.cell)) * 4.0 + float(
            np.abs(query[np.isfinite(query).all(axis=1)]).max(initial=0.0)) * 4.0 + 1.0
    _kernel.closest_points(grid.triangles, query, search_order(grid, query), grid.start, grid.items,
                           np.ascontiguousarray(grid.origin, dtype=np.float64), grid.cell,
                           np.ascontiguousarray(grid.dims, dtype=np.int64), float(max_dist),
                           tri, bary, dist)
    return tri, bary, dist


def closest_points_guessed(grid: MeshGrid, query: np.ndarray, guess=None, max_dist: float = np.inf):
    """:func:`closest_points`, each search bounded from the start by a guessed triangle: the
    query's own ``guess`` ``(k,) int`` (``-1``: none; ``None``: no guesses) or the answer of
    the query searched just before it, whichever is nearer. A guess only bounds the search
    (the ball of its distance is searched in full): the answers are exactly
    :func:`closest_points`' whatever the guesses, only faster when they are near (queries
    along a path, or each near where it was last searched)."""
    query = np.ascontiguousarray(query, dtype=np.float64).reshape(-1, 3)
    k = len(query)
    tri = np.empty(k, dtype=np.int64)
    bary = np.empty((k, 3), dtype=np.float64)
    dist = np.empty(k, dtype=np.float64)
    if guess is None:
        guess = np.empty(0, dtype=np.int64)
    else:
        guess = np.ascontiguousarray(guess, dtype=np.int64).reshape(k)
        guess = np.where((guess >= 0) & (guess < len(grid.faces)), guess, -1)
    if not np.isfinite(max_dist):
        max_dist = float(np.linalg.norm(grid.dims * grid.cell)) * 4.0 + float(
            np.abs(query[np.isfinite(query).all(axis=1)]).max(initial=0.0)) * 4.0 + 1.0
    stamp = np.full(len(grid.faces), -1, dtype=np.int64)
    _kernel.closest_points_seeded(grid.triangles, query, search_order(grid, query), guess, grid.start, grid.items,
                                  grid.item_boxes_by_axis, grid.cell_boxes, stamp,
                                  np.ascontiguousarray(grid.origin, dtype=np.float64), grid.cell,
                                  np.ascontiguousarray(grid.dims, dtype=np.int64), float(max_dist),
                                  tri, bary, dist)
    return tri, bary, dist


def search_order(grid: MeshGrid, query: np.ndarray) -> np.ndarray:
    """The order ``(k,) int`` in which the kernel searches ``query``: by grid cell, so that
    queries searched one after another share cells and the cache; empty (the given order)
    below :data:`_SORT_MIN` queries, where sorting costs more than it saves. Any order gives
    the same answers."""
    if len(query) < _SORT_MIN:
        return np.empty(0, dtype=np.int64)
    # the kernel: search_order_reference's order, in one pass for the keys and a radix sort
    order = np.empty(len(query), dtype=np.int64)
    _kernel.cell_order(np.ascontiguousarray(query, dtype=np.float64),
                       np.ascontiguousarray(grid.origin, dtype=np.float64), float(grid.cell),
                       np.ascontiguousarray(grid.dims, dtype=np.int64), order)
    return order


def search_order_reference(grid: MeshGrid, query: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`search_order` (without the small-batch cut): the queries sorted by
    grid cell, ties in index order."""
    with np.errstate(invalid="ignore"):
        cell = np.floor((query - grid.origin) / grid.cell)
    cell = np.clip(np.nan_to_num(cell), 0, grid.dims - 1).astype(np.int64)
    return np.argsort((cell[:, 2] * grid.dims[1] + cell[:, 1]) * grid.dims[0] + cell[:, 0], kind="stable")


# --- NumPy reference ---------------------------------------------------------------------

def closest_on_triangles_reference(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Vectorised closest point on triangles: ``(bary (k, 3), squared distance (k,))``.

    Same Voronoi-region walk as the kernel (Ericson 5.1.5), all arrays ``(k, 3)``.
    """
    def dot(x, y):
        return np.einsum("ij,ij->i", x, y)

    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = dot(ab, ap), dot(ac, ap)
    bp = p - b
    d3, d4 = dot(ab, bp), dot(ac, bp)
    cp = p - c
    d5, d6 = dot(ab, cp), dot(ac, cp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4
    k = len(p)
    bary = np.zeros((k, 3))
    done = np.zeros(k, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        regions = [
            ((d1 <= 0) & (d2 <= 0), lambda: (1.0, 0.0, 0.0)),
            ((d3 >= 0) & (d4 <= d3), lambda: (0.0, 1.0, 0.0)),
            ((vc <= 0) & (d1 >= 0) & (d3 <= 0), lambda: (1 - d1 / (d1 - d3), d1 / (d1 - d3), 0.0)),
            ((d6 >= 0) & (d5 <= d6), lambda: (0.0, 0.0, 1.0)),
            ((vb <= 0) & (d2 >= 0) & (d6 <= 0), lambda: (1 - d2 / (d2 - d6), 0.0, d2 / (d2 - d6))),
            ((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0),
             lambda: (0.0, 1 - (d4 - d3) / ((d4 - d3) + (d5 - d6)), (d4 - d3) / ((d4 - d3) + (d5 - d6)))),
        ]
        for cond, value in regions:
            sel = cond & ~done
            if sel.any():
                vals = value()
                for j in range(3):
                    bary[sel, j] = vals[j][sel] if isinstance(vals[j], np.ndarray) else vals[j]
            done |= sel
        den = va + vb + vc
        rest = ~done
        v = vb / den
        w = vc / den
        inner = np.stack([1.0 - v - w, v, w], axis=1)
        degenerate = rest & (den == 0)
        inner[degenerate] = (1.0, 0.0, 0.0)
        bary[rest] = inner[rest]
    q = bary[:, 0:1] * a + bary[:, 1:2] * b + bary[:, 2:3] * c - p
    return bary, dot(q, q)


def closest_points_reference(vertices: np.ndarray, faces: np.ndarray, query: np.ndarray,
                             max_dist: float = np.inf):
    """NumPy twin of :func:`closest_points` (KD-tree candidates, exact distances)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    query = np.asarray(query, dtype=np.float64).reshape(-1, 3)
    k = len(query)
    tri = np.full(k, -1, dtype=np.int64)
    bary = np.zeros((k, 3))
    dist = np.full(k, -1.0)
    finite = np.isfinite(query).all(axis=1)
    corners = vertices[faces]
    centroid = corners.mean(axis=1)
    reach = float(np.linalg.norm(corners - centroid[:, None], axis=2).max())
    # the nearest vertex bounds the distance to the surface from above
    near_vertex, _ = cKDTree(vertices).query(np.where(finite[:, None], query, 0.0))
    radius = np.minimum(near_vertex, max_dist) + reach + 1e-9
    qid = np.nonzero(finite)[0]
    lists = cKDTree(centroid).query_ball_point(query[qid], radius[qid])
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    pair_q = np.repeat(qid, counts)
    pair_t = np.fromiter((t for x in lists for t in x), dtype=np.int64, count=int(counts.sum()))
    pb, d2 = closest_on_triangles_reference(query[pair_q], *(corners[pair_t, i] for i in range(3)))
    ok = d2 < max_dist * max_dist
    order = np.lexsort((pair_t, d2, pair_q))
    order = order[ok[order]]
    _, first = np.unique(pair_q[order], return_index=True)
    pick = order[first]
    tri[pair_q[pick]] = pair_t[pick]
    bary[pair_q[pick]] = pb[pick]
    dist[pair_q[pick]] = np.sqrt(d2[pick])
    return tri, bary, dist
