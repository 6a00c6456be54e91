"""The repair's stamp effects weighed against a tracked density (StampEffects.track): each
texel's room, and the effects, swaps and applies of the tracked kernels equal to the bit
those of the plain ones."""
import copy
import importlib

import numpy as np
import pytest
from scipy import sparse

density_mod = importlib.import_module("coverage.density")


def _effects(rng, h, w, m, whole=True, most=4):
    half_u = rng.integers(0, most, h * w)
    half_v = rng.integers(0, most, h * w)
    per_count = np.where(rng.random(h * w) > 0.2, rng.random(h * w) * 40, 0.0)
    low = np.where(rng.random(h * w) > 0.1, rng.random(h * w) * 30 + 5, 0.0)
    high = np.where(rng.random(h * w) > 0.1, low + rng.random(h * w) * 40, np.inf)
    data = (lambda k: rng.integers(1, 4, k).astype(float)) if whole else (lambda k: rng.uniform(0.3, 2.0, k))
    stamps = sparse.random(h * w, m, density=min(1.0, 6.0 / (h * w)), random_state=rng, data_rvs=data)
    return density_mod.StampEffects(stamps, (h, w), per_count, half_u, half_v, low, high, rng.random(h * w))


def _density(rng, n, holes=False):
    d = rng.random(n) * 60
    # some texels exactly on a floor or a cap, and some with no density
    return np.where(rng.random(n) < 0.05, np.nan, d) if holes else d


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (20, 9)])
def test_stamp_rooms_equal_their_reference(rng, shape):
    h, w = shape
    for _ in range(6):
        effects = _effects(rng, h, w, int(rng.integers(1, 30)))
        assert effects.whole
        for holes in (False, True):
            d = _density(rng, h * w, holes)
            edge = rng.random(h * w) < 0.1
            d[edge] = np.where(rng.random(edge.sum()) < 0.5, effects.low[edge], effects.high[edge])
            d[~np.isfinite(d) & ~np.isnan(d)] = 1.0
            for cap in (None, 0, 1, 7):
                got = effects.rooms(d, cap)
                want = effects.rooms_reference(d, cap)
                for a, b in zip(got, want):
                    np.testing.assert_array_equal(a, b)


def test_stamp_room_holds_every_count_up_to_it(rng):
    # the room is the largest count that leaves the texel unchanged, and every smaller one does
    h, w = 6, 11
    effects = _effects(rng, h, w, 20)
    d = _density(rng, h * w)
    up, down = effects.rooms(d, 12)[:2]
    p = np.arange(h * w)
    for sign, room in ((1.0, up), (-1.0, down)):
        for k in range(0, 13):
            same = effects._unchanged_reference(d, d + sign * effects.per_count * float(k), p)
            counted = effects.per_count != 0
            assert np.all(same[counted & (k <= room)])
            assert not np.any(same[counted & (k == room + 1)])


def _each_way(effects, plus, minus, sign, d):
    # the tracked kernel with and without the texels gathered once for all stamps of a call
    h, w = effects.shape
    outs = []
    for shared in (0, 1, -1):
        out = np.empty((len(plus), 3))
        assert density_mod._kernel.stamp_effects_tracked(
            effects.indptr, effects.texels, effects.counts, effects.totals, np.asarray(plus, dtype=np.int64),
            np.asarray(minus, dtype=np.int64), sign, d, effects.low, effects.high, effects.area, effects.per_count,
            effects.half_u, effects.half_v, effects._ext_u, effects._ext_v, *effects._rooms, h, w, out, shared) == 0
        outs.append(out)
    return outs


def _plain(effects):
    twin = density_mod.StampEffects.__new__(density_mod.StampEffects)
    twin.__dict__.update(effects.__dict__)
    twin._tracked = None
    return twin


@pytest.mark.parametrize("shape", [(1, 1), (5, 8), (24, 31)])
def test_tracked_stamp_effects_equal_the_plain_kernel_bit_for_bit(rng, shape):
    h, w = shape
    for _ in range(4):
        m = int(rng.integers(2, 60))
        effects = _effects(rng, h, w, m, most=int(rng.integers(1, 6)))
        d = _density(rng, h * w, holes=bool(rng.random() < 0.3))
        plain_d = d.copy()
        assert effects.track(d)
        plain = _plain(effects)
        for step in range(25):
            columns = rng.integers(0, m, int(rng.integers(0, 30)))
            # nearby stamps (as the repair weighs them) and stamps anywhere
            near = np.clip(int(rng.integers(0, m)) + rng.integers(-3, 4, 12), 0, m - 1)
            for cols in (columns, near):
                for sign in (1.0, -1.0):
                    want = plain.effects(cols, sign, plain_d)
                    np.testing.assert_array_equal(effects.effects(cols, sign, d), want)
                    for got in _each_way(effects, cols, [], sign, d):
                        np.testing.assert_array_equal(got, want)
            gone, come = rng.integers(0, m, 12), rng.integers(0, m, 12)
            for gone, come in ((gone, come), (near, np.clip(near + rng.integers(-2, 3, len(near)), 0, m - 1))):
                want = plain.swap_effects(gone, come, plain_d)
                np.testing.assert_array_equal(effects.swap_effects(gone, come, d), want)
                for got in _each_way(effects, come, gone, 1.0, d):
                    np.testing.assert_array_equal(got, want)
            # a stamp applied to both: the same densities, and the rooms follow
            c, sign = int(rng.integers(0, m)), float(rng.choice([-1.0, 1.0]))
            effects.apply(c, sign, d)
            plain.apply(c, sign, plain_d)
            np.testing.assert_array_equal(d, plain_d)
            for a, b in zip(effects._rooms, effects.rooms(d)):
                np.testing.assert_array_equal(a, b)


