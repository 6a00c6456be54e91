"""Principal curvatures and directions per vertex, by local quadric fitting.

Each vertex fits ``z = a x^2 + b xy + c y^2 + d x + e y`` to its neighbours within a
radius (Gaussian weights), in a frame whose z is the vertex normal; the shape operator of
that graph at the origin gives the principal curvatures and directions. Fitting over a
radius, not the 1-ring, keeps estimates stable on ~1 mm triangles and noisy scans, and
matches the scale the tools feel (a 20 mm drum, a 7 mm pen footprint).

Sign: positive curvature is convex (the surface bends away from its outward normal, as the
nose bridge or chin); negative is concave (the under-eye hollow, the nasolabial fold).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ._ext import curvature as _kernel


@dataclass(frozen=True, eq=False)
class Curvature:
    """Per-vertex principal curvatures (1/mm) and unit tangent directions."""

    k1: np.ndarray  # (n,) float, the larger (most convex) curvature
    k2: np.ndarray  # (n,) float, the smaller
    d1: np.ndarray  # (n, 3) float, direction of k1
    d2: np.ndarray  # (n, 3) float, direction of k2 (normal x d1)
    radius_mm: float

    def normal_curvature(self, vertex: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Normal curvature (1/mm, convex > 0) at vertices ``(k,)`` along tangents ``(k, 3)``.

        Euler's formula ``k1 cos^2 + k2 sin^2``; the direction is projected onto the
        tangent plane first and need not be unit length. One compiled pass
        (``coverage._ext.curvature.normal_curvature``) for C-contiguous ``(k, 3)`` float64
        directions at vertices in range: equal to :func:`normal_curvature_reference` bit for
        bit (its einsum sums a row in an order that depends on the operands' layout, so any
        other layout is left to it).
        """
        vertex = np.asarray(vertex, dtype=np.int64)
        direction = np.asarray(direction, dtype=np.float64)
        arrays = self.kernel_arrays()
        if (arrays is None or vertex.ndim != 1 or direction.shape != (len(vertex), 3)
                or not direction.flags.c_contiguous
                or (len(vertex) and not (0 <= int(vertex.min()) and int(vertex.max()) < len(arrays[0])))):
            return normal_curvature_reference(self, vertex, direction)
        out = np.empty(len(vertex))
        _kernel.normal_curvature(*arrays, np.ascontiguousarray(vertex), direction, out)
        return out

    def kernel_arrays(self) -> tuple | None:
        """``(k1, k2, d1, d2)`` C-contiguous float64 as the kernels read them (one row per
        vertex, d1 and d2 ``(n, 3)``), or None where they are not such arrays."""
        k1, k2, d1, d2 = (np.asarray(x) for x in (self.k1, self.k2, self.d1, self.d2))
        n = len(k1)
        if not (k1.shape == k2.shape == (n,) and d1.shape == d2.shape == (n, 3)
                and all(x.dtype == np.float64 for x in (k1, k2, d1, d2))):
            return None
        return tuple(np.ascontiguousarray(x) for x in (k1, k2, d1, d2))


def normal_curvature_reference(curvature: Curvature, vertex: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """NumPy twin of :meth:`Curvature.normal_curvature`."""
    vertex = np.asarray(vertex, dtype=np.int64)
    direction = np.asarray(direction, dtype=np.float64)
    c1 = np.einsum("ij,ij->i", direction, curvature.d1[vertex])
    c2 = np.einsum("ij,ij->i", direction, curvature.d2[vertex])
    norm2 = c1 * c1 + c2 * c2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm2 > 0, (curvature.k1[vertex] * c1 * c1 + curvature.k2[vertex] * c2 * c2) / norm2, 0.0)


