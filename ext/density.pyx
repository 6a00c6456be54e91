# Density kernels: texel accumulation, variable-size window sums, distinct-channel merging.
# Inputs are C-contiguous and already validated by coverage.density.
from libc.math cimport floor, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport malloc, free, realloc, qsort
from libc.string cimport memcpy, memset
from _prefetch cimport prefetch


cdef void _splat(const double[:, ::1] uv, const double[::1] weight, double u0, double v0,
                 double cell, double inv_cell, double[:, ::1] grid, int64_t* dropped) noexcept nogil:
    cdef Py_ssize_t i0, j, m, n = uv.shape[0], h = grid.shape[0], w = grid.shape[1]
    cdef double fx, fy, fw = <double>w, fh = <double>h
    cdef int64_t texel[256]
    cdef int64_t kept = 0
    dropped[0] = n
    if n == 0 or h == 0 or w == 0:
        return
    cdef const double* p = &uv[0, 0]
    cdef const double* wt = &weight[0] if weight.shape[0] > 0 else NULL
    cdef double* g = &grid[0, 0]
    for i0 in range(0, n, 256):
        m = n - i0 if n - i0 < 256 else 256
        # 1. the texel of each point of a block (-1 off the grid). Divided by cell, or
        # multiplied by inv_cell only where that is exact (cell a power of two): a point
        # on a texel line goes where the correctly rounded quotient (and the NumPy
        # reference) puts it
        if inv_cell > 0.0:
            for j in range(m):
                fx = (p[2 * (i0 + j)] - u0) * inv_cell
                fy = (p[2 * (i0 + j) + 1] - v0) * inv_cell
                texel[j] = <int64_t>fy * w + <int64_t>fx if fx >= 0.0 and fy >= 0.0 and fx < fw and fy < fh else -1
        else:
            for j in range(m):
                fx = (p[2 * (i0 + j)] - u0) / cell
                fy = (p[2 * (i0 + j) + 1] - v0) / cell
                texel[j] = <int64_t>fy * w + <int64_t>fx if fx >= 0.0 and fy >= 0.0 and fx < fw and fy < fh else -1
        # 2. the sums, in input order (the reference's order of additions): a tight loop of
        # independent read-modify-writes whose cache misses overlap
        if wt == NULL:
            for j in range(m):
                if texel[j] >= 0:
                    g[texel[j]] += 1.0
                    kept += 1
        else:
            for j in range(m):
                if texel[j] >= 0:
                    g[texel[j]] += wt[i0 + j]
                    kept += 1
    dropped[0] = n - kept


def splat(const double[:, ::1] uv, const double[::1] weight, double u0, double v0, double cell,
          double inv_cell, double[:, ::1] grid):
    """Add weight[i] (1 if weight is empty) to the texel holding uv[i]; returns how many points
    fell outside. inv_cell is 1 / cell where multiplying by it equals dividing by cell, else 0."""
    cdef int64_t dropped = 0
    with nogil:
        _splat(uv, weight, u0, v0, cell, inv_cell, grid, &dropped)
    return dropped


cdef inline void _window(Py_ssize_t i, Py_ssize_t j, int64_t hu, int64_t hv, Py_ssize_t h, Py_ssize_t w,
                         int64_t* i0, int64_t* i1, int64_t* j0, int64_t* j1) noexcept nogil:
    # texel (i, j)'s window, rows [i0, i1) and columns [j0, j1), clipped to the grid
    i0[0] = i - hv if i - hv > 0 else 0
    i1[0] = i + hv + 1 if i + hv + 1 < h else h
    j0[0] = j - hu if j - hu > 0 else 0
    j1[0] = j + hu + 1 if j + hu + 1 < w else w


cdef inline void _summed_area(const double[:, ::1] a, const double[:, ::1] b, bint plus_b, Py_ssize_t h,
                              Py_ssize_t w, double[:, ::1] sat) noexcept nogil:
    # the summed-area table of a (of a + b with plus_b), with a zero first row and column;
    # two rows at a time (each row's running sum is its own chain of additions)
    cdef Py_ssize_t i = 0, j
    cdef double row, row2, x, x2
    for j in range(w + 1):
        sat[0, j] = 0.0
    while i + 1 < h:
        sat[i + 1, 0] = 0.0
        sat[i + 2, 0] = 0.0
        row = 0.0
        row2 = 0.0
        for j in range(w):
            x = a[i, j]
            x2 = a[i + 1, j]
            if plus_b:
                x = x + b[i, j]
                x2 = x2 + b[i + 1, j]
            row += x
            row2 += x2
            sat[i + 1, j + 1] = sat[i, j + 1] + row
            sat[i + 2, j + 1] = sat[i + 1, j + 1] + row2
        i += 2
    if i < h:
        sat[i + 1, 0] = 0.0
        row = 0.0
        for j in range(w):
            x = a[i, j]
            if plus_b:
                x = x + b[i, j]
            row += x
            sat[i + 1, j + 1] = sat[i, j + 1] + row


cdef inline double _window_total(const double[:, ::1] sat, int64_t i0, int64_t i1, int64_t j0,
                                 int64_t j1) noexcept nogil:
    # the sum over rows [i0, i1) and columns [j0, j1), from the summed-area table
    return sat[i1, j1] - sat[i0, j1] - sat[i1, j0] + sat[i0, j0]


