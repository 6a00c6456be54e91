"""Foundation benchmarks: cold start, compiled kernels vs NumPy references, scaling.

    python benchmarks/bench_foundation.py [--quick] [--json OUT]

Prints tables of medians (and minima) and writes them as JSON (default
``benchmarks/results/foundation.json``). Timings only: nothing here asserts a speed.
Every kernel is checked against its reference on the timed inputs and the result is
recorded as ``agree``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import coverage
from coverage import Face, Protocol, ZoneMap, lifting, proximity

dens = importlib.import_module("coverage.density")  # `coverage.density` is the public function

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "foundation.json"
RESOLUTIONS_MM = (2.0, 1.0, 0.7)
QUICK_CROP = 120  # texels a side of the window_sums crop in --quick mode

# Run in a fresh interpreter, so that no lru_cache is warm: seconds of each cold stage.
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


# --- timing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Median and minimum of repeated measurements (seconds)."""

    median_s: float
    min_s: float

    def as_dict(self, unit: str = "s") -> dict:
        scale = 1e3 if unit == "ms" else 1.0
        return {f"median_{unit}": self.median_s * scale, f"min_{unit}": self.min_s * scale}


def summarise(seconds: list) -> Timing:
    """Median and minimum of a list of durations (seconds)."""
    return Timing(statistics.median(seconds), min(seconds))


def measure(fn, repeats: int) -> tuple[Timing, object]:
    """Time ``fn()`` ``repeats`` times after one warm-up call; returns (timing, warm-up result)."""
    result = fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return summarise(seconds), result


def growth_exponent(n, seconds) -> float:
    """Slope of log(time) against log(size): 1 is linear growth."""
    return float(np.polyfit(np.log(np.asarray(n, dtype=float)), np.log(np.asarray(seconds)), 1)[0])


# --- cold start (fresh interpreters) -----------------------------------------------------

def run_cold(edge_mm: float, stages: bool) -> dict:
    """One fresh interpreter: import, Face.default(edge_mm) and optionally the later stages (s)."""
    args = [sys.executable, "-c", COLD_SCRIPT, str(edge_mm), "stages" if stages else "face"]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_runs(edge_mm: float, stages: bool, repeats: int) -> tuple[dict, dict]:
    """Repeated cold runs after one warm-up run: (stage -> Timing, mesh sizes)."""
    run_cold(edge_mm, stages)
    runs = [run_cold(edge_mm, stages) for _ in range(repeats)]
    keys = [key for key, _ in STAGES if key in runs[0]]
    sizes = {key: runs[0][key] for key in ("subdivisions", "n_vertices", "n_triangles")}
    return {key: summarise([run[key] for run in runs]) for key in keys}, sizes


def bench_cold(repeats: int) -> tuple[dict, list]:
    """Cold stage timings at the default resolution, and Face.default cold time per resolution."""
    stages, resolution = {}, []
    for edge_mm in RESOLUTIONS_MM:
        timings, sizes = cold_runs(edge_mm, edge_mm == 1.0, repeats)
        if edge_mm == 1.0:
            stages = timings
        resolution.append({"edge_mm": edge_mm, **sizes, **timings["face_s"].as_dict()})
    return stages, resolution


# --- inputs ------------------------------------------------------------------------------

def chart_points(face: Face, n: int, rng) -> np.ndarray:
    """``(n, 2)`` chart points (mm) uniform over the chart's bounding box."""
    return rng.uniform(face.uv.min(axis=0), face.uv.max(axis=0), (n, 2))


def surface_points(face: Face, n: int, rng, noise_mm: float = 0.0) -> np.ndarray:
    """``(n, 3)`` points (mm): random chart points lifted onto the face, plus N(0, noise_mm)."""
    found = np.empty((0, 3))
    while len(found) < n:
        lifted = face.lift(chart_points(face, 2 * n, rng))
        found = np.concatenate([found, lifted.points[lifted.inside]])
    return found[:n] + rng.normal(0.0, noise_mm, (n, 3))


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


# --- kernels vs references ---------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One kernel and its reference on the same input, and how to compare their results."""

    name: str
    size: str
    kernel: object     # () -> result
    reference: object  # () -> result
    agree: object      # (kernel result, reference result) -> bool


def _inside_close(a: np.ndarray, b: np.ndarray, inside: np.ndarray) -> bool:
    return bool(np.allclose(a[inside], b[inside]))


