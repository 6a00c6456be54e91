"""Plans' densities in exact 1 cm² skin squares, against each zone's cap: a check beside the verifier.

    python benchmarks/exact_windows.py [--faces bundled,m0,m1,m2,m3,mm1] [--plan PLAN.json]
                                       [--sub N] [--cell MM] [--min-treatable F]

The planner and the verifier read density on the 0.5 mm texel grid: each texel's window is
a near-square block of whole texels whose skin area is nearest 1 cm² (``coverage.density``).
This script measures the same definition without the texels, as an independent check of how
far the grid's placement and whole-texel sizes move a window's count. Around every face vertex
in a zone (its chart point), a chart square whose side is found by bisection so that it
covers exactly 1 cm² of skin (a summed-area table of the skin on a ``--cell`` mm raster, the
skin sampled ``--sub`` x ``--sub`` per triangle); density = the punctures in the square
(chart positions) / the treatable skin in it, against the cap of the centre's zone. Squares
at least ``--min-treatable`` treatable are counted (default 0.5). Prints, per plan, the
highest squares and how many are over their cap. Timings and figures only: nothing here is
a rule of the product (the verifier's windows are).

``--faces``: the bundled face (``bundled``) and synthetic scans of it
(``coverage.synthetic.make_scan``: ``m<seed>`` in metres, ``mm<seed>`` in millimetres),
each planned with the default protocol; ``--plan`` reads a saved plan instead (of the bundled
face, or of the face ``coverage.load_plan`` rebuilds).
"""
from __future__ import annotations

import argparse
import re
import sys

import numpy as np
from scipy.spatial import cKDTree

SKIN_MM2 = 100.0     # 1 cm²


def skin_raster(face, zones, sub: int, cell_mm: float):
    """Skin and treatable skin per raster cell of the chart ``(origin, skin, treatable)``: each
    triangle sampled on an ``sub`` x ``sub`` barycentric grid (the midpoints of its
    sub-triangles' centroids), each sample carrying an equal share of the triangle's skin
    area; treatable where the sample's chart point is in a zone and its triangle observed."""
    faces, uv = face.faces, face.uv
    # barycentric centroids of the sub x sub subdivision (sub^2 small triangles)
    pts = []
    for i in range(sub):
        for j in range(sub - i):
            pts.append(((i + 1 / 3) / sub, (j + 1 / 3) / sub))
            if i + j < sub - 1:
                pts.append(((i + 2 / 3) / sub, (j + 2 / 3) / sub))
    bary = np.array([(a, b, 1.0 - a - b) for a, b in pts])
    corners = uv[faces]                                           # (m, 3, 2)
    samples = np.einsum("sk,mkd->msd", bary, corners).reshape(-1, 2)
    weight = np.repeat(face.triangle_area_mm2 / len(bary), len(bary))
    tri = np.repeat(np.arange(len(faces)), len(bary))
    treat = (zones.label_at(samples) >= 0) & face.treatable_triangles[tri]
    origin = uv.min(axis=0) - 20.0
    shape = (np.ceil((uv.max(axis=0) + 20.0 - origin) / cell_mm).astype(int))[::-1]     # (rows, cols)
    ij = np.floor((samples - origin) / cell_mm).astype(int)
    flat = ij[:, 1] * shape[1] + ij[:, 0]
    skin = np.bincount(flat, weight, minlength=shape[0] * shape[1]).reshape(shape)
    treated = np.bincount(flat, weight * treat, minlength=shape[0] * shape[1]).reshape(shape)
    return origin, skin, treated


def _summed(a: np.ndarray) -> np.ndarray:
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    s[1:, 1:] = a.cumsum(axis=0).cumsum(axis=1)
    return s


