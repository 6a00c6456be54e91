"""Where a plan's time goes on its threads: the start and end of each main step, per thread.

    python benchmarks/timeline.py [--plans P] [--threads N] [--min-ms MS]

Plans the bundled face ``P`` times from a cold start (caches emptied, face and chart built,
as the bench does) with the planner's main steps wrapped, and prints the last plan's steps
in order of their start: the thread (T0 the caller, T1 the pool's), start and end (s from
the plan's start) and duration, those of ``MS`` or more (default 5 ms); then the plan's wall
clock. A step that waits for another thread counts its waiting. The wrappers cost a few
microseconds a call: the plan's total is within noise of an unwrapped one. Timings only.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import threading
import time

STEPS = {
    "coverage.plan": ("_face_parts", "_region_sweeps", "_pen_grid", "_pen_field", "_roller_frames", "_simulate_runs",
                      "_roller_moves", "_roller_runs_made", "_roller_timed", "_pen_strokes_lifted", "_run_path_frames", "_order_pen_items",
                      "_glide_joins", "transit_paths"),
    "coverage.pen_fit": ("_fine_paths", "candidate_stamps", "needle_columns", "fit_layout", "RepairParts", "fit",
                         "round_along", "repair", "_shift", "select"),
    "coverage.pen": ("field_paths", "cap_guard"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=3, help="cold plans, the last printed (3)")
    parser.add_argument("--threads", type=int, help="the plan's threads (default: the cores, at most 2)")
    parser.add_argument("--min-ms", type=float, default=5.0, help="shortest step printed (5 ms)")
    args = parser.parse_args(argv)

    from coverage.face import Face
    from coverage.zones import ZoneMap

    log = []

    def wrapped(label, fn):
        @functools.wraps(fn)
        def step(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                log.append((label, threading.get_ident(), t0, time.perf_counter()))
        return step

    for module, names in STEPS.items():
        mod = importlib.import_module(module)
        for name in names:
            setattr(mod, name, wrapped(name, getattr(mod, name)))
    zone_map = ZoneMap.default.__func__
    ZoneMap.default = classmethod(wrapped("ZoneMap.default", zone_map))
    bench = importlib.import_module("coverage.bench")
    plan_mod = importlib.import_module("coverage.plan")     # the module (coverage.plan is also the function)
    caller = threading.get_ident()
    for _ in range(max(args.plans, 1)):
        bench.clear_caches()
        face = Face.default()
        _ = face.uv, face.chart_grid
        log.clear()
        start = time.perf_counter()
        plan_mod.plan(face, threads=args.threads)
        total = time.perf_counter() - start
    threads = {caller: "T0"}
    print(f"{'thread':<6} {'start s':>8} {'end s':>8} {'ms':>7}  step")
    for label, ident, t0, t1 in sorted(log, key=lambda row: row[2]):
        name = threads.setdefault(ident, f"T{len(threads)}")
        if (t1 - t0) * 1e3 >= args.min_ms:
            print(f"{name:<6} {t0 - start:8.3f} {t1 - start:8.3f} {(t1 - t0) * 1e3:7.1f}  {label}")
    print(f"plan {total:.3f} s")


if __name__ == "__main__":
    main()
