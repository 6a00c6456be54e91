"""The developer scripts of benchmarks/ that the README's stop-by-stop comparisons and tables come
from: they run, print what they say, and refuse bad arguments with one line. Timings are
printed, never asserted."""
import re

import pytest
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_interleaved_times_each_version_in_its_own_processes():
    # b: this checkout's last commit, unpacked (with this build's kernels), where it is a checkout
    other = "b=HEAD" if (ROOT / ".git").exists() else "b=."
    run = _run(ROOT / "benchmarks" / "interleaved.py", "--rounds", 2, "--plans", 2, "--threads", 1,
               "--step", "coverage.pen.field_paths", "a=.", other)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    split = next(i for i, line in enumerate(lines) if line.split()[:2] == ["version", "step"])
    rows = [line.split() for line in lines[1:split]]
    assert [r[0] for r in rows] == ["a", "b"]
    walls = {}
    for r in rows:
        plans, wall, q1, q3, cpu = int(r[1]), *map(float, r[2:])
        assert plans == 2            # 2 rounds of 2 plans, each process's first dropped
        assert 0 < q1 <= wall <= q3 and cpu > 0
        walls[r[0]] = q3
    steps = [line.split() for line in lines[split + 1:]]
    assert [(s[0], s[1]) for s in steps] == [("a", "coverage.pen.field_paths"), ("b", "coverage.pen.field_paths")]
    for name, _, t0, t1, t0_cpu, starts in steps:
        # on one thread every call is the caller's; the paths start inside the plan
        assert float(t0) > 0 and float(t1) == 0.0 and 0 < float(t0_cpu) <= float(t0) * 1.05 + 1.0
        assert 0 < float(starts) < walls[name]
    assert run.stderr.count("round ") == 2


def test_interleaved_refuses_what_is_not_a_version():
    run = _run(ROOT / "benchmarks" / "interleaved.py", "a=no-such-revision", "b=.")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "'no-such-revision' is neither a folder nor a git revision" in run.stderr
    run = _run(ROOT / "benchmarks" / "interleaved.py", "a=.")
    assert run.returncode != 0 and "give two versions or more" in run.stderr
    run = _run(ROOT / "benchmarks" / "interleaved.py", "--step", "pen.field_paths", "a=.", "b=.")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "--step 'pen.field_paths' is not a function of the package" in run.stderr


def test_timeline_lists_the_plans_steps_by_thread():
    run = _run(ROOT / "benchmarks" / "timeline.py", "--plans", 1, "--min-ms", 0)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    total = float(re.fullmatch(r"plan ([0-9.]+) s", lines[-1]).group(1))
    steps = [line.split() for line in lines[1:-1]]
    names = {s[4] for s in steps}
    assert {"ZoneMap.default", "_region_sweeps", "fit", "repair", "select", "_pen_strokes_lifted"} <= names
    starts = [float(s[1]) for s in steps]
    assert starts == sorted(starts)
    for thread, start, end, ms, _ in steps:
        assert thread in ("T0", "T1") and 0 <= float(start) <= float(end) <= total + 1e-3
        assert abs((float(end) - float(start)) * 1e3 - float(ms)) < 1.1     # start and end printed to the millisecond


def test_readme_tables_prints_a_bench_runs_tables(tmp_path):
    # a bench JSON cut to what the tables read, its figures chosen by hand
    stage = lambda s: {"median_s": s}   # noqa: E731
    stages = {n: stage(0.1) for n in ("load", "chart", "zones", "roller", "pen", "fit", "other", "density", "verify")}
    face = {"stages": {**stages, "plan_one_thread": stage(1.234), "plan": stage(0.876), "total": stage(2.5)}}
    doc = {
        "stages": {"default": face, "scan": face},
        "kernels": {"lift": {"input": "100k chart points", "kernel": {"median_ms": 2.0},
                             "reference": {"median_ms": 50.0}, "speedup": 25.0}},
        "plan_kernels": {"pairs": {"b.slow": {"calls": 3, "kernel_ms": 1.0, "reference_ms": 2.5, "speedup": 2.5},
                                   "a.fast": {"calls": 1, "kernel_ms": 0.5, "reference_ms": 50.0, "speedup": 100.0}}},
        "scaling": {"density": {"what": "the plan vs the target", "n": [125.0, 250.0, 500.0],
                                "median_s": [1.0, 2.0, 4.0], "exponent": 1.0}},
        "targets": {"plan": {"what": "the plan", "limit": 1.0, "measured": 0.876, "unit": "s", "met": True},
                    "lift": {"what": "lifting", "limit": None, "measured": 9.75, "unit": "ms", "met": None}},
    }
    path = tmp_path / "bench.json"
    path.write_text(__import__("json").dumps(doc))
    run = _run(ROOT / "benchmarks" / "readme_tables.py", path, "--label", "run X")
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert "| plan on one thread (the stages above) | 1.23 | 1.23 |" in lines
    assert "| **plan** (`coverage.plan`, 2 threads) | 0.88 | 0.88 |" in lines
    assert "| `lift` | 100k chart points | 2.00 | 50.0 | 25x |" in lines
    # the wrappers from the slowest ratio up
    assert lines.index("| `b.slow` | 3 | 1.000 | 2.50 | 2.5x |") < lines.index("| `a.fast` | 1 | 0.500 | 50.00 | 100x |")
    assert "| density: the plan vs the target | 125, 250, 500 target punctures/cm2 | 1.00, 2.00, 4.00 | 1.00 |" in lines
    assert "| target | limit | measured (run X) | met |" in lines
    assert "| the plan | 1 s | 0.88 s | yes |" in lines
    assert "| lifting | - | 9.8 ms | - |" in lines


