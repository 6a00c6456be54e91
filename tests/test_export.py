"""Robot trajectories: poses, states, timing within the limits, files.

The default plan's trajectory is checked against the plan it came from (normals, tangents,
stamps, transitions) and the protocol's limits; small plans of straight strokes in front of
the face (where the clearance is simply the lift along the normal) have timings worked by hand.
"""
import itertools
import json
import math

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from coverage import CoverageError, Protocol, export
from coverage.export import (
    APPROACH,
    CONTACT,
    FIRING,
    RETRACT,
    STATES,
    TRANSIT,
    read_trajectory,
    trajectory,
    write_trajectory,
)
from coverage.plan import Plan, Stroke, Transition

RATE = 250.0
DT = 1.0 / RATE
DEG = math.pi / 180.0


@pytest.fixture(scope="module")
def traj(auto_plan):
    """The default plan's session on the plan's own samples (smoothing off): the tests below
    check it against the plan exactly; tests/test_export_smooth.py checks the smoothed one."""
    return trajectory(auto_plan, RATE, source="PLAN.json", smooth_mm=0.0)


def rotation(t):
    return Rotation.from_quat(t.quaternion_wxyz, scalar_first=True)


def axes(t):
    m = rotation(t).as_matrix()
    return m[:, :, 0], m[:, :, 1], m[:, :, 2]


def limits(plan):
    """(air accel, pen accel, roller accel) mm/s², the export's limits for this protocol."""
    lim = export.Limits.from_protocol(plan.protocol)
    return lim.transit_accel_mm_s2, lim.pen_accel_mm_s2_max, lim.roller_accel_mm_s2_max


# --- hand-made plans: straight strokes 200 mm in front of the face --------------------------

Z0 = 200.0
UP = np.array([0.0, 0.0, 1.0])


def line_stroke(sid, device, start, direction, length_mm, speed_mm_s, t0, step_mm=0.25, stamp_every_mm=None,
                needle_mm=0.5):
    n = round(length_mm / step_mm) + 1
    s = np.linspace(0.0, length_mm, n)
    d = np.asarray(direction, dtype=float)
    d /= np.linalg.norm(d)
    points = np.asarray(start, dtype=float) + s[:, None] * d
    times = t0 + s / speed_mm_s
    kw = {}
    if stamp_every_mm is not None:
        stamp_s = np.arange(stamp_every_mm, length_mm - 1e-9, stamp_every_mm)
        kw = {"stamp_hz": speed_mm_s / stamp_every_mm, "stamp_uv": np.zeros((len(stamp_s), 2)),
              "stamp_points": np.asarray(start) + stamp_s[:, None] * d, "stamp_times_s": t0 + stamp_s / speed_mm_s,
              "cartridge": {"needles": 12, "footprint_diameter_mm": 7.0}}
    return Stroke(sid, device, "forehead", 0, sid, 0.0, needle_mm, needle_mm, speed_mm_s, np.zeros((n, 2)),
                  np.zeros(n, dtype=np.int64), np.zeros((n, 3)), points, np.tile(UP, (n, 1)), np.tile(d, (n, 1)),
                  times, **kw)


def hand_plan(face, zones, strokes, lift_mm=3.0):
    """A plan of the given strokes joined by lift, straight travel at ``lift_mm``, lower."""
    transitions = []
    for a, b in itertools.pairwise(strokes):
        pts = np.stack([a.points[-1], a.points[-1] + lift_mm * UP, b.points[0] + lift_mm * UP, b.points[0]])
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        transitions.append(Transition(a.id, b.id, pts, a.times_s[-1] + np.concatenate([[0.0], np.cumsum(seg)]) / 50.0))
    return Plan(face, zones, Protocol.default(), "auto", strokes, transitions, np.empty((0, 3)), np.empty((0, 2)),
                np.empty(0, dtype=np.int64), np.empty(0))


@pytest.fixture(scope="module")
def one_roller(default_face, default_zones):
    return hand_plan(default_face, default_zones, [line_stroke(0, "roller", (0.0, 0.0, Z0), (1, 0, 0), 20.0, 20.0, 0.0)])


