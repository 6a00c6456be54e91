"""Treatment order: roller sweeps snaked cell by cell, pen paths nearest first.

Order changes only when and where the tool treats, never what it treats: the dose tests
of test_roller.py and test_pen.py hold for the ordered plans, and every plan here passes
the verifier.
"""
import numpy as np
import pytest

from coverage import verify
from coverage.plan import _order_cells, _order_pen_items, _reverse_pen_item, _sweep_cells
from coverage.roller import Run


def _run(line, u0, u1, v):
    uv = np.stack([np.linspace(u0, u1, 5), np.full(5, float(v))], axis=1)
    run = Run("z", 0.0, 0, line, uv, np.arange(5.0), np.zeros(5))
    run.tri = np.arange(5) + 10 * line         # where the roller located each sample
    return run


def _u_lines():
    """A U lying on its back, lines along u one mm apart: lines 0 and 1 cross the base
    (u 0..10), lines 2 to 4 cross both arms (u 0..3 and 7..10)."""
    return [[_run(0, 0, 10, 0)], [_run(1, 0, 10, 1)],
            [_run(2, 0, 3, 2), _run(2, 7, 10, 2)],
            [_run(3, 0, 3, 3), _run(3, 7, 10, 3)],
            [_run(4, 0, 3, 4), _run(4, 7, 10, 4)]]


def test_sweep_cells_split_a_u_into_its_base_and_two_arms():
    lines = _u_lines()
    cells = _sweep_cells(lines)
    # by hand: line 2's two runs both meet line 1's run, so the base closes and each arm opens
    assert [[(r.line, r.uv[0, 0]) for r in c] for c in cells] == [
        [(0, 0.0), (1, 0.0)], [(2, 0.0), (3, 0.0), (4, 0.0)], [(2, 7.0), (3, 7.0), (4, 7.0)]]


def test_sweep_cells_keep_one_run_per_line_and_close_at_a_gap():
    lines = [[_run(0, 0, 4, 0)], [_run(1, 2, 6, 1)], [], [_run(3, 0, 4, 3)], [_run(4, 5, 9, 4)]]
    cells = _sweep_cells(lines)
    # lines 0-1 overlap (2..4); line 2 is empty, so line 3 starts anew; line 4 does not overlap line 3
    assert [[r.line for r in c] for c in cells] == [[0, 1], [3], [4]]


def test_order_cells_snakes_each_cell_and_crosses_between_arms_once():
    cells = _sweep_cells(_u_lines())
    ordered = _order_cells(cells, np.array([0.0, 0.0]), "auto", (0, 0, 10, 4))
    # by hand, from (0, 0): the base (line 0 forward, line 1 back), the left arm from
    # (0, 2) up, then the right arm entered at its nearest end, (7, 4), down
    got = [(r.line, float(r.uv[0, 0]), float(r.uv[-1, 0])) for r in ordered]
    assert got == [(0, 0.0, 10.0), (1, 10.0, 0.0), (2, 0.0, 3.0), (3, 3.0, 0.0), (4, 0.0, 3.0),
                   (4, 7.0, 10.0), (3, 10.0, 7.0), (2, 7.0, 10.0)]
    # a flipped run keeps its samples' swaths and triangles with them
    assert ordered[1].swath_mm.tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert ordered[1].tri.tolist() == [14, 13, 12, 11, 10]
    jumps = [np.linalg.norm(b.uv[0] - a.uv[-1]) for a, b in zip(ordered, ordered[1:])]
    assert sum(j > 2.0 for j in jumps) == 1 and max(jumps) == pytest.approx(4.0)


def test_order_cells_from_a_named_corner():
    cells = _sweep_cells(_u_lines())
    # the subject's top right is the chart's top left (u grows towards the subject's left)
    ordered = _order_cells(cells, None, "top_right", (0, 0, 10, 4))
    assert (ordered[0].line, float(ordered[0].uv[0, 0])) == (4, 0.0)


