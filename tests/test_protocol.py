"""Protocol loading, merging and validation (src/coverage/protocol.py)."""
from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from coverage.errors import ProtocolError
from coverage.protocol import (DEVICES, STANDARD_ZONES, Lesion, Margins, PenSpec, Protocol, RollerSpec,
                               SessionSpec, ZoneDose)

PEN_ONLY = {"glabella", "periorbital_left", "periorbital_right", "nose", "perioral"}


def load_text(tmp_path, text: str, name: str = "my.toml") -> Protocol:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return Protocol.load(path)


def error_of(tmp_path, text: str) -> str:
    """The message of the ProtocolError that loading ``text`` raises (always one line)."""
    with pytest.raises(ProtocolError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


def dict_error(data) -> str:
    with pytest.raises(ProtocolError) as info:
        Protocol.from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def toml_value(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # numbers, booleans, strings and lists read the same in TOML


# ----------------------------------------------------------------------------- the default

def test_default_matches_domain_numbers():
    p = Protocol.default()
    cheek = p.zone("cheek_left")
    assert cheek.target_per_cm2 == 250.0
    assert cheek.cap_per_cm2 == 312.5
    assert cheek.depth_mm == 1.0 and cheek.max_depth_mm == 1.5
    assert p.zone("periorbital_left").target_per_cm2 == 150.0
    assert p.zone("periorbital_right").max_depth_mm == 0.5
    assert p.zone("forehead").roller_needle_length_mm == 0.5
    assert p.zone("forehead").target_per_cm2 == 187.5
    assert p.zone("glabella").roller_needle_length_mm is None
    assert p.session.target_per_cm2 == 250.0 and p.session.cap_ratio == 1.25
    assert p.margins.eye_mm == 5.0 and p.margins.lips_mm == 1.5 and p.margins.nostril_mm == 2.0
    assert p.margins.lesion_mm == 4.0 and p.margins.exclude_eyebrows is True
    assert p.pen.stamp_hz == 117.0 and p.pen.needles == 12 and p.pen.override_depth_mm == 1.5
    assert p.lesions == ()
    assert p.source == "<default>"


def test_roller_needles_and_density_by_hand():
    roller = Protocol.default().roller
    assert roller.needles == 192
    assert roller.density_per_pass_per_cm2 == pytest.approx(192 / (math.pi * 20 * 20) * 100, abs=1e-12)
    assert roller.density_per_pass_per_cm2 == pytest.approx(15.28, abs=0.01)


def test_every_standard_zone_with_the_domain_devices():
    p = Protocol.default()
    assert set(p.zones) == set(STANDARD_ZONES)
    for name in STANDARD_ZONES:
        zone = p.zone(name)
        assert zone.name == name
        expected = ("pen",) if name in PEN_ONLY else ("roller", "pen")
        assert zone.devices == expected, name
        assert (zone.roller_needle_length_mm is None) == (name in PEN_ONLY), name
        assert zone.directions_deg == (0.0, 90.0, 45.0, 135.0)
        assert zone.cap_per_cm2 == pytest.approx(1.25 * zone.target_per_cm2)


def test_default_is_cached_and_text_is_the_bundled_file():
    assert Protocol.default() is Protocol.default()
    bundled = (resources.files("coverage.data") / "default_protocol.toml").read_text(encoding="utf-8")
    assert Protocol.default_text() == bundled
    assert Protocol.from_dict(tomllib.loads(Protocol.default_text())) == Protocol.default()


@pytest.mark.parametrize("table, cls", [("session", SessionSpec), ("roller", RollerSpec),
                                        ("pen", PenSpec), ("margins", Margins)])
def test_default_tables_give_exactly_the_dataclass_fields(table, cls):
    raw = tomllib.loads(Protocol.default_text())[table]
    assert set(raw) == {f.name for f in dataclasses.fields(cls)}


def test_zones_keep_file_order():
    raw = tomllib.loads(Protocol.default_text())["zones"]
    assert list(Protocol.default().zones) == list(raw)


# ----------------------------------------------------------------------------- merging

def test_user_file_changing_one_field_keeps_every_other_default(tmp_path):
    p = load_text(tmp_path, "[zones.cheek_left]\ndepth_mm = 1.25\n")
    d = Protocol.default()
    assert p.zone("cheek_left").depth_mm == 1.25
    assert p.zone("cheek_left") == dataclasses.replace(d.zone("cheek_left"), depth_mm=1.25)
    assert {n: z for n, z in p.zones.items() if n != "cheek_left"} == \
        {n: z for n, z in d.zones.items() if n != "cheek_left"}
    assert (p.session, p.roller, p.pen, p.margins, p.name) == (d.session, d.roller, d.pen, d.margins, d.name)
    assert p.source == str(tmp_path / "my.toml")


def test_empty_user_file_is_the_default(tmp_path):
    assert load_text(tmp_path, "") == Protocol.default()


def test_session_target_scales_zone_targets_and_caps(tmp_path):
    p = load_text(tmp_path, "[session]\ntarget_per_cm2 = 300.0\ncap_ratio = 1.5\n")
    assert p.zone("cheek_left").target_per_cm2 == 300.0
    assert p.zone("cheek_left").cap_per_cm2 == 450.0
    assert p.zone("forehead").target_per_cm2 == pytest.approx(225.0)


def test_explicit_zone_target_replaces_the_dose_scale(tmp_path):
    p = load_text(tmp_path, "[zones.nose]\ntarget_per_cm2 = 100.0\ncap_per_cm2 = 110.0\n")
    nose = p.zone("nose")
    assert (nose.target_per_cm2, nose.cap_per_cm2) == (100.0, 110.0)
    assert nose.dose_scale == pytest.approx(0.4)


def test_new_devices_without_drum_length_use_the_depth(tmp_path):
    p = load_text(tmp_path, '[zones.glabella]\ndevices = ["roller", "pen"]\n\n'
                            '[zones.forehead]\ndevices = ["pen"]\n')
    assert p.zone("glabella").roller_needle_length_mm == 0.5
    assert p.zone("forehead").roller_needle_length_mm is None


def test_ints_are_accepted_for_floats(tmp_path):
    p = load_text(tmp_path, "[zones.cheek_left]\ndepth_mm = 1\n")
    assert p.zone("cheek_left").depth_mm == 1.0 and isinstance(p.zone("cheek_left").depth_mm, float)


def test_user_lesions_are_added(tmp_path):
    p = load_text(tmp_path, '[[lesions]]\nname = "mole"\ncenter_mm = [42, -12, 48]\nradius_mm = 2.5\n\n'
                            '[[lesions]]\nname = "tattoo"\npolygon_chart = [[30, -20], [40, -20], [40, -12]]\n'
                            'margin_mm = 6.0\n')
    assert p.lesions == (Lesion("mole", center_mm=(42.0, -12.0, 48.0), radius_mm=2.5),
                         Lesion("tattoo", polygon_chart=((30.0, -20.0), (40.0, -20.0), (40.0, -12.0)),
                                margin_mm=6.0))
    assert p.lesions[0].margin_mm is None


# ----------------------------------------------------------------------------- custom zones

CUSTOM_ZONE = """\
[zones.scar_patch]
target_per_cm2 = 300.0
devices = ["pen"]
depth_mm = 1.0
max_depth_mm = 1.5
polygon_chart = [[0.0, 0.0], [10.0, 0.0], [10.0, 8.0], [0.0, 8.0]]
"""


def test_custom_zone_with_polygon_is_accepted(tmp_path):
    p = load_text(tmp_path, CUSTOM_ZONE)
    zone = p.zone("scar_patch")
    assert list(p.zones)[-1] == "scar_patch" and len(p.zones) == 16
    assert zone.polygon_chart == ((0.0, 0.0), (10.0, 0.0), (10.0, 8.0), (0.0, 8.0))
    assert zone.target_per_cm2 == 300.0 and zone.cap_per_cm2 == 375.0
    assert zone.dose_scale == pytest.approx(1.2)
    assert zone.directions_deg == (0.0, 90.0, 45.0, 135.0)
    assert zone.roller_needle_length_mm is None and zone.depth_override is False


@pytest.mark.parametrize("drop", ["polygon_chart", "devices", "depth_mm", "max_depth_mm", "target_per_cm2"])
def test_custom_zone_missing_a_required_field_is_rejected(tmp_path, drop):
    text = "\n".join(line for line in CUSTOM_ZONE.splitlines() if not line.startswith(drop))
    message = error_of(tmp_path, text)
    field = "dose_scale" if drop == "target_per_cm2" else drop
    assert message.startswith(f"{tmp_path / 'my.toml'}:1: zones.scar_patch.{field} is missing;")
    assert "custom zone" in message


def test_misspelt_standard_zone_is_not_silently_a_new_zone(tmp_path):
    message = error_of(tmp_path, "[zones.cheek_lft]\ndepth_mm = 0.5\n")
    assert "zones.cheek_lft.polygon_chart is missing" in message
    assert "did you mean the standard zone 'cheek_left'?" in message


def test_standard_zone_may_take_a_polygon(tmp_path):
    p = load_text(tmp_path, "[zones.chin]\npolygon_chart = [[0, 0], [5, 0], [5, 5], [0, 5]]\n")
    assert p.zone("chin").polygon_chart == ((0.0, 0.0), (5.0, 0.0), (5.0, 5.0), (0.0, 5.0))


# ----------------------------------------------------------------------------- unknown keys

@pytest.mark.parametrize("text, field, suggestion, line", [
    ("[zones.cheek_left]\ndept_mm = 1.0\n", "zones.cheek_left.dept_mm = 1.0", "depth_mm", 2),
    ("sesion = 3\n", "sesion = 3", "session", 1),
    ("[session]\ntarget_per_cm = 250.0\n", "session.target_per_cm = 250.0", "target_per_cm2", 2),
    ("[roller]\n\nneedle_ring = 8\n", "roller.needle_ring = 8", "needle_rings", 3),
    ("[pen]\nstamp_rate_hz = 100.0\n", "pen.stamp_rate_hz = 100.0", "stamp_hz", 2),
    ("[margins]\neyes_mm = 5.0\n", "margins.eyes_mm = 5.0", "eye_mm", 2),
    ("[zones.nose]\ndevice = [\"pen\"]\n", 'zones.nose.device = ["pen"]', "devices", 2),
    ("[zones.nose]\ndirections = [0.0]\n", "zones.nose.directions = [0.0]", "directions_deg", 2),
    ('[[lesions]]\nname = "m"\ncenter_mm = [1, 2, 3]\nraduis_mm = 2.0\n', "lesions[0].raduis_mm = 2.0",
     "radius_mm", 4),
])
def test_unknown_key_is_an_error_with_a_suggestion(tmp_path, text, field, suggestion, line):
    message = error_of(tmp_path, text)
    assert f":{line}: {field} is not a known field" in message
    assert f"did you mean '{suggestion}'?" in message


def test_unknown_key_without_a_close_match_lists_the_known_fields(tmp_path):
    message = error_of(tmp_path, "[pen]\nbanana = 1\n")
    assert ":2: pen.banana = 1 is not a known field" in message
    assert "did you mean" not in message and "stamp_hz" in message


def test_unknown_table_is_an_error(tmp_path):
    message = error_of(tmp_path, "[zone.cheek_left]\ndepth_mm = 1.0\n")
    assert ":1: zone = " in message and "did you mean 'zones'?" in message


# ----------------------------------------------------------------------------- format and version

@pytest.mark.parametrize("text, expected", [
    ("version = 2\n", ":1: version = 2 is not a supported protocol version"),
    ('version = "1"\n', ':1: version = "1" is not a supported protocol version'),
    ("version = 1.0\n", ":1: version = 1.0 is not a supported protocol version"),
    ("version = true\n", ":1: version = true is not a supported protocol version"),
    ('format = "coverage-plan"\n', ':1: format = "coverage-plan" is not a coverage protocol'),
])
def test_format_and_version(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert expected in message
    assert ("version 1" in message) if "version" in text else 'format = "coverage-protocol"' in message


def test_version_checked_before_unknown_fields(tmp_path):
    message = error_of(tmp_path, "version = 2\n\n[pen]\nnew_field = 1\n")
    assert "version = 2" in message and "new_field" not in message


def test_explicit_format_and_version_1_are_accepted(tmp_path):
    assert load_text(tmp_path, 'format = "coverage-protocol"\nversion = 1\nname = "mine"\n').name == "mine"


# ----------------------------------------------------------------------------- types

@pytest.mark.parametrize("table, key, value, problem", [
    ("session", "target_per_cm2", True, "is true/false, not a number"),
    ("session", "cap_ratio", "1.25", "is text, not a number"),
    ("roller", "drum_width_mm", [20.0], "is a list, not a number"),
    ("roller", "needle_rings", 8.5, "is not a whole number"),
    ("pen", "needles", False, "is true/false, not a whole number"),
    ("pen", "stamp_hz", float("nan"), "is not a finite number"),
    ("pen", "accel_mm_s2_max", float("inf"), "is not a finite number"),
    ("margins", "eye_mm", float("-inf"), "is not a finite number"),
    ("margins", "exclude_eyebrows", 1, "is a number, not true or false"),
    ("roller", "stagger", "yes", "is text, not true or false"),
    ("zones.cheek_left", "depth_override", 1, "is a number, not true or false"),
    ("zones.cheek_left", "devices", "pen", "is not a list of device names"),
    ("zones.cheek_left", "devices", [1, 2], "is not a list of device names"),
    ("zones.cheek_left", "directions_deg", 45.0, "is a number, not a list of numbers"),
    ("zones.cheek_left", "directions_deg", [0.0, "90"], 'contains "90", which is not a number'),
    ("zones.cheek_left", "directions_deg", [0.0, True], "contains true, which is not a number"),
    ("zones.cheek_left", "directions_deg", [0.0, float("nan")], "contains nan, which is not a finite number"),
    ("zones.cheek_left", "directions_deg", [float("inf")], "contains inf, which is not a finite number"),
    ("zones.cheek_left", "dose_scale", float("nan"), "is not a finite number"),
])
def test_wrong_types_are_errors(tmp_path, table, key, value, problem):
    message = error_of(tmp_path, f"[{table}]\n{key} = {toml_value(value)}\n")
    assert f":2: {table}.{key} = {toml_value(value)} {problem};" in message


def test_name_must_be_text(tmp_path):
    assert ":1: name = 3 is not a name;" in error_of(tmp_path, "name = 3\n")
    assert ':1: name = "" is not a name;' in error_of(tmp_path, 'name = ""\n')


@pytest.mark.parametrize("text, expected", [
    ("session = 3\n", ":1: session = 3 is a number, not a table; write it as a [session] section"),
    ("zones = 3\n", ":1: zones = 3 is a number, not a table"),
    ("[zones]\nnose = 1\n", ":2: zones.nose = 1 is a number, not a table"),
    ("lesions = 3\n", ":1: lesions = 3 is a number, not a list of lesions"),
    ("lesions = [3]\n", "lesions[0] = 3 is a number, not a table; write each lesion as a [[lesions]] section"),
])
def test_tables_must_be_tables(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


def test_from_dict_rejects_a_non_dict():
    assert dict_error([1, 2]) == ("<dict>: the protocol is a list, not a table; "
                                  "give a dict shaped like the TOML file")


# ----------------------------------------------------------------------------- ranges

# (table, key, values outside the brief's range, boundary values inside it)
RANGES = [
    ("session", "target_per_cm2", [0.0, -5.0, 2000.5], [2000.0, 0.5]),
    ("session", "cap_ratio", [0.99, 3.01], [1.0, 3.0]),
    ("session", "positioning_error_mm", [-0.1, 5.5], [0.0, 5.0]),
    ("session", "clearance_mm", [0.5, 100.5], [1.0, 100.0]),
    ("roller", "drum_diameter_mm", [4.9, 60.1], [5.0, 60.0]),
    ("roller", "drum_width_mm", [4.9, 61.0], [5.0, 60.0]),
    ("roller", "needle_rings", [0, 65], [1, 64]),
    ("roller", "needles_per_ring", [2, 129], [3, 128]),
    ("roller", "needle_diameter_mm", [0.0, 1.01], [1.0, 0.01]),
    ("roller", "needle_length_mm_min", [0.05, 3.5], [0.1]),
    ("roller", "needle_length_mm_max", [0.05, 3.1], [3.0]),
    ("roller", "gap_tolerance", [0.0, 1.5], [1.0, 0.01]),
    ("roller", "speed_mm_s", [0.0, 200.5], [200.0, 0.1]),
    ("pen", "needles", [0, 65], [1, 64]),
    ("pen", "footprint_diameter_mm", [0.9, 20.1], [1.0, 20.0]),
    ("pen", "needle_diameter_mm", [0.0, 1.1], [1.0]),
    ("pen", "stamp_hz", [0.5, 501.0], []),
    ("pen", "stamp_hz_min", [0.0, 600.0], [1.0]),
    ("pen", "stamp_hz_max", [0.0, 500.5], [500.0]),
    ("pen", "speed_mm_s_min", [0.0, -1.0], [0.01]),
    ("pen", "speed_mm_s_max", [0.0, 500.1], [500.0]),
    ("pen", "accel_mm_s2_max", [0.0, 20000.5], [20000.0, 0.1]),
    ("pen", "depth_mm_min", [-0.25, 0.0, 3.25], [0.01]),     # (0 mm refused since stop 29: no depth)
    ("pen", "depth_mm_max", [-1.0, 3.25], [3.0]),
    ("pen", "depth_step_mm", [0.0, 1.25], []),
    ("pen", "override_depth_mm", [-1.0, 3.5], [2.5]),
    ("pen", "passes_min", [0, 17], [1]),
    ("pen", "passes_max", [0, 17], [16]),
    *[("margins", key, [-0.5, 30.5], [0.0, 30.0])
      for key in ("eye_mm", "upper_eyelid_mm", "lips_mm", "nostril_mm", "eyebrow_mm", "lesion_mm")],
    ("zones.cheek_left", "dose_scale", [0.0, -1.0, 4.5], [4.0, 0.01]),
    ("zones.cheek_left", "target_per_cm2", [0.0, 2000.5], [0.5]),
]


@pytest.mark.parametrize("table, key, value", [(t, k, v) for t, k, bad, _ in RANGES for v in bad])
def test_out_of_range_is_an_error(tmp_path, table, key, value):
    message = error_of(tmp_path, f"# a comment line\n[{table}]\n{key} = {toml_value(value)}\n")
    assert f":3: {table}.{key} = {toml_value(value)} " in message
    assert "use a " in message
    assert dict_error(_nested(table, key, value)).startswith(f"<dict>: {table}.{key} = {toml_value(value)} ")


@pytest.mark.parametrize("table, key, value", [(t, k, v) for t, k, _, good in RANGES for v in good])
def test_range_boundaries_are_accepted(tmp_path, table, key, value):
    p = load_text(tmp_path, f"[{table}]\n{key} = {toml_value(value)}\n")
    obj = p.zone(table.split(".")[1]) if table.startswith("zones.") else getattr(p, table)
    assert getattr(obj, key) == value


def _nested(table: str, key: str, value) -> dict:
    out = {key: value}
    for part in reversed(table.split(".")):
        out = {part: out}
    return out


def test_range_message_states_the_allowed_range(tmp_path):
    message = error_of(tmp_path, "[roller]\nneedle_rings = 65\n")
    assert message.endswith("roller.needle_rings = 65 is above the maximum 64; use a whole number from 1 to 64")
    message = error_of(tmp_path, "[session]\ntarget_per_cm2 = 0.0\n")
    assert "must be greater than 0 punctures/cm2" in message
    assert "greater than 0 and at most 2000 punctures/cm2" in message


@pytest.mark.parametrize("table, lines, blamed, problem", [
    ("roller", ["needle_length_mm_min = 1.5", "needle_length_mm_max = 1.0"], "needle_length_mm_min = 1.5",
     "is above roller.needle_length_mm_max 1"),
    ("pen", ["stamp_hz_min = 160.0", "stamp_hz = 170.0", "stamp_hz_max = 150.0"], "stamp_hz_min = 160.0",
     "is above pen.stamp_hz_max 150"),
    ("pen", ["stamp_hz = 40.0"], "stamp_hz = 40.0", "is below pen.stamp_hz_min 50"),
    ("pen", ["stamp_hz = 151.0"], "stamp_hz = 151.0", "is above pen.stamp_hz_max 150"),
    ("pen", ["speed_mm_s_min = 200.0"], "speed_mm_s_min = 200.0", "is above pen.speed_mm_s_max 150"),
    ("pen", ["depth_mm_max = 0.2"], "depth_mm_min = 0.25", "is above pen.depth_mm_max 0.2"),
    ("pen", ["override_depth_mm = 0.1"], "override_depth_mm = 0.1", "is below pen.depth_mm_min 0.25"),
    ("pen", ["override_depth_mm = 2.75"], "override_depth_mm = 2.75", "is above pen.depth_mm_max 2.5"),
    ("pen", ["passes_min = 5"], "passes_min = 5", "is above pen.passes_max 4"),
])
def test_min_above_max_is_an_error(tmp_path, table, lines, blamed, problem):
    message = error_of(tmp_path, f"[{table}]\n" + "\n".join(lines) + "\n")
    assert f"{table}.{blamed} {problem};" in message
    key = blamed.split(" =")[0]
    written = [i for i, line in enumerate(lines, 2) if line.startswith(key + " ")]
    assert (f":{written[0]}: " in message) if written else message.startswith(f"{tmp_path / 'my.toml'}: ")


# ----------------------------------------------------------------------------- zones

def test_depth_above_zone_maximum_gives_the_documented_message(tmp_path):
    message = error_of(tmp_path, "name = \"mine\"\n\n[zones.cheek_left]\ndepth_mm = 3.0\n")
    assert message == (f"{tmp_path / 'my.toml'}:4: zones.cheek_left.depth_mm = 3.0 exceeds the zone maximum "
                       "1.5 mm; lower depth_mm or raise max_depth_mm (above 1.5 mm only with "
                       "depth_override = true)")


@pytest.mark.parametrize("zone_lines, expected", [
    (["target_per_cm2 = 250.0", "cap_per_cm2 = 200.0"],
     ":3: zones.cheek_left.cap_per_cm2 = 200.0 is below the zone target 250 punctures/cm2 "
     "(a target above its cap"),
    (["dose_scale = 1.2", "cap_per_cm2 = 299.0"],
     ":3: zones.cheek_left.cap_per_cm2 = 299.0 is below the zone target 300 punctures/cm2"),
    (["dose_scale = 1.0", "target_per_cm2 = 300.0"],
     ":3: zones.cheek_left.target_per_cm2 = 300.0 disagrees with dose_scale 1 × session.target_per_cm2 250"),
    (["target_per_cm2 = 1500.0"],
     ":2: zones.cheek_left.target_per_cm2 = 1500.0 is 6 × session.target_per_cm2 250, "
     "above the largest dose scale 4"),
    (["depth_mm = 0.0"], ":2: zones.cheek_left.depth_mm = 0.0 must be greater than 0 mm"),
    (["depth_mm = 0.1"], ":2: zones.cheek_left.depth_mm = 0.1 is below the pen's shallowest setting "
                         "pen.depth_mm_min 0.25 mm; raise depth_mm to at least 0.25"),
    (["depth_mm = 0.6"], ":2: zones.cheek_left.depth_mm = 0.6 is not a multiple of pen.depth_step_mm 0.25 mm; "
                         "use 0.5 or 0.75"),
    (["depth_mm = 1.3"], "use 1.25 or 1.5"),
    (["max_depth_mm = 2.0"], ":2: zones.cheek_left.max_depth_mm = 2.0 is above pen.override_depth_mm 1.5 mm; "
                             "add depth_override = true to [zones.cheek_left] to allow it"),
    (["max_depth_mm = 2.75", "depth_override = true"],
     ":2: zones.cheek_left.max_depth_mm = 2.75 exceeds the pen's deepest setting pen.depth_mm_max 2.5 mm"),
    (["roller_needle_length_mm = 0.25"],
     ":2: zones.cheek_left.roller_needle_length_mm = 0.25 is outside the drum lengths "
     "roller.needle_length_mm_min 0.5 to roller.needle_length_mm_max 1.5 mm"),
    (["max_depth_mm = 1.0", "roller_needle_length_mm = 1.25"],
     ":3: zones.cheek_left.roller_needle_length_mm = 1.25 exceeds the zone maximum 1 mm"),
    (['devices = ["pen"]', "roller_needle_length_mm = 1.0"],
     ":3: zones.cheek_left.roller_needle_length_mm = 1.0 is set but the roller is not among the zone's "
     "devices; "
     'remove roller_needle_length_mm or add "roller" to devices'),
    (["devices = []"], ':2: zones.cheek_left.devices = [] is empty; allow at least one device'),
    (['devices = ["pen", "rolle"]'],
     ":2: zones.cheek_left.devices = [\"pen\", \"rolle\"] names an unknown device 'rolle'; "
     "did you mean 'roller'?"),
    (['devices = ["laser"]'], "names an unknown device 'laser'; use \"roller\" and/or \"pen\""),
    (['devices = ["pen", "pen"]'], ":2: zones.cheek_left.devices = [\"pen\", \"pen\"] lists 'pen' twice"),
    (["directions_deg = []"], ":2: zones.cheek_left.directions_deg = [] is empty"),
    (["directions_deg = [0.0, 180.0]"],
     ":2: zones.cheek_left.directions_deg = [0.0, 180.0] repeats the pass line 0°"),
    (["directions_deg = [45.0, -135.0]"], "repeats the pass line 45°"),
    (["directions_deg = [10.0, 90.0, 370.0]"], "repeats the pass line 10°"),
    (["directions_deg = [179.9999999999, 0.0]"], "repeats the pass line"),
])
def test_zone_rules(tmp_path, zone_lines, expected):
    message = error_of(tmp_path, "[zones.cheek_left]\n" + "\n".join(zone_lines) + "\n")
    assert expected in message


def test_derived_zone_target_above_the_maximum(tmp_path):
    message = error_of(tmp_path, "[session]\ntarget_per_cm2 = 1000.0\n\n[zones.chin]\ndose_scale = 2.5\n")
    assert ":5: zones.chin.dose_scale = 2.5 gives a target of 2500 punctures/cm2" in message


def test_default_drum_length_out_of_range_points_at_the_depth(tmp_path):
    message = error_of(tmp_path, '[zones.periorbital_left]\ndevices = ["roller", "pen"]\n')
    assert "zones.periorbital_left.roller_needle_length_mm = 0.25 is outside the drum lengths" in message
    assert "(it defaults to depth_mm)" in message


def test_user_pen_change_is_checked_against_default_zones(tmp_path):
    message = error_of(tmp_path, "[pen]\ndepth_mm_min = 0.5\n")
    assert ("zones.periorbital_left.depth_mm = 0.25 is below the pen's shallowest setting "
            "pen.depth_mm_min 0.5") in message


def test_depth_override_allows_deeper_zones(tmp_path):
    p = load_text(tmp_path, "[zones.cheek_left]\nmax_depth_mm = 2.0\ndepth_mm = 2.0\ndepth_override = true\n")
    cheek = p.zone("cheek_left")
    assert (cheek.max_depth_mm, cheek.depth_mm, cheek.depth_override) == (2.0, 2.0, True)


def test_depth_step_tolerance_accepts_float_noise(tmp_path):
    # 0.1 + 0.2 is 0.30000000000000004: six 0.05-mm steps up to float noise
    p = load_text(tmp_path, f"[pen]\ndepth_step_mm = 0.05\n\n[zones.cheek_left]\ndepth_mm = {0.1 + 0.2!r}\n")
    assert p.zone("cheek_left").depth_mm == pytest.approx(0.3)


def test_directions_are_folded_into_0_180(tmp_path):
    p = load_text(tmp_path, "[zones.nose]\ndirections_deg = [-45, 270.0, 180.0, 10]\n")
    assert p.zone("nose").directions_deg == (135.0, 90.0, 0.0, 10.0)


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_any_direction_folds_onto_the_same_line(angle):
    folded = Protocol.from_dict({"zones": {"nose": {"directions_deg": [angle]}}}).zone("nose").directions_deg[0]
    assert 0.0 <= folded < 180.0
    turns = (angle - folded) / 180.0
    assert abs(turns - round(turns)) < 1e-9 * max(1.0, abs(turns))


def test_custom_zone_polygon_must_be_valid(tmp_path):
    text = CUSTOM_ZONE.replace("[[0.0, 0.0], [10.0, 0.0], [10.0, 8.0], [0.0, 8.0]]",
                               "[[0.0, 0.0], [10.0, 8.0], [10.0, 0.0], [0.0, 8.0]]")
    message = error_of(tmp_path, text)
    assert ":6: zones.scar_patch.polygon_chart = [[0.0, 0.0], [10.0, 8.0]" in message
    assert "is not a valid simple polygon (Self-intersection" in message


# ----------------------------------------------------------------------------- lesions

@pytest.mark.parametrize("body, expected", [
    ("center_mm = [1.0, 2.0, 3.0]\nradius_mm = 2.0", ":2: lesions[0].name is missing"),
    ('name = ""\ncenter_mm = [1.0, 2.0, 3.0]\nradius_mm = 2.0', ':3: lesions[0].name = "" is not a name'),
    ('name = "m"', ":2: lesions[0] ('m') has neither center_mm with radius_mm nor polygon_chart"),
    ('name = "m"\nradius_mm = 2.0', ":4: lesions[0].radius_mm = 2.0 has no center_mm"),
    ('name = "m"\ncenter_mm = [1.0, 2.0, 3.0]', ":4: lesions[0].center_mm = [1.0, 2.0, 3.0] has no radius_mm"),
    ('name = "m"\ncenter_mm = [1.0, 2.0]\nradius_mm = 2.0',
     ":4: lesions[0].center_mm = [1.0, 2.0] has 2 numbers, not 3"),
    ('name = "m"\ncenter_mm = [1.0, nan, 3.0]\nradius_mm = 2.0',
     ":4: lesions[0].center_mm = [1.0, nan, 3.0] contains nan"),
    ('name = "m"\ncenter_mm = [1.0, 2.0, 3.0]\nradius_mm = 0.0',
     ":5: lesions[0].radius_mm = 0.0 must be greater than 0 mm"),
    ('name = "m"\ncenter_mm = [1.0, 2.0, 3.0]\nradius_mm = 50.5',
     ":5: lesions[0].radius_mm = 50.5 is above the maximum 50 mm"),
    ('name = "m"\ncenter_mm = [1.0, 2.0, 3.0]\nradius_mm = 2.0\nmargin_mm = -1.0',
     ":6: lesions[0].margin_mm = -1.0 is below the minimum 0 mm"),
    ('name = "m"\npolygon_chart = [[0, 0], [1, 0], [1, 1]]\nmargin_mm = 30.5',
     ":5: lesions[0].margin_mm = 30.5 is above the maximum 30 mm"),
    ('name = "m"\npolygon_chart = [[0, 0], [1, 0]]',
     ":4: lesions[0].polygon_chart = [[0, 0], [1, 0]] is not a list of at least 3"),
    ('name = "m"\npolygon_chart = [[0, 0], [1, 0], [2, 0]]', "is not a valid simple polygon"),
    ('name = "m"\npolygon_chart = [[0, 0], [1, 0], [1]]', "has the corner [1], not a [u, v] pair"),
    ('name = "m"\npolygon_chart = [[0, 0], [1, 0], [1, inf]]', "has the corner [1, inf] with a non-finite"),
    ('name = "m"\npolygon_chart = [[0, 0], [2, 2], [2, 0], [0, 2]]', "(Self-intersection"),
    ('name = "m"\npolygon_chart = [[0, 0], [1, 0], [1, 1]]\ncenter_mm = [1.0, 2.0, 3.0]\nradius_mm = 1.0',
     ":2: lesions[0] ('m') gives both polygon_chart and center_mm/radius_mm"),
])
def test_lesion_rules(tmp_path, body, expected):
    message = error_of(tmp_path, "# lesions\n[[lesions]]\n" + body + "\n")
    assert expected in message


def test_lesion_names_are_unique_and_lines_follow_the_right_lesion(tmp_path):
    lesion = '[[lesions]]\nname = "{}"\ncenter_mm = [1, 2, 3]\nradius_mm = {}\n\n'
    text = lesion.format("m", 2.0) + lesion.format("m", 2.0)
    assert ':7: lesions[1].name = "m" repeats the name of lesions[0]' in error_of(tmp_path, text)
    text = lesion.format("a", 2.0) + lesion.format("b", 99.0)
    assert ":9: lesions[1].radius_mm = 99.0 is above the maximum 50 mm" in error_of(tmp_path, text)


# ----------------------------------------------------------------------------- files

def test_missing_file(tmp_path):
    with pytest.raises(ProtocolError, match=r"nope\.toml: protocol file not found; check the path"):
        Protocol.load(tmp_path / "nope.toml")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(ProtocolError, match="cannot read the protocol file"):
        Protocol.load(tmp_path)


def test_undecodable_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "Müller"\n'.encode("latin-1"))
    with pytest.raises(ProtocolError, match=r"latin1\.toml: not UTF-8 text .*save the protocol file as UTF-8"):
        Protocol.load(path)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    message = error_of(tmp_path, "[pen]\nneedles = 12\nstamp_hz = = 3\n")
    assert message.startswith(f"{tmp_path / 'my.toml'}:3: not valid TOML (")


def test_duplicate_key_is_a_syntax_error(tmp_path):
    assert ":3: not valid TOML" in error_of(tmp_path, "[pen]\nneedles = 12\nneedles = 14\n")


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbfname = \"bom\"\n")
    assert Protocol.load(path).name == "bom"


def test_inline_and_dotted_keys_are_located(tmp_path):
    assert ":3: zones.nose.depth_mm = 0.6" in error_of(tmp_path, "[zones]\n\nnose.depth_mm = 0.6\n")
    text = "[zones.nose]\ndirections_deg = [\n  0.0,\n  90.0,\n]\n[pen]\nneedles = 0\n"
    assert ":7: pen.needles = 0 " in error_of(tmp_path, text)


def test_from_dict_errors_have_no_line():
    message = dict_error({"zones": {"cheek_left": {"depth_mm": 3.0}}})
    assert message.startswith("<dict>: zones.cheek_left.depth_mm = 3.0 exceeds the zone maximum 1.5 mm")
    assert Protocol.from_dict({}, source="api") == Protocol.default()
    with pytest.raises(ProtocolError, match=r"^api: pen\.needles = 0 "):
        Protocol.from_dict({"pen": {"needles": 0}}, source="api")


# ----------------------------------------------------------------------------- the API

def _custom(tmp_path) -> Protocol:
    text = CUSTOM_ZONE + ('\n[zones.cheek_left]\ndepth_mm = 1.25\ncap_per_cm2 = 400\n'
                          'directions_deg = [30, 120]\n'
                          '\n[[lesions]]\nname = "mole"\ncenter_mm = [42.0, -12.0, 48.0]\nradius_mm = 2.5\n'
                          'margin_mm = 5\n\n[[lesions]]\nname = "tattoo"\n'
                          'polygon_chart = [[30.0, -20.0], [40.0, -20.0], [40.0, -12.0], [30.0, -12.0]]\n')
    return load_text(tmp_path, text)


@pytest.mark.parametrize("which", ["default", "custom"])
def test_to_dict_round_trips_through_json(tmp_path, which):
    p = Protocol.default() if which == "default" else _custom(tmp_path)
    data = json.loads(json.dumps(p.to_dict()))
    assert data["format"] == "coverage-protocol" and data["version"] == 1
    assert isinstance(data["zones"]["cheek_left"]["devices"], list)
    again = Protocol.from_dict(data)
    assert again == p
    assert list(again.zones) == list(p.zones)
    assert again.source == "<dict>"


def test_to_dict_leaves_out_unset_fields():
    data = Protocol.default().to_dict()
    assert "roller_needle_length_mm" not in data["zones"]["nose"]
    assert "polygon_chart" not in data["zones"]["nose"]
    assert "name" not in data["zones"]["nose"]
    assert data["zones"]["cheek_left"]["cap_per_cm2"] == 312.5


def test_zone_lookup_names_the_known_zones():
    with pytest.raises(ProtocolError) as info:
        Protocol.default().zone("cheek")
    message = str(info.value)
    assert "zones.cheek is not a zone" in message and "did you mean 'cheek_left'?" in message
    assert all(name in message for name in STANDARD_ZONES)
    assert isinstance(Protocol.default().zone("chin"), ZoneDose)


def test_with_lesions_returns_a_new_protocol():
    base = Protocol.default()
    p = base.with_lesions(Lesion("mole", center_mm=(1, 2, 3), radius_mm=2),
                          Lesion("tattoo", polygon_chart=((0, 0), (4, 0), (4, 3))))
    assert base.lesions == ()
    assert [lesion.name for lesion in p.lesions] == ["mole", "tattoo"]
    assert p.lesions[0].center_mm == (1.0, 2.0, 3.0)
    assert p.with_lesions(Lesion("x", center_mm=(0, 0, 0), radius_mm=1)).lesions[:2] == p.lesions
    assert p.zones == base.zones and p.pen == base.pen


@pytest.mark.parametrize("lesion, expected", [
    (Lesion("mole", center_mm=(1.0, 2.0, 3.0), radius_mm=2.0),
     'lesions[1].name = "mole" repeats the name of lesions[0]'),
    (Lesion("big", center_mm=(1.0, 2.0, 3.0), radius_mm=80.0),
     "lesions[1].radius_mm = 80.0 is above the maximum 50 mm"),
    (Lesion("none"), "lesions[1] ('none') has neither"),
    ("mole", 'lesions[1] = "mole" is text, not a Lesion'),
])
def test_with_lesions_validates(lesion, expected):
    p = Protocol.default().with_lesions(Lesion("mole", center_mm=(1.0, 2.0, 3.0), radius_mm=2.0))
    with pytest.raises(ProtocolError) as info:
        p.with_lesions(lesion)
    assert expected in str(info.value)


def test_protocol_is_frozen_and_hashable():
    p = Protocol.default()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"
    assert hash(p) == hash(Protocol.from_dict(p.to_dict()))
    assert DEVICES == ("roller", "pen")
