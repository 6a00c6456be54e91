"""Resuming an interrupted session (coverage.resume)."""
import json

import numpy as np
import pytest

from coverage import CoverageError, Plan, resume, verify
from coverage.density import IN_BAND_LOW, density, texel_grid


def rows(points: np.ndarray) -> np.ndarray:
    """Points as sorted rows (a multiset to compare)."""
    points = np.ascontiguousarray(points)
    return np.sort(points.view([("x", float), ("y", float), ("z", float)]).ravel())


def _middle(plan) -> int:
    """Index of the plan's middle stroke: the first from the middle on with punctures along
    both halves of its path (a pen stroke may fire all its stamps near one end)."""
    for k in range(len(plan.strokes) // 2, len(plan.strokes)):
        s = plan.strokes[k]
        half = 0.5 * s.length_mm
        if s.device == "roller":
            return k
        along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(s.points, axis=0), axis=1))])
        at = np.interp(s.stamp_times_s, s.times_s, along)
        if (at < half - 1.0).any() and (at > half + 1.0).any():
            return k
    raise AssertionError("no stroke with punctures along both halves")


@pytest.fixture(scope="module")
def halfway(auto_plan):
    """The default auto plan stopped halfway through its middle stroke."""
    middle = auto_plan.strokes[_middle(auto_plan)].id
    return middle, resume.remaining(auto_plan, resume.interrupted(auto_plan, middle, 0.5))


def test_interrupted_halfway_completes_with_exactly_the_rest(auto_plan, halfway):
    middle, (rest, report) = halfway
    stroke = next(s for s in auto_plan.strokes if s.id == middle)
    delivered = report.union.puncture_points[:report.delivered_punctures]
    # delivered + remaining is the plan's punctures, each once
    assert report.delivered_punctures + report.remaining_punctures == len(auto_plan.puncture_points)
    assert np.array_equal(rows(np.concatenate([delivered, rest.puncture_points])), rows(auto_plan.puncture_points))
    made_by = set(np.unique(report.union.puncture_stroke[:report.delivered_punctures]).tolist())
    assert made_by == {s.id for s in auto_plan.strokes[:_middle(auto_plan) + 1]}
    # the middle stroke goes on from half its length, with the punctures it had not made
    first = rest.strokes[0]
    assert first.id == middle and first.times_s[0] == 0.0
    assert first.length_mm == pytest.approx(stroke.length_mm / 2, abs=0.01)   # the cut is lifted onto the skin
    assert np.linalg.norm(first.points[-1] - stroke.points[-1]) == 0.0
    (sid, fraction, made, left), = report.partial
    assert (sid, fraction) == (middle, 0.5) and made > 0 and left > 0
    assert made + left == stroke.punctures
    assert np.count_nonzero(rest.puncture_stroke == middle) == left == first.punctures
    # every later stroke is there unchanged (ids kept), after it
    assert [s.id for s in rest.strokes] == [s.id for s in auto_plan.strokes[_middle(auto_plan):]]
    np.testing.assert_array_equal(rest.strokes[1].points, auto_plan.strokes[_middle(auto_plan) + 1].points)
    times = np.concatenate([s.times_s for s in rest.strokes])
    assert (np.diff(times) >= 0).all() and rest.time_s < auto_plan.time_s
    # the tool comes down onto the first stroke from its clearance
    np.testing.assert_allclose(report.approach[1], first.points[0])
    assert np.linalg.norm(report.approach[0] - first.points[0]) == pytest.approx(
        auto_plan.protocol.session.clearance_mm)


def test_interrupted_session_passes_verify(auto_plan, halfway):
    _, (rest, report) = halfway
    assert len(report.union.strokes) == len(auto_plan.strokes) + len(rest.strokes)
    assert len(report.union.puncture_points) == len(auto_plan.puncture_points)
    result = verify(report.union)
    assert result.ok, result.text()


def test_a_partial_roller_stroke_splits_its_punctures_by_distance_rolled(auto_plan):
    roller = next(s for s in auto_plan.strokes if s.device == "roller" and s.length_mm > 40)
    rest, _report = resume.remaining(auto_plan, resume.interrupted(auto_plan, roller.id, 0.3))
    mine = auto_plan.puncture_stroke == roller.id
    arcs = resume.roller_arcs(roller.points, auto_plan.puncture_points[mine])
    cut = 0.3 * roller.length_mm
    left = auto_plan.puncture_points[mine][arcs > cut]
    assert np.array_equal(rows(rest.puncture_points[rest.puncture_stroke == roller.id]), rows(left))
    assert rest.strokes[0].length_mm == pytest.approx(0.7 * roller.length_mm, abs=0.01)


def test_roller_arcs_project_on_the_path():
    # a straight path along x with a bend; needles to the side land at their axle position
    path = np.array([[0, 0, 0], [4, 0, 0], [10, 0, 0], [10, 5, 0]], dtype=float)
    needles = np.array([[2.5, 3.0, 0.0], [7.0, -4.0, 0.0], [12.0, 4.0, 0.0]])
    np.testing.assert_allclose(resume.roller_arcs(path, needles), [2.5, 7.0, 14.0])


