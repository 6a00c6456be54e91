"""Roller speed work (fifth round): each change equal to what it replaces."""
import numpy as np
import pytest

from test_roller_speed4 import _loops_alone


class _Lines:
    """A contour generator stand-in: the same lines at every level (per level, its own)."""

    def __init__(self, per_level):
        self.per_level = per_level

    def lines(self, level):
        return self.per_level[level]


def _crumbs(rng, centre):
    """Border lines as a scan's border gives them: crumbs of 1 to 4 points, repeated points
    (steps of 0 and below 1e-9), a closed loop and a long open line."""
    lines = []
    for _ in range(40):
        n = int(rng.integers(1, 5))
        pts = centre + rng.uniform(-4, 4, 2) + np.cumsum(rng.uniform(-0.5, 0.5, (n, 2)), axis=0)
        if n > 1 and rng.random() < 0.5:
            pts[int(rng.integers(1, n))] = pts[int(rng.integers(0, n - 1))]     # a repeated point
        lines.append(pts)
    t = np.linspace(0.0, 2 * np.pi, 200)
    loop = centre + 4.0 * np.stack([np.cos(t), np.sin(t)], axis=1)
    loop[-1] = loop[0]
    loop[50] = loop[49] + 1e-10          # a step below 1e-9: not kept
    lines.append(loop)
    lines.append(centre + np.stack([np.linspace(-5, 5, 120), np.linspace(-1, 1, 120)], axis=1))
    lines.insert(int(rng.integers(0, len(lines))), np.zeros((0, 2)))
    order = rng.permutation(len(lines))
    return [lines[i] for i in order]


def test_headland_loops_many_keeps_the_moving_points_of_each_line_as_alone(default_face):
    from coverage import ZoneMap, roller
    from coverage.protocol import Protocol

    protocol = Protocol.default()
    zones = ZoneMap.default(default_face, protocol)
    clearance = roller.keepout_clearance(zones)
    region = roller.roller_regions(zones, protocol)[0]
    drum = roller.Drum.from_protocol(protocol, protocol.zone(region.zones[0]).roller_needle_length_mm)
    headland = roller.Headland(zones, region, drum, clearance)
    centre = np.asarray(region.polygon.representative_point().coords[0])
    for seed in range(4):
        rng = np.random.default_rng(seed)
        levels = [1.0, 2.0, 3.0]
        stub = _Lines({1.0: _crumbs(rng, centre), 2.0: [], 3.0: _crumbs(rng, centre)})
        headland.__dict__["_contours"] = stub
        headland._contours_above = lambda level: stub
        for min_samples in (0, roller.MIN_RUN_SAMPLES):
            many = headland._loops_many(levels, min_samples)
            for level, got in zip(levels, many):
                ref = _loops_alone(headland, level, min_samples)
                assert len(got) == len(ref)
                for a, b in zip(got, ref):
                    assert (a is None and b is None) or np.array_equal(a, b)
        assert headland._loops_many([2.0], 0) == [[]]


# --- sweep frame fields made where the lines read them (roller.sweep_frame_fields_lazy) ----------

