"""Plans: timed strokes and transitions over a face, their punctures and dose summary.

``coverage.plan(face, protocol=None, zones=None, device="roller")`` builds one. A plan is
written as ``PLAN.json`` (metadata, strokes with their paths, transitions, summary) and
``PLAN.npz`` beside it (every puncture: position, stroke, effective depth). Coordinates are
in the input mesh's frame, in millimetres; times in seconds from the session's start.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from . import proximity
from . import pen as _pen
from . import pen_fit
from . import roller as _roller
from . import simulate
from .density import DensityMap, density, texel_grid, texel_layout
from .errors import CoverageError
from .face import Lifted
from .protocol import Protocol
from .tasks import GEOS_LOCK, Once, Tasks, collector_paused
from .tasks import serial as serial_tasks
from .zones import ZoneMap

DEVICES = ("auto", "roller", "pen")
TRANSIT_STEP_MM = 1.0          # transit path samples
CORNERS = {"bottom_left": (1, -1), "bottom_right": (-1, -1), "top_left": (1, 1), "top_right": (-1, 1)}


@dataclass
class Stroke:
    """One continuous contact of a device with the skin, as a timed path."""

    id: int
    device: str
    zone: str
    pass_index: int               # sweep number within its zone and direction
    line: int                     # line number within the sweep
    direction_deg: float | None   # pass line direction, [0, 180): roller on the skin in the face frame,
                                  # pen raster in the chart; None for pen contour loops
    depth_mm: float               # deepest effective puncture
    needle_length_mm: float
    speed_mm_s: float
    uv: np.ndarray                # (n, 2) chart path (face-relative: re-lifts onto a moved face)
    tri: np.ndarray               # (n,) triangle of each sample
    bary: np.ndarray              # (n, 3) barycentrics in it
    points: np.ndarray            # (n, 3) mm
    normals: np.ndarray           # (n, 3) unit outward normals
    tangents: np.ndarray          # (n, 3) unit travel directions
    times_s: np.ndarray           # (n,) from the session's start
    swath_mm: np.ndarray | None = None  # (n,) roller: effective swath
    stamp_hz: float | None = None
    punctures: int = 0
    zones: list = field(default_factory=list)  # every zone the path crosses
    family: int = 0                             # roller line family (0 main, else its band x 10, -1 headland)
    pattern: str = "lines"      # roller: "lines" (parallel passes) or "headland" (along a border);
                                # pen: "raster", "contour" (loops along a border) or "touch-up"
    puncture_rate_hz: float | None = None       # punctures per second while treating (21 CFR 878.4430)
    stamp_uv: np.ndarray | None = None          # pen: (m, 2) chart stamp centres, in firing order
    stamp_points: np.ndarray | None = None      # pen: (m, 3) mm
    stamp_times_s: np.ndarray | None = None     # pen: (m,) when each stamp fires
    cartridge: dict | None = None               # pen: {"needles", "footprint_diameter_mm"}

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1] - self.times_s[0])


@dataclass
class Transition:
    """The tool's move between two strokes: lift along the normal, travel above the skin, lower."""

    from_stroke: int
    to_stroke: int
    points: np.ndarray    # (k, 3) mm
    times_s: np.ndarray   # (k,)

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1] - self.times_s[0])


@dataclass
class Plan:
    """A session: strokes, transitions, every puncture, and the dose they give."""

    face: object
    zones: ZoneMap
    protocol: Protocol
    device: str
    strokes: list
    transitions: list
    puncture_points: np.ndarray   # (k, 3) mm, the face's (input mesh's) frame
    puncture_uv: np.ndarray       # (k, 2) chart
    puncture_stroke: np.ndarray   # (k,) int
    puncture_depth_mm: np.ndarray  # (k,)
    zone_status: dict = field(default_factory=dict)
    puncture_tri: np.ndarray | None = None    # (k,) int triangle of each puncture (face-relative, for re-lifting)
    puncture_bary: np.ndarray | None = None   # (k, 3) barycentrics in it

    @property
    def time_s(self) -> float:
        ends = [s.times_s[-1] for s in self.strokes] + [t.times_s[-1] for t in self.transitions]
        return float(max(ends)) if ends else 0.0

    @functools.cached_property
    def density(self) -> DensityMap:
        """The density map of the plan's punctures (nominal and distinct channels)."""
        return density(self.face, self.zones, self.puncture_points)

    def summary(self) -> dict:
        """Per-zone dose statistics and what each device did there, punctures and time."""
        stats = self.density.stats()
        zones = {}
        for name in self.zones.names:
            s = stats[name]
            strokes = [k for k in self.strokes if name in (k.zones or [k.zone])]
            entry = {key: _finite(getattr(s, key)) for key in (
                "area_cm2", "target_per_cm2", "cap_per_cm2", "mean", "p5", "p50", "p95", "max",
                "in_band_fraction", "over_cap_fraction", "distinct_mean")}
            entry["unobserved_cm2"] = self._unobserved_cm2(name)
            entry["strokes"] = len(strokes)
            entry["time_s"] = float(sum(k.duration_s for k in strokes))
            entry.update(self.zone_status.get(name, {}))
            zones[name] = entry
        return {"zones": zones, "punctures": int(len(self.puncture_points)),
                "distinct_channels": int(self.density.n_channels),
                "time_s": self.time_s,
                "stroke_time_s": float(sum(k.duration_s for k in self.strokes)),
                "transition_time_s": float(sum(t.duration_s for t in self.transitions)),
                "punctures_off_treatable_skin": int(self.density.punctures_outside_treatable),
                "devices": sorted({k.device for k in self.strokes}),
                **({"pen": self.zone_status["_pen"]} if "_pen" in self.zone_status else {})}

    def _unobserved_cm2(self, name: str) -> float:
        """Skin of the zone's cell the scan did not see (left untreated), cm^2."""
        unseen = self.zones.exclusions.get("unobserved")
        if unseen is None:
            return 0.0
        from . import regions

        part = shapely.intersection(self.zones.outlines[name], unseen.region)
        return 0.0 if part.is_empty else round(regions.skin_area_mm2(self.face, part) / 100.0, 3)

    # --- files -------------------------------------------------------------------------

    def to_json(self) -> dict:
        """The JSON document of the plan (format ``coverage-plan`` 2; arrays go to the NPZ)."""
        from .planio import plan_document

        return plan_document(self)

    def save(self, path) -> tuple[Path, Path]:
        """Write ``PLAN.json`` and ``PLAN.npz`` beside it, atomically and together. Returns both paths."""
        from .planio import save_plan

        return save_plan(self, path)

    def retarget(self, face, transitions: str = "auto"):
        """The same plan on the same person's face after it moved or deformed, without
        replanning: ``(plan, report)``; strokes that would now cross a keep-out or unobserved
        skin are cut and reported (:func:`coverage.relift.retarget`)."""
        from .relift import retarget

        return retarget(self, face, transitions)

    def remaining(self, delivered):
        """What completes the session after an interruption: ``(plan, report)``; ``delivered``
        is stroke id -> fraction done, or the delivered punctures (:func:`coverage.resume.remaining`)."""
        from .resume import remaining

        return remaining(self, delivered)

    @classmethod
    def load(cls, path, face=None, zones=None) -> Plan:
        """Read a saved plan back (arrays exactly as saved). ``face``: the face it was planned
        on (default: the bundled face at the plan's resolution)."""
        from .planio import load_plan

        return load_plan(path, face, zones)


def _r(x: float, digits: int = 6) -> float:
    return round(float(x), digits)


def _finite(x: float):
    return None if x is None or not math.isfinite(x) else float(x)


# --- building strokes and transitions ----------------------------------------------------

def chart_path_frames(face, uv: np.ndarray, across: bool = True):
    """Lift a chart path: points, normals, unit tangents, skin arc length, and the chart
    vector of one skin millimetre to the left of travel at each sample (None unless
    ``across``)."""
    return _path_frames(face, face.lift(uv), across)


def _path_frames(face, lifted, across: bool = True):
    """:func:`chart_path_frames` of a chart path already lifted (``face.lift(uv)``)."""
    if not lifted.inside.all():
        raise ValueError("a stroke path leaves the chart")
    pts = lifted.points
    tangent, chart_across = _tangent_frames(face, lifted, np.gradient(pts, axis=0), across)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    return lifted, tangent, s, chart_across


def _tangent_frames(face, lifted, gradient: np.ndarray, across: bool):
    """Unit tangents at lifted samples (their points' ``gradient`` less its part along the
    normal) and the chart vector of one skin millimetre to the left of travel at each (None
    unless ``across``)."""
    nrm = lifted.normals
    tangent = gradient - np.einsum("ij,ij->i", gradient, nrm)[:, None] * nrm
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    if not across:
        return tangent, None
    left = np.cross(nrm, tangent)
    # the triangles' pseudo-inverses, computed once per face (row by row: equal bit for bit
    # to chart.pseudo_inverses of the gathered Jacobians)
    pinv = face.jacobian_pinv[lifted.tri]
    return tangent, np.einsum("kij,kj->ki", pinv, left)


def signed_clearance(face, points: np.ndarray, reach=np.inf) -> np.ndarray:
    """Signed distance (mm) of points from the face: positive on the skin's outer side.

    Points in front of the face farther than ``reach`` read ``inf``: ``reach`` is one float,
    or ``(k,) float`` (each point its own; not below 0, not finite for no bound), and each
    point reads as it would alone. Only whether a point lies within ``reach`` of the face
    depends on it: one unbounded search of the face's :func:`_air_grid` finds every point's
    closest triangle (the least distance, ties to the lowest triangle index: what a search
    bounded by ``reach`` finds when anything is that close), and a point is "beyond reach"
    where a bounded search would find nothing, its squared distance not below
    ``reach**2``; where the distance is within rounding of ``reach`` that bounded search
    settles it.
    """
    return _clearance(face, points, reach)[0]


