# distutils: extra_compile_args = -ffp-contract=off
# Chart paths resampled at even skin steps, many at once.
# Inputs are C-contiguous and already validated by coverage.paths.
# The arithmetic is NumPy's, one rounding per operation in its order (numpy.cumsum,
# numpy.linspace, numpy.interp): no fused multiply-add (-ffp-contract=off above).
from libc.math cimport ceil
from libc.stdint cimport int64_t


def arc_lengths(const double[::1] seg, const int64_t[::1] starts, double step,
                double[::1] s, int64_t[::1] counts):
    """Path p covers rows starts[p]:starts[p + 1]; seg[i] is the skin length from row i - 1
    to row i (unread at a path's first row). s[i] = arc length from the path's first row
    (numpy.cumsum, left to right); counts[p] = max(2, ceil(s_end / step) + 1)."""
    cdef Py_ssize_t p, i, a, b
    cdef int64_t n
    with nogil:
        for p in range(starts.shape[0] - 1):
            a = starts[p]
            b = starts[p + 1]
            if b <= a:
                counts[p] = 2
                continue
            s[a] = 0.0
            if b - a > 1:
                s[a + 1] = seg[a + 1]      # cumsum's first value is its first term
            for i in range(a + 2, b):
                s[i] = s[i - 1] + seg[i]
            n = <int64_t>ceil(s[b - 1] / step) + 1
            counts[p] = n if n > 2 else 2


cdef inline double _interp(double x, const double[::1] xp, const double[:, ::1] fp, Py_ssize_t c,
                           Py_ssize_t a, Py_ssize_t m, Py_ssize_t* j) noexcept nogil:
    """numpy.interp(x, xp[a:a + m], fp[a:a + m, c]) for a non-decreasing xp, m >= 2; j[0] is
    the last row (local) with xp <= x from the previous call, walked to this x."""
    cdef double slope, r
    cdef Py_ssize_t k
    if x != x:
        return x
    if x > xp[a + m - 1]:
        return fp[a + m - 1, c]
    if x < xp[a]:
        return fp[a, c]
    k = j[0]
    while k + 1 < m and xp[a + k + 1] <= x:
        k += 1
    while k > 0 and xp[a + k] > x:
        k -= 1
    j[0] = k
    if k == m - 1:
        return fp[a + k, c]
    if xp[a + k] == x:
        return fp[a + k, c]
    slope = (fp[a + k + 1, c] - fp[a + k, c]) / (xp[a + k + 1] - xp[a + k])
    r = slope * (x - xp[a + k]) + fp[a + k, c]
    if r != r:
        r = slope * (x - xp[a + k + 1]) + fp[a + k + 1, c]
        if r != r and fp[a + k, c] == fp[a + k + 1, c]:
            r = fp[a + k, c]
    return r


def resample(const double[:, ::1] uv, const double[::1] s, const int64_t[::1] starts,
             const int64_t[::1] out_starts, double[:, ::1] out):
    """Path p (rows starts[p]:starts[p + 1] of uv, arc lengths s) resampled into rows
    out_starts[p]:out_starts[p + 1] of out: n samples at numpy.linspace(0, s_end, n) of
    arc length, each coordinate by numpy.interp. Paths have two rows or more."""
    cdef Py_ssize_t p, i, a, m, o, n, ju, jv
    cdef double s_end, step, x, div
    with nogil:
        for p in range(starts.shape[0] - 1):
            a = starts[p]
            m = starts[p + 1] - a
            o = out_starts[p]
            n = out_starts[p + 1] - o
            s_end = s[a + m - 1]
            div = <double>(n - 1)
            step = s_end / div
            ju = 0
            jv = 0
            for i in range(n):
                # linspace(0, s_end, n): i * step + 0, i / div * s_end on a zero step, the
                # stop itself last
                if i == n - 1:
                    x = s_end
                elif step == 0.0:
                    x = (<double>i / div) * s_end + 0.0
                else:
                    x = <double>i * step + 0.0
                out[o + i, 0] = _interp(x, s, uv, 0, a, m, &ju)
                out[o + i, 1] = _interp(x, s, uv, 1, a, m, &jv)
