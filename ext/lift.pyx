# Point location in the chart and barycentric interpolation (surface lifting).
# Inputs are C-contiguous and already validated by coverage.lifting.
from libc.math cimport floor, sqrt
from libc.stdint cimport int32_t, int64_t
from _locate cimport _locate_one
from _prefetch cimport prefetch


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


cdef enum:
    # How far ahead (in points) _interpolate3 prefetches a point's triangle row, and then
    # the three vertex rows that row names: with points in random order every point misses
    # the cache in faces, then in values; fetching ahead overlaps those misses.
    AHEAD_FACES = 16
    AHEAD_VALUES = 8
    # How far behind (in points, a power of two) _interpolate3 normalises: the square root
    # and division of a point gathered this long ago do not wait on memory, so they run
    # while the current point's rows are on their way.
    LAG = 32


cdef inline void _scale3(double* row, double s) noexcept nogil:
    """row *= 1 / |row| where s = |row|^2 > 0 (_gather's normalisation, term for term)."""
    if s > 0.0:
        s = 1.0 / sqrt(s)
        row[0] *= s
        row[1] *= s
        row[2] *= s


cdef inline double _gather3(const double* values, const int64_t* faces, int64_t t,
                            const double* b, double* row) noexcept nogil:
    """row = _gather of 3 columns without the normalisation (0 if t < 0); returns |row|^2."""
    cdef const int64_t* f
    cdef const double* v0
    cdef const double* v1
    cdef const double* v2
    cdef double x = 0.0, y = 0.0, z = 0.0
    if t >= 0:
        f = faces + 3 * t
        v0 = values + 3 * f[0]
        v1 = values + 3 * f[1]
        v2 = values + 3 * f[2]
        x = b[0] * v0[0] + b[1] * v1[0] + b[2] * v2[0]
        y = b[0] * v0[1] + b[1] * v1[1] + b[2] * v2[1]
        z = b[0] * v0[2] + b[1] * v1[2] + b[2] * v2[2]
    row[0] = x
    row[1] = y
    row[2] = z
    return x * x + y * y + z * z


cdef void _interpolate3(const double* values, const int64_t* faces, const int64_t* tri,
                        const double* bary, Py_ssize_t n, bint normalize, double* out) noexcept nogil:
    """_gather specialised to 3 columns (positions, normals): raw pointers, the rows of
    points ahead prefetched, and the normalisation of points behind interleaved.

    The arithmetic is _gather's, term for term in the same order, so results are identical.
    """
    cdef Py_ssize_t i = 0, j
    cdef int64_t t
    cdef const int64_t* f
    cdef double norm2[LAG]  # |row|^2 of the last LAG points, by i % LAG
    # the points with points AHEAD_FACES ahead of them (no bounds checks in the loop;
    # rows of tri < 0, which are not read, prefetch triangle 0)
    while i < n - AHEAD_FACES:
        t = tri[i + AHEAD_FACES]
        prefetch(faces + 3 * (t if t > 0 else 0))
        t = tri[i + AHEAD_VALUES]
        f = faces + 3 * (t if t > 0 else 0)
        prefetch(values + 3 * f[0])
        prefetch(values + 3 * f[1])
        prefetch(values + 3 * f[2])
        if normalize and i >= LAG:
            j = i - LAG
            _scale3(out + 3 * j, norm2[j % LAG])
        norm2[i % LAG] = _gather3(values, faces, tri[i], bary + 3 * i, out + 3 * i)
        i += 1
    while i < n:
        if normalize and i >= LAG:
            j = i - LAG
            _scale3(out + 3 * j, norm2[j % LAG])
        norm2[i % LAG] = _gather3(values, faces, tri[i], bary + 3 * i, out + 3 * i)
        i += 1
    if normalize:
        j = n - LAG if n > LAG else 0
        while j < n:
            _scale3(out + 3 * j, norm2[j % LAG])
            j += 1


