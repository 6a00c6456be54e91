"""Plans on scans: a synthetic depth-camera scan of another face is planned on its own
surface, in its own frame, in millimetres; unobserved skin is left untreated and reported;
the plan verifies, and its dose is close to the bundled face's.

Run with ``-s`` to see the per-zone table of the scan next to the bundled face's.
"""
import json
import time

import numpy as np
import pytest
import shapely
import trimesh
from scipy.spatial import cKDTree

from coverage import Face, plan, verify
from coverage.cli import main
from synthetic import deformed_face, make_scan

# issue 4: every observed zone >= 95 % of its treatable skin in band and 0 % over cap, and
# within 5 points of the bundled face's own share. This scan's cheek_right holds the bar by a
# hair (95.02 % in metres, 95.11 % in millimetres): the 9 mm hole cuts a sliver of it off
# between the nose and the periorbital band, and along those lower-target borders a cheek
# window cannot reach 0.9 x its target while theirs keep under their caps; its share has
# moved by about a point with small changes upstream
IN_BAND_BAR = 0.95
IN_BAND_SLACK = 0.05
ON_SCAN_MM = 0.5        # a puncture this close to the scan's surface is on it
UNIT_RTOL = 1e-6        # metres vs millimetres: relative to the size of the coordinates
CLI_EDGE_MM = 1.5
# the face between its vertices is flat: at CLI_EDGE_MM (median edge; the canonical face's
# largest triangles, on the cheeks, refine to 4 to 6 mm edges) a triangle's interior sags off
# the scan's noisy surface (0.15 mm depth noise) by up to about half a millimetre (0.513 mm
# measured at the worst of 50,444 punctures, 99.9 % under 0.35 mm), its corners on the scan
ON_SCAN_COARSE_MM = 0.75
ON_SCAN_MEDIAN_MM = 0.1  # ... and most punctures far closer: no offset of the whole plan

_TIMES = {}


def _timed(label, make):
    start = time.perf_counter()
    out = make()
    _TIMES[label] = time.perf_counter() - start
    return out


def _distance_to_mesh(vertices, faces, points, k=16):
    """Distance ``(k,) float`` from each point to the mesh, over its ``k`` triangles with
    the nearest centroids: an upper bound of the true distance, so ``< limit`` is safe."""
    triangles = vertices[faces]
    _, idx = cKDTree(triangles.mean(axis=1)).query(points, k=k)
    closest = trimesh.triangles.closest_point(triangles[idx].reshape(-1, 3, 3), np.repeat(points, k, axis=0))
    return np.linalg.norm(closest.reshape(len(points), k, 3) - points[:, None], axis=2).min(axis=1)


def _canonical_to_scan_mm(s, points):
    """Canonical-frame points (mm) in the scan's frame, in mm."""
    return (np.asarray(points) @ s.pose[:3, :3].T + s.pose[:3, 3]) * s.scale_to_mm


def _unobserved_cm2_per_zone(face, zones):
    """Skin area (cm^2) of the untreatable triangles inside each zone's outline."""
    centroid_uv = face.uv[face.faces].mean(axis=1)
    hidden = ~face.treatable_triangles
    out = {}
    for name, outline in zones.outlines.items():
        inside = shapely.contains_xy(outline, centroid_uv[:, 0], centroid_uv[:, 1])
        out[name] = float(face.triangle_area_mm2[inside & hidden].sum()) / 100.0
    return out


# --- fixtures: one scan, its plan and verdict; the bundled face's for comparison ----------

@pytest.fixture(scope="module")
def subject(default_face):
    """Another person: the bundled face, rescaled per axis, fuller cheeks and chin."""
    return deformed_face(default_face)


@pytest.fixture(scope="module")
def metre_scan(subject):
    # turned, moved 42 cm away, in metres, 0.15 mm depth noise, a 9 mm hole on a cheek
    # (landmark 205), 0.6 mm landmark noise
    return make_scan(subject, units="m", seed=0)


@pytest.fixture(scope="module")
def scan_face(metre_scan):
    return _timed("load scan (m)", lambda: Face.load((metre_scan.vertices, metre_scan.faces), metre_scan.landmarks))