# --- the default plan ----------------------------------------------------------------------

def test_quaternions_unit_and_continuous(traj):
    q = traj.quaternion_wxyz
    assert q.shape == (len(traj), 4)
    assert np.abs(np.linalg.norm(q, axis=1) - 1.0).max() < 1e-9
    assert (np.einsum("ij,ij->i", q[1:], q[:-1]) > 0).all()       # no sign flips between samples


def test_samples_at_the_stated_rate(traj):
    k = np.arange(len(traj))
    assert np.array_equal(traj.time_s, k / RATE)
    assert traj.time_s[-1] >= traj.duration_s > traj.time_s[-1] - DT
    assert traj.meta["samples"] == len(traj) and traj.meta["rate_hz"] == RATE


def test_session_longer_than_the_plan_by_the_accelerations(traj, auto_plan):
    # every stroke now starts and ends at rest and corners are slowed: longer, not absurdly so
    # (the plan's own clock takes speed changes as instant; the pen's turns, slowed to the
    # tool's 360 deg/s, are most of the difference)
    assert auto_plan.time_s < traj.duration_s < 2.5 * auto_plan.time_s
    assert traj.meta["source"]["plan_time_s"] == pytest.approx(auto_plan.time_s)


def locate(stroke, points):
    """The segment of a stroke each point lies on and where: ``(segment (m,), fraction (m,),
    distance (m,) mm)``: the nearest of the segments around the few nearest vertices."""
    near = min(6, len(stroke.points))
    _, jj = cKDTree(stroke.points).query(points, k=near)
    jj = jj.reshape(len(points), near)
    best = None
    for a in (np.clip(j + d, 0, len(stroke.points) - 2) for j in jj.T for d in (-1, 0)):
        ab = stroke.points[a + 1] - stroke.points[a]
        f = np.clip(np.einsum("ij,ij->i", points - stroke.points[a], ab) / np.einsum("ij,ij->i", ab, ab), 0, 1)
        dist = np.linalg.norm(stroke.points[a] + f[:, None] * ab - points, axis=1)
        cand = (a, f, dist)
        best = cand if best is None else tuple(np.where(dist < best[2], c, o) for c, o in zip(cand, best))
    return best


def interpolated(values, a, f):
    v = (1 - f)[:, None] * values[a] + f[:, None] * values[a + 1]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_tool_z_antiparallel_to_the_interpolated_normal_in_contact(traj, auto_plan):
    _, _, z = axes(traj)
    worst = 0.0
    for sid in np.unique(traj.stroke_id[traj.stroke_id >= 0]):
        rows = np.flatnonzero(traj.stroke_id == sid)
        s = auto_plan.strokes[sid]
        a, f, dist = locate(s, traj.position_mm[rows])
        assert dist.max() < 1e-6                                    # on the stroke's path
        normal = interpolated(s.normals, a, f)
        worst = max(worst, float(np.arccos(np.clip(-np.einsum("ij,ij->i", z[rows], normal), -1, 1)).max()))
    assert worst < 1.0 * DEG