def _lazy_equals_eager(face, chart, inside, conform, rows, rng):
    """Every point of a lazily made frame, made in a random order and in random batches, is
    sweep_frame_fields' (scale and band) and its code is the band's index in the levels."""
    import types  # noqa: F401
    from coverage import roller

    scale, band = roller.sweep_frame_fields(face, chart, inside, conform, rows)
    fields = roller.sweep_frame_fields_lazy(face, chart, inside, conform, rows)
    n = len(chart)
    assert not fields.known.any()
    order = rng.permutation(n)
    for part in np.array_split(order, 5)[:3]:
        fields.fill(part)
        fields.fill(part[: len(part) // 2])     # made again: nothing changes
    fields.fill_all()
    assert fields.known.all()
    assert np.array_equal(fields.scale.reshape(-1), scale)
    assert np.array_equal(fields.band.reshape(-1), band, equal_nan=True)
    works = ~np.isnan(band)
    codes = fields.codes.reshape(-1)
    assert (codes[~works] == -1).all()
    assert np.array_equal(fields.levels[codes[works]], band[works])
    assert np.all(np.diff(fields.levels) > 0)
    return fields, band


def test_lazy_frame_fields_hand_worked_square():
    import types

    from coverage import lifting, roller

    # test_roller_speed3_frame_fields' square: T0 (0,0) (1,0) (1,1), T1 (0,0) (1,1) (0,1)
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    grid = lifting.build_grid(uv, faces)
    face = types.SimpleNamespace(chart_grid=grid, faces=faces, vertices=np.zeros((4, 3)),
                                 linear_scale=np.array([2.0, 3.0]),
                                 locate=lambda p, eps=1e-9: lifting.locate(grid, p, eps))
    values = np.full((4, 4), 0.3)
    values[0, 0] = -1.0
    inside = roller.ChartRaster(np.zeros(2), 0.5, values)
    chart = np.array([[0.75, 0.25], [0.4, 0.1], [0.25, 0.75], [5.0, 5.0], [np.nan, 0.5], [0.9, 0.6]])
    conform = roller.Conformity(0.0, np.zeros(4), np.zeros(4), np.array([4.0, 5.0, 6.0, 0.0]), np.ones(4, bool))
    fields = roller.sweep_frame_fields_lazy(face, chart, inside, conform, 2)       # 2 rows of 3
    assert fields.levels.tolist() == [4.0, 5.0, 6.0]       # the conforming swaths above 0
    fields.fill([0])
    assert fields.known.reshape(-1).tolist() == [1, 0, 0, 0, 0, 0]
    assert (fields.scale[0, 0], fields.band[0, 0], fields.codes[0, 0]) == (2.0, 4.0, 0)
    fields.fill_row(1)
    assert fields.known.reshape(-1).tolist() == [1, 0, 0, 1, 1, 1]
    assert fields.scale[1].tolist() == [1.0, 1.0, 2.0]
    assert fields.codes[1].tolist() == [-1, -1, 0]          # (0.9, 0.6): T0, band min(4, 5, 6)
    fields.fill_all()
    assert fields.scale.reshape(-1).tolist() == [2.0, 2.0, 3.0, 1.0, 1.0, 2.0]
    assert fields.codes.reshape(-1).tolist() == [0, -1, -1, -1, -1, 0]
    # a band that is none of the levels reads the code past them (which the line kernels refuse)
    kernel = roller._raster_kernel.FrameFill(
        chart, grid.affine, grid.start, grid.items, float(grid.origin[0]), float(grid.origin[1]),
        float(grid.cell), int(grid.shape[0]), int(grid.shape[1]), 1e-9, np.array([2.0, 3.0]), faces, values,
        0.0, 0.0, 0.5, np.array([4.0, 5.0, 6.0, 0.0]), np.ones(4, np.uint8), np.array([5.0, 6.0]),
        np.zeros(6, np.uint8), np.empty(6), np.empty(6), np.empty(6, np.int64))
    kernel.fill_points(np.arange(6, dtype=np.int64))
    with pytest.raises(IndexError):
        kernel.fill_points(np.array([6], dtype=np.int64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lazy_frame_fields_random(default_face, seed):
    from coverage import roller

    rng = np.random.default_rng(seed)
    face = default_face
    nv = len(face.vertices)
    lo, hi = face.uv.min(axis=0) - 5, face.uv.max(axis=0) + 5
    rows, cols = 150, 80
    chart = rng.uniform(lo, hi, (rows * cols, 2))
    chart[rng.random(len(chart)) < 0.01] = np.nan
    chart[50:150] = face.uv[rng.integers(0, nv, 100)]      # on vertices and edges: ties
    swath = rng.choice([0.0, 10.0, 15.0, 20.0, np.nan, np.inf, -5.0], nv, p=[.2, .2, .2, .3, .04, .03, .03])
    conforms = rng.random(nv) < 0.8
    cell = float(rng.choice([0.5, 0.75, 1.0, 2.0]))
    w, h = (int(x) for x in (hi - lo) / cell * rng.uniform(0.6, 1.1, 2))
    inside = roller.ChartRaster(lo + rng.uniform(-3, 3, 2), cell, rng.uniform(-1.5, 3.0, (h, w)))
    conform = roller.Conformity(0.0, np.zeros(nv), np.zeros(nv), swath, conforms)
    _, band = _lazy_equals_eager(face, chart, inside, conform, rows, rng)
    assert (~np.isnan(band)).sum() > 100


def _eager_lines(frame, sweeps, offset):
    """ZoneSweeps.lines as it was: the whole fields made first, the codes into the distinct
    bands the frame shows (np.unique)."""
    from coverage import raster, roller

    scale, code, levels = frame.scale.copy(), frame.swath_code, frame.swath_levels

    def design(v):
        if sweeps.forced_design is not None:
            return sweeps.forced_design
        mode = raster.column_mode(code, v, sweeps.v_rows[0], roller.ROW_STEP_MM, len(levels))
        return sweeps.drum.width_mm if mode < 0 else float(levels[mode])

    row = int(np.clip(np.searchsorted(sweeps.v_rows, sweeps.v_mid), 0, len(sweeps.v_rows) - 1))
    v0 = np.full(len(sweeps.u_cols), sweeps.v_mid)
    w0 = design(v0)
    v0 = v0 + offset * w0 / scale[row]
    w0 = design(v0)
    found = [(0, v0, w0)]
    weights = roller.gaussian_weights(roller.LINE_SMOOTH_MM / roller.COLUMN_STEP_MM)
    for sign in (1.0, -1.0):
        walked = raster.line_walk(scale, code, levels, v0, sweeps.v_rows[0], roller.ROW_STEP_MM, sign, w0,
                                  sweeps.forced_design, sweeps.drum.width_mm, weights,
                                  float(sweeps.v_rows[0]), float(sweeps.v_rows[-1]))
        found += [(int(sign) * (i + 1), v, w) for i, (v, w) in enumerate(walked)]
    found.sort(key=lambda item: item[0])
    return [(k, np.stack([sweeps.u_cols, v], axis=1) @ sweeps.to_chart.T, w) for k, v, w in found]


@pytest.mark.parametrize("region_index, direction", [(0, 0), (1, 1), (0, 2), (1, 3)])
def test_lazy_frame_lines_equal_the_whole_fields(default_face, default_zones, region_index, direction):
    from coverage import Protocol, roller

    protocol = Protocol.default()
    clearance = roller.keepout_clearance(default_zones)
    region = roller.roller_regions(default_zones, protocol)[region_index]
    dose = protocol.zone(region.zones[0])
    drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
    theta = dose.directions_deg[direction]
    conform = roller.conformity(default_face, drum, theta)
    widths = [None] + roller.band_widths(default_face, default_zones, region, conform)
    for design in widths:
        for offset in (0.0, 0.25, 0.6):
            fresh = roller.Region(region.name, region.zones, region.polygon)    # its frame made anew
            sweeps = roller.ZoneSweeps(default_zones, fresh, drum, theta, conform, clearance, design)
            got = sweeps.lines(offset)
            assert 0 < sweeps.fields.known.mean() < 1            # made where read
            eager = roller.SweepFrame.build(default_face, fresh, theta, conform)
            ref = _eager_lines(eager, sweeps, offset)
            assert len(got) == len(ref) > 1
            for (k, a, w), (kr, b, wr) in zip(got, ref):
                assert k == kr and w == wr and np.array_equal(a, b, equal_nan=True)
    # every point of the frame the lines made in part, made in full: the eager fields
    fields = sweeps.fields
    scale, band = roller.sweep_frame_fields(default_face, np.stack(np.broadcast_arrays(
        sweeps.u_cols[None, :], sweeps.v_rows[:, None]), axis=-1).reshape(-1, 2) @ sweeps.to_chart.T,
        fresh.inside, conform, len(sweeps.v_rows))
    fields.fill_all()
    assert np.array_equal(fields.scale.reshape(-1), scale)
    assert np.array_equal(fields.band.reshape(-1), band, equal_nan=True)


def test_lazy_fields_refuse_other_arrays():
    from coverage import raster

    class Stub:
        scale = np.ones((3, 2))
        codes = np.zeros((3, 2), dtype=np.int64)
        kernel = None
    with pytest.raises(ValueError, match="own"):
        raster.column_mode(Stub.codes.copy(), np.zeros(2), 0.0, 1.0, 1, lazy=Stub())
    with pytest.raises(ValueError, match="own"):
        raster.line_step(Stub.scale.copy(), Stub.codes, [1.0], np.zeros(2), 0.0, 1.0, 1.0, 1.0, None, 1.0,
                         np.array([0.25, 0.5, 0.25]), lazy=Stub())


# --- contains_grid by the even-odd count of each row's crossings ------------------------------------

def _contains_reference(region, x, y):
    import shapely
    uu, vv = np.meshgrid(x, y)
    return shapely.contains_xy(region, uu.ravel(), vv.ravel()).reshape(len(y), len(x))


def test_grid_crossings_hand_worked():
    from coverage import raster

    # the square [0, 2] x [0, 2] (counter-clockwise), a grid across it
    sq = np.array([[0, 0, 2, 0], [2, 0, 2, 2], [2, 2, 0, 2], [0, 2, 0, 0]], dtype=float)
    x = np.array([-0.5, 0.5, 1.5, 2.5, 2.0])[:4]
    y = np.array([-1.0, 0.0, 0.5, 1.5, 2.0, 3.0])
    inside, unsure = raster.grid_crossings(sq, x, y, 1e-9)
    # rows 0.0 <= y < 2.0 cross the two sides at x = 0 and x = 2 (the horizontal edges never)
    assert inside.astype(int).tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0],
                                           [0, 0, 0, 0]]
    assert not unsure.any()
    inside, unsure = raster.grid_crossings(sq, np.array([0.0, 1.0, 2.0 + 1e-10, 2.1]), np.array([1.0]), 1e-9)
    assert inside.astype(int).tolist() == [[1, 1, 0, 0]]       # x = 0: the crossing at 0 is not right of it
    assert unsure.astype(int).tolist() == [[1, 0, 1, 0]]
    for tol in (1e-9, 0.6):
        got = raster.grid_crossings(sq, x, y, tol)
        ref = raster.grid_crossings_reference(sq, x, y, tol)
        assert all(np.array_equal(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("seed", range(4))
def test_grid_crossings_random(seed):
    from coverage import raster

    rng = np.random.default_rng(seed)
    for _ in range(20):
        m = int(rng.integers(0, 30))
        seg = rng.uniform(-10, 10, (m, 4))
        flat = rng.random(m) < 0.2
        seg[flat, 3] = seg[flat, 1]                           # horizontal edges
        x = np.sort(rng.uniform(-12, 12, int(rng.integers(1, 40))))
        y = np.unique(np.concatenate([rng.uniform(-12, 12, int(rng.integers(1, 40))), seg[:3, 1]]))
        tol = float(rng.choice([1e-9, 0.3]))
        got = raster.grid_crossings(seg, x, y, tol)
        ref = raster.grid_crossings_reference(seg, x, y, tol)
        assert all(np.array_equal(a, b) for a, b in zip(got, ref))


def _boundary_cases(rng):
    import shapely
    yield shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)])                        # edges on grid rows, columns
    yield shapely.Polygon([(2, 0), (4, 2), (2, 4), (0, 2)])                         # diagonal edges through points
    yield shapely.Polygon([(0, 0), (4, 0), (2, 3)])                                 # apex on a grid point
    yield shapely.Polygon([(0, 0), (2, 2), (4, 0), (4, 4), (0, 4)])                 # a reflex vertex on a point
    yield shapely.Polygon([(-1, -1), (5, -1), (5, 5), (-1, 5)], [[(0, 0), (0, 3), (3, 3), (3, 0)]])  # hole on points
    yield shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2.5, 2)])   # parts touching at a point
    yield shapely.Polygon(rng.uniform(0, 4, (3, 2)).round(1))                       # vertices on a 0.1 grid
    # a self-intersecting bow tie (invalid: the blocks path answers)
    yield shapely.Polygon([(0, 0), (4, 4), (4, 0), (0, 4)])


