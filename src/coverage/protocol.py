"""The treatment protocol: session dose, roller drum, pen cartridge, margins, zones, lesions.

A protocol is a TOML file (``format = "coverage-protocol"``, ``version = 1``) merged over the
bundled default (``coverage/data/default_protocol.toml``): a user file gives only the fields it
changes. Everything is validated on load; a :class:`~coverage.errors.ProtocolError` is one line,
``<file>:<line>: <dotted.field> = <value> <what is wrong>; <the fix>``.

Units are in the field names: mm, mm/s (``mm_s``), mm/s² (``mm_s2``), Hz, punctures per cm²
(``per_cm2``), degrees (``deg``). Chart coordinates (``polygon_chart``) are chart mm; 3D points
(``center_mm``) are mm in the face's frame.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import shapely
from shapely.validation import explain_validity

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .errors import ProtocolError

FORMAT = "coverage-protocol"
SUPPORTED_VERSIONS = (1,)
STANDARD_ZONES = ("forehead", "glabella", "temple_left", "temple_right", "periorbital_left",
                  "periorbital_right", "nose", "cheek_left", "cheek_right", "zygoma_left",
                  "zygoma_right", "perioral", "chin", "jaw_left", "jaw_right")
DEVICES = ("roller", "pen")
# Horizontal, vertical and both diagonals: the classic roller protocol (DOMAIN.md).
DEFAULT_DIRECTIONS_DEG = (0.0, 90.0, 45.0, 135.0)
# Depths are compared with the pen's step grid at this tolerance (mm) so 0.1-mm steps work.
_STEP_TOL_MM = 1e-9


# ----------------------------------------------------------------------------- plain data

@dataclass(frozen=True)
class SessionSpec:
    """Session-wide dose and motion settings."""

    target_per_cm2: float        # reference dose, punctures/cm²; a zone's target = dose_scale × this
    cap_ratio: float             # a zone's cap = cap_ratio × its target, unless the zone sets one
    positioning_error_mm: float  # applicator registration error, mm; widens every margin
    clearance_mm: float          # lift along the surface normal between strokes, mm
    hop_clearance_mm: float      # lift for a move that crosses no keep-out (its chart line stays clear), mm;
                                 # never more than clearance_mm (the smaller of the two is used)
    transit_speed_mm_s: float    # tool speed when lifted between strokes, mm/s
    transit_accel_mm_s2: float   # tool acceleration in the air (lift, travel, lower), mm/s²
    angular_speed_deg_s: float   # how fast the tool may turn, deg/s
    angular_accel_deg_s2: float  # its angular acceleration while turning in the air, deg/s²
    start_corner: str            # where each zone's sweeps start: auto or a face-frame corner


@dataclass(frozen=True)
class RollerSpec:
    """A derma-roller drum: needle rings across the width, needles around each ring."""

    drum_diameter_mm: float
    drum_width_mm: float
    needle_rings: int            # rings across the drum width
    needles_per_ring: int        # needles around each ring
    needle_diameter_mm: float
    needle_length_mm_min: float  # drum lengths available (one length per drum)
    needle_length_mm_max: float
    gap_tolerance: float         # a needle whose gap exceeds this fraction of its length misses
    speed_mm_s: float            # rolling speed along a pass, mm/s
    accel_mm_s2_max: float       # rolling acceleration along a pass, mm/s²
    stagger: bool                # alternate rings offset by half a needle pitch
    min_swath_fraction: float    # the drum conforms where at least this share of its rings reach

    @property
    def needles(self) -> int:
        """Needles on the drum (rings × needles per ring)."""
        return self.needle_rings * self.needles_per_ring

    @property
    def density_per_pass_per_cm2(self) -> float:
        """Nominal punctures/cm² of one pass: needles over the rolled-out drum area π·D·W (mm²)."""
        return self.needles / (math.pi * self.drum_diameter_mm * self.drum_width_mm) * 100.0


@dataclass(frozen=True)
class PenSpec:
    """A derma-pen cartridge and the applicator's motion limits."""

    needles: int                 # per cartridge
    footprint_diameter_mm: float
    needle_diameter_mm: float    # also the distance within which punctures merge into one channel
    stamp_hz: float              # nominal stamp rate, Hz
    stamp_hz_min: float
    stamp_hz_max: float
    speed_mm_s_min: float        # glide speed range, mm/s
    speed_mm_s_max: float
    accel_mm_s2_max: float       # mm/s²
    depth_mm_min: float          # depth settings of the pen, mm
    depth_mm_max: float
    depth_step_mm: float
    override_depth_mm: float     # zone depths above this need depth_override = true
    passes_min: int              # crossed passes per area
    passes_max: int
    gap_tolerance: float         # a needle whose gap to the skin exceeds this fraction of the depth misses
    fine_needles: int            # fine touch-up cartridge where the main footprint cannot reach (0: none)
    fine_footprint_diameter_mm: float


@dataclass(frozen=True)
class Margins:
    """Keep-out distances on the skin, mm (each widened by session.positioning_error_mm)."""

    eye_mm: float                # from the lower lash line and outer corner
    upper_eyelid_mm: float       # the upper eyelid itself is always excluded
    lips_mm: float               # from the outer lip (vermilion) contour
    nostril_mm: float
    eyebrow_mm: float
    lesion_mm: float             # default margin around each lesion
    exclude_eyebrows: bool