def _exact_windows():
    import importlib.util

    spec = importlib.util.spec_from_file_location("exact_windows", ROOT / "benchmarks" / "exact_windows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exact_windows_measures_a_flat_lattice_by_hand():
    """A flat 40 x 40 mm sheet (chart = skin), one zone of cap 100 /cm^2 and a puncture at the
    centre of every 1 mm cell: a square of 1 cm^2 of skin is 10 mm a side and holds 100
    punctures, 100 /cm^2, the cap exactly; squares by the sheet's edge are partly off it."""
    from types import SimpleNamespace

    import numpy as np

    n = 40
    g = np.arange(n + 1, dtype=float)
    uv = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    v = lambda i, j: i * (n + 1) + j   # noqa: E731
    faces = np.array([t for i in range(n) for j in range(n)
                      for t in ((v(i, j), v(i, j + 1), v(i + 1, j + 1)), (v(i, j), v(i + 1, j + 1), v(i + 1, j)))])
    face = SimpleNamespace(faces=faces, uv=uv, triangle_area_mm2=np.full(len(faces), 0.5),
                           treatable_triangles=np.ones(len(faces), dtype=bool))
    zones = SimpleNamespace(names=["sheet"], label_at=lambda p: np.zeros(len(p), dtype=np.int64),
                            dose=lambda name: SimpleNamespace(cap_per_cm2=100.0))
    cells = (np.stack(np.meshgrid(np.arange(n), np.arange(n)), axis=-1).reshape(-1, 2) + 0.5)
    plan = SimpleNamespace(face=face, zones=zones, puncture_uv=cells)
    got = _exact_windows().exact_squares(plan, sub=6, cell_mm=0.1)
    inner = ((uv >= 6) & (uv <= n - 6)).all(axis=1)
    assert inner.sum() == 29 * 29 and len(got["half"]) == len(uv)
    np.testing.assert_allclose(got["half"][inner], 5.0, atol=0.06)
    np.testing.assert_allclose(got["treatable"][inner], 1.0, atol=0.02)
    assert np.all(got["count"][inner] == 100)
    np.testing.assert_allclose(got["ratio"][inner], 1.0, atol=0.02)
    # the corner's square: only a quarter of it lies on the sheet, so it grows to cover 1 cm^2
    corner = np.flatnonzero((uv == 0).all(axis=1))[0]
    assert got["half"][corner] == pytest.approx(10.0, abs=0.1)


def test_exact_windows_plans_and_reports_and_refuses_an_unknown_face():
    run = _run(ROOT / "benchmarks" / "exact_windows.py", "--faces", "bundled")
    assert run.returncode == 0, run.stderr[-2000:]
    line = run.stdout.strip().splitlines()[-1]
    m = re.match(r"bundled +highest squares / cap: (\w+) ([0-9.]+), .*squares over their cap: (\d+) of (\d+)$", line)
    assert m, line
    # the verifier's windows hold every plan under its caps; a square off the texel grid
    # differs from them by a stamp's needles at an edge, a few per cent at most
    assert 0.9 < float(m.group(2)) < 1.1 and int(m.group(4)) > 10000
    bad = _run(ROOT / "benchmarks" / "exact_windows.py", "--faces", "bundled,x1")
    assert bad.returncode != 0 and "--faces: 'x1' is not a face" in bad.stderr
