"""Foundation benchmarks: cold start in fresh interpreters, the compiled kernels against their
NumPy references, and how the kernels scale with input size and mesh resolution.

    python benchmarks/bench_foundation.py [--quick] [--json OUT]

The kernel table is the suite's (``coverage.bench``; the drum kernel, whose input is a plan's
runs, is in ``coverage-planner bench`` and bench_roller.py). What this script adds: cold
stages, each repeat a fresh interpreter, and the kernels' growth with input size. Prints
tables of medians and writes them as JSON (default ``benchmarks/results/foundation.json``).
Timings only: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import coverage
from coverage import Face, ZoneMap, bench, proximity

dens = sys.modules["coverage.density"]   # `coverage.density` is the public function

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "foundation.json"
RESOLUTIONS_MM = (2.0, 1.0, 0.7)

# Run in a fresh interpreter, so that no cache is warm: seconds of each cold stage.
COLD_SCRIPT = """
import importlib, json, sys, time
t0 = time.perf_counter()
import coverage
t1 = time.perf_counter()
face = coverage.Face.default(edge_mm=float(sys.argv[1]))
t2 = time.perf_counter()
out = {"import_s": t1 - t0, "face_s": t2 - t1, "subdivisions": face.subdivisions,
       "n_vertices": len(face.vertices), "n_triangles": len(face.faces)}
if sys.argv[2] == "stages":
    face.uv, face.chart_grid
    t3 = time.perf_counter()
    zones = coverage.ZoneMap.default(face)
    t4 = time.perf_counter()
    importlib.import_module("coverage.density").texel_grid(zones)
    t5 = time.perf_counter()
    out.update(chart_s=t3 - t2, zones_s=t4 - t3, texel_grid_s=t5 - t4)
print(json.dumps(out))
"""
STAGES = (("import_s", "import coverage"), ("face_s", "Face.default()"),
          ("chart_s", "chart (face.uv + chart grid)"), ("zones_s", "ZoneMap.default(face)"),
          ("texel_grid_s", "density texel_grid(zones)"))


# --- cold start (fresh interpreters) -----------------------------------------------------

def run_cold(edge_mm: float, stages: bool) -> dict:
    """One fresh interpreter (BLAS on one thread, as the suite runs): import, Face.default(edge_mm)
    and optionally the later stages (s)."""
    args = [sys.executable, "-c", COLD_SCRIPT, str(edge_mm), "stages" if stages else "face"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_cold(repeats: int) -> tuple[dict, list]:
    """Cold stage timings at 1 mm, and Face.default cold time per resolution (after one discarded run)."""
    stages, resolution = {}, []
    for edge_mm in RESOLUTIONS_MM:
        run_cold(edge_mm, edge_mm == 1.0)
        runs = [run_cold(edge_mm, edge_mm == 1.0) for _ in range(repeats)]
        timings = {key: bench.summarise([run[key] for run in runs]) for key, _ in STAGES if key in runs[0]}
        if edge_mm == 1.0:
            stages = timings
        sizes = {key: runs[0][key] for key in ("subdivisions", "n_vertices", "n_triangles")}
        resolution.append({"edge_mm": edge_mm, **sizes, **timings["face_s"].as_dict()})
    return stages, resolution


# --- scaling with input size ---------------------------------------------------------------

def treatable_punctures(face: Face, zones: ZoneMap, n: int, rng) -> np.ndarray:
    """``(n, 3)`` points (mm) uniform over the face's treatable skin (area-weighted)."""
    area = face.triangle_area_mm2
    found = np.empty((0, 3))
    while len(found) < n:
        tri = rng.choice(len(area), 2 * n, p=area / area.sum())
        r1, r2 = np.sqrt(rng.random(2 * n)), rng.random(2 * n)
        bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)
        uv = np.einsum("kj,kjd->kd", bary, face.uv[face.faces[tri]])
        points = np.einsum("kj,kjd->kd", bary, face.vertices[face.faces[tri]])
        found = np.concatenate([found, points[zones.label_at(uv) >= 0]])
    return found[:n]


def size_series(sizes, unit: str, make_input, run, repeats: int) -> dict:
    """Median and min time (s) of ``run(make_input(n))`` per size n (counted in ``unit``); growth exponent."""
    timings = [bench.measure(functools.partial(run, make_input(n)), repeats)[0] for n in sizes]
    medians = [t.median_s for t in timings]
    return {"n": list(sizes), "unit": unit, "median_s": medians, "min_s": [t.min_s for t in timings],
            "exponent": bench.growth_exponent(sizes, medians)}