def test_x_axis_normal_to_z_along_the_roller_travel_and_the_face_up_for_the_pen(traj, auto_plan):
    x, y, z = axes(traj)
    assert np.abs(np.einsum("ij,ij->i", x, z)).max() < 1e-9
    assert np.allclose(np.cross(z, x), y, atol=1e-9)
    # roller: x is the plan's travel tangent (or its opposite: the drum rolls either way),
    # interpolated along the segment, projected normal to z (where the tangents at the
    # segment's ends agree within 30°: at a sharp corner the tool turns from one to the other
    # as it passes); it keeps the side the previous pass ended on
    worst = 0.0
    last = None
    sid = traj.stroke_id
    for k in np.unique(sid[sid >= 0]):
        s = auto_plan.strokes[k]
        if s.device != "roller":
            continue
        rows = np.flatnonzero(sid == k)
        a, f, _ = locate(s, traj.position_mm[rows])
        smooth = np.einsum("ij,ij->i", s.tangents[a], s.tangents[a + 1]) > math.cos(30 * DEG)
        t = interpolated(s.tangents, a, f)[smooth]
        zz = z[rows][smooth]
        t -= np.einsum("ij,ij->i", t, zz)[:, None] * zz
        cos = np.abs(np.einsum("ij,ij->i", x[rows][smooth], t / np.linalg.norm(t, axis=1, keepdims=True)))
        if len(cos):
            worst = max(worst, float(np.arccos(np.clip(cos.min(), -1, 1))))
        if last is not None:
            assert np.dot(x[rows[0]], last) > 0, k
        last = x[rows[-1]]
    assert worst < 2.0 * DEG, worst / DEG
    # and along the motion itself: the central difference of the positions, normal to z
    inner = np.flatnonzero((sid[1:-1] >= 0) & (sid[:-2] == sid[1:-1]) & (sid[2:] == sid[1:-1])
                           & (traj.speed_mm_s[1:-1] > 1.0)) + 1
    v = traj.position_mm[inner + 1] - traj.position_mm[inner - 1]
    v -= np.einsum("ij,ij->i", v, z[inner])[:, None] * z[inner]
    angle = np.arccos(np.clip(np.einsum("ij,ij->i", x[inner], v / np.linalg.norm(v, axis=1, keepdims=True)), -1, 1))
    roller = traj.device[inner] == export.DEVICE_CODES["roller"]
    assert np.percentile(np.minimum(angle, np.pi - angle)[roller], 99) < 2.0 * DEG   # straight passes, either way
    assert (angle[roller] > 90 * DEG).any() and (angle[roller] < 90 * DEG).any()
    # pen: x is the face's up (canonical +y) projected normal to z, whichever way it travels
    # (its left-right axis where up runs within 18 deg of the normal)
    pose = auto_plan.face.pose[:3, :3]
    up, side = pose @ [0.0, 1.0, 0.0], pose @ [1.0, 0.0, 0.0]
    pen = np.flatnonzero((sid >= 0) & (traj.device == export.DEVICE_CODES["pen"]))
    zz = z[pen]
    ref = np.where((np.abs(zz @ up) > math.cos(18 * DEG))[:, None], side[None], up[None])
    ref -= np.einsum("ij,ij->i", ref, zz)[:, None] * zz
    cos = np.einsum("ij,ij->i", x[pen], ref / np.linalg.norm(ref, axis=1, keepdims=True))
    assert np.percentile(cos, 1) > math.cos(1.0 * DEG)
    # so a pen glide turns the tool about z no more than the skin's normal turns
    assert np.abs(angle[~roller]).max() > 90 * DEG                     # it does travel sideways and back


def test_speeds_within_limits(traj, auto_plan):
    proto = auto_plan.protocol
    state, sid = traj.state, traj.stroke_id
    air = np.isin(state, (TRANSIT, APPROACH, RETRACT))
    assert traj.speed_mm_s.min() >= 0
    assert traj.speed_mm_s[air].max() <= proto.session.transit_speed_mm_s * (1 + 1e-9)
    contact = sid >= 0
    planned = np.array([s.speed_mm_s for s in auto_plan.strokes])[sid[contact]]
    assert (traj.speed_mm_s[contact] <= planned * (1 + 1e-9)).all()
    pen = contact & (traj.device == export.DEVICE_CODES["pen"])
    assert traj.speed_mm_s[pen].max() <= proto.pen.speed_mm_s_max * (1 + 1e-9)
    assert traj.speed_mm_s[contact & ~pen].max() <= proto.roller.speed_mm_s * (1 + 1e-9)
    # the positions agree: distance between samples over dt never beats the fastest speed of the two
    step = np.linalg.norm(np.diff(traj.position_mm, axis=0), axis=1) / DT
    fastest = np.maximum(traj.speed_mm_s[1:], traj.speed_mm_s[:-1]) + 0.5 * 1000.0 * DT
    assert (step <= fastest + 1e-6).all()