def _box(s: np.ndarray, origin, cell_mm: float, centres: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Sums of a summed-area table over the cells of each square (its sides snapped to cells)."""
    rows, cols = s.shape[0] - 1, s.shape[1] - 1
    lo = np.rint((centres - half[:, None] - origin) / cell_mm).astype(int)
    hi = np.rint((centres + half[:, None] - origin) / cell_mm).astype(int)
    lo = np.clip(lo, 0, [cols, rows])
    hi = np.clip(hi, 0, [cols, rows])
    return s[hi[:, 1], hi[:, 0]] - s[lo[:, 1], hi[:, 0]] - s[hi[:, 1], lo[:, 0]] + s[lo[:, 1], lo[:, 0]]


def exact_squares(plan, sub: int = 6, cell_mm: float = 0.1) -> dict:
    """Per zone centre (every face vertex in a zone): the square's half side (chart mm),
    treatable share, puncture count, density (/cm²) and ratio to its zone's cap, as arrays
    under ``zone`` (index into ``plan.zones.names``), ``half``, ``treatable``, ``count``,
    ``density`` and ``ratio``."""
    face, zones = plan.face, plan.zones
    origin, skin, treated = skin_raster(face, zones, sub, cell_mm)
    s_skin, s_treat = _summed(skin), _summed(treated)
    label = zones.label_at(face.uv)
    centres = face.uv[label >= 0]
    zone = label[label >= 0]
    lo, hi = np.full(len(centres), 0.5), np.full(len(centres), 30.0)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        big = _box(s_skin, origin, cell_mm, centres, mid) > SKIN_MM2
        hi, lo = np.where(big, mid, hi), np.where(big, lo, mid)
    half = 0.5 * (lo + hi)
    treat = _box(s_treat, origin, cell_mm, centres, half)
    count = cKDTree(plan.puncture_uv).query_ball_point(centres, half, p=np.inf, return_length=True).astype(float)
    density = np.where(treat > 1e-6, 100.0 * count / np.maximum(treat, 1e-9), np.inf)
    caps = np.array([zones.dose(n).cap_per_cm2 for n in zones.names])
    return {"zone": zone, "half": half, "treatable": treat / SKIN_MM2, "count": count, "density": density,
            "ratio": density / caps[zone]}


def report(name: str, plan, sub: int, cell_mm: float, min_treatable: float) -> dict:
    got = exact_squares(plan, sub, cell_mm)
    counted = got["treatable"] >= min_treatable
    ratio = np.where(counted, got["ratio"], -np.inf)
    order = np.argsort(-ratio, kind="stable")[:3]
    names = plan.zones.names
    top = ", ".join(f"{names[got['zone'][i]]} {ratio[i]:.3f}" for i in order if np.isfinite(ratio[i]))
    over = int((ratio > 1.0).sum())
    print(f"{name:8s} highest squares / cap: {top}; squares over their cap: {over} of {int(counted.sum())}",
          flush=True)
    return {"highest": float(ratio.max(initial=-np.inf)), "over": over, "squares": int(counted.sum())}


def _scan_spec(spec: str) -> tuple[str, int]:
    """``(units, seed)`` of a scan named ``m<seed>`` or ``mm<seed>``."""
    m = re.fullmatch(r"(mm|m)(\d+)", spec)
    if m is None:
        raise SystemExit(f"--faces: {spec!r} is not a face; give bundled, m<seed> or mm<seed> (e.g. m0,mm1)")
    return m.group(1), int(m.group(2))


def _face(spec: str, base):
    from coverage import Face
    from coverage.synthetic import make_scan

    if spec == "bundled":
        return base
    units, seed = _scan_spec(spec)
    scan = make_scan(base, units=units, seed=seed)
    return Face.load((scan.vertices, scan.faces), scan.landmarks, units=units)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", default="bundled", help="comma-separated: bundled, m<seed>, mm<seed> (bundled)")
    parser.add_argument("--plan", help="a saved plan (PLAN.json) instead of planning --faces")
    parser.add_argument("--sub", type=int, default=6, help="skin samples per triangle side (6)")
    parser.add_argument("--cell", type=float, default=0.1, help="the skin raster's cell, chart mm (0.1)")
    parser.add_argument("--min-treatable", type=float, default=0.5, help="least treatable share of a square (0.5)")
    args = parser.parse_args(argv)
    if args.sub < 1 or not args.cell > 0 or not 0 < args.min_treatable <= 1:
        raise SystemExit("--sub must be 1 or more, --cell above 0 and --min-treatable in (0, 1]")
    from coverage import Face, load_plan, plan as make_plan

    if args.plan:
        from coverage import CoverageError

        try:
            saved = load_plan(args.plan)
        except (CoverageError, OSError) as exc:
            raise SystemExit(f"--plan: {exc}")
        report(args.plan, saved, args.sub, args.cell, args.min_treatable)
        return
    base = Face.default()
    worst, over = -np.inf, 0
    specs = [s.strip() for s in args.faces.split(",") if s.strip()]
    for spec in specs:
        if spec != "bundled":
            _scan_spec(spec)          # every name checked before any plan is made
    for spec in specs:
        got = report(spec, make_plan(_face(spec, base)), args.sub, args.cell, args.min_treatable)
        worst, over = max(worst, got["highest"]), over + got["over"]
    if len(specs) > 1:
        print(f"all     highest square / cap {worst:.3f}; squares over their cap: {over}")


if __name__ == "__main__":
    sys.exit(main())
