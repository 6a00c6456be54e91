# Closest point on a triangle mesh (3D), accelerated by a uniform grid of triangle boxes.
# Inputs are C-contiguous and already validated by coverage.proximity.
from libc.math cimport fabs, floor, sqrt
from libc.stdint cimport int64_t
from _geom cimport closest_on_triangle


cdef inline int64_t _clamp(int64_t x, int64_t lo, int64_t hi) noexcept nogil:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


cdef inline int64_t _cell_of(double x, double origin, double cell, int64_t n) noexcept nogil:
    """Index of the grid slab holding coordinate x, clamped to [0, n - 1] (NaN-free x)."""
    cdef double q = floor((x - origin) / cell)
    if q < 0.0:
        return 0
    if q > <double>(n - 1):
        return n - 1
    return <int64_t>q


cdef inline double _gap(double below, double above) noexcept nogil:
    """Distance to an interval from (lo - x, x - hi): at most one is positive.

    Branch-free (max, then e + |e| = 2 max(e, 0) exactly): which side of a box a query lies
    on is a coin toss for the branch predictor, and these tests are most of the search.
    """
    cdef double e = below if below > above else above
    return (e + fabs(e)) * 0.5


cdef inline double _box_d2(const double* p, const double* lo, const double* hi) noexcept nogil:
    """Squared distance from p to the box [lo, hi]."""
    cdef double d = 0.0, e
    cdef int j
    for j in range(3):
        e = _gap(lo[j] - p[j], p[j] - hi[j])
        d += e * e
    return d


cdef enum:
    TESTED = 32  # exact tests remembered per query (see Best.tested)


cdef struct Best:
    int64_t tri
    double d2
    double bary[3]
    # triangles already tested exactly for this query: a triangle is binned into every
    # cell its box overlaps, and half of the exact tests would repeat one otherwise
    int64_t tested[TESTED]
    int ntested


cdef inline bint _tested(Best* best, int64_t t) noexcept nogil:
    """Whether t was tested already; records it if not (when the list is full, it stops
    recording: a repeated test costs time, not correctness)."""
    cdef int j
    for j in range(best.ntested):
        if best.tested[j] == t:
            return True
    if best.ntested < TESTED:
        best.tested[best.ntested] = t
        best.ntested += 1
    return False


cdef struct Grid:
    # what the searches read of the grid, in one place
    const double* triangles        # (m, 15) records: box (lo, hi), then corners a, b, c
    const int64_t* cell_start      # (cells + 1,)
    const int64_t* cell_items      # (k,) triangle of each item
    const double* item_box         # guided search: (6, k) its box (lo, hi), axis by axis: read in a stream
    Py_ssize_t nitems              # k
    const double* cell_box         # guided search: (cells, 6) each cell's box cut to its triangles' boxes
    int64_t* stamp                 # guided search: (m,) the last query that tested each triangle exactly
    int64_t query                  # the query being searched
    double origin[3]
    double cell
    int64_t dims[3]
    double lim2                    # max_dist squared
    int64_t rmax                   # shells that cover max_dist


cdef inline void _grid(Grid* g, const double[:, ::1] triangles, const int64_t[::1] cell_start,
                       const int64_t[::1] cell_items, const double[::1] origin, double cell,
                       const int64_t[::1] dims, double max_dist) noexcept nogil:
    """What both searches read of the grid (the guided one's extras are left NULL)."""
    cdef int j
    g.triangles = &triangles[0, 0]
    g.cell_start = &cell_start[0]
    g.cell_items = &cell_items[0] if cell_items.shape[0] else NULL
    g.item_box = NULL
    g.nitems = 0
    g.cell_box = NULL
    g.stamp = NULL
    g.query = -1
    for j in range(3):
        g.origin[j] = origin[j]
        g.dims[j] = dims[j]
    g.cell = cell
    g.lim2 = max_dist * max_dist
    # a search radius of rmax cells covers max_dist; beyond it nothing can qualify
    g.rmax = <int64_t>(max_dist / cell) + 2
    if g.rmax > g.dims[0] + g.dims[1] + g.dims[2]:
        g.rmax = g.dims[0] + g.dims[1] + g.dims[2]


cdef inline void _keep(Best* best, int64_t t, double d2, const double* bary) noexcept nogil:
    """Keep triangle t (its point at squared distance d2, barycentrics bary) if it beats the
    best so far: nearer, or as near with a lower index."""
    if d2 < best.d2 or (d2 == best.d2 and best.tri >= 0 and t < best.tri):
        best.d2 = d2
        best.tri = t
        best.bary[0] = bary[0]
        best.bary[1] = bary[1]
        best.bary[2] = bary[2]


