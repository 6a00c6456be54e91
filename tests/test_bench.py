"""The benchmark suite (coverage.bench): its arithmetic on hand-made numbers, its stage clock
on a fake clock, and the structure of a tiny run's document. No timing is asserted."""
import json
import math
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

from coverage import CoverageError, Face, bench

# a run small enough for a test: the chin's roller plan at 2 mm edges, small kernel inputs
TINY = bench.Config("tiny", 1, kernel_repeats=1, reference_repeats=1, edge_mm=2.0, plan_zones=("cheek_left",),
                    plan_device="roller", scan_vertices=8000, points=2000, closest=500, splat=2000, merge=500,
                    stamps=300, bins_edge_mm=2.0, window_crop=40, scaling_edges_mm=(4.0, 2.7, 2.0),
                    scaling_zones=("cheek_left",), scaling_device="roller", density_edge_mm=2.0)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    # as bench.run does: on busy cores multi-threaded BLAS makes the chart's LU crawl
    limiter, _ = bench.blas_one_thread()
    with limiter:
        yield


@pytest.fixture(scope="module")
def tiny_doc():
    lines = []
    doc = bench.run(False, cfg=TINY, progress=lines.append)
    doc["_progress"] = lines
    return doc


# --- arithmetic --------------------------------------------------------------------------------

def test_growth_exponent_of_power_laws():
    n = [10, 100, 1000]
    assert bench.growth_exponent(n, [3 * x ** 2 for x in n]) == pytest.approx(2.0)
    assert bench.growth_exponent(n, [0.5 * x for x in n]) == pytest.approx(1.0)
    assert bench.growth_exponent([1, 4], [2.0, 1.0]) == pytest.approx(-0.5)   # 2 * n^-1/2


def test_growth_exponent_needs_two_sizes_with_a_time():
    assert bench.growth_exponent([5], [1.0]) is None
    assert bench.growth_exponent([5, 5], [1.0, 2.0]) is None
    # a failed level (None) is left out: the two others still give the slope
    assert bench.growth_exponent([1, 2, 4], [1.0, None, 16.0]) == pytest.approx(2.0)


def test_summarise_median_and_min():
    t = bench.summarise([3.0, 1.0, 2.0, 10.0])
    assert (t.median_s, t.min_s) == (2.5, 1.0)
    assert t.as_dict("ms") == {"median_ms": 2500.0, "min_ms": 1000.0, "runs_ms": [3000.0, 1000.0, 2000.0, 10000.0]}


def test_plain_makes_strict_json():
    doc = bench.plain({"a": float("nan"), "b": np.int64(3), "c": (1.0, float("inf")), "_private": 1,
                        "t": bench.Timing(2.0, 1.0, (1.0, 3.0)), "ok": np.bool_(True)})
    assert doc == {"a": None, "b": 3, "c": [1.0, None], "t": {"median_s": 2.0, "min_s": 1.0, "runs_s": [1.0, 3.0]},
                   "ok": True}
    json.dumps(doc, allow_nan=False)


def test_series_fits_the_exponent_over_the_points():
    points = [{"triangles": n, "total": bench.Timing(0.01 * n ** 0.5, 0.0), "stages": {}} for n in (100, 400, 1600)]
    points.append({"edge_mm": 0.5, "factor": 1.0, "error": "Traceback ...\nValueError: x"})
    series = bench.scaling_series("what", "triangles", points, "triangles", "total")
    assert series["n"] == [100, 400, 1600]
    assert series["median_s"] == pytest.approx([0.1, 0.2, 0.4])
    assert series["exponent"] == pytest.approx(0.5)


