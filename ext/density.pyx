# Density kernels: texel accumulation, variable-size window sums, distinct-channel merging.
# Inputs are C-contiguous and already validated by coverage.density.
from libc.math cimport floor, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport malloc, free, realloc
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
    # the summed-area table of a (of a + b with plus_b), with a zero first row and column
    cdef Py_ssize_t i, j
    cdef double row, x
    for j in range(w + 1):
        sat[0, j] = 0.0
    for i in range(h):
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
    # the running sums over rows and columns of the difference array fill its windows in
    cdef Py_ssize_t i, j
    cdef double row
    for i in range(h):
        row = 0.0
        for j in range(w):
            row += corners[i, j]
            out[i, j] = row + (out[i - 1, j] if i > 0 else 0.0)


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
    cdef Py_ssize_t k, i0, i1, j0, j1, bw, bh, r, c, need, s
    cdef int64_t ti, tj
    cdef double* t
    cdef double left0, left1, x0, x1
    if not _stamp_box(texels, k0, k1, h, w, reach, box):
        return 0
    i0 = box[0]
    i1 = box[1]
    j0 = box[2]
    j1 = box[3]
    bh = i1 - i0
    bw = j1 - j0
    need = (bh + 1) * (bw + 1)
    if need > size[0]:
        t = <double*>realloc(table[0], need * sizeof(double))
        if t == NULL:
            return 0
        table[0] = t
        size[0] = need
    t = table[0]
    for k in range(need):
        t[k] = 0.0
    for k in range(k0, k1):
        ti = texels[k] // w
        tj = texels[k] - ti * w
        t[(ti - i0 + 1) * (bw + 1) + (tj - j0 + 1)] += counts[k]
    # the running sums t[r, c] += (t[r - 1, c] + t[r, c - 1]) - t[r - 1, c - 1], two rows at a
    # time: each row's last value kept in a register (not reloaded from the store just
    # made), the two rows' chains of additions interleaved
    s = bw + 1
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
    return s


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
    cdef double before, after, delta, gained, over, filled, a, b, lo, hi
    cdef int in_after, in_before, more
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
                                before = den[p]
                                after = before + sign * pc[p] * delta
                                lo = lw[p]
                                hi = hg[p]
                                in_after = (after >= lo) & (after <= hi)
                                in_before = (before >= lo) & (before <= hi)
                                if in_after != in_before or not finite:
                                    gained = gained + ar[p] * (in_after - in_before)
                                more = (after > hi) - (before > hi)
                                if more != 0 or not finite:
                                    over = over + ar[p] * more
                                a = lo - before if lo > before else 0.0
                                b = lo - after if lo > after else 0.0
                                if lo > 0.0 and (a != b or not finite):
                                    filled = filled + ar[p] * (a - b) / lo
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
# memory traffic and branches, so it is fused into few passes over narrow arrays: 32-bit
# indices and window half-sizes, A's values as float32 when that holds them exactly
# (needle counts).
#
# The passes run on a team of OpenMP threads (team_size), every output value computed by
# one thread with the serial loop's additions in the serial loop's order, so the results
# are the same bit for bit on any number of threads (and without OpenMP):
#   A. A x scattered into texel bands (fit_bands: A's entries grouped by the band of rows
#      their texel lies in, in column order within a band: each texel's terms in the
#      column scatter's order), a thread per group of bands; then each of its rows'
#      running sums (base + A x) into the summed-area table;
#   B. the table's sums down the columns (columns split over the threads);
#   C. the density, shortfall and gradient per texel, the texels split at multiples of
#      EINSUM_BUFFER (each run's sums of squares on one thread, the runs' sums added in
#      order after); each texel adds its gradient to its window's corners (a 2D
#      difference array) directly in the corner rows no other thread's texels reach, and
#      then those rows' running sums; rows two threads reach ("shared", near the seams)
#   D. are filled by one thread replaying, in texel order, the texels that reach them;
#   E. the running sums down the columns fill the windows in (columns split);
#   F. A^T, each stamp's texels (stamps split).

