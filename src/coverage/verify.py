"""Independent verification of a plan: every safety and dose rule, measured again.

``verify(plan, face=None)`` takes a :class:`~coverage.plan.Plan` or a saved ``PLAN.json``
(with ``PLAN.npz`` beside it) and checks what the plan would do to the skin: the punctures,
the stroke paths and the transitions. Nothing the planner computed about them is trusted:
the zone map is rebuilt from the face and the protocol, punctures and paths are mapped onto
the face again through their closest surface points, the density is recomputed, margins are
measured as 3D distances to the excluded skin itself (not to the planner's keep-out
polygons), and the drum model is evaluated again along each roller path.

Rules (ids as in :data:`RULES`):

* ``exclusion``: no puncture within an exclusion's margin (its part's margin plus the
  positioning error), as the 3D distance to the excluded skin, less 0.05 mm for the
  surface interpolation.
* ``cap``: no 1 cm^2 window's nominal density over its zone's cap.
* ``depth``: every puncture no deeper than its zone's maximum and its stroke's needle; every
  stroke's depth within each zone it touches and its needle length; nothing beyond the
  pen's override depth where the zone has no ``depth_override``.
* ``device``: every stroke's device allowed in each zone it touches (as it claims, under
  its path and under its punctures); a roller only where its rigid drum conforms: the drum
  model (:func:`coverage.roller.conformity`) at every path sample, the curvatures
  interpolated within the sample's triangle.
* ``unobserved``: no puncture on a triangle with an unobserved vertex.
* ``surface``: every puncture within 0.5 mm of the skin.
* ``contact``: every path sample on the skin, in the face, and its contact (the path point,
  widened by the pen's footprint radius for a pen) outside every exclusion's margin.
* ``transit``: between strokes the tool keeps the clearance (less 0.5 mm) from the whole
  face, except on its approach and retract legs; transitions join the strokes' ends.
* ``punctures_off_treatable``: no puncture on skin that is not treatable (the density
  map's count).
"""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from scipy.spatial import cKDTree

from . import proximity, regions
from . import roller as _roller
from .density import DensityMap, density, texel_grid
from .errors import CoverageError
from .plan import Plan
from .planio import read_plan_files
from .protocol import DEVICES, Protocol
from .zones import ZoneMap, canonical_exclusion_regions

RULES = ("exclusion", "cap", "depth", "device", "unobserved", "surface", "contact", "transit",
         "punctures_off_treatable", "motion")
SPEED_TOLERANCE = 1e-6        # relative, on speeds and stamp intervals (times are stored as float64)
MARGIN_TOLERANCE_MM = 0.05     # surface interpolation between mesh vertices
CAP_TOLERANCE = 1e-9           # relative
DEPTH_TOLERANCE_MM = 1e-9
ON_SKIN_MM = 0.5               # a puncture or a contact farther from the surface is off the skin
TRANSIT_SLACK_MM = 0.5         # a transit point may come this much inside the clearance
JOIN_TOLERANCE_MM = 1e-3       # a transition's end and its stroke's end (JSON keeps 1e-4 mm)
REPORT_REACH_MM = 40.0         # the closest distance to an exclusion is reported up to this far beyond its margin
_BOUND_SLACK_MM = 1e-6         # rounding room where a corner search's bound must hold a distance


# --- results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Violation:
    """One broken rule: how often, how badly, and where (the worst case)."""

    rule: str              # one of RULES
    count: int             # punctures, texels, samples or strokes that break it
    worst: float | None    # the worst measured value (its unit is in the message)
    message: str           # one line: what, how much, the zone and where
    zone: str | None = None
    point_mm: tuple | None = None   # (3,) the worst case, mm in the face's frame
    stroke: int | None = None

    def as_dict(self) -> dict:
        return {"rule": self.rule, "count": self.count, "worst": _num(self.worst), "message": self.message,
                "zone": self.zone, "point_mm": None if self.point_mm is None else list(self.point_mm),
                "stroke": self.stroke}


@dataclass
class Verification:
    """The verdict on a plan.

    ``zones``: per-zone dose recomputed from the punctures (area_cm2, target_per_cm2,
    cap_per_cm2, mean, p5, p95, max, in_band_fraction, over_cap_fraction). ``checks``: per
    rule, what was measured (closest distances, deepest punctures, clearances, ...).
    """

    ok: bool
    violations: list
    zones: dict
    checks: dict
    source: str = ""
    time_s: float = 0.0
    density: DensityMap | None = field(default=None, repr=False)

    def failed(self) -> list:
        """Ids of the rules that failed, in :data:`RULES` order."""
        broken = {v.rule for v in self.violations}
        return [rule for rule in RULES if rule in broken]

    def as_dict(self) -> dict:
        """A JSON-ready dict of the verdict (no density map)."""
        return {"ok": self.ok, "source": self.source, "time_s": self.time_s, "failed": self.failed(),
                "violations": [v.as_dict() for v in self.violations], "zones": self.zones,
                "checks": self.checks}

    def text(self) -> str:
        """A readable report: the per-zone table, one line per rule, then the violations."""
        head = (f"{'zone':<18}{'area cm2':>9}{'target':>8}{'cap':>8}{'mean':>8}{'p5':>8}{'p95':>8}"
                f"{'max':>8}{'in band':>9}{'over cap':>9}")
        rows = [f"verification of {self.source}" if self.source else "verification", head, "-" * len(head)]

        def f(x, fmt):   # a zone without treatable skin has no statistics
            return format(x, fmt) if x is not None else "-".rjust(int(fmt.split(".")[0]))

        def pct(x):
            return f"{100 * x:8.1f}%" if x is not None else "-".rjust(9)

        for name, z in self.zones.items():
            rows.append(f"{name:<18}{f(z['area_cm2'], '9.1f')}{f(z['target_per_cm2'], '8.0f')}"
                        f"{f(z['cap_per_cm2'], '8.0f')}{f(z['mean'], '8.1f')}{f(z['p5'], '8.1f')}"
                        f"{f(z['p95'], '8.1f')}{f(z['max'], '8.1f')}{pct(z['in_band_fraction'])}"
                        f"{pct(z['over_cap_fraction'])}")
        rows.append("-" * len(head))
        failed = set(self.failed())
        for rule in RULES:
            rows.append(f"{'FAIL' if rule in failed else 'ok':<5}{rule:<24}{self.checks[rule].get('summary', '')}")
        if self.ok:
            rows.append(f"all {len(RULES)} checks passed")
        else:
            rows.append(f"{len(failed)} of {len(RULES)} checks failed:")
            rows.extend(f"  {v.message}" for v in self.violations)
        return "\n".join(rows)


# --- what is verified --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Stroke:
    """A stroke as the verifier reads it: what it claims, and its path on the skin."""

    id: int
    device: str
    zone: str
    zones: tuple
    pattern: str
    direction_deg: float     # NaN where the stroke has none
    depth_mm: float
    needle_length_mm: float
    points: np.ndarray       # (n, 3) mm
    footprint_mm: float = math.nan  # pen: its cartridge's footprint diameter (NaN: the protocol's)
    times_s: np.ndarray | None = None        # (n,) s
    stamp_times_s: np.ndarray | None = None  # pen: (m,) s


@dataclass(frozen=True, eq=False)
class _Subject:
    face: object
    protocol: Protocol
    strokes: list
    transitions: list        # [(from stroke, to stroke, points (k, 3))]
    punctures: np.ndarray    # (K, 3) mm
    puncture_stroke: np.ndarray
    puncture_depth_mm: np.ndarray
    source: str
    transition_times: list = None  # [(k,) s], aligned with transitions


