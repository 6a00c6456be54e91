"""The pen planner: settings, stamps by distance, the dose field, and pen and auto plans."""
import dataclasses
import math

import numpy as np
import pytest

from coverage import pen as P
from coverage import simulate
from coverage.density import density, texel_grid
from coverage.errors import CoverageError
from coverage.protocol import Protocol

PROTOCOL = Protocol.default()


def test_pen_settings_worked_by_hand():
    pen = PROTOCOL.pen
    cheek = P.pen_settings(pen, PROTOCOL.zone("cheek_left"))
    # aim = 250 x 1.075 = 268.75 /cm2 over 2 passes: 1.34375 punctures/mm2 per pass; lines
    # a footprint apart (7 mm) at the top speed 150 mm/s need f = rho v s / N
    assert cheek.passes == 2 and cheek.spacing_mm == pytest.approx(7.0)
    assert cheek.speed_mm_s == pytest.approx(150.0)
    assert cheek.stamp_hz == pytest.approx(1.34375 * 150 * 7 / 12)            # 117.6 Hz
    assert cheek.stamp_spacing_mm == pytest.approx(12 / (1.34375 * 7))        # 1.28 mm between stamps
    # N f / (v s) per pass, in /cm2
    assert 100 * pen.needles * cheek.stamp_hz / (cheek.speed_mm_s * cheek.spacing_mm) == pytest.approx(268.75 / 2)
    # the periorbital band (150 x 1.075): the same lines, a slower rate
    band = P.pen_settings(pen, PROTOCOL.zone("periorbital_left"))
    assert band.spacing_mm == pytest.approx(7.0) and band.speed_mm_s == pytest.approx(150.0)
    assert band.stamp_hz == pytest.approx(0.80625 * 150 * 7 / 12)             # 70.5 Hz
    # a dose the top rate cannot give at 7 mm: 500 x 1.075 /cm2 (2.6875 /mm2 a pass) would
    # need 235 Hz there, so the lines close in until 150 Hz: s = N f / (rho v) = 4.47 mm
    dense = P.pen_settings(pen, dataclasses.replace(PROTOCOL.zone("cheek_left"), target_per_cm2=500.0))
    assert dense.stamp_hz == pytest.approx(150.0) and dense.speed_mm_s == pytest.approx(150.0)
    assert dense.spacing_mm == pytest.approx(12 * 150 / (2.6875 * 150))
    # nothing left to add (the roller gave the whole dose): lines a footprint apart, no stamps
    none = P.pen_settings(pen, PROTOCOL.zone("cheek_left"), aim_per_cm2=0.0)
    assert none.spacing_mm == pytest.approx(7.0) and none.stamp_hz == 0.0 and none.stamp_spacing_mm == math.inf
    assert band.pattern == "contour" and cheek.pattern == "raster"
    assert band.depth_mm == 0.25 and cheek.depth_mm == 1.0


def test_pen_depth_snaps_down_to_device_steps_within_the_zone_maximum():
    """The protocol loader already refuses off-step depths; the planner still never rounds up."""
    pen = PROTOCOL.pen
    cheek = dataclasses.replace(PROTOCOL.zone("cheek_left"), depth_mm=0.6)
    assert P.pen_depth_mm(pen, cheek) == 0.5
    nose = dataclasses.replace(PROTOCOL.zone("nose"), depth_mm=1.0, max_depth_mm=0.7)
    assert P.pen_depth_mm(pen, nose) == 0.5
    shallow = dataclasses.replace(PROTOCOL.zone("nose"), depth_mm=0.1, max_depth_mm=0.1)
    with pytest.raises(CoverageError, match="max_depth_mm"):
        P.pen_depth_mm(pen, shallow)


