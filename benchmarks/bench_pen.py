"""Pen benchmarks: the cartridge stamp kernel against its NumPy reference on the default face.

    python benchmarks/bench_pen.py [--quick] [--json OUT]

Times ``simulate.stamp`` and ``simulate.stamp_reference`` on the same 20k stamps of the
default 12-needle cartridge, in the same run, for stamps in random order and stamps in
stroke order (a serpentine raster). Prints medians (and minima) and the speed-up, checks that
both give the same hits (``agree``) and writes JSON (default ``benchmarks/results/pen.json``).
Timings only: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from coverage import Face, Protocol, simulate

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_foundation import machine_info, measure, write_json

STAMPS = 20_000
GAP_TOLERANCE = 0.5   # the default protocol's pen tolerance
RASTER_MM = 1.0       # row and stamp spacing of the stroke-order input


def random_stamps(face: Face, n: int, rng) -> np.ndarray:
    """``(n, 2)`` chart points (mm) uniform over the chart, in random order."""
    lo, hi = face.uv.min(axis=0), face.uv.max(axis=0)
    found = np.empty((0, 2))
    while len(found) < n:
        uv = rng.uniform(lo, hi, (2 * n, 2))
        found = np.concatenate([found, uv[face.locate(uv)[0] >= 0]])
    return found[:n]


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


def agree(a: simulate.StampHits, b: simulate.StampHits) -> bool:
    """Same hits: integer fields equal, float fields within 1e-9 mm (NaN in the same places)."""
    same = all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("stamp", "needle", "fired"))
    return same and all(np.allclose(getattr(a, f), getattr(b, f), rtol=0, atol=1e-9, equal_nan=True)
                        for f in ("uv", "points", "depth_mm", "gap_mm"))


def bench_case(face: Face, name: str, centres: np.ndarray, layout: np.ndarray, repeats: int) -> dict:
    """Kernel and reference timings of one set of stamps, their ratio and agreement."""
    rng = np.random.default_rng(1)
    angles = rng.uniform(0.0, 2 * np.pi, len(centres))
    depth = rng.choice(np.arange(0.5, 1.75, 0.25), len(centres))
    args = (face, centres, angles, depth, layout, GAP_TOLERANCE)
    kernel, hits = measure(lambda: simulate.stamp(*args), repeats)
    reference, ref = measure(lambda: simulate.stamp_reference(*args), max(2, repeats // 2))
    ok = agree(hits, ref)
    if not ok:
        print(f"WARNING: {name}: kernel and reference results disagree", flush=True)
    return {"input": f"{len(centres) // 1000}k stamps x {len(layout)} needles, {name}",
            "kernel": kernel, "reference": reference, "speedup": reference.median_s / kernel.median_s,
            "agree": ok, "fired": int(hits.fired.sum()), "needles": len(hits.fired)}


def table(cases: dict) -> str:
    rows = [f"{'case':<10}{'input':<44}{'kernel ms':>10}{'(min)':>9}{'ref ms':>10}{'(min)':>9}"
            + f"{'speedup':>9}{'agree':>7}{'fired':>9}"]
    for name, c in cases.items():
        rows.append(f"{name:<10}{c['input']:<44}{c['kernel'].median_s * 1e3:10.2f}{c['kernel'].min_s * 1e3:9.2f}"
                    f"{c['reference'].median_s * 1e3:10.1f}{c['reference'].min_s * 1e3:9.1f}"
                    f"{c['speedup']:8.1f}x{c['agree']!s:>7}{c['fired']:9d}")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "pen.json")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    machine = machine_info()
    pen = Protocol.default().pen
    layout = simulate.needle_layout(pen.needles, pen.footprint_diameter_mm, pen.needle_diameter_mm)
    face = Face.default()
    simulate.stamp(face, face.uv[:1], 0.0, 1.0, layout, GAP_TOLERANCE)  # builds the chart grid and frames

    print(f"pen stamp kernel vs NumPy reference ({'quick' if args.quick else 'full'}: medians of {repeats} "
          f"kernel and {max(2, repeats // 2)} reference runs after a warm-up; gap tolerance {GAP_TOLERANCE})")
    print(f"{machine['cpu']}, {machine['cpu_count']} cpus, Python {machine['python']}\n", flush=True)
    cases = {"random": bench_case(face, "random order", random_stamps(face, STAMPS, np.random.default_rng(0)),
                                  layout, repeats),
             "strokes": bench_case(face, f"{RASTER_MM:g} mm raster", raster_stamps(face, STAMPS), layout, repeats)}
    print(table(cases), "\n")

    doc = {"machine": machine, "mode": "quick" if args.quick else "full", "repeats": repeats,
           "gap_tolerance": GAP_TOLERANCE,
           "kernels": {name: {"input": c["input"], "kernel": c["kernel"].as_dict("ms"),
                              "reference": c["reference"].as_dict("ms"), "agree": c["agree"],
                              "fired": c["fired"], "needles": c["needles"]} for name, c in cases.items()},
           "kernel_speedup": {f"pen_stamp_{name}": c["speedup"] for name, c in cases.items()}}
    write_json(doc, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