cdef inline void _scan_cell(const double* p, const Grid* g, int64_t c,
                            int64_t x, int64_t y, int64_t z, Best* best) noexcept nogil:
    """Offer every triangle of cell (x, y, z) (flat id c) that could beat the best so far."""
    cdef Py_ssize_t k, k0, k1 = g.cell_start[c + 1]
    cdef int64_t t
    cdef double d2
    cdef double bary[3]
    cdef double lo[3]
    cdef double hi[3]
    cdef const double* abc
    cdef const double* rec
    # most cells near a face are empty: skip them before anything else; a cell (or a
    # triangle) whose box is farther than the best so far cannot hold a nearer point;
    # equal distances still count for ties
    k0 = g.cell_start[c]
    if k0 == k1:
        return
    lo[0] = g.origin[0] + x * g.cell
    lo[1] = g.origin[1] + y * g.cell
    lo[2] = g.origin[2] + z * g.cell
    hi[0] = g.origin[0] + (x + 1) * g.cell
    hi[1] = g.origin[1] + (y + 1) * g.cell
    hi[2] = g.origin[2] + (z + 1) * g.cell
    if _box_d2(p, lo, hi) > best.d2:
        return
    for k in range(k0, k1):
        t = g.cell_items[k]
        rec = g.triangles + t * 15
        if _box_d2(p, rec, rec + 3) > best.d2:
            continue
        if _tested(best, t):
            continue
        abc = rec + 6
        d2 = closest_on_triangle(p, abc, abc + 3, abc + 6, bary)
        _keep(best, t, d2, bary)


cdef enum:
    CHUNK = 64   # item boxes measured at once (_scan)


cdef inline void _offer(const double* p, Grid* g, int64_t t, Best* best) noexcept nogil:
    """Test triangle t exactly (once per query) and keep it if it beats the best so far."""
    cdef double d2
    cdef double bary[3]
    cdef const double* abc
    if g.stamp[t] == g.query:
        return
    g.stamp[t] = g.query
    abc = g.triangles + t * 15 + 6
    d2 = closest_on_triangle(p, abc, abc + 3, abc + 6, bary)
    _keep(best, t, d2, bary)


cdef inline void _scan(const double* p, Grid* g, int64_t c, Best* best) noexcept nogil:
    """Offer every triangle of cell c that could beat the best so far: the cell's box cut to
    its triangles' boxes holds every point of theirs that this cell stands for (the closest
    point of a triangle lies in some cell that lists it, and in its box), so a cell farther
    than the best holds no nearer point; equal distances still count for ties."""
    cdef Py_ssize_t k, k0 = g.cell_start[c], k1 = g.cell_start[c + 1]
    cdef const double* box
    if k0 == k1:
        return
    box = g.cell_box + c * 6
    if _box_d2(p, box, box + 3) > best.d2:
        return
    cdef double near[CHUNK]
    cdef Py_ssize_t n, stride = g.nitems
    cdef const double* b
    cdef double px = p[0], py = p[1], pz = p[2], ex, ey, ez
    # in chunks: first every box's squared distance (_box_d2 term for term, in a loop the
    # compiler runs two boxes at a time: the boxes are stored axis by axis), then the
    # exact tests of the boxes near enough
    while k0 < k1:
        n = k1 - k0 if k1 - k0 < CHUNK else CHUNK
        b = g.item_box + k0
        for k in range(n):
            ex = _gap(b[k] - px, px - b[3 * stride + k])
            ey = _gap(b[stride + k] - py, py - b[4 * stride + k])
            ez = _gap(b[2 * stride + k] - pz, pz - b[5 * stride + k])
            near[k] = ((0.0 + ex * ex) + ey * ey) + ez * ez
        for k in range(n):
            if near[k] <= best.d2:
                _offer(p, g, g.cell_items[k0 + k], best)
        k0 += n


cdef inline bint _beyond(const double* p, const Grid* g) noexcept nogil:
    """Whether the grid's box (and so every triangle) is max_dist or farther from p."""
    cdef double q = 0.0, wall
    cdef int j
    for j in range(3):
        wall = g.origin[j] - p[j]
        if wall < p[j] - (g.origin[j] + g.dims[j] * g.cell):
            wall = p[j] - (g.origin[j] + g.dims[j] * g.cell)
        if wall > 0.0:
            q += wall * wall
    return q >= g.lim2


