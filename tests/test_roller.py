"""The roller: drum model, puncture simulation, pass patterns on the default face, plans."""
import dataclasses
import json
import math

import numpy as np
import pytest
import shapely
from scipy.spatial import cKDTree

from coverage import Protocol, ZoneMap, simulate
from coverage import roller as R
from coverage.curvature import principal_curvatures
from coverage.plan import plan, report_text
from coverage.planio import read_plan_json
from coverage.zones import canonical_exclusion_regions
from geometry_checks import exact_distance_to_region

PROTOCOL = Protocol.default()


def drum(length=1.0):
    return R.Drum.from_protocol(PROTOCOL, length)


# --- the drum by hand ----------------------------------------------------------------------

def test_default_drum_geometry():
    d = drum()
    np.testing.assert_allclose(d.ring_x_mm, [-8.75, -6.25, -3.75, -1.25, 1.25, 3.75, 6.25, 8.75])
    assert d.needle_pitch_mm == pytest.approx(math.pi * 20 / 24)          # 2.618 mm
    assert d.density_per_pass_per_cm2 == pytest.approx(192 / (math.pi * 20 * 20) * 100)  # 15.28
    assert d.ring_phase.tolist() == [0, 0.5, 0, 0.5, 0, 0.5, 0, 0.5]


def test_gaps_swath_and_conformity_by_hand():
    d = drum(1.0)  # tolerance 0.5 x 1.0 mm
    # convex 15 mm radius across: gap k x^2 / 2 = x^2 / 30; 3.75 -> 0.47 reaches, 6.25 -> 1.30 does not
    gaps = d.gaps_mm([1 / 15])[0]
    np.testing.assert_allclose(gaps[4:], [1.25 ** 2 / 30, 3.75 ** 2 / 30, 6.25 ** 2 / 30, 8.75 ** 2 / 30])
    assert d.central_rings([1 / 15])[0] == 4 and d.swath_mm([1 / 15])[0] == 10.0
    # concave 200 mm across: the middle bridges by (10^2 - x^2) / 400: 0.246 at x = 1.25, reaches
    assert d.swath_mm([-1 / 200])[0] == 20.0
    # concave 50 mm: the middle needle hangs 0.98 mm above the skin: nothing central reaches
    assert d.swath_mm([-1 / 50])[0] == 0.0
    # along travel a concave radius below D/2 = 10 mm cannot be followed
    assert d.conforms([0.0], [-1 / 8])[0] == False  # noqa: E712
    assert d.conforms([0.0], [-1 / 12])[0] == True  # noqa: E712
    # at least half the rings must reach: 2 of 8 is not enough
    assert d.conforms([0.3], [0.0])[0] == False  # noqa: E712


@pytest.mark.parametrize("target, cap, expect", [
    (250.0, 312.5, [5, 4, 4, 4]),   # ceil(250 / 15.28) = 17 -> 259.7 <= 312.5
    (187.5, 234.4, [4, 3, 3, 3]),   # 13 -> 198.6
    (250.0, 255.0, [4, 4, 4, 3]),   # 17 and 16 give 285.7 and 268.9 > 255 with 10 % headroom: 15
    (75.0, 82.5, [1, 1, 1, 1]),     # 5 give 76.4, 84.0 with headroom > 82.5: 4 (61.1; the pen adds the rest)
])
def test_passes_reach_the_target_without_passing_the_cap(target, cap, expect):
    d = drum()
    got = R.passes_for_target(d, target, cap, 4)
    assert got == expect
    assert sum(got) * d.density_per_pass_per_cm2 * R.CAP_HEADROOM <= cap


# --- simulation kernel -------------------------------------------------------------------

def _random_runs(seed, m=150):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 160, m)
    start = np.concatenate([[0], np.cumsum(lengths)])
    s = np.concatenate([np.concatenate([[0.0], np.cumsum(rng.uniform(0.2, 0.8, n - 1))]) for n in lengths])
    n = start[-1]
    return simulate.RunArrays(s, rng.normal(size=(n, 2)) * 30, rng.normal(size=(n, 2)), rng.normal(size=n) * 0.05,
                              start, rng.uniform(0, 2.6, m))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roll_kernel_matches_reference(seed):
    runs = _random_runs(seed)
    for d in (drum(1.0), drum(0.5)):
        got = simulate.roll(runs, d)
        ref = simulate.roll_reference(runs, d)
        assert len(got.uv) == len(ref.uv) > 1000
        np.testing.assert_array_equal(got.run, ref.run)
        np.testing.assert_array_equal(got.ring, ref.ring)
        np.testing.assert_allclose(got.uv, ref.uv, atol=1e-12)
        np.testing.assert_allclose(got.depth_mm, ref.depth_mm, atol=1e-12)
        # firing order: along each run, arc length never goes back
        for m in np.unique(got.run):
            assert (np.diff(got.s_mm[got.run == m]) >= 0).all()


# --- flat patch ------------------------------------------------------------------------------

def _straight_runs(starts, direction, length_mm, phases, step=0.5):
    """Straight runs on a flat sheet (chart = skin, no curvature)."""
    n = int(length_mm / step) + 1
    t = np.linspace(0.0, length_mm, n)
    d = np.asarray(direction, dtype=float)
    left = np.array([-d[1], d[0]])
    uv = np.concatenate([np.asarray(p)[None, :] + t[:, None] * d for p in starts])
    across = np.tile(left, (len(uv), 1))
    start = np.arange(len(starts) + 1) * n
    return simulate.RunArrays(np.tile(t, len(starts)), uv, across, np.zeros(len(uv)), start, np.asarray(phases, float))