def test_accelerations_of_the_sampled_positions_within_limits(traj, auto_plan):
    air, pen, roller = limits(auto_plan)
    contact = traj.stroke_id >= 0
    limit = np.where(contact, np.where(traj.device == export.DEVICE_CODES["pen"], pen, roller), air)
    around = np.maximum(np.maximum(limit[:-2], limit[1:-1]), limit[2:])   # a triplet across a touch-down
    fd = np.linalg.norm(traj.position_mm[2:] - 2 * traj.position_mm[1:-1] + traj.position_mm[:-2], axis=1) / DT ** 2
    assert (fd <= around * 1.001 + 1e-3).all(), float((fd / around).max())
    # the tangential part: at most the path share of the limit in contact, all of it in the air
    share = np.where(contact, export.PATH_SHARE * limit, limit)
    assert (np.abs(traj.acceleration_mm_s2) <= share * (1 + 1e-9)).all()
    # the roller really is limited below the pen and the air
    rolling = contact[1:-1] & contact[:-2] & contact[2:] & (traj.device[1:-1] == export.DEVICE_CODES["roller"])
    assert fd[rolling].max() <= roller * 1.001


def test_turn_rate_within_limit(traj, auto_plan):
    limit = auto_plan.protocol.session.angular_speed_deg_s * DEG
    rel = (rotation(traj)[:-1].inv() * rotation(traj)[1:]).magnitude() / DT
    assert rel.max() <= limit * (1 + 1e-6)
    assert rel[traj.state[1:] == TRANSIT].max() > 0.5 * limit   # it does turn


def test_firing_only_in_contact(traj, auto_plan):
    firing = traj.state == FIRING
    assert (traj.stroke_id[firing] >= 0).all()
    assert (traj.stroke_id[np.isin(traj.state, (TRANSIT, APPROACH, RETRACT))] == -1).all()
    assert (traj.stroke_id[traj.state == CONTACT] >= 0).all()
    assert (traj.stamps[~firing] == 0).all() and (traj.stamp_hz[~firing] == 0).all()
    roller = (traj.stroke_id >= 0) & (traj.device == export.DEVICE_CODES["roller"])
    assert firing[roller].all()                                         # the roller punctures as it rolls
    # every planned stamp fires once, at no more than the pen's top rate
    planned = [s for s in auto_plan.strokes if s.stamp_times_s is not None]
    assert traj.stamps.sum() == len(traj.stamp_time_s) == sum(len(s.stamp_times_s) for s in planned)
    assert traj.stamp_hz.max() <= auto_plan.protocol.pen.stamp_hz_max * (1 + 1e-9)


def test_stamps_fire_where_planned(traj, auto_plan):
    planned = [s for s in auto_plan.strokes if s.stamp_points is not None]
    points = np.concatenate([s.stamp_points for s in planned])
    owner = np.concatenate([np.full(len(s.stamp_points), s.id) for s in planned])
    assert np.array_equal(traj.stamp_stroke, owner)
    # positions along the path unchanged (the path is the chord between surface samples)
    assert np.linalg.norm(traj.stamp_position_mm - points, axis=1).max() < 0.05
    same = np.diff(owner) == 0
    gaps = np.diff(traj.stamp_time_s)
    assert (gaps[same] >= 1.0 / auto_plan.protocol.pen.stamp_hz_max * (1 - 1e-9)).all()
    assert (gaps > 0).all()
    # and each is counted on a firing sample of its stroke next to the moment it fires
    k = np.repeat(np.arange(len(traj)), traj.stamps)
    assert np.array_equal(traj.stroke_id[k], owner)
    assert np.abs(traj.time_s[k] - traj.stamp_time_s).max() < DT + 1e-9


