# Pen cartridge stamps: every needle of a flat cartridge pressed perpendicular to the skin.
# Inputs are C-contiguous and already validated by coverage.simulate.
from libc.math cimport cos, sin, sqrt, floor, INFINITY
from libc.stdint cimport int64_t
from _locate cimport _locate_one


cdef inline void _corner_sum(const double[:, ::1] frames, const int64_t[:, ::1] faces, int64_t t,
                             const double* b, int64_t col, double* out) noexcept nogil:
    """Barycentric sum of frames[:, col:col + 3] over the corners of triangle t."""
    cdef int64_t a0 = faces[t, 0], a1 = faces[t, 1], a2 = faces[t, 2]
    cdef Py_ssize_t j
    for j in range(3):
        out[j] = b[0] * frames[a0, col + j] + b[1] * frames[a1, col + j] + b[2] * frames[a2, col + j]


cdef inline void _no_contact(double[:, ::1] out_points, double[::1] out_depth, double[::1] out_gap,
                             Py_ssize_t r, double nan) noexcept nogil:
    """Row r has no skin under it: NaN point, depth and gap (its uv is set by the caller)."""
    out_points[r, 0] = nan
    out_points[r, 1] = nan
    out_points[r, 2] = nan
    out_depth[r] = nan
    out_gap[r] = nan


cdef inline bint _tangent_frame(const double[:, ::1] jacobian, int64_t t, const double* n,
                                double* e1, double* e2, double* m) noexcept nogil:
    """Skin axes e1, e2 at a stamp and m = pinv(J_t) [e1 e2] (row-major 2x2).

    e1 is the chart u axis on the skin, made normal to n; e2 = n x e1. False if J_t is
    singular (a zero-area surface triangle) or u is parallel to n: the frame is undefined.
    jacobian[t] = J_t row-major, (dx/du, dx/dv, dy/du, dy/dv, dz/du, dz/dv).
    """
    cdef double ju[3]
    cdef double jv[3]
    cdef double s, g00, g01, g11, det, a00, a01, a10, a11
    cdef Py_ssize_t j
    for j in range(3):
        ju[j] = jacobian[t, 2 * j]
        jv[j] = jacobian[t, 2 * j + 1]
    s = ju[0] * n[0] + ju[1] * n[1] + ju[2] * n[2]
    for j in range(3):
        e1[j] = ju[j] - s * n[j]
    s = sqrt(e1[0] * e1[0] + e1[1] * e1[1] + e1[2] * e1[2])
    g00 = ju[0] * ju[0] + ju[1] * ju[1] + ju[2] * ju[2]
    g01 = ju[0] * jv[0] + ju[1] * jv[1] + ju[2] * jv[2]
    g11 = jv[0] * jv[0] + jv[1] * jv[1] + jv[2] * jv[2]
    det = g00 * g11 - g01 * g01
    if not (s > 0.0 and det > 0.0):
        return False
    for j in range(3):
        e1[j] /= s
    e2[0] = n[1] * e1[2] - n[2] * e1[1]
    e2[1] = n[2] * e1[0] - n[0] * e1[2]
    e2[2] = n[0] * e1[1] - n[1] * e1[0]
    # pinv(J) = G^-1 J^T for J of full column rank, G = J^T J; A = J^T [e1 e2]
    a00 = ju[0] * e1[0] + ju[1] * e1[1] + ju[2] * e1[2]
    a01 = ju[0] * e2[0] + ju[1] * e2[1] + ju[2] * e2[2]
    a10 = jv[0] * e1[0] + jv[1] * e1[1] + jv[2] * e1[2]
    a11 = jv[0] * e2[0] + jv[1] * e2[1] + jv[2] * e2[2]
    m[0] = (g11 * a00 - g01 * a10) / det
    m[1] = (g11 * a01 - g01 * a11) / det
    m[2] = (g00 * a10 - g01 * a00) / det
    m[3] = (g00 * a11 - g01 * a01) / det
    return True


