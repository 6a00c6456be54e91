"""The repair's stamp effects pass over texels whose state does not change, exactly."""
import numpy as np
import pytest
from scipy import sparse

import importlib

density_mod = importlib.import_module("coverage.density")


def _effects(rng, h, w, m, counts=True):
    half_u = rng.integers(0, 4, h * w)
    half_v = rng.integers(0, 4, h * w)
    per_count = np.where(rng.random(h * w) > 0.2, rng.random(h * w) * 40, 0.0)
    low = np.where(rng.random(h * w) > 0.1, rng.random(h * w) * 30 + 5, 0.0)
    high = np.where(rng.random(h * w) > 0.1, low + rng.random(h * w) * 40, np.inf)
    data = (lambda k: rng.integers(1, 4, k).astype(float)) if counts else (lambda k: rng.uniform(0.3, 2.0, k))
    stamps = sparse.random(h * w, m, density=min(1.0, 6.0 / (h * w)), random_state=rng, data_rvs=data)
    area = rng.random(h * w)
    return density_mod.StampEffects(stamps, (h, w), per_count, half_u, half_v, low, high, area)


@pytest.mark.parametrize("counts", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (31, 40)])
def test_stamp_effects_skipping_equals_weighing_every_texel(rng, shape, counts):
    h, w = shape
    for _ in range(6):
        m = int(rng.integers(1, 50))
        effects = _effects(rng, h, w, m, counts)
        assert effects.finite
        d = rng.random(h * w) * 60
        holes = np.where(rng.random(h * w) < 0.05, np.nan, d)
        columns = rng.integers(0, m, 20)
        for sign in (1.0, -1.0):
            for dens in (d, holes):
                got = effects.effects(columns, sign, dens)
                effects.finite = False           # every texel multiplied (and divided) as it comes
                every = effects.effects(columns, sign, dens)
                effects.finite = True
                np.testing.assert_array_equal(got, every)
            np.testing.assert_allclose(effects.effects(columns, sign, d), effects.effects_reference(columns, sign, d),
                                       atol=1e-9)


def test_stamp_effects_with_non_finite_areas_weigh_every_texel(rng):
    effects = _effects(rng, 12, 15, 30)
    effects.area[3] = np.inf
    effects.low[7] = np.inf
    rebuilt = density_mod.StampEffects.__new__(density_mod.StampEffects)
    rebuilt.__dict__.update(effects.__dict__)
    rebuilt.finite = bool(np.isfinite(rebuilt.area).all() and np.isfinite(rebuilt.low).all())
    assert not rebuilt.finite
    d = rng.random(12 * 15) * 60
    out = rebuilt.effects(np.arange(30), 1.0, d)
    assert out.shape == (30, 3)