def test_one_pass_on_a_flat_sheet_gives_the_drum_density():
    d = drum()
    hits = simulate.roll(_straight_runs([(0.0, 0.0)], (1.0, 0.0), 200.0, [0.3]), d)
    # every needle reaches on flat skin, at the needle length
    assert set(hits.ring.tolist()) == set(range(8)) and np.allclose(hits.depth_mm, 1.0)
    # the swath's interior: x in [50, 150] mm over its 20 mm width
    inside = (hits.uv[:, 0] >= 50) & (hits.uv[:, 0] < 150)
    per_cm2 = inside.sum() / (100 * 20 / 100.0)
    assert per_cm2 == pytest.approx(15.28, rel=0.03)
    # and window by window (1 cm^2 squares along the swath)
    counts = [((hits.uv[:, 0] >= x) & (hits.uv[:, 0] < x + 10) & (np.abs(hits.uv[:, 1]) < 5)).sum()
              for x in range(50, 150, 10)]   # 10 x 10 mm windows in the swath's middle
    assert np.mean(counts) == pytest.approx(15.28, rel=0.03)


def test_sixteen_passes_give_the_classic_dose():
    """4 directions x 4 passes, lines one swath (20 mm) apart, passes spread across the swath."""
    d = drum()
    parts = []
    for theta in (0.0, 90.0, 45.0, 135.0):
        t = math.radians(theta)
        direction = np.array([math.cos(t), math.sin(t)])
        normal = np.array([-direction[1], direction[0]])
        for j in range(4):
            offsets = np.arange(-160.0, 160.0, 20.0) + j * 5.0
            starts = [o * normal - 160.0 * direction for o in offsets]
            runs = _straight_runs(starts, direction, 320.0, [((j * 0.618 + k * 0.382) % 1) * d.needle_pitch_mm
                                                               for k in range(len(starts))])
            parts.append(simulate.roll(runs, d).uv)
    uv = np.concatenate(parts)
    # 1 cm^2 windows over the central 60 x 60 mm
    centres = np.stack(np.meshgrid(np.arange(-30, 31, 5.0), np.arange(-30, 31, 5.0)), -1).reshape(-1, 2)
    tree = cKDTree(uv)
    counts = np.array([len(tree.query_ball_point(c, 10.0, p=np.inf)) for c in centres]) / 4.0  # 20 x 20 mm / 4
    assert counts.mean() == pytest.approx(16 * 15.28, rel=0.05)      # 244.5: ~250 after ~15 rolls
    assert counts.mean() == pytest.approx(245.0, rel=0.05)
    assert np.percentile(counts, 5) > 0.9 * 245 and np.percentile(counts, 95) < 1.1 * 245


# --- cylinders -------------------------------------------------------------------------------

def _cylinder(radius, inward=False):
    theta, z = np.meshgrid(np.linspace(0, 2 * np.pi, 300, endpoint=False), np.linspace(-60, 60, 241))
    vertices = np.stack([radius * np.cos(theta), radius * np.sin(theta), z], -1).reshape(-1, 3)
    normals = np.stack([np.cos(theta), np.sin(theta), 0 * z], -1).reshape(-1, 3)
    return vertices, (-normals if inward else normals)


def test_convex_cylinder_along_its_axis_narrows_the_swath():
    radius = 15.0
    vertices, normals = _cylinder(radius)
    # measured at a radius small against the cylinder's (a fit over the drum's 20 mm would
    # span 76 degrees of this tight cylinder); the drum model takes the curvature as given
    curv = principal_curvatures(vertices, normals, 4.0)
    mid = np.nonzero(np.abs(vertices[:, 2]) < 20)[0]
    along = np.tile([0.0, 0.0, 1.0], (len(mid), 1))
    across = np.cross(normals[mid], along)
    k_along = curv.normal_curvature(mid, along)
    k_across = curv.normal_curvature(mid, across)
    assert np.median(k_across) == pytest.approx(1 / radius, rel=0.05)
    d = drum(1.0)
    # the model's prediction: rings within sqrt(2 x 0.5 / k) = 3.87 mm reach: 4 rings, 10 mm
    assert set(d.swath_mm(k_across).tolist()) == {10.0}
    # half the rings: the default protocol (all of them) does not roll here; a protocol
    # that accepts half does
    assert not d.conforms(k_across, k_along).any()
    half = dataclasses.replace(d, min_swath_fraction=0.5)
    assert half.conforms(k_across, k_along).all()
    # roll along the axis on the unrolled cylinder (arc length around = chart u, axis = chart v)
    n = 201
    s = np.linspace(0.0, 100.0, n)
    runs = simulate.RunArrays(s, np.stack([np.zeros(n), s - 50.0], 1), np.tile([-1.0, 0.0], (n, 1)),
                              np.full(n, float(np.median(k_across))), np.array([0, n]), np.array([0.0]))
    hits = simulate.roll(runs, d)
    assert sorted(set(hits.ring.tolist())) == [2, 3, 4, 5]               # the four central rings
    band = np.ptp(hits.uv[:, 0]) + d.ring_pitch_mm                       # needle extent + one ring band
    assert band == pytest.approx(10.0, abs=1e-9)
    x = d.ring_x_mm[hits.ring]
    np.testing.assert_allclose(hits.depth_mm, 1.0 - np.median(k_across) * x * x / 2)
    # the needles land on the cylinder (lift the unrolled chart: u = arc around)
    angle = hits.uv[:, 0] / radius
    pts = np.stack([radius * np.cos(angle), radius * np.sin(angle), hits.uv[:, 1]], 1)
    assert np.allclose(np.linalg.norm(pts[:, :2], axis=1), radius)


