"""Derma-roller passes from a rigid-drum model.

The drum (diameter D, width W, R needle rings across the width, P needles around each)
rolls without slip along a path on the skin, its axis in the skin's tangent plane and
perpendicular to travel. A needle at lateral offset x from the drum's centre line hangs
above the skin by a gap set by the skin's normal curvature k across the drum (DOMAIN.md,
"Rigid drum on a curved face"):

* convex (k > 0): the drum touches in the middle and the edges lift, gap = k x^2 / 2;
* concave (k < 0): the drum bridges the hollow on its edges, gap = |k| ((W/2)^2 - x^2) / 2.

A needle whose gap exceeds ``gap_tolerance`` of its length makes no puncture; the others
reach ``length - gap`` deep. The rings that reach form the **effective swath**. The drum
conforms where its along-travel curvature is not concave beyond the drum's radius and a
contiguous central band of at least ``min_swath_fraction`` of its rings reaches.

Passes of one direction are built outwards from a line through the region's centroid:
each line has a design swath (the band the drum shows along most of it) and the next lies
a constant (w1 + w2) / 2 beyond it on the skin, so neighbouring bands abut however the
chart stretches. A line is rolled where the drum's band at the contact is its design, the
drum conforms, the band lies inside the region and no part of the drum (its full D x W
outline) is over a keep-out (exclusions, margins, lesions, unobserved skin). Further line
families for other band widths, then a headland along the region's border, take only the
skin still free in the sweep, so no two bands of a sweep overlap.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy import ndimage

from . import lifting
from . import paths as _paths
from . import raster
from ._ext import curvature as _curvature_kernel
from ._ext import drum as _drum_kernel
from ._ext import raster as _raster_kernel
from .curvature import Curvature, normal_curvature_reference
from .protocol import Protocol
from .tasks import GEOS_LOCK, one_blas_thread

MIN_STROKE_MM = 10.0       # shorter runs are not worth a touch-down
PATH_STEP_MM = 0.5         # path samples along a pass, on the skin
# the fewest samples of a run that is kept: (samples - 1) * PATH_STEP_MM >= MIN_STROKE_MM
MIN_RUN_SAMPLES = next(m for m in range(1, 1_000_000) if not (m - 1) * PATH_STEP_MM < MIN_STROKE_MM)
COLUMN_STEP_MM = 1.0       # line samples along the passes (chart)
ROW_STEP_MM = 0.25         # field rows across the passes (chart)
CLEARANCE_CELL_MM = 0.25   # keep-out distance raster (chart)
BODY_STEP_MM = 2.0         # drum outline samples (skin)
BAND_EDGE_SLACK = 0.04      # share of the half band kept inside the region beyond the band's edge
LINE_SMOOTH_MM = 5.0       # smoothing of each pass line along its length
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
# ContourPy's generator for every contour the planner traces: its threaded algorithm on one
# thread traces the same lines as the serial one (the same points in the same order; checked
# in tests/test_contours.py) but lets go of the GIL while it marches, so the plan's other
# thread runs meanwhile (the serial one holds it throughout: ~10% of a plan's GIL time)
CONTOUR_OPTIONS = {"line_type": "Separate", "name": "threaded", "thread_count": 1}
CAP_HEADROOM = 1.1         # the sweeps' nominal dose times this stays under the cap (see passes_for_target)
CONFORM_MARGIN = 1e-3      # the planner reads every curvature this much (relative) stronger when it
                           # decides where the drum conforms: the verifier locates each sample anew
                           # from its 3D point and takes a headland's travel from the stroke's own
                           # points, which moves a curvature by ~1e-5 of itself; a sample at the
                           # threshold must not pass for the planner and fail for the verifier


@dataclass(frozen=True)
class Drum:
    """A roller drum and the needle length mounted on it (mm)."""

    diameter_mm: float
    width_mm: float
    rings: int
    needles_per_ring: int
    needle_length_mm: float
    gap_tolerance: float
    stagger: bool
    min_swath_fraction: float
    speed_mm_s: float

    @classmethod
    def from_protocol(cls, protocol: Protocol, needle_length_mm: float) -> "Drum":
        r = protocol.roller
        return cls(r.drum_diameter_mm, r.drum_width_mm, r.needle_rings, r.needles_per_ring,
                   float(needle_length_mm), r.gap_tolerance, r.stagger, r.min_swath_fraction, r.speed_mm_s)

    @property
    def ring_pitch_mm(self) -> float:
        """Lateral spacing of the rings (each ring covers a band this wide)."""
        return self.width_mm / self.rings

    @property
    def ring_x_mm(self) -> np.ndarray:
        """Lateral offsets ``(R,)`` of the rings from the drum's centre line (mm)."""
        return (np.arange(self.rings) + 0.5) * self.ring_pitch_mm - self.width_mm / 2.0

    @property
    def ring_phase(self) -> np.ndarray:
        """Fraction of a needle pitch by which each ring is turned (staggered: every other by half)."""
        phase = np.zeros(self.rings)
        if self.stagger:
            phase[1::2] = 0.5
        return phase

    @property
    def needle_pitch_mm(self) -> float:
        """Arc length rolled between two needles of one ring touching down: pi D / P."""
        return math.pi * self.diameter_mm / self.needles_per_ring

    @property
    def density_per_pass_per_cm2(self) -> float:
        """Punctures per cm^2 of one pass where passes lie one effective swath apart: N / (pi D W)."""
        return 100.0 * self.rings * self.needles_per_ring / (math.pi * self.diameter_mm * self.width_mm)

    def gaps_mm(self, kappa_cross) -> np.ndarray:
        """Gap ``(k, R)`` between each ring's needle tips and the skin, for cross curvatures ``(k,)``."""
        k = np.asarray(kappa_cross, dtype=np.float64)[..., None]
        x2 = self.ring_x_mm ** 2
        half2 = (self.width_mm / 2.0) ** 2
        return np.where(k >= 0, k * x2 / 2.0, -k * (half2 - x2) / 2.0)

    def reaching(self, kappa_cross) -> np.ndarray:
        """Which rings ``(k, R) bool`` puncture: gap within the tolerance of the needle length."""
        return self.gaps_mm(kappa_cross) <= self.gap_tolerance * self.needle_length_mm

    def central_rings(self, kappa_cross) -> np.ndarray:
        """Rings ``(k,) int`` in the contiguous reaching band around the centre (0: none).

        The gap is even in x, so the band is symmetric: count the reaching rings from the
        middle outwards on one side and mirror (an odd drum adds its middle ring once).
        One compiled pass (``coverage._ext.drum.central_rings``), each gap with NumPy's
        arithmetic: equal to :meth:`central_rings_reference`.
        """
        k = np.asarray(kappa_cross)
        if k.ndim == 0 or k.dtype != np.float64 or self.rings < 1:
            return self.central_rings_reference(kappa_cross)
        half = self.rings // 2
        first = self.rings - half if self.rings % 2 == 0 else half
        x2 = self.ring_x_mm[first:] ** 2
        half2 = (self.width_mm / 2.0) ** 2
        out = np.empty(k.size, dtype=np.int64)
        _drum_kernel.central_rings(np.ascontiguousarray(k).reshape(-1), np.ascontiguousarray(x2),
                                   np.ascontiguousarray(half2 - x2), float(self.gap_tolerance * self.needle_length_mm),
                                   self.rings % 2 == 1, out)
        return out.reshape(k.shape)

    def central_rings_reference(self, kappa_cross) -> np.ndarray:
        """NumPy twin of :meth:`central_rings`."""
        # only the middle ring and the outward half are read: their gaps alone, as gaps_mm
        # computes them (x2 and half2 the same numbers, the same expression per element)
        half = self.rings // 2
        first = self.rings - half if self.rings % 2 == 0 else half
        k = np.asarray(kappa_cross, dtype=np.float64)[..., None]
        x2 = self.ring_x_mm[first:] ** 2
        half2 = (self.width_mm / 2.0) ** 2
        gaps = np.where(k >= 0, k * x2 / 2.0, -k * (half2 - x2) / 2.0)
        reach = gaps <= self.gap_tolerance * self.needle_length_mm
        outward = np.cumprod(reach[..., reach.shape[-1] - half:], axis=-1).sum(axis=-1)
        if self.rings % 2 == 0:
            return 2 * outward
        return np.where(reach[..., 0], 2 * outward + 1, 0)

    def swath_mm(self, kappa_cross) -> np.ndarray:
        """Effective swath width ``(k,)``: the central reaching band (mm)."""
        return self.central_rings(kappa_cross) * self.ring_pitch_mm

    def conforms(self, kappa_cross, kappa_along, central: np.ndarray | None = None) -> np.ndarray:
        """Where the drum can work ``(k,) bool``.

        Along travel, a concave radius below D/2 cannot be followed; across, a contiguous
        central band of at least ``min_swath_fraction`` of the rings must reach.
        ``central``: ``central_rings(kappa_cross)`` if already known.
        """
        along_ok = np.asarray(kappa_along) >= -2.0 / self.diameter_mm
        if central is None:
            central = self.central_rings(kappa_cross)
        enough = central >= math.ceil(self.min_swath_fraction * self.rings - 1e-9)
        return along_ok & enough


def planned(kappa):
    """A curvature as the planner reads it to decide where the drum conforms:
    :data:`CONFORM_MARGIN` stronger (a ring's gap grows with |kappa| either side of flat,
    and a concave curvature along the travel only gets more concave), so what the plan
    rolls conforms by any reading within that margin."""
    return np.asarray(kappa, dtype=np.float64) * (1.0 + CONFORM_MARGIN)


# --- directions and curvature on the face ------------------------------------------------

def skin_directions(face, theta_deg: float, normals: np.ndarray) -> np.ndarray:
    """Unit skin tangents ``(k, 3)`` at angle theta in the face frame, given unit normals.

    0 deg is the face frame's +x (the subject's left) and 90 deg its +y (up), each turned
    into the skin's tangent plane: up is the frame's +y projected onto the tangent plane,
    horizontal is that projection crossed with the normal.
    """
    horizontal, up_t = _skin_axes(face, normals)
    t = math.radians(theta_deg)
    return math.cos(t) * horizontal + math.sin(t) * up_t


_SKIN_AXES = weakref.WeakKeyDictionary()   # face -> (pose, horizontal, up) at its vertex normals