cdef struct Frame:
    # a stamp pressed on the skin: the skin point c under its centre, the unit normal n, the
    # skin axes e1, e2, m = pinv(J_t) [e1 e2] (see _tangent_frame) and its rotation's cosine
    # and sine
    double c[3]
    double n[3]
    double e1[3]
    double e2[3]
    double m[4]
    double ca
    double sa


cdef inline bint _stamp_frame(const double[:, ::1] affine, const int64_t[:, ::1] faces,
                              const double[:, ::1] frames, const double[:, ::1] jacobian, double cu, double cv,
                              double angle, const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                              double u0, double v0, double inv, int64_t nu, int64_t nv, double eps,
                              Frame* f) noexcept nogil:
    """The frame of a stamp centred at chart point (cu, cv), turned by angle; False where the
    centre is off the chart or the frame is undefined."""
    cdef double b[3]
    cdef double s
    cdef Py_ssize_t j
    cdef int64_t t = _locate_one(affine, cu, cv, cell_start, cell_items, u0, v0, inv, nu, nv, eps, b)
    f.ca = cos(angle)
    f.sa = sin(angle)
    if t < 0:
        return False
    _corner_sum(frames, faces, t, b, 0, f.c)
    _corner_sum(frames, faces, t, b, 3, f.n)
    s = f.n[0] * f.n[0] + f.n[1] * f.n[1] + f.n[2] * f.n[2]
    if s > 0.0:
        s = 1.0 / sqrt(s)
        for j in range(3):
            f.n[j] *= s
    return _tangent_frame(jacobian, t, f.n, f.e1, f.e2, f.m)


cdef inline bint _needle(const double[:, ::1] affine, const int64_t[:, ::1] faces, const double[:, ::1] frames,
                         const Frame* f, double cu, double cv, double lx, double ly,
                         const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                         double u0, double v0, double inv, int64_t nu, int64_t nv, double eps,
                         double* uv, double* p, double* gap) noexcept nogil:
    """The needle at (lx, ly) of the layout of a stamp centred at (cu, cv) with frame f: its
    chart point uv, the skin point p there and the gap from the flat cartridge to the skin
    along n; False (p and gap unset) where uv is off the chart."""
    cdef double b[3]
    cdef double o1 = f.ca * lx - f.sa * ly
    cdef double o2 = f.sa * lx + f.ca * ly
    cdef double g = 0.0
    cdef int64_t t
    cdef Py_ssize_t k
    uv[0] = cu + (f.m[0] * o1 + f.m[1] * o2)
    uv[1] = cv + (f.m[2] * o1 + f.m[3] * o2)
    t = _locate_one(affine, uv[0], uv[1], cell_start, cell_items, u0, v0, inv, nu, nv, eps, b)
    if t < 0:
        return False
    _corner_sum(frames, faces, t, b, 0, p)
    for k in range(3):
        g += (f.c[k] + o1 * f.e1[k] + o2 * f.e2[k] - p[k]) * f.n[k]
    gap[0] = g
    return True