def interpolate(const double[:, ::1] values, const int64_t[:, ::1] faces,
                const int64_t[::1] tri, const double[:, ::1] bary, bint normalize,
                double[:, ::1] out):
    cdef Py_ssize_t i, j, n = tri.shape[0]
    if n == 0:
        return
    # (the 3-column kernel reads faces[0] for rows outside the chart: it needs a triangle)
    if values.shape[1] == 3 and faces.shape[0] > 0:
        with nogil:
            _interpolate3(&values[0, 0], &faces[0, 0], &tri[0], &bary[0, 0], n, normalize, &out[0, 0])
        return
    with nogil:
        for i in range(n):
            if tri[i] < 0:
                for j in range(values.shape[1]):
                    out[i, j] = 0.0
            else:
                _gather(values, faces, tri[i], &bary[i, 0], normalize, &out[i, 0])


cdef enum:
    # How far ahead (in points) lift prefetches: a point's grid cell's start, then (that
    # row loaded) its first items, then (those loaded) their triangles' affine rows; and,
    # once every point is located, a point's triangle row and then its three corner frames.
    AHEAD_START = 24
    AHEAD_ITEMS = 12
    AHEAD_AFFINE = 6
    RING = 32              # cells of the points ahead, by i % RING (> AHEAD_START)
    PREFETCH_ITEMS = 4     # affine rows prefetched per point (a cell holds ~6 triangles)


cdef inline int64_t _cell(double px, double py, double u0, double v0, double inv_cell,
                          int64_t nu, int64_t nv) noexcept nogil:
    """The grid cell of p as _locate_one finds it, -1 outside (for prefetching only)."""
    if not (px >= u0 and py >= v0):
        return -1
    cdef double fu = floor((px - u0) * inv_cell), fv = floor((py - v0) * inv_cell)
    if not (fu < <double>nu and fv < <double>nv):
        return -1
    return <int64_t>fv * nu + <int64_t>fu


def lift(const double[:, ::1] affine, const int64_t[:, ::1] faces, const double[:, ::1] frames,
         const double[:, ::1] query,
         const int64_t[::1] cell_start, const int64_t[::1] cell_items,
         double u0, double v0, double cell, int64_t nu, int64_t nv, double eps,
         int64_t[::1] out_tri, double[:, ::1] out_bary, double[:, ::1] out_points,
         double[:, ::1] out_normals):
    """Locate, then interpolate positions and unit normals (NaN outside the chart).

    frames[v] = (x, y, z, nx, ny, nz): position and normal side by side, one cache line
    per corner. Two passes, each fetching ahead what later points will read (points come in
    random order, and every read of the grid, the triangles and the frames misses the
    cache otherwise): first every point located, then every point interpolated. Each point's
    arithmetic is the one-pass kernel's, term for term, so results are identical.
    """
    cdef Py_ssize_t i, j, k, k0, k1, n = query.shape[0]
    cdef int64_t t, a0, a1, a2, c
    cdef int64_t ring[RING]
    cdef double inv = 1.0 / cell
    cdef double nan = float("nan")
    cdef double b0, b1, b2, s
    cdef const int64_t* f
    if n == 0:
        return
    with nogil:
        # the cells of the first points (the loop finds those of the points AHEAD_START on)
        for j in range(n if n < AHEAD_START else AHEAD_START):
            ring[j] = _cell(query[j, 0], query[j, 1], u0, v0, inv, nu, nv)
        for i in range(n):
            if i + AHEAD_START < n:
                c = _cell(query[i + AHEAD_START, 0], query[i + AHEAD_START, 1], u0, v0, inv, nu, nv)
                ring[(i + AHEAD_START) % RING] = c
                if c >= 0:
                    prefetch(&cell_start[c])
            if i + AHEAD_ITEMS < n:
                c = ring[(i + AHEAD_ITEMS) % RING]
                if c >= 0:
                    prefetch(&cell_items[cell_start[c]])
            if i + AHEAD_AFFINE < n:
                c = ring[(i + AHEAD_AFFINE) % RING]
                if c >= 0:
                    k0 = cell_start[c]
                    k1 = cell_start[c + 1]
                    if k1 > k0 + PREFETCH_ITEMS:
                        k1 = k0 + PREFETCH_ITEMS
                    for k in range(k0, k1):
                        prefetch(&affine[cell_items[k], 0])
            out_tri[i] = _locate_one(affine, query[i, 0], query[i, 1], cell_start, cell_items,
                                     u0, v0, inv, nu, nv, eps, &out_bary[i, 0])
        for i in range(n):
            if i + AHEAD_FACES < n:
                t = out_tri[i + AHEAD_FACES]
                if t >= 0:
                    prefetch(&faces[t, 0])
            if i + AHEAD_VALUES < n:
                t = out_tri[i + AHEAD_VALUES]
                if t >= 0:
                    f = &faces[t, 0]
                    prefetch(&frames[f[0], 0])
                    prefetch(&frames[f[1], 0])
                    prefetch(&frames[f[2], 0])
            t = out_tri[i]
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


