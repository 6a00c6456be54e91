"""The commands that read a saved plan: export (robot trajectories) and show (pictures)."""
import json

import numpy as np
import pytest

from coverage import load_plan
from coverage.export import read_trajectory
from test_cli import assert_one_line_error as assert_refused
from test_cli import run


@pytest.fixture(scope="module")
def saved(auto_plan, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "PLAN.json"
    auto_plan.save(path)
    return path


def test_export_writes_the_session_at_its_rate(saved, auto_plan, tmp_path, capsys):
    out = tmp_path / "session.npz"
    code, stdout, err = run(["export", saved, "--out", out, "--rate", "50"], capsys)
    assert code == 0, err
    traj = read_trajectory(out)
    assert np.allclose(traj.time_s, np.arange(len(traj)) / 50.0)
    assert traj.duration_s >= auto_plan.time_s
    assert set(np.unique(traj.stroke_id[traj.stroke_id >= 0])) == {s.id for s in auto_plan.strokes}
    assert f"{len(traj)} samples at 50 Hz" in stdout and f"wrote {out}" in stdout


def test_export_smoothing_flags_reach_the_file(saved, auto_plan, tmp_path, capsys):
    # --smooth-mm 0 follows the plan's own samples; the header states what was used
    exact, smooth = tmp_path / "exact.npz", tmp_path / "smooth.npz"
    for out, argv in ((exact, ["--smooth-mm", "0"]), (smooth, ["--smooth-mm", "0.05", "--smooth-deg", "1"])):
        code, _, err = run(["export", saved, "--out", out, "--rate", "50", *argv], capsys)
        assert code == 0, err
    a, b = read_trajectory(exact), read_trajectory(smooth)
    assert a.meta["smoothing"]["position_mm"] == 0 and a.meta["smoothing"]["orientation_deg"] == 0
    assert b.meta["smoothing"]["position_mm"] == 0.05 and b.meta["smoothing"]["orientation_deg"] == 1
    assert 0 < b.meta["smoothing"]["max_position_offset_mm"] <= 0.05 + 1e-9


@pytest.mark.parametrize("argv, fragments", [
    (["--rate", "0"], ["rate"]),
    (["--format", "csv"], ["csv"]),                # the suffix says npz
    (["--smooth-mm", "0.5"], ["smooth_mm", "0.5"]),
    (["--smooth-deg", "-1"], ["smooth_deg"]),
])
def test_export_refuses_bad_options_before_any_work(saved, tmp_path, capsys, argv, fragments):
    out = tmp_path / "session.npz"
    code, _, err = run(["export", saved, "--out", out, *argv], capsys)
    assert_refused(code, err, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_show_draws_what_is_asked(saved, tmp_path, capsys):
    png, html, gif = tmp_path / "plan.png", tmp_path / "plan.html", tmp_path / "plan.gif"
    code, stdout, err = run(["show", saved, "--png", png, "--html", html, "--gif", gif, "--frames", "3"], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 100_000
    page = html.read_text(encoding="utf-8")
    assert "plotly" in page and 'src="http' not in page
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert stdout.count("wrote ") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.gif", "plan.html", "plan.png"]


@pytest.mark.parametrize("argv, fragments", [
    ([], ["say what to draw"]),
    (["--html", "page.txt"], ["page.txt", ".html"]),
    (["--gif", "anim.gif", "--frames", "1"], ["--frames 1"]),
])
def test_show_refuses_bad_requests_and_writes_nothing(saved, tmp_path, capsys, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["show", saved, *argv], capsys)
    assert_refused(code, err, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_show_never_overwrites_the_plan(saved, capsys):
    before = saved.with_suffix(".npz").read_bytes()
    code, _, err = run(["show", saved, "--pdf", saved.with_suffix(".pdf"), "--png", saved.with_suffix(".npz")], capsys)
    assert code == 2 and "Traceback" not in err
    assert saved.with_suffix(".npz").read_bytes() == before and not saved.with_suffix(".pdf").exists()


def test_resume_completes_an_interrupted_session(saved, auto_plan, tmp_path, capsys):
    """Stopped 37 % along a roller stroke: the remaining plan starts exactly there, and what was
    delivered plus the remaining plan passes every rule (exit 0)."""
    k = next(s.id for s in auto_plan.strokes if s.device == "roller" and s.punctures > 50)
    log = tmp_path / "delivered.json"
    log.write_text(json.dumps({"strokes": {str(i): 1.0 for i in range(k)} | {str(k): 0.37}}), encoding="utf-8")
    out = tmp_path / "REST.json"
    code, stdout, err = run(["resume", saved, "--delivered", log, "--out", out], capsys)
    assert code == 0, err
    assert "every rule holds" in stdout and f"wrote {out}" in stdout
    rest = load_plan(out)
    assert [s.id for s in rest.strokes] == [s.id for s in auto_plan.strokes[k:]]
    assert len(rest.puncture_points) < len(auto_plan.puncture_points) - sum(s.punctures for s in auto_plan.strokes[:k])


def test_resume_refuses_a_bad_log(saved, tmp_path, capsys):
    log = tmp_path / "delivered.json"
    log.write_text('{"strokes": {"3": 1.7}}', encoding="utf-8")
    code, _, err = run(["resume", saved, "--delivered", log, "--out", tmp_path / "REST.json"], capsys)
    assert_refused(code, err, "1.7")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delivered.json"]
