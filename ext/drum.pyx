# Roller puncture simulation: every needle of a rigid drum rolling without slip along runs.
# Inputs are C-contiguous and already validated by coverage.simulate.
from libc.stdint cimport int64_t


cdef inline double _lerp(double s0, double s1, double f0, double f1, double x) noexcept nogil:
    # the same arithmetic as numpy.interp: slope * (x - s0) + f0
    if s1 == s0:
        return f0
    return (f1 - f0) / (s1 - s0) * (x - s0) + f0


def roll(const double[::1] s, const double[:, ::1] uv, const double[:, ::1] across,
         const double[::1] kappa, const int64_t[::1] start, const double[::1] phase,
         const double[::1] ring_x, const double[::1] ring_phase, const int64_t[::1] ring_order,
         double pitch, double needle_length, double max_gap, double half_width,
         double[:, ::1] out_uv, double[::1] out_depth, int64_t[::1] out_run,
         int64_t[::1] out_ring, double[::1] out_s):
    """Needle punctures of every run, in firing order; returns how many were written.

    Run m covers samples start[m]:start[m+1] with arc lengths s (0 at its first sample).
    Ring r's needles touch down at s = phase[m] + pitch * (k + ring_phase[r]), k = 0, 1, ...
    A needle's point is the path point plus ring_x[r] mm along ``across`` (chart vector per
    skin mm); its gap follows the cross curvature (convex: k x^2 / 2, concave:
    |k| (half_width^2 - x^2) / 2) and it punctures if the gap is at most max_gap.
    ``ring_order`` lists the rings by ring_phase, so events come out in firing order.
    """
    cdef Py_ssize_t m, j, i, count = 0, n_rings = ring_x.shape[0], capacity = out_depth.shape[0]
    cdef int64_t a, b, r, k
    cdef double se, s_end, x, kap, gap, f
    cdef bint full = False
    with nogil:
        for m in range(start.shape[0] - 1):
            a = start[m]
            b = start[m + 1]
            if b - a < 2:
                continue
            s_end = s[b - 1]
            i = a
            k = 0
            while phase[m] + pitch * k <= s_end:
                for j in range(n_rings):
                    r = ring_order[j]
                    se = phase[m] + pitch * (k + ring_phase[r])
                    if se > s_end:
                        continue
                    while i < b - 2 and s[i + 1] < se:
                        i += 1
                    x = ring_x[r]
                    kap = _lerp(s[i], s[i + 1], kappa[i], kappa[i + 1], se)
                    if kap >= 0.0:
                        gap = kap * x * x / 2.0
                    else:
                        gap = -kap * (half_width * half_width - x * x) / 2.0
                    if gap > max_gap:
                        continue
                    if count >= capacity:   # never write past the outputs (the caller sized them)
                        full = True
                        break
                    out_uv[count, 0] = _lerp(s[i], s[i + 1], uv[i, 0], uv[i + 1, 0], se) \
                        + x * _lerp(s[i], s[i + 1], across[i, 0], across[i + 1, 0], se)
                    out_uv[count, 1] = _lerp(s[i], s[i + 1], uv[i, 1], uv[i + 1, 1], se) \
                        + x * _lerp(s[i], s[i + 1], across[i, 1], across[i + 1, 1], se)
                    out_depth[count] = needle_length - gap
                    out_run[count] = m
                    out_ring[count] = r
                    out_s[count] = se
                    count += 1
                if full:
                    break
                k += 1
            if full:
                break
    if full:
        raise RuntimeError("roll: more punctures than the outputs hold; size them with simulate._event_count")
    return count


def central_rings(const double[::1] kappa, const double[::1] x2, const double[::1] hx, double limit,
                  bint odd, int64_t[::1] out):
    """Rings in the contiguous reaching band around the drum's centre, per cross curvature:
    roller.Drum.central_rings with NumPy's arithmetic per element. ``x2`` the squared offsets
    of the middle ring (odd drums) and the outward half, ``hx`` = half2 - x2 (as NumPy
    computes both); a ring reaches where its gap (k >= 0: k * x2 / 2, else -k * hx / 2) is
    at most ``limit``. Even drums: twice the outward rings reaching in a row; odd: that plus
    one if the middle ring reaches, else 0."""
    cdef Py_ssize_t i, j, m = x2.shape[0], j0 = 1 if odd else 0
    cdef double k, gap
    cdef int64_t count
    with nogil:
        for i in range(kappa.shape[0]):
            k = kappa[i]
            count = 0
            for j in range(j0, m):
                if k >= 0:
                    gap = k * x2[j] / 2.0
                else:
                    gap = -k * hx[j] / 2.0
                if not (gap <= limit):
                    break
                count += 1
            if odd:
                if k >= 0:
                    gap = k * x2[0] / 2.0
                else:
                    gap = -k * hx[0] / 2.0
                out[i] = 2 * count + 1 if gap <= limit else 0
            else:
                out[i] = 2 * count
