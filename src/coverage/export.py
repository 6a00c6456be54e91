"""Robot trajectories: a plan as timed tool poses sampled at a fixed rate.

``trajectory(plan, rate_hz=250.0, smooth_mm=0.1, smooth_deg=None)`` turns a plan's strokes and
transitions into one continuous tool motion (approach along the normal, contact, retract along
the normal, travel in the air, ...), its contact smoothed within stated tolerances, re-timed so
that the tool's speed and acceleration stay within the protocol's limits, then samples it every
``1 / rate_hz`` seconds. ``write_trajectory`` writes it as CSV, NPZ or JSON; ``read_trajectory``
reads those files back: format version 3, and version 2 files (written before smoothing; their
header has no ``smoothing`` field and their contact is the plan's own samples).

Conventions (also written into every file's header):

- Frame: the plan's (the input mesh's) frame, millimetres; time in seconds from the start
  of the exported session (the tool at rest above the first stroke's first point), which is
  not the plan's time origin (the plan starts at the first touch-down).
- Tool frame: z points into the skin (minus the outward surface normal, smoothed within
  ``smooth_deg``) in contact; y = z × x.
  Roller: x along the pass (the travel direction projected on the plane normal to z, or
  against it: the drum rolls either way, so x keeps the side the previous pass ended on and
  the tool does not spin between the lines of a sweep), so the drum's axis is y. Pen: the cartridge is round and does not turn with its path, so x is the
  face's up direction (the canonical frame's +y; its left-right axis where up runs along the
  normal) projected on the plane normal to z: a pen turning at the end of a raster line does
  not spin the tool. Approach and retract keep the orientation of the contact they lead to
  or come from; in the air the orientation turns from one to the other by spherical
  interpolation along the travel.
- Quaternions are scalar first ``(w, x, y, z)``, unit length, and rotate tool-frame vectors
  into the plan frame; the sign is kept continuous along the session (q and -q are the same
  rotation).
- States: ``STATES`` (0 transit, 1 approach, 2 contact, 3 firing, 4 retract). Firing means in
  contact and puncturing: always for the roller (its needles puncture whenever it rolls), for
  the pen between its first and last stamp.

Smoothing: on a scanned face the plan's samples carry the scan's noise (~0.15 mm, kinks at every
~1 mm triangle), which the acceleration and turn-rate limits turn into a crawl. So the contact
path is smoothed within a tube: every sample moves at most ``smooth_mm`` (default 0.1 mm: below
the scan's noise, the pen's 0.25 mm depth step and the 1 mm positioning error) along its normal
and sideways to its travel, never along it; the two samples around each pen stamp move along the
normal only, so a stamp keeps its place on the skin and its spacing (no stacking); the tool axis
tilts at most ``smooth_deg`` (default 2 deg when positions are smoothed) from minus the plan's
normal. Each stroke's first and last sample stay put, so approach, retract and the air moves are
the plan's and keep their clearance. The method is a smoothing spline (bending energy plus a
penalty on the offsets that passes waves longer than 4 mm) solved exactly by banded Cholesky
(``scipy.linalg.solveh_banded``), with the tube as an active set (points that leave it are held
on its wall, those it pulls inwards let go, and the rest solved again); the result is clipped
to the tube. ``smooth_mm=0`` follows
the plan's samples exactly (the version 2 trajectory, header aside). The header's ``smoothing``
field states both tolerances and the largest offsets used.

Timing: the path is the contact path above and the plan's air moves; only the speed
along it is planned again, as a standard path-velocity profile: a speed cap per segment (the
stroke's planned speed in contact (the pen: no segment in less than the plan's time, so stamps
never fire faster than planned), the transit speed in the air, and whatever keeps the tool
turning no faster than the angular speed limit), a stop at every touch-down, lift-off and
raised point, and the forward/backward pass that limits how fast v² may change along the arc
length (by at most 2·a·Δs); on each segment the tool speeds up, cruises and slows down
exactly. A polyline turns at its vertices, where the velocity turns in one step: positions
sampled dt apart see that as an acceleration (their second difference over dt²), so each
vertex's speed is capped to keep it, with the tangential acceleration, within the limit at
the export rate. A higher rate sees sharper corners and slows them more.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solveh_banded
from scipy.spatial.transform import Rotation

from . import __version__
from .errors import CoverageError
from .fileio import atomic_path, check_output

FORMAT = "coverage-trajectory"
VERSION = 3                # 3: the contact path smoothed within stated tolerances (header "smoothing")
                           # 2: the pen keeps the face-up heading, the roller its side of the pass line
READ_VERSIONS = (2, 3)     # read_trajectory reads these (a version 2 file: the plan's own path)
FORMATS = ("csv", "npz", "json")
DEFAULT_RATE_HZ = 250.0
RATE_HZ_MIN = 50.0         # coarser samples cut corners: a robot joining them by straight lines leaves the path
RATE_HZ_MAX = 10000.0
# Contact smoothing (see _contact): positions within DEFAULT_SMOOTH_MM of the plan's samples, below
# the scan noise the plan's surface carries (~0.15 mm) and the pen's 0.25 mm depth step, a tenth of
# the 1 mm positioning error the margins already allow for; tool axes within DEFAULT_SMOOTH_DEG of
# the plan's normals (a 2 deg lean moves a 7 mm cartridge's rim by 0.12 mm along the axis).
DEFAULT_SMOOTH_MM = 0.1
DEFAULT_SMOOTH_DEG = 2.0
SMOOTH_MM_MAX = 0.25
SMOOTH_DEG_MAX = 5.0
SMOOTH_WAVELENGTH_MM = 4.0  # the spline flattens shorter waves (scan noise: ~1 mm triangles); longer
                            # ones hold more points on the tube's wall, whose kinks cost more than it gains

TRANSIT, APPROACH, CONTACT, FIRING, RETRACT = 0, 1, 2, 3, 4
CONTACT_TURN_SHARE = 0.97   # of the angular speed limit planned for turns in contact (see _pieces)
CORNER_SHARE = 0.97         # of the acceleration limit a corner is planned for at constant speed (the
                            # speed profile may still be changing there; see _turn_speed)
STATES = ("transit", "approach", "contact", "firing", "retract")
DEVICE_CODES = {"roller": 1, "pen": 2}

# Share of the acceleration limit for speeding up and slowing down along a path that turns;
# the rest is left for the turns at its vertices (straight moves along the normal use all of it).
PATH_SHARE = 0.8
BISECTIONS = 16          # speed found to 2^-16 of its cap

# column name, Trajectory attribute, component, printf format
_CSV_COLUMNS = (
    ("time_s", "time_s", None, "%.6f"),
    ("x_mm", "position_mm", 0, "%.4f"), ("y_mm", "position_mm", 1, "%.4f"), ("z_mm", "position_mm", 2, "%.4f"),
    ("qw", "quaternion_wxyz", 0, "%.8f"), ("qx", "quaternion_wxyz", 1, "%.8f"),
    ("qy", "quaternion_wxyz", 2, "%.8f"), ("qz", "quaternion_wxyz", 3, "%.8f"),
    ("speed_mm_s", "speed_mm_s", None, "%.4f"), ("accel_mm_s2", "acceleration_mm_s2", None, "%.3f"),
    ("state", "state", None, "%d"), ("device", "device", None, "%d"), ("stroke_id", "stroke_id", None, "%d"),
    ("depth_mm", "depth_mm", None, "%.4f"), ("needle_length_mm", "needle_length_mm", None, "%.4f"),
    ("stamp_hz", "stamp_hz", None, "%.3f"), ("stamps", "stamps", None, "%d"),
)
_SAMPLE_ARRAYS = ("time_s", "position_mm", "quaternion_wxyz", "speed_mm_s", "acceleration_mm_s2", "state", "device",
                  "stroke_id", "depth_mm", "needle_length_mm", "stamp_hz", "stamps")
_STAMP_ARRAYS = ("stamp_time_s", "stamp_position_mm", "stamp_stroke")
_DTYPES = {"state": np.int8, "device": np.int8, "stroke_id": np.int32, "stamps": np.int32, "stamp_stroke": np.int32}

FRAME_TEXT = ("positions in the plan's (input mesh's) frame, mm; time in s from the start of the exported session "
              "(tool at rest above the first stroke); tool frame: z into the skin (minus the outward surface "
              "normal, smoothed: see smoothing) in contact, x along travel (roller; or against it, keeping the "
              "previous pass's side) or the face's "
              "up direction (pen: canonical +y, its left-right "
              "axis where up runs along the normal) projected normal to z, y = z cross x; approach and retract keep "
              "the orientation of their contact, the air turns between them by slerp along the travel")
SMOOTHING_TEXT = ("contact positions within position_mm of the plan's samples (moved along the skin normal and "
                  "sideways to the travel, never along it; the samples around each pen stamp along the normal "
                  "only, so stamps keep their place on the skin and their spacing), tool z within orientation_deg "
                  "of minus the plan's normal; a tube-bounded smoothing spline that flattens waves shorter than "
                  "wavelength_mm; each stroke's first and last sample, approach, retract and air moves unchanged")
QUATERNION_TEXT = ("scalar first (qw, qx, qy, qz), unit, rotates tool-frame vectors into the plan frame "
                   "(its matrix columns are the tool x, y, z axes); sign continuous along the session")


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A session as tool poses sampled every ``1 / rate_hz`` s (one row per sample).

    time_s : (n,) float, ``k / rate_hz`` from the session start
    position_mm : (n, 3) float, tool tip in the plan frame
    quaternion_wxyz : (n, 4) float, tool orientation, scalar first (see the module doc)
    speed_mm_s : (n,) float, tool tip speed along the path
    acceleration_mm_s2 : (n,) float, tangential acceleration along the path (signed)
    state : (n,) int8, index into ``STATES``
    device : (n,) int8, ``DEVICE_CODES`` of the stroke in contact, left (retract) or next (transit, approach)
    stroke_id : (n,) int32, the stroke in contact, -1 in the air
    depth_mm : (n,) float, the stroke's deepest effective puncture (the roller: its needle length)
    needle_length_mm : (n,) float, the needle setting (the pen: its depth setting; the roller: the drum's needles)
    stamp_hz : (n,) float, pen stamps per second needed to keep the planned stamp spacing at this speed (a lone
        stamp: the plan's rate), 0 when not firing (the roller has no stamps)
    stamps : (n,) int32, pen stamps fired in ``(t[k-1], t[k]]`` (a stamp at the very end of a stroke
        is counted on the stroke's last sample)
    stamp_time_s, stamp_position_mm, stamp_stroke : (m,), (m, 3), (m,) every pen stamp, in firing order
    meta : format, conventions, limits and figures (JSON-ready)
    """

    rate_hz: float
    time_s: np.ndarray
    position_mm: np.ndarray
    quaternion_wxyz: np.ndarray
    speed_mm_s: np.ndarray
    acceleration_mm_s2: np.ndarray
    state: np.ndarray
    device: np.ndarray
    stroke_id: np.ndarray
    depth_mm: np.ndarray
    needle_length_mm: np.ndarray
    stamp_hz: np.ndarray
    stamps: np.ndarray
    stamp_time_s: np.ndarray
    stamp_position_mm: np.ndarray
    stamp_stroke: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Time from the start at rest to the end at rest (the last sample is at or after it)."""
        return float(self.meta["duration_s"])

    def __len__(self) -> int:
        return len(self.time_s)


@dataclass(frozen=True)
class Limits:
    """The motion limits a trajectory keeps (mm/s, mm/s², rad/s, rad/s²)."""

    transit_speed_mm_s: float
    transit_accel_mm_s2: float
    angular_speed_rad_s: float
    angular_accel_rad_s2: float
    pen_speed_mm_s_max: float
    pen_accel_mm_s2_max: float
    roller_speed_mm_s: float
    roller_accel_mm_s2_max: float

    @classmethod
    def from_protocol(cls, protocol) -> Limits:
        session, pen, roller = protocol.session, protocol.pen, protocol.roller
        return cls(
            transit_speed_mm_s=float(session.transit_speed_mm_s),
            transit_accel_mm_s2=float(session.transit_accel_mm_s2),
            angular_speed_rad_s=math.radians(session.angular_speed_deg_s),
            angular_accel_rad_s2=math.radians(session.angular_accel_deg_s2),
            pen_speed_mm_s_max=float(pen.speed_mm_s_max), pen_accel_mm_s2_max=float(pen.accel_mm_s2_max),
            roller_speed_mm_s=float(roller.speed_mm_s),
            roller_accel_mm_s2_max=float(roller.accel_mm_s2_max))

    def accel(self, device: str | None) -> float:
        """The acceleration limit in contact with ``device``, or in the air (None), mm/s²."""
        if device is None:
            return self.transit_accel_mm_s2
        return self.pen_accel_mm_s2_max if device == "pen" else self.roller_accel_mm_s2_max

    def as_dict(self) -> dict:
        return {
            "transit_speed_mm_s": self.transit_speed_mm_s, "transit_accel_mm_s2": self.transit_accel_mm_s2,
            "angular_speed_deg_s": math.degrees(self.angular_speed_rad_s),
            "angular_accel_deg_s2": math.degrees(self.angular_accel_rad_s2),
            "pen_speed_mm_s_max": self.pen_speed_mm_s_max, "pen_accel_mm_s2_max": self.pen_accel_mm_s2_max,
            "roller_speed_mm_s": self.roller_speed_mm_s, "roller_accel_mm_s2_max": self.roller_accel_mm_s2_max}


# --- the session as one path ----------------------------------------------------------------

@dataclass
class _Piece:
    """One stretch of the tool's path between two stops."""

    state: int                 # TRANSIT, APPROACH, CONTACT or RETRACT
    stroke: object             # the stroke in contact, left (retract) or next (approach, transit)
    points: np.ndarray         # (k, 3) mm
    quats: np.ndarray | None   # (k, 4) scalar-last (scipy) orientation at each point (transit: set later)
    speed_mm_s: np.ndarray     # (k - 1,) speed cap per segment
    accel_mm_s2: float         # tangential acceleration cap
    limit_mm_s2: float         # the acceleration limit (tangential and turning together)
    turns: bool = True         # False for a straight piece: all its acceleration is tangential