def _from_plan(plan: Plan, face) -> _Subject:
    strokes = [_Stroke(int(s.id), str(s.device), str(s.zone), tuple(s.zones or ()), str(s.pattern),
                       _float(s.direction_deg), float(s.depth_mm), float(s.needle_length_mm),
                       np.asarray(s.points, dtype=np.float64).reshape(-1, 3),
                       _float((s.cartridge or {}).get("footprint_diameter_mm")),
                       np.asarray(s.times_s, dtype=np.float64),
                       None if s.stamp_times_s is None else np.asarray(s.stamp_times_s, dtype=np.float64))
               for s in plan.strokes]
    transitions = [(int(t.from_stroke), int(t.to_stroke), np.asarray(t.points, dtype=np.float64).reshape(-1, 3))
                   for t in plan.transitions]
    return _Subject(plan.face if face is None else face, plan.protocol, strokes, transitions,
                    *_puncture_arrays(plan.puncture_points, plan.puncture_stroke, plan.puncture_depth_mm, "the plan"),
                    source=f"a {plan.device} plan",
                    transition_times=[np.asarray(t.times_s, dtype=np.float64) for t in plan.transitions])


def _float(x) -> float:
    """A number, NaN for None (a contour stroke has no pass direction)."""
    return math.nan if x is None else float(x)