@pytest.fixture(scope="module")
def scan_plan(scan_face):
    return _timed("plan scan (m)", lambda: plan(scan_face))


@pytest.fixture(scope="module")
def scan_check(scan_plan):
    return _timed("verify scan plan", lambda: verify(scan_plan))


@pytest.fixture(scope="module")
def default_plan(auto_plan):
    return auto_plan


@pytest.fixture(scope="module")
def default_check(default_plan):
    return _timed("verify default plan", lambda: verify(default_plan))


# --- tests ------------------------------------------------------------------------------

def test_punctures_lie_on_the_scan_surface_in_its_frame(metre_scan, scan_face, scan_plan):
    points = scan_plan.puncture_points
    assert len(points) > 10_000
    scan_mm = metre_scan.vertices * metre_scan.scale_to_mm
    dist = _distance_to_mesh(scan_mm, metre_scan.faces, points)
    far = int(np.argmax(dist))
    # the scan sits 42 cm from the origin, turned: only punctures in its frame and in mm
    # can be on its surface
    assert dist.max() < ON_SCAN_MM, (f"{int((dist >= ON_SCAN_MM).sum())} of {len(points)} punctures farther than "
                                     f"{ON_SCAN_MM} mm from the scan; worst {dist[far]:.3f} mm at {points[far]}")


def test_the_scan_plan_verifies(scan_check):
    assert scan_check.ok, scan_check.text()


def test_unobserved_skin_is_untreated_and_reported(metre_scan, scan_face, scan_plan):
    face, points = scan_face, scan_plan.puncture_points
    assert face.unobserved.any()
    flat = face.flatten(points, max_dist_mm=ON_SCAN_MM)
    assert (flat.tri >= 0).all()
    on_hidden = face.unobserved[face.faces[flat.tri]].any(axis=1)
    assert not on_hidden.any(), f"{int(on_hidden.sum())} punctures on unobserved skin, first at {points[on_hidden][0]}"
    # the hole itself: nothing within its radius of its centre (in the scan's frame, mm)
    centre, radius = metre_scan.holes_mm[0]
    centre_mm = _canonical_to_scan_mm(metre_scan, centre[None])[0]
    nearest = float(np.linalg.norm(points - centre_mm, axis=1).min())
    assert nearest >= radius, f"a puncture {nearest:.2f} mm from the hole's centre (radius {radius} mm)"
    # the summary says how much was not seen, and every zone is still reported
    doc = scan_plan.to_json()
    assert doc["face"]["unobserved_fraction"] == pytest.approx(float(face.unobserved.mean()))
    assert doc["face"]["unobserved_fraction"] > 0
    hidden = _unobserved_cm2_per_zone(face, scan_plan.zones)
    hole_uv = face.uv[205]
    hole_zone = next(n for n, o in scan_plan.zones.outlines.items() if shapely.contains_xy(o, *hole_uv))
    assert hidden[hole_zone] > 1.0, hidden
    summary = doc["summary"]["zones"]
    for name, cm2 in hidden.items():
        # the plan reports each zone's unseen skin (its cell over unobserved triangles; the
        # test counts whole triangles by their centroid, so the two agree to a few %)
        assert summary[name]["unobserved_cm2"] == pytest.approx(cm2, rel=0.1, abs=0.3), (name, cm2)
        if cm2 > 0:
            z = summary[name]
            assert z["area_cm2"] > 0 and z["in_band_fraction"] is not None, (name, cm2, z)


