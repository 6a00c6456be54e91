"""The main cartridge's contour loops traced ahead on the plan's other thread
(pen.trace_loop_levels): the paths read the same lines whoever traced them, and each level of
a dose field is traced once however the two threads meet."""
import dataclasses
import importlib
import threading
import time

import contourpy
import numpy as np
import pytest

from coverage import pen as _pen


@pytest.fixture(scope="module")
def main_paths_call(default_face, default_zones):
    """The arguments of the bundled face's main-cartridge field_paths call in a plan."""
    plan_module = importlib.import_module("coverage.plan")     # the module (coverage.plan is also the function)
    calls = []
    original = _pen.field_paths

    def spy(problem, zones, names, q, settings, **kwargs):
        calls.append((problem, zones, names, q, settings, kwargs))
        return original(problem, zones, names, q, settings, **kwargs)

    _pen.field_paths = spy
    try:
        plan_module.plan(default_face, zones=default_zones, threads=1)
    finally:
        _pen.field_paths = original
    (problem, zones, names, q, settings, kwargs), = [c for c in calls if c[0].footprint_mm == 7.0]
    assert kwargs == {}
    return problem, zones, names, q, settings


def _fresh(problem):
    return dataclasses.replace(problem, contours={})


def _same_paths(a, b) -> bool:
    fields = ("zone", "pass_index", "line", "direction_deg", "pattern", "depth_mm", "speed_mm_s")
    return len(a) == len(b) and all(
        all(getattr(p, f) == getattr(r, f) for f in fields)
        and all(np.array_equal(getattr(p, f), getattr(r, f)) for f in ("uv", "stamp_uv", "stamp_s"))
        for p, r in zip(a, b))


def _traced(problem) -> dict:
    return {depth: sorted(entry[1]) for depth, entry in problem.contours.items()}


def test_tracing_ahead_gives_the_same_paths_and_leaves_nothing_to_trace(main_paths_call):
    problem, zones, names, q, settings = main_paths_call
    assert any(settings[n].pattern == "contour" for n in names)      # the bundled face has loops
    alone = _fresh(problem)
    want = _pen.field_paths(alone, zones, names, q, settings)
    ahead = _fresh(problem)
    asked = _pen.trace_loop_levels(ahead, zones, names, q, settings)
    assert asked > 0
    before = _traced(ahead)
    assert before == _traced(alone)              # every level the paths read, and no other
    got = _pen.field_paths(ahead, zones, names, q, settings)
    assert _traced(ahead) == before              # nothing left to trace
    assert _same_paths(got, want)


def test_two_threads_trace_each_level_once_and_the_paths_stay_the_same(main_paths_call, monkeypatch):
    problem, zones, names, q, settings = main_paths_call
    # the zones with loops first, so both threads ask for the same levels at once
    names = sorted(names, key=lambda n: settings[n].pattern != "contour")
    want = _pen.field_paths(_fresh(problem), zones, names, q, settings)
    counts, lock = {}, threading.Lock()
    make = contourpy.contour_generator

    class Counting:
        def __init__(self, gen):
            self.gen, self.busy = gen, threading.Lock()

        def lines(self, level):
            # never two traces with one generator at once
            assert self.busy.acquire(blocking=False)
            try:
                with lock:
                    counts[(id(self), float(level))] = counts.get((id(self), float(level)), 0) + 1
                time.sleep(0.002)                   # a longer trace: the other thread comes meanwhile
                return self.gen.lines(level)
            finally:
                self.busy.release()

    monkeypatch.setattr(contourpy, "contour_generator", lambda *a, **k: Counting(make(*a, **k)))
    for _ in range(3):
        shared, out, start = _fresh(problem), {}, threading.Barrier(2)

        def ahead():
            start.wait(30)
            out["asked"] = _pen.trace_loop_levels(shared, zones, names, q, settings)

        counts.clear()
        other = threading.Thread(target=ahead)
        other.start()
        start.wait(30)
        got = _pen.field_paths(shared, zones, names, q, settings)
        other.join(60)
        assert out["asked"] > 0
        assert counts and set(counts.values()) == {1}
        assert _same_paths(got, want)