def test_nothing_or_everything_delivered(auto_plan):
    rest, report = resume.remaining(auto_plan, {})
    assert len(rest.strokes) == len(auto_plan.strokes) and report.delivered_punctures == 0
    assert np.array_equal(rest.puncture_points, auto_plan.puncture_points)
    rest, report = resume.remaining(auto_plan, resume.Delivered(completed_before=auto_plan.strokes[-1].id,
                                                                strokes={auto_plan.strokes[-1].id: 1.0}))
    assert rest.strokes == [] and len(rest.puncture_points) == 0 and report.remaining_punctures == 0


@pytest.fixture(scope="module")
def logged(auto_plan):
    """A log of the first 30 % of the plan's punctures (the roller's, which leave every zone
    mostly under its band), 0.1 mm of jitter, one stroke lost."""
    rng = np.random.default_rng(7)
    k = int(0.3 * len(auto_plan.puncture_points))
    lost = auto_plan.puncture_stroke[k // 2]
    keep = auto_plan.puncture_stroke[:k] != lost
    log = auto_plan.puncture_points[:k][keep] + rng.normal(scale=0.1, size=(int(keep.sum()), 3))
    return log, lost, resume.remaining(auto_plan, log)


def test_logged_punctures_are_completed_to_the_band(auto_plan, logged):
    log, _lost, (rest, report) = logged
    assert report.mode == "punctures" and report.delivered_punctures == len(log) and report.off_skin == 0
    assert min(s.id for s in rest.strokes) > max(s.id for s in auto_plan.strokes)
    assert {s.device for s in rest.strokes} == {"pen"}
    result = verify(report.union)
    assert result.ok, result.text()
    original = auto_plan.summary()["zones"]
    for name, z in report.zones.items():
        session = z["session"]
        assert session["over_cap_fraction"] == 0.0
        assert z["delivered"]["in_band_fraction"] < 0.3      # mostly under the band: work to do
        # the completion brings each zone into band about as well as the plan did
        assert session["in_band_fraction"] >= original[name]["in_band_fraction"] - 0.1, name
        assert result.zones[name]["in_band_fraction"] == pytest.approx(session["in_band_fraction"])


@pytest.fixture(scope="module")
def with_a_hole(auto_plan):
    """Everything delivered but the strokes through the forehead's middle: a hole to fill."""
    forehead = [s.id for s in auto_plan.strokes if s.zone == "forehead" and s.device == "pen"]
    lost = set(forehead[len(forehead) // 3: 2 * len(forehead) // 3])
    keep = ~np.isin(auto_plan.puncture_stroke, list(lost))
    return keep, resume.remaining(auto_plan, auto_plan.puncture_points[keep])


def test_nothing_at_dose_is_treated_again(auto_plan, with_a_hole):
    keep, (rest, report) = with_a_hole
    zones = auto_plan.zones
    grid = texel_grid(zones)
    before = density(auto_plan.face, zones, auto_plan.puncture_points[keep], grid=grid).nominal_per_cm2
    targets = np.array([zones.dose(n).target_per_cm2 for n in zones.names])
    under = grid.treatable & (np.nan_to_num(before) < IN_BAND_LOW * targets[np.maximum(grid.label, 0)])
    # every remaining stamp fires at least one needle into the 1 cm2 window of skin that was
    # under its band (checked window by window here, not with the planner's summed-area table)
    _h, _w = grid.shape
    ur, uc = np.nonzero(under)
    total = 0
    for s in rest.strokes:
        mine = rest.puncture_uv[rest.puncture_stroke == s.id]
        ij = np.floor((mine - grid.origin) / grid.cell_mm).astype(int)
        near = (np.abs(ij[:, None, 1] - ur[None]) <= grid.half_v[ur, uc][None]) & \
               (np.abs(ij[:, None, 0] - uc[None]) <= grid.half_u[ur, uc][None])
        hit = near.any(axis=1)
        assert hit.any(), s.id
        total += len(mine)
    assert total == report.remaining_punctures > 0
    # the hole is filled without overdosing its rim
    assert report.zones["forehead"]["session"]["over_cap_fraction"] == 0.0
    assert report.zones["forehead"]["session"]["in_band_fraction"] > report.zones["forehead"]["delivered"][
        "in_band_fraction"]


def test_logs_are_read(tmp_path, auto_plan):
    path = tmp_path / "log.json"
    path.write_text(json.dumps({"strokes": {"12": 1.0, "13": 0.4}, "completed_before": 12}))
    log = resume.read_delivered(path)
    fractions = log.fractions(auto_plan)
    assert fractions[13] == 0.4 and fractions[12] == 1.0 and fractions[0] == 1.0 and fractions[14] == 0.0
    path = tmp_path / "log.csv"
    path.write_text("stroke_id,fraction\n3,1\n4,0.25\n")
    assert resume.read_delivered(path).strokes == {3: 1.0, 4: 0.25}
    path.write_text("x,y,z\n1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(resume.read_delivered(path).punctures, [[1, 2, 3], [4, 5, 6]])
    np.save(tmp_path / "log.npy", np.ones((4, 3)))
    assert resume.read_delivered(tmp_path / "log.npy").punctures.shape == (4, 3)


@pytest.mark.parametrize("text, suffix, match", [
    ('{"strokes": {"99999": 1.0}}', ".json", "stroke 99999 is not in the plan"),
    ('{"strokes": {"3": 1.7}}', ".json", "not a fraction"),
    ('{"strokes": {"3": NaN}}', ".json", "not a fraction"),
    ('{"strokes": {"3.5": 1}}', ".json", "not a whole number"),
    ('{"strokes": [1, 2]}', ".json", "give an object"),
    ('{"punctures": [[1, 2], [3, 4]]}', ".json", r"shape \(2, 2\)"),
    ('{"punctures": [[1, 2, "x"]]}', ".json", "not numbers"),
    ('{"strokes": {}, "punctures": []}', ".json", "not both"),
    ('{"done": 1}', ".json", "holds \"strokes\""),
    ("{", ".json", "not valid JSON"),
    ("stroke_id,fraction\n3,nan\n", ".csv", "not a fraction"),
    ("stroke_id,fraction\n3\n", ".csv", "line 2 has 1 fields"),
    ("1,2\n3,4\n", ".csv", "row 1 has 2 fields"),
    ("", ".csv", "empty"),
    ("1,2,3", ".txt", "unknown log type"),
])
def test_bad_logs_are_refused(tmp_path, auto_plan, text, suffix, match):
    path = tmp_path / f"log{suffix}"
    path.write_text(text)
    with pytest.raises(CoverageError, match=match):
        resume.remaining(auto_plan, path)


def test_unreadable_npy_logs_are_refused(tmp_path):
    """A 0-byte .npy was an EOFError (exit 1) and a complex one lost its imaginary part with a
    warning on stderr until stop 29."""
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(CoverageError, match="empty.npy: not a readable .npy array"):
        resume.read_delivered(empty)
    complex_log = tmp_path / "complex.npy"
    np.save(complex_log, np.zeros((4, 3)) + 1j)
    with pytest.raises(CoverageError, match="punctures are complex128 numbers"):
        resume.read_delivered(complex_log)


def test_a_log_in_another_frame_is_refused(auto_plan):
    """Punctures logged a metre away (another frame or unit): until stop 29 the remaining plan
    was written over the whole face and the union failed its checks (exit 3)."""
    with pytest.raises(CoverageError, match="10 of 10 logged punctures lie more than 5 mm from the face's skin"):
        resume.remaining(auto_plan, np.full((10, 3), 1000.0))
    # a log millimetres off the skin (needle tips, a device's offset) is still read: its
    # punctures are counted off the skin, not refused
    report = resume.remaining(auto_plan, auto_plan.puncture_points[:200] + np.array([0.0, 0.0, 3.0])).report
    assert report.off_skin > 100


def test_bad_deliveries_are_refused(auto_plan):
    with pytest.raises(CoverageError, match="not found"):
        resume.read_delivered("/nonexistent/log.json")
    with pytest.raises(CoverageError, match="not finite"):
        resume.remaining(auto_plan, np.array([[0.0, 0.0, np.nan]]))
    with pytest.raises(CoverageError, match=r"shape \(5,\)"):
        resume.remaining(auto_plan, np.zeros(5))
    with pytest.raises(CoverageError, match="not a fraction"):
        resume.remaining(auto_plan, {3: -0.1})
    with pytest.raises(CoverageError, match="not in the plan"):
        resume.interrupted(auto_plan, -4, 0.5)
    with pytest.raises(CoverageError, match="completed_before = 123456"):
        resume.remaining(auto_plan, resume.Delivered(completed_before=123456))


def test_resume_files_writes_the_remaining_plan(tmp_path, auto_plan, halfway):
    middle, (rest, _) = halfway
    plan_path = tmp_path / "PLAN.json"
    auto_plan.save(plan_path)
    log = tmp_path / "log.json"
    log.write_text(json.dumps({"strokes": {str(middle): 0.5}, "completed_before": middle}))
    (_result, _report), paths = resume.resume_files(plan_path, log, tmp_path / "REST.json")
    assert [p.name for p in paths] == ["REST.json", "REST.npz"]
    again = Plan.load(tmp_path / "REST.json")
    np.testing.assert_array_equal(again.puncture_points, rest.puncture_points)
    assert [s.id for s in again.strokes] == [s.id for s in rest.strokes]
    with pytest.raises(CoverageError, match="overwrite"):
        resume.resume_files(plan_path, log, plan_path)