def _clearance(face, points: np.ndarray, reach=np.inf, guess=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`signed_clearance` and each point's closest triangle ``(k,) int``; ``guess``
    ``(k,) int`` (``-1``: none) a triangle thought near each point (where the point was
    last searched from): it only speeds the search, the readings are the same."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    grid = _air_grid(face)
    tri, bary, dist = proximity.closest_points_guessed(grid, points, guess)
    reach = np.asarray(reach, dtype=np.float64)
    reach = np.broadcast_to(np.where(np.isfinite(reach), reach, np.inf), (len(points),))  # NaN: no bound
    far = (tri < 0) | ~(dist < reach)
    unsure = (tri >= 0) & np.isfinite(reach) & (np.abs(dist - reach) <= 1e-9 * reach)
    for r in np.unique(reach[unsure]):
        mine = np.flatnonzero(unsure & (reach == r))
        far[mine] = proximity.closest_points(grid, points[mine], max_dist=float(r))[0] < 0
    corners = face.faces[np.maximum(tri, 0)]
    closest = np.einsum("kj,kjd->kd", bary, face.vertices[corners])
    normal = np.einsum("kj,kjd->kd", bary, face.normals[corners])
    side = np.sign(np.einsum("ij,ij->i", points - closest, normal))
    signed = np.where(side < 0, -dist, dist)
    return np.where(far & (signed > 0), np.inf, signed), tri


def _air_grid(face) -> proximity.MeshGrid:
    """The face's triangles binned for searches from the air, in cells twice its own grid's:
    a point millimetres off the skin walks every cell between it and the skin, here about an
    eighth as many. The closest point does not depend on the binning."""
    return _coarser_grid(face.surface_grid)


@functools.lru_cache(maxsize=4)
def _coarser_grid(grid: proximity.MeshGrid) -> proximity.MeshGrid:
    return proximity.build_grid(grid.vertices, grid.faces, cell=2.0 * grid.cell)


def transit_clearance(zones: ZoneMap, uv_from, uv_to) -> float:
    """The lift a move between two contacts needs (mm): the protocol's hop clearance when the
    straight chart line between them crosses no keep-out, else its full clearance (a move
    that would cross an exclusion lifts to the clearance first)."""
    return float(transit_clearances(zones, np.reshape(uv_from, (1, 2)), np.reshape(uv_to, (1, 2)))[0])


def transit_clearances(zones: ZoneMap, uv_from, uv_to) -> np.ndarray:
    """:func:`transit_clearance` of ``k`` moves at once, from ``uv_from (k, 2)`` to
    ``uv_to (k, 2)``: ``(k,)`` mm, each move's as alone (the keep-out asked about every
    line in one vectorised GEOS call)."""
    session = zones.protocol.session
    a = np.asarray(uv_from, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(uv_to, dtype=np.float64).reshape(-1, 2)
    if not len(a):
        return np.empty(0)
    moves = np.sqrt(((b - a) ** 2).sum(axis=1)) > 1e-9
    geoms = np.empty(len(a), dtype=object)
    geoms[moves] = shapely.linestrings(np.stack([a[moves], b[moves]], axis=1))
    geoms[~moves] = shapely.points(a[~moves])
    with GEOS_LOCK:     # the roller's moves are built beside the pen's glides (tasks.GEOS_LOCK)
        crosses = shapely.intersects(zones.keepout, geoms)
    return np.where(crosses, session.clearance_mm, min(session.hop_clearance_mm, session.clearance_mm))


TRANSIT_RAISE_STEPS = 20       # most steps up the normal to reach the clearance at a move's end
TRANSIT_PUSH_STEPS = 40        # most pushes of a move's travel out along the face's forward axis
TRANSIT_SMOOTH = 7             # samples over which a push is spread (largest lift nearby)
TRANSIT_CALLER_SHARE = 0.6     # of the pen's safe moves' work, the caller's part on two threads


def transit(face, start_point, start_normal, end_point, end_normal,
            clearance_mm: float, speed_mm_s: float, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """A safe move between two contacts: lift along the normal to the clearance, travel with
    at least that clearance from every part of the face, lower along the normal.

    The travel starts as the straight segment between the raised ends; wherever it comes
    closer to the face than the clearance (across a fold, over the nose) it is pushed out
    along the face frame's forward axis until it clears, and the push is smoothed so the
    path rises and falls gently. Returns (points (k, 3), times (k,)). One move of
    :func:`transit_paths` (which builds many at once, each exactly as alone).
    """
    points = transit_paths(face, np.asarray(start_point, dtype=np.float64)[None],
                           np.asarray(start_normal, dtype=np.float64)[None],
                           np.asarray(end_point, dtype=np.float64)[None],
                           np.asarray(end_normal, dtype=np.float64)[None], [clearance_mm])[0]
    return points, transit_times(points, speed_mm_s, t0)


def transits(face, starts, start_normals, ends, end_normals, clearances, speed_mm_s: float, t0s) -> list:
    """:func:`transit` of many moves: ``[(points (k_i, 3), times (k_i,))]``, move i from
    ``starts[i]`` (with ``start_normals[i]``) to ``ends[i]`` at the lift ``clearances[i]``
    (mm), leaving at ``t0s[i]``; every move exactly as :func:`transit` builds it alone."""
    paths = transit_paths(face, starts, start_normals, ends, end_normals, clearances)
    return [(p, transit_times(p, speed_mm_s, t0)) for p, t0 in zip(paths, t0s)]


def transit_times(points: np.ndarray, speed_mm_s: float, t0: float) -> np.ndarray:
    """Times ``(k,)`` along a move's points ``(k, 3)`` at a steady speed, leaving at ``t0``."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return t0 + np.concatenate([[0.0], np.cumsum(seg)]) / speed_mm_s


def transit_lengths(moves: list) -> list:
    """Each move's travelled length ``(k_i,)`` at its points ``(k_i, 3)`` (mm from its first),
    all moves in one pass: ``transit_times(points, v, t0) == t0 + transit_lengths([points])[0]
    / v`` bit for bit (each segment's length and each running sum as :func:`transit_times`
    takes them)."""
    if not moves:
        return []
    sizes = np.array([len(m) for m in moves], dtype=np.int64)
    points = np.concatenate([np.asarray(m, dtype=np.float64).reshape(-1, 3) for m in moves])
    step = np.zeros(len(points))
    step[1:] = np.linalg.norm(np.diff(points, axis=0), axis=1)   # unread across two moves
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return np.split(_pen._run_cumsum(step, bounds), bounds[1:-1])


def transit_paths(face, starts, start_normals, ends, end_normals, clearances) -> list:
    """The paths (no times: they do not depend on when a move leaves) of :func:`transit`'s
    moves ``[(k_i, 3)]``, all built together.

    starts, ends : (m, 3) float, the contacts (mm); start_normals, end_normals : (m, 3) float
        unit normals there; clearances : (m,) float, each move's lift (mm)

    Each step of the search (raising the ends, pushing the travel out) runs the moves still
    short of their clearance in one proximity search; every point reads as it would alone
    and each move follows its own steps, so a move is the same whatever it is built with.
    """
    starts = np.asarray(starts, dtype=np.float64).reshape(-1, 3)
    m = len(starts)
    if not m:
        return []
    start_normals = np.asarray(start_normals, dtype=np.float64).reshape(-1, 3)
    ends = np.asarray(ends, dtype=np.float64).reshape(-1, 3)
    end_normals = np.asarray(end_normals, dtype=np.float64).reshape(-1, 3)
    clearance = np.asarray(clearances, dtype=np.float64).reshape(m)
    reach = clearance + 1.0  # only whether the clearance holds matters: search no farther

    # both ends of every move up along the normal until the clearance holds from all the
    # face (a concave neighbourhood comes nearer than the skin straight below)
    contact = np.concatenate([starts, ends])
    normal = np.concatenate([start_normals, end_normals])
    need, search = np.concatenate([clearance, clearance]), np.concatenate([reach, reach])
    height = need.copy()
    todo = np.arange(2 * m)
    near = np.full(2 * m, -1)      # each point's closest triangle when last searched: a guess
    for _ in range(TRANSIT_RAISE_STEPS):
        signed, near[todo] = _clearance(face, contact[todo] + height[todo, None] * normal[todo], search[todo],
                                        near[todo])
        deficit = need[todo] - signed
        up = ~(deficit <= 0)
        todo, deficit = todo[up], deficit[up]
        if not len(todo):
            break
        height[todo] += deficit + 1e-3
    raised = contact + height[:, None] * normal

    # the travel: straight between the raised ends, sampled every TRANSIT_STEP_MM; all the
    # moves' samples end to end, move i's from first[i] to first[i] + count[i]
    # (each move's np.linspace(0, 1, n) for all moves at once, as linspace computes it:
    # index * (1 / (n - 1)) + 0, the last sample 1 exactly; each move's length as before)
    count = np.array([max(2, int(math.ceil(np.linalg.norm(b - a) / TRANSIT_STEP_MM)) + 1)
                      for a, b in zip(raised[:m], raised[m:])], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    owner = np.repeat(np.arange(m), count)
    at = np.arange(int(count.sum())) - first[owner]           # index within its move
    f = at.astype(np.float64) * (1.0 / (count - 1).astype(np.float64))[owner]
    f += 0.0
    last = at == count[owner] - 1
    f[last] = 1.0
    f = f[:, None]
    base = (1 - f) * raised[:m][owner] + f * raised[m:][owner]
    inner = (at > 0) & ~last                                  # the raised ends stay put
    forward = face.pose[:3, :3] @ np.array([0.0, 0.0, 1.0])
    forward /= np.linalg.norm(forward)
    lift = np.zeros(len(base))
    near = np.full(len(base), -1)
    moving = np.arange(m)
    rows = np.arange(len(base))    # the samples of the moving moves (each round keeps its own)
    for _ in range(TRANSIT_PUSH_STEPS):
        # the raised ends stay put and count as clear: only the samples between are searched
        ask = rows[inner[rows]]
        gap = np.zeros(len(rows))
        signed, near[ask] = _clearance(face, base[ask] + lift[ask, None] * forward, reach[owner[ask]], near[ask])
        gap[inner[rows]] = clearance[owner[ask]] - signed
        head = np.concatenate([[0], np.cumsum(count[moving])[:-1]])
        short = ~(np.maximum.reduceat(gap, head) <= 1e-3)
        if not short.any():
            break
        keep = np.repeat(short, count[moving])
        rows, gap, moving = rows[keep], gap[keep], moving[short]
        lift[rows] += np.maximum(gap, 0.0) + 0.05
        # a smooth, never lower, profile: the largest lift nearby, then a short ramp
        lift[rows] = np.maximum(lift[rows], _moving_max(lift, rows, first[owner[rows]], count[owner[rows]]))
        lift[rows[~inner[rows]]] = 0.0
    high = base + lift[:, None] * forward
    return [np.concatenate([starts[i, None], high[first[i]:first[i] + count[i]], ends[i, None]]) for i in range(m)]


def _transit_paths_halved(tasks: Tasks | None, face, starts, start_normals, ends, end_normals, clearances):
    """:func:`transit_paths` of the moves, handed back as a call giving them: with more than
    one thread the later half is built on the plan's other thread while the caller builds
    the first (each move is built as alone, so the halves give the same paths as one batch)."""
    m = len(starts)
    if tasks is None or tasks.threads < 2 or m < 2:
        return lambda: transit_paths(face, starts, start_normals, ends, end_normals, clearances)
    # parts by work: a move's search runs over its samples, about one per TRANSIT_STEP_MM of
    # its length; the caller's the larger (TRANSIT_CALLER_SHARE): the other thread starts
    # its part once the caller lets go of the GIL, and its Python steps wait on the caller's
    work = np.linalg.norm(np.asarray(ends, dtype=np.float64).reshape(-1, 3)
                          - np.asarray(starts, dtype=np.float64).reshape(-1, 3), axis=1) + 4 * TRANSIT_STEP_MM
    half = int(np.clip(np.searchsorted(np.cumsum(work), TRANSIT_CALLER_SHARE * work.sum()), 1, m - 1))
    later = tasks.submit(transit_paths, face, starts[half:], start_normals[half:], ends[half:], end_normals[half:],
                         clearances[half:])

    def both():
        return transit_paths(face, starts[:half], start_normals[:half], ends[:half], end_normals[:half],
                             clearances[:half]) + later.result()
    return both


def _moving_max(values: np.ndarray, rows: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The largest of ``values`` within TRANSIT_SMOOTH samples centred on each of ``rows``
    ``(r,) int``, never past its own move (``first``, ``count`` ``(r,) int``: where its move's
    samples start, and how many): per move, ``ndimage.maximum_filter1d(size=TRANSIT_SMOOTH,
    mode="nearest")``, exactly (a largest value is a comparison, not a sum)."""
    at = rows - first
    end = count - 1
    out = values[rows]
    half = TRANSIT_SMOOTH // 2
    for d in range(-half, half + 1):
        if d:
            # first + clip(at + d, 0, count - 1), in place
            index = at + d
            np.maximum(index, 0, out=index)
            np.minimum(index, end, out=index)
            index += first
            np.maximum(out, values[index], out=out)
    return out


# --- the roller planner ------------------------------------------------------------------

def _sweep_cells(lines: list) -> list:
    """Split one sweep's lines into boustrophedon cells: runs on consecutive lines chained
    while each meets exactly one run of the line before (their spans along the lines
    overlap) and that run meets only it, so a cell holds one run per line and snakes
    without leaving its stretch of skin (a U-shaped region's two arms become two cells).
    Returns cells, each a list of its runs in line order."""
    direction = None
    for line_runs in lines:
        for r in line_runs:
            d = r.uv[-1] - r.uv[0]
            if np.linalg.norm(d) > 1e-9:
                direction = d / np.linalg.norm(d)
                break
        if direction is not None:
            break
    if direction is None:
        direction = np.array([1.0, 0.0])
    cells, open_cells = [], []          # open: (cell, span of its last run) from the line before
    for line_runs in lines:
        spans = [(float(np.min(r.uv @ direction)), float(np.max(r.uv @ direction))) for r in line_runs]
        meets = [[k for k, (_, (lo, hi)) in enumerate(open_cells) if lo <= b and a <= hi] for a, b in spans]
        met_by = [[i for i, m in enumerate(meets) if k in m] for k in range(len(open_cells))]
        now = []
        for i, r in enumerate(line_runs):
            if len(meets[i]) == 1 and len(met_by[meets[i][0]]) == 1:
                cell = open_cells[meets[i][0]][0]
            else:
                cell = []
                cells.append(cell)
            cell.append(r)
            now.append((cell, spans[i]))
        open_cells = now
    return cells


def _order_cells(cells: list, position_uv, corner: str, bounds) -> list:
    """Runs of one sweep in treatment order, snaked (boustrophedon) cell by cell.

    ``cells`` are lists of runs, one per line in line order (:func:`_sweep_cells`; a lone
    run, such as a stretch of headland, is a cell of one line). Each cell is snaked on its
    own, so the tool never crosses the face from one arm of a region to the other between
    two lines. The first cell and its way in (first or last line, from either end) are the
    ones nearest ``corner`` of the region (``auto``: nearest the tool's position); each
    next cell is the one whose way in is nearest where the last one ended.
    """
    if not cells:
        return []
    target = _cells_start(position_uv, corner, bounds)
    # each cell's four ways in (its first or last line, from either end), in the order they
    # are weighed, as plain floats: a cell's runs change only once it is chosen. A way in's
    # gap is sqrt(du * du + dv * dv) in that order, the value numpy.linalg.norm of the
    # difference gives (its dot product summed in order, no fused multiply-add: the same on
    # every machine)
    ways = []
    for cell in cells:
        ways.append([(*(first.uv[-1] if flip_first else first.uv[0]).tolist(), reverse_lines, flip_first)
                     for reverse_lines, first in ((False, cell[0]), (True, cell[-1])) for flip_first in (False, True)])
    out = []
    todo = list(range(len(cells)))
    while todo:
        best = None
        tu, tv = np.asarray(target, dtype=np.float64).reshape(2).tolist()
        for c in todo:
            for u, v, reverse_lines, flip_first in ways[c]:
                du, dv = u - tu, v - tv
                gap = math.sqrt(du * du + dv * dv)
                if best is None or gap < best[0]:
                    best = (gap, c, reverse_lines, flip_first)
        _, c, reverse_lines, flip_first = best
        todo.remove(c)
        out += _snaked(cells[c], reverse_lines, flip_first)
        target = out[-1].uv[-1]
    return out


def _cells_start(position_uv, corner: str, bounds) -> np.ndarray:
    """Where :func:`_order_cells` weighs the first cell's ways in from: the tool's position
    (``auto``; none yet: the region's bottom right), else ``corner`` of the region's ``bounds``."""
    if corner == "auto":
        return np.asarray(position_uv) if position_uv is not None else np.array([bounds[2], bounds[1]])
    su, sv = CORNERS[corner]
    return np.array([bounds[2] if su > 0 else bounds[0], bounds[3] if sv > 0 else bounds[1]])


def _snaked(cell: list, reverse_lines: bool, flip_first: bool) -> list:
    """A cell's runs in the order :func:`_order_cells` rolls them, entered at its last line
    (``reverse_lines``) or first, from the line's end (``flip_first``) or start; every other
    line runs backwards (its samples, swaths, curvatures and triangles reversed in place)."""
    ordered = cell[::-1] if reverse_lines else cell
    for j, r in enumerate(ordered):
        if (j % 2 == 0) == flip_first:      # this line runs backwards
            r.uv, r.swath_mm, r.kappa_cross = r.uv[::-1].copy(), r.swath_mm[::-1].copy(), r.kappa_cross[::-1].copy()
            if r.tri is not None:
                r.tri = r.tri[::-1].copy()
    return list(ordered)


def _rigid_drum_runs(face, drum, region, clearance, lines: list) -> list:
    """The runs of ``lines`` (per line, in order) cut to where the rigid drum, standing on
    each sample along the run's own travel, has its whole D x W outline clear of every
    keep-out (:func:`coverage.roller.drum_fits`, ``straight=False``). A line's runs are
    checked along the line they were cut from, whose ends and bends are not theirs: a
    run cut short by another band's claim, or bending with the chart, may point its drum
    past the end of the clear skin. Stretches shorter than a stroke are dropped."""
    return _rigid_drum_runs_many(face, drum, region, clearance, [lines])[0]


def _rigid_drum_runs_many(face, drum, region, clearance, batches: list) -> list:
    """:func:`_rigid_drum_runs` of each ``lines`` of ``batches``, in order, every run checked
    in one :func:`coverage.roller.drum_fits` call (each run reads as alone: the check is per
    sample and per run)."""
    runs = [r for lines in batches for line_runs in lines for r in line_runs]
    if not runs:
        return batches
    starts = np.concatenate([[0], np.cumsum([len(r.uv) for r in runs])])
    located = all(r.tri is not None and len(r.tri) == len(r.uv) for r in runs)
    ok = _roller.drum_fits(face, drum, np.concatenate([r.uv for r in runs]),
                           np.concatenate([r.swath_mm for r in runs]), region.inside, clearance,
                           straight=False, starts=starts,
                           tri=np.concatenate([r.tri for r in runs]) if located else None)
    done, k = [], 0
    for lines in batches:
        out = []
        for line_runs in lines:
            kept = []
            for r in line_runs:
                mine = ok[starts[k]:starts[k + 1]]
                k += 1
                if mine.all():
                    kept.append(r)
                    continue
                for a, b in _roller.runs_of(mine):
                    if (b - a - 1) * _roller.PATH_STEP_MM >= _roller.MIN_STROKE_MM:
                        kept.append(dataclasses.replace(r, uv=r.uv[a:b], swath_mm=r.swath_mm[a:b],
                                                        kappa_cross=r.kappa_cross[a:b], meta=dict(r.meta),
                                                        tri=None if r.tri is None else r.tri[a:b]))
            if kept:
                out.append(kept)
        done.append(out)
    return done


def roller_runs(face, zones: ZoneMap, protocol: Protocol, start_corner: str | None = None,
                tasks: Tasks | None = None, conformity: "Conformity | None" = None, then=None):
    """Every roller run of the plan in treatment order, and each zone's roller status.

    tasks : the plan's :class:`coverage.tasks.Tasks` (default: one thread): the regions'
        sweeps are built on its threads, then ordered here one region after the other.
    conformity : the face's drum conformity (:class:`Conformity`), shared with a task that
        may already be computing it.
    then : called once the regions are handed to the threads (the plan hands them more work).
    """
    tasks = tasks or serial_tasks()
    regions, sweeps_of, corner, status = _roller_setup(face, zones, protocol, start_corner, conformity)
    # each region's sweeps do not depend on another's: built on the plan's threads
    return _ordered_runs(protocol, regions, tasks.map(sweeps_of, regions, then), corner, status)


def _roller_setup(face, zones: ZoneMap, protocol: Protocol, start_corner: str | None,
                  conformity: "Conformity | None") -> tuple:
    """What the roller's regions are swept with: ``(regions, sweeps_of(region) ->``
    :func:`_region_sweeps` ``of it, start corner, the status of the zones the roller may not
    treat)``."""
    conformity = conformity or Conformity(face, protocol)
    corner = start_corner or protocol.session.start_corner
    clearance = _roller.keepout_clearance(zones)
    status = {}
    for name in zones.names:
        dose = protocol.zone(name)
        if "roller" not in dose.devices:
            status[name] = {"roller": {"status": "not allowed", "reason": "the protocol does not allow the roller here"}}
        elif zones.polygons[name].is_empty:
            status[name] = {"roller": {"status": "no treatable skin", "reason": "nothing treatable is left in this zone"}}
    return (_roller.roller_regions(zones, protocol),
            lambda region: _region_sweeps(face, zones, protocol, region, clearance, conformity), corner, status)


def _ordered_runs(protocol: Protocol, regions: list, swept: list, corner: str, status: dict) -> tuple[list, dict]:
    """The regions' sweeps (:func:`_region_sweeps` of each) in treatment order: each sweep's
    cells rolled nearest first, region after region; ``(runs, status)`` (``status``: the
    zones' the roller may not treat, completed here)."""
    runs = []
    position = None
    for region, (drum, per_direction, conforming, sweeps) in zip(regions, swept):
        dose = protocol.zone(region.zones[0])
        planned, region_runs = {f"{theta:g}": 0 for theta in dose.directions_deg}, []
        for theta, cells in sweeps:
            # the sweep's skin is claimed; it is rolled cell by cell, nearest first
            ordered = _order_cells(cells, position, corner, region.polygon.bounds)
            if ordered:
                position = ordered[-1].uv[-1]
            region_runs.extend(ordered)
            planned[f"{theta:g}"] += bool(ordered)
        for n in region.zones:
            state = {"status": "planned" if region_runs else "drum does not fit",
                     "drum_needle_length_mm": drum.needle_length_mm,
                     "sweeps_per_direction": {f"{t:g}": k for t, k in zip(dose.directions_deg, per_direction)},
                     "sweeps_planned": planned, "conforming_fraction": conforming[n]}
            if len(region.zones) > 1:
                state["shared_with"] = [m for m in region.zones if m != n]
            if not region_runs:
                state["reason"] = ("nowhere here does the drum conform with its needles inside the zone and its "
                                   "body clear of every keep-out")
            status[n] = {"roller": state, "passes": int(sum(planned.values()))}
        runs.extend(region_runs)
    return runs, status


class Conformity:
    """Where the drum of each (drum, direction) conforms to the face (:func:`coverage.roller.conformity`),
    computed once whichever thread asks first; drums of one bend share the vertex curvatures."""

    def __init__(self, face, protocol: Protocol):
        self.face, self.protocol = face, protocol
        self._conform, self._curvatures = Once(), Once()

    def keys(self) -> list:
        """Every (drum, direction) the protocol's roller zones may ask for, in protocol order."""
        keys = {}
        for name in self.protocol.zones:
            dose = self.protocol.zone(name)
            if "roller" in dose.devices:
                drum = _roller.Drum.from_protocol(self.protocol, dose.roller_needle_length_mm)
                keys.update(((drum, theta), None) for theta in dose.directions_deg)
        return list(keys)

    def get(self, drum, theta: float):
        return self._conform.get((drum, theta), lambda: _roller.conformity(
            self.face, drum, theta, self._curvatures.get((_roller.drum_curvature_radius_mm(drum), theta),
                                                         lambda: _roller.vertex_curvatures(self.face, theta, drum))))

    def all(self) -> None:
        """Every key's conformity (a task while the zone map is built: it reads only the face)."""
        for drum, theta in self.keys():
            self.get(drum, theta)


def _region_sweeps(face, zones: ZoneMap, protocol: Protocol, region, clearance, conformity: Conformity):
    """One roller region's sweeps, before their order: ``(drum, sweeps per direction,
    conforming fraction per zone and direction, [(theta, cells of the sweep)] in sweep order)``."""
    dose = protocol.zone(region.zones[0])
    drum = _roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
    per_direction = _roller.passes_for_target(drum, dose.target_per_cm2, dose.cap_per_cm2, len(dose.directions_deg))
    conforming = {n: {} for n in region.zones}
    zone_triangles = {n: _zone_triangles(face, zones, n) for n in region.zones}
    # every sweep rolls its lines, then the region's border (headland) where they left it free
    headland = _roller.Headland(zones, region, drum, clearance)
    total_sweeps = sum(per_direction)
    # the headland of every sweep, built together (it does not depend on the claims)
    borders = iter(headland.runs_many(range(total_sweeps), total_sweeps))
    # every sweep's skin claimed (lines, then border) in order; the rigid-drum check of
    # all of them together (it reads each run alone and takes nothing), then each sweep's cells
    claimed = []     # (theta, [claimed lines of each family], claimed border)
    for theta, n_sweeps in zip(dose.directions_deg, per_direction):
        conform = conformity.get(drum, theta)
        for n in region.zones:
            conforming[n][f"{theta:g}"] = _zone_fraction(face, zones, n, conform.conforms, zone_triangles[n])
        # the main family (each line at the band it mostly shows), then one family per other
        # band width for the patches the main lines had to skip; no two bands overlap
        families = []
        if n_sweeps:
            families.append(_roller.ZoneSweeps(zones, region, drum, theta, conform, clearance))
            families += [_roller.ZoneSweeps(zones, region, drum, theta, conform, clearance, width)
                         for width in _roller.band_widths(face, zones, region, conform)]
        # the main family's phase is searched; the others fill what it leaves wherever they fall
        offsets = [_roller.best_offset(f, n_sweeps) if i == 0 else 0.0 for i, f in enumerate(families)]
        # every sweep's lines of every family, built together (they do not depend on the claims)
        swept = iter(_roller.sweep_runs_many([(family, j, n_sweeps, offset) for j in range(n_sweeps)
                                              for family, offset in zip(families, offsets)]))
        for j in range(n_sweeps):
            occupancy = _roller.Occupancy(region.polygon.bounds)
            lines = [_roller.claim(face, next(swept), occupancy) for _ in families]
            # then the border: the headland rolls only where the lines left the skin free
            border = _roller.claim(face, next(borders), occupancy)
            claimed.append((theta, lines, border))
    checked = iter(_rigid_drum_runs_many(face, drum, region, clearance,
                                         [part for _, lines, border in claimed for part in (*lines, border)]))
    sweeps = []
    for theta, lines, border in claimed:
        cells = []
        for _ in lines:
            cells += _sweep_cells(next(checked))
        cells += [[r] for runs in _roller.headland_ends(face, drum, next(checked)) for r in runs]
        sweeps.append((theta, cells))
    return drum, per_direction, conforming, sweeps


def _zone_fraction(face, zones: ZoneMap, name: str, vertex_mask: np.ndarray, triangles=None) -> float:
    """Share of a zone's treatable skin whose triangles have every vertex in the mask
    (``triangles``: :func:`_zone_triangles` of the zone, if already known)."""
    corners, area, total = _zone_triangles(face, zones, name) if triangles is None else triangles
    if total <= 0:
        return 0.0
    return float(area[vertex_mask[corners].all(axis=1)].sum() / total)


def _zone_triangles(face, zones: ZoneMap, name: str) -> tuple:
    """``(corners (t, 3) int, area (t,) float, total area)`` of a zone's triangles."""
    inside = zones.triangle_labels == zones.names.index(name)
    area = face.triangle_area_mm2[inside]
    return face.faces[inside], area, area.sum()


def _face_parts(face, conformity: Conformity) -> None:
    """The drum's conformity, then the face's own parts the roller's regions and the pen's
    texel grid read first (the chart triangles' pseudo-inverses among them: about 10 ms for
    the whole face in closed form, so made whole rather than row by row as asked) (each cached on the face, whichever thread asks first builds it):
    a task beside the zone map, which reads none of them."""
    conformity.all()
    _ = face.area_scale, face.linear_scale, face.triangle_area_mm2, face.jacobian_normal, face.jacobian_pinv
    texel_layout(face)


def _roller_part(face, zones: ZoneMap, protocol: Protocol, start_corner: str | None, tasks: Tasks | None = None,
                 conformity: Conformity | None = None, then=None):
    """A piece giving the roller's punctures (chart, depth, stroke) with the zone status, its
    :class:`_RollerStrokes` (the strokes and transitions, once their safe moves are built:
    on the plan's other thread while the pen's fit runs, since nothing of the pen reads them)
    and the punctures' lifts (:func:`_roller_runs_made`).

    The regions' sweeps are handed to the plan's threads and the first region's built here;
    the rest is queued after the work ``then()`` hands the threads (the pen's grid and
    fields), for whichever thread is first free or waiting (most often the one that waits for
    the pen's grid while the other builds it); on one thread, when first read."""
    tasks = tasks or serial_tasks()
    regions, sweeps_of, corner, status = _roller_setup(face, zones, protocol, start_corner, conformity)
    # each region's sweeps a piece (each does not depend on another's): the later ones queued
    # first, then the first, which this thread runs below unless a free thread took it
    swept = [tasks.submit(sweeps_of, region) for region in regions[1:]]
    swept[:0] = [tasks.submit(sweeps_of, region) for region in regions[:1]]
    if then is not None:
        then()
    made = tasks.submit(_roller_runs_made, tasks, face, zones, protocol, regions, swept, corner, status)
    if swept:
        swept[0].result()     # the first region's sweeps on this thread
    return made


def _roller_runs_made(tasks: Tasks, face, zones: ZoneMap, protocol: Protocol, regions: list, swept: list, corner: str,
                      status: dict):
    """The roller's part once every region's sweeps are built (pieces ``swept``): its runs in
    treatment order, framed and rolled, their punctures on the skin lifted; ``(roller
    strokes, uv, depth, stroke_of, status, lifted)``."""
    runs, status = _ordered_runs(protocol, regions, [piece.result() for piece in swept], corner, status)
    frames, packed, drums = _roller_frames(face, protocol, runs)
    uv, depth, stroke_of = _simulate_runs(packed, drums)
    # the punctures on the skin, lifted (each point's lift is its own: the plan's punctures
    # take theirs from here)
    lifted = face.lift(uv.reshape(-1, 2))
    keep = lifted.inside
    uv, depth, stroke_of = uv[keep], depth[keep], stroke_of[keep]
    lifted = Lifted(lifted.points[keep], lifted.normals[keep], lifted.tri[keep], lifted.bary[keep])
    return _RollerStrokes(tasks, face, zones, protocol, runs, frames, drums, depth, stroke_of), uv, depth, stroke_of, \
        status, lifted


class _RollerStrokes:
    """The roller's timed strokes and transitions, made when asked (:meth:`finish`): with
    their safe moves, they are handed to the plan's threads by :meth:`start_moves` (at the
    latest by :meth:`finish`)."""

    def __init__(self, tasks: Tasks, face, zones: ZoneMap, protocol: Protocol, runs: list, frames: list,
                 drums: list, depth: np.ndarray, stroke_of: np.ndarray):
        self.tasks, self.face, self.zones, self.protocol = tasks, face, zones, protocol
        self.runs, self.frames, self.drums, self.depth, self.stroke_of = runs, frames, drums, depth, stroke_of
        self.done = None

    def start_moves(self) -> None:
        # for the pool's thread alone (lend=False): the pen's fit and repair leave it idle,
        # and nothing reads the roller's strokes before they end
        if self.done is None:
            self.done = self.tasks.submit(self._strokes, lend=False)

    def _strokes(self) -> tuple[list, list]:
        moves = _roller_moves(self.face, self.zones, self.runs, self.frames)
        strokes, transitions = _roller_timed(self.zones, self.protocol, self.runs, self.frames, self.drums, moves)
        counts = np.bincount(self.stroke_of, minlength=len(strokes))
        for stroke in strokes:
            mine = self.stroke_of == stroke.id
            stroke.punctures = int(counts[stroke.id])
            if mine.any():
                stroke.depth_mm = float(self.depth[mine].max())
        return strokes, transitions

    def finish(self) -> tuple[list, list]:
        self.start_moves()
        return self.done.result()


def build_plan(face, zones: ZoneMap, protocol: Protocol, device: str, start_corner: str | None = None,
               tasks: Tasks | None = None, conformity: Conformity | None = None) -> Plan:
    """Plan with one device or both (``auto``: the roller, then the pen and its touch-ups);
    ``tasks``: the plan's threads (default: one)."""
    tasks = tasks or serial_tasks()
    strokes, transitions, status = [], [], {}
    uv, depth, stroke_of = np.empty((0, 2)), np.empty(0), np.empty(0, np.int64)
    roller, pen_fields = None, None
    lifted = []       # the punctures' lifts, device by device in the order of uv
    if device in ("pen", "auto"):
        # the pen's texel grid and dose problems read the zone map, not the roller's punctures:
        # built beside the roller (asked for once its regions are under way)
        def start_pen():
            nonlocal pen_fields
            # the grid for the pool's thread; either cartridge's field for whichever thread
            # is free or waiting (each reads the grid)
            grid = tasks.submit(_pen_grid, zones, lend=False)
            pen_fields = (grid, [tasks.submit(_pen_field, zones, protocol, grid, cartridge)
                                 for cartridge in ("main", "fine")])
    else:
        start_pen = None
    made = None
    if device in ("roller", "auto"):
        made = _roller_part(face, zones, protocol, start_corner, tasks, conformity, start_pen)
    elif start_pen is not None:
        start_pen()
    if device in ("pen", "auto"):
        # the main cartridge's field: this thread then builds the grid both fields read (the
        # other, waiting for it, makes the roller's runs meanwhile: _roller_part); the fine
        # one's is read by the fine cartridge's own piece (its paths), so the main paths
        # start while the other thread finishes it
        fields = (pen_fields[1][0].result(), pen_fields[1][1])
        grid = pen_fields[0].result()[0]
    if made is not None:
        roller, uv, depth, stroke_of, status, roller_lifted = made.result()
        lifted.append(roller_lifted)
    if device in ("pen", "auto"):
        sets, pen_status = _pen_part(face, zones, protocol, grid, _pen.texel_counts(grid, uv), tasks, fields,
                                     None if roller is None else roller.start_moves)
        for name, state in pen_status.items():
            status.setdefault(name, {}).update(state)
    if roller is not None:
        strokes, transitions = _roller_finish(roller)
    if device in ("pen", "auto"):
        t0 = max([s.times_s[-1] for s in strokes], default=0.0)
        more, moves, hits, pen_lifted = _pen_strokes_lifted(face, zones, protocol, sets, len(strokes), t0,
                                                            strokes[-1] if strokes else None, tasks)
        lifted.append(pen_lifted.result())
        strokes += more
        transitions += moves
        uv = np.concatenate([uv, hits[0]])
        depth = np.concatenate([depth, hits[2]])
        stroke_of = np.concatenate([stroke_of, hits[3]])
    # every puncture as the same gather the strokes use: its triangle and barycentrics on the
    # face (so a plan re-lifts onto a moved face), and its point from them (each device's
    # lifted where its punctures were made: the same values as one lift of them all)
    lifted = (Lifted(*(np.concatenate([getattr(x, f) for x in lifted]) for f in ("points", "normals", "tri", "bary")))
              if lifted else face.lift(uv.reshape(-1, 2)))
    for name in zones.names:
        entry = status.setdefault(name, {})
        pen_state = entry.get("pen", {})
        entry["passes"] = int(entry.get("passes", 0)) + int(pen_state.get("passes", 0) if pen_state.get(
            "status") == "planned" else 0)
    return Plan(face, zones, protocol, device, strokes, transitions, lifted.points.reshape(-1, 3), uv, stroke_of,
                depth, status, lifted.tri.astype(np.int64), lifted.bary.reshape(-1, 3))


def _roller_finish(roller: _RollerStrokes) -> tuple[list, list]:
    """The roller's strokes and transitions once its safe moves are built (:func:`_roller_part`)."""
    return roller.finish()


def _pen_zones(zones: ZoneMap) -> list:
    """The zones the pen plans: allowed there, with treatable skin left."""
    return [n for n in zones.names if "pen" in zones.dose(n).devices and not zones.polygons[n].is_empty]


def _pen_grid(zones: ZoneMap):
    """The pen's texel grid and the zone map's footprint clearance (both cartridges' fields read them)."""
    return texel_grid(zones), _pen.FootprintClearance(zones)


def _pen_field(zones: ZoneMap, protocol: Protocol, grid, cartridge: str):
    """One cartridge's dose field (:func:`coverage.pen_fit.dose_field_of`) once ``grid``
    (a piece giving :func:`_pen_grid`) is built."""
    texels, clearance = grid.result()
    return pen_fit.dose_field_of(zones, texels, protocol, _pen_zones(zones), cartridge, clearance)


def _pen_part(face, zones: ZoneMap, protocol: Protocol, grid, fixed: np.ndarray, tasks: Tasks | None = None,
              fields: tuple | None = None, before_fit=None):
    """The pen's stamps and each zone's pen status: main passes (crossed raster lines or
    contour loops) and fine-cartridge touch-up lines where the main footprint cannot reach,
    their stamps fitted needle by needle to every window's band over the punctures
    ``fixed`` (per texel) already planned, the roller's (:func:`coverage.pen_fit.fitted_pen`)."""
    names = zones.names
    pen_zones = _pen_zones(zones)
    sets, settings, _, unsafe, capped = pen_fit.fitted_pen(face, zones, protocol, grid, fixed, pen_zones, tasks=tasks,
                                                           fields=fields, before_fit=before_fit)
    status = {}
    for n in pen_zones:
        st = settings[n]
        stamps = {"main": 0, "touch-up": 0}
        for stamp_set in sets:
            if not len(stamp_set.path):
                continue
            for kind in stamps:
                mine = np.array([p.zone == n and (p.pattern == "touch-up") == (kind == "touch-up")
                                 for p in stamp_set.paths], dtype=bool)
                stamps[kind] += int((stamp_set.keep & mine[stamp_set.path]).sum())
        status[n] = {"pen": {"status": "planned" if sum(stamps.values()) else "no stamps needed",
                             "pattern": st.pattern, "depth_mm": st.depth_mm, "passes": st.passes,
                             "spacing_mm": _r(st.spacing_mm, 3), "speed_mm_s": _r(st.speed_mm_s, 3),
                             "stamp_hz": _r(st.stamp_hz, 3), "stamp_spacing_mm": _finite(_r(st.stamp_spacing_mm, 3)),
                             "stamps": stamps["main"], "touch_up_stamps": stamps["touch-up"]}}
    for n in names:
        if n not in settings:
            status[n] = {"pen": {"status": "not allowed", "reason": "the protocol does not allow the pen here"}}
    status["_pen"] = {"stamps_dropped_unsafe": unsafe, "stamps_dropped_for_cap": capped}
    return sets, status


def _too_close(stamp_skin: np.ndarray, min_gap_mm: float) -> np.ndarray:
    """Stamps ``(m,) bool`` to drop so every kept stamp lies at least ``min_gap_mm`` along
    the path beyond the kept one before it (the first always stays): none where every
    stamp lies that far beyond the one before (as along almost every path: one vectorised
    test), else :func:`_too_close_reference`, stamp by stamp."""
    stamp_skin = np.asarray(stamp_skin, dtype=np.float64).reshape(-1)
    if len(stamp_skin) < 2 or (np.diff(stamp_skin) >= min_gap_mm * (1.0 + 1e-9)).all():
        # each stamp is kept in turn: the last kept is always the one before
        return np.zeros(len(stamp_skin), dtype=bool)
    return _too_close_reference(stamp_skin, min_gap_mm)


def _too_close_reference(stamp_skin: np.ndarray, min_gap_mm: float) -> np.ndarray:
    """:func:`_too_close` stamp by stamp."""
    drop = np.zeros(len(stamp_skin), dtype=bool)
    last = -np.inf
    for i, s in enumerate(stamp_skin):
        if s - last < min_gap_mm * (1.0 + 1e-9):
            drop[i] = True
        else:
            last = s
    return drop


def pen_speed_profile(skin_s: np.ndarray, stamp_skin: np.ndarray, speed_mm_s: float, pen) -> np.ndarray:
    """Glide speed ``(n - 1,)`` over each segment of a pen path: the planned speed, lowered
    only across stamp intervals too short for the top stamp rate at it (so no two stamps
    come closer in time than ``1 / pen.stamp_hz_max``), never under ``pen.speed_mm_s_min``.
    In one compiled pass (:func:`coverage._ext.pen.speed_profile`) where the stamps' positions
    are finite and in order and the samples finite, as they are along a path; else the NumPy
    twin, :func:`pen_speed_profile_reference`, which it equals bit for bit."""
    from ._ext import pen as _pen_kernel

    skin_s = np.ascontiguousarray(skin_s, dtype=np.float64).reshape(-1)
    stamp_skin = np.ascontiguousarray(stamp_skin, dtype=np.float64).reshape(-1)
    if not len(skin_s):
        return pen_speed_profile_reference(skin_s, stamp_skin, speed_mm_s, pen)
    out = np.empty(len(skin_s) - 1)
    if _pen_kernel.speed_profile(skin_s, stamp_skin, float(speed_mm_s), float(pen.stamp_hz_max),
                                 float(pen.speed_mm_s_min), out):
        return pen_speed_profile_reference(skin_s, stamp_skin, speed_mm_s, pen)
    return out


def pen_speed_profile_reference(skin_s: np.ndarray, stamp_skin: np.ndarray, speed_mm_s: float, pen) -> np.ndarray:
    """NumPy twin of :func:`pen_speed_profile`."""
    limit = np.full(len(skin_s) - 1, float(speed_mm_s))
    if len(stamp_skin) > 1:
        gaps = pen.stamp_hz_max * np.diff(stamp_skin)          # fastest speed per stamp interval
        last = len(gaps) - 1
        lo = np.searchsorted(stamp_skin, skin_s[:-1], side="right") - 1
        hi = np.searchsorted(stamp_skin, skin_s[1:], side="left") - 1
        touched = (hi >= 0) & (lo <= last) & (hi >= lo)
        lo, hi = np.clip(lo, 0, last), np.clip(hi, 0, last)
        fastest = gaps[lo]
        for step in range(1, int((hi - lo).max(initial=0)) + 1):   # segments spanning several intervals
            more = hi - lo >= step
            fastest[more] = np.minimum(fastest[more], gaps[np.minimum(lo[more] + step, last)])
        limit[touched] = np.minimum(limit[touched], fastest[touched])
    return np.maximum(limit, pen.speed_mm_s_min)


def _reverse_pen_item(item, pen, skin_r: np.ndarray | None = None):
    """A pen path run the other way: the same samples and stamps in reverse order (a stamp's
    needles and depth do not depend on the direction of travel). ``skin_r``: the reversed
    path's skin arc lengths (:func:`_reversed_arcs`), if made already."""
    st, path, rows, uv, lifted, tangent, skin_s, stamp_skin, speed, hit_rows = item
    back = Lifted(lifted.points[::-1].copy(), lifted.normals[::-1].copy(), lifted.tri[::-1].copy(),
                  lifted.bary[::-1].copy())
    if skin_r is None:
        skin_r = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(back.points, axis=0), axis=1))])
    stamp_r = np.clip(skin_r[-1] - stamp_skin[::-1], 0.0, skin_r[-1])
    rows_r = rows[::-1].copy()
    fired_r = st.fired_at(rows_r)     # read at these stamps only, not over every stamp of the set
    hits_r = (rows_r[:, None] * st.needles + np.arange(st.needles)[None]).ravel()
    hits_r = hits_r[fired_r.ravel()]
    return (st, path, rows_r, uv[::-1].copy(), back, -tangent[::-1], skin_r, stamp_r,
            pen_speed_profile(skin_r, stamp_r, path.speed_mm_s, pen), hits_r)


