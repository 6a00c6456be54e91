"""Bad input through the command line: a clear one-line error, or a documented repair.

Each case is run through :func:`coverage.cli.main` as a user would run it. A refused command
exits with status 2, prints one line on stderr naming the file or field, the value and the
fix, and leaves no output file behind. A repaired scan prints a ``note:`` line saying what
was repaired, and its zones are those of the clean scan. The scans are synthetic
depth-camera scans of the default face (``tests/synthetic.py``); zone maps are built at
``--edge-mm 3`` (under a second each), and only one case makes a whole plan.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import trimesh

from coverage import scan
from synthetic import make_scan
from test_cli import _main_captured, assert_one_line_error, run

COARSE = ["--edge-mm", "3"]


# --- helpers ---------------------------------------------------------------------------------

def assert_refused(code, out, err, outputs, *fragments):
    """Exit 2, one error line holding every fragment, no traceback, no output file left."""
    assert_one_line_error(code, err, *fragments)
    assert "wrote" not in out
    for path in outputs:
        assert not Path(path).exists(), f"{path} was left behind"
        assert not list(Path(path).parent.glob(f".{Path(path).name}.*.part")), f"a temporary {path} was left"


def zone_rows(out: str) -> list[str]:
    """The per-zone table of ``zones`` output (zone, treatable cm2, target, cap, devices)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("zone "))
    end = next(i for i, line in enumerate(lines) if line.startswith("total"))
    return lines[start + 1:end + 1]


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note: ")]


def write_scan(directory: Path, name: str, vertices, faces, landmarks) -> tuple[Path, Path]:
    """A scan as ``NAME.ply`` (float32, like a scanner's) and ``NAME_landmarks.npy``."""
    mesh_path = directory / f"{name}.ply"
    trimesh.Trimesh(np.asarray(vertices), np.asarray(faces), process=False, validate=False).export(mesh_path)
    landmark_path = directory / f"{name}_landmarks.npy"
    np.save(landmark_path, np.asarray(landmarks, dtype=np.float64))
    return mesh_path, landmark_path


def zones_argv(mesh, landmarks, png, *extra):
    return ["zones", "--mesh", mesh, "--landmarks", landmarks, *COARSE, *extra, "--png", png]


@pytest.fixture(scope="module")
def synthetic(default_face):
    """A clean depth-camera scan of the default face, in mm, posed, without holes."""
    return make_scan(default_face, units="mm", pitch_mm=0.8, holes=(), seed=4)


@pytest.fixture(scope="module")
def clean(synthetic, tmp_path_factory):
    """The clean scan's files and its ``zones`` output: (mesh, landmarks, stdout)."""
    directory = tmp_path_factory.mktemp("clean")
    return write_scan(directory, "clean", synthetic.vertices, synthetic.faces, synthetic.landmarks)


@pytest.fixture(scope="module")
def clean_table(clean):
    """The clean scan's zone table (captured by hand: capsys is per test)."""
    mesh, landmarks = clean
    code, out, err = _main_captured(["zones", "--mesh", mesh, "--landmarks", landmarks, *COARSE])
    assert code == 0, err
    assert notes(err) == ["note: 10.6% of the template is unobserved on the scan"]
    return zone_rows(out)


def in_scan_frame(synthetic, points_mm):
    """Canonical-frame points (mm) placed as the synthetic scan was (its pose and unit)."""
    return scan.apply(synthetic.pose, np.asarray(points_mm, dtype=np.float64))


# --- mesh files ------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".ply", ".obj", ".stl"])
def test_empty_mesh_file(suffix, clean, tmp_path, capsys):
    _, landmarks = clean
    mesh = tmp_path / f"empty{suffix}"
    mesh.write_bytes(b"")
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert_refused(code, out, err, [png], f"empty{suffix}", "empty (0 bytes)", "export the scan again")