def _midline_crossings(plan, face):
    """Per roller sweep (zone region, direction, sweep number): moves between its strokes
    that cross the face's midline."""
    strokes = {s.id: s for s in plan.strokes}
    crossings = {}
    for t in plan.transitions:
        a, b = strokes[t.from_stroke], strokes[t.to_stroke]
        if a.device != "roller" or b.device != "roller" or a.family < 0 or b.family < 0:
            continue
        key = (a.needle_length_mm, a.direction_deg, a.pass_index)
        if key != (b.needle_length_mm, b.direction_deg, b.pass_index):
            continue
        x = face.to_canonical_frame(np.array([a.points[-1], b.points[0]]))[:, 0]
        crossings[key] = crossings.get(key, 0) + int(x[0] * x[1] < 0 and abs(x[0] - x[1]) > 40.0)
    return crossings


def test_roller_sweeps_cross_the_face_rarely(auto_plan, default_face):
    crossings = _midline_crossings(auto_plan, default_face)
    assert len(crossings) >= 20
    # the two U-shaped regions: a sweep of lines that meet both arms crosses between them
    # once per line family (main band, other bands), never once per line
    assert max(crossings.values()) <= 3, crossings
    assert sum(crossings.values()) <= 2 * len(crossings)


def test_pen_paths_run_zone_by_zone_nearest_first(auto_plan):
    pen = [s for s in auto_plan.strokes if s.device == "pen"]
    assert len(pen) > 50
    blocks = [(s.cartridge["needles"], s.zone) for s in pen]
    runs = [b for i, b in enumerate(blocks) if i == 0 or blocks[i - 1] != b]
    assert len(runs) == len(set(runs)), "a zone's pen strokes of one cartridge are not contiguous"
    # greedy nearest neighbour within each block: each next stroke starts at the nearest end
    # of any stroke still to come in its block
    for k in range(1, len(pen)):
        if blocks[k] != blocks[k - 1]:
            continue
        here = pen[k - 1].points[-1]
        later = [s for s, b in zip(pen[k:], blocks[k:]) if b == blocks[k]]
        nearest = min(min(np.linalg.norm(s.points[0] - here), np.linalg.norm(s.points[-1] - here)) for s in later)
        assert np.linalg.norm(pen[k].points[0] - here) <= nearest + 1e-9


def test_pen_stamps_fire_in_order_along_each_stroke(auto_plan):
    hz_max = auto_plan.protocol.pen.stamp_hz_max
    for s in auto_plan.strokes:
        if s.device != "pen" or len(s.stamp_times_s) < 2:
            continue
        assert np.all(np.diff(s.stamp_times_s) >= 1.0 / hz_max - 1e-9)
        # each stamp fires where the tool is at its time: on the stroke's path
        at = np.stack([np.interp(s.stamp_times_s, s.times_s, s.points[:, k]) for k in range(3)], axis=1)
        assert np.linalg.norm(at - s.stamp_points, axis=1).max() < 0.05