@dataclass(frozen=True)
class ZoneDose:
    """The dose, depth and devices of one zone, with targets resolved to punctures/cm²."""

    name: str
    dose_scale: float                           # target / session.target_per_cm2
    target_per_cm2: float
    cap_per_cm2: float                          # never exceeded anywhere in the zone
    depth_mm: float                             # pen depth
    max_depth_mm: float
    devices: tuple[str, ...]                    # subset of DEVICES
    roller_needle_length_mm: float | None       # drum used here; None when the roller is not allowed
    directions_deg: tuple[float, ...]           # pass lines, each in [0, 180)
    depth_override: bool = False
    polygon_chart: tuple[tuple[float, float], ...] | None = None  # (k, 2) chart mm; None: standard outline
    pen_pattern: str = "raster"                 # "raster" (crossed lines) or "contour" (loops along the border)


@dataclass(frozen=True)
class Lesion:
    """A user-marked lesion to keep out: a 3D point with a radius, or a chart polygon."""

    name: str
    center_mm: tuple[float, float, float] | None = None          # (3,) mm, face frame
    radius_mm: float | None = None
    polygon_chart: tuple[tuple[float, float], ...] | None = None  # (k, 2) chart mm
    margin_mm: float | None = None                               # None: margins.lesion_mm


@dataclass(frozen=True)
class Protocol:
    """A validated protocol. Build with :meth:`default`, :meth:`load` or :meth:`from_dict`.

    The instance returned by :meth:`default` is shared: derive variants with
    ``dataclasses.replace`` or :meth:`with_lesions`, never by mutating ``zones``.
    """

    name: str
    session: SessionSpec
    roller: RollerSpec
    pen: PenSpec
    margins: Margins
    zones: dict[str, ZoneDose] = field(hash=False)  # ordered as in the file(s)
    lesions: tuple[Lesion, ...] = ()
    source: str = field(default="", compare=False)  # file path, "<default>" or "<dict>"

    @classmethod
    def default(cls) -> Protocol:
        """The bundled default protocol (parsed once)."""
        return _default_protocol()

    @staticmethod
    def default_text() -> str:
        """The bundled default protocol file, verbatim (TOML with comments)."""
        return _default_text()

    @classmethod
    def load(cls, path: str | os.PathLike) -> Protocol:
        """Read a TOML protocol file and merge it over the default."""
        label = os.fspath(path)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise ProtocolError(f"{label}: protocol file not found; check the path "
                                f"(Protocol.default_text() gives a file to start from)") from None
        except OSError as exc:
            raise ProtocolError(f"{label}: cannot read the protocol file ({exc.strerror or exc}); "
                                f"check the path and its permissions") from exc
        try:
            text = data.decode("utf-8-sig")  # tolerate the BOM some editors write
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{label}: not UTF-8 text (bad byte at offset {exc.start}); "
                                f"save the protocol file as UTF-8") from None
        return _parse(text, label)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Protocol:
        """Build from a dict shaped like the TOML file, merged over the default."""
        return _build(data, _Context(source))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (resolved targets and caps) that :meth:`from_dict` reads back."""
        return {
            "format": FORMAT,
            "version": SUPPORTED_VERSIONS[-1],
            "name": self.name,
            **{key: _plain(getattr(self, key)) for key in _TABLES},
            "zones": {name: _plain(zone, drop=("name",)) for name, zone in self.zones.items()},
            "lesions": [_plain(lesion) for lesion in self.lesions],
        }

    def zone(self, name: str) -> ZoneDose:
        """The zone called ``name``."""
        try:
            return self.zones[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self.zones), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ProtocolError(f"{self.source or '<protocol>'}: zones.{name} is not a zone of protocol "
                                f"{self.name!r}; {hint}known zones: {', '.join(self.zones)}") from None

    def with_lesions(self, *lesions: Lesion) -> Protocol:
        """A copy with ``lesions`` appended (validated; names stay unique)."""
        ctx = _Context("<with_lesions>")
        raws = []
        for i, lesion in enumerate(self.lesions + lesions):
            if not isinstance(lesion, Lesion):
                ctx.fail(("lesions", i), f"is {_what(lesion)}, not a Lesion",
                         "build it with Lesion(name, center_mm=..., radius_mm=...) or "
                         "Lesion(name, polygon_chart=...)", lesion)
            raws.append(_plain(lesion))
        return dataclasses.replace(self, lesions=_lesions(ctx, raws))


# ----------------------------------------------------------------------------- schema

@dataclass(frozen=True)
class _Field:
    """What one value must be: a kind and, for numbers, a range (closed unless ``lo_open``)."""

    kind: str  # "float", "int", "bool", "str", "devices", "angles", "point3", "polygon"
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    unit: str = ""
    choices: tuple = ()  # for kind "choice"


def _num(lo: float, hi: float, unit: str = "", *, lo_open: bool = False, integer: bool = False) -> _Field:
    return _Field("int" if integer else "float", lo, hi, lo_open, f" {unit}" if unit else "")


_BOOL, _TEXT = _Field("bool"), _Field("str")
PEN_PATTERNS = ("raster", "contour")
START_CORNERS = ("auto", "bottom_left", "bottom_right", "top_left", "top_right")
_DENSITY = "punctures/cm2"

_SESSION = {
    "target_per_cm2": _num(0, 2000, _DENSITY, lo_open=True),
    "cap_ratio": _num(1, 3),
    "positioning_error_mm": _num(0, 5, "mm"),
    "clearance_mm": _num(1, 100, "mm"),
    "hop_clearance_mm": _num(0.5, 100, "mm"),
    "transit_speed_mm_s": _num(0, 500, "mm/s", lo_open=True),
    "transit_accel_mm_s2": _num(0, 20000, "mm/s2", lo_open=True),
    "angular_speed_deg_s": _num(0, 3600, "deg/s", lo_open=True),
    "angular_accel_deg_s2": _num(0, 100000, "deg/s2", lo_open=True),
    "start_corner": _Field("choice", choices=START_CORNERS),
}
_ROLLER = {
    "drum_diameter_mm": _num(5, 60, "mm"),
    "drum_width_mm": _num(5, 60, "mm"),
    "needle_rings": _num(1, 64, integer=True),
    "needles_per_ring": _num(3, 128, integer=True),
    "needle_diameter_mm": _num(0, 1, "mm", lo_open=True),
    "needle_length_mm_min": _num(0.1, 3.0, "mm"),
    "needle_length_mm_max": _num(0.1, 3.0, "mm"),
    "gap_tolerance": _num(0, 1, lo_open=True),
    "speed_mm_s": _num(0, 200, "mm/s", lo_open=True),
    "accel_mm_s2_max": _num(0, 20000, "mm/s2", lo_open=True),
    "stagger": _BOOL,
    "min_swath_fraction": _num(0, 1, lo_open=True),
}
_PEN = {
    "needles": _num(1, 64, integer=True),
    "footprint_diameter_mm": _num(1, 20, "mm"),
    "needle_diameter_mm": _num(0, 1, "mm", lo_open=True),
    "stamp_hz": _num(1, 500, "Hz"),
    "stamp_hz_min": _num(1, 500, "Hz"),
    "stamp_hz_max": _num(1, 500, "Hz"),
    "speed_mm_s_min": _num(0, 500, "mm/s", lo_open=True),
    "speed_mm_s_max": _num(0, 500, "mm/s", lo_open=True),
    "accel_mm_s2_max": _num(0, 20000, "mm/s2", lo_open=True),
    "depth_mm_min": _num(0, 3.0, "mm", lo_open=True),
    "depth_mm_max": _num(0, 3.0, "mm", lo_open=True),
    "depth_step_mm": _num(0, 1, "mm", lo_open=True),
    "override_depth_mm": _num(0, 3.0, "mm", lo_open=True),
    "passes_min": _num(1, 16, integer=True),
    "passes_max": _num(1, 16, integer=True),
    "gap_tolerance": _num(0, 1, lo_open=True),
    "fine_needles": _num(0, 64, integer=True),
    "fine_footprint_diameter_mm": _num(1, 20, "mm"),
}
_MARGINS = {**{key: _num(0, 30, "mm") for key in ("eye_mm", "upper_eyelid_mm", "lips_mm",
                                                    "nostril_mm", "eyebrow_mm", "lesion_mm")},
            "exclude_eyebrows": _BOOL}
_ZONE = {
    "dose_scale": _num(0, 4, lo_open=True),
    "target_per_cm2": _num(0, 2000, _DENSITY, lo_open=True),
    # 6000 = the largest target (2000) × the largest cap_ratio (3)
    "cap_per_cm2": _num(0, 6000, _DENSITY, lo_open=True),
    "depth_mm": _num(0, 3.0, "mm", lo_open=True),
    "max_depth_mm": _num(0, 3.0, "mm", lo_open=True),
    "devices": _Field("devices"),
    "roller_needle_length_mm": _num(0.1, 3.0, "mm"),
    "directions_deg": _Field("angles"),
    "depth_override": _BOOL,
    "polygon_chart": _Field("polygon"),
    "pen_pattern": _Field("choice", choices=PEN_PATTERNS),
}
_LESION = {
    "name": _TEXT,
    "center_mm": _Field("point3"),
    "radius_mm": _num(0, 50, "mm", lo_open=True),
    "polygon_chart": _Field("polygon"),
    "margin_mm": _num(0, 30, "mm"),
}
_TABLES = {"session": (_SESSION, SessionSpec), "roller": (_ROLLER, RollerSpec),
           "pen": (_PEN, PenSpec), "margins": (_MARGINS, Margins)}
_TOP = ("format", "version", "name", *_TABLES, "zones", "lesions")
# (table, lower key, upper key, key the message blames) for every "lower <= upper" pair.
_ORDERED = (
    ("roller", "needle_length_mm_min", "needle_length_mm_max", "needle_length_mm_min"),
    ("pen", "stamp_hz_min", "stamp_hz_max", "stamp_hz_min"),
    ("pen", "stamp_hz_min", "stamp_hz", "stamp_hz"),
    ("pen", "stamp_hz", "stamp_hz_max", "stamp_hz"),
    ("pen", "speed_mm_s_min", "speed_mm_s_max", "speed_mm_s_min"),
    ("pen", "depth_mm_min", "depth_mm_max", "depth_mm_min"),
    ("pen", "depth_mm_min", "override_depth_mm", "override_depth_mm"),
    ("pen", "override_depth_mm", "depth_mm_max", "override_depth_mm"),
    ("pen", "passes_min", "passes_max", "passes_min"),
)
MIN_POLYGON_MM2 = 0.01  # the least chart area a zone's or a lesion's outline may enclose (a tenth of a mm square)
_EXAMPLES = {"angles": "[0.0, 90.0, 45.0, 135.0]", "point3": "[42.0, -12.0, 48.0]",
             "polygon": "[[30.0, -20.0], [40.0, -20.0], [40.0, -12.0]]"}


# ----------------------------------------------------------------------------- messages

def _g(x: float) -> str:
    """A number for prose: 0.30000000000000004 -> 0.3, 2000.0 -> 2000."""
    return f"{x:.10g}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                         "inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return " ".join(repr(value).split())  # one line whatever the object


def _show(value: Any, limit: int = 80) -> str:
    text = _toml(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _what(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, numbers.Real):
        return "a number"
    return {str: "text", list: "a list", tuple: "a list", dict: "a table"}.get(
        type(value), f"a {type(value).__name__}")


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _range_words(spec: _Field) -> str:
    if spec.lo_open:
        return f"greater than {_g(spec.lo)} and at most {_g(spec.hi)}{spec.unit}"
    return f"from {_g(spec.lo)} to {_g(spec.hi)}{spec.unit}"


_ABSENT = object()
_HEADER = re.compile(r"""^(\[\[?)\s*([\w\-."' ]+?)\s*\]\]?\s*(#.*)?$""")
_KEY = re.compile(r"""^([\w\-."' ]+?)\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _find_line(text: str, path: tuple) -> int | None:
    """1-based line of ``path`` (a key, or the header of a table) in TOML ``text``; best effort."""
    header: tuple = ()
    counts: dict[tuple, int] = {}
    depth = 0  # open brackets of a multi-line array: its lines hold no keys
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if depth > 0:
            depth += line.split("#")[0].count("[") - line.split("#")[0].count("]")
            continue
        if not line or line.startswith("#"):
            continue
        if m := _HEADER.match(line):
            keys = _split_key(m.group(2))
            if m.group(1) == "[[":
                counts[keys] = counts.get(keys, -1) + 1
                keys = keys + (counts[keys],)
            header = keys
            if header[:len(path)] == path:
                return lineno
        elif m := _KEY.match(line):
            if (header + _split_key(m.group(1)))[:len(path)] == path:
                return lineno
            value = line[m.end():].split("#")[0]
            depth = max(0, value.count("[") - value.count("]"))
    return None


class _Context:
    """Where the values come from (a label and maybe TOML text), so errors name file and line."""

    def __init__(self, source: str, text: str | None = None, lesion_offset: int = 0):
        self.source = source
        self.text = text
        self.lesion_offset = lesion_offset  # lesions of the default precede the file's own

    def _line(self, path: tuple) -> int | None:
        if self.text is None:
            return None
        if path[:1] == ("lesions",) and len(path) > 1:
            if path[1] < self.lesion_offset:
                return None
            path = ("lesions", path[1] - self.lesion_offset, *path[2:])
        return _find_line(self.text, path)

    def fail(self, path: tuple, problem: str, fix: str, value: Any = _ABSENT,
             at: tuple | None = None) -> NoReturn:
        """Raise the one-line error for ``path`` (line looked up for ``at`` if given)."""
        line = self._line(at or path)
        where = f"{self.source}:{line}" if line else self.source
        head = _dotted(path) if value is _ABSENT else f"{_dotted(path)} = {_show(value)}"
        raise ProtocolError(f"{where}: {head} {problem}; {fix}")

    def table(self, path: tuple, raw: Any, how: str | None = None) -> dict:
        if not isinstance(raw, dict):
            self.fail(path, f"is {_what(raw)}, not a table",
                      how or f"write it as a [{_dotted(path)}] section", raw)
        return raw

    def fields(self, path: tuple, raw: Any, schema: dict[str, _Field], required=(),
               how: str | None = None) -> dict[str, Any]:
        """Validate a table: no unknown keys, every value as its schema says, required present."""
        raw = self.table(path, raw, how)
        for key, value in raw.items():
            if key not in schema:
                self.unknown(path + (key,), value, schema)
        values = {key: self.check(path + (key,), value, schema[key]) for key, value in raw.items()}
        for key in required:
            if key not in values:
                self.fail(path + (key,), "is missing", f"add {key} to [{_dotted(path)}]", at=path)
        return values

    def unknown(self, path: tuple, value: Any, known) -> NoReturn:
        close = difflib.get_close_matches(str(path[-1]), list(known), n=1)
        fix = (f"did you mean {close[0]!r}?" if close else
               f"remove it or fix its name; known fields here: {', '.join(known)}")
        self.fail(path, "is not a known field", fix, value)

    def check(self, path: tuple, value: Any, spec: _Field) -> Any:
        """The one validation helper: ``value`` as ``spec`` demands, normalised, or a ProtocolError."""
        kind = spec.kind
        if kind in ("float", "int"):
            return self._number(path, value, spec)
        if kind == "bool":
            if not isinstance(value, bool):
                self.fail(path, f"is {_what(value)}, not true or false",
                          f"write {path[-1]} = true or {path[-1]} = false", value)
            return value
        if kind == "str":
            if not isinstance(value, str) or not value.strip():
                self.fail(path, "is not a name",
                          f'write a non-empty name in quotes, e.g. {path[-1]} = "mole_1"', value)
            return value
        if kind == "choice":
            if not isinstance(value, str) or value not in spec.choices:
                close = difflib.get_close_matches(str(value), spec.choices, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(path, "is not one of the choices",
                          f"{hint}use one of {', '.join(spec.choices)}", value)
            return value
        if kind == "devices":
            return self._devices(path, value)
        if kind == "angles":
            return self._angles(path, value)
        if kind == "point3":
            point = self._numbers(path, value, kind)
            if len(point) != 3:
                self.fail(path, f"has {len(point)} numbers, not 3",
                          f"give x, y, z in mm, e.g. {_EXAMPLES[kind]}", value)
            return tuple(point)
        if kind == "polygon":
            return self._polygon(path, value)
        raise AssertionError(kind)

    def _number(self, path: tuple, value: Any, spec: _Field) -> float | int:
        want = "a whole number" if spec.kind == "int" else "a number"
        fix = f"use {want} {_range_words(spec)}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(path, f"is {_what(value)}, not {want}", fix, value)
        if not math.isfinite(value):
            self.fail(path, "is not a finite number", fix, value)
        if spec.kind == "int":
            if value != int(value):
                self.fail(path, "is not a whole number", fix, value)
            value = int(value)
        else:
            value = float(value)
        if value < spec.lo or (spec.lo_open and value == spec.lo):
            self.fail(path, f"must be greater than {_g(spec.lo)}{spec.unit}" if spec.lo_open
                      else f"is below the minimum {_g(spec.lo)}{spec.unit}", fix, value)
        if value > spec.hi:
            self.fail(path, f"is above the maximum {_g(spec.hi)}{spec.unit}", fix, value)
        return value

    def _numbers(self, path: tuple, value: Any, kind: str) -> list[float]:
        fix = f"write a list of numbers such as {_EXAMPLES[kind]}"
        if not isinstance(value, (list, tuple)):
            self.fail(path, f"is {_what(value)}, not a list of numbers", fix, value)
        for item in value:
            if isinstance(item, bool) or not isinstance(item, numbers.Real):
                self.fail(path, f"contains {_show(item)}, which is not a number", fix, value)
            if not math.isfinite(item):
                self.fail(path, f"contains {_show(float(item))}, which is not a finite number", fix, value)
        return [float(item) for item in value]

    def _devices(self, path: tuple, value: Any) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not all(isinstance(d, str) for d in value):
            self.fail(path, "is not a list of device names", 'write e.g. devices = ["roller", "pen"]', value)
        if not value:
            self.fail(path, "is empty", 'allow at least one device: "roller" or "pen"', value)
        for i, device in enumerate(value):
            if device not in DEVICES:
                close = difflib.get_close_matches(device, DEVICES, n=1)
                self.fail(path, f"names an unknown device {device!r}",
                          f"did you mean {close[0]!r}?" if close else 'use "roller" and/or "pen"', value)
            if device in value[:i]:
                self.fail(path, f"lists {device!r} twice", "list each device once", value)
        return tuple(value)

    def _angles(self, path: tuple, value: Any) -> tuple[float, ...]:
        angles = self._numbers(path, value, "angles")
        if not angles:
            self.fail(path, "is empty",
                      f"give at least one pass direction in degrees, e.g. {_EXAMPLES['angles']}", value)
        lines: list[float] = []
        for i, angle in enumerate(angles):
            # A pass direction is a line: 180° is the same line as 0°, so fold into [0, 180).
            line = math.fmod(angle, 180.0)
            line = line + 180.0 if line < 0 else line
            line = 0.0 if line >= 180.0 else line + 0.0
            for j, other in enumerate(lines):
                if min(abs(line - other), 180.0 - abs(line - other)) <= 1e-9:
                    self.fail(path, f"repeats the pass line {_g(other)}° ({_g(angles[j])}° and {_g(angle)}° "
                              "are the same line: a direction and its opposite pass along one line)",
                              f"remove {_g(angle)}", value)
            lines.append(line)
        return tuple(lines)

    def _polygon(self, path: tuple, value: Any) -> tuple[tuple[float, float], ...]:
        fix = f"give at least 3 [u, v] corners in chart mm, e.g. {_EXAMPLES['polygon']}"
        if not isinstance(value, (list, tuple)) or len(value) < 3:
            self.fail(path, "is not a list of at least 3 points", fix, value)
        points = []
        for point in value:
            if (not isinstance(point, (list, tuple)) or len(point) != 2
                    or any(isinstance(c, bool) or not isinstance(c, numbers.Real) for c in point)):
                self.fail(path, f"has the corner {_show(point)}, not a [u, v] pair of numbers", fix, value)
            if not all(math.isfinite(c) for c in point):
                self.fail(path, f"has the corner {_show(point)} with a non-finite coordinate", fix, value)
            points.append((float(point[0]), float(point[1])))
        polygon = shapely.Polygon(points)
        if not polygon.is_valid or polygon.area <= 0:
            reason = explain_validity(polygon) if not polygon.is_valid else "no area"
            self.fail(path, f"is not a valid simple polygon ({reason})",
                      "list the corners in order around the outline, without crossings", value)
        if polygon.area < MIN_POLYGON_MM2:
            self.fail(path, f"encloses {polygon.area:.3g} mm2 of chart, under {MIN_POLYGON_MM2:g} mm2",
                      "give the outline in chart mm around the skin it marks", value)
        return tuple(points)


# ----------------------------------------------------------------------------- loading

def _parse(text: str, label: str) -> Protocol:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        where = f"{label}:{m.group(1)}" if m else label
        raise ProtocolError(f"{where}: not valid TOML ({exc}); fix the syntax on that line") from exc
    return _build(raw, _Context(label, text, lesion_offset=len(_default_raw().get("lesions", []))))


@functools.cache
def _default_text() -> str:
    return (importlib.resources.files("coverage.data") / "default_protocol.toml").read_text(encoding="utf-8")


@functools.cache
def _default_raw() -> dict:
    """The parsed default file; shared, so merging never mutates it."""
    return tomllib.loads(_default_text())


@functools.cache
def _default_protocol() -> Protocol:
    return _build(_default_raw(), _Context("<default>", _default_text()))


def _build(user: Any, ctx: _Context) -> Protocol:
    """Check ``user`` (a parsed file or dict), merge it over the default, validate the result."""
    if not isinstance(user, dict):
        raise ProtocolError(f"{ctx.source}: the protocol is {_what(user)}, not a table; "
                            "give a dict shaped like the TOML file")
    # Version first: a file for another version would otherwise fail on its unknown fields.
    if "format" in user and user["format"] != FORMAT:
        ctx.fail(("format",), "is not a coverage protocol", f'set format = "{FORMAT}"', user["format"])
    version = user.get("version", SUPPORTED_VERSIONS[-1])
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        ctx.fail(("version",), "is not a supported protocol version",
                 f"this planner reads version {', '.join(map(str, SUPPORTED_VERSIONS))}: set version = "
                 f"{SUPPORTED_VERSIONS[-1]} and check the fields against Protocol.default_text()", version)
    return _validate(_merge(_default_raw(), user, ctx), ctx)


def _merge(base: dict, user: dict, ctx: _Context) -> dict:
    """``user`` over ``base``: tables field by field, zones field by field, lesions appended."""
    merged = dict(base)
    for key, value in user.items():
        if key in _TABLES:
            merged[key] = {**base[key], **ctx.table((key,), value)}
        elif key == "zones":
            zones = {name: dict(zone) for name, zone in base["zones"].items()}
            for name, zone in ctx.table(("zones",), value).items():
                zones[name] = _merge_zone(zones.get(name, {}), ctx.table(("zones", name), zone))
            merged["zones"] = zones
        elif key == "lesions":
            if not isinstance(value, (list, tuple)):
                ctx.fail(("lesions",), f"is {_what(value)}, not a list of lesions",
                         "write each lesion as a [[lesions]] section", value)
            merged["lesions"] = [*base.get("lesions", []), *value]
        else:
            merged[key] = value  # format, version, name, or an unknown key _validate reports
    return merged


def _merge_zone(old: dict, new: dict) -> dict:
    merged = {**old, **new}
    # The target follows whichever of dose_scale / target_per_cm2 the user gave, and the cap
    # follows the target; a default left behind would contradict the user's intent.
    if "target_per_cm2" in new and "dose_scale" not in new:
        merged.pop("dose_scale", None)
    if "dose_scale" in new and "target_per_cm2" not in new:
        merged.pop("target_per_cm2", None)
    if ("dose_scale" in new or "target_per_cm2" in new) and "cap_per_cm2" not in new:
        merged.pop("cap_per_cm2", None)
    # New devices without a drum length: the default drum belonged to the default devices.
    if "devices" in new and "roller_needle_length_mm" not in new:
        merged.pop("roller_needle_length_mm", None)
    return merged


def _validate(merged: dict, ctx: _Context) -> Protocol:
    for key, value in merged.items():
        if key not in _TOP:
            ctx.unknown((key,), value, _TOP)
    name = ctx.check(("name",), merged["name"], _TEXT)
    specs = {key: cls(**ctx.fields((key,), merged[key], schema, required=tuple(schema)))
             for key, (schema, cls) in _TABLES.items()}
    for table, lo, hi, blame in _ORDERED:
        a, b = getattr(specs[table], lo), getattr(specs[table], hi)
        if a > b and blame == lo:
            ctx.fail((table, lo), f"is above {table}.{hi} {_g(b)}",
                     f"lower {lo} to at most {_g(b)} or raise {hi}", a)
        if a > b:
            ctx.fail((table, hi), f"is below {table}.{lo} {_g(a)}",
                     f"raise {hi} to at least {_g(a)} or lower {lo}", b)
    # a needle thinner than each footprint it is laid out in
    pen = specs["pen"]
    for key in ("footprint_diameter_mm",) + (("fine_footprint_diameter_mm",) if pen.fine_needles else ()):
        if not pen.needle_diameter_mm < getattr(pen, key):
            ctx.fail(("pen", "needle_diameter_mm"), f"is not below pen.{key} {_g(getattr(pen, key))}",
                     f"give a needle thinner than the footprint (below {_g(getattr(pen, key))})",
                     pen.needle_diameter_mm)
    zones = {zone_name: _zone(ctx, zone_name, raw, specs["session"], specs["roller"], specs["pen"])
             for zone_name, raw in ctx.table(("zones",), merged["zones"]).items()}
    return Protocol(name=name, zones=zones, lesions=_lesions(ctx, merged.get("lesions", [])),
                    source=ctx.source, **specs)


def _zone(ctx: _Context, name: str, raw: Any, session: SessionSpec, roller: RollerSpec,
          pen: PenSpec) -> ZoneDose:
    path = ("zones", name)
    values = ctx.fields(path, raw, _ZONE)
    custom = name not in STANDARD_ZONES
    needed = ("polygon_chart",) * custom + ("devices", "depth_mm", "max_depth_mm")
    if "dose_scale" not in values and "target_per_cm2" not in values:
        needed += ("dose_scale",)
    for key in needed:
        if key not in values:
            close = difflib.get_close_matches(name, STANDARD_ZONES, n=1)
            hint = f" (or did you mean the standard zone {close[0]!r}?)" if close else ""
            what = "a custom zone (not one of the standard zones)" if custom else "a zone"
            ctx.fail(path + (key,), "is missing", f"{what} needs polygon_chart, devices, depth_mm, "
                     f"max_depth_mm and dose_scale or target_per_cm2{hint}", at=path)
    scale, target, cap = _zone_dose(ctx, path, values, session)
    _check_zone_depth(ctx, path, values, pen)
    devices = values["devices"]
    return ZoneDose(name=name, dose_scale=scale, target_per_cm2=target, cap_per_cm2=cap,
                    depth_mm=values["depth_mm"], max_depth_mm=values["max_depth_mm"], devices=devices,
                    roller_needle_length_mm=_zone_drum(ctx, path, values, roller),
                    directions_deg=values.get("directions_deg", DEFAULT_DIRECTIONS_DEG),
                    depth_override=values.get("depth_override", False),
                    polygon_chart=values.get("polygon_chart"),
                    pen_pattern=values.get("pen_pattern", "raster"))


def _zone_dose(ctx: _Context, path: tuple, values: dict, session: SessionSpec) -> tuple[float, float, float]:
    """(dose_scale, target_per_cm2, cap_per_cm2): each given or derived, all in range."""
    scale, target = values.get("dose_scale"), values.get("target_per_cm2")
    reference = session.target_per_cm2
    if target is None:
        target = scale * reference
        limit = _ZONE["target_per_cm2"].hi
        if target > limit:
            ctx.fail(path + ("dose_scale",), f"gives a target of {_g(target)} {_DENSITY} "
                     f"(× session.target_per_cm2 {_g(reference)}), above the maximum {_g(limit)}",
                     "lower dose_scale or session.target_per_cm2", scale)
    elif scale is None:
        scale = target / reference
        limit = _ZONE["dose_scale"].hi
        if scale > limit:
            ctx.fail(path + ("target_per_cm2",), f"is {_g(scale)} × session.target_per_cm2 "
                     f"{_g(reference)}, above the largest dose scale {_g(limit)}",
                     "lower target_per_cm2 or raise session.target_per_cm2", target)
    elif not math.isclose(target, scale * reference, rel_tol=1e-9):
        ctx.fail(path + ("target_per_cm2",), f"disagrees with dose_scale {_g(scale)} × "
                 f"session.target_per_cm2 {_g(reference)} = {_g(scale * reference)}",
                 "give only one of target_per_cm2 and dose_scale", target)
    cap = values.get("cap_per_cm2", session.cap_ratio * target)
    if cap < target:
        ctx.fail(path + ("cap_per_cm2",), f"is below the zone target {_g(target)} {_DENSITY} (a target "
                 "above its cap can never be met without overdosing)",
                 f"raise cap_per_cm2 to at least {_g(target)} or lower the target", cap)
    return scale, target, cap


def _check_zone_depth(ctx: _Context, path: tuple, values: dict, pen: PenSpec) -> None:
    """The pen depth fits under the zone maximum, on the pen's step grid, within its settings."""
    depth, max_depth = values["depth_mm"], values["max_depth_mm"]
    override = pen.override_depth_mm
    if depth > max_depth:
        ctx.fail(path + ("depth_mm",), f"exceeds the zone maximum {_g(max_depth)} mm",
                 f"lower depth_mm or raise max_depth_mm (above {_g(override)} mm only with "
                 "depth_override = true)", depth)
    if max_depth > pen.depth_mm_max:
        ctx.fail(path + ("max_depth_mm",), f"exceeds the pen's deepest setting pen.depth_mm_max "
                 f"{_g(pen.depth_mm_max)} mm", f"lower max_depth_mm to at most {_g(pen.depth_mm_max)}",
                 max_depth)
    if max_depth > override and not values.get("depth_override", False):
        ctx.fail(path + ("max_depth_mm",), f"is above pen.override_depth_mm {_g(override)} mm",
                 f"add depth_override = true to [{_dotted(path)}] to allow it, or lower max_depth_mm "
                 f"to {_g(override)}", max_depth)
    if depth < pen.depth_mm_min:
        ctx.fail(path + ("depth_mm",), f"is below the pen's shallowest setting pen.depth_mm_min "
                 f"{_g(pen.depth_mm_min)} mm", f"raise depth_mm to at least {_g(pen.depth_mm_min)}", depth)
    steps = depth / pen.depth_step_mm
    if abs(depth - round(steps) * pen.depth_step_mm) > _STEP_TOL_MM:
        below = math.floor(steps) * pen.depth_step_mm
        ctx.fail(path + ("depth_mm",), f"is not a multiple of pen.depth_step_mm {_g(pen.depth_step_mm)} mm",
                 f"use {_g(below)} or {_g(below + pen.depth_step_mm)}", depth)


def _zone_drum(ctx: _Context, path: tuple, values: dict, roller: RollerSpec) -> float | None:
    """The drum needle length (mm) used in the zone, None if the roller is not allowed there."""
    length = values.get("roller_needle_length_mm")
    if "roller" not in values["devices"]:
        if length is not None:
            ctx.fail(path + ("roller_needle_length_mm",), "is set but the roller is not among the zone's "
                     "devices", 'remove roller_needle_length_mm or add "roller" to devices', length)
        return None
    given = length is not None
    length = length if given else values["depth_mm"]
    at = path + ("roller_needle_length_mm" if given else "depth_mm",)
    note = "" if given else " (it defaults to depth_mm)"
    shortest, longest = roller.needle_length_mm_min, roller.needle_length_mm_max
    if not shortest <= length <= longest:
        ctx.fail(path + ("roller_needle_length_mm",), f"is outside the drum lengths "
                 f"roller.needle_length_mm_min {_g(shortest)} to roller.needle_length_mm_max {_g(longest)} mm",
                 f"set roller_needle_length_mm to a drum length in that range{note}, "
                 'or remove "roller" from devices', length, at=at)
    if length > values["max_depth_mm"]:
        ctx.fail(path + ("roller_needle_length_mm",),
                 f"exceeds the zone maximum {_g(values['max_depth_mm'])} mm",
                 f"use a shorter drum{note} or raise max_depth_mm", length, at=at)
    return length


def _lesions(ctx: _Context, raws: list) -> tuple[Lesion, ...]:
    lesions: list[Lesion] = []
    for i, raw in enumerate(raws):
        path = ("lesions", i)
        values = ctx.fields(path, raw, _LESION, required=("name",),
                            how="write each lesion as a [[lesions]] section")
        name, center, radius, polygon = (values.get(key) for key in ("name", "center_mm", "radius_mm",
                                                                     "polygon_chart"))
        for j, other in enumerate(lesions):
            if other.name == name:
                ctx.fail(path + ("name",), f"repeats the name of lesions[{j}]", "give each lesion its own name",
                         name)
        if polygon is not None and (center is not None or radius is not None):
            ctx.fail(path, f"({name!r}) gives both polygon_chart and center_mm/radius_mm",
                     "keep one: a chart polygon, or a point on the face with a radius")
        if polygon is None and center is None and radius is None:
            ctx.fail(path, f"({name!r}) has neither center_mm with radius_mm nor polygon_chart",
                     "give a point on the face and a radius in mm, or a polygon in chart mm")
        if polygon is None and center is None:
            ctx.fail(path + ("radius_mm",), "has no center_mm",
                     f"add center_mm = {_EXAMPLES['point3']} (mm, face frame)", radius)
        if polygon is None and radius is None:
            ctx.fail(path + ("center_mm",), "has no radius_mm", "add radius_mm, e.g. radius_mm = 2.5", center)
        lesions.append(Lesion(name=name, center_mm=center, radius_mm=radius, polygon_chart=polygon,
                              margin_mm=values.get("margin_mm")))
    return tuple(lesions)


def _plain(obj: Any, drop: tuple[str, ...] = ()) -> dict:
    """A dataclass as a JSON-ready dict: tuples become lists, None fields are left out."""
    return {f.name: _plain_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            if f.name not in drop and getattr(obj, f.name) is not None}


def _plain_value(value):
    """A field's value as JSON takes it: lists and tuples (nested) as lists. (A module
    function: a nested one calling itself would be a reference cycle on every call.)"""
    return [_plain_value(v) for v in value] if isinstance(value, (list, tuple)) else value