def test_concave_cylinder_across_is_refused():
    vertices, normals = _cylinder(8.0, inward=True)
    curv = principal_curvatures(vertices, normals, 4.0)
    mid = np.nonzero(np.abs(vertices[:, 2]) < 20)[0]
    around = np.cross(np.tile([0.0, 0.0, 1.0], (len(mid), 1)), normals[mid])    # travel across the axis
    k_along = curv.normal_curvature(mid, around)
    k_across = curv.normal_curvature(mid, np.tile([0.0, 0.0, 1.0], (len(mid), 1)))
    assert np.median(k_along) == pytest.approx(-1 / 8.0, rel=0.05)
    assert not drum(1.0).conforms(k_across, k_along).any()


# --- the default face ---------------------------------------------------------------------------

def test_strokes_and_punctures_stay_in_roller_zones(roller_plan, default_zones):
    allowed = {n for n in default_zones.names if "roller" in PROTOCOL.zone(n).devices}
    assert roller_plan.strokes
    for s in roller_plan.strokes:
        assert s.device == "roller" and set(s.zones) <= allowed and s.zone in allowed
    labels = default_zones.label_at(roller_plan.puncture_uv)
    assert (labels >= 0).all()
    assert {default_zones.names[i] for i in np.unique(labels)} <= allowed
    # and they lie on the face, at most the drum's needle length deep, within each zone's limit
    flat = default_zones.face.flatten(roller_plan.puncture_points)
    assert flat.distance.max() < 1e-6
    for i in np.unique(labels):
        dose = PROTOCOL.zone(default_zones.names[i])
        depth = roller_plan.puncture_depth_mm[labels == i]
        assert depth.max() <= dose.roller_needle_length_mm <= dose.max_depth_mm
        assert depth.min() >= dose.roller_needle_length_mm * (1 - PROTOCOL.roller.gap_tolerance) - 1e-9


@pytest.mark.parametrize("name", ["eye_left", "eye_right", "lips", "nostril_left", "nostril_right",
                                  "eyebrow_left", "eyebrow_right"])
def test_no_puncture_within_an_exclusion_margin(roller_plan, default_zones, default_face, name):
    parts = dict(canonical_exclusion_regions(default_face.subdivisions)[name])
    for part, margin in default_zones.exclusions[name].margins_mm:
        dist = exact_distance_to_region(default_face, parts[part], roller_plan.puncture_points, reach=margin + 1.0)
        assert dist.min() >= margin, (name, part, dist.min())


def test_no_part_of_the_drum_over_a_keepout(roller_plan, default_face, default_zones):
    """The drum's full D x W outline around every contact stays outside every keep-out."""
    d = drum()
    keep = default_zones.keepout
    for s in roller_plan.strokes:
        tri = s.tri
        jac = default_face.jacobian[tri]
        pinv = np.linalg.pinv(jac)
        t2 = np.einsum("kij,kj->ki", pinv, s.tangents)
        a2 = np.einsum("kij,kj->ki", pinv, np.cross(s.normals, s.tangents))
        corners = [s.uv + sx * d.diameter_mm / 2 * t2 + sy * d.width_mm / 2 * a2
                   for sx in (-1, 0, 1) for sy in (-1, 0, 1)]
        rects = shapely.polygons(np.stack([corners[0], corners[2], corners[8], corners[6]], axis=1))
        assert not shapely.intersects(rects, keep).any(), s.id


def _spacing_ratios(strokes):
    """Distance to the next line of the same sweep, over the mean of the two swaths."""
    groups = {}
    for s in strokes:
        groups.setdefault((s.direction_deg, s.pass_index, s.family), []).append(s)
    ratios = []
    for members in groups.values():
        for s in members:
            nbs = [t for t in members if t.line == s.line + 1 and set(t.zones) & set(s.zones)]
            if not nbs:
                continue
            pts = np.concatenate([t.points for t in nbs])
            swath = np.concatenate([t.swath_mm for t in nbs])
            ends = np.cumsum([len(t.points) for t in nbs])
            end_ids = set(np.concatenate([[0], ends[:-1], ends - 1]).tolist())
            d, i = cKDTree(pts).query(s.points)
            alongside = np.array([j not in end_ids for j in i])   # not past the neighbour's ends
            ratios.append(d[alongside] / ((s.swath_mm[alongside] + swath[i[alongside]]) / 2))
    return np.concatenate(ratios)


def test_neighbouring_passes_are_one_effective_swath_apart(roller_plan):
    ratio = _spacing_ratios(roller_plan.strokes)
    assert len(ratio) > 3000
    within = np.mean(np.abs(ratio - 1) <= 0.10)
    print(f"\nspacing / effective swath: {100 * within:.1f}% of {len(ratio)} samples within 10%; "
          f"p5 {np.percentile(ratio, 5):.3f} p50 {np.median(ratio):.3f} p95 {np.percentile(ratio, 95):.3f}")
    assert within >= 0.95


def test_dose_never_passes_the_cap_and_the_cheeks_reach_their_target(roller_plan):
    stats = roller_plan.density.stats()
    for name, s in stats.items():
        assert s.over_cap_fraction == 0.0, name
        assert not (s.max > s.cap_per_cm2), name
    for cheek in ("cheek_left", "cheek_right"):
        s = stats[cheek]
        # where the drum has rolled every sweep (the cheek's core) it reaches the target
        assert s.p95 >= 0.9 * s.target_per_cm2 and s.max <= s.cap_per_cm2
        print(f"{cheek}: {100 * s.in_band_fraction:.0f}% of the cheek in band, mean {s.mean:.0f}, "
              f"p95 {s.p95:.0f}, max {s.max:.0f} (target {s.target_per_cm2:.0f}, cap {s.cap_per_cm2:.1f})")


