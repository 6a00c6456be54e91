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


def principal_from_equations(a: np.ndarray, rhs: np.ndarray, count: np.ndarray, min_neighbours: int,
                             normals: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> tuple:
    """Principal curvatures and directions ``(k1 (n,), k2 (n,), d1 (n, 3), d2 (n, 3))`` from
    each vertex's quadric fit, in one compiled pass (``coverage._ext.curvature.principal_from_equations``;
    what it computes, bit for bit, is its NumPy twin :func:`principal_from_equations_reference`).
    It replaced LAPACK's batched 5 x 5 solve and 2 x 2 ``eig`` (about 65 ms on the bundled
    face's 28k vertices, against about 5 ms), which agree with it to 1e-10 of the curvatures."""
    n = len(count)
    k1, k2, d1, d2 = np.empty(n), np.empty(n), np.empty((n, 3)), np.empty((n, 3))
    _kernel.principal_from_equations(np.ascontiguousarray(a, dtype=np.float64),
                                     np.ascontiguousarray(rhs, dtype=np.float64),
                                     np.ascontiguousarray(count, dtype=np.int64), int(min_neighbours),
                                     *(np.ascontiguousarray(x, dtype=np.float64) for x in (normals, e1, e2)),
                                     k1, k2, d1, d2)
    return k1, k2, d1, d2


def principal_from_equations_reference(a: np.ndarray, rhs: np.ndarray, count: np.ndarray, min_neighbours: int,
                                       normals: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> tuple:
    """Principal curvatures and directions ``(k1, k2, d1, d2)`` from each vertex's quadric fit
    (the normal equations ``a (n, 5, 5)``, ``rhs (n, 5)`` of ``count (n,)`` pairs, in the
    frame ``(e1, e2, normals)``); NumPy twin of ``coverage._ext.curvature.principal_from_equations``.

    A tiny ridge (1e-9 times the trace) keeps sparse neighbourhoods solvable without biasing
    well-posed ones; the system is solved by Gaussian elimination with partial pivoting.
    The fit ``z = a x^2 + b xy + c y^2 + d x + e y`` is a graph over the tangent plane; its
    shape operator at the origin is ``S = I^-1 II`` (first fundamental form ``I``, second
    ``II = Hessian / sqrt(1 + |grad|^2)``), whose eigenvalues are the roots of
    ``det(II - l I) = 0``: ``l = H +- sqrt(H^2 - K)`` with the mean ``H`` and the product
    ``K``, the larger in magnitude taken from ``H`` and the other as ``K`` over it (no
    cancellation). A graph bending towards +normal is concave: the curvatures are ``-l``,
    ``k1 >= k2``. The direction of ``k1`` is orthogonal (in the frame's coordinates) to the
    longer row of ``II - l I``, ``e1`` where both rows vanish (an umbilic point, or no fit).
    A vertex with fewer than ``min_neighbours`` pairs, a non-finite sum or a singular
    system gets zero curvatures. Every step is written out so that the kernel, doing the
    same arithmetic vertex by vertex, equals it bit for bit.
    """
    a = np.asarray(a, dtype=np.float64)
    rhs = np.asarray(rhs, dtype=np.float64)
    n = len(count)
    ok = (np.asarray(count) >= min_neighbours) & np.isfinite(a).all(axis=(1, 2)) & np.isfinite(rhs).all(axis=1)
    A = np.where(ok[:, None, None], a, np.eye(5))
    B = np.where(ok[:, None], rhs, 0.0)
    scale = (((A[:, 0, 0] + A[:, 1, 1]) + A[:, 2, 2]) + A[:, 3, 3]) + A[:, 4, 4]
    ridge = 1e-9 * np.where(scale >= 1e-12, scale, 1e-12)
    for r in range(5):
        A[:, r, r] = A[:, r, r] + ridge
    rows = np.arange(n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(5):
            p = k + np.argmax(np.abs(A[:, k:, k]), axis=1)      # the first row of the largest
            row, b = A[rows, k].copy(), B[:, k].copy()
            A[rows, k], B[:, k] = A[rows, p], B[rows, p]
            A[rows, p], B[rows, p] = row, b
            piv = A[:, k, k]
            ok &= piv != 0.0
            for i in range(k + 1, 5):
                l = A[:, i, k] / piv
                for j in range(k + 1, 5):
                    A[:, i, j] = A[:, i, j] - l * A[:, k, j]
                B[:, i] = B[:, i] - l * B[:, k]
        x = np.zeros((n, 5))
        for i in range(4, -1, -1):
            s = B[:, i]
            for j in range(i + 1, 5):
                s = s - A[:, i, j] * x[:, j]
            x[:, i] = s / A[:, i, i]
    ca, cb, cc, cd, ce = np.where(ok[:, None], x, 0.0).T
    E, F, G = 1.0 + cd * cd, cd * ce, 1.0 + ce * ce
    det = (1.0 + cd * cd) + ce * ce           # E G - F^2, without its cancellation
    s = np.sqrt(det)
    L, M, N = (2.0 * ca) / s, cb / s, (2.0 * cc) / s
    with np.errstate(all="ignore"):
        H = ((E * N + G * L) - 2.0 * F * M) / (2.0 * det)
        K = (L * N - M * M) / det
        disc = H * H - K
        root = np.sqrt(np.where(disc > 0.0, disc, 0.0))
        q = H + np.copysign(root, H)
        la, lb = np.where(q == 0.0, 0.0, q), np.where(q == 0.0, 0.0, K / q)
    small, big = np.where(la < lb, la, lb), np.where(la < lb, lb, la)
    r00, r01, r11 = L - small * E, M - small * F, N - small * G
    n0, n1 = r00 * r00 + r01 * r01, r01 * r01 + r11 * r11
    first = (n0 >= n1) & (n0 > 0.0)
    second = ~first & (n1 > 0.0)
    v0 = np.where(first, -r01, np.where(second, -r11, 1.0))
    v1 = np.where(first, r00, np.where(second, r01, 0.0))
    x0, x1, x2 = (v0 * e1[:, c] + v1 * e2[:, c] for c in range(3))
    nrm = np.sqrt((x0 * x0 + x1 * x1) + x2 * x2)
    nrm = np.where(nrm >= 1e-300, nrm, 1e-300)
    x0, x1, x2 = x0 / nrm, x1 / nrm, x2 / nrm
    m0, m1, m2 = normals[:, 0], normals[:, 1], normals[:, 2]
    d1 = np.stack([x0, x1, x2], axis=1)
    d2 = np.stack([m1 * x2 - m2 * x1, m2 * x0 - m0 * x2, m0 * x1 - m1 * x0], axis=1)
    return np.where(ok, -small, 0.0), np.where(ok, -big, 0.0), d1, d2


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
    # each vertex's fit solved, its shape operator's eigenvalues and directions
    k1, k2, d1, d2 = principal_from_equations(a, rhs, count, min_neighbours, normals, e1, e2)
    return Curvature(k1, k2, d1, d2, float(radius_mm))
