"""Two or more versions of the planner timed side by side, in interleaved fresh processes.

    python benchmarks/interleaved.py [--rounds R] [--plans P] [--threads N] [--step MODULE.FUNC ...]
                                     NAME=TREE NAME=TREE ...

Each TREE is a git revision (``HEAD``, ``9f8e51d``, ...: its ``src`` is unpacked into a
temporary folder, its kernels copied from this checkout's build when ``ext/`` and
``setup.py`` are the same as the working tree's, else built there) or a path to a ``src``
folder whose ``coverage/_ext`` holds built kernels (``.`` for this checkout's ``src``).

A round starts one process per version, in turn (the order reversed every other round, so
neither side always runs first after the machine's other work); each process empties the
package's caches, builds the bundled face and its chart as the bench does, and times ``P``
cold plans of it, the first dropped (imports and first-call costs). Printed per version:
the median wall clock of its plans with the quartiles, and the median CPU time (both
threads' work). ``--step MODULE.FUNC`` (repeatable, e.g. ``coverage.pen.field_paths``) also
times that function in every plan, by thread: the median per plan of its calls' wall clock on
the caller's thread (T0) and on the pool's (T1), of its CPU time on the caller's thread, and of
the time from the plan's start to its first call. On a shared machine the figures of one run
drift with the hour: compare versions only within one run. Timings only: nothing here
asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(plans: int, steps: list) -> None:
    import functools
    import importlib
    import threading

    import coverage
    from coverage.face import Face

    bench = importlib.import_module("coverage.bench")
    caller, calls = threading.get_ident(), []

    def timed(name, fn):
        @functools.wraps(fn)
        def step(*args, **kwargs):
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                calls.append((name, threading.get_ident() == caller, start, time.perf_counter() - start,
                              time.thread_time() - cpu))
        return step

    for name in steps:
        module, func = name.rsplit(".", 1)
        mod = importlib.import_module(module)
        setattr(mod, func, timed(name, getattr(mod, func)))
    out, per_step = [], []
    for _ in range(plans):
        bench.clear_caches()
        face = Face.default()
        _ = face.uv, face.chart_grid            # as the bench: the face and its chart built
        calls.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        coverage.plan(face)
        out.append((time.perf_counter() - wall, time.process_time() - cpu))
        per_step.append({name: [sum(c[3] for c in calls if c[0] == name and c[1]),
                                sum(c[3] for c in calls if c[0] == name and not c[1]),
                                sum(c[4] for c in calls if c[0] == name and c[1]),
                                min((c[2] - wall for c in calls if c[0] == name), default=float("nan"))]
                         for name in steps})
    print(json.dumps({"version": coverage.__file__, "times": out[1:], "steps": per_step[1:]}))


def _tree(spec: str, scratch: Path) -> Path:
    """The ``src`` folder of a version given as a path or a git revision."""
    path = Path(spec)
    if path.is_dir():
        src = path / "src" if (path / "src" / "coverage").is_dir() else path
        if not (src / "coverage" / "_ext").is_dir():
            sys.exit(f"interleaved: {spec} holds no coverage/_ext (give a src folder with built kernels)")
        return src.resolve()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", spec + "^{commit}"],
                         capture_output=True, text=True)
    if rev.returncode:
        sys.exit(f"interleaved: {spec!r} is neither a folder nor a git revision of {ROOT}")
    commit = rev.stdout.strip()
    dest = scratch / commit[:12]
    if dest.exists():
        return dest / "src"
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src", "ext", "setup.py", "pyproject.toml",
                              "README.md"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    same = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", commit, "--", "ext", "setup.py"]).returncode == 0
    built = sorted((ROOT / "src" / "coverage" / "_ext").glob("*.so"))
    if same and built:
        for so in built:
            shutil.copy2(so, dest / "src" / "coverage" / "_ext" / so.name)
    else:
        print(f"building the kernels of {spec} ({commit[:12]}) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=dest, check=True,
                       stdout=subprocess.DEVNULL)
    return dest / "src"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="*", metavar="NAME=TREE", help="a git revision or a src folder, named")
    parser.add_argument("--rounds", type=int, default=12, help="processes per version (12)")
    parser.add_argument("--plans", type=int, default=4, help="plans per process, the first dropped (4)")
    parser.add_argument("--threads", type=int, help="the plans' threads ($COVERAGE_THREADS; default: the cores, "
                                                    "at most 2)")
    parser.add_argument("--step", action="append", default=[], metavar="MODULE.FUNC",
                        help="also time this function in every plan, by thread (repeatable)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.step)
        return
    if len(args.versions) < 2 or any("=" not in v for v in args.versions):
        parser.error("give two versions or more, each NAME=TREE")
    if args.rounds < 1 or args.plans < 2:
        parser.error("--rounds must be 1 or more and --plans 2 or more (the first plan of a process is dropped)")
    for name in args.step:
        if not re.fullmatch(r"coverage(\.\w+)*\.\w+", name):
            parser.error(f"--step {name!r} is not a function of the package; give MODULE.FUNC, "
                         f"e.g. coverage.pen.field_paths")
    sides = [v.split("=", 1) for v in args.versions]
    with tempfile.TemporaryDirectory(prefix="coverage-interleaved-") as scratch:
        trees = [(name, _tree(spec, Path(scratch))) for name, spec in sides]
        times = {name: [] for name, _ in trees}
        steps = {name: [] for name, _ in trees}
        for r in range(args.rounds):
            for name, src in (trees if r % 2 == 0 else trees[::-1]):
                env = dict(os.environ, PYTHONPATH=str(src))
                if args.threads is not None:
                    env["COVERAGE_THREADS"] = str(args.threads)
                run = subprocess.run([sys.executable, __file__, "--child", str(args.plans),
                                      *(a for name in args.step for a in ("--step", name))], env=env,
                                     capture_output=True, text=True)
                if run.returncode:
                    sys.exit(f"interleaved: {name} failed:\n{run.stderr[-2000:]}")
                got = json.loads(run.stdout.strip().splitlines()[-1])
                if not got["version"].startswith(str(src)):
                    sys.exit(f"interleaved: {name} imported {got['version']}, not its own tree {src}")
                times[name] += got["times"]
                steps[name] += got["steps"]
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    print(f"{'version':<12} {'plans':>5} {'wall median':>11} {'q1':>7} {'q3':>7} {'CPU median':>10}")
    for name, got in times.items():
        wall = [t[0] for t in got]
        q1, median, q3 = statistics.quantiles(wall, n=4, method="inclusive") if len(wall) > 1 else wall * 3
        print(f"{name:<12} {len(got):>5} {median:>11.3f} {q1:>7.3f} {q3:>7.3f} "
              f"{statistics.median(t[1] for t in got):>10.3f}")
    if args.step:
        print(f"{'version':<12} {'step':<36} {'T0 ms':>8} {'T1 ms':>8} {'T0 CPU ms':>9} {'starts s':>8}")
        for name, per_plan in steps.items():
            for step in args.step:
                rows = [p[step] for p in per_plan]
                first = [r[3] for r in rows if r[3] == r[3]]
                print(f"{name:<12} {step:<36} " + " ".join(
                    f"{statistics.median(r[i] for r in rows) * 1e3:>{w}.1f}" for i, w in ((0, 8), (1, 8), (2, 9)))
                      + (f" {statistics.median(first):>8.3f}" if first else f" {'-':>8}"))


if __name__ == "__main__":
    main()