def _skin_axes(face, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(horizontal, up)`` ``(k, 3)`` of :func:`skin_directions` at unit normals: they do not
    depend on the direction, so at the face's own vertex normals (every direction's
    conformity asks) they are made once per face (and pose)."""
    own = normals is face.__dict__.get("normals")
    if own:
        entry = _SKIN_AXES.get(face)
        if entry is not None and np.array_equal(entry[0], face.pose):
            return entry[1], entry[2]
    up = face.pose[:3, :3] @ np.array([0.0, 1.0, 0.0])
    up = up / np.linalg.norm(up)
    up_t = up - (normals @ up)[:, None] * normals
    up_t /= np.maximum(np.linalg.norm(up_t, axis=1, keepdims=True), 1e-12)
    horizontal = np.cross(up_t, normals)
    if own:
        _SKIN_AXES[face] = (np.array(face.pose, copy=True), horizontal, up_t)
    return horizontal, up_t


def drum_curvature_radius_mm(drum: Drum) -> float:
    """The fit radius for the curvature the drum feels: its width (Gaussian weights of
    sigma W/2), since a rigid drum spans the whole profile under its width at once."""
    return drum.width_mm


def vertex_curvatures(face, theta_deg: float, drum: Drum) -> tuple[np.ndarray, np.ndarray]:
    """Normal curvature along travel and across the drum at every vertex, for direction theta."""
    curv = face.curvature(drum_curvature_radius_mm(drum))
    travel = skin_directions(face, theta_deg, face.normals)
    across = np.cross(face.normals, travel)
    ids = np.arange(len(face.vertices))
    return curv.normal_curvature(ids, travel), curv.normal_curvature(ids, across)


@dataclass(frozen=True)
class Conformity:
    """Where the drum can work for one travel direction, per vertex of the face."""

    theta_deg: float
    kappa_along: np.ndarray   # (v,) 1/mm
    kappa_cross: np.ndarray   # (v,) 1/mm
    swath_mm: np.ndarray      # (v,) effective swath
    conforms: np.ndarray      # (v,) bool


def conformity(face, drum: Drum, theta_deg: float, curvatures: tuple | None = None) -> Conformity:
    """The drum's conformity map for one direction: swath and whether it can work, per vertex.

    ``curvatures``: ``vertex_curvatures(face, theta_deg, drum)`` if already known (they
    depend on the drum only through its curvature radius, so drums of one width share them)."""
    along, cross = vertex_curvatures(face, theta_deg, drum) if curvatures is None else curvatures
    central = drum.central_rings(cross)
    return Conformity(theta_deg, along, cross, central * drum.ring_pitch_mm, drum.conforms(cross, along, central))


# --- chart fields --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ChartRaster:
    """A scalar field sampled on a regular chart grid, read back with nearest lookup."""

    origin: np.ndarray
    cell: float
    values: np.ndarray  # (h, w)
    # the values are a distance_raster's: (Euclidean distance transform in cells) * cell - a
    # constant where a cell is away, -1 elsewhere, with at least one cell not away (so two
    # cells' values differ by at most the distance between their centres while both are away)
    distance: bool = False

    def at(self, uv: np.ndarray, outside: float) -> np.ndarray:
        """Values at chart points ``(k, 2)`` (float); ``outside`` off the grid or at NaN."""
        return raster.lookup(self.values, self.origin, self.cell, uv, outside)

    def min_at(self, uv: np.ndarray, group: int, outside: float) -> np.ndarray:
        """Least value over each ``group`` consecutive chart points of ``uv (n * group, 2)``:
        ``at(uv, outside).reshape(n, group).min(axis=1)`` without the intermediate array."""
        return raster.lookup_min(self.values, self.origin, self.cell, uv, group, outside)

    def min_along(self, uv: np.ndarray, direction: np.ndarray, offsets: np.ndarray, scale=None,
                  outside: float = np.inf) -> np.ndarray:
        """Least value ``(n,)`` over the points ``uv[i] + (offsets[j] * scale[i]) * direction[i]``
        of each chart point (``uv[i] + offsets[j] * direction[i]`` without ``scale``)."""
        return raster.offset_min(self.values, self.origin, self.cell, uv, direction, offsets, scale, outside)

    def min_over(self, uv: np.ndarray, dir_a: np.ndarray, dir_b: np.ndarray, off_a: np.ndarray,
                 off_b: np.ndarray, outside: float = np.inf) -> np.ndarray:
        """Least value ``(n,)`` over the points ``(uv[i] + off_a[j] * dir_a[i]) + off_b[j] * dir_b[i]``."""
        return raster.rect_min(self.values, self.origin, self.cell, uv, dir_a, dir_b, off_a, off_b, outside)


def distance_raster(region, bounds, cell: float = CLEARANCE_CELL_MM, outside_of: bool = True) -> ChartRaster:
    """Chart distance (mm) from each cell to a region (``outside_of``) or to its outside.

    One cell diagonal is subtracted, so the value is a lower bound for every point of the
    cell; cells in the region (or outside it) read -1.
    """
    lo, hi = np.asarray(bounds[:2], dtype=float), np.asarray(bounds[2:], dtype=float)
    w, h = (int(x) for x in np.ceil((hi - lo) / cell) + 1)
    inside = contains_grid(region, lo[0] + (np.arange(w) + 0.5) * cell, lo[1] + (np.arange(h) + 0.5) * cell)
    away = ~inside if outside_of else inside
    # ndimage.distance_transform_edt(away) * cell - cell * sqrt(2) where away, else -1
    return ChartRaster(lo, cell, raster.clearance(away, cell), distance=bool((~away).any()))


GRID_BLOCK = 8    # grid points per side of the blocks contains_grid decides at once (8: the least time on
                 # the bundled face's and a scan's rasters, of 4 to 32)


def contains_grid(region, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``shapely.contains_xy(region, *meshgrid(x, y))`` ``(len(y), len(x)) bool``, identical.

    A valid (multi)polygon on a grid of finite, ascending points: by the even-odd count of
    its boundary's crossings of each row (:func:`contains_grid_scan`); anything else by
    :func:`contains_grid_blocks`."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if (xs.ndim == 1 and ys.ndim == 1 and len(xs) and len(ys) and np.isfinite(xs).all() and np.isfinite(ys).all()
            and (np.diff(xs) > 0).all() and (np.diff(ys) > 0).all()
            and shapely.get_type_id(region) in (3, 6) and not shapely.is_empty(region)
            and shapely.is_valid(region)):
        c = shapely.get_coordinates(region)
        if len(c) and np.isfinite(c).all():
            return contains_grid_scan(region, xs, ys)
    return contains_grid_blocks(region, x, y)


SCAN_TOLERANCE = 1e-9    # of the grid's and boundary's largest coordinate (at least 1): a point
                         # this near a crossing, a vertex or a horizontal edge is asked of shapely


def contains_grid_scan(region, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`contains_grid` of a valid Polygon or MultiPolygon (finite coordinates) on finite,
    strictly ascending ``x`` and ``y``, asking shapely about the points on or next to the
    boundary only (``coverage._ext.raster.grid_crossings``).

    A valid polygon's interior is where a ray to the right crosses its rings (every ring of
    every part) an odd number of times, counting an edge at the heights
    ``min(ay, by) <= y < max(ay, by)`` (a point off the boundary: each crossing on its
    ray is counted once). The count is exact wherever each crossing's side is: a crossing
    ``ax + (y - ay) * (bx - ax) / (by - ay)`` is within a few rounding units of the
    coordinates of its exact value, far below the tolerance. A point within the tolerance
    of a crossing, of a vertex (where an edge's excluded end is) or of a horizontal edge (never
    counted) may be on the boundary, where contains_xy reads False: those are asked."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rings = shapely.get_rings(shapely.get_parts(region))
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[:-1] == ring[1:]          # consecutive vertices of one ring: an edge
    a, b = coords[:-1][same], coords[1:][same]
    tol = SCAN_TOLERANCE * max(1.0, float(np.abs(coords).max(initial=0.0)), float(np.abs(x).max()),
                               float(np.abs(y).max()))
    out, unsure = raster.grid_crossings(np.concatenate([a, b], axis=1), x, y, tol)
    # the grid points within the tolerance of a vertex (in both coordinates) ...
    i0, i1 = np.searchsorted(y, coords[:, 1] - tol, "left"), np.searchsorted(y, coords[:, 1] + tol, "right")
    j0, j1 = np.searchsorted(x, coords[:, 0] - tol, "left"), np.searchsorted(x, coords[:, 0] + tol, "right")
    for k in np.flatnonzero((i1 > i0) & (j1 > j0)).tolist():
        unsure[i0[k]:i1[k], j0[k]:j1[k]] = True
    # ... and of a horizontal edge
    flat = np.flatnonzero(a[:, 1] == b[:, 1])
    i0, i1 = np.searchsorted(y, a[flat, 1] - tol, "left"), np.searchsorted(y, a[flat, 1] + tol, "right")
    j0 = np.searchsorted(x, np.minimum(a[flat, 0], b[flat, 0]) - tol, "left")
    j1 = np.searchsorted(x, np.maximum(a[flat, 0], b[flat, 0]) + tol, "right")
    for k in np.flatnonzero((i1 > i0) & (j1 > j0)).tolist():
        unsure[i0[k]:i1[k], j0[k]:j1[k]] = True
    ii, jj = np.nonzero(unsure)
    if len(ii):
        with GEOS_LOCK:
            out[ii, jj] = shapely.contains_xy(region, x[jj], y[ii])
    return out


def contains_grid_blocks(region, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``shapely.contains_xy(region, *meshgrid(x, y))`` ``(len(y), len(x)) bool``, identical,
    asking shapely about few points: the grid in blocks of ``GRID_BLOCK`` x ``GRID_BLOCK``
    points; a block whose closed bounding box meets no boundary segment's bounding box lies
    in one piece of the plane off the boundary, so all its points answer as its first one
    does; the points of the other blocks are each asked."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w, h = len(x), len(y)
    b = GRID_BLOCK
    if w * h <= 4 * b * b or not (np.isfinite(x).all() and np.isfinite(y).all()
                                  and (np.diff(x) > 0).all() and (np.diff(y) > 0).all()):
        uu, vv = np.meshgrid(x, y)
        with GEOS_LOCK:
            return shapely.contains_xy(region, uu.ravel(), vv.ravel()).reshape(h, w)
    j0, i0 = np.arange(0, w, b), np.arange(0, h, b)
    j1, i1 = np.minimum(j0 + b, w) - 1, np.minimum(i0 + b, h) - 1
    # the blocks any boundary segment's bounding box reaches (consecutive vertices of all
    # the rings, and the joins between rings too: a block too many is only asked in full)
    c = shapely.get_coordinates(region)
    if len(c) == 0 or not np.isfinite(c).all():
        uu, vv = np.meshgrid(x, y)
        with GEOS_LOCK:
            return shapely.contains_xy(region, uu.ravel(), vv.ravel()).reshape(h, w)
    a, z = (c[:-1], c[1:]) if len(c) > 1 else (c, c)
    lo, hi = np.minimum(a, z), np.maximum(a, z)
    ja, jb = np.searchsorted(x[j1], lo[:, 0], "left"), np.searchsorted(x[j0], hi[:, 0], "right") - 1
    ia, ib = np.searchsorted(y[i1], lo[:, 1], "left"), np.searchsorted(y[i0], hi[:, 1], "right") - 1
    on = (ja <= jb) & (ia <= ib)
    ja, jb, ia, ib = ja[on], jb[on], ia[on], ib[on]
    marks = np.zeros((len(i0) + 1, len(j0) + 1), dtype=np.int64)
    np.add.at(marks, (ia, ja), 1)
    np.add.at(marks, (ia, jb + 1), -1)
    np.add.at(marks, (ib + 1, ja), -1)
    np.add.at(marks, (ib + 1, jb + 1), 1)
    # a block one point wide or tall is asked in full as well
    mixed = (marks.cumsum(axis=0).cumsum(axis=1)[:-1, :-1] > 0) | (j1 == j0)[None, :] | (i1 == i0)[:, None]
    with GEOS_LOCK:
        first = shapely.contains_xy(region, *np.broadcast_arrays(x[j0][None, :], y[i0][:, None]))
    out = np.repeat(np.repeat(first, b, axis=0), b, axis=1)[:h, :w]
    ii, jj = np.nonzero(np.repeat(np.repeat(mixed, b, axis=0), b, axis=1)[:h, :w])
    with GEOS_LOCK:
        out[ii, jj] = shapely.contains_xy(region, x[jj], y[ii])
    return out


def keepout_clearance(zones, cell: float = CLEARANCE_CELL_MM) -> ChartRaster:
    """Chart distance (mm, a lower bound) from any point to the nearest keep-out."""
    uv = zones.face.uv
    pad = 30.0
    return distance_raster(zones.keepout, (*(uv.min(axis=0) - pad), *(uv.max(axis=0) + pad)), cell)


# --- regions -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Region:
    """Adjacent zones the drum treats as one: same drum, target, cap and directions.

    A needle band crossing between them doses both alike, so passes run across their
    shared borders instead of stopping half a swath short of each.
    """

    name: str
    zones: tuple       # zone names
    polygon: object    # union of their treatable chart polygons (one connected part)

    @functools.cached_property
    def inside(self) -> "ChartRaster":
        """Chart distance (a lower bound) from any point to the region's outside (-1 outside)."""
        minx, miny, maxx, maxy = self.polygon.bounds
        return distance_raster(self.polygon, (minx - 1, miny - 1, maxx + 1, maxy + 1), outside_of=False)

    @functools.cached_property
    def sweep_frames(self) -> dict:
        """The :class:`SweepFrame` of each direction built so far (``theta_deg`` -> frame),
        shared by the direction's line families."""
        return {}


def roller_regions(zones, protocol: Protocol) -> list[Region]:
    """Connected groups of roller zones with identical roller settings, in protocol order."""
    groups: dict = {}
    for name in zones.names:
        dose = protocol.zone(name)
        if "roller" in dose.devices and not zones.polygons[name].is_empty:
            key = (dose.roller_needle_length_mm, dose.target_per_cm2, dose.cap_per_cm2, dose.directions_deg)
            groups.setdefault(key, []).append(name)
    regions = []
    for names in groups.values():
        union = shapely.union_all([zones.polygons[n] for n in names])
        for part in sorted(shapely.get_parts(union), key=lambda g: -g.area):
            # a zone apart from the part (no point in common) has no area in it: not asked
            with GEOS_LOCK:
                members = tuple(n for n in names if shapely.intersects(zones.polygons[n], part)
                                and shapely.intersection(zones.polygons[n], part).area > 1e-6)
            if members:     # (a sliver no zone has area in: nothing to roll)
                regions.append(Region("+".join(members), members, part))
    order = {n: i for i, n in enumerate(zones.names)}
    return sorted(regions, key=lambda r: order[r.zones[0]])


# --- pass lines ----------------------------------------------------------------------------

@dataclass
class PassLine:
    """One pass line of a sweep: chart samples along it and what holds at each."""

    sweep: int
    line: int
    uv: np.ndarray        # (n, 2) chart
    valid: np.ndarray     # (n,) bool: the drum may roll here
    swath_mm: np.ndarray  # (n,) effective swath


@dataclass
class Run:
    """A stretch of a pass the drum rolls in one go (becomes a stroke)."""

    zone: str
    theta_deg: float
    sweep: int
    line: int
    uv: np.ndarray              # (n, 2) chart, in travel order, ~PATH_STEP_MM apart on the skin
    swath_mm: np.ndarray        # (n,)
    kappa_cross: np.ndarray     # (n,)
    phase_mm: float = 0.0       # arc length to the first needle of ring 0
    meta: dict = field(default_factory=dict)
    # the chart triangle of each sample (face.locate(uv)[0]) where the roller located it
    # already, so a claim need not locate it again; None: not known
    tri: np.ndarray | None = field(default=None, repr=False, compare=False)


def _rotation(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s], [s, c]])


def chart_angle(face, theta_deg: float, uv_samples: np.ndarray) -> float:
    """The chart angle (rad) that best carries skin direction theta over a set of chart points."""
    lifted = face.lift(uv_samples)
    ok = lifted.inside
    if not ok.any():
        return math.radians(theta_deg)
    t3 = skin_directions(face, theta_deg, lifted.normals[ok])
    jac = face.jacobian[lifted.tri[ok]]                      # (k, 3, 2)
    t2 = np.einsum("kij,kj->ki", np.linalg.pinv(jac), t3)    # chart vector of each tangent
    angle = np.arctan2(t2[:, 1], t2[:, 0])
    return float(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()))