def locate_case(face: Face) -> Case:
    """Chart point location of 100k random chart points (same grid for both)."""
    query = chart_points(face, 100_000, np.random.default_rng(0))
    args = (face.chart_grid, query)
    return Case("locate", "100k points", lambda: lifting.locate(*args), lambda: lifting.locate_reference(*args),
                lambda k, r: bool(np.array_equal(k[0], r[0])))


def lift_case(face: Face) -> Case:
    """face.lift of 100k chart points vs locate + interpolate (positions, unit normals) in NumPy."""
    query = chart_points(face, 100_000, np.random.default_rng(0))

    def reference():
        tri, bary = lifting.locate_reference(face.chart_grid, query)
        points = lifting.interpolate_reference(face.vertices, face.faces, tri, bary)
        normals = lifting.interpolate_reference(face.normals, face.faces, tri, bary, normalize=True)
        return tri, points, normals

    def agree(k, r):
        inside = r[0] >= 0
        return bool(np.array_equal(k.tri, r[0]) and _inside_close(k.points, r[1], inside)
                    and _inside_close(k.normals, r[2], inside))

    return Case("lift", "100k points", lambda: face.lift(query), reference, agree)


def closest_case(face: Face) -> Case:
    """Closest surface points of 20k points scattered N(0, 1 mm) about the face."""
    query = surface_points(face, 20_000, np.random.default_rng(0), noise_mm=1.0)

    def agree(k, r):
        # ties between triangles may pick different ids; the distance and the point may not differ
        points = [np.einsum("kj,kjd->kd", bary, face.vertices[face.faces[tri]]) for tri, bary, _ in (k, r)]
        return bool(np.allclose(k[2], r[2]) and np.allclose(*points))

    return Case("closest_points", "20k points", lambda: proximity.closest_points(face.surface_grid, query),
                lambda: proximity.closest_points_reference(face.vertices, face.faces, query), agree)


def splat_case(face: Face, grid) -> Case:
    """Splat 200k random chart points into a grid of the texel grid's shape."""
    uv = chart_points(face, 200_000, np.random.default_rng(0))
    args = (uv, grid.origin, grid.cell_mm, grid.shape)
    return Case("splat", f"200k points, {grid.shape[0]}x{grid.shape[1]} grid",
                lambda: dens.splat(*args), lambda: dens.splat_reference(*args),
                lambda k, r: bool(np.allclose(k[0], r[0]) and k[1] == r[1]))


def window_sums_case(grid, quick: bool) -> Case:
    """Window sums of a Poisson count grid over the texel grid's windows (a central crop if quick)."""
    h, w = grid.shape
    rows, cols = slice(None), slice(None)
    if quick:
        r0, c0 = (h - QUICK_CROP) // 2, (w - QUICK_CROP) // 2
        rows, cols = slice(r0, r0 + QUICK_CROP), slice(c0, c0 + QUICK_CROP)
    half_u, half_v, mask = grid.half_u[rows, cols], grid.half_v[rows, cols], grid.treatable[rows, cols]
    values = np.random.default_rng(0).poisson(2.0, mask.shape).astype(np.float64)
    args = (values, half_u, half_v, mask)
    size = f"{mask.shape[0]}x{mask.shape[1]} texels" + (", quick crop" if quick else "")
    return Case("window_sums", size, lambda: dens.window_sums(*args), lambda: dens.window_sums_reference(*args),
                lambda k, r: bool(np.allclose(k, r)))


def merge_case(face: Face, quick: bool) -> Case:
    """Channel merging of clustered punctures: 2000 surface centres, each puncture N(0, 0.2 mm) about one."""
    n = 5_000 if quick else 20_000
    rng = np.random.default_rng(0)
    centres = surface_points(face, 2_000, rng)
    points = centres[rng.integers(0, len(centres), n)] + rng.normal(0.0, 0.2, (n, 3))
    radius = Protocol.default().pen.needle_diameter_mm
    return Case("merge_channels", f"{n // 1000}k punctures, r = {radius} mm",
                lambda: dens.merge_channels(points, radius), lambda: dens.merge_channels_reference(points, radius),
                lambda k, r: bool(np.array_equal(k, r)))


def bench_kernels(face: Face, grid, quick: bool, repeats: int) -> dict:
    """name -> kernel and reference timings (ms), speed ratio and agreement."""
    cases = [locate_case(face), lift_case(face), closest_case(face), splat_case(face, grid),
             window_sums_case(grid, quick), merge_case(face, quick)]
    out = {}
    for case in cases:
        kernel, k_result = measure(case.kernel, repeats)
        reference, r_result = measure(case.reference, repeats)
        agree = case.agree(k_result, r_result)
        if not agree:
            print(f"WARNING: {case.name}: kernel and reference results disagree", flush=True)
        out[case.name] = {"input": case.size, "kernel": kernel, "reference": reference, "agree": agree,
                          "speedup": reference.median_s / kernel.median_s}
    return out