def _truncated_ply(tmp_path, clean):
    data = clean[0].read_bytes()
    return _put(tmp_path / "truncated.ply", data[: len(data) // 2])


def _put(path, data: bytes):
    path.write_bytes(data)
    return path


UNREADABLE = {
    "truncated binary PLY": (_truncated_ply, ["truncated.ply", "cannot read mesh", "damaged", "PLY"]),
    "binary junk named .obj": (lambda tmp, clean: _put(tmp / "junk.obj", b"\xff\xfe\x00junk" * 64),
                               ["junk.obj", "cannot read mesh", "OBJ", "export the scan again"]),
    "a directory named .ply": (lambda tmp, clean: (tmp / "folder.ply").mkdir() or tmp / "folder.ply",
                               ["folder.ply", "is a directory"]),
    "an OBJ without triangles": (lambda tmp, clean: _put(tmp / "points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"),
                                 ["points.obj", "no triangles", "triangle mesh"]),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_mesh_file(case, clean, tmp_path, capsys):
    make, fragments = UNREADABLE[case]
    mesh = make(tmp_path, clean)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, clean[1], png), capsys)
    assert_refused(code, out, err, [png], *fragments)


def test_nan_and_inf_coordinates_are_dropped(synthetic, clean, tmp_path, capsys):
    vertices = synthetic.vertices.copy()
    vertices[::97] = np.nan
    vertices[50::101, 1] = np.inf
    broken = ~np.isfinite(vertices[synthetic.faces]).all(axis=(1, 2))
    mesh, landmarks = write_scan(tmp_path, "nan", vertices, synthetic.faces, synthetic.landmarks)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert code == 0, err
    assert f"note: {mesh}: dropped {broken.sum():,} triangles with non-finite (NaN or Inf) coordinates" in notes(err)
    # the skin under the dropped triangles is now a scatter of small holes: unobserved
    assert png.is_file()
    assert float(zone_rows(out)[-1].split()[1]) > 150.0      # cm2 treatable of ~210 on the clean scan


def test_all_coordinates_nan_is_refused(synthetic, tmp_path, capsys):
    vertices = np.full_like(synthetic.vertices, np.nan)
    mesh, landmarks = write_scan(tmp_path, "allnan", vertices, synthetic.faces, synthetic.landmarks)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert_refused(code, out, err, [png], "allnan.ply", "no triangle has finite coordinates")


def test_degenerate_and_duplicate_faces_are_dropped(synthetic, clean_table, tmp_path, capsys):
    v, f = synthetic.vertices, synthetic.faces
    copies = v[f[:40, 0]]                                  # coincident copies of existing vertices
    n = len(v)
    degenerate = np.concatenate([
        np.stack([f[40:100, 0], f[40:100, 0], f[40:100, 1]], axis=1),      # a repeated corner
        np.stack([f[:40, 0], n + np.arange(40), f[:40, 1]], axis=1)])      # two coincident corners
    duplicate = np.concatenate([f[200:330], f[400:470, ::-1], np.roll(f[500:520], 1, axis=1)])
    faces = np.concatenate([f, degenerate, duplicate])
    mesh, landmarks = write_scan(tmp_path, "messy", np.concatenate([v, copies]), faces, synthetic.landmarks)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert code == 0, err
    assert notes(err)[0] == f"note: {mesh}: dropped 100 degenerate (repeated or collinear corners) and 220 duplicate triangles"
    assert zone_rows(out) == clean_table


def test_non_manifold_edges_are_kept(synthetic, clean_table, tmp_path, capsys):
    v, f = synthetic.vertices, synthetic.faces
    # a fin standing 3 mm off the skin on one edge of every 40th triangle
    chosen = f[::40, :2]
    normal = trimesh.Trimesh(v, f, process=False).face_normals[::40]
    tips = v[chosen].mean(axis=1) + 3.0 * normal
    fins = np.stack([chosen[:, 0], chosen[:, 1], len(v) + np.arange(len(chosen))], axis=1)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    shared = {tuple(e) for e in unique[counts == 2]}
    expected = len({tuple(e) for e in np.sort(chosen, axis=1)} & shared)   # edges now under three triangles
    mesh, landmarks = write_scan(tmp_path, "fins", np.concatenate([v, tips]), np.concatenate([f, fins]),
                                 synthetic.landmarks)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert code == 0, err
    assert f"note: {mesh}: {expected:,} edges are shared by more than two triangles (non-manifold); kept as they " \
           "are: each template point takes only the scan surface closest to it" in notes(err)
    assert zone_rows(out) == clean_table


def test_inside_out_normals_are_reversed(synthetic, clean_table, tmp_path, capsys):
    mesh, landmarks = write_scan(tmp_path, "inside_out", synthetic.vertices, synthetic.faces[:, ::-1],
                                 synthetic.landmarks)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert code == 0, err
    assert notes(err)[0] == (f"note: {mesh}: the scan is wound inside out (its normals point into the head); "
                             "read with its normals reversed")
    assert zone_rows(out) == clean_table


def test_patches_wound_the_other_way_are_turned(synthetic, clean_table, tmp_path, capsys):
    v, f = synthetic.vertices, synthetic.faces
    centre = v[f].mean(axis=1)
    # two round patches (on a cheek and the forehead) wound against the rest
    patch = np.zeros(len(f), dtype=bool)
    for landmark in (205, 151):
        patch |= np.linalg.norm(centre - synthetic.landmarks[landmark], axis=1) < 20.0
    faces = f.copy()
    faces[patch] = faces[patch][:, ::-1]
    mesh, landmarks = write_scan(tmp_path, "patches", v, faces, synthetic.landmarks)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert code == 0, err
    assert notes(err)[0] == f"note: {mesh}: turned {patch.sum():,} triangles wound against their neighbours to match them"
    assert zone_rows(out) == clean_table


def _extra_pieces(default_face, synthetic):
    """Hair above the forehead, shoulders below the chin and a wall behind, in the scan's frame."""
    lo, hi = default_face.vertices.min(axis=0), default_face.vertices.max(axis=0)
    hair = trimesh.creation.icosphere(subdivisions=3, radius=60.0)
    hair.apply_translation((0.0, hi[1] + 70.0, lo[2] + 40.0))
    shoulders = trimesh.creation.box(extents=(380.0, 60.0, 150.0))
    shoulders.apply_translation((0.0, lo[1] - 90.0, lo[2]))
    wall = trimesh.creation.box(extents=(600.0, 600.0, 5.0))
    wall.apply_translation((0.0, 0.0, lo[2] - 120.0))
    pieces = trimesh.util.concatenate([hair, shoulders, wall])
    return in_scan_frame(synthetic, pieces.vertices), np.asarray(pieces.faces)


def test_extra_pieces_are_dropped_keeping_the_face(default_face, synthetic, clean_table, tmp_path, capsys):
    extra_v, extra_f = _extra_pieces(default_face, synthetic)
    v = np.concatenate([synthetic.vertices, extra_v])
    f = np.concatenate([synthetic.faces, extra_f + len(synthetic.vertices)])
    mesh, landmarks = write_scan(tmp_path, "head", v, f, synthetic.landmarks)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert code == 0, err
    assert notes(err)[0] == (f"note: {mesh}: kept the face; dropped 3 pieces of the scan that no landmark lies on "
                             f"({len(extra_f):,} triangles: hair, shoulders, background or specks)")
    assert zone_rows(out) == clean_table


def test_messy_head_scan_plans_on_the_face_and_verifies(default_face, synthetic, tmp_path, capsys):
    """Hair, shoulders, a wall, duplicates, inside out: planned on the face alone, every rule holds."""
    extra_v, extra_f = _extra_pieces(default_face, synthetic)
    v = np.concatenate([synthetic.vertices, extra_v])
    f = np.concatenate([synthetic.faces, extra_f + len(synthetic.vertices), synthetic.faces[:500]])[:, ::-1]
    mesh, landmarks = write_scan(tmp_path, "head", v, f, synthetic.landmarks)
    out_json = tmp_path / "PLAN.json"
    code, out, err = run(["plan", "--mesh", mesh, "--landmarks", landmarks, *COARSE, "--device", "pen",
                          "--out", out_json], capsys)
    assert code == 0, err
    said = "\n".join(notes(err))
    assert "dropped 500 duplicate triangles" in said and "dropped 3 pieces" in said and "inside out" in said
    with np.load(out_json.with_suffix(".npz")) as arrays:
        punctures = arrays["punctures"]
    # every puncture is on the face scan (its surface noise is 0.15 mm), none on the extra pieces
    face_grid = scan.proximity.build_grid(synthetic.vertices, synthetic.faces)
    _, _, dist = scan.proximity.closest_points(face_grid, punctures, max_dist=20.0)
    assert len(punctures) > 10_000 and (dist >= 0).all() and dist.max() < 1.0
    code, out, err = run(["verify", out_json, "--mesh", mesh, "--landmarks", landmarks, *COARSE], capsys)
    assert code == 0, err + out


# --- units -----------------------------------------------------------------------------------

def face_width(landmarks) -> float:
    """The width the planner reads units from: landmarks 234 to 454 (input units)."""
    return float(np.linalg.norm(landmarks[234] - landmarks[454]))


@pytest.mark.parametrize("scale", [1e-4, 1e4])
def test_face_too_small_or_large_for_any_unit(synthetic, scale, tmp_path, capsys):
    width = f"{face_width(synthetic.landmarks * scale):.4g}"     # e.g. 0.0152 or 1.52e+06
    mesh, landmarks = write_scan(tmp_path, "odd", synthetic.vertices * scale, synthetic.faces,
                                 synthetic.landmarks * scale)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert_refused(code, out, err, [png], str(landmarks), f"face width {width}", "fits no unit",
                   "a face is 90-260 mm wide")


def test_given_units_that_make_no_face(synthetic, tmp_path, capsys):
    # a scan in metres read as millimetres: a face 0.15 mm wide
    mesh, landmarks = write_scan(tmp_path, "metres", synthetic.vertices / 1000.0, synthetic.faces,
                                 synthetic.landmarks / 1000.0)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png, "--units", "mm"), capsys)
    width = face_width(synthetic.landmarks / 1000.0)
    assert_refused(code, out, err, [png], str(landmarks), f"with units = mm the face is {width:.4g} mm wide",
                   "give the scan's real units, or units = auto")


