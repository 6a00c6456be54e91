"""Plan benchmarks: the auto plan end to end, stage by stage, on the bundled face and on a
100k-vertex synthetic scan, and the planned treatment time against the physical minimum.

    python benchmarks/bench_plan.py [--quick] [--json OUT] [--scan-vertices N | --scan-pitch MM]

Each face is planned once (the first run: cold caches) and then N more times (N = 3, or 1
with ``--quick``); tables give the median and minimum of those N runs, and the first run.
The stages are timed by wrapping the planner's functions for the run (``coverage.plan`` and
``coverage.pen``); each is charged only its own time, not that of the wrapped functions it
calls, so the stages add up to the plan. Writes JSON (default ``benchmarks/results/plan.json``).
Timings only: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

import coverage
from coverage import Face, ZoneMap

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))
from bench_foundation import machine_info, write_json  # noqa: E402  (the shared helpers)
import synthetic  # noqa: E402  (tests/synthetic.py: depth-camera scans)

plan_mod = sys.modules["coverage.plan"]   # `coverage.plan` is also the public function
pen_mod = sys.modules["coverage.pen"]

DEFAULT_JSON = ROOT / "results" / "plan.json"
SCAN_VERTICES = 100_000
SCAN_START_PITCH_MM = 0.8
STAGES = ("zones", "roller", "pen main", "touch-ups", "strokes", "other")
STAGE_LABELS = {
    "zones": "zones (ZoneMap.default)",
    "roller": "roller (plan._roller_part)",
    "pen main": "pen main (field, solve, paths, simulate)",
    "touch-ups": "pen touch-ups (after the first cap guard)",
    "strokes": "strokes/transitions (plan.pen_strokes)",
    "other": "build_plan glue (lift, concatenate, status)",
}
TIME_DEFINITION = (
    "planned = the plan's time_s (first contact to last contact); minimum = sum over strokes of "
    "punctures / the top puncture rate of the stroke's device (pen: needles of the stroke's cartridge "
    "x pen.stamp_hz_max; roller: drum needles x roller speed / (pi x drum diameter), the stroke's "
    "puncture_rate_hz) + sum over consecutive strokes of the straight-line distance from one stroke's "
    "end to the next one's start / session.transit_speed_mm_s (no lifts); per device, a move (planned "
    "transition or minimum straight move) counts for the device of the stroke it leads to; "
    "ratio = planned / minimum (quality bar: <= 1.3)")

COLD_FACE_SCRIPT = """
import json, time
t0 = time.perf_counter()
import coverage
t1 = time.perf_counter()
coverage.Face.default()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "face_s": t2 - t1}))
"""


# --- stage clock -------------------------------------------------------------------------

class StageClock:
    """Own time (s) of wrapped planner functions, per (stage, step), while ``active``.

    A wrapped function may open a stage (the roller, the pen...); its callees are charged
    to that stage until it returns. Time a function spends in wrapped callees is theirs.
    """

    def __init__(self):
        self.active = False
        self.stage = "other"
        self.stack = []      # frames [step, resumed_at, stage to restore or None]
        self.seconds = {}    # (stage, step) -> s

    def _charge(self, now: float) -> None:
        step, resumed, _ = self.stack[-1]
        key = (self.stage, step)
        self.seconds[key] = self.seconds.get(key, 0.0) + now - resumed

    def enter(self, step: str, stage: str | None = None) -> None:
        now = time.perf_counter()
        if self.stack:
            self._charge(now)
        self.stack.append([step, now, self.stage if stage else None])
        if stage:
            self.stage = stage

    def leave(self, then: tuple | None = None) -> None:
        now = time.perf_counter()
        self._charge(now)
        _, _, restore = self.stack.pop()
        if restore is not None:
            self.stage = restore
        if then is not None and self.stage == then[0]:
            self.stage = then[1]
        if self.stack:
            self.stack[-1][1] = now

    def wrap(self, fn, step: str, stage: str | None = None, then: tuple | None = None):
        """``fn`` timed as ``step`` (opening ``stage``; switching stage ``then[0]`` to ``then[1]`` after)."""
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.active:
                return fn(*args, **kwargs)
            self.enter(step, stage)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave(then)
        return timed

    def run(self, fn):
        """``fn()`` with the clock on, from zero: (result, {(stage, step): s}, wall s)."""
        self.seconds, self.stack, self.stage, self.active = {}, [], "other", True
        start = time.perf_counter()
        try:
            self.enter("coverage.plan + build_plan (own)")
            try:
                result = fn()
            finally:
                self.leave()
        finally:
            self.active = False
        return result, dict(self.seconds), time.perf_counter() - start


def instrument(clock: StageClock) -> list:
    """Wrap the planner's stage functions; returns what to restore."""
    patches = [
        (ZoneMap, "default", lambda f: staticmethod(clock.wrap(f, "ZoneMap.default", "zones"))),
        (plan_mod, "_roller_part", lambda f: clock.wrap(f, "_roller_part (own: lift, counts)", "roller")),
        (plan_mod, "roller_runs", lambda f: clock.wrap(f, "roller_runs (passes)")),
        (plan_mod, "roller_strokes", lambda f: clock.wrap(f, "roller_strokes (own: frames, timing)")),
        (plan_mod, "_simulate_runs", lambda f: clock.wrap(f, "_simulate_runs (drum simulation)")),
        (plan_mod, "transit", lambda f: clock.wrap(f, "transit (safe moves)")),
        (plan_mod, "texel_grid", lambda f: clock.wrap(f, "texel_grid", "pen main")),
        (plan_mod, "_pen_part", lambda f: clock.wrap(f, "_pen_part (own: under-dose, counts)", "pen main")),
        (pen_mod, "dose_field", lambda f: clock.wrap(f, "pen.dose_field")),
        (pen_mod.DoseField, "solve", lambda f: clock.wrap(f, "DoseField.solve")),
        (pen_mod, "zone_paths", lambda f: clock.wrap(f, "pen.zone_paths")),
        (pen_mod, "join_paths", lambda f: clock.wrap(f, "pen.join_paths")),
        (pen_mod, "simulate_paths", lambda f: clock.wrap(f, "pen.simulate_paths")),
        (pen_mod, "cap_guard", lambda f: clock.wrap(f, "pen.cap_guard", then=("pen main", "touch-ups"))),
        (plan_mod, "pen_strokes", lambda f: clock.wrap(f, "pen_strokes (own: frames, stamps)", "strokes")),
    ]
    saved = []
    for owner, name, make in patches:
        raw = owner.__dict__[name]
        saved.append((owner, name, raw))
        setattr(owner, name, make(getattr(owner, name)))
    return saved