# --- scaling -----------------------------------------------------------------------------

def scaling_series(sizes, unit: str, make_input, run, repeats: int) -> dict:
    """Median and min time (s) of ``run(make_input(n))`` per size n (counted in ``unit``); growth exponent."""
    timings = []
    for n in sizes:
        data = make_input(n)
        timings.append(measure(lambda: run(data), repeats)[0])
    medians = [t.median_s for t in timings]
    return {"n": list(sizes), "unit": unit, "median_s": medians, "min_s": [t.min_s for t in timings],
            "exponent": growth_exponent(sizes, medians)}


def bench_scaling(face: Face, zones: ZoneMap, grid, repeats: int) -> dict:
    """Time vs size of locate, closest_points and the density map.

    ``density`` is the call as a user makes it (it builds the texel grid, ~constant time);
    ``density_given_grid`` passes the prebuilt grid, so only the per-puncture work remains.
    """
    def rng():
        return np.random.default_rng(0)

    def punctures(n):
        return treatable_punctures(face, zones, n, rng())

    densities = (10_000, 50_000, 200_000)
    return {
        "locate": scaling_series(
            (10_000, 100_000, 1_000_000), "points", lambda n: chart_points(face, n, rng()),
            lambda q: lifting.locate(face.chart_grid, q), repeats),
        "closest_points": scaling_series(
            (10_000, 100_000), "points", lambda n: surface_points(face, n, rng(), noise_mm=1.0),
            lambda q: proximity.closest_points(face.surface_grid, q), repeats),
        "density": scaling_series(densities, "punctures", punctures,
                                  lambda p: coverage.density(face, zones, p), repeats),
        "density_given_grid": scaling_series(densities, "punctures", punctures,
                                             lambda p: coverage.density(face, zones, p, grid=grid), repeats),
    }


def mesh_resolution_scaling(repeats: int) -> dict:
    """Lifting 100k chart points and closest points of 20k points at three mesh resolutions."""
    faces = {len(f.faces): f for f in (Face.default(edge) for edge in (2.0, 1.0, 0.7))}
    sizes = sorted(faces)

    def rng():
        return np.random.default_rng(0)

    return {
        "lift_vs_mesh": scaling_series(
            sizes, "triangles", lambda n: (faces[n], chart_points(faces[n], 100_000, rng())),
            lambda a: a[0].lift(a[1]), repeats),
        "closest_points_vs_mesh": scaling_series(
            sizes, "triangles", lambda n: (faces[n], surface_points(faces[n], 20_000, rng(), noise_mm=1.0)),
            lambda a: proximity.closest_points(a[0].surface_grid, a[1]), repeats),
    }


def resolution_scaling(resolution: list) -> dict:
    """Face.default cold time (s) vs triangle count, and its growth exponent."""
    n = [row["n_triangles"] for row in resolution]
    medians = [row["median_s"] for row in resolution]
    return {"n": n, "unit": "triangles", "median_s": medians, "min_s": [row["min_s"] for row in resolution],
            "exponent": growth_exponent(n, medians)}


# --- machine and output ------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info() -> dict:
    """Platform, CPU, Python and library versions, time and command line of this run."""
    versions = {name: importlib.metadata.version(name) for name in ("numpy", "scipy", "shapely", "trimesh", "Cython")}
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "versions": {**versions, "coverage": coverage.__version__},
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv])}


def to_json(machine: dict, mode: str, repeats: int, stages: dict, resolution: list, kernels: dict,
            scaling: dict) -> dict:
    """The JSON document of one run (seconds unless a key says ms)."""
    return {
        "machine": machine,
        "mode": mode,
        "repeats": repeats,
        "stages": {key: timing.as_dict() for key, timing in stages.items()},
        "resolution": resolution,
        "kernels": {name: {"input": k["input"], "kernel": k["kernel"].as_dict("ms"),
                           "reference": k["reference"].as_dict("ms"), "agree": k["agree"]}
                    for name, k in kernels.items()},
        "kernel_speedup": {name: k["speedup"] for name, k in kernels.items()},
        "scaling": scaling,
        "targets": {"lift_100k_points_ms": kernels["lift"]["kernel"].median_s * 1e3},
    }


def write_json(doc: dict, path: Path) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(doc, tmp, indent=2)
        tmp.write("\n")
    os.replace(tmp.name, path)


