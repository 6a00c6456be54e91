# distutils: extra_compile_args = -ffp-contract=off
# Chart paths resampled at even skin steps, many at once.
# Inputs are C-contiguous and already validated by coverage.paths.
# The arithmetic is NumPy's, one rounding per operation in its order (numpy.cumsum,
# numpy.linspace, numpy.interp): no fused multiply-add (-ffp-contract=off above).
from libc.math cimport ceil, floor, signbit, sqrt
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


cdef inline double _lerp(double x, const double[::1] xp, const double[:, ::1] fp, Py_ssize_t c, Py_ssize_t i,
                        double slope) noexcept nogil:
    # numpy.interp between rows i and i + 1 (xp[i] < x < xp[i + 1] or its NaN fallbacks);
    # slope = _slope(xp, fp, c, i), the same for every x between those rows
    cdef double r = slope * (x - xp[i]) + fp[i, c]
    if r != r:
        r = slope * (x - xp[i + 1]) + fp[i + 1, c]
        if r != r and fp[i, c] == fp[i + 1, c]:
            r = fp[i, c]
    return r


cdef inline double _slope(const double[::1] xp, const double[:, ::1] fp, Py_ssize_t c, Py_ssize_t i) noexcept nogil:
    # numpy.interp's slope between rows i and i + 1
    return (fp[i + 1, c] - fp[i, c]) / (xp[i + 1] - xp[i])


def segments(const double[:, ::1] uv, const double[:, ::1] points, double[::1] seg):
    """seg[0] = 0, seg[i] = numpy.linalg.norm(points[i] - points[i - 1]) (its arithmetic:
    sqrt((dx^2 + dy^2) + dz^2)); returns whether every uv and seg value is finite."""
    cdef Py_ssize_t i, n = uv.shape[0]
    cdef double dx, dy, dz, x
    cdef bint finite = True
    with nogil:
        if n > 0:
            seg[0] = 0.0
            if not (uv[0, 0] - uv[0, 0] == 0.0 and uv[0, 1] - uv[0, 1] == 0.0):
                finite = False
        for i in range(1, n):
            dx = points[i, 0] - points[i - 1, 0]
            dy = points[i, 1] - points[i - 1, 1]
            dz = points[i, 2] - points[i - 1, 2]
            x = sqrt((dx * dx + dy * dy) + dz * dz)
            seg[i] = x
            if not (x - x == 0.0 and uv[i, 0] - uv[i, 0] == 0.0 and uv[i, 1] - uv[i, 1] == 0.0):
                finite = False
    return finite


cdef inline double _linspace(Py_ssize_t i, Py_ssize_t n, double s_end, double step, double div) noexcept nogil:
    # numpy.linspace(0, s_end, n)[i]: i * step + 0, i / div * s_end on a zero step, the stop
    # itself last
    if i == n - 1:
        return s_end
    if step == 0.0:
        return (<double>i / div) * s_end + 0.0
    return <double>i * step + 0.0


cdef inline void _resample_path(const double[:, ::1] uv, const double[::1] s, Py_ssize_t a, Py_ssize_t m,
                                Py_ssize_t n, double[:, ::1] out, Py_ssize_t o) noexcept nogil:
    # the path of rows a:a + m of uv (arc lengths s, m >= 2) resampled at n points into rows
    # o:o + n of out (see resample)
    cdef Py_ssize_t i, k, last
    cdef double s_end, step, x, div, slope0, slope1, xk, xk1, u0, v0, r
    last = a + m - 1
    s_end = s[last]
    div = <double>(n - 1)
    step = s_end / div
    k = a
    i = 0
    while i < n:
        x = _linspace(i, n, s_end, step, div)
        if x != x:
            out[o + i, 0] = x
            out[o + i, 1] = x
            i += 1
            continue
        if x > s[last]:
            out[o + i, 0] = uv[last, 0]
            out[o + i, 1] = uv[last, 1]
            i += 1
            continue
        if x < s[a]:
            out[o + i, 0] = uv[a, 0]
            out[o + i, 1] = uv[a, 1]
            i += 1
            continue
        # the last row with s <= x (walked from the previous sample's)
        while k < last and s[k + 1] <= x:
            k += 1
        while k > a and s[k] > x:
            k -= 1
        if k == last or s[k] == x:
            out[o + i, 0] = uv[k, 0]
            out[o + i, 1] = uv[k, 1]
            i += 1
            continue
        # s[k] < x < s[k + 1]: this sample and the next ones between those rows
        slope0 = _slope(s, uv, 0, k)
        slope1 = _slope(s, uv, 1, k)
        xk = s[k]
        xk1 = s[k + 1]
        u0 = uv[k, 0]
        v0 = uv[k, 1]
        while True:
            r = slope0 * (x - xk) + u0
            out[o + i, 0] = r if r == r else _lerp(x, s, uv, 0, k, slope0)
            r = slope1 * (x - xk) + v0
            out[o + i, 1] = r if r == r else _lerp(x, s, uv, 1, k, slope1)
            i += 1
            if i == n:
                break
            x = _linspace(i, n, s_end, step, div)
            if not (xk < x and x < xk1):
                break


