# Density kernels: texel accumulation, variable-size window sums, distinct-channel merging.
# Inputs are C-contiguous and already validated by coverage.density.
from libc.math cimport floor, sqrt
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport malloc, free


cdef void _splat(const double[:, ::1] uv, const double[::1] weight, double u0, double v0,
                 double cell, double[:, ::1] grid, int64_t* dropped) noexcept nogil:
    cdef Py_ssize_t i, h = grid.shape[0], w = grid.shape[1]
    cdef double fx, fy
    cdef int64_t ix, iy
    dropped[0] = 0
    for i in range(uv.shape[0]):
        # divided, not multiplied by 1 / cell: a point on a texel line goes where the
        # correctly rounded quotient (and the NumPy reference) puts it
        fx = (uv[i, 0] - u0) / cell
        fy = (uv[i, 1] - v0) / cell
        if not (fx >= 0.0 and fy >= 0.0 and fx < w and fy < h):
            dropped[0] += 1
            continue
        ix = <int64_t>fx
        iy = <int64_t>fy
        grid[iy, ix] += weight[i]


def splat(const double[:, ::1] uv, const double[::1] weight, double u0, double v0, double cell,
          double[:, ::1] grid):
    """Add weight[i] to the texel holding uv[i]; returns how many points fell outside."""
    cdef int64_t dropped = 0
    with nogil:
        _splat(uv, weight, u0, v0, cell, grid, &dropped)
    return dropped


cdef void _window_sums(const double[:, ::1] values, const int64_t[:, ::1] half_u,
                       const int64_t[:, ::1] half_v, const uint8_t[:, ::1] mask,
                       double[:, ::1] sat, double[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t h = values.shape[0], w = values.shape[1], i, j
    cdef int64_t i0, i1, j0, j1
    cdef double row
    # summed-area table with a zero first row and column
    for j in range(w + 1):
        sat[0, j] = 0.0
    for i in range(h):
        sat[i + 1, 0] = 0.0
        row = 0.0
        for j in range(w):
            row += values[i, j]
            sat[i + 1, j + 1] = sat[i, j + 1] + row
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                out[i, j] = 0.0
                continue
            i0 = i - half_v[i, j]
            i1 = i + half_v[i, j] + 1
            j0 = j - half_u[i, j]
            j1 = j + half_u[i, j] + 1
            if i0 < 0:
                i0 = 0
            if j0 < 0:
                j0 = 0
            if i1 > h:
                i1 = h
            if j1 > w:
                j1 = w
            out[i, j] = sat[i1, j1] - sat[i0, j1] - sat[i1, j0] + sat[i0, j0]


def window_sums(const double[:, ::1] values, const int64_t[:, ::1] half_u,
                const int64_t[:, ::1] half_v, const uint8_t[:, ::1] mask,
                double[:, ::1] sat, double[:, ::1] out):
    """out[i, j] = sum of values over rows i±half_v[i, j], columns j±half_u[i, j] (clipped)."""
    with nogil:
        _window_sums(values, half_u, half_v, mask, sat, out)


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