from cython.parallel cimport parallel, prange
from _threads cimport OPENMP_BUILD, barrier, team_size

ctypedef fused stored_t:
    float
    double

# the iterator buffer numpy.einsum sums through (numpy's default buffer size)
cdef enum:
    EINSUM_BUFFER = 8192

# the fewest texels worth a team of threads in the fit's passes; the bands of texel rows
# A's entries are grouped in (fit_bands)
cdef enum:
    MIN_PARALLEL_TEXELS = 4096
    FIT_BANDS = 64


FIT_BANDS_COUNT = FIT_BANDS


def _env_threads():
    import os
    try:
        return max(int(os.environ.get("COVERAGE_THREADS", "0") or 0), 0)
    except ValueError:
        return 0


cdef int _forced_threads = _env_threads()

#: True when this module was compiled with OpenMP
openmp = bool(OPENMP_BUILD)


def set_threads(int n):
    """Threads for this module's threaded kernels: n > 0 forces n, 0 follows OpenMP
    (OMP_NUM_THREADS, else the machine's cores). Results do not depend on it."""
    global _forced_threads
    _forced_threads = n if n > 0 else 0


def get_threads():
    """The forced thread count (set_threads; COVERAGE_THREADS at import), 0 if none."""
    return _forced_threads


def max_threads():
    """The team a large call would get now (1 without OpenMP)."""
    return team_size(_forced_threads, 1, 0)


cdef inline double _band(double d, double low, double high, double scale, double over_weight, double per_count,
                         double* under, double* over) noexcept nogil:
    # the shortfall's pieces at density d, under = max(low - d, 0) and over = max(d - high, 0)
    # as np.maximum(v, 0.0) gives them (NaN stays NaN); returns the gradient of
    # scale (under^2 + over_weight over^2) with respect to the texel's window sum
    cdef double a = low - d, b = d - high
    under[0] = a if not (a <= 0.0) else 0.0
    over[0] = b if not (b <= 0.0) else 0.0
    return ((2.0 * scale) * (over_weight * over[0] - under[0])) * per_count


cdef inline Py_ssize_t _part(Py_ssize_t n, Py_ssize_t t, Py_ssize_t nt) noexcept nogil:
    # the start of part t of nt equal parts of range(n)
    return (n * t) // nt