def resample(const double[:, ::1] uv, const double[::1] s, const int64_t[::1] starts,
             const int64_t[::1] out_starts, double[:, ::1] out):
    """Path p (rows starts[p]:starts[p + 1] of uv, arc lengths s) resampled into rows
    out_starts[p]:out_starts[p + 1] of out: n samples at numpy.linspace(0, s_end, n) of
    arc length, each coordinate by numpy.interp (both columns share the row search: the
    same x in the same xp). Paths have two rows or more.

    Once a sample is found strictly inside a segment (s[k] < x < s[k + 1]), the samples
    after it that are too are interpolated in a tight loop with the segment's slopes
    computed once (numpy.interp computes the same quotient for each of them)."""
    cdef Py_ssize_t p, a, o
    with nogil:
        for p in range(starts.shape[0] - 1):
            a = starts[p]
            o = out_starts[p]
            _resample_path(uv, s, a, starts[p + 1] - a, out_starts[p + 1] - o, out, o)


def resample_on(const double[:, ::1] uv, const double[::1] s, const int64_t[::1] starts,
                const int64_t[::1] out_starts, const unsigned char[:, ::1] mask, double u0, double v0,
                double cell, double[:, ::1] scratch, double[:, ::1] out, int64_t[::1] out_path,
                int64_t[::1] out_index):
    """The samples ``resample`` makes (path p's at rows out_starts[p]:out_starts[p + 1]),
    only those on a nonzero cell of ``mask``: in order into the first rows of out, with
    their path and their row among all the samples; returns how many. A sample's cell is
    floor((sample - (u0, v0)) / cell), column from u, row from v (coverage.raster.lookup's
    arithmetic); a sample off the mask's grid, or NaN, is not on it. scratch: at least as
    many rows as the longest path has samples."""
    cdef Py_ssize_t p, i, a, o, n, k = 0, h = mask.shape[0], w = mask.shape[1]
    cdef double fu, fv, fw = <double>w, fh = <double>h
    with nogil:
        for p in range(starts.shape[0] - 1):
            a = starts[p]
            o = out_starts[p]
            n = out_starts[p + 1] - o
            _resample_path(uv, s, a, starts[p + 1] - a, n, scratch, 0)
            for i in range(n):
                fu = (scratch[i, 0] - u0) / cell
                fv = (scratch[i, 1] - v0) / cell
                if not (fu >= 0.0 and fv >= 0.0 and fu < fw and fv < fh):
                    continue
                if mask[<Py_ssize_t>fv, <Py_ssize_t>fu] == 0:
                    continue
                out[k, 0] = scratch[i, 0]
                out[k, 1] = scratch[i, 1]
                out_path[k] = p
                out_index[k] = o + i
                k += 1
    return k


def segment_lengths(const double[:, ::1] uv, double[::1] out):
    """out[i] = numpy.linalg.norm(uv[i + 1] - uv[i]) for i < len(uv) - 1 (its arithmetic on
    two columns: sqrt(dx * dx + dy * dy), dx = uv[i + 1, 0] - uv[i, 0])."""
    cdef Py_ssize_t i, n = uv.shape[0]
    cdef double dx, dy
    with nogil:
        for i in range(n - 1):
            dx = uv[i + 1, 0] - uv[i, 0]
            dy = uv[i + 1, 1] - uv[i, 1]
            out[i] = sqrt(dx * dx + dy * dy)