def _order_pen_items(items: list, position, pen) -> list:
    """Pen paths in treatment order: cartridge by cartridge (the order of the stamp sets),
    zone by zone, and within a zone nearest first, each run from whichever end is nearer the
    tool (greedy nearest neighbour on the skin); the next zone is the one with the nearest
    path end. Order and direction change only when and where stamps fire, never which.
    The choices: :func:`greedy_order`."""
    if not items:
        return []
    ends = np.array([[it[4].points[0], it[4].points[-1]] for it in items], dtype=np.float64)
    names = {}
    zone = np.array([names.setdefault(it[1].zone, len(names)) for it in items], dtype=np.int64)
    starts = np.array([0] + [k for k in range(1, len(items)) if items[k][0] is not items[k - 1][0]] + [len(items)],
                      dtype=np.int64)
    order, flip = greedy_order(ends, zone, starts, position)
    turned = _reversed_arcs([items[i][4].points for i in order[flip].tolist()])
    return [_reverse_pen_item(items[i], pen, next(turned)) if f else items[i]
            for i, f in zip(order.tolist(), flip.tolist())]


def _reversed_arcs(points: list):
    """The skin arc lengths of each path of ``points`` ``[(n_i, 3)]`` (two points or more)
    run backwards, as :func:`_reverse_pen_item` measures them, all in one pass: the segment
    lengths row by row and each path's running sums (:func:`coverage.pen._run_cumsum`)."""
    if not points:
        return iter([])
    back = np.concatenate([p[::-1] for p in points])
    bounds = np.zeros(len(points) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in points], out=bounds[1:])
    step = np.zeros(len(back))
    step[1:] = np.linalg.norm(np.diff(back, axis=0), axis=1)     # across two paths' ends: not read
    return iter(np.split(_pen._run_cumsum(step, bounds), bounds[1:-1]))


