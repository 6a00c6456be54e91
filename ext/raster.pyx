# distutils: extra_compile_args = -ffp-contract=off
# Chart raster reads: the value of a regular grid's cell under each chart point.
# Inputs are C-contiguous and already validated by coverage.raster.
# The points are built here with NumPy's arithmetic, one rounding per operation in the
# order the reference writes it: no fused multiply-add (-ffp-contract=off above).
from libc.math cimport rint, sqrt, frexp, ceil, NAN
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from _locate cimport _locate_one


cdef inline double _inverse(double cell) noexcept nogil:
    """1 / cell where dividing by cell is multiplying by it exactly (cell a power of two whose
    inverse is a normal double: x / cell and x * (1 / cell) are then the same real number,
    rounded once), else 0 (divide)."""
    cdef int e
    cdef double inv
    if not (cell > 0.0 and cell < 1e300 and cell > 1e-300):
        return 0.0
    if frexp(cell, &e) != 0.5:
        return 0.0
    inv = 1.0 / cell
    if inv * cell != 1.0 or not (inv < 1e300 and inv > 1e-300):
        return 0.0
    return inv


cdef inline int64_t _cell(double u, double v, double u0, double v0, double cell, double inv,
                          Py_ssize_t w, Py_ssize_t h) noexcept nogil:
    """Flat index row * w + col of the cell holding (u, v), or -1 off the grid or at NaN.

    The same arithmetic as the NumPy reference, floor((p - origin) / cell) with a true
    division (a multiplication by ``inv`` where that is the same: see _inverse), without
    calling floor: for x >= 0, floor(x) >= 0 always and floor(x) < w exactly when x < w, and
    the cast truncates to floor. Compared as doubles before the cast: NaN fails every
    comparison and a huge value (or an infinity) does not fit an int64.
    """
    cdef double fu, fv
    if inv != 0.0:
        fu = (u - u0) * inv
        fv = (v - v0) * inv
    else:
        fu = (u - u0) / cell
        fv = (v - v0) / cell
    if not (fu >= 0.0 and fv >= 0.0 and fu < <double>w and fv < <double>h):
        return -1
    return <int64_t>fv * w + <int64_t>fu


cdef inline double _least(double m, double x, Py_ssize_t j) noexcept nogil:
    # numpy.min: the first value, then any smaller one; a NaN wins and stays
    if j == 0 or x < m or x != x:
        return x
    return m


cdef inline double _least_gathered(const double* flat, const int64_t* idx, const unsigned char* keep, Py_ssize_t m,
                                   double outside) noexcept nogil:
    # the least of the raster over cells found already (outside where not kept), as _least
    # takes them in order; a NaN ends it
    cdef Py_ssize_t j
    cdef double x, least = 0.0
    for j in range(m):
        x = flat[idx[j]] if keep[j] else outside
        least = _least(least, x, j)
        if least != least:
            break
    return least


def nearest(const double[:, ::1] values, const double[:, ::1] uv, double u0, double v0, double cell,
            double outside, double[::1] out):
    """out[i] = values[row, col] of the cell under uv[i], ``outside`` off the grid.

    In blocks: the cells of a block's points first (branch-free: a point off the grid reads
    cell 0 and is then given ``outside``), then their values."""
    cdef Py_ssize_t i, k, b, nb, n = uv.shape[0], h = values.shape[0], w = values.shape[1]
    cdef double fu, fv
    cdef bint on
    cdef int64_t idx[256]
    cdef unsigned char keep[256]
    cdef const double* flat = &values[0, 0] if h > 0 and w > 0 else NULL
    cdef const double* pts = &uv[0, 0] if n > 0 else NULL
    cdef double inv = _inverse(cell)
    cdef double fw = <double>w, fh = <double>h
    if flat == NULL:
        for i in range(n):
            out[i] = outside
        return
    with nogil:
        for b in range(0, n, 256):
            nb = n - b if n - b < 256 else 256
            for k in range(nb):
                if inv != 0.0:
                    fu = (pts[2 * (b + k)] - u0) * inv
                    fv = (pts[2 * (b + k) + 1] - v0) * inv
                else:
                    fu = (pts[2 * (b + k)] - u0) / cell
                    fv = (pts[2 * (b + k) + 1] - v0) / cell
                on = fu >= 0.0 and fv >= 0.0 and fu < fw and fv < fh
                keep[k] = on
                if not on:
                    fu = 0.0
                    fv = 0.0
                idx[k] = <int64_t>fv * w + <int64_t>fu
            for k in range(nb):
                out[b + k] = flat[idx[k]] if keep[k] else outside


def cells(const double[:, ::1] uv, double u0, double v0, double cell, int64_t w, int64_t h,
          int64_t[::1] out):
    """out[i] = flat index row * w + col of the cell under uv[i], -1 off the grid."""
    cdef Py_ssize_t i
    cdef double inv = _inverse(cell)
    with nogil:
        for i in range(uv.shape[0]):
            out[i] = _cell(uv[i, 0], uv[i, 1], u0, v0, cell, inv, w, h)


def nearest_min(const double[:, ::1] values, const double[:, ::1] uv, Py_ssize_t group,
                double u0, double v0, double cell, double outside, double[::1] out):
    """out[g] = min over uv[g * group:(g + 1) * group] of ``nearest`` (a NaN value wins,
    as numpy.min lets it)."""
    cdef Py_ssize_t g, j, h = values.shape[0], w = values.shape[1]
    cdef int64_t c
    cdef double x, m
    cdef const double* flat = &values[0, 0] if h > 0 and w > 0 else NULL
    cdef double inv = _inverse(cell)
    with nogil:
        for g in range(out.shape[0]):
            m = 0.0
            for j in range(group):
                c = _cell(uv[g * group + j, 0], uv[g * group + j, 1], u0, v0, cell, inv, w, h)
                x = outside if c < 0 else flat[c]
                m = _least(m, x, j)
                if m != m:
                    break
            out[g] = m


cdef inline int64_t _cell_or_zero(double u, double v, double u0, double v0, double cell, double inv,
                                  double fw, double fh, Py_ssize_t w, unsigned char* on) noexcept nogil:
    """_cell without a branch on the result: the cell, or 0 with on[0] = 0 off the grid or at NaN."""
    cdef double fu, fv
    cdef bint ok
    if inv != 0.0:
        fu = (u - u0) * inv
        fv = (v - v0) * inv
    else:
        fu = (u - u0) / cell
        fv = (v - v0) / cell
    ok = fu >= 0.0 and fv >= 0.0 and fu < fw and fv < fh
    on[0] = ok
    if not ok:
        fu = 0.0
        fv = 0.0
    return <int64_t>fv * w + <int64_t>fu


