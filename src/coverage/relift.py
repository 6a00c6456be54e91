"""Re-lifting a plan onto the same face after it moved or deformed, without replanning.

Every face of one resolution shares the canonical topology, so everything a plan puts on
the skin (stroke samples, pen stamps, punctures) is a triangle and barycentrics and lands
on a new face by a gather: ``point = sum(bary * new_vertices[faces[tri]])``, the normal
likewise (normalised), the travel tangent from the new points as the planner computes it
(a rigid move just turns the original normals and tangents).

**Transitions** are in the air, so they cannot be gathered. Each keeps its original points,
carried by the best rigid fit of the old face onto the new one (Kabsch), plus a correction
blending, by arc length along the move, from the displacement of its start (the end of the
stroke it leaves, re-lifted) to that of its end: a rigid move carries it exactly, and it
always starts and ends on its strokes.

**Times** stay the plan's under a rigid move. On a face the move stretched, each segment of a
stroke or move takes longer in proportion to how much longer it got (a shortened one keeps
its time), and everything after starts that much later: no glide, roll, travel or stamp rate
goes faster than planned.

**What is sound without measuring again.** Let a vertex's deviation be its distance from its
rigidly moved original (delta: the largest). A 3D distance between two points of the skin
changes by at most the sum of their deviations (a point's: its triangle's largest corner's);
a transition point's clearance by at most its own correction plus the largest deviation of
the vertices within reach of it. The :class:`Retargeter` keeps, per plan, the room each check
had on the original face (within :data:`ROOM_MM`), sorted, and measures again (exact 3D
distances on the new face) only what those bounds cannot clear: under a rigid move nothing;
under a tracker's small non-rigid change, the few samples hugging a margin; beyond the room
kept, everything (seconds).

**Cuts.** A stroke sample whose contact (the pen's footprint radius, the roller drum's
half-width) now comes within an exclusion's margin (3D distance to the excluded skin on the
new face against margin + positioning error, the verifier's tolerance allowed), a puncture
within a margin, on a triangle with an unobserved vertex, or in a texel the verifier's
rebuilt keep-out would now cover: the path is split around bad samples (pieces of one
sample dropped), a pen stamp is dropped with all its needles, a roller puncture takes its
path segment with it (the drum cannot skip a needle), a piece with no puncture left is
dropped. Each cut is reported (:class:`Cut`). Moves around cuts are planned again
(:func:`coverage.plan.transit`, full clearance); a hop whose straight chart line now crosses a
keep-out is measured against the full clearance.

**Not checked** (``report.notes`` says when it matters): the roller drum's conformity (a
curvature property: unchanged by a rigid move, not bounded by delta) and the density per
cm^2 of the new skin (a stretched or compressed face changes areas: ``zone_area_change``).
``coverage.verify`` on the new plan checks everything.

The retargeted plan's ``zones`` is the new face's standard zone map, built on first use
(0.35 s; nothing in the hot path reads it); its ``protocol`` the original with point lesions'
centres carried onto the new face. Stroke ids are kept; second and later pieces of a split
stroke take new ids after the largest (``Cut.pieces``). Retarget the *original* plan each
time (a tracker: each frame), so cuts never accumulate and come back when the face does.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import shapely
from scipy import sparse
from scipy.spatial import cKDTree

from . import lifting, proximity, regions
from .errors import CoverageError
from .plan import Plan, Stroke, Transition, signed_clearance, transit, transit_clearance
from .zones import LazyZoneMap, canonical_exclusion_regions

MARGIN_TOLERANCE_MM = 0.05   # the verifier's: a contact or puncture may come this much inside its margin
TRANSIT_SLACK_MM = 0.5       # the verifier's: a transition point may come this much inside its clearance
ROOM_MM = 3.0                # precomputed room: checks this close to their limit are kept as candidates
RIGID_MM = 1e-9              # a face this close to a rigid image of the original moved rigidly
STAMP_TOLERANCE_MM = 1e-3    # a puncture lies on its stamp's needle circle to this (JSON keeps 1e-4 mm)
HOP_STEP_MM = 0.25           # chart step of the samples of a hop's straight chart line
FIT_STRIDE = 7               # the rigid fit reads every 7th vertex (about 4000 on the default face)
POSE_NOTE_DEG = 1.0          # a face pose this far from the rigid fit is noted
AREA_NOTE = 0.02             # a zone whose skin area changed this much is noted


# --- results -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Cut:
    """What retargeting took out of one stroke."""

    stroke: int                 # the stroke's id in the original plan
    reason: str                 # e.g. "exclusion eye_left (eye)", "unobserved skin", "keep-out texel lips"
    length_mm: float            # path removed (mm, on the new face)
    punctures_dropped: int
    stamps_dropped: int
    pieces: tuple               # ids of what is left of the stroke, in order (empty: removed)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RetargetReport:
    """How a plan was carried onto a new face."""

    cuts: list                      # [Cut], in stroke order
    punctures_dropped: int
    max_displacement_mm: float      # largest move of a face vertex (no stroke sample moved farther)
    rigid_pose: np.ndarray          # (4, 4) best rigid fit of the original face onto the new one
    rigid_deviation_mm: float       # largest distance of a new vertex from its rigid image (delta)
    candidates: int                 # samples, punctures and chart points measured again
    transitions_measured: int       # transitions the bound could not clear, measured on the new face
    transitions_replanned: list     # [(from id, to id)] planned again (failed, or around a cut)
    transitions_unverified: list    # [(from id, to id)] with transitions="bound": neither cleared nor measured
    time_ms: dict = field(default_factory=dict)   # per stage
    details: object = field(default=None, repr=False)   # () -> (zone area change, notes), computed when read
    _details: tuple | None = field(default=None, init=False, repr=False)

    def _read(self) -> tuple:
        if self._details is None:
            self._details = self.details() if self.details is not None else ({}, [], {})
        return self._details

    @property
    def zone_area_change(self) -> dict:
        """Zone -> new skin area / original (densities per cm^2 scale by its inverse)."""
        return self._read()[0]

    @property
    def over_cap(self) -> dict:
        """Windows the new skin areas push over their cap: ``{"texels", "area_cm2",
        "worst_ratio", "zone"}`` (empty where none is): a compressed face concentrates
        the same punctures on less skin. Measured on the plan's texel grid with each
        texel's skin area scaled by its triangle's area change (the windows' definition
        of :func:`coverage.density`)."""
        return self._read()[2]

    @property
    def notes(self) -> list:
        """What changed that the retargeter does not check (the pose, skin areas)."""
        return self._read()[1]

    @property
    def ok(self) -> bool:
        """Nothing cut, every transition cleared, and no window over its cap."""
        return not self.cuts and not self.transitions_unverified and not self.over_cap

    def text(self) -> str:
        rows = [(f"retargeted: largest move {self.max_displacement_mm:.2f} mm, non-rigid change "
                f"{self.rigid_deviation_mm:.3f} mm, {self.candidates} checks measured again, "
                f"{self.transitions_measured} transitions measured, {len(self.transitions_replanned)} planned again")]
        for c in self.cuts:
            rows.append(f"  stroke {c.stroke}: {c.reason}: {c.length_mm:.1f} mm cut, {c.punctures_dropped} punctures "
                        f"and {c.stamps_dropped} stamps dropped; left: {list(c.pieces) or 'nothing'}")
        if self.transitions_unverified:
            rows.append(f"  {len(self.transitions_unverified)} transitions not verified (transitions='bound')")
        if self.over_cap:
            o = self.over_cap
            rows.append(f"  over cap on the new skin: {o['texels']} texels ({o['area_cm2']:.2f} cm2), worst "
                        f"{o['worst_ratio']:.3f} x its cap in {o['zone']}: the face is compressed there; plan again")
        rows.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(rows)


class Retargeted(NamedTuple):
    plan: Plan
    report: RetargetReport


# --- geometry helpers ----------------------------------------------------------------------

class VertexNormals:
    """Angle-weighted unit vertex normals of one topology (trimesh's ``vertex_normals``, as
    :attr:`coverage.face.Face.normals` computes them), with the vertex-face incidence kept
    so each new set of vertices costs a few vector operations and one sparse product."""

    def __init__(self, faces: np.ndarray, n_vertices: int):
        faces = np.ascontiguousarray(faces, dtype=np.int64)
        self.corner = tuple(np.ascontiguousarray(faces[:, j]) for j in range(3))
        rows = faces.ravel()
        cols = np.repeat(np.arange(len(faces)), 3)
        matrix = sparse.csr_matrix((np.arange(1, len(rows) + 1, dtype=np.float64), (rows, cols)),
                                   shape=(n_vertices, len(faces)))
        matrix.sort_indices()
        self.order = matrix.data.astype(np.int64) - 1   # CSR slot -> corner (face * 3 + j)
        self.matrix = matrix

    def __call__(self, vertices: np.ndarray) -> np.ndarray | None:
        """``(n, 3)`` unit normals; None if a vertex has no valid face (the caller then uses
        :attr:`coverage.face.Face.normals`, which repairs such vertices)."""
        f0, f1, f2 = self.corner
        # one coordinate at a time: contiguous 1D arithmetic is the fast path in NumPy
        x, y, z = vertices[:, 0].copy(), vertices[:, 1].copy(), vertices[:, 2].copy()
        ax, ay, az = x[f0], y[f0], z[f0]
        ux, uy, uz = x[f1] - ax, y[f1] - ay, z[f1] - az
        vx, vy, vz = x[f2] - ax, y[f2] - ay, z[f2] - az
        wx, wy, wz = vx - ux, vy - uy, vz - uz
        cx, cy, cz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
        area2 = np.sqrt(cx * cx + cy * cy + cz * cz)
        lu = np.sqrt(ux * ux + uy * uy + uz * uz)
        lv = np.sqrt(vx * vx + vy * vy + vz * vz)
        lw = np.sqrt(wx * wx + wy * wy + wz * wz)
        with np.errstate(divide="ignore", invalid="ignore"):
            a0 = np.arccos(np.clip((ux * vx + uy * vy + uz * vz) / (lu * lv), -1.0, 1.0))
            a1 = np.arccos(np.clip(-(ux * wx + uy * wy + uz * wz) / (lu * lw), -1.0, 1.0))
            inv = 1.0 / area2
        angles = np.stack([a0, a1, np.pi - a0 - a1], axis=1)
        # trimesh zeroes a degenerate face's angles and skips faces without a normal
        angles[~(angles >= 1e-8).all(axis=1) | ~(area2 > 1e-12)] = 0.0
        unit = np.stack([cx * inv, cy * inv, cz * inv], axis=1)
        unit[~(area2 > 1e-12)] = 0.0
        self.matrix.data = angles.ravel()[self.order]
        summed = self.matrix @ unit
        norm = np.sqrt(np.einsum("ij,ij->i", summed, summed))
        if not (norm > 1e-12).all():
            return None
        return summed / norm[:, None]


def rigid_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rotation and translation ``(4, 4)`` that best carry ``source (n, 3)`` onto
    ``target (n, 3)`` in the least-squares sense (Kabsch, no reflection)."""
    cs = source.mean(axis=0)
    return _fit_centred(source - cs, cs, target)