def greedy_order(ends: np.ndarray, zone: np.ndarray, starts: np.ndarray, position) -> tuple:
    """:func:`greedy_order_reference` in one compiled pass (:func:`coverage._ext.pen.greedy_order`)
    where every path end and the position are finite (else the twin itself): the same
    choices bit for bit."""
    from ._ext import pen as _pen_kernel

    ends = np.ascontiguousarray(ends, dtype=np.float64)
    n = len(ends)
    p = None if position is None else np.asarray(position, dtype=np.float64).reshape(-1)
    zone = np.ascontiguousarray(zone, dtype=np.int64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    if not (ends.shape == (n, 2, 3) and zone.shape == (n,) and len(starts) >= 1 and starts[0] == 0
            and starts[-1] == n and (np.diff(starts) >= 0).all() and np.isfinite(ends).all()
            and (p is None or (p.shape == (3,) and np.isfinite(p).all()))):
        return greedy_order_reference(ends, zone, starts, position)
    order = np.empty(n, dtype=np.int64)
    flip = np.empty(n, dtype=np.uint8)
    q = np.zeros(3) if p is None else p
    _pen_kernel.greedy_order(ends, zone, starts, float(q[0]), float(q[1]), float(q[2]), p is not None, order, flip,
                             np.ones(n, dtype=np.uint8))
    return order, flip.astype(bool)


def greedy_order_reference(ends: np.ndarray, zone: np.ndarray, starts: np.ndarray, position) -> tuple:
    """NumPy twin of :func:`greedy_order`: ``(order (n,) int, flip (n,) bool)`` of paths with first and last points ``ends (n, 2, 3)``, zones ``zone (n,)`` and
    groups ``starts`` (rows ``starts[g]:starts[g + 1]``), from the tool's ``position (3,)``
    (None: none yet): group by group, the last zone's paths first while any are left, the
    path end nearest the position (ties to the lower path, then its first end), the path run
    from that end and the position moved to its other end."""
    order, flip = [], []
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):
        group_ends, zone_of = ends[a:b], zone[a:b]
        todo = np.ones(b - a, dtype=bool)
        current = None
        while todo.any():
            pool = todo.copy()
            if current is not None:
                same = todo & (zone_of == current)
                if same.any():
                    pool = same
            if position is None:
                i, end = int(np.flatnonzero(pool)[0]), 0
            else:
                gap = np.linalg.norm(group_ends - np.asarray(position)[None, None], axis=2)
                gap[~pool] = np.inf
                i, end = (int(x) for x in np.unravel_index(int(np.argmin(gap)), gap.shape))
            todo[i] = False
            order.append(a + i)
            flip.append(end == 1)
            current = zone_of[i]
            position = group_ends[i, 1 - end]
    return np.array(order, dtype=np.int64), np.array(flip, dtype=bool)