cdef inline void _clear_corners(double[:, ::1] corners, Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(h + 1):
        for j in range(w + 1):
            corners[i, j] = 0.0


cdef inline void _add_window(double[:, ::1] corners, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                             double v) noexcept nogil:
    # v over rows [i0, i1) and columns [j0, j1) of a 2D difference array: +v at the window's
    # first corner, -v past its right and lower edges, +v past both
    corners[i0, j0] += v
    corners[i0, j1] -= v
    corners[i1, j0] -= v
    corners[i1, j1] += v


cdef inline void _fill_windows(const double[:, ::1] corners, Py_ssize_t h, Py_ssize_t w,
                               double[:, ::1] out) noexcept nogil:
    # the running sums over rows and columns of the difference array fill its windows in;
    # two rows at a time (each row's running sum is its own chain of additions)
    cdef Py_ssize_t i = 1, j
    cdef double row, row2
    if h <= 0:
        return
    row = 0.0
    for j in range(w):
        row += corners[0, j]
        out[0, j] = row + 0.0
    while i + 1 < h:
        row = 0.0
        row2 = 0.0
        for j in range(w):
            row += corners[i, j]
            row2 += corners[i + 1, j]
            out[i, j] = row + out[i - 1, j]
            out[i + 1, j] = row2 + out[i, j]
        i += 2
    if i < h:
        row = 0.0
        for j in range(w):
            row += corners[i, j]
            out[i, j] = row + out[i - 1, j]


cdef void _window_sums(const double[:, ::1] values, const int64_t[:, ::1] half_u,
                       const int64_t[:, ::1] half_v, const uint8_t[:, ::1] mask,
                       double[:, ::1] sat, double[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t h = values.shape[0], w = values.shape[1], i, j
    cdef int64_t i0, i1, j0, j1
    _summed_area(values, values, False, h, w, sat)
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                out[i, j] = 0.0
                continue
            _window(i, j, half_u[i, j], half_v[i, j], h, w, &i0, &i1, &j0, &j1)
            out[i, j] = _window_total(sat, i0, i1, j0, j1)


def window_sums(const double[:, ::1] values, const int64_t[:, ::1] half_u,
                const int64_t[:, ::1] half_v, const uint8_t[:, ::1] mask,
                double[:, ::1] sat, double[:, ::1] out):
    """out[i, j] = sum of values over rows i±half_v[i, j], columns j±half_u[i, j] (clipped)."""
    with nogil:
        _window_sums(values, half_u, half_v, mask, sat, out)



cdef void _window_spread(const double[:, ::1] values, const int64_t[:, ::1] half_u,
                         const int64_t[:, ::1] half_v, const uint8_t[:, ::1] mask,
                         double[:, ::1] corners, double[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t h = values.shape[0], w = values.shape[1], i, j
    cdef int64_t i0, i1, j0, j1
    cdef double v
    _clear_corners(corners, h, w)
    # each masked value adds itself over its window (a 2D difference array) ...
    for i in range(h):
        for j in range(w):
            v = values[i, j]
            if not mask[i, j] or v == 0.0:
                continue
            _window(i, j, half_u[i, j], half_v[i, j], h, w, &i0, &i1, &j0, &j1)
            _add_window(corners, i0, i1, j0, j1, v)
    # ... and the running sums over rows and columns fill the windows in
    _fill_windows(corners, h, w, out)


def window_spread(const double[:, ::1] values, const int64_t[:, ::1] half_u,
                  const int64_t[:, ::1] half_v, const uint8_t[:, ::1] mask,
                  double[:, ::1] corners, double[:, ::1] out):
    """The adjoint of window_sums: out[t] = sum of values[p] over masked p whose window holds t."""
    with nogil:
        _window_spread(values, half_u, half_v, mask, corners, out)


cdef bint _stamp_box(const int64_t[::1] texels, Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t h, Py_ssize_t w,
                     int64_t reach, Py_ssize_t* box) noexcept nogil:
    # The box of texels whose windows can hold one of the stamp's punctures (texels[k0:k1]):
    # box = [i0, i1, j0, j1] (rows i0:i1, columns j0:j1). False if it has no punctures.
    cdef Py_ssize_t k, i0 = h, i1 = -1, j0 = w, j1 = -1
    cdef int64_t ti, tj
    for k in range(k0, k1):
        ti = texels[k] // w
        tj = texels[k] - ti * w
        if ti < i0:
            i0 = ti
        if ti > i1:
            i1 = ti
        if tj < j0:
            j0 = tj
        if tj > j1:
            j1 = tj
    if i1 < 0:
        return False
    box[0] = i0 - reach if i0 - reach > 0 else 0
    box[1] = i1 + reach + 1 if i1 + reach + 1 < h else h
    box[2] = j0 - reach if j0 - reach > 0 else 0
    box[3] = j1 + reach + 1 if j1 + reach + 1 < w else w
    return True


cdef Py_ssize_t _stamp_table(const int64_t[::1] texels, const double[::1] counts, Py_ssize_t k0, Py_ssize_t k1,
                             Py_ssize_t h, Py_ssize_t w, int64_t reach, Py_ssize_t* box,
                             double** table, Py_ssize_t* size) noexcept nogil:
    # The stamp's punctures (texels/counts[k0:k1]) as a summed-area table over its box
    # (_stamp_box), the table (i1 - i0 + 1) x (j1 - j0 + 1) with a zero first row and
    # column. Returns the table's row length (0: no punctures, or no memory).
    cdef Py_ssize_t k, i0, i1, j0, j1, bw, bh
    cdef int64_t ti, tj
    cdef double* t
    if not _stamp_box(texels, k0, k1, h, w, reach, box):
        return 0
    i0 = box[0]
    i1 = box[1]
    j0 = box[2]
    j1 = box[3]
    bh = i1 - i0
    bw = j1 - j0
    t = _zeroed_table(bh, bw, table, size)
    if t == NULL:
        return 0
    for k in range(k0, k1):
        ti = texels[k] // w
        tj = texels[k] - ti * w
        t[(ti - i0 + 1) * (bw + 1) + (tj - j0 + 1)] += counts[k]
    _running_sums(t, bh, bw)
    return bw + 1


cdef double* _zeroed_table(Py_ssize_t bh, Py_ssize_t bw, double** table, Py_ssize_t* size) noexcept nogil:
    # the (bh + 1) x (bw + 1) table, grown if need be and zeroed (NULL: no memory)
    cdef Py_ssize_t k, need = (bh + 1) * (bw + 1)
    cdef double* t
    if need > size[0]:
        t = <double*>realloc(table[0], need * sizeof(double))
        if t == NULL:
            return NULL
        table[0] = t
        size[0] = need
    t = table[0]
    for k in range(need):
        t[k] = 0.0
    return t


cdef void _running_sums(double* t, Py_ssize_t bh, Py_ssize_t bw) noexcept nogil:
    # the running sums t[r, c] += (t[r - 1, c] + t[r, c - 1]) - t[r - 1, c - 1] over rows and
    # columns 1.., two rows at a time: each row's last value kept in a register (not reloaded
    # from the store just made), the two rows' chains of additions interleaved
    cdef Py_ssize_t r, c, s = bw + 1
    cdef double left0, left1, x0, x1
    r = 1
    while r < bh:
        left0 = 0.0   # t[r, c - 1], t[r + 1, c - 1] (column 0 is zero)
        left1 = 0.0
        for c in range(1, bw + 1):
            x0 = t[r * s + c] + ((t[(r - 1) * s + c] + left0) - t[(r - 1) * s + c - 1])
            x1 = t[(r + 1) * s + c] + ((x0 + left1) - left0)
            t[r * s + c] = x0
            t[(r + 1) * s + c] = x1
            left0 = x0
            left1 = x1
        r += 2
    if r == bh:
        left0 = 0.0
        for c in range(1, bw + 1):
            x0 = t[r * s + c] + ((t[(r - 1) * s + c] + left0) - t[(r - 1) * s + c - 1])
            t[r * s + c] = x0
            left0 = x0


cdef inline double _in_window(const double* t, Py_ssize_t stride, const Py_ssize_t* box, Py_ssize_t pi,
                              Py_ssize_t pj, int64_t hu, int64_t hv) noexcept nogil:
    # the stamp's punctures inside texel (pi, pj)'s window, from the table (clipped to the box)
    cdef Py_ssize_t r0 = pi - hv - box[0], r1 = pi + hv + 1 - box[0]
    cdef Py_ssize_t c0 = pj - hu - box[2], c1 = pj + hu + 1 - box[2]
    cdef Py_ssize_t bh = box[1] - box[0], bw = box[3] - box[2]
    if r0 < 0:
        r0 = 0
    if c0 < 0:
        c0 = 0
    if r1 > bh:
        r1 = bh
    if c1 > bw:
        c1 = bw
    if r1 <= r0 or c1 <= c0:
        return 0.0
    return t[r1 * stride + c1] - t[r0 * stride + c1] - t[r1 * stride + c0] + t[r0 * stride + c0]


cdef inline void _fetch_row(const double* den, const double* lw, const double* hg, const double* ar,
                            const double* pc, const int64_t* hu, const int64_t* hv, Py_ssize_t row,
                            Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    # prefetch texels row + j0 : row + j1 of stamp_effects' per-texel arrays, a line (8
    # values) at a time
    cdef Py_ssize_t q
    for q in range(row + j0, row + j1 + 7, 8):
        prefetch(den + q)
        prefetch(lw + q)
        prefetch(hg + q)
        prefetch(ar + q)
        prefetch(pc + q)
        prefetch(hu + q)
        prefetch(hv + q)


cdef inline void _weigh(double before, double sign, double pc, double delta, double lo, double hi, double ar,
                        bint finite, double* gained, double* over, double* filled) noexcept nogil:
    # one texel's part of stamp_effects' sums; finite: a term whose state does not change
    # adds exactly 0 (every area and floor finite) and is passed over
    cdef double after = before + sign * pc * delta
    cdef int in_after = (after >= lo) & (after <= hi)
    cdef int in_before = (before >= lo) & (before <= hi)
    cdef int more
    cdef double a, b
    if in_after != in_before or not finite:
        gained[0] = gained[0] + ar * (in_after - in_before)
    more = (after > hi) - (before > hi)
    if more != 0 or not finite:
        over[0] = over[0] + ar * more
    a = lo - before if lo > before else 0.0
    b = lo - after if lo > after else 0.0
    if lo > 0.0 and (a != b or not finite):
        filled[0] = filled[0] + ar * (a - b) / lo


def stamp_effects(const int64_t[::1] indptr, const int64_t[::1] texels, const double[::1] counts,
                  const int64_t[::1] columns, double sign, const double[::1] density, const double[::1] low,
                  const double[::1] high, const double[::1] area, const double[::1] per_count,
                  const int64_t[::1] half_u, const int64_t[::1] half_v, Py_ssize_t h, Py_ssize_t w,
                  int64_t reach, double[:, ::1] out, bint finite=False):
    """What adding (sign +1) or removing (-1) each stamp columns[c] (its punctures per texel:
    texels/counts[indptr[s]:indptr[s + 1]]) alone does to the windowed density:
    out[c] = [area that enters the band minus area that leaves it, area newly over its cap
    minus area no longer over it, shortfall filled (area x fraction of the band floor)].

    finite: every area and low is finite, so a texel whose band state and shortfall do not
    change adds exactly nothing (+-0) to the sums, and is passed over (neither multiplied
    nor divided)."""
    cdef Py_ssize_t c, s, pi, pj, p, stride, size = 0
    cdef Py_ssize_t box[4]
    cdef Py_ssize_t nbox[4]
    cdef bint ahead
    cdef double delta, gained, over, filled
    cdef double* table = NULL
    if density.shape[0] == 0:
        for c in range(columns.shape[0]):
            out[c, 0] = 0.0
            out[c, 1] = 0.0
            out[c, 2] = 0.0
        return
    cdef const double* pc = &per_count[0]
    cdef const double* den = &density[0]
    cdef const double* lw = &low[0]
    cdef const double* hg = &high[0]
    cdef const double* ar = &area[0]
    cdef const int64_t* hu = &half_u[0]
    cdef const int64_t* hv = &half_v[0]
    with nogil:
        for c in range(columns.shape[0]):
            s = columns[c]
            gained = 0.0
            over = 0.0
            filled = 0.0
            stride = _stamp_table(texels, counts, indptr[s], indptr[s + 1], h, w, reach, box, &table, &size)
            # the next stamp's box, whose rows are fetched a row per row of this one (stamps
            # lie anywhere on the face: each box's ~100 kB of texel data misses the cache)
            ahead = c + 1 < columns.shape[0] and _stamp_box(texels, indptr[columns[c + 1]],
                                                            indptr[columns[c + 1] + 1], h, w, reach, nbox)
            if stride:
                for pi in range(box[0], box[1]):
                    if ahead and pi - box[0] < nbox[1] - nbox[0]:
                        _fetch_row(den, lw, hg, ar, pc, hu, hv, (nbox[0] + pi - box[0]) * w, nbox[2], nbox[3])
                    p = pi * w + box[2]
                    for pj in range(box[2], box[3]):
                        if pc[p] != 0.0:
                            delta = _in_window(table, stride, box, pi, pj, hu[p], hv[p])
                            if delta != 0.0:
                                _weigh(den[p], sign, pc[p], delta, lw[p], hg[p], ar[p], finite, &gained, &over,
                                       &filled)
                        p += 1
            out[c, 0] = gained
            out[c, 1] = over
            out[c, 2] = filled
        free(table)


def stamp_apply(const int64_t[::1] indptr, const int64_t[::1] texels, const double[::1] counts, Py_ssize_t s,
                double sign, double[::1] density, const double[::1] per_count, const int64_t[::1] half_u,
                const int64_t[::1] half_v, Py_ssize_t h, Py_ssize_t w, int64_t reach):
    """Add (sign +1) or remove (-1) stamp s's punctures to the windowed density in place."""
    cdef Py_ssize_t pi, pj, p, stride, size = 0
    cdef Py_ssize_t box[4]
    cdef double* table = NULL
    with nogil:
        stride = _stamp_table(texels, counts, indptr[s], indptr[s + 1], h, w, reach, box, &table, &size)
        if stride:
            for pi in range(box[0], box[1]):
                for pj in range(box[2], box[3]):
                    p = pi * w + pj
                    if per_count[p] != 0.0:
                        density[p] = density[p] + sign * per_count[p] * _in_window(table, stride, box, pi, pj,
                                                                                    half_u[p], half_v[p])
        free(table)

# --- stamp effects on a tracked density ----------------------------------------------------
# The repair weighs thousands of stamps against one density map that changes only where it
# applies a stamp. With whole puncture counts (needles) every window count is exact, however
# it is summed, and most texels of a stamp's reach cannot change state: stamp_rooms keeps,
# per texel, how many punctures its window may gain (room_up) or lose (room_down) with the
# texel adding nothing to any sum of stamp_effects (finite mode), and the least of each over
# runs of ROOM_BLOCK texels of a row. stamp_effects_tracked passes over every texel (and
# run) whose room holds the stamp's whole count, and visits only the texels whose windows
# can hold one of its punctures (ext_u/ext_v: per texel, the widest window half of a
# counted texel within reach). Its sums are stamp_effects' bit for bit: the same texels
# contribute, in the same order, the same values.

cdef enum:
    ROOM_BLOCK = 8


cdef inline bint _unchanged(double before, double after, double lo, double hi) noexcept nogil:
    # the texel adds nothing to any of stamp_effects' sums (finite mode) going before -> after
    cdef int in_after = (after >= lo) & (after <= hi)
    cdef int in_before = (before >= lo) & (before <= hi)
    cdef double a, b
    if in_after != in_before:
        return False
    if (after > hi) != (before > hi):
        return False
    a = lo - before if lo > before else 0.0
    b = lo - after if lo > after else 0.0
    return not (lo > 0.0 and a != b)


cdef inline int32_t _room(double before, double pc, double sign, double lo, double hi, int32_t cap) noexcept nogil:
    # the largest k <= cap with the texel unchanged at after = before + sign * pc * k (as
    # stamp_effects computes it), hence at every count 0..k: after is monotone in k, and the
    # afters that leave the texel unchanged form an interval around before
    cdef int32_t good, bad, mid
    if _unchanged(before, before + sign * pc * <double>cap, lo, hi):
        return cap
    if not _unchanged(before, before + sign * pc * 1.0, lo, hi):
        return 0
    good = 1
    bad = cap
    while bad - good > 1:
        mid = good + (bad - good) // 2
        if _unchanged(before, before + sign * pc * <double>mid, lo, hi):
            good = mid
        else:
            bad = mid
    return good


cdef void _rooms(const double* den, const double* pc, const double* lw, const double* hg, int32_t cap,
                 Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t w,
                 int32_t* up, int32_t* down, int32_t* block_up, int32_t* block_down) noexcept nogil:
    # the rooms of texels rows [i0, i1), columns [j0, j1), and the least of the runs they lie in
    cdef Py_ssize_t i, j, p
    for i in range(i0, i1):
        for j in range(j0, j1):
            p = i * w + j
            if pc[p] == 0.0:
                # never weighed
                up[p] = 2147483647
                down[p] = 2147483647
            else:
                up[p] = _room(den[p], pc[p], 1.0, lw[p], hg[p], cap)
                down[p] = _room(den[p], pc[p], -1.0, lw[p], hg[p], cap)
        _block_rooms(up, down, i, j0, j1, w, block_up, block_down)


cdef inline void _block_rooms(const int32_t* up, const int32_t* down, Py_ssize_t i, Py_ssize_t j0, Py_ssize_t j1,
                              Py_ssize_t w, int32_t* block_up, int32_t* block_down) noexcept nogil:
    # the least rooms of the runs of row i that columns [j0, j1) lie in
    cdef Py_ssize_t q, nb = (w + ROOM_BLOCK - 1) // ROOM_BLOCK, b, e
    cdef int32_t mu, md
    for b in range(j0 // ROOM_BLOCK, (j1 + ROOM_BLOCK - 1) // ROOM_BLOCK):
        e = (b + 1) * ROOM_BLOCK if (b + 1) * ROOM_BLOCK < w else w
        mu = 2147483647
        md = 2147483647
        for q in range(i * w + b * ROOM_BLOCK, i * w + e):
            if up[q] < mu:
                mu = up[q]
            if down[q] < md:
                md = down[q]
        block_up[i * nb + b] = mu
        block_down[i * nb + b] = md


def stamp_rooms(const double[::1] density, const double[::1] per_count, const double[::1] low,
                const double[::1] high, int32_t cap, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0, Py_ssize_t j1,
                Py_ssize_t w, int32_t[::1] room_up, int32_t[::1] room_down, int32_t[::1] block_up,
                int32_t[::1] block_down):
    """For texels rows [i0, i1), columns [j0, j1): room_up[p] (room_down[p]) = the largest
    k <= cap such that density[p] + per_count[p] * k (- per_count[p] * k) leaves the texel
    unchanged for stamp_effects (in band or not, over high or not, its shortfall the same),
    as at every count 0..k; 2^31 - 1 for texels with per_count 0 (per_count >= 0, cap >= 0).
    block_up[i * nb + b] (block_down) = the least room_up (room_down) of texels i * w + 8 b
    ... + 8 b + 7 (within the row), nb = ceil(w / 8), for the runs the texels lie in."""
    if density.shape[0] == 0:
        return
    with nogil:
        _rooms(&density[0], &per_count[0], &low[0], &high[0], cap, i0, i1, j0, j1, w, &room_up[0], &room_down[0],
               &block_up[0], &block_down[0])


cdef inline void _reach_box(const int64_t[::1] texels, Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t w,
                            const int32_t* ext_u, const int32_t* ext_v, Py_ssize_t* box) noexcept nogil:
    # widen box [i0, i1, j0, j1] (unclipped) over the texels whose windows can hold one of
    # texels[k0:k1]
    cdef Py_ssize_t k
    cdef int64_t t, ti, tj
    for k in range(k0, k1):
        t = texels[k]
        ti = t // w
        tj = t - ti * w
        if ti - ext_v[t] < box[0]:
            box[0] = ti - ext_v[t]
        if ti + ext_v[t] + 1 > box[1]:
            box[1] = ti + ext_v[t] + 1
        if tj - ext_u[t] < box[2]:
            box[2] = tj - ext_u[t]
        if tj + ext_u[t] + 1 > box[3]:
            box[3] = tj + ext_u[t] + 1


cdef inline bint _reach(const int64_t[::1] indptr, const int64_t[::1] texels, int64_t plus, int64_t minus,
                        Py_ssize_t h, Py_ssize_t w, const int32_t* ext_u, const int32_t* ext_v,
                        Py_ssize_t* box) noexcept nogil:
    # the box of texels whose windows can hold a puncture of stamp plus or stamp minus (-1:
    # none), clipped to the grid; False if it is empty
    box[0] = h
    box[1] = -1
    box[2] = w
    box[3] = -1
    if plus >= 0:
        _reach_box(texels, indptr[plus], indptr[plus + 1], w, ext_u, ext_v, box)
    if minus >= 0:
        _reach_box(texels, indptr[minus], indptr[minus + 1], w, ext_u, ext_v, box)
    if box[1] < 0:
        return False
    if box[0] < 0:
        box[0] = 0
    if box[1] > h:
        box[1] = h
    if box[2] < 0:
        box[2] = 0
    if box[3] > w:
        box[3] = w
    return box[1] > box[0] and box[3] > box[2]


cdef Py_ssize_t _extent_table(const int64_t[::1] indptr, const int64_t[::1] texels, const double[::1] counts,
                              int64_t plus, int64_t minus, Py_ssize_t w, Py_ssize_t* box, double** table,
                              Py_ssize_t* size) noexcept nogil:
    # stamp plus's punctures minus stamp minus's (-1: none) as a summed-area table over the
    # box of their texels only (box = [i0, i1, j0, j1]), with a zero first row and column:
    # with whole counts, _in_window of it gives every window's count exactly. Returns its
    # row length (0: no punctures, or no memory)
    cdef Py_ssize_t k, bh, bw, s, i0, j0, q
    cdef int64_t ti, tj, col
    cdef double* t
    cdef double mult
    box[0] = 0
    box[1] = -1
    box[2] = 0
    box[3] = -1
    for q in range(2):
        col = minus if q == 0 else plus
        if col < 0:
            continue
        for k in range(indptr[col], indptr[col + 1]):
            ti = texels[k] // w
            tj = texels[k] - ti * w
            if box[1] < 0:
                box[0] = ti
                box[1] = ti + 1
                box[2] = tj
                box[3] = tj + 1
            else:
                if ti < box[0]:
                    box[0] = ti
                if ti + 1 > box[1]:
                    box[1] = ti + 1
                if tj < box[2]:
                    box[2] = tj
                if tj + 1 > box[3]:
                    box[3] = tj + 1
    if box[1] < 0:
        return 0
    i0 = box[0]
    j0 = box[2]
    bh = box[1] - i0
    bw = box[3] - j0
    t = _zeroed_table(bh, bw, table, size)
    if t == NULL:
        return 0
    s = bw + 1
    for q in range(2):
        col = minus if q == 0 else plus
        mult = -1.0 if q == 0 else 1.0
        if col < 0:
            continue
        for k in range(indptr[col], indptr[col + 1]):
            ti = texels[k] // w
            tj = texels[k] - ti * w
            t[(ti - i0 + 1) * s + (tj - j0 + 1)] += mult * counts[k]
    _running_sums(t, bh, bw)
    return s


ctypedef struct _Unsettled:
    # a texel some stamp of a call may move out of its state, with what weighing it reads
    double den, lo, hi, area, pc
    int32_t pj, hu, hv, up, down, pad


cdef inline void _needs(const int32_t[::1] totals, int64_t plus, int64_t minus, double sign, int32_t* need_up,
                        int32_t* need_down) noexcept nogil:
    # the counts a window can gain and lose by adding plus and removing minus (-1: none), or
    # (no minus) adding (sign +1) or removing plus
    if minus >= 0:
        need_up[0] = totals[plus]
        need_down[0] = totals[minus]
    elif sign > 0:
        need_up[0] = totals[plus]
        need_down[0] = 0
    else:
        need_up[0] = 0
        need_down[0] = totals[plus]


def stamp_effects_tracked(const int64_t[::1] indptr, const int64_t[::1] texels, const double[::1] counts,
                          const int32_t[::1] totals, const int64_t[::1] plus, const int64_t[::1] minus,
                          double sign, const double[::1] density, const double[::1] low, const double[::1] high,
                          const double[::1] area, const double[::1] per_count, const int64_t[::1] half_u,
                          const int64_t[::1] half_v, const int32_t[::1] ext_u, const int32_t[::1] ext_v,
                          const int32_t[::1] room_up, const int32_t[::1] room_down, const int32_t[::1] block_up,
                          const int32_t[::1] block_down, Py_ssize_t h, Py_ssize_t w, double[:, ::1] out,
                          int shared=-1):
    """stamp_effects (finite mode) for counts that are whole numbers >= 0 and per_count >= 0,
    given the rooms (room_up, room_down, block_up, block_down) stamp_rooms gives of this
    density, and ext_u/ext_v as above. minus empty: out[c] for adding (sign +1) or removing
    (-1) stamp plus[c] alone. Else (sign +1): for adding plus[c] and removing minus[c]
    together, weighed as stamp_effects weighs the pair as one stamp of counts plus's minus
    minus's. totals: each stamp's count. Returns 0 (-1: out of memory).

    The stamps of a call mostly lie close together (the repair weighs those of one window):
    with shared (1; -1: where the box around all their reaches is no larger than their
    reaches together, 0: never), the texels of that box whose rooms do not hold the largest
    count are gathered once, side by side with what weighing them reads, and each stamp
    goes through those of its reach."""
    cdef Py_ssize_t c, n = plus.shape[0]
    cdef int failed
    if minus.shape[0] and minus.shape[0] != n or out.shape[0] < n or n and out.shape[1] != 3:
        raise ValueError("stamp_effects_tracked: plus, minus and out do not match")
    if density.shape[0] == 0:
        for c in range(n):
            out[c, 0] = 0.0
            out[c, 1] = 0.0
            out[c, 2] = 0.0
        return 0
    if n == 0:
        return 0
    with nogil:
        failed = _effects_tracked(indptr, texels, counts, totals, &plus[0], &minus[0] if minus.shape[0] else NULL, n,
                                  sign, density, low, high, area, per_count, half_u, half_v, ext_u, ext_v, room_up,
                                  room_down, block_up, block_down, h, w, &out[0, 0], shared)
    return failed


cdef int _effects_tracked(const int64_t[::1] indptr, const int64_t[::1] texels, const double[::1] counts,
                          const int32_t[::1] totals, const int64_t* plus, const int64_t* minus, Py_ssize_t n,
                          double sign, const double[::1] density, const double[::1] low, const double[::1] high,
                          const double[::1] area, const double[::1] per_count, const int64_t[::1] half_u,
                          const int64_t[::1] half_v, const int32_t[::1] ext_u, const int32_t[::1] ext_v,
                          const int32_t[::1] room_up, const int32_t[::1] room_down, const int32_t[::1] block_up,
                          const int32_t[::1] block_down, Py_ssize_t h, Py_ssize_t w, double* out,
                          int shared) noexcept nogil:
    # stamp_effects_tracked on n stamps plus[:n] (minus[:n], or NULL: none) into out (n, 3)
    # row-major, for a density of h * w > 0 texels; returns 0 (-1: out of memory)
    cdef Py_ssize_t c, pi, pj, p, stride, size = 0, nb = (w + ROOM_BLOCK - 1) // ROOM_BLOCK
    cdef Py_ssize_t b, e, q0, k, n_row, size_row = 0, n_set, union_area, reach_area
    cdef Py_ssize_t box[4]
    cdef Py_ssize_t ebox[4]
    cdef Py_ssize_t ubox[4]
    cdef Py_ssize_t* texels_row = NULL
    cdef Py_ssize_t* row
    cdef Py_ssize_t* boxes = NULL
    cdef Py_ssize_t* row_start = NULL
    cdef _Unsettled* unsettled = NULL
    cdef _Unsettled* u
    cdef bint pairs = minus != NULL
    cdef int64_t other
    cdef int32_t need_up, need_down, most_up = 0, most_down = 0
    cdef double delta, gained, over, filled
    cdef int failed = 0
    cdef double* table = NULL
    cdef const double* pc = &per_count[0]
    cdef const double* den = &density[0]
    cdef const double* lw = &low[0]
    cdef const double* hg = &high[0]
    cdef const double* ar = &area[0]
    cdef const int64_t* hu = &half_u[0]
    cdef const int64_t* hv = &half_v[0]
    cdef const int32_t* up = &room_up[0]
    cdef const int32_t* down = &room_down[0]
    cdef const int32_t* bup = &block_up[0]
    cdef const int32_t* bdown = &block_down[0]
    # each stamp's reach (box[1] = -1: none), the box around them all, the largest counts
    boxes = <Py_ssize_t*>malloc((4 * n + 1) * sizeof(Py_ssize_t))
    if boxes == NULL:
        failed = 1
    ubox[0] = h
    ubox[1] = -1
    ubox[2] = w
    ubox[3] = -1
    reach_area = 0
    for c in range(n if not failed else 0):
        other = minus[c] if pairs else -1
        if not _reach(indptr, texels, plus[c], other, h, w, &ext_u[0], &ext_v[0], &boxes[4 * c]):
            boxes[4 * c + 1] = -1
            continue
        _needs(totals, plus[c], other, sign, &need_up, &need_down)
        most_up = need_up if need_up > most_up else most_up
        most_down = need_down if need_down > most_down else most_down
        reach_area += (boxes[4 * c + 1] - boxes[4 * c]) * (boxes[4 * c + 3] - boxes[4 * c + 2])
        ubox[0] = boxes[4 * c] if boxes[4 * c] < ubox[0] else ubox[0]
        ubox[1] = boxes[4 * c + 1] if boxes[4 * c + 1] > ubox[1] else ubox[1]
        ubox[2] = boxes[4 * c + 2] if boxes[4 * c + 2] < ubox[2] else ubox[2]
        ubox[3] = boxes[4 * c + 3] if boxes[4 * c + 3] > ubox[3] else ubox[3]
    union_area = (ubox[1] - ubox[0]) * (ubox[3] - ubox[2]) if ubox[1] >= 0 else 0
    if shared < 0:
        shared = union_area <= reach_area
    if not failed and shared and union_area > 0:
        # the unsettled texels of the box around all reaches, row by row
        unsettled = <_Unsettled*>malloc(union_area * sizeof(_Unsettled))
        row_start = <Py_ssize_t*>malloc((ubox[1] - ubox[0] + 1) * sizeof(Py_ssize_t))
        if unsettled == NULL or row_start == NULL:
            failed = 1
        else:
            n_set = 0
            for pi in range(ubox[0], ubox[1]):
                row_start[pi - ubox[0]] = n_set
                for b in range(ubox[2] // ROOM_BLOCK, (ubox[3] + ROOM_BLOCK - 1) // ROOM_BLOCK):
                    if bup[pi * nb + b] >= most_up and bdown[pi * nb + b] >= most_down:
                        continue
                    q0 = b * ROOM_BLOCK if b * ROOM_BLOCK > ubox[2] else ubox[2]
                    e = (b + 1) * ROOM_BLOCK if (b + 1) * ROOM_BLOCK < ubox[3] else ubox[3]
                    for p in range(pi * w + q0, pi * w + e):
                        if up[p] < most_up or down[p] < most_down:
                            u = &unsettled[n_set]
                            u.den = den[p]
                            u.lo = lw[p]
                            u.hi = hg[p]
                            u.area = ar[p]
                            u.pc = pc[p]
                            u.pj = <int32_t>(p - pi * w)
                            u.hu = <int32_t>hu[p]
                            u.hv = <int32_t>hv[p]
                            u.up = up[p]
                            u.down = down[p]
                            n_set += 1
            row_start[ubox[1] - ubox[0]] = n_set
    for c in range(n if not failed else 0):
        gained = 0.0
        over = 0.0
        filled = 0.0
        other = minus[c] if pairs else -1
        _needs(totals, plus[c], other, sign, &need_up, &need_down)
        stride = _extent_table(indptr, texels, counts, plus[c], other, w, ebox, &table, &size)
        if not stride and (indptr[plus[c] + 1] > indptr[plus[c]] or other >= 0 and indptr[other + 1] > indptr[other]):
            failed = 1
            break
        box[0] = boxes[4 * c]
        box[1] = boxes[4 * c + 1]
        box[2] = boxes[4 * c + 2]
        box[3] = boxes[4 * c + 3]
        if stride and box[1] >= 0 and shared:
            for pi in range(box[0], box[1]):
                # (each row's texels in column order)
                for k in range(row_start[pi - ubox[0]], row_start[pi - ubox[0] + 1]):
                    u = &unsettled[k]
                    if u.pj >= box[3]:
                        break
                    if u.pj < box[2] or (u.up >= need_up and u.down >= need_down):
                        continue
                    delta = _in_window(table, stride, ebox, pi, u.pj, u.hu, u.hv)
                    if delta != 0.0:
                        _weigh(u.den, sign, u.pc, delta, u.lo, u.hi, u.area, True, &gained, &over, &filled)
        elif stride and box[1] >= 0:
            if box[3] - box[2] > size_row:
                row = <Py_ssize_t*>realloc(texels_row, (box[3] - box[2]) * sizeof(Py_ssize_t))
                if row == NULL:
                    failed = 1
                    break
                texels_row = row
                size_row = box[3] - box[2]
            for pi in range(box[0], box[1]):
                # the row's texels whose rooms do not hold the stamp's counts (texels with
                # per_count 0 have room for any), gathered without branching on each
                n_row = 0
                for b in range(box[2] // ROOM_BLOCK, (box[3] + ROOM_BLOCK - 1) // ROOM_BLOCK):
                    if bup[pi * nb + b] >= need_up and bdown[pi * nb + b] >= need_down:
                        continue
                    q0 = b * ROOM_BLOCK if b * ROOM_BLOCK > box[2] else box[2]
                    e = (b + 1) * ROOM_BLOCK if (b + 1) * ROOM_BLOCK < box[3] else box[3]
                    for p in range(pi * w + q0, pi * w + e):
                        texels_row[n_row] = p
                        n_row = n_row + ((up[p] < need_up) | (down[p] < need_down))
                for k in range(n_row):
                    p = texels_row[k]
                    delta = _in_window(table, stride, ebox, pi, p - pi * w, hu[p], hv[p])
                    if delta != 0.0:
                        _weigh(den[p], sign, pc[p], delta, lw[p], hg[p], ar[p], True, &gained, &over, &filled)
        out[3 * c] = gained
        out[3 * c + 1] = over
        out[3 * c + 2] = filled
    free(table)
    free(texels_row)
    free(boxes)
    free(row_start)
    free(unsettled)
    return -1 if failed else 0


def stamp_apply_tracked(const int64_t[::1] indptr, const int64_t[::1] texels, const double[::1] counts,
                        Py_ssize_t s, double sign, double[::1] density, const double[::1] per_count,
                        const double[::1] low, const double[::1] high, const int64_t[::1] half_u,
                        const int64_t[::1] half_v, const int32_t[::1] ext_u, const int32_t[::1] ext_v,
                        int32_t cap, int32_t[::1] room_up, int32_t[::1] room_down, int32_t[::1] block_up,
                        int32_t[::1] block_down, Py_ssize_t h, Py_ssize_t w):
    """stamp_apply (whole counts) over the texels whose windows can hold one of stamp s's
    punctures (no other changes), then their rooms renewed (stamp_rooms). Returns 0 (-1: out
    of memory)."""
    cdef int failed
    if density.shape[0] == 0:
        return 0
    with nogil:
        failed = _apply_tracked(indptr, texels, counts, s, sign, density, per_count, low, high, half_u, half_v, ext_u,
                                ext_v, cap, room_up, room_down, block_up, block_down, h, w)
    return failed


cdef int _apply_tracked(const int64_t[::1] indptr, const int64_t[::1] texels, const double[::1] counts,
                        Py_ssize_t s, double sign, double[::1] density, const double[::1] per_count,
                        const double[::1] low, const double[::1] high, const int64_t[::1] half_u,
                        const int64_t[::1] half_v, const int32_t[::1] ext_u, const int32_t[::1] ext_v,
                        int32_t cap, int32_t[::1] room_up, int32_t[::1] room_down, int32_t[::1] block_up,
                        int32_t[::1] block_down, Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    # stamp_apply_tracked for a density of h * w > 0 texels
    cdef Py_ssize_t pi, pj, p, stride, size = 0
    cdef Py_ssize_t box[4]
    cdef Py_ssize_t ebox[4]
    cdef double* table = NULL
    cdef double delta
    cdef bint failed = False
    stride = _extent_table(indptr, texels, counts, s, -1, w, ebox, &table, &size)
    failed = not stride and indptr[s + 1] > indptr[s]
    if stride and _reach(indptr, texels, s, -1, h, w, &ext_u[0], &ext_v[0], box):
        for pi in range(box[0], box[1]):
            for pj in range(box[2], box[3]):
                p = pi * w + pj
                if per_count[p] != 0.0:
                    delta = _in_window(table, stride, ebox, pi, pj, half_u[p], half_v[p])
                    if delta != 0.0:
                        # (a window without the stamp's punctures keeps its density, as
                        # stamp_apply's + 0 leaves it, and its rooms)
                        density[p] = density[p] + sign * per_count[p] * delta
                        room_up[p] = _room(density[p], per_count[p], 1.0, low[p], high[p], cap)
                        room_down[p] = _room(density[p], per_count[p], -1.0, low[p], high[p], cap)
            _block_rooms(&room_up[0], &room_down[0], pi, box[2], box[3], w, &block_up[0], &block_down[0])
    free(table)
    return -1 if failed else 0


def stamps_touching(const int64_t[::1] indptr, const int64_t[::1] texels, const int64_t[::1] columns,
                    const uint8_t[::1] mask, uint8_t[::1] out):
    """out[c] = 1 if stamp columns[c] has a puncture on a texel of mask (texels[indptr[s]:
    indptr[s + 1]] its texels), else 0."""
    cdef Py_ssize_t c, k
    cdef uint8_t hit
    with nogil:
        for c in range(columns.shape[0]):
            hit = 0
            for k in range(indptr[columns[c]], indptr[columns[c] + 1]):
                if mask[texels[k]]:
                    hit = 1
                    break
            out[c] = hit


# --- the repair's patch passes ----------------------------------------------------------
# coverage.pen_fit.repair mends the windows left outside their band one patch at a time:
# each patch's worst texel weighs the stamps with a puncture in its window and takes the
# best move. The passes below run a round's patches in one call, as
# coverage.density.StampEffects.patch_moves_reference does them in NumPy.

ctypedef struct _Keyed:
    double key
    int64_t at


cdef inline bint _sorts_before(double a, double b) noexcept nogil:
    # a before b in NumPy's ascending order of floats (NaN after every number)
    return a < b or (b != b and a == a)


cdef int _keyed_cmp(const void* x, const void* y) noexcept nogil:
    # by key as NumPy sorts, then by position: a total order, so any sort gives
    # numpy.argsort(kind="stable")'s order
    cdef const _Keyed* a = <const _Keyed*>x
    cdef const _Keyed* b = <const _Keyed*>y
    if _sorts_before(a.key, b.key):
        return -1
    if _sorts_before(b.key, a.key):
        return 1
    return (a.at > b.at) - (a.at < b.at)


cdef int _int64_cmp(const void* x, const void* y) noexcept nogil:
    cdef int64_t a = (<const int64_t*>x)[0], b = (<const int64_t*>y)[0]
    return (a > b) - (a < b)


cdef inline bint _lex_before(double a1, double a2, int64_t a, double b1, double b2, int64_t b) noexcept nogil:
    # (a1, a2, a) before (b1, b2, b) in numpy.lexsort((second, first))'s order
    if _sorts_before(a1, b1):
        return True
    if _sorts_before(b1, a1):
        return False
    if _sorts_before(a2, b2):
        return True
    if _sorts_before(b2, a2):
        return False
    return a < b


cdef inline bint _grow(void** buffer, size_t size) noexcept nogil:
    # buffer reallocated to size bytes (kept as it was, and False, where that fails)
    cdef void* grown = realloc(buffer[0], size)
    if grown == NULL:
        return False
    buffer[0] = grown
    return True


cdef inline bint _touches(const int64_t[::1] indptr, const int64_t[::1] texels, int64_t s,
                          const uint8_t[::1] mask) noexcept nogil:
    # stamp s has a puncture on a texel of mask (an empty mask: none)
    cdef Py_ssize_t k
    if mask.shape[0] == 0:
        return False
    for k in range(indptr[s], indptr[s + 1]):
        if mask[texels[k]]:
            return True
    return False


def repair_pass(int mode, const int64_t[::1] ks, Py_ssize_t n_tries, const int64_t[::1] steps,
                const int64_t[::1] win_indptr, const int64_t[::1] win_indices, uint8_t[::1] fire,
                uint8_t[::1] blocked, const uint8_t[::1] hit, const int64_t[::1] groups, const double[::1] grad,
                const int64_t[::1] indptr, const int64_t[::1] texels, const double[::1] counts,
                const int32_t[::1] totals, double[::1] density, const double[::1] low, const double[::1] high,
                const double[::1] area, const double[::1] per_count, const int64_t[::1] half_u,
                const int64_t[::1] half_v, const int32_t[::1] ext_u, const int32_t[::1] ext_v, int32_t cap,
                int32_t[::1] room_up, int32_t[::1] room_down, int32_t[::1] block_up, int32_t[::1] block_down,
                Py_ssize_t h, Py_ssize_t w, int64_t[:, ::1] moved):
    """One round's moves of coverage.pen_fit.repair over the patches whose worst texels are
    ks, in order, each weighing the stamps with a puncture in its window (the distinct
    columns of the CSR win_indptr/win_indices over the window's texel rows, ascending) against
    the tracked density (stamp_effects_tracked, stamp_apply_tracked: the stamps' CSC indptr,
    texels, counts and totals, the density, band, rooms and extents as those take them):

    mode 0 (drop): of the fired stamps, the first n_tries by -grad (stable); the one whose
    loss takes the most skin off the cap's mark and keeps the most in band (the first by
    (-gained, more_over) with more_over < 0), else the one with the most punctures in the
    window (then -gained), if any, is removed;
    mode 1 (add): of the stamps neither fired, nor blocked, nor touching hit, the first
    n_tries by grad (stable); those that would lift a window over its mark are blocked; of
    the rest with gained >= 0 and (gained > 0 or filled > 0), the first by (-gained, -filled)
    is added;
    mode 2 (shift): each fired stamp's moves to stamp + steps[i] (in order) within its group
    of groups, unfired and not touching hit; more than n_tries: the first n_tries by
    grad[come] - grad[gone] (stable); of those with more_over <= 0 and gained > 0 (or gained
    == 0 and filled > 0), the first by (-gained, -filled) is made.

    Ties go to the earlier stamp of the order weighed, as numpy.lexsort's. fire and blocked
    (uint8, one per stamp), the density and the rooms change in place; moved[q] = (removed,
    added) of patch q's move (-1: none). hit empty: no texel. Returns the number of moves
    (-1: out of memory); a window's stamp outside [0, m) raises ValueError, the moves made
    before it kept."""
    cdef Py_ssize_t m = fire.shape[0], n_k = ks.shape[0], q, r, c, n_cols, n_cand, n_try, best, t
    cdef Py_ssize_t i, j, i0, i1, j0, j1, e, need, room = 0
    cdef int64_t k, s, come, hu, hv, ti, tj
    cdef int64_t* cols = NULL
    cdef int64_t* gone = NULL
    cdef int64_t* come_at = NULL
    cdef int64_t* try_plus = NULL
    cdef int64_t* try_minus = NULL
    cdef uint8_t* seen = NULL
    cdef _Keyed* keyed = NULL
    cdef double* out = NULL
    cdef double* inside = NULL
    cdef double acc
    cdef Py_ssize_t n_steps = steps.shape[0] if mode == 2 else 1
    cdef int failed = 0
    cdef Py_ssize_t n_moves = 0
    if mode < 0 or mode > 2:
        raise ValueError(f"repair_pass: mode {mode}; 0 drop, 1 add, 2 shift")
    if n_tries < 0:
        raise ValueError(f"repair_pass: n_tries {n_tries}; give 0 or more")
    if moved.shape[0] != n_k or moved.shape[1] != 2:
        raise ValueError("repair_pass: moved must be (len(ks), 2)")
    if (blocked.shape[0] != m or grad.shape[0] != m or indptr.shape[0] != m + 1 or totals.shape[0] != m
            or mode == 2 and groups.shape[0] != m or hit.shape[0] not in (0, h * w)
            or density.shape[0] != h * w or win_indptr.shape[0] != h * w + 1):
        raise ValueError("repair_pass: the stamps' or the texels' arrays do not match")
    for q in range(n_k):
        if not 0 <= ks[q] < h * w:
            raise ValueError(f"repair_pass: texel {ks[q]} outside the {h} x {w} grid")
    with nogil:
        # the per-patch buffers hold the window's entries (times the steps): grown to the
        # largest window met, not sized by the stamps
        seen = <uint8_t*>malloc((m + 1) * sizeof(uint8_t))
        if seen == NULL:
            failed = 1
        else:
            memset(seen, 0, (m + 1) * sizeof(uint8_t))
        for q in range(n_k if not failed else 0):
            moved[q, 0] = -1
            moved[q, 1] = -1
            # the stamps with a puncture in texel k's window, ascending
            k = ks[q]
            i = k // w
            j = k - i * w
            hu = half_u[k]
            hv = half_v[k]
            i0 = i - hv if i - hv > 0 else 0
            i1 = i + hv + 1 if i + hv + 1 < h else h
            j0 = j - hu if j - hu > 0 else 0
            j1 = j + hu + 1 if j + hu + 1 < w else w
            n_cols = 0
            need = 1
            if i1 > i0 and j1 > j0:
                for r in range(i0, i1):
                    need += win_indptr[r * w + j1] - win_indptr[r * w + j0]
            need *= n_steps if n_steps > 1 else 1
            if need > room:
                if not (_grow(<void**>&cols, need * sizeof(int64_t)) and _grow(<void**>&gone, need * sizeof(int64_t))
                        and _grow(<void**>&come_at, need * sizeof(int64_t))
                        and _grow(<void**>&try_plus, need * sizeof(int64_t))
                        and _grow(<void**>&try_minus, need * sizeof(int64_t))
                        and _grow(<void**>&keyed, need * sizeof(_Keyed))
                        and _grow(<void**>&out, 3 * need * sizeof(double))
                        and _grow(<void**>&inside, need * sizeof(double))):
                    failed = 1
                    break
                room = need
            if i1 > i0 and j1 > j0:
                for r in range(i0, i1):
                    for e in range(win_indptr[r * w + j0], win_indptr[r * w + j1]):
                        s = win_indices[e]
                        if s < 0 or s >= m:
                            failed = 2
                            break
                        if not seen[s]:
                            seen[s] = 1
                            cols[n_cols] = s
                            n_cols += 1
                for c in range(n_cols):
                    seen[cols[c]] = 0
                if failed:
                    break
                qsort(cols, n_cols, sizeof(int64_t), _int64_cmp)
            # the moves weighed, in the order they are weighed
            n_cand = 0
            for c in range(n_cols):
                s = cols[c]
                if mode == 0:
                    if fire[s]:
                        try_plus[n_cand] = s
                        n_cand += 1
                elif mode == 1:
                    if not fire[s] and not blocked[s] and not _touches(indptr, texels, s, hit):
                        try_plus[n_cand] = s
                        n_cand += 1
                elif fire[s]:
                    for t in range(n_steps):
                        come = s + steps[t]
                        if (0 <= come < m and groups[come] == groups[s] and not fire[come]
                                and not _touches(indptr, texels, come, hit)):
                            try_plus[n_cand] = come
                            try_minus[n_cand] = s
                            n_cand += 1
            if not n_cand:
                continue
            if mode < 2 or n_cand > n_tries:
                for c in range(n_cand):
                    if mode == 0:
                        keyed[c].key = -grad[try_plus[c]]
                    elif mode == 1:
                        keyed[c].key = grad[try_plus[c]]
                    else:
                        keyed[c].key = grad[try_plus[c]] - grad[try_minus[c]]
                    keyed[c].at = c
                qsort(keyed, n_cand, sizeof(_Keyed), _keyed_cmp)
                n_try = n_cand if n_cand < n_tries else n_tries
                for c in range(n_try):
                    gone[c] = try_minus[keyed[c].at] if mode == 2 else -1
                    come_at[c] = try_plus[keyed[c].at]
            else:
                n_try = n_cand
                for c in range(n_try):
                    gone[c] = try_minus[c]
                    come_at[c] = try_plus[c]
            if n_try == 0:
                continue
            if _effects_tracked(indptr, texels, counts, totals, come_at, gone if mode == 2 else NULL, n_try,
                                -1.0 if mode == 0 else 1.0, density, low, high, area, per_count, half_u, half_v,
                                ext_u, ext_v, room_up, room_down, block_up, block_down, h, w, out, -1):
                failed = 1
                break
            # the move: out[3 c] gained, out[3 c + 1] more over, out[3 c + 2] filled
            best = -1
            for c in range(n_try):
                if mode == 0:
                    if not out[3 * c + 1] < 0.0:
                        continue
                    if best < 0 or _lex_before(-out[3 * c], out[3 * c + 1], c, -out[3 * best],
                                               out[3 * best + 1], best):
                        best = c
                else:
                    if mode == 1:
                        if out[3 * c + 1] > 0.0:
                            blocked[come_at[c]] = 1
                        if not (out[3 * c + 1] <= 0.0 and out[3 * c] >= 0.0
                                and (out[3 * c] > 0.0 or out[3 * c + 2] > 0.0)):
                            continue
                    elif not (out[3 * c + 1] <= 0.0
                              and (out[3 * c] > 0.0 or out[3 * c] == 0.0 and out[3 * c + 2] > 0.0)):
                        continue
                    if best < 0 or _lex_before(-out[3 * c], -out[3 * c + 2], c, -out[3 * best],
                                               -out[3 * best + 2], best):
                        best = c
            if best < 0 and mode == 0:
                # over by more than any one stamp takes off: the stamp with the most punctures
                # in the window (then keeping the most skin in band), if it has any there
                for c in range(n_try):
                    acc = 0.0
                    for e in range(indptr[come_at[c]], indptr[come_at[c] + 1]):
                        ti = texels[e] // w
                        tj = texels[e] - ti * w
                        acc = acc + counts[e] * (1.0 if (ti - i <= hv and i - ti <= hv and tj - j <= hu
                                                         and j - tj <= hu) else 0.0)
                    inside[c] = acc
                    if best < 0 or _lex_before(-inside[c], -out[3 * c], c, -inside[best], -out[3 * best], best):
                        best = c
                if best >= 0 and not inside[best] > 0.0:
                    best = -1
            if best < 0:
                continue
            if mode == 0:
                fire[come_at[best]] = 0
                moved[q, 0] = come_at[best]
                failed = _apply_tracked(indptr, texels, counts, come_at[best], -1.0, density, per_count, low, high,
                                        half_u, half_v, ext_u, ext_v, cap, room_up, room_down, block_up,
                                        block_down, h, w)
            elif mode == 1:
                fire[come_at[best]] = 1
                moved[q, 1] = come_at[best]
                failed = _apply_tracked(indptr, texels, counts, come_at[best], 1.0, density, per_count, low, high,
                                        half_u, half_v, ext_u, ext_v, cap, room_up, room_down, block_up,
                                        block_down, h, w)
            else:
                fire[gone[best]] = 0
                fire[come_at[best]] = 1
                moved[q, 0] = gone[best]
                moved[q, 1] = come_at[best]
                failed = _apply_tracked(indptr, texels, counts, gone[best], -1.0, density, per_count, low, high,
                                        half_u, half_v, ext_u, ext_v, cap, room_up, room_down, block_up,
                                        block_down, h, w)
                if not failed:
                    failed = _apply_tracked(indptr, texels, counts, come_at[best], 1.0, density, per_count, low,
                                            high, half_u, half_v, ext_u, ext_v, cap, room_up, room_down, block_up,
                                            block_down, h, w)
            if failed:
                break
            n_moves += 1
        free(cols)
        free(gone)
        free(come_at)
        free(try_plus)
        free(try_minus)
        free(keyed)
        free(out)
        free(inside)
        free(seen)
    if failed == 2:
        raise ValueError(f"repair_pass: a window's stamp lies outside the {m} stamps")
    return -1 if failed else n_moves


# --- distinct channels -------------------------------------------------------------------
# Greedy, in firing order: a puncture within `radius` of an earlier channel's first
# puncture joins that channel; otherwise it opens a new one. A spatial hash of cells of
# side `radius` keeps the search to the 27 neighbouring cells.

cdef inline uint64_t _key(int64_t x, int64_t y, int64_t z) noexcept nogil:
    # 21 bits per axis after an offset; faces are a few hundred mm, cells >= 0.01 mm
    return ((<uint64_t>(x + 1048576)) & 0x1FFFFF) | \
           (((<uint64_t>(y + 1048576)) & 0x1FFFFF) << 21) | \
           (((<uint64_t>(z + 1048576)) & 0x1FFFFF) << 42)


cdef inline uint64_t _hash(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= <uint64_t>0xff51afd7ed558ccd
    k ^= k >> 33
    return k


cdef int _merge(const double[:, ::1] pts, double radius, int64_t[::1] out_channel) noexcept nogil:
    cdef Py_ssize_t n = pts.shape[0], i
    cdef uint64_t cap = 1, mask, slot, key
    cdef int64_t cx, cy, cz, dx, dy, dz, head, ch, found
    cdef double inv = 1.0 / radius, r2 = radius * radius, ddx, ddy, ddz
    while cap < <uint64_t>(2 * n + 2):
        cap <<= 1
    mask = cap - 1
    cdef uint64_t* keys = <uint64_t*>malloc(cap * sizeof(uint64_t))
    cdef int64_t* heads = <int64_t*>malloc(cap * sizeof(int64_t))
    cdef int64_t* nxt = <int64_t*>malloc((n + 1) * sizeof(int64_t))
    if keys == NULL or heads == NULL or nxt == NULL:
        free(keys); free(heads); free(nxt)
        return -1
    for slot in range(cap):
        heads[slot] = -1
        keys[slot] = 0
    for i in range(n):
        cx = <int64_t>floor(pts[i, 0] * inv)
        cy = <int64_t>floor(pts[i, 1] * inv)
        cz = <int64_t>floor(pts[i, 2] * inv)
        found = -1
        for dz in range(-1, 2):
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    key = _key(cx + dx, cy + dy, cz + dz)
                    slot = _hash(key) & mask
                    while heads[slot] >= 0 and keys[slot] != key:
                        slot = (slot + 1) & mask
                    head = heads[slot]
                    while head >= 0:
                        ddx = pts[head, 0] - pts[i, 0]
                        ddy = pts[head, 1] - pts[i, 1]
                        ddz = pts[head, 2] - pts[i, 2]
                        # the earliest channel within reach wins, independent of cell order
                        if ddx * ddx + ddy * ddy + ddz * ddz <= r2 and (found < 0 or head < found):
                            found = head
                        head = nxt[head]
        if found >= 0:
            out_channel[i] = found
            continue
        out_channel[i] = i
        key = _key(cx, cy, cz)
        slot = _hash(key) & mask
        while heads[slot] >= 0 and keys[slot] != key:
            slot = (slot + 1) & mask
        keys[slot] = key
        nxt[i] = heads[slot]
        heads[slot] = i
    free(keys)
    free(heads)
    free(nxt)
    return 0


def merge_channels(const double[:, ::1] points, double radius, int64_t[::1] out_channel):
    """out_channel[i] = index of the first puncture of the channel puncture i belongs to."""
    cdef int rc
    with nogil:
        rc = _merge(points, radius, out_channel)
    if rc != 0:
        raise MemoryError("merge_channels: out of memory")


# --- the pen fit's objective ---------------------------------------------------------------
# One evaluation of coverage.pen_fit's objective, every value computed with the NumPy
# reference's operations in its order (pen_fit.objective_reference): counts = base + A x
# (scattered column by column, as scipy's CSC product adds them), d = per_count x
# window sums (_window_sums' table and corners), the shortfall's pieces, its gradient
# pulled back through the window spread (_window_spread's corners and running sums) and
# A^T (each stamp's texels in the order A's columns hold them). The work is bound by
# memory traffic, so it is fused into few passes over narrow arrays: 32-bit indices and
# window half-sizes, A's values as float32 when that holds them exactly (needle counts).

ctypedef fused stored_t:
    float
    double

# the iterator buffer numpy.einsum sums through (numpy's default buffer size)
cdef enum:
    EINSUM_BUFFER = 8192


cdef inline double _band(double d, double low, double high, double scale, double over_weight, double per_count,
                         double* under, double* over) noexcept nogil:
    # the shortfall's pieces at density d, under = max(low - d, 0) and over = max(d - high, 0)
    # as np.maximum(v, 0.0) gives them (NaN stays NaN); returns the gradient of
    # scale (under^2 + over_weight over^2) with respect to the texel's window sum
    cdef double a = low - d, b = d - high
    under[0] = a if not (a <= 0.0) else 0.0
    over[0] = b if not (b <= 0.0) else 0.0
    return ((2.0 * scale) * (over_weight * over[0] - under[0])) * per_count


cdef inline void _transposed_product(const int32_t[::1] cols_indptr, const int32_t[::1] cols_indices,
                                     const stored_t[::1] cols_data, const double[:, ::1] spread,
                                     Py_ssize_t h, Py_ssize_t w, double[::1] grad) noexcept nogil:
    # grad = A^T spread: each stamp's texels, in the order A's columns hold them; two stamps
    # at a time (each stamp's sum is its own chain of additions)
    cdef Py_ssize_t r = 0, m = grad.shape[0], k, k1, l, l1
    cdef double s, s2
    cdef const double* out
    if h > 0 and w > 0:
        out = &spread[0, 0]
        while r + 1 < m:
            k = cols_indptr[r]
            k1 = cols_indptr[r + 1]
            l = k1
            l1 = cols_indptr[r + 2]
            s = 0.0
            s2 = 0.0
            while k < k1 and l < l1:
                s = s + <double>cols_data[k] * out[cols_indices[k]]
                s2 = s2 + <double>cols_data[l] * out[cols_indices[l]]
                k += 1
                l += 1
            while k < k1:
                s = s + <double>cols_data[k] * out[cols_indices[k]]
                k += 1
            while l < l1:
                s2 = s2 + <double>cols_data[l] * out[cols_indices[l]]
                l += 1
            grad[r] = s
            grad[r + 1] = s2
            r += 2
        if r < m:
            s = 0.0
            for k in range(cols_indptr[r], cols_indptr[r + 1]):
                s = s + <double>cols_data[k] * out[cols_indices[k]]
            grad[r] = s
    else:
        for r in range(m):
            grad[r] = 0.0


cdef extern from *:
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    /* a if not (a <= 0) else +0.0 (NaN stays NaN), without a branch */
    static inline double coverage_positive(double a) {
        __m128d x = _mm_set_sd(a);
        return _mm_cvtsd_f64(_mm_andnot_pd(_mm_cmple_sd(x, _mm_setzero_pd()), x));
    }
    #else
    static inline double coverage_positive(double a) { return !(a <= 0.0) ? a : 0.0; }
    #endif

    /* one texel of fit_objective's texel pass: its density from the summed-area table S, the
       shortfall's terms added to the sums, its gradient over its window's corners C */
    static inline void coverage_band_one(const double* S, double* C, const int32_t* wn, const double* cs,
                                         double ow, double* acc_u, double* acc_o) {
        int32_t off = wn[0], dj = wn[1], dim = wn[2];
        double pc = cs[0], sc = cs[3];
        double d = pc * (((S[off + dim + dj] - S[off + dj]) - S[off + dim]) + S[off]);
        double u = coverage_positive(cs[1] - d), o = coverage_positive(d - cs[2]);
        double v = ((2.0 * sc) * (ow * o - u)) * pc;
        *acc_u = *acc_u + (sc * u) * u;
        *acc_o = *acc_o + (sc * o) * o;
        C[off] += v;
        C[off + dj] -= v;
        C[off + dim] -= v;
        C[off + dim + dj] += v;
    }

    /* two consecutive texels: the same operations, each pair of them in one instruction (the
       terms then added to the sums one texel after the other, the corners likewise) */
    static inline void coverage_band_two(const double* S, double* C, const int32_t* wn, const double* cs,
                                         double ow, double* acc_u, double* acc_o) {
    #if defined(__SSE2__)
        int32_t o0 = wn[0], j0 = wn[1], m0 = wn[2], o1 = wn[3], j1 = wn[4], m1 = wn[5];
        __m128d zero = _mm_setzero_pd();
        __m128d a = _mm_set_pd(S[o1 + m1 + j1], S[o0 + m0 + j0]);
        __m128d b = _mm_set_pd(S[o1 + j1], S[o0 + j0]);
        __m128d c = _mm_set_pd(S[o1 + m1], S[o0 + m0]);
        __m128d e = _mm_set_pd(S[o1], S[o0]);
        __m128d pc = _mm_set_pd(cs[4], cs[0]);
        __m128d lo = _mm_set_pd(cs[5], cs[1]);
        __m128d hi = _mm_set_pd(cs[6], cs[2]);
        __m128d sc = _mm_set_pd(cs[7], cs[3]);
        __m128d d = _mm_mul_pd(pc, _mm_add_pd(_mm_sub_pd(_mm_sub_pd(a, b), c), e));
        __m128d x = _mm_sub_pd(lo, d), y = _mm_sub_pd(d, hi);
        __m128d u = _mm_andnot_pd(_mm_cmple_pd(x, zero), x);
        __m128d o = _mm_andnot_pd(_mm_cmple_pd(y, zero), y);
        __m128d v = _mm_mul_pd(_mm_mul_pd(_mm_mul_pd(_mm_set1_pd(2.0), sc),
                                          _mm_sub_pd(_mm_mul_pd(_mm_set1_pd(ow), o), u)), pc);
        __m128d tu = _mm_mul_pd(_mm_mul_pd(sc, u), u), to = _mm_mul_pd(_mm_mul_pd(sc, o), o);
        double v0 = _mm_cvtsd_f64(v), v1 = _mm_cvtsd_f64(_mm_unpackhi_pd(v, v));
        *acc_u = (*acc_u + _mm_cvtsd_f64(tu)) + _mm_cvtsd_f64(_mm_unpackhi_pd(tu, tu));
        *acc_o = (*acc_o + _mm_cvtsd_f64(to)) + _mm_cvtsd_f64(_mm_unpackhi_pd(to, to));
        C[o0] += v0;
        C[o0 + j0] -= v0;
        C[o0 + m0] -= v0;
        C[o0 + m0 + j0] += v0;
        C[o1] += v1;
        C[o1 + j1] -= v1;
        C[o1 + m1] -= v1;
        C[o1 + m1 + j1] += v1;
    #else
        coverage_band_one(S, C, wn, cs, ow, acc_u, acc_o);
        coverage_band_one(S, C, wn + 3, cs + 4, ow, acc_u, acc_o);
    #endif
    }
    """
    double _positive "coverage_positive"(double a) noexcept nogil
    void _band_one "coverage_band_one"(const double* S, double* C, const int32_t* wn, const double* cs, double ow,
                                        double* acc_u, double* acc_o) noexcept nogil
    void _band_two "coverage_band_two"(const double* S, double* C, const int32_t* wn, const double* cs, double ow,
                                        double* acc_u, double* acc_o) noexcept nogil


cdef inline bint _fit_texel_counts(uint8_t on, double pc, double lo, double hi, double sc) noexcept nogil:
    # whether a texel's terms can be other than 0 (coverage.density.fit_texels_reference)
    cdef double d, u, o
    if on:
        return True
    d = pc * 0.0
    u = _positive(lo - d)
    o = _positive(d - hi)
    return not ((sc * u) * u == 0.0 and (sc * o) * o == 0.0)


def fit_texels(const int64_t[:, ::1] half_u, const int64_t[:, ::1] half_v, const uint8_t[:, ::1] mask,
               const double[:, ::1] per_count, const double[:, ::1] low, const double[:, ::1] high,
               const double[:, ::1] scale, int32_t[::1] runs, int32_t[:, ::1] windows, double[:, ::1] consts):
    """coverage.density.fit_texels' layout: with runs of size 0, returns (2 x the number of
    runs, the number of texels in them); else fills runs, windows and consts (of those sizes)
    and returns the same, or (-1, -1) where a window's corner lies past 2^31 - 1."""
    cdef Py_ssize_t h = mask.shape[0], w = mask.shape[1], i, j, nr = 0, nt = 0
    cdef int64_t i0, i1, j0, j1, W = w + 1, limit = 2147483648
    cdef bint fill = runs.shape[0] > 0, prev = False, live, bad = False
    with nogil:
        for i in range(h):
            if bad:
                break
            for j in range(w):
                live = _fit_texel_counts(mask[i, j], per_count[i, j], low[i, j], high[i, j], scale[i, j])
                if live != prev:
                    if fill:
                        runs[nr] = <int32_t>(i * w + j)
                    nr += 1
                    prev = live
                if not live:
                    continue
                if fill:
                    if mask[i, j]:
                        _window(i, j, half_u[i, j], half_v[i, j], h, w, &i0, &i1, &j0, &j1)
                        if i0 * W + j0 + (j1 - j0) + (i1 - i0) * W >= limit or i0 * W + j0 < 0:
                            bad = True
                            break
                        windows[nt, 0] = <int32_t>(i0 * W + j0)
                        windows[nt, 1] = <int32_t>(j1 - j0)
                        windows[nt, 2] = <int32_t>((i1 - i0) * W)
                    else:
                        windows[nt, 0] = <int32_t>w
                        windows[nt, 1] = 0
                        windows[nt, 2] = 0
                    consts[nt, 0] = per_count[i, j]
                    consts[nt, 1] = low[i, j]
                    consts[nt, 2] = high[i, j]
                    consts[nt, 3] = scale[i, j]
                nt += 1
        if prev and not bad:
            if fill:
                runs[nr] = <int32_t>(h * w)
            nr += 1
    if bad:
        return -1, -1
    return nr, nt


def fit_objective(const int32_t[::1] cols_indptr, const int32_t[::1] cols_indices, const stored_t[::1] cols_data,
                  const double[::1] x, const double[:, ::1] base, const int32_t[::1] runs,
                  const int32_t[:, ::1] windows, const double[:, ::1] consts, double over_weight,
                  double[:, ::1] sat, double[:, ::1] corners, double[:, ::1] spread, double[::1] grad):
    """counts = base + A x; d = per_count * window_sums(counts); under = max(low - d, 0),
    over = max(d - high, 0); grad = A^T window_spread((2 scale (over_weight over - under))
    per_count). A is given by stamp columns (CSC as the fit holds it): A x adds each stamp's
    punctures column by column as scipy's CSC product does. Returns (sum scale under under, sum scale over over), each
    summed as numpy.einsum("ij,ij,ij->") sums: (scale * v) * v in order within runs of
    EINSUM_BUFFER texels, the runs' sums added up in order.

    The texels are given as coverage.density.fit_texels lays them out: runs, flat [a, b)
    pairs ascending, the texels whose terms can be other than 0 (every other one adds +-0
    to both sums and nothing to the gradient: it is passed over, counted in its einsum run);
    per such texel in order, windows (the offset of its window's first corner (i0, j0) in
    the (h + 1, w + 1) tables, j1 - j0, (i1 - i0) (w + 1); off the mask w, 0, 0: the table's
    first row is +0, so the density is per_count x 0.0, and the corners' last column is never
    read) and consts (per_count, low, high, scale)."""
    cdef Py_ssize_t h = base.shape[0], w = base.shape[1], r, k, q, t, b, e = 0, p = 0
    cdef Py_ssize_t n = h * w, W = w + 1, boundary = EINSUM_BUFFER
    cdef double s, acc_u = 0.0, acc_o = 0.0, sum_u = 0.0, sum_o = 0.0
    cdef double* ax
    cdef double* S = &sat[0, 0]
    cdef double* C = &corners[0, 0]
    cdef const int32_t* wn
    cdef const double* cs
    # the layout must hold the runs' texels (fit_texels')
    for q in range(0, runs.shape[0] - 1, 2):
        if not (p <= runs[q] <= runs[q + 1] <= n):
            raise ValueError("fit_objective: runs out of order")
        p = runs[q + 1]
        e += runs[q + 1] - runs[q]
    if (runs.shape[0] % 2 or windows.shape[0] != e or consts.shape[0] != e or windows.shape[1] != 3
            or consts.shape[1] != 4):
        raise ValueError("fit_objective: runs, windows and consts do not match")
    p = 0
    with nogil:
        # 1. counts = base + A x (A x scattered into the spread buffer, unused until step 3),
        # straight into the summed-area table
        if h > 0 and w > 0:
            ax = &spread[0, 0]
            memset(ax, 0, n * sizeof(double))
            for r in range(x.shape[0]):
                s = x[r]
                for k in range(cols_indptr[r], cols_indptr[r + 1]):
                    ax[cols_indices[k]] += <double>cols_data[k] * s
        _summed_area(base, spread, True, h, w, sat)
        # 2. the density, the shortfall and its gradient, spread over each window's corners;
        # a zero gradient is added too: no corner is ever -0 (it starts +0, and sums of
        # nonzero numbers round to +0), so adding +-0 leaves every corner as it is
        memset(C, 0, (h + 1) * W * sizeof(double))
        for q in range(0, runs.shape[0] - 1, 2):
            t = runs[q]
            b = runs[q + 1]
            while t < b:
                # the einsum runs ended before texel t (the texels passed over added +-0)
                while boundary <= t:
                    sum_u = sum_u + acc_u
                    sum_o = sum_o + acc_o
                    acc_u = 0.0
                    acc_o = 0.0
                    boundary += EINSUM_BUFFER
                e = b if b < boundary else boundary
                wn = &windows[p, 0]
                cs = &consts[p, 0]
                p += e - t
                # two texels at a time (coverage_band_two), the odd one last
                k = t
                while k + 1 < e:
                    _band_two(S, C, wn, cs, over_weight, &acc_u, &acc_o)
                    wn += 6
                    cs += 8
                    k += 2
                if k < e:
                    _band_one(S, C, wn, cs, over_weight, &acc_u, &acc_o)
                t = e
        while boundary <= n:
            sum_u = sum_u + acc_u
            sum_o = sum_o + acc_o
            acc_u = 0.0
            acc_o = 0.0
            boundary += EINSUM_BUFFER
        if n % EINSUM_BUFFER:
            sum_u = sum_u + acc_u
            sum_o = sum_o + acc_o
        # 3. the running sums fill the windows in: the spread gradient per texel
        _fill_windows(corners, h, w, spread)
        # 4. A^T: each stamp's texels
        _transposed_product(cols_indptr, cols_indices, cols_data, spread, h, w, grad)
    return sum_u, sum_o


def window_stamps(const int64_t[::1] indptr, const int64_t[::1] indices, Py_ssize_t i0, Py_ssize_t i1,
                  Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t w, uint8_t[::1] seen, int64_t[::1] out):
    """The distinct columns of a CSR matrix (indptr, indices) over texel rows i * w + j,
    rows [i0, i1) and columns [j0, j1) of a (h, w) grid, into out in the order first met;
    returns how many. seen (one flag per column, all 0) is left all 0."""
    cdef Py_ssize_t i, k, n = 0
    cdef int64_t c
    with nogil:
        for i in range(i0, i1):
            for k in range(indptr[i * w + j0], indptr[i * w + j1]):
                c = indices[k]
                if not seen[c]:
                    seen[c] = 1
                    out[n] = c
                    n = n + 1
        for k in range(n):
            seen[out[k]] = 0
    return n


def band_gradient(const double[:, ::1] density, const int32_t[:, ::1] half_u, const int32_t[:, ::1] half_v,
                  const uint8_t[:, ::1] mask, const double[:, ::1] per_count, const double[:, ::1] low,
                  const double[:, ::1] high, const double[:, ::1] scale, double over_weight,
                  const int32_t[::1] cols_indptr, const int32_t[::1] cols_indices, const double[::1] cols_data,
                  double[:, ::1] corners, double[:, ::1] spread, double[::1] grad):
    """The gradient of the band penalty at a given density, as the fit's objective pulls it
    back (fit_objective, steps 2 to 4, without the sums): grad = A^T window_spread((2 scale
    (over_weight max(d - high, 0) - max(low - d, 0))) per_count)."""
    cdef Py_ssize_t h = density.shape[0], w = density.shape[1], i, j
    cdef int64_t i0, i1, j0, j1
    cdef double u, o, v
    with nogil:
        _clear_corners(corners, h, w)
        for i in range(h):
            for j in range(w):
                if not mask[i, j]:
                    continue
                v = _band(density[i, j], low[i, j], high[i, j], scale[i, j], over_weight, per_count[i, j], &u, &o)
                if v == 0.0:
                    continue
                _window(i, j, half_u[i, j], half_v[i, j], h, w, &i0, &i1, &j0, &j1)
                _add_window(corners, i0, i1, j0, j1, v)
        _fill_windows(corners, h, w, spread)
        _transposed_product(cols_indptr, cols_indices, cols_data, spread, h, w, grad)


# --- the fit's quasi-Newton step (coverage.pen_fit.fit) ---------------------------------
# Every sum below is taken in one fixed order, whatever the machine: four running sums over
# the elements i = 0, 4, 8, ... / 1, 5, 9, ... / 2, ... / 3, ... in turn (the last n % 4
# elements onto the first), added as (s0 + s1) + (s2 + s3). (NumPy's einsum sums a dot
# product in as many lanes as the machine's vector width, fused or not: another result on
# another machine.)

cdef inline double _sum4(double s0, double s1, double s2, double s3) noexcept nogil:
    return (s0 + s1) + (s2 + s3)


cdef double _dot4(const double* a, const double* b, Py_ssize_t n) noexcept nogil:
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 = s0 + a[i] * b[i]
        s1 = s1 + a[i + 1] * b[i + 1]
        s2 = s2 + a[i + 2] * b[i + 2]
        s3 = s3 + a[i + 3] * b[i + 3]
        i += 4
    while i < n:
        s0 = s0 + a[i] * b[i]
        i += 1
    return _sum4(s0, s1, s2, s3)


cdef double _masked_dot4(const double* a, const double* f, const double* q, Py_ssize_t n) noexcept nogil:
    # sum of (a_i f_i) q_i: with f 0 or 1, the dot product of a and q restricted to f (each
    # term a_i q_i where f_i is 1, +-0 where it is 0, as (a_i f_i) (q_i f_i) gives)
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 = s0 + (a[i] * f[i]) * q[i]
        s1 = s1 + (a[i + 1] * f[i + 1]) * q[i + 1]
        s2 = s2 + (a[i + 2] * f[i + 2]) * q[i + 2]
        s3 = s3 + (a[i + 3] * f[i + 3]) * q[i + 3]
        i += 4
    while i < n:
        s0 = s0 + (a[i] * f[i]) * q[i]
        i += 1
    return _sum4(s0, s1, s2, s3)


def lbfgs_direction(const double[::1] x, const double[::1] g, const double[::1] hi, const double[:, ::1] s,
                    const double[:, ::1] y, const int64_t[::1] rows, double[::1] q):
    """The fit's step into q (coverage.pen_fit._lbfgs_direction_reference, its NumPy twin):
    zero on the weights held at a bound (x <= 0 with g > 0, x >= hi with g < 0); over the
    others the L-BFGS two-loop product -H g with the pairs (s[r], y[r]) for r in rows
    (oldest first) restricted to them, a pair whose restricted s . y is not positive left
    out; with no pair, the projected gradient's step scaled so its largest move is 1.
    Returns g . q (the step's slope)."""
    cdef Py_ssize_t m = x.shape[0], k = rows.shape[0], i, p, nk = 0
    if g.shape[0] != m or hi.shape[0] != m or q.shape[0] != m or s.shape[1] != m or y.shape[1] != m \
            or s.shape[0] != y.shape[0]:
        raise ValueError("lbfgs_direction: the vectors differ in length")
    for p in range(k):
        if not 0 <= rows[p] < s.shape[0]:
            raise ValueError("lbfgs_direction: a pair's row is out of range")
    if m == 0:
        return 0.0
    cdef double* f = <double*>malloc(m * sizeof(double))
    cdef double* alpha = <double*>malloc((k + 1) * sizeof(double))
    cdef double* rho = <double*>malloc((k + 1) * sizeof(double))
    cdef int64_t* kept = <int64_t*>malloc((k + 1) * sizeof(int64_t))
    if f == NULL or alpha == NULL or rho == NULL or kept == NULL:
        free(f)
        free(alpha)
        free(rho)
        free(kept)
        raise MemoryError()
    cdef double sy, a, b, scale, big, v, slope
    cdef const double* sr
    cdef const double* yr
    cdef double* qq = &q[0]
    with nogil:
        for i in range(m):
            f[i] = 0.0 if ((x[i] <= 0.0 and g[i] > 0.0) or (x[i] >= hi[i] and g[i] < 0.0)) else 1.0
            qq[i] = -g[i] * f[i]
        for p in range(k - 1, -1, -1):
            sr = &s[rows[p], 0]
            yr = &y[rows[p], 0]
            sy = _masked_dot4(sr, f, yr, m)
            if not (sy > 0.0):
                continue
            a = _masked_dot4(sr, f, qq, m) / sy
            for i in range(m):
                qq[i] = qq[i] - a * (yr[i] * f[i])
            kept[nk] = rows[p]
            alpha[nk] = a
            rho[nk] = sy
            nk += 1
        if nk:
            yr = &y[kept[0], 0]
            scale = rho[0] / _masked_dot4(yr, f, yr, m)
        else:
            big = 0.0
            for i in range(m):
                v = x[i] - g[i]
                v = v if v > 0.0 else 0.0
                v = v if v < hi[i] else hi[i]
                v = v - x[i]
                v = v if v >= 0.0 else -v
                big = v if v > big else big
            scale = 1.0 / (big if big > 1e-12 else 1e-12)
        for i in range(m):
            qq[i] = qq[i] * scale
        for p in range(nk - 1, -1, -1):
            sr = &s[kept[p], 0]
            yr = &y[kept[p], 0]
            b = _masked_dot4(yr, f, qq, m) / rho[p]
            a = alpha[p] - b
            for i in range(m):
                qq[i] = qq[i] + a * (sr[i] * f[i])
        slope = _dot4(&g[0], qq, m)
    free(f)
    free(alpha)
    free(rho)
    free(kept)
    return slope


cdef double _dot_diff4(const double* g, const double* a, const double* b, Py_ssize_t n) noexcept nogil:
    # sum of g_i (a_i - b_i)
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 = s0 + g[i] * (a[i] - b[i])
        s1 = s1 + g[i + 1] * (a[i + 1] - b[i + 1])
        s2 = s2 + g[i + 2] * (a[i + 2] - b[i + 2])
        s3 = s3 + g[i + 3] * (a[i + 3] - b[i + 3])
        i += 4
    while i < n:
        s0 = s0 + g[i] * (a[i] - b[i])
        i += 1
    return _sum4(s0, s1, s2, s3)


def projected_step(const double[::1] x, const double[::1] d, const double[::1] g, const double[::1] hi,
                   double lam, double[::1] out):
    """out = clip(x + lam d, 0, hi); returns g . (out - x) (the fixed order above)."""
    cdef Py_ssize_t m = x.shape[0], i
    if d.shape[0] != m or g.shape[0] != m or hi.shape[0] != m or out.shape[0] != m:
        raise ValueError("projected_step: the vectors differ in length")
    cdef double v, total = 0.0
    with nogil:
        for i in range(m):
            v = x[i] + lam * d[i]
            v = v if v > 0.0 else 0.0
            out[i] = v if v < hi[i] else hi[i]
        if m:
            total = _dot_diff4(&g[0], &out[0], &x[0], m)
    return total


def step_pair(const double[::1] x_new, const double[::1] x, const double[::1] g_new, const double[::1] g,
              double[::1] s_out, double[::1] y_out):
    """s = x_new - x, y = g_new - g written into s_out and y_out; returns s . y (the fixed
    order above), in one pass."""
    cdef Py_ssize_t m = x.shape[0], i = 0, j
    if x_new.shape[0] != m or g_new.shape[0] != m or g.shape[0] != m or s_out.shape[0] != m \
            or y_out.shape[0] != m:
        raise ValueError("step_pair: the vectors differ in length")
    cdef double acc[4]
    cdef double a, b
    acc[0] = acc[1] = acc[2] = acc[3] = 0.0
    with nogil:
        while i + 4 <= m:
            for j in range(4):
                a = x_new[i + j] - x[i + j]
                b = g_new[i + j] - g[i + j]
                s_out[i + j] = a
                y_out[i + j] = b
                acc[j] = acc[j] + a * b
            i += 4
        while i < m:
            a = x_new[i] - x[i]
            b = g_new[i] - g[i]
            s_out[i] = a
            y_out[i] = b
            acc[0] = acc[0] + a * b
            i += 1
    return _sum4(acc[0], acc[1], acc[2], acc[3])


def needle_columns(const double[:, ::1] hits_uv, const uint8_t[::1] fired, Py_ssize_t needles, double u0,
                   double v0, double cell, double inv_cell, Py_ssize_t h, Py_ssize_t w, int32_t[::1] indptr,
                   int32_t[::1] indices, double[::1] data):
    """The pen fit's needle matrix as CSC (coverage.pen_fit.needle_columns_reference, its
    twin): column i holds stamp i's fired needles (rows i * needles ... of hits_uv) counted
    in their texels, row ty * w + tx for the texel (tx, ty) = floor((uv - origin) / cell)
    (a true division, as the twin's; multiplied by inv_cell instead where that is exact:
    inv_cell > 0 only for a cell that is a power of two); a needle off the grid, unfired or
    not finite counts nowhere. Each column's rows ascending, each once. Returns the entries written."""
    cdef Py_ssize_t n = hits_uv.shape[0], k, i, j, a, b, t, nnz = 0
    if needles < 1 or n % needles or fired.shape[0] != n or indptr.shape[0] != n // needles + 1 \
            or indices.shape[0] < n or data.shape[0] < n or hits_uv.shape[1] != 2:
        raise ValueError("needle_columns: the arrays do not match")
    if h * w >= 2 ** 31 or n >= 2 ** 31:
        raise ValueError("needle_columns: too many texels or needles for 32-bit indices")
    k = n // needles
    cdef int64_t* rows = <int64_t*>malloc((needles + 1) * sizeof(int64_t))
    if rows == NULL:
        raise MemoryError()
    cdef double fx, fy
    cdef int64_t r
    cdef Py_ssize_t m
    with nogil:
        indptr[0] = 0
        for i in range(k):
            m = 0
            for j in range(i * needles, (i + 1) * needles):
                if not fired[j]:
                    continue
                if inv_cell > 0.0:
                    fx = floor((hits_uv[j, 0] - u0) * inv_cell)
                    fy = floor((hits_uv[j, 1] - v0) * inv_cell)
                else:
                    fx = floor((hits_uv[j, 0] - u0) / cell)
                    fy = floor((hits_uv[j, 1] - v0) / cell)
                # NaN fails every comparison; +-inf and far values fall outside the grid
                if not (fx >= 0.0 and fy >= 0.0 and fx < <double>w and fy < <double>h):
                    continue
                r = <int64_t>fy * w + <int64_t>fx
                # insertion into the stamp's sorted rows
                a = m
                while a > 0 and rows[a - 1] > r:
                    rows[a] = rows[a - 1]
                    a -= 1
                rows[a] = r
                m += 1
            a = 0
            while a < m:
                b = a
                while b + 1 < m and rows[b + 1] == rows[a]:
                    b += 1
                indices[nnz] = <int32_t>rows[a]
                data[nnz] = <double>(b - a + 1)
                nnz += 1
                a = b + 1
            indptr[i + 1] = <int32_t>nnz
    free(rows)
    return nnz


cdef inline int64_t _root(int64_t* parent, int64_t x) noexcept nogil:
    """x's root in a union-find forest (parent[r] == r at a root), halving the path."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


cdef inline int64_t _marked_root(int64_t* parent, int64_t x) noexcept nogil:
    """x's root once every root read is marked (parent[r] < 0), halving the path."""
    cdef int64_t px, ppx
    while True:
        px = parent[x]
        if px < 0:
            return x
        ppx = parent[px]
        if ppx < 0:
            return px
        parent[x] = ppx
        x = ppx


cdef inline bint _worse(double a, double b) noexcept nogil:
    """Whether badness a ranks before b: larger, a NaN after every number (as a sort of -badness puts it)."""
    return a > b or (b != b and a == a)


cdef inline Py_ssize_t _next_in(const uint8_t* mask, Py_ssize_t p, Py_ssize_t end) noexcept nogil:
    # the first p' in [p, end) with mask[p'] nonzero (end where none): eight texels at a time
    # over the stretches out (a repair's masks are mostly out)
    cdef uint64_t eight
    while p + 8 <= end:
        memcpy(&eight, mask + p, 8)
        if eight:
            break
        p += 8
    while p < end and not mask[p]:
        p += 1
    return p


def patch_worst(const uint8_t[::1] mask, Py_ssize_t h, Py_ssize_t w, const double[::1] badness,
                int64_t[::1] parent, int64_t[::1] out):
    """The patches of mask ((h * w,) flat, nonzero = in): 8-connected, numbered in the order of
    each one's first texel in raster order (as scipy.ndimage.label numbers them with a 3 x 3
    structure), and in each the texel of the largest badness (NaN below every number; among
    equal ones the first in raster order). Writes each patch's texel to out (room for as
    many as the mask holds) and returns how many patches; parent ((h * w,) int64) is
    scratch, read only where the mask is in."""
    cdef Py_ssize_t n = h * w, p, q, i, j
    cdef int64_t a, b, k = 0
    cdef int64_t* par = &parent[0] if parent.shape[0] else NULL
    cdef const uint8_t* m = &mask[0] if mask.shape[0] else NULL
    if mask.shape[0] != n or badness.shape[0] != n or parent.shape[0] < n or h < 0 or w < 0:
        raise ValueError("patch_worst: mask, badness and parent must hold h * w texels")
    if n == 0:
        return 0
    with nogil:
        # 1. each texel joined to its neighbours before it in raster order (left, and the
        # three above); a root is its patch's first texel (the smaller root is kept); the
        # texels out are passed over (_next_in)
        for i in range(h):
            j = _next_in(m, i * w, i * w + w) - i * w
            while j < w:
                p = i * w + j
                par[p] = p
                if j > 0 and mask[p - 1]:
                    a = _root(par, p - 1)
                    b = _root(par, p)
                    if a < b:
                        par[b] = a
                    elif b < a:
                        par[a] = b
                if i > 0:
                    for q in range(p - w - 1 if j > 0 else p - w, p - w + 2 if j < w - 1 else p - w + 1):
                        if mask[q]:
                            a = _root(par, q)
                            b = _root(par, p)
                            if a < b:
                                par[b] = a
                            elif b < a:
                                par[a] = b
                j = _next_in(m, p + 1, i * w + w) - i * w
        # 2. in raster order: a root opens the next patch (marked -(number + 1)); every
        # texel after it weighs against its patch's worst so far
        p = _next_in(m, 0, n)
        while p < n:
            if par[p] == p:
                if k >= out.shape[0]:
                    with gil:
                        raise ValueError("patch_worst: out has no room for every patch")
                par[p] = -(k + 1)
                out[k] = p
                k += 1
            else:
                a = -par[_marked_root(par, p)] - 1
                if _worse(badness[p], badness[out[a]]):
                    out[a] = p
            p = _next_in(m, p + 1, n)
    return k


def round_along(const double[::1] x, const int64_t[::1] groups, double spread, uint8_t[::1] fire):
    """fire[i] = 1 where, along i's group (runs of equal groups[i]), the running sum of x
    (numpy.cumsum from the run's first) floored after adding the run's offset steps up from
    the one before (0.0 before the run's first): numpy's arithmetic in its order. A run's
    offset is o - floor(o), o = 0.5 + g * spread, g its group (spread 0: one half for all)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef double total = 0.0, running, before = 0.0, offset = 0.5
    if groups.shape[0] != n or fire.shape[0] != n:
        raise ValueError("round_along: x, groups and fire must have one entry per candidate")
    with nogil:
        for i in range(n):
            if i == 0 or groups[i] != groups[i - 1]:
                total = x[i]           # cumsum's first value is its first term
                before = 0.0
                offset = 0.5 + <double>groups[i] * spread
                offset = offset - floor(offset)
            else:
                total = total + x[i]
            running = floor(total + offset)
            fire[i] = (running - before) > 0.0
            before = running


def window_halves(const double[:, ::1] nominal, const uint8_t[:, ::1] on, const uint8_t[:, ::1] mask,
                  const int64_t[:, ::1] half, const int64_t[:, ::1] tries, double cell_mm, double window_mm2,
                  int64_t[:, ::1] out_u, int64_t[:, ::1] out_v):
    """coverage.density.window_halves: per texel of mask, of the windows of halves
    (max(half + du, 0), max(half + dv, 0)) for (du, dv) in tries, in order, the one whose
    skin (2 hu + 1)(2 hv + 1) cell^2 x (sum of nominal / count of on over the window, the
    window cut at the grid's edges) is nearest window_mm2 in ratio (the larger of skin /
    window_mm2 and its inverse; the first tried among equals; windows holding no texel of
    on are passed over); texels off mask, or with no such window, keep half. The window
    sums are read from summed-area tables made as numpy.cumsum along the rows' axis, then
    the columns', and taken as ((S[i1, j1] - S[i0, j1]) - S[i1, j0]) + S[i0, j0]."""
    cdef Py_ssize_t h = nominal.shape[0], w = nominal.shape[1], W = w + 1, i, j, t, n_t = tries.shape[0]
    cdef Py_ssize_t i0, i1, j0, j1
    cdef int64_t hu, hv, bu, bv
    cdef double count, total, skin, miss, best
    cdef double* S = NULL
    cdef double* C = NULL
    if (on.shape[0] != h or on.shape[1] != w or mask.shape[0] != h or mask.shape[1] != w or half.shape[0] != h
            or half.shape[1] != w or out_u.shape[0] != h or out_u.shape[1] != w or out_v.shape[0] != h
            or out_v.shape[1] != w or tries.shape[1] != 2):
        raise ValueError("window_halves: the arrays do not match")
    if h == 0 or w == 0:
        return
    S = <double*>malloc((h + 1) * W * sizeof(double))
    C = <double*>malloc((h + 1) * W * sizeof(double))
    if S == NULL or C == NULL:
        free(S)
        free(C)
        raise MemoryError("window_halves: out of memory")
    with nogil:
        # the tables with a zero first row and column: down the rows first, then along them
        for j in range(W):
            S[j] = 0.0
            C[j] = 0.0
        for i in range(h):
            S[(i + 1) * W] = 0.0
            C[(i + 1) * W] = 0.0
            for j in range(w):
                S[(i + 1) * W + j + 1] = S[i * W + j + 1] + nominal[i, j] if i else nominal[i, j]
                C[(i + 1) * W + j + 1] = C[i * W + j + 1] + on[i, j] if i else <double>on[i, j]
        for i in range(1, h + 1):
            for j in range(2, W):
                S[i * W + j] = S[i * W + j - 1] + S[i * W + j]
                C[i * W + j] = C[i * W + j - 1] + C[i * W + j]
        for i in range(h):
            for j in range(w):
                bu = half[i, j]
                bv = half[i, j]
                if mask[i, j]:
                    best = -1.0
                    for t in range(n_t):
                        hu = half[i, j] + tries[t, 0]
                        hv = half[i, j] + tries[t, 1]
                        hu = hu if hu > 0 else 0
                        hv = hv if hv > 0 else 0
                        i0 = i - hv if i - hv > 0 else 0
                        i1 = i + hv + 1 if i + hv + 1 < h else h
                        j0 = j - hu if j - hu > 0 else 0
                        j1 = j + hu + 1 if j + hu + 1 < w else w
                        count = ((C[i1 * W + j1] - C[i0 * W + j1]) - C[i1 * W + j0]) + C[i0 * W + j0]
                        if not count > 0.0:
                            continue
                        total = ((S[i1 * W + j1] - S[i0 * W + j1]) - S[i1 * W + j0]) + S[i0 * W + j0]
                        skin = <double>((2 * hu + 1) * (2 * hv + 1)) * (cell_mm * cell_mm) * total / count
                        miss = skin / window_mm2 if skin >= window_mm2 else window_mm2 / skin
                        if best < 0.0 or miss < best:
                            best = miss
                            bu = hu
                            bv = hv
                out_u[i, j] = bu
                out_v[i, j] = bv
    free(S)
    free(C)
