"""Plan files: the published schema, exact round trips, atomic writes, clear errors on bad files."""
import hashlib
import json
import math

import jsonschema
import numpy as np
import pytest

import coverage
from coverage import CoverageError, Plan, load_plan, plan_schema
from coverage.planio import ARRAYS, VERSION, plan_arrays, read_plan_json, schema_errors

STROKE_ARRAYS = ("uv", "tri", "bary", "points", "normals", "tangents", "times_s", "swath_mm",
                 "stamp_uv", "stamp_points", "stamp_times_s")
STROKE_FIELDS = ("id", "device", "zone", "zones", "pass_index", "line", "direction_deg", "depth_mm",
                 "needle_length_mm", "speed_mm_s", "stamp_hz", "punctures", "family", "pattern",
                 "puncture_rate_hz", "cartridge")
PLAN_ARRAYS = ("puncture_points", "puncture_uv", "puncture_stroke", "puncture_depth_mm", "puncture_tri",
               "puncture_bary")


@pytest.fixture(scope="module")
def saved(auto_plan, tmp_path_factory):
    path = tmp_path_factory.mktemp("planio") / "PLAN.json"
    auto_plan.save(path)
    return path


@pytest.fixture(scope="module")
def loaded(saved, default_zones):
    return load_plan(saved, zones=default_zones)


def assert_same_plan(a: Plan, b: Plan) -> None:
    for name in PLAN_ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert len(a.strokes) == len(b.strokes) and len(a.transitions) == len(b.transitions)
    for s, t in zip(a.strokes, b.strokes):
        for name in STROKE_ARRAYS:
            x, y = getattr(s, name), getattr(t, name)
            assert (x is None) == (y is None), (s.id, name)
            assert x is None or np.array_equal(x, y), (s.id, name)
        for name in STROKE_FIELDS:
            assert getattr(s, name) == getattr(t, name), (s.id, name)
    for s, t in zip(a.transitions, b.transitions):
        assert (s.from_stroke, s.to_stroke) == (t.from_stroke, t.to_stroke)
        assert np.array_equal(s.points, t.points) and np.array_equal(s.times_s, t.times_s)
    assert a.zone_status == b.zone_status and a.device == b.device


def test_the_schema_ships_and_is_valid_2020_12():
    schema = plan_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["version"]["const"] == VERSION
    # the copy a reader gets is its own: changing it changes nothing for the next caller
    schema["title"] = "changed"
    assert plan_schema()["title"] != "changed"


@pytest.mark.parametrize("which", ["auto_plan", "roller_plan"])
def test_every_plan_document_validates(which, request):
    p = request.getfixturevalue(which)
    doc = p.to_json()
    doc["arrays"].update(file="PLAN.npz", sha256="0" * 64)
    assert schema_errors(doc) == []
    jsonschema.validate(doc, plan_schema())          # the reference validator agrees
    # the arrays the document announces are the arrays the NPZ gets
    arrays = plan_arrays(p)
    assert set(arrays) == set(ARRAYS) == set(doc["arrays"]["contents"])
    for name, spec in doc["arrays"]["contents"].items():
        assert list(arrays[name].shape) == spec["shape"] and str(arrays[name].dtype) == spec["dtype"], name


def test_the_schema_catches_what_it_should(auto_plan):
    doc = auto_plan.to_json()
    doc["arrays"].update(file="PLAN.npz", sha256="0" * 64)
    bad = json.loads(json.dumps(doc))
    bad["strokes"][3]["depth_mm"] = -0.5
    bad["strokes"][7]["device"] = "laser"
    del bad["transitions"][0]["path"]
    errors = schema_errors(bad)
    assert len(errors) == 3
    assert any("strokes.3.depth_mm" in e and "-0.5" in e for e in errors)
    assert any("strokes.7.device" in e and "laser" in e for e in errors)
    assert any("transitions.0" in e and "path" in e for e in errors)


def test_round_trip_is_exact(auto_plan, loaded, saved, tmp_path):
    assert_same_plan(auto_plan, loaded)
    # loading rebuilt the bundled face at the plan's resolution
    assert np.array_equal(loaded.face.vertices, auto_plan.face.vertices)
    # and saving what was loaded writes the same document and the same arrays again
    again, npz = loaded.save(tmp_path / "AGAIN.json")
    first, second = read_plan_json(saved), read_plan_json(again)
    for doc in (first, second):
        doc["arrays"].pop("file"), doc["arrays"].pop("sha256")
    assert first == second
    with np.load(saved.with_suffix(".npz")) as x, np.load(npz) as y:
        assert set(x.files) == set(y.files) == set(ARRAYS)
        for name in x.files:
            assert np.array_equal(x[name], y[name], equal_nan=True), name


def test_a_loaded_plan_verifies_and_reports_the_same(auto_plan, loaded):
    assert loaded.summary() == auto_plan.summary()
    assert coverage.verify(loaded).ok


