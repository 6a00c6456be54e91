"""The plan's last steps on two threads: the pen's safe moves built in two halves, the main
cartridge's candidate stamps simulated in two parts, and the roller's timed strokes built
on the other thread while the pen's fit and repair run. Each part must give exactly what
the one-thread code gives (the plans themselves are compared on 1 and 2 threads in
test_determinism.py)."""
import dataclasses
import importlib
import threading

import numpy as np
import pytest

from coverage import pen_fit
from coverage.simulate import StampHits
from coverage.tasks import Tasks

plan_mod = importlib.import_module("coverage.plan")


def _contacts(face, rng, k):
    """k random contacts on the bundled face's chart: (uv, points, normals)."""
    lo, hi = np.percentile(face.uv, [25, 75], axis=0)
    uv = rng.uniform(lo, hi, size=(k, 2))
    lifted = face.lift(uv)
    assert lifted.inside.all()
    return uv, lifted.points, lifted.normals


def test_the_halved_moves_are_the_one_batch_moves(default_face, default_zones, monkeypatch):
    rng = np.random.default_rng(7)
    uv_a, a, na = _contacts(default_face, rng, 9)
    uv_b, b, nb = _contacts(default_face, rng, 9)
    clearances = [plan_mod.transit_clearance(default_zones, p, q) for p, q in zip(uv_a, uv_b)]
    whole = plan_mod.transit_paths(default_face, a, na, b, nb, clearances)
    batches = []
    real = plan_mod.transit_paths

    def counted(face, starts, *rest):
        batches.append((len(starts), threading.current_thread().name))
        return real(face, starts, *rest)

    monkeypatch.setattr(plan_mod, "transit_paths", counted)
    with Tasks(2) as tasks:
        halves = plan_mod._transit_paths_halved(tasks, default_face, a, na, b, nb, clearances)()
    assert len(halves) == len(whole) == 9
    for p, q in zip(halves, whole):
        assert p.shape == q.shape and np.array_equal(p, q)
    # two batches that make up the nine moves, neither empty
    assert sorted(n for n, _ in batches) != [9] and sum(n for n, _ in batches) == 9 and len(batches) == 2
    # one thread: one batch, as before
    batches.clear()
    with Tasks(1) as tasks:
        one = plan_mod._transit_paths_halved(tasks, default_face, a, na, b, nb, clearances)()
    assert [n for n, _ in batches] == [9]
    assert all(np.array_equal(p, q) for p, q in zip(one, whole))


def test_a_single_move_is_not_split(default_face, default_zones):
    rng = np.random.default_rng(3)
    uv_a, a, na = _contacts(default_face, rng, 1)
    uv_b, b, nb = _contacts(default_face, rng, 1)
    c = [plan_mod.transit_clearance(default_zones, uv_a[0], uv_b[0])]
    with Tasks(2) as tasks:
        got = plan_mod._transit_paths_halved(tasks, default_face, a, na, b, nb, c)()
    assert np.array_equal(got[0], plan_mod.transit_paths(default_face, a, na, b, nb, c)[0])


@pytest.fixture(scope="module")
def main_candidates(default_face, default_zones):
    """The main cartridge's paths of an automatic plan of the bundled face, and the
    arguments its candidate stamps were made with."""
    seen = []
    real = pen_fit.candidate_stamps

    def keep(face, zones, protocol, grid, paths, pen, first, arcs=None):
        seen.append((face, zones, protocol, grid, list(paths), pen, first))
        return real(face, zones, protocol, grid, paths, pen, first, arcs)

    pen_fit.candidate_stamps = keep
    try:
        plan_mod.plan(default_face, zones=default_zones, threads=1)
    finally:
        pen_fit.candidate_stamps = real
    main = [s for s in seen if s[6] == 0]
    assert len(main) == 1
    return main[0]