@pytest.mark.parametrize("seed", range(3))
def test_contains_grid_scan_on_the_boundary(seed):
    from coverage import roller

    rng = np.random.default_rng(seed)
    for region in _boundary_cases(rng):
        for step in (0.5, 0.25, 0.1, 1.0 / 3.0):
            x = -1.0 + np.arange(int(7 / step)) * step
            y = -1.5 + np.arange(int(8 / step)) * step
            ref = _contains_reference(region, x, y)
            assert np.array_equal(roller.contains_grid(region, x, y), ref)
            if region.is_valid:
                assert np.array_equal(roller.contains_grid_scan(region, x, y), ref)


@pytest.mark.parametrize("seed", range(3))
def test_contains_grid_scan_random_blobs(seed):
    import shapely

    from coverage import roller

    rng = np.random.default_rng(seed)
    for _ in range(6):
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            c, r, n = rng.uniform(-20, 20, 2), rng.uniform(3, 12), int(rng.integers(5, 60))
            angle = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.4, 1.0, n)
            parts.append(shapely.Polygon(np.stack([c[0] + rad * np.cos(angle), c[1] + rad * np.sin(angle)], axis=1)))
        region = shapely.union_all(parts)
        hole = shapely.Point(rng.uniform(-10, 10, 2)).buffer(rng.uniform(1, 4))
        region = region.difference(hole)
        cell = float(rng.choice([0.25, 0.5, 0.3]))
        x = -35.0 + (np.arange(int(70 / cell)) + 0.5) * cell
        y = -33.0 + (np.arange(int(66 / cell)) + 0.5) * cell
        assert np.array_equal(roller.contains_grid(region, x, y), _contains_reference(region, x, y))


