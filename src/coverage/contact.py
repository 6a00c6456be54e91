"""Contacts in the chart: how a segment (or a point) meets a triangle, decided exactly.

A region's cut (:mod:`coverage.regions`) asks shapely's general predicates only of the chart
triangles its boundary runs through. Most boundary triangles are merely touched by it (an
exclusion's outline runs along mesh edges and through mesh vertices): their interiors lie
wholly inside or wholly outside the region, and one interior point tells which. This module
says, per (triangle, segment) pair, which case holds:

* ``DISJOINT``: the segment misses the closed triangle;
* ``BOUNDARY``: it meets the closed triangle but not its interior;
* ``INTERIOR``: it meets the triangle's interior;
* ``UNDECIDED``: the floating-point turns could not tell (or the triangle has no area, or a
  coordinate is not finite or beyond 1e150): the caller asks the general predicates.

A segment whose ends are equal is a point. Every answer but ``UNDECIDED`` is exact: each is
read from the signs of turns (orientations), each turn the floating-point determinant kept
only where it clears the error bound of Shewchuk's first filter (stage A of orient2d), with
a determinant's product that rounded to 0 from a nonzero product taken as unknown.

The tests (separating lines of convex sets, both ways): a segment pq misses the closed
triangle exactly when both ends lie strictly outside one edge's line, or the three corners
lie strictly on one side of pq's line; it misses the open interior exactly when the same
holds with "on the line" allowed. A point is in the interior when it is strictly inside
every edge's line, outside the closed triangle when strictly outside one.

The compiled kernel (``coverage._ext.contact``) and :func:`contacts_reference` compute the
same turns with the same arithmetic (one rounding per operation, no fused multiply-add).
"""
from __future__ import annotations

import numpy as np

from ._ext import contact as _kernel

DISJOINT = 0
BOUNDARY = 1
INTERIOR = 2
UNDECIDED = 3

# Shewchuk's epsilon (half an ulp of 1) and the stage-A error bound of orient2d
_EPSILON = 2.0 ** -53
_BOUND = (3.0 + 16.0 * _EPSILON) * _EPSILON
_LARGEST = 1e150


def _arrays(corners, segments, tri, seg):
    corners = np.ascontiguousarray(corners, dtype=np.float64).reshape(-1, 6)
    segments = np.ascontiguousarray(segments, dtype=np.float64).reshape(-1, 4)
    tri = np.ascontiguousarray(tri, dtype=np.int64).reshape(-1)
    seg = np.ascontiguousarray(seg, dtype=np.int64).reshape(-1)
    if len(tri) != len(seg):
        raise ValueError(f"tri and seg pair up: {len(tri)} != {len(seg)} entries")
    for name, index, n in (("tri", tri, len(corners)), ("seg", seg, len(segments))):
        if len(index) and (index.min() < 0 or index.max() >= n):
            raise ValueError(f"{name} holds an index outside [0, {n})")
    return corners, segments, tri, seg


def contacts(corners: np.ndarray, segments: np.ndarray, tri: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """How each segment meets each triangle it is paired with.

    corners : (m, 6) float
        Each triangle's corners ``ax, ay, bx, by, cx, cy`` (either winding).
    segments : (s, 4) float
        Each segment's ends ``px, py, qx, qy`` (equal ends: a point).
    tri, seg : (k,) int
        The pairs: triangle ``tri[i]`` with segment ``seg[i]``.

    Returns ``(k,) int8``: :data:`DISJOINT`, :data:`BOUNDARY`, :data:`INTERIOR` or
    :data:`UNDECIDED` per pair. The NumPy twin is :func:`contacts_reference`.
    """
    corners, segments, tri, seg = _arrays(corners, segments, tri, seg)
    out = np.empty(len(tri), dtype=np.int8)
    _kernel.contacts(corners, segments, tri, seg, out)
    return out


# --- NumPy reference (tests compare the kernel with it) -----------------------------------

def _turn_reference(ax, ay, bx, by, cx, cy) -> np.ndarray:
    """Sign of each turn a -> b -> c (+1, -1, 0), or 2 where it is not known (see the kernel)."""
    l1, l2, r1, r2 = ax - cx, by - cy, ay - cy, bx - cx
    left, right = l1 * l2, r1 * r2
    det = left - right
    sign = np.sign(det).astype(np.int64)
    total = np.where(left > 0.0, left + right, -left - right)
    # certain: the products' signs alone tell (one is 0, or they differ), else the bound
    plain = ((left > 0.0) & (right <= 0.0)) | ((left < 0.0) & (right >= 0.0)) | (left == 0.0)
    bounded = (det >= _BOUND * total) | (-det >= _BOUND * total)
    underflow = ((left == 0.0) & (l1 != 0.0) & (l2 != 0.0)) | ((right == 0.0) & (r1 != 0.0) & (r2 != 0.0))
    return np.where(~underflow & (plain | bounded), sign, 2)


def contacts_reference(corners: np.ndarray, segments: np.ndarray, tri: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`contacts`: the same turns and tests, array by array."""
    corners, segments, tri, seg = _arrays(corners, segments, tri, seg)
    t, s = corners[tri], segments[seg]
    px, py, qx, qy = s.T
    with np.errstate(invalid="ignore", over="ignore"):
        ordinary = (np.abs(t) < _LARGEST).all(axis=1) & (np.abs(s) < _LARGEST).all(axis=1)
        t = np.where(ordinary[:, None], t, 0.0)
        s = np.where(ordinary[:, None], s, 0.0)
        px, py, qx, qy = s.T
        o = _turn_reference(*t.T)
        # counter-clockwise: b and c swapped where the corners turn clockwise
        ax, ay = t[:, 0], t[:, 1]
        cw = o < 0
        bx, by = np.where(cw, t[:, 4], t[:, 2]), np.where(cw, t[:, 5], t[:, 3])
        cx, cy = np.where(cw, t[:, 2], t[:, 4]), np.where(cw, t[:, 3], t[:, 5])
        ep = np.stack([_turn_reference(ax, ay, bx, by, px, py), _turn_reference(bx, by, cx, cy, px, py),
                       _turn_reference(cx, cy, ax, ay, px, py)])
        eq = np.stack([_turn_reference(ax, ay, bx, by, qx, qy), _turn_reference(bx, by, cx, cy, qx, qy),
                       _turn_reference(cx, cy, ax, ay, qx, qy)])
        tt = np.stack([_turn_reference(px, py, qx, qy, ax, ay), _turn_reference(px, py, qx, qy, bx, by),
                       _turn_reference(px, py, qx, qy, cx, cy)])
    point = (px == qx) & (py == qy)
    out = np.full(len(tri), INTERIOR, dtype=np.int8)
    # segments
    apart = ((ep < 0) & (eq < 0)).any(axis=0) | (tt > 0).all(axis=0) | (tt < 0).all(axis=0)
    clear = ((ep <= 0) & (eq <= 0)).any(axis=0) | (tt >= 0).all(axis=0) | (tt <= 0).all(axis=0)
    out[clear] = BOUNDARY
    out[apart] = DISJOINT
    out[((ep == 2) | (eq == 2) | (tt == 2)).any(axis=0)] = UNDECIDED
    # points
    p_out = np.where((ep < 0).any(axis=0), DISJOINT, np.where((ep > 0).all(axis=0), INTERIOR, BOUNDARY))
    p_out[(ep == 2).any(axis=0)] = UNDECIDED
    out[point] = p_out[point]
    out[~ordinary | (o == 0) | (o == 2)] = UNDECIDED
    return out
