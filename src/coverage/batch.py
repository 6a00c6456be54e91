"""Planning a folder of scans: in this process, on a pool of worker processes, or on a Dask cluster.

A scans folder holds, for each scan ``NAME``, its mesh ``NAME.ply`` (or ``.obj``, ``.stl``,
``.glb``, ``.gltf``, ``.off``; any case) and its 468 MediaPipe landmarks beside it as
``NAME.landmarks.npy`` or ``NAME.landmarks.json``, in the mesh's frame and units. A mesh
with the canonical 468-vertex topology needs no landmarks. Other files are ignored.

Each scan is planned, saved as ``OUT/NAME.json`` + ``OUT/NAME.npz``, and the saved plan is
checked by the independent verifier. One scan never stops the batch: a scan that cannot be
read or planned, a bug, or a worker process that dies (crash, out of memory) becomes a
failure row, and the batch goes on. The rows go to ``OUT/batch_summary.json``.

Workers: ``workers=1`` plans in this process; ``workers > 1`` on a
:class:`concurrent.futures.ProcessPoolExecutor`, at most ``workers`` scans in flight so that
a dying worker can be told apart from the scans beside it; ``scheduler="tcp://HOST:PORT"``
on a Dask distributed cluster (``pip install "coverage-planner[distributed]"``), whose
workers must have this package installed and see the scans and output folders at the same
paths (a shared file system).
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import re
import sys
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from .errors import CoverageError, LandmarkError
from .fileio import write_text
from .scan import MESH_SUFFIXES
from .tasks import thread_count

LANDMARK_SUFFIXES = (".landmarks.npy", ".landmarks.json")
SUMMARY_NAME = "batch_summary.json"
SUMMARY_FORMAT = "coverage-batch"
SUMMARY_VERSION = 1
SCHEDULER_TIMEOUT_S = 20.0   # to reach a Dask scheduler, and for it to have a worker
STATUSES = ("planned", "violation", "failed")   # verified plan; plan written but breaks a rule; no plan


@dataclass(frozen=True)
class Scan:
    """One scan of a scans folder: its name, mesh and landmark files, or why it cannot be planned."""

    name: str
    mesh: Path | None
    landmarks: Path | None
    problem: str | None = None   # set when the files themselves are wrong (no mesh, two meshes, ...)


def find_scans(scans_dir) -> list[Scan]:
    """The scans of a folder, sorted by name (see the module docstring for the layout).

    A landmark file without a mesh, or a name with two meshes or two landmark files, is
    returned as a :class:`Scan` with a ``problem``, to be reported as a failure. Raises
    :class:`CoverageError` if the folder does not exist or holds no mesh and no landmarks.
    """
    folder = Path(scans_dir)
    if not folder.is_dir():
        raise CoverageError(f"{folder}: scans folder not found; give a folder of NAME.ply + "
                            "NAME.landmarks.npy pairs")
    meshes: dict[str, list[Path]] = {}
    landmarks: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        lower = path.name.lower()
        if path.name.startswith(".") or not path.is_file():
            continue
        suffix = next((s for s in LANDMARK_SUFFIXES if lower.endswith(s)), None)
        if suffix is not None:
            landmarks.setdefault(path.name[: -len(suffix)], []).append(path)
        elif path.suffix.lower() in MESH_SUFFIXES:
            meshes.setdefault(path.stem, []).append(path)
    if not meshes and not landmarks:
        raise CoverageError(f"{folder}: no scans (no {', '.join(MESH_SUFFIXES)} mesh files); put each scan "
                            "there as NAME.ply with its landmarks NAME.landmarks.npy")
    scans = []
    for name in sorted(set(meshes) | set(landmarks)):
        mesh_files, landmark_files = meshes.get(name, []), landmarks.get(name, [])
        problem = None
        if not mesh_files:
            problem = (f"{landmark_files[0]}: landmarks without a mesh; put the scan beside them as "
                       f"{name}.ply (or {', '.join(s for s in MESH_SUFFIXES if s != '.ply')})")
        elif len(mesh_files) > 1:
            problem = (f"{folder}: {len(mesh_files)} meshes named {name} ({', '.join(p.name for p in mesh_files)}); "
                       "keep one, or rename the others with their own landmarks")
        elif name == Path(SUMMARY_NAME).stem:
            problem = f"{mesh_files[0]}: the name {name} is the batch summary's; rename the scan and its landmarks"
        elif len(landmark_files) > 1:
            problem = (f"{folder}: {len(landmark_files)} landmark files for {name} "
                       f"({', '.join(p.name for p in landmark_files)}); keep one")
        scans.append(Scan(name, mesh_files[0] if len(mesh_files) == 1 else None,
                          landmark_files[0] if len(landmark_files) == 1 else None, problem))
    return scans


def _failure(name: str, mesh, error: str, kind: str, seconds: float = 0.0) -> dict:
    """A failure row: no plan was written."""
    return {"name": name, "mesh": None if mesh is None else str(mesh), "status": "failed", "ok": False,
            "seconds": round(seconds, 3), "punctures": None, "strokes": None, "session_s": None,
            "zones_in_band_min": None, "over_cap_max": None, "verify_ok": None, "violations": [],
            "plan": None, "notes": [], "error": " ".join(str(error).split()), "error_kind": kind}


def plan_one(mesh, landmarks, out_dir, protocol_path=None, device: str = "auto", units: str = "auto",
             edge_mm: float = 1.0, threads: int | None = None) -> dict:
    """Plan one scan, save ``out_dir/NAME.json`` + ``.npz``, verify the saved plan; never raises.

    Returns the summary row (a JSON-ready dict): ``name``, ``mesh``, ``status`` (one of
    :data:`STATUSES`), ``ok`` (planned and every rule holds), ``seconds`` (wall time),
    ``punctures``, ``strokes``, ``session_s`` (treatment time), ``zones_in_band_min`` and
    ``over_cap_max`` (the worst zone's fraction of area within [0.9 x target, cap] and over
    its cap, as the verifier measured them), ``verify_ok``, ``violations`` (rules broken),
    ``plan`` (the JSON path), ``notes`` (repairs made to the scan), and for a failure
    ``error`` (one line: the file or field, the value, the fix) and ``error_kind``
    (``input``: bad input; ``internal``: a bug; ``crashed``: the worker process died).
    """
    from .face import Face
    from .plan import plan
    from .protocol import Protocol
    from .verify import verify

    start = time.perf_counter()
    name = Path(mesh).stem
    try:
        protocol = Protocol.default() if protocol_path is None else Protocol.load(protocol_path)
        try:
            face = Face.load(mesh, landmarks, units=units, edge_mm=edge_mm)
        except LandmarkError as exc:
            if landmarks is None and "landmarks are needed" in str(exc):
                raise LandmarkError(f"{mesh}: no landmarks beside it; save the scan's 468 MediaPipe landmarks "
                                    f"as {name}{LANDMARK_SUFFIXES[0]} or {name}{LANDMARK_SUFFIXES[1]} "
                                    "(only a canonical 468-vertex mesh needs none)") from exc
            raise
        result = plan(face, protocol, device=device, threads=threads)
        json_path, _ = result.save(Path(out_dir) / f"{name}.json")
        verdict = verify(json_path, face=face)
    except CoverageError as exc:
        return _failure(name, mesh, exc, "input", time.perf_counter() - start)
    except Exception as exc:  # a bug: reported in the row, the batch goes on
        return _failure(name, mesh, f"internal error: {type(exc).__name__}: {exc} (a bug: plan it alone with "
                        "coverage-planner plan --debug for the traceback, and report it)", "internal",
                        time.perf_counter() - start)
    zones = verdict.zones.values()
    in_band = [z["in_band_fraction"] for z in zones if _finite(z.get("in_band_fraction"))]
    over_cap = [z["over_cap_fraction"] for z in zones if _finite(z.get("over_cap_fraction"))]
    return {"name": name, "mesh": str(mesh), "status": "planned" if verdict.ok else "violation",
            "ok": bool(verdict.ok), "seconds": round(time.perf_counter() - start, 3),
            "punctures": int(len(result.puncture_points)), "strokes": len(result.strokes),
            "session_s": round(float(result.time_s), 3),
            "zones_in_band_min": min(in_band) if in_band else None,
            "over_cap_max": max(over_cap) if over_cap else None,
            "verify_ok": bool(verdict.ok), "violations": verdict.failed(), "plan": str(json_path),
            "notes": list(face.notes), "error": None, "error_kind": None}


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def run_batch(scans_dir, out_dir, workers: int = 1, scheduler=None, progress: bool = True, *,
              protocol_path=None, device: str = "auto", units: str = "auto", edge_mm: float = 1.0,
              log=None) -> list[dict]:
    """Plan every scan of ``scans_dir`` into ``out_dir``; returns one row per scan, sorted by name.

    workers : scans planned at once (1: in this process; more: worker processes)
    scheduler : a Dask scheduler address (``tcp://host:8786``) to plan on a cluster instead
    progress : show a progress bar (tqdm, on stderr)
    log : called with one line per failed scan and per repair note (default: print to stderr)

    The protocol, device, units and resolution are checked before any scan is planned: a bad
    one raises :class:`CoverageError` and nothing is written. ``out_dir`` is created if its
    parent exists. The rows also go to ``out_dir/batch_summary.json`` (written atomically).

    With ``workers > 1`` the workers are started with ``spawn``, which imports the calling
    script again in each: a script calling this must guard its entry point with
    ``if __name__ == "__main__":``, as :mod:`multiprocessing` requires.
    """
    from .plan import DEVICES
    from .protocol import Protocol
    from .scan import UNITS_TO_MM
    from .template import subdivisions_for_edge

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CoverageError(f"workers = {workers!r} is not a positive whole number; give --workers 1 or more")
    if device not in DEVICES:
        raise CoverageError(f"device = {device!r} is not available; use one of {', '.join(DEVICES)}")
    if units != "auto" and units not in UNITS_TO_MM:
        raise CoverageError(f"units = {units!r} is not known; use auto, {', '.join(UNITS_TO_MM)}")
    subdivisions_for_edge(float(edge_mm))
    # scans planned side by side (worker processes, or a Dask worker's threads) use one
    # thread each: the cores are already shared out
    alone = workers == 1 and scheduler is None
    if alone:
        thread_count()         # a bad $COVERAGE_THREADS would fail every scan: refuse it now
    if protocol_path is not None:
        Protocol.load(protocol_path)        # one bad protocol would fail every scan: refuse it now
        protocol_path = str(Path(protocol_path).resolve())
    if scheduler is not None:
        check_scheduler(scheduler)
    scans = find_scans(scans_dir)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CoverageError(f"{out}: output folder is a file; give a folder (it is created if missing)")
    made = not out.exists()
    if made:
        if not out.parent.is_dir():
            raise CoverageError(f"{out}: cannot create the output folder: {out.parent} does not exist; create it first")
        try:
            out.mkdir()
        except OSError as exc:
            raise CoverageError(f"{out}: cannot create the output folder ({exc.strerror}); choose another") from exc
    out = out.resolve()
    if log is None:
        def log(line):
            print(line, file=sys.stderr)

    settings = {"protocol_path": protocol_path, "device": device, "units": units, "edge_mm": float(edge_mm),
                "threads": None if alone else 1}
    rows = []
    jobs = [(s.name, str(Path(s.mesh).resolve()), None if s.landmarks is None else str(Path(s.landmarks).resolve()))
            for s in scans if not s.problem]
    bar = _progress_bar(len(scans), progress)

    def tell(line):
        with bar.external_write_mode(file=sys.stderr):   # clear the bar, write, draw it again
            log(line)

    def report(row):
        rows.append(row)
        bar.update(1)
        bar.set_postfix_str(f"{row['name']} {row['status']}")
        for note in row["notes"]:
            # repairs name the mesh file already; the others get the scan's name
            tell(f"note: {note}" if row["mesh"] and note.startswith(row["mesh"]) else f"note: {row['name']}: {note}")
        if row["status"] == "failed":
            tell(f"failed: {row['name']}: {row['error']}")
        elif row["status"] == "violation":
            tell(f"violation: {row['name']}: {row['plan']} breaks {', '.join(row['violations'])}")

    for s in scans:
        if s.problem:
            report(_failure(s.name, s.mesh, s.problem, "input"))
    start = time.perf_counter()
    try:
        if scheduler is not None:
            try:
                _run_dask(jobs, out, settings, scheduler, workers, report)
            except CoverageError:
                # refused before a scan was planned (no scheduler, no worker): the folder
                # made for the batch goes too
                if made and not any(out.iterdir()):
                    out.rmdir()
                raise
        elif workers == 1:
            for _, mesh, landmarks in jobs:
                report(plan_one(mesh, landmarks, str(out), **settings))
        else:
            _run_pool(jobs, out, settings, workers, report)
    finally:
        bar.close()
    rows.sort(key=lambda r: r["name"])
    _write_summary(out / SUMMARY_NAME, rows, scans_dir, out, settings, workers, scheduler,
                   time.perf_counter() - start)
    return rows


SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")   # the Dask comm protocols a --scheduler address may name


def check_scheduler(address) -> None:
    """Refuse a Dask scheduler address that is not ``[SCHEME://]HOST:PORT`` (SCHEME one of
    :data:`SCHEMES`, PORT 1 to 65535) before anything is made."""
    text = str(address)
    match = re.fullmatch(r"(?:([a-z]+)://)?([^\s:/]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", text)
    if not match or (match.group(1) or "tcp") not in SCHEMES or not 1 <= int(match.group(3)) <= 65535:
        raise CoverageError(f"--scheduler {text!r} is not a Dask scheduler address; give tcp://HOST:PORT "
                            "(e.g. tcp://127.0.0.1:8786)")


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="planning", unit="scan", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)


def _run_pool(jobs, out: Path, settings: dict, workers: int, report, task=plan_one) -> None:
    """Plan on worker processes (``task``: :func:`plan_one`), at most ``workers`` scans in flight.

    When a worker dies, every scan in flight fails with ``BrokenProcessPool`` and the pool is
    gone: each of those scans is planned again alone in a new one-process pool, so the one
    that kills its worker is named and the others are planned; then a fresh pool goes on.
    """
    # "spawn": a forked child of a process holding threads (BLAS, Dask, a test runner) can
    # deadlock on a lock copied in the held state; a spawned one starts clean
    context = multiprocessing.get_context("spawn")
    pending = deque(jobs)
    while pending:
        suspects = []
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context) as pool:
            in_flight = {}
            while pending or in_flight:
                while pending and len(in_flight) < workers and not suspects:
                    name, mesh, landmarks = job = pending.popleft()
                    in_flight[pool.submit(task, mesh, landmarks, str(out), **settings)] = job
                if not in_flight:
                    break
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    job = in_flight.pop(future)
                    try:
                        report(future.result())
                    except BrokenProcessPool:
                        suspects.append(job)
        for name, mesh, landmarks in suspects:
            report(_run_alone(name, mesh, landmarks, out, settings, context, task))


def _run_alone(name, mesh, landmarks, out: Path, settings: dict, context, task=plan_one) -> dict:
    """One scan in its own worker process: a failure row if that process dies."""
    start = time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(task, mesh, landmarks, str(out), **settings)
        try:
            return future.result()
        except BrokenProcessPool:
            return _failure(name, mesh, f"{mesh}: the worker process planning it died (a crash, or out of "
                            "memory); plan it alone with coverage-planner plan --debug to see why",
                            "crashed", time.perf_counter() - start)


def _run_dask(jobs, out: Path, settings: dict, scheduler, workers: int, report) -> None:
    """Plan on a Dask distributed cluster: one task per scan, rows as they complete."""
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise CoverageError(f"--scheduler {scheduler}: Dask distributed is not installed; "
                            'pip install "coverage-planner[distributed]" (or drop --scheduler)') from exc
    try:
        client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise CoverageError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({' '.join(str(exc).split())}); "
                            "check the address (tcp://HOST:PORT) and that the scheduler runs") from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=SCHEDULER_TIMEOUT_S)
        except TimeoutError as exc:
            raise CoverageError(f"--scheduler {scheduler}: the Dask scheduler has no workers after "
                                f"{SCHEDULER_TIMEOUT_S:g} s; start some (dask worker {scheduler})") from exc
        futures = {}
        for name, mesh, landmarks in jobs:
            # pure=False: a scan planned again (other settings, same files) must really run again
            future = client.submit(plan_one, mesh, landmarks, str(out), **settings, pure=False)
            futures[future] = (name, mesh)
        for future in as_completed(list(futures)):
            name, mesh = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # KilledWorker (the task killed its workers) or a lost connection
                row = _failure(name, mesh, f"{mesh}: the Dask task failed ({type(exc).__name__}: {exc}); plan it "
                               "alone with coverage-planner plan --debug to see why", "crashed")
            report(row)


def _write_summary(path: Path, rows: list, scans_dir, out: Path, settings: dict, workers: int, scheduler,
                   seconds: float) -> None:
    counts = {status: sum(r["status"] == status for r in rows) for status in STATUSES}
    doc = {"format": SUMMARY_FORMAT, "version": SUMMARY_VERSION, "scans_dir": str(Path(scans_dir).resolve()),
           "out_dir": str(out), "settings": settings, "workers": workers, "scheduler": scheduler,
           "seconds": round(seconds, 3), "scans": len(rows), **counts, "rows": rows}
    write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def summary_table(rows: list[dict]) -> str:
    """The batch as a table: one line per scan, then one line per failure with its error."""
    head = (f"{'scan':<24}{'status':<11}{'time s':>8}{'punctures':>11}{'strokes':>9}"
            f"{'in band min':>13}{'over cap max':>14}  verify")
    lines = [head]

    def pct(x, digits):
        return "-" if x is None else f"{100 * x:.{digits}f} %"

    for r in rows:
        verify = "-" if r["verify_ok"] is None else ("ok" if r["verify_ok"] else "FAIL: " + ", ".join(r["violations"]))
        lines.append(f"{r['name'][:23]:<24}{r['status']:<11}{r['seconds']:>8.1f}"
                     f"{'-' if r['punctures'] is None else format(r['punctures'], ','):>11}"
                     f"{'-' if r['strokes'] is None else r['strokes']:>9}"
                     f"{pct(r['zones_in_band_min'], 1):>13}{pct(r['over_cap_max'], 2):>14}  {verify}")
    planned = sum(r["status"] == "planned" for r in rows)
    failed = [r for r in rows if r["status"] == "failed"]
    broken = sum(r["status"] == "violation" for r in rows)
    tail = f"{planned} of {len(rows)} scans planned and verified"
    if broken:
        tail += f"; {broken} planned but breaking a rule"
    if failed:
        tail += f"; {len(failed)} failed:"
    lines.append(tail)
    lines.extend(f"  {r['name']}: {r['error']}" for r in failed)
    return "\n".join(lines)