def bench_scaling(face: Face, zones: ZoneMap, grid, repeats: int) -> dict:
    """Time vs size of locate, closest_points and the density map (``density`` builds the texel
    grid on every call, ~constant; ``density_given_grid`` reuses one), and lifting and closest
    points vs mesh resolution."""
    def rng():
        return np.random.default_rng(0)

    def punctures(n):
        return treatable_punctures(face, zones, n, rng())

    faces = {len(f.faces): f for f in (Face.default(edge) for edge in RESOLUTIONS_MM)}
    densities = (10_000, 50_000, 200_000)
    return {
        "locate": size_series((10_000, 100_000, 1_000_000), "points", lambda n: bench.chart_points(face, n, rng()),
                              lambda q: face.locate(q), repeats),
        "closest_points": size_series((10_000, 100_000), "points",
                                      lambda n: bench.surface_points(face, n, rng(), noise_mm=1.0),
                                      lambda q: proximity.closest_points(face.surface_grid, q), repeats),
        "density": size_series(densities, "punctures", punctures, lambda p: coverage.density(face, zones, p), repeats),
        "density_given_grid": size_series(densities, "punctures", punctures,
                                          lambda p: coverage.density(face, zones, p, grid=grid), repeats),
        "lift_vs_mesh": size_series(sorted(faces), "triangles",
                                    lambda n: (faces[n], bench.chart_points(faces[n], 100_000, rng())),
                                    lambda a: a[0].lift(a[1]), repeats),
        "closest_points_vs_mesh": size_series(
            sorted(faces), "triangles", lambda n: (faces[n], bench.surface_points(faces[n], 20_000, rng(), 1.0)),
            lambda a: proximity.closest_points(a[0].surface_grid, a[1]), repeats),
    }


# --- tables ------------------------------------------------------------------------------

def stage_table(stages: dict, resolution: list) -> str:
    rows = [f"{'cold stage (fresh process, edge 1.0 mm)':<42}{'median s':>10}{'min s':>10}"]
    rows += [f"{label:<42}{stages[key].median_s:10.3f}{stages[key].min_s:10.3f}" for key, label in STAGES]
    rows += ["", f"{'Face.default(edge_mm), cold':<30}{'vertices':>10}{'triangles':>11}{'median s':>10}{'min s':>10}"]
    rows += [f"{row['edge_mm']:<30}{row['n_vertices']:>10}{row['n_triangles']:>11}{row['median_s']:10.3f}"
             f"{row['min_s']:10.3f}" for row in resolution]
    return "\n".join(rows)


def size_table(scaling: dict) -> str:
    rows = [f"{'scaling':<24}{'sizes':<40}{'median s':<28}{'exponent':>9}"]
    for name, s in scaling.items():
        sizes = ", ".join(f"{n:,}" for n in s["n"]) + " " + s["unit"]
        rows.append(f"{name:<24}{sizes:<40}{', '.join(f'{t:.4f}' for t in s['median_s']):<28}{s['exponent']:9.2f}")
    return "\n".join(rows)


# --- main --------------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats and smaller reference inputs (< 1 min)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output file (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    cfg = bench.config(args.quick)
    repeats = 3 if args.quick else 5
    cfg = dataclasses.replace(cfg, kernel_repeats=repeats, reference_repeats=repeats)
    machine = bench.machine_info()
    limiter, machine["blas"] = bench.blas_one_thread()
    print(f"coverage foundation benchmarks ({cfg.mode}: {repeats} repeats; median and min)")
    print(f"{machine['cpu']}, {machine['cpu_count']} cpus, Python {machine['python']}, {machine['platform']}\n",
          flush=True)
    stages, resolution = bench_cold(repeats)
    print(stage_table(stages, resolution), "\n", flush=True)
    with limiter:
        kernels, _ = bench.bench_kernels(cfg, {}, bench.print_progress)
        face = Face.default()
        zones = ZoneMap.default(face)
        scaling = bench_scaling(face, zones, dens.texel_grid(zones), repeats)
    doc = {"machine": machine, "mode": cfg.mode, "repeats": repeats, "cold_stages": stages,
           "cold_face_default": resolution, "kernels": bench.kernels_in_ms(kernels),
           "kernel_speedup": {name: k["speedup"] for name, k in kernels.items()}, "scaling": scaling}
    print(bench.kernel_table(doc), "\n")
    print(size_table(scaling), "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    bench.write_json(bench.plain(doc), args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
