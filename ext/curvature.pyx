# cython: language_level=3
"""Normal equations of the per-vertex quadric fits of :mod:`coverage.curvature`.

``quadric_normal_equations`` does in one pass over the neighbour pairs what the NumPy
reference (``coverage.curvature.quadric_normal_equations_reference``) does in some thirty:
each pair's offset in its vertex's tangent frame, its Gaussian weight, and its share of
the vertex's weighted least-squares system for ``z = a x^2 + b xy + c y^2 + d x + e y``.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport exp, sqrt
from libc.stdint cimport int64_t
from _prefetch cimport prefetch_w

cnp.import_array()

cdef enum:
    BLOCK = 256   # pairs per block (see quadric_normal_equations)


cdef inline void _store(double* a, double* rhs, int64_t* count, double a00, double a01, double a02,
                        double a03, double a04, double a11, double a12, double a13, double a14, double a22,
                        double a23, double a24, double a33, double a34, double a44, double r0, double r1,
                        double r2, double r3, double r4, int64_t cnt) noexcept nogil:
    """A vertex's sums into its rows: a (5 x 5, both triangles), rhs (5) and count."""
    a[0] = a00; a[1] = a01; a[2] = a02; a[3] = a03; a[4] = a04
    a[5] = a01; a[6] = a11; a[7] = a12; a[8] = a13; a[9] = a14
    a[10] = a02; a[11] = a12; a[12] = a22; a[13] = a23; a[14] = a24
    a[15] = a03; a[16] = a13; a[17] = a23; a[18] = a33; a[19] = a34
    a[20] = a04; a[21] = a14; a[22] = a24; a[23] = a34; a[24] = a44
    rhs[0] = r0; rhs[1] = r1; rhs[2] = r2; rhs[3] = r3; rhs[4] = r4
    count[0] = cnt


