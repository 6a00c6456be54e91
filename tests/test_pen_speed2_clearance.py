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


@pytest.mark.parametrize("seed", range(3))
def test_dilated_equals_its_reference(seed):
    rng = np.random.default_rng(seed)
    for shape in [(1, 1), (2, 9), (33, 17)]:
        for density in (0.0, 0.01, 0.3):
            mask = rng.random(shape) < density
            for iterations in (1, 2, 4):
                np.testing.assert_array_equal(pen._dilated(mask, iterations), pen._dilated_reference(mask, iterations))
