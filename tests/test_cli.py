"""The ``coverage-planner`` command line: outputs, exit codes and one-line errors.

Most tests call :func:`coverage.cli.main` in-process; two run the installed entry points
(the console script and ``python -m coverage``) in a subprocess. Building a zone map costs
about 3 s at the default resolution, so only the session fixture builds one at 1 mm; the other
runs that get as far as building zones use ``--edge-mm 3`` (about 0.1 s).
"""
import contextlib
import importlib.metadata
import importlib.resources
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import coverage
from coverage import CoverageError, LandmarkError, MeshError, Protocol, ProtocolError
from coverage.cli import main
from coverage.protocol import STANDARD_ZONES
from coverage.zones import ZoneMap

PREFIX = "coverage-planner: error: "
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COARSE = ["--edge-mm", "3"]


def run(argv, capsys):
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(directory: Path) -> list[str]:
    """Temporary ``.part`` files an atomic write would leave if it failed to clean up."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def assert_one_line_error(code, err, *fragments):
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    assert lines[0].startswith(PREFIX), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def _write(path: Path, content) -> Path:
    """Write text (UTF-8) or bytes to ``path`` and return it."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _write_npy(path: Path, array) -> Path:
    np.save(path, array)
    return path


def export_canonical_obj(path: Path, scale: float) -> Path:
    """The bundled canonical face (cm) with its vertices scaled, written as an OBJ."""
    source = importlib.resources.files("coverage.meshes") / "canonical_face_model.obj"
    with importlib.resources.as_file(source) as obj:
        mesh = trimesh.load(obj, process=False, maintain_order=True)
    assert len(mesh.vertices) == 468
    mesh.vertices = np.asarray(mesh.vertices) * scale
    mesh.export(path)
    return path


@pytest.fixture(scope="session")
def default_zones_run(tmp_path_factory):
    """``zones --png OUT`` on the bundled face, run once: (exit code, stdout, stderr, png path)."""
    png = tmp_path_factory.mktemp("zones") / "zones.png"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["zones", "--png", str(png)])
    return code, out.getvalue(), err.getvalue(), png


@pytest.fixture
def sphere(tmp_path):
    """A valid mesh that is not the canonical topology, so it needs landmarks."""
    path = tmp_path / "sphere.ply"
    trimesh.creation.icosphere().export(path)
    return path


# ----------------------------------------------------------------------------- protocol

def test_protocol_default_prints_the_bundled_file(capsys):
    code, out, err = run(["protocol", "--default"], capsys)
    assert (code, err) == (0, "")
    assert out == Protocol.default_text()
    bundled = (importlib.resources.files("coverage.data") / "default_protocol.toml").read_text(encoding="utf-8")
    parsed = tomllib.loads(out)
    assert parsed == tomllib.loads(bundled)
    assert parsed["format"] == "coverage-protocol"
    assert set(parsed["zones"]) == set(STANDARD_ZONES)


def test_protocol_default_output_passes_check(tmp_path, capsys):
    _, printed, _ = run(["protocol", "--default"], capsys)
    path = _write(tmp_path / "printed.toml", printed)
    code, out, err = run(["protocol", "--check", path], capsys)
    assert (code, err) == (0, "")
    assert "valid protocol 'default' (15 zones, 0 lesions)" in out