def restore(saved: list) -> None:
    for owner, name, raw in reversed(saved):
        setattr(owner, name, raw)


# --- treatment time against the physical minimum -----------------------------------------

def treatment_time(plan) -> dict:
    """Planned time vs the physical minimum (see ``TIME_DEFINITION``), in total and per device."""
    protocol = plan.protocol
    pen_hz_max = protocol.pen.stamp_hz_max
    transit_speed = protocol.session.transit_speed_mm_s
    strokes = sorted(plan.strokes, key=lambda s: s.times_s[0])
    device_of = {s.id: s.device for s in strokes}
    sums = ("strokes", "punctures", "contact_s", "moves_s", "min_contact_s", "min_moves_s", "min_contact_by_stamps_s")
    rows = {}
    previous = None
    for s in strokes:
        r = rows.setdefault(s.device, dict.fromkeys(sums, 0))
        if s.device == "pen":
            rate = s.cartridge["needles"] * pen_hz_max
            r["min_contact_by_stamps_s"] += len(s.stamp_uv) / pen_hz_max
        else:
            rate = s.puncture_rate_hz
            r["min_contact_by_stamps_s"] += s.punctures / rate
        r["strokes"] += 1
        r["punctures"] += int(s.punctures)
        r["contact_s"] += s.duration_s
        r["min_contact_s"] += s.punctures / rate
        if previous is not None:
            r["min_moves_s"] += float(np.linalg.norm(s.points[0] - previous.points[-1])) / transit_speed
        previous = s
    for t in plan.transitions:
        rows[device_of[t.to_stroke]]["moves_s"] += t.duration_s
    for r in rows.values():
        r["planned_s"] = r["contact_s"] + r["moves_s"]
    total = {key: sum(r[key] for r in rows.values()) for key in sums}
    total["planned_s"] = plan.time_s
    total["idle_s"] = plan.time_s - total["contact_s"] - total["moves_s"]
    for r in (*rows.values(), total):
        r["min_s"] = r["min_contact_s"] + r["min_moves_s"]
        r["ratio"] = r["planned_s"] / r["min_s"] if r["min_s"] > 0 else math.nan
        r["contact_ratio"] = r["contact_s"] / r["min_contact_s"] if r["min_contact_s"] > 0 else math.nan
        r["moves_ratio"] = r["moves_s"] / r["min_moves_s"] if r["min_moves_s"] > 0 else math.nan
    return {"definition": TIME_DEFINITION, "pen_stamp_hz_max": pen_hz_max, "transit_speed_mm_s": transit_speed,
            "devices": rows, "total": total}