# --- headland_ends: every run's ends checked together, round after round ---------------------------

def _headland_ends_one_by_one(face, drum, runs):
    """roller.headland_ends as it was: each run trimmed alone, its two ends read as two paths."""
    import dataclasses

    from coverage import roller

    curvature = face.curvature(roller.drum_curvature_radius_mm(drum))
    out = []
    for line_runs in runs:
        kept = []
        for r in line_runs:
            a, b = 0, len(r.uv)
            while (b - a - 1) * roller.PATH_STEP_MM >= roller.MIN_STROKE_MM:
                along, cross, on = roller.path_curvatures(face, curvature, r.uv[[a, a + 1, b - 2, b - 1]],
                                                          starts=np.array([0, 2, 4], dtype=np.int64))
                ends = np.array([0, 3])
                good = drum.conforms(roller.planned(cross[ends]), roller.planned(along[ends])) & on[ends]
                if good.all():
                    break
                a, b = a + (not good[0]), b - (not good[1])
            if (b - a - 1) * roller.PATH_STEP_MM < roller.MIN_STROKE_MM:
                continue
            if (a, b) == (0, len(r.uv)):
                kept.append(r)
                continue
            kept.append(dataclasses.replace(r, uv=r.uv[a:b], swath_mm=r.swath_mm[a:b], kappa_cross=r.kappa_cross[a:b],
                                            meta=dict(r.meta), tri=None if r.tri is None else r.tri[a:b]))
        if kept:
            out.append(kept)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_headland_ends_together_equal_one_by_one(default_face, seed):
    from coverage import roller
    from coverage.protocol import Protocol

    protocol = Protocol.default()
    rng = np.random.default_rng(seed)
    uv_all = default_face.uv
    trimmed = dropped = 0
    for needle in (0.5, 1.5):
        drum = roller.Drum.from_protocol(protocol, needle)
        runs = []
        for _ in range(8):
            line = []
            for _ in range(int(rng.integers(0, 5))):
                start = uv_all[rng.integers(len(uv_all))]
                steps = rng.normal(0, 0.5, (int(rng.integers(2, 120)), 2)) + rng.normal(0, 0.4, 2)
                uv = start + np.cumsum(steps, axis=0)
                n = len(uv)
                line.append(roller.Run("z", 0.0, 0, 0, uv, np.full(n, 10.0), np.zeros(n), meta={"family": -1},
                                       tri=default_face.locate(uv)[0] if rng.random() < 0.8 else None))
            runs.append(line)
        got = roller.headland_ends(default_face, drum, runs)
        ref = _headland_ends_one_by_one(default_face, drum, runs)
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            assert len(g) == len(r)
            for x, y in zip(g, r):
                assert np.array_equal(x.uv, y.uv) and np.array_equal(x.swath_mm, y.swath_mm)
                assert np.array_equal(x.kappa_cross, y.kappa_cross)
                assert (x.tri is None) == (y.tri is None) and (x.tri is None or np.array_equal(x.tri, y.tri))
                assert x.meta == y.meta and x.phase_mm == y.phase_mm
        total = sum(len(line) for line in runs)
        kept = sum(len(line) for line in ref)
        dropped += total - kept
        trimmed += sum(len(x.uv) < len(o.uv) for line, rl in zip(runs, ref) for x in rl for o in line
                       if x.uv[0].tolist() in o.uv.tolist())
    assert dropped > 0 and trimmed > 0