def test_reversing_a_pen_path_twice_gives_it_back(default_face):
    from coverage import ZoneMap
    from coverage.plan import chart_path_frames, pen_speed_profile

    class Set:          # the parts of a fitted stamp set a pen path item reads
        needles = 3

        def fired(self):
            return np.array([True, False, True] * 4)

        def fired_at(self, stamps):
            return self.fired().reshape(-1, self.needles)[stamps]

    zones = ZoneMap.default(default_face)
    pen = zones.protocol.pen
    centre = np.asarray(zones.polygons["forehead"].representative_point().coords[0])
    uv = centre + np.stack([np.linspace(-5, 5, 21), np.zeros(21)], axis=1)
    lifted, tangent, skin_s, _ = chart_path_frames(default_face, uv)
    stamp_skin = np.array([1.0, 3.0, 7.0, 8.5])
    path = type("Path", (), {"speed_mm_s": 120.0, "zone": "forehead"})()
    rows = np.array([0, 1, 2, 3])
    item = (Set(), path, rows, uv, lifted, tangent, skin_s, stamp_skin,
            pen_speed_profile(skin_s, stamp_skin, 120.0, pen), np.array([0, 2, 3, 5, 6, 8, 9, 11]))
    back = _reverse_pen_item(item, pen)
    assert back[2].tolist() == [3, 2, 1, 0]
    assert back[9].tolist() == [9, 11, 6, 8, 3, 5, 0, 2]       # each stamp's fired needles, stamps reversed
    np.testing.assert_array_equal(back[4].points, lifted.points[::-1])
    np.testing.assert_allclose(back[7], skin_s[-1] - stamp_skin[::-1], atol=1e-12)
    again = _reverse_pen_item(back, pen)
    for a, b in zip(item[2:], again[2:]):
        if hasattr(a, "points"):
            np.testing.assert_array_equal(a.points, b.points)
            np.testing.assert_array_equal(a.tri, b.tri)
        else:
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_an_ordered_plan_still_verifies(auto_plan, default_face):
    assert verify(auto_plan, default_face).ok


def _forehead_item(default_face, u0, u1, stamps_at, rows, st):
    """A pen item on a straight forehead line from u0 to u1 (chart mm beside the zone's
    centre), its stamps ``stamps_at`` mm along it on the skin."""
    from coverage import ZoneMap
    from coverage.plan import chart_path_frames, pen_speed_profile

    zones = ZoneMap.default(default_face)
    centre = np.asarray(zones.polygons["forehead"].representative_point().coords[0])
    uv = centre + np.stack([np.linspace(u0, u1, 21), np.zeros(21)], axis=1)
    lifted, tangent, skin_s, _ = chart_path_frames(default_face, uv, across=False)
    stamp_skin = np.asarray(stamps_at, dtype=float)
    path = type("Path", (), {"speed_mm_s": 120.0, "zone": "forehead"})()
    pen = zones.protocol.pen
    return (st, path, np.asarray(rows), uv, lifted, tangent, skin_s, stamp_skin,
            pen_speed_profile(skin_s, stamp_skin, 120.0, pen), np.asarray(rows) * 2), pen


def test_joining_two_pen_paths_keeps_their_stamps_where_they_were(default_face):
    from coverage import pen as pen_mod
    from coverage.plan import _join_pen_items

    st = object()
    a, pen = _forehead_item(default_face, -10.0, -4.0, [1.0, 4.0], [0, 1], st)
    b, _ = _forehead_item(default_face, 0.0, 6.0, [0.5, 2.5, 5.0], [2, 3, 4], st)
    move = pen_mod.glide_moves([a[3][-1]], [b[3][0]])[0]
    assert np.allclose(move[0], a[3][-1]) and np.allclose(move[-1], b[3][0])
    # 4 chart mm at half SAMPLE_MM steps: 33 samples, both ends included
    assert len(move) == int(round(4.0 / (pen_mod.SAMPLE_MM / 2))) + 1
    joined = _join_pen_items(default_face, a, b, move, pen)
    st_j, path, rows, uv, lifted, tangent, skin_s, stamp_skin, speed, hits = joined
    assert st_j is st and path is a[1]
    assert rows.tolist() == [0, 1, 2, 3, 4] and hits.tolist() == [0, 2, 4, 6, 8]
    # a's samples, the glide's inner samples, b's samples
    assert len(uv) == len(a[3]) + len(move) - 2 + len(b[3])
    np.testing.assert_array_equal(uv[:len(a[3])], a[3])
    np.testing.assert_array_equal(uv[-len(b[3]):], b[3])
    # a's stamps where they were; b's as far beyond b's first sample as along b itself
    np.testing.assert_allclose(stamp_skin[:2], a[7], atol=1e-9)
    first_b = len(uv) - len(b[3])
    np.testing.assert_allclose(stamp_skin[2:] - skin_s[first_b], b[7], atol=1e-9)
    # the glide between them is the 4 mm of skin (about) between a's end and b's start
    assert 3.5 < skin_s[first_b] - skin_s[len(a[3]) - 1] < 5.0
    # every stamp lands on the joined path where the original one did (3D)
    for item, k in ((a, slice(0, 2)), (b, slice(2, 5))):
        own = np.stack([np.interp(item[7], item[6], item[4].points[:, d]) for d in range(3)], axis=1)
        now = np.stack([np.interp(stamp_skin[k], skin_s, lifted.points[:, d]) for d in range(3)], axis=1)
        np.testing.assert_allclose(now, own, atol=1e-6)
    # two stamps closer on the skin than the pen fires them apart at its slowest glide: no join
    # (a stamp 0.01 mm before a's end, the next at c's start, where a ends: 0.01 < 5 / 150 mm)
    end, _ = _forehead_item(default_face, -10.0, -4.0, [1.0, 0.0], [0, 1], st)
    end = end[:7] + (np.array([1.0, end[6][-1] - 0.01]),) + end[8:]
    c, _ = _forehead_item(default_face, -4.0, 2.0, [0.0, 1.0], [5, 6], st)
    assert pen.speed_mm_s_min / pen.stamp_hz_max > 0.01
    assert _join_pen_items(default_face, end, c, pen_mod.glide_moves([a[3][-1]], [c[3][0]])[0], pen) is None
    # 0.1 mm apart they may
    end = end[:7] + (np.array([1.0, end[6][-1] - 0.1]),) + end[8:]
    assert _join_pen_items(default_face, end, c, pen_mod.glide_moves([a[3][-1]], [c[3][0]])[0], pen) is not None