def test_stamps_are_spaced_by_distance_and_the_remainder_carries():
    placer = P.StampPlacer()
    line = np.stack([np.linspace(0, 10, 41), np.zeros(41)], axis=1)
    stamps, at = placer.place(line, np.full(41, 0.5))       # 0.5 stamps per mm over 10 mm
    np.testing.assert_allclose(at, [1, 3, 5, 7, 9])
    np.testing.assert_allclose(stamps[:, 0], at)
    # 3 mm more at 0.5/mm: the half stamp left over from the first run plus 1.5 -> 2 stamps
    more, at2 = placer.place(line[:13], np.full(13, 0.5))
    np.testing.assert_allclose(at2, [1, 3])
    # a slow stretch does not matter: the spacing follows the distance, whatever the speed
    empty, _ = P.StampPlacer().place(line, np.zeros(41))
    assert len(empty) == 0


def _reversing_path(face, grid_zone="cheek_left"):
    """A 30 mm chart path on the cheek that stops and comes back on itself."""
    centre = face.uv[425]
    out = np.stack([np.linspace(centre[0] - 15, centre[0] + 15, 121), np.full(121, centre[1])], axis=1)
    return np.concatenate([out, out[::-1][1:]])


def test_a_stroke_that_stops_and_reverses_stacks_no_stamps(default_face, default_zones):
    """Stamps by distance: the reversal point gets no more than anywhere else; stamps by time
    (a constant rate while the tool decelerates into the turn) would overdose it."""
    face, zones = default_face, default_zones
    path = _reversing_path(face)
    cap = zones.dose("cheek_left").cap_per_cm2
    # along a single line the footprint covers ~7 mm: choose stamps per mm so that the
    # two legs over each other stay under the cap across the 7 mm strip
    per_mm = 0.8 * cap / 100 * 7.0 / PROTOCOL.pen.needles / 2
    stamps, at = P.StampPlacer().place(path, np.full(len(path), per_mm))
    step = np.diff(at)
    # the turn is at the path's middle: the distance travelled between stamps there is the
    # distance everywhere
    assert step.max() - step.min() < 1e-9 * step.mean() + 1e-9
    layout = simulate.needle_layout(PROTOCOL.pen.needles, 7.0, 0.25)

    def dose(centres):
        hits = simulate.stamp(face, centres, P.stamp_angles(len(centres)), 1.0, layout, 0.5)
        return density(face, zones, hits.uv[hits.fired]).nominal_per_cm2

    by_distance = dose(stamps)
    assert np.nanmax(by_distance) <= cap
    # a pen firing by time at the rate that gives the same spacing at full speed (150 mm/s),
    # decelerating at 1000 mm/s^2 into the turn (the last 11.25 mm) and accelerating out
    v, acc = 150.0, 1000.0
    seg = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    half = seg[-1] / 2
    ramp = v * v / (2 * acc)
    t_ramp, t_half = v / acc, (half - ramp) / v + v / acc
    t = np.arange(0.0, 2 * t_half, step.mean() / v)
    tau = np.abs(t - t_half)                       # time from the turn
    left = np.where(tau < t_ramp, 0.5 * acc * tau ** 2, ramp + v * (tau - t_ramp))
    s_time = np.where(t < t_half, half - left, half + left)
    by_time_centres = np.stack([np.interp(s_time, seg, path[:, 0]), np.interp(s_time, seg, path[:, 1])], axis=1)
    by_time = dose(by_time_centres)
    assert np.nanmax(by_time) > cap > np.nanmax(by_distance)


def test_dose_field_solves_the_pen_only_face(default_face, default_zones):
    """The solver's own prediction: in band over most of every open zone, nothing over cap."""
    grid = texel_grid(default_zones)
    problem = P.dose_field(default_zones, grid, PROTOCOL, np.zeros(grid.shape), set(default_zones.names))
    q = problem.solve()
    assert (q >= 0).all() and (q[~problem.allowed] == 0).all()
    d = problem.windowed(problem.counts(q))
    for name in ("forehead", "cheek_left", "cheek_right", "chin", "jaw_left"):
        k = default_zones.names.index(name)
        sel = grid.label == k
        dose = default_zones.dose(name)
        w = grid.area_mm2[sel]
        inband = w[(d[sel] >= 0.9 * dose.target_per_cm2) & (d[sel] <= dose.cap_per_cm2)].sum() / w.sum()
        assert inband > 0.9, (name, inband)
    # the allowed centres keep a footprint and its slack from every forbidden texel
    radius = 3.5 + P.EDGE_SLACK_MM
    for depth, dist in problem.skin_distance.items():
        mine = problem.allowed & (problem.depth_mm == depth)
        assert mine.any() and dist[mine].min() >= radius - 1e-9