def _glide_joins(face, zones: ZoneMap, items: list, pen) -> list:
    """Pen paths in treatment order, each joined to the one before by a glide in contact
    where :func:`coverage.pen.joinable` and :func:`coverage.pen.glides_ok` allow it (the same
    cartridge, zone, pass and depth; a short straight glide on the zone's skin, its footprint
    clear of every margin): the order puts paths side by side that the fit's layout did not,
    and a glide at the pen's speed is shorter than a lift, a move and a landing. Stamps and
    their order do not change; a join that would bring two stamps closer on the skin than
    the pen can fire them apart is not made."""
    joins = _glides_allowed(zones, items)
    if not joins:
        return items
    # the glides' inner samples lifted at once (each point's lift is its own)
    inner = [move[1:-1] for move in joins.values()]
    lifted = face.lift(np.concatenate(inner))
    at = np.cumsum([0] + [len(x) for x in inner])
    glide = {k: (move, _lifted_slice(lifted, a, b)) for (k, move), a, b in zip(joins.items(), at[:-1], at[1:])}
    out, chain = [], _PenChain(items[0])
    for k in range(1, len(items)):
        if not (k in glide and chain.join(items[k], *glide[k], pen)):
            out.append(chain.item(face, pen))
            chain = _PenChain(items[k])
    out.append(chain.item(face, pen))
    return out


