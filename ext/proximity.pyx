# Closest point on a triangle mesh (3D), accelerated by a uniform grid of triangle boxes.
# Inputs are C-contiguous and already validated by coverage.proximity.
from libc.math cimport floor, sqrt
from libc.stdint cimport int64_t
from _geom cimport closest_on_triangle


cdef inline int64_t _clamp(int64_t x, int64_t lo, int64_t hi) noexcept nogil:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


cdef inline double _box_d2(const double* p, double lx, double ly, double lz,
                          double hx, double hy, double hz) noexcept nogil:
    """Squared distance from p to the box [l, h]."""
    cdef double d = 0.0, e
    e = lx - p[0] if p[0] < lx else (p[0] - hx if p[0] > hx else 0.0)
    d += e * e
    e = ly - p[1] if p[1] < ly else (p[1] - hy if p[1] > hy else 0.0)
    d += e * e
    e = lz - p[2] if p[2] < lz else (p[2] - hz if p[2] > hz else 0.0)
    d += e * e
    return d


cdef void _closest(const double[:, ::1] corners,
                   const double[:, ::1] tri_lo, const double[:, ::1] tri_hi,
                   const double[:, ::1] query,
                   const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                   const double[::1] origin, double cell, const int64_t[::1] dims,
                   double max_dist,
                   int64_t[::1] out_tri, double[:, ::1] out_bary, double[::1] out_dist) noexcept nogil:
    cdef Py_ssize_t i, k
    cdef int64_t t, r, rmax, cx, cy, cz, x, y, z, c, best
    cdef int64_t x0, x1, y0, y1, z0, z1, nx = dims[0], ny = dims[1], nz = dims[2]
    cdef double p[3]
    cdef double bary[3]
    cdef double bb[3]
    cdef int64_t home[3]
    cdef double d2, best_d2, q, wall, lim2 = max_dist * max_dist
    cdef int j
    # a search radius of rmax cells covers max_dist; beyond it nothing can qualify
    rmax = <int64_t>(max_dist / cell) + 2
    if rmax > nx + ny + nz:
        rmax = nx + ny + nz
    for i in range(query.shape[0]):
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
        # the cell of p's projection onto the grid box: every point of a cell at Chebyshev
        # distance > r from it is farther than r * cell from p (projection onto a convex box)
        q = floor((p[0] - origin[0]) / cell)
        cx = _clamp(<int64_t>q if q > -1e18 and q < 1e18 else 0, 0, nx - 1)
        q = floor((p[1] - origin[1]) / cell)
        cy = _clamp(<int64_t>q if q > -1e18 and q < 1e18 else 0, 0, ny - 1)
        q = floor((p[2] - origin[2]) / cell)
        cz = _clamp(<int64_t>q if q > -1e18 and q < 1e18 else 0, 0, nz - 1)
        home[0] = cx
        home[1] = cy
        home[2] = cz
        best = -1
        best_d2 = lim2
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
                        c = (z * ny + y) * nx + x
                        # most cells near a face are empty: skip them before anything else;
                        # a cell (or a triangle) whose box is farther than the best so far
                        # cannot hold a nearer point; equal distances still count for ties
                        if cell_start[c] == cell_start[c + 1] or _box_d2(p, origin[0] + x * cell, origin[1] + y * cell, origin[2] + z * cell,
                                   origin[0] + (x + 1) * cell, origin[1] + (y + 1) * cell,
                                   origin[2] + (z + 1) * cell) > best_d2:
                            x += 1
                            continue
                        for k in range(cell_start[c], cell_start[c + 1]):
                            t = cell_items[k]
                            if _box_d2(p, tri_lo[t, 0], tri_lo[t, 1], tri_lo[t, 2],
                                       tri_hi[t, 0], tri_hi[t, 1], tri_hi[t, 2]) > best_d2:
                                continue
                            # corners packed per triangle (corners[t] = a, b, c) for locality
                            d2 = closest_on_triangle(p, &corners[t, 0], &corners[t, 3], &corners[t, 6], bary)
                            if d2 < best_d2 or (d2 == best_d2 and best >= 0 and t < best):
                                best_d2 = d2
                                best = t
                                bb[0] = bary[0]
                                bb[1] = bary[1]
                                bb[2] = bary[2]
                        x += 1
            # everything unsearched lies beyond the walls of the searched box (walls on the
            # grid's edge have nothing beyond them); stop once the best is nearer than all
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
            # best_d2 starts at max_dist^2, so this also ends a search that found nothing
            if wall >= 1e300 or (wall >= 0.0 and best_d2 <= wall * wall):
                break
            r += 1
        if best >= 0:
            out_tri[i] = best
            out_bary[i, 0] = bb[0]
            out_bary[i, 1] = bb[1]
            out_bary[i, 2] = bb[2]
            out_dist[i] = sqrt(best_d2)


def closest_points(const double[:, ::1] corners,
                   const double[:, ::1] tri_lo, const double[:, ::1] tri_hi,
                   const double[:, ::1] query,
                   const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                   const double[::1] origin, double cell, const int64_t[::1] dims,
                   double max_dist,
                   int64_t[::1] out_tri, double[:, ::1] out_bary, double[::1] out_dist):
    with nogil:
        _closest(corners, tri_lo, tri_hi, query, cell_start, cell_items, origin, cell, dims, max_dist,
                 out_tri, out_bary, out_dist)