def test_protocol_check_valid_file(tmp_path, capsys):
    path = _write(tmp_path / "clinic.toml", 'name = "clinic"\n'
                    "[session]\ntarget_per_cm2 = 200.0\n"
                    "[zones.forehead]\ndose_scale = 0.5\n"
                    '[[lesions]]\nname = "mole_1"\ncenter_mm = [42.0, -12.0, 48.0]\nradius_mm = 2.5\n')
    code, out, err = run(["protocol", "--check", path], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(f"{path}: valid protocol 'clinic' ")
    assert re.search(r"\(15 zones, 1 lesions?\)$", lines[0]), lines[0]


def test_protocol_check_invalid_file(tmp_path, capsys):
    path = _write(tmp_path / "typo.toml", "[session]\ntarget_per_cm2 = 200.0\ntarget_per_cm = 300.0\n")
    code, out, err = run(["protocol", "--check", path], capsys)
    assert_one_line_error(code, err, "typo.toml:3", "session.target_per_cm")
    assert "valid protocol" not in out


def test_protocol_without_an_action_is_a_user_error(capsys):
    code, _, err = run(["protocol"], capsys)
    assert_one_line_error(code, err, "--default", "--check")


# ----------------------------------------------------------------------------- zones

def test_zones_default_face(default_zones_run):
    code, out, err, png = default_zones_run
    assert code == 0, err
    assert "Traceback" not in err
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] in STANDARD_ZONES:
            rows[fields[0]] = float(fields[1])
    assert set(rows) == set(STANDARD_ZONES), out
    assert all(area > 0 for area in rows.values()), rows
    total = re.search(r"^total\s+(\d+\.\d)$", out, re.MULTILINE)
    assert total, out
    # each row is rounded to 0.1 cm2, the total to 0.1 cm2 of the unrounded sum
    assert float(total.group(1)) == pytest.approx(sum(rows.values()), abs=0.05 * (len(rows) + 1))
    assert f"wrote {png}" in out


def test_zones_default_face_png(default_zones_run):
    code, _, err, png = default_zones_run
    assert code == 0, err
    assert png.is_file()
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 50_000
    assert leftovers(png.parent) == []


@pytest.fixture(scope="module")
def canonical_objs(tmp_path_factory):
    """The canonical face as an OBJ in its own cm, and the same shrunk to a ~5 mm face."""
    directory = tmp_path_factory.mktemp("canonical")
    return (export_canonical_obj(directory / "face_cm.obj", 1.0),
            export_canonical_obj(directory / "face_tiny.obj", 0.03))