cdef inline Py_ssize_t _run_start(Py_ssize_t t, Py_ssize_t nt, Py_ssize_t n) noexcept nogil:
    # thread t's first texel in the passes over texels: EINSUM_BUFFER runs split evenly
    cdef Py_ssize_t p = _part((n + EINSUM_BUFFER - 1) // EINSUM_BUFFER, t, nt) * EINSUM_BUFFER
    return p if p < n else n


cdef void _scatter_bands(const int64_t* band_ptr, const int32_t* seg_stamp, const int64_t* seg_ptr,
                         const int32_t* e_texel, const stored_t* e_data, const double* x, const double* base,
                         Py_ssize_t h, Py_ssize_t w, Py_ssize_t b_lo, Py_ssize_t b_hi, double* ax,
                         double* sat) noexcept nogil:
    # pass A for bands [b_lo, b_hi) (texel rows [_part(h, b_lo, FIT_BANDS), ...)): A x into
    # ax (zeroed first) as the column scatter adds it, then each row's running sums of
    # base + A x into sat's row i + 1 (after a zero in column 0)
    cdef Py_ssize_t i, j, t, k, g, s = w + 1
    cdef Py_ssize_t r0 = _part(h, b_lo, FIT_BANDS), r1 = _part(h, b_hi, FIT_BANDS)
    cdef double row0, row1, xs
    for t in range(r0 * w, r1 * w):
        ax[t] = 0.0
    for g in range(band_ptr[b_lo], band_ptr[b_hi]):
        xs = x[seg_stamp[g]]
        for k in range(seg_ptr[g], seg_ptr[g + 1]):
            ax[e_texel[k]] += <double>e_data[k] * xs
    # two rows at a time: their chains of additions interleaved
    i = r0
    while i + 1 < r1:
        sat[(i + 1) * s] = 0.0
        sat[(i + 2) * s] = 0.0
        row0 = 0.0
        row1 = 0.0
        for j in range(w):
            row0 += base[i * w + j] + ax[i * w + j]
            row1 += base[(i + 1) * w + j] + ax[(i + 1) * w + j]
            sat[(i + 1) * s + j + 1] = row0
            sat[(i + 2) * s + j + 1] = row1
        i += 2
    if i < r1:
        sat[(i + 1) * s] = 0.0
        row0 = 0.0
        for j in range(w):
            row0 += base[i * w + j] + ax[i * w + j]
            sat[(i + 1) * s + j + 1] = row0


cdef void _texel_reach(const int32_t* hv, const uint8_t* mask, Py_ssize_t p0, Py_ssize_t p1,
                       int64_t* reach) noexcept nogil:
    # the largest |half_v| of a treated texel in [p0, p1) (a branch-free loop)
    cdef Py_ssize_t p
    cdef int32_t far = 0, r
    for p in range(p0, p1):
        r = hv[p] if hv[p] >= 0 else -hv[p]
        r = r if mask[p] != 0 else 0
        far = r if r > far else far
    reach[0] = far


cdef inline void _running_rows(double* a, Py_ssize_t s, Py_ssize_t w, Py_ssize_t r_lo, Py_ssize_t r_hi,
                               const uint8_t* only) noexcept nogil:
    # each row r in [r_lo, r_hi) (only[r] set, if only is given) of a (row stride s), columns
    # [0, w), replaced by its running sums, two rows at a time (their chains interleaved)
    cdef Py_ssize_t i = r_lo, i2, j
    cdef double row0, row1
    while i < r_hi:
        if only != NULL and not only[i]:
            i += 1
            continue
        i2 = i + 1
        while i2 < r_hi and only != NULL and not only[i2]:
            i2 += 1
        if i2 < r_hi:
            row0 = 0.0
            row1 = 0.0
            for j in range(w):
                row0 += a[i * s + j]
                row1 += a[i2 * s + j]
                a[i * s + j] = row0
                a[i2 * s + j] = row1
            i = i2 + 1
        else:
            row0 = 0.0
            for j in range(w):
                row0 += a[i * s + j]
                a[i * s + j] = row0
            i = r_hi


cdef void _down_columns(double* a, Py_ssize_t rows, Py_ssize_t s, Py_ssize_t j_lo, Py_ssize_t j_hi) noexcept nogil:
    # a[i, j] = a[i - 1, j] + a[i, j] for rows 1 .. rows - 1 in order, columns [j_lo, j_hi)
    # (row stride s): _summed_area's sums down the columns
    cdef Py_ssize_t i, j
    for i in range(1, rows):
        for j in range(j_lo, j_hi):
            a[i * s + j] = a[(i - 1) * s + j] + a[i * s + j]


cdef void _plan_seams(const int64_t* reach, Py_ssize_t nreach, Py_ssize_t nt, Py_ssize_t h, Py_ssize_t w,
                      Py_ssize_t n, int64_t* own, uint8_t* shared, uint8_t* replay) noexcept nogil:
    # Which corner rows (0..h) each thread of pass C writes alone: own[2t], own[2t + 1] (its
    # rows [own[2t], own[2t + 1]), maybe empty); shared[r]: corner row r is reached by the
    # texels of two threads or more; replay[i]: a window of a treated texel of row i can
    # have a corner in a shared row (its texels are replayed in pass D).
    cdef Py_ssize_t t, s, r, i, p0, p1, a, b
    cdef int64_t far = 0
    cdef int64_t* lo = own          # each thread's reach [lo, hi], then its own rows
    for t in range(nreach):
        if reach[t] > far:
            far = reach[t]
    for t in range(nt):
        p0 = _run_start(t, nt, n)
        p1 = _run_start(t + 1, nt, n)
        if p1 <= p0:
            lo[2 * t] = 0
            lo[2 * t + 1] = -1
            continue
        a = p0 // w - far
        b = (p1 - 1) // w + far + 1
        lo[2 * t] = a if a > 0 else 0
        lo[2 * t + 1] = b if b < h else h
    for r in range(h + 1):
        shared[r] = 0
    # a row two threads' reaches hold is shared
    for t in range(nt):
        for s in range(t + 1, nt):
            a = lo[2 * t] if lo[2 * t] > lo[2 * s] else lo[2 * s]
            b = lo[2 * t + 1] if lo[2 * t + 1] < lo[2 * s + 1] else lo[2 * s + 1]
            for r in range(a, b + 1):
                shared[r] = 1
    # a thread's own rows: its reach without the shared rows (one interval: the reaches are
    # intervals in thread order, the shared rows those at its ends)
    for t in range(nt):
        a = lo[2 * t]
        b = lo[2 * t + 1]
        while a <= b and shared[a]:
            a += 1
        while b >= a and shared[b]:
            b -= 1
        own[2 * t] = a
        own[2 * t + 1] = b + 1
    for i in range(h):
        replay[i] = 0
        a = i - far if i - far > 0 else 0
        b = i + far + 1 if i + far + 1 < h else h
        for r in range(a, b + 1):
            if shared[r]:
                replay[i] = 1
                break


cdef void _band_spread(const double* sat, const double* density, const int32_t* hu, const int32_t* hv,
                       const uint8_t* mask, const double* pc, const double* low, const double* high,
                       const double* scale, double over_weight, Py_ssize_t h, Py_ssize_t w, Py_ssize_t p0,
                       Py_ssize_t p1, Py_ssize_t r_lo, Py_ssize_t r_hi, const uint8_t* replay,
                       double* corners, double* v_out, double* run_sums) noexcept nogil:
    # Pass C over texels [p0, p1) (p0 a multiple of EINSUM_BUFFER): the density (from the
    # summed-area table sat, or given: density), the shortfall's sums of squares per run of
    # EINSUM_BUFFER texels (run_sums[2r], [2r + 1] for the run starting at texel r x
    # EINSUM_BUFFER; objective only) and its gradient v, added to the corners of the
    # texel's window that lie in this thread's own corner rows [r_lo, r_hi) (cleared
    # first); v kept in v_out for the texels of the rows pass D replays (0 if nothing is
    # spread); then the running sums along the own rows (< h), in place.
    cdef Py_ssize_t p, i = p0 // w, j = p0 - (p0 // w) * w, s = w + 1, q
    cdef int64_t i0 = 0, i1 = 0, j0 = 0, j1 = 0
    cdef double d, u, o, v, acc_u = 0.0, acc_o = 0.0, row
    cdef bint spreads
    for q in range(r_lo * s, r_hi * s):
        corners[q] = 0.0
    for p in range(p0, p1):
        if density == NULL:
            if mask[p]:
                _window(i, j, hu[p], hv[p], h, w, &i0, &i1, &j0, &j1)
                d = pc[p] * (sat[i1 * s + j1] - sat[i0 * s + j1] - sat[i1 * s + j0] + sat[i0 * s + j0])
            else:
                d = pc[p] * 0.0
            v = _band(d, low[p], high[p], scale[p], over_weight, pc[p], &u, &o)
            acc_u = acc_u + (scale[p] * u) * u
            acc_o = acc_o + (scale[p] * o) * o
            if (p + 1) % EINSUM_BUFFER == 0 or p + 1 == p1:
                run_sums[2 * (p // EINSUM_BUFFER)] = acc_u
                run_sums[2 * (p // EINSUM_BUFFER) + 1] = acc_o
                acc_u = 0.0
                acc_o = 0.0
            spreads = mask[p] and not (v == 0.0)
        elif mask[p]:
            v = _band(density[p], low[p], high[p], scale[p], over_weight, pc[p], &u, &o)
            spreads = not (v == 0.0)
            if spreads:
                _window(i, j, hu[p], hv[p], h, w, &i0, &i1, &j0, &j1)
        else:
            spreads = False
        if replay[i]:
            v_out[p] = v if spreads else 0.0
        if spreads:
            if i0 >= r_lo and i0 < r_hi:
                corners[i0 * s + j0] += v
                corners[i0 * s + j1] -= v
            if i1 >= r_lo and i1 < r_hi:
                corners[i1 * s + j0] -= v
                corners[i1 * s + j1] += v
        j += 1
        if j == w:
            j = 0
            i += 1
    _running_rows(corners, s, w, r_lo, r_hi if r_hi < h else h, NULL)


cdef void _replay_seams(const double* v, const int32_t* hu, const int32_t* hv, Py_ssize_t h, Py_ssize_t w,
                        const uint8_t* shared, const uint8_t* replay, double* corners) noexcept nogil:
    # Pass D: the shared corner rows, cleared, then every texel of a replayed row adds its v
    # (kept by pass C) to its window's corners in them, in texel order; then their running
    # sums along the rows (< h), in place
    cdef Py_ssize_t i, j, p, s = w + 1, q
    cdef int64_t i0, i1, j0, j1
    cdef double x, row
    for i in range(h + 1):
        if shared[i]:
            for q in range(i * s, (i + 1) * s):
                corners[q] = 0.0
    for i in range(h):
        if not replay[i]:
            continue
        for j in range(w):
            p = i * w + j
            x = v[p]
            if x == 0.0:
                continue
            _window(i, j, hu[p], hv[p], h, w, &i0, &i1, &j0, &j1)
            if shared[i0]:
                corners[i0 * s + j0] += x
                corners[i0 * s + j1] -= x
            if shared[i1]:
                corners[i1 * s + j0] -= x
                corners[i1 * s + j1] += x
    _running_rows(corners, s, w, 0, h, shared)


cdef void _fill_columns(const double* rows, Py_ssize_t h, Py_ssize_t w, double* out, Py_ssize_t j_lo,
                        Py_ssize_t j_hi) noexcept nogil:
    # Pass E: out[i, j] = rows[i, j] + (out[i - 1, j] if i > 0 else 0) for columns
    # [j_lo, j_hi), rows (stride w + 1) holding the running sums along each row:
    # _fill_windows' sums
    cdef Py_ssize_t i, j
    for j in range(j_lo, j_hi):
        out[j] = rows[j] + 0.0
    for i in range(1, h):
        for j in range(j_lo, j_hi):
            out[i * w + j] = rows[i * (w + 1) + j] + out[(i - 1) * w + j]


cdef void _transposed_rows(const int32_t* cp, const int32_t* ci, const stored_t* cd, const double* spread,
                           Py_ssize_t r_lo, Py_ssize_t r_hi, double* grad) noexcept nogil:
    # Pass F: grad[r_lo:r_hi] = A^T spread, each stamp's texels in the order A's columns
    # hold them
    cdef Py_ssize_t r, k
    cdef double s
    for r in range(r_lo, r_hi):
        s = 0.0
        for k in range(cp[r], cp[r + 1]):
            s = s + <double>cd[k] * spread[ci[k]]
        grad[r] = s


def fit_bands(const int32_t[::1] cols_indptr, const int32_t[::1] cols_indices, Py_ssize_t h, Py_ssize_t w,
              int64_t[::1] band_ptr, int32_t[::1] seg_stamp, int64_t[::1] seg_ptr, int32_t[::1] e_texel,
              int64_t[::1] order):
    """A (texels h x w by stamps, given by columns: cols_indptr, cols_indices) grouped for
    fit_objective's pass A: FIT_BANDS bands of texel rows (band b: rows
    [h b // FIT_BANDS, h (b + 1) // FIT_BANDS)), band b holding segments
    band_ptr[b]:band_ptr[b + 1], segment g the entries seg_ptr[g]:seg_ptr[g + 1] of
    column seg_stamp[g] in the band (e_texel: the texel; order: the entry's place in the
    columns' arrays, the values being cols_data[order]), in the order the column scatter
    meets them (column by column, each column's entries in order); each segment ends where
    the next begins (seg_ptr[nseg] = the entries). Returns nseg, the segments (seg_stamp
    and seg_ptr need room for nnz and nnz + 1)."""
    cdef Py_ssize_t r, k, t, b, g, m = cols_indptr.shape[0] - 1, nseg = 0, n = 0
    cdef int64_t* count = <int64_t*>malloc((FIT_BANDS + 1) * sizeof(int64_t))
    cdef int64_t* last = <int64_t*>malloc(FIT_BANDS * sizeof(int64_t))
    cdef int64_t* fill = <int64_t*>malloc(FIT_BANDS * sizeof(int64_t))
    if count == NULL or last == NULL or fill == NULL:
        free(count)
        free(last)
        free(fill)
        raise MemoryError("fit_bands: out of memory")
    with nogil:
        # segments per band (a column's entries in one band, consecutive in column order,
        # are one segment), entries per band
        for b in range(FIT_BANDS + 1):
            band_ptr[b] = 0
            count[b] = 0
        for b in range(FIT_BANDS):
            last[b] = -1
        for r in range(m):
            for k in range(cols_indptr[r], cols_indptr[r + 1]):
                b = _texel_band(cols_indices[k], h, w)
                count[b + 1] += 1
                if last[b] != r:
                    last[b] = r
                    band_ptr[b + 1] += 1
        for b in range(FIT_BANDS):
            band_ptr[b + 1] += band_ptr[b]
            count[b + 1] += count[b]
        nseg = band_ptr[FIT_BANDS]
        # fill: segments of band b from band_ptr[b], entries from count[b]
        for b in range(FIT_BANDS):
            last[b] = -1
            fill[b] = band_ptr[b]
        for r in range(m):
            for k in range(cols_indptr[r], cols_indptr[r + 1]):
                b = _texel_band(cols_indices[k], h, w)
                if last[b] != r:
                    last[b] = r
                    g = fill[b]
                    fill[b] += 1
                    seg_stamp[g] = <int32_t>r
                    seg_ptr[g] = count[b]
                e_texel[count[b]] = cols_indices[k]
                order[count[b]] = k
                count[b] += 1
        # each segment ends where the next of its band starts, a band's last where the band's
        # entries end (count[b], now the band's end)
        seg_ptr[nseg] = count[FIT_BANDS - 1]
    free(count)
    free(last)
    free(fill)
    return nseg


cdef inline Py_ssize_t _texel_band(Py_ssize_t texel, Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    # the band (fit_bands) of texel row texel // w: the b with h b // FIT_BANDS <= row
    cdef Py_ssize_t row = texel // w, b = (row * FIT_BANDS) // h if h > 0 else 0
    while b > 0 and _part(h, b, FIT_BANDS) > row:
        b -= 1
    while b + 1 < FIT_BANDS and _part(h, b + 1, FIT_BANDS) <= row:
        b += 1
    return b


def fit_objective(const int32_t[::1] cols_indptr, const int32_t[::1] cols_indices, const stored_t[::1] cols_data,
                  const int64_t[::1] band_ptr, const int32_t[::1] seg_stamp, const int64_t[::1] seg_ptr,
                  const int32_t[::1] e_texel, const stored_t[::1] e_data, int64_t reach, const double[::1] x, const double[:, ::1] base,
                  const int32_t[:, ::1] half_u, const int32_t[:, ::1] half_v, const uint8_t[:, ::1] mask,
                  const double[:, ::1] per_count, const double[:, ::1] low, const double[:, ::1] high,
                  const double[:, ::1] scale, double over_weight, double[:, ::1] sat, double[:, ::1] corners,
                  double[:, ::1] spread, double[::1] grad):
    """counts = base + A x; d = per_count * window_sums(counts); under = max(low - d, 0),
    over = max(d - high, 0); grad = A^T window_spread((2 scale (over_weight over - under))
    per_count). A is given by stamp columns (CSC as the fit holds it) and grouped by texel
    bands (fit_bands: e_data = cols_data[order]): A x adds each texel's stamps column by
    column as scipy's CSC product does. reach: at least the largest |half_v| of a texel in
    mask (where the threads' windows can meet). Returns (sum scale under under, sum scale over
    over), each summed as numpy.einsum("ij,ij,ij->") sums: (scale * v) * v in order within
    runs of EINSUM_BUFFER texels, the runs' sums added up in order. On a team of threads
    (see above), with the same results on any number of threads."""
    cdef Py_ssize_t h = base.shape[0], w = base.shape[1], n = base.shape[0] * base.shape[1]
    cdef Py_ssize_t m = grad.shape[0], k, t, nruns
    cdef int nt
    cdef double sum_u = 0.0, sum_o = 0.0
    if h == 0 or w == 0:
        sat[...] = 0.0
        corners[...] = 0.0
        grad[...] = 0.0
        return sum_u, sum_o
    nt = team_size(_forced_threads, n, MIN_PARALLEL_TEXELS)
    nruns = (n + EINSUM_BUFFER - 1) // EINSUM_BUFFER
    cdef double* run_sums = <double*>malloc(2 * nruns * sizeof(double))
    cdef int64_t* own = <int64_t*>malloc(2 * nt * sizeof(int64_t))
    cdef uint8_t* seams = <uint8_t*>malloc(2 * h + 1)
    if run_sums == NULL or own == NULL or seams == NULL:
        free(run_sums)
        free(own)
        free(seams)
        raise MemoryError("fit_objective: out of memory")
    cdef const int32_t* cp = &cols_indptr[0]
    cdef const int32_t* ci = &cols_indices[0] if cols_indices.shape[0] else NULL
    cdef const stored_t* cd = &cols_data[0] if cols_data.shape[0] else NULL
    cdef const int32_t* et = &e_texel[0] if e_texel.shape[0] else NULL
    cdef const int32_t* ss = &seg_stamp[0] if seg_stamp.shape[0] else NULL
    cdef const stored_t* ed = &e_data[0] if e_data.shape[0] else NULL
    cdef const double* xp = &x[0] if x.shape[0] else NULL
    cdef const int32_t* hu = &half_u[0, 0]
    cdef const int32_t* hv = &half_v[0, 0]
    cdef const uint8_t* mk = &mask[0, 0]
    cdef double* st = &sat[0, 0]
    cdef double* cn = &corners[0, 0]
    cdef double* sp = &spread[0, 0]
    cdef double* g = &grad[0] if m else NULL
    with nogil:
        for k in range(w + 1):
            st[k] = 0.0
        with parallel(num_threads=nt):
            # A. counts = base + A x, each row's running sums
            for t in prange(nt, schedule="static"):
                _scatter_bands(&band_ptr[0], ss, &seg_ptr[0], et, ed, xp, &base[0, 0], h, w, _part(FIT_BANDS, t, nt),
                               _part(FIT_BANDS, t + 1, nt), sp, st)
            barrier()
            # B. the summed-area table's sums down the columns; the seams between the
            # threads' corner rows in pass C
            for t in prange(nt, schedule="static"):
                _down_columns(st, h + 1, w + 1, 1 + _part(w, t, nt), 1 + _part(w, t + 1, nt))
                if t == 0:
                    _plan_seams(&reach, 1, nt, h, w, n, own, seams, seams + h + 1)
            barrier()
            # C. the density, the shortfall's sums and its gradient, spread over the
            # windows' corners in each thread's own rows
            for t in prange(nt, schedule="static"):
                _band_spread(st, NULL, hu, hv, mk, &per_count[0, 0], &low[0, 0], &high[0, 0], &scale[0, 0],
                             over_weight, h, w, _run_start(t, nt, n), _run_start(t + 1, nt, n), own[2 * t],
                             own[2 * t + 1], seams + h + 1, cn, sp, run_sums)
            barrier()
            # D. the shared rows
            for t in prange(nt, schedule="static"):
                if t == 0 and nt > 1:
                    _replay_seams(sp, hu, hv, h, w, seams, seams + h + 1, cn)
            barrier()
            # E. the windows filled in
            for t in prange(nt, schedule="static"):
                _fill_columns(cn, h, w, sp, _part(w, t, nt), _part(w, t + 1, nt))
            barrier()
            # F. A^T: each stamp's texels
            for t in prange(nt, schedule="static"):
                _transposed_rows(cp, ci, cd, sp, _part(m, t, nt), _part(m, t + 1, nt), g)
        for k in range(nruns):
            sum_u = sum_u + run_sums[2 * k]
            sum_o = sum_o + run_sums[2 * k + 1]
    free(run_sums)
    free(own)
    free(seams)
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
    back (fit_objective, passes C to F, without the sums): grad = A^T window_spread((2 scale
    (over_weight max(d - high, 0) - max(low - d, 0))) per_count). On a team of threads as
    fit_objective, with the same results on any number of threads."""
    cdef Py_ssize_t h = density.shape[0], w = density.shape[1], n = density.shape[0] * density.shape[1]
    cdef Py_ssize_t m = grad.shape[0], t
    cdef int nt
    if h == 0 or w == 0:
        corners[...] = 0.0
        grad[...] = 0.0
        return
    nt = team_size(_forced_threads, n, MIN_PARALLEL_TEXELS)
    cdef int64_t* reach = <int64_t*>malloc(nt * sizeof(int64_t))
    cdef int64_t* own = <int64_t*>malloc(2 * nt * sizeof(int64_t))
    cdef uint8_t* seams = <uint8_t*>malloc(2 * h + 1)
    if reach == NULL or own == NULL or seams == NULL:
        free(reach)
        free(own)
        free(seams)
        raise MemoryError("band_gradient: out of memory")
    cdef const int32_t* cp = &cols_indptr[0]
    cdef const int32_t* ci = &cols_indices[0] if cols_indices.shape[0] else NULL
    cdef const double* cd = &cols_data[0] if cols_data.shape[0] else NULL
    cdef const int32_t* hu = &half_u[0, 0]
    cdef const int32_t* hv = &half_v[0, 0]
    cdef const uint8_t* mk = &mask[0, 0]
    cdef double* cn = &corners[0, 0]
    cdef double* sp = &spread[0, 0]
    cdef double* g = &grad[0] if m else NULL
    with nogil, parallel(num_threads=nt):
        # the windows' reach, the seams between the threads' corner rows
        for t in prange(nt, schedule="static"):
            _texel_reach(hv, mk, _part(n, t, nt), _part(n, t + 1, nt), reach + t)
        barrier()
        for t in prange(nt, schedule="static"):
            if t == 0:
                _plan_seams(reach, nt, nt, h, w, n, own, seams, seams + h + 1)
        barrier()
        # the gradient per texel spread over its window's corners (C, D), the windows
        # filled in (E), A^T (F)
        for t in prange(nt, schedule="static"):
            _band_spread(NULL, &density[0, 0], hu, hv, mk, &per_count[0, 0], &low[0, 0], &high[0, 0],
                         &scale[0, 0], over_weight, h, w, _run_start(t, nt, n), _run_start(t + 1, nt, n),
                         own[2 * t], own[2 * t + 1], seams + h + 1, cn, sp, NULL)
        barrier()
        for t in prange(nt, schedule="static"):
            if t == 0 and nt > 1:
                _replay_seams(sp, hu, hv, h, w, seams, seams + h + 1, cn)
        barrier()
        for t in prange(nt, schedule="static"):
            _fill_columns(cn, h, w, sp, _part(w, t, nt), _part(w, t + 1, nt))
        barrier()
        for t in prange(nt, schedule="static"):
            _transposed_rows(cp, ci, cd, sp, _part(m, t, nt), _part(m, t + 1, nt), g)
    free(reach)
    free(own)
    free(seams)
