"""The independent verifier: the default roller plan passes, and each tampered copy fails its rule."""
import dataclasses
import json
import time

import numpy as np
import pytest
import shapely
from geometry_checks import exact_distance_to_region
from scipy.spatial import cKDTree

from coverage import CoverageError, Face, Protocol
from coverage.verify import RULES, verify
from coverage.zones import canonical_exclusion_regions

PROTOCOL = Protocol.default()


@pytest.fixture(scope="module")
def verdict(roller_plan):
    start = time.perf_counter()
    result = verify(roller_plan)
    print(f"\nverify: {time.perf_counter() - start:.2f} s for {len(roller_plan.puncture_points)} punctures, "
          f"{len(roller_plan.strokes)} strokes")
    return result


def failed(result) -> set:
    return set(result.failed())


def with_punctures(p, points=None, stroke=None, depth=None):
    return dataclasses.replace(
        p, puncture_points=p.puncture_points if points is None else points,
        puncture_stroke=p.puncture_stroke if stroke is None else stroke,
        puncture_depth_mm=p.puncture_depth_mm if depth is None else depth)


def with_stroke(p, index, **changes):
    strokes = list(p.strokes)
    strokes[index] = dataclasses.replace(strokes[index], **changes)
    return dataclasses.replace(p, strokes=strokes)


def stroke_in(p, zone):
    """Index of the first stroke whose path lies only in ``zone``."""
    return next(i for i, s in enumerate(p.strokes) if s.zones == [zone])


def point_in(face, region) -> np.ndarray:
    """A point on the skin inside a chart region."""
    uv = np.asarray(shapely.get_coordinates(region.representative_point()))
    return face.lift(uv).points[0]


# --- the plan as made -----------------------------------------------------------------------

def test_the_default_roller_plan_passes(roller_plan, verdict):
    print(verdict.text())
    assert verdict.ok and verdict.violations == [] and verdict.failed() == []
    assert set(verdict.checks) == set(RULES) and all(c["passed"] for c in verdict.checks.values())
    assert verdict.text().endswith(f"all {len(RULES)} checks passed")
    # the zone table is the plan's own dose, recomputed
    summary = roller_plan.summary()["zones"]
    for name, z in verdict.zones.items():
        for key in ("area_cm2", "mean", "p5", "p95", "max", "in_band_fraction", "over_cap_fraction"):
            assert z[key] == pytest.approx(summary[name][key], abs=1e-9), (name, key)
    # what was measured
    checks = verdict.checks
    assert checks["surface"]["max_distance_mm"] < 1e-6
    assert checks["device"]["roller_conformity"]["samples"] == sum(len(s.points) for s in roller_plan.strokes)
    assert checks["device"]["roller_conformity"]["failures"] == 0
    # every move keeps its own clearance: the full one, or the hop clearance for a move
    # whose chart line crosses no keep-out (lowest point measured from its requirement,
    # which is the clearance less the 0.5 mm slack)
    assert checks["transit"]["lowest_travel_mm"] >= min(PROTOCOL.session.hop_clearance_mm,
                                                         PROTOCOL.session.clearance_mm) - 2e-3
    assert checks["transit"]["lowest_margin_mm"] >= 0.5 - 2e-3
    assert 0 < checks["transit"]["hops"] < checks["transit"]["transitions"]
    assert checks["transit"]["missing"] == 0 and checks["transit"]["max_join_gap_mm"] < 1e-9
    assert checks["punctures_off_treatable"]["count"] == 0
    json.dumps(verdict.as_dict(), allow_nan=False)


@pytest.mark.parametrize("name, part", [("eyebrow_right", "eyebrow"), ("nostril_right", "nostril"),
                                        ("eye_left", "upper_eyelid")])
def test_closest_distances_agree_with_an_independent_measure(roller_plan, verdict, default_face, name, part):
    got = verdict.checks["exclusion"]["exclusions"][name][part]
    region = dict(canonical_exclusion_regions(default_face.subdivisions)[name])[part]
    exact = exact_distance_to_region(default_face, region, roller_plan.puncture_points, reach=got["closest_mm"] + 1.0)
    assert got["closest_mm"] == pytest.approx(exact.min(), abs=1e-6)
    assert got["closest_mm"] >= got["margin_mm"]


