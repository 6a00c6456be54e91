# cython: language_level=3
"""Normal equations of the per-vertex quadric fits of :mod:`coverage.curvature`.

``quadric_normal_equations`` does in one pass over the neighbour pairs what the NumPy
reference (``coverage.curvature.quadric_normal_equations_reference``) does in some thirty:
each pair's offset in its vertex's tangent frame, its Gaussian weight, and its share of
the vertex's weighted least-squares system for ``z = a x^2 + b xy + c y^2 + d x + e y``.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport exp
from libc.stdint cimport int64_t

cnp.import_array()


def quadric_normal_equations(const double[:, ::1] vertices, const double[:, ::1] normals,
                             const double[:, ::1] e1, const double[:, ::1] e2,
                             const int64_t[::1] i, const int64_t[::1] j, double sigma, Py_ssize_t n):
    """``(a (n, 5, 5), rhs (n, 5), count (n,) int64)``: per vertex ``v = i[k]`` the sums over
    its pairs ``(i[k], j[k])`` of ``w phi phi^T`` and ``w phi z``, with ``(x, y, z)`` the
    offset ``vertices[j] - vertices[v]`` in the frame ``(e1[v], e2[v], normals[v])``,
    ``phi = (x^2, xy, y^2, x, y)`` and ``w = exp(-(x^2 + y^2) / (2 sigma^2))``."""
    cdef Py_ssize_t m = i.shape[0], nv = vertices.shape[0], k, r, c
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
    cdef int64_t v, u
    cdef double d0, d1, d2, x, y, z, w, wr, two_s2 = 2.0 * sigma * sigma
    cdef double phi[5]
    cdef bint bad = False
    with nogil:
        for k in range(m):
            v = i[k]
            u = j[k]
            if v < 0 or v >= n or u < 0 or u >= nv:
                bad = True
                break
            d0 = vertices[u, 0] - vertices[v, 0]
            d1 = vertices[u, 1] - vertices[v, 1]
            d2 = vertices[u, 2] - vertices[v, 2]
            x = d0 * e1[v, 0] + d1 * e1[v, 1] + d2 * e1[v, 2]
            y = d0 * e2[v, 0] + d1 * e2[v, 1] + d2 * e2[v, 2]
            z = d0 * normals[v, 0] + d1 * normals[v, 1] + d2 * normals[v, 2]
            w = exp(-(x * x + y * y) / two_s2)
            phi[0] = x * x
            phi[1] = x * y
            phi[2] = y * y
            phi[3] = x
            phi[4] = y
            count[v] += 1
            for r in range(5):
                wr = w * phi[r]
                rhs[v, r] += wr * z
                for c in range(r, 5):
                    a[v, r, c] += wr * phi[c]
        if not bad:
            for v in range(n):
                for r in range(5):
                    for c in range(r + 1, 5):
                        a[v, c, r] = a[v, r, c]
    if bad:
        raise ValueError("quadric_normal_equations: a pair names a vertex outside the mesh")
    return a_arr, rhs_arr, count_arr