def test_refused_zones_are_reported(roller_plan):
    summary = roller_plan.summary()["zones"]
    for name in ("glabella", "periorbital_left", "periorbital_right", "nose", "perioral"):
        assert summary[name]["roller"]["status"] == "not allowed"
    for name in ("forehead", "cheek_left", "cheek_right", "chin", "jaw_left"):
        assert summary[name]["roller"]["status"] == "planned"
        assert set(summary[name]["roller"]["conforming_fraction"]) == {"0", "90", "45", "135"}
    text = report_text(roller_plan.to_json())
    assert "nose: roller not allowed" in text and "periorbital_left: roller not allowed" in text


def test_passes_snake_and_transitions_lift_clear_of_the_skin(roller_plan, default_face):
    strokes = roller_plan.strokes
    # boustrophedon: consecutive lines of one sweep run opposite ways (their mean 3D tangents
    # point apart), or, on the short curved lines of the temples where mean tangents mislead,
    # the next line at least starts at its end nearer where the line before ended
    snaking = total = 0
    for a, b in zip(strokes[:-1], strokes[1:]):
        if (a.direction_deg, a.pass_index, a.family) == (b.direction_deg, b.pass_index, b.family) and b.line == a.line + 1:
            total += 1
            snaking += (float(np.dot(a.tangents.mean(0), b.tangents.mean(0))) < 0
                        or np.linalg.norm(b.points[0] - a.points[-1]) <= np.linalg.norm(b.points[-1] - a.points[-1]))
    assert total > 20 and snaking / total > 0.95, (snaking, total)
    from coverage.plan import signed_clearance, transit_clearance
    hops = 0
    for t in roller_plan.transitions:
        # every point of the travel keeps its clearance from all of the face (not just the
        # skin below it: across a fold the skin opposite is nearer): the full clearance when
        # the move's chart line crosses a keep-out, else the lower hop clearance
        clearance = transit_clearance(roller_plan.zones, strokes[t.from_stroke].uv[-1], strokes[t.to_stroke].uv[0])
        hops += clearance < PROTOCOL.session.clearance_mm
        assert signed_clearance(default_face, t.points[1:-1]).min() >= clearance - 2e-3
        assert np.linalg.norm(t.points[0] - strokes[t.from_stroke].points[-1]) < 1e-9
        assert np.linalg.norm(t.points[-1] - strokes[t.to_stroke].points[0]) < 1e-9
    assert 0 < hops < len(roller_plan.transitions)
    # times run on: every stroke starts when the move before it ends
    for t in roller_plan.transitions:
        assert strokes[t.to_stroke].times_s[0] == pytest.approx(t.times_s[-1])
        assert t.times_s[0] == pytest.approx(strokes[t.from_stroke].times_s[-1])


def test_plan_files(roller_plan, tmp_path):
    json_path, npz_path = roller_plan.save(tmp_path / "PLAN.json")
    doc = json.loads(json_path.read_text())
    assert doc["format"] == "coverage-plan" and doc["version"] == 2 and doc["units"]["length"] == "mm"
    assert doc["protocol"]["name"] == "default" and len(doc["strokes"]) == len(roller_plan.strokes)
    first = doc["strokes"][0]
    for key in ("device", "zone", "pass_index", "direction_deg", "depth_mm", "needle_length_mm", "speed_mm_s"):
        assert key in first
    assert first["path"] == {"first": 0, "samples": len(roller_plan.strokes[0].points)}
    zone = doc["summary"]["zones"]["cheek_left"]
    for key in ("area_cm2", "target_per_cm2", "cap_per_cm2", "mean", "p5", "p50", "p95", "max",
                "in_band_fraction", "over_cap_fraction"):
        assert key in zone
    assert doc["summary"]["punctures"] == len(roller_plan.puncture_points)
    assert doc["summary"]["time_s"] == pytest.approx(roller_plan.time_s)
    arrays = np.load(npz_path)
    assert arrays["punctures"].shape == (len(roller_plan.puncture_points), 3)
    np.testing.assert_array_equal(arrays["puncture_stroke"], roller_plan.puncture_stroke)
    np.testing.assert_array_equal(arrays["puncture_depth_mm"], roller_plan.puncture_depth_mm)
    np.testing.assert_array_equal(arrays["path_positions"][:len(roller_plan.strokes[0].points)],
                                  roller_plan.strokes[0].points)
    assert read_plan_json(json_path)["device"] == "roller"


def test_start_corner_is_honoured(default_face, default_zones):
    chosen = plan(default_face, zones=default_zones, device="roller", start_corner="top_right")
    first = chosen.strokes[0]
    # the first region rolled is the forehead's (with the temples and cheekbones, one drum);
    # its first stroke starts at its top right (the subject's right: -u)
    region = next(r for r in R.roller_regions(default_zones, default_zones.protocol) if set(first.zones) <= set(r.zones))
    assert "forehead" in region.zones
    minx, miny, maxx, maxy = region.polygon.bounds
    assert first.uv[0, 0] < (minx + maxx) / 2 and first.uv[0, 1] > (miny + maxy) / 2


