"""Pen planning: where the cartridge stamps, along which strokes, so every zone reaches its dose.

The pen's dose is planned as a field before any stroke is drawn:

1. **Dose field.** On the density texel grid, ``q`` (stamp centres per texel) is solved so the
   windowed density of everything (punctures already made by the roller, plus ``q`` spread
   over the cartridge footprint) sits at the middle of each zone's band
   ``[0.9 x target, cap]`` and under a safety fraction of its cap, with ``q >= 0`` and
   ``q = 0`` wherever the footprint would reach skin the stamp may not touch (a keep-out,
   unobserved skin, the face's edge, or a zone shallower than the stamp's depth). The solver
   is a preconditioned projected Landweber iteration: forward = footprint blur, then the
   1 cm^2 windows; backward = the same smoothings (nearly self-adjoint here).
2. **Strokes.** Each zone's passes are raster lines in crossed directions (or, for bands
   along a delicate border, contour-parallel loops at constant skin distance from it),
   spaced on the skin; consecutive runs are joined by a glide in contact when the straight
   move stays inside the zone's allowed region, otherwise the tool lifts.
3. **Stamps** are placed along each stroke by distance travelled: the stamp count per
   millimetre of path is the dose field's stamp density times the line spacing over the
   passes, so slowing down never stacks stamps. The running remainder carries from run
   to run, so rounding never loses or adds dose.

With a uniform field this is exactly the classic per-pass density ``N f / (v s)``: the
planner chooses speed ``v``, rate ``f``, spacing ``s`` and passes within the device limits
(:func:`pen_settings`); where the roller already delivered some dose, or a zone border
meets a lower dose, the stamp spacing along the line follows the field.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy import ndimage
from scipy.spatial import cKDTree

from ._ext import paths as _paths_kernel
from .density import IN_BAND_LOW, TexelGrid, window_sums
from .errors import CoverageError
from .protocol import PenSpec, Protocol, ZoneDose
from .regions import REGION_GRID_CELL_MM
from .roller import CONTOUR_OPTIONS, ChartRaster
from .tasks import GEOS_LOCK, Once

AIM_RATIO = (IN_BAND_LOW + 1.25) / 2   # the middle of [0.9 x target, 1.25 x target]
CAP_SAFETY = 0.92        # the dose field keeps every window this far under its cap
EDGE_SLACK_MM = 0.4      # between the footprint's rim and the nearest forbidden texel centre (> half a
                         # texel diagonal; every stamp is checked needle by needle after simulation)
OVER_WEIGHT = 20.0        # how much harder the solver pushes down over the safe cap than up to the aim
BACK_SIGMA_MM = 3.0       # chart blur carrying density residuals back to stamp centres
SAMPLE_MM = 0.25         # chart step of stroke samples
MAX_GLIDE_MM = 40.0      # longest move in contact between two runs (chart mm)
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


# --- settings ----------------------------------------------------------------------------

def pen_depth_mm(pen: PenSpec, dose: ZoneDose) -> float:
    """The zone's pen depth on the device's depth steps, never above the zone's maximum."""
    limit = min(dose.max_depth_mm, pen.depth_mm_max)
    depth = min(dose.depth_mm, limit)
    steps = math.floor(depth / pen.depth_step_mm + 1e-9)
    snapped = round(steps * pen.depth_step_mm, 9)
    if snapped < pen.depth_mm_min - 1e-9:
        if pen.depth_mm_min <= limit + 1e-9:
            return pen.depth_mm_min
        raise CoverageError(f"zones.{dose.name}.max_depth_mm = {dose.max_depth_mm:g} is below the pen's shallowest "
                            f"setting pen.depth_mm_min = {pen.depth_mm_min:g}; raise the zone maximum or take the "
                            f"pen off the zone's devices")
    return snapped


@dataclass(frozen=True)
class PenSettings:
    """How the pen covers one zone at a uniform dose: ``N f / (v s)`` per pass."""

    zone: str
    depth_mm: float            # depth setting (device steps)
    passes: int                # crossed passes (or loop sets)
    spacing_mm: float          # line or loop spacing on the skin
    speed_mm_s: float          # glide speed
    stamp_hz: float            # stamp rate at that speed for the uniform dose
    stamp_spacing_mm: float    # distance travelled between stamps (uniform dose)
    aim_per_cm2: float         # what the passes deliver together
    directions_deg: tuple
    pattern: str               # "raster" or "contour"

    @property
    def per_pass_per_cm2(self) -> float:
        return self.aim_per_cm2 / self.passes


def pen_settings(pen: PenSpec, dose: ZoneDose, aim_per_cm2: float | None = None) -> PenSettings:
    """Speed, stamp rate, spacing and passes that deliver ``aim_per_cm2`` (default: the
    middle of the zone's band) within the device limits, firing as fast as they allow.

    Per pass ``rho = N f / (v s)`` (punctures/mm^2). Passes start at ``pen.passes_min``.
    The pen glides at its top speed; its lines lie a footprint apart (they abut: the crossed
    pass and the needle-by-needle fit of :mod:`coverage.pen_fit` even out the dose across
    them), closer only where the top speed and stamp rate together deliver more than the
    aim at that spacing (the lines then overlap, for the same time per area). A pass takes
    ``area / (s v)``: lines half a footprint apart, as they were, took twice as long for the
    same dose (measured: the default session 750 -> 713 s, the synthetic scans' 20 % less).
    Where even that rate is under the device minimum (a small share over a rolled zone),
    the fit fires only some of the stamps anyway.
    """
    aim = dose.target_per_cm2 * AIM_RATIO if aim_per_cm2 is None else aim_per_cm2
    passes = max(1, min(pen.passes_min, len(dose.directions_deg) or 1))
    rho = aim / 100.0 / passes
    speed = pen.speed_mm_s_max
    spacing = pen.footprint_diameter_mm
    if rho * speed * spacing > pen.needles * pen.stamp_hz_max:
        spacing = pen.needles * pen.stamp_hz_max / (rho * speed)
    rate = rho * speed * spacing / pen.needles
    stamp_spacing = pen.needles / (rho * spacing) if rho > 0 else math.inf     # no stamps at all
    return PenSettings(dose.name, pen_depth_mm(pen, dose), passes, spacing, speed, rate, stamp_spacing, aim,
                       tuple(dose.directions_deg), dose.pen_pattern)


# --- the dose field ----------------------------------------------------------------------

@dataclass
class DoseField:
    """The texel-grid problem of where the pen must stamp, and its solution ``q``."""

    grid: TexelGrid
    aim: np.ndarray          # (h, w) per cm^2, 0 off treatable skin
    cap: np.ndarray          # (h, w) per cm^2, inf off treatable skin
    allowed: np.ndarray      # (h, w) bool: a stamp may be centred here
    depth_mm: np.ndarray     # (h, w) the depth a stamp centred here is set to (nan: none)
    base: np.ndarray         # (h, w) punctures already delivered per texel
    needles: int
    # (h, w) needles a stamp centred here fires (fewer on curved skin): read it as
    # needles_fired (counted when first asked: planning needs only which texels fire enough)
    fired_counts: object
    foot_texels: int         # side of the box that stands for the footprint in the solver
    footprint_mm: float      # the cartridge's footprint diameter
    skin_distance: dict = field(default_factory=dict)  # depth -> (h, w) skin mm to forbidden skin
    clearance: object = None            # FootprintClearance of the zone map (any cartridge)
    near_exclusion: np.ndarray | None = None  # (h, w) texels where path samples are checked exactly
    q: np.ndarray | None = None
    # depth -> (contour generator of skin_distance[depth], {level: lines}): the loops of
    # every zone and pass at that depth come from one generator, each level traced once
    contours: dict = field(default_factory=dict, repr=False)

    @property
    def needles_fired(self) -> np.ndarray:
        """``(h, w)``: needles a stamp centred on each texel fires (0 where none may be)."""
        if isinstance(self.fired_counts, _FiredCounts):
            self.fired_counts = self.fired_counts()
        return self.fired_counts

    @functools.cached_property
    def glide_checked(self) -> np.ndarray:
        """``(h, w) bool``: texels where a glide's samples are checked in 3D
        (:func:`glides_ok`): next to an exclusion, or where no stamp may be centred
        (``near_exclusion | ~allowed``, made once: neither changes after the field is made)."""
        return self.near_exclusion | ~self.allowed

    def windowed(self, counts: np.ndarray) -> np.ndarray:
        """Density (per cm^2) of texel counts, as :class:`coverage.density.DensityMap` computes it."""
        g = self.grid
        with np.errstate(invalid="ignore", divide="ignore"):
            d = 100.0 * window_sums(counts, g.half_u, g.half_v, g.treatable) / g.window_area_mm2
        return np.where(g.treatable, d, 0.0)

    def counts(self, q: np.ndarray) -> np.ndarray:
        """Punctures per texel: the fixed ones plus each stamp's firing needles over its footprint."""
        return self.base + ndimage.uniform_filter(q * self.needles_fired, self.foot_texels, mode="constant")

    def solve(self, iterations: int = 60, step: float = 0.7) -> np.ndarray:
        """Non-negative stamp field whose density reaches the aim and stays under the safe cap.

        Projected gradient with Nesterov momentum on the residual
        ``max(aim - d, 0)`` (push up to the aim; never pull down inside the band) and
        ``OVER_WEIGHT x (safe cap - d)`` over the safe cap. The residual is carried back to
        the stamp centres by a Gaussian of ``BACK_SIGMA_MM``, whose spectrum is positive
        (a box back-projection rings at the rim of the allowed region), scaled per texel
        by the stamps that raise the local density by one puncture/cm^2.
        """
        g = self.grid
        treat = g.treatable
        safe = CAP_SAFETY * self.cap
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(self.allowed, g.area_mm2 / (100.0 * np.maximum(self.needles_fired, 1.0)), 0.0)
        sigma = BACK_SIGMA_MM / g.cell_mm
        q = np.zeros(g.shape)
        y = q
        for k in range(iterations):
            d = self.windowed(self.counts(y))
            resid = np.where(d > safe, OVER_WEIGHT * (safe - d), np.maximum(self.aim - d, 0.0))
            back = ndimage.gaussian_filter(np.where(treat, resid, 0.0), sigma, truncate=3.0)
            q_next = np.maximum(y + step * back * gain, 0.0)
            y = q_next + (k / (k + 3.0)) * (q_next - q)
            q = q_next
        self.q = q
        return q


