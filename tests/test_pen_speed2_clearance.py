"""Second round of pen shortcuts: each gives exactly what it stands for."""
import numpy as np
import pytest

from coverage import pen


def test_footprint_clearance_equals_searching_every_point(default_zones):
    clearance = pen.FootprintClearance(default_zones)
    assert clearance.parts
    face = default_zones.face
    rng = np.random.default_rng(7)
    lo, hi = face.uv.min(axis=0), face.uv.max(axis=0)
    # points all over the chart (and beyond it), and many around the exclusions' own skin
    spread = rng.uniform(lo - 5.0, hi + 5.0, (4000, 2))
    hidden = face.uv[default_zones.label_at(face.uv) < 0]
    near = hidden[rng.integers(0, len(hidden), 4000)] + rng.normal(0.0, 4.0, (4000, 2))
    for uv in (spread, near, near[:7], np.empty((0, 2))):
        for radius in (0.0, 1.5, 3.5):
            got = clearance.clear(uv, radius)
            want = clearance.clear_reference(uv, radius)
            np.testing.assert_array_equal(got, want)
    # both answers occur
    mixed = clearance.clear(near, 3.5)
    assert mixed.any() and not mixed.all()


def test_footprint_clearance_reads_as_on_the_keepouts_own_grids(default_zones):
    # the parts are binned coarser for the footprint's searches: the answers are those of the
    # keep-outs' own grids (the closest point does not depend on the binning)
    from coverage import regions
    from coverage.zones import canonical_exclusion_regions

    coarse = pen.FootprintClearance(default_zones)
    own = pen.FootprintClearance(default_zones)
    face = default_zones.face
    standard = canonical_exclusion_regions(face.subdivisions)
    grids = [regions.region_grid(face, region) for name, parts in standard.items() if name in default_zones.exclusions
             for _, region in parts]
    own.parts = [(g, margin) for g, (_, margin) in zip(grids, coarse.parts)]
    assert any(g.cell < pen.CLEAR_CELL_MM for g in grids)
    rng = np.random.default_rng(3)
    hidden = face.uv[default_zones.label_at(face.uv) < 0]
    near = hidden[rng.integers(0, len(hidden), 6000)] + rng.normal(0.0, 5.0, (6000, 2))
    for radius in (0.0, 1.5, 2.5, 3.5):
        got = coarse.clear(near, radius)
        np.testing.assert_array_equal(got, own.clear(near, radius))
        assert got.any() and not got.all()


@pytest.mark.parametrize("seed", range(3))
def test_dilated_equals_its_reference(seed):
    rng = np.random.default_rng(seed)
    for shape in [(1, 1), (2, 9), (33, 17)]:
        for density in (0.0, 0.01, 0.3):
            mask = rng.random(shape) < density
            for iterations in (1, 2, 4):
                np.testing.assert_array_equal(pen._dilated(mask, iterations), pen._dilated_reference(mask, iterations))
