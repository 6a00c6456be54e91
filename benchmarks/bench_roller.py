"""Roller benchmarks: the roller-only plan of the default face stage by stage, the drum kernel
against its reference on that plan's runs, and the roller-only plan against face resolution.

    python benchmarks/bench_roller.py [--quick] [--json OUT]

Not a test: it prints medians and writes JSON (default ``benchmarks/results/roller.json``).
The timing, kernel and scaling helpers are the suite's (``coverage.bench``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import coverage
from coverage import Face, Protocol, ZoneMap, bench

plan_mod = sys.modules["coverage.plan"]
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "roller.json"


def stages(face, protocol, repeats):
    """Seconds per stage of a roller plan on a built face: zones, passes, strokes, simulation, density."""
    out = {}
    out["zones"], zones = bench.measure(lambda: ZoneMap.default(face, protocol), repeats)
    out["passes"], (runs, _) = bench.measure(lambda: plan_mod.roller_runs(face, zones, protocol), repeats)
    out["strokes"], (_, _, packed, drums) = bench.measure(
        lambda: plan_mod.roller_strokes(face, zones, protocol, runs), repeats)
    out["simulation"], _ = bench.measure(lambda: plan_mod._simulate_runs(packed, drums), repeats)
    out["plan_total"], plan = bench.measure(lambda: plan_mod.plan(face, protocol, zones, device="roller"), repeats)
    out["density"], _ = bench.measure(lambda: coverage.density(face, zones, plan.puncture_points), repeats)
    return out, plan, packed, drums


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, two resolutions")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5
    machine = bench.machine_info()
    limiter, machine["blas"] = bench.blas_one_thread()
    with limiter:
        face = Face.default()
        face.curvature(20.0)  # the drum-scale curvature, shared by every stage below
        per_stage, plan, packed, drums = stages(face, Protocol.default(), repeats)
        roll = bench.time_case(bench.roll_case(packed, drums), repeats * 4, max(2, repeats // 2))
        cfg = dataclasses.replace(bench.config(args.quick, max(1, repeats // 2)), scaling_zones=None,
                                  scaling_device="roller")
        points = [bench.scaling_point(cfg, edge, 1.0) for edge in ((2.0, 1.0) if args.quick else (2.0, 1.0, 0.7))]
    series = bench.scaling_series("load + chart + the roller-only plan, cold, vs mesh triangles", "triangles", points,
                           "triangles", "total")

    print(f"roller benchmarks ({'quick' if args.quick else 'full'}; medians of {repeats} after a warm-up)")
    print(f"{machine['cpu']}, {machine['cpu_count']} cpus, Python {machine['python']}\n")
    print(f"{'stage (default face, 1 mm)':<32}{'median s':>10}{'min s':>10}")
    for name, t in per_stage.items():
        print(f"{name:<32}{t.median_s:10.3f}{t.min_s:10.3f}")
    print(f"\nplan: {len(plan.strokes)} strokes, {len(plan.puncture_points)} punctures, session {plan.time_s:.0f} s\n")
    doc = {"machine": machine, "mode": "quick" if args.quick else "full", "repeats": repeats,
           "stages": per_stage, "kernels": bench.kernels_in_ms({"roll": roll}),
           "kernel_speedup": {"roll": roll["speedup"]}, "scaling": {"resolution": series},
           "plan": {"strokes": len(plan.strokes), "punctures": len(plan.puncture_points), "session_s": plan.time_s}}
    print(bench.kernel_table(doc), "\n")
    print(bench.scaling_table(bench.plain(doc)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    bench.write_json(bench.plain(doc), args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