def time_table(tt: dict) -> str:
    head = (f"{'device':<8}{'strokes':>8}{'punctures':>11}{'contact s':>11}{'moves s':>9}{'planned s':>11}"
            f"{'min contact':>13}{'min moves':>11}{'min s':>9}{'ratio':>8}{'contact x':>11}{'moves x':>9}")
    rows = [head]
    for name, r in (*sorted(tt["devices"].items()), ("all", tt["total"])):
        rows.append(f"{name:<8}{r['strokes']:8d}{r['punctures']:11d}{r['contact_s']:11.1f}{r['moves_s']:9.1f}"
                    f"{r['planned_s']:11.1f}{r['min_contact_s']:13.1f}{r['min_moves_s']:11.1f}{r['min_s']:9.1f}"
                    f"{r['ratio']:8.2f}{r['contact_ratio']:11.2f}{r['moves_ratio']:9.2f}")
    total = tt["total"]
    rows.append(f"idle (planned time outside strokes and transitions): {total['idle_s']:.1f} s")
    pen = tt["devices"].get("pen")
    if pen:
        rows.append(f"pen minimum by stamps instead of punctures (stamps / stamp_hz_max; needles that miss on "
                    f"curved skin still take the stamp's time): {pen['min_contact_by_stamps_s']:.1f} s of contact")
    return "\n".join(rows)


# --- one face: N plans, stage by stage ---------------------------------------------------

def plan_runs(load_face, load_step: str, clock: StageClock, runs: int) -> dict:
    """A first run then ``runs`` more: every stage's seconds per run, and the last plan."""
    per_run, plan = [], None
    for _ in range(runs + 1):
        seconds = {}
        start = time.perf_counter()
        face = load_face()
        seconds[("face load", load_step)] = time.perf_counter() - start
        try:
            plan, staged, wall = clock.run(lambda: coverage.plan(face))
        except Exception as exc:
            exc.bench_seconds = {" / ".join(k): v for k, v in {**seconds, **clock.seconds}.items()}
            raise
        seconds.update(staged)
        seconds[("total", "coverage.plan (wall)")] = wall
        start = time.perf_counter()
        plan.density
        seconds[("density", "Plan.density")] = time.perf_counter() - start
        start = time.perf_counter()
        verdict = coverage.verify(plan)
        seconds[("verify", "coverage.verify")] = time.perf_counter() - start
        per_run.append(seconds)
        print(f"  run {len(per_run)}/{runs + 1}: plan {wall:.1f} s, verify {seconds[('verify', 'coverage.verify')]:.1f}"
              f" s, load average {os.getloadavg()[0]:.2f}", flush=True)
    return {"per_run": per_run, "plan": plan, "face": plan.face, "verdict": verdict}


