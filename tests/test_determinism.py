"""Determinism: the same inputs give the same plan, to the bit, in one process and across processes.

Nothing in the planner may depend on set or dict order of hashed strings, on an unseeded
random generator, or on thread timing. Two plans of the default face made in this process
are compared array by array, and the files they save byte by byte; a third plan is made by
``python -m coverage plan`` in a fresh process with another string-hash seed
(``PYTHONHASHSEED``), started first so it runs while this process plans.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coverage import plan

PUNCTURE_ARRAYS = ("puncture_points", "puncture_stroke", "puncture_depth_mm", "puncture_uv", "puncture_tri",
                   "puncture_bary")
STROKE_ARRAYS = ("points", "normals", "tangents", "times_s", "uv", "tri", "bary")


def assert_same_array(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: {int(np.sum(a != b))} elements differ"


@pytest.fixture(scope="session")
def other_process(tmp_path_factory):
    """``python -m coverage plan --out PLAN.json`` in a fresh process, started now: (process, PLAN.json).

    Session scope, so that it starts before the session's ``auto_plan`` when that is made here.
    """
    out = tmp_path_factory.mktemp("process") / "PLAN.json"
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"   # anything but this process's
    env = dict(os.environ, PYTHONHASHSEED=seed)
    proc = subprocess.Popen([sys.executable, "-m", "coverage", "plan", "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def replanned(other_process, default_face):
    """A second automatic plan of the default face, its zone map built again too."""
    return plan(default_face)


@pytest.fixture(scope="module")
def saved(auto_plan, replanned, tmp_path_factory):
    """Both in-process plans saved as ``PLAN.json`` + ``PLAN.npz`` in two folders."""
    first = tmp_path_factory.mktemp("first") / "PLAN.json"
    second = tmp_path_factory.mktemp("second") / "PLAN.json"
    auto_plan.save(first)
    replanned.save(second)
    return first, second


def test_two_plans_in_one_process_are_identical(other_process, auto_plan, replanned):
    for name in PUNCTURE_ARRAYS:
        assert_same_array(getattr(auto_plan, name), getattr(replanned, name), name)
    assert len(auto_plan.strokes) == len(replanned.strokes)
    for a, b in zip(auto_plan.strokes, replanned.strokes):
        assert (a.device, a.zone, a.pass_index, a.depth_mm, a.speed_mm_s, a.stamp_hz) == \
               (b.device, b.zone, b.pass_index, b.depth_mm, b.speed_mm_s, b.stamp_hz), f"stroke {a.id}"
        for name in STROKE_ARRAYS:
            assert_same_array(getattr(a, name), getattr(b, name), f"stroke {a.id} {name}")
    assert len(auto_plan.transitions) == len(replanned.transitions)
    for a, b in zip(auto_plan.transitions, replanned.transitions):
        assert (a.from_stroke, a.to_stroke) == (b.from_stroke, b.to_stroke)
        assert_same_array(a.points, b.points, f"transition {a.from_stroke}->{a.to_stroke} points")
        assert_same_array(a.times_s, b.times_s, f"transition {a.from_stroke}->{a.to_stroke} times")


def test_saved_plans_are_byte_identical(saved):
    first, second = saved
    assert first.read_bytes() == second.read_bytes()
    # numpy writes NPZ members with a fixed zip date, so the archives are identical too
    with np.load(first.with_suffix(".npz")) as a, np.load(second.with_suffix(".npz")) as b:
        assert sorted(a.files) == sorted(b.files) and "punctures" in a.files
        for name in a.files:
            assert_same_array(a[name], b[name], name)
    assert first.with_suffix(".npz").read_bytes() == second.with_suffix(".npz").read_bytes()


def test_a_plan_in_another_process_with_another_hash_seed_is_identical(other_process, saved):
    proc, out = other_process
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    mine = saved[0]
    with np.load(out.with_suffix(".npz")) as theirs, np.load(mine.with_suffix(".npz")) as ours:
        assert sorted(theirs.files) == sorted(ours.files)
        for name in ours.files:
            assert_same_array(theirs[name], ours[name], name)
    assert out.read_bytes() == mine.read_bytes()
    assert Path(out).with_suffix(".npz").read_bytes() == mine.with_suffix(".npz").read_bytes()


def test_a_plan_on_one_thread_equals_the_plan_on_two(tmp_path):
    """The plan's pieces on two threads (coverage.tasks: the drum's conformity beside the zone
    map, the roller's regions side by side, its safe moves beside the pen's dose, the pen's
    two cartridges) give the one-thread plan bit for bit, from a cold face each time (the
    face's own caches filled by whichever thread gets there first)."""
    from coverage.face import _default_face
    from coverage.template import subdivisions_for_edge

    files = []
    for threads in (1, 2):
        face = _default_face.__wrapped__(subdivisions_for_edge(1.0))    # a new face, nothing cached on it
        made = plan(face, threads=threads)
        (tmp_path / f"threads{threads}").mkdir()
        files.append(made.save(tmp_path / f"threads{threads}" / "PLAN.json")[0])
    one, two = files
    with np.load(one.with_suffix(".npz")) as a, np.load(two.with_suffix(".npz")) as b:
        assert sorted(a.files) == sorted(b.files) and "punctures" in a.files
        for name in a.files:
            assert_same_array(a[name], b[name], name)
    assert one.read_bytes() == two.read_bytes()


@pytest.mark.parametrize("device", ["roller", "pen"])
def test_each_device_alone_plans_the_same_on_one_and_two_threads(default_face, default_zones, device):
    from coverage.bench import same_plan

    one = plan(default_face, zones=default_zones, device=device, threads=1)
    two = plan(default_face, zones=default_zones, device=device, threads=2)
    assert len(one.strokes) > 10 and len(one.puncture_points) > 1000
    assert same_plan(one, two)
    # each puncture's triangle, barycentrics and point are those one lift of every puncture's
    # chart point gives (each device's punctures are lifted where they are made)
    for made in (one, two):
        lifted = default_face.lift(made.puncture_uv)
        assert np.array_equal(made.puncture_tri, lifted.tri.astype(np.int64))
        assert made.puncture_bary.tobytes() == lifted.bary.tobytes()
        assert made.puncture_points.tobytes() == lifted.points.tobytes()


def test_the_auto_plans_punctures_are_their_own_lift(auto_plan, default_face):
    """The roller's punctures lifted where its runs are simulated and the pen's beside its
    strokes' clock give what one lift of every puncture's chart point gives, bit for bit."""
    lifted = default_face.lift(auto_plan.puncture_uv)
    assert {s.device for s in auto_plan.strokes} == {"roller", "pen"}
    assert np.array_equal(auto_plan.puncture_tri, lifted.tri.astype(np.int64)) and (auto_plan.puncture_tri >= 0).all()
    assert auto_plan.puncture_bary.tobytes() == lifted.bary.tobytes()
    assert auto_plan.puncture_points.tobytes() == lifted.points.tobytes()