def offset_min(const double[:, ::1] values, const double[:, ::1] uv, const double[:, ::1] direction,
               const double[::1] scale, bint scaled, const double[::1] offsets,
               double u0, double v0, double cell, double outside, double[::1] out):
    """out[i] = min over j of the raster at uv[i] + (offsets[j] * scale[i]) * direction[i]
    (``scaled`` false: uv[i] + offsets[j] * direction[i]).

    Each point's cells first (up to 512 offsets: branch-free), then their values."""
    cdef Py_ssize_t i, j, h = values.shape[0], w = values.shape[1], m = offsets.shape[0]
    cdef int64_t c
    cdef double f, x, least, u, v, du, dv, sc
    cdef const double* flat = &values[0, 0] if h > 0 and w > 0 else NULL
    cdef double inv = _inverse(cell)
    cdef double fw = <double>w, fh = <double>h
    cdef int64_t idx[512]
    cdef unsigned char keep[512]
    cdef bint blocked = m <= 512 and flat != NULL
    with nogil:
        for i in range(uv.shape[0]):
            least = 0.0
            u = uv[i, 0]
            v = uv[i, 1]
            du = direction[i, 0]
            dv = direction[i, 1]
            sc = scale[i] if scaled else 1.0
            if blocked:
                for j in range(m):
                    f = offsets[j] * sc if scaled else offsets[j]
                    idx[j] = _cell_or_zero(u + f * du, v + f * dv, u0, v0, cell, inv, fw, fh, w, &keep[j])
                out[i] = _least_gathered(flat, idx, keep, m, outside)
                continue
            for j in range(m):
                f = offsets[j] * sc if scaled else offsets[j]
                c = _cell(u + f * du, v + f * dv, u0, v0, cell, inv, w, h)
                x = outside if c < 0 else flat[c]
                least = _least(least, x, j)
                if least != least:
                    break
            out[i] = least


def rect_min(const double[:, ::1] values, const double[:, ::1] uv, const double[:, ::1] dir_a,
             const double[:, ::1] dir_b, const double[::1] off_a, const double[::1] off_b,
             double u0, double v0, double cell, double outside, double[::1] out):
    """out[i] = min over j of the raster at (uv[i] + off_a[j] * dir_a[i]) + off_b[j] * dir_b[i].

    Each point's cells first (up to 512 offsets: branch-free), then their values."""
    cdef Py_ssize_t i, j, h = values.shape[0], w = values.shape[1], m = off_a.shape[0]
    cdef int64_t c
    cdef double pu, pv, x, least, u, v, au, av, bu, bv
    cdef const double* flat = &values[0, 0] if h > 0 and w > 0 else NULL
    cdef double inv = _inverse(cell)
    cdef double fw = <double>w, fh = <double>h
    cdef int64_t idx[512]
    cdef unsigned char keep[512]
    cdef bint blocked = m <= 512 and flat != NULL
    with nogil:
        for i in range(uv.shape[0]):
            least = 0.0
            u = uv[i, 0]
            v = uv[i, 1]
            au = dir_a[i, 0]
            av = dir_a[i, 1]
            bu = dir_b[i, 0]
            bv = dir_b[i, 1]
            if blocked:
                for j in range(m):
                    pu = (u + off_a[j] * au) + off_b[j] * bu
                    pv = (v + off_a[j] * av) + off_b[j] * bv
                    idx[j] = _cell_or_zero(pu, pv, u0, v0, cell, inv, fw, fh, w, &keep[j])
                out[i] = _least_gathered(flat, idx, keep, m, outside)
                continue
            for j in range(m):
                pu = (u + off_a[j] * au) + off_b[j] * bu
                pv = (v + off_a[j] * av) + off_b[j] * bv
                c = _cell(pu, pv, u0, v0, cell, inv, w, h)
                x = outside if c < 0 else flat[c]
                least = _least(least, x, j)
                if least != least:
                    break
            out[i] = least


cdef inline double _column_read(const double[:, ::1] field, double x, Py_ssize_t k, double v0, double step,
                                double nan) noexcept nogil:
    # field[rint((x - v0) / step), k]: the nearest row, halves to even as numpy.round; NaN off
    # the rows or at NaN (which fails both comparisons)
    cdef double r = rint((x - v0) / step)
    if r >= 0.0 and r < <double>field.shape[0]:
        return field[<Py_ssize_t>r, k]
    return nan


cdef inline double _column_read_lazy(const double[:, ::1] field, double x, Py_ssize_t k, double v0, double step,
                                     double nan, FrameFill lazy) noexcept nogil:
    # _column_read, the cell filled first where ``lazy`` (the field's FrameFill) has not yet
    cdef double r = rint((x - v0) / step)
    cdef Py_ssize_t i
    if r >= 0.0 and r < <double>field.shape[0]:
        if lazy is not None:
            i = <Py_ssize_t>r * field.shape[1] + k
            if not lazy.known[i]:
                lazy.fill(i)
        return field[<Py_ssize_t>r, k]
    return nan


def column_values(const double[:, ::1] field, const double[::1] v, double v0, double step, double[::1] out):
    """out[k] = field[rint((v[k] - v0) / step), k]: column k read at height v[k], NaN off the
    rows or at NaN."""
    cdef Py_ssize_t k
    cdef double nan = float("nan")
    with nogil:
        for k in range(v.shape[0]):
            out[k] = _column_read(field, v[k], k, v0, step, nan)


cdef inline Py_ssize_t _clipped(double x, Py_ssize_t n) noexcept nogil:
    """numpy's clip(floor(x).astype(int64), 0, n - 1).

    NaN and values at or beyond 2**63 cast to the int64 minimum (as numpy does on x86-64),
    which clips to 0; a negative x floors below 0 and clips to 0 too.
    """
    if x != x or x >= 9223372036854775808.0 or x < 0.0:
        return 0
    if x >= <double>n:
        return n - 1
    return <Py_ssize_t>x