def test_a_saved_plan_verifies_the_same(roller_plan, verdict, tmp_path):
    json_path, _ = roller_plan.save(tmp_path / "PLAN.json")
    from_file = verify(json_path)
    assert from_file.ok and from_file.source == str(json_path)
    for name, z in verdict.zones.items():
        assert from_file.zones[name] == pytest.approx(z, abs=1e-9)
    for name, parts in verdict.checks["exclusion"]["exclusions"].items():
        for part, value in parts.items():
            assert from_file.checks["exclusion"]["exclusions"][name][part]["closest_mm"] == \
                pytest.approx(value["closest_mm"], abs=1e-9)
    # paths and transitions are kept to 1e-4 mm in the JSON
    assert from_file.checks["transit"]["lowest_travel_mm"] == \
        pytest.approx(verdict.checks["transit"]["lowest_travel_mm"], abs=1e-3)
    assert from_file.checks["device"]["roller_conformity"] == verdict.checks["device"]["roller_conformity"]


def test_a_saved_plan_needs_its_arrays_and_its_face(roller_plan, tmp_path):
    json_path, npz_path = roller_plan.save(tmp_path / "PLAN.json")
    doc = json.loads(json_path.read_text())
    doc["face"]["source"] = "scan.ply"
    other = tmp_path / "SCAN.json"
    other.write_text(json.dumps(doc))
    (tmp_path / "SCAN.npz").write_bytes(npz_path.read_bytes())
    with pytest.raises(CoverageError, match="--mesh"):
        verify(other)
    with pytest.raises(CoverageError, match="vertices"):
        verify(json_path, face=Face.default(edge_mm=2.0))
    npz_path.unlink()
    with pytest.raises(CoverageError, match="missing"):
        verify(json_path)


# --- tampered plans: each fails its rule ---------------------------------------------------------

def test_a_puncture_in_the_eye(roller_plan, default_face):
    eye = dict(canonical_exclusion_regions(default_face.subdivisions)["eye_left"])["eye"]
    points = roller_plan.puncture_points.copy()
    points[100] = point_in(default_face, eye)
    result = verify(with_punctures(roller_plan, points))
    # the eye is not treatable skin either
    assert failed(result) == {"exclusion", "punctures_off_treatable"}
    v = next(v for v in result.violations if v.rule == "exclusion")
    assert v.count == 1 and v.worst < 0.05 and "eye_left (eye)" in v.message and "periorbital_left" in v.message
    assert result.checks["exclusion"]["exclusions"]["eye_left"]["eye"]["closest_mm"] < 0.05


def test_duplicated_punctures_pass_the_cap(roller_plan, default_face):
    from scipy.spatial import cKDTree

    # where the roller puts most on the subject's left cheek: every puncture within 8 mm of
    # it three times over
    points = roller_plan.puncture_points
    on_cheek = np.flatnonzero(roller_plan.zones.label_at(roller_plan.puncture_uv)
                              == roller_plan.zones.names.index("cheek_left"))
    crowd = cKDTree(points).query_ball_point(points[on_cheek], 8.0, return_length=True)
    cheek = points[on_cheek[int(np.argmax(crowd))]]
    near = np.linalg.norm(points - cheek, axis=1) < 8.0
    assert near.sum() > 100
    more = np.concatenate([np.arange(len(near)), np.nonzero(near)[0], np.nonzero(near)[0]])
    result = verify(with_punctures(roller_plan, roller_plan.puncture_points[more], roller_plan.puncture_stroke[more],
                                   roller_plan.puncture_depth_mm[more]))
    assert failed(result) == {"cap"}
    v = result.violations[0]
    assert v.zone == "cheek_left" and v.worst > PROTOCOL.zone("cheek_left").cap_per_cm2 and "cheek_left" in v.message
    assert result.zones["cheek_left"]["over_cap_fraction"] > 0