def _same_candidates(x, y):
    (paths_x, sx, kept_x), (paths_y, sy, kept_y) = x, y
    assert len(paths_x) == len(paths_y)
    for p, q in zip(paths_x, paths_y):
        assert np.array_equal(p.stamp_uv, q.stamp_uv) and np.array_equal(p.stamp_s, q.stamp_s)
    assert np.array_equal(kept_x, kept_y)
    for name in ("path", "uv", "depth_mm", "keep"):
        assert np.array_equal(getattr(sx, name), getattr(sy, name)), name
    assert sx.needles == sy.needles
    for f in dataclasses.fields(StampHits):
        a, b = getattr(sx.hits, f.name), getattr(sy.hits, f.name)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f.name


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_candidates_made_in_two_parts_join_to_the_one_call(main_candidates, where):
    face, zones, protocol, grid, paths, pen, first = main_candidates
    whole = pen_fit.candidate_stamps(face, zones, protocol, grid, paths, pen, first)
    cut = int(where * len(paths))
    head = pen_fit.candidate_stamps(face, zones, protocol, grid, paths[:cut], pen, first)
    tail = pen_fit.candidate_stamps(face, zones, protocol, grid, paths[cut:], pen, first + len(head[1].uv))
    joined = pen_fit._joined_candidates(head, tail)
    _same_candidates(joined, whole)
    # the candidate centres made beforehand (as the plan hands them to the parts) change nothing
    arcs = [pen_fit.candidate_arcs(p.uv) for p in paths]
    _same_candidates(pen_fit.candidate_stamps(face, zones, protocol, grid, paths, pen, first, arcs), whole)
    # the stamp numbers count on across the cut, as in one call (not from 0 again)
    assert joined[1].hits.stamp[-1] == len(whole[1].uv) - 1


def test_the_roller_strokes_are_built_on_the_other_thread(default_face, default_zones, monkeypatch):
    """With two threads the roller's moves and timed strokes are one piece for the pool's
    thread (handed to it before the pen's fit); with one, they are built when read."""
    where = []
    real = plan_mod._roller_timed

    def timed(*args):
        where.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(plan_mod, "_roller_timed", timed)
    plan_mod.plan(default_face, zones=default_zones, device="auto", threads=2)
    assert where == ["coverage-plan-1"]
    where.clear()
    plan_mod.plan(default_face, zones=default_zones, device="auto", threads=1)
    assert where == [threading.current_thread().name]


@pytest.mark.parametrize("where", [0.2, 0.6])
def test_the_parts_needle_columns_side_by_side_are_the_joined_candidates(main_candidates, where):
    # each part's needle columns made where the part is made (as a plan makes them on its two
    # threads), side by side: the very matrix the joined candidates' columns give
    from scipy import sparse

    face, zones, protocol, grid, paths, pen, first = main_candidates
    cut = int(where * len(paths))
    arcs = pen_fit.candidate_arcs_many([p.uv for p in paths])
    head, head_cols = pen_fit._candidates_with_columns(True, face, zones, protocol, grid, paths[:cut], pen, first,
                                                       arcs[:cut])
    tail, tail_cols = pen_fit._candidates_with_columns(True, face, zones, protocol, grid, paths[cut:], pen,
                                                       first + len(head[1].uv), arcs[cut:])
    _, stamps, kept = pen_fit._joined_parts([head, tail])
    rows = np.repeat(np.isin(np.arange(len(stamps.uv)), kept), stamps.needles)
    whole = pen_fit.needle_columns(grid, stamps.hits.uv[rows], stamps.hits.fired[rows], stamps.needles)
    side = sparse.hstack([head_cols, tail_cols], format="csc")
    assert side.shape == whole.shape and side.shape[1] == len(kept) > 0
    for name in ("indptr", "indices", "data"):
        a, b = getattr(side, name), getattr(whole, name)
        assert np.array_equal(a, b), name
    # without columns, the part alone
    part, none = pen_fit._candidates_with_columns(False, face, zones, protocol, grid, paths[:cut], pen, first,
                                                  arcs[:cut])
    assert none is None
    _same_candidates(part, head)