cdef inline Py_ssize_t _band_cell(const double[:, ::1] uv, const double[:, ::1] across, const double[::1] half,
                                  const double[::1] scale, double f, Py_ssize_t i, double u0, double v0,
                                  double cell, Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    # uv + ((f * half) / scale) * across, then its clipped cell (flat)
    cdef double t = (f * half[i]) / scale[i]
    cdef double pu = uv[i, 0] + t * across[i, 0], pv = uv[i, 1] + t * across[i, 1]
    return _clipped((pv - v0) / cell, h) * w + _clipped((pu - u0) / cell, w)


def band_taken(const unsigned char[:, ::1] taken, const double[:, ::1] uv, const double[:, ::1] across,
               const double[::1] half, const double[::1] scale, const double[::1] f,
               double u0, double v0, double cell, unsigned char[::1] out):
    """out[i] = 1 if any cell under uv[i] + ((f[j] * half[i]) / scale[i]) * across[i] is taken
    (points off the grid clipped onto its border)."""
    cdef Py_ssize_t i, j, h = taken.shape[0], w = taken.shape[1]
    cdef const unsigned char* flat = &taken[0, 0] if h > 0 and w > 0 else NULL
    with nogil:
        for i in range(uv.shape[0]):
            out[i] = 0
            for j in range(f.shape[0]):
                if flat[_band_cell(uv, across, half, scale, f[j], i, u0, v0, cell, h, w)]:
                    out[i] = 1
                    break


def band_take(unsigned char[:, ::1] taken, const double[:, ::1] uv, const double[:, ::1] across,
              const double[::1] half, const double[::1] scale, const double[::1] f,
              double u0, double v0, double cell):
    """Mark taken every cell under uv[i] + ((f[j] * half[i]) / scale[i]) * across[i]."""
    cdef Py_ssize_t i, j, h = taken.shape[0], w = taken.shape[1]
    cdef unsigned char* flat = &taken[0, 0] if h > 0 and w > 0 else NULL
    with nogil:
        for i in range(uv.shape[0]):
            for j in range(f.shape[0]):
                flat[_band_cell(uv, across, half, scale, f[j], i, u0, v0, cell, h, w)] = 1


cdef Py_ssize_t _column_mode(const int64_t[:, ::1] codes, const double[::1] v, double v0, double step,
                             int64_t[::1] counts, FrameFill lazy=None) noexcept nogil:
    cdef Py_ssize_t k, i, rows = codes.shape[0], levels = counts.shape[0], best = -1
    cdef double r
    cdef int64_t c
    for k in range(levels):
        counts[k] = 0
    for k in range(v.shape[0]):
        r = rint((v[k] - v0) / step)
        if r >= 0.0 and r < <double>rows:
            if lazy is not None:
                i = <Py_ssize_t>r * codes.shape[1] + k
                if not lazy.known[i]:
                    lazy.fill(i)
            c = codes[<Py_ssize_t>r, k]
            if c >= levels:
                return -2       # a code beyond the levels: the caller refuses it
            if c >= 0:
                counts[c] += 1
    for k in range(levels):
        if counts[k] > 0 and (best < 0 or counts[k] > counts[best]):
            best = k
    return best


def column_mode(const int64_t[:, ::1] codes, const double[::1] v, double v0, double step,
                int64_t[::1] counts, FrameFill lazy=None):
    """The most frequent code >= 0 among codes[rint((v[k] - v0) / step), k] over the columns
    k (rows off the grid or at NaN and negative codes skipped), the smallest on a tie; -1 if
    none. ``counts`` (one per code) is scratch."""
    cdef Py_ssize_t best
    with nogil:
        best = _column_mode(codes, v, v0, step, counts, lazy)
    return best


cdef void _column_step(const double[:, ::1] scale, const double[::1] v, double v0, double step, double c,
                       double[::1] out, FrameFill lazy=None) noexcept nogil:
    cdef Py_ssize_t k
    cdef double lam, nxt, lam_next
    cdef double nan = NAN
    for k in range(v.shape[0]):
        lam = _column_read_lazy(scale, v[k], k, v0, step, nan, lazy)
        nxt = v[k] + c / lam
        lam_next = _column_read_lazy(scale, nxt, k, v0, step, nan, lazy)
        if lam_next - lam_next == 0.0:      # finite (inf - inf and NaN - NaN are NaN)
            out[k] = v[k] + c / ((lam + lam_next) / 2.0)
        else:
            out[k] = v[k] + c / lam


def column_step(const double[:, ::1] scale, const double[::1] v, double v0, double step, double c,
                double[::1] out):
    """out[k] = v[k] + c / lam_k, lam_k the mean of the field ``scale`` read (as column_values
    reads) at v[k] and at v[k] + c / scale(v[k]) (the first alone where the second is not
    finite): one line of constant skin distance c beyond another."""
    with nogil:
        _column_step(scale, v, v0, step, c, out)


cdef inline Py_ssize_t _nearest_index(Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    if i < 0:
        return 0
    if i >= n:
        return n - 1
    return i


cdef double _line_step(const double[:, ::1] scale, const int64_t[:, ::1] codes, const double[::1] levels,
                       const double[::1] v, double v0, double step, double sign, double w0, bint forced,
                       double forced_mm, double fallback_mm, const double[::1] weights, int64_t[::1] counts,
                       double[::1] nxt, double[::1] ok, double[::1] val, double[::1] out,
                       int64_t[::1] status, FrameFill lazy=None) noexcept nogil:
    """:func:`line_step`'s body (status[0] = 1 and an early return on a code beyond the levels)."""
    cdef Py_ssize_t it, k, jj, n = v.shape[0], r = weights.shape[0] // 2
    cdef Py_ssize_t mode
    cdef double w1 = w0, was, acc_w, acc_t, x
    cdef bint any_finite = False
    cdef double nan = NAN
    for it in range(3):
        _column_step(scale, v, v0, step, sign * ((w0 + w1) / 2.0), nxt, lazy)
        was = w1
        if forced:
            w1 = forced_mm
        else:
            mode = _column_mode(codes, nxt, v0, step, counts, lazy)
            if mode == -2:
                status[0] = 1
                return w1
            w1 = fallback_mm if mode < 0 else levels[mode]
        if w1 == was:
            break
    for k in range(n):
        x = nxt[k]
        if x - x == 0.0:
            ok[k] = 1.0
            val[k] = x
            any_finite = True
        else:
            ok[k] = 0.0
            val[k] = 0.0
    if not any_finite:
        for k in range(n):
            out[k] = nxt[k]
    else:
        for k in range(n):
            if ok[k] == 0.0:
                out[k] = nan
                continue
            acc_w = ok[k] * weights[r]
            acc_t = val[k] * weights[r]
            for jj in range(-r, 0):
                acc_w += (ok[_nearest_index(k + jj, n)] + ok[_nearest_index(k - jj, n)]) * weights[r + jj]
                acc_t += (val[_nearest_index(k + jj, n)] + val[_nearest_index(k - jj, n)]) * weights[r + jj]
            out[k] = acc_t / acc_w
    return w1


def line_step(const double[:, ::1] scale, const int64_t[:, ::1] codes, const double[::1] levels,
              const double[::1] v, double v0, double step, double sign, double w0, bint forced,
              double forced_mm, double fallback_mm, const double[::1] weights, int64_t[::1] counts,
              double[::1] nxt, double[::1] ok, double[::1] val, double[::1] out, int64_t[::1] status,
              FrameFill lazy=None):
    """One step of the roller's line placement; returns the next line's design w1 and writes
    the next line, smoothed, to ``out``.

    Up to three rounds: nxt = column_step(scale, v, v0, step, sign * ((w0 + w1) / 2)) and w1
    the design there (``forced_mm`` if ``forced``, else levels[column_mode(codes, nxt)],
    ``fallback_mm`` where no code is read), until w1 settles. Then the Gaussian smoothing of
    nxt that ignores (and keeps) its NaN: correlations (scipy.ndimage.correlate1d, mode
    nearest, its symmetric path with the arithmetic in its order) of the finite mask and of
    the finite values with ``weights`` (odd, symmetric), divided; NaN where nxt is not
    finite, nxt itself if nothing is finite. ``counts`` (one per level), ``nxt``, ``ok`` and
    ``val`` (one per column) are scratch; status[0] is set to 1 (and nothing else is
    meaningful) if a code read is not below the number of levels.
    """
    cdef double w1
    with nogil:
        w1 = _line_step(scale, codes, levels, v, v0, step, sign, w0, forced, forced_mm, fallback_mm, weights,
                        counts, nxt, ok, val, out, status, lazy)
    return w1


def line_walk(const double[:, ::1] scale, const int64_t[:, ::1] codes, const double[::1] levels,
              const double[::1] v, double v0, double step, double sign, double w0, bint forced,
              double forced_mm, double fallback_mm, const double[::1] weights, double lo, double hi,
              int64_t[::1] counts, double[::1] nxt, double[::1] ok, double[::1] val,
              double[:, ::1] lines, double[::1] designs, int64_t[::1] status, FrameFill lazy=None):
    """Lines stepped one after another from ``v`` (design ``w0``) by :func:`line_step`, each
    from the one before, into ``lines[i]`` and ``designs[i]``, while a line has a column
    inside ``[lo, hi]`` (finite): returns how many were kept. The first line with no
    column inside ends the walk unkept; the walk also ends when ``lines`` is full (the
    caller goes on from the last line). status[0] = 1 (nothing meaningful) as line_step's."""
    cdef Py_ssize_t i = 0, k, n = v.shape[0], cap = lines.shape[0]
    cdef double w = w0, x
    cdef bint inside
    with nogil:
        while i < cap:
            if i == 0:
                w = _line_step(scale, codes, levels, v, v0, step, sign, w, forced, forced_mm, fallback_mm, weights,
                               counts, nxt, ok, val, lines[0], status, lazy)
            else:
                w = _line_step(scale, codes, levels, lines[i - 1], v0, step, sign, w, forced, forced_mm,
                               fallback_mm, weights, counts, nxt, ok, val, lines[i], status, lazy)
            if status[0]:
                break
            inside = False
            for k in range(n):
                x = lines[i, k]
                if x - x == 0.0 and x >= lo and x <= hi:
                    inside = True
                    break
            if not inside:
                break
            designs[i] = w
            i += 1
    return i


cdef inline int64_t _floor_div(int64_t a, int64_t b) noexcept nogil:
    # floor(a / b) for b > 0
    cdef int64_t q = a // b
    if (a % b != 0) and (a < 0):
        q -= 1
    return q


def clearance(const unsigned char[:, ::1] away, double cell, double slack, double[:, ::1] out,
              int64_t[:, ::1] g, int64_t[::1] s, int64_t[::1] t):
    """out[y, x] = sqrt(d2) * cell - slack where away[y, x], d2 the exact squared distance (in
    cells) to the nearest cell not away; -1.0 elsewhere. Meijster's two passes in integer
    arithmetic (exact); the grid must hold at least one cell not away. ``g`` (h, w), ``s``
    and ``t`` (w,) are scratch."""
    cdef Py_ssize_t h = away.shape[0], w = away.shape[1], x, y, q, u
    cdef int64_t inf = h + w, sep, d2, gi, gu
    with nogil:
        # columns: distance to the nearest cell not away above or below (inf if none)
        # (row by row, each column on its own)
        for x in range(w):
            g[0, x] = inf if away[0, x] else 0
        for y in range(1, h):
            for x in range(w):
                if away[y, x]:
                    g[y, x] = g[y - 1, x] + 1 if g[y - 1, x] < inf else inf
                else:
                    g[y, x] = 0
        for y in range(h - 2, -1, -1):
            for x in range(w):
                if g[y + 1, x] < g[y, x]:
                    g[y, x] = g[y + 1, x] + 1
        # rows: the lower envelope of the parabolas (x - i)^2 + g(i)^2
        for y in range(h):
            q = 0
            s[0] = 0
            t[0] = 0
            for u in range(1, w):
                gu = g[y, u]
                while q >= 0:
                    gi = g[y, s[q]]
                    if (t[q] - s[q]) * (t[q] - s[q]) + gi * gi > (t[q] - u) * (t[q] - u) + gu * gu:
                        q -= 1
                    else:
                        break
                if q < 0:
                    q = 0
                    s[0] = u
                else:
                    gi = g[y, s[q]]
                    sep = 1 + _floor_div(u * u - s[q] * s[q] + gu * gu - gi * gi, 2 * (u - s[q]))
                    if sep < w:
                        q += 1
                        s[q] = u
                        t[q] = sep
            for u in range(w - 1, -1, -1):
                if away[y, u]:
                    gi = g[y, s[q]]
                    d2 = (u - s[q]) * (u - s[q]) + gi * gi
                    out[y, u] = sqrt(<double>d2) * cell - slack
                else:
                    out[y, u] = -1.0
                if u == t[q]:
                    q -= 1


def skin_frame(const double[:, :, ::1] jac, const double[:, ::1] normal, const double[:, :, ::1] pinv,
               const int64_t[::1] tri, const double[:, ::1] travel, const double[::1] scale, double limit,
               double[:, ::1] along, double[:, ::1] across):
    """Chart vectors of one skin millimetre along a chart travel direction and across it, per
    sample, from its triangle's Jacobian ``jac (m, 3, 2)``, unit normal ``(m, 3)`` and
    pseudo-inverse ``pinv (m, 2, 3)`` (coverage.roller.skin_frame_reference, with NumPy's
    arithmetic in its order: einsum sums from zero (three terms as (t0 + t2) + t1), norm =
    sqrt((s0 + s1) + s2), cross
    a1 b2 - a2 b1); ``travel / scale`` and its left turn ``/ scale`` off the chart
    (tri < 0) or where the frame is not finite or not below ``limit`` per mm."""
    cdef Py_ssize_t k, t, i
    cdef double t0, t1, sc, s0, s1, s2, nrm, length, l0, l1, l2, u0, u1, u2, p0, p1, q
    with nogil:
        for k in range(tri.shape[0]):
            t0 = travel[k, 0]
            t1 = travel[k, 1]
            sc = scale[k]
            along[k, 0] = t0 / sc
            along[k, 1] = t1 / sc
            across[k, 0] = -t1 / sc
            across[k, 1] = t0 / sc
            t = tri[k]
            if t < 0:
                continue
            # skin_t = jac @ travel
            s0 = 0.0
            s0 += jac[t, 0, 0] * t0
            s0 += jac[t, 0, 1] * t1
            s1 = 0.0
            s1 += jac[t, 1, 0] * t0
            s1 += jac[t, 1, 1] * t1
            s2 = 0.0
            s2 += jac[t, 2, 0] * t0
            s2 += jac[t, 2, 1] * t1
            nrm = sqrt((s0 * s0 + s1 * s1) + s2 * s2)
            if nrm != nrm or nrm >= 1e-9:
                length = nrm
            else:
                length = 1e-9
            u0 = s0 / length
            u1 = s1 / length
            u2 = s2 / length
            # left = normal x unit skin_t
            l0 = normal[t, 1] * u2 - normal[t, 2] * u1
            l1 = normal[t, 2] * u0 - normal[t, 0] * u2
            l2 = normal[t, 0] * u1 - normal[t, 1] * u0
            # einsum's three-term sum pairs the first and last terms, then adds the middle one
            p0 = 0.0
            p0 += pinv[t, 0, 0] * l0 + pinv[t, 0, 2] * l2
            p0 += pinv[t, 0, 1] * l1
            p1 = 0.0
            p1 += pinv[t, 1, 0] * l0 + pinv[t, 1, 2] * l2
            p1 += pinv[t, 1, 1] * l1
            if not (p0 - p0 == 0.0 and p1 - p1 == 0.0):
                continue
            q = sqrt(p0 * p0 + p1 * p1)
            if not (q < limit):
                continue
            along[k, 0] = t0 / length
            along[k, 1] = t1 / length
            across[k, 0] = p0
            across[k, 1] = p1


def symmetric(const double[::1] weights):
    """Whether scipy.ndimage.correlate1d takes its symmetric path for these weights: an odd
    count, each pair around the middle within DBL_EPSILON of each other."""
    cdef Py_ssize_t n = weights.shape[0], r = n // 2, i
    cdef double d
    if n % 2 == 0:
        return False
    for i in range(1, r + 1):
        d = weights[r + i] - weights[r - i]
        if not (d <= 2.220446049250313e-16 and -d <= 2.220446049250313e-16):
            return False
    return True


cdef inline double _lesser(double a, double b) noexcept nogil:
    return a if a < b else b


def window_min(const double[::1] x, const int64_t[::1] first, const int64_t[::1] stop, Py_ssize_t reach,
               double[::1] out):
    """out[i] = min of x over rows max(a, i - reach) .. min(b - 1, i + reach) of the path a:b
    holding row i (first[p]:stop[p] per path; rows in no path are left as they are):
    scipy.ndimage.minimum_filter1d(x[a:b], 2 * reach + 1, mode="nearest") of each path, for
    values without NaN.

    Van Herk's blocks (as SciPy's filter does): the path cut into blocks of k = 2 reach + 1
    rows from its first, each row's least from its block's start (ahead) and to its block's
    end or the path's (behind); a window of k rows spans at most two blocks, the least of
    the behind value at its first row and the ahead value at its last; a window clipped at
    the path's start begins a block (the ahead value at its last row), one clipped at its
    end runs to the path's end (the behind value at its first row). Three comparisons a
    row whatever the reach, no branch on the values; the least is a value of x (exact)."""
    cdef Py_ssize_t p, i, a, n, k = 2 * reach + 1, lo, hi, start, end, lo_at, hi_at, longest = 0
    cdef double* ahead
    cdef double* behind
    for p in range(first.shape[0]):
        if stop[p] - first[p] > longest:
            longest = stop[p] - first[p]
    if longest == 0:
        return
    ahead = <double*>malloc(2 * longest * sizeof(double))
    if ahead == NULL:
        raise MemoryError()
    behind = ahead + longest
    with nogil:
        for p in range(first.shape[0]):
            a = first[p]
            n = stop[p] - a
            # rows of the path counted from 0, in blocks start:end of k rows (the last shorter)
            start = 0
            while start < n:
                end = start + k if start + k < n else n
                ahead[start] = x[a + start]
                for i in range(start + 1, end):
                    ahead[i] = _lesser(ahead[i - 1], x[a + i])
                behind[end - 1] = x[a + end - 1]
                for i in range(end - 2, start - 1, -1):
                    behind[i] = _lesser(behind[i + 1], x[a + i])
                start = end
            # the window lo..hi of each row, and where each end sits in its block (0 .. k - 1):
            # both ends move on by at most one row a step
            lo = 0
            lo_at = 0
            hi = reach if reach < n - 1 else n - 1
            hi_at = hi % k if n > 0 else 0
            for i in range(n):
                if i > 0:
                    if i - reach > 0:
                        lo += 1
                        lo_at += 1
                        if lo_at == k:
                            lo_at = 0
                    if hi < n - 1:
                        hi += 1
                        hi_at += 1
                        if hi_at == k:
                            hi_at = 0
                if hi - hi_at != lo - lo_at:        # two blocks
                    out[a + i] = _lesser(behind[lo], ahead[hi])
                elif lo_at == 0:                    # one block, from its start
                    out[a + i] = ahead[hi]
                else:                               # one block, to the path's end
                    out[a + i] = behind[lo]
    free(ahead)


cdef inline Py_ssize_t _linspace(double[::1] f, double hm, double step) noexcept nogil:
    # numpy.linspace(-1.0, 1.0, max(ceil((hm * 2) / step) + 1, 2)) into f; returns its count
    cdef Py_ssize_t m = <Py_ssize_t>ceil((hm * 2.0) / step) + 1, j
    cdef double d
    if m < 2:
        m = 2
    d = 2.0 / <double>(m - 1)
    for j in range(m - 1):
        f[j] = <double>j * d + -1.0
    f[m - 1] = 1.0
    return m


cdef inline Py_ssize_t _band_at(double u, double v, double au, double av, double half, double scale, double f,
                                double u0, double v0, double cell, Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    # the clipped cell (flat) of uv + ((f * half) / scale) * across, as _band_cell
    cdef double t = (f * half) / scale
    cdef double pu = u + t * au, pv = v + t * av
    return _clipped((pv - v0) / cell, h) * w + _clipped((pu - u0) / cell, w)


cdef inline double _half(double swath, double inset) noexcept nogil:
    # numpy.maximum(swath / 2.0 - inset, 0.0)
    cdef double x = swath / 2.0 - inset
    if x >= 0.0 or x != x:
        return x
    return 0.0


def claim_bands(unsigned char[:, ::1] taken, const double[:, ::1] uv, const double[:, ::1] across,
                const double[::1] scale, const double[::1] swath, const int64_t[::1] starts,
                const double[::1] inset, double u0, double v0, double cell, double path_step,
                double min_stroke, double[::1] f, unsigned char[::1] free, int64_t[::1] out_run,
                int64_t[::1] out_a, int64_t[::1] out_b):
    """Runs claimed in order against an occupancy raster (coverage.roller.claim_reference).

    Run r is rows starts[r]:starts[r + 1] (chart points ``uv``, its frame ``across`` and
    ``scale``, its band ``swath``). Its samples are free where no cell under their band, inset
    by ``inset[r]`` (linspace(-1, 1, ...) across it at ``cell`` steps), is taken; each free
    stretch at least ``min_stroke`` long (``path_step`` between samples) is kept and its full
    band (at ``cell / 2`` steps) taken, with the stretch's own frame at its ends (one-sided
    differences, as a path of its own). Returns the count of kept stretches
    (out_run, out_a, out_b: the run and its rows a:b, counted within the run). ``f`` (enough
    for the widest band) and ``free`` (one per row) are scratch.
    """
    cdef Py_ssize_t r, i, i2, j, s, e, a, b, m, count = 0, h = taken.shape[0], w = taken.shape[1]
    cdef double hm, x, t0, t1, nrm, au, av
    cdef unsigned char* flat = &taken[0, 0]
    with nogil:
        for r in range(starts.shape[0] - 1):
            s = starts[r]
            e = starts[r + 1]
            if e <= s:
                continue
            hm = 0.0
            for i in range(s, e):
                x = _half(swath[i], inset[r])
                if x > hm or x != x:
                    hm = x
            m = _linspace(f, hm, cell)
            for i in range(s, e):
                free[i] = 1
                x = _half(swath[i], inset[r])
                for j in range(m):
                    if flat[_band_at(uv[i, 0], uv[i, 1], across[i, 0], across[i, 1], x, scale[i], f[j],
                                     u0, v0, cell, h, w)]:
                        free[i] = 0
                        break
            i = s
            while i < e:
                if not free[i]:
                    i += 1
                    continue
                a = i
                while i < e and free[i]:
                    i += 1
                b = i
                if <double>(b - a - 1) * path_step < min_stroke:
                    continue
                out_run[count] = r
                out_a[count] = a - s
                out_b[count] = b - s
                count += 1
                hm = 0.0
                for j in range(a, b):
                    x = _half(swath[j], 0.0)
                    if x > hm or x != x:
                        hm = x
                m = _linspace(f, hm, cell / 2.0)
                for j in range(a, b):
                    au = across[j, 0]
                    av = across[j, 1]
                    if (j == a and a > s) or (j == b - 1 and b < e):
                        # the stretch's own end: a one-sided difference, as a path of its own
                        if j == a:
                            t0 = uv[a + 1, 0] - uv[a, 0]
                            t1 = uv[a + 1, 1] - uv[a, 1]
                        else:
                            t0 = uv[b - 1, 0] - uv[b - 2, 0]
                            t1 = uv[b - 1, 1] - uv[b - 2, 1]
                        nrm = sqrt(t0 * t0 + t1 * t1)
                        if not (nrm >= 1e-12 or nrm != nrm):
                            nrm = 1e-12
                        t0 = t0 / nrm
                        t1 = t1 / nrm
                        au = -t1
                        av = t0
                    x = _half(swath[j], 0.0)
                    for i2 in range(m):
                        flat[_band_at(uv[j, 0], uv[j, 1], au, av, x, scale[j], f[i2], u0, v0, cell, h, w)] = 1
    return count


def frame_fields(const double[:, ::1] chart, const double[:, ::1] affine, const int64_t[::1] cell_start,
                 const int64_t[::1] cell_items, double gu0, double gv0, double gcell, int64_t nu, int64_t nv,
                 double eps, const double[::1] linear_scale, const int64_t[:, ::1] faces,
                 const double[:, ::1] inside, double iu0, double iv0, double icell,
                 const double[::1] swath, const unsigned char[::1] conforms, Py_ssize_t rows,
                 double[::1] scale_out, double[::1] band_out):
    """A sweep frame's fields at its grid's chart points, in one pass per point: the point's
    triangle t as coverage.lifting.locate finds it (the same cell walk, _locate_one), then
    scale_out = linear_scale[t] (1 off the chart) and band_out = the least of the swath at
    t's three corners (numpy.min: a NaN wins) where t's corners all conform, that band is
    above 0 and the point reads at least 0 on the ``inside`` raster (as ``nearest`` reads it,
    -1 off the raster); NaN elsewhere.

    The points are a (rows, n / rows) grid, row by row; they are visited column by column
    (each point's answer is its own): a column's neighbours share the chart grid's cell and
    its candidate triangles, which then stay in cache."""
    cdef Py_ssize_t i, k, n = chart.shape[0]
    cdef Py_ssize_t cols = n // rows if rows > 0 else 0
    cdef double ginv = 1.0 / gcell
    cdef double inv = _inverse(icell)
    if rows <= 0 or rows * cols != n:
        rows = 1
        cols = n
    with nogil:
        for k in range(n):
            i = (k % rows) * cols + k // rows
            _frame_point(chart[i, 0], chart[i, 1], affine, cell_start, cell_items, gu0, gv0, ginv, nu, nv, eps,
                         linear_scale, faces, inside, iu0, iv0, icell, inv, swath, conforms, &scale_out[i],
                         &band_out[i])


cdef inline int64_t _frame_point(double u, double v, const double[:, ::1] affine, const int64_t[::1] cell_start,
                                 const int64_t[::1] cell_items, double gu0, double gv0, double ginv, int64_t nu,
                                 int64_t nv, double eps, const double[::1] linear_scale,
                                 const int64_t[:, ::1] faces, const double[:, ::1] inside, double iu0, double iv0,
                                 double icell, double inv, const double[::1] swath,
                                 const unsigned char[::1] conforms, double* scale_out,
                                 double* band_out) noexcept nogil:
    """One point of frame_fields (its scale and band; returns its triangle, -1 off the chart)."""
    cdef Py_ssize_t j, h = inside.shape[0], w = inside.shape[1]
    cdef int64_t t, c
    cdef double b
    cdef double bary[3]
    t = _locate_one(affine, u, v, cell_start, cell_items, gu0, gv0, ginv, nu, nv, eps, bary)
    band_out[0] = NAN
    if t < 0:
        scale_out[0] = 1.0
        return t
    scale_out[0] = linear_scale[t]
    c = _cell(u, v, iu0, iv0, icell, inv, w, h) if h > 0 and w > 0 else -1
    if c < 0 or not (inside[c // w, c % w] >= 0.0):
        return t
    if not (conforms[faces[t, 0]] and conforms[faces[t, 1]] and conforms[faces[t, 2]]):
        return t
    b = 0.0
    for j in range(3):
        b = _least(b, swath[faces[t, j]], j)
    if b > 0.0:
        band_out[0] = b
    return t


cdef class FrameFill:
    """A sweep frame's fields (frame_fields' scale and band at each grid point, and the band's
    code: its index in ``levels``, -1 where NaN) made point by point when first read: the
    line kernels (column_mode, line_step, line_walk given this as ``lazy``) fill each cell
    they read before reading it, each exactly as frame_fields makes it (_frame_point). The
    lines read about a quarter of a frame's points.

    ``levels``: ascending, every band a point can show (a band not among them reads the code
    len(levels), which the line kernels refuse). ``known``, ``scale``, ``band``, ``code``: the
    fields, flat (rows * cols, the grid row by row, as ``chart``), ``known`` 0 where not yet
    made."""
    cdef const double[:, ::1] chart
    cdef const double[:, ::1] affine
    cdef const int64_t[::1] cell_start
    cdef const int64_t[::1] cell_items
    cdef double gu0, gv0, ginv, eps, iu0, iv0, icell, inv
    cdef int64_t nu, nv
    cdef const double[::1] linear_scale
    cdef const int64_t[:, ::1] faces
    cdef const double[:, ::1] inside
    cdef const double[::1] swath
    cdef const unsigned char[::1] conforms
    cdef const double[::1] levels
    cdef unsigned char[::1] known
    cdef double[::1] scale
    cdef double[::1] band
    cdef int64_t[::1] code

    def __init__(self, const double[:, ::1] chart, const double[:, ::1] affine, const int64_t[::1] cell_start,
                 const int64_t[::1] cell_items, double gu0, double gv0, double gcell, int64_t nu, int64_t nv,
                 double eps, const double[::1] linear_scale, const int64_t[:, ::1] faces,
                 const double[:, ::1] inside, double iu0, double iv0, double icell, const double[::1] swath,
                 const unsigned char[::1] conforms, const double[::1] levels, unsigned char[::1] known,
                 double[::1] scale, double[::1] band, int64_t[::1] code):
        n = chart.shape[0]
        if known.shape[0] != n or scale.shape[0] != n or band.shape[0] != n or code.shape[0] != n:
            raise ValueError("FrameFill: one known flag, scale, band and code per chart point")
        self.chart, self.affine, self.cell_start, self.cell_items = chart, affine, cell_start, cell_items
        self.gu0, self.gv0, self.ginv, self.nu, self.nv, self.eps = gu0, gv0, 1.0 / gcell, nu, nv, eps
        self.linear_scale, self.faces, self.inside = linear_scale, faces, inside
        self.iu0, self.iv0, self.icell, self.inv = iu0, iv0, icell, _inverse(icell)
        self.swath, self.conforms, self.levels = swath, conforms, levels
        self.known, self.scale, self.band, self.code = known, scale, band, code

    cdef void fill(self, Py_ssize_t i) noexcept nogil:
        """Make point i's scale, band and code (i in range)."""
        cdef Py_ssize_t lo = 0, hi = self.levels.shape[0], mid
        cdef double b
        _frame_point(self.chart[i, 0], self.chart[i, 1], self.affine, self.cell_start, self.cell_items, self.gu0,
                     self.gv0, self.ginv, self.nu, self.nv, self.eps, self.linear_scale, self.faces, self.inside,
                     self.iu0, self.iv0, self.icell, self.inv, self.swath, self.conforms, &self.scale[i],
                     &self.band[i])
        b = self.band[i]
        if b != b:
            self.code[i] = -1
        else:
            # the first level not below b: b's index where it is one of them
            while lo < hi:
                mid = (lo + hi) // 2
                if self.levels[mid] < b:
                    lo = mid + 1
                else:
                    hi = mid
            self.code[i] = lo if lo < self.levels.shape[0] and self.levels[lo] == b else self.levels.shape[0]
        self.known[i] = 1

    def fill_points(self, const int64_t[::1] points):
        """Make every point of ``points`` not made yet."""
        cdef Py_ssize_t k, i, n = self.known.shape[0]
        for k in range(points.shape[0]):
            if not (points[k] >= 0 and points[k] < n):
                raise IndexError(f"point {points[k]} of a frame of {n}")
        with nogil:
            for k in range(points.shape[0]):
                i = points[k]
                if not self.known[i]:
                    self.fill(i)


def ends_blocked(const double[:, ::1] values, double u0, double v0, double cell,
                 const double[:, ::1] uv, const double[:, ::1] along, const double[:, ::1] across,
                 const double[::1] shift, const double[::1] steps, const double[::1] need,
                 unsigned char[::1] out):
    """out[j] = 1 where any of the points (uv[j] + shift[j, k] * along[j]) + steps[a] * across[j]
    (shift (e, K) flattened; every k, every a) reads below need[j] on the raster, as
    ``nearest`` reads it (off the raster or at NaN: +inf, never below); else 0. Each point
    with NumPy's arithmetic in that order; the first point below ends the search."""
    cdef Py_ssize_t j, k, a, e = uv.shape[0], m = steps.shape[0], h = values.shape[0], w = values.shape[1]
    cdef Py_ssize_t kk = shift.shape[0] // e if e > 0 else 0
    cdef double tu, tv, pu, pv, s, x
    cdef int64_t c
    cdef double inv = _inverse(cell)
    cdef bint blocked
    with nogil:
        for j in range(e):
            blocked = False
            for k in range(kk):
                s = shift[j * kk + k]
                tu = uv[j, 0] + s * along[j, 0]
                tv = uv[j, 1] + s * along[j, 1]
                for a in range(m):
                    pu = tu + steps[a] * across[j, 0]
                    pv = tv + steps[a] * across[j, 1]
                    c = _cell(pu, pv, u0, v0, cell, inv, w, h) if h > 0 and w > 0 else -1
                    if c >= 0:
                        x = values[c // w, c % w]
                        if x < need[j]:
                            blocked = True
                            break
                if blocked:
                    break
            out[j] = blocked


def within_reach(const unsigned char[::1] ok, const int64_t[::1] starts, Py_ssize_t reach,
                 unsigned char[::1] near, unsigned char[::1] live):
    """near[i] = 1 where a sample within ``reach`` rows of i in its own path (path p: rows
    ``starts[p]:starts[p + 1]``, tiling the samples) has ``ok``; live[p] = 1 where path p
    has one. A count kept over the sliding window; reach >= 0."""
    cdef Py_ssize_t p, i, a, b, lo, hi, count, total
    with nogil:
        for p in range(starts.shape[0] - 1):
            a = starts[p]
            b = starts[p + 1]
            count = 0       # ok samples in rows [i - reach, i + reach] within [a, b)
            total = 0
            hi = a + reach if a + reach < b - 1 else b - 1
            for i in range(a, hi + 1):
                count += ok[i]
            for i in range(a, b):
                near[i] = count > 0
                total += ok[i]
                lo = i - reach
                if lo >= a:
                    count -= ok[lo]
                hi = i + reach + 1
                if hi < b:
                    count += ok[hi]
            live[p] = total > 0


def grid_crossings(const double[:, ::1] seg, const double[::1] x, const double[::1] y,
                   const int64_t[::1] row_lo, const int64_t[::1] row_hi, const int64_t[::1] row_start,
                   double tol, double[::1] xc, unsigned char[:, ::1] inside, unsigned char[:, ::1] unsure):
    """Even-odd fill of a grid (points x[j], y[i], both ascending) from boundary segments
    seg[s] = (ax, ay, bx, by): segment s crosses rows row_lo[s] .. row_hi[s] - 1 (those with
    min(ay, by) <= y < max(ay, by)), at xc = ax + (y - ay) * (bx - ax) / (by - ay);
    ``row_start`` (rows + 1) places each row's crossings in ``xc`` (scratch, one per crossing).
    inside[i, j] = 1 where an odd count of a row's crossings lies right of x[j]; unsure[i, j]
    = 1 where a crossing lies within ``tol`` of x[j] (the caller asks those points again, and
    the points near vertices and on horizontal segments, which it marks itself)."""
    cdef Py_ssize_t s, i, j, k, a, b, h = y.shape[0], w = x.shape[0], m = seg.shape[0]
    cdef int64_t[::1] at
    cdef double t, yy
    at = row_start[:h].copy()
    with nogil:
        for s in range(m):
            for i in range(row_lo[s], row_hi[s]):
                yy = y[i]
                xc[at[i]] = seg[s, 0] + (yy - seg[s, 1]) * (seg[s, 2] - seg[s, 0]) / (seg[s, 3] - seg[s, 1])
                at[i] += 1
        for i in range(h):
            a = row_start[i]
            b = row_start[i + 1]
            # insertion sort of the row's crossings (a handful)
            for k in range(a + 1, b):
                t = xc[k]
                j = k - 1
                while j >= a and xc[j] > t:
                    xc[j + 1] = xc[j]
                    j -= 1
                xc[j + 1] = t
            k = a        # crossings xc[a:k] lie at or left of x[j]
            for j in range(w):
                while k < b and xc[k] <= x[j]:
                    k += 1
                inside[i, j] = (b - k) & 1
                unsure[i, j] = ((k > a and x[j] - xc[k - 1] <= tol) or (k < b and xc[k] - x[j] <= tol))


def border_values(const double[:, ::1] values, double u0, double v0, double cell, const double[:, ::1] affine,
                  const int64_t[::1] cell_start, const int64_t[::1] cell_items, double gu0, double gv0,
                  double gcell, int64_t nu, int64_t nv, double eps, const double[::1] linear_scale,
                  double[:, ::1] out):
    """out[i, j] = values[i, j] * the chart scale of the triangle under the cell's centre
    (origin + ((j, i) + 0.5) * cell, located as coverage.lifting.locate locates: _locate_one;
    1 off the chart) where values[i, j] >= 0, else -1."""
    cdef Py_ssize_t i, j, h = values.shape[0], w = values.shape[1]
    cdef int64_t t
    cdef double x, s
    cdef double bary[3]
    cdef double ginv = 1.0 / gcell
    with nogil:
        for i in range(h):
            for j in range(w):
                x = values[i, j]
                if x >= 0.0:
                    t = _locate_one(affine, u0 + (<double>j + 0.5) * cell, v0 + (<double>i + 0.5) * cell,
                                    cell_start, cell_items, gu0, gv0, ginv, nu, nv, eps, bary)
                    s = linear_scale[t] if t >= 0 else 1.0
                    out[i, j] = x * s
                else:
                    out[i, j] = -1.0
