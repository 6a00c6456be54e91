"""Plan files: ``PLAN.json`` (metadata, per-stroke settings, summary) and ``PLAN.npz`` (arrays).

Format ``coverage-plan`` version 2, described by the JSON Schema that ships in the package
(:func:`plan_schema`, ``coverage/data/plan.schema.json``). The JSON holds what a reader
scans: the protocol, the face it was planned on, each stroke's device, zone, depth, needle
length, speed and rates, each transition, and the dose summary. Every array, at full
precision, is in the NPZ beside it: punctures, stroke paths, pen stamps and transition
paths, each stroke and transition naming its rows there (``first``, ``samples``). The JSON
carries the NPZ's SHA-256, so a plan is never read with another plan's arrays.

Both files are written atomically and together: a failure while saving leaves the old pair
as it was.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.resources
import json
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .errors import CoverageError
from .fileio import atomic_path, check_output

FORMAT = "coverage-plan"
VERSION = 2
SCHEMA_FILE = "plan.schema.json"

# name -> (dtype, trailing shape, row count key, meaning); K punctures, P path samples,
# S stamps, T transition samples
ARRAYS = {
    "punctures": ("float64", (3,), "K", "puncture positions, mm (the face's frame)"),
    "puncture_uv": ("float64", (2,), "K", "puncture chart coordinates, mm"),
    "puncture_stroke": ("int64", (), "K", "id of the stroke that made each puncture"),
    "puncture_depth_mm": ("float64", (), "K", "effective depth of each puncture, mm"),
    "puncture_tri": ("int64", (), "K", "triangle of each puncture on the face (face-relative)"),
    "puncture_bary": ("float64", (3,), "K", "barycentric coordinates in that triangle"),
    "path_positions": ("float64", (3,), "P", "stroke path samples, mm"),
    "path_normals": ("float64", (3,), "P", "unit outward skin normals (the tool axis points the other way)"),
    "path_tangents": ("float64", (3,), "P", "unit travel directions"),
    "path_times_s": ("float64", (), "P", "sample times from the session's start, s"),
    "path_uv": ("float64", (2,), "P", "chart coordinates of the samples, mm (face-relative)"),
    "path_tri": ("int64", (), "P", "triangle of each sample (face-relative)"),
    "path_bary": ("float64", (3,), "P", "barycentric coordinates in that triangle"),
    "path_swath_mm": ("float64", (), "P", "roller: effective swath at each sample, mm (NaN for the pen)"),
    "stamp_uv": ("float64", (2,), "S", "pen stamp centres in the chart, mm, in firing order"),
    "stamp_positions": ("float64", (3,), "S", "pen stamp centres, mm"),
    "stamp_times_s": ("float64", (), "S", "when each stamp fires, s"),
    "transition_positions": ("float64", (3,), "T", "tool tip between strokes, mm (in the air)"),
    "transition_times_s": ("float64", (), "T", "their times, s"),
}


@functools.cache
def _schema_text() -> str:
    return importlib.resources.files("coverage.data").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def plan_schema() -> dict:
    """The JSON Schema (draft 2020-12) of ``PLAN.json``, as shipped in the package."""
    return json.loads(_schema_text())


@functools.cache
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(plan_schema())


def schema_errors(doc: dict) -> list[str]:
    """Every way a plan document breaks the schema, one line each (empty: it conforms)."""
    out = []
    for error in sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        field = ".".join(str(p) for p in error.absolute_path) or "(document)"
        message = " ".join(error.message.split())
        out.append(f"field {field}: {message[:200] + '...' if len(message) > 200 else message}")
    return out


def validate_document(doc: dict, where: str = "plan") -> None:
    """Check a plan document read from a file against the schema; the first problem is one
    error line."""
    errors = schema_errors(doc)
    if errors:
        raise CoverageError(f"{where}: {errors[0]}; write the plan again with coverage-planner plan")


# --- writing ---------------------------------------------------------------------------------

def _rows(first: int, n: int) -> dict:
    return {"first": int(first), "samples": int(n)}


def plan_arrays(plan) -> dict:
    """Every array of the plan, keyed as in the NPZ (see :data:`ARRAYS`)."""
    strokes, moves = plan.strokes, plan.transitions

    def stack(items, empty_shape):
        items = [np.asarray(a, dtype=np.float64) for a in items]
        return np.concatenate(items) if items else np.empty(empty_shape)

    k = len(plan.puncture_points)
    if plan.puncture_tri is None:   # a plan built by hand: locate its punctures once
        lifted = plan.face.lift(plan.puncture_uv)
        tri, bary = lifted.tri.astype(np.int64), lifted.bary
    else:
        tri, bary = plan.puncture_tri, plan.puncture_bary
    pens = [s for s in strokes if s.stamp_uv is not None]
    out = {
        "punctures": plan.puncture_points, "puncture_uv": plan.puncture_uv,
        "puncture_stroke": plan.puncture_stroke, "puncture_depth_mm": plan.puncture_depth_mm,
        "puncture_tri": tri, "puncture_bary": bary,
        "path_positions": stack([s.points for s in strokes], (0, 3)),
        "path_normals": stack([s.normals for s in strokes], (0, 3)),
        "path_tangents": stack([s.tangents for s in strokes], (0, 3)),
        "path_times_s": stack([s.times_s for s in strokes], (0,)),
        "path_uv": stack([s.uv for s in strokes], (0, 2)),
        "path_tri": np.concatenate([np.asarray(s.tri, np.int64) for s in strokes]) if strokes else np.empty(0, np.int64),
        "path_bary": stack([s.bary for s in strokes], (0, 3)),
        "path_swath_mm": stack([s.swath_mm if s.swath_mm is not None else np.full(len(s.points), np.nan)
                                for s in strokes], (0,)),
        "stamp_uv": stack([s.stamp_uv for s in pens], (0, 2)),
        "stamp_positions": stack([s.stamp_points for s in pens], (0, 3)),
        "stamp_times_s": stack([s.stamp_times_s for s in pens], (0,)),
        "transition_positions": stack([t.points for t in moves], (0, 3)),
        "transition_times_s": stack([t.times_s for t in moves], (0,)),
    }
    out = {name: np.ascontiguousarray(a, dtype=ARRAYS[name][0]) for name, a in out.items()}
    assert len(out["punctures"]) == k
    return out


def _stroke_json(s, first: int, stamp_first: int | None) -> dict:
    out = {"id": int(s.id), "device": s.device, "zone": s.zone, "zones": list(s.zones), "pass_index": int(s.pass_index),
           "family": int(s.family), "pattern": s.pattern, "line": int(s.line),
           "direction_deg": None if s.direction_deg is None else float(s.direction_deg),
           "depth_mm": float(s.depth_mm), "needle_length_mm": float(s.needle_length_mm),
           "speed_mm_s": float(s.speed_mm_s), "stamp_hz": None if s.stamp_hz is None else float(s.stamp_hz),
           "puncture_rate_hz": None if s.puncture_rate_hz is None else float(s.puncture_rate_hz),
           "punctures": int(s.punctures), "start_s": float(s.times_s[0]), "duration_s": s.duration_s,
           "length_mm": s.length_mm, "path": _rows(first, len(s.points))}
    if s.cartridge is not None:
        out["cartridge"] = {"needles": int(s.cartridge["needles"]),
                            "footprint_diameter_mm": float(s.cartridge["footprint_diameter_mm"])}
    if stamp_first is not None:
        out["stamps"] = _rows(stamp_first, len(s.stamp_uv))
    return out


def plan_document(plan) -> dict:
    """The JSON document of a plan (``arrays.file`` and ``arrays.sha256`` are filled in by
    :func:`save_plan`)."""
    face = plan.face
    strokes, first, stamp_first = [], 0, 0
    for s in plan.strokes:
        strokes.append(_stroke_json(s, first, stamp_first if s.stamp_uv is not None else None))
        first += len(s.points)
        stamp_first += 0 if s.stamp_uv is None else len(s.stamp_uv)
    moves, first = [], 0
    for t in plan.transitions:
        moves.append({"from": int(t.from_stroke), "to": int(t.to_stroke), "start_s": float(t.times_s[0]),
                      "duration_s": t.duration_s, "path": _rows(first, len(t.points))})
        first += len(t.points)
    counts = {"K": len(plan.puncture_points), "P": sum(len(s.points) for s in plan.strokes),
              "S": stamp_first, "T": first}
    return {
        "format": FORMAT,
        "version": VERSION,
        "generator": f"coverage {__version__}",
        "units": {"length": "mm", "time": "s", "density": "punctures/cm2", "angle": "deg"},
        "frame": "the input mesh's frame, in millimetres",
        "device": plan.device,
        "face": {"source": face.source, "subdivisions": int(face.subdivisions), "vertices": int(len(face.vertices)),
                 "unobserved_fraction": float(face.unobserved.mean()),
                 "pose": np.asarray(face.pose, dtype=np.float64).tolist()},
        "protocol": plan.protocol.to_dict(),
        "strokes": strokes,
        "transitions": moves,
        "summary": plan.summary(),
        "status": {name: entry for name, entry in plan.zone_status.items()},
        "arrays": {"file": None, "sha256": None,
                   "contents": {name: {"shape": [counts[rows], *trail], "dtype": dtype, "meaning": meaning}
                                for name, (dtype, trail, rows, meaning) in ARRAYS.items()}},
    }


def check_not_the_plan(out, plan_path, option: str, doing: str) -> None:
    """Refuse an output (given with ``option``) that is the saved plan being read: its JSON
    or the NPZ beside it."""
    plan_path = Path(plan_path)
    if Path(out).resolve() in (plan_path.resolve(), plan_path.with_suffix(".npz").resolve()):
        raise CoverageError(f"{out}: {option} would overwrite the plan being {doing}; give another file name")


def save_plan(plan, path) -> tuple[Path, Path]:
    """Write ``PLAN.json`` and ``PLAN.npz`` beside it. Both are written to temporary files
    first and moved into place only when both are complete. Returns both paths."""
    json_path = Path(path)
    check_output(json_path, (".json",))
    npz_path = json_path.with_suffix(".npz")
    doc = plan_document(plan)
    arrays = plan_arrays(plan)
    with contextlib.ExitStack() as stack:
        tmp_npz = stack.enter_context(atomic_path(npz_path))
        tmp_json = stack.enter_context(atomic_path(json_path))
        with open(tmp_npz, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        doc["arrays"]["file"] = npz_path.name
        doc["arrays"]["sha256"] = hashlib.sha256(tmp_npz.read_bytes()).hexdigest()
        errors = schema_errors(doc)
        if errors:   # the planner wrote something its own schema does not allow: a bug, not a user error
            raise RuntimeError(f"the plan breaks its schema ({len(errors)} problems), first: {errors[0]}")
        tmp_json.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False), encoding="utf-8")
        # leaving the stack moves the JSON, then the NPZ, into place
    return json_path, npz_path


# --- reading ---------------------------------------------------------------------------------

def read_plan_json(path, validate: bool = True) -> dict:
    """The JSON document of a saved plan, checked for its format, version and schema."""
    path = Path(path)
    if not path.is_file():
        raise CoverageError(f"{path}: plan file not found")
    def not_a_number(word):
        # a plan is written without NaN or infinities (json allow_nan=False): one read here
        # was put there by hand
        raise CoverageError(f"{path}: holds {word}, which no plan does (a number edited by hand?); write it again "
                            "with coverage-planner plan")

    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=not_a_number)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CoverageError(f"{path}: not a readable plan ({exc}); write it again with coverage-planner plan") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CoverageError(f"{path}: not a coverage plan (format is {doc.get('format') if isinstance(doc, dict) else None!r}, "
                            f"expected {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise CoverageError(f"{path}: plan version {doc.get('version')!r} is not supported; this planner reads "
                            f"version {VERSION}: plan again with this version")
    if validate:
        validate_document(doc, str(path))
    return doc


def read_plan_arrays(path, doc: dict) -> dict:
    """The NPZ arrays of a saved plan, checked against its JSON: checksum, names, shapes."""
    path = Path(path)
    npz_path = path.parent / doc["arrays"]["file"]
    if not npz_path.is_file():
        raise CoverageError(f"{npz_path}: the plan's arrays are missing; keep the .npz that was written beside "
                            f"{path.name}")
    data = npz_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != doc["arrays"]["sha256"]:
        raise CoverageError(f"{npz_path}: the arrays do not belong to {path.name} (checksum differs); keep the "
                            "pair a plan was written as, or plan again")
    try:
        with np.load(npz_path) as npz:
            arrays = {name: npz[name] for name in ARRAYS if name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CoverageError(f"{npz_path}: not readable plan arrays ({exc}); write the plan again") from exc
    for name, spec in doc["arrays"]["contents"].items():
        if name not in ARRAYS:
            continue
        a = arrays.get(name)
        if a is None or list(a.shape) != spec["shape"] or a.dtype != np.dtype(ARRAYS[name][0]):
            got = "missing" if a is None else f"{a.dtype} {list(a.shape)}"
            raise CoverageError(f"{npz_path}: array {name} is {got}, the plan says {spec['dtype']} {spec['shape']}; "
                                "write the plan again")
        # every number of a plan is finite but the pen's swath (NaN: it has none)
        if a.dtype.kind == "f":
            bad = np.isinf(a) if name == "path_swath_mm" else ~np.isfinite(a)
            if bad.any():
                row = int(np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))[0])
                raise CoverageError(f"{npz_path}: array {name} holds {int(bad.sum())} values that are not finite "
                                    f"(first at row {row}), which no plan does; write the plan again")
    return arrays


def _check_rows(doc: dict, arrays: dict, path) -> None:
    """Each stroke's and transition's rows lie inside their arrays."""
    sizes = {"path": len(arrays["path_positions"]), "stamps": len(arrays["stamp_uv"])}
    for s in doc["strokes"]:
        if s["path"]["samples"] < 1:
            raise CoverageError(f"{path}: stroke {s['id']} has no path samples, which no plan's stroke does; write "
                                "the plan again")
        for key, size in sizes.items():
            rows = s.get(key)
            if rows is not None and rows["first"] + rows["samples"] > size:
                raise CoverageError(f"{path}: stroke {s['id']} names {key} rows beyond the arrays ({rows} of {size}); "
                                    "write the plan again")
    size = len(arrays["transition_positions"])
    for t in doc["transitions"]:
        if t["path"]["first"] + t["path"]["samples"] > size:
            raise CoverageError(f"{path}: a transition names rows beyond the arrays; write the plan again")


def face_for_plan(doc: dict, face, path):
    """The face a saved plan was made on: ``face`` if given (checked for its resolution),
    else the bundled face rebuilt at the plan's resolution."""
    meta = doc["face"]
    vertices = meta.get("vertices")
    if face is None:
        from . import face as _face
        from .template import EDGE_MM_MIN, subdivisions_for_edge

        subdivisions = meta.get("subdivisions")
        if not isinstance(subdivisions, int) or not 1 <= subdivisions <= subdivisions_for_edge(EDGE_MM_MIN):
            raise CoverageError(f"{path}: the plan's face.subdivisions = {subdivisions!r} is not a face resolution; "
                                "write the plan again with coverage-planner plan")
        face = _face._default_face(subdivisions)
        if meta.get("source") != face.source or vertices != len(face.vertices):
            raise CoverageError(f"{path}: the plan was made on {meta.get('source')!r} ({vertices} vertices), not "
                                "the bundled canonical face; give the face it was planned on (--mesh and "
                                "--landmarks)")
    elif vertices != len(face.vertices):
        raise CoverageError(f"{path}: the plan was made on a face of {vertices} vertices (subdivisions "
                            f"{meta.get('subdivisions')}), the given face has {len(face.vertices)}; load the face "
                            "at the resolution the plan was made with (--edge-mm)")
    return face


