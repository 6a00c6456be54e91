"""Smoothing the contact path on export: within the stated tolerances, stamps in place, faster.

A straight pen line with a known zigzag is worked by hand: the tube (0.1 mm) holds the
straight line, so the smoothed path is straight to within the spline's leftover ripple, the
stamps stay where they were (they sit on samples that move along the normal only) and the
tool no longer slows for every kink. The default plan is checked against its limits and the
plan; a synthetic noisy scan's pen session against the same export unsmoothed.
"""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from synthetic import deformed_face, make_scan

from coverage import CoverageError, Face, Protocol, export
from coverage.bench import make_plan
from coverage.export import CONTACT, FIRING, read_trajectory, trajectory, write_trajectory
from coverage.plan import Plan, Stroke

RATE = 250.0
DT = 1.0 / RATE
TOL_MM = export.DEFAULT_SMOOTH_MM
TOL_DEG = export.DEFAULT_SMOOTH_DEG
Z0 = 200.0


def zigzag_pen(amplitude_mm=0.05, length_mm=20.0, step_mm=0.25, stamp_every_mm=1.0, speed_mm_s=100.0):
    """A pen stroke along +x at z = Z0 (normal +z), its samples pushed alternately up and down
    by ``amplitude_mm`` along the normal and, between stamps, sideways (+-y) by as much."""
    n = round(length_mm / step_mm) + 1
    s = np.linspace(0.0, length_mm, n)
    k = np.arange(n)
    up = amplitude_mm * np.where(k % 2, -1.0, 1.0)
    side = amplitude_mm * np.array([0.0, 1.0, 0.0, -1.0])[k % 4]      # 0 on every 4th sample: the stamps'
    up[[0, -1]] = side[[0, -1]] = 0.0
    points = np.stack([s, side, Z0 + up], axis=1)
    stamp_s = np.arange(stamp_every_mm, length_mm - 1e-9, stamp_every_mm)
    stamp_k = np.round(stamp_s / step_mm).astype(int)
    times = s / speed_mm_s
    return Stroke(0, "pen", "forehead", 0, 0, 0.0, 0.5, 0.5, speed_mm_s, np.zeros((n, 2)), np.zeros(n, dtype=np.int64),
                  np.zeros((n, 3)), points, np.tile([0.0, 0.0, 1.0], (n, 1)), np.tile([1.0, 0.0, 0.0], (n, 1)), times,
                  stamp_hz=speed_mm_s / stamp_every_mm, stamp_uv=np.zeros((len(stamp_s), 2)),
                  stamp_points=points[stamp_k], stamp_times_s=stamp_s / speed_mm_s,
                  cartridge={"needles": 12, "footprint_diameter_mm": 7.0})


def one_stroke_plan(face, zones, stroke):
    return Plan(face, zones, Protocol.default(), "pen", [stroke], [], np.empty((0, 3)), np.empty((0, 2)),
                np.empty(0, dtype=np.int64), np.empty(0))


@pytest.fixture(scope="module")
def zigzag(default_face, default_zones):
    return one_stroke_plan(default_face, default_zones, zigzag_pen())


def bending(points):
    """Largest second difference of consecutive samples, mm."""
    return float(np.linalg.norm(np.diff(points, 2, axis=0), axis=1).max())


# --- the zigzag line by hand ------------------------------------------------------------------

def test_zigzag_smoothed_within_the_tube_and_straight(zigzag):
    stroke = zigzag.strokes[0]
    contact = export._contact(zigzag, TOL_MM, TOL_DEG)
    offset = contact.points - stroke.points
    assert np.linalg.norm(offset, axis=1).max() <= TOL_MM * (1 + 1e-9)     # every sample within the tube
    assert np.abs(offset[:, 0]).max() < 1e-12                              # never along the travel (x)
    assert np.array_equal(contact.points[[0, -1]], stroke.points[[0, -1]])  # touch-down and lift-off in place
    # the zigzag (+-0.05 mm, sideways +-0.05 mm) fits in the 0.1 mm tube: the straight line is
    # allowed, and a 0.5 mm wave passes the 4 mm spline as 1 / (1 + (4 / 0.5)^4) ~ 1/4100
    assert bending(stroke.points) == pytest.approx(2 * 0.05 * math.sqrt(5), rel=1e-6)
    assert bending(contact.points[2:-2]) < 0.01 * bending(stroke.points)
    assert np.abs(contact.points[2:-2, 1:] - [0.0, Z0]).max() < 0.01
    # flat skin: the normals are all +z and stay so
    assert np.allclose(contact.normals, [0.0, 0.0, 1.0], atol=1e-12)


