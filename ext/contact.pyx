# distutils: extra_compile_args = -ffp-contract=off
# Chart contacts: how a segment (or a point) meets a triangle, decided exactly or not at all.
# Inputs are C-contiguous and already validated by coverage.contact.
# Every turn is the floating-point determinant with the error bound of Shewchuk's first
# filter (stage A of orient2d), with the NumPy twin's arithmetic: no fused multiply-add
# (-ffp-contract=off above).
from libc.stdint cimport int64_t, int8_t
from libc.math cimport fabs

# Shewchuk's epsilon (half an ulp of 1) and the stage-A error bound of orient2d
cdef double _EPSILON = 1.1102230246251565e-16
cdef double _BOUND = (3.0 + 16.0 * _EPSILON) * _EPSILON
# coordinates beyond this (or NaN) leave a pair undecided: no product can overflow
cdef double _LARGEST = 1e150

cdef enum:
    DISJOINT = 0
    BOUNDARY = 1
    INTERIOR = 2
    UNDECIDED = 3


cdef inline int _sign(double x) noexcept nogil:
    return (x > 0.0) - (x < 0.0)


cdef inline int _turn(double ax, double ay, double bx, double by, double cx, double cy) noexcept nogil:
    """Sign of the turn a -> b -> c (+1 counter-clockwise, -1 clockwise, 0 collinear), exact;
    2 where the determinant's rounding could hide it (or a product underflowed to 0)."""
    cdef double l1 = ax - cx, l2 = by - cy, r1 = ay - cy, r2 = bx - cx
    cdef double left = l1 * l2, right = r1 * r2
    cdef double det = left - right, total
    # a difference of doubles is 0 only when they are equal, so a product is 0 only when a
    # factor is, unless it underflowed
    if (left == 0.0 and l1 != 0.0 and l2 != 0.0) or (right == 0.0 and r1 != 0.0 and r2 != 0.0):
        return 2
    if left > 0.0:
        if right <= 0.0:
            return _sign(det)
        total = left + right
    elif left < 0.0:
        if right >= 0.0:
            return _sign(det)
        total = -left - right
    else:
        return _sign(det)
    if det >= _BOUND * total or -det >= _BOUND * total:
        return _sign(det)
    return 2


cdef inline bint _ordinary(const double* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if not (fabs(x[i]) < _LARGEST):
            return False
    return True


cdef int8_t _contact(const double* t, const double* s) noexcept nogil:
    """How segment s = (px, py, qx, qy) meets triangle t = (ax, ay, bx, by, cx, cy): DISJOINT,
    BOUNDARY (it meets the closed triangle, not its interior), INTERIOR, or UNDECIDED."""
    cdef double ax, ay, bx, by, cx, cy, px = s[0], py = s[1], qx = s[2], qy = s[3]
    cdef int o, e0p, e0q, e1p, e1q, e2p, e2q, ta, tb, tc
    if not (_ordinary(t, 6) and _ordinary(s, 4)):
        return UNDECIDED
    o = _turn(t[0], t[1], t[2], t[3], t[4], t[5])
    if o == 0 or o == 2:   # no area (or not known to have one)
        return UNDECIDED
    # counter-clockwise: the interior is on the left of every edge
    ax = t[0]; ay = t[1]
    if o > 0:
        bx = t[2]; by = t[3]; cx = t[4]; cy = t[5]
    else:
        bx = t[4]; by = t[5]; cx = t[2]; cy = t[3]
    e0p = _turn(ax, ay, bx, by, px, py)
    e1p = _turn(bx, by, cx, cy, px, py)
    e2p = _turn(cx, cy, ax, ay, px, py)
    if px == qx and py == qy:   # a point
        if e0p == 2 or e1p == 2 or e2p == 2:
            return UNDECIDED
        if e0p < 0 or e1p < 0 or e2p < 0:
            return DISJOINT
        if e0p > 0 and e1p > 0 and e2p > 0:
            return INTERIOR
        return BOUNDARY
    e0q = _turn(ax, ay, bx, by, qx, qy)
    e1q = _turn(bx, by, cx, cy, qx, qy)
    e2q = _turn(cx, cy, ax, ay, qx, qy)
    ta = _turn(px, py, qx, qy, ax, ay)
    tb = _turn(px, py, qx, qy, bx, by)
    tc = _turn(px, py, qx, qy, cx, cy)
    if (e0p == 2 or e1p == 2 or e2p == 2 or e0q == 2 or e1q == 2 or e2q == 2
            or ta == 2 or tb == 2 or tc == 2):
        return UNDECIDED
    # apart: both ends strictly outside one edge's line, or the corners strictly on one
    # side of the segment's line
    if ((e0p < 0 and e0q < 0) or (e1p < 0 and e1q < 0) or (e2p < 0 and e2q < 0)
            or (ta > 0 and tb > 0 and tc > 0) or (ta < 0 and tb < 0 and tc < 0)):
        return DISJOINT
    # clear of the open interior: the same with "on the line" allowed
    if ((e0p <= 0 and e0q <= 0) or (e1p <= 0 and e1q <= 0) or (e2p <= 0 and e2q <= 0)
            or (ta >= 0 and tb >= 0 and tc >= 0) or (ta <= 0 and tb <= 0 and tc <= 0)):
        return BOUNDARY
    return INTERIOR


def contacts(const double[:, ::1] corners, const double[:, ::1] segments, const int64_t[::1] tri,
             const int64_t[::1] seg, int8_t[::1] out):
    """``out[k]``: how segment ``seg[k]`` meets triangle ``tri[k]`` (see _contact)."""
    cdef Py_ssize_t k, n = tri.shape[0]
    if n == 0:
        return
    cdef const double* t = &corners[0, 0]
    cdef const double* s = &segments[0, 0]
    with nogil:
        for k in range(n):
            out[k] = _contact(t + 6 * tri[k], s + 4 * seg[k])