def stamp(const double[:, ::1] affine, const int64_t[:, ::1] faces, const double[:, ::1] frames,
          const double[:, ::1] jacobian, const double[:, ::1] centres, const double[::1] angles,
          const double[::1] depth, const double[:, ::1] layout, const int64_t[::1] order,
          const int64_t[::1] cell_start, const int64_t[::1] cell_items,
          double u0, double v0, double cell, int64_t nu, int64_t nv, double eps, double gap_tolerance,
          double[:, ::1] out_uv, double[:, ::1] out_points, double[::1] out_depth,
          int64_t[::1] out_stamp, int64_t[::1] out_needle, unsigned char[::1] out_fired,
          double[::1] out_gap):
    """Every needle of every stamp, stamp-major (row i * N + j is needle j of stamp i).

    frames[v] = (x, y, z, nx, ny, nz) as in lift. Stamps are visited in ``order`` (a
    permutation of their indices); the rows they fill do not depend on it. Rows whose chart
    point is undefined (the stamp centre off the chart) are NaN; rows whose needle is off the
    chart keep their uv.
    """
    cdef Py_ssize_t q, i, j, r, n_needles = layout.shape[0]
    cdef double inv = 1.0 / cell
    cdef double nan = float("nan")
    cdef double uv[2]
    cdef double p[3]
    cdef double gap
    cdef Frame f
    cdef bint ok, ok_needle
    with nogil:
        for q in range(order.shape[0]):
            i = order[q]
            ok = _stamp_frame(affine, faces, frames, jacobian, centres[i, 0], centres[i, 1], angles[i],
                              cell_start, cell_items, u0, v0, inv, nu, nv, eps, &f)
            for j in range(n_needles):
                r = i * n_needles + j
                out_stamp[r] = i
                out_needle[r] = j
                out_fired[r] = 0
                if not ok:
                    out_uv[r, 0] = nan
                    out_uv[r, 1] = nan
                    _no_contact(out_points, out_depth, out_gap, r, nan)
                    continue
                ok_needle = _needle(affine, faces, frames, &f, centres[i, 0], centres[i, 1], layout[j, 0],
                                    layout[j, 1], cell_start, cell_items, u0, v0, inv, nu, nv, eps, uv, p, &gap)
                out_uv[r, 0] = uv[0]
                out_uv[r, 1] = uv[1]
                if not ok_needle:
                    _no_contact(out_points, out_depth, out_gap, r, nan)
                    continue
                out_points[r, 0] = p[0]
                out_points[r, 1] = p[1]
                out_points[r, 2] = p[2]
                out_gap[r] = gap
                out_depth[r] = depth[i] - gap if gap > 0.0 else depth[i]
                out_fired[r] = gap <= gap_tolerance * depth[i]


def stamp_fired(const double[:, ::1] affine, const int64_t[:, ::1] faces, const double[:, ::1] frames,
                const double[:, ::1] jacobian, const double[:, ::1] centres, const double[::1] angles,
                const double[::1] depth, const double[:, ::1] layout, const int64_t[::1] order,
                const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                double u0, double v0, double cell, int64_t nu, int64_t nv, double eps, double gap_tolerance,
                int64_t[::1] out_fired, int64_t enough=-1):
    """How many needles of each stamp fire: out_fired[i] = the count of rows of stamp i that
    ``stamp`` marks fired, computed as it computes them, without writing the rows (a dose
    field asks this of a stamp on every texel and needs nothing else).

    enough >= 0: only whether a stamp fires that many matters, and out_fired[i] =
    min(count, enough) when the count reaches it; a stamp's needles are weighed only until
    it does, or until the needles left cannot make it up (out_fired[i] < enough then)."""
    cdef Py_ssize_t q, i, j, n_needles = layout.shape[0]
    cdef int64_t count
    cdef double inv = 1.0 / cell
    cdef double uv[2]
    cdef double p[3]
    cdef double gap
    cdef Frame f
    with nogil:
        for q in range(order.shape[0]):
            i = order[q]
            out_fired[i] = 0
            if not _stamp_frame(affine, faces, frames, jacobian, centres[i, 0], centres[i, 1], angles[i],
                                cell_start, cell_items, u0, v0, inv, nu, nv, eps, &f):
                continue
            count = 0
            for j in range(n_needles):
                if enough >= 0 and (count >= enough or count + (n_needles - j) < enough):
                    break
                if not _needle(affine, faces, frames, &f, centres[i, 0], centres[i, 1], layout[j, 0], layout[j, 1],
                               cell_start, cell_items, u0, v0, inv, nu, nv, eps, uv, p, &gap):
                    continue
                if gap <= gap_tolerance * depth[i]:
                    count += 1
            out_fired[i] = count


# --- nearest path sample within a reach (the pen's Voronoi split of a zone's stamp field) ----