def test_treatment_time_against_the_minimum_by_hand():
    # a roller stroke (100 punctures at 50 Hz: 2 s at least, 4 s planned), a 3 s move of
    # 100 mm (2 s at 50 mm/s), then a pen stroke (360 punctures; 12 needles x 150 Hz =
    # 1800/s: 0.2 s at least, 1 s planned, 30 stamps)
    roller = SimpleNamespace(id=0, device="roller", times_s=np.array([0.0, 4.0]), duration_s=4.0, punctures=100,
                             puncture_rate_hz=50.0, points=np.array([[0.0, 0, 0], [10.0, 0, 0]]))
    pen = SimpleNamespace(id=1, device="pen", times_s=np.array([7.0, 8.0]), duration_s=1.0, punctures=360,
                          cartridge={"needles": 12}, stamp_uv=np.zeros((30, 2)),
                          points=np.array([[110.0, 0, 0], [120.0, 0, 0]]))
    plan = SimpleNamespace(
        protocol=SimpleNamespace(pen=SimpleNamespace(stamp_hz_max=150.0),
                                 session=SimpleNamespace(transit_speed_mm_s=50.0)),
        strokes=[pen, roller], transitions=[SimpleNamespace(to_stroke=1, duration_s=3.0)], time_s=8.0)
    tt = bench.treatment_time(plan)
    r, p, total = tt["devices"]["roller"], tt["devices"]["pen"], tt["total"]
    assert (r["planned_s"], r["min_s"], r["ratio"]) == (4.0, 2.0, 2.0)
    assert r["moves_ratio"] is None        # no move leads to the first stroke
    assert p["planned_s"] == 4.0           # its stroke and the move into it
    assert p["min_s"] == pytest.approx(2.2)
    assert p["min_contact_by_stamps_s"] == pytest.approx(0.2)   # 30 stamps / 150 Hz
    assert total["min_s"] == pytest.approx(4.2)
    assert total["ratio"] == pytest.approx(8.0 / 4.2)
    assert total["idle_s"] == 0.0
    # the pen's contact by pattern: its one stroke has none named, so it stands as "pen"
    assert tt["pen_patterns"] == {"pen": {"strokes": 1, "punctures": 360, "stamps": 30, "contact_s": 1.0,
                                          "min_contact_s": pytest.approx(0.2), "contact_ratio": pytest.approx(5.0)}}
    pen.pattern = "touch-up"
    assert set(bench.treatment_time(plan)["pen_patterns"]) == {"touch-up"}


# --- the stage clock on a fake clock -------------------------------------------------------------

def test_stage_clock_charges_own_time_and_switches_stage(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0])
    clock = bench.StageClock()

    def tick(seconds):
        now[0] += seconds

    inner = clock.wrap(lambda: tick(3.0), "inner")
    guard = clock.wrap(lambda: tick(0.5), "guard", then=("pen", "touch-ups"))

    def outer_body():
        tick(1.0)       # outer's own
        inner()         # 3 s, charged to inner, in the pen stage
        guard()         # 0.5 s, then the stage becomes touch-ups
        inner()         # 3 s, now in touch-ups
        tick(2.0)       # outer's own, in touch-ups

    outer = clock.wrap(outer_body, "outer", stage="pen")
    result, seconds, wall = clock.run(lambda: (tick(0.25), outer(), "done")[-1])
    assert result == "done" and wall == 9.75
    assert seconds == {("other", "coverage.plan + build_plan (own)"): 0.25, ("pen", "outer"): 1.0,
                       ("pen", "inner"): 3.0, ("pen", "guard"): 0.5, ("touch-ups", "inner"): 3.0,
                       ("touch-ups", "outer"): 2.0}
    assert clock.stage == "other"
    inner()             # the clock is off: nothing charged
    assert sum(clock.seconds.values()) == 9.75


def test_every_step_name_is_kept_in_the_json():
    # the JSON leaves out keys starting with "_" (private entries, the plan object): a step
    # named so would vanish from the steps tables (the roller's did until stop 27)
    steps = [step for _, _, step, *_ in bench._patches()]
    assert steps and not [s for s in steps if s.startswith("_")]
    doc = bench.plain({"steps": {"roller": {s: 1.0 for s in steps}}, "_plan": object()})
    assert doc == {"steps": {"roller": {s: 1.0 for s in steps}}}


def test_instrumented_wraps_and_restores_the_planner():
    plan_mod = bench.plan_mod
    before = plan_mod._roller_part
    zone_default = vars(bench.ZoneMap)["default"]
    with bench.instrumented(bench.StageClock()) as inst:
        assert plan_mod._roller_part is not before
        assert plan_mod._roller_part.__wrapped__ is before
    assert plan_mod._roller_part is before
    assert vars(bench.ZoneMap)["default"] is zone_default
    assert inst.missing == []


# --- helpers -----------------------------------------------------------------------------------

def test_config_modes():
    quick, full = bench.config(True), bench.config(False)
    assert (quick.mode, quick.repeats, quick.budget_s) == ("quick", 1, bench.QUICK_BUDGET_S)
    assert quick.scaling_device == "roller" and len(quick.scaling_edges_mm) == 3
    assert (full.mode, full.repeats, full.budget_s, full.scaling_device) == ("full", 3, None, "auto")
    assert bench.config(False, 5).repeats == 5
    with pytest.raises(CoverageError, match="repeats"):
        bench.config(True, 0)