def test_zigzag_stamps_keep_their_place(zigzag):
    raw = trajectory(zigzag, RATE, smooth_mm=0.0)
    smooth = trajectory(zigzag, RATE)
    assert len(smooth.stamp_time_s) == len(raw.stamp_time_s) == 19
    move = smooth.stamp_position_mm - raw.stamp_position_mm
    assert np.linalg.norm(move, axis=1).max() <= TOL_MM * (1 + 1e-9)
    assert np.abs(move[:, :2]).max() < 1e-12                               # only along the normal (z)
    assert np.allclose(raw.stamp_position_mm, zigzag.strokes[0].stamp_points, atol=1e-12)
    # still one stamp per mm travelled, in order
    assert (np.diff(smooth.stamp_time_s) > 0).all()
    assert np.allclose(np.diff(smooth.stamp_position_mm[:, 0]), 1.0)


def test_zigzag_no_longer_slows_the_tool(zigzag):
    raw = trajectory(zigzag, RATE, smooth_mm=0.0)
    smooth = trajectory(zigzag, RATE)
    # the kinks cap the unsmoothed speed to a crawl; the smoothed line runs at its planned 100 mm/s
    assert raw.speed_mm_s.max() < 60.0
    assert smooth.speed_mm_s.max() == pytest.approx(100.0)
    assert smooth.duration_s < 0.5 * raw.duration_s
    for t in (raw, smooth):
        accel = np.linalg.norm(np.diff(t.position_mm, 2, axis=0), axis=1) / DT ** 2
        assert accel.max() <= 1000.0 * 1.001                               # both within the pen's limit
    # what dropped is the path's own bending: followed at the planned 100 mm/s and sampled
    # every 0.4 mm (250 Hz), the raw zigzag's second differences (~0.1 mm) ask for several
    # times the pen's 1000 mm/s²; the smoothed line's for almost nothing
    contact = export._contact(zigzag, TOL_MM, TOL_DEG)
    s = np.arange(0.0, 20.0, 100.0 * DT)

    def peak(points):
        at = np.stack([np.interp(s, zigzag.strokes[0].points[:, 0], points[:, d]) for d in range(3)], axis=1)
        return np.linalg.norm(np.diff(at, 2, axis=0), axis=1).max() / DT ** 2

    assert peak(zigzag.strokes[0].points) > 3000.0
    assert peak(contact.points) < 0.05 * peak(zigzag.strokes[0].points)
    assert peak(contact.points) < 100.0


def test_smoothing_off_is_the_plans_own_path(zigzag):
    off = trajectory(zigzag, RATE, smooth_mm=0.0)
    explicit = trajectory(zigzag, RATE, smooth_mm=0.0, smooth_deg=0.0)
    for key in export._SAMPLE_ARRAYS + export._STAMP_ARRAYS:
        assert np.array_equal(getattr(off, key), getattr(explicit, key)), key
    contact = export._contact(zigzag, 0.0, 0.0)
    assert np.array_equal(contact.points, zigzag.strokes[0].points)
    assert np.array_equal(contact.normals, zigzag.strokes[0].normals)
    # the samples lie on the plan's polyline exactly (it runs along x between its samples)
    rows = np.isin(off.state, (CONTACT, FIRING))
    x = off.position_mm[rows, 0]
    expected = np.stack([np.interp(x, zigzag.strokes[0].points[:, 0], zigzag.strokes[0].points[:, d]) for d in (1, 2)],
                        axis=1)
    assert np.abs(off.position_mm[rows, 1:] - expected).max() < 1e-9
    assert off.meta["smoothing"]["position_mm"] == off.meta["smoothing"]["orientation_deg"] == 0.0
    assert off.meta["smoothing"]["method"].startswith("off")


