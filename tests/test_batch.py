"""Batches: a folder of scans planned on local worker processes and on a local Dask cluster.

The folder holds three synthetic depth-camera scans of the default face (tests/synthetic.py):
``alice`` in millimetres, ``bob`` in metres, and ``carol``, whose PLY file was cut in half.
Each batch must write two verified plans and one clear failure, and go on past the failure.
Plans are pen-only at ``--edge-mm 3`` (a few seconds each) to keep the file under two minutes
on a shared two-core machine: what is tested here is the batch, not the planner.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from coverage import batch
from coverage.batch import Scan, find_scans, summary_table
from coverage.cli import main
from coverage.errors import CoverageError
from synthetic import make_scan

FAST = ["--device", "pen", "--edge-mm", "3"]
PLANNED = ("alice", "bob")


@pytest.fixture(scope="module")
def scans_dir(default_face, tmp_path_factory):
    """alice (mm) and bob (m) with their landmarks, and carol: a PLY cut in half."""
    folder = tmp_path_factory.mktemp("scans")
    for name, units, seed in (("alice", "mm", 1), ("bob", "m", 2)):
        s = make_scan(default_face, units=units, pitch_mm=1.0, seed=seed)
        trimesh.Trimesh(s.vertices, s.faces, process=False).export(folder / f"{name}.ply")
        np.save(folder / f"{name}.landmarks.npy", s.landmarks)
    whole = (folder / "alice.ply").read_bytes()
    (folder / "carol.ply").write_bytes(whole[: len(whole) // 2])
    np.save(folder / "carol.landmarks.npy", np.load(folder / "alice.landmarks.npy"))
    (folder / "README.txt").write_text("not a scan\n")
    return folder


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def local_run(scans_dir, tmp_path_factory):
    """``batch SCANS --out OUT --workers 2`` through the command line: (code, stdout, stderr, OUT)."""
    import contextlib
    import io

    out_dir = tmp_path_factory.mktemp("local") / "plans"        # created by the batch
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in ["batch", scans_dir, "--out", out_dir, "--workers", "2", *FAST]])
    return code, out.getvalue(), err.getvalue(), out_dir


def check_batch(code, out, err, out_dir, scans_dir):
    """Two verified plans, one failure line naming carol.ply, and the summary file."""
    assert code == 4, err                                  # some scans failed, the others were planned
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if "failed:" in line]
    assert failures == [f"coverage-planner: failed: carol: {scans_dir / 'carol.ply'}: cannot read mesh "
                        "(ValueError: PLY is unexpected length!); the file is damaged or not in PLY format: "
                        "export the scan again"]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "alice.json", "alice.npz", "batch_summary.json", "bob.json", "bob.npz"]
    summary = json.loads((out_dir / "batch_summary.json").read_text())
    assert summary["format"] == "coverage-batch" and (summary["planned"], summary["failed"]) == (2, 1)
    rows = {r["name"]: r for r in summary["rows"]}
    assert list(rows) == ["alice", "bob", "carol"]
    for name in PLANNED:
        row = rows[name]
        assert row["status"] == "planned" and row["ok"] and row["verify_ok"] and row["violations"] == []
        assert row["plan"] == str(out_dir / f"{name}.json")
        with np.load(out_dir / f"{name}.npz") as arrays:
            assert row["punctures"] == len(arrays["punctures"]) > 10_000
        assert 0.0 < row["zones_in_band_min"] <= 1.0 and row["over_cap_max"] == 0.0
    assert rows["carol"]["status"] == "failed" and rows["carol"]["error_kind"] == "input"
    assert rows["carol"]["plan"] is None and "cannot read mesh" in rows["carol"]["error"]
    table = out.splitlines()
    assert table[0].split()[:3] == ["scan", "status", "time"]
    assert [line.split()[:2] for line in table[1:4]] == [["alice", "planned"], ["bob", "planned"], ["carol", "failed"]]
    assert "2 of 3 scans planned and verified; 1 failed:" in out
    return rows


def test_batch_on_local_workers(local_run, scans_dir):
    code, out, err, out_dir = local_run
    check_batch(code, out, err, out_dir, scans_dir)


def test_batch_on_a_local_dask_cluster(scans_dir, local_run, tmp_path, capsys):
    distributed = pytest.importorskip("distributed", reason="Dask distributed is an optional extra: "
                                                            'pip install ".[distributed]"')
    out_dir = tmp_path / "plans"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        code, out, err = run_cli(["batch", scans_dir, "--out", out_dir, "--scheduler", cluster.scheduler_address,
                                  *FAST], capsys)
    check_batch(code, out, err, out_dir, scans_dir)
    # the cluster plans exactly what the local workers planned
    for name in PLANNED:
        with np.load(out_dir / f"{name}.npz") as theirs, np.load(local_run[3] / f"{name}.npz") as ours:
            assert np.array_equal(theirs["punctures"], ours["punctures"])


def test_unreachable_scheduler_is_a_user_error(scans_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(batch, "SCHEDULER_TIMEOUT_S", 2.0)      # nothing listens there: do not wait 20 s
    out_dir = tmp_path / "plans"
    code, out, err = run_cli(["batch", scans_dir, "--out", out_dir, "--scheduler", "tcp://127.0.0.1:9", *FAST],
                             capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "tcp://127.0.0.1:9" in err and "cannot reach the Dask scheduler" in err
    assert not (out_dir / "batch_summary.json").exists()
    assert not out_dir.exists()      # the folder made for the batch goes too (stop 29)


@pytest.mark.parametrize("address", ["garbage", "http://x", "", "127.0.0.1:8786x", "tcp://host:99999"])
def test_a_scheduler_address_that_is_none_is_refused_first(scans_dir, tmp_path, capsys, address):
    """Until stop 29 these were Dask's ValueError (exit 1), with the output folder left."""
    out_dir = tmp_path / "plans"
    code, out, err = run_cli(["batch", scans_dir, "--out", out_dir, "--scheduler", address, *FAST], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"--scheduler {address!r} is not a Dask scheduler address" in err and "tcp://HOST:PORT" in err
    assert not out_dir.exists()


# --- refusals: nothing is planned, nothing written -------------------------------------------

@pytest.mark.parametrize("case, fragment", [
    ("missing folder", "scans folder not found"),
    ("no scans", "no scans"),
    ("bad protocol", "zones.cheek_left.depth_mm = 2.0"),
    ("zero workers", "workers = 0"),
])
def test_batch_refusals(case, fragment, scans_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    protocol = tmp_path / "deep.toml"
    protocol.write_text("[zones.cheek_left]\ndepth_mm = 2.0\n")
    argv = {"missing folder": [tmp_path / "nowhere"], "no scans": [empty],
            "bad protocol": [scans_dir, "--protocol", protocol], "zero workers": [scans_dir, "--workers", "0"]}[case]
    out_dir = tmp_path / "plans"
    code, out, err = run_cli(["batch", *argv, "--out", out_dir, *FAST], capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("coverage-planner: error: ") and fragment in err, err
    assert not out_dir.exists()


def test_a_bad_thread_count_in_the_environment_refuses_a_batch_planned_here(scans_dir, tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.setenv("COVERAGE_THREADS", "lots")
    out_dir = tmp_path / "plans"
    code, out, err = run_cli(["batch", scans_dir, "--out", out_dir, *FAST], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "$COVERAGE_THREADS = 'lots' is not a whole number" in err and not out_dir.exists()


def test_output_folder_whose_parent_is_missing(scans_dir, tmp_path, capsys):
    out_dir = tmp_path / "missing" / "plans"
    code, _, err = run_cli(["batch", scans_dir, "--out", out_dir, *FAST], capsys)
    assert code == 2 and "does not exist; create it first" in err and not out_dir.parent.exists()


# --- finding scans ---------------------------------------------------------------------------

def test_find_scans_pairs_each_mesh_with_its_landmarks(tmp_path):
    for name in ("a.ply", "a.landmarks.npy", "B.OBJ", "B.landmarks.json", "c.stl", "d.landmarks.npy",
                 "e.ply", "e.off", "e.landmarks.npy", "f.glb", "f.landmarks.npy", "f.landmarks.json",
                 "README.txt", ".hidden.ply", "g_landmarks.npy"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub.ply").mkdir()
    scans = {s.name: s for s in find_scans(tmp_path)}
    assert list(scans) == ["B", "a", "c", "d", "e", "f"]
    assert scans["a"] == Scan("a", tmp_path / "a.ply", tmp_path / "a.landmarks.npy")
    assert scans["B"] == Scan("B", tmp_path / "B.OBJ", tmp_path / "B.landmarks.json")
    assert scans["c"] == Scan("c", tmp_path / "c.stl", None)    # planned if it is a canonical-topology mesh
    assert scans["d"].mesh is None and "landmarks without a mesh" in scans["d"].problem
    assert "2 meshes named e (e.off, e.ply)" in scans["e"].problem
    assert "2 landmark files for f" in scans["f"].problem


def test_find_scans_refuses_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(CoverageError, match="scans folder not found"):
        find_scans(tmp_path / "nowhere")
    with pytest.raises(CoverageError, match="no scans"):
        find_scans(tmp_path)


def test_a_mesh_without_landmarks_fails_with_where_to_put_them(scans_dir, tmp_path):
    row = batch.plan_one(scans_dir / "alice.ply", None, tmp_path, device="pen", edge_mm=3.0)
    assert row["status"] == "failed" and row["error_kind"] == "input"
    assert row["error"] == (f"{scans_dir / 'alice.ply'}: no landmarks beside it; save the scan's 468 MediaPipe "
                            "landmarks as alice.landmarks.npy or alice.landmarks.json (only a canonical 468-vertex "
                            "mesh needs none)")
    assert list(tmp_path.iterdir()) == []


# --- a worker that dies ----------------------------------------------------------------------

def die_on_bob(mesh, landmarks, out_dir, **settings):
    """A stand-in for plan_one whose process dies on bob's scan (as a crash or the OOM killer would)."""
    name = Path(mesh).stem
    if name == "bob":
        os._exit(9)
    return dict(batch._failure(name, mesh, "", "input"), status="planned", ok=True, error=None, error_kind=None)


def test_a_dying_worker_is_named_and_the_batch_goes_on(tmp_path):
    jobs = [(name, str(tmp_path / f"{name}.ply"), None) for name in ("alice", "bob", "carol", "dave", "erin")]
    rows = []
    batch._run_pool(jobs, tmp_path, {}, 2, rows.append, task=die_on_bob)
    by_name = {r["name"]: r for r in rows}
    assert sorted(by_name) == ["alice", "bob", "carol", "dave", "erin"] and len(rows) == 5
    assert all(by_name[n]["status"] == "planned" for n in ("alice", "carol", "dave", "erin"))
    assert by_name["bob"]["status"] == "failed" and by_name["bob"]["error_kind"] == "crashed"
    assert "the worker process planning it died" in by_name["bob"]["error"]


# --- the table -------------------------------------------------------------------------------

def test_summary_table_by_hand():
    ok = {"name": "alice", "status": "planned", "seconds": 6.04, "punctures": 39999, "strokes": 576,
          "zones_in_band_min": 0.6612, "over_cap_max": 0.0, "verify_ok": True, "violations": [], "error": None}
    bad = dict(ok, name="bob", status="violation", verify_ok=False, violations=["cap", "depth"], over_cap_max=0.0123)
    failed = dict(ok, name="carol", status="failed", seconds=0.01, punctures=None, strokes=None,
                  zones_in_band_min=None, over_cap_max=None, verify_ok=None, error="carol.ply: cannot read mesh")
    lines = summary_table([ok, bad, failed]).splitlines()
    assert lines[1].split() == ["alice", "planned", "6.0", "39,999", "576", "66.1", "%", "0.00", "%", "ok"]
    assert lines[2].split()[:2] == ["bob", "violation"] and lines[2].endswith("1.23 %  FAIL: cap, depth")
    assert lines[3].split() == ["carol", "failed", "0.0", "-", "-", "-", "-", "-"]
    assert lines[4] == "1 of 3 scans planned and verified; 1 planned but breaking a rule; 1 failed:"
    assert lines[5] == "  carol: carol.ply: cannot read mesh"