def _glide_joins_reference(face, zones: ZoneMap, items: list, pen) -> list:
    """:func:`_glide_joins` join by join: each joined path framed anew (:func:`_join_pen_items`)."""
    joins = _glides_allowed(zones, items)
    out = items[:1]
    for k in range(1, len(items)):
        joined = _join_pen_items(face, out[-1], items[k], joins[k], pen) if k in joins else None
        if joined is None:
            out.append(items[k])
        else:
            out[-1] = joined
    return out


def _glides_allowed(zones: ZoneMap, items: list) -> dict:
    """The glides :func:`_glide_joins` may join pen items by: ``{k: chart glide from item
    k - 1's last sample to item k's first}`` where :func:`coverage.pen.joinable` and
    :func:`coverage.pen.glides_ok` allow it."""
    keys = [k for k in range(1, len(items)) if items[k][0] is items[k - 1][0] and items[k][0].field is not None
            and _pen.joinable(_AsRun(items[k - 1]), _AsRun(items[k]))]
    if not keys:
        return {}
    moves = _pen.glide_moves([items[k - 1][3][-1] for k in keys], [items[k][3][0] for k in keys])
    ok = np.zeros(len(keys), dtype=bool)
    for st in {id(items[k][0]): items[k][0] for k in keys}.values():
        mine = [i for i, k in enumerate(keys) if items[k][0] is st]
        ok[mine] = _pen.glides_ok([moves[i] for i in mine], [items[keys[i]][1].zone for i in mine], st.field, zones)
    return {k: move for k, move, good in zip(keys, moves, ok) if good}


def _lifted_slice(lifted: Lifted, a: int, b: int) -> Lifted:
    """Rows ``a:b`` of ``lifted``."""
    return Lifted(lifted.points[a:b], lifted.normals[a:b], lifted.tri[a:b], lifted.bary[a:b])


class _PenChain:
    """Pen items joined one after another by glides (:func:`_glide_joins`), framed once at
    the end: what :func:`_join_pen_items` makes join by join, each joined path framed anew.
    A join needs only the skin arc length at the next item's first sample, which is the
    running sum of the joined path's segment lengths so far (NumPy's cumulative sum adds in
    order, so a prefix of it is the same sum); the frames and the glide speeds are made
    once the chain ends."""

    __slots__ = ("first", "uv", "lifted", "rows", "hits", "stamp_skin", "last_s", "last_uv", "last_point", "n")

    def __init__(self, item):
        self.first = item
        self.uv, self.lifted, self.rows, self.hits = [item[3]], [item[4]], [item[2]], [item[9]]
        self.stamp_skin = item[7]
        self.last_s = float(item[6][-1])
        self.last_uv, self.last_point = item[3][-1], item[4].points[-1]
        self.n = len(item[3])

    def join(self, b, move: np.ndarray, glide: Lifted, pen) -> bool:
        """``b`` run on across the glide ``move`` (its inner samples lifted: ``glide``), or
        False where two stamps would come closer on the skin than the pen fires them apart."""
        skip = 1 if np.linalg.norm(b[3][0] - self.last_uv) <= 1e-12 else 0
        tail = b[3][skip:]
        pts = np.concatenate([self.last_point[None], glide.points, b[4].points[skip:]])
        s = np.cumsum(np.concatenate([[self.last_s], np.linalg.norm(np.diff(pts, axis=0), axis=1)]))
        # b's first sample in the joined path (a's last where b starts on it)
        first_b = self.n + len(glide.points) + len(tail) - len(b[3])
        stamp_skin = np.concatenate([self.stamp_skin, s[first_b - (self.n - 1)] + b[7]])
        if _too_close(stamp_skin, pen.speed_mm_s_min / pen.stamp_hz_max).any():
            return False
        self.uv += [move[1:-1], tail]
        self.lifted += [glide, _lifted_slice(b[4], skip, len(b[4].tri))]
        self.rows.append(b[2])
        self.hits.append(b[9])
        self.stamp_skin = stamp_skin
        self.last_s = float(s[-1])
        self.last_uv, self.last_point = b[3][-1], b[4].points[-1]
        self.n += len(glide.points) + len(tail)
        return True

    def item(self, face, pen):
        """The chain as one pen item (its first item where nothing joined it)."""
        if len(self.rows) == 1:
            return self.first
        st, path = self.first[0], self.first[1]
        lifted = Lifted(*(np.concatenate([getattr(x, f) for x in self.lifted]) for f in ("points", "normals", "tri",
                                                                                           "bary")))
        lifted, tangent, skin_s, _ = _path_frames(face, lifted, across=False)
        speed = pen_speed_profile(skin_s, self.stamp_skin, path.speed_mm_s, pen)
        return (st, path, np.concatenate(self.rows), np.concatenate(self.uv), lifted, tangent, skin_s,
                self.stamp_skin, speed, np.concatenate(self.hits))


class _AsRun:
    """A pen item as :func:`coverage.pen.joinable` reads a path: its path's fields, with its
    own chart samples as run for ``uv`` (a view: no copy of the path is made)."""

    __slots__ = ("path", "uv")

    def __init__(self, item):
        self.path, self.uv = item[1], item[3]

    def __getattr__(self, name):
        return getattr(self.path, name)


def _join_pen_items(face, a, b, move: np.ndarray, pen):
    """Pen item ``b`` run on from ``a`` in one stroke, across the straight chart glide
    ``move`` (from a's last sample to b's first), or None where two stamps would come closer
    on the skin than the pen fires them apart."""
    st, path = a[0], a[1]
    skip = 1 if np.linalg.norm(b[3][0] - a[3][-1]) <= 1e-12 else 0
    tail = b[3][skip:]
    uv = np.concatenate([a[3], move[1:-1], tail])
    # the joined path lifted: a's and b's samples are lifted already (each point's lift is
    # its own), only the glide's inner samples are new
    glide = face.lift(move[1:-1])
    lifted = Lifted(*(np.concatenate([x, y, z[skip:]]) for x, y, z in (
        (a[4].points, glide.points, b[4].points), (a[4].normals, glide.normals, b[4].normals),
        (a[4].tri, glide.tri, b[4].tri), (a[4].bary, glide.bary, b[4].bary))))
    lifted, tangent, skin_s, _ = _path_frames(face, lifted, across=False)
    # b's stamps sit as far along the joined path beyond b's first sample as along b
    first_b = len(uv) - len(b[3])
    stamp_skin = np.concatenate([a[7], skin_s[first_b] + b[7]])
    if _too_close(stamp_skin, pen.speed_mm_s_min / pen.stamp_hz_max).any():
        return None
    speed = pen_speed_profile(skin_s, stamp_skin, path.speed_mm_s, pen)
    return (st, path, np.concatenate([a[2], b[2]]), uv, lifted, tangent, skin_s, stamp_skin, speed,
            np.concatenate([a[9], b[9]]))