def test_scaled_protocol_scales_every_target_and_cap():
    base, double = bench.scaled_protocol(1.0), bench.scaled_protocol(2.0)
    assert double.session.target_per_cm2 == 2 * base.session.target_per_cm2
    for name in ("chin", "forehead", "nose"):
        assert double.zone(name).target_per_cm2 == pytest.approx(2 * base.zone(name).target_per_cm2)
        assert double.zone(name).cap_per_cm2 == pytest.approx(2 * base.zone(name).cap_per_cm2)


def test_restrict_zones_keeps_the_named_zones(default_zones):
    chin = bench.restrict_zones(default_zones, ["chin"])
    assert chin.names == ["chin"]
    assert chin.polygons["chin"].equals(default_zones.polygons["chin"])
    with pytest.raises(CoverageError, match="cheeks"):
        bench.restrict_zones(default_zones, ["cheeks"])


def test_moved_face_is_rigid(default_face):
    moved = bench.moved_face(default_face)
    a, b = default_face.vertices, moved.vertices
    assert not np.allclose(a, b)
    for i, j in ((0, 1), (5, 400), (100, 2000)):
        assert np.linalg.norm(b[i] - b[j]) == pytest.approx(np.linalg.norm(a[i] - a[j]))
    assert moved.subdivisions == default_face.subdivisions


def test_clear_caches_gives_fresh_but_equal_objects():
    first = Face.default(4.0)
    assert Face.default(4.0) is first
    assert bench.clear_caches() > 5
    again = Face.default(4.0)
    assert again is not first
    assert np.array_equal(again.vertices, first.vertices)


def test_main_refuses_a_bad_output_before_measuring(tmp_path, capsys):
    start = time.perf_counter()
    assert bench.main(["--quick", "--json", str(tmp_path / "missing" / "out.json")]) == 2
    assert bench.main(["--quick", "--json", str(tmp_path / "out.txt")]) == 2
    assert time.perf_counter() - start < 30    # refused up front, not after a run
    assert "does not exist" in capsys.readouterr().err


# --- a tiny run ------------------------------------------------------------------------------------

def test_tiny_run_document(tiny_doc):
    doc = tiny_doc
    assert bench.validate(doc) == []
    assert doc["mode"] == "tiny"
    machine = doc["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu"]
    assert {"numpy", "scipy", "shapely", "trimesh", "cython", "coverage"} <= set(machine["versions"])
    for name in ("default", "scan"):
        stages = doc["stages"][name]["stages"]
        assert {"load", "chart", "zones", "roller", "density", "verify", "plan", "total"} <= set(stages)
        # the stages add up to the total, run by run
        parts = sum(stages[s]["runs_s"][0] for s in bench.STAGES if s in stages)
        assert stages["total"]["runs_s"][0] == pytest.approx(parts)
        assert stages["plan"]["median_s"] <= stages["total"]["median_s"]
    assert doc["stages"]["scan"]["input"]["vertices"] == pytest.approx(8000, rel=0.05)
    assert set(doc["kernel_speedup"]) == set(bench.KERNELS)
    assert all(k["agree"] for k in doc["kernels"].values())
    for series in ("resolution", "density"):
        s = doc["scaling"][series]
        assert len(s["n"]) == 3 and isinstance(s["exponent"], float)
    assert doc["scaling"]["resolution"]["n"] == sorted(doc["scaling"]["resolution"]["n"])
    assert doc["scaling"]["density"]["n"] == [125.0, 250.0, 500.0]
    tt = doc["treatment_time"]["default"]
    assert tt["total"]["punctures"] == doc["stages"]["default"]["plan"]["punctures"]
    # run by a tool within its limits the session is longer than the plan's own clock
    ex = tt["executed"]
    assert ex["session_s"] > tt["total"]["planned_s"] and ex["ratio"] > tt["total"]["ratio"]
    assert ex["air_s"] + ex["roller_contact_s"] + ex["pen_contact_s"] == pytest.approx(ex["session_s"], abs=0.01)
    assert set(doc["targets"]) >= {"default_plan_s", "scan_plan_s", "kernels_speedup", "lift_chart_points_ms"}
    for t in doc["targets"].values():
        assert set(t) >= {"what", "limit", "measured", "unit", "met"}
        assert t["met"] in (True, False, None)
    assert "[this run: the roller plan of cheek_left]" in doc["targets"]["default_plan_s"]["what"]
    # the canonical chart: solved once (timed), then read from the suite's cache file by the runs
    cache = doc["chart_cache"]
    assert cache["file_written"] and cache["dir"] == os.environ["COVERAGE_CACHE_DIR"]
    assert cache["solve"]["median_s"] > 0
    from coverage import chart

    assert chart.chart_cache_file(cache["subdivisions"]).is_file()
    assert "read from its cache file" in doc["targets"]["scan_plan_s"]["what"]
    assert any("kernels against" in line for line in doc["_progress"])


