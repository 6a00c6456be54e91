# Point location in the chart and barycentric interpolation (surface lifting).
# Inputs are C-contiguous and already validated by coverage.lifting.
from libc.math cimport sqrt
from libc.stdint cimport int64_t
from _locate cimport _locate_one


def locate(const double[:, ::1] affine, const double[:, ::1] query,
           const int64_t[::1] cell_start, const int64_t[::1] cell_items,
           double u0, double v0, double cell, int64_t nu, int64_t nv, double eps,
           int64_t[::1] out_tri, double[:, ::1] out_bary):
    cdef Py_ssize_t i
    cdef double inv = 1.0 / cell
    with nogil:
        for i in range(query.shape[0]):
            out_tri[i] = _locate_one(affine, query[i, 0], query[i, 1], cell_start, cell_items,
                                     u0, v0, inv, nu, nv, eps, &out_bary[i, 0])


cdef inline void _gather(const double[:, ::1] values, const int64_t[:, ::1] faces, int64_t t,
                         const double* b, bint normalize, double* out) noexcept nogil:
    cdef Py_ssize_t j, k = values.shape[1]
    cdef int64_t a0 = faces[t, 0], a1 = faces[t, 1], a2 = faces[t, 2]
    cdef double s = 0.0
    for j in range(k):
        out[j] = b[0] * values[a0, j] + b[1] * values[a1, j] + b[2] * values[a2, j]
        s += out[j] * out[j]
    if normalize and s > 0.0:
        s = 1.0 / sqrt(s)
        for j in range(k):
            out[j] *= s


def interpolate(const double[:, ::1] values, const int64_t[:, ::1] faces,
                const int64_t[::1] tri, const double[:, ::1] bary, bint normalize,
                double[:, ::1] out):
    cdef Py_ssize_t i, j
    with nogil:
        for i in range(tri.shape[0]):
            if tri[i] < 0:
                for j in range(values.shape[1]):
                    out[i, j] = 0.0
            else:
                _gather(values, faces, tri[i], &bary[i, 0], normalize, &out[i, 0])


def lift(const double[:, ::1] affine, const int64_t[:, ::1] faces, const double[:, ::1] frames,
         const double[:, ::1] query,
         const int64_t[::1] cell_start, const int64_t[::1] cell_items,
         double u0, double v0, double cell, int64_t nu, int64_t nv, double eps,
         int64_t[::1] out_tri, double[:, ::1] out_bary, double[:, ::1] out_points,
         double[:, ::1] out_normals):
    """Locate, then interpolate positions and unit normals in one pass (NaN outside the chart).

    frames[v] = (x, y, z, nx, ny, nz): position and normal side by side, one cache line
    per corner.
    """
    cdef Py_ssize_t i, j
    cdef int64_t t, a0, a1, a2
    cdef double inv = 1.0 / cell
    cdef double nan = float("nan")
    cdef double b0, b1, b2, s
    with nogil:
        for i in range(query.shape[0]):
            t = _locate_one(affine, query[i, 0], query[i, 1], cell_start, cell_items,
                            u0, v0, inv, nu, nv, eps, &out_bary[i, 0])
            out_tri[i] = t
            if t < 0:
                for j in range(3):
                    out_points[i, j] = nan
                    out_normals[i, j] = nan
                continue
            a0 = faces[t, 0]
            a1 = faces[t, 1]
            a2 = faces[t, 2]
            b0 = out_bary[i, 0]
            b1 = out_bary[i, 1]
            b2 = out_bary[i, 2]
            s = 0.0
            for j in range(3):
                out_points[i, j] = b0 * frames[a0, j] + b1 * frames[a1, j] + b2 * frames[a2, j]
                out_normals[i, j] = b0 * frames[a0, j + 3] + b1 * frames[a1, j + 3] + b2 * frames[a2, j + 3]
                s += out_normals[i, j] * out_normals[i, j]
            if s > 0.0:
                s = 1.0 / sqrt(s)
                for j in range(3):
                    out_normals[i, j] *= s