def tangent_frames(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit tangents ``(n, 3)`` per unit normal, completing a right-handed frame."""
    helper = np.where(np.abs(normals[:, 0:1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = np.cross(normals, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(normals, e1)


def voxel_subsample(points: np.ndarray, spacing: float) -> np.ndarray:
    """Indices ``(k,) int`` of the first point in each occupied voxel of side ``spacing``."""
    keys = np.floor((points - points.min(axis=0)) / spacing).astype(np.int64)
    return np.sort(first_of_rows(keys))


def first_of_rows(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys, axis=0, return_index=True)[1]`` for integer rows ``(n, d)``: the index
    of each distinct row's first occurrence, in the rows' lexicographic order. Non-negative
    rows whose ranges fit are packed into one int64 key each (the same order, and a stable
    sort as NumPy's row unique: ~5x faster than sorting rows)."""
    keys = np.asarray(keys)
    if keys.ndim == 2 and len(keys) and keys.min() >= 0:
        span = keys.max(axis=0).astype(np.float64) + 1.0
        if float(np.prod(span)) < 2.0 ** 62:
            packed = np.zeros(len(keys), dtype=np.int64)
            for column, size in zip(keys.T, span):
                packed = packed * int(size) + column
            return np.unique(packed, return_index=True)[1]
    return np.unique(keys, axis=0, return_index=True)[1]


def neighbour_pairs(vertices: np.ndarray, support: np.ndarray, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)`` int64: each vertex ``i`` with each support vertex ``j`` within ``radius_mm``
    (itself left out); each vertex's pairs together, its ``j`` in the order of SciPy's sparse
    distance matrix (:func:`neighbour_pairs_reference`), which is all the fits' sums depend on.

    That order is the support's KD-tree order: the matrix's dual-tree walk visits, for any
    one vertex, the support tree's leaves less child first, and each leaf's points in the
    tree's index order. The kernel (``ball_pairs``) finds the pairs in a grid of cells of
    side ``radius_mm`` instead, with SciPy's distance test, and sorts each cell's candidates
    by their place in that tree once (the tree of the support alone is cheap to build).
    """
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    support = np.asarray(support, dtype=np.int64)
    radius_mm = float(radius_mm)
    if not (np.isfinite(vertices).all() and radius_mm >= 0):
        return neighbour_pairs_reference(vertices, support, radius_mm)   # as it does (SciPy refuses NaN)
    tree_order = cKDTree(vertices[support]).indices.astype(np.int64)
    others = np.ascontiguousarray(vertices[support[tree_order]])   # the support in tree order
    # cells a hair wider than the radius: a pair within it never lies two cells apart
    cell = radius_mm * (1.0 + 1e-9) if radius_mm > 0 else 1.0
    origin = others.min(axis=0) if len(others) else np.zeros(3)
    dims = (np.floor((others.max(axis=0) - origin) / cell).astype(np.int64) + 1 if len(others)
            else np.ones(3, dtype=np.int64))
    own = np.clip(np.floor((others - origin) / cell).astype(np.int64), 0, dims - 1)
    flat = (own[:, 2] * dims[1] + own[:, 1]) * dims[0] + own[:, 0]
    items = np.argsort(flat, kind="stable")                          # by cell, then tree order
    start = np.zeros(int(np.prod(dims)) + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=int(np.prod(dims))), out=start[1:])
    cells = np.clip(np.floor((vertices - origin) / cell), -1, dims).astype(np.int64)
    key = ((cells[:, 2] + 1) * (dims[1] + 2) + cells[:, 1] + 1) * (dims[0] + 2) + cells[:, 0] + 1
    order = np.argsort(key, kind="stable")
    return _kernel.ball_pairs(vertices, order, np.ascontiguousarray(cells), others, support[tree_order], start,
                              items, dims, radius_mm)


def neighbour_pairs_reference(vertices: np.ndarray, support: np.ndarray,
                              radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`neighbour_pairs`: SciPy's sparse distance matrix between the
    vertices' KD-tree and the support's, in its own order (the same pairs, each vertex's in
    the same order; the vertices interleaved differently)."""
    near = cKDTree(vertices).sparse_distance_matrix(cKDTree(vertices[support]), radius_mm, output_type="coo_matrix")
    i = near.row.astype(np.int64)
    j = np.asarray(support, dtype=np.int64)[near.col]
    keep = i != j
    return i[keep], j[keep]


def quadric_normal_equations_reference(vertices: np.ndarray, normals: np.ndarray, e1: np.ndarray, e2: np.ndarray,
                                       i: np.ndarray, j: np.ndarray, sigma: float, n: int):
    """NumPy reference of ``coverage._ext.curvature.quadric_normal_equations``: ``(a (n, 5, 5),
    rhs (n, 5), count (n,))``, the pairs' offsets in each vertex's frame, their Gaussian
    weights and the weighted sums accumulated with bincount (one entry at a time)."""
    d = vertices[j] - vertices[i]
    x = np.einsum("ij,ij->i", d, e1[i])
    y = np.einsum("ij,ij->i", d, e2[i])
    z = np.einsum("ij,ij->i", d, normals[i])
    w = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    phi = np.stack([x * x, x * y, y * y, x, y], axis=1)
    a = np.zeros((n, 5, 5))
    rhs = np.zeros((n, 5))
    for r in range(5):
        rhs[:, r] = np.bincount(i, weights=w * phi[:, r] * z, minlength=n)
        for c in range(r, 5):
            a[:, r, c] = a[:, c, r] = np.bincount(i, weights=w * phi[:, r] * phi[:, c], minlength=n)
    return a, rhs, np.bincount(i, minlength=n).astype(np.int64)


def principal_curvatures(vertices: np.ndarray, normals: np.ndarray, radius_mm: float = 5.0,
                         min_neighbours: int = 8, support: np.ndarray | None = None) -> Curvature:
    """Fit principal curvatures at every vertex from neighbours within ``radius_mm``.

    vertices : (n, 3) float, mm
    normals : (n, 3) float, unit outward normals
    support : (k,) int, the vertices the fits use (default: one per voxel of side
        ``radius_mm / 3``, :func:`voxel_subsample`); faces of one topology pass the same
        indices, so the fit does not change when a face turns or changes units
    A vertex with fewer than ``min_neighbours`` neighbours gets zero curvature.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    normals = np.asarray(normals, dtype=np.float64)
    n = len(vertices)
    # fit against an evenly spaced support set (one vertex per voxel of radius/3): refined
    # vertices crowd around the eyes and lips, which would otherwise dominate the fits
    if support is None:
        support = voxel_subsample(vertices, radius_mm / 3.0)
    i, j = neighbour_pairs(vertices, support, radius_mm)
    e1, e2 = tangent_frames(normals)
    # each vertex's weighted normal equations, one pass over its pairs (the kernel; the
    # NumPy reference is quadric_normal_equations_reference)
    a, rhs, count = _kernel.quadric_normal_equations(vertices, normals, e1, e2, np.ascontiguousarray(i),
                                                     np.ascontiguousarray(j), radius_mm / 2.0, n)
    ok = count >= min_neighbours
    # a tiny ridge keeps sparse neighbourhoods solvable without biasing well-posed ones
    scale = np.maximum(np.trace(a, axis1=1, axis2=2), 1e-12)
    a += (1e-9 * scale)[:, None, None] * np.eye(5)
    coef = np.zeros((n, 5))
    coef[ok] = np.linalg.solve(a[ok], rhs[ok][..., None])[..., 0]
    ca, cb, cc, cd, ce = coef.T
    # shape operator of the graph at the origin: S = I^-1 II, II = Hessian / sqrt(1 + |grad|^2)
    first = np.stack([np.stack([1 + cd * cd, cd * ce], 1), np.stack([cd * ce, 1 + ce * ce], 1)], 1)
    second = np.stack([np.stack([2 * ca, cb], 1), np.stack([cb, 2 * cc], 1)], 1)
    second /= np.sqrt(1.0 + cd * cd + ce * ce)[:, None, None]
    shape = np.linalg.solve(first, second)
    eigval, eigvec = np.linalg.eig(shape)
    eigval, eigvec = eigval.real, eigvec.real
    # graph curvature is positive when bending towards +normal (concave): flip for convex > 0
    kappa = -eigval
    order = np.argsort(-kappa, axis=1)
    rows = np.arange(n)[:, None]
    kappa = kappa[rows, order]
    first_dir = eigvec[np.arange(n), :, order[:, 0]]
    d1 = first_dir[:, 0:1] * e1 + first_dir[:, 1:2] * e2
    d1 /= np.maximum(np.linalg.norm(d1, axis=1, keepdims=True), 1e-300)
    d2 = np.cross(normals, d1)
    k1 = np.where(ok, kappa[:, 0], 0.0)
    k2 = np.where(ok, kappa[:, 1], 0.0)
    return Curvature(k1, k2, d1, d2, float(radius_mm))
