"""Plan benchmarks: the end-to-end part of the suite (``coverage.bench``): the auto plan stage
by stage on the bundled face and on a synthetic depth-camera scan, and the planned treatment
time against the physical minimum.

    python benchmarks/bench_plan.py [--quick] [--repeats N] [--json OUT] [--scan-vertices N | --scan-pitch MM]

Every run starts from empty caches (see ``coverage.bench``). Writes JSON (default
``benchmarks/results/plan.json``). Timings only: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from coverage import bench

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "plan.json"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each face instead of 3")
    parser.add_argument("--repeats", type=int, metavar="N", help="runs of each face")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output file (default {DEFAULT_JSON})")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scan-vertices", type=int, default=100_000, help="vertices of the synthetic scan (100k)")
    size.add_argument("--scan-pitch", type=float, help="pixel pitch (mm) of the synthetic scan instead")
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(bench.config(args.quick, args.repeats), parts=("faces",), budget_s=None,
                              scan_vertices=args.scan_vertices, scan_pitch_mm=args.scan_pitch)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = bench.run(args.quick, cfg=cfg, progress=bench.print_progress)
    print(bench.report(doc))
    bench.write_json(doc, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