def test_orientation_smoothing_alone(default_face, default_zones):
    # normals tilted alternately +-1 deg about the travel: smoothed to about straight up,
    # within 2 deg of each, positions untouched
    stroke = zigzag_pen(amplitude_mm=0.0)
    tilt = np.radians(1.0) * np.where(np.arange(len(stroke.points)) % 2, -1.0, 1.0)
    tilt[[0, -1]] = 0.0
    stroke.normals = np.stack([np.zeros_like(tilt), np.sin(tilt), np.cos(tilt)], axis=1)
    plan = one_stroke_plan(default_face, default_zones, stroke)
    contact = export._contact(plan, 0.0, TOL_DEG)
    assert np.array_equal(contact.points, stroke.points)
    angle = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", contact.normals, stroke.normals), -1, 1)))
    assert angle.max() <= TOL_DEG + 1e-9
    assert np.degrees(np.arccos(contact.normals[2:-2, 2].min())) < 0.05
    t = trajectory(plan, RATE, smooth_mm=0.0, smooth_deg=TOL_DEG)
    z = Rotation.from_quat(t.quaternion_wxyz, scalar_first=True).as_matrix()[:, :, 2]
    touching = np.isin(t.state, (CONTACT, FIRING))
    assert np.degrees(np.arccos(-z[touching, 2].min())) <= 1.0 + 1e-6


@pytest.mark.parametrize("kw, match", [({"smooth_mm": -0.1}, r"smooth_mm = -0.1 .* from 0 \(off\) to 0.25"),
                                       ({"smooth_mm": 0.5}, r"smooth_mm = 0.5 "),
                                       ({"smooth_mm": float("nan")}, r"smooth_mm = nan"),
                                       ({"smooth_mm": "a bit"}, r"smooth_mm = 'a bit'"),
                                       ({"smooth_deg": 10.0}, r"smooth_deg = 10.0 .* from 0 \(off\) to 5"),
                                       ({"smooth_deg": -1}, r"smooth_deg = -1 ")])
def test_bad_tolerances(kw, match, zigzag):
    with pytest.raises(CoverageError, match=match):
        trajectory(zigzag, RATE, **kw)


def test_header_states_the_tolerances_and_version_2_still_reads(tmp_path, zigzag):
    t = trajectory(zigzag, RATE, smooth_mm=0.05, smooth_deg=1.5)
    path = write_trajectory(t, tmp_path / "t.csv")
    head = [line for line in path.read_text().splitlines() if line.startswith("# ")]
    assert head[0].startswith("# format: coverage-trajectory version 3 ")
    line = next(h for h in head if h.startswith("# smoothing: "))
    assert line.startswith("# smoothing: position_mm 0.05, orientation_deg 1.5, wavelength_mm 4 "
                           "(largest offsets used: ")
    back = read_trajectory(path)
    assert back.meta["smoothing"]["position_mm"] == 0.05 and back.meta["smoothing"]["orientation_deg"] == 1.5
    # a version 2 file (no smoothing field) is still read
    for fmt in ("json", "npz"):
        out = write_trajectory(t, tmp_path / f"t.{fmt}")
        doc = dict(t.meta, version=2)
        doc.pop("smoothing")
        old = export.Trajectory(**{**{k: getattr(t, k) for k in ("rate_hz",) + export._SAMPLE_ARRAYS
                                      + export._STAMP_ARRAYS}, "meta": doc})
        out = write_trajectory(old, tmp_path / f"v2.{fmt}")
        back = read_trajectory(out)
        assert back.meta["version"] == 2 and "smoothing" not in back.meta
        assert np.allclose(back.position_mm, t.position_mm, atol=1e-4)
    v2csv = write_trajectory(old, tmp_path / "v2.csv")
    assert "# smoothing: none (version 2" in v2csv.read_text()
    assert read_trajectory(v2csv).meta["version"] == 2


# --- the default plan -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoothed(auto_plan):
    return trajectory(auto_plan, RATE)


def test_default_plan_smoothed_within_its_tolerances(auto_plan):
    contact = export._contact(auto_plan, TOL_MM, TOL_DEG)
    points = np.concatenate([s.points for s in auto_plan.strokes])
    normals = np.concatenate([s.normals for s in auto_plan.strokes])
    tangents = np.concatenate([s.tangents for s in auto_plan.strokes])
    offset = contact.points - points
    assert np.linalg.norm(offset, axis=1).max() <= TOL_MM * (1 + 1e-9)
    along = tangents - np.einsum("ij,ij->i", tangents, normals)[:, None] * normals
    along /= np.linalg.norm(along, axis=1, keepdims=True)
    assert np.abs(np.einsum("ij,ij->i", offset, along)).max() < 1e-9       # nothing moves along the travel
    angle = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", contact.normals, normals), -1, 1)))
    assert angle.max() <= TOL_DEG + 1e-9
    first = np.cumsum([0] + [len(s.points) for s in auto_plan.strokes])[:-1]
    last = first + np.array([len(s.points) for s in auto_plan.strokes]) - 1
    ends = np.concatenate([first, last])
    assert np.array_equal(contact.points[ends], points[ends])             # approach and retract unchanged
    assert np.allclose(contact.normals[ends], normals[ends], rtol=0, atol=1e-12)