# --- border_distance in one compiled pass ------------------------------------------------------------

def _square_face():
    import types

    from coverage import lifting

    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    grid = lifting.build_grid(uv, faces)
    return types.SimpleNamespace(chart_grid=grid, faces=faces, vertices=np.zeros((4, 3)),
                                 linear_scale=np.array([2.0, 3.0]),
                                 locate=lambda p, eps=1e-9: lifting.locate(grid, p, eps))


def test_border_distance_hand_worked():
    import types

    from coverage import roller

    face = _square_face()
    # 0.5 mm cells from (0, 0): centres (0.25, 0.25) T0 or T1 (on the diagonal: the first in
    # its cell), (0.75, 0.25) T0, (0.25, 0.75) T1, (0.75, 0.75) on the diagonal; a third
    # column off the chart
    values = np.array([[1.0, 2.0, 4.0], [-1.0, 0.5, np.nan]])
    region = types.SimpleNamespace(inside=roller.ChartRaster(np.zeros(2), 0.5, values))
    got = roller.border_distance(face, region)
    ref = roller.border_distance_reference(face, region)
    assert np.array_equal(got.values, ref.values)
    tri, _ = face.locate(np.array([[0.25, 0.25], [0.75, 0.25], [1.25, 0.25], [0.75, 0.75]]))
    s = np.where(tri >= 0, face.linear_scale[np.maximum(tri, 0)], 1.0)
    assert got.values.tolist() == [[1.0 * s[0], 2.0 * 2.0, 4.0], [-1.0, 0.5 * s[3], -1.0]]
    assert got.values[0, 2] == 4.0 and tri[2] == -1            # off the chart: scale 1