def test_zones_canonical_topology_in_cm_needs_no_landmarks(canonical_objs, tmp_path, capsys):
    face_cm, _ = canonical_objs
    png = tmp_path / "out.png"
    code, out, err = run(["zones", "--mesh", face_cm, *COARSE, "--png", png], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert str(face_cm) in out.splitlines()[0]
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_zones_face_that_fits_no_unit(canonical_objs, tmp_path, capsys):
    _, face_tiny = canonical_objs
    png = tmp_path / "out.png"
    code, _, err = run(["zones", "--mesh", face_tiny, "--png", png], capsys)
    assert_one_line_error(code, err, "face_tiny.obj", "fits no unit")
    assert not png.exists()


def _nan_landmarks(path):
    landmarks = np.zeros((468, 3))
    landmarks[7] = np.nan
    return _write_npy(path, landmarks)


# Each case: (argv before --png, fragments the one error line must contain).
BAD_INPUT = {
    "missing mesh": lambda tmp, sphere: (["--mesh", tmp / "nope.ply"], ["nope.ply", "not found"]),
    "garbage ply": lambda tmp, sphere: (
        ["--mesh", _write(tmp / "garbage.ply", bytes(range(256)) * 8)], ["garbage.ply", "cannot read mesh"]),
    "unsupported suffix": lambda tmp, sphere: (
        ["--mesh", _write(tmp / "scan.xyz", "0 0 0\n1 0 0\n0 1 0\n")], ["scan.xyz", "'.xyz'"]),
    "mesh needs landmarks": lambda tmp, sphere: (["--mesh", sphere], ["sphere.ply", "landmarks are needed"]),
    "landmarks wrong shape": lambda tmp, sphere: (
        ["--mesh", sphere, "--landmarks", _write_npy(tmp / "lm_short.npy", np.zeros((10, 3)))],
        ["lm_short.npy", "(10, 3)"]),
    "landmarks with NaN": lambda tmp, sphere: (
        ["--mesh", sphere, "--landmarks", _nan_landmarks(tmp / "lm_nan.npy")], ["lm_nan.npy", "landmark 7"]),
    "landmarks missing": lambda tmp, sphere: (
        ["--mesh", sphere, "--landmarks", tmp / "absent.npy"], ["absent.npy", "not found"]),
    "landmarks without mesh": lambda tmp, sphere: (
        ["--landmarks", _write_npy(tmp / "lm.npy", np.zeros((468, 3)))], ["--landmarks", "--mesh"]),
    "protocol unknown key": lambda tmp, sphere: (
        ["--protocol", _write(tmp / "unknown.toml", "[session]\ncolour = 'red'\n")],
        ["unknown.toml:2", "session.colour"]),
    "protocol depth above zone maximum": lambda tmp, sphere: (
        ["--protocol", _write(tmp / "deep.toml", "[zones.cheek_left]\ndepth_mm = 2.0\n")],
        ["deep.toml:2", "zones.cheek_left.depth_mm", "maximum"]),
    "edge-mm zero": lambda tmp, sphere: (["--edge-mm", "0"], ["edge_mm = 0.0", "out of range"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_zones_bad_input(case, tmp_path, sphere, capsys):
    args, fragments = BAD_INPUT[case](tmp_path, sphere)
    png = tmp_path / "out.png"
    code, out, err = run(["zones", *args, "--png", png], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not png.exists()
    assert leftovers(tmp_path) == []
    assert "wrote" not in out


def test_zones_png_into_missing_directory(tmp_path, capsys):
    png = tmp_path / "missing" / "out.png"
    code, out, err = run(["zones", *COARSE, "--png", png], capsys)
    assert_one_line_error(code, err, str(png), "does not exist")
    assert not png.parent.exists()
    assert leftovers(tmp_path) == []
    assert "wrote" not in out


def test_zones_edge_mm_nan_is_a_user_error(tmp_path, capsys):
    png = tmp_path / "out.png"
    code, _, err = run(["zones", "--edge-mm", "nan", "--png", png], capsys)
    assert_one_line_error(code, err, "edge_mm")
    assert not png.exists()


def test_zones_png_onto_a_directory_is_a_user_error(tmp_path, capsys):
    target = tmp_path / "already_a_directory.png"
    target.mkdir()
    code, _, err = run(["zones", *COARSE, "--png", target], capsys)
    assert_one_line_error(code, err, "is a directory")
    assert target.is_dir() and leftovers(tmp_path) == []


def test_zones_png_unsupported_suffix_is_a_user_error(tmp_path, capsys):
    out_file = tmp_path / "zones.txt"
    code, _, err = run(["zones", *COARSE, "--png", out_file], capsys)
    assert_one_line_error(code, err, "zones.txt")
    assert not out_file.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("argv, error", [
    (["protocol", "--check", "{tmp}/missing.toml"], ProtocolError),
    (["zones", "--mesh", "{tmp}/missing.ply"], MeshError),
    (["zones", "--edge-mm", "0"], CoverageError),
])
def test_debug_raises_instead_of_exit_2(argv, error, tmp_path, capsys):
    with pytest.raises(CoverageError) as info:
        main(["--debug", *(a.format(tmp=tmp_path) for a in argv)])
    assert isinstance(info.value, error)
    assert PREFIX not in capsys.readouterr().err


def test_landmark_errors_are_landmark_errors(sphere):
    with pytest.raises(LandmarkError, match="landmarks are needed"):
        main(["--debug", "zones", "--mesh", str(sphere)])


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


def test_internal_error_is_one_line_exit_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ZoneMap, "default", staticmethod(_boom))
    png = tmp_path / "out.png"
    code, out, err = run(["zones", *COARSE, "--png", png], capsys)
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("coverage-planner: internal error: RuntimeError: boom"), lines[0]
    assert "--debug" in lines[0]
    assert not png.exists()
    assert leftovers(tmp_path) == []


def test_internal_error_with_debug_raises(monkeypatch, capsys):
    monkeypatch.setattr(ZoneMap, "default", staticmethod(_boom))
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "zones", *COARSE])


# ----------------------------------------------------------------------------- entry points

def test_console_script_version(tmp_path):
    script = Path(sys.executable).parent / "coverage-planner"
    assert script.is_file(), f"console script not installed next to {sys.executable}"
    proc = subprocess.run([str(script), "--version"], cwd=tmp_path, check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"coverage-planner {coverage.__version__}"
    assert coverage.__version__ == importlib.metadata.version("coverage-planner")


def test_python_m_coverage_protocol_default(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "coverage", "protocol", "--default"], cwd=tmp_path,
                          check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == Protocol.default_text()


# --- plan and report -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "PLAN.json"
    code = main(["plan", "--device", "roller", "--edge-mm", "2", "--out", str(out)])
    return code, out


def test_plan_writes_json_and_npz(planned):
    code, out = planned
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "coverage-plan" and doc["device"] == "roller" and doc["strokes"]
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["punctures"].shape[1] == 3 and len(arrays["punctures"]) == doc["summary"]["punctures"]


def test_report_prints_the_zone_table(planned, capsys):
    _, out = planned
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("cheek_left", "nose", "perioral", "in band", "over cap", "passes"):
        assert name in text
    assert "nose: roller not allowed" in text
    assert re.search(r"; devices roller$", text, re.MULTILINE), text
    assert "pen settings per zone" not in text and "pen stamps dropped" not in text


@pytest.mark.parametrize("argv, fragment", [
    (["plan", "--device", "roller"], "--out"),                       # required option missing
    (["plan", "--device", "brush", "--out", "x.json"], "invalid choice"),
    (["report", "{tmp}/missing.json"], "plan file not found"),
    (["report", "{tmp}/not_a_plan.json"], "not a coverage plan"),
    (["verify", "{tmp}/missing.json"], "plan file not found"),
    (["verify", "{tmp}/not_a_plan.json"], "not a coverage plan"),
    (["verify", "{tmp}/missing.json", "--json", "{tmp}/plan.txt"], "unsupported output type"),
    (["verify", "{tmp}/missing.json", "--landmarks", "{tmp}/lm.npy"], "--mesh"),
    (["plan", "--out", "{tmp}/plan.txt"], "unsupported output type"),
])
def test_plan_and_report_errors_are_one_line(argv, fragment, tmp_path, capsys):
    (tmp_path / "not_a_plan.json").write_text('{"format": "something else"}')
    try:
        code = main([a.format(tmp=tmp_path) for a in argv])
    except SystemExit as exc:   # argparse exits on its own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and fragment in err
    assert not (tmp_path / "plan.txt").exists() and not (tmp_path / "plan.npz").exists()


# --- auto plans: report and verify --------------------------------------------------------------

VIOLATION = "coverage-planner: violation: "
LEFT_EYE_LID, RIGHT_EYE_LID = 386, 159     # MediaPipe landmarks on the upper lids (the subject's left, right)


def _main_captured(argv):
    """``main(argv)`` with its output captured, for module fixtures: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def auto_planned(tmp_path_factory):
    """``plan --device auto --edge-mm 2``, run once (~15 s): (exit code, PLAN.json)."""
    out = tmp_path_factory.mktemp("auto") / "AUTO.json"
    code, _, err = _main_captured(["plan", "--device", "auto", "--edge-mm", "2", "--out", out])
    assert code == 0, err
    return code, out


@pytest.fixture(scope="module")
def auto_verified(auto_planned, tmp_path_factory):
    """``verify PLAN.json --json OUT`` on the auto plan, run once: (exit code, stdout, stderr, OUT)."""
    _, plan_json = auto_planned
    verdict = tmp_path_factory.mktemp("verdict") / "verdict.json"
    return (*_main_captured(["verify", plan_json, "--json", verdict]), verdict)


def test_verify_auto_plan_passes(auto_verified):
    code, out, err, _ = auto_verified
    assert code == 0, err
    assert VIOLATION not in err and "Traceback" not in err
    assert re.search(r"^all \d+ checks passed$", out, re.MULTILINE), out
    assert not re.search(r"^FAIL ", out, re.MULTILINE), out
    for rule in ("exclusion", "cap", "depth", "device", "contact", "transit"):
        assert re.search(rf"^ok\s+{rule}\s", out, re.MULTILINE), rule


def test_verify_json_is_the_verdict(auto_verified):
    code, out, _, verdict = auto_verified
    assert code == 0
    doc = json.loads(verdict.read_text(encoding="utf-8"))
    assert doc["ok"] is True and doc["failed"] == [] and doc["violations"] == []
    assert set(doc["checks"]) >= {"exclusion", "cap", "depth", "device", "transit"}
    assert all(check["passed"] for check in doc["checks"].values())
    assert f"wrote {verdict}" in out
    assert leftovers(verdict.parent) == []


def test_a_move_from_no_stroke_is_a_violation_and_no_trajectory(auto_planned, tmp_path, capsys):
    """The first move said to leave a stroke the plan does not have: verify exits 3 and its
    JSON writes the move's infinite measure as null; export refuses the plan in one line
    (until stop 29 both were internal errors, exit 1)."""
    _, plan_json = auto_planned
    copy = tmp_path / plan_json.name
    copy.with_suffix(".npz").write_bytes(plan_json.with_suffix(".npz").read_bytes())
    doc = json.loads(plan_json.read_text(encoding="utf-8"))
    doc["transitions"][0]["from"] = 99999
    copy.write_text(json.dumps(doc), encoding="utf-8")
    verdict = tmp_path / "verdict.json"
    code, out, err = run(["verify", copy, "--json", verdict], capsys)
    assert code == 3 and "Traceback" not in err and "internal error" not in err, err
    written = json.loads(verdict.read_text(encoding="utf-8"))
    assert written["ok"] is False and None in [v.get("value") for v in written["violations"]]
    trajectory = tmp_path / "T.csv"
    code, out, err = run(["export", copy, "--out", trajectory], capsys)
    assert_one_line_error(code, err, "has no transition from stroke 0 to stroke 1", "write the plan again")
    assert not trajectory.exists()


def test_protocol_default_and_check_together_are_refused(tmp_path, capsys):
    """--check was skipped when --default came with it (exit 0) until stop 29."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[pen]\nstamp_hz = nan\n")
    code, out, err = run(["protocol", "--default", "--check", bad], capsys)
    assert_one_line_error(code, err, "--default and --check", "give one")
    assert out == ""


def test_verify_tampered_plan_exits_3(auto_planned, tmp_path, capsys):
    """One puncture moved onto each eye's upper lid: the exclusion rule fails, exit status 3."""
    _, plan_json = auto_planned
    copy = tmp_path / plan_json.name      # the JSON names its NPZ by file name: keep the pair's names
    copy.write_bytes(plan_json.read_bytes())
    with np.load(plan_json.with_suffix(".npz")) as npz:
        arrays = {key: npz[key].copy() for key in npz.files}
    landmarks = coverage.Face.default(edge_mm=2).landmarks
    arrays["punctures"][0] = landmarks[LEFT_EYE_LID]
    arrays["punctures"][1] = landmarks[RIGHT_EYE_LID]
    np.savez(copy.with_suffix(".npz"), **arrays)
    # as a planner with this bug would write it: the JSON names the NPZ it was written with
    doc = json.loads(copy.read_text(encoding="utf-8"))
    doc["arrays"]["sha256"] = hashlib.sha256(copy.with_suffix(".npz").read_bytes()).hexdigest()
    copy.write_text(json.dumps(doc), encoding="utf-8")
    verdict = tmp_path / "verdict.json"
    code, out, err = run(["verify", copy, "--json", verdict], capsys)
    assert code == 3, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith(VIOLATION) for line in lines), err
    exclusion = [line for line in lines if line.startswith(f"{VIOLATION}exclusion: ")]
    assert any("eye_left" in line for line in exclusion), err
    assert any("eye_right" in line for line in exclusion), err
    assert not any(line.startswith(f"{VIOLATION}exclusion: exclusion:") for line in lines)   # no doubled rule
    assert re.search(r"^FAIL exclusion\s", out, re.MULTILINE), out
    assert re.search(r"^\d+ of \d+ checks failed:$", out, re.MULTILINE), out
    # the verdict is written even when the plan fails
    doc = json.loads(verdict.read_text(encoding="utf-8"))
    assert doc["ok"] is False and "exclusion" in doc["failed"]
    assert leftovers(tmp_path) == []


def test_verify_plan_without_its_npz_is_a_user_error(auto_planned, tmp_path, capsys):
    _, plan_json = auto_planned
    copy = tmp_path / plan_json.name
    copy.write_bytes(plan_json.read_bytes())
    verdict = tmp_path / "verdict.json"
    code, out, err = run(["verify", copy, "--json", verdict], capsys)
    assert_one_line_error(code, err, plan_json.with_suffix(".npz").name, "missing")
    assert not verdict.exists() and leftovers(tmp_path) == []
    assert out == ""


@pytest.mark.parametrize("argv, victim", [
    (["export", "P.json", "--out", "P.json"], "P.json"),
    (["export", "P.json", "--out", "P.npz"], "P.npz"),
    (["plan", "--mesh", "s.ply", "--landmarks", "lm.json", "--out", "lm.json"], "lm.json"),
    (["verify", "P.json", "--mesh", "s.ply", "--landmarks", "lm.json", "--json", "lm.json"], "lm.json"),
    (["resume", "P.json", "--delivered", "log.json", "--out", "log.json"], "log.json"),
    (["resume", "P.json", "--mesh", "s.ply", "--landmarks", "lm.json", "--delivered", "log.csv", "--out", "lm.json"],
     "lm.json"),
    (["resume", "P.json", "--delivered", "log.csv", "--out", "P.json"], "P.json"),
])
def test_no_command_writes_over_one_of_its_inputs(tmp_path, capsys, argv, victim):
    """An output that is one of the command's own input files is refused before anything is
    read (until stop 29 export, plan and resume replaced it and exited 0)."""
    for name in ("P.json", "P.npz", "s.ply", "lm.json", "log.json", "log.csv"):
        (tmp_path / name).write_text(f"the {name} a user keeps\n", encoding="utf-8")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, out, err = run([str(tmp_path / a) if a in before else a for a in argv], capsys)
    assert_one_line_error(code, err, "would overwrite", victim)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert out == ""


def test_verify_json_onto_the_plan_is_refused(auto_planned, capsys):
    _, plan_json = auto_planned
    before = plan_json.stat().st_mtime_ns
    code, _, err = run(["verify", plan_json, "--json", plan_json], capsys)
    assert_one_line_error(code, err, "overwrite the plan")
    assert plan_json.stat().st_mtime_ns == before


def test_report_auto_plan_prints_pen_settings(auto_planned, capsys):
    _, plan_json = auto_planned
    code, out, err = run(["report", plan_json], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert "pen settings per zone:" in lines
    pen = lines[lines.index("pen settings per zone:") + 1:]
    periorbital = [line for line in pen if line.startswith("  periorbital_left: ")]
    assert len(periorbital) == 1, out
    assert "depth 0.25 mm" in periorbital[0] and "passes" in periorbital[0] and "stamps/s" in periorbital[0]
    assert "mm/s" in periorbital[0] and "apart" in periorbital[0]
    assert re.search(r"^pen stamps dropped: \d+ as unsafe .*, \d+ to keep every window under its cap$", out,
                     re.MULTILINE), out
    assert re.search(r"; devices pen, roller$", out, re.MULTILINE), out
    assert "where the roller was refused or limited:" in lines      # the roller notes stay


def test_report_text_pen_lines_by_hand():
    """A hand-made summary: one planned pen zone, one where the pen is not allowed, no pen totals."""
    from coverage.plan import report_text

    zone = {"area_cm2": 10.0, "target_per_cm2": 150.0, "mean": 150.0, "p5": 140.0, "p95": 160.0, "max": 170.0,
            "in_band_fraction": 1.0, "over_cap_fraction": 0.0, "passes": 2, "time_s": 12.0}
    pen = {"status": "planned", "pattern": "contour", "depth_mm": 0.25, "passes": 2, "spacing_mm": 4.961,
           "speed_mm_s": 150.0, "stamp_hz": 50.0, "stamp_spacing_mm": 3.0, "stamps": 85, "touch_up_stamps": 19}
    doc = {"strokes": [{}] * 3,
           "summary": {"zones": {"periorbital_left": {**zone, "pen": pen},
                                 "cheek_left": {**zone, "pen": {"status": "not allowed",
                                                                "reason": "the protocol does not allow the pen here"}}},
                       "punctures": 1000, "distinct_channels": 900, "time_s": 60.0, "stroke_time_s": 40.0,
                       "transition_time_s": 20.0, "devices": ["pen"]}}
    lines = report_text(doc).splitlines()
    assert lines[lines.index("pen settings per zone:") + 1:] == [
        "  periorbital_left: contour, depth 0.25 mm, 2 passes, loops 4.96 mm apart, 150 mm/s, 50.0 stamps/s "
        "(one every 3.00 mm); 85 stamps + 19 touch-up",
        "  cheek_left: pen not allowed: the protocol does not allow the pen here"]
    assert lines[lines.index("pen settings per zone:") - 1].endswith("; strokes 3; devices pen")
    assert "where the roller was refused or limited:" not in lines