# --- binning boxes into a uniform grid (coverage.lifting.bin_boxes) --------------------------

cdef inline int64_t _cell_of(double x, double origin, double cell, double inv, int64_t upper) noexcept nogil:
    """NumPy's ``clip(floor((x - origin) / cell).astype(int64), 0, upper)`` for one value: a
    float outside int64's range (or NaN) converts to INT64_MIN there (x86), so clips to 0.

    ``(x - origin) * inv`` (``inv = 1 / cell``) is within 1e-8 of the quotient below 2**24
    in size, so where it is more than 1e-6 from an integer it has the quotient's floor (and
    where it is below -1e-6, so is the quotient): only elsewhere is the division made."""
    cdef double f = (x - origin) * inv, r
    cdef int64_t i
    if f > 1e-6 and f < 16777216.0:
        i = <int64_t>f
        r = f - <double>i
        if r > 1e-6 and r < 0.999999:
            return i if i < upper else upper
    elif f < -1e-6 and f > -16777216.0:
        return 0
    f = floor((x - origin) / cell)
    if f >= -9.2233720368547758e18 and f < 9.2233720368547758e18:
        i = <int64_t>f
    else:
        return 0
    if i < 0:
        return 0
    if i > upper:
        return upper
    return i


def bin_count(const double[:, ::1] lo, const double[:, ::1] hi, const double[::1] origin, double cell,
              const int64_t[::1] shape, int64_t[:, ::1] first, int64_t[:, ::1] last, int64_t[::1] start):
    """Each box's first and last cell per axis (``first``, ``last`` ``(m, 3)``; axes past
    ``lo.shape[1]`` get 0) and ``start`` ``(cells + 1,)``: ``start[0] = 0`` and
    ``start[c + 1]`` the boxes of the cells before c (cells numbered with the first axis
    fastest), where :func:`bin_fill` starts cell c's list. Returns the total of (box, cell)
    pairs."""
    cdef Py_ssize_t m = lo.shape[0], d = lo.shape[1], b, a
    cdef Py_ssize_t ncells = start.shape[0] - 1, c
    cdef int64_t i, j, k, s1, s2, base, total = 0, n
    cdef double inv = 1.0 / cell
    with nogil:
        s1 = shape[0] if d > 0 else 1
        s2 = s1 * (shape[1] if d > 1 else 1)
        for c in range(ncells + 1):
            start[c] = 0
        for b in range(m):
            for a in range(3):
                if a < d:
                    first[b, a] = _cell_of(lo[b, a], origin[a], cell, inv, shape[a] - 1)
                    last[b, a] = _cell_of(hi[b, a], origin[a], cell, inv, shape[a] - 1)
                else:
                    first[b, a] = 0
                    last[b, a] = 0
            for k in range(first[b, 2], last[b, 2] + 1):
                for j in range(first[b, 1], last[b, 1] + 1):
                    base = k * s2 + j * s1 + 1
                    for i in range(first[b, 0], last[b, 0] + 1):
                        start[base + i] += 1
        # counts to where each cell's list starts, one place on (bin_fill moves them on)
        for c in range(1, ncells + 1):
            n = start[c]
            start[c] = total
            total += n
    return total