def test_tracked_effects_against_the_reference_on_a_larger_grid(rng):
    h, w, m = 40, 57, 120
    effects = _effects(rng, h, w, m, most=6)
    d = _density(rng, h * w)
    assert effects.track(d)
    for _ in range(10):
        columns = rng.integers(0, m, 25)
        for sign in (1.0, -1.0):
            np.testing.assert_allclose(effects.effects(columns, sign, d), effects.effects_reference(columns, sign, d),
                                       atol=1e-9)
        effects.apply(int(rng.integers(0, m)), 1.0, d)


def test_only_whole_counts_and_one_density_are_tracked(rng):
    h, w, m = 9, 13, 20
    effects = _effects(rng, h, w, m, whole=False)
    assert not effects.whole
    d = _density(rng, h * w)
    assert not effects.track(d)
    np.testing.assert_allclose(effects.effects(np.arange(m), 1.0, d), effects.effects_reference(np.arange(m), 1.0, d),
                               atol=1e-9)
    effects = _effects(rng, h, w, m)
    assert not effects.track(d.astype(np.float32))
    assert not effects.track(d[::2])
    assert effects.track(d)
    other = d.copy()
    plain = _plain(effects)
    # a density that is not the tracked one is weighed by the plain kernel
    effects.apply(3, 1.0, other)
    plain_other = d.copy()
    plain.apply(3, 1.0, plain_other)
    np.testing.assert_array_equal(other, plain_other)
    np.testing.assert_array_equal(effects.effects(np.arange(m), -1.0, other), plain.effects(np.arange(m), -1.0, other))
    with pytest.raises(ValueError):
        effects.swap_effects([1, 2], [3], d)
    assert effects.swap_effects([], [], d).shape == (0, 3)


def test_tracking_prepared_beforehand_is_the_tracking_made_on_demand(rng):
    # a plan prepares the extents with the repair's parts, beside the fit: tracking then
    # reads the same extents and cap, and weighs as the effects that make their own
    h, w, m = 14, 19, 40
    effects = _effects(rng, h, w, m, most=5)
    twin = copy.copy(effects)       # the same stamps, nothing prepared
    effects.prepare_tracking()
    assert hasattr(effects, "_ext_u") and not hasattr(twin, "_ext_u")
    d = _density(rng, h * w)
    d2 = d.copy()
    assert effects.track(d) and twin.track(d2)
    for a, b in ((effects._ext_u, twin._ext_u), (effects._ext_v, twin._ext_v)):
        np.testing.assert_array_equal(a, b)
    assert effects._cap == twin._cap == int(effects.totals.max())
    cols = rng.integers(0, m, 20)
    np.testing.assert_array_equal(effects.effects(cols, 1.0, d), twin.effects(cols, 1.0, d2))
    # counts that are not whole are never tracked: nothing to prepare
    plain = _effects(rng, h, w, m, whole=False)
    plain.prepare_tracking()
    assert not hasattr(plain, "_ext_u")


def test_reach_extents_cover_every_window_holding_a_texel(rng):
    h, w = 15, 22
    effects = _effects(rng, h, w, 5, most=5)
    ext_u, ext_v = effects.reach_extents()
    for p in np.flatnonzero(effects.per_count != 0):
        pi, pj = divmod(p, w)
        hv, hu = effects.half_v[p], effects.half_u[p]
        for ti in range(max(pi - hv, 0), min(pi + hv + 1, h)):
            for tj in range(max(pj - hu, 0), min(pj + hu + 1, w)):
                t = ti * w + tj
                assert abs(pi - ti) <= ext_v[t] and abs(pj - tj) <= ext_u[t]


@pytest.mark.parametrize("shape", [(1, 1), (7, 12), (30, 41)])
def test_stamps_touching_a_mask_equal_their_reference(rng, shape):
    h, w = shape
    for _ in range(5):
        m = int(rng.integers(1, 80))
        effects = _effects(rng, h, w, m)
        mask = rng.random(h * w) < rng.random()
        columns = rng.integers(0, m, int(rng.integers(0, 50)))
        got = effects.touching(columns, mask)
        assert got.dtype == bool
        np.testing.assert_array_equal(got, effects.touching_reference(columns, mask))