def test_default_plan_smoothed_within_the_limits(smoothed, auto_plan):
    lim = export.Limits.from_protocol(auto_plan.protocol)
    assert smoothed.speed_mm_s.max() <= max(lim.transit_speed_mm_s, lim.pen_speed_mm_s_max,
                                            lim.roller_speed_mm_s) * (1 + 1e-9)
    accel = np.linalg.norm(np.diff(smoothed.position_mm, 2, axis=0), axis=1) / DT ** 2
    assert accel.max() <= max(lim.transit_accel_mm_s2, lim.pen_accel_mm_s2_max, lim.roller_accel_mm_s2_max) * 1.01
    rot = Rotation.from_quat(smoothed.quaternion_wxyz, scalar_first=True)
    rate = (rot[:-1].inv() * rot[1:]).magnitude() / DT
    assert rate.max() <= lim.angular_speed_rad_s * 1.01
    assert smoothed.meta["smoothing"]["max_position_offset_mm"] <= TOL_MM
    assert smoothed.meta["smoothing"]["max_orientation_offset_deg"] <= TOL_DEG + 1e-9


def test_default_plan_stamps_stay_within_the_tolerance(smoothed, auto_plan):
    raw = trajectory(auto_plan, RATE, smooth_mm=0.0)
    assert np.array_equal(smoothed.stamp_stroke, raw.stamp_stroke)
    assert smoothed.stamps.sum() == raw.stamps.sum() == len(raw.stamp_time_s)
    move = smoothed.stamp_position_mm - raw.stamp_position_mm
    assert np.linalg.norm(move, axis=1).max() <= TOL_MM * (1 + 1e-9)
    # along the normal only: what is left on the skin's plane comes from the two samples'
    # normals differing (a fraction of a degree): microns
    stroke_of = {s.id: s for s in auto_plan.strokes}
    normal = np.stack([stroke_of[i].normals[np.argmin(np.linalg.norm(stroke_of[i].points - p, axis=1))]
                       for i, p in zip(raw.stamp_stroke, raw.stamp_position_mm)])
    sideways = move - np.einsum("ij,ij->i", move, normal)[:, None] * normal
    assert np.linalg.norm(sideways, axis=1).max() < 0.005
    same = np.diff(smoothed.stamp_stroke) == 0
    assert (np.diff(smoothed.stamp_time_s)[same] >= 1.0 / auto_plan.protocol.pen.stamp_hz_max * (1 - 1e-9)).all()
    assert smoothed.stamp_hz.max() <= auto_plan.protocol.pen.stamp_hz_max * (1 + 1e-9)
    # and the smoothed session is no longer than the unsmoothed one
    assert smoothed.duration_s < raw.duration_s


# --- a noisy scan ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scan_pen_plan(default_face):
    """The pen on a synthetic depth-camera scan (0.15 mm depth noise), cheeks and forehead."""
    scan = make_scan(deformed_face(default_face), units="m", seed=0)
    face = Face.load((scan.vertices, scan.faces), scan.landmarks)
    return make_plan(face, Protocol.default(), ("cheek_left", "forehead"), "pen")


def test_noisy_scan_session_much_shorter(scan_pen_plan):
    raw = trajectory(scan_pen_plan, RATE, smooth_mm=0.0)
    smooth = trajectory(scan_pen_plan, RATE)
    touching = [np.isin(t.state, (CONTACT, FIRING)).sum() * DT for t in (raw, smooth)]
    # measured: contact about 0.7 x, the session about 0.75 x; asserted generously
    assert touching[1] < 0.85 * touching[0]
    assert smooth.duration_s < 0.9 * raw.duration_s
    assert smooth.stamps.sum() == raw.stamps.sum()
    assert smooth.stamp_hz.max() <= scan_pen_plan.protocol.pen.stamp_hz_max * (1 + 1e-9)
    assert np.linalg.norm(smooth.stamp_position_mm - raw.stamp_position_mm, axis=1).max() <= TOL_MM * (1 + 1e-9)