def test_slivers_with_room_for_one_pass_or_none(default_face):
    """A zone 24 mm wide fits one pass of a 20 mm band; one 8 mm wide fits none: no error."""
    cheek = default_face.uv[425]
    wide = [(cheek[0] - 40, cheek[1] - 12), (cheek[0] + 10, cheek[1] - 12), (cheek[0] + 10, cheek[1] + 12),
            (cheek[0] - 40, cheek[1] + 12)]
    thin = [(cheek[0] - 40, cheek[1] + 20), (cheek[0] + 10, cheek[1] + 20), (cheek[0] + 10, cheek[1] + 28),
            (cheek[0] - 40, cheek[1] + 28)]
    zone = {"devices": ["roller"], "depth_mm": 1.0, "max_depth_mm": 1.5, "target_per_cm2": 250.0,
            "roller_needle_length_mm": 1.0, "directions_deg": [0.0]}
    protocol = Protocol.from_dict({"zones": {"sliver": {**zone, "polygon_chart": [list(p) for p in wide]},
                                             "thread": {**zone, "polygon_chart": [list(p) for p in thin]}}})
    zones = ZoneMap.default(default_face, protocol)
    result = plan(default_face, protocol, zones, device="roller")
    status = result.summary()["zones"]
    assert status["thread"]["roller"]["status"] == "drum does not fit"
    sliver = [s for s in result.strokes if s.zones == ["sliver"]]
    assert sliver and {s.line for s in sliver} == {sliver[0].line}   # one line per sweep
    labels = zones.label_at(result.puncture_uv[np.isin(result.puncture_stroke, [s.id for s in sliver])])
    assert (np.array(zones.names)[labels] == "sliver").all()


def test_keepout_clearance_is_a_round_offset():
    """The drum keeps its distance from a jagged keep-out with round joins, not mitred ones."""
    # sharp spikes, as a keep-out outline taken from mesh edges can have
    zigzag = shapely.Polygon([(0, 0), (3, 15), (6, 0), (9, 15), (12, 0), (15, 15), (18, 0), (18, -10), (0, -10)])
    r = 5.0
    raster = R.distance_raster(zigzag, (-20, -30, 60, 30), cell=0.1)
    h, w = raster.values.shape
    allowed = (raster.values >= r).sum() * 0.1 * 0.1
    box = shapely.box(-20, -30, -20 + w * 0.1, -30 + h * 0.1)
    round_area = shapely.difference(box, zigzag.buffer(r, join_style="round")).area
    mitre_area = shapely.difference(box, zigzag.buffer(r, join_style="mitre")).area
    assert allowed == pytest.approx(round_area, rel=0.01)
    assert allowed > mitre_area + 5.0       # the mitred corners would cost skin


def test_turn_radius_by_hand(default_face):
    # a circle of radius 40 mm in the chart around the forehead, where the chart is near
    # 1:1 with the skin: the path's turning radius on the skin is about 40 mm
    centre = default_face.uv[151]
    t = np.linspace(0, 2 * np.pi, 600)
    uv = centre + 20.0 * np.stack([np.cos(t), np.sin(t)], 1)
    radius = R.turn_radius_mm(default_face, uv)[5:-5]
    assert 15.0 < np.median(radius) < 26.0          # 20 mm in the chart, lambda ~ 0.9 to 1.2
    # a straight chart line across the forehead's dome is not a geodesic (like a latitude
    # circle, it turns a little within the skin), but far less than the circle
    straight = centre + np.stack([np.linspace(-20, 20, 200), np.zeros(200)], 1)
    assert np.median(R.turn_radius_mm(default_face, straight)) > 100.0


def test_headland_runs_along_the_border_and_only_on_free_skin(roller_plan, default_zones):
    headland = [s for s in roller_plan.strokes if s.pattern == "headland"]
    assert headland, "the border is rolled somewhere"
    lines = [s for s in roller_plan.strokes if s.pattern == "lines"]
    assert len(lines) > len(headland)
    for s in headland:
        # a headland runs half a band inside its region's border: the band's edge stays inside
        radius = R.turn_radius_mm(default_zones.face, s.uv)
        assert np.median(radius) >= R.HEADLAND_MIN_TURN_RADIUS_MM
        assert s.family == -1 and (s.swath_mm <= 20.0 + 1e-9).all()


# --- the fast paths equal the plain ones ----------------------------------------------------
# Pass construction works on many paths at once and skips checks a sample has already failed;
# each result must be what the one-path-at-a-time construction gives, bit for bit.

def _full_central_rings(d, kappa):
    """The ring count from every ring's gap (Drum.reaching), as first written."""
    reach = d.reaching(kappa)
    half = d.rings // 2
    outward = np.cumprod(reach[..., d.rings - half:], axis=-1).sum(axis=-1)
    if d.rings % 2 == 0:
        return 2 * outward
    return np.where(reach[..., half], 2 * outward + 1, 0)


def test_central_rings_equal_the_count_over_every_ring(rng):
    kappa = np.concatenate([rng.normal(scale=0.05, size=20000), rng.normal(scale=1e-3, size=20000),
                            [0.0, -0.0, np.nan, np.inf, -np.inf, 1 / 15, -1 / 200]])
    for rings in (1, 2, 3, 7, 8, 13):
        for width in (10.0, 20.0, 31.0):
            d = R.Drum(20.0, width, rings, 24, 1.0, 0.5, True, 0.5, 10.0)
            with np.errstate(invalid="ignore"):
                np.testing.assert_array_equal(d.central_rings(kappa), _full_central_rings(d, kappa))
                np.testing.assert_array_equal(d.central_rings(kappa[:6].reshape(2, 3)),
                                              _full_central_rings(d, kappa[:6].reshape(2, 3)))


def test_skin_frame_caches_equal_each_triangle_alone(default_face, rng):
    from coverage import Face, chart

    stretched = Face(default_face.vertices * [2.0, 1.0, 1.0], default_face.subdivisions)
    for face in (default_face, stretched):
        for size in (1, 2, 5, 333):
            t = rng.integers(0, len(face.faces), size)
            jac = face.jacobian[t]
            np.testing.assert_array_equal(face.jacobian_pinv[t], chart.pseudo_inverses(jac))
            normal = np.cross(jac[:, :, 0], jac[:, :, 1])
            normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
            np.testing.assert_array_equal(face.jacobian_normal[t], normal)