# --- landmarks -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(467, 3), (468, 2), (3, 468)])
def test_landmarks_of_the_wrong_shape(clean, shape, tmp_path, capsys):
    landmarks = tmp_path / "wrong.npy"
    np.save(landmarks, np.zeros(shape))
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(clean[0], landmarks, png), capsys)
    assert_refused(code, out, err, [png], "wrong.npy", f"shape {shape}", "expected (468, 3)")


def test_landmarks_with_nan(synthetic, clean, tmp_path, capsys):
    lm = synthetic.landmarks.copy()
    lm[[7, 300]] = np.nan
    landmarks = tmp_path / "nan_landmarks.json"
    landmarks.write_text(json.dumps({"landmarks": [[None if np.isnan(x) else x for x in row] for row in lm]}))
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(clean[0], landmarks, png), capsys)
    assert_refused(code, out, err, [png], "nan_landmarks.json", "landmark 7 is not finite", "2 rows",
                   "re-run the landmark detector")


def _landmark_file(tmp_path, case, synthetic):
    lm = synthetic.landmarks
    if case == "complex numbers":
        path = tmp_path / "lm.npy"
        np.save(path, lm + 1j)
    elif case == "absurdly large":
        path = tmp_path / "lm.npy"
        np.save(path, lm * 1e200)
    elif case == "objects (pickled)":
        path = tmp_path / "lm.npy"
        np.save(path, np.array([lm, "x"], dtype=object), allow_pickle=True)
    elif case == "a JSON object without landmarks":
        path = tmp_path / "lm.json"
        path.write_text(json.dumps({"points": lm.tolist()}))
    elif case == "broken JSON":
        path = tmp_path / "lm.json"
        path.write_text(json.dumps(lm.tolist())[:500])
    else:   # a folder
        path = tmp_path / "lm.npy"
        path.mkdir()
    return path


