"""The two developer scripts of benchmarks/ that the README's stop-by-stop comparisons come
from: they run, print what they say, and refuse bad arguments with one line. Timings are
printed, never asserted."""
import re
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