def test_path_gradient_and_runs_per_path(rng):
    sizes = rng.integers(1, 40, 50)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    uv = rng.normal(size=(starts[-1], 2))
    mask = rng.random(starts[-1]) < 0.6
    got = R.path_gradient(uv, starts)
    segment, first, stop = R.runs_in(mask, starts)
    expect = []
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        ref = np.gradient(uv[a:b], axis=0) if b - a > 1 else np.zeros((1, 2))
        np.testing.assert_array_equal(got[a:b], ref)
        expect += [(i, a + s0, a + s1) for s0, s1 in R.runs_of(mask[a:b])]
    assert list(zip(segment.tolist(), first.tolist(), stop.tolist())) == expect


@pytest.fixture(scope="module")
def cheek_sweeps(default_face, default_zones):
    regions = R.roller_regions(default_zones, PROTOCOL)
    region = next(r for r in regions if "cheek_left" in r.zones)
    dose = PROTOCOL.zone(region.zones[0])
    d = R.Drum.from_protocol(PROTOCOL, dose.roller_needle_length_mm)
    clearance = R.keepout_clearance(default_zones)
    conform = R.conformity(default_face, d, 45.0)
    main = R.ZoneSweeps(default_zones, region, d, 45.0, conform, clearance)
    widths = R.band_widths(default_face, default_zones, region, conform)
    other = R.ZoneSweeps(default_zones, region, d, 45.0, conform, clearance, widths[-1])
    return main, other, clearance


def _stretches(sweeps, offset):
    """Each line's stretches on the chart, resampled one by one: ``[(line, design, uv)]``."""
    face = sweeps.face
    out = []
    for k, raw, design in sweeps.lines(offset):
        on_chart = np.isfinite(raw).all(axis=1)
        on_chart[on_chart] = face.locate(raw[on_chart])[0] >= 0
        for a, b in R.runs_of(on_chart):
            if b - a >= 2:
                out.append((k, design, R.resample_on_skin(face, raw[a:b], R.PATH_STEP_MM)))
    return out


def _validity_one_by_one(sweeps, uv, design):
    """ZoneSweeps.sample_validity of one stretch, every check on every sample."""
    face, d = sweeps.face, sweeps.drum
    lifted = face.lift(uv)
    corners = face.faces[np.maximum(lifted.tri, 0)]
    along = np.einsum("kj,kj->k", lifted.bary, sweeps.conform.kappa_along[corners])
    kc, width = sweeps._band_rings(uv)
    ok = lifted.inside & d.conforms(np.nan_to_num(kc), along) & np.isclose(width, design)
    ok &= R.drum_fits(face, d, uv, width, sweeps.inside, sweeps.clearance)
    return ok, width, np.nan_to_num(kc)


def _drum_fits_everywhere(face, d, uv, width, inside, clearance, straight=True):
    """drum_fits as first written: one path, every check on every sample, with pinv."""
    n = len(uv)
    tri, _ = face.locate(uv)
    scale = np.where(tri >= 0, face.linear_scale[np.maximum(tri, 0)], 1.0)
    travel = np.gradient(uv, axis=0) if n > 1 else np.zeros_like(uv)
    travel /= np.maximum(np.linalg.norm(travel, axis=1, keepdims=True), 1e-12)
    per_mm_t = travel / scale[:, None]
    per_mm_a = np.stack([-travel[:, 1], travel[:, 0]], axis=1) / scale[:, None]
    on = tri >= 0
    jac = face.jacobian[tri[on]]
    skin_t = np.einsum("kij,kj->ki", jac, travel[on])
    length = np.maximum(np.linalg.norm(skin_t, axis=1), 1e-9)
    normal = np.cross(jac[:, :, 0], jac[:, :, 1])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    per_mm = np.einsum("kij,kj->ki", np.linalg.pinv(jac), np.cross(normal, skin_t / length[:, None]))
    good = np.isfinite(per_mm).all(axis=1) & (np.linalg.norm(per_mm, axis=1) < 1.0 / 0.05)
    idx = np.nonzero(on)[0][good]
    per_mm_t[idx] = travel[on][good] / length[good, None]
    per_mm_a[idx] = per_mm[good]
    band = np.linspace(-0.5, 0.5, 9)
    pts = (uv[:, None, :] + (band[None, :, None] * width[:, None, None]) * per_mm_a[:, None, :]).reshape(-1, 2)
    slack = np.repeat(R.BAND_EDGE_SLACK * 0.5 * width / scale, len(band))
    ok = (tri >= 0) & (inside.at(pts, outside=-1.0) >= slack).reshape(n, -1).all(axis=1)
    across = np.linspace(-d.width_mm / 2, d.width_mm / 2, int(math.ceil(d.width_mm / R.BODY_STEP_MM)) + 1)
    if not straight:
        along = np.linspace(-d.diameter_mm / 2, d.diameter_mm / 2, int(math.ceil(d.diameter_mm / R.BODY_STEP_MM)) + 1)
        ga, gb = np.meshgrid(along, across)
        body = (uv[:, None, :] + ga.ravel()[None, :, None] * per_mm_t[:, None, :]
                + gb.ravel()[None, :, None] * per_mm_a[:, None, :]).reshape(-1, 2)
        need = 0.5 * math.hypot(R.BODY_STEP_MM, R.BODY_STEP_MM) / scale
        return ok & (clearance.at(body, outside=np.inf).reshape(n, -1).min(axis=1) >= need)
    span = (uv[:, None, :] + across[None, :, None] * per_mm_a[:, None, :]).reshape(-1, 2)
    clear = clearance.at(span, outside=np.inf).reshape(n, -1).min(axis=1)
    reach = int(math.ceil(d.diameter_mm / 2 / R.PATH_STEP_MM))
    from scipy import ndimage
    clear = ndimage.minimum_filter1d(clear, size=2 * reach + 1, mode="nearest")
    need = 0.5 * math.hypot(R.BODY_STEP_MM, R.PATH_STEP_MM) / scale
    ok &= clear >= need
    for end, sign in ((0, -1.0), (n - 1, 1.0)):
        ahead = np.linspace(0.0, d.diameter_mm / 2, reach + 1)[1:]
        tip = uv[end] + sign * ahead[:, None] * per_mm_t[end]
        edge = (tip[:, None, :] + across[None, :, None] * per_mm_a[end]).reshape(-1, 2)
        if (clearance.at(edge, outside=np.inf) < need[end]).any():
            ok[max(0, end - reach):end + reach + 1] = False
    return ok