@pytest.mark.parametrize("case, fragments", [
    ("complex numbers", ["landmarks are complex128 numbers", "468 x 3 real numbers"]),
    ("absurdly large", ["landmark 0 lies at", "no face is that large"]),
    ("objects (pickled)", ["cannot read landmarks", "write them as a .npy of 468 x 3 floats"]),
    ("a JSON object without landmarks", ['has no "landmarks" list (keys: points)', "write them as"]),
    ("broken JSON", ["cannot read landmarks (JSONDecodeError", "write them as"]),
    ("a folder", ["is a folder, not a landmark file"]),
])
def test_unreadable_landmarks_say_how_to_write_them(synthetic, clean, case, fragments, tmp_path, capsys):
    """Until stop 29 complex landmarks were read without their imaginary part (a 2-line
    warning on stderr), huge ones passed a 2-line overflow warning before the refusal, a
    folder was "not found", and read errors gave Python's message alone."""
    landmarks = _landmark_file(tmp_path, case, synthetic)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(clean[0], landmarks, png), capsys)
    assert_refused(code, out, err, [png], str(landmarks), *fragments)


@pytest.mark.parametrize("how, median_mm", [
    ("moved 40 mm forward", (20.0, 40.0)),    # a frame offset: the skin curves back, so 20 to 40 mm
    ("in mm, scan in m", (300.0, 600.0)),     # the landmarks sit about the camera distance from the scan
])
def test_landmarks_far_from_the_surface(synthetic, how, median_mm, tmp_path, capsys):
    vertices, lm = synthetic.vertices, synthetic.landmarks
    if how.startswith("moved"):
        lm = lm + 40.0 * synthetic.pose[:3, 2]      # the face's +z (forward) in the scan's frame
    else:
        vertices = vertices / 1000.0
    mesh, landmarks = write_scan(tmp_path, "far", vertices, synthetic.faces, lm)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert_refused(code, out, err, [png], str(landmarks), "mm (median) from the surface of", str(mesh),
                   "give landmarks of this scan, in the mesh's frame and units")
    median = float(re.search(r"the landmarks lie ([0-9.]+) mm \(median\)", err).group(1))
    assert median_mm[0] < median < median_mm[1]


