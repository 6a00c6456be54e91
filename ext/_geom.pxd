# Inline geometry shared by the kernels. No validation here: the Python wrappers own that.
from libc.math cimport sqrt, floor, fabs


cdef inline double dot3(double ax, double ay, double az,
                        double bx, double by, double bz) noexcept nogil:
    return ax * bx + ay * by + az * bz


cdef inline double closest_on_triangle(const double* p, const double* a, const double* b,
                                       const double* c, double* bary) noexcept nogil:
    """Squared distance from p to triangle abc; barycentrics of the closest point into bary.

    Voronoi-region walk of Ericson, Real-Time Collision Detection, 5.1.5.
    """
    cdef double abx = b[0] - a[0], aby = b[1] - a[1], abz = b[2] - a[2]
    cdef double acx = c[0] - a[0], acy = c[1] - a[1], acz = c[2] - a[2]
    cdef double apx = p[0] - a[0], apy = p[1] - a[1], apz = p[2] - a[2]
    cdef double d1 = dot3(abx, aby, abz, apx, apy, apz)
    cdef double d2 = dot3(acx, acy, acz, apx, apy, apz)
    cdef double bpx, bpy, bpz, cpx, cpy, cpz, d3, d4, d5, d6, va, vb, vc, v, w, den
    cdef double qx, qy, qz
    if d1 <= 0.0 and d2 <= 0.0:
        bary[0] = 1.0; bary[1] = 0.0; bary[2] = 0.0
    else:
        bpx = p[0] - b[0]; bpy = p[1] - b[1]; bpz = p[2] - b[2]
        d3 = dot3(abx, aby, abz, bpx, bpy, bpz)
        d4 = dot3(acx, acy, acz, bpx, bpy, bpz)
        if d3 >= 0.0 and d4 <= d3:
            bary[0] = 0.0; bary[1] = 1.0; bary[2] = 0.0
        else:
            vc = d1 * d4 - d3 * d2
            if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
                v = d1 / (d1 - d3)
                bary[0] = 1.0 - v; bary[1] = v; bary[2] = 0.0
            else:
                cpx = p[0] - c[0]; cpy = p[1] - c[1]; cpz = p[2] - c[2]
                d5 = dot3(abx, aby, abz, cpx, cpy, cpz)
                d6 = dot3(acx, acy, acz, cpx, cpy, cpz)
                if d6 >= 0.0 and d5 <= d6:
                    bary[0] = 0.0; bary[1] = 0.0; bary[2] = 1.0
                else:
                    vb = d5 * d2 - d1 * d6
                    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
                        w = d2 / (d2 - d6)
                        bary[0] = 1.0 - w; bary[1] = 0.0; bary[2] = w
                    else:
                        va = d3 * d6 - d5 * d4
                        if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
                            w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
                            bary[0] = 0.0; bary[1] = 1.0 - w; bary[2] = w
                        else:
                            den = va + vb + vc
                            if den == 0.0:
                                # degenerate (zero-area) triangle: fall back to vertex a
                                bary[0] = 1.0; bary[1] = 0.0; bary[2] = 0.0
                            else:
                                v = vb / den
                                w = vc / den
                                bary[0] = 1.0 - v - w; bary[1] = v; bary[2] = w
    qx = bary[0] * a[0] + bary[1] * b[0] + bary[2] * c[0] - p[0]
    qy = bary[0] * a[1] + bary[1] * b[1] + bary[2] * c[1] - p[1]
    qz = bary[0] * a[2] + bary[1] * b[2] + bary[2] * c[2] - p[2]
    return qx * qx + qy * qy + qz * qz