def test_auto_plan_uses_both_devices_and_never_exceeds_a_cap(auto_plan, default_zones):
    summary = auto_plan.summary()
    assert summary["devices"] == ["pen", "roller"]
    for name, z in summary["zones"].items():
        assert z["over_cap_fraction"] == 0.0, name
    assert summary["punctures_off_treatable_skin"] == 0
    pen = [s for s in auto_plan.strokes if s.device == "pen"]
    # every pen stroke states needle length, depth and puncture rate (21 CFR 878.4430)
    for s in pen:
        assert s.needle_length_mm in (0.25, 0.5, 0.75, 1.0)
        assert 0 < s.depth_mm <= s.needle_length_mm
        assert s.cartridge["needles"] in (PROTOCOL.pen.needles, PROTOCOL.pen.fine_needles)
        assert s.puncture_rate_hz == pytest.approx(s.cartridge["needles"] * s.stamp_hz)
        assert s.stamp_hz <= PROTOCOL.pen.stamp_hz_max + 1e-9
        if len(s.stamp_times_s) > 1:      # no two stamps closer in time than the top rate allows
            assert np.diff(s.stamp_times_s).min() >= 1 / PROTOCOL.pen.stamp_hz_max - 1e-9
        assert PROTOCOL.pen.speed_mm_s_min <= s.speed_mm_s <= PROTOCOL.pen.speed_mm_s_max
        assert len(s.stamp_uv) == len(s.stamp_times_s) and np.all(np.diff(s.stamp_times_s) > 0)
        # stamp points lie on the path's stroke (within a sample step of the chart path)
        gaps = np.linalg.norm(s.stamp_uv[:, None] - s.uv[None], axis=2).min(axis=1)
        assert gaps.max() < 0.5
    assert {s.pattern for s in pen} >= {"raster", "contour", "touch-up"}
    # the fine cartridge reaches where the main footprint cannot, only in touch-ups
    fine = [s for s in pen if s.cartridge["needles"] == PROTOCOL.pen.fine_needles]
    assert fine and {s.pattern for s in fine} == {"touch-up"}
    # pen depth never deeper than the zone's maximum; strokes stay in their zone
    for s in pen:
        assert s.depth_mm <= default_zones.dose(s.zone).max_depth_mm
        labels = default_zones.label_at(s.uv)
        assert (np.array(default_zones.names)[labels[labels >= 0]] == s.zone).all()
    times = [(s.times_s[0], s.times_s[-1]) for s in auto_plan.strokes]
    assert all(b[0] >= a[1] - 1e-9 for a, b in zip(times, times[1:]))


def test_auto_plan_brings_every_zone_into_its_band(auto_plan):
    # the DESIGN bar: at least 95 % of every zone's treatable skin within [0.9 x target, cap]
    # and none over its cap, on the default face with the default protocol
    for name, z in auto_plan.summary()["zones"].items():
        assert z["in_band_fraction"] >= 0.95, (name, z["in_band_fraction"])
        assert z["over_cap_fraction"] == 0.0, name


def test_auto_plan_passes_the_verifier(auto_plan):
    from coverage.verify import verify

    result = verify(auto_plan)
    assert result.ok, result.text()


def test_a_move_across_an_exclusion_lifts_to_the_full_clearance(default_face, default_zones):
    from coverage.plan import transit_clearance

    uv = default_face.uv
    # from the left cheek across the left eye to the forehead: full clearance
    cheek, brow = uv[425], uv[299]
    assert transit_clearance(default_zones, cheek, brow) == PROTOCOL.session.clearance_mm
    # a short move within the cheek: a hop
    assert transit_clearance(default_zones, cheek, cheek + [3.0, 0.0]) == PROTOCOL.session.hop_clearance_mm