def pen_strokes(face, zones: ZoneMap, protocol: Protocol, sets: list, first_id: int, t0: float, previous,
                tasks: Tasks | None = None):
    """Timed pen strokes (kept stamps only, each path trimmed to its first and last stamp),
    their transitions, and their punctures ``(uv, points, depth, stroke)`` in firing order.
    ``tasks``: the plan's threads (default one): the later half of the safe moves is built
    on the other (each move is built as alone: the same moves either way)."""
    return _pen_strokes_lifted(face, zones, protocol, sets, first_id, t0, previous, tasks)[:3]   # lift unread


def _pen_strokes_lifted(face, zones: ZoneMap, protocol: Protocol, sets: list, first_id: int, t0: float, previous,
                        tasks: Tasks | None = None):
    """:func:`pen_strokes` and a piece giving the punctures' chart points lifted
    (``face.lift`` of the punctures' ``uv``, each point's lift its own: made on the plan's
    other thread while the strokes are timed; on one thread, when first read)."""
    tasks = tasks or serial_tasks()
    pen = protocol.pen
    strokes, transitions = [], []
    out = {"uv": [], "points": [], "depth": [], "stroke": []}
    # every set's stamp centres and needle hits lifted at once, on the plan's other thread
    # while this one lays the strokes out (each point's lift is its own: a stroke takes its
    # rows of them)
    live = [st for st in sets if len(st.path)]
    row0 = {id(st): (int(a), int(b)) for st, a, b in zip(
        live, np.cumsum([0] + [len(st.uv) for st in live]), np.cumsum([0] + [len(st.hits.uv) for st in live]))}
    ahead = tasks.submit(_lift_rows, face, [st.uv for st in live], [st.hits.uv for st in live])
    # first where every stroke runs and where the tool moves between them (none of it
    # depends on time, and the moves are built all at once), then the clock, stroke by stroke.
    # Each path's stretch from its first kept stamp to its last, all of them lifted and
    # framed together (each path's frames are its own: _run_path_frames)
    todo = []
    for st in sets:
        if not len(st.path):
            continue
        starts = np.searchsorted(st.path, np.arange(len(st.paths) + 1))
        fired = st.fired().reshape(-1, st.needles)
        arcs = pen_fit.chart_arcs_many([path.uv for path in st.paths])      # each path's chart arc lengths
        for pi, path in enumerate(st.paths):
            rows = np.arange(starts[pi], starts[pi + 1])
            rows = rows[st.keep[rows]]
            if not len(rows):
                continue
            chart_s = arcs[pi]
            local = rows - starts[pi]
            a = max(0, int(np.searchsorted(chart_s, path.stamp_s[local[0]], side="right")) - 1)
            b = min(len(chart_s), int(np.searchsorted(chart_s, path.stamp_s[local[-1]], side="left")) + 1)
            b = max(b, a + 2)
            todo.append((st, fired, path, rows, local, chart_s, a, b, path.uv[a:b]))
    frames = _run_path_frames_halved(tasks, face, [x[-1] for x in todo])
    items = []
    for (st, fired, path, rows, local, chart_s, a, b, uv), (lifted, tangent, skin_s, _) in zip(todo, frames):
        stamp_skin = np.interp(path.stamp_s[local], chart_s[a:b], skin_s)
        # two stamps closer on the skin than the slowest glide covers between two firings
        # at the top rate cannot both fire (a collapsed scan triangle can bring them
        # together): the later one is dropped
        close = _too_close(stamp_skin, pen.speed_mm_s_min / pen.stamp_hz_max)
        if close.any():
            st.keep[rows[close]] = False
            rows, stamp_skin = rows[~close], stamp_skin[~close]
        speed = pen_speed_profile(skin_s, stamp_skin, path.speed_mm_s, pen)
        hit_rows = (rows[:, None] * st.needles + np.arange(st.needles)[None]).ravel()
        hit_rows = hit_rows[fired[rows].ravel()]
        items.append((st, path, rows, uv, lifted, tangent, skin_s, stamp_skin, speed, hit_rows))
    items = _order_pen_items(items, None if previous is None else previous.points[-1], pen)
    items = _glide_joins(face, zones, items, pen)
    # the punctures in firing order (stroke by stroke, each stroke's fired needles): their
    # rows of the lift made ahead, gathered beside the moves and the clock below
    hit_uv = [it[0].hits.uv[it[9]] for it in items]
    hits_lifted = tasks.submit(_lifted_rows, ahead, 1, [row0[id(it[0])][1] + it[9] for it in items])
    froms = []
    tail = None if previous is None else (previous.points[-1], previous.normals[-1], previous.uv[-1])
    for it in items:
        froms.append(tail)    # the tool's last contact (point, normal, chart point), if any
        tail = (it[4].points[-1], it[4].normals[-1], it[3][-1])
    pairs = [(f, it[4], it[3]) for f, it in zip(froms, items) if f is not None]
    moves = _transit_paths_halved(tasks, face, [f[0] for f, _, _ in pairs], [f[1] for f, _, _ in pairs],
                                  [lifted.points[0] for _, lifted, _ in pairs],
                                  [lifted.normals[0] for _, lifted, _ in pairs],
                                  transit_clearances(zones, [f[2] for f, _, _ in pairs],
                                                     [uv[0] for _, _, uv in pairs]))
    # every stroke's stamp centres, their rows of the lift made ahead
    stamp_uv = [it[0].uv[it[2]] for it in items]
    stamp_lift = ahead.result()[0].points
    stamp_points = [stamp_lift[row0[id(it[0])][0] + it[2]] for it in items]
    move_paths = moves()
    moves = zip(move_paths, transit_lengths(move_paths))    # each move's points and travelled lengths
    t = t0
    sid = first_id
    for k, (st, path, rows, uv, lifted, tangent, skin_s, stamp_skin, speed, hit_rows) in enumerate(items):
        if froms[k] is not None:
            pts, length = next(moves)
            times = t + length / protocol.session.transit_speed_mm_s
            transitions.append(Transition(previous.id, sid, pts, times))
            t = float(times[-1])
        # glide at the zone's speed, slower only between stamps too close for the top rate
        elapsed = np.concatenate([[0.0], np.cumsum(np.diff(skin_s) / speed)])
        times = t + elapsed
        stamp_times = t + np.interp(stamp_skin, skin_s, elapsed)
        span = float(stamp_times[-1] - stamp_times[0])
        # a lone stamp has no rate of its own: it fires once, at the device's nominal rate
        rate = (len(rows) - 1) / span if len(rows) > 1 and span > 0 else pen.stamp_hz
        depth = st.hits.depth_mm[hit_rows]
        stroke = Stroke(sid, "pen", path.zone, path.pass_index, path.line, path.direction_deg,
                        float(depth.max()), path.depth_mm, float(speed.max()), uv, lifted.tri, lifted.bary,
                        lifted.points, lifted.normals, tangent, times, stamp_hz=float(rate),
                        punctures=int(len(hit_rows)), zones=[path.zone], family=0, pattern=path.pattern,
                        puncture_rate_hz=float(rate * path.needles), stamp_uv=stamp_uv[k],
                        stamp_points=stamp_points[k], stamp_times_s=stamp_times,
                        cartridge={"needles": path.needles, "footprint_diameter_mm": path.footprint_mm})
        strokes.append(stroke)
        out["uv"].append(hit_uv[k])
        out["points"].append(st.hits.points[hit_rows])
        out["depth"].append(depth)
        out["stroke"].append(np.full(len(hit_rows), sid, dtype=np.int64))
        previous = stroke
        t = float(times[-1])
        sid += 1
    if not strokes:
        return [], [], (np.empty((0, 2)), np.empty((0, 3)), np.empty(0), np.empty(0, np.int64)), hits_lifted
    return strokes, transitions, tuple(np.concatenate(out[k]) for k in ("uv", "points", "depth", "stroke")), \
        hits_lifted


def _lift_rows(face, *groups) -> list:
    """Per group of chart point arrays, all of them lifted at once (``face.lift``)."""
    return [face.lift(np.concatenate(g) if g else np.empty((0, 2))) for g in groups]


def _lifted_rows(ahead, group: int, rows: list) -> Lifted:
    """Rows ``rows`` ``[(k_i,) int]`` (one after the other) of group ``group`` of the lifts
    a piece ``ahead`` gives (:func:`_lift_rows`)."""
    lifted = ahead.result()[group]
    at = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    return Lifted(lifted.points[at], lifted.normals[at], lifted.tri[at], lifted.bary[at])


def roller_strokes(face, zones: ZoneMap, protocol: Protocol, runs: list):
    """Timed strokes and transitions of roller runs, and the runs packed for the simulation."""
    frames, packed, drums = _roller_frames(face, protocol, runs)
    strokes, transitions = _roller_timed(zones, protocol, runs, frames, drums,
                                         _roller_moves(face, zones, runs, frames))
    return strokes, transitions, packed, drums


def _roller_frames(face, protocol: Protocol, runs: list):
    """Each roller run lifted and framed ``[(lifted, tangent, s)]``, the runs packed for the
    simulation, and each run's drum."""
    packed = {"s": [], "uv": [], "across": [], "kappa": [], "phase": [], "lengths": []}
    drums, frames = [], []
    for run, (lifted, tangent, s, across) in zip(runs, _run_path_frames(face, [run.uv for run in runs])):
        dose = protocol.zone(run.zone.split("+")[0])
        drums.append(_roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm))
        frames.append((lifted, tangent, s))
        for key, value in (("s", s), ("uv", run.uv), ("across", across), ("kappa", run.kappa_cross)):
            packed[key].append(value)
        packed["phase"].append(run.phase_mm)
        packed["lengths"].append(len(s))
    return frames, packed, drums


def _roller_moves(face, zones: ZoneMap, runs: list, frames: list) -> list:
    """The safe move into each roller run after the first: where it goes does not depend on
    when, so all are built at once (and timed in order by :func:`_roller_timed`)."""
    return transit_paths(face, [f[0].points[-1] for f in frames[:-1]], [f[0].normals[-1] for f in frames[:-1]],
                         [f[0].points[0] for f in frames[1:]], [f[0].normals[0] for f in frames[1:]],
                         transit_clearances(zones, [a.uv[-1] for a in runs[:-1]], [b.uv[0] for b in runs[1:]]))