cdef inline void _home(const double* p, const Grid* g, int64_t* home) noexcept nogil:
    """The cell of p's projection onto the grid box: every point of a cell at Chebyshev
    distance > r from it is farther than r * cell from p (projection onto a convex box)."""
    cdef int j
    for j in range(3):
        home[j] = _cell_of(p[j], g.origin[j], g.cell, g.dims[j])


cdef inline void _shell(const double* p, Grid* g, const int64_t* home, int64_t r, bint guided,
                        Best* best) noexcept nogil:
    """Offer the triangles of the cells at Chebyshev distance r from home (clamped to the
    grid), each cell as _scan (guided) or _scan_cell tests it."""
    cdef int64_t x, y, z, nx = g.dims[0], ny = g.dims[1], nz = g.dims[2]
    cdef int64_t x0 = home[0] - r, x1 = home[0] + r
    cdef int64_t y0 = home[1] - r, y1 = home[1] + r
    cdef int64_t z0 = home[2] - r, z1 = home[2] + r
    # a row's clamped ends, once: recomputed on every cell they cost closest_points 9 % more
    # instructions
    cdef int64_t xs = _clamp(x0, 0, nx - 1), xe = _clamp(x1, 0, nx - 1)
    for z in range(_clamp(z0, 0, nz - 1), _clamp(z1, 0, nz - 1) + 1):
        for y in range(_clamp(y0, 0, ny - 1), _clamp(y1, 0, ny - 1) + 1):
            x = xs
            while x <= xe:
                # only the shell at Chebyshev distance r is new
                if r > 0 and z != z0 and z != z1 and y != y0 and y != y1 and x != x0 and x != x1:
                    x = x1
                    continue
                if guided:
                    _scan(p, g, (z * ny + y) * nx + x, best)
                else:
                    _scan_cell(p, g, (z * ny + y) * nx + x, x, y, z, best)
                x += 1


cdef inline double _wall(const double* p, const Grid* g, const int64_t* home, int64_t r) noexcept nogil:
    """How far p is from the nearest wall of the cube of cells within r of home that has grid
    beyond it (everything unsearched lies beyond one); 1e300 when none has."""
    cdef double q, wall = 1e300
    cdef int j
    for j in range(3):
        if home[j] - r > 0:
            q = p[j] - (g.origin[j] + (home[j] - r) * g.cell)
            if q < wall:
                wall = q
        if home[j] + r < g.dims[j] - 1:
            q = g.origin[j] + (home[j] + r + 1) * g.cell - p[j]
            if q < wall:
                wall = q
    return wall


cdef inline bint _start(const double[:, ::1] query, Py_ssize_t i, double* p, int64_t[::1] out_tri,
                        double[:, ::1] out_bary, double[::1] out_dist) noexcept nogil:
    """Query i's answer set to none and its point read into p; whether p is finite."""
    out_tri[i] = -1
    out_bary[i, 0] = 0.0
    out_bary[i, 1] = 0.0
    out_bary[i, 2] = 0.0
    out_dist[i] = -1.0
    p[0] = query[i, 0]
    p[1] = query[i, 1]
    p[2] = query[i, 2]
    return p[0] == p[0] and p[1] == p[1] and p[2] == p[2]


cdef inline void _answer(const Best* best, Py_ssize_t i, int64_t[::1] out_tri, double[:, ::1] out_bary,
                         double[::1] out_dist) noexcept nogil:
    out_tri[i] = best.tri
    out_bary[i, 0] = best.bary[0]
    out_bary[i, 1] = best.bary[1]
    out_bary[i, 2] = best.bary[2]
    out_dist[i] = sqrt(best.d2)


cdef void _nearest_first(const double* p, Grid* g, Best* best) noexcept nogil:
    """Shells of cells outwards from p's cell until everything unsearched lies beyond the
    best so far (which may start as a guess: it then prunes from the first cell on) or, with
    nothing found, beyond max_dist. Whatever best holds at the start, it ends as the least
    distance below max_dist, ties to the lowest triangle index (_closest's answer)."""
    cdef int64_t r = 0
    cdef int64_t home[3]
    cdef double wall, reach
    _home(p, g, home)
    while True:
        _shell(p, g, home, r, True, best)
        wall = _wall(p, g, home, r)
        if wall >= 1e300:
            return
        if best.tri >= 0:
            # a nearer or equally near point lies within the best distance (widened against
            # round-off, as _closest's ball)
            reach = sqrt(best.d2)
            reach += 1e-9 * (reach + g.cell)
            if wall > reach:
                return
        elif (wall >= 0.0 and g.lim2 <= wall * wall) or r >= g.rmax:
            return
        r += 1