# --- tables ------------------------------------------------------------------------------

def _sizes(series: dict) -> str:
    return ", ".join(f"{n:,}" for n in series["n"]) + " " + series["unit"]


def stage_table(stages: dict) -> str:
    rows = [f"{'cold stage (fresh process, edge 1.0 mm)':<42}{'median s':>10}{'min s':>10}"]
    rows += [f"{label:<42}{stages[key].median_s:10.3f}{stages[key].min_s:10.3f}" for key, label in STAGES]
    return "\n".join(rows)


def resolution_table(resolution: list) -> str:
    rows = [f"{'Face.default(edge_mm)':<24}{'subdiv':>7}{'vertices':>10}{'triangles':>11}{'median s':>10}{'min s':>10}"]
    rows += [f"{row['edge_mm']:<24}{row['subdivisions']:>7}{row['n_vertices']:>10}{row['n_triangles']:>11}"
             f"{row['median_s']:10.3f}{row['min_s']:10.3f}" for row in resolution]
    return "\n".join(rows)


def kernel_table(kernels: dict) -> str:
    rows = [f"{'kernel':<16}{'input':<36}{'kernel ms':>10}{'(min)':>9}{'ref ms':>10}{'(min)':>9}"
            f"{'speedup':>9}{'agree':>7}"]
    for name, k in kernels.items():
        rows.append(f"{name:<16}{k['input']:<36}{k['kernel'].median_s * 1e3:10.2f}{k['kernel'].min_s * 1e3:9.2f}"
                    f"{k['reference'].median_s * 1e3:10.1f}{k['reference'].min_s * 1e3:9.1f}"
                    f"{k['speedup']:8.1f}x{str(k['agree']):>7}")
    return "\n".join(rows)


def scaling_table(scaling: dict) -> str:
    rows = [f"{'scaling':<24}{'sizes':<40}{'median s':<28}{'exponent':>9}"]
    for name, s in scaling.items():
        rows.append(f"{name:<24}{_sizes(s):<40}{', '.join(f'{t:.4f}' for t in s['median_s']):<28}"
                    f"{s['exponent']:9.2f}")
    return "\n".join(rows)


def markdown(kernels: dict, stages: dict, scaling: dict) -> str:
    """README tables: kernels vs references, cold stages and growth exponents (medians)."""
    rows = ["| kernel | kernel ms | reference ms | speedup |", "|---|---:|---:|---:|"]
    rows += [f"| {name} ({k['input']}) | {k['kernel'].median_s * 1e3:.2f} | {k['reference'].median_s * 1e3:.1f} "
             f"| {k['speedup']:.0f}x |" for name, k in kernels.items()]
    rows += ["", "| cold stage | median s |", "|---|---:|"]
    rows += [f"| {label} | {stages[key].median_s:.3f} |" for key, label in STAGES]
    rows += ["", "| scaling | sizes | exponent |", "|---|---|---:|"]
    rows += [f"| {name} | {_sizes(s)} | {s['exponent']:.2f} |" for name, s in scaling.items()]
    return "\n".join(rows)


# --- main --------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats and smaller reference inputs (< 1 min)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output file (default {DEFAULT_JSON})")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    repeats = 3 if args.quick else 5
    mode = "quick" if args.quick else "full"
    machine = machine_info()
    print(f"coverage foundation benchmarks ({mode}: {repeats} repeats after a warm-up; median and min)")
    print(f"{machine['cpu']}, {machine['cpu_count']} cpus, Python {machine['python']}, {machine['platform']}\n",
          flush=True)

    stages, resolution = bench_cold(repeats)
    print(stage_table(stages), "\n", flush=True)
    print(resolution_table(resolution), "\n", flush=True)

    face = Face.default()
    zones = ZoneMap.default(face)
    grid = dens.texel_grid(zones)
    kernels = bench_kernels(face, grid, args.quick, repeats)
    print(kernel_table(kernels), "\n", flush=True)

    scaling = {**bench_scaling(face, zones, grid, repeats), **mesh_resolution_scaling(repeats),
               "face_default": resolution_scaling(resolution)}
    print(scaling_table(scaling), "\n")
    lift_ms = kernels["lift"]["kernel"].median_s * 1e3
    print(f"lifting target: face.lift of 100k chart points takes {lift_ms:.1f} ms (median)\n")

    print(markdown(kernels, stages, scaling), "\n")
    write_json(to_json(machine, mode, repeats, stages, resolution, kernels, scaling), args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
