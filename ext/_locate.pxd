# Point location in a binned chart triangulation, shared by the lifting and pen kernels.
# No validation here: the Python wrappers own that.
from libc.math cimport floor
from libc.stdint cimport int64_t


cdef inline double _bary(const double[:, ::1] affine, Py_ssize_t t, double px, double py,
                         double* l) noexcept nogil:
    """Barycentrics of p in triangle t from its inverse affine map; returns min(l).

    affine[t] = (ax, ay, m00, m01, m10, m11): (l1, l2) = M (p - a). A degenerate triangle
    carries NaN, so min(l) is NaN and the point is never placed in it.
    """
    cdef double dx = px - affine[t, 0], dy = py - affine[t, 1]
    l[1] = affine[t, 2] * dx + affine[t, 3] * dy
    l[2] = affine[t, 4] * dx + affine[t, 5] * dy
    l[0] = 1.0 - l[1] - l[2]
    cdef double m = l[0]
    if l[1] < m:
        m = l[1]
    if l[2] < m:
        m = l[2]
    return m


cdef inline int64_t _locate_one(const double[:, ::1] affine, double px, double py,
                                const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                                double u0, double v0, double inv_cell, int64_t nu, int64_t nv,
                                double eps, double* bary) noexcept nogil:
    """Triangle holding p (first in cell order), else the least-outside within eps, else -1."""
    cdef int64_t cu, cv, c, k, t, best = -1
    cdef double m, best_m = -1e300
    cdef double l[3]
    bary[0] = 0.0
    bary[1] = 0.0
    bary[2] = 0.0
    # NaN fails both comparisons and lands here too
    if not (px >= u0 and py >= v0):
        return -1
    # compare in floating point first: casting +inf or a huge value to int64 is undefined
    cdef double fu = floor((px - u0) * inv_cell), fv = floor((py - v0) * inv_cell)
    if not (fu < <double>nu and fv < <double>nv):
        return -1
    cu = <int64_t>fu
    cv = <int64_t>fv
    if cu >= nu or cv >= nv:
        return -1
    c = cv * nu + cu
    for k in range(cell_start[c], cell_start[c + 1]):
        t = cell_items[k]
        m = _bary(affine, t, px, py, l)
        if m > best_m:
            best_m = m
            best = t
            bary[0] = l[0]
            bary[1] = l[1]
            bary[2] = l[2]
            if m >= 0.0:
                break
    if best >= 0 and best_m >= -eps:
        return best
    bary[0] = 0.0
    bary[1] = 0.0
    bary[2] = 0.0
    return -1