def quadric_normal_equations(const double[:, ::1] vertices, const double[:, ::1] normals,
                             const double[:, ::1] e1, const double[:, ::1] e2,
                             const int64_t[::1] i, const int64_t[::1] j, double sigma, Py_ssize_t n):
    """``(a (n, 5, 5), rhs (n, 5), count (n,) int64)``: per vertex ``v = i[k]`` the sums over
    its pairs ``(i[k], j[k])`` of ``w phi phi^T`` and ``w phi z``, with ``(x, y, z)`` the
    offset ``vertices[j] - vertices[v]`` in the frame ``(e1[v], e2[v], normals[v])``,
    ``phi = (x^2, xy, y^2, x, y)`` and ``w = exp(-(x^2 + y^2) / (2 sigma^2))``."""
    cdef Py_ssize_t m = i.shape[0], nv = vertices.shape[0], k
    if j.shape[0] != m:
        raise ValueError("quadric_normal_equations: i and j must have one entry per pair")
    if (normals.shape[0] != nv or e1.shape[0] != nv or e2.shape[0] != nv
            or normals.shape[1] != 3 or e1.shape[1] != 3 or e2.shape[1] != 3):
        raise ValueError("quadric_normal_equations: normals, e1 and e2 must be (n, 3) like vertices")
    if vertices.shape[1] != 3 or n > nv:
        raise ValueError("quadric_normal_equations: vertices must be (n, 3) with n at least the vertex count")
    a_arr = np.zeros((n, 5, 5))
    rhs_arr = np.zeros((n, 5))
    count_arr = np.zeros(n, dtype=np.int64)
    cdef double[:, :, ::1] a = a_arr
    cdef double[:, ::1] rhs = rhs_arr
    cdef int64_t[::1] count = count_arr
    cdef int64_t v, u, cur = -1
    cdef Py_ssize_t k0, k1, b
    cdef double d0, d1, d2, x, y, z, w, wr, two_s2 = 2.0 * sigma * sigma
    cdef double p0, p1, p2, p3, p4
    # a block of pairs' frame coordinates and weights (the first pass over a block, which
    # calls exp), then their sums (the second, whose sums stay in registers: no call)
    cdef double bx[BLOCK]
    cdef double by[BLOCK]
    cdef double bz[BLOCK]
    cdef double bw[BLOCK]
    # the current vertex's sums, in registers while its pairs run on (pairs come in runs of
    # one vertex); stored back, and the next vertex's loaded, where the vertex changes, so
    # every sum takes the same terms in the same order as one accumulated in place
    cdef double a00 = 0, a01 = 0, a02 = 0, a03 = 0, a04 = 0, a11 = 0, a12 = 0, a13 = 0, a14 = 0
    cdef double a22 = 0, a23 = 0, a24 = 0, a33 = 0, a34 = 0, a44 = 0
    cdef double r0 = 0, r1 = 0, r2 = 0, r3 = 0, r4 = 0
    cdef int64_t cnt = 0
    cdef bint bad = False
    with nogil:
        for k in range(m):
            if i[k] < 0 or i[k] >= n or j[k] < 0 or j[k] >= nv:
                bad = True
                break
        k0 = 0
        while k0 < m and not bad:
            k1 = k0 + BLOCK if k0 + BLOCK < m else m
            for k in range(k0, k1):
                v = i[k]
                u = j[k]
                if k == 0 or v != i[k - 1]:
                    # the vertex's sums, which the second pass reads and writes: a
                    # vertex's run starts at a row of a (200 bytes) far from the last one
                    prefetch_w(&a[v, 0, 0])
                    prefetch_w(&a[v, 1, 3])
                    prefetch_w(&a[v, 3, 1])
                    prefetch_w(&a[v, 4, 4])
                    prefetch_w(&rhs[v, 0])
                    prefetch_w(&rhs[v, 4])
                    prefetch_w(&count[v])
                d0 = vertices[u, 0] - vertices[v, 0]
                d1 = vertices[u, 1] - vertices[v, 1]
                d2 = vertices[u, 2] - vertices[v, 2]
                x = d0 * e1[v, 0] + d1 * e1[v, 1] + d2 * e1[v, 2]
                y = d0 * e2[v, 0] + d1 * e2[v, 1] + d2 * e2[v, 2]
                bz[k - k0] = d0 * normals[v, 0] + d1 * normals[v, 1] + d2 * normals[v, 2]
                bw[k - k0] = exp(-(x * x + y * y) / two_s2)
                bx[k - k0] = x
                by[k - k0] = y
            for k in range(k0, k1):
                v = i[k]
                if v != cur:
                    if cur >= 0:
                        _store(&a[cur, 0, 0], &rhs[cur, 0], &count[cur], a00, a01, a02, a03, a04, a11, a12, a13,
                               a14, a22, a23, a24, a33, a34, a44, r0, r1, r2, r3, r4, cnt)
                    cur = v
                    a00 = a[v, 0, 0]; a01 = a[v, 0, 1]; a02 = a[v, 0, 2]; a03 = a[v, 0, 3]; a04 = a[v, 0, 4]
                    a11 = a[v, 1, 1]; a12 = a[v, 1, 2]; a13 = a[v, 1, 3]; a14 = a[v, 1, 4]
                    a22 = a[v, 2, 2]; a23 = a[v, 2, 3]; a24 = a[v, 2, 4]
                    a33 = a[v, 3, 3]; a34 = a[v, 3, 4]
                    a44 = a[v, 4, 4]
                    r0 = rhs[v, 0]; r1 = rhs[v, 1]; r2 = rhs[v, 2]; r3 = rhs[v, 3]; r4 = rhs[v, 4]
                    cnt = count[v]
                b = k - k0
                x = bx[b]
                y = by[b]
                z = bz[b]
                w = bw[b]
                p0 = x * x
                p1 = x * y
                p2 = y * y
                p3 = x
                p4 = y
                cnt += 1
                wr = w * p0
                r0 += wr * z
                a00 += wr * p0; a01 += wr * p1; a02 += wr * p2; a03 += wr * p3; a04 += wr * p4
                wr = w * p1
                r1 += wr * z
                a11 += wr * p1; a12 += wr * p2; a13 += wr * p3; a14 += wr * p4
                wr = w * p2
                r2 += wr * z
                a22 += wr * p2; a23 += wr * p3; a24 += wr * p4
                wr = w * p3
                r3 += wr * z
                a33 += wr * p3; a34 += wr * p4
                wr = w * p4
                r4 += wr * z
                a44 += wr * p4
            k0 = k1
        if cur >= 0 and not bad:
            _store(&a[cur, 0, 0], &rhs[cur, 0], &count[cur], a00, a01, a02, a03, a04, a11, a12, a13,
                   a14, a22, a23, a24, a33, a34, a44, r0, r1, r2, r3, r4, cnt)
    if bad:
        raise ValueError("quadric_normal_equations: a pair names a vertex outside the mesh")
    return a_arr, rhs_arr, count_arr