# --- stamps by distance travelled (coverage.pen.StampPlacer.place_along, run after run) ------

cdef inline Py_ssize_t _last_at_or_below(double x, const double[::1] xp, Py_ssize_t a, Py_ssize_t last,
                                         Py_ssize_t j) noexcept nogil:
    # the last row of xp[a:last + 1] (non-decreasing) with xp <= x, for xp[a] <= x <= xp[last],
    # walked from row j (numpy.interp's binary search finds the same row)
    if j < a or j > last:
        j = a
    while j < last and xp[j + 1] <= x:
        j += 1
    while j > a and xp[j] > x:
        j -= 1
    return j


cdef inline double _interp_1d(double x, const double[::1] xp, const double[::1] fp, Py_ssize_t a,
                              Py_ssize_t last, Py_ssize_t* k) noexcept nogil:
    # numpy.interp(x, xp[a:last + 1], fp[a:last + 1]) for a non-decreasing xp of two rows or more
    cdef Py_ssize_t j
    cdef double slope, r
    if x != x:
        return x
    if x > xp[last]:
        return fp[last]
    if x < xp[a]:
        return fp[a]
    j = _last_at_or_below(x, xp, a, last, k[0])
    k[0] = j
    if j == last or xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    r = slope * (x - xp[j]) + fp[j]
    if r != r:
        r = slope * (x - xp[j + 1]) + fp[j + 1]
        if r != r and fp[j] == fp[j + 1]:
            r = fp[j]
    return r


cdef inline double _interp_col(double x, const double[::1] xp, const double[:, ::1] fp, Py_ssize_t c,
                               Py_ssize_t a, Py_ssize_t last, Py_ssize_t* k) noexcept nogil:
    # numpy.interp(x, xp[a:last + 1], fp[a:last + 1, c]), as _interp_1d
    cdef Py_ssize_t j
    cdef double slope, r
    if x != x:
        return x
    if x > xp[last]:
        return fp[last, c]
    if x < xp[a]:
        return fp[a, c]
    j = _last_at_or_below(x, xp, a, last, k[0])
    k[0] = j
    if j == last or xp[j] == x:
        return fp[j, c]
    slope = (fp[j + 1, c] - fp[j, c]) / (xp[j + 1] - xp[j])
    r = slope * (x - xp[j]) + fp[j, c]
    if r != r:
        r = slope * (x - xp[j + 1]) + fp[j + 1, c]
        if r != r and fp[j, c] == fp[j + 1, c]:
            r = fp[j, c]
    return r


def place_counts(const double[::1] count, const int64_t[::1] bounds, double carry, int64_t[::1] out_m):
    """Run i (rows bounds[i]:bounds[i + 1] of count, its running stamp count before the carry):
    out_m[i] = floor(count[last] + carry) stamps (0 for a run under two rows, which leaves the
    carry as it is), the carry then count[last] + carry - floor(...). Returns the last carry."""
    cdef Py_ssize_t i, a, b
    cdef double total, whole
    with nogil:
        for i in range(bounds.shape[0] - 1):
            a = bounds[i]
            b = bounds[i + 1]
            out_m[i] = 0
            if b - a < 2:
                continue
            total = count[b - 1] + carry
            whole = floor(total)
            out_m[i] = <int64_t>whole if whole > 0.0 else 0
            carry = total - whole
    return carry