cdef void _closest_seeded(const double[:, ::1] triangles,
                          const double[:, ::1] query, const int64_t[::1] order, const int64_t[::1] seed,
                          const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                          const double[:, ::1] item_box, const double[:, ::1] cell_box, int64_t[::1] stamp,
                          const double[::1] origin, double cell, const int64_t[::1] dims,
                          double max_dist,
                          int64_t[::1] out_tri, double[:, ::1] out_bary, double[::1] out_dist) noexcept nogil:
    cdef Py_ssize_t i, ii
    cdef bint ordered = order.shape[0] == query.shape[0]
    cdef bint seeded = seed.shape[0] == query.shape[0]
    cdef int64_t last = -1
    cdef double p[3]
    cdef Best best
    cdef Grid g
    _grid(&g, triangles, cell_start, cell_items, origin, cell, dims, max_dist)
    g.item_box = &item_box[0, 0] if item_box.shape[1] else NULL
    g.nitems = item_box.shape[1]
    g.cell_box = &cell_box[0, 0]
    g.stamp = &stamp[0]
    for ii in range(query.shape[0]):
        i = order[ii] if ordered else ii
        if not _start(query, i, p, out_tri, out_bary, out_dist):
            continue
        if _beyond(p, &g):
            continue
        best.tri = -1
        best.d2 = g.lim2
        g.query = ii
        # guesses: the caller's for this query and the answer of the query searched just
        # before (a neighbour: queries come in grid order, or along a path)
        if seeded and seed[i] >= 0:
            _offer(p, &g, seed[i], &best)
        if last >= 0:
            _offer(p, &g, last, &best)
        _nearest_first(p, &g, &best)
        if best.tri < 0:
            continue
        last = best.tri
        _answer(&best, i, out_tri, out_bary, out_dist)


def closest_points_seeded(const double[:, ::1] triangles,
                          const double[:, ::1] query, const int64_t[::1] order, const int64_t[::1] seed,
                          const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                          const double[:, ::1] item_box, const double[:, ::1] cell_box, int64_t[::1] stamp,
                          const double[::1] origin, double cell, const int64_t[::1] dims,
                          double max_dist,
                          int64_t[::1] out_tri, double[:, ::1] out_bary, double[::1] out_dist):
    """closest_points with a guessed triangle per query (seed, -1: none; empty: none at all),
    each query's search bounded from the start by the nearer of its guess and the answer of
    the query searched before it. stamp: (m,) int64 scratch, all below 0 on entry."""
    with nogil:
        _closest_seeded(triangles, query, order, seed, cell_start, cell_items, item_box, cell_box, stamp,
                        origin, cell, dims, max_dist, out_tri, out_bary, out_dist)


cdef void _closest(const double[:, ::1] triangles,
                   const double[:, ::1] query, const int64_t[::1] order,
                   const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                   const double[::1] origin, double cell, const int64_t[::1] dims,
                   double max_dist,
                   int64_t[::1] out_tri, double[:, ::1] out_bary, double[::1] out_dist) noexcept nogil:
    cdef Py_ssize_t i, ii
    cdef bint ordered = order.shape[0] == query.shape[0]
    cdef int64_t r, x, y, z, nx = dims[0], ny = dims[1]
    cdef int64_t lo[3]
    cdef int64_t hi[3]
    cdef int64_t home[3]
    cdef double p[3]
    cdef double wall, reach
    cdef Best best
    cdef Grid g
    cdef int j
    _grid(&g, triangles, cell_start, cell_items, origin, cell, dims, max_dist)
    for ii in range(query.shape[0]):
        # queries in the given order (neighbours one after another reuse the cache)
        i = order[ii] if ordered else ii
        if not _start(query, i, p, out_tri, out_bary, out_dist):
            continue
        # nothing can be nearer than the grid's box: skip queries beyond max_dist of it
        if _beyond(p, &g):
            continue
        # 1. shells of cells around p's home cell, until one holds a candidate
        _home(p, &g, home)
        best.tri = -1
        best.ntested = 0
        best.d2 = g.lim2
        r = 0
        while r <= g.rmax:
            _shell(p, &g, home, r, False, &best)
            if best.tri >= 0:
                break
            # stop when everything unsearched lies beyond max_dist
            wall = _wall(p, &g, home, r)
            if wall >= 1e300 or (wall >= 0.0 and g.lim2 <= wall * wall):
                break
            r += 1
        if best.tri < 0:
            continue
        # 2. a nearer (or equally near) point lies in the ball of radius sqrt(best.d2) about p:
        # search the unsearched cells its box overlaps (widened against round-off); the
        # cell test in _scan_cell prunes the ball's corners and tightens as the best improves
        reach = sqrt(best.d2)
        reach += 1e-9 * (reach + cell)
        for j in range(3):
            lo[j] = _cell_of(p[j] - reach, g.origin[j], cell, dims[j])
            hi[j] = _cell_of(p[j] + reach, g.origin[j], cell, dims[j])
        for z in range(lo[2], hi[2] + 1):
            for y in range(lo[1], hi[1] + 1):
                for x in range(lo[0], hi[0] + 1):
                    if (home[0] - r <= x <= home[0] + r and home[1] - r <= y <= home[1] + r
                            and home[2] - r <= z <= home[2] + r):
                        continue
                    _scan_cell(p, &g, (z * ny + y) * nx + x, x, y, z, &best)
        _answer(&best, i, out_tri, out_bary, out_dist)