def test_drum_fits_on_many_paths_and_only_where_asked(cheek_sweeps, rng):
    sweeps, _, clearance = cheek_sweeps
    face = sweeps.face
    stretches = [uv for _, _, uv in _stretches(sweeps, 0.25)]
    uv = np.concatenate(stretches)
    starts = np.concatenate([[0], np.cumsum([len(p) for p in stretches])])
    width = np.full(len(uv), 20.0)
    single = np.concatenate([R.drum_fits(face, sweeps.drum, p, width[:len(p)], sweeps.inside, clearance)
                             for p in stretches])
    assert single.any() and not single.all()
    everywhere = np.concatenate([_drum_fits_everywhere(face, sweeps.drum, p, width[:len(p)], sweeps.inside,
                                                       clearance) for p in stretches])
    np.testing.assert_array_equal(single, everywhere)
    for straight in (True, False):
        np.testing.assert_array_equal(
            R.drum_fits(face, sweeps.drum, stretches[3], width[:len(stretches[3])], sweeps.inside, clearance,
                        straight=straight),
            _drum_fits_everywhere(face, sweeps.drum, stretches[3], width[:len(stretches[3])], sweeps.inside,
                                  clearance, straight=straight))
    np.testing.assert_array_equal(R.drum_fits(face, sweeps.drum, uv, width, sweeps.inside, clearance,
                                              starts=starts), single)
    where = rng.random(len(uv)) < 0.5
    np.testing.assert_array_equal(R.drum_fits(face, sweeps.drum, uv, width, sweeps.inside, clearance,
                                              starts=starts, where=where), single & where)


def test_sample_validity_on_many_passes(cheek_sweeps):
    sweeps = cheek_sweeps[0]
    stretches = _stretches(sweeps, 0.0)
    uv = np.concatenate([p for _, _, p in stretches])
    starts = np.concatenate([[0], np.cumsum([len(p) for _, _, p in stretches])])
    design = np.repeat([d for _, d, _ in stretches], np.diff(starts))
    single = [_validity_one_by_one(sweeps, p, d) for _, d, p in stretches]
    ok, w, kc = sweeps.sample_validity(uv, design, starts)
    for got, expect in zip((ok, w, kc), zip(*single)):
        np.testing.assert_array_equal(got, np.concatenate(expect))
    assert ok.any() and not ok.all()
    # only where valid: the same validity, the same widths and curvatures there
    ok2, w2, kc2 = sweeps.sample_validity(uv, design, starts, valid_only=True)
    np.testing.assert_array_equal(ok2, ok)
    np.testing.assert_array_equal(w2[ok], w[ok])
    np.testing.assert_array_equal(kc2[ok], kc[ok])


def test_line_runs_equal_the_stretch_by_stretch_construction(cheek_sweeps):
    for sweeps in cheek_sweeps[:2]:
        for offset in (0.0, 0.5):
            expect = []
            for k, design, uv in _stretches(sweeps, offset):
                ok, w, kc = _validity_one_by_one(sweeps, uv, design)
                for s0, s1 in R.runs_of(ok):
                    if (s1 - s0 - 1) * R.PATH_STEP_MM >= R.MIN_STROKE_MM:
                        expect.append((k, uv[s0:s1], w[s0:s1], kc[s0:s1]))
            got = [r for runs in R.line_runs(sweeps, offset, 3) for r in runs]
            assert len(got) == len(expect) > 0
            for r, (k, uv, w, kc) in zip(got, expect):
                assert (r.line, r.sweep, r.zone, r.theta_deg) == (k, 3, sweeps.name, 45.0)
                np.testing.assert_array_equal(r.uv, uv)
                np.testing.assert_array_equal(r.swath_mm, w)
                np.testing.assert_array_equal(r.kappa_cross, kc)


