"""An upper bound on how much of a zone any plan can bring into its dose band.

    python benchmarks/dose_bound.py [--zone nose] [--cell-mm 1.0] [--ring-mm 8] [--time-limit 300]

The density at a point is the punctures in the 1 cm^2 window around it over the treatable
skin in that window (the project's definition, ``coverage.density``). Where two zones of
different dose meet, a window centred on one side sees the other side's punctures, so the
bands of both cannot hold right at the border. How wide is the strip that must miss?

This solves, with a mixed-integer program (scipy.optimize.milp, HiGHS), the best any
puncture distribution at all could do around one zone:

- variables: punctures per texel x_t >= 0 on the treatable texels of the zone, of a ring
  around it (``--ring-mm``) and of a further window's reach (free, unconstrained texels);
  z_p in {0, 1} per constrained texel: "in band";
- every constrained window at or under its zone's cap (hard);
- z_p = 1 only if the window reaches 0.9 x its target;
- every neighbouring zone keeps at least 95 % of its whole area in band, counting all of
  its skin outside the ring as in band (generous);
- maximise the zone's area in band.

Everything a real plan must also respect (footprints clear of exclusions, depths, device
patterns, whole stamps) is dropped, so the optimum is an upper bound for every plan: if it
is under 95 %, no plan can reach 95 % in that zone under this density definition. The
reported bound is the solver's proven (dual) bound, valid even when it stops at its time
limit.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from scipy import ndimage, optimize, sparse

import coverage
from coverage.density import IN_BAND_LOW, texel_grid


def problem(zones, grid, zone: str, ring_mm: float):
    """The texels of the program: constrained ones (the zone and a ring), free ones (a
    window's reach beyond), each constrained texel's window as a sparse row over all."""
    names = zones.names
    label = grid.label
    treat = label >= 0
    target = names.index(zone)
    ring = int(round(ring_mm / grid.cell_mm))
    inside = label == target
    near = ndimage.binary_dilation(inside, iterations=ring) & treat
    reach = int(max(grid.half_u[near].max(), grid.half_v[near].max()))
    every = ndimage.binary_dilation(near, iterations=reach + 1) & treat
    index = -np.ones(label.shape, dtype=np.int64)
    index[every] = np.arange(every.sum())
    rows, cols, vals = [], [], []
    cons = np.argwhere(near)
    for k, (i, j) in enumerate(cons):
        hu, hv = grid.half_u[i, j], grid.half_v[i, j]
        block = index[max(i - hv, 0):i + hv + 1, max(j - hu, 0):j + hu + 1]
        block = block[block >= 0]
        rows.append(np.full(len(block), k))
        cols.append(block)
        vals.append(np.full(len(block), 100.0 / grid.window_area_mm2[i, j]))
    window = sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(len(cons), int(every.sum())))
    return cons, window, int(every.sum()), every


def pen_model(zones, grid, protocol, base: np.ndarray, every: np.ndarray):
    """Punctures per texel as the planner models a pen plan: ``base`` (the roller's) plus,
    for each cartridge, stamps q >= 0 on the texels where it may be centred, each spreading
    its firing needles evenly over a box of its footprint. Returns (matrix (texels in
    ``every``) x (stamp variables), constant (texels in ``every``))."""
    from coverage import pen as _pen

    pen_zones = {n for n in zones.names if "pen" in zones.dose(n).devices}
    index = -np.ones(grid.shape, dtype=np.int64)
    index[every] = np.arange(every.sum())
    blocks = []
    for cartridge in (protocol.pen, _pen.fine_cartridge(protocol.pen)):
        if cartridge is None:
            continue
        field = _pen.dose_field(zones, grid, protocol, base, pen_zones, pen=cartridge)
        centres = np.argwhere(field.allowed & ndimage.binary_dilation(every, iterations=field.foot_texels))
        half = field.foot_texels // 2
        rows, cols, vals = [], [], []
        for k, (i, j) in enumerate(centres):
            lo_i, lo_j = i - half, j - half     # scipy's uniform_filter box: [i - size//2, i + (size-1)//2]
            block = index[max(lo_i, 0):lo_i + field.foot_texels, max(lo_j, 0):lo_j + field.foot_texels]
            block = block[block >= 0]
            rows.append(block)
            cols.append(np.full(len(block), k))
            vals.append(np.full(len(block), field.needles_fired[i, j] / field.foot_texels ** 2))
        blocks.append(sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                       shape=(int(every.sum()), len(centres))))
    return sparse.hstack(blocks).tocsr(), base[every]


def bound(zones, grid, zone: str, ring_mm: float, time_limit: float, share: float = 0.95,
          pen_base: np.ndarray | None = None, protocol=None) -> dict:
    names = zones.names
    cons, window, n_x, every = problem(zones, grid, zone, ring_mm)
    m = len(cons)
    offset = np.zeros(m)
    if pen_base is not None:     # punctures = base + pen stamps as the planner models them
        spread, fixed = pen_model(zones, grid, protocol, pen_base, every)
        offset = window @ fixed
        window = (window @ spread).tocsr()
        n_x = window.shape[1]
    lab = grid.label[cons[:, 0], cons[:, 1]]
    area = grid.area_mm2[cons[:, 0], cons[:, 1]]
    target = np.array([zones.dose(names[k]).target_per_cm2 for k in lab])
    cap = np.array([zones.dose(names[k]).cap_per_cm2 for k in lab])
    # variables: x (n_x), z (m)
    n = n_x + m
    c = np.zeros(n)
    own = lab == names.index(zone)
    c[n_x:][own] = -area[own]                       # maximise the zone's area in band
    lo_band = IN_BAND_LOW * target
    A_cap = sparse.hstack([window, sparse.csr_array((m, m))])
    A_band = sparse.hstack([window, -sparse.diags_array(lo_band)])      # W - lo z >= 0
    blocks, lbs, ubs = [A_cap, A_band], [np.full(m, -np.inf), -offset], [cap - offset, np.full(m, np.inf)]
    neighbours = {}
    for k in np.unique(lab):
        name = names[k]
        if name == zone:
            continue
        sel = lab == k
        total = float(grid.area_mm2[grid.label == k].sum())
        outside = total - float(area[sel].sum())
        need = share * total - outside                # what the ring part must bring in band
        neighbours[name] = {"ring_area_cm2": float(area[sel].sum() / 100), "need_in_ring_cm2": max(need, 0) / 100}
        if need <= 0:
            continue
        row = np.zeros(n)
        row[n_x:][sel] = area[sel]
        blocks.append(sparse.csr_array(row[None]))
        lbs.append(np.array([need]))
        ubs.append(np.array([np.inf]))
    A = sparse.vstack(blocks).tocsr()
    integrality = np.concatenate([np.zeros(n_x), np.ones(m)])
    bounds = optimize.Bounds(np.zeros(n), np.concatenate([np.full(n_x, np.inf), np.ones(m)]))
    start = time.perf_counter()
    res = optimize.milp(c, constraints=optimize.LinearConstraint(A, np.concatenate(lbs), np.concatenate(ubs)),
                        integrality=integrality, bounds=bounds,
                        options={"time_limit": time_limit, "disp": False, "mip_rel_gap": 1e-3})
    seconds = time.perf_counter() - start
    zone_area = float(area[own].sum())
    best = None if res.x is None else float(-res.fun / zone_area)
    dual = getattr(res, "mip_dual_bound", None)
    proven = None if dual is None or not np.isfinite(dual) else float(-dual / zone_area)
    return {"zone": zone, "cell_mm": grid.cell_mm, "ring_mm": ring_mm, "constrained_texels": m, "free_texels": n_x,
            "status": res.message, "seconds": seconds, "best_found_in_band": best,
            "upper_bound_in_band": proven, "zone_area_cm2": zone_area / 100, "neighbours": neighbours}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zone", default="nose")
    parser.add_argument("--cell-mm", type=float, default=1.0)
    parser.add_argument("--ring-mm", type=float, default=8.0)
    parser.add_argument("--time-limit", type=float, default=300.0)
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--pen", metavar="PLAN.json",
                        help="bound plans made as the planner models them: this plan's roller punctures fixed, pen "
                             "stamps (main and fine cartridge) only where each may be centred")
    args = parser.parse_args(argv)
    face = coverage.Face.default()
    zones = coverage.ZoneMap.default(face)
    grid = texel_grid(zones, cell_mm=args.cell_mm)
    base = None
    if args.pen:
        from coverage import pen as _pen

        planned = coverage.load_plan(args.pen, zones=zones)
        roller = np.isin(planned.puncture_stroke, [s.id for s in planned.strokes if s.device == "roller"])
        base = _pen.texel_counts(grid, planned.puncture_uv[roller])
    out = bound(zones, grid, args.zone, args.ring_mm, args.time_limit, pen_base=base, protocol=zones.protocol)
    out["model"] = "pen stamps + fixed roller punctures" if args.pen else "any puncture distribution"
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