def test_every_stroke_in_order(traj, auto_plan):
    sid = traj.stroke_id[traj.stroke_id >= 0]
    assert (np.diff(sid) >= 0).all()
    assert np.array_equal(np.unique(sid), np.arange(len(auto_plan.strokes)))
    # each stroke's samples are one run, between an approach and a retract
    starts = np.flatnonzero(np.diff(np.concatenate([[-1], traj.stroke_id])) != 0)
    runs = traj.stroke_id[starts]
    assert np.array_equal(runs[runs >= 0], np.arange(len(auto_plan.strokes)))
    devices = np.array([export.DEVICE_CODES[s.device] for s in auto_plan.strokes])
    assert np.array_equal(traj.device[traj.stroke_id >= 0], devices[sid])
    seq = traj.state[np.concatenate([[0], np.flatnonzero(np.diff(traj.state) != 0) + 1])]
    assert seq[0] == APPROACH and seq[-1] == RETRACT


def test_approach_and_retract_along_the_normal_to_the_clearance(traj, auto_plan):
    session = auto_plan.protocol.session
    hop = min(session.hop_clearance_mm, session.clearance_mm)
    sid = traj.stroke_id
    idx = np.arange(len(traj))
    # the stroke each approach sample leads to, each retract sample comes from
    nxt = np.where(sid >= 0, idx, len(traj))
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    prev = np.maximum.accumulate(np.where(sid >= 0, idx, -1))
    for state, which, end in ((APPROACH, nxt, 0), (RETRACT, prev, -1)):
        rows = np.flatnonzero(traj.state == state)
        strokes = sid[which[rows]]
        contact = np.array([s.points[end] for s in auto_plan.strokes])[strokes]
        normal = np.array([s.normals[end] for s in auto_plan.strokes])[strokes]
        offset = traj.position_mm[rows] - contact
        height = np.einsum("ij,ij->i", offset, normal)
        assert np.linalg.norm(offset - height[:, None] * normal, axis=1).max() < 1e-6   # on the normal
        assert height.min() >= -1e-9
        top = np.full(len(auto_plan.strokes), -np.inf)
        np.maximum.at(top, strokes, height)
        reached = top[np.isfinite(top)]
        assert len(reached) == len(auto_plan.strokes)                    # one approach, one retract each
        assert reached.min() >= hop - 0.05                                  # it reaches the clearance
        # and the tool keeps its contact orientation there
        _, _, z = axes(traj)
        assert np.abs(np.einsum("ij,ij->i", z[rows], normal) + 1).max() < 1e-9


# --- hand-worked cases ---------------------------------------------------------------------

def test_one_straight_roller_stroke_by_hand(one_roller):
    t = trajectory(one_roller, RATE)
    air, _, roller = limits(one_roller)
    # approach and retract: 10 mm at up to 50 mm/s, accelerating at 1000 (1.25 mm each way):
    # 10/50 + 50/1000 = 0.25 s each; rolling 20 mm at 20 mm/s, at 0.8 x 500 = 400 mm/s²
    # (0.5 mm each way): 20/20 + 20/400 = 1.05 s
    assert air == 1000.0 and roller == 500.0
    assert t.duration_s == pytest.approx(0.25 + 1.05 + 0.25, abs=1e-9)
    assert len(t) == 389 and t.time_s[-1] == pytest.approx(1.552)        # 1.55 s: last sample at or after
    assert np.allclose(t.position_mm[0], [0, 0, Z0 + 10]) and np.allclose(t.position_mm[-1], [20, 0, Z0 + 10])
    mid = (t.time_s > 0.25 + 0.05) & (t.time_s < 0.25 + 1.0)
    assert np.allclose(t.speed_mm_s[mid], 20.0) and (t.state[mid] == FIRING).all()
    ramp = (t.time_s > 0.25) & (t.time_s < 0.25 + 0.05)
    assert np.allclose(t.speed_mm_s[ramp], 400.0 * (t.time_s[ramp] - 0.25))
    assert np.allclose(t.acceleration_mm_s2[ramp], 400.0)
    # at k = 10 (0.04 s) still speeding up from rest: 0.5 x 1000 x 0.04² = 0.8 mm down; at
    # k = 20 (0.08 s) cruising for 0.03 s after 1.25 mm: 1.25 + 50 x 0.03 = 2.75 mm down
    assert np.allclose(t.position_mm[10], [0, 0, Z0 + 10 - 0.8])
    assert np.allclose(t.position_mm[20], [0, 0, Z0 + 10 - 2.75])
    # z = -normal = -z, x = travel = +x: a half turn about x, (w, x, y, z) = (0, ±1, 0, 0)
    assert np.allclose(np.abs(t.quaternion_wxyz), [0, 1, 0, 0], atol=1e-12)
    states = t.state[np.concatenate([[0], np.flatnonzero(np.diff(t.state)) + 1])]
    assert states.tolist() == [APPROACH, FIRING, RETRACT]
    assert set(np.unique(t.stroke_id)) == {-1, 0}
    assert t.needle_length_mm[t.stroke_id == 0].tolist() == [0.5] * int((t.stroke_id == 0).sum())


