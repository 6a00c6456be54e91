"""The benchmark suite: ``coverage-planner bench [--quick] [--json OUT] [--repeats N]``
(also ``python -m coverage.bench``). Measurements, not tests: nothing here asserts a speed.

**End to end** (``stages``): the automatic plan (roller, then the pen fitted over it) of the
bundled face and of a synthetic depth-camera scan of about 100k vertices (the deformed
bundled face in metres, posed, noisy, with a hole: :mod:`coverage.synthetic`), each run
from a cold start: every ``functools`` cache of the package is emptied first, so each run
pays what a fresh process pays after ``import coverage`` (the template, the chart, the
canonical zone cells are built again). Stages, each charged only its own time:

- ``load``: ``Face.default()`` (template refinement) or ``Face.load`` (the scan: repair,
  template fit, units);
- ``chart``: ``face.uv`` and ``face.chart_grid`` (the shared LSCM chart and its lookup grid);
- ``zones``: ``ZoneMap.default`` (keep-outs with exact 3D distances);
- ``roller``: ``plan._roller_part`` and ``plan._roller_runs_made``: pass lines and headlands
  (``plan._region_sweeps``), strokes, safe moves, drum simulation;
- ``pen``: texel grid, dose field, stroke paths of both cartridges, candidate stamps and
  their simulation, the cap guard, and ``plan.pen_strokes`` (frames, stamps and safe moves
  of every pen stroke);
- ``fit``: ``pen_fit.fit`` and ``pen_fit.repair`` (the stamps fitted to every window's band,
  needle by needle, and the windows rounding left outside it mended);
- ``other``: ``coverage.plan``'s own glue (lifting the punctures, status);
- ``density``: ``Plan.density``; ``verify``: ``coverage.verify(plan)``.

Each run plans twice, from a cold start each time: on one thread with the stages timed
(``plan_one_thread``: that plan's wall clock, zones to other), then on the default threads
(:mod:`coverage.tasks`) with nothing timed inside (``plan``: its wall clock, what a caller
waits; the speed target). The entry records ``threads`` and ``threads_identical``: whether
every run's two plans were the same bit for bit (:func:`same_plan`). ``total`` is every
stage of the one-thread run.
The stages are timed by wrapping the planner's functions for the run (:class:`StageClock`);
a function the planner no longer has is listed under ``stages_unwrapped`` and its time stays with
its caller's stage. ``steps`` breaks each stage down by wrapped function.

**Kernels** (``kernel_speedup``: name -> NumPy reference time / kernel time, measured in the
same run on the same seeded input; ``kernels``: both times in ms and whether the results
agree): ``locate``, ``lift`` (locate + positions + unit normals), ``interpolate``,
``closest_points``, ``splat``, ``window_sums``, ``merge_channels``, ``stamp_effect`` and
``stamp_effect_tracked`` (the pen repair's weighing, plain and against a tracked density),
``repair_pass`` (the repair's rounds of moves, patch by patch),
``fit_objective`` (the pen fit's objective and gradient), ``roll`` (the drum, on
the default plan's own runs), ``stamp`` (the pen cartridge, random stamps), the roller's
``frame_fields``, ``ends_blocked`` and ``within_reach`` (on one sweep frame of the bundled
face's plan data), ``bin_boxes`` (the triangle boxes of the 0.7 mm face) and ``label_lookup``
(the zone map's label cells); :data:`KERNELS` names every one.

**Scaling** (``scaling``): time at three face resolutions (size: triangles) and at the
target density x0.5, x1, x2 (size: punctures/cm2, every zone's target and cap scaled), with
the growth exponent k of time ~ size^k (least squares of log time on log size). Full run:
whole automatic plans (resolution: load + chart + plan at 2.0, 1.0, 0.7 mm edges; density:
the plan, face and chart built). Quick run: the roller-only plan of one zone (the left cheek;
the whole face's zone map is built, the roller being the planner's costliest stage) at
2.0, 1.35 and 1.0 mm, and at the three densities on the 2 mm face; ``what`` says which in
the JSON and the table.

**Treatment time** (``treatment_time``): the plan's time against the physical minimum, per
device and overall (:data:`TIME_DEFINITION`), and the pen's contact by stroke pattern
(``pen_patterns``: raster, contour and the fine cartridge's touch-up loops); ``executed``: the session as the exported
trajectory runs it within the tool's speed, acceleration and turn-rate limits, against the
same minimum.

**Targets** (``targets``): each speed target of the issue with its measured value and
whether it is met: the default plan under 1 s, a plan from the 100k scan (load + chart +
plan) under 3 s, every kernel at least 20x its reference, lifting 100k chart points (no
limit given: reported), re-lifting a plan onto a moved face under 10 ms (only when
:mod:`coverage.relift` exists), and the DESIGN's efficiency bar (treatment time <= 1.3 x the
minimum).

**Modes.** Full: 3 runs of everything (``--repeats``), several minutes. Quick (under a
minute on 2 cores): one run of each plan, fewer kernel repeats and smaller reference inputs
(ratios barely depend on the size: both sides are linear), the cheap scaling above,
re-lifting onto the moved face only, and a time budget (55 s) for the one measurement that
does not fit it on a slow or busy machine: the scan, measured last. Its plan, density and
verify are skipped (and said so under ``skipped``) when the time left cannot hold about
1.25 x the bundled face's run; its load, chart and zones are still timed. Figures are
medians over the runs (and the minima); with one run they are that run.

**BLAS** runs on one thread during the suite (threadpoolctl, when installed): the chart's
sparse LU calls BLAS, and multi-threaded OpenBLAS on busy cores is ten to forty times
slower, which would swamp every other figure; one core is also what the DESIGN's speed bar
says. The JSON records the machine (CPU, cores, load average, BLAS libraries and whether
they were limited) and the versions.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, chart, lifting, paths, proximity, raster, simulate, synthetic, tasks
from .errors import CoverageError
from .face import Face
from .fileio import atomic_path, check_output
from .protocol import Protocol
from .zones import ZoneMap

# the package's functions ``density``, ``plan`` and ``verify`` shadow their modules' names
dens = sys.modules["coverage.density"]
plan_mod = sys.modules["coverage.plan"]
pen_mod = sys.modules["coverage.pen"]
pen_fit_mod = sys.modules["coverage.pen_fit"]
verify_mod = sys.modules["coverage.verify"]

PLAN_STAGES = ("zones", "roller", "pen", "fit", "other")
STAGES = ("load", "chart", *PLAN_STAGES, "density", "verify")
KERNELS = ("locate", "lift", "interpolate", "closest_points", "splat", "window_sums", "window_spread",
           "stamp_effect", "stamp_effect_tracked", "repair_pass", "fit_objective", "raster_lookup", "rect_min",
           "resample", "merge_channels", "roll", "stamp", "curvature_fit", "principal", "frame_fields", "ends_blocked",
           "within_reach", "bin_boxes", "label_lookup", "contacts")
QUICK_BUDGET_S = 55.0
KERNEL_TARGET = 20.0
TIME_DEFINITION = (
    "planned = the plan's time_s (first contact to last contact); minimum = sum over strokes of "
    "punctures / the top puncture rate of the stroke's device (pen: needles of the stroke's cartridge "
    "x pen.stamp_hz_max; roller: drum needles x roller speed / (pi x drum diameter), the stroke's "
    "puncture_rate_hz) + sum over consecutive strokes of the straight-line distance from one stroke's "
    "end to the next one's start / session.transit_speed_mm_s (no lifts); per device, a move (planned "
    "transition or minimum straight move) counts for the device of the stroke it leads to; "
    "ratio = planned / minimum (quality bar: <= 1.3)")


@dataclass(frozen=True)
class Config:
    """What one run measures. :func:`config` gives the quick and full ones; tests use a tiny one."""

    mode: str
    repeats: int                      # runs of every end-to-end and scaling measurement
    kernel_repeats: int               # timed kernel calls after a warm-up
    reference_repeats: int            # timed reference calls (no warm-up: they take 100s of ms)
    edge_mm: float = 1.0              # face resolution of the end-to-end runs
    plan_zones: tuple | None = None   # None: every zone
    plan_device: str = "auto"
    verify: bool = True
    scan_vertices: int = 100_000
    scan_pitch_mm: float | None = None   # a given pixel pitch instead of a vertex count
    points: int = 100_000             # locate, lift, interpolate
    closest: int = 20_000             # closest_points
    splat: int = 200_000
    merge: int = 20_000
    stamps: int = 20_000
    bins_edge_mm: float = 0.7         # face resolution of the bin_boxes input (its triangles' 3D boxes)
    window_crop: int | None = None    # texels a side of the window_sums input (None: the whole grid)
    scaling_edges_mm: tuple = (2.0, 1.0, 0.7)
    scaling_zones: tuple | None = None
    scaling_device: str = "auto"
    density_factors: tuple = (0.5, 1.0, 2.0)
    density_edge_mm: float = 1.0      # face resolution of the density series
    budget_s: float | None = None     # quick: skip the scan's plan when the time left cannot hold it
    relift_deformed: bool = True      # also re-lift onto a deformed face (slow: it measures again)
    parts: tuple = ("faces", "kernels", "scaling", "relift")


def config(quick: bool, repeats: int | None = None) -> Config:
    """The quick or full configuration, with ``repeats`` runs of each measurement if given."""
    if repeats is not None and repeats < 1:
        raise CoverageError(f"--repeats = {repeats}: give at least 1 run")
    if quick:
        return Config("quick", repeats or 1, kernel_repeats=5, reference_repeats=1, closest=10_000, merge=5_000,
                      stamps=5_000, window_crop=120, scaling_edges_mm=(2.0, 1.35, 1.0), scaling_zones=("cheek_left",),
                      scaling_device="roller", density_edge_mm=2.0, budget_s=QUICK_BUDGET_S,
                      relift_deformed=False)
    return Config("full", repeats or 3, kernel_repeats=7, reference_repeats=3,
                  parts=("faces", "kernels", "plan_kernels", "scaling", "relift"))


# --- timing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Median and minimum of repeated measurements (seconds), and each run."""

    median_s: float
    min_s: float
    runs_s: tuple = ()

    def as_dict(self, unit: str = "s") -> dict:
        scale = 1e3 if unit == "ms" else 1.0
        return {f"median_{unit}": self.median_s * scale, f"min_{unit}": self.min_s * scale,
                f"runs_{unit}": [s * scale for s in self.runs_s]}


def summarise(seconds) -> Timing:
    """Median and minimum of durations (seconds)."""
    seconds = [float(s) for s in seconds]
    return Timing(statistics.median(seconds), min(seconds), tuple(seconds))


def measure(fn, repeats: int, warm_up: bool = True) -> tuple[Timing, object]:
    """Time ``fn()`` ``repeats`` times, after one untimed call if ``warm_up``: (timing, the first result)."""
    result = fn() if warm_up else None
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
        result = out if result is None else result
    return summarise(seconds), result


def growth_exponent(sizes, seconds) -> float | None:
    """k in time ~ size^k: the least-squares slope of log(time) on log(size) (1 = linear).

    None when fewer than two distinct sizes with a positive time are given.
    """
    n = np.asarray(sizes, dtype=float)
    t = np.asarray([np.nan if s is None else s for s in seconds], dtype=float)
    ok = np.isfinite(n) & np.isfinite(t) & (n > 0) & (t > 0)
    if len(np.unique(n[ok])) < 2:
        return None
    return float(np.polyfit(np.log(n[ok]), np.log(t[ok]), 1)[0])