def test_landmarks_beyond_the_search_grid_say_how_far(synthetic, tmp_path, capsys):
    """A mesh moved 1e6 mm away: the distance is measured, not the search's "none found" (-1 mm
    until stop 29)."""
    mesh, landmarks = write_scan(tmp_path, "off", synthetic.vertices + 1e6, synthetic.faces, synthetic.landmarks)
    png = tmp_path / "zones.png"
    code, out, err = run(zones_argv(mesh, landmarks, png), capsys)
    assert_refused(code, out, err, [png], "mm (median) from the surface of")
    median = float(re.search(r"the landmarks lie ([0-9.e+]+) mm \(median\)", err).group(1))
    assert 1.6e6 < median < 1.8e6


# --- protocol --------------------------------------------------------------------------------

PROTOCOLS = {
    "unknown field": ("[session]\ncolour = 'red'\n",
                      [":2:", 'session.colour = "red"', "not a known field", "remove it or fix its name"]),
    "unknown zone": ("[zones.cheeck_left]\ndepth_mm = 0.5\n",
                     [":1:", "zones.cheeck_left", "did you mean the standard zone 'cheek_left'"]),
    "value out of range": ("[pen]\nstamp_hz_max = -5\n",
                           [":2:", "pen.stamp_hz_max = -5.0", "below the minimum 1 Hz", "from 1 to 500 Hz"]),
    "text for a number": ("[zones.forehead]\ndepth_mm = \"deep\"\n",
                          [":2:", 'zones.forehead.depth_mm = "deep"', "not a number"]),
    "not TOML": ("[zones\n", [":1:", "not valid TOML", "fix the syntax"]),
    "target above its cap": ("[zones.cheek_left]\ntarget_per_cm2 = 300\ncap_per_cm2 = 200\n",
                             [":3:", "zones.cheek_left.cap_per_cm2 = 200.0", "below the zone target 300",
                              "raise cap_per_cm2 to at least 300 or lower the target"]),
    "depth above the zone maximum": ("[zones.cheek_left]\ndepth_mm = 2.0\n",
                                     [":2:", "zones.cheek_left.depth_mm = 2.0", "exceeds the zone maximum 1.5 mm",
                                      "depth_override = true"]),
    # (stop 29: these three passed the check and then crashed the plan with exit 1)
    "a depth of zero": ("[pen]\ndepth_mm_min = 0\n",
                        [":2:", "pen.depth_mm_min = 0.0", "must be greater than 0 mm"]),
    "a zone depth of zero": ("[zones.forehead]\ndepth_mm = 0\n",
                             [":2:", "zones.forehead.depth_mm = 0.0", "must be greater than 0 mm"]),
    "a needle as wide as the footprint": ("[pen]\nfootprint_diameter_mm = 1\nneedle_diameter_mm = 1\n",
                                          [":3:", "pen.needle_diameter_mm = 1.0",
                                           "is not below pen.footprint_diameter_mm 1",
                                           "give a needle thinner than the footprint"]),
    "a zone outline of no size": ("[zones.mine]\npolygon_chart = [[0, 0], [1e-6, 0], [0, 1e-6]]\n"
                                  "devices = ['pen']\ndepth_mm = 0.5\nmax_depth_mm = 1.0\n",
                                  [":2:", "zones.mine.polygon_chart", "under 0.01 mm2"]),
    "maximum above the override without it": ("[zones.cheek_left]\nmax_depth_mm = 2.0\n",
                                              [":2:", "zones.cheek_left.max_depth_mm = 2.0",
                                               "above pen.override_depth_mm 1.5 mm",
                                               "add depth_override = true to [zones.cheek_left]"]),
}