def read_plan_files(path, face=None):
    """``(doc, arrays, face)`` of a saved plan, every part checked."""
    doc = read_plan_json(path)
    arrays = read_plan_arrays(path, doc)
    _check_rows(doc, arrays, path)
    return doc, arrays, face_for_plan(doc, face, path)


def load_plan(path, face=None, zones=None):
    """A saved plan as a :class:`~coverage.plan.Plan`, arrays exactly as they were saved.

    face : the face it was planned on (a scan: load it with the same ``edge_mm``); default:
        the bundled face at the plan's resolution.
    zones : its zone map, if already built; default: rebuilt from the face and the plan's
        protocol when first read.
    """
    from .plan import Plan, Stroke, Transition
    from .protocol import Protocol
    from .zones import LazyZoneMap

    doc, a, face = read_plan_files(path, face)
    protocol = Protocol.from_dict(doc["protocol"], source=f"{path}: protocol")
    zones = LazyZoneMap(face, protocol) if zones is None else zones
    strokes = []
    for s in doc["strokes"]:
        rows = slice(s["path"]["first"], s["path"]["first"] + s["path"]["samples"])
        swath = a["path_swath_mm"][rows]
        stamps = s.get("stamps")
        srows = None if stamps is None else slice(stamps["first"], stamps["first"] + stamps["samples"])
        strokes.append(Stroke(
            id=s["id"], device=s["device"], zone=s["zone"], pass_index=s["pass_index"], line=s["line"],
            direction_deg=s["direction_deg"], depth_mm=s["depth_mm"], needle_length_mm=s["needle_length_mm"],
            speed_mm_s=s["speed_mm_s"], uv=a["path_uv"][rows], tri=a["path_tri"][rows], bary=a["path_bary"][rows],
            points=a["path_positions"][rows], normals=a["path_normals"][rows], tangents=a["path_tangents"][rows],
            times_s=a["path_times_s"][rows], swath_mm=None if np.isnan(swath).all() else swath,
            stamp_hz=s["stamp_hz"], punctures=s["punctures"], zones=list(s["zones"]), family=s["family"],
            pattern=s["pattern"], puncture_rate_hz=s["puncture_rate_hz"],
            stamp_uv=None if srows is None else a["stamp_uv"][srows],
            stamp_points=None if srows is None else a["stamp_positions"][srows],
            stamp_times_s=None if srows is None else a["stamp_times_s"][srows],
            cartridge=s.get("cartridge")))
    moves = []
    for t in doc["transitions"]:
        rows = slice(t["path"]["first"], t["path"]["first"] + t["path"]["samples"])
        moves.append(Transition(t["from"], t["to"], a["transition_positions"][rows], a["transition_times_s"][rows]))
    return Plan(face, zones, protocol, doc["device"], strokes, moves, a["punctures"], a["puncture_uv"],
                a["puncture_stroke"], a["puncture_depth_mm"], doc["status"], a["puncture_tri"], a["puncture_bary"])