def _frames(normals: np.ndarray, tangents: np.ndarray) -> np.ndarray:
    """Tool orientations ``(k, 4)`` (scipy scalar-last quaternions): z = -normal, x = the
    tangent projected normal to z (the previous x where the tangent runs along z)."""
    z = -normals / np.linalg.norm(normals, axis=1, keepdims=True)
    x = tangents - np.einsum("ij,ij->i", tangents, z)[:, None] * z
    size = np.linalg.norm(x, axis=1)
    good = size > 1e-9
    if not good.all():
        if not good.any():     # travel undefined everywhere: any x normal to z
            helper = np.where(np.abs(z[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
            x = helper - np.einsum("ij,ij->i", helper, z)[:, None] * z
        else:                  # carry the last good x forward (backward for leading gaps)
            idx = np.maximum.accumulate(np.where(good, np.arange(len(x)), 0))
            idx[np.cumsum(good) == 0] = int(np.argmax(good))
            x = x[idx] - np.einsum("ij,ij->i", x[idx], z)[:, None] * z
        size = np.linalg.norm(x, axis=1)
    x = x / size[:, None]
    y = np.cross(z, x)
    return Rotation.from_matrix(np.stack([x, y, z], axis=2)).as_quat()


def _headings(plan, normals: np.ndarray) -> np.ndarray:
    """The direction each stroke sample's tool x axis leans to ``(k, 3)`` (projected normal
    to z by :func:`_frames`): the roller's travel; for the pen, the face's up direction (the
    canonical +y in the plan's frame), or its left-right axis where up runs within ~18 deg of
    the normal (under the chin)."""
    pose = np.asarray(plan.face.pose, dtype=np.float64)[:3, :3]
    up, side = pose @ np.array([0.0, 1.0, 0.0]), pose @ np.array([1.0, 0.0, 0.0])
    up, side = up / np.linalg.norm(up), side / np.linalg.norm(side)
    out, at, last = [], 0, None
    for s in plan.strokes:
        k = len(s.points)
        if s.device == "pen":
            n = normals[at:at + k] / np.linalg.norm(normals[at:at + k], axis=1, keepdims=True)
            steep = np.abs(n @ up) > math.cos(math.radians(18.0))
            out.append(np.where(steep[:, None], side[None], up[None]))
        else:
            tangents = np.asarray(s.tangents, dtype=np.float64)
            # the drum rolls either way: x keeps the side the last pass ended on
            if last is not None and float(np.dot(tangents[0], last)) < 0:
                tangents = -tangents
            out.append(tangents)
            last = tangents[-1]
        at += k
    return np.concatenate(out)


def _stroke_speed_caps(stroke, limits: Limits, points: np.ndarray) -> np.ndarray:
    """Speed cap per segment of a stroke followed along ``points`` (its samples, smoothed or
    not), mm/s: never over the device's, and for the pen never faster than planned in stamps
    per second: no segment in less than the plan's time (so a stamp never follows the one
    before sooner than planned), and no faster than the plan's speed scaled by how much the
    stretch between the stamps around it shrank (the stamp rate a sample states is its speed
    over that stretch). Smoothing shortens a segment a little; it is slower by as much."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    if stroke.device == "roller":
        cap = min(float(stroke.speed_mm_s), limits.roller_speed_mm_s)
        return np.full(len(seg), cap)
    times = np.asarray(stroke.times_s, dtype=np.float64)
    dt = np.diff(times)
    planned = np.where(dt > 0, seg / np.where(dt > 0, dt, 1.0), float(stroke.speed_mm_s))
    stamps = stroke.stamp_times_s
    if stamps is not None and len(stamps) > 1:
        plan_seg = np.linalg.norm(np.diff(np.asarray(stroke.points, dtype=np.float64), axis=0), axis=1)
        before = np.diff(np.interp(stamps, times, np.concatenate([[0.0], np.cumsum(plan_seg)])))
        after = np.diff(np.interp(stamps, times, np.concatenate([[0.0], np.cumsum(seg)])))
        shrink = np.where(before > 0, after / np.where(before > 0, before, 1.0), 1.0)
        gap = [np.clip(np.searchsorted(stamps, t, side="right") - 1, 0, len(shrink) - 1)
               for t in (times[:-1], times[1:])]
        plan_speed = np.where(dt > 0, plan_seg / np.where(dt > 0, dt, 1.0), float(stroke.speed_mm_s))
        planned = np.minimum(planned, plan_speed * np.minimum(shrink[gap[0]], shrink[gap[1]]))
    return np.minimum(np.minimum(planned, float(stroke.speed_mm_s)), limits.pen_speed_mm_s_max)


def _raised(face, point: np.ndarray, normal: np.ndarray, clearance_mm: float) -> np.ndarray:
    """The point above a contact at the clearance, as the plan's transitions raise it."""
    from .plan import transit

    points, _ = transit(face, point, normal, point, normal, clearance_mm, 1.0, 0.0)
    return points[1]


# --- smoothing the contact path -------------------------------------------------------------

@dataclass
class _Contact:
    """The tool's path in contact, every stroke's samples end to end (strokes in plan order)."""

    points: np.ndarray         # (V, 3) mm
    normals: np.ndarray        # (V, 3) unit: the tool's z is minus these
    moved_mm: float = 0.0      # largest distance of a point from the plan's sample
    tilted_deg: float = 0.0    # largest angle of a normal from the plan's


def check_smoothing(smooth_mm, smooth_deg=None) -> tuple:
    """``(smooth_mm, smooth_deg)`` as floats, or a CoverageError naming the value and the range.
    ``smooth_deg`` None: :data:`DEFAULT_SMOOTH_DEG` when positions are smoothed, else 0."""
    def number(name, value, top, why):
        try:
            out = float(value)
        except (TypeError, ValueError):
            out = math.nan
        if not (math.isfinite(out) and 0.0 <= out <= top):
            raise CoverageError(f"{name} = {value!r} is not a smoothing tolerance; give one from 0 (off) to "
                                f"{top:g} ({why})")
        return out

    mm = number("smooth_mm", smooth_mm, SMOOTH_MM_MAX, "the pen's depth step is 0.25 mm")
    if smooth_deg is None:
        smooth_deg = DEFAULT_SMOOTH_DEG if mm > 0 else 0.0
    return mm, number("smooth_deg", smooth_deg, SMOOTH_DEG_MAX, "the pen must stay perpendicular to the skin")


def _tube_smooth(points: np.ndarray, bases: np.ndarray, first: np.ndarray, radius: float, pinned: np.ndarray,
                 wavelength_mm: float = SMOOTH_WAVELENGTH_MM, rounds: int = 12) -> np.ndarray:
    """Offsets ``x (V, k)`` that smooth the paths ``points + bases @ x`` within a tube.

    points : (V, 3) float, the paths end to end; first : (V,) bool, True where a path starts
    bases : (V, 3, k) float, the directions each point may move along (orthonormal)
    radius : the largest offset ``|x_i|`` (the tube); pinned : (V, k) bool, offsets held at 0

    The offsets minimise a discrete smoothing spline's energy, the bending
    ``sum h |P''|^2`` (second divided differences, ``h`` the mean segment length at the
    point) plus ``sum h |x|^2 / mu`` with ``mu = (wavelength / 2 pi)^4``, whose unconstrained
    solution passes waves longer than ``wavelength_mm`` and flattens shorter ones (scan
    noise) as ``1 / (1 + mu w^4)``. The energy is a banded quadratic (each offset couples
    with two points either side), solved exactly by ``scipy.linalg.solveh_banded``
    (banded Cholesky, linear in V). The tube is an active set: points whose offset leaves
    it are held on its wall (the radial projection), held points the energy pulls inwards
    (a multiplier of the wrong sign) are let go, and the rest solved again until nothing
    changes (a few rounds; at most ``rounds``); the result is clipped to the tube, so it
    holds whatever happens. (A held point does not slide along the wall: on the 100k scan
    this lands within 0.2 % of the session an exact solver (ADMM) gave.)

    Why this: on a 100k-vertex scan's plan (~200k samples) it takes a few seconds. The same
    problem as bounded least squares (``scipy.optimize.lsq_linear``, trf/lsmr) or L-BFGS-B
    with bounds took minutes (the bending term is badly conditioned), and ADMM hundreds of
    banded solves; filtering (Gaussian, Savitzky-Golay) then clamping to the tube leaves a
    kink wherever a point is clamped or held (every pen stamp), which the acceleration limit
    slows for as it did for the noise: measured, the session got longer, not shorter.
    """
    n_points, _, k = bases.shape
    mu = (wavelength_mm / (2.0 * math.pi)) ** 4
    last = np.roll(first, -1)
    last[-1] = True
    h = np.where(last[:-1], 0.0, np.maximum(np.linalg.norm(np.diff(points, axis=0), axis=1), 1e-3))
    inner = np.flatnonzero(~first & ~last)
    hm, hp = h[inner - 1], h[inner]
    hbar = 0.5 * (hm + hp)
    root = np.sqrt(hbar)
    coef = np.stack([root / (hm * hbar), -root / (hm * hbar) - root / (hp * hbar), root / (hp * hbar)], axis=1)
    near = inner[:, None] + np.array([-1, 0, 1])                       # (m, 3) the point and its neighbours
    m = len(inner)
    shape = (m, 3, 3, k)                                               # row point, neighbour, axis, basis
    rows = np.broadcast_to(np.arange(m)[:, None, None, None] * 3 + np.arange(3)[None, None, :, None], shape)
    cols = np.broadcast_to(near[:, :, None, None] * k + np.arange(k), shape)
    bend = sp.csr_matrix(((coef[:, :, None, None] * bases[near]).ravel(), (rows.ravel(), cols.ravel())),
                         shape=(3 * m, n_points * k))
    length = 0.5 * (np.concatenate([[0.0], h]) + np.concatenate([h, [0.0]]))
    hess = (bend.T @ bend).tocsr() + sp.diags(np.repeat(np.maximum(length, 1e-3) / mu, k))
    grad = bend.T @ -np.einsum("mj,mjd->md", coef, points[near]).ravel()
    upper = 3 * k - 1                                                  # band half-width
    band = np.zeros((upper + 1, n_points * k))
    for q in range(upper + 1):
        band[upper - q, q:] = hess.diagonal(q)
    pinned = np.asarray(pinned, dtype=bool).reshape(-1)
    wall = np.zeros(n_points, dtype=bool)
    value = np.zeros(n_points * k)
    for _ in range(rounds):
        held = pinned | np.repeat(wall, k)
        ab = band.copy()
        free = ~held
        for q in range(1, upper + 1):
            ab[upper - q, q:] *= free[:-q] & free[q:]
        ab[upper] = np.where(free, ab[upper], 1.0)
        x = solveh_banded(ab, np.where(held, value, grad - hess @ (value * held)), check_finite=False)
        size = np.linalg.norm(x.reshape(n_points, k), axis=1)
        out = size > radius * (1.0 + 1e-9)
        # a point held on the wall whose energy pulls it inwards (its multiplier has the wrong
        # sign) is let go
        pull = np.einsum("ij,ij->i", (hess @ x - grad).reshape(n_points, k), value.reshape(n_points, k))
        release = wall & (pull > 0)
        if not out.any() and not release.any():
            break
        value.reshape(n_points, k)[out] = x.reshape(n_points, k)[out] * (radius / size[out])[:, None]
        wall = (wall & ~release) | out
        value.reshape(n_points, k)[release] = 0.0
    x = x.reshape(n_points, k)
    inside = radius * (1.0 - 1e-9)        # (so rounding cannot carry a point past the stated tolerance)
    return x * np.minimum(1.0, inside / np.maximum(np.linalg.norm(x, axis=1), 1e-300))[:, None]


def _contact(plan, smooth_mm: float, smooth_deg: float) -> _Contact:
    """The strokes' samples, smoothed within ``smooth_mm`` (positions) and ``smooth_deg``
    (normals) when those are positive (see :func:`_tube_smooth`).

    A point moves along its normal and sideways (the normal x the travel), never along the
    travel, so what the strokes do along their length stays where the plan put it; the two
    samples around each pen stamp move along the normal only, so a stamp, which fires
    between them, keeps its place on the skin and its spacing from the next (no stacking).
    The first and last sample of each stroke stay put, so approach, retract and the air
    moves between them are the plan's and keep their clearance. A normal tilts within the
    cone of ``smooth_deg`` around the plan's.
    """
    strokes = plan.strokes
    points = np.concatenate([np.asarray(s.points, dtype=np.float64) for s in strokes])
    normals = np.concatenate([np.asarray(s.normals, dtype=np.float64) for s in strokes])
    if smooth_mm <= 0 and smooth_deg <= 0:
        return _Contact(points, normals)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    counts = np.array([len(s.points) for s in strokes])
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first = np.zeros(len(points), dtype=bool)
    first[start] = True
    ends = np.concatenate([start, start + counts - 1])
    tangents = np.concatenate([np.asarray(s.tangents, dtype=np.float64) for s in strokes])
    along = tangents - np.einsum("ij,ij->i", tangents, normals)[:, None] * normals
    size = np.linalg.norm(along, axis=1)
    # (where the travel runs along the normal any direction normal to it will do)
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    helper = helper - np.einsum("ij,ij->i", helper, normals)[:, None] * normals
    along = np.where((size > 1e-9)[:, None], along / np.maximum(size, 1e-300)[:, None],
                     helper / np.linalg.norm(helper, axis=1, keepdims=True))
    side = np.cross(normals, along)
    moved = points
    if smooth_mm > 0:
        pinned = np.zeros((len(points), 2), dtype=bool)
        pinned[ends] = True
        for at, s in zip(start, strokes):
            if s.device == "pen" and s.stamp_times_s is not None and len(s.stamp_times_s):
                k = np.interp(s.stamp_times_s, s.times_s, np.arange(len(s.times_s), dtype=np.float64))
                pinned[at + np.floor(k).astype(np.int64), 1] = True
                pinned[at + np.ceil(k).astype(np.int64), 1] = True
        x = _tube_smooth(points, np.stack([normals, side], axis=2), first, smooth_mm, pinned)
        moved = points + x[:, :1] * normals + x[:, 1:] * side
    tilted = normals
    if smooth_deg > 0:
        pinned = np.zeros((len(points), 2), dtype=bool)
        pinned[ends] = True
        x = _tube_smooth(normals, np.stack([along, side], axis=2), first, math.tan(math.radians(smooth_deg)),
                         pinned)
        tilted = normals + x[:, :1] * along + x[:, 1:] * side
        tilted /= np.linalg.norm(tilted, axis=1, keepdims=True)
    return _Contact(moved, tilted, float(np.linalg.norm(moved - points, axis=1).max()),
                    float(np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", tilted, normals), -1.0, 1.0)).max())))


def _pieces(plan, limits: Limits, contact: _Contact) -> list:
    """The session's path in order: approach, contact, retract, transit, approach, ...; in
    contact the tool follows ``contact`` (the strokes' samples, smoothed or not)."""
    strokes = plan.strokes
    after = {t.from_stroke: t for t in plan.transitions}
    clearance = float(plan.protocol.session.clearance_mm)
    air = limits.transit_accel_mm_s2
    lengths = [len(s.points) for s in strokes]
    normals = contact.normals
    quats = _frames(normals, _headings(plan, normals))
    frames = np.split(quats, np.cumsum(lengths)[:-1])
    contact_points = np.split(contact.points, np.cumsum(lengths)[:-1])
    # the frame turns along a stroke (travel bends, the surface curves): cap the speed so it
    # turns no faster than the angular speed limit
    turned = 2.0 * np.arccos(np.clip(np.abs(np.einsum("ij,ij->i", quats[:-1], quats[1:])), 0.0, 1.0))
    seg = np.linalg.norm(np.diff(contact.points, axis=0), axis=1)
    # (a share of it: in contact the slerp is tilted onto the interpolated normal, which
    # turns the tool a little more within a segment than the slerp alone)
    turn_cap = np.split(np.concatenate([CONTACT_TURN_SHARE * limits.angular_speed_rad_s * seg
                                        / np.maximum(turned, 1e-12), [np.inf]]),
                        np.cumsum(lengths)[:-1])
    pieces = []

    def straight(state, stroke, a, b, quat):
        # a straight move along the normal: all of the acceleration goes along it
        return _Piece(state, stroke, np.stack([a, b]), np.stack([quat, quat]),
                      np.array([limits.transit_speed_mm_s]), air, air, turns=False)

    first = strokes[0]
    start = _raised(plan.face, np.asarray(first.points[0]), np.asarray(first.normals[0]), clearance)
    pieces.append(straight(APPROACH, first, start, first.points[0], frames[0][0]))
    travel = []
    for i, stroke in enumerate(strokes):
        accel = limits.accel(stroke.device)
        caps = np.minimum(_stroke_speed_caps(stroke, limits, contact_points[i]), turn_cap[i][:-1])
        pieces.append(_Piece(CONTACT, stroke, contact_points[i], frames[i],
                             caps, PATH_SHARE * accel, accel))
        if i + 1 == len(strokes):
            end = _raised(plan.face, np.asarray(stroke.points[-1]), np.asarray(stroke.normals[-1]), clearance)
            pieces.append(straight(RETRACT, stroke, stroke.points[-1], end, frames[i][-1]))
            break
        move = after.get(stroke.id)
        nxt = strokes[i + 1]
        if move is None or move.to_stroke != nxt.id or len(move.points) < 4:
            raise CoverageError(f"the plan has no transition from stroke {stroke.id} to stroke {nxt.id} (a plan has "
                                "one between every two strokes: was it edited?); write the plan again")
        pts = np.asarray(move.points, dtype=np.float64)
        pieces.append(straight(RETRACT, stroke, pts[0], pts[1], frames[i][-1]))
        travel.append(_Piece(TRANSIT, nxt, pts[1:-1], None, np.full(len(pts) - 3, limits.transit_speed_mm_s),
                             PATH_SHARE * air, air))
        pieces.append(travel[-1])
        pieces.append(straight(APPROACH, nxt, pts[-2], pts[-1], frames[i + 1][0]))
    if travel:
        _turn_in_the_air(travel, [f[-1] for f in frames[:-1]], [f[0] for f in frames[1:]], limits)
    return pieces


def _turn_in_the_air(travel: list, q_from: list, q_to: list, limits: Limits) -> None:
    """Orient the travels: the tool turns by slerp in proportion to the arc length, so its
    turn rate is (angle / length) x speed, and the speed and acceleration caps follow."""
    r0 = Rotation.from_quat(np.asarray(q_from))
    turn = (r0.inv() * Rotation.from_quat(np.asarray(q_to))).as_rotvec()
    angle = np.linalg.norm(turn, axis=1)
    fracs, owner = [], []
    for k, pc in enumerate(travel):
        seg = np.linalg.norm(np.diff(pc.points, axis=0), axis=1)
        length = float(seg.sum())
        fracs.append(np.concatenate([[0.0], np.cumsum(seg)]) / length if length > 0
                     else np.linspace(0.0, 1.0, len(pc.points)))
        owner.append(np.full(len(pc.points), k))
        if angle[k] > 1e-9 and length > 0:
            per_mm = angle[k] / length
            pc.speed_mm_s = np.minimum(pc.speed_mm_s, limits.angular_speed_rad_s / per_mm)
            pc.accel_mm_s2 = min(pc.accel_mm_s2, limits.angular_accel_rad_s2 / per_mm)
    owner = np.concatenate(owner)
    quats = _slerp(np.asarray(q_from)[owner], turn[owner], np.concatenate(fracs))
    for pc, q in zip(travel, np.split(quats, np.cumsum([len(pc.points) for pc in travel])[:-1])):
        pc.quats = q


@dataclass
class _Path:
    """The pieces joined into one polyline with per-vertex and per-segment attributes."""

    points: np.ndarray     # (V, 3)
    quats: np.ndarray      # (V, 4) scalar last
    s: np.ndarray          # (V,) arc length from the start, mm
    piece: np.ndarray      # (V - 1,) piece index of each segment (-1: the zero-length joint between pieces)
    cap: np.ndarray        # (V - 1,) speed cap
    accel: np.ndarray      # (V - 1,) tangential acceleration cap
    stop: np.ndarray       # (V,) bool: the tool is at rest here
    limit: np.ndarray      # (V,) acceleration limit at each vertex
    turns: np.ndarray      # (V,) bool: the vertex may turn (its piece is not a straight move)
    rotvec: np.ndarray     # (V - 1, 3) body-frame rotation from each vertex's orientation to the next
    start: np.ndarray      # (P,) first vertex of each piece


def _slerp(q0: np.ndarray, rotvec: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Orientations ``q0 * exp(frac * rotvec)`` (scalar-last quaternions ``(m, 4)``): from
    ``q0`` a fraction of the body-frame turn ``rotvec`` (m, 3), i.e. spherical interpolation.
    (The Hamilton product written out: ``Rotation.__mul__`` is several times slower here.)"""
    r = frac[:, None] * rotvec
    angle = np.linalg.norm(r, axis=1)
    half = 0.5 * angle
    # sin(angle / 2) / angle, with its series near 0
    scale = np.where(angle > 1e-8, np.sin(half) / np.where(angle > 1e-8, angle, 1.0), 0.5 - angle ** 2 / 48.0)
    bx, by, bz = (scale[:, None] * r).T
    bw = np.cos(half)
    ax, ay, az, aw = q0.T
    return np.stack([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz], axis=1)


def _join(pieces: list) -> _Path:
    """Join the pieces into one path, a zero-length joint segment between two pieces."""
    counts = np.array([len(pc.points) for pc in pieces])
    points = np.concatenate([pc.points for pc in pieces])
    quats = np.concatenate([pc.quats for pc in pieces])
    vertex_piece = np.repeat(np.arange(len(pieces)), counts)
    # segment j joins vertex j and j + 1; the one leaving a piece's last vertex is a joint
    last = np.cumsum(counts) - 1
    start = np.concatenate([[0], last[:-1] + 1])
    piece = vertex_piece[:-1].copy()
    piece[last[:-1]] = -1
    inside = piece >= 0
    cap = np.zeros(len(points) - 1)
    cap[inside] = np.concatenate([pc.speed_mm_s for pc in pieces])
    accel = np.array([pc.accel_mm_s2 for pc in pieces])[vertex_piece[:-1]]
    stop = np.zeros(len(points), dtype=bool)
    stop[start] = stop[last] = True
    rotvec = (Rotation.from_quat(quats[:-1]).inv() * Rotation.from_quat(quats[1:])).as_rotvec()
    rotvec[~inside] = 0.0
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return _Path(points, quats, np.concatenate([[0.0], np.cumsum(seg)]), piece, cap, accel, stop,
                 np.array([pc.limit_mm_s2 for pc in pieces])[vertex_piece],
                 np.array([pc.turns for pc in pieces])[vertex_piece], rotvec, start)


# --- the speed profile ----------------------------------------------------------------------

def _along(path: _Path, s: np.ndarray) -> np.ndarray:
    """Points ``(m, 3)`` of the path at arc lengths ``s`` (clamped to its ends)."""
    i = np.clip(np.searchsorted(path.s, s, side="right") - 1, 0, len(path.s) - 2)
    ds = path.s[i + 1] - path.s[i]
    frac = np.clip((s - path.s[i]) / np.where(ds > 0, ds, 1.0), 0.0, 1.0)
    return path.points[i] + frac[:, None] * (path.points[i + 1] - path.points[i])


def _turn_speed(path: _Path, vcap: np.ndarray, dt: float) -> np.ndarray:
    """Vertex speeds ``(V,)`` capped for turning.

    Positions sampled ``dt`` apart while passing a vertex at speed ``v`` lie ``w = v·dt``
    apart along the path, so their second difference is ``P(c + w) - 2 P(c) + P(c - w)``
    for a centre ``c``; along a polyline its largest value is at ``c`` = the vertex or the
    vertex ± w. Added to the tangential acceleration (at most ``PATH_SHARE`` of the limit,
    along the travel), it must stay within the limit: the part of it along the travel adds
    up, the rest adds in quadrature. Bisection on ``v`` finds the largest such speed.
    """
    d = np.diff(path.points, axis=0)
    size = np.linalg.norm(d, axis=1)
    u = d / np.maximum(size, 1e-300)[:, None]
    before = np.concatenate([u[:1], u])
    after = np.concatenate([u, u[-1:]])
    inner = np.concatenate([[False], (size[:-1] > 0) & (size[1:] > 0), [False]]) & ~path.stop
    cos = np.clip(np.einsum("ij,ij->i", before, after), -1.0, 1.0)
    theta = np.where(inner, np.arccos(cos), 0.0)
    # cheap bound first: the second difference is at most w x the turns within 2w of the
    # centre, so a vertex whose nearby turns are small enough at full speed is left alone
    reach = 2.0 * vcap * dt
    total = np.concatenate([[0.0], np.cumsum(theta)])
    lo = np.searchsorted(path.s, path.s - reach, side="left")
    hi = np.searchsorted(path.s, path.s + reach, side="right")
    bound = PATH_SHARE * path.limit + vcap * (total[hi] - total[lo]) / dt
    todo = np.flatnonzero((bound > path.limit) & (vcap > 0) & path.turns)
    out = vcap.copy()
    if not len(todo):
        return out
    limit = CORNER_SHARE * path.limit[todo]
    tangential = PATH_SHARE * path.limit[todo]
    s0, ua, ub = path.s[todo], before[todo], after[todo]

    def worst(v):
        w = v * dt
        pts = [_along(path, s0 + k * w) for k in (-2, -1, 0, 1, 2)]
        excess = np.zeros(len(v))
        for c in (1, 2, 3):
            second = (pts[c + 1] - 2.0 * pts[c] + pts[c - 1]) / dt ** 2
            par = np.maximum(np.abs(np.einsum("ij,ij->i", second, ua)), np.abs(np.einsum("ij,ij->i", second, ub)))
            perp2 = np.maximum(np.einsum("ij,ij->i", second, second) - par ** 2, 0.0)
            excess = np.maximum(excess, (tangential + par) ** 2 + perp2 - limit ** 2)
        return excess

    ok = worst(vcap[todo]) <= 0
    todo, limit, tangential, s0, ua, ub = (a[~ok] for a in (todo, limit, tangential, s0, ua, ub))
    lo_v, hi_v = np.zeros(len(todo)), vcap[todo].copy()
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo_v + hi_v)
        good = worst(mid) <= 0
        lo_v = np.where(good, mid, lo_v)
        hi_v = np.where(good, hi_v, mid)
    out[todo] = lo_v
    return out


def _speed_profile(path: _Path, dt: float) -> np.ndarray:
    """Vertex speeds ``(V,)`` mm/s: the fastest profile under the caps, with v² changing by at
    most ``2·a·Δs`` per segment, forward (speeding up) and backward (slowing down)."""
    cap = path.cap
    vcap = np.minimum(np.concatenate([cap, [0.0]]), np.concatenate([[0.0], cap]))
    vcap[path.stop] = 0.0
    vcap = _turn_speed(path, vcap, dt)
    limit = vcap ** 2
    # w[i] = min over j <= i of (limit[j] + c[i] - c[j]): a running minimum, no Python loop
    c = np.concatenate([[0.0], np.cumsum(2.0 * path.accel * np.diff(path.s))])
    w = c + np.minimum.accumulate(limit - c)
    w = np.minimum(w, (np.minimum.accumulate((w + c)[::-1]))[::-1] - c)
    return np.sqrt(np.maximum(w, 0.0))


# --- the trajectory -------------------------------------------------------------------------

def check_rate(rate_hz) -> float:
    """``rate_hz`` as a float, or a CoverageError naming the value and the range."""
    try:
        rate = float(rate_hz)
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and RATE_HZ_MIN <= rate <= RATE_HZ_MAX):
        raise CoverageError(f"rate_hz = {rate_hz!r} is not a sampling rate; give one from {RATE_HZ_MIN:g} to "
                            f"{RATE_HZ_MAX:g} Hz (robot controllers commonly take 125, 250, 500 or 1000)")
    return rate


def trajectory(plan, rate_hz: float = DEFAULT_RATE_HZ, *, source: str | None = None,
               smooth_mm: float = DEFAULT_SMOOTH_MM, smooth_deg: float | None = None) -> Trajectory:
    """The plan's session as tool poses sampled every ``1 / rate_hz`` s.

    The path is the plan's (approach, stroke, retract, travel ...), its contact smoothed
    within ``smooth_mm`` (positions, mm) and ``smooth_deg`` (tool axis, degrees; None: 2
    when ``smooth_mm`` > 0, else 0) so the tool does not chase the scan's noise; 0 and 0
    follow the plan's samples exactly. The timing is planned again within the protocol's
    speed and acceleration limits (see the module doc), so the session lasts longer than
    ``plan.time_s``. ``source`` names the plan file in the metadata.
    """
    rate = check_rate(rate_hz)
    smooth_mm, smooth_deg = check_smoothing(smooth_mm, smooth_deg)
    if not plan.strokes:
        raise CoverageError("the plan has no strokes: nothing to export; plan a face with treatable skin")
    limits = Limits.from_protocol(plan.protocol)
    contact = _contact(plan, smooth_mm, smooth_deg)
    pieces = _pieces(plan, limits, contact)
    path = _join(pieces)
    dt = 1.0 / rate
    motion = _Motion(path, _speed_profile(path, dt))
    duration = float(motion.times[-1])

    n = math.floor(duration * rate + 1e-9)
    n = n + 1 if n / rate >= duration - 1e-12 else n + 2
    t = np.arange(n) / rate
    idx, along, speed, accel = motion.at(t)
    ds = np.diff(path.s)[idx]
    frac = np.where(ds > 0, along / np.where(ds > 0, ds, 1.0), 0.0)
    position = path.points[idx] + frac[:, None] * (path.points[idx + 1] - path.points[idx])
    # per-sample piece (a joint segment belongs to the piece before it)
    seg_piece = np.maximum.accumulate(np.where(path.piece >= 0, path.piece, 0))
    pidx = seg_piece[idx]
    states = np.array([p.state for p in pieces], dtype=np.int8)
    state = states[pidx]

    quat = _slerp(path.quats[idx], path.rotvec[idx], frac)
    # in contact the slerp's z is tilted onto the interpolated normal between two path
    # samples (across a sharp turn of the path a slerp alone would lean off it); the tilt is
    # the least rotation that does it, so the turn about z stays the slerp's
    touching = np.flatnonzero(state == CONTACT)
    if len(touching):
        z0 = Rotation.from_quat(path.quats[idx[touching]]).as_matrix()[:, :, 2]
        z1 = Rotation.from_quat(path.quats[idx[touching] + 1]).as_matrix()[:, :, 2]
        w = frac[touching][:, None]
        want = (1 - w) * z0 + w * z1
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        slerped = Rotation.from_quat(quat[touching])
        have = slerped.as_matrix()[:, :, 2]
        axis = np.cross(have, want)
        angle = np.arctan2(np.linalg.norm(axis, axis=1), np.einsum("ij,ij->i", have, want))
        axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-300)
        quat[touching] = (Rotation.from_rotvec(axis * angle[:, None]) * slerped).as_quat()
    wxyz = np.roll(quat, 1, axis=1)
    flips = np.concatenate([[False], np.einsum("ij,ij->i", wxyz[1:], wxyz[:-1]) < 0])
    wxyz[np.cumsum(flips) % 2 == 1] *= -1.0
    codes = np.array([DEVICE_CODES[p.stroke.device] for p in pieces], dtype=np.int8)
    piece_stroke = np.array([p.stroke.id for p in pieces], dtype=np.int32)
    in_contact = state == CONTACT
    stroke_id = np.where(in_contact, piece_stroke[pidx], -1).astype(np.int32)
    depth = np.array([p.stroke.depth_mm for p in pieces], dtype=np.float64)[pidx]
    needle = np.array([p.stroke.needle_length_mm for p in pieces], dtype=np.float64)[pidx]

    # pen stamps: where they are along the path is fixed; when they fire follows the new timing
    s_sample = path.s[idx] + along
    stamp_s, stamp_stroke = [], []
    firing = np.zeros(n, dtype=bool)
    stamp_hz = np.zeros(n)
    bounds = np.searchsorted(pidx, np.arange(len(pieces) + 1))
    for p, pc in enumerate(pieces):
        if pc.state != CONTACT:
            continue
        rows = slice(bounds[p], bounds[p + 1])
        stroke = pc.stroke
        if stroke.device == "roller":
            firing[rows] = True
            continue
        if stroke.stamp_times_s is None or not len(stroke.stamp_times_s):
            continue
        along_stroke = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pc.points, axis=0), axis=1))])
        where = path.s[path.start[p]] + np.interp(stroke.stamp_times_s, stroke.times_s, along_stroke)
        stamp_s.append(where)
        stamp_stroke.append(np.full(len(where), stroke.id, dtype=np.int32))
        here = s_sample[rows]
        inside = (here >= where[0] - 1e-9) & (here <= where[-1] + 1e-9)
        firing[rows] |= inside
        if len(where) > 1:     # (kept only where the sample turns out to be firing)
            gap = np.diff(where)
            k = np.clip(np.searchsorted(where, here, side="right") - 1, 0, len(gap) - 1)
            stamp_hz[rows] = speed[rows] / np.maximum(gap[k], 1e-9)
        else:                  # a lone stamp has no spacing: the plan's rate for it
            stamp_hz[rows] = float(stroke.stamp_hz or 0.0)
    if stamp_s:
        stamp_s = np.concatenate(stamp_s)
        stamp_stroke = np.concatenate(stamp_stroke)
    else:
        stamp_s, stamp_stroke = np.empty(0), np.empty(0, dtype=np.int32)
    stamp_t, stamp_pos = motion.passing(stamp_s)
    # each stamp is counted on the sample at or after it, or on the one before if only that
    # one is still in contact with its stroke (a stamp right at the end of a stroke)
    k = np.minimum(np.ceil(stamp_t * rate - 1e-9).astype(np.int64), n - 1)
    back = (stroke_id[k] != stamp_stroke) & (stroke_id[np.maximum(k - 1, 0)] == stamp_stroke)
    k = np.where(back, k - 1, k)
    fired = np.bincount(k, minlength=n).astype(np.int32)
    firing |= fired > 0
    state = np.where(in_contact & firing, FIRING, state).astype(np.int8)
    stamp_hz = np.where(state == FIRING, stamp_hz, 0.0)

    meta = _metadata(plan, rate, n, duration, limits, source, stamp_t)
    meta["smoothing"] = _smoothing_meta(smooth_mm, smooth_deg, contact)
    meta["chord_error_mm"] = _chord_error(path, motion.times, position, rate)
    return Trajectory(rate, t, position, wxyz, speed, accel, state, codes[pidx], stroke_id, depth, needle,
                      stamp_hz, fired, stamp_t, stamp_pos, stamp_stroke, meta)


class _Motion:
    """The time-optimal motion along a path given its vertex speeds: on each segment, speed up
    at the segment's acceleration cap, cruise at its speed cap, slow down to the next vertex's
    speed (exact, so a stretch between two stops needs no extra vertices)."""

    def __init__(self, path: _Path, v: np.ndarray):
        self.path = path
        ds = np.diff(path.s)
        a = np.where(path.accel > 0, path.accel, 1.0)
        v0, v1 = v[:-1], v[1:]
        peak = np.sqrt(np.maximum(0.5 * (v0 ** 2 + v1 ** 2) + a * ds, 0.0))
        peak = np.maximum(np.minimum(peak, np.maximum(path.cap, np.maximum(v0, v1))), np.maximum(v0, v1))
        d1 = np.clip((peak ** 2 - v0 ** 2) / (2 * a), 0.0, ds)
        d3 = np.clip((peak ** 2 - v1 ** 2) / (2 * a), 0.0, ds - d1)
        d2 = ds - d1 - d3
        self.v0, self.peak, self.a, self.d1, self.d2 = v0, peak, a, d1, d2
        self.t1 = (peak - v0) / a
        self.t2 = np.where(peak > 0, d2 / np.where(peak > 0, peak, 1.0), 0.0)
        self.t3 = (peak - v1) / a
        self.times = np.concatenate([[0.0], np.cumsum(self.t1 + self.t2 + self.t3)])

    def at(self, t: np.ndarray):
        """At times ``t`` (k,): the segment, the distance along it (mm), the speed (mm/s) and
        the tangential acceleration (mm/s²; 0 once the motion has ended)."""
        i = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.v0) - 1)
        tau = np.clip(t - self.times[i], 0.0, self.times[i + 1] - self.times[i])
        v0, peak, a, t1, t2 = self.v0[i], self.peak[i], self.a[i], self.t1[i], self.t2[i]
        up = np.minimum(tau, t1)
        cruise = np.clip(tau - t1, 0.0, t2)
        down = np.maximum(tau - t1 - t2, 0.0)
        dist = v0 * up + 0.5 * a * up ** 2 + peak * cruise + peak * down - 0.5 * a * down ** 2
        speed = np.where(tau < t1, v0 + a * tau, np.where(tau <= t1 + t2, peak, peak - a * down))
        accel = np.where(tau < t1, a, np.where(tau <= t1 + t2, 0.0, -a))
        ended = t >= self.times[-1]
        ds = np.diff(self.path.s)[i]
        return i, np.clip(dist, 0.0, ds), np.where(ended, 0.0, speed), np.where(ended, 0.0, accel)

    def passing(self, s: np.ndarray):
        """When the tool passes arc lengths ``s`` (m,) and where it is then: ``(times (m,), points (m, 3))``."""
        path = self.path
        if not len(s):
            return np.empty(0), np.empty((0, 3))
        i = np.clip(np.searchsorted(path.s, s, side="right") - 1, 0, len(path.s) - 2)
        ds = np.diff(path.s)[i]
        d = np.clip(s - path.s[i], 0.0, ds)
        v0, peak, a, d1, d2 = self.v0[i], self.peak[i], self.a[i], self.d1[i], self.d2[i]
        up = np.minimum(d, d1)
        v_up = np.sqrt(v0 ** 2 + 2 * a * up)
        tau = np.where(v0 + v_up > 0, 2 * up / np.where(v0 + v_up > 0, v0 + v_up, 1.0), 0.0)
        cruise = np.clip(d - d1, 0.0, d2)
        tau += np.where(peak > 0, cruise / np.where(peak > 0, peak, 1.0), 0.0)
        down = np.maximum(d - d1 - d2, 0.0)
        v_down = np.sqrt(np.maximum(peak ** 2 - 2 * a * down, 0.0))
        tau += np.where(peak + v_down > 0, 2 * down / np.where(peak + v_down > 0, peak + v_down, 1.0), 0.0)
        frac = np.where(ds > 0, d / np.where(ds > 0, ds, 1.0), 0.0)
        return self.times[i] + tau, path.points[i] + frac[:, None] * (path.points[i + 1] - path.points[i])


def _chord_error(path: _Path, vertex_t: np.ndarray, position: np.ndarray, rate: float) -> float:
    """How far the path strays from the straight lines joining consecutive samples (mm): what
    a controller interpolating linearly between the samples would cut off at the corners."""
    k = np.clip(np.floor(vertex_t * rate).astype(np.int64), 0, len(position) - 2)
    a, b = position[k], position[k + 1]
    ab = b - a
    f = np.clip(np.einsum("ij,ij->i", path.points - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-300),
                0.0, 1.0)
    return float(np.linalg.norm(path.points - (a + f[:, None] * ab), axis=1).max())


def _smoothing_meta(smooth_mm: float, smooth_deg: float, contact: _Contact) -> dict:
    return {"position_mm": smooth_mm, "orientation_deg": smooth_deg,
            "wavelength_mm": SMOOTH_WAVELENGTH_MM if smooth_mm > 0 or smooth_deg > 0 else 0.0,
            "max_position_offset_mm": contact.moved_mm, "max_orientation_offset_deg": contact.tilted_deg,
            "method": SMOOTHING_TEXT if smooth_mm > 0 or smooth_deg > 0 else "off: contact follows the plan's samples"}


def _metadata(plan, rate: float, n: int, duration: float, limits: Limits, source, stamp_t) -> dict:
    face = plan.face
    return {
        "format": FORMAT, "version": VERSION, "generator": f"coverage {__version__}",
        "source": {"plan": source, "device": plan.device, "strokes": len(plan.strokes),
                   "plan_time_s": float(plan.time_s), "face": getattr(face, "source", None),
                   "protocol": getattr(plan.protocol, "name", None)},
        "rate_hz": rate, "samples": n, "duration_s": duration, "stamps": len(stamp_t),
        "frame": FRAME_TEXT, "quaternion": QUATERNION_TEXT,
        "units": {"time": "s", "length": "mm", "speed": "mm/s", "acceleration": "mm/s2", "stamp_rate": "Hz"},
        "states": {str(i): name for i, name in enumerate(STATES)},
        "devices": {str(code): name for name, code in DEVICE_CODES.items()},
        "columns": [c[0] for c in _CSV_COLUMNS],
        "limits": limits.as_dict(),
        "timing": ("speeds re-planned within the limits: stops at every touch-down, lift-off and raised point; "
                   f"accelerations within the limits for positions sampled at {rate:g} Hz"),
    }


# --- files ----------------------------------------------------------------------------------

def _format_of(path: Path, fmt: str | None) -> str:
    suffix = path.suffix.lower().lstrip(".")
    fmt = suffix if fmt is None else str(fmt).lower()
    if fmt not in FORMATS:
        raise CoverageError(f"{path}: trajectory format {fmt or '(none)'!r} is not known; use one of "
                            f"{', '.join(FORMATS)} (--format, or the file suffix)")
    return fmt


def check_trajectory_output(path, fmt: str | None = None) -> str:
    """Refuse a bad output before any work: unknown format, suffix not matching it, bad place."""
    path = Path(path)
    fmt = _format_of(path, fmt)
    check_output(path, (f".{fmt}",))
    return fmt


def write_trajectory(traj: Trajectory, path, fmt: str | None = None) -> Path:
    """Write a trajectory as ``csv``, ``npz`` or ``json`` (default: from the suffix), atomically."""
    path = Path(path)
    fmt = check_trajectory_output(path, fmt)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            _write_csv(traj, tmp)
        elif fmt == "npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, metadata=np.array(json.dumps(traj.meta)),
                                    **{k: getattr(traj, k) for k in _SAMPLE_ARRAYS + _STAMP_ARRAYS})
        else:
            doc = dict(traj.meta)
            doc["samples_table"] = {name: _column(traj, attr, comp, fmt_).tolist()
                                    for name, attr, comp, fmt_ in _CSV_COLUMNS}
            doc["stamp_events"] = {"time_s": np.round(traj.stamp_time_s, 6).tolist(),
                                   "position_mm": np.round(traj.stamp_position_mm, 4).tolist(),
                                   "stroke_id": traj.stamp_stroke.tolist()}
            tmp.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False), encoding="utf-8")
    return path


def _column(traj: Trajectory, attr: str, comp, fmt: str) -> np.ndarray:
    values = getattr(traj, attr)
    values = values if comp is None else values[:, comp]
    if fmt == "%d":
        return values.astype(np.int64)
    digits = int(fmt[2:-1])
    return np.round(values.astype(np.float64), digits)


def header_lines(meta: dict) -> list:
    """The commented header of a CSV trajectory (without the '# ')."""
    states = ", ".join(f"{k} {v}" for k, v in meta["states"].items())
    devices = ", ".join(f"{k} {v}" for k, v in meta["devices"].items())
    src = meta["source"]
    limits = ", ".join(f"{k} {v:g}" for k, v in meta["limits"].items())
    return [
        f"format: {meta['format']} version {meta['version']} ({meta['generator']})",
        (f"source plan: {src['plan'] or '(in memory)'}; device {src['device']}, {src['strokes']} strokes, "
         f"plan time {src['plan_time_s']:.3f} s; face {src['face']}; protocol {src['protocol']}"),
        (f"rate_hz: {meta['rate_hz']:g} (time_s = k / rate_hz); samples: {meta['samples']}; "
         f"duration_s: {meta['duration_s']:.6f}; stamps: {meta['stamps']}"),
        f"frame: {meta['frame']}",
        f"quaternion: {meta['quaternion']}",
        ("units: time s, positions mm, speed mm/s, accel (tangential, signed) mm/s2, depth and needle length mm, "
         "stamp rate Hz"),
        f"state codes: {states} (firing: in contact and puncturing)",
        f"device codes: {devices} (in the air: the stroke left while retracting, else the next one)",
        ("stroke_id: -1 in the air; stamps: pen stamps fired since the previous sample; "
         "stamp_hz: pen stamps per second to keep the planned spacing (0 when not firing)"),
        f"limits: {limits}",
        f"timing: {meta['timing']}",
        _smoothing_line(meta.get("smoothing")),
        "metadata: " + json.dumps(meta, separators=(",", ":")),
    ]


def _smoothing_line(smoothing) -> str:
    if smoothing is None:      # a version 2 trajectory
        return "smoothing: none (version 2: the contact follows the plan's samples)"
    return (f"smoothing: position_mm {smoothing['position_mm']:g}, orientation_deg {smoothing['orientation_deg']:g}, "
            f"wavelength_mm {smoothing['wavelength_mm']:g} (largest offsets used: "
            f"{smoothing['max_position_offset_mm']:.4f} mm, {smoothing['max_orientation_offset_deg']:.3f} deg); "
            f"{smoothing['method']}")


def _write_csv(traj: Trajectory, tmp: Path, chunk: int = 65536) -> None:
    row = ",".join(fmt for *_, fmt in _CSV_COLUMNS) + "\n"
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("".join(f"# {line}\n" for line in header_lines(traj.meta)))
        fh.write(",".join(c[0] for c in _CSV_COLUMNS) + "\n")
        for first in range(0, len(traj), chunk):
            cols = [_column(traj, attr, comp, fmt)[first:first + chunk].tolist() for _, attr, comp, fmt in _CSV_COLUMNS]
            fh.write("".join(map(row.__mod__, zip(*cols))))


def read_trajectory(path) -> Trajectory:
    """A trajectory written by :func:`write_trajectory` (csv, npz or json)."""
    path = Path(path)
    if not path.is_file():
        raise CoverageError(f"{path}: trajectory file not found")
    fmt = _format_of(path, None)
    try:
        if fmt == "npz":
            with np.load(path, allow_pickle=False) as data:
                meta = _check_meta(json.loads(str(data["metadata"])), path)
                arrays = {k: data[k] for k in _SAMPLE_ARRAYS + _STAMP_ARRAYS}
        elif fmt == "json":
            meta = _check_meta(json.loads(path.read_text(encoding="utf-8")), path)
            table = meta.pop("samples_table")
            events = meta.pop("stamp_events")
            arrays = _from_columns({k: np.asarray(v) for k, v in table.items()})
            arrays["stamp_time_s"] = np.asarray(events["time_s"], dtype=np.float64)
            arrays["stamp_position_mm"] = np.asarray(events["position_mm"], dtype=np.float64).reshape(-1, 3)
            arrays["stamp_stroke"] = np.asarray(events["stroke_id"])
        else:
            meta, arrays = _read_csv(path)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CoverageError(f"{path}: not a readable trajectory ({type(exc).__name__}: {exc}); "
                            "write it again with coverage-planner export") from exc
    arrays = {k: np.asarray(v, dtype=_DTYPES.get(k, np.float64)) for k, v in arrays.items()}
    return Trajectory(float(meta["rate_hz"]), meta=meta, **arrays)


def _check_meta(meta, path: Path) -> dict:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CoverageError(f"{path}: not a coverage trajectory (format {found!r}); "
                            "write it again with coverage-planner export")
    if meta.get("version") not in READ_VERSIONS:
        raise CoverageError(f"{path}: trajectory version {meta.get('version')!r} is not supported (this reads "
                            f"{', '.join(map(str, READ_VERSIONS))}); export the plan again")
    return meta


def _from_columns(table: dict) -> dict:
    out = {}
    for name, attr, comp, _ in _CSV_COLUMNS:
        if comp is None:
            out[attr] = table[name]
    out["position_mm"] = np.stack([table["x_mm"], table["y_mm"], table["z_mm"]], axis=1).astype(np.float64)
    out["quaternion_wxyz"] = np.stack([table[k] for k in ("qw", "qx", "qy", "qz")], axis=1).astype(np.float64)
    return out


def _read_csv(path: Path):
    meta = None
    names = None
    skip = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            skip += 1
            if line.startswith("# metadata: "):
                meta = _check_meta(json.loads(line[len("# metadata: "):]), path)
            elif not line.startswith("#"):
                names = line.strip().split(",")
                break
    if meta is None or names is None:
        raise ValueError("no '# metadata:' header line or no column row")
    if names != [c[0] for c in _CSV_COLUMNS]:
        raise ValueError(f"columns {names} are not {[c[0] for c in _CSV_COLUMNS]}")
    data = _load_rows(path, len(names), skip)
    table = {name: data[:, j] for j, name in enumerate(names)}
    arrays = _from_columns(table)
    # the CSV keeps stamps as per-sample counts only: their times are the samples' that count them
    counts = arrays["stamps"].astype(np.int64)
    arrays["stamp_time_s"] = np.repeat(arrays["time_s"], counts)
    arrays["stamp_stroke"] = np.repeat(arrays["stroke_id"], counts)
    arrays["stamp_position_mm"] = np.repeat(arrays["position_mm"], counts, axis=0)
    return meta, arrays


def _load_rows(path: Path, width: int, skip: int) -> np.ndarray:
    data = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, encoding="utf-8")
    if data.shape[1] != width:
        raise ValueError(f"rows have {data.shape[1]} values, expected {width}")
    return data