def fine_cartridge(pen: PenSpec) -> PenSpec | None:
    """The pen with its fine touch-up cartridge fitted (None if the protocol has none)."""
    if pen.fine_needles < 1:
        return None
    return dataclasses.replace(pen, needles=pen.fine_needles, footprint_diameter_mm=pen.fine_footprint_diameter_mm)


def dose_field(zones, grid: TexelGrid, protocol: Protocol, base: np.ndarray, pen_zones: set,
               aim_scale: dict | None = None, pen: PenSpec | None = None,
               exclusions: "FootprintClearance | None" = None) -> DoseField:
    """The pen's dose problem over a zone map (stamps allowed only in ``pen_zones``), for the
    protocol's cartridge or the one given as ``pen``; ``exclusions`` reuses another dose
    field's :class:`FootprintClearance` of the same zone map."""
    face = zones.face
    pen = protocol.pen if pen is None else pen
    names = zones.names
    h, w = grid.shape
    label = grid.label
    targets = np.array([zones.dose(n).target_per_cm2 for n in names])
    caps = np.array([zones.dose(n).cap_per_cm2 for n in names])
    max_depth = np.array([zones.dose(n).max_depth_mm for n in names])
    scale = np.array([1.0 if aim_scale is None else aim_scale.get(n, 1.0) for n in names])
    lab = np.maximum(label, 0)
    treat = label >= 0
    aim = np.where(treat, targets[lab] * AIM_RATIO * scale[lab], 0.0)
    cap = np.where(treat, caps[lab], np.inf)
    # skin length of one chart mm at each texel (the chart is conformal to within ~2 %)
    linear = _linear_scale(grid, face)
    depth = np.full((h, w), np.nan)
    allowed = np.zeros((h, w), dtype=bool)
    radius = 0.5 * pen.footprint_diameter_mm + EDGE_SLACK_MM
    distances = {}
    zone_depth = np.full((h, w), np.nan)
    for name in pen_zones:
        zone_depth[label == names.index(name)] = pen_depth_mm(pen, zones.dose(name))
    # no needle in a zone the protocol keeps the pen out of (its footprint stays a radius
    # away, as from skin too shallow for the depth)
    no_pen = np.array(["pen" not in zones.dose(n).devices for n in names], dtype=bool)
    for d in sorted({round(float(x), 9) for x in np.unique(zone_depth[np.isfinite(zone_depth)])}):
        forbidden = ~treat | (max_depth[lab] < d - 1e-9) | no_pen[lab]
        dist = distance_to(grid, forbidden) * linear
        distances[d] = dist
        allowed |= (np.abs(zone_depth - d) < 1e-9) & (dist >= radius)
        depth[allowed & np.isnan(depth)] = d
    clearance = FootprintClearance(zones) if exclusions is None else exclusions
    clear, near_exclusion = _footprint_clear(grid, allowed, linear, clearance, 0.5 * pen.footprint_diameter_mm)
    allowed &= clear
    n = pen.needles
    median_linear = float(np.median(linear[treat])) if treat.any() else 1.0
    foot = max(1, int(round(pen.footprint_diameter_mm * math.sqrt(math.pi) / 2 / median_linear / grid.cell_mm)))
    fired = np.zeros((h, w))
    if allowed.any():
        # on curved skin the outer needles of a shallow stamp miss (their gap exceeds the
        # tolerance): simulate one stamp on every allowed texel to know whether it fires a
        # quarter of its needles (a whole count >= n / 4: at least ceil(n / 4)); the counts
        # themselves are made when asked
        from . import simulate

        layout = simulate.needle_layout(n, pen.footprint_diameter_mm, pen.needle_diameter_mm)
        centres = _centres(grid)[allowed.ravel()]
        angles, stamp_depth = stamp_angles(len(centres)), depth[allowed]
        enough = int(math.ceil(0.25 * n))
        fires = fired_needles(face, centres, angles, stamp_depth, layout, pen.gap_tolerance, enough=enough,
                              in_order=True) >= enough
        fired = _FiredCounts(face, allowed.copy(), centres, angles, stamp_depth, layout, pen.gap_tolerance)
        allowed[allowed] = fires
    return DoseField(grid, aim, cap, allowed, depth, base, n, fired, foot, pen.footprint_diameter_mm, distances,
                     clearance=clearance, near_exclusion=near_exclusion)


class _FiredCounts:
    """The needles each stamp of a dose field fires, counted when first asked: ``(h, w)``,
    the count on the texels given, 0 elsewhere."""

    def __init__(self, face, on, centres, angles, depth, layout, gap_tolerance):
        self.face, self.on, self.args = face, on, (centres, angles, depth, layout, gap_tolerance)

    def __call__(self) -> np.ndarray:
        fired = np.zeros(self.on.shape)
        fired[self.on] = fired_needles(self.face, *self.args, in_order=True)
        return fired


_DISTANCES = weakref.WeakKeyDictionary()   # grid -> Once of {mask: distances}
_DISTANCES_LOCK = threading.Lock()          # held while a grid's Once is found or made


def distance_to(grid: TexelGrid, mask: np.ndarray) -> np.ndarray:
    """Chart distance ``(h, w)`` (mm) from every texel centre to the nearest texel of ``mask``
    (``ndimage.distance_transform_edt(~mask, sampling=grid.cell_mm)``, read-only), computed
    once per grid and mask: the main and fine cartridges' dose fields (made side by side on
    a plan's two threads: the second to ask waits for the first's) and the fine cartridge's
    paths ask for the same ones."""
    mask = np.asarray(mask, dtype=bool)
    with _DISTANCES_LOCK:
        per_grid = _DISTANCES.get(grid)
        if per_grid is None:
            per_grid = _DISTANCES[grid] = Once()

    def make():
        dist = ndimage.distance_transform_edt(~mask, sampling=grid.cell_mm)
        dist.flags.writeable = False
        return dist

    return per_grid.get((mask.shape, np.packbits(mask).tobytes()), make)


_PER_GRID = weakref.WeakKeyDictionary()    # grid -> {what: array}


def _centres(grid: TexelGrid) -> np.ndarray:
    """``grid.centres()``, built once per grid (read-only)."""
    per_grid = _PER_GRID.setdefault(grid, {})
    if "centres" not in per_grid:
        centres = grid.centres()
        centres.flags.writeable = False
        per_grid["centres"] = centres
    return per_grid["centres"]


def _linear_scale(grid: TexelGrid, face) -> np.ndarray:
    """Skin length of one chart mm at each texel ``(h, w)`` (0 off the chart), once per grid and face."""
    per_grid = _PER_GRID.setdefault(grid, {})
    key = ("linear", id(face))
    if key not in per_grid or per_grid[key][0] is not face:
        linear = np.where(grid.tri >= 0, face.linear_scale[np.maximum(grid.tri, 0)], 0.0)
        linear.flags.writeable = False
        per_grid[key] = (face, linear)
    return per_grid[key][1]


def _dilated(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=iterations)``, worked out on the box around
    the mask's texels only (nothing outside it can change)."""
    out = np.zeros(mask.shape, dtype=bool)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return out
    r0, r1 = max(rows[0] - iterations, 0), min(rows[-1] + iterations + 1, mask.shape[0])
    c0, c1 = max(cols[0] - iterations, 0), min(cols[-1] + iterations + 1, mask.shape[1])
    # binary_dilation's default structure is the cross: each iteration ORs in the four
    # neighbours (texels beyond the box's edge are False, as its border value)
    if iterations < 1:   # binary_dilation's "until nothing changes"
        out[r0:r1, c0:c1] = ndimage.binary_dilation(mask[r0:r1, c0:c1], iterations=iterations)
        return out
    sub = np.asarray(mask[r0:r1, c0:c1], dtype=bool)
    for _ in range(iterations):
        grown = sub.copy()
        grown[1:] |= sub[:-1]
        grown[:-1] |= sub[1:]
        grown[:, 1:] |= sub[:, :-1]
        grown[:, :-1] |= sub[:, 1:]
        sub = grown
    out[r0:r1, c0:c1] = sub
    return out