@pytest.mark.parametrize("seed", range(3))
def test_border_distance_random(default_face, seed):
    import types

    from coverage import roller

    rng = np.random.default_rng(seed)
    lo, hi = default_face.uv.min(axis=0) - 5, default_face.uv.max(axis=0) + 5
    for cell in (0.25, 0.3, 1.0):
        w, h = (int(x) for x in (hi - lo) / cell * rng.uniform(0.3, 0.7, 2))
        values = rng.uniform(-2.0, 30.0, (h, w))
        values[rng.random((h, w)) < 0.02] = np.nan
        values[rng.random((h, w)) < 0.05] = 0.0
        region = types.SimpleNamespace(inside=roller.ChartRaster(lo + rng.uniform(0, 40, 2), cell, values))
        got = roller.border_distance(default_face, region)
        ref = roller.border_distance_reference(default_face, region)
        assert np.array_equal(got.values, ref.values) and got.cell == ref.cell
        assert np.array_equal(got.origin, ref.origin)


def test_border_distance_of_the_default_regions(default_face, default_zones):
    from coverage import Protocol, roller

    for region in roller.roller_regions(default_zones, Protocol.default()):
        got = roller.border_distance(default_face, region)
        assert np.array_equal(got.values, roller.border_distance_reference(default_face, region).values)