def test_a_roller_reversal_does_not_spin_the_tool(default_face, default_zones):
    # two passes 10 mm apart, the second back the other way: the drum rolls either way, so x
    # keeps its side and the tool does not turn in the air. The 10 mm travel at 50 mm/s and
    # the path's share of 1000 mm/s² along it (PATH_SHARE, 800 mm/s²): 0.0625 s and 1.5625 mm
    # up to speed, the same down, 6.875 mm cruising: 0.2625 s; lift and lower 3 mm (straight
    # legs, all of the limit): 3/50 + 50/1000 = 0.11 s each
    a = line_stroke(0, "roller", (0.0, 0.0, Z0), (1, 0, 0), 20.0, 20.0, 0.0)
    b = line_stroke(1, "roller", (20.0, 10.0, Z0), (-1, 0, 0), 20.0, 20.0, 1.3)
    t = trajectory(hand_plan(default_face, default_zones, [a, b]), RATE)
    lift = 3.0 / 50.0 + 50.0 / 1000.0
    assert export.PATH_SHARE == 0.8
    assert t.duration_s == pytest.approx(0.25 + 1.05 + lift + 0.2625 + lift + 1.05 + 0.25, abs=1e-9)
    x, _, z = axes(t)
    assert np.allclose(x, [1, 0, 0], atol=1e-12) and np.allclose(z, [0, 0, -1], atol=1e-12)
    # the second pass rolls against x
    second = t.stroke_id == 1
    assert np.all(np.diff(t.position_mm[second, 0]) <= 1e-12) and t.speed_mm_s[second].max() == pytest.approx(20.0)


def test_turns_in_the_air_within_the_angular_limits(default_face, default_zones):
    # the second pass at right angles: the tool turns 90° about its z axis during the 10 mm
    # travel. Turning in proportion to the travel, the angular limits (360°/s, 3600°/s²) cap
    # the travel at 10 x 360/90 = 40 mm/s and 10 x 3600/90 = 400 mm/s²: 0.1 s and 2 mm up
    # to speed, the same down, 6 mm cruising (0.15 s): 0.35 s; lift and lower 0.11 s each
    a = line_stroke(0, "roller", (0.0, 0.0, Z0), (1, 0, 0), 20.0, 20.0, 0.0)
    b = line_stroke(1, "roller", (20.0, 10.0, Z0), (0, 1, 0), 20.0, 20.0, 1.3)
    t = trajectory(hand_plan(default_face, default_zones, [a, b]), RATE)
    lift = 3.0 / 50.0 + 50.0 / 1000.0
    assert t.duration_s == pytest.approx(0.25 + 1.05 + lift + 0.35 + lift + 1.05 + 0.25, abs=1e-9)
    travel = t.state == TRANSIT
    assert t.speed_mm_s[travel].max() == pytest.approx(40.0)
    assert np.abs(t.acceleration_mm_s2[travel]).max() == pytest.approx(400.0)
    x, _, z = axes(t)
    assert np.allclose(z[travel], [0, 0, -1], atol=1e-12)                # turning about the tool axis only
    first, last = np.flatnonzero(travel)[[0, -1]]
    assert x[first - 1] @ [1, 0, 0] > 0.999 and x[last + 1] @ [0, 1, 0] > 0.999
    rate = (rotation(t)[:-1].inv() * rotation(t)[1:]).magnitude() / DT
    assert rate.max() == pytest.approx(2 * math.pi, rel=1e-6)