def nearest_within(const double[:, ::1] samples, const double[:, ::1] points, double u0, double v0, double cell,
                   int64_t nu, int64_t nv, const int64_t[::1] cell_start, const int64_t[::1] cell_items,
                   double reach, int64_t rings, int64_t[::1] out_nearest, double[::1] out_dist,
                   unsigned char[::1] out_tie):
    """For each point, the sample with the smallest squared distance dx * dx + dy * dy among
    those in the cells up to ``rings`` around its own (cells of side >= reach / rings,
    samples binned as cell_start/cell_items: every sample within reach of the point is
    there), ring by ring outwards until the nearest found is closer than any cell of the
    next ring can be; and sqrt of it: out_nearest = -1 and out_dist = inf where none lies
    within reach; out_tie = 1 where another sample has the same squared distance (or the
    point is not finite): the caller asks those of an exact search."""
    cdef Py_ssize_t q, k, a
    cdef int64_t cx, cy, x, y, best_i, c, r, step
    cdef double px, py, dx, dy, d2, best, fx, fy, bound
    cdef unsigned char tie
    with nogil:
        for q in range(points.shape[0]):
            px = points[q, 0]
            py = points[q, 1]
            best = INFINITY
            best_i = -1
            tie = 0
            fx = (px - u0) / cell
            fy = (py - v0) / cell
            if not (fx == fx and fy == fy and fx > -1e15 and fx < 1e15 and fy > -1e15 and fy < 1e15):
                out_nearest[q] = -1
                out_dist[q] = INFINITY
                out_tie[q] = 1
                continue
            cx = <int64_t>floor(fx)
            cy = <int64_t>floor(fy)
            for r in range(rings + 1):
                # ring r: the cells at Chebyshev distance r from the point's own
                for y in range(cy - r, cy + r + 1):
                    if y < 0 or y >= nv:
                        continue
                    step = 1 if (y == cy - r or y == cy + r) else 2 * r
                    if step == 0:
                        step = 1
                    x = cx - r
                    while x <= cx + r:
                        if x >= 0 and x < nu:
                            c = y * nu + x
                            for k in range(cell_start[c], cell_start[c + 1]):
                                a = cell_items[k]
                                dx = px - samples[a, 0]
                                dy = py - samples[a, 1]
                                d2 = dx * dx + dy * dy
                                if d2 < best:
                                    best = d2
                                    best_i = a
                                    tie = 0
                                elif d2 == best:
                                    tie = 1
                        x += step
                # every cell of ring r + 1 lies at least r cells away
                bound = r * cell
                if best < bound * bound * (1.0 - 1e-9):
                    break
            if best_i >= 0 and sqrt(best) <= reach:
                out_nearest[q] = best_i
                out_dist[q] = sqrt(best)
                out_tie[q] = tie
            else:
                out_nearest[q] = -1
                out_dist[q] = INFINITY
                out_tie[q] = 0


cdef inline double _np_min(double a, double b) noexcept nogil:
    # numpy.minimum of two floats: a where a < b or a is NaN, else b
    return a if (a < b or a != a) else b


cdef inline double _np_max(double a, double b) noexcept nogil:
    # numpy.maximum of two floats: a where a > b or a is NaN, else b
    return a if (a > b or a != a) else b


cdef inline Py_ssize_t _count_below(const double[::1] s, double x, bint inclusive) noexcept nogil:
    # numpy.searchsorted(s, x, side="right" if inclusive else "left") of sorted finite s
    cdef Py_ssize_t lo = 0, hi = s.shape[0], mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if s[mid] < x or (inclusive and s[mid] == x):
            lo = mid + 1
        else:
            hi = mid
    return lo