def test_a_puncture_deeper_than_its_zone_allows(roller_plan, default_zones):
    labels = default_zones.label_at(roller_plan.puncture_uv)
    i = int(np.argmax(labels == default_zones.names.index("forehead")))
    depth = roller_plan.puncture_depth_mm.copy()
    depth[i] = 0.8          # forehead max_depth_mm 0.75
    result = verify(with_punctures(roller_plan, depth=depth))
    assert failed(result) == {"depth"}
    assert "forehead" in result.violations[0].message and result.violations[0].worst == pytest.approx(0.8)


def test_a_stroke_set_deeper_than_its_zone_allows(roller_plan):
    i = stroke_in(roller_plan, "cheek_left")
    result = verify(with_stroke(roller_plan, i, depth_mm=1.75, needle_length_mm=2.0))   # cheek max 1.5
    assert failed(result) == {"depth"}
    assert f"stroke {roller_plan.strokes[i].id}" in result.violations[0].message


def test_a_roller_stroke_in_a_zone_without_the_roller(roller_plan):
    i = stroke_in(roller_plan, "forehead")
    result = verify(with_stroke(roller_plan, i, zones=["forehead", "glabella"]))
    assert failed(result) == {"device"}
    assert "roller is not allowed in glabella" in result.violations[0].message
    # the rules follow each stroke's device: the pen may go there
    assert verify(with_stroke(roller_plan, i, device="pen", zones=["forehead", "glabella"])).ok


def test_a_roller_path_moved_onto_the_nose(roller_plan, default_face):
    """Down the nose's dorsum the drum rides a sharp convex ridge across its width: it cannot conform."""
    # the longest stroke on the forehead alone, so the shorter path down the nose keeps its speed
    i = max((k for k, s in enumerate(roller_plan.strokes) if s.zones == ["forehead"]),
            key=lambda k: roller_plan.strokes[k].length_mm)
    s = roller_plan.strokes[i]
    top, bottom = default_face.uv[6], default_face.uv[4]          # landmarks: nasal root, above the tip
    uv = top + np.linspace(0.2, 0.9, len(s.points))[:, None] * (bottom - top)
    lifted = default_face.lift(uv)
    result = verify(with_stroke(roller_plan, i, points=lifted.points, normals=lifted.normals, direction_deg=90.0))
    # the moved stroke no longer meets its transitions, and the nose is pen-only
    assert failed(result) == {"device", "transit"}
    messages = " ".join(v.message for v in result.violations if v.rule == "device")
    assert "roller is not allowed in nose" in messages and "does not conform" in messages
    assert result.checks["device"]["roller_conformity"]["failures"] > len(s.points) // 2


def test_a_puncture_on_unobserved_skin(roller_plan, default_face):
    # the puncture farthest from every path, so that only punctures are concerned
    paths = np.concatenate([s.points for s in roller_plan.strokes])
    far = int(np.argmax(cKDTree(paths).query(roller_plan.puncture_points)[0]))
    flat = default_face.flatten(roller_plan.puncture_points[far][None])
    unobserved = np.zeros(len(default_face.vertices), dtype=bool)
    unobserved[default_face.faces[flat.tri[0]]] = True
    face = Face(default_face.vertices, default_face.subdivisions, unobserved=unobserved, pose=default_face.pose,
                source=default_face.source)
    result = verify(roller_plan, face=face)
    # unobserved skin is also an exclusion (with the positioning error) and not treatable; a
    # hop planned across that skin (low, as it crossed no keep-out then) may now fail too
    assert failed(result) - {"transit"} == {"unobserved", "exclusion", "punctures_off_treatable"}
    v = next(v for v in result.violations if v.rule == "unobserved")
    assert v.count >= 1 and result.checks["unobserved"]["unobserved_vertices"] == 3


def test_a_puncture_lifted_off_the_skin(roller_plan, default_face):
    points = roller_plan.puncture_points.copy()
    flat = default_face.flatten(points[[200]])
    normal = np.einsum("j,jd->d", flat.bary[0], default_face.normals[default_face.faces[flat.tri[0]]])
    points[200] += 2.0 * normal / np.linalg.norm(normal)
    result = verify(with_punctures(roller_plan, points))
    # a puncture off the surface is not on treatable skin either
    assert failed(result) == {"surface", "punctures_off_treatable"}
    v = next(v for v in result.violations if v.rule == "surface")
    assert v.count == 1 and v.worst == pytest.approx(2.0, abs=0.05)


