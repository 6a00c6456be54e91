"""The README's performance tables, in Markdown, from one bench run's JSON.

    python benchmarks/readme_tables.py BENCH.json

``BENCH.json`` is what ``coverage-planner bench --json OUT`` (a full run, ``make bench``)
wrote. Prints the stage table, the kernel table, the table of every compiled wrapper on the
default plan's own calls, the scaling table and the targets table, in the README's layout,
so that a stop's run replaces the README's tables whole rather than figure by figure.
"""
from __future__ import annotations

import argparse
import json

STAGES = ("load", "chart", "zones", "roller", "pen", "fit", "other", "density", "verify")


def _ratio(x: float) -> str:
    return f"{x:.1f}x" if x < 10 else f"{x:.0f}x"


def stage_rows(doc: dict) -> list[str]:
    faces = doc["stages"]
    default, scan = faces["default"]["stages"], faces["scan"]["stages"]
    rows = ["| stage (s, median) | bundled face, 1 mm | 100k-vertex scan |", "|---|---:|---:|"]
    for name in STAGES:
        rows.append(f"| {name} | {default[name]['median_s']:.2f} | {scan[name]['median_s']:.2f} |")
    rows.append(f"| plan on one thread (the stages above) | {default['plan_one_thread']['median_s']:.2f} | "
                f"{scan['plan_one_thread']['median_s']:.2f} |")
    rows.append(f"| **plan** (`coverage.plan`, 2 threads) | {default['plan']['median_s']:.2f} | "
                f"{scan['plan']['median_s']:.2f} |")
    rows.append(f"| **end to end** (the stages above) | {default['total']['median_s']:.2f} | "
                f"{scan['total']['median_s']:.2f} |")
    return rows


def kernel_rows(doc: dict) -> list[str]:
    rows = ["| kernel | input | kernel ms | NumPy reference ms | speed-up |", "|---|---|---:|---:|---:|"]
    for name, k in doc["kernels"].items():
        rows.append(f"| `{name}` | {k['input']} | {k['kernel']['median_ms']:.2f} | "
                    f"{k['reference']['median_ms']:.1f} | {_ratio(k['speedup'])} |")
    return rows


def plan_kernel_rows(doc: dict) -> list[str]:
    rows = ["| compiled wrapper, on the default plan's own longest call | calls | kernel ms | twin ms | speed-up |",
            "|---|---:|---:|---:|---:|"]
    pairs = doc["plan_kernels"]["pairs"]
    for name, e in sorted(pairs.items(), key=lambda kv: kv[1].get("speedup") or 0.0):
        if "error" in e:
            rows.append(f"| `{name}` | {e['calls']} | failed: {e['error']} | | |")
            continue
        rows.append(f"| `{name}` | {e['calls']} | {e['kernel_ms']:.3f} | {e['reference_ms']:.2f} | "
                    f"{_ratio(e['speedup'])} |")
    return rows


def scaling_rows(doc: dict) -> list[str]:
    rows = ["| scaling | sizes | seconds (median) | growth exponent |", "|---|---|---|---:|"]
    units = {"resolution": "triangles", "density": "target punctures/cm2"}
    for key, s in doc["scaling"].items():
        sizes = ", ".join(f"{n:,.0f}" for n in s["n"])
        secs = ", ".join(f"{t:.2f}" for t in s["median_s"])
        rows.append(f"| {key}: {s['what']} | {sizes} {units.get(key, s.get('unit', ''))} | {secs} | "
                    f"{s['exponent']:.2f} |")
    return rows


def target_rows(doc: dict, label: str) -> list[str]:
    rows = [f"| target | limit | measured ({label}) | met |", "|---|---:|---:|---|"]
    for t in doc["targets"].values():
        unit = t["unit"]
        limit = "-" if t["limit"] is None else f"{t['limit']:g} {unit}"
        value = t["measured"]
        measured = f"{value:.2f} {unit}" if unit != "ms" else f"{value:.1f} {unit}"
        met = "-" if t["met"] is None else ("yes" if t["met"] else "no")
        what = t["what"]
        if t.get("slowest"):
            what += f" (`{t['slowest']}`)"
        rows.append(f"| {what} | {limit} | {measured} | {met} |")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="a full bench run's JSON (coverage-planner bench --json OUT)")
    parser.add_argument("--label", default="this run", help="the targets table's column label")
    args = parser.parse_args(argv)
    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)
    for block in (stage_rows(doc), kernel_rows(doc), plan_kernel_rows(doc), scaling_rows(doc),
                  target_rows(doc, args.label)):
        print("\n".join(block))
        print()


if __name__ == "__main__":
    main()
