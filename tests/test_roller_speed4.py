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