def test_pen_stamps_fire_by_distance_on_the_new_timing(default_face, default_zones):
    # a 10 mm pen stroke at 20 mm/s with a stamp every 0.5 mm: speeding up at 0.8 x 1000 mm/s²
    # takes 0.025 s and 0.25 mm, so a stamp at s mm fires (s - 0.25)/20 + 0.025 s after
    # touch-down, at 20 / 0.5 = 40 stamps/s
    pen = line_stroke(0, "pen", (0.0, 0.0, Z0), (0, 1, 0), 10.0, 20.0, 0.0, stamp_every_mm=0.5)
    t = trajectory(hand_plan(default_face, default_zones, [pen]), RATE)
    down = 0.25                                               # the approach, as for the roller
    s = np.arange(1, 20) * 0.5
    assert np.allclose(t.stamp_time_s, down + 0.025 + (s - 0.25) / 20.0)
    assert np.allclose(t.stamp_position_mm, pen.stamp_points)
    assert t.stamps.sum() == 19
    firing = t.state == FIRING
    cruising = firing & np.isclose(t.speed_mm_s, 20.0)
    assert cruising.sum() > 100 and np.allclose(t.stamp_hz[cruising], 40.0)
    # contact without firing before the first stamp and after the last (give or take a sample)
    assert (t.state == CONTACT).any()
    assert t.position_mm[firing, 1].min() >= 0.5 - 1e-9 and t.position_mm[firing, 1].max() <= 9.5 + 20.0 * DT


def test_higher_rate_samples_and_stays_within_limits(default_face, default_zones):
    # a bent pass: the corner is slowed more when sampled faster
    a = line_stroke(0, "pen", (0.0, 0.0, Z0), (1, 0, 0), 10.0, 100.0, 0.0, stamp_every_mm=1.0)
    b = line_stroke(0, "pen", (10.0, 0.0, Z0), (0, 1, 0), 10.0, 100.0, 0.1, stamp_every_mm=1.0)
    joined = Stroke(0, "pen", "forehead", 0, 0, 0.0, 0.5, 0.5, 100.0, np.zeros((81, 2)),
                    np.zeros(81, dtype=np.int64), np.zeros((81, 3)), np.concatenate([a.points, b.points[1:]]),
                    np.tile(UP, (81, 1)), np.concatenate([a.tangents, b.tangents[1:]]),
                    np.concatenate([a.times_s, b.times_s[1:]]), stamp_hz=100.0,
                    stamp_points=np.concatenate([a.stamp_points, b.stamp_points]),
                    stamp_times_s=np.concatenate([a.stamp_times_s, b.stamp_times_s]), stamp_uv=np.zeros((18, 2)))
    plan = hand_plan(default_face, default_zones, [joined])
    durations = []
    for rate in (250.0, 1000.0):
        t = trajectory(plan, rate)
        assert np.array_equal(t.time_s, np.arange(len(t)) / rate)
        fd = np.linalg.norm(np.diff(t.position_mm, 2, axis=0), axis=1) * rate ** 2
        assert fd.max() <= 1000.0 * 1.001
        durations.append(t.duration_s)
    assert durations[1] > durations[0]


# --- files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "npz", "json"])
def test_file_round_trip(fmt, tmp_path, default_face, default_zones):
    a = line_stroke(0, "roller", (0.0, 0.0, Z0), (1, 0, 0), 20.0, 20.0, 0.0)
    b = line_stroke(1, "pen", (20.0, 10.0, Z0), (-1, 0, 0), 10.0, 20.0, 1.3, stamp_every_mm=0.5)
    t = trajectory(hand_plan(default_face, default_zones, [a, b]), RATE, source="hand.json")
    out = write_trajectory(t, tmp_path / f"traj.{fmt}", fmt)
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == [f"traj.{fmt}"]   # no temporary left
    back = read_trajectory(out)
    tol = 0.0 if fmt == "npz" else 1e-4
    assert back.rate_hz == RATE and len(back) == len(t)
    assert np.allclose(back.time_s, t.time_s, atol=1e-6 if tol else 0)
    assert np.allclose(back.position_mm, t.position_mm, atol=tol)
    assert np.allclose(back.quaternion_wxyz, t.quaternion_wxyz, atol=tol)
    assert np.allclose(back.speed_mm_s, t.speed_mm_s, atol=tol)
    for key in ("state", "device", "stroke_id", "stamps"):
        assert np.array_equal(getattr(back, key), getattr(t, key)), key
    assert back.stamps.sum() == 19 and back.meta["source"]["plan"] == "hand.json"
    assert back.meta["states"] == {str(i): name for i, name in enumerate(STATES)}
    if fmt != "csv":
        assert np.allclose(back.stamp_time_s, t.stamp_time_s, atol=tol)