def test_glide_joins_frame_each_chain_once_as_join_by_join(default_face, default_zones, monkeypatch):
    """The joins framed once per chain (_PenChain) give the items the join-by-join
    twin gives, bit for bit, on the bundled face's own pen items (chains of three and more
    among them)."""
    import sys

    from coverage import plan as make_plan
    from coverage.plan import _glide_joins, _glide_joins_reference

    plan_mod = sys.modules["coverage.plan"]      # (coverage.plan is also the function)
    seen = []

    def record(face, zones, items, pen):
        seen.append((face, zones, list(items), pen))
        return _glide_joins(face, zones, items, pen)

    monkeypatch.setattr(plan_mod, "_glide_joins", record)
    make_plan(default_face, zones=default_zones)
    assert len(seen) == 1
    face, zones, items, pen = seen[0]
    got, want = _glide_joins(face, zones, items, pen), _glide_joins_reference(face, zones, items, pen)
    assert len(got) == len(want) < len(items) - 20
    chain_sizes, at = [], 0
    for g, w in zip(got, want):
        assert g[0] is w[0] and g[1] is w[1]
        for x, y in zip(g[2:], w[2:]):
            if hasattr(x, "points"):
                for f in ("points", "normals", "tri", "bary"):
                    np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
            else:
                np.testing.assert_array_equal(x, y)
        # the input items this one joins: consecutive, their stamps one after another
        first, n = at, 0
        while n < len(g[2]):
            np.testing.assert_array_equal(g[2][n:n + len(items[at][2])], items[at][2])
            n, at = n + len(items[at][2]), at + 1
        chain_sizes.append(at - first)
    assert at == len(items) and max(chain_sizes) >= 3


def test_pen_strokes_glide_only_on_their_own_zone(auto_plan):
    import shapely

    pen = [s for s in auto_plan.strokes if s.device == "pen"]
    for s in pen:
        inside = shapely.contains_xy(auto_plan.zones.polygons[s.zone], s.uv[:, 0], s.uv[:, 1])
        assert inside.all(), f"stroke {s.id} ({s.zone}): {int((~inside).sum())} samples outside its zone"