def _fit_centred(source_centred: np.ndarray, cs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`rigid_fit` given the source's mean ``cs`` and the source less it (a retargeter
    keeps both: its source, the original face, never changes)."""
    ct = target.mean(axis=0)
    h = source_centred.T @ (target - ct)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = ct - rot @ cs
    return pose


def turn(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Points or directions ``(n, 3)`` turned by a rotation ``(3, 3)``."""
    return points @ rotation.T


def apply(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points ``(n, 3)`` carried by a rigid pose ``(4, 4)``."""
    return turn(points, pose[:3, :3]) + pose[:3, 3]


def skin_pieces(face, region) -> tuple[np.ndarray, np.ndarray]:
    """A chart region's own surface as face-relative triangles: ``parent (k,) int`` and the
    barycentrics of each piece's corners in its parent ``(k, 3, 3)``, so the pieces re-lift
    onto any face of the topology (:func:`coverage.regions.region_triangles_3d` on this face)."""
    if region.is_empty:
        return np.empty(0, np.int64), np.empty((0, 3, 3))
    inside, partial, pieces = regions._split_triangles(face, region)
    whole = np.broadcast_to(np.eye(3), (len(inside), 3, 3))
    polys, source = regions._polygon_parts(pieces)
    tris, piece = regions._polygon_parts(shapely.constrained_delaunay_triangles(polys))
    if len(tris) == 0:
        return inside.astype(np.int64), np.array(whole)
    coords = shapely.get_coordinates(shapely.get_exterior_ring(tris)).reshape(len(tris), 4, 2)[:, :3]
    parent = partial[source[piece]]
    corners = face.uv[face.faces[parent]]
    edges = np.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], axis=2)
    local = np.einsum("kij,kpj->kpi", np.linalg.inv(edges), coords - corners[:, None, 0])
    bary = np.concatenate([1.0 - local.sum(axis=2, keepdims=True), local], axis=2)
    return np.concatenate([inside, parent]).astype(np.int64), np.concatenate([whole, bary])


def _gather(vertices: np.ndarray, faces: np.ndarray, tri: np.ndarray, bary: np.ndarray,
            normalize: bool = False) -> np.ndarray:
    return lifting.interpolate(vertices, faces, tri, bary, normalize)


def _skin_triangles(vertices: np.ndarray, faces: np.ndarray, parent: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """``(k, 3, 3)`` corners of face-relative skin pieces on a face."""
    return np.einsum("kpj,kjd->kpd", bary, vertices[faces[parent]])


def _distances(tris: np.ndarray, query: np.ndarray, max_dist: float) -> np.ndarray:
    """Exact 3D distance (mm) from points to a triangle soup; inf beyond ``max_dist``."""
    out = np.full(len(query), np.inf)
    if len(tris) == 0 or len(query) == 0:
        return out
    vertices = np.ascontiguousarray(tris.reshape(-1, 3))
    grid = proximity.build_grid(vertices, np.arange(len(vertices), dtype=np.int64).reshape(-1, 3))
    tri, _, dist = proximity.closest_points(grid, np.ascontiguousarray(query), max_dist=max_dist)
    out[tri >= 0] = dist[tri >= 0]
    return out


def path_tangents(points: np.ndarray, normals: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Unit travel tangents of paths packed end to end (path i: ``starts[i]:starts[i + 1]``):
    ``np.gradient`` of each path, made normal to its normals (as the planner computes them)."""
    n = len(points)
    tangent = np.empty_like(points)
    if n < 2:
        tangent[:] = 0.0
        return tangent
    tangent[1:-1] = (points[2:] - points[:-2]) * 0.5
    first = starts[:-1][np.diff(starts) > 1]
    last = starts[1:][np.diff(starts) > 1] - 1
    tangent[first] = points[first + 1] - points[first]
    tangent[last] = points[last] - points[last - 1]
    single = starts[:-1][np.diff(starts) == 1]
    tangent[single] = 0.0
    tangent -= np.einsum("ij,ij->i", tangent, normals)[:, None] * normals
    tangent /= np.maximum(np.sqrt(np.einsum("ij,ij->i", tangent, tangent)), 1e-12)[:, None]
    return tangent


def stretched_times(times: np.ndarray, old_points: np.ndarray, new_points: np.ndarray) -> np.ndarray:
    """Times ``(n,)`` of a path whose points moved from ``old_points`` to ``new_points``
    (each ``(n, 3)``), from the same start: a segment the move lengthened takes longer in
    proportion, one it shortened keeps its time, so nothing goes faster than planned (the
    glide, roll or travel speed, the pen's stamp rate) on a stretched face."""
    if len(times) < 2:
        return np.array(times, dtype=np.float64)
    old = np.sqrt(np.einsum("ij,ij->i", *(np.diff(old_points, axis=0),) * 2))
    new = np.sqrt(np.einsum("ij,ij->i", *(np.diff(new_points, axis=0),) * 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(old > 1e-12, new / old, 1.0)
    dt = np.diff(times) * np.maximum(ratio, 1.0)
    return times[0] + np.concatenate([[0.0], np.cumsum(dt)])


def moved_events(events: np.ndarray, times: np.ndarray, new_times: np.ndarray) -> np.ndarray:
    """Event times (stamps) on a path re-timed from ``times`` to ``new_times``: each keeps its
    place within its segment."""
    if not len(events):
        return np.array(events, dtype=np.float64)
    seg = np.clip(np.searchsorted(times, events, side="right") - 1, 0, max(len(times) - 2, 0))
    dt = np.diff(times)[seg] if len(times) > 1 else np.ones(len(events))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(dt > 0, (events - times[seg]) / dt, 0.0)
    new_dt = np.diff(new_times)[seg] if len(times) > 1 else np.zeros(len(events))
    return new_times[seg] + f * new_dt


def _arc(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


# --- punctures and their stamps ----------------------------------------------------------

def stamp_frames(face, stamp_uv: np.ndarray) -> np.ndarray:
    """Per stamp ``(m, 2, 2)``: the map from a chart offset at the stamp's centre to the
    needle's offset in the cartridge's skin frame (the inverse of the one
    :func:`coverage.simulate.stamp` applies)."""
    lifted = face.lift(stamp_uv)
    tri = np.maximum(lifted.tri, 0)
    jac = face.jacobian[tri]
    n = lifted.normals
    ju = jac[:, :, 0]
    e1 = ju - np.einsum("ij,ij->i", ju, n)[:, None] * n
    e1 /= np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-12)
    e2 = np.cross(n, e1)
    m = np.linalg.pinv(jac) @ np.stack([e1, e2], axis=2)
    with np.errstate(invalid="ignore"):
        return np.linalg.inv(m)


def puncture_stamps(plan: Plan, only=None) -> np.ndarray:
    """Index of each puncture's stamp within its pen stroke ``(K,) int`` (-1 for a roller's).

    A stamp fires needle j at skin radius ``R sqrt((j + 0.5) / N)`` from its centre
    (:func:`coverage.simulate.needle_layout`), so a puncture is matched to the stamp of its
    stroke whose centre it lies at one of those radii from (to ``STAMP_TOLERANCE_MM``);
    punctures are in firing order, so the match never goes back. A puncture no stamp
    matches (a plan edited by hand) takes the nearest centre, keeping the order.
    ``only``: stroke ids to match (default: every pen stroke); the others read -1.
    """
    out = np.full(len(plan.puncture_stroke), -1, dtype=np.int64)
    index = {s.id: i for i, s in enumerate(plan.strokes)}
    owner = np.array([index.get(int(k), -1) for k in plan.puncture_stroke], dtype=np.int64) \
        if len(plan.puncture_stroke) else np.empty(0, np.int64)
    pens = [i for i, s in enumerate(plan.strokes) if s.device == "pen" and s.stamp_uv is not None and len(s.stamp_uv)
            and (only is None or s.id in only)]
    if not pens:
        return out
    stamp_uv = np.concatenate([plan.strokes[i].stamp_uv for i in pens])
    frames = stamp_frames(plan.face, stamp_uv)
    first = np.concatenate([[0], np.cumsum([len(plan.strokes[i].stamp_uv) for i in pens])])
    needle_mm = plan.protocol.pen.needle_diameter_mm
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(plan.strokes) + 1))
    for k, i in enumerate(pens):
        s = plan.strokes[i]
        rows = order[bounds[i]:bounds[i + 1]]
        if not len(rows):
            continue
        needles = int(s.cartridge["needles"])
        radius = (float(s.cartridge["footprint_diameter_mm"]) - needle_mm) / 2.0
        rho = radius * np.sqrt((np.arange(needles) + 0.5) / needles)
        centres = s.stamp_uv
        offset = np.einsum("mab,kmb->kma", frames[first[k]:first[k + 1]],
                           plan.puncture_uv[rows][:, None, :] - centres[None])
        r = np.linalg.norm(offset, axis=2)
        err = np.abs(r[:, :, None] - rho).min(axis=2)
        err = np.where(np.isfinite(err), err, np.inf)
        best = np.argmin(err, axis=1)
        ok = err[np.arange(len(rows)), best] <= STAMP_TOLERANCE_MM
        if not ok.all():
            near = np.argmin(np.linalg.norm(plan.puncture_uv[rows][:, None, :] - centres[None], axis=2), axis=1)
            best = np.where(ok, best, near)
        out[rows] = np.maximum.accumulate(best)
    return out


def stamp_segments(stroke: Stroke) -> np.ndarray:
    """Path segment ``(m,) int`` (samples i, i + 1) on which each pen stamp fires."""
    if stroke.stamp_times_s is None or not len(stroke.stamp_times_s):
        return np.empty(0, np.int64)
    seg = np.searchsorted(stroke.times_s, stroke.stamp_times_s, side="right") - 1
    return np.clip(seg, 0, max(len(stroke.times_s) - 2, 0))


def roller_projection(points: np.ndarray, punctures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where along a path ``(n, 3)`` the drum made each puncture ``(k, 3)`` (the needle strikes
    under the axle): the nearest path segment ``(k,) int`` and the arc length there ``(k,)``
    (mm), by projecting the puncture on the segments beside its nearest sample."""
    s = _arc(points)
    if len(points) < 2 or not len(punctures):
        return np.zeros(len(punctures), dtype=np.int64), np.zeros(len(punctures))
    a, ab = points[:-1], np.diff(points, axis=0)
    length2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-18)
    _, nearest = cKDTree(points).query(punctures)
    best = np.zeros(len(punctures), dtype=np.int64)
    arc = np.zeros(len(punctures))
    best_d = np.full(len(punctures), np.inf)
    for shift in (-1, 0):
        seg = np.clip(nearest + shift, 0, len(ab) - 1)
        t = np.clip(np.einsum("ij,ij->i", punctures - a[seg], ab[seg]) / length2[seg], 0.0, 1.0)
        d = np.linalg.norm(a[seg] + t[:, None] * ab[seg] - punctures, axis=1)
        better = d < best_d
        best[better], best_d[better] = seg[better], d[better]
        arc[better] = s[seg[better]] + t[better] * (s[seg[better] + 1] - s[seg[better]])
    return best, arc


def puncture_segments(plan: Plan, stamps: np.ndarray | None = None) -> np.ndarray:
    """Path segment of its stroke ``(K,) int`` under which each puncture was made (pen: its
    stamp's; roller: the nearest)."""
    stamps = puncture_stamps(plan) if stamps is None else stamps
    out = np.zeros(len(plan.puncture_stroke), dtype=np.int64)
    index = {s.id: i for i, s in enumerate(plan.strokes)}
    owner = np.array([index.get(int(k), -1) for k in plan.puncture_stroke], dtype=np.int64)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(plan.strokes) + 1))
    for i, s in enumerate(plan.strokes):
        rows = order[bounds[i]:bounds[i + 1]]
        if not len(rows):
            continue
        if s.device == "pen" and s.stamp_times_s is not None:
            out[rows] = stamp_segments(s)[np.maximum(stamps[rows], 0)]
        else:
            out[rows] = roller_projection(s.points, plan.puncture_points[rows])[0]
    return out


# --- exclusion parts -----------------------------------------------------------------------

@dataclass(eq=False)
class _Part:
    """One exclusion part as the verifier rebuilds it on a face: its skin, margin, and the
    room every check had on the original face."""

    name: str
    part: str
    margin: float
    region: object               # chart region (canonical parts, lesions, unchanged unobserved skin)
    parent: np.ndarray           # (k,) skin pieces near anything checked (face-relative)
    bary: np.ndarray             # (k, 3, 3)
    point_ids: np.ndarray        # probes (samples then punctures) within ROOM_MM of their limit
    point_room: np.ndarray       # their room on the original face (mm)
    field_ids: np.ndarray        # chart probes (texel centres, hop lines) within ROOM_MM of the keep-out
    field_room: np.ndarray
    band: np.ndarray             # triangles that can hold the keep-out's contour (longest edge)
    all_parent: np.ndarray | None = None   # every skin piece (when the room kept is not enough)
    all_bary: np.ndarray | None = None
    vdist: np.ndarray | None = None        # (v,) vertex distances to the skin on the original face (inf: far)
    reach: float = math.inf                # the keep-out's reach on the original face
    skin_vertices: np.ndarray = field(init=False)   # vertices all the pieces move with
    band_faces: np.ndarray = field(init=False)      # (b, 3) the band's triangles
    tree: object = field(init=False)                # KD-tree of the kept pieces' centroids (original face)
    radius: float = field(init=False)               # their largest circumradius

    def __post_init__(self):
        if self.all_parent is None:
            self.all_parent, self.all_bary = self.parent, self.bary
        # by room, so the probes a bound cannot clear are a prefix
        order = np.argsort(self.point_room, kind="stable")
        self.point_ids, self.point_room = self.point_ids[order], self.point_room[order]
        order = np.argsort(self.field_room, kind="stable")
        self.field_ids, self.field_room = self.field_ids[order], self.field_room[order]

    def with_faces(self, face) -> _Part:
        faces = np.asarray(face.faces, dtype=np.int64)
        self.skin_vertices = np.unique(faces[self.all_parent]) if len(self.all_parent) else np.empty(0, np.int64)
        self.band_faces = faces[self.band]
        tris = _skin_triangles(face.vertices, faces, self.parent, self.bary)
        centroid = tris.mean(axis=1) if len(tris) else np.zeros((1, 3))
        self.tree = cKDTree(centroid)
        self.radius = float(np.linalg.norm(tris - centroid[:, None], axis=2).max()) if len(tris) else 0.0
        return self

    @property
    def label(self) -> str:
        return self.name if self.part == self.name or self.name.startswith(f"{self.part}:") else \
            f"{self.name} ({self.part})"


def _keepout_reach(margin: float, longest_mm: float) -> float:
    return margin + regions.interpolation_slack_mm(longest_mm, margin) + 1.0


# --- the retargeter ----------------------------------------------------------------------

class Retargeter:
    """Everything a plan needs to be carried onto new faces fast, computed once.

    ``Retargeter(plan).retarget(face)`` returns the plan on ``face`` and a report;
    :meth:`poses` only the stroke paths and stamps (what a tracker drives the tool with).
    Building it measures, on the plan's own face, how much room each sample, puncture,
    keep-out texel and transition had.

    Probes, in one numbering: the stroke samples (stroke after stroke), then the punctures
    (the plan's order). Chart probes: each puncture's texel centre, then samples along
    the straight chart line of every hop (a transition at the hop clearance).
    """

    def __init__(self, plan: Plan):
        start = time.perf_counter()
        face = plan.face
        self.plan = plan
        self.face0 = face
        self.faces = np.ascontiguousarray(face.faces, dtype=np.int64)
        self.n_vertices = len(face.vertices)
        self.normals_of = VertexNormals(self.faces, self.n_vertices)
        fit_source = face.vertices[::FIT_STRIDE]
        self.fit_mean = fit_source.mean(axis=0)
        self.fit_centred = fit_source - self.fit_mean
        strokes = plan.strokes
        self.index = {s.id: i for i, s in enumerate(strokes)}
        if len(self.index) != len(strokes):
            raise CoverageError("the plan has two strokes with one id; give every stroke its own id")
        counts = [len(s.tri) for s in strokes]
        self.s_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.s_tri = _cat([s.tri for s in strokes], (0,), np.int64)
        self.s_bary = _cat([s.bary for s in strokes], (0, 3))
        self.s_owner = np.repeat(np.arange(len(strokes)), counts)
        self.s_bounds = self.s_start.tolist()
        self.s_normals0 = _cat([s.normals for s in strokes], (0, 3))
        self.s_tangents0 = _cat([s.tangents for s in strokes], (0, 3))
        # each stroke's fields, its path's left empty (every retarget sets them): copying a
        # template then touches no array of the original path
        self.templates = [dict(s.__dict__, points=None, normals=None, tangents=None,
                               **({"stamp_points": None} if s.stamp_uv is not None else {})) for s in strokes]
        self.s_slices = [slice(a, b) for a, b in zip(self.s_bounds[:-1], self.s_bounds[1:])]
        self.n_samples = len(self.s_tri)
        stamps = [s.stamp_uv if s.stamp_uv is not None else np.empty((0, 2)) for s in strokes]
        self.t_start = np.concatenate([[0], np.cumsum([len(u) for u in stamps])]).astype(np.int64)
        if self.t_start[-1]:
            lifted = face.lift(np.concatenate(stamps))
            self.t_tri, self.t_bary = lifted.tri.astype(np.int64), lifted.bary
        else:
            self.t_tri, self.t_bary = np.empty(0, np.int64), np.empty((0, 3))
        self.t_segment = _cat([stamp_segments(s) for s in strokes], (0,), np.int64)
        self.t_bounds = self.t_start.tolist()
        # a pen stroke's stamps; None for a stroke without (the template says: stamp_uv None)
        self.t_slices = [slice(a, b) if s.stamp_uv is not None else None
                         for s, a, b in zip(strokes, self.t_bounds[:-1], self.t_bounds[1:])]
        if plan.puncture_tri is not None and plan.puncture_bary is not None:
            self.p_tri = np.asarray(plan.puncture_tri, dtype=np.int64)
            self.p_bary = np.asarray(plan.puncture_bary, dtype=np.float64)
        else:
            lifted = face.lift(plan.puncture_uv)
            self.p_tri, self.p_bary = lifted.tri.astype(np.int64), lifted.bary
        if (self.p_tri < 0).any() or (self.s_tri < 0).any() or (self.t_tri < 0).any():
            raise CoverageError("the plan has a sample, stamp or puncture off its face's chart; plan it again")
        self.p_owner = np.array([self.index.get(int(k), -1) for k in plan.puncture_stroke], dtype=np.int64)
        if (self.p_owner < 0).any():
            raise CoverageError(f"puncture {int(np.argmax(self.p_owner < 0))} belongs to no stroke of the plan; "
                                "plan it again")
        self.p_order = np.argsort(self.p_owner, kind="stable")
        self.p_bounds = np.searchsorted(self.p_owner[self.p_order], np.arange(len(strokes) + 1))
        self.p_stamp = puncture_stamps(plan)
        self.p_segment = puncture_segments(plan, self.p_stamp)
        self.reach = np.array([self._reach(s) for s in strokes])
        self.old_points = np.concatenate([_cat([s.points for s in strokes], (0, 3)), plan.puncture_points])
        # transitions: the original points and each point's share of the way
        self.x_start = np.concatenate([[0], np.cumsum([len(t.points) for t in plan.transitions])]).astype(np.int64)
        self.x_points = _cat([t.points for t in plan.transitions], (0, 3))
        self.x_weight = _cat([_share(t.points) for t in plan.transitions], (0,))
        self.x_key = {(t.from_stroke, t.to_stroke): k for k, t in enumerate(plan.transitions)}
        self.x_owner = np.repeat(np.arange(len(plan.transitions)), np.diff(self.x_start))
        self.x_bounds = self.x_start.tolist()
        self.x_slices = [slice(a, b) for a, b in zip(self.x_bounds[:-1], self.x_bounds[1:])]
        self.x_static = [(t.from_stroke, t.to_stroke, t.times_s) for t in plan.transitions]
        # a plan as planned: one transition between each two consecutive strokes, in order
        self.x_consecutive = len(plan.transitions) == max(len(strokes) - 1, 0) and all(
            (t.from_stroke, t.to_stroke) == (strokes[k].id, strokes[k + 1].id) for k, t in enumerate(plan.transitions))
        self._timeline(plan)
        self.x_room, self.x_hop = self._transition_room(plan)
        self.x_near, self.x_near_start = self._transition_neighbourhoods(plan)
        self._chart_probes(plan)
        self.parts = [self._part(face, *spec) for spec in self._part_specs(plan)]
        self.unobserved0 = np.array(face.unobserved, dtype=bool)
        self.lesions = self._lesion_anchors(plan)
        self.tri_zone = np.asarray(plan.zones.triangle_labels, dtype=np.int64)
        ok = self.tri_zone >= 0
        area = np.bincount(self.tri_zone[ok], weights=face.triangle_area_mm2[ok], minlength=len(plan.zones.names))
        self.zone_area0 = dict(zip(plan.zones.names, area.tolist()))
        self.build_s = time.perf_counter() - start

    # --- precomputation ---------------------------------------------------------------------

    def _reach(self, stroke: Stroke) -> float:
        """How far a stroke's contact reaches beyond its path: the pen's footprint radius, the
        roller drum's half-width."""
        if stroke.device == "pen":
            cart = stroke.cartridge or {}
            return float(cart.get("footprint_diameter_mm", self.plan.protocol.pen.footprint_diameter_mm)) / 2.0
        return float(self.plan.protocol.roller.drum_width_mm) / 2.0

    def _transition_room(self, plan: Plan):
        """Per transition: how far (mm) its points may come nearer the face before the
        verifier's clearance rule fails (its ends excluded: they sit on the skin), and
        whether it is a hop (the lower clearance of a move crossing no keep-out)."""
        n = len(plan.transitions)
        room = np.full(n, np.inf)
        hop = np.zeros(n, dtype=bool)
        if not n:
            return room, hop
        session = plan.protocol.session
        signed = signed_clearance(plan.face, self.x_points, reach=session.clearance_mm + ROOM_MM + 1.0)
        for k, t in enumerate(plan.transitions):
            a, b = self.index.get(t.from_stroke), self.index.get(t.to_stroke)
            if a is None or b is None:
                room[k] = -np.inf
                continue
            lift = transit_clearance(plan.zones, plan.strokes[a].uv[-1], plan.strokes[b].uv[0])
            hop[k] = lift < session.clearance_mm
            mine = signed[self.x_start[k]:self.x_start[k + 1]] - _transit_need(t.points, lift)
            room[k] = float(mine[1:-1].min()) if len(mine) > 2 else np.inf
        return room, hop

    def _timeline(self, plan: Plan):
        """Each segment's original duration and length, for re-timing a stretched face at
        once (joins between strokes and moves carry none), and each stamp's place on its
        segment."""
        if not self.x_consecutive or not self.n_samples:
            self.x_consecutive = False
            return

        def segments(paths, start):
            points = _cat([p[0] for p in paths], (0, 3))
            times = _cat([p[1] for p in paths], (0,))
            dt = np.diff(times)
            length = np.linalg.norm(np.diff(points, axis=0), axis=1)
            joins = start[1:-1] - 1
            dt[joins], length[joins] = 0.0, 0.0
            return dt, length

        self.dt_s0, self.length_s0 = segments([(s.points, s.times_s) for s in plan.strokes], self.s_start)
        self.dt_x0, self.length_x0 = segments([(t.points, t.times_s) for t in plan.transitions], self.x_start)
        self.t_begin = float(plan.strokes[0].times_s[0])
        sample, fraction = [], []
        for i, s in enumerate(plan.strokes):
            if s.stamp_times_s is None or not len(s.stamp_times_s):
                continue
            seg = stamp_segments(s)
            dt = np.diff(s.times_s)[seg] if len(s.times_s) > 1 else np.zeros(len(seg))
            sample.append(self.s_start[i] + seg)
            fraction.append(np.where(dt > 0, (s.stamp_times_s - s.times_s[seg]) / np.where(dt > 0, dt, 1.0), 0.0))
        self.t_sample = _cat(sample, (0,), np.int64)
        self.t_fraction = _cat(fraction, (0,))

    def _transition_neighbourhoods(self, plan: Plan):
        """Per transition, the face vertices that could become nearest to one of its points
        (within its clearance + the room + one edge), packed (transition k:
        ``near[start[k]:start[k + 1]]``)."""
        session = plan.protocol.session
        tree = cKDTree(self.face0.vertices)
        lists = []
        for k, t in enumerate(plan.transitions):
            lift = session.clearance_mm if not self.x_hop[k] else min(session.hop_clearance_mm, session.clearance_mm)
            found = tree.query_ball_point(t.points[1:-1], lift + ROOM_MM + self.face0.longest_edge_mm) \
                if len(t.points) > 2 else []
            lists.append(np.unique(np.concatenate([np.asarray(f, dtype=np.int64) for f in found]))
                         if len(found) else np.empty(0, np.int64))
        start = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
        return _cat(lists, (0,), np.int64), start

    def _chart_probes(self, plan: Plan):
        from .density import DEFAULT_TEXEL_MM

        face = self.face0
        cell = DEFAULT_TEXEL_MM
        origin = face.uv.min(axis=0) - cell     # the texel grid's origin (density.texel_grid)
        centres = origin + (np.floor((plan.puncture_uv - origin) / cell) + 0.5) * cell
        lines, owner = [], []
        for k, t in enumerate(plan.transitions):
            if self.x_hop[k]:
                line = _chart_line(plan.strokes[self.index[t.from_stroke]].uv[-1],
                                   plan.strokes[self.index[t.to_stroke]].uv[0])
                lines.append(line)
                owner.append(np.full(len(line), k))
        self.f_uv = np.concatenate([centres] + lines)
        self.f_tri, self.f_bary = face.locate(self.f_uv)
        self.n_texels = len(centres)
        self.f_hop = _cat(owner, (0,), np.int64)

    def _part_specs(self, plan: Plan) -> list:
        """``(name, part, margin, chart region)`` of every exclusion part the verifier checks."""
        standard = canonical_exclusion_regions(self.face0.subdivisions)
        specs = []
        for name, exc in plan.zones.exclusions.items():
            by_part = dict(standard.get(name, ()))
            for part, margin in exc.margins_mm:
                specs.append((name, part, float(margin), by_part.get(part, exc.region)))
        return specs

    def _limits(self, margin: float, ids: np.ndarray | None = None) -> np.ndarray:
        """The nearest each probe may come to the part's skin (mm): margin + reach (paths)
        or margin (punctures), less the verifier's tolerance."""
        ids = np.arange(len(self.old_points)) if ids is None else ids
        sample = ids < self.n_samples
        reach = np.where(sample, self.reach[self.s_owner[np.where(sample, ids, 0)]] if self.n_samples else 0.0, 0.0)
        return margin + reach - MARGIN_TOLERANCE_MM

    def _part(self, face, name, part, margin, region, room_mm: float = ROOM_MM) -> _Part:
        """An exclusion part measured on the original face: the probes within ``room_mm`` of
        their limits and the chart probes within ``room_mm`` of its keep-out."""
        parent, bary = skin_pieces(face, region)
        tris = _skin_triangles(face.vertices, self.faces, parent, bary)
        limit = self._limits(margin)
        top = float(limit.max()) if len(limit) else margin
        dist = _distances(tris, self.old_points, top + room_mm)
        room = dist - limit
        near = np.nonzero(room < room_mm)[0]
        reach = _keepout_reach(margin, face.longest_edge_mm)
        vdist = _distances(tris, face.vertices, reach + room_mm + 1.0)
        band = np.nonzero((vdist[self.faces] < reach + room_mm).any(axis=1))[0]
        level = _level(face.triangle_longest_edge_mm, self.faces, vdist, reach, margin)
        # the keep-out covers a probe only if its field (clamped at the reach) is under the
        # level, which needs a corner nearer than the level: either bound clears it
        corner = vdist[self.faces[np.maximum(self.f_tri, 0)]].min(axis=1)
        froom = np.maximum(self._field(vdist, reach), corner) - level
        froom[_contains(region, self.f_uv)] = -np.inf     # a chart probe in the region itself
        froom[self.f_tri < 0] = np.inf                   # off the chart: never read
        fnear = np.nonzero(froom < room_mm)[0]
        # only the skin pieces something measured could come near are kept
        probe = np.concatenate([self.old_points[near],
                                face.vertices[np.unique(self.faces[self.f_tri[fnear]])],
                                face.vertices[np.unique(self.faces[band])]])
        keep = np.zeros(len(tris), dtype=bool)
        if len(probe) and len(tris):
            centroid = tris.mean(axis=1)
            radius = np.linalg.norm(tris - centroid[:, None], axis=2).max(axis=1)
            bound = max(top, reach) + 2.0 * room_mm + float(radius.max())
            d, _ = cKDTree(probe).query(centroid, distance_upper_bound=bound)
            keep = d - radius <= bound
        return _Part(name, part, margin, region, parent[keep], bary[keep], near, room[near], fnear, froom[fnear],
                     band, parent, bary, vdist, reach).with_faces(face)

    def _field(self, vdist: np.ndarray, reach: float, ids: np.ndarray | None = None) -> np.ndarray:
        """The keep-out's field at chart probes: the vertex distances (clamped at its reach)
        interpolated linearly, as :func:`coverage.regions.keepout` cuts its sub-level set."""
        tri = np.maximum(self.f_tri if ids is None else self.f_tri[ids], 0)
        bary = self.f_bary if ids is None else self.f_bary[ids]
        return np.einsum("kj,kj->k", bary, np.minimum(vdist, reach)[self.faces[tri]])

    def _lesion_anchors(self, plan: Plan) -> list:
        """Point lesions' centres on the original face (triangle, barycentrics), to carry them."""
        out = []
        for lesion in plan.protocol.lesions:
            if lesion.center_mm is None:
                out.append(None)
                continue
            tri, bary, _ = proximity.closest_points(self.face0.surface_grid, np.asarray([lesion.center_mm], float))
            out.append((int(tri[0]), bary[0]) if tri[0] >= 0 else None)
        return out

    # --- the hot path -----------------------------------------------------------------------

    def _check_face(self, face):
        if not hasattr(face, "vertices") or not hasattr(face, "subdivisions"):
            raise CoverageError(f"retarget needs a coverage.Face, not {type(face).__name__}")
        if len(face.vertices) != self.n_vertices or face.subdivisions != self.face0.subdivisions:
            raise CoverageError(
                f"the new face has {len(face.vertices)} vertices (subdivisions {face.subdivisions}), the plan was made "
                f"on one of {self.n_vertices} (subdivisions {self.face0.subdivisions}); load the new face at the plan's "
                "resolution (the same edge_mm)")

    def _normals(self, face) -> np.ndarray:
        cached = face.__dict__.get("normals")
        if cached is not None:
            return cached
        normals = self.normals_of(np.ascontiguousarray(face.vertices))
        return face.normals if normals is None else normals

    def _fit(self, vertices: np.ndarray) -> np.ndarray:
        """:func:`rigid_fit` of the original face's every 7th vertex onto the new face's."""
        return _fit_centred(self.fit_centred, self.fit_mean, vertices[::FIT_STRIDE])

    def _gap(self, pose: np.ndarray, vertices: np.ndarray) -> np.ndarray:
        """``vertices - apply(pose, original vertices)`` ``(n, 3)``, in one buffer."""
        gap = turn(self.face0.vertices, pose[:3, :3])
        gap += pose[:3, 3]
        return np.subtract(vertices, gap, out=gap)

    def poses(self, face) -> dict:
        """The stroke paths and stamps on ``face``, packed, with no checks and no cuts:
        ``points``, ``normals``, ``tangents`` ``(n, 3)`` (stroke i: ``start[i]:start[i + 1]``)
        and ``stamp_points`` ``(m, 3)`` (``stamp_start``). What a tracker drives the tool
        with; :meth:`retarget` says whether they are still safe."""
        self._check_face(face)
        vertices = np.ascontiguousarray(face.vertices)
        points = _gather(vertices, self.faces, self.s_tri, self.s_bary)
        pose = self._fit(vertices)
        gap = self._gap(pose, vertices)
        if float(np.einsum("ij,ij->i", gap, gap).max()) <= RIGID_MM ** 2:
            nrm, tangents = turn(self.s_normals0, pose[:3, :3]), turn(self.s_tangents0, pose[:3, :3])
        else:
            nrm = _gather(self._normals(face), self.faces, self.s_tri, self.s_bary, True)
            tangents = path_tangents(points, nrm, self.s_start)
        return {"points": points, "normals": nrm, "tangents": tangents, "start": self.s_start,
                "stamp_points": _gather(vertices, self.faces, self.t_tri, self.t_bary), "stamp_start": self.t_start}

    def retarget(self, face, transitions: str = "auto") -> Retargeted:
        """The plan on ``face`` (the same person at the plan's resolution, moved or deformed)
        and a report of what was cut.

        transitions : ``"auto"`` measures the transitions the bound cannot clear on the new
            face and plans again those that fail; ``"bound"`` only lists them
            (``report.transitions_unverified``).
        """
        if transitions not in ("auto", "bound"):
            raise CoverageError(f"transitions = {transitions!r} is not known; use 'auto' or 'bound'")
        self._check_face(face)
        clock = _Clock()
        vertices = np.ascontiguousarray(face.vertices)
        # any rigid pose keeps the bounds sound; one fitted to every 7th vertex is as good
        pose = self._fit(vertices)
        gap = self._gap(pose, vertices)
        deviation = np.sqrt(np.einsum("ij,ij->i", gap, gap))
        delta = float(deviation.max())
        clock.lap("rigid fit")
        s_points = _gather(vertices, self.faces, self.s_tri, self.s_bary)
        if delta <= RIGID_MM:
            # a rigid move turns the normals and tangents with it: no face normals to compute
            clock.lap("normals")
            s_normals, s_tangents = turn(self.s_normals0, pose[:3, :3]), turn(self.s_tangents0, pose[:3, :3])
        else:
            normals = self._normals(face)
            clock.lap("normals")
            s_normals = _gather(normals, self.faces, self.s_tri, self.s_bary, True)
            s_tangents = path_tangents(s_points, s_normals, self.s_start)
        t_points = _gather(vertices, self.faces, self.t_tri, self.t_bary)
        p_points = _gather(vertices, self.faces, self.p_tri, self.p_bary)
        clock.lap("gather")
        check = _Checks(self, face, vertices, deviation, s_points, p_points)
        clock.lap("checks")
        build = _Builder(self, face, pose, deviation, s_points, s_normals, s_tangents, t_points, p_points)
        build.cut(check.bad[:self.n_samples], check.bad[self.n_samples:], check.reasons)
        clock.lap("cuts")
        build.link(transitions, check.hops_crossing)
        clock.lap("transitions")
        new_plan = build.plan(self._protocol(vertices))
        clock.lap("plan")
        # a sample moves no farther than the farthest corner of its triangle (the squares
        # summed column by column: the order of np.sum(axis=1) over three, a pass per column)
        step = vertices - self.face0.vertices
        np.multiply(step, step, out=step)
        moved = float(np.sqrt(np.max(step[:, 0] + step[:, 1] + step[:, 2])))
        def details():
            if delta <= RIGID_MM:   # areas, and so every window's density, are unchanged
                return dict.fromkeys(self.zone_area0, 1.0), self._notes(face, pose, {}), {}
            area = self._zone_area_change(vertices)
            return area, self._notes(face, pose, area), self._over_cap(vertices, new_plan)

        report = RetargetReport(build.cuts, build.punctures_dropped, float(moved), pose, delta, check.measured,
                                build.measured, build.replanned, build.unverified, clock.laps, details)
        return Retargeted(new_plan, report)

    def _notes(self, face, pose: np.ndarray, area: dict) -> list:
        notes = []
        expected = pose @ self.face0.pose
        turn = _angle_deg(np.asarray(face.pose)[:3, :3], expected[:3, :3])
        if turn > POSE_NOTE_DEG:
            notes.append(f"the new face's pose differs from the rigid fit of the original by {turn:.1f} deg; roller "
                         "directions are read in the face's frame (face.pose): give the face its pose")
        changed = {n: r for n, r in area.items() if abs(r - 1.0) > AREA_NOTE}
        if changed:
            name, ratio = max(changed.items(), key=lambda kv: abs(kv[1] - 1.0))
            notes.append(f"skin area changed by up to {100 * (ratio - 1):+.1f}% ({name}): densities per cm2 change by "
                         "the inverse and the drum's fit with the curvature; the cap and the roller were not checked "
                         "again: run coverage.verify on the new plan")
        return notes

    def _over_cap(self, vertices: np.ndarray, new_plan: Plan) -> dict:
        """The windows over their cap once each texel's skin area follows its triangle's
        area change (see :attr:`RetargetReport.over_cap`)."""
        from .density import splat, window_sums

        grid = self.plan.density.grid
        ratio = _triangle_areas(vertices, self.faces) / np.maximum(self.face0.triangle_area_mm2, 1e-12)
        texel_ratio = np.where(grid.tri >= 0, ratio[np.maximum(grid.tri, 0)], 1.0)
        treat = grid.treatable
        old_area = np.where(treat, grid.area_mm2, 0.0)
        old = window_sums(old_area, grid.half_u, grid.half_v, treat)
        new = window_sums(old_area * texel_ratio, grid.half_u, grid.half_v, treat)
        with np.errstate(divide="ignore", invalid="ignore"):
            window_area = grid.window_area_mm2 * np.where(old > 0, new / old, 1.0)
            counts, _ = splat(np.ascontiguousarray(new_plan.puncture_uv), grid.origin, grid.cell_mm, grid.shape)
            dens = 100.0 * window_sums(counts, grid.half_u, grid.half_v, treat) / window_area
        names = self.plan.zones.names
        caps = np.array([self.plan.zones.dose(n).cap_per_cm2 for n in names])
        cap = np.where(treat, caps[np.maximum(grid.label, 0)], np.inf)
        over = treat & (dens > cap * (1 + 1e-9))
        if not over.any():
            return {}
        worst = np.unravel_index(np.argmax(np.where(over, dens / cap, 0.0)), over.shape)
        return {"texels": int(over.sum()), "area_cm2": float(grid.area_mm2[over].sum() / 100.0),
                "worst_ratio": float(dens[worst] / cap[worst]), "zone": names[int(grid.label[worst])]}

    def _zone_area_change(self, vertices: np.ndarray) -> dict:
        area = _triangle_areas(vertices, self.faces)
        ok = self.tri_zone >= 0
        new = np.bincount(self.tri_zone[ok], weights=area[ok], minlength=len(self.zone_area0))
        return {n: float(new[i] / a) if a > 0 else 1.0 for i, (n, a) in enumerate(self.zone_area0.items())}

    def _protocol(self, vertices: np.ndarray):
        protocol = self.plan.protocol
        if not any(self.lesions):
            return protocol
        lesions = []
        for lesion, anchor in zip(protocol.lesions, self.lesions):
            if anchor is not None:
                tri, bary = anchor
                centre = bary @ vertices[self.faces[tri]]
                lesion = dataclasses.replace(lesion, center_mm=tuple(float(c) for c in centre))
            lesions.append(lesion)
        return dataclasses.replace(protocol, lesions=tuple(lesions))



def _triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    p = vertices[faces]
    return 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (deg) of the rotation between two rotation matrices."""
    c = (np.trace(a.T @ b) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def _cat(arrays: list, empty_shape: tuple, dtype=np.float64) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.empty(empty_shape, dtype)


def _share(points: np.ndarray) -> np.ndarray:
    """Each point's share of the way along a polyline, 0 to 1."""
    s = _arc(points)
    return s / s[-1] if s[-1] > 0 else np.linspace(0.0, 1.0, len(s))


def _chart_line(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = max(2, math.ceil(np.linalg.norm(b - a) / HOP_STEP_MM) + 1)
    f = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - f) * a + f * b


def _transit_need(points: np.ndarray, lift: float) -> np.ndarray:
    """The verifier's clearance need at each transition point: ``lift`` less its slack on the
    travel, only not inside the face on the approach and retract legs."""
    s = _arc(points)
    leg = (s < lift) | (s > s[-1] - lift)
    return np.where(leg, -TRANSIT_SLACK_MM, lift - TRANSIT_SLACK_MM)


def _contains(region, uv: np.ndarray) -> np.ndarray:
    if region is None or region.is_empty or not len(uv):
        return np.zeros(len(uv), dtype=bool)
    return shapely.contains_xy(region, uv[:, 0], uv[:, 1])


def _level(longest: np.ndarray, faces: np.ndarray, vdist: np.ndarray, reach: float, margin: float) -> float:
    """The keep-out's level (:func:`coverage.regions.keepout`): margin plus the interpolation
    slack of the longest edge where its contour can run."""
    near = (vdist[faces] < reach).any(axis=1)
    h = float(longest[near].max()) if near.any() else float(longest.max())
    return margin + regions.interpolation_slack_mm(h, margin)


class _Checks:
    """The probes that break a rule on the new face (``bad``, samples then punctures), why,
    and the hops whose straight chart line now crosses a keep-out.

    A distance between two points of the skin changes by at most the sum of their
    deviations from the rigid fit (a point's: its triangle's largest vertex deviation), so a
    probe is measured again only if its room on the original face is below that sum.
    """

    def __init__(self, rt: Retargeter, face, vertices: np.ndarray, deviation: np.ndarray, s_points, p_points):
        self.rt = rt
        self.face = face
        self.vertices = vertices
        self.deviation = deviation
        self.s_points, self.p_points = s_points, p_points
        self.bad = np.zeros(rt.n_samples + len(p_points), dtype=bool)
        self.reasons = {}
        self.hops_crossing = set()
        self.measured = 0
        self.delta = delta = float(deviation.max()) if len(deviation) else 0.0
        unobserved = np.asarray(face.unobserved, dtype=bool)
        changed = not np.array_equal(unobserved, rt.unobserved0)
        if delta > RIGID_MM:
            for part in rt.parts:
                if part.name == "unobserved" and changed:
                    continue
                skin = float(deviation[part.skin_vertices].max()) if len(part.skin_vertices) else 0.0
                if 1.5 * delta + skin > ROOM_MM:
                    # beyond the room kept: every probe against all the part's skin
                    self._measure_all(part, np.arange(len(self.bad)), np.nonzero(rt.f_tri >= 0)[0])
                    continue
                # no probe's own deviation exceeds delta: only a prefix of the rooms can fail
                ids = part.point_ids[:np.searchsorted(part.point_room, delta + skin + 1e-9, side="right")]
                probe_tri = np.where(ids < rt.n_samples, rt.s_tri[np.minimum(ids, rt.n_samples - 1)],
                                     rt.p_tri[np.maximum(ids - rt.n_samples, 0)])
                reach = deviation[rt.faces[probe_tri]].max(axis=1) + skin
                pick = part.point_room[:len(ids)] < reach + 1e-9
                top = max(delta + skin, delta / 2.0) + delta / 2.0 + 1e-9
                fids = part.field_ids[:np.searchsorted(part.field_room, top, side="right")]
                corner = deviation[rt.faces[np.maximum(rt.f_tri[fids], 0)]].max(axis=1)
                fpick = fids[part.field_room[:len(fids)] < np.maximum(corner + skin, delta / 2.0) + delta / 2.0 + 1e-9]
                self._measure(part, ids[pick], reach[pick], fpick, skin)
        if unobserved.any():
            on = unobserved[rt.faces].any(axis=1)
            self._flag(np.nonzero(np.concatenate([on[rt.s_tri], on[rt.p_tri]]))[0], "unobserved skin")
            if changed:
                part = self._unobserved_part(on, delta)
                self._measure_all(part, part.point_ids, part.field_ids)

    def point(self, ids: np.ndarray) -> np.ndarray:
        n = self.rt.n_samples
        return np.where((ids < n)[:, None], self.s_points[np.minimum(ids, n - 1)],
                        self.p_points[np.maximum(ids - n, 0)]) if len(ids) else np.empty((0, 3))

    def _flag(self, ids: np.ndarray, reason: str):
        fresh = ids[~self.bad[ids]]
        self.bad[fresh] = True
        for i in fresh.tolist():
            self.reasons[i] = reason

    def _unobserved_part(self, tri_bad: np.ndarray, delta: float) -> _Part:
        """The new face's unobserved skin as an exclusion part; every probe that could be
        near it (on the original face, within the largest limit + 2 delta) is measured."""
        rt = self.rt
        margin = float(rt.plan.protocol.session.positioning_error_mm)
        parent = np.nonzero(tri_bad)[0]
        bary = np.broadcast_to(np.eye(3), (len(parent), 3, 3))
        longest = rt.face0.longest_edge_mm
        bound = margin + float(rt.reach.max(initial=0.0)) + 2.0 * delta + longest + 1.0
        tree = cKDTree(rt.face0.vertices[np.unique(rt.faces[parent])])
        d, _ = tree.query(rt.old_points, distance_upper_bound=bound)
        centres = _gather(rt.face0.vertices, rt.faces, np.maximum(rt.f_tri, 0), rt.f_bary)
        fd, _ = tree.query(centres, distance_upper_bound=margin + 2.0 * delta + 3.0 * longest + 1.0)
        field_ids = np.nonzero(np.isfinite(fd) & (rt.f_tri >= 0))[0]
        band = np.nonzero((tri_bad[:, None] | np.isin(rt.faces, rt.faces[parent])).any(axis=1))[0]
        point_ids = np.nonzero(np.isfinite(d))[0]
        return _Part("unobserved", "unobserved", margin, None, parent, bary, point_ids, np.zeros(len(point_ids)),
                     field_ids, np.zeros(len(field_ids)), band).with_faces(rt.face0)

    def _near_distances(self, part: _Part, old: np.ndarray, new: np.ndarray, limit: np.ndarray,
                        slack: np.ndarray) -> np.ndarray:
        """Exact 3D distance (mm) from points ``new`` to the part's kept skin on the new face
        where below ``limit``; ``inf`` elsewhere. Candidate pieces are found around the
        points' original positions ``old``, ``slack`` (their deviation bound) further."""
        out = np.full(len(new), np.inf)
        if not len(new) or not len(part.parent):
            return out
        found = part.tree.query_ball_point(old, limit + slack + part.radius + 1e-9)
        counts = np.fromiter((len(f) for f in found), dtype=np.int64, count=len(found))
        if not counts.sum():
            return out
        q = np.repeat(np.arange(len(new)), counts)
        piece = np.concatenate([np.asarray(f, dtype=np.int64) for f in found if len(f)])
        used, local = np.unique(piece, return_inverse=True)
        tris = _skin_triangles(self.vertices, self.rt.faces, part.parent[used], part.bary[used])
        _, d2 = proximity.closest_on_triangles_reference(new[q], tris[local, 0], tris[local, 1], tris[local, 2])
        np.minimum.at(out, q, np.sqrt(d2))
        return np.where(out < limit, out, np.inf)

    def _measure(self, part: _Part, pick: np.ndarray, slack: np.ndarray, fpick: np.ndarray, skin: float):
        """Measure a few probes against one part on the new face; flag those breaking its rules."""
        rt = self.rt
        if not len(pick) and not len(fpick):
            return
        self.measured += len(pick) + len(fpick)
        if len(pick):
            limit = rt._limits(part.margin, pick)
            d = self._near_distances(part, rt.old_points[pick], self.point(pick), limit, slack)
            self._flag(pick[d < limit], f"exclusion {part.label}")
        if not len(fpick):
            return
        # the keep-out's field at the chart probes, between bounds that need no global figure:
        # the level's longest edge among the band's triangles surely / possibly near, the
        # reach (1 mm + slack beyond the margin) between margin + 1.01 and its original + delta / 2
        dev = self.deviation
        reach_lo = part.margin + 1.01
        reach_hi = part.reach + self.delta / 2.0 + 1e-9
        fb = part.band_faces
        e = dev[fb] + skin
        d0 = part.vdist[fb]
        sure, maybe = ((d0 + e) < reach_lo).any(axis=1), ((d0 - e) < reach_hi).any(axis=1)
        p = self.vertices[fb[maybe]]
        edges = np.sqrt(((p - np.roll(p, 1, axis=1)) ** 2).sum(axis=2)).max(axis=1)
        h_hi = float(edges.max()) if len(edges) else 0.0
        h_lo = float(edges[sure[maybe]].max()) if sure.any() else 0.0
        level_lo = part.margin + regions.interpolation_slack_mm(h_lo, part.margin)
        level_hi = part.margin + regions.interpolation_slack_mm(h_hi, part.margin)
        corners = rt.faces[rt.f_tri[fpick]]
        verts, inverse = np.unique(corners, return_inverse=True)
        vd = self._near_distances(part, rt.face0.vertices[verts], self.vertices[verts],
                                  np.full(len(verts), reach_lo), dev[verts] + skin)[inverse].reshape(-1, 3)
        bary = rt.f_bary[fpick]
        low = np.einsum("kj,kj->k", bary, np.minimum(vd, reach_lo))
        high = np.einsum("kj,kj->k", bary, np.where(vd < reach_lo, vd, reach_hi))
        covered = fpick[high < level_lo]
        unsure = fpick[~(high < level_lo) & ~(low >= level_hi)]
        self._cover(covered, part)
        if len(unsure):
            self._measure_all(part, np.empty(0, np.int64), unsure, count=False)

    def _cover(self, covered: np.ndarray, part: _Part):
        rt = self.rt
        self._flag(rt.n_samples + covered[covered < rt.n_texels], f"keep-out texel {part.label}")
        self.hops_crossing.update(rt.f_hop[covered[covered >= rt.n_texels] - rt.n_texels].tolist())

    def _measure_all(self, part: _Part, pick: np.ndarray, fpick: np.ndarray, count: bool = True):
        """Measure probes against all of a part's skin on the new face, as the verifier
        rebuilds its keep-out (the reach from the face's longest edge, the level from the
        longest edge where the contour can run, sought over the whole face)."""
        rt = self.rt
        if count:
            self.measured += len(pick) + len(fpick)
        tris = _skin_triangles(self.vertices, rt.faces, part.all_parent, part.all_bary)
        if len(pick):
            limit = rt._limits(part.margin, pick)
            d = _distances(tris, self.point(pick), float(limit.max()) + 1e-6)
            self._flag(pick[d < limit], f"exclusion {part.label}")
        if len(fpick):
            reach = _keepout_reach(part.margin, self.face.longest_edge_mm)
            vdist = _distances(tris, self.vertices, reach + 1e-6)
            level = _level(self.face.triangle_longest_edge_mm, rt.faces, vdist, reach, part.margin)
            self._cover(fpick[rt._field(vdist, reach, fpick) < level], part)


@dataclass(eq=False)
class _Piece:
    """What is left of an original stroke: samples ``a:b``, the stamps kept, its id."""

    index: int                  # the stroke's position in the original plan
    a: int
    b: int
    id: int
    stamps: np.ndarray | None   # (m,) bool over the stroke's stamps; None: all (uncut)


def _runs(good: np.ndarray) -> list:
    """``[(a, b)]``: the runs of True in a bool array, each at least 2 long."""
    edges = np.diff(np.concatenate([[0], good.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [(int(a), int(b)) for a, b in zip(starts, ends) if b - a >= 2]


class _Builder:
    """Cuts strokes, links them by transitions and assembles the retargeted plan."""

    def __init__(self, rt: Retargeter, face, pose, deviation, s_points, s_normals, s_tangents, t_points, p_points):
        self.rt = rt
        self.face = face
        self.pose = pose
        self.deviation = deviation
        self.delta = float(deviation.max()) if len(deviation) else 0.0
        self._local = None
        self.s_points, self.s_normals, self.s_tangents = s_points, s_normals, s_tangents
        self.t_points, self.p_points = t_points, p_points
        self.cuts = []
        self.punctures_dropped = 0
        self.measured = 0
        self.replanned = []
        self.unverified = []
        self._pieces = None
        self.x_points = None        # every transition point carried, when all were at once
        self.keep_p = None          # (K,) bool where punctures were dropped
        self.p_id = None            # (K,) new stroke id where pieces renumbered them
        self.moves = None           # [(points, times, from id, to id, original points)] between consecutive
                                    # pieces; stays None when all were carried at once (x_points)
        self.retime = False

    @property
    def pieces(self) -> list:
        """The strokes of the new plan, as pieces of the original ones (in order)."""
        if self._pieces is None:
            self._pieces = [_Piece(i, 0, len(s.tri), s.id, None) for i, s in enumerate(self.rt.plan.strokes)]
        return self._pieces

    @pieces.setter
    def pieces(self, value: list):
        self._pieces = value

    # --- cutting --------------------------------------------------------------------------

    def cut(self, bad_s: np.ndarray, bad_p: np.ndarray, reasons: dict):
        rt = self.rt
        if not bad_s.any() and not bad_p.any():
            return
        strokes = rt.plan.strokes
        affected = sorted(set(rt.s_owner[bad_s].tolist()) | set(rt.p_owner[bad_p].tolist()))
        keep_p = np.ones(len(bad_p), dtype=bool)
        p_id = np.asarray(rt.plan.puncture_stroke, dtype=np.int64).copy()
        next_id = max(s.id for s in strokes) + 1
        replaced = {}
        seg_len = np.linalg.norm(np.diff(self.s_points, axis=0), axis=1) if len(self.s_points) > 1 else np.empty(0)
        for i in affected:
            s = strokes[i]
            a0, b0 = int(rt.s_start[i]), int(rt.s_start[i + 1])
            n = b0 - a0
            good = ~bad_s[a0:b0]
            rows = rt.p_order[rt.p_bounds[i]:rt.p_bounds[i + 1]]
            bad_rows = rows[bad_p[rows]]
            why = [reasons[int(k)] for k in np.nonzero(bad_s[a0:b0])[0] + a0]
            why += [reasons[rt.n_samples + int(k)] for k in bad_rows]
            pen = s.device == "pen" and s.stamp_uv is not None
            m = int(rt.t_start[i + 1] - rt.t_start[i])
            dropped_stamps = np.zeros(m, dtype=bool)
            if pen:
                dropped_stamps[rt.p_stamp[bad_rows]] = True
            else:
                # the drum cannot skip a needle: it lifts off over the puncture's segment
                seg = rt.p_segment[bad_rows]
                good[seg] = False
                good[np.minimum(seg + 1, n - 1)] = False
            runs = _runs(good)
            piece_of_seg = np.full(max(n - 1, 0), -1, dtype=np.int64)
            for r, (a, b) in enumerate(runs):
                piece_of_seg[a:b - 1] = r
            if pen:
                stamp_piece = piece_of_seg[rt.t_segment[rt.t_start[i]:rt.t_start[i + 1]]] if n > 1 else \
                    np.full(m, -1, dtype=np.int64)
                stamp_piece[dropped_stamps] = -1
                punct_piece = stamp_piece[rt.p_stamp[rows]]
            else:
                stamp_piece = None
                punct_piece = piece_of_seg[rt.p_segment[rows]] if n > 1 else np.full(len(rows), -1, dtype=np.int64)
            counts = np.bincount(punct_piece[punct_piece >= 0], minlength=len(runs))
            ids = np.full(len(runs), -1, dtype=np.int64)
            pieces = []
            for r, (a, b) in enumerate(runs):
                if counts[r] == 0:
                    continue
                ids[r] = s.id if not pieces else next_id
                next_id += 0 if not pieces else 1
                pieces.append(_Piece(i, a, b, int(ids[r]),
                                     stamp_piece == r if pen else None))
            new_piece = np.where(punct_piece >= 0, ids[np.maximum(punct_piece, 0)], -1) if len(ids) else \
                np.full(len(rows), -1, dtype=np.int64)
            keep_p[rows] = new_piece >= 0
            p_id[rows] = np.where(new_piece >= 0, new_piece, p_id[rows])
            kept_len = sum(float(seg_len[a0 + p.a:a0 + p.b - 1].sum()) for p in pieces)
            total_len = float(seg_len[a0:b0 - 1].sum()) if n > 1 else 0.0
            self.cuts.append(Cut(s.id, "; ".join(sorted(set(why))), round(total_len - kept_len, 6),
                                 int(len(rows) - keep_p[rows].sum()),
                                 int(m - sum(int(p.stamps.sum()) for p in pieces)) if pen else 0,
                                 tuple(p.id for p in pieces)))
            replaced[i] = pieces
        self.pieces = [p for i, s in enumerate(strokes) for p in replaced.get(i, [self.pieces[i]])]
        self.keep_p, self.p_id = keep_p, p_id
        self.punctures_dropped = int((~keep_p).sum())
        self.retime = True

    # --- transitions ------------------------------------------------------------------------

    def _end(self, piece: _Piece, last: bool):
        k = int(self.rt.s_start[piece.index]) + (piece.b - 1 if last else piece.a)
        return self.s_points[k], self.s_normals[k]

    def link(self, mode: str, hops_crossing: set):
        """A transition between each two consecutive pieces: the original, carried by the
        rigid fit and its ends' corrections, where its strokes' ends are kept; a new move
        where they are not. Carried transitions the bound cannot clear are measured on the
        new face, all at once, and planned again where they fail (``auto``), or listed
        (``bound``)."""
        rt = self.rt
        strokes = rt.plan.strokes
        carried = turn(rt.x_points, self.pose[:3, :3])
        carried += self.pose[:3, 3]      # apply(pose, x_points), in one buffer
        if not self.retime and rt.x_consecutive and self._link_fast(carried, hops_crossing):
            return
        pairs = list(zip(self.pieces[:-1], self.pieces[1:]))
        if not self.retime and rt.x_consecutive:
            keys = np.arange(len(pairs))
        else:
            keys = np.array([rt.x_key.get((strokes[p.index].id, strokes[q.index].id), -1)
                             if (p.b == len(strokes[p.index].tri) and q.a == 0) else -1 for p, q in pairs],
                            dtype=np.int64)
        carry = np.nonzero(keys >= 0)[0]
        k = keys[carry]
        # ends of the carried transitions: the pieces' ends on the new face
        if not self.retime and rt.x_consecutive:
            end_p, start_q = rt.s_start[1:-1] - 1, rt.s_start[1:-1]
        else:
            end_p = np.array([int(rt.s_start[pairs[i][0].index]) + pairs[i][0].b - 1 for i in carry], dtype=np.int64)
            start_q = np.array([int(rt.s_start[pairs[i][1].index]) + pairs[i][1].a for i in carry], dtype=np.int64)
        d_from = self.s_points[end_p] - carried[rt.x_start[k]] if len(k) else np.empty((0, 3))
        d_to = self.s_points[start_q] - carried[rt.x_start[k + 1] - 1] if len(k) else np.empty((0, 3))
        shift = np.maximum(np.linalg.norm(d_from, axis=1), np.linalg.norm(d_to, axis=1))
        clear = shift + self.delta <= rt.x_room[k]
        if not clear.all():
            # the face's change near each transition, not its largest anywhere
            clear = shift + self.local_deviation()[k] <= rt.x_room[k]
        crossing = np.isin(k, list(hops_crossing)) if hops_crossing else np.zeros(len(k), dtype=bool)
        clear &= ~crossing
        moves = [None] * len(pairs)
        if len(carry):
            lengths = rt.x_start[k + 1] - rt.x_start[k]
            first = np.concatenate([[0], np.cumsum(lengths)])
            owner = np.repeat(np.arange(len(k)), lengths)
            rows = rt.x_start[k][owner] + np.arange(first[-1]) - first[:-1][owner]
            w = rt.x_weight[rows, None]
            pts = carried[rows] + (1.0 - w) * d_from[owner] + w * d_to[owner]
            pts[first[:-1]] = self.s_points[end_p]
            pts[first[1:] - 1] = self.s_points[start_q]
            transitions = rt.plan.transitions
            bounds = first.tolist()
            for j, (i, kk) in enumerate(zip(carry.tolist(), k.tolist())):
                moves[i] = (pts[bounds[j]:bounds[j + 1]], transitions[kk].times_s, pairs[i][0].id, pairs[i][1].id,
                            transitions[kk].points)
        doubtful = carry[~clear]
        if len(doubtful) and mode == "bound":
            self.unverified.extend((pairs[i][0].id, pairs[i][1].id) for i in doubtful)
        elif len(doubtful):
            session = rt.plan.protocol.session
            hop = min(session.hop_clearance_mm, session.clearance_mm)
            lifts = np.where(crossing[~clear] | ~rt.x_hop[k[~clear]], session.clearance_mm, hop)
            points = np.concatenate([moves[i][0] for i in doubtful])
            signed = signed_clearance(self.face, points, reach=session.clearance_mm + 1.0)
            first = np.concatenate([[0], np.cumsum([len(moves[i][0]) for i in doubtful])])
            self.measured += len(doubtful)
            for j, i in enumerate(doubtful):
                pts = moves[i][0]
                need = _transit_need(pts, float(lifts[j]))
                if not (signed[first[j]:first[j + 1]][1:-1] >= need[1:-1]).all():
                    moves[i] = self._new_move(*pairs[i], float(lifts[j]))
        for i, move in enumerate(moves):
            if move is None:
                moves[i] = self._new_move(*pairs[i])
        self.moves = moves

    def _link_fast(self, carried: np.ndarray, hops_crossing: set) -> bool:
        """Nothing cut, one transition between each two strokes: carry them all at once.
        False (and nothing done) if the bound does not clear every one of them."""
        rt = self.rt
        ends = rt.s_start[1:-1]
        d_from = self.s_points[ends - 1] - carried[rt.x_start[:-1]]
        d_to = self.s_points[ends] - carried[rt.x_start[1:] - 1]
        shift = np.sqrt(np.maximum(np.einsum("ij,ij->i", d_from, d_from), np.einsum("ij,ij->i", d_to, d_to)))
        clear = shift + self.delta <= rt.x_room
        if not clear.all():
            clear = shift + self.local_deviation() <= rt.x_room
        if not clear.all() or hops_crossing:
            return False
        if self.delta <= RIGID_MM:
            pts = carried    # the ends moved with the face: the correction is rounding
        else:
            w = rt.x_weight[:, None]
            pts = carried + (1.0 - w) * d_from[rt.x_owner] + w * d_to[rt.x_owner]
        pts[rt.x_start[:-1]] = self.s_points[ends - 1]
        pts[rt.x_start[1:] - 1] = self.s_points[ends]
        # every move is the original's, carried: :meth:`plan` makes the transitions straight
        # from these points (no list of moves in between)
        self.x_points = pts
        self.moves = None
        return True

    def local_deviation(self) -> np.ndarray:
        """Per transition, the largest deviation from the rigid fit of a vertex that could
        become nearest to one of its points. Sound while the face's largest deviation plus
        the transition's own shift stays within the neighbourhood's room
        (:data:`ROOM_MM`); beyond, the face's largest."""
        if self._local is None:
            rt = self.rt
            local = np.zeros(len(rt.x_room))
            has = np.diff(rt.x_near_start) > 0
            if has.any():
                local[has] = np.maximum.reduceat(self.deviation[rt.x_near], rt.x_near_start[:-1][has])
            self._local = np.where(self.delta <= ROOM_MM / 2.0, local, self.delta)
        return self._local

    def _new_move(self, p: _Piece, q: _Piece, lift: float | None = None):
        """A move planned on the new face; at the full clearance unless told (the new face's
        keep-outs are not built here, so whether it could hop is not known)."""
        session = self.rt.plan.protocol.session
        lift = session.clearance_mm if lift is None else lift
        end_p, nrm_p = self._end(p, True)
        start_q, nrm_q = self._end(q, False)
        pts, times = transit(self.face, end_p, nrm_p, start_q, nrm_q, lift, session.transit_speed_mm_s, 0.0)
        self.replanned.append((p.id, q.id))
        self.retime = True
        return pts, times, p.id, q.id, None

    # --- the plan ---------------------------------------------------------------------------

    def _fast_strokes(self, s_times: np.ndarray | None, t_times: np.ndarray | None) -> list:
        """Every stroke re-lifted, nothing cut: the original's fields with new paths (and new
        times, if given). A thousand strokes: the loop is kept to a dict copy, the slices and
        the object (no dataclass __init__)."""
        rt = self.rt
        points, normals, tangents, stamps = self.s_points, self.s_normals, self.s_tangents, self.t_points
        new = object.__new__
        out = []
        append = out.append
        for template, rows, marks in zip(rt.templates, rt.s_slices, rt.t_slices):
            fields = template.copy()
            fields["points"] = points[rows]
            fields["normals"] = normals[rows]
            fields["tangents"] = tangents[rows]
            if s_times is not None:
                fields["times_s"] = s_times[rows]
            if marks is not None:
                fields["stamp_points"] = stamps[marks]
                if t_times is not None:
                    fields["stamp_times_s"] = t_times[marks]
            stroke = new(Stroke)
            stroke.__dict__ = fields
            append(stroke)
        return out

    def _fast_transitions(self, x_times: np.ndarray | None) -> list:
        """The transitions between the strokes of :meth:`_fast_strokes` (and their new times,
        if given): the moves linked, or, all carried at once, the original's on ``x_points``."""
        if self.moves is not None:
            bounds = self.rt.x_bounds
            transitions = []
            for j, (pts, times, a, b, _) in enumerate(self.moves):
                move = object.__new__(Transition)
                move.__dict__ = {"from_stroke": a, "to_stroke": b, "points": pts,
                                 "times_s": times if x_times is None else x_times[bounds[j]:bounds[j + 1]]}
                transitions.append(move)
            return transitions
        points = self.x_points
        new = object.__new__
        out = []
        append = out.append
        if x_times is None:
            for (a, b, times), rows in zip(self.rt.x_static, self.rt.x_slices):
                move = new(Transition)
                move.__dict__ = {"from_stroke": a, "to_stroke": b, "points": points[rows], "times_s": times}
                append(move)
        else:
            for (a, b, _), rows in zip(self.rt.x_static, self.rt.x_slices):
                move = new(Transition)
                move.__dict__ = {"from_stroke": a, "to_stroke": b, "points": points[rows], "times_s": x_times[rows]}
                append(move)
        return out

    def plan(self, protocol) -> Plan:
        rt = self.rt
        old = rt.plan
        if not self.retime and self.keep_p is None and (self.delta <= RIGID_MM or rt.x_consecutive):
            s_times = x_times = t_times = None
            if self.delta > RIGID_MM:
                s_times, x_times, t_times = self._timeline()
            return Plan(self.face, LazyZoneMap(self.face, protocol), protocol, old.device,
                        self._fast_strokes(s_times, t_times), self._fast_transitions(x_times), self.p_points,
                        old.puncture_uv, old.puncture_stroke, old.puncture_depth_mm, dict(old.zone_status),
                        rt.p_tri, rt.p_bary)
        strokes, transitions = [], []
        t = None
        for n, piece in enumerate(self.pieces):
            stroke = self._stroke(piece)
            if t is not None:
                pts, times, a, b, before = self.moves[n - 1]
                if before is not None and self.delta > RIGID_MM:
                    times = stretched_times(times, before, pts)
                times = t + (times - times[0])
                transitions.append(Transition(a, b, pts, times))
                t = float(times[-1])
            a0 = int(rt.s_start[piece.index])
            times = stroke.times_s
            if self.delta > RIGID_MM:
                times = stretched_times(times, rt.old_points[a0 + piece.a:a0 + piece.b], stroke.points)
            times = times + ((t - float(times[0])) if t is not None else 0.0)
            if stroke.stamp_times_s is not None:
                stroke.stamp_times_s = moved_events(stroke.stamp_times_s, stroke.times_s, times)
            stroke.times_s = times
            t = float(times[-1])
            strokes.append(stroke)
        if self.keep_p is None:
            points, uv, ids, depth = self.p_points, old.puncture_uv, old.puncture_stroke, old.puncture_depth_mm
            tri, bary = rt.p_tri, rt.p_bary
        else:
            keep = self.keep_p
            points, uv, ids, depth = self.p_points[keep], old.puncture_uv[keep], self.p_id[keep], \
                old.puncture_depth_mm[keep]
            tri, bary = rt.p_tri[keep], rt.p_bary[keep]
        status = dict(old.zone_status)
        return Plan(self.face, LazyZoneMap(self.face, protocol), protocol, old.device, strokes, transitions,
                    points, uv, ids, depth, status, tri, bary)

    def _timeline(self):
        """The whole session re-timed at once (nothing cut, one transition between each two
        strokes): every segment of every stroke and move lengthened by the face takes longer
        in proportion (:func:`stretched_times`), and each stroke or move starts when the one
        before it ends. Returns the times of the samples, the transition points and the stamps."""
        rt = self.rt
        x_points = self.x_points if self.x_points is not None else _cat([m[0] for m in self.moves], (0, 3))

        def stretched(points, dt0, length0):
            step = np.diff(points, axis=0)
            length = np.sqrt(np.einsum("ij,ij->i", step, step))
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(length0 > 1e-12, length / length0, 1.0)
            return np.concatenate([[0.0], np.cumsum(dt0 * np.maximum(ratio, 1.0))])

        # within each stroke and move (their joins carry no time), then one after the other
        cum_s = stretched(self.s_points, rt.dt_s0, rt.length_s0)
        cum_x = stretched(x_points, rt.dt_x0, rt.length_x0)
        s_first, x_first = rt.s_start[:-1], rt.x_start[:-1]
        durations = np.zeros(len(s_first) + len(x_first))
        durations[0::2] = cum_s[rt.s_start[1:] - 1] - cum_s[s_first]
        durations[1::2] = cum_x[rt.x_start[1:] - 1] - cum_x[x_first]
        starts = rt.t_begin + np.concatenate([[0.0], np.cumsum(durations)])
        s_times = cum_s + (starts[0::2] - cum_s[s_first])[rt.s_owner]
        x_times = cum_x + (starts[1::2][:len(x_first)] - cum_x[x_first])[rt.x_owner]
        g = rt.t_sample
        stamps = s_times[g] + rt.t_fraction * (s_times[np.minimum(g + 1, len(s_times) - 1)] - s_times[g])
        return s_times, x_times, stamps

    def _stroke(self, piece: _Piece) -> Stroke:
        rt = self.rt
        s = rt.plan.strokes[piece.index]
        a0 = int(rt.s_start[piece.index])
        ta, tb = int(rt.t_start[piece.index]), int(rt.t_start[piece.index + 1])
        new = Stroke.__new__(Stroke)
        fields = dict(s.__dict__)
        sl = slice(a0 + piece.a, a0 + piece.b)
        fields.update(points=self.s_points[sl], normals=self.s_normals[sl], tangents=self.s_tangents[sl])
        if s.stamp_uv is not None:
            fields["stamp_points"] = self.t_points[ta:tb]
        if piece.stamps is not None or piece.a != 0 or piece.b != len(s.tri):
            local = slice(piece.a, piece.b)
            fields.update(id=piece.id, uv=s.uv[local], tri=s.tri[local], bary=s.bary[local], times_s=s.times_s[local])
            if s.swath_mm is not None:
                fields["swath_mm"] = s.swath_mm[local]
            if s.stamp_uv is not None:
                keep = piece.stamps
                fields.update(stamp_uv=s.stamp_uv[keep], stamp_points=self.t_points[ta:tb][keep],
                              stamp_times_s=s.stamp_times_s[keep])
            mine = (self.p_id == piece.id) & self.keep_p if self.keep_p is not None else None
            if mine is not None:
                fields["punctures"] = int(mine.sum())
        new.__dict__ = fields
        return new


def retargeter(plan: Plan) -> Retargeter:
    """The plan's :class:`Retargeter`, built on first use and kept on the plan."""
    rt = plan.__dict__.get("_retargeter")
    if rt is None or rt.plan is not plan:
        rt = Retargeter(plan)
        plan.__dict__["_retargeter"] = rt
    return rt


def retarget(plan: Plan, face, transitions: str = "auto") -> Retargeted:
    """``plan`` carried onto ``face`` (the same person, moved or deformed, at the plan's
    resolution) without planning again: ``(plan, report)``. See :mod:`coverage.relift`."""
    return retargeter(plan).retarget(face, transitions)


class _Clock:
    def __init__(self):
        self.t = time.perf_counter()
        self.laps = {}

    def lap(self, name: str):
        now = time.perf_counter()
        self.laps[name] = 1e3 * (now - self.t)
        self.t = now