def _dilated_reference(mask: np.ndarray, iterations: int) -> np.ndarray:
    """NumPy twin of :func:`_dilated`."""
    return ndimage.binary_dilation(mask, iterations=iterations)


def fired_needles(face, centres_uv, angles_rad, depth_mm, layout, gap_tolerance: float,
                  enough: int | None = None, in_order: bool = False) -> np.ndarray:
    """How many needles of each stamp fire ``(k,) int``: ``simulate.stamp(...).fired`` counted
    per stamp, by the cartridge kernel without building every needle's row.

    ``enough``: only whether each stamp fires at least that many needles is asked; counts
    from it on read ``enough`` (needles are weighed in layout order until it is certain),
    and ``(out >= enough)`` equals ``(count >= enough)``. ``in_order``: the stamps are
    visited as given (texel centres row by row already share their chart cells from one
    stamp to the next; sorting them by cell first gains nothing), else sorted by chart cell
    (:func:`coverage.simulate._visit_order`); each stamp's count is its own either way."""
    from . import lifting, simulate
    from ._ext import pen as _kernel

    centres, angles, depth, layout, tol = simulate._stamp_inputs(centres_uv, angles_rad, depth_mm, layout,
                                                                 gap_tolerance)
    out = np.empty(len(centres), dtype=np.int64)
    jacobian = np.ascontiguousarray(face.jacobian, dtype=np.float64).reshape(-1, 6)
    order = (np.arange(len(centres), dtype=np.int64) if in_order
             else simulate._visit_order(face.chart_grid, centres))
    _kernel.stamp_fired(face.chart_grid.affine, np.ascontiguousarray(face.faces, dtype=np.int64), face._frames,
                        jacobian, centres, angles, depth, layout, order,
                        *lifting._grid_args(face.chart_grid), 1e-9, tol, out,
                        -1 if enough is None else max(int(enough), 0))
    return out


def fired_needles_reference(face, centres_uv, angles_rad, depth_mm, layout, gap_tolerance: float,
                            enough: int | None = None) -> np.ndarray:
    """NumPy twin of :func:`fired_needles`, from :func:`coverage.simulate.stamp_reference`
    (given ``enough``: the full counts, ``enough`` where they reach it)."""
    from . import simulate

    hits = simulate.stamp_reference(face, centres_uv, angles_rad, depth_mm, layout, gap_tolerance)
    fired = hits.fired.reshape(len(np.atleast_2d(centres_uv)), len(layout))
    counts = fired.sum(axis=1)
    if enough is None:
        return counts
    enough = max(int(enough), 0)
    # the kernel stops at the needle that makes enough, or where the rest cannot: below
    # enough it reports what it counted by then
    out = np.empty(len(counts), dtype=counts.dtype)
    n = fired.shape[1]
    for i, row in enumerate(fired):
        c = 0
        for j in range(n):
            if c >= enough or c + (n - j) < enough:
                break
            c += int(row[j])
        out[i] = c
    return out


# the cell (mm) the exclusions' surfaces are binned in for the footprint's searches: each is
# bounded by margin + footprint radius (2.5 to 9.5 mm), and a point that far from every
# triangle (most of those asked) walks every cell within it, in the keep-outs' own ~1 mm
# cells about eight times as many (the closest point does not depend on the binning): the
# region grids' own least cell, so the keep-outs' grids serve these searches as they are
CLEAR_CELL_MM = REGION_GRID_CELL_MM


class FootprintClearance:
    """Whether a cartridge's whole footprint, centred at chart points, clears every exclusion
    by its margin: the 3D distance to the excluded skin itself (the chart is only a guide
    near the nostrils, where it stretches most) against margin + footprint radius."""

    def __init__(self, zones):
        from . import regions
        from .zones import canonical_exclusion_regions

        self.face = zones.face
        standard = canonical_exclusion_regions(self.face.subdivisions)
        self.parts = []
        for name, exc in zones.exclusions.items():
            regions_by_part = dict(standard.get(name, ()))
            for part, margin in exc.margins_mm:
                # the part's own surface, binned: the grid its keep-out was searched on, in
                # cells of at least CLEAR_CELL_MM (see CLEAR_CELL_MM)
                mesh = regions.region_grid(self.face, regions_by_part.get(part, exc.region))
                if mesh is not None:
                    self.parts.append((mesh, float(margin)))
        self.widest_mm = max((m for _, m in self.parts), default=0.0)
        # each part's box: a point farther than the reach from it along any axis is farther
        # than that from every triangle of the part, and is not searched
        self.boxes = [(mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)) for mesh, _ in self.parts]
        self._reach_boxes = {}     # (radius, slack) -> what clear() reads of the boxes at that reach

    def _on_skin(self, uv) -> tuple[np.ndarray, np.ndarray | None]:
        """``(ok (k,) bool: on the chart, points (k, 3))`` of chart points, the points of those
        off it at the origin; points None when there is nothing to search (no point or no part)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        ok = np.ones(len(uv), dtype=bool)
        if not len(uv) or not self.parts:
            return ok, None
        lifted = self.face.lift(uv)
        ok &= lifted.inside
        return ok, np.where(lifted.inside[:, None], lifted.points, 0.0)

    def clear(self, uv: np.ndarray, radius_mm: float, slack_mm: float = 0.05) -> np.ndarray:
        """``(k,) bool``: a footprint of ``radius_mm`` centred at each chart point keeps every
        margin + slack."""
        from . import proximity

        ok, points = self._on_skin(uv)
        if points is None:
            return ok
        # only the points within the reach of a part's box can be that close to it (the
        # others keep ok: closest_points finds nothing within max_dist for them); first the
        # box around every part's box, widened by the widest reach
        reaches, all_lo, all_hi, lows, highs = self._boxes_at(radius_mm, slack_mm)
        some = np.flatnonzero(_in_box(points, all_lo, all_hi))
        if not len(some):
            return ok
        candidates = points[some]
        # every part's box widened by its reach (a little more), asked of every candidate at
        # once: (candidates, parts)
        x, y, z = candidates[:, 0, None], candidates[:, 1, None], candidates[:, 2, None]
        in_boxes = ((x >= lows[:, 0]) & (x <= highs[:, 0]) & (y >= lows[:, 1]) & (y <= highs[:, 1])
                    & (z >= lows[:, 2]) & (z <= highs[:, 2]))
        for p in np.flatnonzero(in_boxes.any(axis=0)):
            mesh, need = self.parts[p][0], reaches[p]
            inside = in_boxes[:, p]
            near = some[inside]
            tri, _, dist = proximity.closest_points(mesh, candidates[inside], max_dist=need)
            ok[near] &= ~((tri >= 0) & (dist < need))
        return ok

    def _boxes_at(self, radius_mm: float, slack_mm: float) -> tuple:
        """``(reaches [per part], the box around every part's box widened by the widest
        reach (lo (3,), hi (3,)), each part's box widened by its own (lows (parts, 3),
        highs (parts, 3)))`` for a footprint radius and slack: made once for each."""
        key = (float(radius_mm), float(slack_mm))
        found = self._reach_boxes.get(key)
        if found is None:
            reaches = [margin + radius_mm + slack_mm for _, margin in self.parts]
            widest = max(reaches) + 1e-6 * (1.0 + max(reaches))
            all_lo = np.min([lo for lo, _ in self.boxes], axis=0) - widest
            all_hi = np.max([hi for _, hi in self.boxes], axis=0) + widest
            widen = [need + 1e-6 * (1.0 + need) for need in reaches]
            lows = np.array([lo - r for (lo, _), r in zip(self.boxes, widen)]).reshape(-1, 3)
            highs = np.array([hi + r for (_, hi), r in zip(self.boxes, widen)]).reshape(-1, 3)
            found = self._reach_boxes[key] = (reaches, all_lo, all_hi, lows, highs)
        return found

    def clear_reference(self, uv: np.ndarray, radius_mm: float, slack_mm: float = 0.05) -> np.ndarray:
        """:meth:`clear` searching every point against every part."""
        from . import proximity

        ok, points = self._on_skin(uv)
        if points is None:
            return ok
        for mesh, margin in self.parts:
            need = margin + radius_mm + slack_mm
            tri, _, dist = proximity.closest_points(mesh, points, max_dist=need)
            ok &= ~((tri >= 0) & (dist < need))
        return ok


def _in_box(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``((points >= lo) & (points <= hi)).all(axis=1)`` of points ``(k, 3)``, a column at a
    time (the same comparisons, without the slow reduction along rows)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    return (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])


def _in_box_reference(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`_in_box` (the expression it stands for)."""
    return ((points >= lo) & (points <= hi)).all(axis=1)