def _roller_timed(zones: ZoneMap, protocol: Protocol, runs: list, frames: list, drums: list, moves: list):
    """The roller runs as timed strokes, with the transitions between them."""
    strokes, transitions = [], []
    # every run's zone labels in one lookup (each point's label is its own)
    sizes = [len(run.uv) for run in runs]
    run_labels = np.split(zones.label_at(np.concatenate([run.uv for run in runs])) if runs
                          else np.empty(0, np.int64), np.cumsum(sizes)[:-1])
    t = 0.0
    lengths = transit_lengths(moves)
    for i, (run, (lifted, tangent, s), drum) in enumerate(zip(runs, frames, drums)):
        if strokes:
            times = t + lengths[i - 1] / protocol.session.transit_speed_mm_s
            transitions.append(Transition(strokes[-1].id, i, moves[i - 1], times))
            t = float(times[-1])
        times = t + s / drum.speed_mm_s
        labels = run_labels[i]
        crossed = [zones.names[k] for k in np.unique(labels[labels >= 0])]
        main = zones.names[np.bincount(labels[labels >= 0]).argmax()] if crossed else run.zone.split("+")[0]
        strokes.append(Stroke(i, "roller", main, run.sweep, run.line, float(run.theta_deg), drum.needle_length_mm,
                              drum.needle_length_mm, drum.speed_mm_s, run.uv, lifted.tri, lifted.bary,
                              lifted.points, lifted.normals, tangent, times, swath_mm=run.swath_mm,
                              zones=crossed, family=int(run.meta.get("family", 0)),
                              pattern=run.meta.get("pattern", "lines"),
                              puncture_rate_hz=drum.rings * drum.needles_per_ring * drum.speed_mm_s
                              / (math.pi * drum.diameter_mm)))
        t = float(times[-1])
    return strokes, transitions


def _run_path_frames(face, paths: list, across: bool = True) -> list:
    """:func:`chart_path_frames` of each chart path ``(n_i, 2)`` (two samples or more), all
    lifted and framed together: every step is per sample (the tangent's differences and the
    arc length's sums stop at each path's ends), so each path's arrays are its own.
    ``across`` False: no chart vectors across (None), as chart_path_frames."""
    if not paths or any(len(uv) < 2 for uv in paths):
        return [chart_path_frames(face, uv, across) for uv in paths]
    starts = np.concatenate([[0], np.cumsum([len(uv) for uv in paths])]).astype(np.int64)
    lifted = face.lift(np.concatenate(paths))
    if not lifted.inside.all():
        raise ValueError("a stroke path leaves the chart")
    pts, nrm = lifted.points, lifted.normals
    # np.gradient of each path
    tangent, chart_across = _tangent_frames(face, lifted, _roller.path_gradient(pts, starts), across)
    step = np.zeros(len(pts))
    step[1:] = np.linalg.norm(np.diff(pts, axis=0), axis=1)     # across two paths' ends: not read
    # each path's arc lengths: np.concatenate([[0.0], np.cumsum(step[a + 1:b])]), all at once
    arcs = _pen._run_cumsum(step, starts)
    out = []
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):
        part = Lifted(pts[a:b].copy(), nrm[a:b].copy(), lifted.tri[a:b].copy(), lifted.bary[a:b].copy())
        out.append((part, tangent[a:b].copy(), arcs[a:b].copy(), None if chart_across is None
                    else chart_across[a:b].copy()))
    return out


def _run_path_frames_halved(tasks: Tasks, face, paths: list) -> list:
    """:func:`_run_path_frames` of ``paths`` (no chart vectors across), the later half (by
    samples) on the plan's other thread while this one frames the first (each path's frames
    are its own: the same arrays as one call)."""
    if tasks.threads < 2 or len(paths) < 2:
        return _run_path_frames(face, paths, across=False)
    half = int(np.clip(np.searchsorted(np.cumsum([len(uv) for uv in paths]), 0.5 * sum(len(uv) for uv in paths)),
                       1, len(paths) - 1))
    later = tasks.submit(_run_path_frames, face, paths[half:], across=False)
    return _run_path_frames(face, paths[:half], across=False) + later.result()


def drum_groups(packed: dict, drums: list) -> list:
    """``[(drum, stroke ids, RunArrays)]``: the runs packed per drum, ready to roll."""
    lengths = np.asarray(packed["lengths"])
    groups = []
    for drum in dict.fromkeys(drums):
        ids = np.asarray([i for i, d in enumerate(drums) if d == drum])
        groups.append((drum, ids, simulate.RunArrays(
            np.concatenate([packed["s"][i] for i in ids]), np.concatenate([packed["uv"][i] for i in ids]),
            np.concatenate([packed["across"][i] for i in ids]), np.concatenate([packed["kappa"][i] for i in ids]),
            np.concatenate([[0], np.cumsum(lengths[ids])]), np.asarray([packed["phase"][i] for i in ids]))))
    return groups


def _simulate_runs(packed: dict, drums: list):
    """Roll each group of runs sharing a drum; punctures in firing order of the session."""
    if not drums:
        return np.empty((0, 2)), np.empty(0), np.empty(0, np.int64)
    parts = []
    for drum, ids, runs in drum_groups(packed, drums):
        hits = simulate.roll(runs, drum)
        parts.append((hits.uv, hits.depth_mm, ids[hits.run], hits.s_mm))
    uv, depth, stroke, s = (np.concatenate(p) for p in zip(*parts))
    order = np.lexsort((s, stroke))   # strokes are fired in id order, each along its path
    return uv[order], depth[order], stroke[order]


def report_text(doc: dict) -> str:
    """The per-zone table of a plan (from its JSON document), for a terminal: then where the
    roller was refused or limited, and the pen's settings in each zone it treats."""
    summary = doc["summary"]

    def num(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) else "-"

    head = (f"{'zone':<18}{'area':>7}{'target':>8}{'mean':>8}{'p5':>8}{'p95':>8}{'max':>8}"
            f"{'in band':>9}{'over cap':>9}{'passes':>8}{'time s':>8}")
    rows = [head, "-" * len(head)]
    notes, pen_notes = [], []
    for name, z in summary["zones"].items():
        rows.append(f"{name:<18}{num(z['area_cm2'], '7.1f')}{num(z['target_per_cm2'], '8.0f')}{num(z['mean'], '8.1f')}"
                    f"{num(z['p5'], '8.1f')}{num(z['p95'], '8.1f')}{num(z['max'], '8.1f')}"
                    f"{num(100 * z['in_band_fraction'] if z['in_band_fraction'] is not None else None, '8.1f')}%"
                    f"{num(100 * z['over_cap_fraction'] if z['over_cap_fraction'] is not None else None, '8.1f')}%"
                    f"{z.get('passes', 0):8d}{z['time_s']:8.1f}")
        roller = z.get("roller")
        if roller and roller["status"] != "planned":
            notes.append(f"  {name}: roller {roller['status']}: {roller.get('reason', '')}".rstrip(": "))
        elif roller:
            weak = {d: f for d, f in roller["conforming_fraction"].items() if f < 0.95}
            if weak:
                notes.append(f"  {name}: the drum conforms on " + ", ".join(
                    f"{100 * f:.0f}% at {d} deg" for d, f in weak.items()) + " (the rest is refused)")
        pen = z.get("pen")
        if pen and pen.get("status") == "planned":
            pattern = pen.get("pattern", "?")
            pen_notes.append(
                f"  {name}: {pattern}, depth {num(pen.get('depth_mm'), 'g')} mm, {pen.get('passes', 0)} passes, "
                f"{'loops' if pattern == 'contour' else 'lines'} {num(pen.get('spacing_mm'), '.2f')} mm apart, "
                f"{num(pen.get('speed_mm_s'), 'g')} mm/s, {num(pen.get('stamp_hz'), '.1f')} stamps/s "
                f"(one every {num(pen.get('stamp_spacing_mm'), '.2f')} mm); {pen.get('stamps', 0)} stamps"
                f" + {pen.get('touch_up_stamps', 0)} touch-up")
        elif pen and "status" in pen:
            pen_notes.append(f"  {name}: pen {pen['status']}: {pen.get('reason', '')}".rstrip(": "))
    rows.append("-" * len(head))
    rows.append("area cm2; densities in punctures/cm2 over 1 cm2 windows; in band = [0.9 x target, cap]")
    devices = ", ".join(summary.get("devices") or []) or "none"
    rows.append(f"punctures {summary['punctures']} ({summary['distinct_channels']} distinct channels); "
                f"time {summary['time_s']:.0f} s ({summary['stroke_time_s']:.0f} s in contact, "
                f"{summary['transition_time_s']:.0f} s moving); strokes {len(doc['strokes'])}; devices {devices}")
    unseen = {n: z.get("unobserved_cm2", 0.0) for n, z in summary["zones"].items() if z.get("unobserved_cm2")}
    if unseen:
        rows.append("unobserved skin, left untreated: " + ", ".join(f"{n} {a:.1f} cm2" for n, a in unseen.items()))
    if notes:
        rows.append("where the roller was refused or limited:")
        rows.extend(notes)
    if pen_notes:
        rows.append("pen settings per zone:")
        rows.extend(pen_notes)
    totals = summary.get("pen")
    if totals:
        rows.append(f"pen stamps dropped: {totals.get('stamps_dropped_unsafe', 0)} as unsafe (needles too near an "
                    f"exclusion or off the skin), {totals.get('stamps_dropped_for_cap', 0)} to keep every window "
                    "under its cap")
    return "\n".join(rows)


def plan(face, protocol: Protocol | None = None, zones: ZoneMap | None = None, device: str = "auto",
         start_corner: str | None = None, threads: int | None = None) -> Plan:
    """Plan a session on a face.

    device : ``"auto"`` (default: the roller where the protocol allows it and the drum
        conforms, then the pen for the rest and touch-ups), ``"roller"`` or ``"pen"``
    start_corner : ``auto``, ``bottom_left``, ``bottom_right``, ``top_left`` or ``top_right``
        (the subject's left and right); default: the protocol's ``session.start_corner``.
    threads : how many threads the plan's independent pieces run on (the conformity beside
        the zone map; the roller's regions, the pen's texel grid and dose fields; the pen's
        two cartridges' paths; the repair's parts and the roller's safe moves beside the pen's
        fit); default ``$COVERAGE_THREADS``, else the cores available, at most 2. The plan is
        the same bit for bit on any number (:mod:`coverage.tasks`).
    """
    protocol = Protocol.default() if protocol is None else protocol
    if device not in DEVICES:
        raise CoverageError(f"device = {device!r} is not available; use one of {', '.join(DEVICES)}")
    if start_corner is not None and start_corner not in ("auto", *CORNERS):
        raise CoverageError(f"start_corner = {start_corner!r} is not known; use auto, {', '.join(CORNERS)}")
    with collector_paused(), Tasks(threads) as tasks:
        conformity = Conformity(face, protocol) if device in ("roller", "auto") else None
        if zones is None:
            if conformity is not None:
                # the drum's conformity reads only the face: built while the zone map is
                # (its result is read by the roller, where any error it met shows), and with
                # it the face's parts the roller's regions read first
                tasks.submit(_face_parts, face, conformity)
            zones = ZoneMap.default(face, protocol)
        return build_plan(face, zones, protocol, device, start_corner, tasks, conformity)