def clear_caches() -> int:
    """Empty every ``functools`` cache of the package's modules, as a fresh process has them;
    returns how many were emptied. Objects already built (faces, zone maps) keep their data."""
    count = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "coverage" or name.startswith("coverage.")):
            continue
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) == name and callable(getattr(value, "cache_clear", None)):
                value.cache_clear()
                count += 1
    return count


def load_average() -> list | None:
    """The 1, 5 and 15 minute load averages, or None where the system does not give them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# --- machine ---------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Platform, CPU, cores, Python, library versions, BLAS thread settings, time and command."""
    versions = {name.lower(): _version(name) for name in ("numpy", "scipy", "shapely", "trimesh", "Cython")}
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "versions": {**versions, "coverage": __version__},
            # the chart's sparse LU calls BLAS: multi-threaded OpenBLAS on busy cores is many times slower
            "blas_threads_env": {k: os.environ.get(k) for k in
                                 ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
            "load_average": {"start": load_average()},
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv])}


def blas_one_thread() -> tuple:
    """(context manager, description): BLAS limited to one thread inside it, with threadpoolctl.

    The chart's sparse LU calls BLAS; on busy cores multi-threaded OpenBLAS spins and the chart
    takes ten to forty times longer, which would swamp every other figure. One thread is
    also what the DESIGN's "on one core" means. Without threadpoolctl nothing is limited.
    """
    try:
        import threadpoolctl
    except ImportError:
        return contextlib.nullcontext(), {"limited_to_one_thread": False,
                                         "why": "threadpoolctl is not installed: BLAS threads as configured"}
    libraries = [{"api": lib.get("internal_api"), "threads": lib.get("num_threads"), "version": lib.get("version")}
                 for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"]
    return threadpoolctl.threadpool_limits(limits=1, user_api="blas"), {
        "limited_to_one_thread": True, "why": "threadpoolctl", "libraries_before": libraries}


# --- stage clock -----------------------------------------------------------------------------

class StageClock:
    """Own time (s) of wrapped planner functions, per (stage, step), while ``active``.

    A wrapped function may open a stage (the roller, the pen...); its callees are charged
    to that stage until it returns. Time a function spends in wrapped callees is theirs.
    Only the thread that runs the plan is timed: a piece the plan runs on its other thread
    (:mod:`coverage.tasks`) is not, and the time this thread waits for it is charged to the
    step it waits in (the stages add up to the plan's wall clock, not to its CPU time).
    ``captured[key]`` keeps the arguments of the first call of a function wrapped with
    ``capture=key`` (the drum kernel is benchmarked on the bundled face's plan's own runs).
    """

    def __init__(self):
        self.active = False
        self.owner = None
        self.stage = "other"
        self.stack = []      # frames [step, resumed_at, stage to restore or None]
        self.seconds = {}    # (stage, step) -> s
        self.captured = {}

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

    def wrap(self, fn, step: str, stage: str | None = None, then: tuple | None = None, capture: str | None = None):
        """``fn`` timed as ``step`` (opening ``stage``; switching stage ``then[0]`` to ``then[1]`` after)."""
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.active or threading.get_ident() != self.owner:
                return fn(*args, **kwargs)
            if capture:
                self.captured.setdefault(capture, args)
            self.enter(step, stage)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave(then)
        return timed

    def run(self, fn):
        """``fn()`` with the clock on, from zero: (result, {(stage, step): s}, wall s)."""
        self.seconds, self.stack, self.stage, self.active = {}, [], "other", True
        self.owner = threading.get_ident()
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


def _patches():
    """(owner, attribute, step, stage opened, stage switch after, capture key) of every timed function."""
    return [
        (ZoneMap, "default", "ZoneMap.default", "zones", None, None),
        (plan_mod, "_roller_part", "plan._roller_part (own)", "roller", None, None),
        (plan_mod, "_region_sweeps", "plan._region_sweeps (pass lines, headlands)", "roller", None, None),
        (plan_mod, "_roller_runs_made", "plan._roller_runs_made (own: order, lift, counts)", "roller", None, None),
        (plan_mod, "_roller_frames", "plan._roller_frames (lift, frames)", None, None, None),
        (plan_mod, "_roller_finish", "plan._roller_finish (strokes, timing)", "roller", None, None),
        (plan_mod, "_roller_timed", "plan._roller_timed (own: timing)", None, None, None),
        (plan_mod, "_simulate_runs", "plan._simulate_runs (drum simulation)", None, None, "roll"),
        (plan_mod, "transit_paths", "transit_paths (safe moves)", None, None, None),
        (plan_mod, "_pen_grid", "plan._pen_grid (own: footprint clearance)", "pen", None, None),
        (plan_mod, "_pen_field", "plan._pen_field (own)", "pen", None, None),
        (plan_mod, "texel_grid", "texel_grid", "pen", None, None),
        (plan_mod, "_pen_part", "plan._pen_part (own: status)", "pen", None, None),
        (pen_fit_mod, "fitted_pen", "pen_fit.fitted_pen (own: regions, rounding)", None, None, None),
        (pen_mod, "dose_field", "pen.dose_field", None, None, None),
        (pen_mod, "zone_paths", "pen.zone_paths", None, None, None),
        (pen_mod, "join_paths", "pen.join_paths", None, None, None),
        (pen_fit_mod, "candidate_stamps", "pen_fit.candidate_stamps (simulation)", None, None, None),
        (pen_fit_mod, "fit", "pen_fit.fit", "fit", None, None),
        (pen_fit_mod, "repair", "pen_fit.repair", "fit", None, None),
        (pen_mod, "cap_guard", "pen.cap_guard", None, None, None),
        (plan_mod, "pen_strokes", "pen_strokes (own: frames, stamps)", "pen", None, None),
    ]


class instrumented:
    """Context manager: the planner's stage functions wrapped by ``clock`` inside the block.

    ``missing`` lists the functions the planner no longer has (their time stays with their caller).
    """

    def __init__(self, clock: StageClock):
        self.clock = clock
        self.saved = []
        self.missing = []

    def __enter__(self):
        for owner, name, step, stage, then, capture in _patches():
            raw = vars(owner).get(name)
            if raw is None:
                self.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
                continue
            wrapped = self.clock.wrap(getattr(owner, name), step, stage, then, capture)
            self.saved.append((owner, name, raw))
            setattr(owner, name, staticmethod(wrapped) if isinstance(raw, (classmethod, staticmethod)) else wrapped)
        return self

    def __exit__(self, *exc):
        for owner, name, raw in reversed(self.saved):
            setattr(owner, name, raw)
        self.saved = []
        return False


# --- planning helpers ------------------------------------------------------------------------

def restrict_zones(zones: ZoneMap, names) -> ZoneMap:
    """The same zone map with only the zones ``names`` (same keep-outs and protocol)."""
    unknown = [n for n in names if n not in zones.outlines]
    if unknown:
        raise CoverageError(f"zones {unknown} are not zones of this map; known: {', '.join(zones.names)}")
    return ZoneMap(zones.face, zones.protocol, {n: zones.outlines[n] for n in names}, zones.exclusions)


def make_plan(face: Face, protocol: Protocol, zone_names, device: str, threads: int | None = None):
    """``coverage.plan`` of the face (every zone), or of the zones ``zone_names`` only
    (``threads``: as ``coverage.plan``'s; default, the cores available)."""
    if zone_names is None:
        return plan_mod.plan(face, protocol, device=device, threads=threads)
    zones = restrict_zones(ZoneMap.default(face, protocol), zone_names)
    return plan_mod.plan(face, protocol, zones, device=device, threads=threads)


def scaled_protocol(factor: float) -> Protocol:
    """The default protocol with the session target (so every zone's target and cap) times ``factor``."""
    base = Protocol.default()
    if factor == 1.0:
        return base
    return Protocol.from_dict({"session": {"target_per_cm2": base.session.target_per_cm2 * factor}},
                              source=f"<default x{factor:g} target>")


# --- treatment time against the physical minimum ---------------------------------------------

def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def treatment_time(plan) -> dict:
    """Planned time vs the physical minimum (see :data:`TIME_DEFINITION`), in total and per device,
    and the pen's contact per stroke pattern."""
    protocol = plan.protocol
    pen_hz_max = protocol.pen.stamp_hz_max
    transit_speed = protocol.session.transit_speed_mm_s
    strokes = sorted(plan.strokes, key=lambda s: s.times_s[0])
    device_of = {s.id: s.device for s in strokes}
    sums = ("strokes", "punctures", "contact_s", "moves_s", "min_contact_s", "min_moves_s", "min_contact_by_stamps_s")
    rows = {}
    patterns = {}      # the pen's contact by stroke pattern (raster, contour, touch-up)
    previous = None
    for s in strokes:
        r = rows.setdefault(s.device, dict.fromkeys(sums, 0))
        if s.device == "pen":
            rate = s.cartridge["needles"] * pen_hz_max
            r["min_contact_by_stamps_s"] += len(s.stamp_uv) / pen_hz_max
            q = patterns.setdefault(getattr(s, "pattern", "pen"), dict.fromkeys(
                ("strokes", "punctures", "stamps", "contact_s", "min_contact_s"), 0))
            q["strokes"] += 1
            q["punctures"] += int(s.punctures)
            q["stamps"] += len(s.stamp_uv)
            q["contact_s"] += s.duration_s
            q["min_contact_s"] += s.punctures / rate
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
        r["ratio"] = _ratio(r["planned_s"], r["min_s"])
        r["contact_ratio"] = _ratio(r["contact_s"], r["min_contact_s"])
        r["moves_ratio"] = _ratio(r["moves_s"], r["min_moves_s"])
    for q in patterns.values():
        q["contact_ratio"] = _ratio(q["contact_s"], q["min_contact_s"])
    return {"pen_stamp_hz_max": pen_hz_max, "transit_speed_mm_s": transit_speed, "devices": rows, "total": total,
            "pen_patterns": patterns}


def executed_time(plan, min_s: float) -> dict:
    """The session as a tool within the protocol's limits runs it (:func:`coverage.export.trajectory`
    at its default rate: every stroke starts and ends at rest, corners and turns slowed),
    per state, against the same physical minimum ``min_s`` as the plan's own time."""
    from . import export

    traj = export.trajectory(plan)
    dt = 1.0 / traj.rate_hz
    touching = np.isin(traj.state, (export.CONTACT, export.FIRING))
    out = {"what": "coverage.export.trajectory(plan) at its default rate and smoothing (limits of speed, "
                   "acceleration and turn rate applied); ratio = its duration / the same minimum",
           "rate_hz": traj.rate_hz, "smoothing": traj.meta.get("smoothing"), "session_s": traj.duration_s,
           "air_s": float((~touching).sum() * dt)}
    for name, code in export.DEVICE_CODES.items():
        out[f"{name}_contact_s"] = float((touching & (traj.device == code)).sum() * dt)
    out["ratio"] = _ratio(traj.duration_s, min_s)
    return out


# --- end to end --------------------------------------------------------------------------------

@dataclass
class FaceCase:
    """One face to plan end to end: how to load it, and what is known about the input."""

    name: str
    title: str
    load: object            # () -> Face
    load_step: str
    facts: dict = field(default_factory=dict)


def default_case(cfg: Config) -> FaceCase:
    return FaceCase("default", f"bundled face, {cfg.edge_mm:g} mm", lambda: Face.default(cfg.edge_mm),
                    "Face.default()")


def scan_case(cfg: Config) -> FaceCase:
    """The synthetic scan, made once (not timed as a stage: it is the input)."""
    start = time.perf_counter()
    subject = synthetic.deformed_face(Face.default(cfg.edge_mm))
    if cfg.scan_pitch_mm is not None:
        scan, pitch = synthetic.make_scan(subject, units="m", pitch_mm=cfg.scan_pitch_mm, seed=0), cfg.scan_pitch_mm
    else:
        scan, pitch = synthetic.scan_with_vertices(subject, cfg.scan_vertices, units="m", seed=0)
    facts = {"subject": subject.source, "target_vertices": cfg.scan_vertices, "pitch_mm": pitch, "units": "m",
             "seed": 0, "vertices": len(scan.vertices), "triangles": len(scan.faces),
             "make_s": time.perf_counter() - start}
    title = f"{len(scan.vertices) // 1000}k-vertex scan"
    return FaceCase("scan", title, lambda: Face.load((scan.vertices, scan.faces), scan.landmarks,
                                                     edge_mm=cfg.edge_mm),
                    f"Face.load ({len(scan.vertices)} vertices, metres)", facts)


def _plan_facts(plan, verdict) -> dict:
    face = plan.face
    out = {"face": {"source": face.source, "vertices": len(face.vertices), "triangles": len(face.faces),
                    "unobserved_fraction": float(face.unobserved.mean())},
           "device": plan.device, "zones": list(plan.zones.names), "strokes": len(plan.strokes),
           "transitions": len(plan.transitions), "punctures": len(plan.puncture_points),
           "time_s": plan.time_s}
    if verdict is not None:
        out.update(verify_ok=bool(verdict.ok), verify_failed=verdict.failed())
    return out


def same_plan(a, b) -> bool:
    """Whether two plans are the same bit for bit: every puncture, stroke path and time, and move."""
    def arrays(p):
        out = [p.puncture_points, p.puncture_uv, p.puncture_stroke, p.puncture_depth_mm]
        for s in p.strokes:
            out += [s.uv, s.times_s] + ([] if s.stamp_uv is None else [s.stamp_uv])
        for t in p.transitions:
            out += [t.points, t.times_s]
        return out

    one, two = arrays(a), arrays(b)
    return (len(a.strokes) == len(b.strokes) and len(a.transitions) == len(b.transitions) and len(one) == len(two)
            and all(x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
                    for x, y in zip(map(np.asarray, one), map(np.asarray, two))))


def _stage_summary(per_run: list, walls: list) -> tuple[dict, dict]:
    """({stage: Timing} with ``plan`` and ``total``, {stage: {step: Timing}}) over the runs."""
    keys = list(dict.fromkeys(k for run in per_run for k in run))
    stages = {}
    for stage in STAGES:
        if any(k[0] == stage for k in keys):
            stages[stage] = summarise([sum(s for k, s in run.items() if k[0] == stage) for run in per_run])
    if walls:
        stages["plan"] = summarise(walls)
    stages["total"] = summarise([sum(run.values()) for run in per_run])
    steps = {}
    for stage in STAGES:
        mine = [k for k in keys if k[0] == stage]
        timings = {k[1]: summarise([run.get(k, 0.0) for run in per_run]) for k in mine}
        if timings:
            steps[stage] = dict(sorted(timings.items(), key=lambda kv: -kv[1].median_s))
    return stages, steps


def run_face(case: FaceCase, cfg: Config, clock: StageClock, progress, plan_it: bool = True) -> dict:
    """``cfg.repeats`` cold runs of one face: stage timings, plan facts and treatment time.

    Each run plans twice from a cold start: on one thread with every stage timed (where
    the time goes: ``plan_one_thread``), then with the default threads untimed inside
    (``plan``: what a caller waits), whose plan must equal the first bit for bit.
    With ``plan_it`` False only load, chart and zones are timed.
    """
    per_run, walls, plan, verdict = [], [], None, None
    threads, walls_threads, identical = tasks.thread_count(), [], []
    for i in range(cfg.repeats):
        clear_caches()
        seconds = {}
        start = time.perf_counter()
        face = case.load()
        seconds[("load", case.load_step)] = time.perf_counter() - start
        start = time.perf_counter()
        _ = face.uv, face.chart_grid
        seconds[("chart", "face.uv + face.chart_grid")] = time.perf_counter() - start
        protocol = Protocol.default()
        if not plan_it:
            start = time.perf_counter()
            ZoneMap.default(face, protocol)
            seconds[("zones", "ZoneMap.default")] = time.perf_counter() - start
            per_run.append(seconds)
            continue
        plan, staged, wall = clock.run(lambda f=face, p=protocol: make_plan(f, p, cfg.plan_zones, cfg.plan_device,
                                                                            threads=1))
        seconds.update(staged)
        walls.append(wall)
        if threads > 1:
            clear_caches()
            again = case.load()
            _ = again.uv, again.chart_grid
            start = time.perf_counter()
            other = make_plan(again, Protocol.default(), cfg.plan_zones, cfg.plan_device, threads=threads)
            walls_threads.append(time.perf_counter() - start)
            identical.append(same_plan(plan, other))
        start = time.perf_counter()
        _ = plan.density
        seconds[("density", "Plan.density")] = time.perf_counter() - start
        if cfg.verify:
            start = time.perf_counter()
            verdict = verify_mod.verify(plan)
            seconds[("verify", "coverage.verify")] = time.perf_counter() - start
        per_run.append(seconds)
        on_threads = f", on {threads} threads {walls_threads[-1]:.1f} s" if walls_threads else ""
        progress(f"  {case.name} run {i + 1}/{cfg.repeats}: plan on one thread {wall:.1f} s{on_threads}, end to "
                 f"end {sum(seconds.values()):.1f} s (load average {(load_average() or ['?'])[0]})")
    stages, steps = _stage_summary(per_run, walls_threads or walls)
    if walls:
        stages["plan_one_thread"] = summarise(walls)
    entry = {"title": case.title, "runs": cfg.repeats, "input": case.facts, "stages": stages, "steps": steps,
             "threads": threads if walls_threads else 1}
    if identical:
        entry["threads_identical"] = all(identical)
    if plan is not None:
        entry["plan"] = _plan_facts(plan, verdict)
        entry["treatment_time"] = treatment_time(plan)
        if plan.strokes:
            entry["treatment_time"]["executed"] = executed_time(plan, entry["treatment_time"]["total"]["min_s"])
        entry["_plan"] = plan
    return entry


def bench_face(case_maker, cfg: Config, clock: StageClock, progress, budget: tuple | None = None) -> dict:
    """End-to-end runs of one face (``case_maker(cfg)`` gives it), its entry; a failure is recorded.

    budget : ``(deadline, reference entry)``: when the time left before the deadline
        (``time.perf_counter()``) cannot hold about 1.25 x the reference's runs, only load,
        chart and zones are timed and the entry says what was skipped.
    """
    try:
        case = case_maker(cfg)
        plan_it, skipped = True, None
        if budget is not None and "stages" in budget[1]:
            # a scan plan costs about what the bundled face's did, plus its bigger load
            need = budget[1]["stages"]["total"].median_s * cfg.repeats * 1.25
            left = budget[0] - time.perf_counter()
            if need > left:
                plan_it = False
                skipped = (f"plan, density and verify: the quick budget has {max(left, 0):.0f} s left and they "
                           f"would take about {need:.0f} s")
        progress(f"{case.title}: {cfg.repeats} cold run(s)" + ("" if plan_it else f" ({skipped})"))
        with instrumented(clock) as inst:
            entry = run_face(case, cfg, clock, progress, plan_it)
        entry["unwrapped"] = inst.missing
        if skipped:
            entry["skipped"] = skipped
        return entry
    except Exception:  # noqa: BLE001  (one face failing must not lose the other figures)
        progress(f"{case_maker.__name__}: failed:\n{traceback.format_exc(limit=6)}")
        return {"error": traceback.format_exc(limit=6)}


# --- kernels -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One kernel and its reference on the same input, and how to compare their results."""

    name: str
    size: str
    kernel: object     # () -> result
    reference: object  # () -> result
    agree: object      # (kernel result, reference result) -> bool


def chart_points(face: Face, n: int, rng) -> np.ndarray:
    """``(n, 2)`` chart points (mm) uniform over the chart's bounding box."""
    return rng.uniform(face.uv.min(axis=0), face.uv.max(axis=0), (n, 2))


def on_chart_points(face: Face, n: int, rng) -> np.ndarray:
    """``(n, 2)`` chart points (mm) uniform over the chart itself (all on the face), random order."""
    found = np.empty((0, 2))
    while len(found) < n:
        uv = chart_points(face, 2 * n, rng)
        found = np.concatenate([found, uv[face.locate(uv)[0] >= 0]])
    return found[:n]


def surface_points(face: Face, n: int, rng, noise_mm: float = 0.0) -> np.ndarray:
    """``(n, 3)`` points (mm): random chart points lifted onto the face, plus N(0, noise_mm)."""
    points = face.lift(on_chart_points(face, n, rng)).points
    return points + rng.normal(0.0, noise_mm, (n, 3))


def _inside_close(a: np.ndarray, b: np.ndarray, inside: np.ndarray) -> bool:
    return bool(np.allclose(a[inside], b[inside]))


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 else str(n)


def locate_case(face: Face, n: int) -> Case:
    """Chart point location of random chart points (same grid for both)."""
    query = chart_points(face, n, np.random.default_rng(0))
    args = (face.chart_grid, query)
    return Case("locate", f"{_k(n)} chart points", lambda: lifting.locate(*args),
                lambda: lifting.locate_reference(*args), lambda k, r: bool(np.array_equal(k[0], r[0])))


def lift_case(face: Face, n: int) -> Case:
    """``face.lift`` of random chart points vs locate + interpolate (positions, unit normals) in NumPy."""
    query = chart_points(face, n, np.random.default_rng(0))

    def reference():
        tri, bary = lifting.locate_reference(face.chart_grid, query)
        points = lifting.interpolate_reference(face.vertices, face.faces, tri, bary)
        normals = lifting.interpolate_reference(face.normals, face.faces, tri, bary, normalize=True)
        return tri, points, normals

    def agree(k, r):
        inside = r[0] >= 0
        return bool(np.array_equal(k.tri, r[0]) and _inside_close(k.points, r[1], inside)
                    and _inside_close(k.normals, r[2], inside))

    return Case("lift", f"{_k(n)} chart points", lambda: face.lift(query), reference, agree)


def interpolate_case(face: Face, n: int) -> Case:
    """Barycentric interpolation of vertex normals (normalised) at located chart points."""
    tri, bary = face.locate(on_chart_points(face, n, np.random.default_rng(0)))
    args = (face.normals, face.faces, tri, bary, True)
    return Case("interpolate", f"{_k(n)} points, unit normals", lambda: lifting.interpolate(*args),
                lambda: lifting.interpolate_reference(*args), lambda k, r: bool(np.allclose(k, r)))


def closest_case(face: Face, n: int) -> Case:
    """Closest surface points of points scattered N(0, 1 mm) about the face."""
    query = surface_points(face, n, np.random.default_rng(0), noise_mm=1.0)

    def agree(k, r):
        # ties between triangles may pick different ids; the distance and the point may not differ
        points = [np.einsum("kj,kjd->kd", bary, face.vertices[face.faces[tri]]) for tri, bary, _ in (k, r)]
        return bool(np.allclose(k[2], r[2]) and np.allclose(*points))

    return Case("closest_points", f"{_k(n)} points, 1 mm off the skin",
                lambda: proximity.closest_points(face.surface_grid, query),
                lambda: proximity.closest_points_reference(face.vertices, face.faces, query), agree)


def splat_case(face: Face, grid, n: int) -> Case:
    """Splat random chart points into a grid of the texel grid's shape."""
    uv = chart_points(face, n, np.random.default_rng(0))
    args = (uv, grid.origin, grid.cell_mm, grid.shape)
    return Case("splat", f"{_k(n)} points, {grid.shape[0]}x{grid.shape[1]} texels",
                lambda: dens.splat(*args), lambda: dens.splat_reference(*args),
                lambda k, r: bool(np.allclose(k[0], r[0]) and k[1] == r[1]))


def window_sums_case(grid, crop: int | None) -> Case:
    """Window sums of a Poisson count grid over the texel grid's windows (a central crop if given)."""
    args, size = _window_args(grid, crop)
    return Case("window_sums", size, lambda: dens.window_sums(*args), lambda: dens.window_sums_reference(*args),
                lambda k, r: bool(np.allclose(k, r)))


def window_spread_case(grid, crop: int | None) -> Case:
    """The adjoint of the window sums (the pen fit's gradient) over the same texels as :func:`window_sums_case`."""
    args, size = _window_args(grid, crop)
    return Case("window_spread", size, lambda: dens.window_spread(*args),
                lambda: dens.window_spread_reference(*args), lambda k, r: bool(np.allclose(k, r)))


def _window_args(grid, crop: int | None) -> tuple:
    """``((values, half_u, half_v, mask), size label)``: a Poisson count grid over the texel
    grid's windows, or over a central crop of ``crop`` texels a side."""
    h, w = grid.shape
    rows, cols = slice(None), slice(None)
    if crop is not None and crop < min(h, w):
        r0, c0 = (h - crop) // 2, (w - crop) // 2
        rows, cols = slice(r0, r0 + crop), slice(c0, c0 + crop)
    half_u, half_v, mask = grid.half_u[rows, cols], grid.half_v[rows, cols], grid.treatable[rows, cols]
    values = np.random.default_rng(0).poisson(2.0, mask.shape).astype(np.float64)
    return (values, half_u, half_v, mask), f"{mask.shape[0]}x{mask.shape[1]} texels" + (", central crop" if crop else "")


def random_stamps(grid, n: int, rng):
    """``(h * w, n)`` CSC: ``n`` stamps of 12 punctures, each scattered within 7 texels of a
    random treatable texel (the pen's 7 mm footprint on the 0.5 mm grid)."""
    from scipy import sparse

    treat = grid.treatable.ravel()
    h, w = grid.shape
    ci, cj = np.divmod(rng.choice(np.nonzero(treat)[0], n), w)
    rows = (np.clip(ci[:, None] + rng.integers(-7, 8, (n, 12)), 0, h - 1) * w
            + np.clip(cj[:, None] + rng.integers(-7, 8, (n, 12)), 0, w - 1)).ravel()
    return sparse.csc_array((np.ones(12 * n), (rows, np.repeat(np.arange(n), 12))), shape=(h * w, n))


def _random_effects(grid, n: int, rng) -> tuple:
    """``(stamps, make)``: :func:`random_stamps` and a maker of fresh
    :class:`coverage.density.StampEffects` of them on the grid's windows, every texel's band
    150 to 250 per cm^2 (the stamp-effect and repair-pass cases)."""
    h, w = grid.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        per_count = np.where(grid.treatable.ravel(), 100.0 / grid.window_area_mm2.ravel(), 0.0)
    stamps = random_stamps(grid, n, rng)

    def make():
        return dens.StampEffects(stamps, (h, w), per_count, grid.half_u.ravel(), grid.half_v.ravel(),
                                 np.full(h * w, 150.0), np.full(h * w, 250.0), grid.area_mm2.ravel())

    return stamps, make


def stamp_effect_cases(grid, n: int) -> list:
    """What single stamps do to the windowed density (the pen fit's repair weighs them so):
    ``n`` stamps of 12 punctures scattered over the treatable texels, against a random density;
    ``stamp_effect`` the plain kernel, ``stamp_effect_tracked`` the one the repair uses (each
    texel's room before its band state changes kept with the density: :meth:`StampEffects.track`)."""
    rng = np.random.default_rng(0)
    h, w = grid.shape
    stamps, effects_on = _random_effects(grid, n, rng)
    effects, tracked = effects_on(), effects_on()
    density = rng.uniform(100.0, 300.0, h * w)
    tracked_density = density.copy()
    if not tracked.track(tracked_density):  # pragma: no cover - whole counts always track
        raise RuntimeError("stamp_effect_tracked: the stamps did not track")
    columns = np.arange(n)
    size = f"{n} stamps x 12 punctures, {h}x{w} texels"

    def reference():
        return effects.effects_reference(columns, 1.0, density)

    return [Case("stamp_effect", size, lambda: effects.effects(columns, 1.0, density), reference,
                 lambda k, r: bool(np.allclose(k, r))),
            Case("stamp_effect_tracked", size, lambda: tracked.effects(columns, 1.0, tracked_density), reference,
                 lambda k, r: bool(np.allclose(k, r)))]


def repair_pass_case(grid, n: int, repeats: int) -> Case:
    """The pen repair's patch passes (:meth:`coverage.density.StampEffects.patch_moves`, one
    compiled call a round) against their NumPy twin (:meth:`~coverage.density.StampEffects.
    patch_moves_reference`): ``n`` random stamps of 12 punctures, half fired, over a random
    density on the bundled face's texels; a drop pass over 150 random treatable texels, then
    an add pass over 300. The passes change what they are given, so every call reads a state
    of its own, each made before the timing starts (``repeats`` of them a side, and one for
    the kernel's warm-up); both sides must make the same moves and leave the same stamps
    and densities, bit for bit."""
    rng = np.random.default_rng(2)
    treat = grid.treatable.ravel()
    h, w = grid.shape
    stamps, effects_on = _random_effects(grid, n, rng)
    windows = dens.WindowStamps(stamps.tocsr(), (h, w))
    fire = rng.random(n) < 0.5
    density = rng.uniform(100.0, 300.0, h * w)
    grad = rng.normal(size=n)
    drops, adds = (rng.choice(np.flatnonzero(treat), k) for k in (150, 300))

    def state():
        effects = effects_on()
        d = density.copy()
        if not effects.track(d):  # pragma: no cover - whole counts always track
            raise RuntimeError("repair_pass: the stamps did not track")
        return effects, d, fire.copy(), np.zeros(n, dtype=bool)

    def run(states, twin):
        effects, d, f, blocked = states.pop()
        moves = effects.patch_moves_reference if twin else effects.patch_moves
        moved = [moves("drop", drops, 40, f, blocked, None, grad, windows),
                 moves("add", adds, 40, f, blocked, None, grad, windows)]
        return np.concatenate(moved), f, blocked, d

    kernel_states = [state() for _ in range(repeats + 1)]
    twin_states = [state() for _ in range(repeats)]
    return Case("repair_pass", f"{n} stamps x 12 punctures, 150 + 300 patches, {h}x{w} texels",
                lambda: run(kernel_states, False), lambda: run(twin_states, True),
                lambda k, r: all(np.array_equal(a, b) for a, b in zip(k, r)))


def fit_objective_case(zones, grid, n: int) -> Case:
    """The pen fit's objective and gradient (:class:`coverage.pen_fit.FitObjective`, the
    compiled pass the fit calls ~200 times a plan) against its NumPy twin
    (:func:`coverage.pen_fit.objective_reference`: scipy's sparse products, the windowed
    density and the band penalty): ``n`` random stamps of 12 punctures at random weights over
    a random base, the bundled face's own dose targets."""
    from . import pen_fit

    rng = np.random.default_rng(1)
    spread = random_stamps(grid, n, rng)
    targets = pen_fit.dose_targets(zones, grid)
    base = rng.integers(0, 3, grid.shape).astype(np.float64)
    x = rng.uniform(0.0, 1.0, n)
    objective = pen_fit.FitObjective(grid, targets, base, spread)
    if not objective.compiled:  # pragma: no cover - a CSC matrix of this size always is
        raise RuntimeError("fit_objective: the objective did not compile")

    def agree(k, r):
        return bool(np.isclose(k[0], r[0], rtol=1e-9) and np.allclose(k[1], r[1], rtol=1e-9, atol=1e-12))

    return Case("fit_objective", f"{n} stamps x 12 punctures, {grid.shape[0]}x{grid.shape[1]} texels",
                lambda: objective(x), lambda: pen_fit.objective_reference(x, grid, targets, base, spread), agree)


def raster_cases(grid, n: int) -> list:
    """The roller's raster kernels on the texel grid's skin areas: a point lookup of ``n``
    chart points, and the least value over a drum-sized grid of 11 x 6 points around each of
    ``n // 10`` points (the drum's outline check)."""
    rng = np.random.default_rng(0)
    values = np.ascontiguousarray(grid.area_mm2)
    h, w = values.shape
    lo = grid.origin
    uv = lo + rng.uniform(0, 1, (n, 2)) * np.array([w, h]) * grid.cell_mm
    args = (values, lo, grid.cell_mm, uv, -1.0)
    lookup = Case("raster_lookup", f"{_k(n)} chart points, {h}x{w} texels",
                  lambda: raster.lookup(*args), lambda: raster.lookup_reference(*args),
                  lambda k, r: bool(np.array_equal(k, r)))
    m = n // 10
    angle = rng.uniform(0, 2 * np.pi, m)
    dir_a = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    dir_b = np.stack([-dir_a[:, 1], dir_a[:, 0]], axis=1)
    ga, gb = np.meshgrid(np.linspace(-10, 10, 11), np.linspace(-10, 10, 6))
    rect = (values, lo, grid.cell_mm, uv[:m], dir_a, dir_b, ga.ravel(), gb.ravel())
    rect_min = Case("rect_min", f"{_k(m)} points x 66 offsets", lambda: raster.rect_min(*rect),
                    lambda: raster.rect_min_reference(*rect), lambda k, r: bool(np.array_equal(k, r)))
    return [lookup, rect_min]


def roller_cases(face: Face, zones: ZoneMap) -> list:
    """The roller's per-frame kernels on one sweep frame of the default plan's own data (the
    larger roller region, its first direction, the default drum):

    * ``frame_fields``: the frame grid's triangle, chart scale and band (what
      ``SweepFrame.build`` asks of every grid point, rows visited column by column);
    * ``within_reach``: the samples within the drum's reach of a sample where the drum works,
      along each row of that grid (the rows as paths, the band's mask as the standing samples);
    * ``ends_blocked``: the drum run on past both ends of every stretch of the grid's rows
      where it works, over the keep-out clearance raster (the plan's own), with the skin frame
      and outline ``drum_fits`` uses at a path's ends.
    """
    from . import roller

    protocol = Protocol.default()
    region = max(roller.roller_regions(zones, protocol), key=lambda r: r.polygon.area)
    dose = protocol.zone(region.zones[0])
    drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
    theta = dose.directions_deg[0]
    conform = roller.conformity(face, drum, theta)
    frame = roller.SweepFrame.build(face, region, theta, conform)
    rows, cols = frame.scale.shape
    uu, vv = np.meshgrid(frame.u_cols, frame.v_rows)
    chart = np.stack([uu.ravel(), vv.ravel()], axis=1) @ frame.to_chart.T
    fields = (face, chart, region.inside, conform)

    def same(k, r):
        return all(np.array_equal(a, b, equal_nan=True) for a, b in zip(k, r))

    frame_fields = Case("frame_fields", f"{_k(rows * cols)} sweep grid points, {len(region.zones)}-zone region",
                        lambda: roller.sweep_frame_fields(*fields, rows),
                        lambda: roller.sweep_frame_fields_reference(*fields), same)

    works = ~np.isnan(frame.works_swath)              # (rows, cols): each row a path along u'
    reach = roller.drum_reach(drum)
    starts = np.arange(rows + 1, dtype=np.int64) * cols
    ok = works.ravel()
    args = (ok, starts[:-1], starts[1:], reach)
    within_reach = Case("within_reach", f"{rows} paths x {cols} samples, reach {reach}",
                        lambda: roller._within_reach_of_standing(*args),
                        lambda: roller._within_reach_of_standing_reference(*args), same)

    # the ends of every stretch of a row where the drum works: first ends run on backwards
    edge = np.diff(np.pad(works, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    first = np.flatnonzero(edge[:, :-1] == 1)
    last = np.flatnonzero(edge[:, 1:] == -1)
    ends = np.concatenate([first, last])
    sign = np.concatenate([np.full(len(first), -1.0), np.full(len(last), 1.0)])
    scale = frame.scale.ravel()[ends][:, None]
    along = np.broadcast_to(frame.to_chart[:, 0], (len(ends), 2)) / scale   # chart mm per skin mm
    across = np.broadcast_to(frame.to_chart[:, 1], (len(ends), 2)) / scale
    ahead = np.linspace(0.0, drum.diameter_mm / 2, reach + 1)[1:]
    steps = np.linspace(-drum.width_mm / 2, drum.width_mm / 2, int(np.ceil(drum.width_mm / roller.BODY_STEP_MM)) + 1)
    need = 0.5 * np.hypot(roller.BODY_STEP_MM, roller.PATH_STEP_MM) / scale[:, 0]
    blocked = (roller.keepout_clearance(zones), chart[ends], along, across, sign, ahead, steps, need)
    ends_blocked = Case("ends_blocked", f"{len(ends)} path ends x {len(ahead)}x{len(steps)} outline points",
                        lambda: roller.ends_blocked(*blocked), lambda: roller.ends_blocked_reference(*blocked),
                        lambda k, r: bool(np.array_equal(k, r)))
    return [frame_fields, ends_blocked, within_reach]


def bin_boxes_case(edge_mm: float) -> Case:
    """Grid binning of the 3D boxes of the bundled face's triangles at ``edge_mm`` (~109k at
    0.7 mm), on the surface search grid's own cells (``proximity.build_grid``)."""
    face = Face.default(edge_mm)
    grid = proximity.build_grid(face.vertices, face.faces)
    lo, hi = np.ascontiguousarray(grid.triangles[:, :3]), np.ascontiguousarray(grid.triangles[:, 3:6])
    args = (lo, hi, grid.origin, grid.cell, tuple(int(d) for d in grid.dims))

    def agree(k, r):
        return all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(k, r))

    return Case("bin_boxes", f"{_k(len(lo))} triangle boxes, {'x'.join(str(d) for d in args[4])} cells",
                lambda: lifting.bin_boxes(*args), lambda: lifting.bin_boxes_reference(*args), agree)


def contacts_case(face: Face, zones: ZoneMap) -> Case:
    """The region cuts' exact contacts (:func:`coverage.contact.contacts`): every segment and
    vertex of each exclusion's outline (eyes, lips, nostrils: loops through mesh vertices)
    paired with the chart triangles whose boxes meet its box, as a region cut pairs them,
    every exclusion's pairs in one call."""
    from . import contact, regions

    res = regions._resolution(face.subdivisions)
    ends_all, tri_all, seg_all = [], [], []
    for exclusion in zones.exclusions.values():
        ends, seg, tri = regions.boundary_pairs(res, exclusion.region)
        seg_all.append(seg + sum(len(e) for e in ends_all))
        ends_all.append(ends)
        tri_all.append(tri)
    args = (res.corners, np.concatenate(ends_all), np.concatenate(tri_all), np.concatenate(seg_all))
    return Case("contacts", f"{_k(len(args[2]))} (triangle, outline segment) pairs",
                lambda: contact.contacts(*args), lambda: contact.contacts_reference(*args),
                lambda k, r: bool(np.array_equal(k, r)))


def label_lookup_case(face: Face, zones: ZoneMap, n: int) -> Case:
    """The zone map's label cells (``ZoneMap.label_at``'s first step) at ``n`` random chart points
    on the face."""
    from .zones import label_cells

    cells = label_cells(tuple(zones.polygons.values()))
    uv = on_chart_points(face, n, np.random.default_rng(0))
    return Case("label_lookup", f"{_k(n)} chart points, {cells.state.shape[0]}x{cells.state.shape[1]} cells",
                lambda: cells.lookup(uv), lambda: cells.lookup_reference(uv),
                lambda k, r: all(np.array_equal(a, b) for a, b in zip(k, r)))


def resample_case(face: Face, n_paths: int) -> Case:
    """Skin-length resampling of ``n_paths`` random chart polylines of 40 points (0.5 mm steps)."""
    rng = np.random.default_rng(0)
    uv = chart_points(face, n_paths, rng)[:, None, :] + np.cumsum(rng.normal(0, 1.0, (n_paths, 40, 2)), axis=1)
    uv = uv.reshape(-1, 2)
    lifted = face.lift(uv)
    points = np.where(lifted.inside[:, None], lifted.points, 0.0)
    starts = np.arange(n_paths + 1) * 40

    def reference():
        pieces = [paths.resample_reference(uv[a:b], points[a:b], 0.5) for a, b in zip(starts[:-1], starts[1:])]
        return np.concatenate(pieces)

    return Case("resample", f"{n_paths} paths x 40 points, 0.5 mm", lambda: paths.resample(uv, points, starts, 0.5)[0],
                reference, lambda k, r: bool(np.array_equal(k, r)))


def merge_case(face: Face, n: int, radius_mm: float) -> Case:
    """Channel merging of clustered punctures: surface centres, each puncture N(0, 0.2 mm) about one."""
    rng = np.random.default_rng(0)
    centres = surface_points(face, 2_000, rng)
    points = centres[rng.integers(0, len(centres), n)] + rng.normal(0.0, 0.2, (n, 3))
    return Case("merge_channels", f"{_k(n)} punctures, r = {radius_mm:g} mm",
                lambda: dens.merge_channels(points, radius_mm),
                lambda: dens.merge_channels_reference(points, radius_mm),
                lambda k, r: bool(np.array_equal(k, r)))


def curvature_case(face: Face) -> Case:
    """The quadric fits' normal equations over the face's own neighbour pairs (5 mm radius)."""
    from . import curvature

    v, n = face.vertices, face.normals
    i, j = curvature.neighbour_pairs(v, curvature.voxel_subsample(v, 5.0 / 3.0), 5.0)
    args = (v, n, *curvature.tangent_frames(n), i, j, 2.5, len(v))

    def agree(k, r):
        return bool(np.array_equal(k[2], r[2]) and all(np.allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
                                                       for a, b in zip(k[:2], r[:2])))

    return Case("curvature_fit", f"{_k(len(i))} neighbour pairs of {_k(len(v))} vertices",
                lambda: curvature._kernel.quadric_normal_equations(*args),
                lambda: curvature.quadric_normal_equations_reference(*args), agree)


def principal_case(face: Face) -> Case:
    """The quadric fits solved into principal curvatures and directions (the face's own
    normal equations, 5 mm radius)."""
    from . import curvature

    v, n = face.vertices, face.normals
    e1, e2 = curvature.tangent_frames(n)
    i, j = curvature.neighbour_pairs(v, curvature.voxel_subsample(v, 5.0 / 3.0), 5.0)
    a, rhs, count = curvature._kernel.quadric_normal_equations(v, n, e1, e2, i, j, 2.5, len(v))
    args = (a, rhs, count, 8, n, e1, e2)

    def agree(k, r):
        return all(bool(np.array_equal(x, y)) for x, y in zip(k, r))

    return Case("principal", f"{_k(len(v))} vertices' 5 x 5 fits",
                lambda: curvature.principal_from_equations(*args),
                lambda: curvature.principal_from_equations_reference(*args), agree)


def roll_case(packed: dict, drums: list) -> Case:
    """The drum kernel on a plan's own runs (the drum with the most run samples)."""
    drum, _, runs = max(plan_mod.drum_groups(packed, drums), key=lambda g: len(g[2].s))

    def agree(k, r):
        return bool(np.array_equal(k.run, r.run) and np.allclose(k.uv, r.uv, atol=1e-9))

    return Case("roll", f"{len(runs.start) - 1} runs of the default plan",
                lambda: simulate.roll(runs, drum), lambda: simulate.roll_reference(runs, drum), agree)


def stamps_agree(a: simulate.StampHits, b: simulate.StampHits) -> bool:
    """Same hits: integer fields equal, float fields within 1e-9 mm (NaN in the same places)."""
    same = all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("stamp", "needle", "fired"))
    return same and all(np.allclose(getattr(a, f), getattr(b, f), rtol=0, atol=1e-9, equal_nan=True)
                        for f in ("uv", "points", "depth_mm", "gap_mm"))


def stamp_case(face: Face, centres: np.ndarray, label: str, name: str = "stamp") -> Case:
    """The pen cartridge kernel on stamps at ``centres`` (chart mm) with seeded angles and depths."""
    pen = Protocol.default().pen
    layout = simulate.needle_layout(pen.needles, pen.footprint_diameter_mm, pen.needle_diameter_mm)
    rng = np.random.default_rng(1)
    angles = rng.uniform(0.0, 2 * np.pi, len(centres))
    depth = rng.choice(np.arange(0.5, 1.75, 0.25), len(centres))
    args = (face, centres, angles, depth, layout, pen.gap_tolerance)
    return Case(name, f"{_k(len(centres))} stamps x {len(layout)} needles, {label}",
                lambda: simulate.stamp(*args), lambda: simulate.stamp_reference(*args), stamps_agree)


def time_case(case: Case, kernel_repeats: int, reference_repeats: int) -> dict:
    """Kernel and reference timings of one case (ms), their ratio and agreement.

    The kernel is warmed up first (first calls of millisecond kernels pay page faults); the
    NumPy reference, hundreds of times slower, is not.
    """
    kernel, k_result = measure(case.kernel, kernel_repeats)
    reference, r_result = measure(case.reference, reference_repeats, warm_up=False)
    return {"input": case.size, "kernel": kernel, "reference": reference, "agree": case.agree(k_result, r_result),
            "speedup": reference.median_s / kernel.median_s}


def kernel_cases(cfg: Config, captured: dict) -> tuple[list, list]:
    """Every kernel's case on the bundled face (roll: on the default plan's runs if captured)."""
    face = Face.default(cfg.edge_mm)
    zones = ZoneMap.default(face)
    grid = dens.texel_grid(zones)
    cases = [locate_case(face, cfg.points), lift_case(face, cfg.points), interpolate_case(face, cfg.points),
             closest_case(face, cfg.closest), splat_case(face, grid, cfg.splat),
             window_sums_case(grid, cfg.window_crop), window_spread_case(grid, cfg.window_crop),
             *stamp_effect_cases(grid, 2_000),
             repair_pass_case(grid, 2_000, max(cfg.kernel_repeats, cfg.reference_repeats)),
             fit_objective_case(zones, grid, cfg.stamps), *raster_cases(grid, cfg.points), resample_case(face, 1_000),
             merge_case(face, cfg.merge, Protocol.default().pen.needle_diameter_mm), *roller_cases(face, zones),
             bin_boxes_case(cfg.bins_edge_mm), label_lookup_case(face, zones, cfg.points), contacts_case(face, zones)]
    missing = []
    if "roll" in captured and captured["roll"][1]:
        cases.append(roll_case(*captured["roll"]))
    else:
        missing.append("roll: no roller plan ran (its runs are the input)")
    cases.append(stamp_case(face, on_chart_points(face, cfg.stamps, np.random.default_rng(0)), "random order"))
    cases += [curvature_case(face), principal_case(face)]
    return cases, missing


def bench_kernels(cfg: Config, captured: dict, progress) -> tuple[dict, list]:
    """{name: kernel entry} for every kernel, and what could not be timed."""
    cases, missing = kernel_cases(cfg, captured)
    out = {}
    for case in cases:
        out[case.name] = entry = time_case(case, cfg.kernel_repeats, cfg.reference_repeats)
        progress(f"  {case.name}: {entry['kernel'].median_s * 1e3:.2f} ms vs {entry['reference'].median_s * 1e3:.1f}"
                 f" ms = {entry['speedup']:.1f}x" + ("" if entry["agree"] else " (RESULTS DISAGREE)"))
    return out, missing


PLAN_KERNELS_WHAT = ("every wrapper of a compiled kernel that has a NumPy twin, wrapped while one cold automatic "
                     "plan of the bundled face runs; the input of its longest call is kept, then the wrapper and "
                     "its twin are timed on it (kernel: median of the kernel repeats after one warm-up; twin: up "
                     "to 3 calls, fewer past 2 s; ms), with their agreement (coverage.kernel_calls)")


def bench_plan_kernels(cfg: Config) -> dict:
    """:func:`coverage.kernel_calls.plan_kernels` on a cold plan of the bundled face."""
    from . import kernel_calls

    clear_caches()
    face = Face.default(cfg.edge_mm)
    _ = face.uv, face.chart_grid
    protocol = Protocol.default()
    found = kernel_calls.plan_kernels(lambda: make_plan(face, protocol, cfg.plan_zones, cfg.plan_device, threads=1),
                                      cfg.kernel_repeats)
    return {"what": PLAN_KERNELS_WHAT, **found}


# --- scaling -----------------------------------------------------------------------------------

def scaling_point(cfg: Config, edge_mm: float, factor: float) -> dict:
    """``cfg.repeats`` cold runs of load + chart + plan (the scaling plan) at one resolution, with the
    default protocol's target times ``factor``; the canonical chart read from its cache file at
    every resolution alike (written first if missing)."""
    protocol = scaled_protocol(factor)
    runs = {"load": [], "chart": [], "plan": []}
    plan = face = None
    chart.canonical_chart(Face.default(edge_mm).subdivisions)
    for _ in range(cfg.repeats):
        clear_caches()
        start = time.perf_counter()
        face = Face.default(edge_mm)
        runs["load"].append(time.perf_counter() - start)
        start = time.perf_counter()
        _ = face.uv, face.chart_grid
        runs["chart"].append(time.perf_counter() - start)
        start = time.perf_counter()
        plan = make_plan(face, protocol, cfg.scaling_zones, cfg.scaling_device)
        runs["plan"].append(time.perf_counter() - start)
    totals = [sum(parts) for parts in zip(*runs.values())]
    return {"edge_mm": edge_mm, "factor": factor, "subdivisions": face.subdivisions, "triangles": len(face.faces),
            "vertices": len(face.vertices), "target_per_cm2": protocol.session.target_per_cm2,
            "strokes": len(plan.strokes), "punctures": len(plan.puncture_points),
            "stages": {k: summarise(v) for k, v in runs.items()}, "total": summarise(totals)}


def scaling_series(what: str, unit: str, points: list, size_key: str, time_key: str) -> dict:
    """A series from :func:`scaling_point` entries (failed ones kept, left out of the fit): sizes
    ``p[size_key]``, times ``p["total"]`` or ``p["stages"][time_key]``, and the growth exponent."""
    ok = [p for p in points if "error" not in p]
    sizes = [p[size_key] for p in ok]
    medians = [(p["total"] if time_key == "total" else p["stages"][time_key]).median_s for p in ok]
    minima = [(p["total"] if time_key == "total" else p["stages"][time_key]).min_s for p in ok]
    return {"what": what, "unit": unit, "n": sizes, "median_s": medians, "min_s": minima,
            "exponent": growth_exponent(sizes, medians), "points": points}


def point_from_runs(entry: dict) -> dict:
    """A scaling point from the bundled face's end-to-end runs (the same cold load + chart + plan)."""
    plan, stages = entry["_plan"], entry["stages"]
    runs = {k: stages[k] for k in ("load", "chart", "plan")}
    return {"edge_mm": None, "factor": 1.0, "subdivisions": plan.face.subdivisions,
            "triangles": len(plan.face.faces), "vertices": len(plan.face.vertices),
            "target_per_cm2": plan.protocol.session.target_per_cm2, "strokes": len(plan.strokes),
            "punctures": len(plan.puncture_points), "stages": runs,
            "total": summarise([sum(parts) for parts in zip(*(t.runs_s for t in runs.values()))]),
            "from": "the bundled face's end-to-end runs"}


def bench_scaling(cfg: Config, progress, default_entry: dict | None = None) -> dict:
    """Time vs face resolution and vs target density, with growth exponents.

    ``default_entry`` (the bundled face's end-to-end entry) stands for the point at the
    end-to-end resolution and x1 when the scaling plan is the end-to-end plan.
    """
    if cfg.scaling_zones is None and cfg.scaling_device == "auto":
        subject = "the auto plan"
    else:
        subject = (f"the {cfg.scaling_device}-only plan of {', '.join(cfg.scaling_zones or ('every zone',))} "
                   "(with the whole face's zone map)")
    points = {}
    if (default_entry is not None and "_plan" in default_entry and cfg.scaling_zones == cfg.plan_zones
            and cfg.scaling_device == cfg.plan_device):
        points[(cfg.edge_mm, 1.0)] = {**point_from_runs(default_entry), "edge_mm": cfg.edge_mm}

    def point(edge_mm, factor):
        key = (edge_mm, factor)
        if key not in points:
            try:
                points[key] = scaling_point(cfg, edge_mm, factor)
                p = points[key]
                progress(f"  edge {edge_mm:g} mm ({p['triangles']} triangles), target x{factor:g}: load + chart + "
                         f"plan {p['total'].median_s:.2f} s (plan {p['stages']['plan'].median_s:.2f} s)")
            except Exception:  # noqa: BLE001  (a failed level is recorded, the others still measured)
                points[key] = {"edge_mm": edge_mm, "factor": factor, "error": traceback.format_exc(limit=4)}
                progress(f"  edge {edge_mm:g} mm, target x{factor:g}: failed:\n{points[key]['error']}")
        return points[key]

    resolution = [point(edge, 1.0) for edge in cfg.scaling_edges_mm]
    density_edge = cfg.density_edge_mm
    density = [point(density_edge, factor) for factor in cfg.density_factors]
    return {
        "resolution": scaling_series(f"load + chart + {subject}, cold, vs mesh triangles", "triangles", resolution,
                              "triangles", "total"),
        "density": scaling_series(f"{subject}, face and chart built, vs the session target, "
                                  f"{density_edge:g} mm edges",
                           "target punctures/cm2", density, "target_per_cm2", "plan"),
    }


# --- targets -------------------------------------------------------------------------------------

def _target(what: str, limit, measured, unit: str, better: str = "below") -> dict:
    met = None
    if limit is not None and measured is not None:
        met = bool(measured < limit) if better == "below" else bool(measured >= limit)
    return {"what": what, "limit": limit, "measured": measured, "unit": unit, "met": met}


def moved_face(face: Face, rotation_deg: float = 8.0, shift_mm=(4.0, -3.0, 6.0)) -> Face:
    """``face`` turned ``rotation_deg`` about the vertical axis and shifted: the same person, moved."""
    a = math.radians(rotation_deg)
    turn = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = turn, shift_mm
    return Face(face.vertices @ turn.T + np.asarray(shift_mm), face.subdivisions, unobserved=face.unobserved,
                pose=pose @ face.pose, source=f"{face.source}, moved")


def chart_cache_time(cfg: Config) -> dict:
    """The canonical chart at the run's resolution: the solve (what a machine's first plan pays,
    and every plan with the cache off) and where the runs read it from. The solve leaves the
    cache file written, so the timed runs read it, as every process after a machine's first does."""
    subdivisions = Face.default(cfg.edge_mm).subdivisions
    solve, _ = measure(lambda: chart.compute_canonical_chart(subdivisions), cfg.repeats, warm_up=False)
    where = chart.cache_dir()
    chart.canonical_chart.cache_clear()
    chart.canonical_chart(subdivisions)  # the file, written if missing
    path = chart.chart_cache_file(subdivisions)
    return {"what": "coverage.chart.compute_canonical_chart (the LSCM solve) at the run's resolution; the runs' "
                    "chart stage reads it from the cache file (coverage.chart.cache_dir)",
            "subdivisions": subdivisions, "solve": solve, "dir": None if where is None else str(where),
            "file_written": bool(path is not None and path.is_file())}


def relift_time(plan, repeats: tuple, progress, deformed: bool = True) -> dict | None:
    """Re-lifting the plan (``coverage.relift.retarget``) onto the face moved and, if ``deformed``,
    onto it deformed (ms): the first call (it prepares the plan) and ``repeats`` (moved,
    deformed) calls after it. None without that module."""
    if importlib.util.find_spec("coverage.relift") is None:
        return None
    relift = importlib.import_module("coverage.relift")
    out = {}
    faces = [("moved", moved_face(plan.face), repeats[0])]
    if deformed:
        faces.append(("deformed", synthetic.deformed_face(plan.face), repeats[1]))
    for name, face, n in faces:
        try:
            start = time.perf_counter()
            relift.retarget(plan, face)
            first_ms = (time.perf_counter() - start) * 1e3
            timing, _ = measure(lambda f=face: relift.retarget(plan, f), n, warm_up=False)
            out[name] = {"first_ms": first_ms, **timing.as_dict("ms")}
            progress(f"  re-lifting onto the {name} face: {timing.median_s * 1e3:.1f} ms "
                     f"(first call {first_ms:.0f} ms)")
        except Exception:  # noqa: BLE001  (recorded in the JSON)
            out[name] = {"error": traceback.format_exc(limit=4)}
            progress(f"re-lifting onto the {name} face failed:\n{out[name]['error']}")
    out["what"] = ("coverage.relift.retarget(plan, face) of the bundled face's plan onto the face turned 8 deg and "
                   "shifted 8 mm (moved)" + (", and onto synthetic.deformed_face (deformed)" if deformed else "")
                   + "; median of the calls after the first")
    return out


def targets(doc: dict) -> dict:
    """Each speed target of the issue with its measured value and whether it is met."""
    out = {}
    faces = doc.get("stages", {})
    conf = doc.get("config", {})
    # a run that plans less than the whole face with both devices says so beside the target
    scope = ("" if conf.get("plan_zones") is None and conf.get("plan_device", "auto") == "auto" else
             f" [this run: the {conf['plan_device']} plan of {', '.join(conf.get('plan_zones') or ['every zone'])}]")
    default = faces.get("default", {}).get("stages", {})
    if "plan" in default:
        out["default_plan_s"] = _target("coverage.plan(Face.default()) wall clock (zones to the pen fit; face and "
                                        "chart built), median" + scope, 1.0, default["plan"]["median_s"], "s")
    scan = faces.get("scan", {})
    if "plan" in scan.get("stages", {}):
        seconds = sum(scan["stages"][k]["median_s"] for k in ("load", "chart", "plan"))
        cache = doc.get("chart_cache", {})
        where = ("the canonical chart read from its cache file, as every process after a machine's first "
                 f"(solving it, once, takes {cache['solve']['median_s']:.2f} s more)" if cache.get("file_written")
                 else "the canonical chart solved (no cache file)")
        out["scan_plan_s"] = _target(f"plan from the {scan['input']['vertices']}-vertex scan: Face.load + chart + "
                                     f"coverage.plan, medians; {where}" + scope, 3.0, seconds, "s")
    speedup = doc.get("kernel_speedup", {})
    if speedup:
        worst = min(speedup, key=speedup.get)
        entry = _target(f"every Cython kernel >= {KERNEL_TARGET:g}x its NumPy reference (the slowest ratio)",
                        KERNEL_TARGET, speedup[worst], "x", better="above")
        out["kernels_speedup"] = {**entry, "slowest": worst,
                                  "below": sorted(k for k, v in speedup.items() if v < KERNEL_TARGET)}
    called = {name: e["speedup"] for name, e in doc.get("plan_kernels", {}).get("pairs", {}).items()
              if e.get("speedup")}
    if called:
        worst = min(called, key=called.get)
        entry = _target(f"the same for every compiled wrapper with a NumPy twin, on the default plan's own "
                        f"longest call ({len(called)} called; the slowest ratio)", KERNEL_TARGET, called[worst], "x",
                        better="above")
        out["plan_kernels_speedup"] = {**entry, "slowest": worst,
                                       "below": sorted(k for k, v in called.items() if v < KERNEL_TARGET)}
    lift = doc.get("kernels", {}).get("lift")
    if lift:
        out["lift_chart_points_ms"] = _target(f"face.lift of {lift['input']} (no limit given: reported)", None,
                                              lift["kernel"]["median_ms"], "ms")
    moved = doc.get("relift", {}).get("moved", {})
    if "median_ms" in moved:
        out["relift_ms"] = _target("coverage.relift.retarget of the bundled face's plan onto the face moved "
                                   "(8 deg, 8 mm), median after the first call", 10.0, moved["median_ms"], "ms")
    tt = doc.get("treatment_time", {}).get("default")
    if tt and tt["total"]["ratio"] is not None:
        out["treatment_time_ratio"] = _target("default plan's time / the physical minimum (DESIGN bar)", 1.3,
                                              tt["total"]["ratio"], "x", better="below")
    return out


# --- the run -------------------------------------------------------------------------------------

def plain(obj):
    """JSON-ready: Timings as dicts (seconds, or ms under ``kernels``), tuples as lists, NaN/inf as None."""
    if isinstance(obj, Timing):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def kernels_in_ms(kernels: dict) -> dict:
    """Kernel entries (:func:`time_case`) with their timings as ms dicts."""
    return {name: {"input": k["input"], "kernel": k["kernel"].as_dict("ms"), "reference": k["reference"].as_dict("ms"),
                   "agree": k["agree"], "speedup": k["speedup"]} for name, k in kernels.items()}


def run(quick: bool, repeats: int | None = None, progress=None, *, cfg: Config | None = None) -> dict:
    """Run the suite; returns the JSON document (plain data, no NaN; see the module docstring).

    progress : callable taking one line of text, optional (what is being measured, as it goes)
    cfg : an explicit :class:`Config` instead of the quick or full one (tests use a tiny one)
    """
    cfg = cfg or config(quick, repeats)
    progress = progress or (lambda message: None)
    start = time.perf_counter()
    deadline = start + cfg.budget_s if cfg.budget_s else None
    machine = machine_info()
    limiter, machine["blas"] = blas_one_thread()
    progress(f"coverage {__version__} benchmarks, {cfg.mode}: {cfg.repeats} run(s) per measurement; "
             f"{machine['cpu']}, {machine['cpu_count']} cpus, load average {machine['load_average']['start']}")
    doc = {"machine": machine, "mode": cfg.mode, "repeats": cfg.repeats, "config": {
        k: v for k, v in vars(cfg).items() if k not in ("mode", "repeats")}, "skipped": {}}
    with limiter:
        _measure_parts(cfg, doc, progress, deadline)
    doc = plain(doc)
    doc["targets"] = targets(doc)
    doc["machine"]["load_average"]["end"] = load_average()
    doc["wall_s"] = time.perf_counter() - start
    return doc


def _measure_parts(cfg: Config, doc: dict, progress, deadline: float | None) -> None:
    """The measurements of :func:`run`, into ``doc``: the bundled face, kernels (the drum on
    its plan's runs), scaling, re-lifting its plan, then the scan (the part a quick budget drops)."""
    clock = StageClock()
    faces = {}
    if "faces" in cfg.parts:
        progress("the canonical chart: solved, and its cache file")
        doc["chart_cache"] = chart_cache_time(cfg)
        progress("end to end (cold caches every run)")
        faces["default"] = bench_face(default_case, cfg, clock, progress)
    if "kernels" in cfg.parts:
        progress("kernels against their NumPy references")
        kernels, missing = bench_kernels(cfg, clock.captured, progress)
        doc["kernels"] = kernels_in_ms(kernels)
        doc["kernel_speedup"] = {name: k["speedup"] for name, k in kernels.items()}
        for note in missing:
            doc["skipped"][f"kernels.{note.split(':')[0]}"] = note
    if "plan_kernels" in cfg.parts:
        progress("every compiled kernel with a NumPy twin, on the default plan's own calls")
        doc["plan_kernels"] = bench_plan_kernels(cfg)
    if "scaling" in cfg.parts:
        progress("scaling")
        doc["scaling"] = bench_scaling(cfg, progress, faces.get("default"))
    if "relift" in cfg.parts and "_plan" in faces.get("default", {}):
        progress("re-lifting")
        relift = relift_time(faces["default"]["_plan"], (max(cfg.kernel_repeats, 5), cfg.repeats), progress,
                             cfg.relift_deformed)
        if relift is None:
            doc["skipped"]["targets.relift_ms"] = "coverage.relift is not in this version"
        else:
            doc["relift"] = relift
    if "faces" in cfg.parts:
        faces["scan"] = bench_face(scan_case, cfg, clock, progress,
                                   None if deadline is None else (deadline, faces["default"]))
        doc["stages"] = faces
        doc["stages_unwrapped"] = sorted({m for entry in faces.values() for m in entry.pop("unwrapped", [])})
        doc["treatment_time"] = {"definition": TIME_DEFINITION, **{
            name: entry.pop("treatment_time") for name, entry in faces.items() if "treatment_time" in entry}}
        for name, entry in faces.items():
            if "skipped" in entry:
                doc["skipped"][f"stages.{name}"] = entry["skipped"]


def _non_finite(obj, path: str = "") -> list:
    if isinstance(obj, float) and not math.isfinite(obj):
        return [path]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def validate(doc: dict) -> list:
    """Problems of a benchmark document (empty if none): the sections its parts must give,
    every kernel's ratio, stage times, an exponent per scaling series, no NaN or infinity."""
    problems = [f"{p}: not a finite number" for p in _non_finite(doc)]
    parts = doc.get("config", {}).get("parts", ())
    required = {"machine": True, "mode": True, "targets": True, "stages": "faces" in parts,
                "treatment_time": "faces" in parts, "kernels": "kernels" in parts,
                "kernel_speedup": "kernels" in parts, "scaling": "scaling" in parts}
    problems += [f"{key}: missing" for key, needed in required.items() if needed and key not in doc]
    skipped = doc.get("skipped", {})
    if "kernel_speedup" in doc:
        problems += [f"kernel_speedup: no {name}" for name in KERNELS
                     if name not in doc["kernel_speedup"] and f"kernels.{name}" not in skipped]
        problems += [f"kernel_speedup.{name}: {v!r} is not a positive ratio"
                     for name, v in doc["kernel_speedup"].items()
                     if not isinstance(v, (int, float)) or not v > 0]
    for name, entry in doc.get("stages", {}).items():
        if "error" in entry:
            problems.append(f"stages.{name}: failed")
            continue
        wanted = ("load", "chart", "zones") if "skipped" in entry else (*STAGES[:3], "plan", "density", "total")
        problems += [f"stages.{name}.stages: no {s}" for s in wanted if s not in entry.get("stages", {})]
    for name, series in doc.get("scaling", {}).items():
        if not isinstance(series.get("exponent"), (int, float)):
            problems.append(f"scaling.{name}: no growth exponent")
    return problems


def write_json(doc: dict, path) -> None:
    """Write the document atomically (strict JSON: no NaN)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")


# --- tables ----------------------------------------------------------------------------------------

def _num(x, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:{width}{fmt}}"


def stage_table(doc: dict) -> str:
    """Stages (median and min s) of each face, side by side."""
    faces = {name: entry for name, entry in doc.get("stages", {}).items() if "stages" in entry}
    if not faces:
        return "end to end: not measured"
    head = f"{'stage (s; cold caches every run)':<36}" + "".join(f"{e['title'][:22]:>24}" for e in faces.values())
    sub = f"{'':<36}" + "".join(f"{'median':>12}{'min':>12}" for _ in faces)
    rows = [head, sub]
    threads = max((e.get("threads", 1) for e in faces.values()), default=1)
    for stage in (*STAGES, "plan_one_thread", "plan", "total"):
        cells = []
        for entry in faces.values():
            t = entry["stages"].get(stage)
            cells.append(f"{t['median_s']:12.3f}{t['min_s']:12.3f}" if t else f"{'-':>12}{'-':>12}")
        label = {"plan": f"plan (coverage.plan wall, {threads} thr.)", "plan_one_thread": "plan on 1 thread (above)",
                 "total": "total (every stage, 1 thread)"}.get(stage, stage)
        rows.append(f"{label:<36}" + "".join(cells))
    for name, entry in faces.items():
        facts = entry.get("plan")
        line = f"{name}: {entry['runs']} run(s)"
        if facts:
            line += (f"; {facts['face']['vertices']} face vertices, {facts['strokes']} strokes, {facts['punctures']}"
                     f" punctures, session {facts['time_s']:.0f} s; verify ok {facts.get('verify_ok')}")
            if facts.get("verify_failed"):
                line += f" (failed: {', '.join(facts['verify_failed'])})"
        if "threads_identical" in entry:
            line += (f"; the plan on {entry['threads']} threads "
                     + ("equals the one-thread plan bit for bit" if entry["threads_identical"] else
                        "DIFFERS from the one-thread plan (a bug: report it)"))
        if entry.get("input"):
            i = entry["input"]
            line += f"; scan {i['vertices']} vertices, pitch {i['pitch_mm']:.3f} mm, made in {i['make_s']:.1f} s"
        if entry.get("skipped"):
            line += f"; skipped {entry['skipped']}"
        rows.append(line)
    for name, entry in doc.get("stages", {}).items():
        if "error" in entry:
            rows.append(f"{name}: FAILED: {entry['error'].strip().splitlines()[-1]}")
    if doc.get("stages_unwrapped"):
        rows.append(f"not wrapped (time left with the caller): {', '.join(doc['stages_unwrapped'])}")
    return "\n".join(rows)


def _speedup_text(x: float) -> str:
    """A speed-up as the tables print it: whole numbers from 10x, one decimal below."""
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x"


def steps_table(doc: dict, top: int = 4) -> str:
    """The costliest steps of each stage (median ms)."""
    rows = []
    for name, entry in doc.get("stages", {}).items():
        for stage, steps in entry.get("steps", {}).items():
            for step, t in list(steps.items())[:top]:
                rows.append(f"{name:<9}{stage:<11}{step:<44}{t['median_s'] * 1e3:10.0f}")
    return "\n".join([f"{'face':<9}{'stage':<11}{'step':<44}{'median ms':>10}", *rows]) if rows else ""


def kernel_table(doc: dict) -> str:
    kernels = doc.get("kernels", {})
    width = max([16, *(len(name) + 1 for name in kernels)])
    rows = [f"{'kernel':<{width}}{'input':<40}{'kernel ms':>10}{'ref ms':>10}{'speedup':>9}{'agree':>7}"]
    for name, k in kernels.items():
        rows.append(f"{name:<{width}}{k['input'][:39]:<40}{k['kernel']['median_ms']:10.2f}"
                    f"{k['reference']['median_ms']:10.1f}"
                    f"{k['speedup']:8.1f}x{'yes' if k['agree'] else 'NO':>7}")
    return "\n".join(rows)


def scaling_table(doc: dict) -> str:
    rows = []
    for name, s in doc.get("scaling", {}).items():
        rows.append(f"{name}: {s['what']}")
        for p in s["points"]:
            label = f"  edge {p['edge_mm']:g} mm, target x{p.get('factor', 1.0):g}"
            if "error" in p:
                rows.append(f"{label:<34} FAILED: {p['error'].strip().splitlines()[-1]}")
                continue
            size = p["triangles"] if s["unit"] == "triangles" else p["target_per_cm2"]
            t = p["total"] if s["unit"] == "triangles" else p["stages"]["plan"]
            rows.append(f"{label:<34}{size:>10g} {s['unit']:<22}{t['median_s']:9.3f} s (min {t['min_s']:.3f}); "
                        f"{p['strokes']} strokes, {p['punctures']} punctures")
        rows.append(f"  growth exponent: {_num(s['exponent'], '.2f', 0)}")
    return "\n".join(rows)


def time_table(tt: dict) -> str:
    head = (f"{'device':<8}{'strokes':>8}{'punctures':>11}{'planned s':>11}{'min s':>9}{'ratio':>8}"
            f"{'contact x':>11}{'moves x':>9}")
    rows = [head]
    for name, r in (*sorted(tt["devices"].items()), ("all", tt["total"])):
        rows.append(f"{name:<8}{r['strokes']:8d}{r['punctures']:11d}{r['planned_s']:11.1f}{r['min_s']:9.1f}"
                    f"{_num(r['ratio'], '.2f', 8)}{_num(r['contact_ratio'], '.2f', 11)}"
                    f"{_num(r['moves_ratio'], '.2f', 9)}")
    for name, q in sorted(tt.get("pen_patterns", {}).items()):
        rows.append(f"  pen {name:<9} {q['strokes']:4d} strokes, {q['stamps']:6d} stamps, {q['contact_s']:7.1f} s in "
                    f"contact ({_num(q['contact_ratio'], '.2f', 0)}x its punctures at the top rate)")
    rows.append(f"idle (planned time outside strokes and moves): {round(tt['total']['idle_s'], 1) + 0.0:.1f} s")
    ex = tt.get("executed")
    if ex:
        rows.append(f"executed within the tool's limits (export): {ex['session_s']:.1f} s, "
                    f"{_num(ex['ratio'], '.2f', 0)}x the minimum (air {ex['air_s']:.1f} s, roller contact "
                    f"{ex['roller_contact_s']:.1f} s, pen contact {ex['pen_contact_s']:.1f} s)")
    return "\n".join(rows)


def targets_table(doc: dict) -> str:
    rows = [f"{'target':<24}{'limit':>10}{'measured':>12}  {'met':<5} what"]
    for name, t in doc.get("targets", {}).items():
        met = {True: "yes", False: "NO", None: "-"}[t["met"]]
        limit = "-" if t["limit"] is None else f"{t['limit']:g} {t['unit']}"
        rows.append(f"{name:<24}{limit:>10}{_num(t['measured'], '.3g', 9)} {t['unit']:<2}  {met:<5} {t['what']}")
        if t.get("below"):
            rows.append(f"{'':<24}below {t['limit']:g}x: {', '.join(t['below'])}")
    return "\n".join(rows)


def report(doc: dict) -> str:
    """The run as text tables: machine, stages, steps, kernels, scaling, treatment time, targets."""
    m = doc["machine"]
    out = [(f"coverage {m['versions']['coverage']} benchmarks ({doc['mode']}: {doc['repeats']} run(s) per "
            f"measurement, medians and minima; {doc.get('wall_s', 0):.0f} s in all)"),
           (f"{m['cpu']}, {m['cpu_count']} cpus, Python {m['python']}, {m['platform']}; load average "
            f"{m['load_average'].get('start')} at the start, {m['load_average'].get('end')} at the end"),
           "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
           "BLAS: " + ("one thread (threadpoolctl)" if m.get("blas", {}).get("limited_to_one_thread")
                       else m.get("blas", {}).get("why", "as configured")), ""]
    if "stages" in doc:
        out += [stage_table(doc), "", steps_table(doc), ""]
    cache = doc.get("chart_cache")
    if cache:
        out += [f"canonical chart ({cache['subdivisions']} subdivisions): solved in {cache['solve']['median_s']:.3f} s "
                "(median), a machine's first plan; the runs above read it from "
                + (cache["dir"] if cache["file_written"] else "nowhere (no cache file: solved every run)"), ""]
    if "kernels" in doc:
        out += [kernel_table(doc), ""]
    if "plan_kernels" in doc:
        out += [plan_kernel_table(doc), ""]
    if "scaling" in doc:
        out += [scaling_table(doc), ""]
    for name, tt in doc.get("treatment_time", {}).items():
        if name != "definition":
            out += [f"treatment time, {name}: planned vs physical minimum", time_table(tt), ""]
    if doc.get("treatment_time"):
        out += [f"(minimum: {doc['treatment_time']['definition']})", ""]
    relift = doc.get("relift")
    if relift:
        rows = [f"{name} face {r['median_ms']:.1f} ms (min {r['min_ms']:.1f}; first call {r['first_ms']:.0f} ms)"
                if "median_ms" in r else f"{name} face FAILED: {r['error'].strip().splitlines()[-1]}"
                for name, r in relift.items() if name != "what"]
        out += [f"re-lifting: {'; '.join(rows)}", f"  ({relift['what']})", ""]
    out.append(targets_table(doc))
    for what, why in doc.get("skipped", {}).items():
        out.append(f"skipped {what}: {why}")
    return "\n".join(out)


def plan_kernel_table(doc: dict) -> str:
    """``plan_kernels`` as text: one row per wrapper, by ratio."""
    found = doc["plan_kernels"]
    pairs = found.get("pairs", {})
    width = max([len("wrapper")] + [len(name) for name in pairs])
    rows = [f"every compiled kernel on the default plan's own calls ({found.get('what', '')})",
            f"{'wrapper':<{width}} {'calls':>6} {'input MB':>9} {'kernel ms':>10} {'twin ms':>10} {'speedup':>8}"
            "  agree"]
    for name, e in sorted(pairs.items(), key=lambda kv: kv[1].get("speedup") or 0):
        if "error" in e:
            rows.append(f"{name:<{width}} {e['calls']:>6} FAILED: {e['error']}")
            continue
        rows.append(f"{name:<{width}} {e['calls']:>6} {e['input_bytes'] / 1e6:>9.2f} {e['kernel_ms']:>10.3f} "
                    f"{e['reference_ms']:>10.2f} {e['speedup']:>7.1f}x  {'yes' if e['agree'] else 'NO'}")
    if found.get("not_called"):
        rows.append(f"not called by the plan: {', '.join(found['not_called'])}")
    return "\n".join(rows)


def markdown(doc: dict) -> str:
    """README tables of a run (medians): stages, kernels, scaling and targets, in Markdown.

    ``python -c "import json, coverage.bench as b; print(b.markdown(json.load(open('OUT.json'))))"``
    """
    faces = {name: e for name, e in doc.get("stages", {}).items() if "stages" in e}
    rows = ["| stage (s, median) | " + " | ".join(e["title"] for e in faces.values()) + " |",
            "|---|" + "---:|" * len(faces)]
    threads = max((e.get("threads", 1) for e in faces.values()), default=1)
    for stage in (*STAGES, "plan_one_thread", "plan", "total"):
        cells = [f"{e['stages'][stage]['median_s']:.2f}" if stage in e["stages"] else "-" for e in faces.values()]
        label = {"plan": f"**plan** (`coverage.plan`, {threads} threads)",
                 "plan_one_thread": "plan on one thread (the stages above)",
                 "total": "**end to end** (the stages above)"}.get(stage, stage)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows += ["", "| kernel | input | kernel ms | NumPy reference ms | speed-up |", "|---|---|---:|---:|---:|"]
    rows += [f"| `{name}` | {k['input']} | {k['kernel']['median_ms']:.2f} | {k['reference']['median_ms']:.1f} | "
             f"{_speedup_text(k['speedup'])} |" for name, k in doc.get("kernels", {}).items()]
    pairs = doc.get("plan_kernels", {}).get("pairs", {})
    if pairs:
        rows += ["", "| compiled wrapper, on the default plan's own longest call | calls | kernel ms | twin ms | "
                     "speed-up |", "|---|---:|---:|---:|---:|"]
        rows += [f"| `{name}` | {e['calls']} | {e['kernel_ms']:.3f} | {e['reference_ms']:.2f} | {e['speedup']:.1f}x |"
                 for name, e in sorted(pairs.items(), key=lambda kv: kv[1].get("speedup") or 0) if "error" not in e]
    rows += ["", "| scaling | sizes | seconds (median) | growth exponent |", "|---|---|---|---:|"]
    for name, s in doc.get("scaling", {}).items():
        sizes = ", ".join(f"{n:,.0f}" for n in s["n"]) + f" {s['unit']}"
        rows.append(f"| {name}: {s['what']} | {sizes} | {', '.join(f'{t:.2f}' for t in s['median_s'])} | "
                    f"{_num(s['exponent'], '.2f', 0)} |")
    rows += ["", "| target | limit | measured | met |", "|---|---:|---:|---|"]
    for t in doc.get("targets", {}).values():
        limit = "-" if t["limit"] is None else f"{t['limit']:g} {t['unit']}"
        rows.append(f"| {t['what']} | {limit} | {_num(t['measured'], '.3g', 0)} {t['unit']} | "
                    f"{ {True: 'yes', False: 'no', None: '-'}[t['met']]} |")
    return "\n".join(rows)


# --- command line ----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options (shared by ``coverage-planner bench`` and ``python -m coverage.bench``)."""
    parser.add_argument("--quick", action="store_true",
                        help=f"one run of each plan, the cheap scaling (a roller-only zone plan) and a "
                             f"{QUICK_BUDGET_S:g} s budget (under a minute)")
    parser.add_argument("--json", metavar="OUT", help="also write every figure as JSON")
    parser.add_argument("--repeats", type=int, metavar="N", help="runs per measurement (default: 1 quick, 3 full)")


def print_progress(line: str) -> None:
    """Progress lines go to stderr, so stdout holds only the tables."""
    print(line, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coverage.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.json:
            check_output(args.json, (".json",))
        doc = run(args.quick, args.repeats, progress=print_progress)
        print(report(doc))
        for problem in validate(doc):
            print(f"warning: {problem}", file=sys.stderr)
        if args.json:
            write_json(doc, args.json)
            print(f"wrote {args.json}")
    except CoverageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
