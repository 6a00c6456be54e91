"""Export benchmark: the default auto plan as a robot trajectory, at several rates.

    python benchmarks/bench_export.py [--quick] [--plan PLAN.json] [--json OUT]

Plans the bundled face once (or loads ``--plan``), then times ``export.trajectory`` at 125,
250, 500 and 1000 Hz (250 Hz only with ``--quick``), 3 repeats each after one warm-up (1 with
``--quick``), and writing the 250 Hz trajectory as CSV, NPZ and JSON (one run each, into a
temporary folder). Prints medians and the figures of each rate: samples, exported duration
against the plan's ``time_s``, time per state, largest speed, tangential acceleration and
acceleration of the sampled positions (second differences) per state, largest turn rate, and
the chord error. Writes JSON (default ``benchmarks/results/export.json``). Timings only:
nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

import coverage
from coverage import bench, export

ROOT = Path(__file__).resolve().parent
machine_info, write_json = bench.machine_info, bench.write_json   # the suite's shared helpers

DEFAULT_JSON = ROOT / "results" / "export.json"
RATES_HZ = (125.0, 250.0, 500.0, 1000.0)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(median s, min s, last result) of ``repeats`` calls after one warm-up."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def figures(traj: export.Trajectory, plan) -> dict:
    """What a trajectory does, per state: time, top speed, accelerations (mm/s²), turn rate (deg/s)."""
    dt = 1.0 / traj.rate_hz
    fd = np.linalg.norm(np.diff(traj.position_mm, 2, axis=0), axis=1) / dt ** 2
    rot = Rotation.from_quat(traj.quaternion_wxyz, scalar_first=True)
    turn = np.degrees((rot[:-1].inv() * rot[1:]).magnitude()) / dt
    per_state = {}
    for code, name in enumerate(export.STATES):
        rows = traj.state == code
        inner = rows[1:-1] & rows[:-2] & rows[2:]          # second differences within the state
        per_state[name] = {
            "time_s": float(rows.sum() * dt),
            "speed_max_mm_s": float(traj.speed_mm_s[rows].max(initial=0.0)),
            "tangential_accel_max_mm_s2": float(np.abs(traj.acceleration_mm_s2[rows]).max(initial=0.0)),
            "sampled_accel_max_mm_s2": float(fd[inner].max(initial=0.0)),
            "sampled_accel_p99_mm_s2": float(np.percentile(fd[inner], 99)) if inner.any() else 0.0,
            "turn_rate_max_deg_s": float(turn[rows[1:]].max(initial=0.0)),
        }
    for code, name in ((1, "roller"), (2, "pen")):
        rows = (traj.stroke_id >= 0) & (traj.device == code)
        inner = rows[1:-1] & rows[:-2] & rows[2:]
        per_state[f"contact ({name})"] = {
            "time_s": float(rows.sum() * dt),
            "speed_max_mm_s": float(traj.speed_mm_s[rows].max(initial=0.0)),
            "tangential_accel_max_mm_s2": float(np.abs(traj.acceleration_mm_s2[rows]).max(initial=0.0)),
            "sampled_accel_max_mm_s2": float(fd[inner].max(initial=0.0)),
            "sampled_accel_p99_mm_s2": float(np.percentile(fd[inner], 99)) if inner.any() else 0.0,
            "turn_rate_max_deg_s": float(turn[rows[1:]].max(initial=0.0)),
        }
    return {"samples": len(traj), "duration_s": traj.duration_s, "plan_time_s": float(plan.time_s),
            "ratio_to_plan": traj.duration_s / plan.time_s, "stamps": int(traj.stamps.sum()),
            "chord_error_mm": traj.meta["chord_error_mm"], "per_state": per_state}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="250 Hz only, one repeat")
    parser.add_argument("--plan", metavar="PLAN.json", help="a saved plan (default: plan the bundled face)")
    parser.add_argument("--json", metavar="OUT", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    rates = (250.0,) if args.quick else RATES_HZ
    load_start = os.getloadavg()[0]

    start = time.perf_counter()
    plan = coverage.load_plan(args.plan) if args.plan else coverage.plan(coverage.Face.default())
    print(f"plan: {len(plan.strokes)} strokes, time_s {plan.time_s:.1f} ({time.perf_counter() - start:.1f} s to "
          f"{'load' if args.plan else 'make'})")

    runs = {}
    print(f"{'rate Hz':>8}{'median s':>10}{'min s':>8}{'samples':>10}{'duration s':>12}{'x plan':>8}"
          f"{'chord mm':>10}")
    for rate in rates:
        median, least, traj = timed(lambda rate=rate: export.trajectory(plan, rate), repeats)
        fig = figures(traj, plan)
        runs[f"{rate:g}"] = {"median_s": median, "min_s": least, **fig}
        print(f"{rate:8g}{median:10.3f}{least:8.3f}{fig['samples']:10d}{fig['duration_s']:12.1f}"
              f"{fig['ratio_to_plan']:8.3f}{fig['chord_error_mm']:10.4f}")

    print("\nat 250 Hz, per state")
    print(f"{'state':<18}{'time s':>9}{'v max':>8}{'a_t max':>9}{'a max':>8}{'a p99':>8}{'turn max':>10}")
    for name, row in runs["250"]["per_state"].items():
        print(f"{name:<18}{row['time_s']:9.1f}{row['speed_max_mm_s']:8.1f}{row['tangential_accel_max_mm_s2']:9.1f}"
              f"{row['sampled_accel_max_mm_s2']:8.1f}{row['sampled_accel_p99_mm_s2']:8.1f}"
              f"{row['turn_rate_max_deg_s']:10.1f}")
    print("(mm/s, mm/s², deg/s; a = second differences of the sampled positions over dt², within one state)")

    traj = export.trajectory(plan, 250.0)
    writes = {}
    with tempfile.TemporaryDirectory() as folder:
        for fmt in export.FORMATS:
            path = Path(folder) / f"trajectory.{fmt}"
            start = time.perf_counter()
            export.write_trajectory(traj, path, fmt)
            written = time.perf_counter() - start
            start = time.perf_counter()
            export.read_trajectory(path)
            read = time.perf_counter() - start
            writes[fmt] = {"write_s": written, "read_s": read, "mb": path.stat().st_size / 1e6}
    print("\nfiles at 250 Hz: " + "; ".join(f"{fmt} write {w['write_s']:.2f} s, read {w['read_s']:.2f} s, "
                                            f"{w['mb']:.1f} MB" for fmt, w in writes.items()))
    write_json({"machine": machine_info(), "mode": "quick" if args.quick else "full", "repeats": repeats,
                "load_average": {"start": load_start, "end": os.getloadavg()[0]},
                "rates": runs, "files_250hz": writes}, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
