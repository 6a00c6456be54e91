"""Pen benchmarks: the cartridge stamp kernel against its NumPy reference on the default face,
for stamps in random order (the suite's ``stamp`` case, ``coverage.bench``) and in stroke order
(a serpentine raster, as strokes stamp).

    python benchmarks/bench_pen.py [--quick] [--json OUT]

Prints medians and the speed-up, checks that both give the same hits (``agree``) and writes
JSON (default ``benchmarks/results/pen.json``). Timings only: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from coverage import Face, bench

STAMPS = 20_000
RASTER_MM = 1.0       # row and stamp spacing of the stroke-order input
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "pen.json"


def raster_stamps(face: Face, n: int, step_mm: float = RASTER_MM) -> np.ndarray:
    """The first ``n`` on-chart points (mm) of a serpentine raster: stamps in stroke order."""
    lo, hi = face.uv.min(axis=0), face.uv.max(axis=0)
    u = np.arange(lo[0], hi[0], step_mm)
    rows = [np.column_stack([u[::(-1) ** i], np.full(len(u), v)])
            for i, v in enumerate(np.arange(lo[1], hi[1], step_mm))]
    uv = np.concatenate(rows)
    uv = uv[face.locate(uv)[0] >= 0]
    if len(uv) < n:
        raise ValueError(f"a {step_mm} mm raster holds {len(uv)} stamps on the chart, fewer than {n}")
    return uv[:n]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    machine = bench.machine_info()
    limiter, machine["blas"] = bench.blas_one_thread()
    with limiter:
        face = Face.default()
        cases = [bench.stamp_case(face, bench.on_chart_points(face, STAMPS, np.random.default_rng(0)), "random order",
                                  "random"),
                 bench.stamp_case(face, raster_stamps(face, STAMPS), f"{RASTER_MM:g} mm raster", "strokes")]
        kernels = {case.name: bench.time_case(case, repeats, max(2, repeats // 2)) for case in cases}
    doc = {"machine": machine, "mode": "quick" if args.quick else "full", "repeats": repeats,
           "kernels": bench.kernels_in_ms(kernels),
           "kernel_speedup": {f"pen_stamp_{name}": k["speedup"] for name, k in kernels.items()}}
    print(f"pen stamp kernel vs NumPy reference ({doc['mode']}: medians of {repeats} kernel runs after a warm-up)")
    print(bench.kernel_table(doc))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    bench.write_json(bench.plain(doc), args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
