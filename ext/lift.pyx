# Point location in the chart and barycentric interpolation (surface lifting).
# Inputs are C-contiguous and already validated by coverage.lifting.
from libc.math cimport floor, sqrt
from libc.stdint cimport int64_t
from _geom cimport barycentric_2d


cdef void _locate(const double[:, ::1] uv, const int64_t[:, ::1] faces,
                  const double[:, ::1] query,
                  const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                  double u0, double v0, double inv_cell, int64_t nu, int64_t nv,
                  double eps, int64_t[::1] out_tri, double[:, ::1] out_bary) noexcept nogil:
    cdef Py_ssize_t i, k, t
    cdef int64_t cu, cv, c, best
    cdef double px, py, m, best_m
    cdef double l[3]
    cdef double bl[3]
    for i in range(query.shape[0]):
        px = query[i, 0]
        py = query[i, 1]
        out_tri[i] = -1
        out_bary[i, 0] = 0.0
        out_bary[i, 1] = 0.0
        out_bary[i, 2] = 0.0
        # NaN fails both comparisons and lands here too
        if not (px >= u0 and py >= v0):
            continue
        cu = <int64_t>floor((px - u0) * inv_cell)
        cv = <int64_t>floor((py - v0) * inv_cell)
        if cu >= nu or cv >= nv:
            continue
        c = cv * nu + cu
        best = -1
        best_m = -1e300
        # first triangle (in cell order) that contains p; otherwise the least-outside one
        for k in range(cell_start[c], cell_start[c + 1]):
            t = cell_items[k]
            m = barycentric_2d(px, py,
                               uv[faces[t, 0], 0], uv[faces[t, 0], 1],
                               uv[faces[t, 1], 0], uv[faces[t, 1], 1],
                               uv[faces[t, 2], 0], uv[faces[t, 2], 1], l)
            if m > best_m:
                best_m = m
                best = t
                bl[0] = l[0]
                bl[1] = l[1]
                bl[2] = l[2]
                if m >= 0.0:
                    break
        if best >= 0 and best_m >= -eps:
            out_tri[i] = best
            out_bary[i, 0] = bl[0]
            out_bary[i, 1] = bl[1]
            out_bary[i, 2] = bl[2]


def locate(const double[:, ::1] uv, const int64_t[:, ::1] faces, const double[:, ::1] query,
           const int64_t[::1] cell_start, const int64_t[::1] cell_items,
           double u0, double v0, double cell, int64_t nu, int64_t nv, double eps,
           int64_t[::1] out_tri, double[:, ::1] out_bary):
    with nogil:
        _locate(uv, faces, query, cell_start, cell_items, u0, v0, 1.0 / cell, nu, nv, eps,
                out_tri, out_bary)


cdef void _interpolate(const double[:, ::1] values, const int64_t[:, ::1] faces,
                       const int64_t[::1] tri, const double[:, ::1] bary, bint normalize,
                       double[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t i, j, k = values.shape[1]
    cdef int64_t t, a, b, c
    cdef double s
    for i in range(tri.shape[0]):
        t = tri[i]
        if t < 0:
            for j in range(k):
                out[i, j] = 0.0
            continue
        a = faces[t, 0]
        b = faces[t, 1]
        c = faces[t, 2]
        s = 0.0
        for j in range(k):
            out[i, j] = bary[i, 0] * values[a, j] + bary[i, 1] * values[b, j] + bary[i, 2] * values[c, j]
            s += out[i, j] * out[i, j]
        if normalize and s > 0.0:
            s = 1.0 / sqrt(s)
            for j in range(k):
                out[i, j] *= s


def interpolate(const double[:, ::1] values, const int64_t[:, ::1] faces,
                const int64_t[::1] tri, const double[:, ::1] bary, bint normalize,
                double[:, ::1] out):
    with nogil:
        _interpolate(values, faces, tri, bary, normalize, out)