def speed_profile(const double[::1] skin_s, const double[::1] stamp_skin, double speed, double hz_max,
                  double speed_min, double[::1] out) -> int:
    """The pen's glide speed over each segment of a path (coverage.plan.pen_speed_profile,
    its NumPy twin, for sorted finite stamp positions and finite samples): segment k, from
    skin_s[k] to skin_s[k + 1], spans the stamp intervals lo..hi (lo the last stamp at or
    before its start, hi the last before its end); where it spans one, its speed is the
    least of speed and hz_max x every spanned interval's length, then at least speed_min
    (numpy.minimum and numpy.maximum, in the twin's order). Returns 1, writing nothing, where
    a sample or a stamp position is not finite or the stamps are out of order (the twin
    answers those), else 0."""
    cdef Py_ssize_t n = skin_s.shape[0] - 1, m = stamp_skin.shape[0], k, j, lo, hi, last = m - 2
    cdef double lim, fastest
    cdef int refused = 0
    with nogil:
        for k in range(n + 1):
            if not (skin_s[k] - skin_s[k] == 0.0):      # NaN or inf
                refused = 1
                break
        for k in range(m):
            if refused:
                break
            if not (stamp_skin[k] - stamp_skin[k] == 0.0) or (k > 0 and not (stamp_skin[k] >= stamp_skin[k - 1])):
                refused = 1
        for k in range(n):
            if refused:
                break
            lim = speed
            if m > 1:
                lo = _count_below(stamp_skin, skin_s[k], True) - 1
                hi = _count_below(stamp_skin, skin_s[k + 1], False) - 1
                if hi >= 0 and lo <= last and hi >= lo:
                    if lo < 0:
                        lo = 0
                    if hi > last:
                        hi = last
                    fastest = hz_max * (stamp_skin[lo + 1] - stamp_skin[lo])
                    for j in range(lo + 1, hi + 1):
                        fastest = _np_min(fastest, hz_max * (stamp_skin[j + 1] - stamp_skin[j]))
                    lim = _np_min(lim, fastest)
            out[k] = _np_max(lim, speed_min)
    return refused


# --- the pen paths' treatment order (plan._order_pen_items) ------------------------------

def greedy_order(const double[:, :, ::1] ends, const int64_t[::1] zone, const int64_t[::1] group_start,
                 double px, double py, double pz, bint has_position, int64_t[::1] out_order,
                 unsigned char[::1] out_flip, unsigned char[::1] todo):
    """Paths in treatment order, group by group (group g: rows group_start[g] to
    group_start[g + 1]): while a group has paths left, the pool is those of the zone last
    treated in the group, if any are left, else all its paths left; with no position yet, the pool's
    first path as it runs; else the path end nearest the position (the distance
    sqrt((dx * dx + dy * dy) + dz * dz) as numpy.linalg.norm takes it, ties to the lower
    (path, end), first end before last), run from that end (out_flip = 1 where it is its
    last); the position moves to the path's other end and the zone to its zone. ends: (n, 2,
    3) each path's first and last point, all finite; todo: n bytes, all 1 (left all 0)."""
    cdef Py_ssize_t g, k, i, e, best_i, best_e, a, b, n_out = 0
    cdef int64_t cur = -1
    cdef bint same_left
    cdef double dx, dy, dz, d, best
    with nogil:
        for g in range(group_start.shape[0] - 1):
            a = group_start[g]
            b = group_start[g + 1]
            cur = -1               # each group starts with no zone (the position carries on)
            for k in range(a, b):
                # the pool: the last zone's paths left in the group, if any
                same_left = False
                if cur >= 0:
                    for i in range(a, b):
                        if todo[i] and zone[i] == cur:
                            same_left = True
                            break
                best_i = -1
                best_e = 0
                best = INFINITY
                for i in range(a, b):
                    if not todo[i] or (same_left and zone[i] != cur):
                        continue
                    if not has_position:
                        best_i = i
                        break
                    for e in range(2):
                        dx = ends[i, e, 0] - px
                        dy = ends[i, e, 1] - py
                        dz = ends[i, e, 2] - pz
                        d = sqrt((dx * dx + dy * dy) + dz * dz)
                        if best_i < 0 or d < best:
                            best = d
                            best_i = i
                            best_e = e
                todo[best_i] = 0
                out_order[n_out] = best_i
                out_flip[n_out] = best_e
                n_out += 1
                px = ends[best_i, 1 - best_e, 0]
                py = ends[best_i, 1 - best_e, 1]
                pz = ends[best_i, 1 - best_e, 2]
                has_position = True
                cur = zone[best_i]