def _kernel_order(ends, zone, starts, position):
    from coverage._ext import pen as pen_kernel

    n = len(ends)
    order, flip = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint8)
    q = np.zeros(3) if position is None else np.asarray(position, dtype=np.float64)
    todo = np.ones(n, dtype=np.uint8)
    pen_kernel.greedy_order(np.ascontiguousarray(ends), np.asarray(zone, dtype=np.int64),
                            np.asarray(starts, dtype=np.int64), float(q[0]), float(q[1]), float(q[2]),
                            position is not None, order, flip, todo)
    assert not todo.any()
    return order, flip.astype(bool)


@pytest.mark.parametrize("seed", range(24))
def test_greedy_order_kernel_equals_its_twin(seed):
    """The pen paths' order and directions: the compiled pass against its NumPy twin on
    seeded paths in groups and zones, ends continuous, on a lattice (ties) or repeated."""
    from coverage.plan import greedy_order, greedy_order_reference

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    kind = seed % 3
    if kind == 0:
        ends = rng.normal(0.0, 30.0, (n, 2, 3))
    elif kind == 1:
        ends = rng.integers(-3, 4, (n, 2, 3)).astype(np.float64)        # many equal distances
    else:
        ends = np.repeat(rng.normal(0.0, 5.0, (n // 3 + 1, 2, 3)), 3, axis=0)[:n]   # repeated paths
    zone = rng.integers(0, int(rng.integers(1, 5)), n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(int(rng.integers(0, 4)), n - 1), replace=False)) \
        if n > 1 else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    for position in (None, rng.normal(0.0, 20.0, 3), ends[0, 1].copy()):
        want = greedy_order_reference(ends, zone, starts, position)
        got = _kernel_order(ends, zone, starts, position)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        wrapped = greedy_order(ends, zone, starts, position)
        assert np.array_equal(wrapped[0], want[0]) and wrapped[1].dtype == bool and np.array_equal(wrapped[1], want[1])
        assert sorted(got[0].tolist()) == list(range(n))
        for a, b in zip(starts[:-1], starts[1:]):       # each group's paths in its own rows
            assert sorted(got[0][a:b].tolist()) == list(range(a, b))


def test_greedy_order_by_hand():
    from coverage.plan import greedy_order_reference

    # three paths on the x axis, the tool at x = 0: path 1 (ends at 9 and 2) is nearest by
    # its last end (2), so it runs reversed and the tool ends at 9; then path 2 (10..12),
    # forwards, to 12; path 0 (zone 1, the other zone) last, from 15 (3 away) to 20
    e = np.zeros((3, 2, 3))
    e[0, :, 0] = (15.0, 20.0)
    e[1, :, 0] = (9.0, 2.0)
    e[2, :, 0] = (10.0, 12.0)
    zone, starts = np.array([1, 0, 0]), np.array([0, 3])
    for order, flip in (greedy_order_reference(e, zone, starts, np.zeros(3)), _kernel_order(e, zone, starts, np.zeros(3))):
        assert order.tolist() == [1, 2, 0] and flip.tolist() == [True, False, False]
    # the zone last treated goes first while it has paths left: from x = 14, path 0 (zone 1)
    # is nearest, then path 2 is nearer (12) than path 1 (9), both zone 0
    for order, flip in (greedy_order_reference(e, zone, starts, np.array([14.0, 0, 0])),
                        _kernel_order(e, zone, starts, np.array([14.0, 0, 0]))):
        assert order.tolist() == [0, 2, 1] and flip.tolist() == [False, True, False]
    # no position yet: the first path as it runs, then nearest from its end (20)
    order, flip = _kernel_order(e, zone, starts, None)
    assert order.tolist() == [0, 2, 1] and flip.tolist() == [False, True, False]


def test_greedy_order_reads_odd_input_as_its_twin():
    from coverage.plan import greedy_order, greedy_order_reference

    e = np.zeros((3, 2, 3))
    e[:, 1, 0] = (1.0, 2.0, 3.0)
    zone, starts = np.zeros(3, dtype=np.int64), np.array([0, 3])
    e[1, 0, 1] = np.nan                      # a path end not finite: the twin decides
    for position in (None, np.array([0.5, 0.0, 0.0])):
        got, want = greedy_order(e, zone, starts, position), greedy_order_reference(e, zone, starts, position)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        assert sorted(got[0].tolist()) == [0, 1, 2]
    assert greedy_order(np.zeros((0, 2, 3)), np.zeros(0, dtype=np.int64), np.array([0]), None)[0].shape == (0,)


def test_reversed_arcs_are_each_reversed_paths_own():
    # the reversed paths' skin arc lengths made in one pass equal _reverse_pen_item's own,
    # path by path, bit for bit (seeded 3D paths of 1 to 60 points, one with repeated points)
    from coverage.plan import _reversed_arcs

    rng = np.random.default_rng(11)
    paths = [np.cumsum(rng.normal(0, rng.choice([0.01, 0.7, 4.0]), size=(int(rng.integers(1, 60)), 3)), axis=0)
             for _ in range(40)]
    paths[3][5:9] = paths[3][5]
    got = list(_reversed_arcs(paths))
    assert len(got) == len(paths)
    for p, s in zip(paths, got):
        back = p[::-1]
        want = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(back, axis=0), axis=1))])
        assert s.shape == want.shape and np.array_equal(s, want)
    assert list(_reversed_arcs([])) == []