@pytest.mark.parametrize("case", list(PROTOCOLS))
def test_bad_protocol_refuses_zones(case, tmp_path, capsys):
    text, fragments = PROTOCOLS[case]
    protocol = tmp_path / "mine.toml"
    protocol.write_text(text)
    png = tmp_path / "zones.png"
    code, out, err = run(["zones", *COARSE, "--protocol", protocol, "--png", png], capsys)
    assert_refused(code, out, err, [png], str(protocol), *fragments)


@pytest.mark.parametrize("case", ["target above its cap", "depth above the zone maximum", "a depth of zero",
                                  "a needle as wide as the footprint"])
def test_bad_protocol_refuses_a_plan(case, tmp_path, capsys):
    text, fragments = PROTOCOLS[case]
    protocol = tmp_path / "mine.toml"
    protocol.write_text(text)
    out_json = tmp_path / "PLAN.json"
    code, out, err = run(["plan", *COARSE, "--protocol", protocol, "--out", out_json], capsys)
    assert_refused(code, out, err, [out_json, out_json.with_suffix(".npz")], str(protocol), *fragments)


def test_bad_landmarks_refuse_a_plan(synthetic, tmp_path, capsys):
    mesh, landmarks = write_scan(tmp_path, "far", synthetic.vertices, synthetic.faces, synthetic.landmarks + 300.0)
    out_json = tmp_path / "PLAN.json"
    code, out, err = run(["plan", "--mesh", mesh, "--landmarks", landmarks, *COARSE, "--out", out_json], capsys)
    assert_refused(code, out, err, [out_json, out_json.with_suffix(".npz")], str(landmarks), "from the surface")


# --- outputs ---------------------------------------------------------------------------------

def _under_a_file(tmp):
    (tmp / "afile").write_text("not a directory")
    return tmp / "afile" / "PLAN.json", "does not exist"