def test_phase_trials_and_sweep_offsets_worked_by_hand():
    # the least multiple of the sweeps that is at least MIN_PHASE_TRIALS (3)
    assert R.MIN_PHASE_TRIALS == 3
    assert [R.phase_trials(n) for n in (0, 1, 2, 3, 4, 5, 6)] == [3, 3, 4, 3, 4, 5, 6]
    # the best phase plus j / n of a swath, modulo one: exactly a tried phase k / T (0.2 + 0.4
    # is 0.6000000000000001 in floats; worked in whole numbers it is 3 / 5)
    assert [R.sweep_offset(0.75, j, 4) for j in range(4)] == [0.75, 0.0, 0.25, 0.5]
    assert [R.sweep_offset(0.2, j, 5) for j in range(5)] == [1 / 5, 2 / 5, 3 / 5, 4 / 5, 0.0]
    assert [R.sweep_offset(1 / 3, j, 3) for j in range(3)] == [1 / 3, 2 / 3, 0.0]
    assert [R.sweep_offset(0.5, j, 2) for j in range(2)] == [0.5, 0.0]
    assert R.sweep_offset(2 / 3, 0, 1) == 2 / 3
    # a phase that is not a tried one: the sum modulo one swath
    assert R.sweep_offset(0.3, 1, 2) == 0.8
    assert R.sweep_offset(0.7, 1, 2) == (0.7 + 0.5) % 1.0
    assert math.isnan(R.sweep_offset(math.nan, 1, 2))
    for n in range(1, 7):
        tried = (np.arange(R.phase_trials(n)) / R.phase_trials(n)).tolist()
        for best in tried:
            assert all(R.sweep_offset(best, j, n) in tried for j in range(n))
            assert len({R.sweep_offset(best, j, n) for j in range(n)}) == n      # spread, none twice


def test_best_offset_hands_its_trials_to_the_sweeps(cheek_sweeps):
    sweeps, n = cheek_sweeps[0], 4
    best = R.best_offset(sweeps, n)
    assert set(sweeps.kept_trials) == {0.0, 0.25, 0.5, 0.75}
    assert best in sweeps.kept_trials
    for j in range(n):
        # every sweep's phase is a tried one: it takes that trial's lines, handed out once
        kept = R.sweep_runs(sweeps, j, n, best)
        assert R.sweep_offset(best, j, n) not in sweeps.kept_trials
        fresh = R.sweep_runs(sweeps, j, n, best)                 # built again
        assert [[(r.sweep, r.line, r.phase_mm, r.meta) for r in runs] for runs in kept] == \
               [[(r.sweep, r.line, r.phase_mm, r.meta) for r in runs] for runs in fresh]
        assert all(r.sweep == j for runs in kept for r in runs)
        for a, b in zip([r for runs in kept for r in runs], [r for runs in fresh for r in runs]):
            np.testing.assert_array_equal(a.uv, b.uv)
    assert not sweeps.kept_trials


def test_headland_runs_equal_the_loop_by_loop_construction(default_face, default_zones):
    region = R.roller_regions(default_zones, PROTOCOL)[0]
    d = R.Drum.from_protocol(PROTOCOL, PROTOCOL.zone(region.zones[0]).roller_needle_length_mm)
    headland = R.Headland(default_zones, region, d, R.keepout_clearance(default_zones))
    widths = []
    for uv in headland._loops(d.width_mm / 2):
        width, works, _ = headland._widths(uv)
        widths.append(width[works])
        np.testing.assert_array_equal(R.turn_radius_mm(default_face, uv),
                                      R.turn_radius_mm(default_face, uv, starts=[0, len(uv)]))
    values, counts = np.unique(np.concatenate(widths), return_counts=True)
    assert headland.design == float(values[np.argmax(counts)]) > 0
    for j in (0, 2):
        level = headland.design / 2 + R.HEADLAND_INSET_MM + d.ring_pitch_mm * j / 4
        expect = []
        for k, uv in enumerate(headland._loops(level)):
            width, works, cross = headland._widths(uv)
            ok = works & (width <= headland.design + 1e-9)
            ok &= R.turn_radius_mm(default_face, uv) >= R.HEADLAND_MIN_TURN_RADIUS_MM
            ok &= R.drum_fits(default_face, d, uv, width, region.inside, headland.clearance, straight=False)
            expect += [(k, uv[a:b], width[a:b], cross[a:b]) for a, b in R.runs_of(ok)
                       if (b - a - 1) * R.PATH_STEP_MM >= R.MIN_STROKE_MM]
        got = [r for runs in headland.runs(j, 4) for r in runs]
        assert len(got) == len(expect) > 0
        for r, (k, uv, w, cross) in zip(got, expect):
            assert r.line == k
            np.testing.assert_array_equal(r.uv, uv)
            np.testing.assert_array_equal(r.swath_mm, w)
            np.testing.assert_array_equal(r.kappa_cross, cross)


def test_cached_gaussian_weights_are_the_filters_own(rng):
    from scipy import ndimage

    for sigma in (R.LINE_SMOOTH_MM / R.COLUMN_STEP_MM, 2.5, 0.7):
        weights = R.gaussian_weights(sigma)
        for n in (1, 3, 50, 333):
            x = rng.normal(size=(2, n))
            for mode in ("nearest", "wrap", "reflect"):
                np.testing.assert_array_equal(ndimage.correlate1d(x, weights, axis=-1, mode=mode),
                                              ndimage.gaussian_filter1d(x, sigma, axis=-1, mode=mode))


@pytest.mark.parametrize("fraction", [0.75, 1.0])
def test_a_stricter_drum_plan_verifies_from_its_file(default_face, tmp_path, fraction):
    """Where the drum must reach with 3/4 or all of its rings, many samples sit on the
    conformity threshold: the planner reads curvatures with a margin and judges a headland
    run's ends along the run's own travel, so the verifier, which locates every sample anew
    from its 3D point (rounded in the plan file) and reads a headland's travel from the
    stroke's own points, finds the drum conforming everywhere the plan rolls."""
    from coverage import plan, verify

    protocol = dataclasses.replace(PROTOCOL, roller=dataclasses.replace(PROTOCOL.roller, min_swath_fraction=fraction))
    result = plan(default_face, protocol=protocol)
    assert sum(s.device == "roller" for s in result.strokes) > 100
    json_path, _ = result.save(tmp_path / "plan.json")
    for subject in (result, json_path):
        check = verify(subject, face=default_face)
        assert check.ok, check.text()