# --- neighbour pairs ---------------------------------------------------------------------

from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memcpy


cdef int _compare_int64(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0], y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


def ball_pairs(const double[:, ::1] points, const int64_t[::1] order, const int64_t[:, ::1] cells,
               const double[:, ::1] others, const int64_t[::1] ids, const int64_t[::1] cell_start,
               const int64_t[::1] cell_items, const int64_t[::1] dims, double radius):
    """``(i, j)`` int64: each point ``i`` with the id ``j = ids[k]`` of each of ``others`` (row
    ``k``) within ``radius`` (squared distance ``((0 + dx^2) + dy^2) + dz^2 <= radius^2``,
    SciPy's cKDTree test), leaving out ``j == i``; the points in ``order`` (each point's pairs
    together), a point's pairs by ascending ``k``.

    ``others`` are binned into a grid of ``dims`` cells of side at least ``radius`` (cell id
    ``(z * ny + y) * nx + x``): cell c holds ``cell_items[cell_start[c]:cell_start[c + 1]]``.
    ``cells`` ``(n, 3)`` is each point's cell, clipped to ``-1 .. dims``: everything within
    ``radius`` of a point lies in the 27 cells around it. Points of one cell come one after
    another in ``order`` and share their candidates (sorted by ``k`` once, then gathered)."""
    cdef Py_ssize_t n = points.shape[0], s = others.shape[0], ii, jj, c, q, kk
    cdef int64_t nx = dims[0], ny = dims[1], nz = dims[2]
    if order.shape[0] != n or cells.shape[0] != n or cells.shape[1] != 3 or points.shape[1] != 3:
        raise ValueError("ball_pairs: order and cells need one row per point, points (n, 3)")
    if (others.shape[1] != 3 or cell_items.shape[0] != s or ids.shape[0] != s
            or cell_start.shape[0] != nx * ny * nz + 1):
        raise ValueError("ball_pairs: others (s, 3), ids and cell_items (s,), cell_start (cells + 1,)")
    for ii in range(n):
        if order[ii] < 0 or order[ii] >= n:
            raise ValueError("ball_pairs: order names a point outside the points")
    cdef double r2 = radius * radius, d, e, f, px, py, pz
    cdef int64_t x, y, z, gx = -2, gy = -2, gz = -2, v, ncand = 0
    cdef Py_ssize_t cap = n * 48 + 1024, m = 0
    cdef int64_t* cand = <int64_t*>malloc((s + 1) * sizeof(int64_t))
    cdef int64_t* cand_id = <int64_t*>malloc((s + 1) * sizeof(int64_t))
    cdef double* cand_xyz = <double*>malloc((3 * s + 3) * sizeof(double))
    cdef int64_t* out_i = <int64_t*>malloc(cap * sizeof(int64_t))
    cdef int64_t* out_j = <int64_t*>malloc(cap * sizeof(int64_t))
    cdef int64_t* grown
    cdef int64_t* i_data
    cdef int64_t* j_data
    cdef bint failed = cand == NULL or cand_id == NULL or cand_xyz == NULL or out_i == NULL or out_j == NULL
    with nogil:
        for ii in range(n):
            if failed:
                break
            v = order[ii]
            if cells[v, 0] != gx or cells[v, 1] != gy or cells[v, 2] != gz:
                # a new cell: its candidates, the others in the 27 cells around it, by k
                gx, gy, gz = cells[v, 0], cells[v, 1], cells[v, 2]
                ncand = 0
                for z in range(gz - 1, gz + 2):
                    if z < 0 or z >= nz:
                        continue
                    for y in range(gy - 1, gy + 2):
                        if y < 0 or y >= ny:
                            continue
                        for x in range(gx - 1, gx + 2):
                            if x < 0 or x >= nx:
                                continue
                            c = (z * ny + y) * nx + x
                            for q in range(cell_start[c], cell_start[c + 1]):
                                cand[ncand] = cell_items[q]
                                ncand += 1
                qsort(cand, ncand, sizeof(int64_t), _compare_int64)
                for jj in range(ncand):
                    kk = cand[jj]
                    cand_id[jj] = ids[kk]
                    cand_xyz[jj] = others[kk, 0]
                    cand_xyz[s + 1 + jj] = others[kk, 1]
                    cand_xyz[2 * s + 2 + jj] = others[kk, 2]
            if m + ncand > cap:
                while m + ncand > cap:
                    cap *= 2
                grown = <int64_t*>realloc(out_i, cap * sizeof(int64_t))
                if grown == NULL:
                    failed = True
                    break
                out_i = grown
                grown = <int64_t*>realloc(out_j, cap * sizeof(int64_t))
                if grown == NULL:
                    failed = True
                    break
                out_j = grown
            px = points[v, 0]
            py = points[v, 1]
            pz = points[v, 2]
            # every candidate written, the next overwriting it unless it is within reach
            for jj in range(ncand):
                d = px - cand_xyz[jj]
                e = py - cand_xyz[s + 1 + jj]
                f = pz - cand_xyz[2 * s + 2 + jj]
                out_i[m] = v
                out_j[m] = cand_id[jj]
                m += (((0.0 + d * d) + e * e) + f * f <= r2) & (cand_id[jj] != v)
    try:
        if failed:
            raise MemoryError("ball_pairs: out of memory")
        i_arr = np.empty(m, dtype=np.int64)
        j_arr = np.empty(m, dtype=np.int64)
        if m:
            # the copies (tens of MB of fresh pages on a dense face) without the GIL
            i_data = <int64_t*>cnp.PyArray_DATA(i_arr)
            j_data = <int64_t*>cnp.PyArray_DATA(j_arr)
            with nogil:
                memcpy(i_data, out_i, m * sizeof(int64_t))
                memcpy(j_data, out_j, m * sizeof(int64_t))
        return i_arr, j_arr
    finally:
        free(cand)
        free(cand_id)
        free(cand_xyz)
        free(out_i)
        free(out_j)