def _footprint_clear(grid: TexelGrid, allowed: np.ndarray, linear: np.ndarray,
                     clearance: FootprintClearance, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Texels whose centre keeps the whole footprint clear of every exclusion margin, and the
    texels near enough to an exclusion that path samples in them are checked one by one."""
    ok = np.ones(grid.shape, dtype=bool)
    on_chart_not_treatable = (grid.tri >= 0) & (grid.label < 0)
    if not on_chart_not_treatable.any():
        return ok, np.zeros(grid.shape, dtype=bool)
    near = distance_to(grid, on_chart_not_treatable) * linear
    candidates = allowed & (near < radius_mm + clearance.widest_mm + 2.0)
    if candidates.any():
        ok[candidates] = clearance.clear(_centres(grid)[candidates.ravel()], radius_mm)
    return ok, candidates


# --- stroke paths ------------------------------------------------------------------------

@dataclass
class PenPath:
    """One contact path of the pen: chart samples and the stamps along them."""

    zone: str
    pass_index: int
    line: int
    direction_deg: float | None   # raster direction in the chart; None for contour loops
    pattern: str                  # "raster", "contour" or "touch-up"
    depth_mm: float
    speed_mm_s: float
    uv: np.ndarray                # (n, 2) chart samples (glides included)
    stamp_uv: np.ndarray          # (m, 2) chart stamp centres, in firing order
    stamp_s: np.ndarray           # (m,) chart arc length of each stamp along uv
    needles: int = 12             # the cartridge that stamps it
    footprint_mm: float = 7.0

    @property
    def chart_length(self) -> float:
        return float(np.linalg.norm(np.diff(self.uv, axis=0), axis=1).sum())


def _lookup(grid: TexelGrid, values: np.ndarray, uv: np.ndarray, fill=0) -> np.ndarray:
    """A texel field at chart points (float; ``fill`` off the grid or at NaN)."""
    return ChartRaster(grid.origin, grid.cell_mm, values).at(uv, fill)


def _runs(mask: np.ndarray) -> list:
    """``[(start, stop)]`` of the True stretches of a 1D mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))


