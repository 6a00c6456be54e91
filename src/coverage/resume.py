"""Resuming an interrupted session: the plan that completes it, from what was delivered.

``remaining(plan, delivered)`` takes what the device delivered before it stopped, in one of
two forms, and returns the plan that completes the session (and a report):

* **Strokes with the fraction done** (a mapping ``stroke id -> fraction in [0, 1]``; a
  stroke not listed was not delivered). The fraction is of the stroke's **path length**
  on the skin (the pen fires by distance travelled, the roller's needles land by distance
  rolled): a pen stamp fired if it lies at or before that length along the path, a roller
  puncture if the drum had rolled past it (its projection on the path). The remaining
  plan is the untreated strokes, unchanged, plus the rest of each partial stroke, cut at
  the fraction (a new first sample exactly there), with exactly the punctures not yet
  made: delivered + remaining is the original plan's punctures, none twice. Strokes keep
  their ids, so a device's log maps back to the original plan.
* **Logged punctures** (``(k, 3)`` positions, mm, the face's frame) that need not match the
  plan: their density is computed as the planner does, and pen strokes are planned for the
  skin still under 0.9 x target, with the logged punctures as a dose already there (so no
  window goes over its cap) and stamps only where they reach an under-dosed window. New
  strokes take ids after the original plan's largest.

Times restart at 0 at the first remaining stroke; the tool comes down onto it from the
approach point in the report (clearance above the stroke's start along its normal), as a
session begins. ``report.union`` is a plan holding the original strokes, the remaining
ones after them and every delivered and remaining puncture: ``coverage.verify`` on it checks
the whole session (caps over delivered + remaining, safety of every puncture, the new
strokes and their moves).

Logs (:func:`read_delivered`): JSON ``{"strokes": {"12": 1.0, "13": 0.4}}`` (optionally
``"completed_before": 12``: every stroke before stroke 12 in the plan's order is done unless
listed) or ``{"punctures": [[x, y, z], ...]}``; CSV ``stroke_id,fraction`` rows, or
``x,y,z`` rows of punctures; ``.npy`` ``(k, 3)`` punctures.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from . import pen as _pen
from . import pen_fit
from .density import ON_SURFACE_MM, density, texel_grid
from .errors import CoverageError
from .plan import Plan, Stroke, Transition, pen_strokes, transit, transit_clearance
from .relift import puncture_stamps, roller_projection

ZONE_KEYS = ("target_per_cm2", "cap_per_cm2", "in_band_fraction", "over_cap_fraction", "p5", "mean", "max")


# --- what was delivered -----------------------------------------------------------------

@dataclass(frozen=True)
class Delivered:
    """What a session delivered before it stopped: strokes with the fraction of their path
    length done, or logged puncture positions."""

    strokes: dict | None = None          # stroke id -> fraction in [0, 1]; unlisted: 0
    punctures: np.ndarray | None = None  # (k, 3) mm, the face's frame
    completed_before: int | None = None  # every stroke before this id (plan order) is done
    source: str = "delivered"

    def fractions(self, plan: Plan) -> dict:
        """``stroke id -> fraction`` for every stroke of ``plan``, checked against it."""
        ids = [s.id for s in plan.strokes]
        known = set(ids)
        out = dict.fromkeys(ids, 0.0)
        if self.completed_before is not None:
            if self.completed_before not in known:
                raise CoverageError(f"{self.source}: completed_before = {self.completed_before} is not a stroke id of "
                                    f"the plan (ids {min(ids)}..{max(ids)}); give the id of the stroke the session "
                                    "stopped in")
            for i in ids[:ids.index(self.completed_before)]:
                out[i] = 1.0
        for key, value in (self.strokes or {}).items():
            if key not in known:
                raise CoverageError(f"{self.source}: stroke {key} is not in the plan (ids {min(ids)}..{max(ids)}); "
                                    "give the ids of the plan that was delivered")
            out[key] = value
        return out


def _stroke_id(key, where: str) -> int:
    try:
        value = float(key)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value != int(value) or isinstance(key, bool):
        raise CoverageError(f"{where}: stroke id {key!r} is not a whole number; use the plan's stroke ids")
    return int(value)


def _fraction(value, where: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if isinstance(value, bool) or not (math.isfinite(f) and 0.0 <= f <= 1.0):
        raise CoverageError(f"{where} = {value!r} is not a fraction of the stroke in [0, 1]; give the share of its "
                            "path length delivered (1 done, 0 not started)")
    return f


def _punctures(array, where: str) -> np.ndarray:
    if np.iscomplexobj(array) or (isinstance(array, np.ndarray) and array.dtype.kind not in "biuf"):
        kind = array.dtype if isinstance(array, np.ndarray) else "complex"
        raise CoverageError(f"{where}: punctures are {kind} numbers; give (k, 3) real positions in mm")
    try:
        points = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CoverageError(f"{where}: punctures are not numbers ({exc}); give (k, 3) positions in mm") from exc
    if points.ndim != 2 or points.shape[1] != 3:
        raise CoverageError(f"{where}: punctures have shape {points.shape}; expected (k, 3) positions in mm "
                            "(the face's frame)")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise CoverageError(f"{where}: puncture {int(np.argmax(bad))} is {points[int(np.argmax(bad))].tolist()}, not "
                            "finite; drop it from the log")
    return points


def as_delivered(delivered, source: str = "delivered") -> Delivered:
    """A :class:`Delivered` from a mapping ``stroke id -> fraction``, a ``(k, 3)`` array of
    punctures, a log file path, or a :class:`Delivered` (returned as is)."""
    if isinstance(delivered, Delivered):
        return delivered
    if isinstance(delivered, (str, Path)):
        return read_delivered(delivered)
    if isinstance(delivered, dict):
        strokes = {_stroke_id(k, source): _fraction(v, f"{source}: stroke {k}") for k, v in delivered.items()}
        return Delivered(strokes=strokes, source=source)
    return Delivered(punctures=_punctures(delivered, source), source=source)


def read_delivered(path) -> Delivered:
    """Read a delivery log (see the module's docstring for the formats)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise CoverageError(f"{where}: delivery log not found; give the device's log (.json, .csv or .npy)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise CoverageError(f"{where}: not a readable .npy array ({' '.join(str(exc).split()) or 'empty'}); save "
                                "the punctures with numpy.save") from exc
        return Delivered(punctures=_punctures(array, where), source=where)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CoverageError(f"{where}: cannot read the log ({exc}); give a UTF-8 .json or .csv file") from exc
    if suffix == ".json":
        return _read_json(text, where)
    if suffix == ".csv":
        return _read_csv(text, where)
    raise CoverageError(f"{where}: unknown log type {suffix or '(none)'!r}; use .json, .csv or .npy")


def _read_json(text: str, where: str) -> Delivered:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CoverageError(f"{where}: not valid JSON ({exc}); see coverage-planner resume --help") from exc
    if not isinstance(doc, dict) or not ({"strokes", "punctures"} & set(doc)):
        raise CoverageError(f"{where}: a log holds \"strokes\" ({{id: fraction}}) or \"punctures\" ([[x, y, z], ...])")
    if "punctures" in doc:
        if "strokes" in doc:
            raise CoverageError(f"{where}: give \"strokes\" or \"punctures\", not both")
        return Delivered(punctures=_punctures(doc["punctures"], f"{where}: punctures"), source=where)
    strokes = doc["strokes"]
    if not isinstance(strokes, dict):
        raise CoverageError(f"{where}: \"strokes\" is {type(strokes).__name__}; give an object {{\"12\": 1.0, "
                            "\"13\": 0.4}} (stroke id: fraction of its path done)")
    parsed = {_stroke_id(k, where): _fraction(v, f"{where}: strokes.{k}") for k, v in strokes.items()}
    before = doc.get("completed_before")
    return Delivered(strokes=parsed, completed_before=None if before is None else _stroke_id(before, where),
                     source=where)


def _read_csv(text: str, where: str) -> Delivered:
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if not rows:
        raise CoverageError(f"{where}: the log is empty; give stroke_id,fraction rows or x,y,z rows")
    head = [c.strip().lower() for c in rows[0]]
    if head == ["stroke_id", "fraction"]:
        strokes = {}
        for n, row in enumerate(rows[1:], start=2):
            if len(row) != 2:
                raise CoverageError(f"{where}: line {n} has {len(row)} fields; expected stroke_id,fraction")
            strokes[_stroke_id(row[0].strip(), f"{where}: line {n}")] = _fraction(row[1].strip(), f"{where}: line {n}")
        return Delivered(strokes=strokes, source=where)
    body = rows[1:] if head in (["x", "y", "z"], ["x_mm", "y_mm", "z_mm"]) else rows
    if any(len(r) != 3 for r in body):
        n = next(i for i, r in enumerate(body) if len(r) != 3)
        raise CoverageError(f"{where}: row {n + 1 + (body is not rows)} has {len(body[n])} fields; a log is "
                            "stroke_id,fraction rows (with that header) or x,y,z rows of punctures (mm)")
    try:
        array = [[float(c) for c in r] for r in body]
    except ValueError as exc:
        raise CoverageError(f"{where}: {exc}; puncture rows are x,y,z in mm") from exc
    return Delivered(punctures=_punctures(array, where), source=where)


def interrupted(plan: Plan, stroke_id: int, fraction: float) -> dict:
    """The delivery of a session that stopped in stroke ``stroke_id`` at ``fraction`` of its
    path: every stroke before it (plan order) done, that one partly."""
    ids = [s.id for s in plan.strokes]
    if stroke_id not in ids:
        raise CoverageError(f"stroke {stroke_id} is not in the plan (ids {min(ids)}..{max(ids)})")
    out = dict.fromkeys(ids[:ids.index(stroke_id)], 1.0)
    out[stroke_id] = _fraction(fraction, f"stroke {stroke_id} fraction")
    return out


# --- results ------------------------------------------------------------------------------

@dataclass
class ResumeReport:
    """What was delivered, what remains, and the whole session's dose."""

    mode: str                        # "strokes" or "punctures"
    delivered_punctures: int
    remaining_punctures: int
    remaining_strokes: int
    partial: list                    # [(stroke id, fraction, punctures delivered, punctures left)]
    approach: np.ndarray             # (2, 3) mm: above the first remaining stroke's start, then the start
    union: Plan                      # original strokes + remaining ones, every delivered and remaining puncture
    zones: dict = field(default_factory=dict)   # zone -> {"delivered": {...}, "session": {...}} dose figures
    off_skin: int = 0                # logged punctures farther than 0.5 mm from the skin (not counted)
    over_cap_delivered_mm2: float = 0.0   # skin already over its cap from the delivered punctures

    def text(self) -> str:
        rows = [(f"resume ({self.mode}): {self.delivered_punctures} punctures delivered, {self.remaining_punctures} "
                f"remaining in {self.remaining_strokes} strokes")]
        for sid, f, done, left in self.partial:
            rows.append(f"  stroke {sid} stopped at {100 * f:.0f}% of its path: {done} punctures made, {left} left")
        if self.off_skin:
            rows.append(f"  {self.off_skin} logged punctures are more than {ON_SURFACE_MM:g} mm from the skin: ignored")
        if self.over_cap_delivered_mm2:
            rows.append(f"  {self.over_cap_delivered_mm2:.1f} mm2 of skin is already over its cap: nothing is added there")
        if self.zones:
            rows.append(f"  {'zone':<18}{'target':>7}{'delivered in band':>19}{'session in band':>17}{'session max':>13}")
            for name, z in self.zones.items():
                d, s = z["delivered"], z["session"]
                rows.append(f"  {name:<18}{_num(d['target_per_cm2'], '7.0f')}{_pct(d['in_band_fraction']):>19}"
                            f"{_pct(s['in_band_fraction']):>17}{_num(s['max'], '13.1f')}")
        return "\n".join(rows)


class Resumed(NamedTuple):
    plan: Plan
    report: ResumeReport


def _num(x, fmt: str) -> str:
    return format(x, fmt) if x is not None and math.isfinite(x) else "-".rjust(int(fmt.split(".")[0]))


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if x is not None and math.isfinite(x) else "-"


# --- the remaining plan -----------------------------------------------------------------

def remaining(plan: Plan, delivered) -> Resumed:
    """The plan that completes ``plan`` after ``delivered`` (see the module's docstring):
    ``(remaining plan, report)``."""
    log = as_delivered(delivered)
    if log.punctures is not None:
        return _from_punctures(plan, log)
    return _from_strokes(plan, log)


def _arc(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def roller_arcs(points: np.ndarray, punctures: np.ndarray) -> np.ndarray:
    """Arc length (mm) along a path ``(n, 3)`` at which the drum made each puncture ``(k, 3)``:
    its projection on the nearest path segment (the needle strikes under the axle)."""
    return roller_projection(points, punctures)[1]


def stamp_arcs(stroke: Stroke) -> np.ndarray:
    """Arc length (mm) along a pen stroke's path of each stamp (by its firing time)."""
    return np.interp(stroke.stamp_times_s, stroke.times_s, _arc(stroke.points))


def _clone(stroke: Stroke, **changes) -> Stroke:
    new = Stroke.__new__(Stroke)
    new.__dict__ = {**stroke.__dict__, **changes}
    return new


def _rest(face, stroke: Stroke, cut_mm: float) -> Stroke:
    """The part of a stroke beyond ``cut_mm`` of its path, starting with a sample exactly there."""
    s = _arc(stroke.points)
    j = int(np.searchsorted(s, cut_mm, side="right"))       # first sample beyond the cut
    t = (cut_mm - s[j - 1]) / max(s[j] - s[j - 1], 1e-12)
    uv = stroke.uv[j - 1] + t * (stroke.uv[j] - stroke.uv[j - 1])
    lifted = face.lift(uv[None])
    if not lifted.inside.all():   # the chart edge: keep the sample before
        lifted = face.lift(stroke.uv[j - 1][None])
        uv = stroke.uv[j - 1]
    # the new first segment runs at its segment's planned speed (the lifted cut point lies on
    # the skin, not on the chord, so timing it by arc length would speed it up a little)
    seg_s = float(s[j] - s[j - 1])
    seg_t = float(stroke.times_s[j] - stroke.times_s[j - 1])
    rest_mm = float(np.linalg.norm(stroke.points[j] - lifted.points[0]))
    time_cut = (float(stroke.times_s[j]) - rest_mm * seg_t / seg_s if seg_s > 1e-12
                else float(np.interp(cut_mm, s, stroke.times_s)))
    tangent = stroke.tangents[j - 1] + t * (stroke.tangents[j] - stroke.tangents[j - 1])
    tangent = tangent - (tangent @ lifted.normals[0]) * lifted.normals[0]
    tangent /= max(np.linalg.norm(tangent), 1e-12)
    changes = {"uv": np.concatenate([uv[None], stroke.uv[j:]]),
               "tri": np.concatenate([lifted.tri.astype(stroke.tri.dtype), stroke.tri[j:]]),
               "bary": np.concatenate([lifted.bary, stroke.bary[j:]]),
               "points": np.concatenate([lifted.points, stroke.points[j:]]),
               "normals": np.concatenate([lifted.normals, stroke.normals[j:]]),
               "tangents": np.concatenate([tangent[None], stroke.tangents[j:]]),
               "times_s": np.concatenate([[time_cut], stroke.times_s[j:]])}
    if stroke.swath_mm is not None:
        swath = stroke.swath_mm[j - 1] + t * (stroke.swath_mm[j] - stroke.swath_mm[j - 1])
        changes["swath_mm"] = np.concatenate([[swath], stroke.swath_mm[j:]])
    if stroke.stamp_uv is not None:
        keep = stamp_arcs(stroke) > cut_mm
        changes.update(stamp_uv=stroke.stamp_uv[keep], stamp_points=stroke.stamp_points[keep],
                       stamp_times_s=stroke.stamp_times_s[keep])
    return _clone(stroke, **changes)


def _from_strokes(plan: Plan, log: Delivered) -> Resumed:
    fractions = log.fractions(plan)
    face = plan.face
    ids = np.asarray(plan.puncture_stroke, dtype=np.int64)
    done = np.zeros(len(ids), dtype=bool)
    partial_ids = {k for k, f in fractions.items() if 0.0 < f < 1.0}
    stamps = puncture_stamps(plan, only=partial_ids) if partial_ids else None
    rest, partial = [], []
    for stroke in plan.strokes:
        f = fractions[stroke.id]
        mine = np.nonzero(ids == stroke.id)[0]
        if f >= 1.0:
            done[mine] = True
            continue
        if f <= 0.0:
            rest.append(stroke)
            continue
        cut = f * stroke.length_mm
        if stroke.device == "pen" and stroke.stamp_times_s is not None:
            fired = stamp_arcs(stroke) <= cut + 1e-9
            made = fired[stamps[mine]]
        else:
            made = roller_arcs(stroke.points, plan.puncture_points[mine]) <= cut + 1e-9
        done[mine[made]] = True
        left = int((~made).sum())
        partial.append((stroke.id, f, int(made.sum()), left))
        if cut < stroke.length_mm - 1e-9 and left:
            piece = _rest(face, stroke, cut)
            piece.punctures = left
            rest.append(piece)
    keep = ~done
    remaining_plan = _assemble(plan, rest, keep, first_partial={p[0] for p in partial})
    union = union_plan(plan, remaining_plan, plan.puncture_points[done], ids[done], plan.puncture_depth_mm[done])
    report = ResumeReport("strokes", int(done.sum()), int(keep.sum()), len(rest), partial,
                          _approach(plan, remaining_plan), union)
    report.zones = _zone_figures(plan, plan.puncture_points[done], union)
    return Resumed(remaining_plan, report)


def _assemble(plan: Plan, strokes: list, keep: np.ndarray, first_partial: set) -> Plan:
    """The remaining strokes linked and re-timed from 0, with the punctures ``keep`` selects."""
    face, zones, protocol = plan.face, plan.zones, plan.protocol
    originals = {(t.from_stroke, t.to_stroke): t for t in plan.transitions}
    out, moves = [], []
    t = 0.0
    for n, stroke in enumerate(strokes):
        if n:
            prev = out[-1]
            move = originals.get((prev.id, stroke.id)) if stroke.id not in first_partial else None
            if move is None or np.linalg.norm(move.points[0] - prev.points[-1]) > 1e-9:
                points, times = transit(face, prev.points[-1], prev.normals[-1], stroke.points[0], stroke.normals[0],
                                        transit_clearance(zones, prev.uv[-1], stroke.uv[0]),
                                        protocol.session.transit_speed_mm_s, 0.0)
            else:
                points, times = move.points, move.times_s
            times = t + (times - times[0])
            moves.append(Transition(prev.id, stroke.id, points, times))
            t = float(times[-1])
        shift = t - float(stroke.times_s[0])
        changes = {"times_s": stroke.times_s + shift}
        if stroke.stamp_times_s is not None:
            changes["stamp_times_s"] = stroke.stamp_times_s + shift
        stroke = _clone(stroke, **changes)
        out.append(stroke)
        t = float(stroke.times_s[-1])
    tri = None if plan.puncture_tri is None else plan.puncture_tri[keep]
    bary = None if plan.puncture_bary is None else plan.puncture_bary[keep]
    return Plan(face, zones, protocol, plan.device, out, moves, plan.puncture_points[keep], plan.puncture_uv[keep],
                np.asarray(plan.puncture_stroke)[keep], plan.puncture_depth_mm[keep], dict(plan.zone_status), tri, bary)


def _approach(plan: Plan, remaining_plan: Plan) -> np.ndarray:
    if not remaining_plan.strokes:
        return np.empty((0, 3))
    first = remaining_plan.strokes[0]
    lift = plan.protocol.session.clearance_mm
    return np.stack([first.points[0] + lift * first.normals[0], first.points[0]])


# --- from logged punctures -------------------------------------------------------------------

LOG_FAR_MM = 5.0   # a delivery log with most of its punctures farther than this from the skin is refused


def _from_punctures(plan: Plan, log: Delivered) -> Resumed:
    face, zones, protocol = plan.face, plan.zones, plan.protocol
    points = log.punctures
    flat = face.flatten(points, max_dist_mm=ON_SURFACE_MM)
    on = flat.tri >= 0
    if len(points) and on.mean() < 0.5:
        # a device logs where it punctured the skin: most of them far from it is a log in
        # another frame or unit (what would be planned over it would overdose the skin it missed)
        far = face.flatten(points, max_dist_mm=LOG_FAR_MM).tri < 0
        if far.mean() > 0.5:
            raise CoverageError(f"{log.source}: {int(far.sum())} of {len(points)} logged punctures lie more than "
                                f"{LOG_FAR_MM:g} mm from the face's skin; give them in the plan's frame, in mm")
    grid = texel_grid(zones)
    fixed = _pen.texel_counts(grid, flat.uv[on])
    sets, status, over_mm2 = completion_stamps(face, zones, protocol, grid, fixed)
    first_id = max((s.id for s in plan.strokes), default=-1) + 1
    strokes, moves, hits = pen_strokes(face, zones, protocol, sets, first_id, 0.0, None)
    uv, _, depth, stroke_of = hits
    lifted = face.lift(uv.reshape(-1, 2))
    remaining_plan = Plan(face, zones, protocol, "pen", strokes, moves, lifted.points.reshape(-1, 3), uv, stroke_of,
                          depth, status, lifted.tri.astype(np.int64), lifted.bary.reshape(-1, 3))
    # each logged puncture is credited to the original stroke of its nearest planned puncture
    if len(plan.puncture_points) and len(points):
        _, nearest = cKDTree(plan.puncture_points).query(points)
        owner = np.asarray(plan.puncture_stroke, dtype=np.int64)[nearest]
        depth0 = plan.puncture_depth_mm[nearest]
    else:
        owner, depth0 = np.zeros(len(points), np.int64), np.zeros(len(points))
    union = union_plan(plan, remaining_plan, points, owner, depth0)
    report = ResumeReport("punctures", len(points), len(remaining_plan.puncture_points), len(strokes), [],
                          _approach(plan, remaining_plan), union, off_skin=int((~on).sum()),
                          over_cap_delivered_mm2=over_mm2)
    report.zones = _zone_figures(plan, points, union)
    return Resumed(remaining_plan, report)


def completion_stamps(face, zones, protocol, grid, fixed: np.ndarray):
    """Pen stamps that bring the skin under 0.9 x target up to its band over the punctures
    ``fixed`` (per texel) already made, fitted as :func:`coverage.plan._pen_part` fits the
    pen over the roller's (:func:`coverage.pen_fit.fitted_pen`), with two differences: only
    stamps with a needle in a window still under 0.9 x target may fire (skin at dose is left
    alone), and a window the delivered punctures already put over its cap gets nothing more.

    Returns ``(stamp sets, zone status, skin already over its cap in mm^2)``.
    """
    names = zones.names
    pen_zones = [n for n in names if "pen" in zones.dose(n).devices and not zones.polygons[n].is_empty]
    status = {n: {} for n in names}
    if not pen_zones:
        return [], status, 0.0
    caps = np.array([zones.dose(n).cap_per_cm2 for n in names])
    delivered = pen_fit.WindowedDose(grid).density(fixed)
    already = grid.treatable & (delivered > caps[np.maximum(grid.label, 0)])
    over_mm2 = float(grid.area_mm2[already].sum())
    sets, *_ = pen_fit.fitted_pen(face, zones, protocol, grid, fixed, pen_zones, completion=True)
    return sets, status, over_mm2


# --- the whole session ----------------------------------------------------------------------

def union_plan(plan: Plan, remaining_plan: Plan, delivered_points: np.ndarray, delivered_stroke: np.ndarray,
               delivered_depth: np.ndarray) -> Plan:
    """The whole session as one plan, for :func:`coverage.verify`: the original strokes and
    transitions, then the remaining strokes (ids after the largest original, times after
    its end, one move between), the delivered punctures credited to their original strokes
    and the remaining ones to theirs."""
    face, zones, protocol = plan.face, plan.zones, plan.protocol
    offset = max((s.id for s in plan.strokes), default=-1) + 1 + max((s.id for s in remaining_plan.strokes), default=0)
    t_end = plan.time_s
    strokes = list(plan.strokes)
    moves = list(plan.transitions)
    shifted = []
    start = t_end
    if remaining_plan.strokes and plan.strokes:
        last, first = plan.strokes[-1], remaining_plan.strokes[0]
        points, times = transit(face, last.points[-1], last.normals[-1], first.points[0], first.normals[0],
                                protocol.session.clearance_mm, protocol.session.transit_speed_mm_s, t_end)
        moves.append(Transition(last.id, first.id + offset, points, times))
        start = float(times[-1])
    for s in remaining_plan.strokes:
        changes = {"id": s.id + offset, "times_s": s.times_s + start}
        if s.stamp_times_s is not None:
            changes["stamp_times_s"] = s.stamp_times_s + start
        shifted.append(_clone(s, **changes))
    for t in remaining_plan.transitions:
        moves.append(Transition(t.from_stroke + offset, t.to_stroke + offset, t.points, t.times_s + start))
    points = np.concatenate([delivered_points, remaining_plan.puncture_points])
    flat = face.flatten(points)
    uv = np.where((flat.tri >= 0)[:, None], flat.uv, np.nan)
    ids = np.concatenate([np.asarray(delivered_stroke, np.int64), np.asarray(remaining_plan.puncture_stroke) + offset])
    depth = np.concatenate([delivered_depth, remaining_plan.puncture_depth_mm])
    return Plan(face, zones, protocol, plan.device, strokes + shifted, moves, points, uv, ids, depth,
                dict(plan.zone_status), flat.tri.astype(np.int64), flat.bary)


def _zone_figures(plan: Plan, delivered_points: np.ndarray, union: Plan) -> dict:
    """Per zone: the dose of the delivered punctures alone and of the whole session."""
    grid = texel_grid(plan.zones)
    before = density(plan.face, plan.zones, delivered_points.reshape(-1, 3), grid=grid).stats()
    after = density(plan.face, plan.zones, union.puncture_points, grid=grid).stats()
    out = {}
    for name in plan.zones.names:
        out[name] = {"delivered": {k: _finite(getattr(before[name], k)) for k in ZONE_KEYS},
                     "session": {k: _finite(getattr(after[name], k)) for k in ZONE_KEYS}}
    return out


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None


# --- the command line ------------------------------------------------------------------------

def resume_files(plan_path, delivered_path, out_path, face=None) -> tuple[Resumed, list]:
    """``coverage-planner resume``: read a saved plan and a delivery log, write the remaining
    plan (``OUT.json`` + ``OUT.npz``). Returns the result and the paths written."""
    from .fileio import check_output
    from .planio import check_not_the_plan

    check_output(out_path, (".json",))
    check_not_the_plan(out_path, plan_path, "--out", "resumed")
    log = read_delivered(delivered_path)
    plan = Plan.load(plan_path, face)
    result = remaining(plan, log)
    paths = result.plan.save(out_path)
    return result, list(paths)