def test_a_path_sample_in_a_keepout(roller_plan, default_face):
    brow = dict(canonical_exclusion_regions(default_face.subdivisions)["eyebrow_left"])["eyebrow"]
    target = point_in(default_face, brow)
    paths = [(i, j) for i, s in enumerate(roller_plan.strokes) if s.zones == ["forehead"] for j in range(1, len(s.points) - 1)]
    i, j = min(paths, key=lambda ij: np.linalg.norm(roller_plan.strokes[ij[0]].points[ij[1]] - target))
    points = roller_plan.strokes[i].points.copy()
    points[j] = target
    result = verify(with_stroke(roller_plan, i, points=points))
    assert "contact" in failed(result)
    # the drum's model is read at the moved sample too, and the jump to it is too fast
    assert failed(result) <= {"contact", "device", "motion"}
    v = next(v for v in result.violations if v.rule == "contact")
    assert v.count == 1 and "eyebrow_left" in v.message


def test_a_transition_lowered_to_the_skin(roller_plan, default_face):
    k = len(roller_plan.transitions) // 2
    t = roller_plan.transitions[k]
    points = t.points.copy()
    m = len(points) // 2
    flat = default_face.flatten(points[[m]])
    points[m] = default_face.lift(flat.uv).points[0]
    transitions = list(roller_plan.transitions)
    transitions[k] = dataclasses.replace(t, points=points)
    result = verify(dataclasses.replace(roller_plan, transitions=transitions))
    assert failed(result) - {"motion"} == {"transit"}     # (the detour, at the same times, is also too fast)
    v = result.violations[0]
    assert v.count == 1 and abs(v.worst) < 0.01 and f"strokes {t.from_stroke} and {t.to_stroke}" in v.message