# --- normal curvatures -------------------------------------------------------------------


cdef inline double _dot3(double a0, double a1, double a2, double b0, double b1, double b2) noexcept nogil:
    """numpy.einsum("ij,ij->i") of one row of two C-contiguous (n, 3) float64 operands: its
    two-lane sum from zero pairs the first and last products, then adds the middle one."""
    cdef double s = 0.0
    s += a0 * b0 + a2 * b2
    s += a1 * b1
    return s


cdef inline double _euler(const double[::1] k1, const double[::1] k2, const double[:, ::1] d1,
                          const double[:, ::1] d2, Py_ssize_t v, double t0, double t1, double t2) noexcept nogil:
    """Curvature.normal_curvature at vertex v along (t0, t1, t2), in NumPy's order."""
    cdef double c1 = _dot3(t0, t1, t2, d1[v, 0], d1[v, 1], d1[v, 2])
    cdef double c2 = _dot3(t0, t1, t2, d2[v, 0], d2[v, 1], d2[v, 2])
    cdef double norm2 = c1 * c1 + c2 * c2
    if norm2 > 0.0:
        return (k1[v] * c1 * c1 + k2[v] * c2 * c2) / norm2
    return 0.0


def normal_curvature(const double[::1] k1, const double[::1] k2, const double[:, ::1] d1,
                     const double[:, ::1] d2, const int64_t[::1] vertex, const double[:, ::1] direction,
                     double[::1] out):
    """``out[i]``: the normal curvature at vertex ``vertex[i]`` (each in range) along
    ``direction[i]`` (C-contiguous ``(n, 3)``), Euler's ``k1 cos^2 + k2 sin^2`` with NumPy's
    arithmetic in :meth:`coverage.curvature.Curvature.normal_curvature`'s order: ``c1``,
    ``c2`` summed as einsum sums a row of three, ``(k1 c1 c1 + k2 c2 c2) / (c1 c1 + c2 c2)``
    where that denominator is above 0, else 0."""
    cdef Py_ssize_t i, v
    with nogil:
        for i in range(vertex.shape[0]):
            v = vertex[i]
            out[i] = _euler(k1, k2, d1, d2, v, direction[i, 0], direction[i, 1], direction[i, 2])