def _order_cells_by_norm(cells, position_uv, corner, bounds):
    """The cells' order as it was chosen before stop 25, each gap by numpy.linalg.norm (the
    twin of the plain-float weighing in _order_cells; its start and snaking are the plan's)."""
    from coverage.plan import _cells_start, _snaked

    if not cells:
        return []
    target = _cells_start(position_uv, corner, bounds)
    out, todo = [], list(range(len(cells)))
    while todo:
        best = None
        for c in todo:
            for reverse_lines in (False, True):
                for flip_first in (False, True):
                    first = cells[c][-1] if reverse_lines else cells[c][0]
                    entry = first.uv[-1] if flip_first else first.uv[0]
                    gap = float(np.linalg.norm(entry - target))
                    if best is None or gap < best[0]:
                        best = (gap, c, reverse_lines, flip_first)
        _, c, reverse_lines, flip_first = best
        todo.remove(c)
        out += _snaked(cells[c], reverse_lines, flip_first)
        target = out[-1].uv[-1]
    return out


@pytest.mark.parametrize("seed", range(40))
def test_order_cells_weighs_as_numpy_norm_does(seed):
    rng = np.random.default_rng(seed)
    scale = float(rng.choice([1e-3, 1.0, 80.0]))

    def cells():
        rng_cells = np.random.default_rng(seed + 1000)
        out = []
        for c in range(int(rng_cells.integers(1, 12))):
            lines = []
            for line in range(int(rng_cells.integers(1, 5))):
                u0, u1 = np.sort(rng_cells.uniform(-1, 1, 2)) * scale
                v = float(rng_cells.uniform(-1, 1) * scale)
                if seed % 4 == 0:        # on a coarse lattice: ways in equally far apart (ties)
                    u0, u1, v = (np.round(x * 4 / scale) * scale / 4 for x in (u0, u1, v))
                lines.append(_run(line, u0, u1, v))
            out.append(lines)
        return out

    corner = ["auto", "bottom_left", "top_right"][seed % 3]
    position = None if seed % 5 == 0 else rng.uniform(-1, 1, 2) * scale
    bounds = (-scale, -scale, scale, scale)
    got = _order_cells(cells(), position, corner, bounds)
    want = _order_cells_by_norm(cells(), position, corner, bounds)
    assert [(r.line, r.uv.tolist(), r.swath_mm.tolist(), r.tri.tolist()) for r in got] == \
        [(r.line, r.uv.tolist(), r.swath_mm.tolist(), r.tri.tolist()) for r in want]
