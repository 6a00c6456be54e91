"""Safe moves between strokes (``coverage.plan.transit`` and its batched form ``transits``):
built together, every move is exactly the move built alone, and the original one-move
algorithm (kept here as the reference) agrees bit for bit."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from coverage import proximity
from coverage.plan import (TRANSIT_STEP_MM, signed_clearance, transit, transit_clearance, transit_paths,
                           transits)
from coverage.protocol import Protocol

SESSION = Protocol.default().session


def transit_reference(face, start_point, start_normal, end_point, end_normal, clearance_mm, speed_mm_s, t0):
    """The one-move algorithm as it was before moves were batched (one search per step)."""
    reach = clearance_mm + 1.0

    def raised(point, normal):
        height = clearance_mm
        for _ in range(20):
            deficit = clearance_mm - float(signed_clearance(face, (point + height * normal)[None], reach)[0])
            if deficit <= 0:
                break
            height += deficit + 1e-3
        return point + height * normal

    a, b = raised(start_point, start_normal), raised(end_point, end_normal)
    n = max(2, int(math.ceil(np.linalg.norm(b - a) / TRANSIT_STEP_MM)) + 1)
    f = np.linspace(0.0, 1.0, n)[:, None]
    base = (1 - f) * a + f * b
    forward = face.pose[:3, :3] @ np.array([0.0, 0.0, 1.0])
    forward /= np.linalg.norm(forward)
    lift = np.zeros(n)
    for _ in range(40):
        gap = clearance_mm - signed_clearance(face, base + lift[:, None] * forward, reach)
        gap[[0, -1]] = 0.0
        if gap.max() <= 1e-3:
            break
        lift += np.maximum(gap, 0.0) + 0.05
        lift = np.maximum(lift, ndimage.maximum_filter1d(lift, size=7, mode="nearest"))
        lift[[0, -1]] = 0.0
    high = base + lift[:, None] * forward
    points = np.concatenate([start_point[None], high, end_point[None]])
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    times = t0 + np.concatenate([[0.0], np.cumsum(seg)]) / speed_mm_s
    return points, times


def sheet(height, half=20, step=1.0):
    """A stand-in face: the sheet z = height(x, y) over a square grid (mm), facing +z."""
    g = np.arange(-half, half + step / 2, step)
    x, y = np.meshgrid(g, g, indexing="ij")
    vertices = np.stack([x.ravel(), y.ravel(), height(x, y).ravel()], axis=1)
    k = len(g)
    i, j = np.meshgrid(np.arange(k - 1), np.arange(k - 1), indexing="ij")
    v00, v10, v01, v11 = (i * k + j).ravel(), ((i + 1) * k + j).ravel(), (i * k + j + 1).ravel(), \
        ((i + 1) * k + j + 1).ravel()
    faces = np.concatenate([np.stack([v00, v10, v11], 1), np.stack([v00, v11, v01], 1)])
    corners = vertices[faces]
    tri_normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for c in range(3):
        np.add.at(normals, faces[:, c], tri_normal)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    face = SimpleNamespace(vertices=vertices, faces=faces, normals=normals, pose=np.eye(4),
                           surface_grid=proximity.build_grid(vertices, faces))
    return face, g


def random_moves(face, rng, m):
    """``m`` moves between random front-facing vertices of a face, at either clearance."""
    front = np.flatnonzero(face.normals[:, 2] > 0.3)
    pick = rng.choice(front, size=(m, 2))
    clearances = np.where(rng.random(m) < 0.5, SESSION.clearance_mm, SESSION.hop_clearance_mm)
    return (face.vertices[pick[:, 0]], face.normals[pick[:, 0]], face.vertices[pick[:, 1]],
            face.normals[pick[:, 1]], clearances)


def test_batched_moves_equal_the_reference_one_by_one(default_face, rng):
    starts, start_normals, ends, end_normals, clearances = random_moves(default_face, rng, 24)
    # and a move onto the same spot (a lift and a lower, as the export's approach uses), and
    # one across the nose from cheek to cheek
    cheek_l, cheek_r = np.argmin(default_face.vertices[:, 0]), np.argmax(default_face.vertices[:, 0])
    starts = np.concatenate([starts, starts[:1], default_face.vertices[[cheek_l]]])
    start_normals = np.concatenate([start_normals, start_normals[:1], default_face.normals[[cheek_l]]])
    ends = np.concatenate([ends, starts[:1], default_face.vertices[[cheek_r]]])
    end_normals = np.concatenate([end_normals, start_normals[:1], default_face.normals[[cheek_r]]])
    clearances = np.concatenate([clearances, [SESSION.clearance_mm, SESSION.hop_clearance_mm]])
    t0s = rng.uniform(0.0, 100.0, len(starts))
    batched = transits(default_face, starts, start_normals, ends, end_normals, clearances,
                       SESSION.transit_speed_mm_s, t0s)
    assert len(batched) == len(starts)
    pushed = 0
    for i, (points, times) in enumerate(batched):
        want_points, want_times = transit_reference(default_face, starts[i], start_normals[i], ends[i],
                                                    end_normals[i], float(clearances[i]),
                                                    SESSION.transit_speed_mm_s, float(t0s[i]))
        assert np.array_equal(points, want_points) and np.array_equal(times, want_times), i
        alone = transit(default_face, starts[i], start_normals[i], ends[i], end_normals[i], float(clearances[i]),
                        SESSION.transit_speed_mm_s, float(t0s[i]))
        assert np.array_equal(alone[0], points) and np.array_equal(alone[1], times), i
        straight = np.linspace(points[1], points[-2], len(points) - 2)
        pushed += not np.allclose(points[1:-1], straight, atol=1e-9)
    assert pushed     # some of the moves had to be pushed out (the reference's every branch ran)
    # a move is the same whatever it is built with
    again = transit_paths(default_face, starts[::-1], start_normals[::-1], ends[::-1], end_normals[::-1],
                          clearances[::-1])
    assert all(np.array_equal(p, q[0]) for p, q in zip(again[::-1], batched))


def test_plan_moves_equal_the_reference(roller_plan, default_face):
    strokes = {s.id: s for s in roller_plan.strokes}
    for tr in roller_plan.transitions[::40]:
        a, b = strokes[tr.from_stroke], strokes[tr.to_stroke]
        points, times = transit_reference(default_face, a.points[-1], a.normals[-1], b.points[0], b.normals[0],
                                          transit_clearance(roller_plan.zones, a.uv[-1], b.uv[0]),
                                          SESSION.transit_speed_mm_s, float(tr.times_s[0]))
        assert np.array_equal(tr.points, points) and np.array_equal(tr.times_s, times)
        assert tr.times_s[0] == a.times_s[-1] and b.times_s[0] == tr.times_s[-1]


def test_signed_clearance_with_a_reach_per_point(default_face, rng):
    points = default_face.vertices[rng.choice(len(default_face.vertices), 300)] + rng.normal(0.0, 6.0, (300, 3))
    reach = rng.choice([2.0, 4.0, 11.0, np.inf], size=300)
    got = signed_clearance(default_face, points, reach)
    want = np.array([signed_clearance(default_face, p[None], r)[0] for p, r in zip(points, reach)])
    assert np.array_equal(got, want)
    assert np.isinf(got).any() and (got < 0).any()


def test_a_move_over_flat_skin_stays_at_the_clearance():
    face, g = sheet(lambda x, y: np.zeros_like(x))
    start, end = np.array([-10.0, 0.0, 0.0]), np.array([10.0, 2.0, 0.0])
    up = np.array([0.0, 0.0, 1.0])
    points, times = transit(face, start, up, end, up, 3.0, 50.0, 2.0)
    # up 3 mm, 20.1 mm across in 1 mm samples (22 of them, ends included), down 3 mm
    assert len(points) == 2 + 22
    assert np.array_equal(points[0], start) and np.array_equal(points[-1], end)
    np.testing.assert_allclose(points[1], [-10.0, 0.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(points[-2], [10.0, 2.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(points[1:-1, 2], 3.0, atol=1e-12)
    np.testing.assert_allclose(points[1:-1, :2], np.linspace([-10.0, 0.0], [10.0, 2.0], 22), atol=1e-12)
    assert times[0] == 2.0
    assert times[-1] == pytest.approx(2.0 + (3.0 + math.hypot(20.0, 2.0) + 3.0) / 50.0, abs=1e-12)


def test_a_move_over_a_ridge_is_pushed_out_to_the_clearance():
    # a roof 5 mm high along y at x = 0, 45 degree slopes: above its crest the clearance
    # holds from z = 8; the straight travel at z = 3 would cut through it
    face, g = sheet(lambda x, y: np.maximum(0.0, 5.0 - np.abs(x)))
    up = np.array([0.0, 0.0, 1.0])
    start, end = np.array([-12.0, 0.0, 0.0]), np.array([12.0, 0.0, 0.0])
    points, times = transit(face, start, up, end, up, 3.0, 50.0, 0.0)
    travel = points[1:-1]
    np.testing.assert_allclose(travel[[0, -1], 2], 3.0, atol=1e-12)        # the raised ends stay put
    assert signed_clearance(face, travel).min() >= 3.0 - 1e-3
    crest = travel[np.argmin(np.abs(travel[:, 0]))]
    assert abs(crest[0]) < 1e-9 and crest[2] >= 8.0 - 1e-3
    assert crest[2] < 8.0 + 2.0                                           # pushed out, not flung
    assert np.all(np.diff(times) >= 0) and np.all(np.isfinite(times))
    want = transit_reference(face, start, up, end, up, 3.0, 50.0, 0.0)
    assert np.array_equal(points, want[0]) and np.array_equal(times, want[1])
    # built with a move over the flat part at another clearance, it is the same move
    both = transits(face, [start, [-15.0, 5.0, 0.0]], [up, up], [end, [-15.0, -5.0, 0.0]], [up, up],
                    [3.0, 1.5], 50.0, [0.0, 0.0])
    assert np.array_equal(both[0][0], points) and np.array_equal(both[0][1], times)
    np.testing.assert_allclose(both[1][0][1:-1, 2], 1.5, atol=1e-12)


def test_no_moves():
    face, _ = sheet(lambda x, y: np.zeros_like(x), half=2)
    assert transits(face, np.empty((0, 3)), np.empty((0, 3)), np.empty((0, 3)), np.empty((0, 3)), [], 50.0, []) == []


def test_transit_lengths_time_each_move_as_transit_times_does():
    # all moves' lengths in one pass: t0 + length / v is transit_times bit for bit
    from coverage.plan import transit_lengths, transit_times

    rng = np.random.default_rng(11)
    moves = [rng.normal(0.0, 20.0, (int(k), 3)) for k in rng.integers(1, 60, 40)]
    moves[3] = moves[3][:1]                                    # a move of one point
    moves[5] = np.repeat(moves[5][:1], 4, axis=0)              # a move that goes nowhere
    lengths = transit_lengths(moves)
    assert [len(x) for x in lengths] == [len(m) for m in moves]
    for m, length, t0, v in zip(moves, lengths, rng.uniform(0, 500, 40), rng.uniform(5, 80, 40)):
        assert np.array_equal(t0 + length / v, transit_times(m, v, t0))
    assert transit_lengths([]) == []
    # a hand-worked move: 3-4-5 then 5-12-13
    assert transit_lengths([np.array([[0.0, 0, 0], [3, 4, 0], [3, 4, 13]])])[0].tolist() == [0.0, 5.0, 18.0]