def test_a_pen_contact_keeps_its_footprint_clear(roller_plan, default_face, default_zones):
    """The same path sample 3 mm from an eyebrow (margin 1 mm) is fine for the roller's
    centre line but not for a pen, whose 7 mm footprint reaches 3.5 mm around it."""
    brow = dict(canonical_exclusion_regions(default_face.subdivisions)["eyebrow_left"])["eyebrow"]
    forehead = np.nonzero(default_zones.label_at(default_face.uv) == default_zones.names.index("forehead"))[0]
    dist = exact_distance_to_region(default_face, brow, default_face.vertices[forehead], reach=4.0)
    vertex = forehead[int(np.argmin(np.abs(dist - 3.0)))]
    assert np.abs(dist - 3.0).min() < 0.2
    i = stroke_in(roller_plan, "forehead")
    points = roller_plan.strokes[i].points.copy()
    points[len(points) // 2] = default_face.vertices[vertex]
    as_roller = verify(with_stroke(roller_plan, i, points=points))
    assert "contact" not in failed(as_roller)
    as_pen = verify(with_stroke(roller_plan, i, points=points, device="pen"))
    assert failed(as_pen) - {"motion"} == {"contact"}     # (the moved sample is also reached too fast)
    assert "footprint" in as_pen.violations[0].message and "eyebrow_left" in as_pen.violations[0].message


def test_motion_within_the_device_limits(roller_plan, auto_plan):
    """A roller stroke timed twice as fast, a pen stroke's stamps packed closer in time and a
    move hurried: each is a motion violation naming its limit; the plans as made pass."""
    assert verify(auto_plan).checks["motion"]["passed"]
    k = next(i for i, s in enumerate(roller_plan.strokes) if len(s.points) > 5)
    s = roller_plan.strokes[k]
    hurried = with_stroke(roller_plan, k, times_s=s.times_s[0] + 0.5 * (s.times_s - s.times_s[0]))
    result = verify(hurried)
    assert failed(result) == {"motion"}
    v = result.violations[0]
    speed = roller_plan.protocol.roller.speed_mm_s
    assert v.count == 1 and v.worst == pytest.approx(2 * speed, rel=1e-3)
    assert f"roller stroke {s.id} rolls at" in v.message and f"limit {speed:g} mm/s" in v.message

    pen = next(i for i, s in enumerate(auto_plan.strokes) if s.device == "pen" and len(s.stamp_times_s) > 3)
    s = auto_plan.strokes[pen]
    packed = s.stamp_times_s.copy()
    packed[1] = packed[0] + 0.5 / auto_plan.protocol.pen.stamp_hz_max      # two stamps 1/300 s apart
    t = auto_plan.transitions[3]
    rushed = list(auto_plan.transitions)
    rushed[3] = dataclasses.replace(t, times_s=t.times_s[0] + 0.25 * (t.times_s - t.times_s[0]))
    result = verify(dataclasses.replace(with_stroke(auto_plan, pen, stamp_times_s=packed), transitions=rushed))
    assert failed(result) == {"motion"}
    messages = " | ".join(v.message for v in result.violations)
    assert f"pen stroke {s.id} stamps at 300 Hz (limit 150 Hz)" in messages
    assert "move" in messages and "travels at 200 mm/s (limit 50 mm/s)" in messages


# --- the verifier's own fast paths against their plain definitions -------------------------

def test_signed_clearance_is_the_plain_two_stage_search(default_face):
    """The verifier's signed clearance (one search on its coarser grid) equals, bit for bit,
    the plain definition: a search on the face's own grid bounded by the reach, then an
    unbounded one for what it did not find, the side from the closest point's normal."""
    from coverage import proximity
    from coverage.verify import _signed_clearance

    def plain(face, points, reach):
        tri, bary, dist = proximity.closest_points(face.surface_grid, points, max_dist=reach)
        far = tri < 0
        tri[far], bary[far], dist[far] = proximity.closest_points(face.surface_grid, points[far])
        corners = face.faces[np.maximum(tri, 0)]
        closest = np.einsum("kj,kjd->kd", bary, face.vertices[corners])
        normal = np.einsum("kj,kjd->kd", bary, face.normals[corners])
        signed = np.where(np.sign(np.einsum("ij,ij->i", points - closest, normal)) < 0, -dist, dist)
        return np.where(far & (signed > 0), np.inf, signed)

    rng = np.random.default_rng(7)
    v = default_face.vertices
    pick = rng.integers(0, len(v), 6000)
    points = np.concatenate([
        v[pick] + default_face.normals[pick] * rng.uniform(-15.0, 25.0, (6000, 1)),   # in front, behind
        rng.uniform(v.min(axis=0) - 20.0, v.max(axis=0) + 20.0, (3000, 3)),            # all around
        v[pick[:500]] + default_face.normals[pick[:500]] * 11.0,                      # at the reach
        [[np.nan, 0.0, 0.0]]])
    for reach in (11.0, 4.0):
        np.testing.assert_array_equal(_signed_clearance(default_face, points, reach),
                                      plain(default_face, points, reach))


def test_skin_distances_are_exact_where_they_matter(default_face):
    """Exclusion distances: exact (the closest-point kernel on the part's own skin) wherever
    they are within reach of the margin, and for the closest point of all; inf only beyond."""
    from coverage import proximity, regions
    from coverage.verify import REPORT_REACH_MM, _SkinDistance

    region = dict(canonical_exclusion_regions(default_face.subdivisions)["eye_left"])["upper_eyelid"]
    skin = _SkinDistance(default_face, region)
    tris = regions.region_triangles_3d(default_face, region)
    grid = proximity.build_grid(tris.reshape(-1, 3), np.arange(3 * len(tris)).reshape(-1, 3))
    rng = np.random.default_rng(3)
    centre = tris.reshape(-1, 3).mean(axis=0)
    for spread, near in ((3.0, 2.0), (20.0, 2.0), (60.0, 1.0), (20.0, 45.0)):
        query = centre + rng.normal(scale=spread, size=(4000, 3))
        got = skin.to(query, near)
        _, _, exact = proximity.closest_points(grid, query)
        inside = exact < near
        np.testing.assert_array_equal(got[inside], exact[inside])
        assert got.min() == exact.min() or exact.min() > near + REPORT_REACH_MM
        assert (np.isinf(got) | (got == exact)).all() and (np.isfinite(got) | (exact >= near)).all()
    # far from everything: nothing within reach, nothing reported
    assert np.isinf(skin.to(centre + [0.0, 0.0, 500.0] + rng.normal(size=(10, 3)), 1.0)).all()


def test_the_zone_rows_are_the_density_maps_own_statistics(verdict):
    """The report's per-zone rows are DensityMap.zone_stats' values."""
    for name, row in verdict.zones.items():
        stats = verdict.density.zone_stats(name)
        expect = {key: float(getattr(stats, key)) for key in row}
        assert row == {key: (value if np.isfinite(value) else None) for key, value in expect.items()}


def test_weighted_percentiles_share_one_sort_and_match_one_by_one():
    """Worked by hand: values 4, 1, 3, 2 weighing 1, 1, 2, 4 (sorted: 1, 2, 3, 4 with running
    weights 1, 5, 7, 8 of 8). The 5th percentile (0.4 of 8) is 1, the 50th (4) is 2, the 95th
    (7.6) is 4; the 62.5th (5, a tie with a running weight) takes the lower value, 2."""
    from coverage.chart import weighted_percentile, weighted_percentiles

    values, weights = np.array([4.0, 1.0, 3.0, 2.0]), np.array([1.0, 1.0, 2.0, 4.0])
    assert weighted_percentiles(values, weights, (5, 50, 62.5, 95)) == [1.0, 2.0, 2.0, 4.0]
    rng = np.random.default_rng(3)
    v, w = rng.normal(size=500), rng.uniform(0, 2, 500)
    qs = (0, 5, 50, 95, 100)
    assert weighted_percentiles(v, w, qs) == [weighted_percentile(v, w, q) for q in qs]
    assert all(np.isnan(x) for x in weighted_percentiles(v, np.zeros(500), qs))


def test_the_slab_box_test_keeps_what_the_full_box_test_keeps():
    """_Queries.near_box (points sorted along x, the box test on the x slab only) keeps the
    same points as the box test on every point, and every point that is not finite."""
    from coverage.verify import _Queries

    rng = np.random.default_rng(5)
    points = rng.normal(scale=30.0, size=(20000, 3))
    points[rng.integers(0, len(points), 50)] = np.nan
    points[rng.integers(0, len(points), 5), 1] = np.inf
    queries = _Queries(points)
    for _ in range(20):
        lo = rng.normal(scale=20.0, size=3)
        hi = lo + rng.uniform(0.0, 30.0, size=3)
        reach = float(rng.uniform(0.0, 15.0))
        gap = np.minimum(np.maximum(points, lo), hi) - points
        box2 = np.where(np.isfinite(points).all(axis=1), np.einsum("ij,ij->i", gap, gap), 0.0)
        np.testing.assert_array_equal(np.sort(queries.near_box(lo, hi, reach)), np.nonzero(box2 <= reach * reach)[0])


def test_part_speeds_and_gaps_are_each_parts_own():
    """Speeds and stamp gaps of parts packed end to end: each part's own, as a loop over
    the parts computes them (empty and one-sample parts, time running back, a jump in no time)."""
    from coverage.verify import _part_gaps, _part_speeds

    rng = np.random.default_rng(11)
    lengths = [5, 0, 1, 2, 7, 1, 3, 1]
    points = [rng.normal(size=(n, 3)) for n in lengths]
    times = [np.cumsum(rng.uniform(0.0, 1.0, n)) for n in lengths]
    times[4][3] = times[4][2]                     # no time for a step: inf
    times[6][2] = times[6][0] - 1.0               # time runs back
    back, top = _part_speeds(points, times)
    gap_back, least = _part_gaps([t for t in times if len(t) > 1])
    multi = [k for k, t in enumerate(times) if len(t) > 1]
    for k, (p, t) in enumerate(zip(points, times)):
        dt = np.diff(t)
        step = np.linalg.norm(np.diff(p, axis=0), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(dt > 0, step / dt, np.where(step > 1e-9, np.inf, 0.0))
        assert top[k] == v.max(initial=0.0) and back[k] == (dt < 0).any()
        if k in multi:
            j = multi.index(k)
            assert least[j] == dt.min() and gap_back[j] == (dt < 0).any()
    assert np.isinf(top[4]) and back[6] and not back[:6].any()