def test_tiny_run_json_round_trip(tiny_doc, tmp_path):
    doc = {k: v for k, v in tiny_doc.items() if not k.startswith("_")}
    out = tmp_path / "bench.json"
    bench.write_json(doc, out)
    assert json.loads(out.read_text()) == doc
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]   # no temporary file left


def test_validate_finds_problems(tiny_doc):
    doc = json.loads(json.dumps({k: v for k, v in tiny_doc.items() if not k.startswith("_")}))
    del doc["kernel_speedup"]["lift"]
    doc["scaling"]["density"]["exponent"] = None
    doc["stages"]["default"]["stages"]["roller"]["median_s"] = float("nan")
    problems = bench.validate(doc)
    assert any("kernel_speedup" in p and "lift" in p for p in problems)
    assert any("scaling.density" in p for p in problems)
    assert any("stages.default.stages.roller.median_s" in p for p in problems)


def test_report_tables(tiny_doc):
    text = bench.report(tiny_doc)
    for heading in ("stage (s; cold caches every run)", "kernel", "growth exponent", "treatment time, default",
                    "target"):
        assert heading in text
    for name in bench.KERNELS:
        assert f"\n{name} " in text
    md = bench.markdown(tiny_doc).splitlines()
    assert md[0].startswith("| stage (s, median) | bundled face, 2 mm | ") and md[0].endswith("k-vertex scan |")
    assert sum(line.startswith("| `") for line in md) == len(bench.KERNELS)
    assert all(line.startswith("|") for line in md if line)


def test_kernel_and_target_rows_by_hand():
    doc = {"kernels": {"locate": {"input": "100k chart points", "kernel": {"median_ms": 9.5}, "reference": {
        "median_ms": 250.0}, "speedup": 250.0 / 9.5, "agree": True}},
        "targets": {"default_plan_s": {"what": "the plan", "limit": 1.0, "measured": 13.8, "unit": "s", "met": False},
                    "lift_chart_points_ms": {"what": "lift", "limit": None, "measured": 12.5, "unit": "ms",
                                             "met": None}}}
    rows = bench.kernel_table(doc).splitlines()
    assert rows[1].split() == ["locate", "100k", "chart", "points", "9.50", "250.0", "26.3x", "yes"]
    rows = bench.targets_table(doc).splitlines()
    assert rows[1].split() == ["default_plan_s", "1", "s", "13.8", "s", "NO", "the", "plan"]
    assert rows[2].split() == ["lift_chart_points_ms", "-", "12.5", "ms", "-", "lift"]


def test_budget_skips_the_scan_plan_but_times_its_load():
    default = bench.bench_face(bench.default_case, TINY, bench.StageClock(), lambda line: None)
    scan = bench.bench_face(bench.scan_case, TINY, bench.StageClock(), lambda line: None,
                            budget=(time.perf_counter(), default))
    assert "skipped" in scan and "plan" not in scan
    assert set(scan["stages"]) == {"load", "chart", "zones", "total"}
    assert math.isfinite(scan["stages"]["load"].median_s)


def test_same_plan_compares_every_puncture_stroke_and_move(auto_plan):
    import copy

    assert bench.same_plan(auto_plan, auto_plan)
    moved = copy.copy(auto_plan)
    points = auto_plan.puncture_points.copy()
    points[7, 1] = np.nextafter(points[7, 1], np.inf)          # one coordinate, one ulp
    moved.puncture_points = points
    assert not bench.same_plan(auto_plan, moved)
    fewer = copy.copy(auto_plan)
    fewer.transitions = auto_plan.transitions[:-1]
    assert not bench.same_plan(auto_plan, fewer)
    later = copy.copy(auto_plan)
    later.strokes = [copy.copy(s) for s in auto_plan.strokes]
    later.strokes[3].times_s = auto_plan.strokes[3].times_s + 1e-9
    assert not bench.same_plan(auto_plan, later)