OUTPUTS = {
    "missing directory": lambda tmp: (tmp / "nowhere" / "PLAN.json", "directory"),
    "under a regular file": _under_a_file,
    "a directory": lambda tmp: ((tmp / "PLAN.json").mkdir() or tmp / "PLAN.json", "is a directory"),
    "wrong suffix": lambda tmp: (tmp / "PLAN.txt", "unsupported output type '.txt'"),
}


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_plan_output_that_cannot_be_written(case, tmp_path, capsys):
    target, fragment = OUTPUTS[case](tmp_path)
    code, out, err = run(["plan", *COARSE, "--out", target], capsys)
    outputs = [] if target.is_dir() else [target, target.with_suffix(".npz")]
    assert_refused(code, out, err, outputs, str(target), fragment)
    assert not (tmp_path / "PLAN.npz").exists()
    if target.is_dir():
        assert list(target.iterdir()) == []


# --- threads ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, env, fragment", [
    (["--threads", "0"], None, "threads = 0 is not a number of threads"),
    (["--threads", "-2"], None, "threads = -2 is not a number of threads"),
    ([], "many", "$COVERAGE_THREADS = 'many' is not a whole number"),
    ([], "0", "$COVERAGE_THREADS = 0 is not a number of threads"),
])
def test_a_bad_thread_count_refuses_a_plan(argv, env, fragment, tmp_path, capsys, monkeypatch):
    if env is None:
        monkeypatch.delenv("COVERAGE_THREADS", raising=False)
    else:
        monkeypatch.setenv("COVERAGE_THREADS", env)
    target = tmp_path / "PLAN.json"
    code, out, err = run(["plan", *COARSE, *argv, "--out", target], capsys)
    assert_refused(code, out, err, [target, target.with_suffix(".npz")], fragment)


def test_a_lesion_over_most_of_the_face_plans_what_is_left(tmp_path, capsys):
    """A lesion whose keep-out covers the middle of the face leaves slivers of roller zones
    (until stop 29 the roller's regions then read a part no zone had area in: exit 1)."""
    protocol = tmp_path / "big.toml"
    protocol.write_text("[[lesions]]\nname = \"big\"\ncenter_mm = [0.0, 0.0, 0.0]\nradius_mm = 50\nmargin_mm = 30\n")
    out_json = tmp_path / "PLAN.json"
    code, out, err = run(["plan", *COARSE, "--protocol", protocol, "--out", out_json], capsys)
    assert code == 0, err
    code, out, err = run(["verify", out_json], capsys)
    assert code == 0, err


@pytest.mark.parametrize("table", ["zone", "lesion"])
def test_an_outline_off_the_chart_is_refused(table, tmp_path, capsys):
    """A custom zone's or a lesion's chart polygon wholly off the chart: until stop 29 the zone
    came out empty (its report row garbled) and the lesion was dropped, exit 0."""
    far = "[[1000, 1000], [1010, 1000], [1010, 1010]]"
    zone = f"polygon_chart = {far}\ndevices = ['pen']\ndepth_mm = 0.5\nmax_depth_mm = 1.0\ndose_scale = 1.0\n"
    text = f"[zones.mine]\n{zone}" if table == "zone" else f"[[lesions]]\nname = \"mole\"\npolygon_chart = {far}\n"
    protocol = tmp_path / "far.toml"
    protocol.write_text(text)
    out_json = tmp_path / "PLAN.json"
    code, out, err = run(["plan", *COARSE, "--protocol", protocol, "--out", out_json], capsys)
    assert_refused(code, out, err, [out_json, out_json.with_suffix(".npz")], "polygon_chart lies off the face's chart",
                   "u 1000..1010", "give chart mm")


def test_a_resolution_too_fine_to_hold_is_refused(capsys):
    """0.05 mm was allowed and ran out of memory (25 times the vertices of 0.25 mm)."""
    code, out, err = run(["zones", "--edge-mm", "0.1"], capsys)
    assert code == 2 and "edge_mm = 0.1 is out of range" in err and "from 0.25 to 20 mm" in err