def stage_rows(per_run: list) -> list:
    """``[(label, indent, per-run seconds)]``: stage totals, their steps, plan and end-to-end totals."""
    keys = list(dict.fromkeys(k for run in per_run for k in run))

    def series(pred):
        return [sum(s for k, s in run.items() if pred(k)) for run in per_run]

    out = [(f"face load: {k[1]}", 0, series(lambda x, k=k: x == k)) for k in keys if k[0] == "face load"]
    for stage in STAGES:
        steps = [k for k in keys if k[0] == stage]
        if not steps:
            continue
        out.append((STAGE_LABELS[stage], 0, series(lambda k, stage=stage: k[0] == stage)))
        steps.sort(key=lambda k: -statistics.median(series(lambda x, k=k: x == k)))
        out += [(f"  {k[1]}", 1, series(lambda x, k=k: x == k)) for k in steps]
    planned = series(lambda k: k[0] in STAGES)
    out.append(("coverage.plan (sum of stages)", 0, planned))
    out.append(("coverage.plan (wall clock)", 0, series(lambda k: k[0] == "total")))
    out.append(("Plan.density", 0, series(lambda k: k[0] == "density")))
    out.append(("coverage.verify", 0, series(lambda k: k[0] == "verify")))
    out.append(("end to end (load + plan + density + verify)", 0,
                series(lambda k: k[0] in ("face load", *STAGES, "density", "verify"))))
    return out


def stage_table(title: str, rows: list) -> str:
    head = f"{title:<58}{'median ms':>11}{'min ms':>10}{'first ms':>10}"
    lines = [head, "-" * len(head)]
    for label, _, s in rows:
        warm = s[1:]
        lines.append(f"{label:<58}{statistics.median(warm) * 1e3:11.1f}{min(warm) * 1e3:10.1f}{s[0] * 1e3:10.1f}")
    return "\n".join(lines)


def stage_json(rows: list) -> list:
    return [{"stage": label.strip(), "level": level, "median_ms": statistics.median(s[1:]) * 1e3,
             "min_ms": min(s[1:]) * 1e3, "first_ms": s[0] * 1e3, "runs_ms": [x * 1e3 for x in s[1:]]}
            for label, level, s in rows]


def plan_facts(result: dict) -> dict:
    plan, face, verdict = result["plan"], result["face"], result["verdict"]
    return {"face": {"source": face.source, "vertices": int(len(face.vertices)), "triangles": int(len(face.faces)),
                     "unobserved_fraction": float(face.unobserved.mean())},
            "strokes": len(plan.strokes), "transitions": len(plan.transitions),
            "punctures": int(len(plan.puncture_points)), "time_s": plan.time_s,
            "verify_ok": bool(verdict.ok), "verify_failed": verdict.failed()}


# --- inputs ------------------------------------------------------------------------------

