"""Speed work on the pen paths and joins, each piece equal to what it replaces."""
import importlib

import numpy as np
import pytest

from coverage import pen as pen_mod

plan_mod = importlib.import_module("coverage.plan")


@pytest.mark.parametrize("seed", range(3))
def test_path_frames_of_joined_lifts_equal_the_joined_path_lifted(default_face, seed):
    """A joined pen path framed from its parts' lifts equals chart_path_frames of it."""
    rng = np.random.default_rng(seed)
    centre = default_face.uv[default_face.faces[len(default_face.faces) // 2]].mean(axis=0)
    parts = [centre + np.cumsum(rng.normal(0, 0.3, (rng.integers(2, 40), 2)), axis=0) for _ in range(3)]
    uv = np.concatenate(parts)
    lifts = [default_face.lift(p) for p in parts]
    joined = plan_mod.Lifted(*(np.concatenate([getattr(x, k) for x in lifts])
                               for k in ("points", "normals", "tri", "bary")))
    got = plan_mod._path_frames(default_face, joined, across=False)
    ref = plan_mod.chart_path_frames(default_face, uv, across=False)
    for a, b in zip((got[0].points, got[0].normals, got[0].tri, got[0].bary, got[1], got[2]),
                    (ref[0].points, ref[0].normals, ref[0].tri, ref[0].bary, ref[1], ref[2])):
        assert np.array_equal(a, b)
    assert got[3] is None and ref[3] is None


def test_run_path_frames_without_across_equal_each_path_alone(default_face):
    rng = np.random.default_rng(7)
    centre = default_face.uv[default_face.faces[len(default_face.faces) // 3]].mean(axis=0)
    paths = [centre + np.cumsum(rng.normal(0, 0.3, (rng.integers(2, 30), 2)), axis=0) for _ in range(6)]
    for (lifted, tangent, s, across), uv in zip(plan_mod._run_path_frames(default_face, paths, across=False), paths):
        ref = plan_mod.chart_path_frames(default_face, uv, across=False)
        assert np.array_equal(lifted.points, ref[0].points) and np.array_equal(lifted.tri, ref[0].tri)
        assert np.array_equal(tangent, ref[1]) and np.array_equal(s, ref[2])
        assert across is None


def test_zone_boxes_hold_every_texel_of_their_zone(default_face):
    from coverage import ZoneMap
    from coverage.density import texel_grid

    grid = texel_grid(ZoneMap.default(default_face))
    for k in range(int(grid.label.max()) + 1):
        box = pen_mod._zone_box(grid, k, 2)
        mine = grid.label == k
        if not mine.any():
            assert box is None
            continue
        inside = np.zeros(grid.shape, dtype=bool)
        inside[box] = True
        assert not (mine & ~inside).any()
        rows, cols = np.nonzero(mine)
        assert box[0].start == max(rows.min() - 2, 0) and box[0].stop == min(rows.max() + 3, grid.shape[0])
        assert box[1].start == max(cols.min() - 2, 0) and box[1].stop == min(cols.max() + 3, grid.shape[1])
    assert pen_mod._zone_box(grid, int(grid.label.max()) + 5, 2) is None


@pytest.mark.parametrize("seed", range(3))
def test_stamps_fired_at_equals_fired_at_those_rows(seed):
    rng = np.random.default_rng(seed)
    n, k = 5, 40
    hits = type("Hits", (), {"fired": rng.random(n * k) < 0.7})()
    st = pen_mod.Stamps([], np.zeros(k, dtype=np.int64), np.zeros((k, 2)), np.zeros(k), hits, rng.random(k) < 0.8, n)
    rows = rng.permutation(k)[:15]
    assert np.array_equal(st.fired_at(rows), st.fired().reshape(-1, n)[rows])
    assert st.fired_at(np.empty(0, dtype=np.int64)).shape == (0, n)


@pytest.mark.parametrize("enough", [None, 2, 4])
def test_fired_needles_in_order_equal_sorted_by_cell(default_face, enough):
    from coverage import simulate

    rng = np.random.default_rng(3)
    uv = default_face.uv
    centres = rng.uniform(uv.min(axis=0), uv.max(axis=0), (3000, 2))
    angles = rng.uniform(0, 2 * np.pi, len(centres))
    depth = rng.choice([0.25, 0.5, 1.0], len(centres))
    layout = simulate.needle_layout(12, 7.0, 0.25)
    a = pen_mod.fired_needles(default_face, centres, angles, depth, layout, 0.5, enough=enough)
    b = pen_mod.fired_needles(default_face, centres, angles, depth, layout, 0.5, enough=enough, in_order=True)
    assert np.array_equal(a, b)