def _resample(line: np.ndarray, step: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return line[:1]
    t = np.linspace(0.0, s[-1], max(2, int(math.ceil(s[-1] / step)) + 1))
    return np.stack([np.interp(t, s, line[:, 0]), np.interp(t, s, line[:, 1])], axis=1)


def raster_lines(mask_uv: np.ndarray, theta_deg: float, spacing: float, phase: float) -> list:
    """Parallel chart lines at ``theta_deg`` over the points ``mask_uv``, ``spacing`` apart."""
    t = math.radians(theta_deg)
    along, across = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    a, c = mask_uv @ along, mask_uv @ across
    lo, hi = c.min(), c.max()
    offsets = lo + (np.arange(int(math.floor((hi - lo) / spacing - phase)) + 2) + phase) * spacing
    # the offsets up to the first beyond hi + spacing, every line's two ends at once (each
    # end's coordinates as one line at a time computes them: end x along + offset x across)
    beyond = np.flatnonzero(offsets > hi + spacing)
    offsets = offsets[:beyond[0] if len(beyond) else len(offsets)]
    ends = np.array([a.min() - 1.0, a.max() + 1.0])
    return list(ends[None, :, None] * along[None, None] + offsets[:, None, None] * across[None, None])


def contour_lines(grid: TexelGrid, distance: np.ndarray, levels: list) -> list:
    """Level sets of a texel field (chart polylines), one list per level."""
    import contourpy

    h, w = grid.shape
    x = grid.origin[0] + (np.arange(w) + 0.5) * grid.cell_mm
    y = grid.origin[1] + (np.arange(h) + 0.5) * grid.cell_mm
    gen = contourpy.contour_generator(x, y, distance, **CONTOUR_OPTIONS)
    return [gen.lines(level) for level in levels]


_CONTOURS_LOCK = threading.Lock()    # makes each depth's entry of a field's contours once


def _contour_levels(problem: DoseField, depth: float, levels: list) -> list:
    """:func:`contour_lines` of ``problem.skin_distance[depth]``, each level traced once per
    dose field (zones and passes at one depth share their levels), whichever thread asks
    first (:func:`trace_loop_levels` traces a cartridge's ahead on the plan's other thread).
    One level of a depth at a time: a ContourPy generator keeps its march's state in itself,
    so two threads never trace with one generator at once; a thread asking for a level
    another is tracing waits for it."""
    import contourpy

    with _CONTOURS_LOCK:
        entry = problem.contours.get(depth)
        if entry is None:
            entry = problem.contours[depth] = [None, {}, threading.Lock()]
    _, traced, lock = entry
    out = []
    with lock:
        if entry[0] is None:
            grid = problem.grid
            h, w = grid.shape
            x = grid.origin[0] + (np.arange(w) + 0.5) * grid.cell_mm
            y = grid.origin[1] + (np.arange(h) + 0.5) * grid.cell_mm
            entry[0] = contourpy.contour_generator(x, y, problem.skin_distance[depth], **CONTOUR_OPTIONS)
        gen = entry[0]
        for level in levels:
            key = float(level)
            if key not in traced:
                traced[key] = gen.lines(level)
            out.append(traced[key])
    return out


class StampPlacer:
    """Stamps by distance travelled: the running stamp count ``integral(lambda ds)`` crosses
    ``k + 1/2``; the remainder carries from one run to the next of the same pass."""

    def __init__(self):
        self.carry = 0.5

    def place(self, uv: np.ndarray, per_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stamp chart points ``(m, 2)`` and their chart arc lengths ``(m,)`` along ``uv``."""
        if len(uv) < 2:
            return np.empty((0, 2)), np.empty(0)
        seg = np.linalg.norm(np.diff(uv, axis=0), axis=1)
        count = np.concatenate([[0.0], np.cumsum(0.5 * (per_mm[1:] + per_mm[:-1]) * seg)])
        return self.place_along(uv, count, np.concatenate([[0.0], np.cumsum(seg)]))

    def place_along(self, uv: np.ndarray, count: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`place` given the running stamp count from the path's start ``count (n,)``
        (``[0, cumsum(...)]``, before the carry) and the arc lengths ``s (n,)``."""
        if len(uv) < 2:
            return np.empty((0, 2)), np.empty(0)
        carry = self.carry
        total = count[-1] + carry      # the last of count + carry
        ks = np.arange(1, int(math.floor(total)) + 1, dtype=np.float64)
        self.carry = total - math.floor(total)
        if not len(ks):
            return np.empty((0, 2)), np.empty(0)
        cum = count + carry
        # cum is non-decreasing; where it is flat no stamp can land, so interp is well defined
        at = np.interp(ks, cum, s)
        out = np.empty((len(at), 2))
        out[:, 0] = np.interp(at, s, uv[:, 0])
        out[:, 1] = np.interp(at, s, uv[:, 1])
        return out, at


def _zone_active(problem: DoseField, zones, name: str, q: np.ndarray):
    """A zone's box and what :func:`zone_paths` reads there: ``(box, q on the zone's texels,
    the zone's allowed texels, the active ones)`` (the zone's allowed texels within two of
    one with stamps to place), or None where the zone has none."""
    grid = problem.grid
    k = zones.names.index(name)
    # the zone's texels lie in its box (widened by the dilation's two texels): every mask
    # below is worked out on that box only (nothing outside it is in the zone), its texels
    # read in the same (row-major) order as over the whole grid
    box = _zone_box(grid, k, 2)
    if box is None:
        return None
    q = np.where(grid.label[box] == k, np.asarray(q)[box], 0.0)
    zone_mask = problem.allowed[box] & (grid.label[box] == k)
    active = zone_mask & _dilated(q > 0, 2)
    if not active.any():
        return None
    return box, q, zone_mask, active


def _loop_levels(problem: DoseField, settings: PenSettings, box, active_box: np.ndarray, p: int,
                 passes: int) -> tuple[float, list]:
    """The depth key and the skin distances of pass ``p``'s contour loops in a zone (its
    ``box`` and active texels there): one loop every ``spacing_mm`` from the footprint's
    radius to the zone's farthest active texel, offset by ``p / passes`` of a spacing."""
    depth = round(float(settings.depth_mm), 9)
    dist = problem.skin_distance[depth]
    radius = 0.5 * problem.footprint_mm + EDGE_SLACK_MM
    top = float(dist[box][active_box].max())
    levels = list(radius + 0.05 + (np.arange(int((top - radius) / settings.spacing_mm) + 2) + p / passes)
                  * settings.spacing_mm)
    return depth, [lv for lv in levels if lv <= top + 0.5 * settings.spacing_mm]


def trace_loop_levels(problem: DoseField, zones, names: list, q: np.ndarray, settings: dict) -> int:
    """Trace the contour loops :func:`field_paths` (``problem``, ``names``, ``q``, ``settings``
    per zone, each zone's own pattern and passes) will read, ahead of it: a piece for the
    plan's other thread while the caller makes the paths (each level is traced once,
    whichever thread asks first: the paths are the same). Returns the levels asked for."""
    asked = 0
    for name in names:
        st = settings[name]
        if st.pattern != "contour":
            continue
        setup = _zone_active(problem, zones, name, q)
        if setup is None:
            continue
        box, _, _, active = setup
        for p in range(st.passes):
            depth, levels = _loop_levels(problem, st, box, active, p, st.passes)
            _contour_levels(problem, depth, levels)
            asked += len(levels)
    return asked


def zone_paths(problem: DoseField, zones, name: str, settings: PenSettings, q: np.ndarray,
               pattern: str | None = None, passes: int | None = None, first_pass: int = 0,
               loops: bool | None = None) -> list:
    """The pen paths of one zone realising the stamp field ``q`` there (``q`` is read on the
    zone's texels only: zero elsewhere)."""
    grid = problem.grid
    setup = _zone_active(problem, zones, name, q)
    if setup is None:
        return []
    box, q, zone_mask, active = setup
    pattern = pattern or settings.pattern
    # contour loops (at constant skin distances from the forbidden skin) or raster lines;
    # the paths are labelled ``pattern`` either way
    loops = (pattern == "contour") if loops is None else loops
    passes = passes or settings.passes
    cell = grid.cell_mm
    linear = _linear_scale(grid, zones.face)[box]
    zone_linear = float(np.median(linear[zone_mask]))
    # every texel's stamps go to the nearest sample of the pass's paths (a Voronoi split of
    # the zone among its lines or loops), so each pass carries exactly 1/passes of the field
    grid_centres = _centres(grid).reshape(*grid.shape, 2)[box]
    has_mass = zone_mask & (q > 0)
    mass_uv, mass = grid_centres[has_mass], q[has_mass]
    centres = grid_centres[active]
    active_box, active = active, np.zeros(grid.shape, dtype=bool)
    active[box] = active_box
    polygon = zones.polygons[name]
    paths = []
    for p in range(passes):
        placer = StampPlacer()
        if loops:
            raw = [line for per_level in _contour_levels(problem, *_loop_levels(problem, settings, box, active_box,
                                                                                 p, passes))
                   for line in per_level]
            theta = None
            # the skin spacing between loops is fixed; in the chart it is spacing / linear scale
            spacing_chart = None
        else:
            theta = float(settings.directions_deg[(first_pass + p) % len(settings.directions_deg)])
            spacing_chart = settings.spacing_mm / zone_linear
            raw = raster_lines(centres, theta, spacing_chart, 0.5)
        runs = _pass_runs(problem, grid, active, polygon, raw)
        # boustrophedon: every other line (or loop) runs backwards
        runs = [(j, r if j % 2 == 0 else r[::-1], d) for j, r, d in runs]
        if not loops:
            # keep line order; within a reversed line, its runs go in reverse too
            runs = _snake(runs)
        if not runs:
            continue
        sizes = np.array([len(uv) for _, uv, _ in runs])
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        samples = np.concatenate([uv for _, uv, _ in runs])
        reach = (spacing_chart if spacing_chart is not None else settings.spacing_mm / zone_linear) + cell
        nearest, dist = _nearest_within(samples, mass_uv, reach)
        carried = np.bincount(nearest[dist <= reach], weights=mass[dist <= reach], minlength=len(samples))
        # each run's segment lengths and the path length each sample stands for (half of
        # each segment beside it), element by element as per run
        seg = np.linalg.norm(np.diff(samples, axis=0), axis=1)
        half_before = np.concatenate([[0.0], seg]) / 2
        half_after = np.concatenate([seg, [0.0]]) / 2
        half_before[bounds[:-1]] = 0.0
        half_after[bounds[1:] - 1] = 0.0
        per_mm = (carried / passes) / np.maximum(half_before + half_after, 1e-9)
        # each run's running stamp count and arc length (StampPlacer.place's cumsums, run by run)
        step = np.zeros(len(samples))
        step[1:] = 0.5 * (per_mm[1:] + per_mm[:-1]) * seg
        count, arc = _run_cumsum(step, bounds), _run_cumsum(np.concatenate([[0.0], seg]), bounds)
        placed = _place_runs(placer, samples, count, arc, bounds)
        for i, (j, uv, run_depth) in enumerate(runs):
            stamps, at = placed[i]
            paths.append(PenPath(name, first_pass + p, j, theta, pattern, run_depth, settings.speed_mm_s,
                                 uv, stamps, at, problem.needles, problem.footprint_mm))
    return [p for p in paths if len(p.stamp_uv)]


def _place_runs(placer: StampPlacer, samples: np.ndarray, count: np.ndarray, arc: np.ndarray,
                bounds: np.ndarray) -> list:
    """``[placer.place_along(samples[a:b], count[a:b], arc[a:b])]`` for the runs ``a:b`` of
    ``bounds`` one after the other (the carry passed on), in one compiled pass
    (:func:`coverage._ext.paths.place_fill`, numpy.interp's arithmetic) where every value is
    finite and the running counts and arc lengths do not fall within a run; else by
    :func:`_place_runs_reference`."""
    samples = np.ascontiguousarray(samples, dtype=np.float64).reshape(-1, 2)
    count = np.ascontiguousarray(count, dtype=np.float64)
    arc = np.ascontiguousarray(arc, dtype=np.float64)
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    carry = placer.carry
    rising = np.ones(max(len(count) - 1, 0), dtype=bool)
    rising[bounds[1:-1] - 1] = False                      # from one run to the next: unread
    if not (len(count) == len(arc) == len(samples) == bounds[-1] and bounds[0] == 0 and math.isfinite(carry)
            and np.isfinite(samples).all() and np.isfinite(count).all() and np.isfinite(arc).all()
            and (np.diff(count)[rising] >= 0).all() and (np.diff(arc)[rising] >= 0).all()):
        return _place_runs_reference(placer, samples, count, arc, bounds)
    m = np.empty(len(bounds) - 1, dtype=np.int64)
    last = _paths_kernel.place_counts(count, bounds, float(carry), m)
    out_starts = np.zeros(len(m) + 1, dtype=np.int64)
    np.cumsum(m, out=out_starts[1:])
    out_uv = np.empty((int(out_starts[-1]), 2))
    out_at = np.empty(int(out_starts[-1]))
    _paths_kernel.place_fill(samples, count, arc, bounds, float(carry), out_starts, np.empty(len(count)), out_uv,
                             out_at)
    placer.carry = last
    return [(out_uv[a:b], out_at[a:b]) for a, b in zip(out_starts[:-1].tolist(), out_starts[1:].tolist())]


def _place_runs_reference(placer: StampPlacer, samples: np.ndarray, count: np.ndarray, arc: np.ndarray,
                          bounds: np.ndarray) -> list:
    """NumPy twin of :func:`_place_runs`: place_along run by run."""
    return [placer.place_along(samples[a:b], count[a:b], arc[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _zone_box(grid: TexelGrid, k: int, pad: int):
    """The slices ``(rows, cols)`` of the box around the texels labelled ``k``, widened by
    ``pad`` texels (within the grid), or None where no texel is; the boxes of every label
    found in one pass over the grid, once per grid."""
    per_grid = _PER_GRID.setdefault(grid, {})
    if "zone_boxes" not in per_grid:
        label = np.asarray(grid.label)
        per_grid["zone_boxes"] = ndimage.find_objects(np.where(label >= 0, label + 1, 0)) if label.size else []
    boxes = per_grid["zone_boxes"]
    if not 0 <= k < len(boxes) or boxes[k] is None:
        return None
    rows, cols = boxes[k]
    h, w = grid.shape
    return (slice(max(rows.start - pad, 0), min(rows.stop + pad, h)),
            slice(max(cols.start - pad, 0), min(cols.stop + pad, w)))


_NEAREST_RINGS = 4   # cells of a quarter of the reach, searched ring by ring around each point


def _nearest_within(samples: np.ndarray, points: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """``cKDTree(samples).query(points)`` as ``(nearest (k,), dist (k,))`` for the points
    whose nearest sample lies within ``reach`` (the others: -1 and inf): the samples binned
    in cells of a quarter of the reach, searched ring by ring around each point until no
    nearer one can be left (:func:`coverage._ext.pen.nearest_within`),
    and the KD-tree asked only where two samples are equally near (its choice among them is
    its own) or a point is not finite."""
    from ._ext import pen as _kernel

    samples = np.ascontiguousarray(samples, dtype=np.float64).reshape(-1, 2)
    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 2)
    reach = float(reach)
    if not len(samples) or not np.isfinite(samples).all() or not (math.isfinite(reach) and reach > 0):
        return _nearest_within_reference(samples, points, reach)
    origin = samples.min(axis=0)
    rings = _NEAREST_RINGS
    cell = reach * (1.0 + 1e-6) / rings
    dims = np.floor((samples.max(axis=0) - origin) / cell).astype(np.int64) + 1
    if int(dims[0]) * int(dims[1]) > 16 * len(samples) + 65536:
        return _nearest_within_reference(samples, points, reach)
    nu, nv = int(dims[0]), int(dims[1])
    ij = np.clip(np.floor((samples - origin) / cell).astype(np.int64), 0, dims - 1)
    key = ij[:, 1] * nu + ij[:, 0]
    items = np.argsort(key, kind="stable").astype(np.int64)
    start = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=nu * nv))]).astype(np.int64)
    nearest = np.empty(len(points), dtype=np.int64)
    dist = np.empty(len(points))
    tie = np.empty(len(points), dtype=np.uint8)
    _kernel.nearest_within(samples, points, float(origin[0]), float(origin[1]), cell, nu, nv, start, items, reach,
                           rings, nearest, dist, tie)
    tie = tie.astype(bool)
    if tie.any():
        nearest[tie], dist[tie] = _nearest_within_reference(samples, points[tie], reach)
    return nearest, dist


def _nearest_within_reference(samples: np.ndarray, points: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """NumPy (SciPy) twin of :func:`_nearest_within`."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not len(points):
        return np.empty(0, dtype=np.int64), np.empty(0)
    if not len(samples):
        return np.full(len(points), -1, dtype=np.int64), np.full(len(points), np.inf)
    dist, nearest = cKDTree(samples).query(points)
    far = ~(dist <= reach)
    return np.where(far, -1, nearest).astype(np.int64), np.where(far, np.inf, dist)


def _run_cumsum(step: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per run (rows ``bounds[i]:bounds[i + 1]``): ``[0, cumsum(step[first + 1:last + 1])]``,
    as numpy sums it (left to right)."""
    out = np.empty(len(step))
    counts = np.empty(len(bounds) - 1, dtype=np.int64)
    _paths_kernel.arc_lengths(np.ascontiguousarray(step, dtype=np.float64), np.asarray(bounds, dtype=np.int64), 1.0,
                              out, counts)
    return out


def _pass_runs(problem: DoseField, grid: TexelGrid, active: np.ndarray, polygon, raw: list) -> list:
    """The runs ``[(line, samples (n, 2), depth)]`` of one pass's lines or loops ``raw``: their
    stretches, sampled every :data:`SAMPLE_MM`, over ``active`` texels inside the zone's
    polygon (and clear of the exclusions), split where the depth setting changes.

    Only the samples on ``active`` texels are kept from the start (:func:`_line_samples_on`):
    a contour loop runs round the whole face and most of its samples lie in other zones."""
    if not raw:
        return []
    samples, line, index = _line_samples_on(raw, SAMPLE_MM, grid, active)
    # texel labels go by texel centre: the zone's own polygon has the last word
    with GEOS_LOCK:
        inside = np.asarray(shapely.contains_xy(polygon, samples[:, 0], samples[:, 1]), dtype=bool)
    if problem.clearance is not None and problem.near_exclusion is not None:
        # near an exclusion a sample off its texel centre is checked in 3D itself
        check = inside & _lookup(grid, problem.near_exclusion, samples, False).astype(bool)
        if check.any():
            inside[check] = problem.clearance.clear(samples[check], 0.5 * problem.footprint_mm)
    samples, line, index = samples[inside], line[inside], index[inside]
    # a run holds one depth setting: it splits where the stamps step down beside a
    # shallower zone. A run starts at an inside sample that opens its line, does not follow
    # the one before it or changes the depth (NaN != NaN: every NaN sample starts its own)
    depth_at = _lookup(grid, problem.depth_mm, samples, np.nan)
    begin = np.ones(len(samples), dtype=bool)
    begin[1:] = (index[1:] != index[:-1] + 1) | (line[1:] != line[:-1]) | (depth_at[1:] != depth_at[:-1])
    lo = np.flatnonzero(begin)
    # a run continues over the samples until the next start
    length = np.diff(np.append(lo, len(samples)))
    keep = (length >= 2) & np.isfinite(depth_at[lo])
    return [(int(j), samples[a:a + n], float(depth_at[a])) for j, a, n in zip(line[lo[keep]], lo[keep], length[keep])]


def _line_samples_on(lines: list, step: float, grid: TexelGrid, mask: np.ndarray) -> tuple:
    """The samples of :func:`_resample_lines` that lie on True texels of ``mask (h, w) bool``
    (read as :func:`_lookup` reads it): ``(samples (k, 2), line (k,), index (k,))``, in
    order, with each one's line and its row among all the samples. In one compiled pass
    (:func:`coverage._ext.paths.resample_on`, the samples that ``paths.resample`` makes,
    looked up as they are made) where every line has two points or more, some length and
    finite values; else by :func:`_line_samples_on_reference`."""
    from . import paths as _paths
    lines = [np.asarray(line, dtype=np.float64).reshape(-1, 2) for line in lines]
    sizes = np.array([len(line) for line in lines], dtype=np.int64)
    mask = np.asarray(mask)
    if not len(lines) or (sizes < 2).any() or mask.dtype != bool or mask.ndim != 2:
        return _line_samples_on_reference(lines, step, grid, mask)
    uv = np.ascontiguousarray(np.concatenate(lines))
    starts = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    # paths.resample's segment lengths (sqrt((dx^2 + dy^2) + 0^2) of its lifted points at
    # height 0 is sqrt(dx^2 + dy^2)), arc lengths and sample counts
    seg = np.zeros(len(uv))
    _paths_kernel.segment_lengths(uv, seg[1:])
    step = float(step)
    if not (step > 0 and np.isfinite(uv).all() and np.isfinite(seg).all()):
        return _line_samples_on_reference(lines, step, grid, mask)
    arc, out_starts = _paths.sample_layout(seg, starts, step)
    ends = arc[starts[1:] - 1]
    if not (np.isfinite(ends).all() and (ends > 0).all()):
        return _line_samples_on_reference(lines, step, grid, mask)
    counts = np.diff(out_starts)
    total = int(out_starts[-1])
    out = np.empty((total, 2))
    line = np.empty(total, dtype=np.int64)
    index = np.empty(total, dtype=np.int64)
    k = _paths_kernel.resample_on(uv, arc, starts, out_starts, np.ascontiguousarray(mask).view(np.uint8),
                                  float(grid.origin[0]), float(grid.origin[1]), float(grid.cell_mm),
                                  np.empty((int(counts.max()), 2)), out, line, index)
    return out[:k], line[:k], index[:k]


def _line_samples_on_reference(lines: list, step: float, grid: TexelGrid, mask: np.ndarray) -> tuple:
    """NumPy twin of :func:`_line_samples_on`."""
    if not len(lines):
        return np.empty((0, 2)), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    samples, starts = _resample_lines(lines, step)
    index = np.flatnonzero(_lookup(grid, mask, samples, False).astype(bool))
    return samples[index], (np.searchsorted(starts, index, side="right") - 1).astype(np.int64), index.astype(np.int64)


def _pass_runs_reference(problem: DoseField, grid: TexelGrid, active: np.ndarray, polygon, raw: list) -> list:
    """NumPy twin of :func:`_pass_runs`: every sample of every line looked up."""
    if not raw:
        return []
    samples, starts = _resample_lines(raw, SAMPLE_MM)
    inside = _lookup(grid, active, samples, False).astype(bool)
    # texel labels go by texel centre: the zone's own polygon has the last word
    with GEOS_LOCK:
        inside[inside] = shapely.contains_xy(polygon, samples[inside, 0], samples[inside, 1])
    if problem.clearance is not None and problem.near_exclusion is not None:
        # near an exclusion a sample off its texel centre is checked in 3D itself
        check = inside & _lookup(grid, problem.near_exclusion, samples, False).astype(bool)
        if check.any():
            inside[check] = problem.clearance.clear(samples[check], 0.5 * problem.footprint_mm)
    # a run holds one depth setting: it splits where the stamps step down beside a
    # shallower zone. A run starts at an inside sample that opens its line, follows an
    # outside one or changes the depth (NaN != NaN: every NaN sample starts its own)
    depth_at = _lookup(grid, problem.depth_mm, samples, np.nan)
    begin = inside.copy()
    follows = np.ones(len(samples), dtype=bool)
    follows[1:] = ~inside[:-1] | (depth_at[1:] != depth_at[:-1])
    follows[starts[:-1]] = True
    begin &= follows
    lo = np.flatnonzero(begin)
    # a run continues over inside samples until the next start
    run = np.cumsum(begin) - 1
    length = np.bincount(run[inside], minlength=len(lo))
    line = np.searchsorted(starts, lo, side="right") - 1
    keep = (length >= 2) & np.isfinite(depth_at[lo])
    return [(int(j), samples[a:a + n], float(depth_at[a])) for j, a, n in zip(line[keep], lo[keep], length[keep])]


def _resample_lines(lines: list, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Every line as :func:`_resample` gives it, side by side: ``(samples (n, 2), starts)``,
    line i at rows ``starts[i]:starts[i + 1]``."""
    lines = [np.asarray(line, dtype=np.float64).reshape(-1, 2) for line in lines]
    sizes = np.array([len(line) for line in lines], dtype=np.int64)
    return _resample_packed(np.concatenate(lines), sizes, step, lines)


def _resample_packed(uv: np.ndarray, sizes: np.ndarray, step: float, lines: list | None = None):
    """:func:`_resample_lines` of the lines ``uv`` holds side by side (float64 ``(n, 2)``,
    line i ``sizes[i]`` rows long; ``lines``: those rows as arrays, if at hand)."""
    from . import paths as _paths

    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    seg = np.zeros(len(uv))
    seg[1:] = np.linalg.norm(np.diff(uv, axis=0), axis=1)
    seg[starts[:-1]] = 0.0
    # a line of no length is its first point (paths.resample would give it twice): those
    # one by one
    flat = ~(np.maximum.reduceat(seg, starts[:-1]) > 0) if (sizes > 0).all() else np.ones(len(sizes), dtype=bool)
    if flat.any() and lines is None:
        lines = [uv[a:b] for a, b in zip(starts[:-1], starts[1:])]
    if flat.all():
        pieces = [_resample(line, step) for line in lines]
        return np.concatenate(pieces), np.concatenate([[0], np.cumsum([len(x) for x in pieces])]).astype(np.int64)
    if flat.any():
        rest = [line for line, f in zip(lines, flat) if not f]
        out, out_starts = _resample_lines(rest, step)
        pieces, k = [], 0
        for line, f in zip(lines, flat):
            if f:
                pieces.append(_resample(line, step))
            else:
                pieces.append(out[out_starts[k]:out_starts[k + 1]])
                k += 1
        return np.concatenate(pieces), np.concatenate([[0], np.cumsum([len(x) for x in pieces])]).astype(np.int64)
    points = np.zeros((len(uv), 3))
    points[:, :2] = uv
    return _paths.resample(uv, points, starts, step)


def field_paths(problem: DoseField, zones, names: list, q: np.ndarray, settings: dict, *,
                pattern: str | None = None, passes: int | None = None, first_pass: dict | None = None,
                loops: bool | None = None) -> list:
    """The joined pen paths of several zones realising the stamp field ``q``, zone by zone
    (``settings`` and ``first_pass`` per zone name; each zone reads ``q`` on its own texels)."""
    paths = []
    for name in names:
        paths += join_paths(zone_paths(problem, zones, name, settings[name], q, pattern=pattern, passes=passes,
                                       first_pass=(first_pass or {}).get(name, 0), loops=loops), problem, zones)
    return paths


def _snake(runs: list) -> list:
    """Runs in line order; the runs of a backwards line in backwards order."""
    out, by_line = [], {}
    for run in runs:
        by_line.setdefault(run[0], []).append(run)
    for j in sorted(by_line):
        out.extend(by_line[j] if j % 2 == 0 else by_line[j][::-1])
    return out


def join_paths(paths: list, problem: DoseField, zones) -> list:
    """Join consecutive paths of a zone and pass by a glide in contact when the straight
    chart move between them stays inside the zone's allowed region (never leaving the zone)."""
    if not paths:
        return []
    # Whether path i glides on from path i - 1 depends on those two only: a joined path
    # ends where its last member ends and its members share zone, pass, depth and
    # cartridge. So every move is built and checked first, all at once.
    firsts = np.array([p.uv[0] for p in paths], dtype=np.float64).reshape(-1, 2)
    lasts = np.array([p.uv[-1] for p in paths], dtype=np.float64).reshape(-1, 2)
    # path i's start from path i - 1's end, each as joinable measures it
    gap = _row_distances(lasts[:-1], firsts[1:])
    same = [(a.zone, a.pass_index, a.depth_mm, a.needles) == (b.zone, b.pass_index, b.depth_mm, b.needles)
            for a, b in zip(paths[:-1], paths[1:])]
    keys = np.flatnonzero(np.array(same, dtype=bool) & _at_most(gap, lasts[:-1], firsts[1:], MAX_GLIDE_MM)) + 1
    seam = _at_most(gap, lasts[:-1], firsts[1:], 1e-12)
    join = np.zeros(len(paths), dtype=bool)
    if len(keys):
        samples, starts = _glide_samples(lasts[keys - 1], firsts[keys])
        join[keys] = _glides_ok_packed(samples, starts, [paths[i].zone for i in keys], problem, zones)
        # each glide's segment lengths (its own rows: the row across two glides is not read)
        glide_seg = _segment_lengths(samples)
        glide = dict(zip(keys.tolist(), zip(starts[:-1].tolist(), starts[1:].tolist())))
    heads = np.flatnonzero(~join)
    out = []
    for h, end in zip(heads.tolist(), heads[1:].tolist() + [len(paths)]):
        p = paths[h]
        out.append(p)
        if end == h + 1:
            continue
        # the joined path's samples: each member after a glide (without its first and last
        # sample, the paths' own ends) and without its first sample where it starts where
        # the one before ended (a loop split at its seam)
        uvs, stamp_uvs, stamp_ss, offsets, count = [p.uv], [p.stamp_uv], [p.stamp_s], [], len(p.uv)
        for i in range(h + 1, end):
            a, b = glide[i]
            q = paths[i]
            # the segments before this member's glide, and the glide's own length
            offsets.append((count - 1, float(glide_seg[a:b - 1].sum())))
            glided, tail = samples[a + 1:b - 1], q.uv[1:] if seam[i - 1] else q.uv
            uvs += [glided, tail]
            count += len(glided) + len(tail)
            stamp_uvs.append(q.stamp_uv)
        uv = np.concatenate(uvs)
        # each member's stamps at its arc length plus the chart length of the joined path
        # before it and of its glide (each summed whole, as chart_length sums them)
        seg = _segment_lengths(uv)
        stamp_ss += [q.stamp_s + (float(seg[:n].sum()) + move) for q, (n, move) in zip(paths[h + 1:end], offsets)]
        p.uv, p.stamp_uv, p.stamp_s = uv, np.concatenate(stamp_uvs), np.concatenate(stamp_ss)
    return out


def _segment_lengths(uv) -> np.ndarray:
    """``np.linalg.norm(np.diff(uv, axis=0), axis=1)`` of chart points ``(n, 2)``: for float64
    points by the compiled loop (:func:`coverage._ext.paths.segment_lengths`, the same
    arithmetic row by row), else by :func:`_segment_lengths_reference`."""
    uv = np.asarray(uv)
    if uv.dtype != np.float64 or uv.ndim != 2 or uv.shape[1] != 2:
        return _segment_lengths_reference(uv)
    out = np.empty(max(len(uv) - 1, 0))
    _paths_kernel.segment_lengths(np.ascontiguousarray(uv), out)
    return out


def _segment_lengths_reference(uv) -> np.ndarray:
    """NumPy twin of :func:`_segment_lengths`."""
    return np.linalg.norm(np.diff(uv, axis=0), axis=1)


def _row_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(k,)`` chart distances from each row of ``a (k, 2)`` to the same row of ``b``:
    sqrt(dx * dx + dy * dy), within a rounding of what :func:`_point_distance` gives each
    pair (its dot product may fuse a multiply and an add; here they equal it)."""
    d = b - a
    return np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])


def _at_most(dist: np.ndarray, a: np.ndarray, b: np.ndarray, limit: float) -> np.ndarray:
    """``(k,) bool``: whether ``_point_distance(a[i], b[i]) <= limit``, as it decides it:
    ``dist`` (:func:`_row_distances` of them) decides the pairs clear of ``limit`` by far more
    than a rounding, and :func:`_point_distance` itself the others (and NaN)."""
    out = dist <= limit
    unsure = np.flatnonzero(~(np.abs(dist - limit) > 1e-9 * limit))
    for i in unsure.tolist():
        out[i] = _point_distance(a[i], b[i]) <= limit
    return out


def _point_distance(a, b) -> float:
    """``np.linalg.norm(b - a)`` of two chart points ``(2,)``, as it computes it for float64
    (``sqrt(d.dot(d))``) without its checks."""
    d = np.asarray(b) - np.asarray(a)
    if d.dtype != np.float64 or d.ndim != 1:
        return float(np.linalg.norm(d))
    return math.sqrt(float(d.dot(d)))


def joinable(a, b) -> bool:
    """Whether path ``b`` may continue path ``a`` in one stroke: the same zone, pass, depth
    setting and cartridge, and ``b`` starting within :data:`MAX_GLIDE_MM` (chart) of where
    ``a`` ends (whether the glide between them is safe is :func:`glides_ok`'s question)."""
    return ((a.zone, a.pass_index, a.depth_mm, a.needles) == (b.zone, b.pass_index, b.depth_mm, b.needles)
            and bool(_point_distance(a.uv[-1], b.uv[0]) <= MAX_GLIDE_MM))


def glide_moves(froms, tos) -> list:
    """The straight chart glides ``[(k_i, 2)]`` from each point of ``froms`` to the matching
    point of ``tos``, sampled every half :data:`SAMPLE_MM`, both ends included."""
    if not len(froms):
        return []
    samples, starts = _glide_samples(froms, tos)
    return [samples[a:b] for a, b in zip(starts[:-1], starts[1:])]


def _glide_samples(froms, tos) -> tuple[np.ndarray, np.ndarray]:
    """:func:`glide_moves` side by side: ``(samples (n, 2), starts)``, glide i at rows
    ``starts[i]:starts[i + 1]`` (at least one glide)."""
    # line i is rows 2i, 2i + 1: np.stack([froms[i], tos[i]]) as float64
    uv = np.empty((len(froms), 2, 2))
    uv[:, 0] = np.asarray(froms, dtype=np.float64).reshape(-1, 2)
    uv[:, 1] = np.asarray(tos, dtype=np.float64).reshape(-1, 2)
    return _resample_packed(uv.reshape(-1, 2), np.full(len(froms), 2, dtype=np.int64), SAMPLE_MM / 2)


def glides_ok(moves: list, zone_names: list, problem: DoseField, zones) -> np.ndarray:
    """``(k,) bool``: whether each chart move ``moves[i]`` may be glided in contact in zone
    ``zone_names[i]``. A glide fires nothing: its centre stays on the zone's skin and its
    footprint clears every exclusion margin (checked in 3D wherever a stamp could not be
    centred, or next to an exclusion)."""
    if not moves:
        return np.zeros(0, dtype=bool)
    sizes = np.array([len(m) for m in moves])
    return _glides_ok_packed(np.concatenate(moves), np.concatenate([[0], np.cumsum(sizes)]), zone_names, problem,
                             zones)


def _glides_ok_packed(pts: np.ndarray, bounds: np.ndarray, zone_names: list, problem: DoseField,
                      zones) -> np.ndarray:
    """:func:`glides_ok` of the moves ``pts`` holds side by side (move i at rows
    ``bounds[i]:bounds[i + 1]``, each one row or more)."""
    grid = problem.grid
    sizes = np.diff(bounds)
    index = {n: i for i, n in enumerate(zones.names)}
    zone = np.repeat([index[n] for n in zone_names], sizes)
    ok = _lookup(grid, grid.label, pts, -1) == zone
    # the 3D check only for moves every sample of which is on the zone's skin
    whole = np.logical_and.reduceat(ok, bounds[:-1])
    if problem.clearance is not None and problem.near_exclusion is not None:
        check = np.repeat(whole, sizes) & _lookup(grid, problem.glide_checked, pts, True).astype(bool)
        if check.any():
            ok[check] = problem.clearance.clear(pts[check], 0.5 * problem.footprint_mm)
        whole = np.logical_and.reduceat(ok, bounds[:-1])
    names = np.array(zone_names)
    for name in set(zone_names):
        sel = np.repeat(whole & (names == name), sizes)
        if sel.any():
            with GEOS_LOCK:
                ok[sel] = shapely.contains_xy(zones.polygons[name], pts[sel, 0], pts[sel, 1])
    return np.logical_and.reduceat(ok, bounds[:-1])


def stamp_angles(count: int, start: int = 0) -> np.ndarray:
    """Cartridge rotation of each stamp: golden-angle steps, so needles never track."""
    return ((start + np.arange(count)) * GOLDEN_ANGLE) % (2 * math.pi)


# --- stamps, their safety, and the cap guard ---------------------------------------------

@dataclass
class Stamps:
    """Every stamp of some pen paths, its simulated needles, and whether it is kept."""

    paths: list
    path: np.ndarray       # (S,) index into paths
    uv: np.ndarray         # (S, 2) chart centres
    depth_mm: np.ndarray   # (S,) depth setting
    hits: object           # simulate.StampHits, S x N rows
    keep: np.ndarray       # (S,) bool
    needles: int
    field: object = None   # the cartridge's DoseField, where glides between its paths are checked

    def fired(self) -> np.ndarray:
        """Rows of ``hits`` that are punctures of kept stamps."""
        return self.hits.fired & np.repeat(self.keep, self.needles)

    def fired_at(self, stamps: np.ndarray) -> np.ndarray:
        """``fired().reshape(-1, needles)[stamps]`` ``(k, needles) bool``, read at those stamps only."""
        stamps = np.asarray(stamps, dtype=np.int64)
        return self.hits.fired.reshape(-1, self.needles)[stamps] & self.keep[stamps][:, None]


def simulate_paths(face, zones, protocol: Protocol, paths: list, first_stamp: int = 0,
                   pen: PenSpec | None = None, grid: TexelGrid | None = None) -> tuple[Stamps, int]:
    """Simulate every stamp of ``paths`` (one cartridge: the protocol's, or ``pen``) and drop
    each stamp one of whose punctures would land off treatable skin (a keep-out, unobserved
    skin, off the face, or a texel of ``grid`` outside every zone), in a zone whose maximum
    depth is shallower than the stamp's setting, or in a zone the protocol keeps the pen out
    of. Returns the stamps and how many were dropped."""
    from . import simulate

    pen = protocol.pen if pen is None else pen
    layout = simulate.needle_layout(pen.needles, pen.footprint_diameter_mm, pen.needle_diameter_mm)
    counts = [len(p.stamp_uv) for p in paths]
    path = np.repeat(np.arange(len(paths)), counts)
    uv = np.concatenate([p.stamp_uv for p in paths]) if paths else np.empty((0, 2))
    depth = np.repeat([p.depth_mm for p in paths], counts).astype(np.float64)
    angles = stamp_angles(len(uv), first_stamp)
    hits = simulate.stamp(face, uv, angles, depth, layout, pen.gap_tolerance)
    n = len(layout)
    max_depth = np.array([zones.dose(name).max_depth_mm for name in zones.names])
    fired = hits.fired
    label = np.full(len(fired), -1, dtype=np.int64)
    label[fired] = zones.label_at(hits.uv[fired])
    # a stamp is set to its depth: no needle of it may land in a zone whose maximum is
    # shallower than that setting (whatever the needle's own gap takes off), as the verifier
    # holds every stroke's depth setting against each zone its punctures land in
    # nor in a zone the protocol keeps the pen out of
    no_pen = np.array(["pen" not in zones.dose(name).devices for name in zones.names], dtype=bool)
    bad = fired & ((label < 0) | (np.repeat(depth, n) > max_depth[np.maximum(label, 0)] + 1e-9)
                   | no_pen[np.maximum(label, 0)])
    if grid is not None:
        # the density map counts a puncture by its texel's zone (the zone under the texel's
        # centre): a needle in a rim texel outside every zone would count as off the skin
        bad |= fired & (_lookup(grid, grid.label, hits.uv, -1) < 0)
    per_stamp_bad = bad.reshape(-1, n).any(axis=1) if len(uv) else np.zeros(0, bool)
    per_stamp_fired = fired.reshape(-1, n).any(axis=1) if len(uv) else np.zeros(0, bool)
    keep = per_stamp_fired & ~per_stamp_bad
    return Stamps(paths, path, uv, depth, hits, keep, n), int(per_stamp_bad.sum())


def texel_counts(grid: TexelGrid, uv: np.ndarray) -> np.ndarray:
    from .density import splat

    counts, _ = splat(uv, grid.origin, grid.cell_mm, grid.shape)
    return counts


def cap_guard(problem: DoseField, fixed: np.ndarray, stamp_sets: list, rounds: int = 24) -> int:
    """Drop pen stamps until no 1 cm^2 window is over its cap; returns how many were dropped.

    Around every texel over its cap, the share of pen punctures that must go is
    ``(d - level) / d_pen`` with ``level = max(0.97 cap, d - d_pen)``; each stamp within reach of such a window is dropped when a
    low-discrepancy number (its index times the golden ratio, mod 1) falls under the
    largest share it contributes to, so the cut thins stamps evenly instead of carving
    holes. Early rounds thin the stamps centred in an over window, later ones every stamp
    whose footprint reaches it; the last two drop every such stamp, so the loop always ends
    with no window over cap (the roller alone never is).
    """
    grid = problem.grid
    treat = grid.treatable
    limit = problem.cap * (1.0 - 1e-6)
    dropped = 0
    for r in range(rounds + 1):
        pen = np.zeros(grid.shape)
        for st in stamp_sets:
            pen += texel_counts(grid, st.hits.uv[st.fired()])
        d = problem.windowed(fixed + pen)
        over = treat & (d > limit)
        if not over.any():
            return dropped
        if r == rounds:
            raise CoverageError("windows stay over their cap with every nearby pen stamp dropped: the punctures "
                                "made before the pen's (the roller's, or a delivery log's) overdose them; lower the "
                                "roller passes or the target, or check the log")
        # first thin only the stamps centred inside an over window (they carry most of its
        # pen punctures); late rounds also reach the stamps whose footprints overlap it
        reach = int(max(grid.half_u[over].max(), grid.half_v[over].max()))
        if r >= rounds // 2:
            reach += problem.foot_texels // 2 + 1
        d_pen = problem.windowed(pen)
        # bring the window to 0.97 x cap, or to what the fixed punctures give alone if that is
        # higher (still under the cap): never ask the pen for more than it put there
        level = np.maximum(0.97 * problem.cap, d - d_pen)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(over, np.clip((d - level) / d_pen, 0.0, 1.0), 0.0)
        share = ndimage.maximum_filter(np.nan_to_num(share), size=2 * reach + 1, mode="constant")
        for st in stamp_sets:
            s = _lookup(grid, share, st.uv, 0.0)
            if r < rounds - 2:
                dither = (np.arange(len(st.uv)) * 0.6180339887498949 + 0.3819660112501051 * r) % 1.0
                drop = st.keep & (s > 0) & (dither < s)
            else:
                drop = st.keep & (s > 0)
            st.keep &= ~drop
            dropped += int(drop.sum())
    return dropped