@dataclass(frozen=True, eq=False)
class SweepFrame:
    """The turned frame of one region and direction, and its swath and chart scale fields.

    In the frame (u', v') the passes run along +u'; the fields are sampled on its grid, one
    column per ``COLUMN_STEP_MM`` along the passes and one row per ``ROW_STEP_MM`` across.
    They depend on the region, the direction and the drum's conformity only, so every line
    family of a direction shares one.
    """

    face: object
    conform: Conformity
    angle: float              # chart angle (rad) of the passes
    to_frame: np.ndarray      # (2, 2) chart -> (u', v')
    to_chart: np.ndarray      # (2, 2) (u', v') -> chart
    u_cols: np.ndarray        # (cols,) u' of the grid columns
    v_rows: np.ndarray        # (rows,) v' of the grid rows
    v_mid: float              # v' of the region's centroid
    # the fields (sweep_frame_fields at the grid's chart points, row by row), each point made
    # where a line first reads it (the lines read about a quarter of the grid): scale, band
    # and the band's index into fields.levels, every band a point can show (see the
    # properties below for the whole fields)
    fields: raster.FrameFields

    @property
    def scale(self) -> np.ndarray:
        """``(rows, cols)`` skin mm per chart mm (1 off the chart), every point made."""
        self.fields.fill_all()
        return self.fields.scale

    @property
    def works_swath(self) -> np.ndarray:
        """``(rows, cols)`` band where the drum works (NaN elsewhere), mm, every point made."""
        self.fields.fill_all()
        return self.fields.band

    @property
    def swath_levels(self) -> np.ndarray:
        """``(m,)`` the distinct bands of works_swath, ascending, mm."""
        band = self.works_swath
        return np.unique(band[~np.isnan(band)])

    @property
    def swath_code(self) -> np.ndarray:
        """``(rows, cols) int``: works_swath as an index into swath_levels (-1: NaN)."""
        band = self.works_swath
        works = ~np.isnan(band)
        _, code = np.unique(band[works], return_inverse=True)
        out = np.full(band.shape, -1, dtype=np.int64)
        out[works] = code.reshape(-1)
        return out

    @classmethod
    def build(cls, face, region: Region, theta_deg: float, conform: Conformity) -> "SweepFrame":
        polygon = region.polygon
        with GEOS_LOCK:
            shapely.prepare(polygon)
        minx, miny, maxx, maxy = polygon.bounds
        probe = _grid_in(polygon, max(2.0, min(maxx - minx, maxy - miny) / 12.0))
        angle = chart_angle(face, theta_deg, probe)
        to_frame = _rotation(-angle)      # chart -> (u', v')
        to_chart = _rotation(angle)
        local = shapely.get_coordinates(polygon) @ to_frame.T
        lo, hi = local.min(axis=0) - 1.0, local.max(axis=0) + 1.0
        u_cols = np.arange(lo[0], hi[0] + COLUMN_STEP_MM, COLUMN_STEP_MM)
        v_rows = np.arange(lo[1], hi[1] + ROW_STEP_MM, ROW_STEP_MM)
        # the grid's (u', v') points row by row, (rows * cols, 2): np.stack of the raveled
        # np.meshgrid(u_cols, v_rows), written in place (the same array, without the three
        # intermediate copies)
        grid = np.empty((len(v_rows), len(u_cols), 2))
        grid[:, :, 0] = u_cols
        grid[:, :, 1] = v_rows[:, None]
        # one BLAS thread: a split product is the same product, but threaded OpenBLAS spins
        # its idle threads long after this (measured: ~40 ms of CPU per build on two cores)
        with one_blas_thread():
            chart = grid.reshape(-1, 2) @ to_chart.T
        # the band where the drum works: on the chart, in the region, every corner conforming;
        # made where the lines read it
        fields = sweep_frame_fields_lazy(face, chart, region.inside, conform, len(v_rows))
        centre = np.asarray(polygon.centroid.coords[0]) @ to_frame.T
        return cls(face, conform, angle, to_frame, to_chart, u_cols, v_rows, float(centre[1]), fields)


def _frame_field_args(face, inside: ChartRaster, conform: Conformity) -> tuple:
    """The arrays frame_fields and FrameFill read, checked to agree in size."""
    grid = face.chart_grid
    faces = np.ascontiguousarray(face.faces, dtype=np.int64)
    swath = np.ascontiguousarray(conform.swath_mm, dtype=np.float64).reshape(-1)
    conforms = np.ascontiguousarray(conform.conforms, dtype=bool).reshape(-1)
    linear_scale = np.ascontiguousarray(face.linear_scale, dtype=np.float64).reshape(-1)
    values = np.ascontiguousarray(inside.values, dtype=np.float64)
    if (len(linear_scale) != len(faces) or len(grid.affine) != len(faces) or len(swath) != len(face.vertices)
            or len(conforms) != len(face.vertices) or values.ndim != 2):
        raise ValueError("sweep_frame_fields: the face's triangles, its vertices' conformity and the "
                         "region raster do not agree in size")
    return grid, faces, swath, conforms, linear_scale, values