def test_a_failed_save_leaves_the_old_files(roller_plan, auto_plan, tmp_path, monkeypatch):
    path = tmp_path / "PLAN.json"
    roller_plan.save(path)
    before = path.read_bytes(), path.with_suffix(".npz").read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # the NPZ is complete, the JSON fails half-way: neither file is replaced
    monkeypatch.setattr("coverage.planio.json.dumps", crash)
    with pytest.raises(OSError):
        auto_plan.save(path)
    assert (path.read_bytes(), path.with_suffix(".npz").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PLAN.json", "PLAN.npz"]   # no temporary files left
    monkeypatch.undo()
    monkeypatch.setattr("coverage.planio.np.savez_compressed", crash)
    with pytest.raises(OSError):
        auto_plan.save(path)
    assert (path.read_bytes(), path.with_suffix(".npz").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PLAN.json", "PLAN.npz"]


def _copy(saved, tmp_path, edit=None, npz_edit=None):
    """A copy of the saved pair, its JSON document and NPZ changed by the given functions."""
    doc = json.loads(saved.read_text(encoding="utf-8"))
    npz = tmp_path / "PLAN.npz"
    if npz_edit is None:
        npz.write_bytes(saved.with_suffix(".npz").read_bytes())
    else:
        with np.load(saved.with_suffix(".npz")) as data:
            arrays = {k: data[k] for k in data.files}
        npz_edit(arrays)
        np.savez(npz, **arrays)
        doc["arrays"]["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    if edit is not None:
        edit(doc)
    out = tmp_path / "PLAN.json"
    out.write_text(json.dumps(doc), encoding="utf-8")
    return out


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(version=1), "plan version 1 is not supported"),
    (lambda d: d.update(version=3), "plan version 3 is not supported"),
    (lambda d: d.update(format="something-else"), "not a coverage plan"),
    (lambda d: d["strokes"][5].update(needle_length_mm="long"), r"field strokes\.5\.needle_length_mm: 'long'"),
    (lambda d: d["strokes"][2].pop("zone"), r"field strokes\.2: 'zone' is a required property"),
    (lambda d: d["strokes"][0]["path"].update(samples=10 ** 9), "stroke 0 names path rows beyond the arrays"),
])
def test_a_bad_document_is_one_clear_error(saved, tmp_path, edit, match):
    with pytest.raises(CoverageError, match=match) as info:
        load_plan(_copy(saved, tmp_path, edit))
    assert "\n" not in str(info.value) and "PLAN.json" in str(info.value)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["strokes"][3].update(speed_mm_s=math.nan), "PLAN.json: holds NaN, which no plan does"),
    (lambda d: d["face"].update(pose=[[math.inf] * 4] * 4), "PLAN.json: holds Infinity, which no plan does"),
    (lambda d: d["strokes"][1]["path"].update(samples=0), "stroke 1 has no path samples"),
])
def test_numbers_no_plan_holds_are_one_clear_error(saved, tmp_path, edit, match):
    """Until stop 29 a NaN put in by hand passed the schema's ranges (verify: all checks
    passed; export: an internal error or NaN depths written out), and a stroke of no
    samples was an IndexError."""
    with pytest.raises(CoverageError, match=match) as info:
        load_plan(_copy(saved, tmp_path, edit))
    assert "\n" not in str(info.value)


def test_arrays_no_plan_holds_are_one_clear_error(saved, tmp_path):
    def nan_time(a):
        a["path_times_s"][7] = np.nan

    with pytest.raises(CoverageError, match=r"array path_times_s holds 1 values that are not finite \(first at row 7\)"):
        load_plan(_copy(saved, tmp_path, npz_edit=nan_time))

    def inf_swath(a):
        a["path_swath_mm"][3] = np.inf      # (NaN is the pen's: no swath)

    with pytest.raises(CoverageError, match="array path_swath_mm holds 1 values that are not finite"):
        load_plan(_copy(saved, tmp_path, npz_edit=inf_swath))
    # a cut NPZ whose checksum was made again: not a zip archive any more
    pair = _copy(saved, tmp_path)
    npz = pair.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:-5000])
    doc = json.loads(pair.read_text(encoding="utf-8"))
    doc["arrays"]["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    pair.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(CoverageError, match="not readable plan arrays"):
        load_plan(pair)


def test_corrupt_and_mismatched_files(saved, tmp_path):
    broken = tmp_path / "BROKEN.json"
    broken.write_text(saved.read_text(encoding="utf-8")[:1000], encoding="utf-8")
    with pytest.raises(CoverageError, match="BROKEN.json: not a readable plan"):
        load_plan(broken)
    # another plan's (or a half-written) NPZ is caught by the checksum
    pair = _copy(saved, tmp_path)
    npz = pair.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:-100])
    with pytest.raises(CoverageError, match="do not belong to PLAN.json"):
        load_plan(pair)
    npz.unlink()
    with pytest.raises(CoverageError, match="arrays are missing"):
        load_plan(pair)


def test_arrays_must_match_what_the_plan_says(saved, tmp_path):
    def drop_a_puncture(a):
        a["punctures"] = a["punctures"][:-1]

    with pytest.raises(CoverageError, match=r"array punctures is float64 \[\d+, 3\], the plan says float64"):
        load_plan(_copy(saved, tmp_path, npz_edit=drop_a_puncture))

    def int32_strokes(a):
        a["puncture_stroke"] = a["puncture_stroke"].astype(np.int32)

    with pytest.raises(CoverageError, match="array puncture_stroke is int32"):
        load_plan(_copy(saved, tmp_path, npz_edit=int32_strokes))


def test_a_scan_plan_needs_its_face(saved, tmp_path):
    def scan(d):
        d["face"]["source"] = "scan.ply"

    with pytest.raises(CoverageError, match="--mesh"):
        load_plan(_copy(saved, tmp_path, scan))
    with pytest.raises(CoverageError, match="vertices"):
        load_plan(saved, face=coverage.Face.default(edge_mm=2.0))
