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

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy import ndimage

from .curvature import Curvature
from .protocol import Protocol

MIN_STROKE_MM = 10.0       # shorter runs are not worth a touch-down
PATH_STEP_MM = 0.5         # path samples along a pass, on the skin
COLUMN_STEP_MM = 1.0       # line samples along the passes (chart)
ROW_STEP_MM = 0.25         # field rows across the passes (chart)
CLEARANCE_CELL_MM = 0.25   # keep-out distance raster (chart)
BODY_STEP_MM = 2.0         # drum outline samples (skin)
BAND_EDGE_SLACK = 0.04      # share of the half band kept inside the region beyond the band's edge
LINE_SMOOTH_MM = 5.0       # smoothing of each pass line along its length
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


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
        """
        reach = self.reaching(kappa_cross)
        half = self.rings // 2
        outward = np.cumprod(reach[..., self.rings - half:], axis=-1).sum(axis=-1)
        if self.rings % 2 == 0:
            return 2 * outward
        return np.where(reach[..., half], 2 * outward + 1, 0)

    def swath_mm(self, kappa_cross) -> np.ndarray:
        """Effective swath width ``(k,)``: the central reaching band (mm)."""
        return self.central_rings(kappa_cross) * self.ring_pitch_mm

    def conforms(self, kappa_cross, kappa_along) -> np.ndarray:
        """Where the drum can work ``(k,) bool``.

        Along travel, a concave radius below D/2 cannot be followed; across, a contiguous
        central band of at least ``min_swath_fraction`` of the rings must reach.
        """
        along_ok = np.asarray(kappa_along) >= -2.0 / self.diameter_mm
        enough = self.central_rings(kappa_cross) >= math.ceil(self.min_swath_fraction * self.rings - 1e-9)
        return along_ok & enough


# --- directions and curvature on the face ------------------------------------------------

def skin_directions(face, theta_deg: float, normals: np.ndarray) -> np.ndarray:
    """Unit skin tangents ``(k, 3)`` at angle theta in the face frame, given unit normals.

    0 deg is the face frame's +x (the subject's left) and 90 deg its +y (up), each turned
    into the skin's tangent plane: up is the frame's +y projected onto the tangent plane,
    horizontal is that projection crossed with the normal.
    """
    up = face.pose[:3, :3] @ np.array([0.0, 1.0, 0.0])
    up = up / np.linalg.norm(up)
    up_t = up - (normals @ up)[:, None] * normals
    up_t /= np.maximum(np.linalg.norm(up_t, axis=1, keepdims=True), 1e-12)
    horizontal = np.cross(up_t, normals)
    t = math.radians(theta_deg)
    return math.cos(t) * horizontal + math.sin(t) * up_t


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


def conformity(face, drum: Drum, theta_deg: float) -> Conformity:
    """The drum's conformity map for one direction: swath and whether it can work, per vertex."""
    along, cross = vertex_curvatures(face, theta_deg, drum)
    return Conformity(theta_deg, along, cross, drum.swath_mm(cross), drum.conforms(cross, along))


# --- chart fields --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ChartRaster:
    """A scalar field sampled on a regular chart grid, read back with nearest lookup."""

    origin: np.ndarray
    cell: float
    values: np.ndarray  # (h, w)

    def at(self, uv: np.ndarray, outside: float) -> np.ndarray:
        """Values at chart points ``(k, 2)`` (float); ``outside`` off the grid or at NaN."""
        f = np.floor((np.asarray(uv, dtype=np.float64).reshape(-1, 2) - self.origin) / self.cell)
        ij = np.nan_to_num(f, nan=-1.0, posinf=-1.0, neginf=-1.0).astype(np.int64)
        h, w = self.values.shape
        ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < w) & (ij[:, 1] < h)
        out = np.full(len(ij), outside, dtype=np.float64)
        out[ok] = self.values[ij[ok, 1], ij[ok, 0]]
        return out