def sweep_frame_fields_lazy(face, chart: np.ndarray, inside: ChartRaster, conform: Conformity,
                            rows: int) -> raster.FrameFields:
    """:func:`sweep_frame_fields` of a grid of chart points ``(rows * cols, 2)`` (row by row)
    as fields made point by point where first read (:class:`raster.FrameFields`), each
    point exactly as sweep_frame_fields makes it. The band's codes index every band a point
    can show: the least of a triangle's corners' swaths where all three conform and it is
    above 0 is one of the conforming vertices' swaths above 0."""
    chart = np.ascontiguousarray(chart, dtype=np.float64).reshape(-1, 2)
    grid, faces, swath, conforms, linear_scale, values = _frame_field_args(face, inside, conform)
    n = len(chart)
    if rows <= 0 or n % rows:
        raise ValueError(f"{n} chart points are not a grid of {rows} rows")
    levels = np.unique(swath[conforms & (swath > 0)])
    known, scale, band, code = np.zeros(n, dtype=np.uint8), np.empty(n), np.empty(n), np.empty(n, dtype=np.int64)
    kernel = _raster_kernel.FrameFill(chart, grid.affine, grid.start, grid.items, float(grid.origin[0]),
                                      float(grid.origin[1]), float(grid.cell), int(grid.shape[0]),
                                      int(grid.shape[1]), 1e-9, linear_scale, faces, values,
                                      float(inside.origin[0]), float(inside.origin[1]), float(inside.cell), swath,
                                      conforms.view(np.uint8), levels, known, scale, band, code)
    return raster.FrameFields(kernel, rows, n // rows, levels, known, scale, band, code)


def sweep_frame_fields(face, chart: np.ndarray, inside: ChartRaster, conform: Conformity, rows: int = 1) -> tuple:
    """``(scale (k,) float, band (k,) float)`` at chart points ``(k, 2)``: the skin mm per
    chart mm of each point's triangle (``face.locate``; 1 off the chart), and the band the
    drum shows there where it works (NaN elsewhere): on the chart, ``inside`` reading at
    least 0 (-1 off its raster), every corner of the triangle conforming and the least of
    their swaths above 0. One compiled pass (``coverage._ext.raster.frame_fields``):
    equal to :func:`sweep_frame_fields_reference`. ``rows``: the points are a grid of that
    many rows, row by row (only the order they are visited in: column by column, faster)."""
    chart = np.ascontiguousarray(chart, dtype=np.float64).reshape(-1, 2)
    grid, faces, swath, conforms, linear_scale, values = _frame_field_args(face, inside, conform)
    scale, band = np.empty(len(chart)), np.empty(len(chart))
    _raster_kernel.frame_fields(chart, grid.affine, grid.start, grid.items, float(grid.origin[0]),
                                float(grid.origin[1]), float(grid.cell), int(grid.shape[0]), int(grid.shape[1]),
                                1e-9, linear_scale, faces, values, float(inside.origin[0]),
                                float(inside.origin[1]), float(inside.cell), swath, conforms.view(np.uint8),
                                int(rows), scale, band)
    return scale, band


def sweep_frame_fields_reference(face, chart: np.ndarray, inside: ChartRaster, conform: Conformity) -> tuple:
    """NumPy twin of :func:`sweep_frame_fields` (NumPy throughout: the chart location and the
    raster read by their own NumPy twins, not the compiled ``face.locate`` and ``inside.at``)."""
    tri, _ = lifting.locate_reference(face.chart_grid, chart)
    on = tri >= 0
    scale = np.ones(len(chart))
    scale[on] = face.linear_scale[tri[on]]
    in_region = raster.lookup_reference(inside.values, inside.origin, inside.cell, chart, -1.0) >= 0
    cand = np.nonzero(on & in_region)[0]
    corners = face.faces[tri[cand]]
    band = conform.swath_mm[corners].min(axis=1)
    works = conform.conforms[corners].all(axis=1) & (band > 0)
    out = np.full(len(chart), np.nan)
    out[cand[works]] = band[works]
    return scale, out


class ZoneSweeps:
    """The roller's pass lines in one region for one direction.

    In a frame turned so the passes run along +u', lines are built outwards from one through
    the region's centroid. Each line has a design swath w (the band the drum shows over most
    of it); line k+1 lies a constant (w_k + w_k+1) / 2 beyond line k on the skin, so lines
    bend only with the chart's scale, never fan out, and neighbouring bands abut. A line is
    rolled only where the drum's band at the contact is its design (so spacing and swath
    agree and bands never overlap), the drum conforms, its needle band lies inside the
    region and no part of the drum is over a keep-out.
    """

    def __init__(self, zones, region: Region, drum: Drum, theta_deg: float, conform: Conformity,
                 clearance: ChartRaster, design_mm: float | None = None):
        self.zones, self.region, self.drum, self.theta_deg = zones, region, drum, theta_deg
        self.name = region.name
        self.conform, self.clearance = conform, clearance
        self.forced_design = design_mm  # every line has this design (a second family), or None
        self.kept_trials = {}           # offset -> lines (as sweep 0) best_offset already built
        self.family = 0 if design_mm is None else int(round(design_mm * 10))  # a label for the strokes
        face = zones.face
        self.face = face
        self.polygon = region.polygon
        self.inside = region.inside
        frame = region.sweep_frames.get(theta_deg)
        if frame is None or frame.face is not face or frame.conform is not conform:
            frame = region.sweep_frames[theta_deg] = SweepFrame.build(face, region, theta_deg, conform)
        self.frame = frame
        self.angle = frame.angle
        self.to_frame, self.to_chart = frame.to_frame, frame.to_chart
        self.u_cols, self.v_rows = frame.u_cols, frame.v_rows
        self.v_mid = frame.v_mid
        self.fields = frame.fields      # made where the lines read them

    # the frame's whole fields (every point made)
    works_swath = property(lambda self: self.frame.works_swath)
    scale = property(lambda self: self.frame.scale)
    swath_levels = property(lambda self: self.frame.swath_levels)
    swath_code = property(lambda self: self.frame.swath_code)

    def _design(self, v: np.ndarray) -> float:
        """A line's design swath: the band the drum shows over most of it where it works."""
        if self.forced_design is not None:
            return self.forced_design
        # the most frequent band of works_swath read at v (the smallest on a tie: the levels
        # ascend, and a level no column reads is never the mode)
        f = self.fields
        mode = raster.column_mode(f.codes, v, self.v_rows[0], ROW_STEP_MM, len(f.levels), lazy=f)
        if mode < 0:
            return self.drum.width_mm
        return float(f.levels[mode])

    def _step(self, v: np.ndarray, w0: float, sign: float) -> tuple[np.ndarray, float]:
        """The next line beyond ``v`` and its design: (w0 + w1) / 2 apart on the skin."""
        # up to three rounds (the next design depends on where the next line lands, settled
        # when another round would place the same line again) of v + c / lam, lam the chart
        # scale averaged over both lines, then _smooth_nan of the line: all in one kernel
        # call, exactly as the rounds of raster.column_step, _design and _smooth_nan
        f = self.fields
        return raster.line_step(f.scale, f.codes, f.levels, v, self.v_rows[0], ROW_STEP_MM,
                                sign, w0, self.forced_design, self.drum.width_mm,
                                gaussian_weights(LINE_SMOOTH_MM / COLUMN_STEP_MM), lazy=f)

    def lines(self, offset: float) -> list[tuple[int, np.ndarray, float]]:
        """``[(k, chart points (n, 2), design swath mm)]`` of every line, in order.

        The anchor line runs through the region's centroid, shifted across by ``offset``
        of its design swath; chart points are NaN where a line leaves the grid.
        """
        row = int(np.clip(np.searchsorted(self.v_rows, self.v_mid), 0, len(self.v_rows) - 1))
        v0 = np.full(len(self.u_cols), self.v_mid)
        w0 = self._design(v0)
        f = self.fields
        f.fill_row(row)
        v0 = v0 + offset * w0 / f.scale[row]
        w0 = self._design(v0)
        found = [(0, v0, w0)]
        for sign in (1.0, -1.0):
            # self._step after self._step while a line has a column on the grid's rows, in
            # one kernel call (raster.line_walk)
            walked = raster.line_walk(f.scale, f.codes, f.levels, v0, self.v_rows[0],
                                      ROW_STEP_MM, sign, w0, self.forced_design, self.drum.width_mm,
                                      gaussian_weights(LINE_SMOOTH_MM / COLUMN_STEP_MM),
                                      float(self.v_rows[0]), float(self.v_rows[-1]), lazy=f)
            found += [(int(sign) * (i + 1), v, w) for i, (v, w) in enumerate(walked)]
        found.sort(key=lambda item: item[0])
        # every line's (u', v') points @ to_chart.T in one stacked product: numpy multiplies
        # each (cols, 2) slice as it multiplies the line alone (the same shapes and strides)
        frame_pts = np.empty((len(found), len(self.u_cols), 2))
        frame_pts[:, :, 0] = self.u_cols
        frame_pts[:, :, 1] = np.stack([v for _, v, _ in found])
        chart = frame_pts @ self.to_chart.T
        return [(k, chart[i], w) for i, (k, _, w) in enumerate(found)]

    def _band_rings(self, uv: np.ndarray, located=None) -> tuple[np.ndarray, np.ndarray]:
        """Cross curvature and central band width (mm) at chart points; NaN / 0 off the chart.

        ``located``: their ``(tri, bary)`` if already known (``face.locate(uv)``).
        """
        kc, width, _ = self._band_rings_central(uv, located)
        return kc, width

    def _band_rings_central(self, uv: np.ndarray, located=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_band_rings` and the central ring count ``(n,) int`` behind each width."""
        tri, bary = self.face.locate(uv) if located is None else located
        corners = self.face.faces[np.maximum(tri, 0)]
        kc = np.einsum("kj,kj->k", bary, self.conform.kappa_cross[corners])
        central = self.drum.central_rings(planned(kc))
        width = central * self.drum.ring_pitch_mm    # Drum.swath_mm
        return np.where(tri >= 0, kc, np.nan), np.where(tri >= 0, width, 0.0), central

    def sample_validity(self, uv: np.ndarray, design_mm, starts: np.ndarray | None = None,
                        valid_only: bool = False, located: bool = False) -> tuple:
        """Validity, band width and cross curvature at chart points ``(n, 2)`` along a pass.

        Several passes at once: ``starts (p + 1,) int`` puts pass i at rows
        ``starts[i]:starts[i + 1]`` and ``design_mm`` is then one float or ``(n,) float``
        (each sample its pass's design); each pass reads as it would alone.
        ``valid_only``: band width and curvature are only needed where the sample is valid;
        they read 0 where the sample's own point lies outside the region (never valid).
        ``located``: also return each point's triangle (``face.locate(uv)[0]``), fourth.
        """
        face = self.face
        n = len(uv)
        if valid_only:
            # the sample's own point is the middle of its needle band, which must lie inside:
            # only those are located here (a point's triangle does not depend on the others);
            # drum_fits reads the triangles of a few more, located below
            cand = np.nonzero(self.inside.at(uv, outside=-1.0) >= 0)[0]
            tri_cand, bary_cand = face.locate(uv[cand])
            tri_all = np.full(n, -1, dtype=np.int64)
            tri_all[cand] = tri_cand
            keep = tri_cand >= 0
            at, tri, bary = cand[keep], tri_cand[keep], bary_cand[keep]
        else:
            tri_all, bary_all = face.locate(uv)
            at = np.arange(n)
            tri, bary = tri_all, bary_all
        corners = face.faces[np.maximum(tri, 0)]
        along = np.einsum("kj,kj->k", bary, self.conform.kappa_along[corners])
        kc_at, width_at, central = self._band_rings_central(uv[at], (tri, bary))
        kc0_at = np.nan_to_num(kc_at)
        # the rings counted for the width are the ones conforms would count on the chart
        # (off it the sample is out anyway), unless a curvature there is not finite
        if not np.isfinite(kc_at[tri >= 0]).all():
            central = None
        design_at = design_mm[at] if np.ndim(design_mm) else design_mm
        ok = np.zeros(n, dtype=bool)
        ok[at] = (tri >= 0) & self.drum.conforms(planned(kc0_at), planned(along), central) & np.isclose(width_at,
                                                                                                      design_at)
        width, kc0 = np.zeros(n), np.zeros(n)
        width[at], kc0[at] = width_at, kc0_at
        if valid_only:
            # the samples whose triangle drum_fits reads: those within the drum's reach of a
            # sample still standing along its own pass, and the ends of such a pass
            more = _near_standing(ok, starts, drum_reach(self.drum) + 1)
            more[cand] = False
            more = np.nonzero(more)[0]
            if len(more):
                tri_all[more] = face.locate(uv[more])[0]
        ok &= drum_fits(face, self.drum, uv, width, self.inside, self.clearance, tri=tri_all, starts=starts,
                        where=ok)
        if located:     # and each sample's triangle (face.locate(uv)[0])
            return ok, width, kc0, tri_all
        return ok, width, kc0


LIPSCHITZ_MARGIN_MM = 1e-6     # rounding allowance of a distance raster's bound (its values are ~1e-13 mm exact)
SKIN_FRAME_LIMIT = 1.0 / 0.05   # chart mm per skin mm beyond which a triangle's frame is not trusted


def skin_frame(face, tri: np.ndarray, travel: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chart vectors of one skin millimetre along the travel and across it, per sample.

    From each triangle's own Jacobian (a scan's chart need not be conformal: across can be
    twice along), as the needle simulation maps the drum; the isotropic ``1 / scale`` off
    the chart. The compiled kernel (``coverage._ext.raster.skin_frame``), per sample with
    NumPy's arithmetic: equal to :func:`skin_frame_reference` bit for bit.
    """
    tri = np.ascontiguousarray(tri, dtype=np.int64).reshape(-1)
    n = len(tri)
    travel = np.ascontiguousarray(travel, dtype=np.float64).reshape(n, 2)
    scale = np.ascontiguousarray(scale, dtype=np.float64).reshape(n)
    along, across = np.empty((n, 2)), np.empty((n, 2))
    if n and (tri >= len(face.faces)).any():
        raise ValueError(f"triangle {int(tri.max())} of a face of {len(face.faces)}")
    _raster_kernel.skin_frame(_c(face.jacobian), _c(face.jacobian_normal), _c(face.jacobian_pinv), tri,
                              travel, scale, SKIN_FRAME_LIMIT, along, across)
    return along, across


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def skin_frame_reference(face, tri: np.ndarray, travel: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`skin_frame`."""
    along = travel / scale[:, None]
    across = np.stack([-travel[:, 1], travel[:, 0]], axis=1) / scale[:, None]
    on = tri >= 0
    every = bool(on.all())   # the usual case: no gathers, and a select instead of a scatter
    if every or on.any():
        tri_on, travel_on = (tri, travel) if every else (tri[on], travel[on])
        jac = face.jacobian[tri_on]                                   # (k, 3, 2)
        skin_t = np.einsum("kij,kj->ki", jac, travel_on)
        length = np.maximum(np.linalg.norm(skin_t, axis=1), 1e-9)
        normal = face.jacobian_normal[tri_on]       # unit jac[:, :, 0] x jac[:, :, 1]
        left = np.cross(normal, skin_t / length[:, None])
        per_mm = np.einsum("kij,kj->ki", face.jacobian_pinv[tri_on], left)   # pinv(jac) @ left
        ok = np.isfinite(per_mm).all(axis=1) & (np.linalg.norm(per_mm, axis=1) < SKIN_FRAME_LIMIT)
        if every:
            along = np.where(ok[:, None], travel / length[:, None], along)
            across = np.where(ok[:, None], per_mm, across)
        else:
            idx = np.nonzero(on)[0][ok]
            along[idx] = travel_on[ok] / length[ok, None]
            across[idx] = per_mm[ok]
    return along, across


def _at_least_within(r: ChartRaster, uv: np.ndarray, far: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Points ``(n,) bool`` where a distance raster (``r.distance``) reads at least ``need``
    (and at least 0) at every point within ``far`` chart mm of ``uv``, told from the point's
    own cell alone; False where that cannot be told (they are to be read point by point).

    Two cells' distance transforms differ by at most the distance between their centres,
    which is at most the points' distance plus a cell diagonal: the cell of ``uv`` less that
    (and a rounding allowance) bounds every cell within reach while they are away. A cell
    not away (-1) within reach would put that bound below 0, and every point within reach
    is on the raster (they are not all where this says True)."""
    return _distance_floor(r, uv, far) >= np.maximum(need, 0.0)


def _distance_floor(r: ChartRaster, uv: np.ndarray, far: np.ndarray) -> np.ndarray:
    """A lower bound ``(n,)`` of a distance raster's values at every point within ``far``
    chart mm of ``uv`` where it is at least 0 (see :func:`_at_least_within`); below 0 or NaN
    where nothing is told."""
    h, w = r.values.shape
    margin = far + (math.sqrt(2.0) * r.cell + LIPSCHITZ_MARGIN_MM)
    lo, hi = r.origin, r.origin + np.array([w, h]) * r.cell
    on = ((uv[:, 0] - margin > lo[0]) & (uv[:, 1] - margin > lo[1])
          & (uv[:, 0] + margin < hi[0]) & (uv[:, 1] + margin < hi[1]))
    return np.where(on, r.at(uv, outside=-np.inf) - margin, -np.inf)


def drum_reach(drum: Drum) -> int:
    """Path samples within the drum's half diameter (:func:`drum_fits` reads that far)."""
    return int(math.ceil(drum.diameter_mm / 2 / PATH_STEP_MM))


def _within_reach_of_standing(ok: np.ndarray, first: np.ndarray, stop: np.ndarray,
                              reach: int) -> tuple[np.ndarray, np.ndarray]:
    """``(near (n,) bool, live (p,) bool)``: the samples within ``reach`` rows of a True sample
    of ``ok`` in their own path (path i: rows ``first[i]:stop[i]``), and the paths holding
    a True sample. Paths that tile the samples in order (as ``starts`` puts them) in one
    compiled pass (``coverage._ext.raster.within_reach``): equal to
    :func:`_within_reach_of_standing_reference`."""
    ok = np.asarray(ok, dtype=bool)
    first = np.asarray(first, dtype=np.int64)
    stop = np.asarray(stop, dtype=np.int64)
    n, p = len(ok), len(first)
    tiled = (len(stop) == p and reach >= 0 and (p == 0 and n == 0 or p > 0 and first[0] == 0 and stop[-1] == n
                                                and (stop >= first).all() and (first[1:] == stop[:-1]).all()))
    if not tiled or ok.ndim != 1:
        return _within_reach_of_standing_reference(ok, first, stop, reach)
    near, live = np.empty(n, dtype=np.uint8), np.empty(p, dtype=np.uint8)
    starts = np.ascontiguousarray(np.concatenate([first, stop[-1:]]), dtype=np.int64)
    _raster_kernel.within_reach(np.ascontiguousarray(ok).view(np.uint8), starts, int(reach), near, live)
    return near.view(bool), live.view(bool)


def _within_reach_of_standing_reference(ok: np.ndarray, first: np.ndarray, stop: np.ndarray,
                                        reach: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`_within_reach_of_standing`."""
    n = len(ok)
    path = np.repeat(np.arange(len(first)), stop - first)
    index = np.arange(n)
    lo = np.maximum(index - reach, first[path])
    hi = np.minimum(index + reach, stop[path] - 1)
    standing = np.concatenate([[0], np.cumsum(ok)])
    return (standing[hi + 1] - standing[lo]) > 0, (standing[stop] - standing[first]) > 0


def _near_standing(ok: np.ndarray, starts: np.ndarray | None, reach: int) -> np.ndarray:
    """Samples ``(n,) bool`` within ``reach`` rows of a True sample of ``ok`` in their own path
    (path i: rows ``starts[i]:starts[i + 1]``), and the first and last rows of each path
    holding a True sample."""
    starts = np.array([0, len(ok)], dtype=np.int64) if starts is None else np.asarray(starts, dtype=np.int64)
    first, stop = starts[:-1], starts[1:]
    out, live = _within_reach_of_standing(ok, first, stop, reach)
    live &= stop > first
    out[first[live]] = True
    out[stop[live] - 1] = True
    return out


def drum_fits(face, drum: Drum, uv: np.ndarray, width: np.ndarray, inside: ChartRaster,
              clearance: ChartRaster, straight: bool = True, tri: np.ndarray | None = None,
              starts: np.ndarray | None = None, where: np.ndarray | None = None) -> np.ndarray:
    """Where the drum may stand along a path ``(n, 2)``: its needle band (``width`` mm across)
    inside the region and no part of it over a keep-out.

    The band is checked at nine points across. The drum's D x W outline: on a straight path
    by the nearest keep-out across its width at each sample, then over the samples within
    D/2 before and after it (and D/2 beyond the path's ends); on a curved one (``straight``
    false: the rigid drum runs on along its tangent while the path turns away) by sampling
    each sample's own rectangle. Sample spacing is covered by ``need``. ``tri``: the
    samples' triangles if already known (``face.locate(uv)[0]``).

    Several paths at once: ``starts (p + 1,) int`` puts path i at rows
    ``starts[i]:starts[i + 1]``; each reads exactly as it would alone (every step is per
    sample except the travel direction, the filter along the path and its ends, which
    stop at the paths' ends).

    ``where (n,) bool``: judge only these samples (the others read False), for a caller
    that ands the result with a test they already fail. Each check then runs only where it
    can still decide something, and every sample judged reads as it would with no ``where``.
    """
    n = len(uv)
    starts = np.array([0, n], dtype=np.int64) if starts is None else np.asarray(starts, dtype=np.int64)
    if tri is None:
        tri, _ = face.locate(uv)
    scale = np.where(tri >= 0, face.linear_scale[np.maximum(tri, 0)], 1.0)
    gradient = path_gradient(uv, starts)
    # the drum's chart frame, per sample, built only where a check reads it (and the unit
    # travel it is built from: each row its own)
    per_mm_t, per_mm_a = np.zeros((n, 2)), np.zeros((n, 2))
    framed = np.zeros(n, dtype=bool)

    def frame(mask):
        todo = np.nonzero(mask & ~framed)[0]
        if len(todo):
            travel = gradient[todo]
            travel /= np.maximum(np.linalg.norm(travel, axis=1, keepdims=True), 1e-12)
            per_mm_t[todo], per_mm_a[todo] = skin_frame(face, tri[todo], travel, scale[todo])
            framed[todo] = True

    ok = tri >= 0 if where is None else (tri >= 0) & where
    band = np.linspace(-0.5, 0.5, 9)
    # the needles land where the drum's chart frame puts them, a first-order map from the
    # path sample (uv + band * width * across): keep the band's edge BAND_EDGE_SLACK of its
    # half width inside the region: every band point that far in, so the least of them.
    # The middle one (band 0.0) is the sample itself: where it is not that far in, neither
    # is the band, and that needs no frame
    slack = BAND_EDGE_SLACK * 0.5 * width / scale
    at = np.nonzero(ok)[0]
    ok[at] = inside.at(uv[at], outside=-1.0) >= slack[at]
    frame(ok)
    at = np.nonzero(ok)[0]
    if inside.distance:
        # the band's points lie within `far` chart mm of the sample: where its own cell bounds
        # them all, only the other samples are read point by point
        far = float(np.abs(band).max()) * np.abs(width[at]) * np.hypot(per_mm_a[at, 0], per_mm_a[at, 1])
        at = at[~_at_least_within(inside, uv[at], far, slack[at])]
    ok[at] = inside.min_along(uv[at], per_mm_a[at], band, width[at], outside=-1.0) >= slack[at]
    across_steps = np.linspace(-drum.width_mm / 2, drum.width_mm / 2, int(math.ceil(drum.width_mm / BODY_STEP_MM)) + 1)
    if not straight:
        along_steps = np.linspace(-drum.diameter_mm / 2, drum.diameter_mm / 2,
                                  int(math.ceil(drum.diameter_mm / BODY_STEP_MM)) + 1)
        ga, gb = np.meshgrid(along_steps, across_steps)
        # the body: uv + ga * along + gb * across over the D x W outline
        need = 0.5 * math.hypot(BODY_STEP_MM, BODY_STEP_MM) / scale
        at = np.nonzero(ok)[0]
        if clearance.distance:
            # the outline's points lie within `far` chart mm of the sample: where its own cell
            # bounds them all, only the other samples are read point by point
            far = (float(np.abs(ga).max()) * np.hypot(per_mm_t[at, 0], per_mm_t[at, 1])
                   + float(np.abs(gb).max()) * np.hypot(per_mm_a[at, 0], per_mm_a[at, 1]))
            at = at[~_at_least_within(clearance, uv[at], far, need[at])]
        ok[at] = clearance.min_over(uv[at], per_mm_t[at], per_mm_a[at], ga.ravel(), gb.ravel(),
                                    outside=np.inf) >= need[at]
        return ok
    reach = int(math.ceil(drum.diameter_mm / 2 / PATH_STEP_MM))
    first, stop = starts[:-1], starts[1:]
    # the nearest keep-out across the drum's width (uv + across_steps * across), then the
    # least of it over the samples within D/2 (clipped to the path, as mode "nearest" pads):
    # read only within D/2 of a sample still standing, so every window it sees is read
    near, live = _within_reach_of_standing(ok, first, stop, reach)   # live: paths with a sample standing
    # D/2 beyond each path's ends (first ends, then last ends), all in one lookup; only the
    # paths with a sample left can lose one. Their frames are built with the others'
    keep = (stop > first) & live
    ends = np.concatenate([first[keep], stop[keep] - 1])
    at_end = np.zeros(n, dtype=bool)
    at_end[ends] = True
    frame(near | at_end)
    clear = np.full(n, np.inf)
    at = np.nonzero(near)[0]
    need = 0.5 * math.hypot(BODY_STEP_MM, PATH_STEP_MM) / scale

    def across(rows):
        return clearance.min_along(uv[rows], per_mm_a[rows], across_steps, outside=np.inf)

    if not clearance.distance:
        clear[at] = across(at)
        # ndimage.minimum_filter1d(clear[a:b], size=2 * reach + 1, mode="nearest") of each live path
        clear = raster.window_min(clear, first[live], stop[live], reach)
    else:
        # where the sample's own cell bounds the keep-out distance across the drum (from
        # below, at least 0), the bound stands in for the least of its points: a window whose
        # least still reaches the need reaches it read point by point. The other windows are
        # read again with their bounded samples read point by point
        floor = _distance_floor(clearance, uv[at], float(np.abs(across_steps).max())
                                * np.hypot(per_mm_a[at, 0], per_mm_a[at, 1]))
        sure = floor >= 0.0
        clear[at[~sure]] = across(at[~sure])
        clear[at[sure]] = floor[sure]
        least = raster.window_min(clear, first[live], stop[live], reach)
        unsure = ok & ~(least >= need)
        bounded = at[sure]
        redo = bounded[_near_standing(unsure, starts, reach)[bounded]]
        if len(redo):
            clear[redo] = across(redo)
            least = np.where(unsure, raster.window_min(clear, first[live], stop[live], reach), least)
        clear = least
    ok &= clear >= need
    if len(ends) == 0:
        return ok
    first, stop = first[keep], stop[keep]
    sign = np.concatenate([np.full(len(first), -1.0), np.full(len(first), 1.0)])
    ahead = np.linspace(0.0, drum.diameter_mm / 2, reach + 1)[1:]
    blocked = ends_blocked(clearance, uv[ends], per_mm_t[ends], per_mm_a[ends], sign, ahead, across_steps,
                           need[ends])
    for j in np.nonzero(blocked)[0].tolist():
        i = j % len(first)
        a, b = int(first[i]), int(stop[i])
        if j < len(first):
            ok[a:min(a + reach + 1, b)] = False
        else:
            ok[max(a, b - 1 - reach):b] = False
    return ok


def ends_blocked(clearance: ChartRaster, uv: np.ndarray, along: np.ndarray, across: np.ndarray,
                 sign: np.ndarray, ahead: np.ndarray, steps: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Whether the drum run on past a path's end meets a keep-out ``(e,) bool``: end j at
    ``uv[j]`` (chart vectors of one skin mm ``along`` the travel and ``across`` it), its
    outline points ``(uv + (sign * ahead[k]) * along) + steps[a] * across`` for every k and
    a, any of them reading below ``need[j]`` on ``clearance`` (+inf off it). One compiled
    pass that stops at the first point below (``coverage._ext.raster.ends_blocked``): equal to
    :func:`ends_blocked_reference`."""
    uv, along, across = _c(uv).reshape(-1, 2), _c(along).reshape(-1, 2), _c(across).reshape(-1, 2)
    sign, ahead, steps, need = (_c(x).reshape(-1) for x in (sign, ahead, steps, need))
    e = len(uv)
    if not (len(along) == len(across) == len(sign) == len(need) == e):
        raise ValueError("ends_blocked: one travel, across vector, sign and need per end are needed")
    values = np.asarray(clearance.values)
    if values.ndim != 2:
        raise ValueError(f"a raster is (h, w); got values of shape {values.shape}")
    if values.dtype != np.float64 or not values.flags.c_contiguous:
        return ends_blocked_reference(clearance, uv, along, across, sign, ahead, steps, need)
    out = np.zeros(e, dtype=np.uint8)
    # shift[j, k] = sign[j] * ahead[k], as the reference forms it before the product
    shift = np.ascontiguousarray(sign[:, None] * ahead[None, :]).reshape(-1)
    _raster_kernel.ends_blocked(values, float(clearance.origin[0]), float(clearance.origin[1]),
                                float(clearance.cell), uv, along, across, shift, steps, need, out)
    return out.astype(bool)


def ends_blocked_reference(clearance: ChartRaster, uv: np.ndarray, along: np.ndarray, across: np.ndarray,
                           sign: np.ndarray, ahead: np.ndarray, steps: np.ndarray, need: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`ends_blocked` (the raster read by :func:`coverage.raster.lookup_reference`)."""
    tip = uv[:, None, :] + (sign[:, None] * ahead[None, :])[:, :, None] * along[:, None, :]
    edge = tip[:, :, None, :] + steps[None, None, :, None] * across[:, None, None, :]
    beyond = raster.lookup_reference(clearance.values, clearance.origin, clearance.cell, edge.reshape(-1, 2),
                                     np.inf).reshape(len(uv), -1)
    return (beyond < need[:, None]).any(axis=1)


def path_gradient(uv: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``np.gradient(uv[a:b], axis=0)`` of each path ``a, b = starts[i], starts[i + 1]``, side
    by side ``(n, d)`` (zeros for a one-sample path), with numpy's own arithmetic."""
    g = np.zeros_like(uv, dtype=np.float64)
    if len(uv) > 2:
        g[1:-1] = (uv[2:] - uv[:-2]) / 2.0
    first, stop = starts[:-1], starts[1:]
    one = first[stop - first == 1]
    first, stop = first[stop - first >= 2], stop[stop - first >= 2]
    g[first] = uv[first + 1] - uv[first]     # numpy divides these by a unit spacing: exact
    g[stop - 1] = uv[stop - 1] - uv[stop - 2]
    g[one] = 0.0
    return g


def band_widths(face, zones, region: Region, conform: Conformity, min_share: float = 0.05) -> list[float]:
    """Band widths (mm) the drum shows where it works in a region, each on ``min_share`` of it."""
    in_region = np.isin(zones.triangle_labels, [zones.names.index(n) for n in region.zones])
    corners = face.faces[in_region]
    width = conform.swath_mm[corners].min(axis=1)
    works = conform.conforms[corners].all(axis=1) & (width > 0)
    area = face.triangle_area_mm2[in_region]
    total = area[works].sum()
    if total <= 0:
        return []
    return sorted((float(b) for b in np.unique(width[works]) if area[works & (width == b)].sum() >= min_share * total),
                  reverse=True)


class Occupancy:
    """Skin already under a needle band in one sweep (a chart raster), so bands never overlap."""

    def __init__(self, bounds, cell: float = 0.5):
        self.origin = np.asarray(bounds[:2], dtype=float) - 25.0
        self.cell = cell
        w, h = (int(x) for x in np.ceil((np.asarray(bounds[2:]) + 25.0 - self.origin) / cell) + 1)
        self.taken = np.zeros((h, w), dtype=bool)

    @staticmethod
    def frame(face, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chart unit vectors across the travel ``(n, 2)`` and chart scale ``(n,)`` along a path."""
        return Occupancy.frames(face, [uv])[0]

    @staticmethod
    def frames(face, paths: list) -> list:
        """:meth:`frame` of each path (``(n_i, 2)``, two samples or more), computed at once."""
        if not paths:
            return []
        uv = np.concatenate(paths)
        starts = np.concatenate([[0], np.cumsum([len(p) for p in paths])]).astype(np.int64)
        across, scale = Occupancy.frames_joined(face, uv, starts)
        return [(across[a:b], scale[a:b]) for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]

    @staticmethod
    def frames_joined(face, uv: np.ndarray, starts: np.ndarray, tri=None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`frames` of paths side by side (path i: rows ``starts[i]:starts[i + 1]``), joined
        (``tri``: ``face.locate(uv)[0]`` if already known)."""
        travel = path_gradient(uv, starts)       # np.gradient of each path
        travel /= np.maximum(np.linalg.norm(travel, axis=1, keepdims=True), 1e-12)
        across = np.stack([-travel[:, 1], travel[:, 0]], axis=1)
        if tri is None:
            tri, _ = face.locate(uv)
        scale = np.where(tri >= 0, face.linear_scale[np.maximum(tri, 0)], 1.0)
        return across, scale

    def _band(self, face, run: Run, inset_mm: float, step_mm: float, frame=None) -> tuple:
        """``(uv, across, half, scale, f)``: the band of sample i is
        ``uv[i] + ((f[j] * half[i]) / scale[i]) * across[i]`` over j."""
        across, scale = self.frame(face, run.uv) if frame is None else frame
        half = np.maximum(run.swath_mm / 2.0 - inset_mm, 0.0)
        m = int(math.ceil(float(half.max(initial=0.0)) * 2 / step_mm)) + 1
        f = np.linspace(-1.0, 1.0, max(m, 2))
        return run.uv, across, half, scale, f

    def band_points(self, face, run: Run, inset_mm: float, step_mm: float) -> np.ndarray:
        """Chart points ``(n, m, 2)`` across each sample's band, ``inset_mm`` in from its edges."""
        uv, across, half, scale, f = self._band(face, run, inset_mm, step_mm)
        return uv[:, None, :] + (f[None, :, None] * half[:, None, None] / scale[:, None, None]) * across[:, None, :]

    def free(self, face, run: Run, frame=None) -> np.ndarray:
        """Samples ``(n,) bool`` whose band (inset by half a ring) touches no taken skin
        (``frame``: :meth:`frame` of the run's path, if already known)."""
        band = self._band(face, run, run_ring_inset(run), self.cell, frame)
        return ~raster.band_taken(self.taken, self.origin, self.cell, *band)

    def take(self, face, run: Run, frame=None) -> None:
        band = self._band(face, run, 0.0, self.cell / 2, frame)
        raster.band_take(self.taken, self.origin, self.cell, *band)


def run_ring_inset(run: Run) -> float:
    """How far in from a band's edge overlap is checked: half a ring (bands may touch)."""
    return run.meta.get("ring_pitch_mm", 2.5) / 2.0


@functools.lru_cache(maxsize=16)
def gaussian_weights(sigma: float) -> np.ndarray:
    """The weights ``ndimage.gaussian_filter1d(x, sigma)`` correlates ``x`` with, read off its
    response to a unit impulse (each output there is one weight times one): correlating
    with them is that filter without building its kernel on every call."""
    radius = int(4.0 * float(sigma) + 0.5)      # the filter's default truncate of 4 sigma
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    weights = ndimage.gaussian_filter1d(impulse, sigma, mode="constant")[::-1].copy()
    weights.setflags(write=False)
    return weights


def _smooth_nan(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 1D series that ignores (and keeps) its NaN gaps."""
    ok = np.isfinite(values)
    if sigma <= 0 or not ok.any():
        return values
    # both series in one call: the filter runs along each row alone
    weight, total = ndimage.correlate1d(np.stack([ok.astype(float), np.where(ok, values, 0.0)]),
                                        gaussian_weights(sigma), axis=-1, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / weight
    return np.where(ok, out, np.nan)


def _grid_in(polygon, step: float) -> np.ndarray:
    minx, miny, maxx, maxy = polygon.bounds
    uu, vv = np.meshgrid(np.arange(minx, maxx + step, step), np.arange(miny, maxy + step, step))
    pts = np.stack([uu.ravel(), vv.ravel()], axis=1)
    with GEOS_LOCK:
        inside = shapely.contains_xy(polygon, pts[:, 0], pts[:, 1])
    return pts[inside] if inside.any() else np.asarray([polygon.representative_point().coords[0]])


def resample_on_skin(face, uv: np.ndarray, step_mm: float, points: np.ndarray | None = None) -> np.ndarray:
    """Resample a chart polyline so consecutive points are ~``step_mm`` apart on the skin
    (``points``: its lift ``face.lift(uv).points``, if already known)."""
    if len(uv) < 2:
        return uv
    pts = face.lift(uv).points if points is None else points
    return _paths.resample(uv, pts, [0, len(uv)], step_mm)[0]


def runs_in(mask: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The True stretches of a mask within each of its segments (segment i: rows
    ``starts[i]:starts[i + 1]``), in order: ``(segment, start, stop)`` ``(k,) int`` each,
    start and stop (half-open) counted in the whole mask; :func:`runs_of` of each segment."""
    m = np.asarray(mask, dtype=bool)
    starts = np.asarray(starts, dtype=np.int64)
    n = len(m)
    head = np.zeros(n, dtype=bool)      # a segment's first row has no predecessor in it
    head[starts[:-1][starts[:-1] < n]] = True
    tail = np.zeros(n, dtype=bool)      # nor its last row a successor
    tail[starts[1:][starts[1:] > 0] - 1] = True
    before = np.zeros(n, dtype=bool)
    before[1:] = m[:-1]
    after = np.zeros(n, dtype=bool)
    after[:-1] = m[1:]
    rise = np.flatnonzero(m & ~(before & ~head))
    fall = np.flatnonzero(m & ~(after & ~tail)) + 1
    return np.searchsorted(starts, rise, side="right") - 1, rise, fall


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges ``[(start, stop), ...]`` of the True stretches of a mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))


MIN_PHASE_TRIALS = 3  # fewest phases of the line family tried across one swath (phase_trials)


def line_runs(sweeps: ZoneSweeps, offset: float, sweep_index: int) -> list[list[Run]]:
    """The runs of every line of the family at ``offset`` (a fraction of a swath), per line in order."""
    return line_runs_many([(sweeps, offset, sweep_index)])[0]


def _shares_checks(a: ZoneSweeps, b: ZoneSweeps) -> bool:
    """Whether two families read their samples alike (:meth:`ZoneSweeps.sample_validity`
    reads the face, the drum, its conformity, the region's raster and the keep-outs only)."""
    return (a.face is b.face and a.drum == b.drum and a.conform is b.conform and a.inside is b.inside
            and a.clearance is b.clearance)


def line_runs_many(items: list) -> list[list[list[Run]]]:
    """:func:`line_runs` of each ``(sweeps, offset, sweep_index)`` of ``items``, in order.

    The families that read their samples alike (one region and direction: the main family
    and the other band widths') have every line of every item lifted, resampled and
    checked in one pass: each step is per point or per stretch, so each stretch reads as
    it would alone, and each item is what :func:`line_runs` builds for it alone.
    """
    out: list = [None] * len(items)
    todo = []
    for i, (sweeps, offset, sweep_index) in enumerate(items):
        kept = sweeps.kept_trials.pop(offset, None)
        if kept is None:
            todo.append(i)
        elif sweep_index == 0:   # best_offset built this family already (as sweep 0): hand it out once
            out[i] = kept
        else:
            out[i] = [[Run(r.zone, r.theta_deg, sweep_index, r.line, r.uv, r.swath_mm, r.kappa_cross,
                           meta=dict(r.meta), tri=r.tri)
                       for r in runs] for runs in kept]
    while todo:
        first = items[todo[0]][0]
        group = [i for i in todo if _shares_checks(items[i][0], first)]
        todo = [i for i in todo if i not in group]
        built = _line_runs_built([items[i] for i in group])
        for i, lines in zip(group, built):
            out[i] = lines
    return out


def _line_runs_built(items: list) -> list[list[list[Run]]]:
    """The runs of each ``(sweeps, offset, sweep_index)`` (families that read alike), built."""
    face = items[0][0].face
    founds = [sweeps.lines(offset) for sweeps, offset, _ in items]
    out = [[] for _ in items]
    # every line of every item, in order: line g is one of item_of[g]'s
    item_of = [i for i, found in enumerate(founds) for _ in found]
    every = [line for found in founds for line in found]
    if not every:
        return out
    # every line's stretches on the chart, then all of them resampled and checked at once
    # (each step per point or per stretch, so each stretch reads as it would alone)
    raw = np.concatenate([r for _, r, _ in every])
    line_starts = np.concatenate([[0], np.cumsum([len(r) for _, r, _ in every])]).astype(np.int64)
    on_chart = np.isfinite(raw).all(axis=1)
    finite = np.nonzero(on_chart)[0]
    lifted = face.lift(raw[finite])            # locates as face.locate does, and lifts
    on_chart[finite] = lifted.inside
    points = np.empty((len(raw), 3))
    points[finite] = lifted.points
    line, first, stop = runs_in(on_chart, line_starts)
    long_enough = stop - first >= 2
    line, first, stop = line[long_enough], first[long_enough], stop[long_enough]
    if len(line) == 0:
        return out
    edges = np.zeros(len(raw) + 1, dtype=np.int64)
    edges[first] += 1
    edges[stop] -= 1
    rows = np.flatnonzero(np.cumsum(edges[:-1]) > 0)    # the stretches' rows, in order
    uv, starts = _paths.resample(raw[rows], points[rows], np.concatenate([[0], np.cumsum(stop - first)]),
                                 PATH_STEP_MM)
    # a stretch too short for one run yields none: leave it out
    sizes = np.diff(starts)
    if (sizes < MIN_RUN_SAMPLES).any():
        keep = sizes >= MIN_RUN_SAMPLES
        uv = uv[np.repeat(keep, sizes)]
        line, sizes = line[keep], sizes[keep]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if len(line) == 0:
            return out
    design = np.repeat(np.array([every[g][2] for g in line.tolist()], dtype=np.float64), sizes)
    ok, w, kc, tri = items[0][0].sample_validity(uv, design, starts, valid_only=True, located=True)
    per_line = [[] for _ in every]
    path, first, stop = runs_in(ok, starts)
    for j, a, b in zip(path.tolist(), first.tolist(), stop.tolist()):
        if (b - a - 1) * PATH_STEP_MM < MIN_STROKE_MM:
            continue
        g = int(line[j])
        sweeps, _, sweep_index = items[item_of[g]]
        per_line[g].append(Run(sweeps.name, sweeps.theta_deg, sweep_index, every[g][0], uv[a:b], w[a:b], kc[a:b],
                               meta={"ring_pitch_mm": sweeps.drum.ring_pitch_mm, "family": sweeps.family},
                               tri=tri[a:b]))
    for g, runs in enumerate(per_line):
        if runs:
            out[item_of[g]].append(runs)
    return out


def phase_trials(n_sweeps: int) -> int:
    """How many phases :func:`best_offset` tries across one swath for ``n_sweeps`` sweeps of
    a direction: the least multiple of ``n_sweeps`` that is at least :data:`MIN_PHASE_TRIALS`
    (so each sweep's phase, shifted by ``j / n_sweeps`` from a tried one, is a tried one too)."""
    n = max(int(n_sweeps), 1)
    return n * -(-MIN_PHASE_TRIALS // n)


def best_offset(sweeps: ZoneSweeps, n_sweeps: int = 1) -> float:
    """The phase of the line family (a fraction of a swath) that lets the drum roll the longest.

    Lines placed from the zone's lowest edge can leave the last line's needle band just
    outside the zone; trying a few phases across one swath recovers that line. The phases
    tried are ``k / T`` (``T`` = :func:`phase_trials` of the ``n_sweeps`` sweeps of the
    direction): sweep ``j`` rolls the lines at the best phase plus ``j / n_sweeps`` of a
    swath (:func:`sweep_offset`), itself one of them, so every sweep takes its lines from a
    trial and no line is built twice.
    """
    count = phase_trials(n_sweeps)
    trials = np.arange(count) / count
    found = line_runs_many([(sweeps, float(o), 0) for o in trials])
    scores = [sum(len(r.uv) for runs in lines for r in runs) for lines in found]
    # each trial's lines (as sweep 0) kept for the sweep whose phase it is
    sweeps.kept_trials.update(zip(trials.tolist(), found))
    return float(trials[int(np.argmax(scores))])


def sweep_offset(base_offset: float, sweep_index: int, n_sweeps: int) -> float:
    """The phase of sweep ``sweep_index`` of ``n_sweeps`` (a fraction of a swath, in [0, 1)):
    ``base_offset + sweep_index / n_sweeps`` modulo one swath, the sweeps spread evenly
    across it. Where ``base_offset`` is one of :func:`best_offset`'s phases ``k / T`` it is
    worked in whole numbers, ``((k + sweep_index T / n_sweeps) mod T) / T``: exactly the
    tried phase whose lines the sweep takes."""
    n = max(int(n_sweeps), 1)
    count = phase_trials(n)
    if math.isfinite(base_offset):
        k = round(base_offset * count)
        if k / count == base_offset:
            return ((k + sweep_index * (count // n)) % count) / count
    return (base_offset + sweep_index / n) % 1.0


def sweep_runs(sweeps: ZoneSweeps, sweep_index: int, n_sweeps: int, base_offset: float = 0.0) -> list[list[Run]]:
    """The runs of every line of one sweep, per line (lines in order across the passes).

    Repeated sweeps of one direction are spread across one swath (sweep j of n shifted by
    j/n of it, :func:`sweep_offset`) and along one needle pitch: their needles do not fall
    into the same holes, the seams where the swath changes do not stack, and the zone's
    edge strips, which one sweep leaves, the next ones reach.
    """
    return sweep_runs_many([(sweeps, sweep_index, n_sweeps, base_offset)])[0]


def sweep_runs_many(items: list) -> list[list[list[Run]]]:
    """:func:`sweep_runs` of each ``(sweeps, sweep_index, n_sweeps, base_offset)`` of ``items``,
    in order, their lines built together (:func:`line_runs_many`)."""
    built = line_runs_many([(sweeps, sweep_offset(base_offset, sweep_index, n_sweeps), sweep_index)
                            for sweeps, sweep_index, n_sweeps, base_offset in items])
    for (sweeps, sweep_index, _, _), lines in zip(items, built):
        for j, runs in enumerate(lines):
            for r in runs:
                r.phase_mm = ((sweep_index * GOLDEN + j * GOLDEN * GOLDEN) % 1.0) * sweeps.drum.needle_pitch_mm
    return built


def claim(face, lines: list[list[Run]], occupancy: Occupancy) -> list[list[Run]]:
    """Keep the stretches of each run whose band is still free in this sweep, and take them.

    All runs in one kernel call (``coverage._ext.raster.claim_bands``), in order, as
    :func:`claim_reference` claims them one by one (which answers where a value is not finite).
    """
    runs = [r for rr in lines for r in rr]
    if not runs:
        return []
    uv = np.ascontiguousarray(np.concatenate([r.uv for r in runs]), dtype=np.float64)
    sizes = np.array([len(r.uv) for r in runs], dtype=np.int64)
    swath = np.ascontiguousarray(np.concatenate([r.swath_mm for r in runs]), dtype=np.float64)
    if (sizes < 2).any() or len(swath) != len(uv) or not (np.isfinite(uv).all() and np.isfinite(swath).all()):
        return claim_reference(face, lines, occupancy)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    tri = None
    if all(r.tri is not None and len(r.tri) == len(r.uv) for r in runs):
        tri = np.concatenate([r.tri for r in runs])       # located already: face.locate(uv)[0]
    across, scale = Occupancy.frames_joined(face, uv, starts, tri)
    if not (np.isfinite(across).all() and np.isfinite(scale).all()):
        return claim_reference(face, lines, occupancy)
    inset = np.array([run_ring_inset(r) for r in runs], dtype=np.float64)
    # room for the widest band's points (linspace counts of the free and the taken bands)
    widest = float(np.abs(swath).max(initial=0.0)) / 2.0 + float(np.abs(inset).max(initial=0.0)) + 1.0
    f = np.empty(int(math.ceil(widest * 2 / (occupancy.cell / 2))) + 3)
    n = len(uv)
    part_run, part_a, part_b = (np.empty(n, dtype=np.int64) for _ in range(3))
    count = _raster_kernel.claim_bands(occupancy.taken.view(np.uint8), uv, across, scale, swath, starts, inset,
                                       float(occupancy.origin[0]), float(occupancy.origin[1]),
                                       float(occupancy.cell), PATH_STEP_MM, MIN_STROKE_MM, f,
                                       np.empty(n, dtype=np.uint8), part_run, part_a, part_b)
    kept = [[] for _ in runs]
    for k, a, b in zip(part_run[:count].tolist(), part_a[:count].tolist(), part_b[:count].tolist()):
        r = runs[k]
        kept[k].append(Run(r.zone, r.theta_deg, r.sweep, r.line, r.uv[a:b], r.swath_mm[a:b], r.kappa_cross[a:b],
                           r.phase_mm, dict(r.meta), tri=None if r.tri is None else r.tri[a:b]))
    out, k = [], 0
    for rr in lines:
        line_kept = [part for parts in kept[k:k + len(rr)] for part in parts]
        k += len(rr)
        if line_kept:
            out.append(line_kept)
    return out


def claim_reference(face, lines: list[list[Run]], occupancy: Occupancy) -> list[list[Run]]:
    """NumPy twin of :func:`claim`: each run's free stretches found and taken one by one."""
    out = []
    frames = iter(occupancy.frames(face, [r.uv for runs in lines for r in runs]))
    for runs in lines:
        kept = []
        for r in runs:
            frame = next(frames)
            free = occupancy.free(face, r, frame)
            for a, b in runs_of(free):
                if (b - a - 1) * PATH_STEP_MM < MIN_STROKE_MM:
                    continue
                part = Run(r.zone, r.theta_deg, r.sweep, r.line, r.uv[a:b], r.swath_mm[a:b], r.kappa_cross[a:b],
                           r.phase_mm, dict(r.meta))
                # the whole run: the same path, the same frame
                occupancy.take(face, part, frame if (a, b) == (0, len(free)) else None)
                kept.append(part)
        if kept:
            out.append(kept)
    return out


# --- headlands -------------------------------------------------------------------------------

HEADLAND_MIN_TURN_RADIUS_MM = 30.0   # a rigid drum steered tighter than this skids sideways
HEADLAND_SMOOTH_MM = 4.0             # smoothing of border paths along their length
HEADLAND_INSET_MM = 0.5              # the band's outer edge stays this far inside the border
CONTOUR_REUSE_AREA = 1.25            # a cut contour generator serves a higher level while its box
                                     # is at most this many times the level's own


def border_distance(face, region: Region) -> ChartRaster:
    """Skin distance (mm, approximate) from each cell inside a region to the region's border:
    the region raster's chart distance times the chart scale of the triangle under each
    cell's centre (1 off the chart), -1 outside. One compiled pass over the cells
    (``coverage._ext.raster.border_values``): equal to :func:`border_distance_reference`."""
    r = region.inside
    values = np.ascontiguousarray(r.values, dtype=np.float64)
    grid = face.chart_grid
    linear_scale = np.ascontiguousarray(face.linear_scale, dtype=np.float64).reshape(-1)
    if values.ndim != 2 or len(linear_scale) != len(grid.affine):
        return border_distance_reference(face, region)
    out = np.empty(values.shape)
    _raster_kernel.border_values(values, float(r.origin[0]), float(r.origin[1]), float(r.cell), grid.affine,
                                 grid.start, grid.items, float(grid.origin[0]), float(grid.origin[1]),
                                 float(grid.cell), int(grid.shape[0]), int(grid.shape[1]), 1e-9, linear_scale, out)
    return ChartRaster(r.origin, r.cell, out)


def border_distance_reference(face, region: Region) -> ChartRaster:
    """NumPy twin of :func:`border_distance`."""
    r = region.inside
    h, w = r.values.shape
    # only the cells inside are scaled (the others read -1): locate their centres alone
    ii, jj = np.nonzero(r.values >= 0)
    centres = r.origin + (np.stack([jj, ii], -1) + 0.5) * r.cell
    tri, _ = lifting.locate_reference(face.chart_grid, centres)
    scale = np.where(tri >= 0, face.linear_scale[np.maximum(tri, 0)], 1.0)
    values = np.full((h, w), -1.0)
    values[ii, jj] = r.values[ii, jj] * scale
    return ChartRaster(r.origin, r.cell, values)


def path_curvatures(face, curvature: Curvature, uv: np.ndarray, lifted=None,
                    starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal curvature along and across a chart path's own travel direction, and its lift
    (``lifted``: ``face.lift(uv)``, if already known). Several paths at once: ``starts
    (p + 1,) int`` puts path i at rows ``starts[i]:starts[i + 1]`` (each as alone).

    From the travel's gradient on, one compiled pass per sample
    (``coverage._ext.curvature.path_normal_curvatures``: its six Euler curvatures at the
    triangle's corners and their sums, with NumPy's arithmetic in its order) for the arrays a
    lift gives (C-contiguous): equal to :func:`path_curvatures_reference` bit for bit."""
    lifted = face.lift(uv) if lifted is None else lifted
    if starts is None:
        tangent = np.gradient(lifted.points, axis=0)
    else:
        tangent = path_gradient(lifted.points, np.asarray(starts, dtype=np.int64))
    arrays = curvature.kernel_arrays() if isinstance(curvature, Curvature) else None
    n = len(tangent)
    normals, tri, bary = lifted.normals, np.asarray(lifted.tri), lifted.bary
    if (arrays is None or not all(isinstance(x, np.ndarray) and x.dtype == np.float64 and x.shape == (n, 3)
                                  and x.flags.c_contiguous for x in (tangent, normals, bary))
            or tri.shape != (n,) or tri.dtype != np.int64 or not _faces_in_range(face, tri, len(arrays[0]))):
        return _path_curvatures_from(face, curvature.normal_curvature, lifted, tangent)
    along, cross = np.empty(n), np.empty(n)
    _curvature_kernel.path_normal_curvatures(*arrays, _faces_int64(face), tangent, normals, np.ascontiguousarray(tri),
                                             bary, along, cross)
    return along, cross, lifted.inside


def _faces_int64(face) -> np.ndarray:
    return np.ascontiguousarray(face.faces, dtype=np.int64)


_CORNER_SPAN = weakref.WeakKeyDictionary()   # face -> (its faces array, least and largest corner index)


def _faces_in_range(face, tri: np.ndarray, vertices: int) -> bool:
    """Whether every ``max(tri, 0)`` names a triangle of the face whose corners are vertices
    ``0 .. vertices - 1`` (as the kernels read them without checking)."""
    faces = face.faces
    try:
        entry = _CORNER_SPAN.get(face)
    except TypeError:       # not weakly referable: not kept
        entry = None
    if entry is None or entry[0] is not faces:
        array = np.asarray(faces)
        if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
            return False
        entry = (faces, int(array.min()), int(array.max()))
        try:
            _CORNER_SPAN[face] = entry
        except TypeError:
            pass
    if len(tri) and int(tri.max()) >= len(entry[0]):
        return False
    return 0 <= entry[1] and entry[2] < vertices


def path_curvatures_reference(face, curvature: Curvature, uv: np.ndarray, lifted=None,
                              starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy twin of :func:`path_curvatures`."""
    lifted = face.lift(uv) if lifted is None else lifted
    if starts is None:
        tangent = np.gradient(lifted.points, axis=0)
    else:
        tangent = path_gradient(lifted.points, np.asarray(starts, dtype=np.int64))
    return _path_curvatures_from(face, functools.partial(normal_curvature_reference, curvature), lifted, tangent)


def _path_curvatures_from(face, normal_curvature, lifted, tangent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`path_curvatures_reference` from the travel's gradient ``tangent`` on (changed in
    place), the corners' curvatures by ``normal_curvature(vertex, direction)``."""
    tangent -= np.einsum("ij,ij->i", tangent, lifted.normals)[:, None] * lifted.normals
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    across = np.cross(lifted.normals, tangent)
    corners = face.faces[np.maximum(lifted.tri, 0)]
    along = sum(lifted.bary[:, j] * normal_curvature(corners[:, j], tangent) for j in range(3))
    cross = sum(lifted.bary[:, j] * normal_curvature(corners[:, j], across) for j in range(3))
    return along, cross, lifted.inside


def turn_radius_mm(face, uv: np.ndarray, lifted=None, starts: np.ndarray | None = None) -> np.ndarray:
    """The path's turning radius within the skin at each sample (inf where it runs straight).

    Geodesic, not 3D, curvature: the turn of the travel direction in the tangent plane,
    which is what steering a rigid drum costs (following the skin's own bulge is free).
    ``lifted``: ``face.lift(uv)``, if already known. Several paths at once: ``starts
    (p + 1,) int`` puts path i at rows ``starts[i]:starts[i + 1]`` (each as alone).
    """
    lifted = face.lift(uv) if lifted is None else lifted
    if starts is not None:
        return _turn_radius_paths(lifted, np.asarray(starts, dtype=np.int64))
    pts, normal = lifted.points, lifted.normals
    seg = np.diff(pts, axis=0)
    length = np.linalg.norm(seg, axis=1)
    n_mid = normal[1:-1]
    a, b = seg[:-1], seg[1:]
    a = a - np.einsum("ij,ij->i", a, n_mid)[:, None] * n_mid
    b = b - np.einsum("ij,ij->i", b, n_mid)[:, None] * n_mid
    turn = np.abs(np.arctan2(np.einsum("ij,ij->i", np.cross(a, b), n_mid), np.einsum("ij,ij->i", a, b)))
    bend = np.zeros(len(uv))   # curvature of the path in the skin, 1/mm
    bend[1:-1] = turn / np.maximum((length[:-1] + length[1:]) / 2, 1e-12)
    # averaged over a few samples, so one kinked sample does not decide; the largest nearby
    bend = ndimage.maximum_filter1d(ndimage.uniform_filter1d(bend, 5, mode="nearest"), 3, mode="nearest")
    with np.errstate(divide="ignore"):
        return np.where(bend > 1e-12, 1.0 / bend, np.inf)


def _turn_radius_paths(lifted, starts: np.ndarray) -> np.ndarray:
    """:func:`turn_radius_mm` of paths side by side: the same per-sample arithmetic, each
    path's ends and filters kept within it."""
    pts, normal = lifted.points, lifted.normals
    n = len(pts)
    bend = np.zeros(n)
    if n > 2:
        seg = np.diff(pts, axis=0)
        length = np.linalg.norm(seg, axis=1)
        n_mid = normal[1:-1]
        a, b = seg[:-1], seg[1:]
        a = a - np.einsum("ij,ij->i", a, n_mid)[:, None] * n_mid
        b = b - np.einsum("ij,ij->i", b, n_mid)[:, None] * n_mid
        turn = np.abs(np.arctan2(np.einsum("ij,ij->i", np.cross(a, b), n_mid), np.einsum("ij,ij->i", a, b)))
        bend[1:-1] = turn / np.maximum((length[:-1] + length[1:]) / 2, 1e-12)
    first, stop = starts[:-1], starts[1:]
    nonempty = stop > first
    bend[first[nonempty]] = 0.0       # a path's ends have no turn of their own
    bend[stop[nonempty] - 1] = 0.0
    for i, j in zip(first[nonempty].tolist(), stop[nonempty].tolist()):
        bend[i:j] = ndimage.maximum_filter1d(ndimage.uniform_filter1d(bend[i:j], 5, mode="nearest"), 3,
                                             mode="nearest")
    with np.errstate(divide="ignore"):
        return np.where(bend > 1e-12, 1.0 / bend, np.inf)


class Headland:
    """Passes along a region's border, half a swath inside it, so the drum's band reaches
    the strip that the straight lines leave (they cannot cross the border).

    The path is the level set of the skin distance to the border at half the headland's
    design swath (the band the drum shows most along it) plus a half-millimetre inset. It is
    rolled where the band at the contact is no wider than that design (narrower leaves a
    thin gap at the border, never a crossing), the drum conforms along the path's own
    direction, the path does not turn tighter than a rigid drum can steer, the band lies in
    the region and the drum's outline is clear of every keep-out.
    """

    def __init__(self, zones, region: Region, drum: Drum, clearance: ChartRaster):
        self.face, self.region, self.drum, self.clearance = zones.face, region, drum, clearance
        self.curvature = zones.face.curvature(drum_curvature_radius_mm(drum))
        self.border = border_distance(zones.face, region)
        self.design = self._design()

    @functools.cached_property
    def _contours(self):
        """The contour generator of the border distance (built once: each sweep asks one level)."""
        import contourpy

        r = self.border
        h, w = r.values.shape
        x = r.origin[0] + (np.arange(w) + 0.5) * r.cell
        y = r.origin[1] + (np.arange(h) + 0.5) * r.cell
        return contourpy.contour_generator(x, y, r.values, **CONTOUR_OPTIONS)

    def _contours_above(self, level_mm: float):
        """A contour generator that gives :attr:`_contours`' lines at ``level_mm`` and every
        level above it, exactly (the same arrays, in the same order), or None where no cell
        reaches ``level_mm`` (no lines there or above): the raster cut to the rows and columns
        of the cells that reach it, and one more on each side. Every line lies within that box
        and never meets its cut sides (all of whose cells read below the level), the
        generator walks the box's cells in the order it walks them on the whole raster, and
        a line's points are interpolated from the same values: the search is a fraction of
        the raster (about three fifths on the bundled face's cheeks)."""
        import contourpy

        r = self.border
        reach = r.values >= level_mm
        rows, cols = np.flatnonzero(reach.any(axis=1)), np.flatnonzero(reach.any(axis=0))
        if not len(rows):
            return None
        h, w = r.values.shape
        r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
        c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
        if (r0, r1, c0, c1) == (0, h, 0, w):
            return self._contours
        # a generator cut for a level at or below this one serves it as exactly (its box holds
        # this one's, and its cut sides read below both): the design's, at half the drum's
        # width, serves the sweeps' levels above it. Taken while its box is not much larger
        # (each line search walks the box; a new generator costs about three searches)
        area = (r1 - r0) * (c1 - c0)
        for low, box, cut in self._cuts:
            if low <= level_mm and (box[1] - box[0]) * (box[3] - box[2]) <= CONTOUR_REUSE_AREA * area:
                return cut
        x = r.origin[0] + (np.arange(w) + 0.5) * r.cell
        y = r.origin[1] + (np.arange(h) + 0.5) * r.cell
        cut = contourpy.contour_generator(x[c0:c1], y[r0:r1], r.values[r0:r1, c0:c1], **CONTOUR_OPTIONS)
        self._cuts.append((float(level_mm), (r0, r1, c0, c1), cut))
        return cut

    @functools.cached_property
    def _cuts(self) -> list:
        """``[(level, (r0, r1, c0, c1), generator)]``: the cut generators :meth:`_contours_above`
        built, each with the level it was cut for and its box of the raster."""
        return []

    def _loops(self, level_mm: float, min_samples: int = 0) -> list:
        """The border paths at ``level_mm`` (chart ``(n, 2)``), in contour order; a path of
        fewer than ``min_samples`` samples is None (in its place, so the paths keep their
        numbers)."""
        return self._loops_many([level_mm], min_samples)[0]

    def _loops_many(self, levels_mm, min_samples: int = 0) -> list:
        """:meth:`_loops` of each level, in order: every level's paths lifted and resampled
        in one pass (each path as alone: the lift is per point, the resampling per path)."""
        # one generator for every level: the raster cut to what the lowest one needs
        contours = self._contours_above(min(levels_mm)) if len(levels_mm) else None
        raw = [contours.lines(level_mm) if contours is not None else [] for level_mm in levels_mm]
        # each line's points that move (more than 1e-9 from the one before; its first always),
        # for every line of every level at once (a scan's border has hundreds of crumbs): the
        # steps between consecutive lines are not read, each line's first point is kept
        flat = [line for lines in raw for line in lines]
        enough = np.zeros(0, dtype=bool)
        if flat:
            joined = np.concatenate(flat)
            sizes = np.array([len(line) for line in flat], dtype=np.int64)
            heads = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            moves = np.empty(len(joined), dtype=bool)
            moves[1:] = np.linalg.norm(np.diff(joined, axis=0), axis=1) > 1e-9
            moves[heads[sizes > 0]] = True
            total = np.concatenate([[0], np.cumsum(moves)])
            counts = total[heads + sizes] - total[heads]
            enough = counts >= 3
        per_level, g = [], 0
        for lines in raw:
            per_level.append([(line, None) for line, ok in zip(lines, enough[g:g + len(lines)].tolist()) if ok])
            g += len(lines)
        every = [item for lines in per_level for item in lines]
        if not every:
            return [[] for _ in per_level]
        # all resampled at once (each as alone): the moving points of the lines kept
        chart = joined[moves & np.repeat(enough, sizes)]
        starts = np.concatenate([[0], np.cumsum(counts[enough])]).astype(np.int64)
        resampled, out_starts = _paths.resample(chart, self.face.lift(chart).points, starts, PATH_STEP_MM)
        out, k = [], 0
        for lines in per_level:
            loops = []
            for line, _ in lines:
                uv = resampled[out_starts[k]:out_starts[k + 1]]
                k += 1
                if len(uv) < min_samples:
                    loops.append(None)
                    continue
                # the contour follows raster cells: smooth it along its length (a closed loop wraps)
                closed = np.linalg.norm(line[0] - line[-1]) < 1e-6
                uv = ndimage.gaussian_filter1d(uv, HEADLAND_SMOOTH_MM / PATH_STEP_MM, axis=0,
                                               mode="wrap" if closed else "nearest")
                loops.append(uv)
            out.append(loops)
        return out

    def _widths(self, uv: np.ndarray, lifted=None, starts=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        along, cross, on_chart = path_curvatures(self.face, self.curvature, uv, lifted, starts)
        central = self.drum.central_rings(planned(cross))
        width = central * self.drum.ring_pitch_mm    # Drum.swath_mm
        return width, self.drum.conforms(planned(cross), planned(along), central) & on_chart & (width > 0), cross

    def _design(self) -> float:
        """The band the drum shows most along a border path one drum half-width inside."""
        loops = self._loops(self.drum.width_mm / 2)
        if not loops:
            return 0.0
        # every path's widths at once (each as alone): the mode does not care about order
        uv = np.concatenate(loops)
        starts = np.concatenate([[0], np.cumsum([len(x) for x in loops])]).astype(np.int64)
        width, works, _ = self._widths(uv, self.face.lift(uv), starts)
        widths = width[works]
        if len(widths) == 0:
            return 0.0
        values, counts = np.unique(widths, return_counts=True)
        return float(values[np.argmax(counts)])

    def runs(self, sweep_index: int, n_sweeps: int) -> list[list[Run]]:
        """This sweep's headland runs (one list per border path); sweep j sits j/n of a ring
        pitch farther in, so repeated headlands do not fall in the same holes."""
        return self.runs_many([sweep_index], n_sweeps)[0]

    def runs_many(self, sweep_indices, n_sweeps: int) -> list[list[list[Run]]]:
        """:meth:`runs` of each sweep of ``sweep_indices``, in order: every sweep's border
        paths checked side by side, each as alone (every check is per sample or per path)."""
        sweep_indices = [int(j) for j in sweep_indices]
        out = [[] for _ in sweep_indices]
        if self.design <= 0:
            return out
        # a path too short for one run yields none (a scan's border has hundreds of such
        # crumbs): skip its checks; the others are checked side by side, each as alone
        paths = []     # (which sweep, path number k, chart path)
        levels = [self.design / 2 + HEADLAND_INSET_MM + self.drum.ring_pitch_mm * sweep_index / max(n_sweeps, 1)
                  for sweep_index in sweep_indices]
        for s, loops in enumerate(self._loops_many(levels, MIN_RUN_SAMPLES)):
            paths += [(s, k, uv) for k, uv in enumerate(loops) if uv is not None]
        if not paths:
            return out
        uv_all = np.concatenate([uv for _, _, uv in paths])
        starts = np.concatenate([[0], np.cumsum([len(uv) for _, _, uv in paths])]).astype(np.int64)
        lifted = self.face.lift(uv_all)
        width, works, cross = self._widths(uv_all, lifted, starts)
        # a band narrower than the design leaves a thin gap at the border (never a
        # crossing): still rolled; a wider one would cross it
        ok = works & (width <= self.design + 1e-9)
        ok &= turn_radius_mm(self.face, uv_all, lifted, starts) >= HEADLAND_MIN_TURN_RADIUS_MM
        ok &= drum_fits(self.face, self.drum, uv_all, width, self.region.inside, self.clearance, straight=False,
                        tri=lifted.tri, starts=starts, where=ok)
        for (s, k, uv), a0, b0 in zip(paths, starts[:-1].tolist(), starts[1:].tolist()):
            runs = []
            w_k, cross_k, tri_k = width[a0:b0], cross[a0:b0], lifted.tri[a0:b0]
            for a, b in runs_of(ok[a0:b0]):
                if (b - a - 1) * PATH_STEP_MM < MIN_STROKE_MM:
                    continue
                runs.append(Run(self.region.name, _mean_direction_deg(uv[a:b]), sweep_indices[s], k, uv[a:b],
                                w_k[a:b], cross_k[a:b],
                                meta={"ring_pitch_mm": self.drum.ring_pitch_mm, "family": -1, "pattern": "headland"},
                                tri=tri_k[a:b]))
            if runs:
                out[s].append(runs)
        for sweep_index, lines in zip(sweep_indices, out):
            for j, runs in enumerate(lines):
                for r in runs:
                    r.phase_mm = ((sweep_index * GOLDEN + j * GOLDEN * GOLDEN) % 1.0) * self.drum.needle_pitch_mm
        return out




def headland_ends(face, drum: Drum, runs: list) -> list:
    """Headland runs ``[[Run]]`` (per border path) with each run's end samples dropped while
    the drum does not conform there along the run's own travel.

    A run cut from a border path (by a claim or the rigid-drum check) ends where its travel
    is read from its own last samples, as a stroke's is (one-sided), not along the path it
    was cut from; at a curvature on the threshold that can tip the drum's conformity. Its
    inner samples read as they did on the path. A run left shorter than
    :data:`MIN_STROKE_MM` is dropped."""
    curvature = face.curvature(drum_curvature_radius_mm(drum))
    every = [r for line_runs in runs for r in line_runs]
    first, stop = [0] * len(every), [len(r.uv) for r in every]
    # every run still trimming checked at once, round after round (each run's ends read as
    # alone: every step is per sample or per two-sample path)
    todo = [i for i in range(len(every)) if (stop[i] - first[i] - 1) * PATH_STEP_MM >= MIN_STROKE_MM]
    while todo:
        # the two ends as path_curvatures of r.uv[a:b] reads them: each end's travel is its
        # own sample and the one beside it (np.gradient's one-sided ends), so the two-sample
        # stretches at the ends, each a path alone, read the same
        pts = np.concatenate([every[i].uv[[first[i], first[i] + 1, stop[i] - 2, stop[i] - 1]] for i in todo])
        along, cross, on = path_curvatures(face, curvature, pts,
                                           starts=np.arange(0, 4 * len(todo) + 1, 2, dtype=np.int64))
        ends = (4 * np.arange(len(todo))[:, None] + np.array([0, 3])).reshape(-1)
        good = (drum.conforms(planned(cross[ends]), planned(along[ends])) & on[ends]).reshape(-1, 2).tolist()
        again = []
        for i, (head, tail) in zip(todo, good):
            if head and tail:
                continue
            first[i], stop[i] = first[i] + (not head), stop[i] - (not tail)
            if (stop[i] - first[i] - 1) * PATH_STEP_MM >= MIN_STROKE_MM:
                again.append(i)
        todo = again
    out, k = [], 0
    for line_runs in runs:
        kept = []
        for r in line_runs:
            a, b = first[k], stop[k]
            k += 1
            if (b - a - 1) * PATH_STEP_MM < MIN_STROKE_MM:
                continue
            if (a, b) == (0, len(r.uv)):
                kept.append(r)
                continue
            kept.append(dataclasses.replace(r, uv=r.uv[a:b], swath_mm=r.swath_mm[a:b], kappa_cross=r.kappa_cross[a:b],
                                            meta=dict(r.meta), tri=None if r.tri is None else r.tri[a:b]))
        if kept:
            out.append(kept)
    return out


def _mean_direction_deg(uv: np.ndarray) -> float:
    """The mean direction of a chart path as a line, in [0, 180) degrees (doubled-angle mean)."""
    d = np.diff(uv, axis=0)
    angle = 2.0 * np.arctan2(d[:, 1], d[:, 0])
    mean = math.degrees(math.atan2(np.sin(angle).sum(), np.cos(angle).sum()) / 2.0)
    return round(mean % 180.0, 6)


def passes_for_target(drum: Drum, target_per_cm2: float, cap_per_cm2: float, n_directions: int) -> list[int]:
    """Sweeps per direction so the zone reaches its target without passing its cap.

    The total is the smallest whole number of sweeps reaching the target, or fewer while
    their nominal dose with :data:`CAP_HEADROOM` would pass the cap (neighbouring passes lie
    one swath apart only to within about 10 %, so a window can hold that much over the
    nominal dose); it is spread over the directions as evenly as possible, the first
    directions taking the extra sweeps. What the sweeps leave under the target is the pen's.
    """
    rho = drum.density_per_pass_per_cm2
    total = math.ceil(target_per_cm2 / rho - 1e-9)
    while total > 0 and total * rho * CAP_HEADROOM > cap_per_cm2:
        total -= 1
    base, extra = divmod(total, max(n_directions, 1))
    return [base + (1 if i < extra else 0) for i in range(n_directions)]
