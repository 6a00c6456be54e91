"""Roller benchmarks: plan time and where it goes, the drum kernel against its reference,
and scaling with face resolution. Not a test: it prints medians and writes JSON.

    python benchmarks/bench_roller.py [--quick] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

import coverage
from coverage import Face, Protocol, ZoneMap, simulate
from coverage import plan as plan_module

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_foundation import measure  # noqa: E402  (the shared timing helper)


def timed(fn, repeats: int):
    """Median and min seconds of ``fn()`` (after a warm-up) as a dict, and the warm-up result."""
    timing, result = measure(fn, repeats)
    return timing.as_dict(), result


def stages(face, protocol, repeats):
    """Seconds per stage of a roller plan on a built face: zones, passes, strokes, simulation, density."""
    out = {}
    out["zones"], zones = timed(lambda: ZoneMap.default(face, protocol), repeats)
    out["passes"], (runs, _) = timed(lambda: plan_module.roller_runs(face, zones, protocol), repeats)
    out["strokes"], (strokes, _, packed, drums) = timed(
        lambda: plan_module.roller_strokes(face, zones, protocol, runs), repeats)
    out["simulation"], _ = timed(lambda: plan_module._simulate_runs(packed, drums), repeats)
    full = plan_module.plan(face, protocol, zones)
    out["density"], _ = timed(lambda: coverage.density(face, zones, full.puncture_points), repeats)
    out["plan_total"], result = timed(lambda: plan_module.plan(face, protocol, zones), repeats)
    return out, result, packed, drums


def kernel_ratio(packed, drums, repeats):
    """The drum kernel against its NumPy reference on the plan's own runs (largest drum group)."""
    drum, _, runs = max(plan_module.drum_groups(packed, drums), key=lambda g: len(g[2].s))
    kernel, got = timed(lambda: simulate.roll(runs, drum), repeats)
    reference, ref = timed(lambda: simulate.roll_reference(runs, drum), max(2, repeats // 2))
    agree = bool(np.array_equal(got.run, ref.run) and np.allclose(got.uv, ref.uv, atol=1e-9))
    return {"runs": int(len(runs.start) - 1), "punctures": int(len(got.uv)), "kernel": kernel,
            "reference": reference, "speedup": reference["median_s"] / kernel["median_s"], "agree": agree}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, two resolutions")
    parser.add_argument("--json", default=str(ROOT / "results" / "roller.json"))
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5
    protocol = Protocol.default()

    face = Face.default()
    face.uv, face.curvature(20.0)  # build the shared chart and the drum-scale curvature first
    per_stage, result, packed, drums = stages(face, protocol, repeats)
    ratio = kernel_ratio(packed, drums, repeats * 4)

    resolutions = []
    for edge in ((2.0, 1.0) if args.quick else (2.0, 1.0, 0.7)):
        f = Face.default(edge)
        f.uv, f.curvature(20.0)
        t, r = timed(lambda: plan_module.plan(f, protocol), max(1, repeats // 2))
        resolutions.append({"edge_mm": edge, "triangles": int(len(f.faces)), "plan": t,
                            "strokes": len(r.strokes), "punctures": int(len(r.puncture_points))})
    tri = np.array([r["triangles"] for r in resolutions], float)
    sec = np.array([r["plan"]["median_s"] for r in resolutions])
    exponent = float(np.polyfit(np.log(tri), np.log(sec), 1)[0]) if len(tri) > 1 else float("nan")

    print(f"roller benchmarks ({'quick' if args.quick else 'full'}; medians of {repeats} after a warm-up)")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}\n")
    print(f"{'stage (default face, 1 mm)':<32}{'median s':>10}{'min s':>10}")
    for name, t in per_stage.items():
        print(f"{name:<32}{t['median_s']:10.3f}{t['min_s']:10.3f}")
    print(f"\nplan: {len(result.strokes)} strokes, {len(result.puncture_points)} punctures, "
          f"session {result.time_s:.0f} s")
    print(f"\ndrum kernel on the plan's runs ({ratio['runs']} runs, {ratio['punctures']} punctures): "
          f"{ratio['kernel']['median_s'] * 1e3:.2f} ms vs reference {ratio['reference']['median_s'] * 1e3:.1f} ms "
          f"= {ratio['speedup']:.0f}x (agree: {ratio['agree']})\n")
    print(f"{'edge mm':>8}{'triangles':>11}{'plan s':>9}{'strokes':>9}{'punctures':>11}")
    for r in resolutions:
        print(f"{r['edge_mm']:8.1f}{r['triangles']:11d}{r['plan']['median_s']:9.2f}{r['strokes']:9d}{r['punctures']:11d}")
    print(f"growth exponent of plan time in triangles: {exponent:.2f}")

    doc = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                       "coverage": coverage.__version__, "numpy": np.__version__},
           "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
           "stages_s": per_stage, "kernel_speedup": {"drum_roll": ratio["speedup"]}, "drum_kernel": ratio,
           "resolution": resolutions, "plan_time_exponent": exponent,
           "plan": {"strokes": len(result.strokes), "punctures": int(len(result.puncture_points)),
                    "session_s": result.time_s}}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
