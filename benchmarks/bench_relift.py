"""Re-lifting and resume benchmarks: the default auto plan carried onto moved and deformed
faces (``coverage.relift``), and completed after an interruption (``coverage.resume``).

    python benchmarks/bench_relift.py [--repeats N] [--no-resume] [--json OUT]

Faces (each the bundled face, the plan's own resolution):

* ``moved``: turned 8 deg about y and 20 deg about x, shifted (200, -30, 400) mm, its pose
  moved alike: a rigid move, nothing to measure again.
* ``tracked``: ``moved`` plus a smooth non-rigid change of 0.2 mm at most (a few broad
  Gaussian bumps along the normals): what a face tracker's frames differ by.
* ``pushed``: the skin under the left eye pushed 1.5 mm towards it (a Gaussian of 4 mm):
  pen strokes there are cut and their moves planned again.
* ``deformed``: ``coverage.synthetic.deformed_face`` (another person: 4 % per axis, bumps
  of 2 mm): beyond the room the retargeter keeps, everything is measured again.

For each: the median and minimum over ``--repeats`` calls of ``Retargeter.retarget`` (ms),
split by stage, and of ``Retargeter.poses`` (the stroke paths only). The retargeter's one-off
preparation is timed once. Resume: one run each of the plan stopped halfway through its
middle stroke, and of a log of 40 % of its punctures. Prints tables; writes JSON (default
``benchmarks/results/relift.json``) with the machine's load. Timings only: nothing asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

import coverage
from coverage import Face, relift, resume, synthetic

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "relift.json"


def moved(face: Face, vertices: np.ndarray | None = None) -> Face:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("yx", [8.0, 20.0], degrees=True).as_matrix()
    pose[:3, 3] = (200.0, -30.0, 400.0)
    v = face.vertices if vertices is None else vertices
    return Face(v @ pose[:3, :3].T + pose[:3, 3], face.subdivisions, pose=pose @ face.pose, source="moved")


def tracked(face: Face, rng) -> Face:
    bumps = np.zeros(len(face.vertices))
    for centre in rng.choice(len(face.vertices), 6, replace=False):
        d2 = ((face.vertices - face.vertices[centre]) ** 2).sum(axis=1)
        bumps += rng.uniform(-1, 1) * np.exp(-0.5 * d2 / 25.0 ** 2)
    bumps *= 0.2 / np.abs(bumps).max()
    return moved(face, face.vertices + bumps[:, None] * face.normals)


def pushed(rt: relift.Retargeter) -> Face:
    face = rt.face0
    part = next(p for p in rt.parts if p.label == "eye_left (eye)")
    centre = rt.old_points[part.point_ids[np.argmin(part.point_room)]]
    eye = face.vertices[part.skin_vertices]
    towards = eye[np.argmin(np.linalg.norm(eye - centre, axis=1))] - centre
    towards /= np.linalg.norm(towards)
    weight = np.exp(-0.5 * ((face.vertices - centre) ** 2).sum(axis=1) / 4.0 ** 2)
    return Face(face.vertices + 1.5 * weight[:, None] * towards, face.subdivisions, source="pushed")


def timed(fn, repeats: int):
    """Wall clock and CPU time (ms) of ``repeats`` calls: on a shared machine the CPU time
    (``time.process_time``) is what the call itself costs, the wall clock what it waited too."""
    out, cpu, laps = [], [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        out.append(1e3 * (time.perf_counter() - start))
        cpu.append(1e3 * (time.process_time() - start_cpu))
        if hasattr(result, "report"):
            laps.append(result.report.time_ms)
    stages = {k: float(np.median([lap[k] for lap in laps])) for k in laps[0]} if laps else {}
    return {"median_ms": float(np.median(out)), "min_ms": float(np.min(out)), "cpu_median_ms": float(np.median(cpu)),
            "runs": repeats, "stages_ms": stages, "last": result}


def one_blas_thread():
    """BLAS on one thread (threadpoolctl, when installed), as ``coverage-planner bench`` runs:
    multi-threaded OpenBLAS on busy cores makes a (n, 3) x (3, 3) product many times slower."""
    try:
        import threadpoolctl
    except ImportError:
        import contextlib
        return contextlib.nullcontext(), "BLAS threads not limited (threadpoolctl is not installed)"
    return threadpoolctl.threadpool_limits(1, user_api="blas"), "BLAS on one thread"


def main(argv=None) -> int:
    limit, blas = one_blas_thread()
    with limit:
        return run(argv, blas)


def run(argv, blas: str) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-resume", action="store_true", help="skip the resume runs (a minute)")
    parser.add_argument("--json", default=str(DEFAULT_JSON))
    parser.add_argument("--plan", help="a saved plan of the bundled face (default: plan it now)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    face = Face.default()
    start = time.perf_counter()
    plan = coverage.plan(face) if args.plan is None else coverage.Plan.load(args.plan, face)
    plan_s = time.perf_counter() - start
    start = time.perf_counter()
    rt = relift.retargeter(plan)
    build_s = time.perf_counter() - start
    print(f"default auto plan: {len(plan.strokes)} strokes, {len(plan.puncture_points)} punctures, "
          f"{sum(len(s.points) for s in plan.strokes)} path samples, {len(plan.transitions)} transitions "
          f"({'planned' if args.plan is None else 'read'} in {plan_s:.1f} s); retargeter prepared in {build_s:.2f} s")
    faces = {"moved": (moved(face), args.repeats), "tracked": (tracked(face, rng), args.repeats),
             "pushed": (pushed(rt), max(3, args.repeats // 10)),
             "deformed": (synthetic.deformed_face(face), max(1, args.repeats // 30))}
    doc = {"plan": {"strokes": len(plan.strokes), "punctures": len(plan.puncture_points),
                    "samples": int(sum(len(s.points) for s in plan.strokes)), "transitions": len(plan.transitions)},
           "build_s": build_s, "retarget": {}, "poses": {},
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "load_average": list(os.getloadavg()), "blas": blas}, "version": coverage.__version__}
    stages = None
    rows = []
    for name, (f, n) in faces.items():
        rt.retarget(f)   # warm (the new face's cached arrays are part of every face's life anyway)
        r = timed(lambda f=f: rt.retarget(f), n)
        p = timed(lambda f=f: rt.poses(f), n)
        report = r.pop("last").report
        p.pop("last")
        doc["retarget"][name] = {**r, "cuts": len(report.cuts), "punctures_dropped": report.punctures_dropped,
                                 "rigid_deviation_mm": report.rigid_deviation_mm, "measured": report.candidates,
                                 "transitions_measured": report.transitions_measured,
                                 "transitions_replanned": len(report.transitions_replanned)}
        doc["poses"][name] = p
        stages = stages or list(r["stages_ms"])
        rows.append((name, r, p, report))
    head = f"{'face':<10}{'delta mm':>9}{'retarget':>10}{'min':>8}{'cpu':>8}{'poses':>8}" \
        + "".join(f"{s[:10]:>11}" for s in stages) + f"{'cuts':>6}{'measured':>10}{'moves':>7}"
    print("\nretarget (ms: wall-clock median over the runs, its minimum, CPU-time median; poses: the paths "
          "only, CPU median; stages: wall-clock medians)")
    print(head)
    print("-" * len(head))
    for name, r, p, report in rows:
        print(f"{name:<10}{report.rigid_deviation_mm:9.3f}{r['median_ms']:10.2f}{r['min_ms']:8.2f}{r['cpu_median_ms']:8.2f}"
              f"{p['cpu_median_ms']:8.2f}"
              + "".join(f"{r['stages_ms'][s]:11.2f}" for s in stages)
              + f"{len(report.cuts):6d}{report.candidates:10d}{report.transitions_measured:4d}/"
              f"{len(report.transitions_replanned):<3d}")
    print("moves: transitions measured / planned again")
    if not args.no_resume:
        doc["resume"] = {}
        middle = plan.strokes[len(plan.strokes) // 2].id
        start = time.perf_counter()
        rest, report = resume.remaining(plan, resume.interrupted(plan, middle, 0.5))
        doc["resume"]["halfway"] = {"s": time.perf_counter() - start, "remaining_strokes": len(rest.strokes),
                                    "remaining_punctures": len(rest.puncture_points)}
        k = int(0.4 * len(plan.puncture_points))
        log = plan.puncture_points[:k] + rng.normal(scale=0.1, size=(k, 3))
        start = time.perf_counter()
        rest2, report2 = resume.remaining(plan, log)
        doc["resume"]["log40"] = {"s": time.perf_counter() - start, "remaining_strokes": len(rest2.strokes),
                                  "remaining_punctures": len(rest2.puncture_points),
                                  "in_band": {n: z["session"]["in_band_fraction"] for n, z in report2.zones.items()}}
        print(f"\nresume: stopped halfway through stroke {middle}: {doc['resume']['halfway']['s']:.1f} s, "
              f"{len(rest.strokes)} strokes left; a log of 40 % of the punctures: {doc['resume']['log40']['s']:.1f} s, "
              f"{len(rest2.strokes)} pen strokes planned")
        print(report2.text())
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {blas}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=float) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
