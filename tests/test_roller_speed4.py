"""Roller speed work (fourth round): each change equal to what it replaces."""
import numpy as np
import pytest

from coverage import raster


def test_column_mode_refuses_a_code_it_reads_beyond_the_levels():
    codes = np.array([[0, 1, 5], [1, 1, 0]], dtype=np.int64)
    with pytest.raises(ValueError, match="levels"):
        raster.column_mode(codes, np.zeros(3), 0.0, 1.0, 3)       # row 0 reads the 5


def test_column_mode_reads_only_its_columns_codes():
    # the 5 is never read (every column reads row 1): the mode of what is read
    codes = np.array([[0, 1, 5], [1, 1, 0]], dtype=np.int64)
    assert raster.column_mode(codes, np.ones(3), 0.0, 1.0, 3) == 1
    assert raster.column_mode_reference(codes, np.ones(3), 0.0, 1.0, 3) == 1


@pytest.mark.parametrize("seed", range(5))
def test_column_mode_equals_its_reference_on_valid_codes(seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-2, 6, (40, 30)).astype(np.int64)
    v = rng.uniform(-5, 45, 30)
    v[rng.random(30) < 0.1] = np.nan
    assert raster.column_mode(codes, v, 0.0, 1.0, 6) == raster.column_mode_reference(codes, v, 0.0, 1.0, 6)


def test_conformity_from_given_curvatures_equals_its_own(default_face):
    from coverage import roller
    from coverage.protocol import Protocol

    protocol = Protocol.default()
    for needle in (0.5, 1.0):
        drum = roller.Drum.from_protocol(protocol, needle)
        for theta in (0.0, 45.0):
            other = roller.Drum.from_protocol(protocol, 1.5)     # another needle, the same width
            given = roller.conformity(default_face, drum, theta, roller.vertex_curvatures(default_face, theta, other))
            own = roller.conformity(default_face, drum, theta)
            for name in ("kappa_along", "kappa_cross", "swath_mm", "conforms"):
                assert np.array_equal(getattr(given, name), getattr(own, name))


def _loops_alone(headland, level, min_samples):
    """Headland._loops as it was before its levels were lifted together: one level alone."""
    from scipy import ndimage

    from coverage import paths as _paths
    from coverage import roller

    lines = []
    for line in headland._contours.lines(level):
        keep = np.concatenate([[True], np.linalg.norm(np.diff(line, axis=0), axis=1) > 1e-9])
        if keep.sum() >= 3:
            lines.append((line, line[keep]))
    if not lines:
        return []
    chart = np.concatenate([kept for _, kept in lines])
    starts = np.concatenate([[0], np.cumsum([len(kept) for _, kept in lines])]).astype(np.int64)
    resampled, out_starts = _paths.resample(chart, headland.face.lift(chart).points, starts, roller.PATH_STEP_MM)
    loops = []
    for (line, _), a, b in zip(lines, out_starts[:-1], out_starts[1:]):
        uv = resampled[a:b]
        if len(uv) < min_samples:
            loops.append(None)
            continue
        closed = np.linalg.norm(line[0] - line[-1]) < 1e-6
        loops.append(ndimage.gaussian_filter1d(uv, roller.HEADLAND_SMOOTH_MM / roller.PATH_STEP_MM, axis=0,
                                               mode="wrap" if closed else "nearest"))
    return loops


def test_headland_loops_of_many_levels_equal_each_level_alone(default_face):
    from coverage import ZoneMap, roller
    from coverage.protocol import Protocol

    protocol = Protocol.default()
    zones = ZoneMap.default(default_face, protocol)
    clearance = roller.keepout_clearance(zones)
    for region in roller.roller_regions(zones, protocol)[:2]:
        drum = roller.Drum.from_protocol(protocol, protocol.zone(region.zones[0]).roller_needle_length_mm)
        headland = roller.Headland(zones, region, drum, clearance)
        levels = [1.0, 5.3, 11.97, 40.0, 1e4, 7.25]
        for min_samples in (0, roller.MIN_RUN_SAMPLES):
            many = headland._loops_many(levels, min_samples)
            assert len(many) == len(levels)
            for level, got in zip(levels, many):
                ref = _loops_alone(headland, level, min_samples)
                assert len(got) == len(ref)
                for a, b in zip(got, ref):
                    assert (a is None and b is None) or np.array_equal(a, b)
    assert headland._loops_many([], 0) == []


def _headland_ends_whole(face, drum, runs):
    """roller.headland_ends as it was: each step reads the curvatures of the whole run."""
    import dataclasses

    from coverage import roller

    curvature = face.curvature(roller.drum_curvature_radius_mm(drum))
    out = []
    for line_runs in runs:
        kept = []
        for r in line_runs:
            a, b = 0, len(r.uv)
            while (b - a - 1) * roller.PATH_STEP_MM >= roller.MIN_STROKE_MM:
                along, cross, on = roller.path_curvatures(face, curvature, r.uv[a:b])
                ends = np.array([0, b - a - 1])
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
def test_headland_ends_read_from_the_ends_equal_the_whole_run(default_face, seed):
    from coverage import roller
    from coverage.protocol import Protocol

    protocol = Protocol.default()
    rng = np.random.default_rng(seed)
    drum = roller.Drum.from_protocol(protocol, 0.5)
    uv_all = default_face.uv
    runs = []
    for _ in range(12):
        # wandering chart paths over the face, some across its curved parts (nose, eyes)
        start = uv_all[rng.integers(len(uv_all))]
        steps = rng.normal(0, 0.5, (int(rng.integers(25, 120)), 2)) + rng.normal(0, 0.4, 2)
        uv = start + np.cumsum(steps, axis=0)
        n = len(uv)
        runs.append([roller.Run("z", 0.0, 0, 0, uv, np.full(n, 10.0), np.zeros(n), meta={"family": -1},
                                tri=default_face.locate(uv)[0])])
    got = roller.headland_ends(default_face, drum, runs)
    ref = _headland_ends_whole(default_face, drum, runs)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert len(g) == len(r)
        for x, y in zip(g, r):
            assert np.array_equal(x.uv, y.uv) and np.array_equal(x.tri, y.tri)
            assert np.array_equal(x.swath_mm, y.swath_mm)


def test_headland_cut_contours_equal_the_whole_rasters(default_face):
    from coverage import ZoneMap, roller
    from coverage.protocol import Protocol

    protocol = Protocol.default()
    zones = ZoneMap.default(default_face, protocol)
    clearance = roller.keepout_clearance(zones)
    cut_somewhere = False
    for region in roller.roller_regions(zones, protocol)[:2]:
        drum = roller.Drum.from_protocol(protocol, protocol.zone(region.zones[0]).roller_needle_length_mm)
        headland = roller.Headland(zones, region, drum, clearance)
        top = float(headland.border.values.max())
        for low in (-2.0, 0.0, 3.0, 10.5, 0.9 * top):
            cut = headland._contours_above(low)
            cut_somewhere |= cut is not headland._contours
            for level in (low, low + 0.37, low + 2.3, 0.5 * (low + top), top):
                want = headland._contours.lines(level)
                got = cut.lines(level)
                assert len(got) == len(want)
                assert all(np.array_equal(a, b) for a, b in zip(got, want))
            # every value is -1 or more: no lines below that, lines above it
            assert (len(headland._contours.lines(low + 0.37)) > 0) == (low >= 0)
        # nothing reaches a level above the raster's largest value
        assert headland._contours_above(top + 1.0) is None and headland._contours.lines(top + 1.0) == []
    assert cut_somewhere
