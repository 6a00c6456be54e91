"""drum_fits' rigid outline check (straight=False) skips reading the D x W outline point by
point where the sample's own cell of a distance raster already bounds every point of it:
the same answers as reading every point, on seeded random keep-outs and paths (with points
on and off the raster, NaN and degenerate frames) and on the default face's border paths."""
import dataclasses

import numpy as np
import pytest
import shapely

from coverage import Protocol, roller


def _blob(rng, centre, radius, n=30):
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.5, 1.0, n)
    return shapely.Polygon(np.stack([centre[0] + r * np.cos(angle), centre[1] + r * np.sin(angle)], axis=1))


def _both(face, drum, uv, width, inside, clearance, starts, tri=None, where=None, straight=False):
    """drum_fits as it is, and reading every point (rasters not marked as distance rasters)."""
    exact = dataclasses.replace(clearance, distance=False)
    exact_inside = dataclasses.replace(inside, distance=False)
    mine = roller.drum_fits(face, drum, uv, width, inside, clearance, straight=straight, tri=tri, starts=starts,
                            where=where)
    theirs = roller.drum_fits(face, drum, uv, width, exact_inside, exact, straight=straight, tri=tri,
                              starts=starts, where=where)
    return mine, theirs


@pytest.mark.parametrize("seed", range(5))
def test_outline_check_matches_reading_every_point(default_face, seed):
    rng = np.random.default_rng(seed)
    face = default_face
    lo, hi = face.uv.min(axis=0), face.uv.max(axis=0)
    drum = roller.Drum.from_protocol(Protocol.default(), 1.0)
    keepout = shapely.union_all([_blob(rng, rng.uniform(lo, hi), rng.uniform(3, 12)) for _ in range(5)])
    # the keep-out raster ends short of the chart's right side on odd seeds (points off it read inf)
    right = hi[0] + 20 if seed % 2 == 0 else (lo[0] + hi[0]) / 2
    clearance = roller.distance_raster(keepout, (lo[0] - 20, lo[1] - 20, right, hi[1] + 20), 0.25)
    assert clearance.distance
    # the region: the chart's box less a few blobs (band points near its edges and off its raster)
    region = shapely.box(*(lo + 10), *(hi - 10)).difference(
        shapely.union_all([_blob(rng, rng.uniform(lo, hi), rng.uniform(3, 15)) for _ in range(3)]))
    minx, miny, maxx, maxy = region.bounds
    inside = roller.distance_raster(region, (minx - 1, miny - 1, maxx + 1, maxy + 1), outside_of=False)
    assert inside.distance
    paths = []
    for _ in range(16):
        n = int(rng.integers(2, 200))
        start = rng.uniform(lo, hi)
        heading = rng.uniform(0, 2 * np.pi)
        turn = np.cumsum(rng.normal(0, 0.05, n))
        step = 0.5 * np.stack([np.cos(heading + turn), np.sin(heading + turn)], axis=1)
        paths.append(start + np.cumsum(step, axis=0))
    uv = np.concatenate(paths)
    uv[rng.random(len(uv)) < 0.01] = np.nan
    starts = np.concatenate([[0], np.cumsum([len(p) for p in paths])]).astype(np.int64)
    width = rng.choice([0.0, 5.0, 10.0, 20.0], len(uv))
    width[rng.random(len(uv)) < 0.01] = np.nan
    with np.errstate(invalid="ignore"):
        for straight in (False, True):
            mine, theirs = _both(face, drum, uv, width, inside, clearance, starts, straight=straight)
            where = rng.random(len(uv)) < 0.7
            mine_w, theirs_w = _both(face, drum, uv, width, inside, clearance, starts, where=where,
                                     straight=straight)
            assert np.array_equal(mine, theirs) and np.array_equal(mine_w, theirs_w)
            assert 0 < theirs.sum() < len(theirs)


def test_outline_check_on_the_default_border_paths(default_face, default_zones):
    protocol = Protocol.default()
    clearance = roller.keepout_clearance(default_zones)
    assert clearance.distance
    answers = []
    for region in roller.roller_regions(default_zones, protocol):
        dose = protocol.zone(region.zones[0])
        drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
        headland = roller.Headland(default_zones, region, drum, clearance)
        for level in (headland.design / 2 + 0.5, headland.design / 2 + 2.0, 1.0):
            loops = [uv for uv in headland._loops(level, roller.MIN_RUN_SAMPLES) if uv is not None]
            uv = np.concatenate(loops)
            starts = np.concatenate([[0], np.cumsum([len(x) for x in loops])]).astype(np.int64)
            width = np.full(len(uv), headland.design)
            mine, theirs = _both(default_face, drum, uv, width, region.inside, clearance, starts)
            assert np.array_equal(mine, theirs)
            answers.append(theirs)
    answers = np.concatenate(answers)
    assert answers.any() and not answers.all()