def test_planning_does_not_depend_on_the_scan_unit(subject, metre_scan, scan_plan):
    mm_scan = make_scan(subject, units="mm", seed=0)
    np.testing.assert_allclose(mm_scan.vertices, metre_scan.vertices * 1000.0, rtol=1e-12, atol=1e-9)
    face = Face.load((mm_scan.vertices, mm_scan.faces), mm_scan.landmarks, units="mm")
    other = _timed("plan scan (mm)", lambda: plan(face))
    a, b = scan_plan.puncture_points, other.puncture_points
    # the same plan: the two faces differ by float rounding (1e-13 mm), which the pen's
    # stamp fit (an iterative solve, then rounding along each stroke) can carry to another
    # candidate stamp 0.5 mm along a stroke, or to the next one: the punctures agree to
    # about a candidate spacing, their count and every zone's dose figures closely
    assert abs(len(a) - len(b)) <= 0.01 * len(a), f"{len(a)} punctures from the scan in m, {len(b)} in mm"
    for x, y in ((a, b), (b, a)):
        gap, _ = cKDTree(y).query(x)
        assert (gap <= 1.0).mean() >= 0.99, f"{int((gap > 1.0).sum())} punctures over 1 mm off their twins"
        # (a stamp moved to the next candidate also turns its needles by the golden angle:
        # the odd needle lands a few mm from any twin)
        assert gap.max() <= 3.0, f"a puncture {gap.max():.3g} mm from its twin"
    # the roller's punctures do not go through the fit: identical but for float ties
    roller_a = a[np.isin(scan_plan.puncture_stroke, [k.id for k in scan_plan.strokes if k.device == "roller"])]
    roller_b = b[np.isin(other.puncture_stroke, [k.id for k in other.strokes if k.device == "roller"])]
    assert len(roller_a) == len(roller_b)
    gap, _ = cKDTree(roller_b).query(roller_a)
    assert (gap <= UNIT_RTOL * float(np.abs(a).max())).mean() >= 0.999
    mine, theirs = scan_plan.summary()["zones"], other.summary()["zones"]
    recomputed = verify(other).zones
    for name, z in mine.items():
        if z["in_band_fraction"] is not None:
            assert abs(z["in_band_fraction"] - theirs[name]["in_band_fraction"]) <= 0.05, name
            assert theirs[name]["over_cap_fraction"] == 0.0, name
            # the millimetre scan's plan meets the bar on its own, as the verifier counts it
            assert recomputed[name]["in_band_fraction"] >= IN_BAND_BAR, (name, recomputed[name]["in_band_fraction"])
            assert recomputed[name]["over_cap_fraction"] == 0.0, name


def test_dose_on_observed_skin_is_close_to_the_bundled_faces(scan_plan, scan_check, default_plan, default_check):
    mine, ref = scan_check.zones, default_check.zones
    hidden = _unobserved_cm2_per_zone(scan_plan.face, scan_plan.zones)
    summary = scan_plan.summary()["zones"]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    head = (f"{'zone':<18}{'unseen':>7}{'area':>7}{'target':>7}{'mean':>7}{'p5':>7}{'p95':>7}{'in band':>9}"
            f"{'over cap':>9} |{'area':>7}{'mean':>7}{'p5':>7}{'p95':>7}{'in band':>9}{'over cap':>9}{'diff':>8}")
    rows = ["", "scan (deformed face, turned and moved, m, noise, hole on a cheek) | bundled face, both device auto",
            head, "-" * len(head)]
    for name, z in mine.items():
        r = ref[name]
        diff = None if z["in_band_fraction"] is None else z["in_band_fraction"] - r["in_band_fraction"]
        rows.append(f"{name:<18}{hidden[name]:7.1f}{z['area_cm2']:7.1f}{z['target_per_cm2']:7.0f}{z['mean']:7.1f}"
                    f"{z['p5']:7.1f}{z['p95']:7.1f}{pct(z['in_band_fraction']):>9}{pct(z['over_cap_fraction']):>9} |"
                    f"{r['area_cm2']:7.1f}{r['mean']:7.1f}{r['p5']:7.1f}{r['p95']:7.1f}{pct(r['in_band_fraction']):>9}"
                    f"{pct(r['over_cap_fraction']):>9}{'-' if diff is None else f'{100 * diff:+.1f}':>8}")
    rows.append("-" * len(head))
    rows.append("unseen/area cm2 of skin; densities punctures/cm2 over 1 cm2 windows (recomputed by verify); "
                "in band = [0.9 x target, cap]; diff = scan - bundled in band, points")
    rows.append(f"punctures: scan {len(scan_plan.puncture_points)}, bundled {len(default_plan.puncture_points)}; "
                "times: " + ", ".join(f"{k} {v:.1f} s" for k, v in _TIMES.items()))
    print("\n".join(rows))

    problems = []
    for name, z in mine.items():
        if z["in_band_fraction"] is None:
            problems.append(f"{name}: no observed treatable skin left on the scan")
            continue
        if z["over_cap_fraction"] != 0 or summary[name]["over_cap_fraction"] != 0:
            problems.append(f"{name}: over cap on {pct(z['over_cap_fraction'])} (verify), "
                            f"{pct(summary[name]['over_cap_fraction'])} (plan summary)")
        if z["in_band_fraction"] < IN_BAND_BAR:
            problems.append(f"{name}: in band {pct(z['in_band_fraction'])} on the scan (bar {pct(IN_BAND_BAR)})")
        if z["in_band_fraction"] < ref[name]["in_band_fraction"] - IN_BAND_SLACK:
            problems.append(f"{name}: in band {pct(z['in_band_fraction'])} on the scan, "
                            f"{pct(ref[name]['in_band_fraction'])} on the bundled face")
    assert not problems, "\n".join(problems)