def test_csv_header(tmp_path, one_roller):
    t = trajectory(one_roller, RATE, source="PLAN.json")
    path = write_trajectory(t, tmp_path / "t.csv")
    lines = path.read_text().splitlines()
    head = [line for line in lines if line.startswith("# ")]
    text = "\n".join(head)
    assert head[0] == f"# format: coverage-trajectory version 3 ({t.meta['generator']})"
    for needle in ("smoothing: position_mm 0.1, orientation_deg 2, wavelength_mm 4 (largest offsets used: ",
                   "pen stamp along the normal only", "source plan: PLAN.json", "rate_hz: 250 (time_s = k / rate_hz)", "frame: positions in the plan's",
                   "z into the skin", "x along travel (roller;", "quaternion: scalar first (qw, qx, qy, qz)",
                   "state codes: 0 transit, 1 approach, 2 contact, 3 firing, 4 retract",
                   "device codes: 1 roller, 2 pen", "units: time s, positions mm", "transit_accel_mm_s2 1000"):
        assert needle in text, needle
    columns = lines[len(head)]
    assert columns == ("time_s,x_mm,y_mm,z_mm,qw,qx,qy,qz,speed_mm_s,accel_mm_s2,state,device,stroke_id,depth_mm,"
                       "needle_length_mm,stamp_hz,stamps")
    assert len(lines) == len(head) + 1 + len(t)
    first = lines[len(head) + 1].split(",")
    assert first[0] == "0.000000" and float(first[3]) == pytest.approx(Z0 + 10) and first[10] == str(APPROACH)
    meta = json.loads(next(line for line in head if line.startswith("# metadata: "))[len("# metadata: "):])
    assert meta["samples"] == len(t) and meta["duration_s"] == pytest.approx(1.55)


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0, -250, float("nan"), float("inf"), 1e5, 20, "fast", None])
def test_bad_rate(rate, one_roller):
    with pytest.raises(CoverageError, match=r"rate_hz = .* give one from 50 to 10000 Hz") as err:
        trajectory(one_roller, rate)
    assert "\n" not in str(err.value)


def test_bad_outputs_and_inputs(tmp_path, one_roller):
    t = trajectory(one_roller, RATE)
    with pytest.raises(CoverageError, match="format 'xml' is not known; use one of csv, npz, json"):
        write_trajectory(t, tmp_path / "t.xml")
    with pytest.raises(CoverageError, match="unsupported output type '.csv'; use one of .npz"):
        write_trajectory(t, tmp_path / "t.csv", "npz")
    with pytest.raises(CoverageError, match="does not exist"):
        write_trajectory(t, tmp_path / "missing" / "t.csv")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CoverageError, match="trajectory file not found"):
        read_trajectory(tmp_path / "none.npz")
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b\n1,2\n")
    with pytest.raises(CoverageError, match="not a readable trajectory"):
        read_trajectory(junk)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "coverage-plan", "samples_table": {}, "stamp_events": {}}))
    with pytest.raises(CoverageError, match="not a coverage trajectory"):
        read_trajectory(other)


def test_plan_without_strokes(default_face, default_zones):
    with pytest.raises(CoverageError, match="the plan has no strokes"):
        trajectory(hand_plan(default_face, default_zones, []), RATE)