def path_normal_curvatures(const double[::1] k1, const double[::1] k2, const double[:, ::1] d1,
                           const double[:, ::1] d2, const int64_t[:, ::1] faces, const double[:, ::1] gradient,
                           const double[:, ::1] normals, const int64_t[::1] tri, const double[:, ::1] bary,
                           double[::1] along, double[::1] cross):
    """Normal curvature along each path sample's travel and across it, interpolated over its
    triangle's corners (``coverage.roller.path_curvatures_reference`` from its gradient on, in
    NumPy's order): the travel ``gradient[k]`` less its component along the unit normal
    (einsum's dot), divided by the larger of its norm (``sqrt((s0 + s1) + s2)``) and 1e-12;
    across it ``normal x travel`` (``a1 b2 - a2 b1``, ...); at the corners of triangle
    ``max(tri[k], 0)`` (each in range) the curvatures as :func:`normal_curvature`, summed
    ``((0 + b0 n0) + b1 n1) + b2 n2`` with the barycentrics. All (n, 3) arrays C-contiguous."""
    cdef Py_ssize_t k, j, t, v
    cdef double n0, n1, n2, g0, g1, g2, dot, nrm, a0, a1, a2, x0, x1, x2, sa, sc, b
    with nogil:
        for k in range(gradient.shape[0]):
            n0 = normals[k, 0]
            n1 = normals[k, 1]
            n2 = normals[k, 2]
            g0 = gradient[k, 0]
            g1 = gradient[k, 1]
            g2 = gradient[k, 2]
            dot = _dot3(g0, g1, g2, n0, n1, n2)
            g0 = g0 - dot * n0
            g1 = g1 - dot * n1
            g2 = g2 - dot * n2
            nrm = sqrt((g0 * g0 + g1 * g1) + g2 * g2)
            if not (nrm != nrm or nrm >= 1e-12):     # numpy.maximum keeps a NaN
                nrm = 1e-12
            g0 = g0 / nrm
            g1 = g1 / nrm
            g2 = g2 / nrm
            x0 = n1 * g2 - n2 * g1
            x1 = n2 * g0 - n0 * g2
            x2 = n0 * g1 - n1 * g0
            t = tri[k] if tri[k] > 0 else 0
            sa = 0.0
            sc = 0.0
            for j in range(3):
                v = faces[t, j]
                b = bary[k, j]
                sa = sa + b * _euler(k1, k2, d1, d2, v, g0, g1, g2)
                sc = sc + b * _euler(k1, k2, d1, d2, v, x0, x1, x2)
            along[k] = sa
            cross[k] = sc


# --- principal curvatures from the fits' normal equations -----------------------------------

from libc.math cimport fabs, copysign, isfinite


cdef inline bint _solve5(double* a, double* b, double* x) noexcept nogil:
    """Solve the 5 x 5 system ``a x = b`` (row-major ``a``, both overwritten) by Gaussian
    elimination with partial pivoting (the first row of largest ``|a[i, k]|``), in
    :func:`coverage.curvature.principal_from_equations_reference`'s order; False where a
    pivot is 0."""
    cdef int k, i, j, p
    cdef double best, t, piv, l, s
    for k in range(5):
        p = k
        best = fabs(a[5 * k + k])
        for i in range(k + 1, 5):
            if fabs(a[5 * i + k]) > best:
                best = fabs(a[5 * i + k])
                p = i
        if p != k:
            for j in range(5):
                t = a[5 * k + j]
                a[5 * k + j] = a[5 * p + j]
                a[5 * p + j] = t
            t = b[k]
            b[k] = b[p]
            b[p] = t
        piv = a[5 * k + k]
        if piv == 0.0:
            return False
        for i in range(k + 1, 5):
            l = a[5 * i + k] / piv
            for j in range(k + 1, 5):
                a[5 * i + j] = a[5 * i + j] - l * a[5 * k + j]
            b[i] = b[i] - l * b[k]
    for i in range(4, -1, -1):
        s = b[i]
        for j in range(i + 1, 5):
            s = s - a[5 * i + j] * x[j]
        x[i] = s / a[5 * i + i]
    return True