def test_transit_clearances_are_each_moves_own(default_face, default_zones):
    # the batch asks the keep-out about every line at once: each move reads what the
    # shapely predicate on its own line (or point, for a move of no length) reads
    import shapely
    from coverage.plan import transit_clearance, transit_clearances

    rng = np.random.default_rng(7)
    uv = default_face.uv
    a = uv[rng.integers(0, len(uv), 300)]
    b = np.where(rng.random((300, 1)) < 0.5, a + rng.normal(0.0, 4.0, (300, 2)), uv[rng.integers(0, len(uv), 300)])
    b[:10] = a[:10]                        # no move at all
    b[10:20] = a[10:20] + 1e-12            # within the zero-length tolerance
    got = transit_clearances(default_zones, a, b)
    session = PROTOCOL.session
    hop = min(session.hop_clearance_mm, session.clearance_mm)
    want = [session.clearance_mm if default_zones.keepout.intersects(
        shapely.LineString([p, q]) if np.linalg.norm(q - p) > 1e-9 else shapely.Point(p)) else hop
        for p, q in zip(a, b)]
    assert got.tolist() == want
    assert {session.clearance_mm, hop} <= set(got.tolist())     # both kinds of move are there
    assert [transit_clearance(default_zones, p, q) for p, q in zip(a[:40], b[:40])] == want[:40]
    assert transit_clearances(default_zones, np.empty((0, 2)), np.empty((0, 2))).shape == (0,)


def test_pen_speed_drops_only_between_stamps_too_close_for_the_top_rate():
    from coverage.plan import pen_speed_profile

    pen = PROTOCOL.pen                            # top rate 150 Hz, speeds 5 to 150 mm/s
    skin_s = np.linspace(0.0, 10.0, 41)           # 0.25 mm samples
    stamps = np.array([1.0, 3.0, 3.5, 3.6, 8.0])  # gaps 2.0, 0.5, 0.1, 4.4 mm
    speed = pen_speed_profile(skin_s, stamps, 150.0, pen)
    elapsed = np.concatenate([[0.0], np.cumsum(np.diff(skin_s) / speed)])
    t = np.interp(stamps, skin_s, elapsed)
    # no two stamps closer in time than 1 / 150 s; the 0.1 mm gap is crossed at 15 mm/s
    assert np.diff(t).min() >= 1 / pen.stamp_hz_max - 1e-12
    assert speed.min() == pytest.approx(150 * 0.1)
    # full speed before the first stamp, after the last, and across the 2.0 and 4.4 mm gaps
    assert speed[0] == 150.0 and speed[-1] == 150.0
    assert speed[(skin_s[1:] > 4.0) & (skin_s[:-1] < 7.5)].min() == 150.0


@pytest.mark.parametrize("roller_only", [("nose",), ("forehead", "cheek_left", "cheek_right")])
def test_no_pen_needle_lands_in_a_zone_the_protocol_keeps_the_pen_out_of(default_face, roller_only):
    """A zone the pen may not treat takes no needle of a neighbouring zone's pen stamps:
    before stop 29 the 7 mm footprints of the glabella's and the periorbital bands' stamps
    put 10 to 101 needles each into a roller-only nose (7 strokes), and the jaw's raster a
    few into a roller-only cheek (2 strokes), which the verifier refused."""
    from coverage import plan, verify

    protocol = Protocol.from_dict({"zones": {z: {"devices": ["roller"]} for z in roller_only}})
    made = plan(default_face, protocol=protocol)
    check = verify(made, default_face)
    assert check.ok, check.failed()
    pen_strokes = np.array([s.id for s in made.strokes if s.device == "pen"])
    assert len(pen_strokes) > 40
    by_pen = np.isin(made.puncture_stroke, pen_strokes)
    names = made.zones.names
    label = made.zones.label_at(made.puncture_uv[by_pen])
    assert not np.isin(label, [names.index(z) for z in roller_only]).any()
    # the verifier's own reading: no stroke refused for its device
    assert check.as_dict()["checks"]["device"]["strokes_refused"] == 0
