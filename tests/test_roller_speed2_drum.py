"""Drum.central_rings (one compiled pass) against Drum.central_rings_reference (NumPy) on
seeded random curvatures and drums, odd and even, with NaN, infinities and signed zeros."""
import dataclasses

import numpy as np
import pytest

from coverage import Protocol, roller


def _drums():
    base = roller.Drum.from_protocol(Protocol.default(), 1.0)
    out = [base]
    for rings in (1, 2, 3, 7, 12, 25):
        for length, tol in ((0.5, 0.3), (1.5, 0.1), (2.5, 0.5)):
            out.append(dataclasses.replace(base, rings=rings, needle_length_mm=length, gap_tolerance=tol))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_central_rings_match_reference(seed):
    rng = np.random.default_rng(seed)
    for drum in _drums():
        k = rng.normal(0, 0.05, 3000) * rng.choice([0.01, 0.1, 1.0, 10.0], 3000)
        k[rng.random(3000) < 0.02] = np.nan
        k[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300]
        mine = drum.central_rings(k)
        with np.errstate(invalid="ignore"):     # inf * 0: the reference warns, both read NaN
            ref = drum.central_rings_reference(k)
        assert mine.dtype == ref.dtype and mine.shape == ref.shape
        assert np.array_equal(mine, ref)
        assert len(np.unique(ref)) > 1 or drum.rings == 1
        # other shapes: (a, b), a strided view, empty, a scalar
        with np.errstate(invalid="ignore"):
            assert np.array_equal(drum.central_rings(k[:3000].reshape(60, 50)),
                                  drum.central_rings_reference(k[:3000].reshape(60, 50)))
            assert np.array_equal(drum.central_rings(k[::3]), drum.central_rings_reference(k[::3]))
        assert drum.central_rings(np.empty(0)).shape == (0,)
        assert np.array_equal(drum.central_rings(float(k[7])), drum.central_rings_reference(float(k[7])))


def test_central_rings_on_the_default_face(default_face):
    drum = roller.Drum.from_protocol(Protocol.default(), 1.0)
    conform = roller.conformity(default_face, drum, 45.0)
    for k in (conform.kappa_cross, conform.kappa_along):
        assert np.array_equal(drum.central_rings(k), drum.central_rings_reference(k))