def distance_raster(region, bounds, cell: float = CLEARANCE_CELL_MM, outside_of: bool = True) -> ChartRaster:
    """Chart distance (mm) from each cell to a region (``outside_of``) or to its outside.

    One cell diagonal is subtracted, so the value is a lower bound for every point of the
    cell; cells in the region (or outside it) read -1.
    """
    lo, hi = np.asarray(bounds[:2], dtype=float), np.asarray(bounds[2:], dtype=float)
    w, h = (int(x) for x in np.ceil((hi - lo) / cell) + 1)
    uu, vv = np.meshgrid(lo[0] + (np.arange(w) + 0.5) * cell, lo[1] + (np.arange(h) + 0.5) * cell)
    inside = shapely.contains_xy(region, uu.ravel(), vv.ravel()).reshape(h, w)
    away = ~inside if outside_of else inside
    dist = ndimage.distance_transform_edt(away) * cell - cell * math.sqrt(2.0)
    return ChartRaster(lo, cell, np.where(away, dist, -1.0))


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
            members = tuple(n for n in names if shapely.intersection(zones.polygons[n], part).area > 1e-6)
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
        self.family = 0 if design_mm is None else int(round(design_mm * 10))  # a label for the strokes
        face = zones.face
        self.face = face
        self.polygon = region.polygon
        shapely.prepare(self.polygon)
        minx, miny, maxx, maxy = self.polygon.bounds
        self.inside = region.inside
        probe = _grid_in(self.polygon, max(2.0, min(maxx - minx, maxy - miny) / 12.0))
        self.angle = chart_angle(face, theta_deg, probe)
        self.to_frame = _rotation(-self.angle)      # chart -> (u', v')
        self.to_chart = _rotation(self.angle)
        self._build_fields()

    def _build_fields(self) -> None:
        """Swath and chart scale on a grid of the turned frame over the region."""
        local = shapely.get_coordinates(self.polygon) @ self.to_frame.T
        lo, hi = local.min(axis=0) - 1.0, local.max(axis=0) + 1.0
        self.u_cols = np.arange(lo[0], hi[0] + COLUMN_STEP_MM, COLUMN_STEP_MM)
        self.v_rows = np.arange(lo[1], hi[1] + ROW_STEP_MM, ROW_STEP_MM)
        uu, vv = np.meshgrid(self.u_cols, self.v_rows)               # (rows, cols)
        chart = np.stack([uu.ravel(), vv.ravel()], axis=1) @ self.to_chart.T
        tri, _ = self.face.locate(chart)
        scale = np.ones(len(chart))
        scale[tri >= 0] = self.face.linear_scale[tri[tri >= 0]]
        in_region = self.inside.at(chart, outside=-1.0) >= 0
        corners = self.face.faces[np.maximum(tri, 0)]
        band = self.conform.swath_mm[corners].min(axis=1)
        works = (tri >= 0) & in_region & self.conform.conforms[corners].all(axis=1) & (band > 0)
        self.works_swath = np.where(works, band, np.nan).reshape(uu.shape)
        self.scale = scale.reshape(uu.shape)
        centre = np.asarray(self.polygon.centroid.coords[0]) @ self.to_frame.T
        self.v_mid = float(centre[1])

    def _at(self, field: np.ndarray, v: np.ndarray) -> np.ndarray:
        """A grid field read at height v (one per column; NaN outside the grid)."""
        row = np.round((v - self.v_rows[0]) / ROW_STEP_MM)
        ok = np.isfinite(row) & (row >= 0) & (row < len(self.v_rows))
        out = np.full(len(v), np.nan)
        cols = np.nonzero(ok)[0]
        out[cols] = field[row[cols].astype(np.int64), cols]
        return out

    def _design(self, v: np.ndarray) -> float:
        """A line's design swath: the band the drum shows over most of it where it works."""
        if self.forced_design is not None:
            return self.forced_design
        band = self._at(self.works_swath, v)
        band = band[np.isfinite(band) & (band > 0)]
        if len(band) == 0:
            return self.drum.width_mm
        values, counts = np.unique(band, return_counts=True)
        return float(values[np.argmax(counts)])

    def _step(self, v: np.ndarray, w0: float, sign: float) -> tuple[np.ndarray, float]:
        """The next line beyond ``v`` and its design: (w0 + w1) / 2 apart on the skin."""
        w1 = w0
        for _ in range(3):  # the next design depends on where the next line lands
            lam = self._at(self.scale, v)
            nxt = v + sign * ((w0 + w1) / 2.0) / lam
            nxt_lam = self._at(self.scale, nxt)
            nxt = v + sign * ((w0 + w1) / 2.0) / np.where(np.isfinite(nxt_lam), (lam + nxt_lam) / 2.0, lam)
            w1 = self._design(nxt)
        return _smooth_nan(nxt, LINE_SMOOTH_MM / COLUMN_STEP_MM), w1

    def lines(self, offset: float) -> list[tuple[int, np.ndarray, float]]:
        """``[(k, chart points (n, 2), design swath mm)]`` of every line, in order.

        The anchor line runs through the region's centroid, shifted across by ``offset``
        of its design swath; chart points are NaN where a line leaves the grid.
        """
        row = int(np.clip(np.searchsorted(self.v_rows, self.v_mid), 0, len(self.v_rows) - 1))
        v0 = np.full(len(self.u_cols), self.v_mid)
        w0 = self._design(v0)
        v0 = v0 + offset * w0 / self.scale[row]
        w0 = self._design(v0)
        found = [(0, v0, w0)]
        for sign in (1.0, -1.0):
            v, w, k = v0, w0, 0
            while True:
                v, w = self._step(v, w, sign)
                k += int(sign)
                inside = np.isfinite(v) & (v >= self.v_rows[0]) & (v <= self.v_rows[-1])
                if not inside.any():
                    break
                found.append((k, v, w))
        found.sort(key=lambda item: item[0])
        return [(k, np.stack([self.u_cols, v], axis=1) @ self.to_chart.T, w) for k, v, w in found]

    def _band_rings(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cross curvature and central band width (mm) at chart points; NaN / 0 off the chart."""
        tri, bary = self.face.locate(uv)
        corners = self.face.faces[np.maximum(tri, 0)]
        kc = np.einsum("kj,kj->k", bary, self.conform.kappa_cross[corners])
        width = self.drum.swath_mm(kc)
        return np.where(tri >= 0, kc, np.nan), np.where(tri >= 0, width, 0.0)

    def sample_validity(self, uv: np.ndarray, design_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validity, band width and cross curvature at chart points ``(n, 2)`` along a pass."""
        face = self.face
        lifted = face.lift(uv)
        corners = face.faces[np.maximum(lifted.tri, 0)]
        along = np.einsum("kj,kj->k", lifted.bary, self.conform.kappa_along[corners])
        kc, width = self._band_rings(uv)
        ok = lifted.inside & self.drum.conforms(np.nan_to_num(kc), along) & np.isclose(width, design_mm)
        ok &= drum_fits(face, self.drum, uv, width, self.inside, self.clearance)
        return ok, width, np.nan_to_num(kc)


def skin_frame(face, tri: np.ndarray, travel: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chart vectors of one skin millimetre along the travel and across it, per sample.

    From each triangle's own Jacobian (a scan's chart need not be conformal: across can be
    twice along), as the needle simulation maps the drum; the isotropic ``1 / scale`` off
    the chart.
    """
    along = travel / scale[:, None]
    across = np.stack([-travel[:, 1], travel[:, 0]], axis=1) / scale[:, None]
    on = tri >= 0
    if on.any():
        jac = face.jacobian[tri[on]]                                  # (k, 3, 2)
        skin_t = np.einsum("kij,kj->ki", jac, travel[on])
        length = np.maximum(np.linalg.norm(skin_t, axis=1), 1e-9)
        normal = np.cross(jac[:, :, 0], jac[:, :, 1])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        left = np.cross(normal, skin_t / length[:, None])
        per_mm = np.einsum("kij,kj->ki", np.linalg.pinv(jac), left)
        ok = np.isfinite(per_mm).all(axis=1) & (np.linalg.norm(per_mm, axis=1) < 1.0 / 0.05)
        idx = np.nonzero(on)[0][ok]
        along[idx] = travel[on][ok] / length[ok, None]
        across[idx] = per_mm[ok]
    return along, across


def drum_fits(face, drum: Drum, uv: np.ndarray, width: np.ndarray, inside: ChartRaster,
              clearance: ChartRaster, straight: bool = True) -> np.ndarray:
    """Where the drum may stand along a path ``(n, 2)``: its needle band (``width`` mm across)
    inside the region and no part of it over a keep-out.

    The band is checked at nine points across. The drum's D x W outline: on a straight path
    by the nearest keep-out across its width at each sample, then over the samples within
    D/2 before and after it (and D/2 beyond the path's ends); on a curved one (``straight``
    false: the rigid drum runs on along its tangent while the path turns away) by sampling
    each sample's own rectangle. Sample spacing is covered by ``need``.
    """
    n = len(uv)
    tri, _ = face.locate(uv)
    scale = np.where(tri >= 0, face.linear_scale[np.maximum(tri, 0)], 1.0)
    travel = np.gradient(uv, axis=0) if n > 1 else np.zeros_like(uv)
    travel /= np.maximum(np.linalg.norm(travel, axis=1, keepdims=True), 1e-12)
    per_mm_t, per_mm_a = skin_frame(face, tri, travel, scale)
    band = np.linspace(-0.5, 0.5, 9)
    pts = (uv[:, None, :] + (band[None, :, None] * width[:, None, None]) * per_mm_a[:, None, :]).reshape(-1, 2)
    # the needles land where the drum's chart frame puts them, a first-order map from the
    # path sample: keep the band's edge BAND_EDGE_SLACK of its half width inside the region
    slack = np.repeat(BAND_EDGE_SLACK * 0.5 * width / scale, len(band))
    ok = (tri >= 0) & (inside.at(pts, outside=-1.0) >= slack).reshape(n, -1).all(axis=1)
    across_steps = np.linspace(-drum.width_mm / 2, drum.width_mm / 2, int(math.ceil(drum.width_mm / BODY_STEP_MM)) + 1)
    if not straight:
        along_steps = np.linspace(-drum.diameter_mm / 2, drum.diameter_mm / 2,
                                  int(math.ceil(drum.diameter_mm / BODY_STEP_MM)) + 1)
        ga, gb = np.meshgrid(along_steps, across_steps)
        body = (uv[:, None, :] + ga.ravel()[None, :, None] * per_mm_t[:, None, :]
                + gb.ravel()[None, :, None] * per_mm_a[:, None, :]).reshape(-1, 2)
        need = 0.5 * math.hypot(BODY_STEP_MM, BODY_STEP_MM) / scale
        return ok & (clearance.at(body, outside=np.inf).reshape(n, -1).min(axis=1) >= need)
    span = (uv[:, None, :] + across_steps[None, :, None] * per_mm_a[:, None, :]).reshape(-1, 2)
    clear = clearance.at(span, outside=np.inf).reshape(n, -1).min(axis=1)
    reach = int(math.ceil(drum.diameter_mm / 2 / PATH_STEP_MM))
    clear = ndimage.minimum_filter1d(clear, size=2 * reach + 1, mode="nearest")
    need = 0.5 * math.hypot(BODY_STEP_MM, PATH_STEP_MM) / scale
    ok &= clear >= need
    for end, sign in ((0, -1.0), (n - 1, 1.0)):
        ahead = np.linspace(0.0, drum.diameter_mm / 2, reach + 1)[1:]
        tip = uv[end] + sign * ahead[:, None] * per_mm_t[end]
        edge = (tip[:, None, :] + across_steps[None, :, None] * per_mm_a[end]).reshape(-1, 2)
        if (clearance.at(edge, outside=np.inf) < need[end]).any():
            ok[max(0, end - reach):end + reach + 1] = False
    return ok


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

    def _cells(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ij = np.floor((pts - self.origin) / self.cell).astype(np.int64)
        h, w = self.taken.shape
        return np.clip(ij[..., 1], 0, h - 1), np.clip(ij[..., 0], 0, w - 1)

    def band_points(self, face, run: Run, inset_mm: float, step_mm: float) -> np.ndarray:
        """Chart points ``(n, m, 2)`` across each sample's band, ``inset_mm`` in from its edges."""
        uv = run.uv
        travel = np.gradient(uv, axis=0)
        travel /= np.maximum(np.linalg.norm(travel, axis=1, keepdims=True), 1e-12)
        across = np.stack([-travel[:, 1], travel[:, 0]], axis=1)
        tri, _ = face.locate(uv)
        scale = np.where(tri >= 0, face.linear_scale[np.maximum(tri, 0)], 1.0)
        half = np.maximum(run.swath_mm / 2.0 - inset_mm, 0.0)
        m = int(math.ceil(float(half.max(initial=0.0)) * 2 / step_mm)) + 1
        f = np.linspace(-1.0, 1.0, max(m, 2))
        return uv[:, None, :] + (f[None, :, None] * half[:, None, None] / scale[:, None, None]) * across[:, None, :]

    def free(self, face, run: Run) -> np.ndarray:
        """Samples ``(n,) bool`` whose band (inset by half a ring) touches no taken skin."""
        rows, cols = self._cells(self.band_points(face, run, run_ring_inset(run), self.cell))
        return ~self.taken[rows, cols].any(axis=1)

    def take(self, face, run: Run) -> None:
        rows, cols = self._cells(self.band_points(face, run, 0.0, self.cell / 2))
        self.taken[rows.ravel(), cols.ravel()] = True


def run_ring_inset(run: Run) -> float:
    """How far in from a band's edge overlap is checked: half a ring (bands may touch)."""
    return run.meta.get("ring_pitch_mm", 2.5) / 2.0


def _smooth_nan(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 1D series that ignores (and keeps) its NaN gaps."""
    ok = np.isfinite(values)
    if sigma <= 0 or not ok.any():
        return values
    weight = ndimage.gaussian_filter1d(ok.astype(float), sigma, mode="nearest")
    total = ndimage.gaussian_filter1d(np.where(ok, values, 0.0), sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / weight
    return np.where(ok, out, np.nan)


def _grid_in(polygon, step: float) -> np.ndarray:
    minx, miny, maxx, maxy = polygon.bounds
    uu, vv = np.meshgrid(np.arange(minx, maxx + step, step), np.arange(miny, maxy + step, step))
    pts = np.stack([uu.ravel(), vv.ravel()], axis=1)
    inside = shapely.contains_xy(polygon, pts[:, 0], pts[:, 1])
    return pts[inside] if inside.any() else np.asarray([polygon.representative_point().coords[0]])


def resample_on_skin(face, uv: np.ndarray, step_mm: float) -> np.ndarray:
    """Resample a chart polyline so consecutive points are ~``step_mm`` apart on the skin."""
    if len(uv) < 2:
        return uv
    pts = face.lift(uv).points
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(math.ceil(s[-1] / step_mm)) + 1)
    target = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(target, s, uv[:, 0]), np.interp(target, s, uv[:, 1])], axis=1)


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges ``[(start, stop), ...]`` of the True stretches of a mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))


OFFSET_TRIALS = 4  # phases of the line family tried across one swath


def line_runs(sweeps: ZoneSweeps, offset: float, sweep_index: int) -> list[list[Run]]:
    """The runs of every line of the family at ``offset`` (a fraction of a swath), per line in order."""
    face = sweeps.face
    lines = []
    for k, raw, design in sweeps.lines(offset):
        on_chart = np.isfinite(raw).all(axis=1)
        on_chart[on_chart] = face.locate(raw[on_chart])[0] >= 0
        runs = []
        for a, b in runs_of(on_chart):
            if b - a < 2:
                continue
            uv = resample_on_skin(face, raw[a:b], PATH_STEP_MM)
            ok, w, kc = sweeps.sample_validity(uv, design)
            for s0, s1 in runs_of(ok):
                if (s1 - s0 - 1) * PATH_STEP_MM < MIN_STROKE_MM:
                    continue
                runs.append(Run(sweeps.name, sweeps.theta_deg, sweep_index, k, uv[s0:s1], w[s0:s1], kc[s0:s1],
                                meta={"ring_pitch_mm": sweeps.drum.ring_pitch_mm, "family": sweeps.family}))
        if runs:
            lines.append(runs)
    return lines


def best_offset(sweeps: ZoneSweeps) -> float:
    """The phase of the line family (a fraction of a swath) that lets the drum roll the longest.

    Lines placed from the zone's lowest edge can leave the last line's needle band just
    outside the zone; trying a few phases across one swath recovers that line.
    """
    def rolled(offset):
        return sum(len(r.uv) for runs in line_runs(sweeps, offset, 0) for r in runs)
    trials = np.arange(OFFSET_TRIALS) / OFFSET_TRIALS
    scores = [rolled(o) for o in trials]
    return float(trials[int(np.argmax(scores))])


def sweep_runs(sweeps: ZoneSweeps, sweep_index: int, n_sweeps: int, base_offset: float = 0.0) -> list[list[Run]]:
    """The runs of every line of one sweep, per line (lines in order across the passes).

    Repeated sweeps of one direction are spread across one swath (sweep j of n shifted by
    j/n of it) and along one needle pitch: their needles do not fall into the same holes,
    the seams where the swath changes do not stack, and the zone's edge strips, which one
    sweep leaves, the next ones reach.
    """
    drum = sweeps.drum
    lines = line_runs(sweeps, base_offset + sweep_index / max(n_sweeps, 1), sweep_index)
    for j, runs in enumerate(lines):
        for r in runs:
            r.phase_mm = ((sweep_index * GOLDEN + j * GOLDEN * GOLDEN) % 1.0) * drum.needle_pitch_mm
    return lines


def claim(face, lines: list[list[Run]], occupancy: Occupancy) -> list[list[Run]]:
    """Keep the stretches of each run whose band is still free in this sweep, and take them."""
    out = []
    for runs in lines:
        kept = []
        for r in runs:
            free = occupancy.free(face, r)
            for a, b in runs_of(free):
                if (b - a - 1) * PATH_STEP_MM < MIN_STROKE_MM:
                    continue
                part = Run(r.zone, r.theta_deg, r.sweep, r.line, r.uv[a:b], r.swath_mm[a:b], r.kappa_cross[a:b],
                           r.phase_mm, dict(r.meta))
                occupancy.take(face, part)
                kept.append(part)
        if kept:
            out.append(kept)
    return out


# --- headlands -------------------------------------------------------------------------------

HEADLAND_MIN_TURN_RADIUS_MM = 30.0   # a rigid drum steered tighter than this skids sideways
HEADLAND_SMOOTH_MM = 4.0             # smoothing of border paths along their length
HEADLAND_INSET_MM = 0.5              # the band's outer edge stays this far inside the border


def border_distance(face, region: Region) -> ChartRaster:
    """Skin distance (mm, approximate) from each cell inside a region to the region's border."""
    r = region.inside
    h, w = r.values.shape
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    centres = r.origin + (np.stack([jj, ii], -1).reshape(-1, 2) + 0.5) * r.cell
    tri, _ = face.locate(centres)
    scale = np.where(tri >= 0, face.linear_scale[np.maximum(tri, 0)], 1.0).reshape(h, w)
    return ChartRaster(r.origin, r.cell, np.where(r.values >= 0, r.values * scale, -1.0))


def path_curvatures(face, curvature: Curvature, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal curvature along and across a chart path's own travel direction, and its lift."""
    lifted = face.lift(uv)
    tangent = np.gradient(lifted.points, axis=0)
    tangent -= np.einsum("ij,ij->i", tangent, lifted.normals)[:, None] * lifted.normals
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    across = np.cross(lifted.normals, tangent)
    corners = face.faces[np.maximum(lifted.tri, 0)]
    along = sum(lifted.bary[:, j] * curvature.normal_curvature(corners[:, j], tangent) for j in range(3))
    cross = sum(lifted.bary[:, j] * curvature.normal_curvature(corners[:, j], across) for j in range(3))
    return along, cross, lifted.inside


def turn_radius_mm(face, uv: np.ndarray) -> np.ndarray:
    """The path's turning radius within the skin at each sample (inf where it runs straight).

    Geodesic, not 3D, curvature: the turn of the travel direction in the tangent plane,
    which is what steering a rigid drum costs (following the skin's own bulge is free).
    """
    lifted = face.lift(uv)
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

    def _loops(self, level_mm: float) -> list[np.ndarray]:
        import contourpy

        r = self.border
        h, w = r.values.shape
        x = r.origin[0] + (np.arange(w) + 0.5) * r.cell
        y = r.origin[1] + (np.arange(h) + 0.5) * r.cell
        loops = []
        for line in contourpy.contour_generator(x, y, r.values, line_type="Separate").lines(level_mm):
            keep = np.concatenate([[True], np.linalg.norm(np.diff(line, axis=0), axis=1) > 1e-9])
            if keep.sum() < 3:
                continue
            uv = resample_on_skin(self.face, line[keep], PATH_STEP_MM)
            # the contour follows raster cells: smooth it along its length (a closed loop wraps)
            closed = np.linalg.norm(line[0] - line[-1]) < 1e-6
            uv = ndimage.gaussian_filter1d(uv, HEADLAND_SMOOTH_MM / PATH_STEP_MM, axis=0,
                                           mode="wrap" if closed else "nearest")
            loops.append(uv)
        return loops

    def _widths(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        along, cross, on_chart = path_curvatures(self.face, self.curvature, uv)
        width = self.drum.swath_mm(cross)
        return width, self.drum.conforms(cross, along) & on_chart & (width > 0), cross

    def _design(self) -> float:
        """The band the drum shows most along a border path one drum half-width inside."""
        widths = []
        for uv in self._loops(self.drum.width_mm / 2):
            width, works, _ = self._widths(uv)
            widths.append(width[works])
        widths = np.concatenate(widths) if widths else np.empty(0)
        if len(widths) == 0:
            return 0.0
        values, counts = np.unique(widths, return_counts=True)
        return float(values[np.argmax(counts)])

    def runs(self, sweep_index: int, n_sweeps: int) -> list[list[Run]]:
        """This sweep's headland runs (one list per border path); sweep j sits j/n of a ring
        pitch farther in, so repeated headlands do not fall in the same holes."""
        if self.design <= 0:
            return []
        level = self.design / 2 + HEADLAND_INSET_MM + self.drum.ring_pitch_mm * sweep_index / max(n_sweeps, 1)
        out = []
        for k, uv in enumerate(self._loops(level)):
            width, works, cross = self._widths(uv)
            # a band narrower than the design leaves a thin gap at the border (never a
            # crossing): still rolled; a wider one would cross it
            ok = works & (width <= self.design + 1e-9)
            ok &= turn_radius_mm(self.face, uv) >= HEADLAND_MIN_TURN_RADIUS_MM
            ok &= drum_fits(self.face, self.drum, uv, width, self.region.inside, self.clearance, straight=False)
            runs = []
            for a, b in runs_of(ok):
                if (b - a - 1) * PATH_STEP_MM < MIN_STROKE_MM:
                    continue
                runs.append(Run(self.region.name, _mean_direction_deg(uv[a:b]), sweep_index, k, uv[a:b],
                                width[a:b], cross[a:b],
                                meta={"ring_pitch_mm": self.drum.ring_pitch_mm, "family": -1, "pattern": "headland"}))
            if runs:
                out.append(runs)
        for j, runs in enumerate(out):
            for r in runs:
                r.phase_mm = ((sweep_index * GOLDEN + j * GOLDEN * GOLDEN) % 1.0) * self.drum.needle_pitch_mm
        return out


def _mean_direction_deg(uv: np.ndarray) -> float:
    """The mean direction of a chart path as a line, in [0, 180) degrees (doubled-angle mean)."""
    d = np.diff(uv, axis=0)
    angle = 2.0 * np.arctan2(d[:, 1], d[:, 0])
    mean = math.degrees(math.atan2(np.sin(angle).sum(), np.cos(angle).sum()) / 2.0)
    return round(mean % 180.0, 6)


def passes_for_target(drum: Drum, target_per_cm2: float, cap_per_cm2: float, n_directions: int) -> list[int]:
    """Sweeps per direction so the zone reaches its target without passing its cap.

    The total is the smallest whole number of sweeps reaching the target, or one fewer if
    that would pass the cap; it is spread over the directions as evenly as possible, the
    first directions taking the extra sweeps.
    """
    rho = drum.density_per_pass_per_cm2
    total = math.ceil(target_per_cm2 / rho - 1e-9)
    if total * rho > cap_per_cm2:
        total -= 1
    total = max(total, 0)
    base, extra = divmod(total, max(n_directions, 1))
    return [base + (1 if i < extra else 0) for i in range(n_directions)]