def test_the_pen_fit_keeps_every_window_under_its_cap_itself(scan_plan, default_plan):
    # the repair never adds to a window over its mark and takes down one over by several
    # stamps, so the cap guard behind it (which thins stamps crudely) finds nothing to cut
    for p in (default_plan, scan_plan):
        assert p.zone_status["_pen"] == {"stamps_dropped_unsafe": 0, "stamps_dropped_for_cap": 0}


def test_cli_plans_a_scan_file(metre_scan, tmp_path, capsys):
    mesh_path, lmk_path, out = tmp_path / "scan.ply", tmp_path / "landmarks.npy", tmp_path / "plan.json"
    trimesh.Trimesh(metre_scan.vertices, metre_scan.faces, process=False).export(mesh_path)   # float32, as scanners do
    np.save(lmk_path, metre_scan.landmarks)
    start = time.perf_counter()
    code = main(["plan", "--mesh", str(mesh_path), "--landmarks", str(lmk_path), "--units", "m",
                 "--edge-mm", str(CLI_EDGE_MM), "--out", str(out)])
    _TIMES["cli plan (edge 1.5)"] = time.perf_counter() - start
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(out.read_text())
    assert doc["face"]["source"] == str(mesh_path)
    assert doc["units"]["length"] == "mm"
    assert doc["face"]["unobserved_fraction"] > 0
    punctures = np.load(out.with_suffix(".npz"))["punctures"]
    # millimetres in the input mesh's frame: on the scan's surface once it is read in mm
    scan = trimesh.load(mesh_path, process=False)
    dist = _distance_to_mesh(np.asarray(scan.vertices) * 1000.0, np.asarray(scan.faces), punctures)
    assert dist.max() < ON_SCAN_COARSE_MM
    assert np.median(dist) < ON_SCAN_MEDIAN_MM
    # and the same as the library's plan of the same files
    face = Face.load(mesh_path, lmk_path, units="m", edge_mm=CLI_EDGE_MM)
    same = _timed("plan scan file (edge 1.5)", lambda: plan(face))
    assert punctures.shape == same.puncture_points.shape
    np.testing.assert_allclose(punctures, same.puncture_points, rtol=0, atol=1e-6)
    check = verify(out, face=face)
    assert check.ok, check.text()


def test_a_100k_vertex_scan_plans_and_verifies(subject):
    """At 0.477 mm pitch (100k scan vertices) the fit collapses some template fans onto one
    scan point: the plan must still run (no NaN normals) and pass every rule."""
    scan = make_scan(subject, units="m", pitch_mm=0.477, seed=0)
    assert len(scan.vertices) > 95_000
    face = Face.load((scan.vertices, scan.faces), scan.landmarks, units="m")
    assert np.isfinite(face.normals).all()
    result = _timed("plan 100k scan", lambda: plan(face))
    verdict = verify(result)
    assert verdict.ok, verdict.text()
