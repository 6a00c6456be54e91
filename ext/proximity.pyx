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


cdef inline void _scan_cell(const double* p, int64_t c, const int64_t[::1] cell_start,
                            const int64_t[::1] cell_items, const double[:, ::1] triangles,
                            double cell, const double* origin,
                            int64_t x, int64_t y, int64_t z, Best* best) noexcept nogil:
    """Offer every triangle of cell (x, y, z) (flat id c) that could beat the best so far."""
    cdef Py_ssize_t k, k0, k1 = cell_start[c + 1]
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
    k0 = cell_start[c]
    if k0 == k1:
        return
    lo[0] = origin[0] + x * cell
    lo[1] = origin[1] + y * cell
    lo[2] = origin[2] + z * cell
    hi[0] = origin[0] + (x + 1) * cell
    hi[1] = origin[1] + (y + 1) * cell
    hi[2] = origin[2] + (z + 1) * cell
    if _box_d2(p, lo, hi) > best.d2:
        return
    for k in range(k0, k1):
        t = cell_items[k]
        rec = &triangles[t, 0]
        if _box_d2(p, rec, rec + 3) > best.d2:
            continue
        if _tested(best, t):
            continue
        abc = rec + 6
        d2 = closest_on_triangle(p, abc, abc + 3, abc + 6, bary)
        if d2 < best.d2 or (d2 == best.d2 and best.tri >= 0 and t < best.tri):
            best.d2 = d2
            best.tri = t
            best.bary[0] = bary[0]
            best.bary[1] = bary[1]
            best.bary[2] = bary[2]


cdef void _closest(const double[:, ::1] triangles,
                   const double[:, ::1] query, const int64_t[::1] order,
                   const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                   const double[::1] origin_, double cell, const int64_t[::1] dims,
                   double max_dist,
                   int64_t[::1] out_tri, double[:, ::1] out_bary, double[::1] out_dist) noexcept nogil:
    cdef Py_ssize_t i, ii
    cdef bint ordered = order.shape[0] == query.shape[0]
    cdef int64_t r, rmax, cx, cy, cz, x, y, z
    cdef int64_t x0, x1, y0, y1, z0, z1, nx = dims[0], ny = dims[1], nz = dims[2]
    cdef int64_t lo[3]
    cdef int64_t hi[3]
    cdef int64_t home[3]
    cdef double p[3]
    cdef double origin[3]
    cdef double q, wall, reach, lim2 = max_dist * max_dist
    cdef Best best
    cdef int j
    for j in range(3):
        origin[j] = origin_[j]
    # a search radius of rmax cells covers max_dist; beyond it nothing can qualify
    rmax = <int64_t>(max_dist / cell) + 2
    if rmax > nx + ny + nz:
        rmax = nx + ny + nz
    for ii in range(query.shape[0]):
        # queries in the given order (neighbours one after another reuse the cache)
        i = order[ii] if ordered else ii
        out_tri[i] = -1
        out_bary[i, 0] = 0.0
        out_bary[i, 1] = 0.0
        out_bary[i, 2] = 0.0
        out_dist[i] = -1.0
        for j in range(3):
            p[j] = query[i, j]
        if not (p[0] == p[0] and p[1] == p[1] and p[2] == p[2]):
            continue
        # nothing can be nearer than the grid's box: skip queries beyond max_dist of it
        q = 0.0
        for j in range(3):
            wall = origin[j] - p[j]
            if wall < p[j] - (origin[j] + dims[j] * cell):
                wall = p[j] - (origin[j] + dims[j] * cell)
            if wall > 0.0:
                q += wall * wall
        if q >= lim2:
            continue
        # 1. shells of cells around the cell of p's projection onto the grid box, until one
        # holds a candidate: every point of a cell at Chebyshev distance > r from it is
        # farther than r * cell from p (projection onto a convex box)
        for j in range(3):
            home[j] = _cell_of(p[j], origin[j], cell, dims[j])
        cx = home[0]
        cy = home[1]
        cz = home[2]
        best.tri = -1
        best.ntested = 0
        best.d2 = lim2
        r = 0
        while r <= rmax:
            x0 = cx - r; x1 = cx + r
            y0 = cy - r; y1 = cy + r
            z0 = cz - r; z1 = cz + r
            for z in range(_clamp(z0, 0, nz - 1), _clamp(z1, 0, nz - 1) + 1):
                for y in range(_clamp(y0, 0, ny - 1), _clamp(y1, 0, ny - 1) + 1):
                    x = _clamp(x0, 0, nx - 1)
                    while x <= _clamp(x1, 0, nx - 1):
                        # only the shell at Chebyshev distance r is new
                        if r > 0 and z != z0 and z != z1 and y != y0 and y != y1 and x != x0 and x != x1:
                            x = x1
                            continue
                        _scan_cell(p, (z * ny + y) * nx + x, cell_start, cell_items, triangles,
                                   cell, origin, x, y, z, &best)
                        x += 1
            if best.tri >= 0:
                break
            # everything unsearched lies beyond the walls of the searched box (walls on the
            # grid's edge have nothing beyond them): stop when they are all beyond max_dist
            wall = 1e300
            for j in range(3):
                if home[j] - r > 0:
                    q = p[j] - (origin[j] + (home[j] - r) * cell)
                    if q < wall:
                        wall = q
                if home[j] + r < dims[j] - 1:
                    q = origin[j] + (home[j] + r + 1) * cell - p[j]
                    if q < wall:
                        wall = q
            if wall >= 1e300 or (wall >= 0.0 and lim2 <= wall * wall):
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
            lo[j] = _cell_of(p[j] - reach, origin[j], cell, dims[j])
            hi[j] = _cell_of(p[j] + reach, origin[j], cell, dims[j])
        for z in range(lo[2], hi[2] + 1):
            for y in range(lo[1], hi[1] + 1):
                for x in range(lo[0], hi[0] + 1):
                    if cx - r <= x <= cx + r and cy - r <= y <= cy + r and cz - r <= z <= cz + r:
                        continue
                    _scan_cell(p, (z * ny + y) * nx + x, cell_start, cell_items, triangles,
                               cell, origin, x, y, z, &best)
        out_tri[i] = best.tri
        out_bary[i, 0] = best.bary[0]
        out_bary[i, 1] = best.bary[1]
        out_bary[i, 2] = best.bary[2]
        out_dist[i] = sqrt(best.d2)


def closest_points(const double[:, ::1] triangles,
                   const double[:, ::1] query, const int64_t[::1] order,
                   const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                   const double[::1] origin, double cell, const int64_t[::1] dims,
                   double max_dist,
                   int64_t[::1] out_tri, double[:, ::1] out_bary, double[::1] out_dist):
    with nogil:
        _closest(triangles, query, order, cell_start, cell_items, origin, cell, dims, max_dist,
                 out_tri, out_bary, out_dist)