def place_fill(const double[:, ::1] uv, const double[::1] count, const double[::1] arc,
               const int64_t[::1] bounds, double carry, const int64_t[::1] out_starts, double[::1] cum,
               double[:, ::1] out_uv, double[::1] out_at):
    """Run i's stamps into rows out_starts[i]:out_starts[i + 1] (place_counts' counts) as
    StampPlacer.place_along places them: cum = count + carry, at = numpy.interp(k, cum, arc)
    for k = 1, 2, ..., the stamp numpy.interp(at, arc, uv[:, c]) per column; the carry passed on
    as place_counts passes it. cum: scratch, one row per row of count. Inputs finite, arc and
    count non-decreasing per run."""
    cdef Py_ssize_t i, a, b, last, j, o, m, k1, k2, k3
    cdef double total, whole, at
    with nogil:
        for i in range(bounds.shape[0] - 1):
            a = bounds[i]
            b = bounds[i + 1]
            if b - a < 2:
                continue
            last = b - 1
            total = count[last] + carry
            whole = floor(total)
            o = out_starts[i]
            m = out_starts[i + 1] - o
            for j in range(a, b):
                cum[j] = count[j] + carry
            carry = total - whole
            k1 = a
            k2 = a
            k3 = a
            for j in range(m):
                at = _interp_1d(<double>(j + 1), cum, arc, a, last, &k1)
                out_at[o + j] = at
                out_uv[o + j, 0] = _interp_col(at, arc, uv, 0, a, last, &k2)
                out_uv[o + j, 1] = _interp_col(at, arc, uv, 1, a, last, &k3)


# --- candidate stamp centres along chart paths (coverage.pen_fit.candidate_arcs, many at once)

cdef inline Py_ssize_t _arange_length(double start, double stop, double step) noexcept nogil:
    # len(numpy.arange(start, stop, step)) for floats: ceil((stop - start) / step), 0 if below 1
    cdef double delta = stop - start, n = delta / step
    if n == 0.0 and delta != 0.0:
        return 0 if signbit(n) else 1
    n = ceil(n)
    if not (n > 0.0):          # below 1, or NaN
        return 0
    return <Py_ssize_t>n


def candidate_counts(const double[::1] s, const int64_t[::1] starts, double start, double step,
                     int64_t[::1] counts):
    """Path p covers rows starts[p]:starts[p + 1] of its chart arc lengths s (0 at its first
    row). counts[p] = how many candidate centres candidate_arcs gives it: none under two rows
    or with s_end <= 0, else len(numpy.arange(start, s_end, step)), or 1 where that is 0."""
    cdef Py_ssize_t p, a, b, n
    with nogil:
        for p in range(starts.shape[0] - 1):
            a = starts[p]
            b = starts[p + 1]
            counts[p] = 0
            if b - a < 2 or not (s[b - 1] > 0.0):
                continue
            n = _arange_length(start, s[b - 1], step)
            counts[p] = n if n > 0 else 1


def candidate_fill(const double[:, ::1] uv, const double[::1] s, const int64_t[::1] starts, double start,
                   double step, const int64_t[::1] out_starts, double[:, ::1] out_uv, double[::1] out_at):
    """Path p's candidate centres into rows out_starts[p]:out_starts[p + 1] (candidate_counts'
    counts): at = numpy.arange(start, s_end, step) as numpy fills it (start, start + step,
    then start + k * ((start + step) - start)), or [0.5 * s_end] where that is empty; each
    centre numpy.interp(at, s, uv[:, c]) per column."""
    cdef Py_ssize_t p, a, b, o, m, k, j
    cdef double at, delta
    with nogil:
        for p in range(starts.shape[0] - 1):
            a = starts[p]
            b = starts[p + 1]
            o = out_starts[p]
            m = out_starts[p + 1] - o
            if m <= 0:
                continue
            if _arange_length(start, s[b - 1], step) == 0:
                at = 0.5 * s[b - 1]
                j = a
                out_at[o] = at
                out_uv[o, 0] = _interp_col(at, s, uv, 0, a, b - 1, &j)
                out_uv[o, 1] = _interp_col(at, s, uv, 1, a, b - 1, &j)
                continue
            delta = (start + step) - start
            j = a
            for k in range(m):
                if k == 0:
                    at = start
                elif k == 1:
                    at = start + step
                else:
                    at = start + k * delta
                out_at[o + k] = at
                out_uv[o + k, 0] = _interp_col(at, s, uv, 0, a, b - 1, &j)
                out_uv[o + k, 1] = _interp_col(at, s, uv, 1, a, b - 1, &j)
