"""The bench's timing of every compiled wrapper against its NumPy twin on a plan's own calls."""
import numpy as np
import pytest

from coverage import bench, kernel_calls, paths, raster
from coverage.face import Face
from coverage.protocol import Protocol


def test_the_pairs_are_the_compiled_wrappers_with_twins():
    labels = {p.label for p in kernel_calls.compiled_pairs()}
    # compiled wrappers with a twin beside them, in modules and in classes
    assert {"lifting.locate", "raster.lookup", "density.window_sums", "simulate.stamp", "contact.contacts",
            "roller.Drum.central_rings", "paths.resample"} <= labels
    # a twin whose wrapper calls no kernel (NumPy against NumPy) is not one
    assert "pen._in_box" not in labels
    # methods that change their own object's state, and a wrapper that changes its argument's
    assert not any(label.startswith("density.StampEffects.") for label in labels)
    assert "roller.claim" not in labels


def test_recording_keeps_the_longest_call_as_it_was_and_restores_the_wrappers():
    pairs = [p for p in kernel_calls.compiled_pairs() if p.label in ("raster.lookup", "paths.resample")]
    original = raster.lookup
    values = np.arange(12.0).reshape(3, 4)
    small = np.array([[0.5, 0.5]])
    big = np.random.default_rng(0).uniform(0, 4, (200_000, 2))
    with kernel_calls.recording(pairs) as captured:
        assert raster.lookup is not original
        raster.lookup(values, (0.0, 0.0), 1.0, small, -1.0)
        raster.lookup(values, (0.0, 0.0), 1.0, big, -1.0)
        big[:] = -5.0      # the caller changes its array afterwards: the kept copy does not
    assert raster.lookup is original
    slot = captured["raster.lookup"]
    assert slot.calls == 2 and slot.args[3].shape == (200_000, 2) and (slot.args[3] >= 0).all()
    assert captured["paths.resample"].calls == 0
    timed = kernel_calls.time_pairs(pairs, captured, kernel_repeats=1)
    assert set(timed) == {"raster.lookup"}
    entry = timed["raster.lookup"]
    assert entry["agree"] and entry["speedup"] > 0 and entry["calls"] == 2


def test_a_disagreeing_twin_is_reported():
    # worked by hand: a twin that answers differently is caught, not averaged away
    assert kernel_calls.same((np.array([1.0, np.nan]), np.array([2])), [np.array([1.0, np.nan]), np.array([2])])
    assert not kernel_calls.same(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-6]))
    assert not kernel_calls.same(np.array([1, 2]), np.array([1, 2, 3]))
    assert kernel_calls.same(1.0, 1.0 + 1e-12) and not kernel_calls.same(1.0, 1.1)
    # sparse results by their entries: index types and cached flags aside, repeats summed
    from scipy import sparse
    a = sparse.csc_array((np.array([2.0, 1.0]), np.array([1, 3], np.int32), np.array([0, 2, 2], np.int32)),
                         shape=(4, 2))
    a.has_canonical_format = True
    b = sparse.csr_array((np.ones(3), (np.array([3, 1, 1]), np.array([0, 0, 0]))), shape=(4, 2)).tocsc()
    assert kernel_calls.same(a, b)
    assert not kernel_calls.same(a, b * 2.0) and not kernel_calls.same(a, a.toarray())
    # the pairs of a neighbour search compared vertex by vertex (its twin interleaves them)
    k = (np.array([0, 1, 0, 1]), np.array([5, 6, 7, 8]))
    r = (np.array([1, 1, 0, 0]), np.array([6, 8, 5, 7]))
    assert kernel_calls.COMPARE["curvature.neighbour_pairs"](k, r)
    assert not kernel_calls.COMPARE["curvature.neighbour_pairs"](k, (r[0], np.array([8, 6, 5, 7])))


def test_resample_twin_runs_path_by_path():
    rng = np.random.default_rng(3)
    uv = np.cumsum(rng.uniform(0, 1, (30, 2)), axis=0)
    points = np.concatenate([uv, np.zeros((30, 1))], axis=1)
    starts = np.array([0, 12, 12, 30])
    got = kernel_calls._resample_twin({"uv": uv, "points": points, "starts": starts, "step_mm": 0.5})
    out, out_starts = paths.resample(uv, points, starts, 0.5)
    assert kernel_calls.same(got, (out, out_starts))


@pytest.mark.filterwarnings("ignore")
def test_a_small_plan_times_every_wrapper_it_calls_and_they_agree():
    face = Face.default(2.0)
    found = kernel_calls.plan_kernels(lambda: bench.make_plan(face, Protocol.default(), ("cheek_left",), "roller"),
                                      kernel_repeats=1)
    pairs = found["pairs"]
    assert {"lifting.locate", "simulate.roll", "raster.line_walk"} <= set(pairs)
    for name, entry in pairs.items():
        assert "error" not in entry, (name, entry)
        assert entry["agree"], name
        assert entry["calls"] >= 1 and entry["kernel_ms"] > 0 and entry["reference_ms"] > 0
    assert set(found["not_called"]).isdisjoint(pairs)
    assert "pen.fired_needles" in found["not_called"]      # a roller plan stamps nothing


def test_each_side_gets_fresh_copies_made_outside_the_timed_call():
    # a wrapper and a twin that write into their input and take a while to copy: each call
    # must see the input as captured, and the copying must not be in either side's time
    calls = []

    def wrapper(a, out):
        calls.append(("kernel", float(a[0]), float(out[0])))
        out[0] = a[0] = -1.0
        return a.sum()

    def twin(a, out):
        calls.append(("twin", float(a[0]), float(out[0])))
        out[0] = a[0] = -1.0
        return a.sum()

    owner = type("Owner", (), {"f": staticmethod(wrapper), "f_reference": staticmethod(twin)})
    pair = kernel_calls.Pair("owner.f", owner, "f", "f_reference")
    big = np.ones(3_000_000)
    slot = kernel_calls.Captured(calls=1, seconds=0.1, args=(big, np.zeros(1)))
    kernel, reference = kernel_calls._twin_call(pair, slot)
    for side in (kernel, reference, kernel, reference):
        call = side()            # the copies are made here
        assert call() == 3_000_000 - 2.0
    # every call read the captured input, never what an earlier call wrote
    assert [c[1:] for c in calls] == [(1.0, 0.0)] * 4 and big[0] == 1.0
    entry = kernel_calls._time_pair(pair, slot, kernel_repeats=3, reference_budget_s=2.0)
    assert entry["agree"] and [c[1:] for c in calls] == [(1.0, 0.0)] * len(calls)