def bin_fill(const int64_t[:, ::1] first, const int64_t[:, ::1] last, const int64_t[::1] shape,
             int64_t[::1] start, int64_t[::1] items):
    """``items``: the boxes of each cell, ascending (a counting sort of :func:`bin_count`'s
    ranges); ``start`` from :func:`bin_count`, whose ``start[c + 1]`` (where cell c's list
    starts) each of cell c's boxes moves on by one: at the end, where it ends, and ``start``
    is the CSR row pointer (``items[start[c]:start[c + 1]]``)."""
    cdef Py_ssize_t m = first.shape[0], d = shape.shape[0], b
    cdef int64_t i, j, k, s1, s2, base
    with nogil:
        s1 = shape[0] if d > 0 else 1
        s2 = s1 * (shape[1] if d > 1 else 1)
        for b in range(m):
            for k in range(first[b, 2], last[b, 2] + 1):
                for j in range(first[b, 1], last[b, 1] + 1):
                    base = k * s2 + j * s1 + 1
                    for i in range(first[b, 0], last[b, 0] + 1):
                        items[start[base + i]] = b
                        start[base + i] += 1


# --- zone label cells (coverage.zones.LabelCells.lookup) ------------------------------------

cdef enum:
    # How far ahead (in points) label_lookup's second pass prefetches a point's cell mark
    # (points come in random order; the marks, ~0.7 MB, miss the cache otherwise).
    LABEL_AHEAD = 16


cdef inline Py_ssize_t _bracket(double x, double lo, double step, Py_ssize_t last) noexcept nogil:
    """NumPy's ``clip(nan_to_num(floor((x - lo) / step), nan=0), 0, last)`` as an index,
    without branches: the quotient clamped to [0, last] (NaN to 0), then truncated (floor
    and truncation differ only below 0, which clips to 0 either way)."""
    cdef double f = (x - lo) / step
    f = f if f > 0.0 else 0.0
    f = f if f < <double>last else <double>last
    return <Py_ssize_t>f


cdef inline Py_ssize_t _label_cell(double u, double v, const double* u_edges, const double* v_edges,
                                   Py_ssize_t nu, Py_ssize_t nv, double du, double dv) noexcept nogil:
    """The flat cell (iv * nu + iu) whose closed edges hold (u, v); -1 outside the grid;
    -2 where no cell answers (rounding put the point in a neighbouring cell, NaN). The
    tests are combined without branches (points in random order mispredict them)."""
    cdef Py_ssize_t iu = _bracket(u, u_edges[0], du, nu - 1), iv = _bracket(v, v_edges[0], dv, nv - 1)
    cdef bint outside = (u < u_edges[0]) | (u > u_edges[nu]) | (v < v_edges[0]) | (v > v_edges[nv])
    cdef bint inside = ((u_edges[iu] <= u) & (u <= u_edges[iu + 1]) & (v_edges[iv] <= v)
                        & (v <= v_edges[iv + 1]))
    return -1 if outside else (iv * nu + iu if inside else -2)


def label_lookup(const double[::1] u_edges, const double[::1] v_edges, const int32_t[:, ::1] state,
                 const double[:, ::1] uv, int64_t[::1] out, int64_t[::1] rest):
    """Each point's mark from the cell whose closed edges hold it (``out``; -1 outside the
    grid), or its index appended to ``rest`` where no mark answers (a boundary cell, a
    point rounding put in a neighbouring cell, NaN). Returns how many went to ``rest``.

    Two passes: every point's cell (into ``out``; no memory but the point's own is read),
    then every point's mark, the marks of the points LABEL_AHEAD on prefetched."""
    cdef Py_ssize_t k = uv.shape[0], nu = u_edges.shape[0] - 1, nv = v_edges.shape[0] - 1
    cdef Py_ssize_t p, c, n_rest = 0
    cdef double du = u_edges[1] - u_edges[0], dv = v_edges[1] - v_edges[0]
    cdef const double* ue = &u_edges[0]
    cdef const double* ve = &v_edges[0]
    cdef const int32_t* marks = &state[0, 0]
    cdef const double* q
    cdef int64_t mark
    if k == 0:
        return 0
    q = &uv[0, 0]
    with nogil:
        for p in range(k):
            out[p] = _label_cell(q[2 * p], q[2 * p + 1], ue, ve, nu, nv, du, dv)
        for p in range(k):
            if p + LABEL_AHEAD < k:
                c = out[p + LABEL_AHEAD]
                if c >= 0:
                    prefetch(marks + c)
            c = out[p]
            mark = marks[c] if c >= 0 else c   # -1 outside, -2 to ask
            out[p] = mark if mark != -2 else -1
            rest[n_rest] = p
            n_rest += mark == -2
    return n_rest