def closest_points(const double[:, ::1] triangles,
                   const double[:, ::1] query, const int64_t[::1] order,
                   const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                   const double[::1] origin, double cell, const int64_t[::1] dims,
                   double max_dist,
                   int64_t[::1] out_tri, double[:, ::1] out_bary, double[::1] out_dist):
    with nogil:
        _closest(triangles, query, order, cell_start, cell_items, origin, cell, dims, max_dist,
                 out_tri, out_bary, out_dist)


# --- search order ------------------------------------------------------------------------

from libc.stdlib cimport malloc, free


def cell_order(const double[:, ::1] query, const double[::1] origin, double cell, const int64_t[::1] dims,
               int64_t[::1] out):
    """out = the queries' indices sorted by grid cell id ``(z * ny + y) * nx + x`` (each axis's
    ``floor((q - origin) / cell)`` clipped to the grid, NaN read as 0), ties in index order:
    ``numpy.argsort(key, kind="stable")``, by a least-significant-digit radix sort of the
    keys, 11 bits a pass (two passes up to 4M cells)."""
    cdef Py_ssize_t k = query.shape[0], i, j, passes = 0
    cdef int64_t ncell = dims[0] * dims[1] * dims[2], key, x, y, z, total, c
    cdef double q
    cdef int axis
    cdef int64_t xyz[3]
    if query.shape[1] != 3 or out.shape[0] != k or origin.shape[0] != 3 or dims.shape[0] != 3:
        raise ValueError("cell_order: query (k, 3), origin (3,), dims (3,) and out (k,)")
    while (<int64_t>1 << (11 * passes)) < ncell:
        passes += 1
    if k == 0:
        return
    cdef int64_t* keys = <int64_t*>malloc(k * sizeof(int64_t))
    cdef int64_t* tmp = <int64_t*>malloc(k * sizeof(int64_t))
    cdef int64_t* count = <int64_t*>malloc(2048 * sizeof(int64_t))
    if keys == NULL or tmp == NULL or count == NULL:
        free(keys)
        free(tmp)
        free(count)
        raise MemoryError("cell_order: out of memory")
    cdef int64_t* src
    cdef int64_t* dst
    cdef int64_t* swap
    with nogil:
        for i in range(k):
            for axis in range(3):
                q = floor((query[i, axis] - origin[axis]) / cell)
                if not (q == q) or q < 0.0:          # NaN (as nan_to_num) or below the grid
                    q = 0.0
                if q > <double>(dims[axis] - 1):     # above it (and +inf)
                    q = <double>(dims[axis] - 1)
                xyz[axis] = <int64_t>q
            keys[i] = (xyz[2] * dims[1] + xyz[1]) * dims[0] + xyz[0]
            out[i] = i
        # stable passes, 11 bits at a time, between out and tmp
        src = &out[0]
        dst = tmp
        for j in range(passes):
            for c in range(2048):
                count[c] = 0
            for i in range(k):
                count[(keys[src[i]] >> (11 * j)) & 2047] += 1
            total = 0
            for c in range(2048):
                key = count[c]
                count[c] = total
                total += key
            for i in range(k):
                c = (keys[src[i]] >> (11 * j)) & 2047
                dst[count[c]] = src[i]
                count[c] += 1
            swap = src
            src = dst
            dst = swap
        if src != &out[0]:
            for i in range(k):
                out[i] = src[i]
    free(keys)
    free(tmp)
    free(count)