def cold_face_load(runs: int) -> dict:
    """``import coverage`` and ``Face.default()`` in fresh interpreters (s), after one discarded run."""
    def once():
        done = subprocess.run([sys.executable, "-c", COLD_FACE_SCRIPT], check=True, capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    once()
    got = [once() for _ in range(runs)]
    return {key: {"median_ms": statistics.median(g[key] for g in got) * 1e3,
                  "min_ms": min(g[key] for g in got) * 1e3} for key in ("import_s", "face_s")}


def synthetic_scan(target: int, pitch_mm: float | None = None):
    """A depth-camera scan (tests/synthetic.py) with about ``target`` vertices: the pixel pitch is
    refined from the vertex count (which goes as 1 / pitch^2). A given ``pitch_mm`` is used as is."""
    base = Face.default()
    subject = synthetic.deformed_face(base) if hasattr(synthetic, "deformed_face") else base
    if pitch_mm is not None:
        return synthetic.make_scan(subject, units="m", pitch_mm=pitch_mm, seed=0), pitch_mm, subject.source
    pitch = SCAN_START_PITCH_MM
    for _ in range(4):
        scan = synthetic.make_scan(subject, units="m", pitch_mm=pitch, seed=0)
        n = len(scan.vertices)
        if abs(n / target - 1.0) < 0.02:
            break
        pitch *= math.sqrt(n / target)
    return scan, pitch, subject.source


# --- main --------------------------------------------------------------------------------


def report_face(result: dict, title) -> dict:
    """Print one face's stage table, plan facts and time ratios; return its JSON entry.
    ``title(facts)`` names the stage table."""
    rows = stage_rows(result["per_run"])
    tt = treatment_time(result["plan"])
    facts = plan_facts(result)
    print()
    print(stage_table(title(facts), rows))
    print(f"plan: {facts['strokes']} strokes, {facts['punctures']} punctures, {facts['time_s']:.0f} s; "
          f"verify ok: {facts['verify_ok']} {facts['verify_failed'] or ''}\n")
    print(time_table(tt), "\n", flush=True)
    return {**facts, "stages": stage_json(rows), "treatment_time": tt}

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run after the first instead of 3")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output file (default {DEFAULT_JSON})")
    parser.add_argument("--scan-vertices", type=int, default=SCAN_VERTICES,
                        help=f"vertices of the synthetic scan (default {SCAN_VERTICES})")
    parser.add_argument("--scan-pitch", type=float, default=None,
                        help="pixel pitch (mm) of the synthetic scan instead of a vertex count")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else 3
    mode = "quick" if args.quick else "full"
    machine = machine_info()
    load = {"start": os.getloadavg()}
    print(f"coverage plan benchmarks ({mode}: a first run, then {runs} more; median and min of those, "
          f"and the first)")
    print(f"{machine['cpu']}, {machine['cpu_count']} cpus, Python {machine['python']}, {machine['platform']}; "
          f"load average {load['start'][0]:.2f} {load['start'][1]:.2f} {load['start'][2]:.2f}\n", flush=True)

    doc = {"machine": machine, "mode": mode, "runs": runs, "time_definition": TIME_DEFINITION, "faces": {}}
    cold = cold_face_load(max(runs, 2))
    print(f"cold start (fresh interpreter): import coverage {cold['import_s']['median_ms']:.0f} ms, "
          f"Face.default() {cold['face_s']['median_ms']:.0f} ms (median; min {cold['face_s']['min_ms']:.0f} ms)\n",
          flush=True)
    doc["cold_start"] = cold

    clock = StageClock()
    saved = instrument(clock)
    try:
        print("bundled face: coverage.plan(Face.default()), device auto", flush=True)
        result = plan_runs(Face.default, "Face.default() (cached after the first call)", clock, runs)
        doc["faces"]["default"] = report_face(result, lambda facts: f"default face ({facts['face']['vertices']} "
                                                                     "vertices), stage")

        print("synthetic scan: tests/synthetic.py make_scan, Face.load, coverage.plan, device auto", flush=True)
        entry = {}
        doc["faces"]["scan"] = entry
        try:
            start = time.perf_counter()
            scan, pitch, subject = synthetic_scan(args.scan_vertices, args.scan_pitch)
            entry["scan"] = {"subject": subject, "target_vertices": args.scan_vertices, "pitch_mm": pitch,
                             "units": "m", "seed": 0, "vertices": int(len(scan.vertices)),
                             "triangles": int(len(scan.faces)), "make_s": time.perf_counter() - start}
            print(f"  scan of the {subject}: {len(scan.vertices)} vertices, {len(scan.faces)} triangles "
                  f"(pitch {pitch:.3f} mm, metres)", flush=True)
            result = plan_runs(lambda: Face.load((scan.vertices, scan.faces), scan.landmarks),
                               f"Face.load ({len(scan.vertices) // 1000}k-vertex scan, metres)", clock, runs)
            entry.update(report_face(result, lambda facts: f"scan ({len(scan.vertices)} scan vertices -> "
                                                            f"{facts['face']['vertices']}), stage"))
        except Exception:
            entry["error"] = traceback.format_exc()
            entry["seconds_before_the_error"] = getattr(sys.exc_info()[1], "bench_seconds", {})
            print("the scan failed:\n" + entry["error"], flush=True)
            for step, sec in entry["seconds_before_the_error"].items():
                print(f"  before the error: {step}: {sec * 1e3:.1f} ms")
            print(flush=True)
    finally:
        restore(saved)

    print(f"time ratio: {TIME_DEFINITION}\n")
    load["end"] = os.getloadavg()
    doc["load_average"] = load
    print(f"load average at the end {load['end'][0]:.2f} {load['end'][1]:.2f} {load['end'][2]:.2f} "
          f"({machine['cpu_count']} cpus; other processes share them)")
    write_json(doc, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
