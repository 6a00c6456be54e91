"""pen.join_paths (every glide built and checked at once, each joined path concatenated
once) equals the join written path by path, bit for bit: on the bundled face's own paths of
both cartridges, and on them cut into pieces (each piece starting where the one before ended:
a seam and a glide of no length)."""
import copy
import dataclasses
import importlib

import numpy as np
import pytest

from coverage import pen as _pen


def _join_one_by_one(paths: list, problem, zones) -> list:
    """The join as its rule states it: each path that may continue the one before
    (joinable) by a safe glide (glides_ok of that glide alone) is appended to it with the
    glide's inner samples between, without its first sample where it starts where the
    other ended, its stamps' arc lengths counted on from the joined path's chart length
    plus the glide's."""
    out = []
    for p in paths:
        if out and _pen.joinable(out[-1], p):
            move, = _pen.glide_moves([out[-1].uv[-1]], [p.uv[0]])
            if _pen.glides_ok([move], [p.zone], problem, zones)[0]:
                prev = out[-1]
                offset = prev.chart_length + float(np.linalg.norm(np.diff(move, axis=0), axis=1).sum())
                start = 1 if float(np.linalg.norm(p.uv[0] - prev.uv[-1])) <= 1e-12 else 0
                prev.uv = np.concatenate([prev.uv, move[1:-1], p.uv[start:]])
                prev.stamp_uv = np.concatenate([prev.stamp_uv, p.stamp_uv])
                prev.stamp_s = np.concatenate([prev.stamp_s, p.stamp_s + offset])
                continue
        out.append(p)
    return out


@pytest.fixture(scope="module")
def zone_path_calls(default_face, default_zones):
    """Each zone's unjoined paths in a plan of the bundled face (both cartridges), with the
    field and zone map they were made on."""
    plan_module = importlib.import_module("coverage.plan")     # the module (coverage.plan is also the function)
    calls = []
    original = _pen.join_paths

    def spy(paths, problem, zones):
        calls.append((copy.deepcopy(paths), problem, zones))
        return original(paths, problem, zones)

    _pen.join_paths = spy
    try:
        plan_module.plan(default_face, zones=default_zones, threads=1)
    finally:
        _pen.join_paths = original
    return calls


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        all(getattr(p, f.name) == getattr(r, f.name) for f in dataclasses.fields(p)
            if f.name not in ("uv", "stamp_uv", "stamp_s"))
        and all(np.array_equal(getattr(p, f), getattr(r, f)) for f in ("uv", "stamp_uv", "stamp_s"))
        for p, r in zip(a, b))


def test_join_equals_the_path_by_path_join_on_a_plan(zone_path_calls):
    joined = 0
    assert {problem.footprint_mm for _, problem, _ in zone_path_calls} == {7.0, 3.0}   # both cartridges
    for paths, problem, zones in zone_path_calls:
        got = _pen.join_paths(copy.deepcopy(paths), problem, zones)
        want = _join_one_by_one(copy.deepcopy(paths), problem, zones)
        assert _same(got, want)
        joined += len(paths) - len(got)
    assert joined > 300      # the bundled face joins hundreds of paths


def _cut(paths: list, rng) -> list:
    """Each path with 3 or more samples cut at a random sample into two paths that meet
    there (the second starts at the first's last sample), its stamps shared out by arc length."""
    out = []
    for p in paths:
        if len(p.uv) < 3 or rng.random() < 0.5:
            out.append(p)
            continue
        k = int(rng.integers(1, len(p.uv) - 1))
        length = float(np.linalg.norm(np.diff(p.uv[:k + 1], axis=0), axis=1).sum())
        first = p.stamp_s <= length
        out.append(dataclasses.replace(p, uv=p.uv[:k + 1], stamp_uv=p.stamp_uv[first], stamp_s=p.stamp_s[first]))
        out.append(dataclasses.replace(p, uv=p.uv[k:], stamp_uv=p.stamp_uv[~first],
                                       stamp_s=p.stamp_s[~first] - length))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_join_equals_the_path_by_path_join_across_seams(zone_path_calls, seed):
    rng = np.random.default_rng(seed)
    seams = 0
    for paths, problem, zones in zone_path_calls[::2]:
        cut = _cut(copy.deepcopy(paths), rng)
        seams += len(cut) - len(paths)
        got = _pen.join_paths(copy.deepcopy(cut), problem, zones)
        assert _same(got, _join_one_by_one(copy.deepcopy(cut), problem, zones))
    assert seams > 50


def test_at_most_decides_as_point_distance():
    a = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [np.nan, 0.0], [2.0, 2.0]])
    b = np.array([[3.0, 4.0], [40.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0 + 1e-13, 2.0]])
    dist = _pen._row_distances(a, b)
    assert dist[:3].tolist() == [5.0, 40.0, 0.0] and np.isnan(dist[3]) and 0 < dist[4] < 1e-12
    # 40 is exactly the limit (at most: joined); NaN never; 1e-13 is within 1e-12
    np.testing.assert_array_equal(_pen._at_most(dist, a, b, 40.0), [True, True, True, False, True])
    np.testing.assert_array_equal(_pen._at_most(dist, a, b, 1e-12), [False, False, True, False, True])
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 2)) * 30, rng.normal(size=(2000, 2)) * 30
    dist = _pen._row_distances(a, b)
    for limit in (1e-12, 20.0, 40.0, float(np.median(dist))):
        want = [_pen._point_distance(x, y) <= limit for x, y in zip(a, b)]
        np.testing.assert_array_equal(_pen._at_most(dist, a, b, limit), want)