def principal_from_equations(const double[:, :, ::1] a_in, const double[:, ::1] rhs_in, const int64_t[::1] count,
                             int64_t min_neighbours, const double[:, ::1] normals, const double[:, ::1] e1,
                             const double[:, ::1] e2, double[::1] k1, double[::1] k2, double[:, ::1] d1,
                             double[:, ::1] d2):
    """Each vertex's principal curvatures and directions from its quadric fit's normal
    equations (:func:`quadric_normal_equations`), as
    :func:`coverage.curvature.principal_from_equations_reference` computes them, bit for bit:
    a ridge of 1e-9 times the trace, the 5 x 5 solve (partial pivoting), the shape operator's
    eigenvalues as the roots of ``det(II - l I) = 0`` (the larger-magnitude root from the
    mean, the other as the product over it) and the direction of the smaller root (the
    larger curvature, convex > 0) from the longer row of ``II - l I``. A vertex with fewer
    than ``min_neighbours`` pairs, a non-finite sum or a zero pivot gets zero curvatures
    (its directions those of zero curvature: ``d1 = e1``)."""
    cdef Py_ssize_t n = count.shape[0], v, r, c
    if (a_in.shape[0] != n or a_in.shape[1] != 5 or a_in.shape[2] != 5 or rhs_in.shape[0] != n
            or rhs_in.shape[1] != 5 or normals.shape[0] != n or e1.shape[0] != n or e2.shape[0] != n
            or normals.shape[1] != 3 or e1.shape[1] != 3 or e2.shape[1] != 3 or k1.shape[0] != n
            or k2.shape[0] != n or d1.shape[0] != n or d2.shape[0] != n or d1.shape[1] != 3 or d2.shape[1] != 3):
        raise ValueError("principal_from_equations: a (n, 5, 5), rhs (n, 5), count (n,), normals, e1, e2, "
                         "d1, d2 (n, 3) and k1, k2 (n,) must agree")
    cdef double a[25]
    cdef double b[5]
    cdef double x[5]
    cdef double scale, ridge, ca, cb, cc, cd, ce, s, E, F, G, L, M, N, det, H, K, disc, root, q, la, lb
    cdef double small, big, r00, r01, r11, n0, n1, v0, v1, x0, x1, x2, nrm, m0, m1, m2
    cdef bint ok
    with nogil:
        for v in range(n):
            ok = count[v] >= min_neighbours
            if ok:
                for r in range(5):
                    for c in range(5):
                        a[5 * r + c] = a_in[v, r, c]
                        if not isfinite(a[5 * r + c]):
                            ok = False
                    b[r] = rhs_in[v, r]
                    if not isfinite(b[r]):
                        ok = False
            if ok:
                scale = (((a[0] + a[6]) + a[12]) + a[18]) + a[24]
                if not (scale >= 1e-12):
                    scale = 1e-12
                ridge = 1e-9 * scale
                for r in range(5):
                    a[6 * r] = a[6 * r] + ridge
                ok = _solve5(a, b, x)
            if ok:
                ca = x[0]
                cb = x[1]
                cc = x[2]
                cd = x[3]
                ce = x[4]
            else:
                ca = cb = cc = cd = ce = 0.0
            # the graph's first and second fundamental forms at the origin
            E = 1.0 + cd * cd
            F = cd * ce
            G = 1.0 + ce * ce
            det = (1.0 + cd * cd) + ce * ce     # E G - F^2, without its cancellation
            s = sqrt(det)
            L = (2.0 * ca) / s
            M = cb / s
            N = (2.0 * cc) / s
            H = ((E * N + G * L) - 2.0 * F * M) / (2.0 * det)
            K = (L * N - M * M) / det
            disc = H * H - K
            if not (disc > 0.0):
                disc = 0.0
            root = sqrt(disc)
            q = H + copysign(root, H)
            if q == 0.0:
                la = 0.0
                lb = 0.0
            else:
                la = q
                lb = K / q
            small = la if la < lb else lb
            big = lb if la < lb else la
            # the direction of the smaller root: orthogonal to the longer row of II - l I
            r00 = L - small * E
            r01 = M - small * F
            r11 = N - small * G
            n0 = r00 * r00 + r01 * r01
            n1 = r01 * r01 + r11 * r11
            if n0 >= n1 and n0 > 0.0:
                v0 = -r01
                v1 = r00
            elif n1 > 0.0:
                v0 = -r11
                v1 = r01
            else:
                v0 = 1.0
                v1 = 0.0
            x0 = v0 * e1[v, 0] + v1 * e2[v, 0]
            x1 = v0 * e1[v, 1] + v1 * e2[v, 1]
            x2 = v0 * e1[v, 2] + v1 * e2[v, 2]
            nrm = sqrt((x0 * x0 + x1 * x1) + x2 * x2)
            if not (nrm >= 1e-300):
                nrm = 1e-300
            x0 = x0 / nrm
            x1 = x1 / nrm
            x2 = x2 / nrm
            d1[v, 0] = x0
            d1[v, 1] = x1
            d1[v, 2] = x2
            m0 = normals[v, 0]
            m1 = normals[v, 1]
            m2 = normals[v, 2]
            d2[v, 0] = m1 * x2 - m2 * x1
            d2[v, 1] = m2 * x0 - m0 * x2
            d2[v, 2] = m0 * x1 - m1 * x0
            k1[v] = -small if ok else 0.0
            k2[v] = -big if ok else 0.0