def _puncture_arrays(points, stroke, depth, where: str):
    points = np.asarray(points, dtype=np.float64)
    stroke = np.asarray(stroke)
    depth = np.asarray(depth, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or stroke.shape != (len(points),) or depth.shape != (len(points),):
        raise CoverageError(f"{where}: puncture arrays disagree (punctures {points.shape}, puncture_stroke "
                            f"{stroke.shape}, puncture_depth_mm {depth.shape}); write the plan again")
    if len(stroke) and not np.issubdtype(stroke.dtype, np.integer):
        raise CoverageError(f"{where}: puncture_stroke holds {stroke.dtype} values, not stroke ids; write the plan again")
    return points.reshape(-1, 3), stroke.astype(np.int64), depth


def _from_file(path, face) -> _Subject:
    path = Path(path)
    doc, arrays, face = read_plan_files(path, face)
    try:
        protocol = Protocol.from_dict(doc["protocol"], source=f"{path}: protocol")
        strokes = [_stroke_from_json(s, arrays) for s in doc["strokes"]]
        moves = arrays["transition_positions"]
        transitions = [(int(t["from"]), int(t["to"]), _rows(moves, t["path"])) for t in doc["transitions"]]
        move_times = [_rows(arrays["transition_times_s"], t["path"], 1) for t in doc["transitions"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CoverageError(f"{path}: the plan lacks or mangles a field ({exc!r}); write it again with "
                            "coverage-planner plan") from exc
    return _Subject(face, protocol, strokes, transitions,
                    *_puncture_arrays(arrays["punctures"], arrays["puncture_stroke"], arrays["puncture_depth_mm"],
                                      doc["arrays"]["file"]), source=str(path), transition_times=move_times)


def _rows(array: np.ndarray, rows: dict, width: int = 3) -> np.ndarray:
    part = np.asarray(array[rows["first"]:rows["first"] + rows["samples"]], dtype=np.float64)
    return part.reshape(-1, 3) if width == 3 else part.reshape(-1)


def _stroke_from_json(s: dict, arrays: dict) -> _Stroke:
    return _Stroke(int(s["id"]), str(s["device"]), str(s["zone"]), tuple(s.get("zones") or ()),
                   str(s.get("pattern", "lines")), _float(s.get("direction_deg")), float(s["depth_mm"]),
                   float(s["needle_length_mm"]), _rows(arrays["path_positions"], s["path"]),
                   _float((s.get("cartridge") or {}).get("footprint_diameter_mm")),
                   _rows(arrays["path_times_s"], s["path"], 1),
                   None if s.get("stamps") is None else _rows(arrays["stamp_times_s"], s["stamps"], 1))


# --- shared measurements -----------------------------------------------------------------

class _Context:
    """The rebuilt zone map and what several rules need: punctures and paths on the face."""

    def __init__(self, subject: _Subject):
        self.subject = subject
        self.face = face = subject.face
        self.protocol = subject.protocol
        self.zones, self.grid = _zone_map(face, subject.protocol)
        self.names = self.zones.names
        self.doses = [self.protocol.zone(n) for n in self.names]
        # punctures: closest surface point (no reach: the distance itself is a rule); the
        # guided search gives the same answers, ~15 % faster on a plan's punctures and paths
        self.punctures = subject.punctures
        self.flat = face.flatten(self.punctures, guided=True)
        self.label = self._labels(self.flat)
        # stroke paths, packed end to end
        strokes = subject.strokes
        self.path_points = np.concatenate([s.points for s in strokes]) if strokes else np.empty((0, 3))
        lengths = [len(s.points) for s in strokes]
        self.path_stroke = np.repeat(np.arange(len(strokes)), lengths)
        self.path_start = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])   # stroke i: start[i]:start[i + 1]
        self.path_flat = face.flatten(self.path_points, guided=True)
        self.path_label = self._labels(self.path_flat)
        self.stroke_index = {s.id: i for i, s in enumerate(strokes)}
        self.puncture_owner = _owners(np.array([s.id for s in strokes], dtype=np.int64), subject.puncture_stroke)
        self._exclusion_distances = None
        self._stroke_zones = None

    def _labels(self, flat) -> np.ndarray:
        found = flat.tri >= 0
        uv = np.where(found[:, None], flat.uv, np.nan)
        return self.zones.label_at(uv) if len(uv) else np.empty(0, np.int64)

    def cell_of(self, uv) -> str:
        """The zone cell (before keep-outs) holding a chart point, for messages."""
        uv = np.asarray(uv, dtype=np.float64)
        if np.isfinite(uv).all():
            for name, cell in self.zones.outlines.items():
                if shapely.contains_xy(cell, uv[0], uv[1]):
                    return name
        return "outside every zone"

    def stroke_zones(self) -> list:
        """Every zone each stroke touches: as it claims, under its path, and under its punctures."""
        if self._stroke_zones is None:
            out = [{s.zone, *s.zones} for s in self.subject.strokes]
            n = len(self.names)
            for owner, labels in ((self.path_stroke, self.path_label), (self.puncture_owner, self.label)):
                ok = (owner >= 0) & (labels >= 0)
                for pair in np.unique(owner[ok] * n + labels[ok]).tolist():
                    i, k = divmod(pair, n)
                    out[i].add(self.names[k])
            self._stroke_zones = out
        return self._stroke_zones

    def exclusion_distances(self) -> list:
        """``[(exclusion, part, margin_mm, puncture distances, path distances)]``: 3D distance (mm)
        from punctures and path samples to each exclusion part's own skin, exact within 1 mm
        beyond what the rules require and for the closest; ``inf`` where farther."""
        if self._exclusion_distances is None:
            footprint = self.protocol.pen.footprint_diameter_mm / 2.0
            # each point set sorted along x once, for every part's box test
            punctures, path = _Queries(self.punctures), _Queries(self.path_points)
            self._exclusion_distances = [
                (name, part, margin, skin.to(punctures, margin + 1.0),
                 skin.to(path, margin + footprint + 1.0))
                for name, part, margin, skin in _exclusion_skins(self.face, self.protocol)]
        return self._exclusion_distances

    def where(self, point, uv=None, stroke: int | None = None) -> str:
        p = np.asarray(point, dtype=np.float64)
        text = f"at ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm"
        if uv is not None:
            text += f" in {self.cell_of(uv)}"
        if stroke is not None and 0 <= stroke < len(self.subject.strokes):
            text += f", stroke {self.subject.strokes[stroke].id}"
        return text


@functools.lru_cache(maxsize=4)
def _zone_map(face, protocol: Protocol):
    """The zone map of a face under a protocol, rebuilt here (never the plan's), and its
    texel grid; kept for the next plan on the same face (faces are read-only)."""
    zones = ZoneMap.default(face, protocol)
    return zones, texel_grid(zones)


@functools.lru_cache(maxsize=4)
def _exclusion_skins(face, protocol: Protocol) -> tuple:
    """``((exclusion, part, margin_mm, _SkinDistance), ...)`` for the rebuilt zone map's
    exclusions: each part's own skin (the canonical part, else the whole exclusion), cut
    out of the face once and kept with the zone map (faces are read-only)."""
    zones, _ = _zone_map(face, protocol)
    standard = canonical_exclusion_regions(face.subdivisions)
    out = []
    for name, exc in zones.exclusions.items():
        parts = dict(standard.get(name, ()))
        for part, margin in exc.margins_mm:
            out.append((name, part, float(margin), _SkinDistance(face, parts.get(part, exc.region))))
    return tuple(out)


class _Queries:
    """Query points sorted along x once, so that each exclusion part's box test reads only
    the points in the slab of x its box spans instead of all of them (the default plan's
    150k punctures and path samples are tested against 9 parts, twice)."""

    def __init__(self, points: np.ndarray):
        self.points = points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        finite = np.isfinite(points).all(axis=1)
        self.unfinite = np.nonzero(~finite)[0]
        keep = np.nonzero(finite)[0]
        self.order = keep[np.argsort(points[keep, 0], kind="stable")]
        self.sorted = points[self.order]
        self.x = np.ascontiguousarray(self.sorted[:, 0])

    def __len__(self) -> int:
        return len(self.points)

    def near_box(self, lo: np.ndarray, hi: np.ndarray, reach: float) -> np.ndarray:
        """Indices (in x order) of the points whose squared distance to the box ``[lo, hi]``
        is at most ``reach**2``, and of every point that is not finite.

        Conservative: a point outside the slab ``[lo_x - reach - pad, hi_x + reach + pad]``
        is more than ``reach + pad`` from the box along x alone, so its squared distance
        exceeds ``reach**2`` (pad, 1e-6 mm plus a relative 1e-12, covers the rounding of the
        slab's ends); inside the slab the box test is computed as it always was."""
        pad = 1e-6 + 1e-12 * (abs(float(lo[0])) + abs(float(hi[0])) + reach)
        a = int(np.searchsorted(self.x, lo[0] - reach - pad, side="left"))
        b = int(np.searchsorted(self.x, hi[0] + reach + pad, side="right"))
        q = self.sorted[a:b]
        gap = np.minimum(np.maximum(q, lo), hi) - q
        near = self.order[a:b][np.einsum("ij,ij->i", gap, gap) <= reach * reach]
        # a point that is not finite is searched: the search refuses it, as it always has
        return np.concatenate([near, self.unfinite]) if len(self.unfinite) else near


class _SkinDistance:
    """3D distance (mm) from points to a chart region's own skin: its triangles cut out of the
    mesh and mapped to 3D (:func:`coverage.regions.region_triangles_3d`), then the exact
    closest-point kernel."""

    def __init__(self, face, region):
        tris = regions.region_triangles_3d(face, region) if not region.is_empty else np.empty((0, 3, 3))
        self.empty = len(tris) == 0
        if self.empty:
            return
        vertices = np.ascontiguousarray(tris.reshape(-1, 3))
        self.grid = proximity.build_grid(vertices, np.arange(len(vertices), dtype=np.int64).reshape(-1, 3))
        # the corners about once each (the pieces share them: about six copies of each):
        # sorted along x, a corner equal to the one before it dropped (the rare copy that
        # another corner of the same x separates stays: harmless). The nearest corner's
        # distance is the same (the same coordinates), the tree a sixth the size and its
        # searches three times faster; np.unique(axis=0) would take seven times as long
        ranked = vertices[np.argsort(vertices[:, 0], kind="stable")]
        repeat = np.zeros(len(ranked), dtype=bool)
        repeat[1:] = (ranked[1:] == ranked[:-1]).all(axis=1)
        self.tree = cKDTree(ranked[~repeat])
        self.lo, self.hi = vertices.min(axis=0), vertices.max(axis=0)   # the corners' box
        # every point of a triangle lies within its longest edge of one of its corners
        self.edge = float(np.linalg.norm(tris - np.roll(tris, 1, axis=1), axis=2).max())

    def to(self, query, near_mm: float) -> np.ndarray:
        """Exact distances where they could be below ``near_mm`` or could be the smallest of
        all (up to ``near_mm + REPORT_REACH_MM``); ``inf`` elsewhere (farther than both).
        ``query``: ``(k, 3)`` points, or :class:`_Queries` of them."""
        pts = query if isinstance(query, _Queries) else _Queries(query)
        out = np.full(len(pts), np.inf)
        if self.empty or len(pts) == 0:
            return out
        # the nearest corner bounds the distance: d in [corner - edge, corner]; only points
        # whose lower bound is within the level need the exact kernel (a search far out is
        # slow). The nearest-corner search is slow far out too, so it is bounded: first an
        # edge and 1 mm past near_mm, doubled while it finds nothing (up to ``reach``), then
        # out to the level's reach if that is farther. Every corner distance the level and
        # the selection read lies within the last bound, where it is what an unbounded
        # search gives.
        reach = near_mm + REPORT_REACH_MM + self.edge
        bound = min(near_mm + self.edge + 1.0, reach)
        corner = self._corners(pts, bound)
        while bound < reach and not np.isfinite(corner).any():
            bound = min(2.0 * bound, reach)
            corner = self._corners(pts, bound)
        closest = float(corner.min())
        level = max(near_mm, closest) if math.isfinite(closest) else near_mm
        if bound < reach and level + self.edge + _BOUND_SLACK_MM > bound:
            bound = min(level + self.edge + 1.0, reach)
            corner = self._corners(pts, bound)
        todo = np.nonzero(corner - self.edge <= level)[0]
        tri, _, dist = proximity.closest_points(self.grid, pts.points[todo], max_dist=level + self.edge + 1e-6)
        found = tri >= 0
        out[todo[found]] = dist[found]
        return out

    def _corners(self, pts: _Queries, bound: float) -> np.ndarray:
        """Distance (mm) to the nearest corner where below ``bound``, else ``inf`` (a point
        the box test leaves out is farther than ``bound`` from every corner)."""
        todo = pts.near_box(self.lo, self.hi, bound + _BOUND_SLACK_MM)
        out = np.full(len(pts), np.inf)
        if len(todo):
            out[todo] = self.tree.query(pts.points[todo], distance_upper_bound=bound)[0]
        return out


def _label(name: str, part: str) -> str:
    """``eye_left (eye)``; an exclusion of one part of its own name is just its name."""
    return name if part == name or name.startswith(f"{part}:") else f"{name} ({part})"


def _owners(ids: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Index into ``ids`` of each puncture's stroke id; -1 where the plan has no such stroke."""
    if len(ids) == 0:
        return np.full(len(stroke), -1, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    pos = np.clip(np.searchsorted(ids[order], stroke), 0, len(ids) - 1)
    return np.where(ids[order][pos] == stroke, order[pos], -1).astype(np.int64)


def _n(count: int, noun: str) -> str:
    """``1 puncture``, ``3 punctures``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _num(x):
    """A float for JSON (None if not finite)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _point(p) -> tuple:
    return tuple(round(float(c), 3) for c in p)


# --- the rules -----------------------------------------------------------------------------

def _check_exclusion(ctx: _Context):
    """No puncture within an exclusion's margin (3D distance to the excluded skin)."""
    measured, violations = {}, []
    for name, part, margin, dist, _ in ctx.exclusion_distances():
        closest = int(np.argmin(dist)) if len(dist) else -1
        d = float(dist[closest]) if closest >= 0 else math.inf
        measured.setdefault(name, {})[part] = {"margin_mm": margin, "closest_mm": _num(d),
                                               "clear_mm": _num(d - margin)}
        bad = dist < margin - MARGIN_TOLERANCE_MM
        if bad.any():
            owner = int(ctx.puncture_owner[closest])
            violations.append(Violation(
                "exclusion", int(bad.sum()), d,
                f"exclusion: {_n(int(bad.sum()), 'puncture')} within the {margin:g} mm margin of {_label(name, part)}; "
                f"closest {d:.2f} mm {ctx.where(ctx.punctures[closest], ctx.flat.uv[closest], owner)}",
                ctx.cell_of(ctx.flat.uv[closest]), _point(ctx.punctures[closest]),
                _stroke_id(ctx, owner)))
    clear = [(v["clear_mm"], _label(n, p)) for n, parts in measured.items() for p, v in parts.items()
             if v["clear_mm"] is not None]
    tight = min(clear) if clear else None
    summary = (f"closest puncture {tight[0]:.2f} mm beyond its margin ({tight[1]})" if tight and tight[0] >= 0 else
               f"closest puncture {-tight[0]:.2f} mm inside its margin ({tight[1]})" if tight else
               f"no puncture within {REPORT_REACH_MM:g} mm of a margin")
    return {"summary": summary, "tolerance_mm": MARGIN_TOLERANCE_MM, "punctures": len(ctx.punctures),
            "exclusions": measured}, violations


def _check_cap(ctx: _Context, dm: DensityMap):
    """No texel's 1 cm^2 window over its zone's cap."""
    grid = dm.grid
    measured, violations = {}, []
    for index, (name, dose) in enumerate(zip(ctx.names, ctx.doses)):
        sel = grid.label == index
        values = dm.nominal_per_cm2[sel]
        cap = dose.cap_per_cm2
        over = values > cap * (1.0 + CAP_TOLERANCE)
        top = float(values.max()) if len(values) else math.nan
        measured[name] = {"cap_per_cm2": cap, "max_per_cm2": _num(top), "texels": int(sel.sum()),
                          "texels_over": int(over.sum()),
                          "area_over_mm2": float(grid.area_mm2[sel][over].sum())}
        if over.any():
            flat_index = np.flatnonzero(sel)[int(np.argmax(values))]
            uv = _texel_centre(grid, flat_index)
            point = ctx.face.lift(uv[None]).points[0]
            violations.append(Violation(
                "cap", int(over.sum()), top,
                f"cap: {name} reaches {top:.1f} punctures/cm2 over its cap {cap:g} on {int(over.sum())} texels "
                f"({measured[name]['area_over_mm2']:.1f} mm2 of skin); worst {ctx.where(point, uv)}",
                name, _point(point)))
    ratios = [(v["max_per_cm2"] / v["cap_per_cm2"], n) for n, v in measured.items() if v["max_per_cm2"] is not None]
    top = max(ratios) if ratios else None
    summary = f"highest window {100 * top[0]:.1f}% of its cap ({top[1]})" if top else "no treatable texel"
    return {"summary": summary, "relative_tolerance": CAP_TOLERANCE, "zones": measured}, violations


def _stroke_id(ctx: _Context, index: int) -> int | None:
    return ctx.subject.strokes[index].id if index >= 0 else None


def _texel_centre(grid, flat_index: int) -> np.ndarray:
    w = grid.shape[1]
    row, col = divmod(int(flat_index), w)
    return grid.origin + (np.array([col, row]) + 0.5) * grid.cell_mm


def _check_depth(ctx: _Context):
    """Punctures and strokes within their zones' depth limits and their needles."""
    subject, violations = ctx.subject, []
    override = ctx.protocol.pen.override_depth_mm
    depth = subject.puncture_depth_mm
    # a trailing entry for index -1: a puncture in no zone (its own rule) or of no stroke
    # (the device rule) is held to the limits it does have
    max_depth = np.array([d.max_depth_mm for d in ctx.doses] + [np.inf])
    may_override = np.array([d.depth_override for d in ctx.doses] + [True])
    label = ctx.label
    needle = np.array([s.needle_length_mm for s in subject.strokes] + [np.inf])[ctx.puncture_owner]
    limit = np.minimum(max_depth[label], needle)
    limit = np.where(may_override[label], limit, np.minimum(limit, override))
    excess = np.where(np.isfinite(depth), depth - limit, np.inf)
    bad = excess > DEPTH_TOLERANCE_MM
    deepest = {}
    for index, name in enumerate(ctx.names):
        sel = label == index
        deepest[name] = {"max_depth_mm": ctx.doses[index].max_depth_mm,
                         "deepest_mm": _num(depth[sel].max()) if sel.any() else None}
    if bad.any():
        i = int(np.argmax(excess))
        zone = ctx.names[label[i]] if label[i] >= 0 else "no zone"
        violations.append(Violation(
            "depth", int(bad.sum()), float(depth[i]),
            f"depth: {_n(int(bad.sum()), 'puncture')} deeper than allowed; worst {depth[i]:.3f} mm against "
            f"{limit[i]:.3f} mm (zone {zone}: max_depth_mm, its needle, override) "
            f"{ctx.where(ctx.punctures[i], ctx.flat.uv[i], int(ctx.puncture_owner[i]))}",
            zone, _point(ctx.punctures[i]), _stroke_id(ctx, int(ctx.puncture_owner[i]))))
    strokes_bad = []
    for i, (s, touched) in enumerate(zip(subject.strokes, ctx.stroke_zones())):
        limits = [(s.needle_length_mm, "its needle length")]
        for name in sorted(touched):
            if name not in ctx.protocol.zones:
                continue   # the device rule reports unknown zones
            dose = ctx.protocol.zone(name)
            limits.append((dose.max_depth_mm, f"{name}'s max_depth_mm"))
            if not dose.depth_override:
                limits.append((override, f"pen.override_depth_mm ({name} has no depth_override)"))
        value, why = min(limits)
        if not (s.depth_mm <= value + DEPTH_TOLERANCE_MM):
            strokes_bad.append((s.depth_mm - value, i, value, why))
    if strokes_bad:
        _, i, value, why = max(strokes_bad)
        s = subject.strokes[i]
        violations.append(Violation(
            "depth", len(strokes_bad), s.depth_mm,
            f"depth: {_n(len(strokes_bad), 'stroke')} set deeper than allowed; stroke {s.id} ({s.device}, {s.zone}) at "
            f"{s.depth_mm:.3f} mm over {why} {value:g} mm {ctx.where(s.points[0])}",
            s.zone, _point(s.points[0]), s.id))
    top = max(((v["deepest_mm"] - v["max_depth_mm"], n) for n, v in deepest.items() if v["deepest_mm"] is not None),
              default=None)
    summary = (f"deepest puncture {max(-top[0], 0.0):.3f} mm within its zone's maximum ({top[1]})" if top and top[0] <= 0 else
               f"deepest puncture {top[0]:.3f} mm over its zone's maximum ({top[1]})" if top else "no punctures")
    return {"summary": summary, "punctures": len(depth), "punctures_over": int(bad.sum()),
            "strokes": len(subject.strokes), "strokes_over": len(strokes_bad), "zones": deepest}, violations


def _check_device(ctx: _Context):
    """Each stroke's device allowed wherever it goes; the roller's drum conforms along its path."""
    subject, violations = ctx.subject, []
    refused = []
    orphans = int((ctx.puncture_owner < 0).sum())
    for i, (s, touched) in enumerate(zip(subject.strokes, ctx.stroke_zones())):
        if s.device not in DEVICES:
            refused.append((i, f"its device {s.device!r} is not one of {', '.join(DEVICES)}"))
            continue
        for name in sorted(touched):
            if name not in ctx.protocol.zones:
                refused.append((i, f"it names zone {name!r}, which the protocol does not have"))
            elif s.device not in ctx.protocol.zone(name).devices:
                refused.append((i, f"the {s.device} is not allowed in {name}"))
    if refused:
        i, why = refused[0]
        s = subject.strokes[i]
        n = len({k for k, _ in refused})
        violations.append(Violation(
            "device", n, float(n),
            f"device: {_n(n, 'stroke')} where the device is not allowed; stroke {s.id}: {why} {ctx.where(s.points[0])}",
            s.zone, _point(s.points[0]), s.id))
    if orphans:
        k = int(np.argmax(ctx.puncture_owner < 0))
        violations.append(Violation(
            "device", orphans, float(orphans),
            f"device: {_n(orphans, 'puncture')} from no stroke of the plan (stroke id "
            f"{int(subject.puncture_stroke[k])}) {ctx.where(ctx.punctures[k], ctx.flat.uv[k])}",
            None, _point(ctx.punctures[k])))
    conform = _roller_conformity(ctx)
    if conform["failures"]:
        i, j = conform.pop("worst")
        s = subject.strokes[i]
        violations.append(Violation(
            "device", conform["failures"], float(conform["failures"]),
            f"device: the roller's drum does not conform at {_n(conform['failures'], 'path sample')} of "
            f"{_n(conform['strokes_failing'], 'stroke')}; first stroke {s.id} ({s.zone}, {s.direction_deg:g} deg) "
            f"{ctx.where(s.points[j], ctx.path_flat.uv[ctx.path_start[i] + j])}",
            s.zone, _point(s.points[j]), s.id))
    conform.pop("worst", None)
    by_device = {}
    for s in subject.strokes:
        by_device[s.device] = by_device.get(s.device, 0) + 1
    summary = (f"{len(subject.strokes)} strokes ({', '.join(f'{v} {k}' for k, v in by_device.items()) or 'none'}); "
               f"drum conforms at {conform['samples'] - conform['failures']} of {conform['samples']} roller samples")
    return {"summary": summary, "strokes": by_device, "strokes_refused": len({k for k, _ in refused}),
            "punctures_without_stroke": orphans, "roller_conformity": conform}, violations


def _roller_conformity(ctx: _Context) -> dict:
    """The drum model at every roller path sample.

    A straight pass (pattern ``lines``) rolls along its direction: the drum's conformity
    map for that direction (:func:`coverage.roller.conformity`) is read at each contact,
    the along and across curvatures interpolated within the contact's triangle. Any other
    roller path (a headland follows a border) is judged along its own travel direction at
    each sample. ``vertex_mask_failures`` counts, for information, the samples whose
    triangle has a vertex where the drum does not conform.
    """
    face, protocol = ctx.face, ctx.protocol
    rows, groups = [], {}
    for i, s in enumerate(ctx.subject.strokes):
        if s.device != "roller" or len(s.points) == 0:
            continue
        mine = slice(ctx.path_start[i], ctx.path_start[i + 1])
        tri, bary = ctx.path_flat.tri[mine], ctx.path_flat.bary[mine]
        corners = face.faces[np.maximum(tri, 0)]
        drum = _roller.Drum.from_protocol(protocol, s.needle_length_mm)
        if s.pattern == "lines":
            c = _drum_conformity(face, drum, s.direction_deg)
            along, cross = c.kappa_along[corners], c.kappa_cross[corners]
        else:
            along, cross = _travel_curvatures(face, drum, s.points, corners)
        rows.append((i, len(tri)))
        groups.setdefault(drum, []).append((len(rows) - 1, tri >= 0, bary, along, cross))
    # the drum model is read sample by sample: one call per drum for all its strokes
    lengths = np.array([n for _, n in rows], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ok = np.zeros(first[-1], dtype=bool)
    strict_bad = np.zeros(first[-1], dtype=bool)
    for drum, parts in groups.items():
        at = np.concatenate([np.arange(first[k], first[k + 1]) for k, *_ in parts])
        found, bary, along, cross = (np.concatenate([p[j] for p in parts]) for j in range(1, 5))
        vertex_ok = drum.conforms(cross.ravel(), along.ravel()).reshape(-1, 3)
        ok[at] = drum.conforms(np.einsum("kj,kj->k", bary, cross), np.einsum("kj,kj->k", bary, along)) & found
        strict_bad[at] = ~vertex_ok.all(axis=1) | ~found
    failed = np.nonzero(~ok)[0]
    stroke_of = np.searchsorted(first, failed, side="right") - 1
    worst = None
    if len(failed):
        k = int(stroke_of[0])
        worst = (rows[k][0], int(failed[0] - first[k]))
    return {"samples": int(first[-1]), "failures": len(failed), "strokes_failing": len(np.unique(stroke_of)),
            "vertex_mask_failures": int(strict_bad.sum()), "worst": worst}


@functools.lru_cache(maxsize=32)
def _drum_conformity(face, drum, theta_deg: float):
    """The drum's per-vertex conformity map for one direction, kept for the next plan on the
    same face (faces are read-only; a default plan reads eight)."""
    return _roller.conformity(face, drum, theta_deg)


def _travel_curvatures(face, drum, points: np.ndarray, corners: np.ndarray):
    """Normal curvature along and across a path's own travel at its samples' triangle vertices."""
    curvature = face.curvature(_roller.drum_curvature_radius_mm(drum))
    travel = np.gradient(points, axis=0) if len(points) > 1 else np.zeros_like(points)
    ids = corners.ravel()
    t = np.repeat(travel, 3, axis=0)
    normal = face.normals[ids]
    t = t - np.einsum("ij,ij->i", t, normal)[:, None] * normal
    across = np.cross(normal, t)
    return (curvature.normal_curvature(ids, t).reshape(-1, 3),
            curvature.normal_curvature(ids, across).reshape(-1, 3))


def _check_unobserved(ctx: _Context):
    """No puncture on a triangle with an unobserved vertex."""
    face, flat = ctx.face, ctx.flat
    found = flat.tri >= 0
    bad = found & face.unobserved[face.faces[np.maximum(flat.tri, 0)]].any(axis=1)
    violations = []
    if bad.any():
        i = int(np.argmax(bad))
        violations.append(Violation(
            "unobserved", int(bad.sum()), float(bad.sum()),
            f"unobserved: {_n(int(bad.sum()), 'puncture')} on skin the scan did not see; first "
            f"{ctx.where(ctx.punctures[i], flat.uv[i], int(ctx.puncture_owner[i]))}",
            ctx.cell_of(flat.uv[i]), _point(ctx.punctures[i])))
    n = int(face.unobserved.sum())
    return {"summary": f"{int(bad.sum())} punctures on unobserved skin ({n} unobserved vertices)",
            "unobserved_vertices": n, "punctures_on_unobserved": int(bad.sum())}, violations


def _check_surface(ctx: _Context):
    """Every puncture on the skin (within ON_SKIN_MM of the surface)."""
    flat = ctx.flat
    dist = np.where(flat.tri >= 0, flat.distance, np.inf)
    bad = ~(dist <= ON_SKIN_MM)
    violations = []
    top = float(dist.max()) if len(dist) else 0.0
    if bad.any():
        i = int(np.argmax(np.where(np.isfinite(dist), dist, np.finfo(float).max)))
        violations.append(Violation(
            "surface", int(bad.sum()), float(dist[i]),
            f"surface: {_n(int(bad.sum()), 'puncture')} more than {ON_SKIN_MM:g} mm from the skin; worst "
            f"{dist[i]:.2f} mm {ctx.where(ctx.punctures[i], flat.uv[i], int(ctx.puncture_owner[i]))}",
            ctx.cell_of(flat.uv[i]), _point(ctx.punctures[i])))
    return {"summary": f"farthest puncture {top:.3g} mm from the skin (limit {ON_SKIN_MM:g} mm)",
            "limit_mm": ON_SKIN_MM, "max_distance_mm": _num(top)}, violations


def _footprint_radius(protocol: Protocol, stroke: _Stroke) -> float:
    """How far a stroke's contact reaches beyond its path: a pen's footprint radius."""
    if stroke.device != "pen":
        return 0.0
    diameter = stroke.footprint_mm if math.isfinite(stroke.footprint_mm) else protocol.pen.footprint_diameter_mm
    return diameter / 2.0


def _check_contact(ctx: _Context):
    """Every stroke's contact on the skin, in the face, clear of every exclusion's margin."""
    subject, flat, violations = ctx.subject, ctx.path_flat, []
    n = len(ctx.path_points)
    footprint = np.array([_footprint_radius(ctx.protocol, s) for s in subject.strokes] + [0.0])[ctx.path_stroke] \
        if n else np.empty(0)
    dist = np.where(flat.tri >= 0, flat.distance, np.inf)
    off = ~(dist <= ON_SKIN_MM)
    uv = np.where(np.isfinite(flat.uv), flat.uv, 0.0)
    # a sample off the skin is reported as such; the others are tested cell by cell until
    # one holds them. First each sample in the zone cell of the zone it is labelled in (its
    # treatable polygon is that cell less the keep-outs: nearly every sample is held there,
    # and is then asked about no other cell), then the rest in every cell: whichever cell
    # holds a sample, it is held, so the order only saves tests (the default plan's path
    # asked 7.4 cells per sample on average, 1.0 now: 0.021 -> 0.008 s)
    outside = ~off
    for k, name in enumerate(ctx.names):
        cell = ctx.zones.outlines.get(name)
        todo = np.nonzero(outside & (ctx.path_label == k))[0] if cell is not None else ()
        if len(todo):
            outside[todo[shapely.contains_xy(cell, uv[todo, 0], uv[todo, 1])]] = False
    for cell in ctx.zones.outlines.values():
        todo = np.nonzero(outside)[0]
        if len(todo) == 0:
            break
        outside[todo[shapely.contains_xy(cell, uv[todo, 0], uv[todo, 1])]] = False
    measured = {}
    for name, part, margin, _, d in ctx.exclusion_distances():
        clear = d - footprint - margin
        j = int(np.argmin(clear)) if n else -1
        measured.setdefault(name, {})[part] = {"margin_mm": margin, "clear_mm": _num(clear[j]) if n else None}
        bad = clear < -MARGIN_TOLERANCE_MM
        if bad.any():
            i = int(ctx.path_stroke[j])
            s = subject.strokes[i]
            reach = f" + {footprint[j]:g} mm footprint radius" if footprint[j] else ""
            violations.append(Violation(
                "contact", int(bad.sum()), float(d[j]),
                f"contact: {_n(int(bad.sum()), 'path sample')} within the {margin:g} mm margin{reach} of {_label(name, part)}; "
                f"closest {d[j]:.2f} mm {ctx.where(ctx.path_points[j], flat.uv[j], i)} ({s.device})",
                ctx.cell_of(flat.uv[j]), _point(ctx.path_points[j]), s.id))
    for bad, what in ((off, f"more than {ON_SKIN_MM:g} mm off the skin"), (outside, "outside every zone")):
        if bad.any():
            j = int(np.argmax(bad))
            i = int(ctx.path_stroke[j])
            violations.append(Violation(
                "contact", int(bad.sum()), float(dist[j]),
                f"contact: {_n(int(bad.sum()), 'path sample')} {what}; first {ctx.where(ctx.path_points[j], None, i)}",
                None, _point(ctx.path_points[j]), subject.strokes[i].id))
    clear = [(v["clear_mm"], _label(n_, p)) for n_, parts in measured.items() for p, v in parts.items()
             if v["clear_mm"] is not None]
    tight = min(clear) if clear else None
    summary = (f"{n} path samples; closest contact {tight[0]:.2f} mm beyond its margin ({tight[1]})"
               if tight and tight[0] >= 0 else
               f"{n} path samples; closest contact {-tight[0]:.2f} mm inside its margin ({tight[1]})" if tight else
               f"{n} path samples; none within {REPORT_REACH_MM:g} mm of a margin")
    return {"summary": summary, "samples": n, "off_skin": int(off.sum()), "outside_zones": int(outside.sum()),
            "footprint_radius_mm": ctx.protocol.pen.footprint_diameter_mm / 2.0, "exclusions": measured}, violations


def _crossing_keepout(keepout, end_uv: np.ndarray) -> np.ndarray:
    """Whether the straight chart line between each move's ends ``(n, 2, 2)`` meets a
    keep-out ``(n,) bool`` (ends that are not both on the chart: yes). One vectorised
    predicate for all moves; ends closer than 1e-9 mm are tested as a point."""
    crosses = ~np.isfinite(end_uv).all(axis=(1, 2))
    apart = np.array([np.linalg.norm(ub - ua) > 1e-9 for ua, ub in end_uv], dtype=bool)
    for sel, make in ((~crosses & apart, lambda uv: shapely.linestrings(uv)),
                      (~crosses & ~apart, lambda uv: shapely.points(uv[:, 0]))):
        if sel.any():
            crosses[sel] = shapely.intersects(keepout, make(end_uv[sel]))
    return crosses


def _check_transit(ctx: _Context):
    """Transitions keep the clearance from the whole face, between their approach and retract legs."""
    subject, face, violations = ctx.subject, ctx.face, []
    session = ctx.protocol.session
    clearance = session.clearance_mm
    hop = min(session.hop_clearance_mm, clearance)
    strokes = subject.strokes
    parts, owners, legs, needs = [], [], [], []
    worst_join, join_bad = 0.0, []
    hops = 0
    # a move whose straight chart line between its ends crosses a keep-out must lift to the
    # full clearance; any other move may hop at the hop clearance
    ends = [(pts[0], pts[-1]) for _, _, pts in subject.transitions if len(pts)]
    end_uv = face.flatten(np.array(ends).reshape(-1, 3)).uv.reshape(-1, 2, 2) if ends else np.empty((0, 2, 2))
    crossing = _crossing_keepout(ctx.zones.keepout, end_uv)
    e = 0
    for k, (a, b, pts) in enumerate(subject.transitions):
        if len(pts) == 0:
            join_bad.append((math.inf, k))
            continue
        crosses = bool(crossing[e])
        e += 1
        lift = clearance if crosses else hop
        hops += not crosses
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        parts.append(pts)
        owners.append(np.full(len(pts), k))
        needs.append(np.full(len(pts), lift - TRANSIT_SLACK_MM))
        legs.append((s < lift) | (s > s[-1] - lift))
        ia, ib = ctx.stroke_index.get(a), ctx.stroke_index.get(b)
        gap = max(np.linalg.norm(pts[0] - strokes[ia].points[-1]) if ia is not None else math.inf,
                  np.linalg.norm(pts[-1] - strokes[ib].points[0]) if ib is not None else math.inf)
        worst_join = max(worst_join, float(gap))
        if not gap <= JOIN_TOLERANCE_MM:
            join_bad.append((float(gap), k))
    # consecutive strokes (in time) with no transition between them, and ends apart
    joined = {(a, b) for a, b, _ in subject.transitions}
    missing = [(strokes[i].id, strokes[i + 1].id) for i in range(len(strokes) - 1)
               if (strokes[i].id, strokes[i + 1].id) not in joined
               and not np.linalg.norm(strokes[i].points[-1] - strokes[i + 1].points[0]) <= JOIN_TOLERANCE_MM]
    pts = np.concatenate(parts) if parts else np.empty((0, 3))
    owner = np.concatenate(owners) if owners else np.empty(0, np.int64)
    leg = np.concatenate(legs) if legs else np.empty(0, bool)
    need = np.concatenate(needs) if needs else np.empty(0)
    signed = _signed_clearance(face, pts, reach=clearance + 1.0) if len(pts) else np.empty(0)
    travel = ~leg
    low = travel & ~(signed >= need)
    margin_min = float((signed - need)[travel].min()) if travel.any() else math.inf
    inside = ~(signed >= -TRANSIT_SLACK_MM)     # no part of a move, legs included, goes through the skin
    low_min = float(signed[travel].min()) if travel.any() else math.inf
    for bad, what in ((low, f"nearer the face than their clearance ({clearance:g} mm, or {hop:g} mm for a hop "
                            f"crossing no keep-out) less {TRANSIT_SLACK_MM:g} mm"),
                      (inside & ~low, "inside the face")):
        if bad.any():
            j = int(np.argmin(np.where(bad, signed, np.inf)))
            a, b, _ = subject.transitions[owner[j]]
            violations.append(Violation(
                "transit", int(bad.sum()), float(signed[j]),
                f"transit: {_n(int(bad.sum()), 'transition point')} {what}; lowest {signed[j]:.2f} mm between strokes "
                f"{a} and {b} {ctx.where(pts[j])}", None, _point(pts[j]), int(b)))
    if join_bad:
        gap, k = max(join_bad)
        a, b, p = subject.transitions[k]
        violations.append(Violation(
            "transit", len(join_bad), gap,
            f"transit: {_n(len(join_bad), 'transition')} not starting and ending at their strokes' ends; the move from "
            f"stroke {a} to {b} misses by {gap:.3f} mm", None, _point(p[0]) if len(p) else None, int(b)))
    if missing:
        a, b = missing[0]
        violations.append(Violation(
            "transit", len(missing), float(len(missing)),
            f"transit: {_n(len(missing), 'pair')} of consecutive strokes with no transition between them (first: "
            f"{a} to {b}): the tool would drag across the skin", None, None, int(b)))
    summary = (f"{len(subject.transitions)} transitions ({hops} hops at {hop:g} mm); lowest travel point "
               f"{margin_min:.2f} mm above its required clearance" if np.isfinite(low_min)
               else f"{len(subject.transitions)} transitions")
    return {"summary": summary, "transitions": len(subject.transitions), "points": len(pts),
            "travel_points": int(travel.sum()), "clearance_mm": clearance, "hop_clearance_mm": hop, "hops": hops,
            "required_mm": clearance - TRANSIT_SLACK_MM, "lowest_margin_mm": _num(margin_min),
            "lowest_travel_mm": _num(low_min), "lowest_leg_mm": _num(signed[leg].min()) if leg.any() else None,
            "max_join_gap_mm": worst_join, "missing": len(missing)}, violations


@functools.lru_cache(maxsize=4)
def _transit_grid(face) -> proximity.MeshGrid:
    """The face's triangles binned for searches from the air: cells twice the face's own
    grid's. A transit point is millimetres off the skin, and the search walks every cell
    between it and the skin; at this size it walks about an eighth as many and reads a few
    more triangles per cell: the default plan's 37k transit points take 0.24 s instead of
    0.38 s. (The closest point does not depend on the binning: the least distance, ties to
    the lowest triangle index.)"""
    return proximity.build_grid(face.vertices, face.faces, cell=2.0 * face.surface_grid.cell)


def _signed_clearance(face, points: np.ndarray, reach: float) -> np.ndarray:
    """Signed distance (mm) of points from the face: positive on the skin's outer side (the
    closest surface point's interpolated normal), ``inf`` in front farther than ``reach``.

    One unbounded search; ``far`` is what a search bounded by ``reach`` would not find
    (squared distance not below ``reach**2``), settled again by that search where the
    distance is within rounding of ``reach``. The search is the guided one: each query's
    search is bounded from the start by the answer of the query searched before it (a
    neighbour in grid order), which only prunes: the answers are exactly
    :func:`~coverage.proximity.closest_points`' (a transit point is millimetres off the skin,
    and an unguided search walks every cell between it and the skin before it finds a
    candidate: 0.051 s instead of 0.027 s for the default plan's 9.5k transit points).
    """
    grid = _transit_grid(face)
    tri, bary, dist = proximity.closest_points_guessed(grid, points)
    far = (tri < 0) | ~(dist < reach)
    unsure = np.nonzero(np.abs(dist - reach) <= 1e-9 * reach)[0]
    if len(unsure):
        far[unsure] = proximity.closest_points(grid, points[unsure], max_dist=reach)[0] < 0
    corners = face.faces[np.maximum(tri, 0)]
    closest = np.einsum("kj,kjd->kd", bary, face.vertices[corners])
    normal = np.einsum("kj,kjd->kd", bary, face.normals[corners])
    side = np.sign(np.einsum("ij,ij->i", points - closest, normal))
    signed = np.where(side < 0, -dist, dist)
    return np.where(far & (signed > 0), np.inf, signed)


def _check_off_treatable(ctx: _Context, dm: DensityMap):
    """No puncture off treatable skin (the density map's count)."""
    count = dm.punctures_outside_treatable
    violations = []
    if count:
        grid, flat = dm.grid, ctx.flat
        on = (flat.tri >= 0) & (flat.distance <= ON_SKIN_MM)
        uv = np.where(on[:, None], flat.uv, np.nan)
        ij = np.floor((uv - grid.origin) / grid.cell_mm)
        h, w = grid.shape
        ok = on & (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < w) & (ij[:, 1] < h)
        label = np.full(len(uv), -1)
        label[ok] = grid.label[ij[ok, 1].astype(np.int64), ij[ok, 0].astype(np.int64)]
        bad = label < 0
        i = int(np.argmax(bad)) if bad.any() else 0
        where = ctx.where(ctx.punctures[i], flat.uv[i], int(ctx.puncture_owner[i])) if len(bad) else ""
        violations.append(Violation(
            "punctures_off_treatable", int(count), float(count),
            f"punctures_off_treatable: {_n(count, 'puncture')} off treatable skin (in a keep-out, outside the zones or "
            f"off the surface); first {where}", ctx.cell_of(flat.uv[i]), _point(ctx.punctures[i])))
    return {"summary": f"{count} of {dm.n_punctures + dm.off_surface} punctures off treatable skin",
            "count": int(count)}, violations


def _packed(parts: list):
    """Parts laid end to end: the concatenation, each non-empty part's first row, which
    parts are non-empty, and the rows of ``np.diff`` of the concatenation that span two
    parts (the seams)."""
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    keep = np.nonzero(lengths > 0)[0]
    if len(keep) == 0:
        return None, None, keep, None
    start = np.concatenate([[0], np.cumsum(lengths[keep])[:-1]])
    return np.concatenate([parts[i] for i in keep]), start, keep, start[1:] - 1


def _part_speeds(points: list, times: list):
    """Per part (points (n, 3) mm, times (n,) s): whether time runs back, and the top speed
    (mm/s; 0 for fewer than two samples, ``inf`` for a move in no time)."""
    back, top = np.zeros(len(times), dtype=bool), np.zeros(len(times))
    t, start, keep, seam = _packed(times)
    if t is None:
        return back, top
    p = np.concatenate([points[i] for i in keep])
    dt = np.diff(t)
    step = np.linalg.norm(np.diff(p, axis=0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(dt > 0, step / dt, np.where(step > 1e-9, np.inf, 0.0))
    # one trailing row so that every part, a last one-sample part too, owns a row
    v, runs_back = np.append(v, 0.0), np.append(dt < 0, False)
    v[seam], runs_back[seam] = 0.0, False
    top[keep] = np.maximum.reduceat(v, start)
    back[keep] = np.logical_or.reduceat(runs_back, start)
    return back, top


def _part_gaps(times: list):
    """Per part (times (n >= 2,) s): whether time runs back, and the least step (s)."""
    back, least = np.zeros(len(times), dtype=bool), np.zeros(len(times))
    t, start, keep, seam = _packed(times)
    if t is None:
        return back, least
    gaps = np.append(np.diff(t), np.inf)
    gaps[seam] = np.inf
    least[keep] = np.minimum.reduceat(gaps, start)
    back[keep] = np.logical_or.reduceat(gaps < 0, start)
    return back, least


def _check_motion(ctx: _Context):
    """The plan's timing within the devices' limits: time never runs back; a pen glides within
    its speed range and never stamps faster than its top rate; a roller rolls no faster than
    its speed; the tool in the air no faster than the transit speed."""
    subject, protocol = ctx.subject, ctx.subject.protocol
    pen, roller, session = protocol.pen, protocol.roller, protocol.session
    worst = {"pen_mm_s": 0.0, "roller_mm_s": 0.0, "transit_mm_s": 0.0, "pen_stamp_hz": 0.0}
    bad = {"backwards": [], "pen_mm_s": [], "roller_mm_s": [], "transit_mm_s": [], "pen_stamp_hz": []}
    limits = {"pen_mm_s": pen.speed_mm_s_max, "roller_mm_s": roller.speed_mm_s,
              "transit_mm_s": session.transit_speed_mm_s, "pen_stamp_hz": pen.stamp_hz_max}

    # every stroke's and move's steps at once (a loop over a thousand strokes costs more
    # than the arithmetic); then the verdicts stroke by stroke, in plan order
    timed = [s for s in subject.strokes if s.times_s is not None and len(s.times_s) == len(s.points)]
    back, top = _part_speeds([s.points for s in timed], [s.times_s for s in timed])
    stamped = [k for k, s in enumerate(timed) if s.stamp_times_s is not None and len(s.stamp_times_s) > 1]
    stamp_back, stamp_gap = _part_gaps([timed[k].stamp_times_s for k in stamped])
    stamp_of = dict(zip(stamped, range(len(stamped))))
    for k, s in enumerate(timed):
        if back[k]:
            bad["backwards"].append(s.id)
        key = "pen_mm_s" if s.device == "pen" else "roller_mm_s"
        fastest = float(top[k])
        worst[key] = max(worst[key], fastest)
        if fastest > limits[key] * (1 + SPEED_TOLERANCE):
            bad[key].append((s.id, fastest))
        if k in stamp_of:
            j = stamp_of[k]
            if stamp_back[j]:
                bad["backwards"].append(s.id)
            rate = float(1.0 / max(stamp_gap[j], 1e-12))
            worst["pen_stamp_hz"] = max(worst["pen_stamp_hz"], rate)
            if rate > pen.stamp_hz_max * (1 + SPEED_TOLERANCE):
                bad["pen_stamp_hz"].append((s.id, rate))
    moves = [(a, b, pts, times) for (a, b, pts), times in zip(subject.transitions, subject.transition_times or ())
             if len(times) == len(pts)]
    back, top = _part_speeds([m[2] for m in moves], [m[3] for m in moves])
    for k, (a, b, _, _) in enumerate(moves):
        if back[k]:
            bad["backwards"].append(("move", a, b))
        fastest = float(top[k])
        worst["transit_mm_s"] = max(worst["transit_mm_s"], fastest)
        if fastest > limits["transit_mm_s"] * (1 + SPEED_TOLERANCE):
            bad["transit_mm_s"].append(((a, b), fastest))
    violations = []
    if bad["backwards"]:
        violations.append(Violation("motion", len(bad["backwards"]), None,
                                    f"motion: time runs backwards in {_n(len(bad['backwards']), 'stroke or move')} "
                                    f"(first: {bad['backwards'][0]})", None, None))
    what = {"pen_mm_s": ("pen stroke", "glides at", "mm/s"), "roller_mm_s": ("roller stroke", "rolls at", "mm/s"),
            "transit_mm_s": ("move", "travels at", "mm/s"), "pen_stamp_hz": ("pen stroke", "stamps at", "Hz")}
    for key, items in bad.items():
        if key == "backwards" or not items:
            continue
        noun, verb, unit = what[key]
        first, value = max(items, key=lambda item: item[1])
        violations.append(Violation(
            "motion", len(items), float(value),
            f"motion: {_n(len(items), noun)} over the limit; worst {noun} {first} {verb} {value:.4g} {unit} "
            f"(limit {limits[key]:g} {unit})", None, None))
    summary = (f"fastest pen glide {worst['pen_mm_s']:.4g} mm/s (limit {limits['pen_mm_s']:g}), roller "
               f"{worst['roller_mm_s']:.4g} mm/s (limit {limits['roller_mm_s']:g}), move {worst['transit_mm_s']:.4g} "
               f"mm/s (limit {limits['transit_mm_s']:g}), pen stamp rate {worst['pen_stamp_hz']:.4g} Hz (limit "
               f"{limits['pen_stamp_hz']:g})")
    return {"summary": summary, **{f"max_{k}": _num(v) for k, v in worst.items()},
            **{f"limit_{k}": _num(v) for k, v in limits.items()}}, violations


# --- entry point -------------------------------------------------------------------------------

def verify(plan, face=None) -> Verification:
    """Check a plan against every rule, measuring everything again.

    plan : :class:`~coverage.plan.Plan`, or the path of a saved ``PLAN.json`` (``PLAN.npz``
        beside it)
    face : :class:`~coverage.face.Face`, optional
        The face to check on. Default: the plan's own face; for a file, the bundled face at
        the plan's resolution (a plan made on a scan needs its face).

    The zone map is rebuilt from the face and the plan's protocol; the plan's summary and
    statuses are ignored.
    """
    start = time.perf_counter()
    if isinstance(plan, Plan):
        subject = _from_plan(plan, face)
    elif isinstance(plan, (str, os.PathLike)):
        subject = _from_file(plan, face)
    else:
        raise TypeError(f"verify() takes a Plan or the path of a PLAN.json, not {type(plan).__name__}")
    ctx = _Context(subject)
    dm = density(ctx.face, ctx.zones, subject.punctures, grid=ctx.grid)
    checks, violations = {}, []
    for rule, run in (("exclusion", _check_exclusion), ("cap", lambda c: _check_cap(c, dm)),
                      ("depth", _check_depth), ("device", _check_device), ("unobserved", _check_unobserved),
                      ("surface", _check_surface), ("contact", _check_contact), ("transit", _check_transit),
                      ("punctures_off_treatable", lambda c: _check_off_treatable(c, dm)),
                      ("motion", _check_motion)):
        measured, found = run(ctx)
        measured["passed"] = not found
        checks[rule] = measured
        violations.extend(found)
    zones = {}
    for name in ctx.names:
        s = dm.zone_stats(name)
        zones[name] = {key: _num(getattr(s, key)) for key in (
            "area_cm2", "target_per_cm2", "cap_per_cm2", "mean", "p5", "p95", "max", "in_band_fraction",
            "over_cap_fraction")}
    return Verification(not violations, violations, zones, checks, subject.source,
                        time.perf_counter() - start, dm)
