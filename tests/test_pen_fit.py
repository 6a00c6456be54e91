"""The pen's stamps fitted to the dose needle by needle (coverage.pen_fit) and its kernels."""
import importlib

import numpy as np
import pytest
from scipy import sparse

from coverage import pen_fit
from coverage.density import IN_BAND_LOW, TexelGrid

density_mod = importlib.import_module("coverage.density")


def _random_windows(rng, h, w, most=4):
    half_u = rng.integers(0, most, (h, w))
    half_v = rng.integers(0, most, (h, w))
    mask = rng.random((h, w)) > 0.25
    return half_u, half_v, mask


# --- kernels against their references -------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (6, 9), (31, 17)])
def test_window_spread_equals_its_reference_and_is_the_adjoint(rng, shape):
    h, w = shape
    for _ in range(5):
        half_u, half_v, mask = _random_windows(rng, h, w)
        values = rng.normal(size=(h, w))
        out = density_mod.window_spread(values, half_u, half_v, mask)
        np.testing.assert_allclose(out, density_mod.window_spread_reference(values, half_u, half_v, mask),
                                   atol=1e-12)
        # <W x, y> = <x, W^T y>: the gradient the fit pulls back is the true one
        x = rng.normal(size=(h, w))
        lhs = (density_mod.window_sums(x, half_u, half_v, mask) * values).sum()
        assert lhs == pytest.approx((x * out).sum(), rel=1e-12, abs=1e-12)


def test_window_spread_by_hand():
    # a 1 x 5 strip, windows of one texel either side; texel 2 spreads over 1..3, texel 4
    # (its window clipped at the edge) over 3..4; texel 0 is masked out
    values = np.array([[5.0, 0.0, 1.0, 0.0, 10.0]])
    half_u = np.ones((1, 5), dtype=np.int64)
    half_v = np.zeros((1, 5), dtype=np.int64)
    mask = np.array([[False, True, True, True, True]])
    np.testing.assert_array_equal(density_mod.window_spread(values, half_u, half_v, mask),
                                  [[0.0, 1.0, 1.0, 11.0, 10.0]])


def _random_effects(rng, h, w, m):
    half_u = rng.integers(0, 4, h * w)
    half_v = rng.integers(0, 4, h * w)
    per_count = np.where(rng.random(h * w) > 0.2, rng.random(h * w), 0.0)
    low = rng.random(h * w) + 0.5
    high = low + rng.random(h * w) * 2
    stamps = sparse.random(h * w, m, density=6.0 / (h * w), random_state=rng, data_rvs=lambda k: rng.integers(1, 3, k))
    return density_mod.StampEffects(stamps, (h, w), per_count, half_u, half_v, low, high, rng.random(h * w))


def test_stamp_effects_and_apply_equal_their_references(rng):
    h, w, m = 19, 27, 60
    for _ in range(10):
        effects = _random_effects(rng, h, w, m)
        d = rng.random(h * w) * 3
        columns = rng.permutation(m)[:25]
        for sign in (1.0, -1.0):
            np.testing.assert_allclose(effects.effects(columns, sign, d), effects.effects_reference(columns, sign, d),
                                       atol=1e-9)
            for c in columns[:5]:
                after = d.copy()
                effects.apply(c, sign, after)
                np.testing.assert_allclose(after, effects.apply_reference(c, sign, d), atol=1e-12)


def _strip_effects(punctures):
    """Stamps on a 1 x 3 strip (``punctures``: texel x stamp), windows of one texel either
    side, 10 per cm^2 per puncture, band [15, 30] everywhere, areas 1, 2, 4."""
    return density_mod.StampEffects(sparse.csc_array(np.array(punctures)), (1, 3), np.full(3, 10.0),
                                    np.ones(3, dtype=np.int64), np.zeros(3, dtype=np.int64), np.full(3, 15.0),
                                    np.full(3, 30.0), np.array([1.0, 2.0, 4.0]))


def test_stamp_effect_by_hand():
    # stamp 0: 2 punctures on texel 0 of a 1 x 3 strip; stamp 1: none. Windows of one texel
    # either side, 10 per cm^2 per puncture; band [15, 30] everywhere, areas 1, 2, 4
    effects = _strip_effects([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    d = np.array([10.0, 25.0, 20.0])
    # it reaches the windows of texels 0 and 1: texel 0 rises 10 -> 30 (into the band: +1),
    # texel 1 25 -> 45 (over: leaves the band, -2, and 2 more over)
    (gained, over, filled), (g2, o2, f2) = effects.effects([0, 1], 1.0, d)
    assert (gained, over) == (1.0 - 2.0, 2.0)
    assert filled == pytest.approx(1.0 * (15.0 - 10.0) / 15.0)
    assert (g2, o2, f2) == (0.0, 0.0, 0.0)
    effects.apply(0, -1.0, d)
    np.testing.assert_allclose(d, [-10.0, 5.0, 20.0])


def test_swap_effects_weigh_a_move_as_removing_then_adding(rng):
    h, w, m = 17, 23, 50
    for _ in range(8):
        effects = _random_effects(rng, h, w, m)
        d = rng.random(h * w) * 3
        gone, come = rng.integers(0, m, 30), rng.integers(0, m, 30)
        got = effects.swap_effects(gone, come, d)
        # the pair as one stamp of signed counts, weighed by the NumPy twin
        csc = sparse.csc_array((effects.counts, effects.texels, effects.indptr), shape=(h * w, m))
        signed = sparse.hstack([csc[:, [c]] - csc[:, [g]] for g, c in zip(gone, come)], format="csc")
        twin = density_mod.StampEffects(signed, (h, w), effects.per_count, effects.half_u, effects.half_v,
                                        effects.low, effects.high, effects.area)
        np.testing.assert_allclose(got, twin.effects_reference(np.arange(len(gone)), 1.0, d), atol=1e-9)
        # and as the removal then the addition, each applied by the reference
        for k in range(5):
            after = effects.apply_reference(come[k], 1.0, effects.apply_reference(gone[k], -1.0, d))
            lo, hi, area = effects.low, effects.high, effects.area
            band = lambda x: ((x >= lo) & (x <= hi)).astype(float)
            assert got[k, 0] == pytest.approx(area @ (band(after) - band(d)), abs=1e-9)
            assert got[k, 1] == pytest.approx(area @ ((after > hi).astype(float) - (d > hi)), abs=1e-9)


def test_swap_effect_by_hand():
    # a 1 x 3 strip, windows of one texel either side, 10 per cm^2 per puncture, band
    # [15, 30], areas 1, 2, 4; stamp 0: 2 punctures on texel 0, stamp 1: 1 on texel 2
    effects = _strip_effects([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    d = np.array([10.0, 35.0, 20.0])
    (g, o, f), (g2, o2, f2) = effects.swap_effects([0, 1], [1, 0], d)
    # 0 -> 1: texel 0 10 -> -10 (under still; its shortfall grows 5 -> 25: -20/15 of area 1),
    # texel 1 35 -> 25 (into the band from over: +2, 2 less over), texel 2 20 -> 30 (in band)
    assert (g, o) == (2.0, -2.0)
    assert f == pytest.approx(-20.0 / 15.0)
    # 1 -> 0: texel 0 10 -> 30 (into the band: +1, shortfall 5 filled: +1/3), texel 1 35 -> 45
    # (over still), texel 2 20 -> 10 (leaves the band: -4, a shortfall of 5 opens: -4/3)
    assert (g2, o2) == (1.0 - 4.0, 0.0)
    assert f2 == pytest.approx(1.0 / 3.0 - 4.0 / 3.0)
    np.testing.assert_array_equal(d, [10.0, 35.0, 20.0])     # weighed, not applied


# --- the pieces of the fit -------------------------------------------------------------------

def test_candidates_every_half_millimetre_along_a_path():
    uv, s = pen_fit.candidate_arcs(np.array([[0.0, 0.0], [10.0, 0.0]]))
    np.testing.assert_allclose(s, 0.25 + 0.5 * np.arange(20))
    np.testing.assert_allclose(uv[:, 0], s)
    np.testing.assert_allclose(uv[:, 1], 0.0)
    uv, s = pen_fit.candidate_arcs(np.array([[1.0, 1.0], [1.0, 1.2]]))     # shorter than a step: its middle
    np.testing.assert_allclose(uv, [[1.0, 1.1]])


def test_rounding_fires_where_the_running_sum_crosses_a_half():
    x = np.array([0.3, 0.3, 0.3, 0.3, 0.6, 0.6, 0.6])
    groups = np.array([0, 0, 0, 0, 1, 1, 1])
    # spread 0, every group from one half: group 0: 0.3 0.6 0.9 1.2 -> one stamp, where 0.6
    # crosses 0.5; group 1 starts afresh: 0.6 1.2 1.8 -> crosses 0.5 and 1.5
    np.testing.assert_array_equal(pen_fit.round_along(x, groups, spread=0.0), [0, 1, 0, 0, 1, 0, 1])
    assert pen_fit.round_along_reference(x, groups, spread=0.0).tolist() == [0, 1, 0, 0, 1, 0, 1]
    # each group fires its sum to within half a stamp
    rng = np.random.default_rng(5)
    w = rng.random(400) * 0.4
    many = np.repeat(np.arange(8), 50)
    fire = pen_fit.round_along(w, many, spread=0.0)
    for g in range(8):
        assert abs(fire[many == g].sum() - w[many == g].sum()) <= 0.5 + 1e-12


def test_rounding_offsets_step_by_the_golden_ratio():
    x = np.array([0.3, 0.3, 0.3, 0.3, 0.6, 0.6, 0.6])
    groups = np.array([0, 0, 0, 0, 1, 1, 1])
    # group 0's offset 0.5: 0.8 1.1 1.4 1.7 -> fires at its second; group 1's offset
    # 0.5 + 0.618... - 1 = 0.118: 0.718 1.318 1.918 -> fires once, at its second
    assert pen_fit.ROUND_SPREAD == pytest.approx((5 ** 0.5 - 1) / 2, abs=1e-15)
    np.testing.assert_array_equal(pen_fit.round_along(x, groups), [0, 1, 0, 0, 0, 1, 0])
    assert pen_fit.round_along_reference(x, groups).tolist() == [0, 1, 0, 0, 0, 1, 0]
    # two paths side by side with the same weights fire at different candidates
    side = np.full(20, 0.25)
    fire = pen_fit.round_along(np.concatenate([side, side]), np.repeat([4, 5], 20))
    assert fire[:20].sum() == fire[20:].sum() == 5
    assert not (fire[:20] & fire[20:]).any()
    # each group fires its sum to within one stamp, and over many groups about their sum
    rng = np.random.default_rng(5)
    w = rng.random(20000) * 0.4
    many = np.repeat(np.arange(400), 50)
    fire = pen_fit.round_along(w, many)
    per_group = np.bincount(many, weights=fire) - np.bincount(many, weights=w)
    assert np.abs(per_group).max() < 1.0
    assert abs(per_group.sum()) < 5.0     # about 20,000 x 0.2 = 4000 stamps in all


@pytest.mark.parametrize("seed", range(5))
def test_round_along_equals_its_twin(seed):
    # groups of every length (one candidate, repeated labels apart), weights in and out of
    # [0, 1], ties at k + 1/2 and NaN
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n = int(rng.integers(0, 300))
        groups = np.cumsum(rng.random(n) < rng.uniform(0.02, 0.6)).astype(np.int64) % 4
        x = rng.choice([rng.random(n), rng.random(n) * 3 - 1, np.round(rng.random(n) * 4) / 4])
        if n and rng.random() < 0.3:
            x[rng.integers(n)] = np.nan
        spread = float(rng.choice([0.0, pen_fit.ROUND_SPREAD, rng.random(), -rng.random() * 3]))
        got = pen_fit.round_along(x, groups, spread)
        assert got.dtype == bool and np.array_equal(got, pen_fit.round_along_reference(x, groups, spread))
    with pytest.raises(ValueError, match="one group per weight"):
        pen_fit.round_along(np.zeros(3), np.zeros(2, dtype=np.int64))


def _strip_grid(n=40, cell=1.0, half=2, zone_of=None):
    """A 1-texel-high strip of ``n`` texels, each 1 mm^2, windows of ``half`` texels either side."""
    label = np.zeros((1, n), dtype=np.int64) if zone_of is None else np.asarray(zone_of)[None]
    half_u = np.full((1, n), half, dtype=np.int64)
    half_v = np.zeros((1, n), dtype=np.int64)
    area = np.ones((1, n))
    window_area = density_mod.window_sums(area, half_u, half_v, label >= 0)
    return TexelGrid(np.zeros(2), cell, np.zeros((1, n), dtype=np.int64), area, label, half_u, half_v, window_area)


class _Zones:
    """The little a zone map must answer for the fit: names and each zone's dose."""

    def __init__(self, doses):
        self.names = list(doses)
        self._doses = doses

    def dose(self, name):
        target, cap = self._doses[name]
        return type("Dose", (), {"target_per_cm2": target, "cap_per_cm2": cap})


def test_fit_brings_a_strip_into_its_band():
    # 40 texels of 1 mm^2, windows of 5 mm^2: one puncture in a window is 20 per cm^2;
    # candidates put 1 puncture on each texel; target 250, cap 312.5: about 2.5 a texel
    grid = _strip_grid()
    zones = _Zones({"strip": (250.0, 312.5)})
    targets = pen_fit.dose_targets(zones, grid)
    n = grid.shape[1]
    spread = sparse.csc_array(sparse.identity(n, format="csc") * 1.0)
    x = pen_fit.fit(grid, targets, np.zeros((1, n)), spread, upper=np.full(n, 100.0), iterations=300)
    d = pen_fit.WindowedDose(grid).density((spread @ x).reshape(1, n))
    assert (d >= 0.99 * targets.low).all() and (d <= targets.high * 1.01).all()
    assert pen_fit.in_band(zones, grid, d) == {"strip": 1.0}


def test_fit_holds_weights_at_their_bound_where_the_band_asks_for_more():
    # the strip of the test above, each candidate capped at 1 puncture where the band
    # asks for ~2.5: every weight ends at its bound (the one minimum of this convex problem)
    grid = _strip_grid()
    zones = _Zones({"strip": (250.0, 312.5)})
    n = grid.shape[1]
    spread = sparse.csc_array(sparse.identity(n, format="csc") * 1.0)
    x = pen_fit.fit(grid, pen_fit.dose_targets(zones, grid), np.zeros((1, n)), spread)
    assert np.array_equal(x, np.ones(n))


@pytest.mark.parametrize("precondition", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_reaches_the_minimum_scipy_finds(seed, precondition):
    # the objective is convex: given steps enough the fit ends at SciPy's L-BFGS-B minimum,
    # and there every weight strictly inside the box has a zero gradient and every weight on
    # a bound a gradient pointing out of the box (the KKT conditions)
    from scipy.optimize import Bounds, minimize

    m = 60
    grid, targets, base, spread = _random_fit_problem(np.random.default_rng(seed), 12, 16, m, "csc")
    upper = np.full(m, 1.5)
    objective = pen_fit.FitObjective(grid, targets, base, spread)
    x = pen_fit.fit(grid, targets, base, spread, upper=upper, iterations=400, precondition=precondition)
    best = minimize(objective, np.zeros(m), jac=True, method="L-BFGS-B", bounds=Bounds(0.0, upper),
                    options=dict(maxiter=5000, ftol=1e-15, gtol=1e-12))
    f, g = objective(x)
    assert f <= best.fun * (1 + 1e-6) + 1e-9
    scale = np.abs(g).max()
    inside = (x > 1e-9) & (x < upper - 1e-9)
    assert inside.any() and (x <= 1e-9).any() and (x >= upper - 1e-9).any()
    assert np.abs(g[inside]).max() <= 1e-5 * scale
    assert (g[x <= 1e-9] >= -1e-5 * scale).all() and (g[x >= upper - 1e-9] <= 1e-5 * scale).all()


def test_fit_direction_is_zero_on_weights_held_at_a_bound():
    # x = [0, 1, 0.5, 0, 1] in [0, 1] with gradient [+, -, +, -, +]: the first two are held
    # (the gradient pushes them out of the box), the other three move against it; with no
    # pair yet the step is -g on the free ones times 1 / max |clip(x - g, 0, 1) - x|
    x = np.array([0.0, 1.0, 0.5, 0.0, 1.0])
    g = np.array([2.0, -3.0, 4.0, -0.25, 1.0])
    d, _ = pen_fit._lbfgs_direction(x, g, np.ones(5), [])
    # clip(x - g, 0, 1) - x = [0, 0, -0.5, 0.25, -1]: its largest move is 1, so d = -g there
    assert np.array_equal(d, np.array([0.0, 0.0, -4.0, 0.25, -1.0]))


def test_pen_share_is_what_the_pen_adds_to_reach_the_middle_of_the_band():
    # three zones on a strip of 1 mm^2 texels, windows of 5: a (texels 0-13, target 100),
    # b (14-26, target 200), c (27-39, target 150); one puncture per texel of a already
    # planned. Windows over a hold 100 per cm^2 (its last two 80 and 60), b's first two
    # 40 and 20, the rest of b and all of c nothing. The middle of each band is 1.075 x target.
    zone_of = [0] * 14 + [1] * 13 + [2] * 13
    grid = _strip_grid(zone_of=zone_of)
    zones = _Zones({"a": (100.0, 125.0), "b": (200.0, 250.0), "c": (150.0, 187.5)})
    fixed = np.zeros((1, 40))
    fixed[0, :14] = 1.0
    share = pen_fit.pen_share(zones, grid, pen_fit.WindowedDose(grid).density(fixed), ["a", "b", "c"])
    assert share["a"] == pytest.approx((12 * 7.5 + 27.5 + 47.5) / 14)
    assert share["b"] == pytest.approx((175.0 + 195.0 + 11 * 215.0) / 13)
    assert share["c"] is None            # nothing there yet: the pen's own full dose
    # a zone the fixed punctures already fill to the middle of its band or beyond: nothing
    fixed[0, :14] = 2.0
    assert pen_fit.pen_share(zones, grid, pen_fit.WindowedDose(grid).density(fixed), ["a"])["a"] == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(4))
def test_pen_share_read_in_zone_boxes_equals_the_whole_grid_reading(default_zones, seed):
    """pen_share reads each zone's texels in its box: bit for bit what the mask over the
    whole grid gives (the same values in the same order), on the bundled face's grid with
    random deliveries (some zones given nothing)."""
    from coverage.density import texel_grid
    from coverage.pen import AIM_RATIO

    grid = texel_grid(default_zones)
    rng = np.random.default_rng(seed)
    names = list(default_zones.names)
    delivered = rng.uniform(0.0, 400.0, grid.shape) * (rng.random(grid.shape) < 0.7)
    for k in rng.choice(len(names), 3, replace=False):
        delivered[grid.label == k] = 0.0
    got = pen_fit.pen_share(default_zones, grid, delivered, names)
    for name in names:
        sel = (grid.label == names.index(name)) & (grid.area_mm2 > 0)
        aim = default_zones.dose(name).target_per_cm2 * AIM_RATIO
        if not sel.any() or not (delivered[sel] > 0).any():
            assert got[name] is None
            continue
        area = grid.area_mm2[sel]
        assert got[name] == float(np.sum(np.maximum(aim - delivered[sel], 0.0) * area) / area.sum())
    assert sum(v is None for v in got.values()) >= 3


def test_fit_and_repair_with_no_candidates():
    grid = _strip_grid(n=10)
    zones = _Zones({"strip": (100.0, 125.0)})
    empty = sparse.csc_array((10, 0))
    assert pen_fit.fit(grid, pen_fit.dose_targets(zones, grid), np.zeros((1, 10)), empty).shape == (0,)
    assert pen_fit.repair(grid, zones, np.zeros((1, 10)), empty, np.zeros(0, dtype=bool)).shape == (0,)
    assert not pen_fit.round_along(np.zeros(0), np.zeros(0, dtype=np.int64)).any()


def test_fit_stays_off_what_the_base_already_gives():
    # the left half already holds 300 per cm^2 (in band): the fit adds nothing there
    grid = _strip_grid()
    zones = _Zones({"strip": (250.0, 312.5)})
    n = grid.shape[1]
    base = np.zeros((1, n))
    base[0, :20] = 3.0
    spread = sparse.csc_array(sparse.identity(n, format="csc") * 1.0)
    x = pen_fit.fit(grid, pen_fit.dose_targets(zones, grid), base, spread, upper=np.full(n, 100.0), iterations=300)
    assert x[:15].max() < 1e-6
    d = pen_fit.WindowedDose(grid).density(base + (spread @ x).reshape(1, n))
    assert pen_fit.in_band(zones, grid, d) == {"strip": 1.0}


def test_repair_reads_parts_made_beforehand_as_its_own():
    # a plan makes the repair's RepairParts beside the fit: the repair given them mends as
    # the repair that makes its own, and a second repair may not read parts already read
    grid = _strip_grid(n=30)
    zones = _Zones({"strip": (100.0, 125.0)})
    n = 30
    spread = sparse.hstack([sparse.identity(n, format="csc") * 1.0] * 2, format="csc")
    fire = np.zeros(2 * n, dtype=bool)
    fire[:n] = True
    fire[n + 10:n + 14] = True
    fire[[3, 20, 21]] = False
    fixed = np.zeros((1, n))
    cap = np.full((1, n), 125.0)
    own = pen_fit.repair(grid, zones, fixed, spread, fire, cap=cap)
    assert own.tolist() != fire.tolist()         # there is something to mend
    parts = pen_fit.RepairParts(grid, zones, fixed, spread, cap)
    assert pen_fit.repair(grid, zones, fixed, spread, fire, cap=cap, parts=parts).tolist() == own.tolist()
    with pytest.raises(ValueError, match="RepairParts"):
        pen_fit.repair(grid, zones, fixed, spread, fire, cap=cap, parts=parts)


def test_repair_mends_an_over_and_an_under_window_by_single_stamps():
    # 1 puncture per candidate, windows of 5 texels; target 100, cap 125 (1 puncture = 20
    # per cm^2): 5 fired candidates in a window give exactly 100
    grid = _strip_grid(n=30)
    zones = _Zones({"strip": (100.0, 125.0)})
    n = 30
    spread = sparse.csc_array(sparse.identity(n, format="csc") * 1.0)
    # two stamps per texel would be 200: candidate k and k + 30 both sit on texel k
    spread = sparse.hstack([spread, spread], format="csc")
    fire = np.zeros(2 * n, dtype=bool)
    fire[:n] = True             # 100 everywhere but at the strip's clipped ends (windows count treatable area)
    fire[n + 10:n + 14] = True  # around texel 12: 4 more -> up to 180, over the cap
    fire[3] = False
    fire[20] = fire[21] = False  # around texel 20: 60 to 80, under 0.9 x target
    op = pen_fit.WindowedDose(grid)
    before = op.density((spread @ fire.astype(float)).reshape(1, n))
    assert (before > 125).any() and (before < 90).any()
    mended = pen_fit.repair(grid, zones, np.zeros((1, n)), spread, fire)
    after = op.density((spread @ mended.astype(float)).reshape(1, n))
    assert (after <= 125.0).all()
    assert (after >= IN_BAND_LOW * 100.0).all()


def test_repair_moves_stamps_along_their_paths_without_costing_band_or_cap():
    # the shift step alone (no add/drop rounds) on random two-zone strips: stamps of 1 to 3
    # punctures a texel or two wide, four paths of candidates in travel order. Each move
    # keeps a path's number of fired stamps, goes at most SHIFT_STEPS candidates along it,
    # never adds skin over the repair's mark and never takes skin out of band overall
    n, per_path = 60, 40
    zone_of = np.where(np.arange(n) < 27, 0, 1)
    grid = _strip_grid(n=n, half=3, zone_of=zone_of)
    zones = _Zones({"low": (100.0, 125.0), "high": (180.0, 225.0)})
    target, cap = np.where(zone_of == 0, 100.0, 180.0), np.where(zone_of == 0, 125.0, 225.0)
    op = pen_fit.WindowedDose(grid)
    rng = np.random.default_rng(11)
    gained = 0.0
    for _ in range(12):
        m = 4 * per_path
        groups = np.repeat(np.arange(4), per_path)
        start = np.sort(rng.uniform(0, n - 2, (4, per_path)), axis=1).ravel().astype(int)
        rows = np.concatenate([start, start + 1])
        cols = np.concatenate([np.arange(m), np.arange(m)])
        vals = np.concatenate([rng.integers(1, 3, m), rng.integers(0, 2, m)]).astype(float)
        spread = sparse.csc_array((vals, (rows, cols)), shape=(n, m))
        fire = rng.random(m) < 0.3

        def state(f):
            d = op.density((spread @ f.astype(float)).reshape(1, n))[0]
            band = (d >= IN_BAND_LOW * target) & (d <= pen_fit.REPAIR_CAP_RATIO * cap)
            return band.sum(), (d > pen_fit.REPAIR_CAP_RATIO * cap).sum()

        moved = pen_fit.repair(grid, zones, np.zeros((1, n)), spread, fire, rounds=0, groups=groups)
        np.testing.assert_array_equal(np.bincount(groups[moved], minlength=4), np.bincount(groups[fire], minlength=4))
        for g in range(4):
            was, now = np.nonzero(fire & (groups == g))[0], np.nonzero(moved & (groups == g))[0]
            assert np.abs(np.sort(now) - np.sort(was)).max(initial=0) <= pen_fit.SHIFT_STEPS * len(was)
        (band0, over0), (band1, over1) = state(fire), state(moved)
        assert band1 >= band0 and over1 <= over0
        gained += band1 - band0
        assert pen_fit.repair(grid, zones, np.zeros((1, n)), spread, fire, rounds=0).tolist() == fire.tolist()
    assert gained > 0          # the step does move stamps


def test_repair_takes_down_a_window_over_by_several_stamps_and_adds_none_to_it():
    # 1 puncture per candidate, windows of 5 texels (1 puncture = 20 per cm^2), target 100,
    # cap 125 (the repair's mark 0.98 x 125 = 122.5). One candidate on every texel, all
    # fired: 100 everywhere. Three more fired on texel 15 lift the windows of texels 13..17
    # to 160: dropping any one stamp leaves each of them over (140), so no single drop takes
    # skin off the mark; the repair must still drop down to it (two drops: 120). Texels 3 and 4 lose their
    # stamps: windows 1..6 fall to 60-80, and the stamps that could fill them (on texels
    # 3, 4) sit in no window that is over
    n = 30
    grid = _strip_grid(n=n)
    zones = _Zones({"strip": (100.0, 125.0)})
    spread = sparse.hstack([sparse.identity(n, format="csc") * 1.0,
                            sparse.csc_array((np.ones(3), ([15, 15, 15], [0, 1, 2])), shape=(n, 3))], format="csc")
    fire = np.ones(n + 3, dtype=bool)
    fire[[3, 4]] = False
    op = pen_fit.WindowedDose(grid)
    before = op.density((spread @ fire.astype(float)).reshape(1, n))[0]
    np.testing.assert_allclose(before[13:18], 160.0)
    mended = pen_fit.repair(grid, zones, np.zeros((1, n)), spread, fire)
    after = op.density((spread @ mended.astype(float)).reshape(1, n))[0]
    assert after.max() <= pen_fit.REPAIR_CAP_RATIO * 125.0
    assert after.min() >= IN_BAND_LOW * 100.0
    # two of the three dropped (6 punctures a window: 120), the two gaps filled
    assert mended.sum() == n + 3 - 2 and mended[3] and mended[4]


def test_repair_adds_no_stamp_to_a_window_over_its_mark():
    # as above with six stamps stacked on texel 15 (windows 13..17 at 100 + 6 x 20 = 220)
    # and the gap at texel 12 (windows 10..12 hold 4: 80, under; 13 and 14 hold 4 + 6: 200).
    # Texel 12's stamp would fill the gap and lift 13 and 14 from 200 to 220: no more skin
    # over the mark (it is over already), only deeper over it. One round drops one stamp
    # and must not add it; the full repair ends with every window in band
    n = 30
    grid = _strip_grid(n=n)
    zones = _Zones({"strip": (100.0, 125.0)})
    spread = sparse.hstack([sparse.identity(n, format="csc") * 1.0,
                            sparse.csc_array((np.ones(6), ([15] * 6, range(6))), shape=(n, 6))], format="csc")
    fire = np.ones(n + 6, dtype=bool)
    fire[12] = False
    op = pen_fit.WindowedDose(grid)
    before = op.density((spread @ fire.astype(float)).reshape(1, n))[0]
    np.testing.assert_allclose(before[10:18], [80, 80, 80, 200, 200, 220, 220, 220])
    first = pen_fit.repair(grid, zones, np.zeros((1, n)), spread, fire, rounds=1)
    assert not first[12] and first.sum() == fire.sum() - 1
    mended = pen_fit.repair(grid, zones, np.zeros((1, n)), spread, fire)
    after = op.density((spread @ mended.astype(float)).reshape(1, n))[0]
    assert after.max() <= pen_fit.REPAIR_CAP_RATIO * 125.0 and after.min() >= IN_BAND_LOW * 100.0


# --- the fit's compiled objective against its reference ----------------------------------

def _random_fit_problem(rng, h, w, m, fmt, counts=True):
    half_u, half_v, mask = _random_windows(rng, h, w)
    label = np.where(mask, rng.integers(0, 2, (h, w)), -1)
    area = rng.uniform(0.2, 0.3, (h, w))
    window_area = np.where(rng.random((h, w)) > 0.1, rng.uniform(20, 100, (h, w)), 0.0)
    grid = TexelGrid(np.zeros(2), 0.5, np.zeros((h, w), dtype=np.int64), area, label, half_u, half_v, window_area)
    zones = _Zones({"a": (150.0, 200.0), "b": (300.0, 380.0)})
    targets = pen_fit.dose_targets(zones, grid)
    spread = sparse.random(h * w, m, density=min(1.0, 8.0 / (h * w)), random_state=rng, format=fmt,
                           data_rvs=(lambda k: rng.integers(1, 4, k).astype(float)) if counts
                           else (lambda k: rng.uniform(0.5, 3.0, k)))
    if fmt == "csc":
        # duplicates and unsorted rows, as a stacked matrix may hold them
        spread = sparse.hstack([spread[:, : m // 2], spread[:, m // 2:]], format="csc")
    base = np.where(rng.random((h, w)) > 0.5, rng.integers(0, 5, (h, w)), 0).astype(float)
    return grid, targets, base, spread


@pytest.mark.parametrize("counts", [True, False])
@pytest.mark.parametrize("fmt", ["csc", "csr"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (23, 31), (97, 130)])
def test_fit_objective_equals_its_reference_exactly(rng, fmt, shape, counts):
    # (97, 130): more texels than one run of numpy.einsum's buffer
    h, w = shape
    for _ in range(4):
        m = int(rng.integers(1, 80))
        grid, targets, base, spread = _random_fit_problem(rng, h, w, m, fmt, counts)
        objective = pen_fit.FitObjective(grid, targets, base, spread)
        assert objective.compiled
        for x in (np.zeros(m), rng.random(m), rng.random(m) * 30, np.where(rng.random(m) > 0.5, 1.0, 0.0)):
            value, grad = objective(x)
            ref_value, ref_grad = pen_fit.objective_reference(x, grid, targets, base, spread)
            # the gradient is scipy's products exactly; the value is numpy.einsum's sums,
            # whose order is numpy's own (runs of its buffer): equal to a few ulps, and
            # exactly the sums in the order the kernel documents
            np.testing.assert_array_equal(grad, ref_grad)
            assert value == pytest.approx(ref_value, rel=1e-12, abs=1e-300)
            assert value == _sums_in_runs(x, grid, targets, base, spread)


@pytest.mark.parametrize("shape", [(5, 7), (97, 130), (61, 301)])
def test_fit_objective_equals_its_reference_off_the_mask_and_across_einsum_runs(rng, shape):
    # targets that leave some texels off the mask with terms other than 0 (low over 0, or
    # high under 0, with a scale), a sparse mask (the texels passed over span einsum runs
    # and runs of them end on a run's boundary), and NaN, inf and -0 among the targets
    h, w = shape
    for trial in range(3):
        m = int(rng.integers(1, 80))
        grid, targets, base, spread = _random_fit_problem(rng, h, w, m, "csc")
        keep = rng.random((h, w)) < (0.05 if trial else 0.5)
        label = np.where(keep, grid.label, -1)
        if trial == 2:
            label[:, : w // 2] = -1     # long stretches passed over
        grid = TexelGrid(grid.origin, grid.cell_mm, grid.tri, grid.area_mm2, label, grid.half_u, grid.half_v,
                         grid.window_area_mm2)
        off = label < 0
        low, high, scale = targets.low.copy(), targets.high.copy(), targets.scale.copy()
        pick = off & (rng.random((h, w)) < 0.1)
        low[pick] = rng.uniform(1.0, 5.0, pick.sum())
        scale[pick] = rng.uniform(-1.0, 1.0, pick.sum())
        pick = off & (rng.random((h, w)) < 0.05)
        high[pick] = -rng.uniform(1.0, 5.0, pick.sum())
        scale[pick] = rng.uniform(0.5, 1.0, pick.sum())
        pick = off & (rng.random((h, w)) < 0.02)
        scale[pick] = -0.0
        pick = off & (rng.random((h, w)) < 0.01)
        low[pick] = np.nan
        pick = ~off & (rng.random((h, w)) < 0.01)
        high[pick] = np.inf
        targets = pen_fit.DoseTargets(low, high, scale, ~off)
        objective = pen_fit.FitObjective(grid, targets, base, spread)
        assert objective.compiled
        for x in (np.zeros(m), rng.random(m) * 30):
            value, grad = objective(x)
            _, ref_grad = pen_fit.objective_reference(x, grid, targets, base, spread)
            np.testing.assert_array_equal(grad, ref_grad)
            assert value == _sums_in_runs(x, grid, targets, base, spread) or (np.isnan(value) and np.isnan(
                _sums_in_runs(x, grid, targets, base, spread)))


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (6, 9), (40, 53)])
def test_fit_texels_equal_their_reference(rng, shape):
    from coverage.density import fit_texels, fit_texels_reference

    h, w = shape
    for _ in range(6):
        half_u, half_v, mask = _random_windows(rng, h, w, most=int(rng.integers(1, 2 * max(h, w) + 2)))
        mask &= rng.random((h, w)) < rng.random()
        per_count = np.where(mask, rng.uniform(0.5, 2.0, (h, w)), 0.0)
        low = np.where(rng.random((h, w)) < 0.2, rng.uniform(-1.0, 3.0, (h, w)), 0.0)
        high = np.where(rng.random((h, w)) < 0.2, rng.uniform(-1.0, 3.0, (h, w)), np.inf)
        scale = np.where(rng.random((h, w)) < 0.5, rng.uniform(-1.0, 1.0, (h, w)), 0.0)
        for a, special in ((per_count, [np.nan, np.inf, -np.inf, -0.0]), (low, [np.nan, -0.0, np.inf]),
                           (high, [np.nan, -np.inf, -0.0]), (scale, [np.nan, np.inf, -0.0, 1e-300])):
            pick = rng.random((h, w)) < 0.05
            a[pick] = rng.choice(special, pick.sum())
        got = fit_texels(half_u, half_v, mask, per_count, low, high, scale)
        want = fit_texels_reference(half_u, half_v, mask, per_count, low, high, scale)
        for g, r in zip(got, want):
            assert g.dtype == r.dtype and g.shape == r.shape
            np.testing.assert_array_equal(g.view(np.uint8), r.view(np.uint8))


def test_fit_texels_by_hand():
    # 2 x 3 texels, windows 1 across and 3 along each row (clipped at the grid's edges);
    # texels (0, 0) and (1, 2) on the mask; (0, 2) off it with low 5 and scale 1 (its
    # under term is 25 whatever the weights), the others off it adding 0
    from coverage.density import fit_texels, fit_texels_reference

    half_u, half_v = np.ones((2, 3), dtype=np.int64), np.zeros((2, 3), dtype=np.int64)
    mask = np.array([[1, 0, 0], [0, 0, 1]], dtype=bool)
    per_count = np.where(mask, 0.5, 0.0)
    low = np.array([[10.0, 0.0, 5.0], [0.0, 0.0, 20.0]])
    high = np.where(mask, 30.0, np.inf)
    scale = np.array([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    for layout in (fit_texels, fit_texels_reference):
        runs, windows, consts = layout(half_u, half_v, mask, per_count, low, high, scale)
        assert runs.tolist() == [0, 1, 2, 3, 5, 6]
        # (0, 0): rows [0, 1), columns [0, 2): corner 0, 2 across, 1 row of the 4-wide tables;
        # (1, 2): rows [1, 2), columns [1, 3): corner 1 x 4 + 1
        assert windows.tolist() == [[0, 2, 4], [3, 0, 0], [5, 2, 4]]     # (0, 2) off the mask: 3 = w
        assert consts.tolist() == [[0.5, 10.0, 30.0, 2.0], [0.0, 5.0, np.inf, 1.0], [0.5, 20.0, 30.0, 3.0]]
    # the objective on these texels: counts 4 on (0, 0), 8 on (1, 1): windows of (0, 0) and
    # (1, 2) hold 4 and 8, densities 2 and 4, under 8 and 16: 2 x 64 + 25 + 3 x 256
    grid = TexelGrid(np.zeros(2), 0.5, np.zeros((2, 3), dtype=np.int64), np.ones((2, 3)), np.where(mask, 0, -1),
                     half_u, half_v, np.where(mask, 200.0, 0.0))
    targets = pen_fit.DoseTargets(low, high, scale, mask)
    spread = sparse.csc_array(np.array([[4.0], [0], [0], [0], [8.0], [0]]))
    objective = pen_fit.FitObjective(grid, targets, np.zeros((2, 3)), spread)
    value, grad = objective(np.ones(1))
    assert value == 2 * 64 + 25 + 3 * 256
    # the gradient: (2 scale (-under)) per_count = -16 and -48 over the windows of (0, 0)
    # and (1, 2); stamp 0's texels (0, 0) in the first, (1, 1) in the second
    assert grad.tolist() == [4 * -16.0 + 8 * -48.0]


def test_fit_objective_refuses_a_layout_that_does_not_hold_its_runs():
    from coverage.density import fit_objective, fit_texels

    rng = np.random.default_rng(3)
    grid, targets, base, spread = _random_fit_problem(rng, 6, 9, 5, "csc")
    objective = pen_fit.FitObjective(grid, targets, base, spread)
    runs, windows, consts = objective.texels
    assert len(runs) >= 2
    for bad in ((runs, windows[:-1], consts[:-1]), (runs[::-1].copy(), windows, consts),
                (np.append(runs[:-1], 55).astype(np.int32), windows, consts)):
        with pytest.raises(ValueError):
            fit_objective(*objective.cols, np.zeros(5), objective.base, *bad, 2.0, objective.sat, objective.corners,
                          objective.spread_out, np.empty(5))


def test_select_reads_arc_lengths_made_beforehand_as_its_own(monkeypatch, default_face):
    # a plan makes every candidate path's chart arc lengths beside the repair: the chosen
    # stamps' paths, trimmed with them, are the ones select trims with its own
    plan_mod = importlib.import_module("coverage.plan")
    seen = []
    real = pen_fit.select

    def spy(stamps, chosen, problem=None, zones=None, arcs=None):
        seen.append((stamps, chosen, problem, zones, arcs))
        return real(stamps, chosen, problem, zones, arcs)

    monkeypatch.setattr(pen_fit, "select", spy)
    plan_mod.plan(default_face, threads=2)
    assert len(seen) == 2 and all(arcs is not None for *_, arcs in seen)
    for stamps, chosen, problem, zones, arcs in seen:
        assert len(arcs) == len(stamps.paths)
        for p, s in zip(stamps.paths, arcs):
            np.testing.assert_array_equal(s, pen_fit.chart_arcs(p.uv))
        given, own = real(stamps, chosen, problem, zones, arcs), real(stamps, chosen, problem, zones)
        assert len(given.paths) == len(own.paths) > 0
        for a, b in zip(given.paths, own.paths):
            for field in ("uv", "stamp_uv", "stamp_s"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_fit_reads_a_layout_made_beforehand_as_its_own():
    # a plan makes the fit's texel layout on its other thread while the stamps are found:
    # the objective and the fit given it are the ones that make their own, bit for bit
    rng = np.random.default_rng(4)
    for shape, m in (((6, 9), 5), ((23, 31), 60), ((97, 130), 400)):
        grid, targets, base, spread = _random_fit_problem(rng, *shape, m, "csc")
        layout = pen_fit.fit_layout(grid, targets)
        own = pen_fit.FitObjective(grid, targets, base, spread)
        given = pen_fit.FitObjective(grid, targets, base, spread, layout)
        for a, b in zip(own.texels, layout):
            np.testing.assert_array_equal(a, b)
        x = rng.random(m)
        (v1, g1), (v2, g2) = own(x), given(x)
        assert v1 == v2 and v1 > 0
        np.testing.assert_array_equal(g1, g2)
        np.testing.assert_array_equal(pen_fit.fit(grid, targets, base, spread, iterations=12),
                                      pen_fit.fit(grid, targets, base, spread, iterations=12, layout=layout))


def _sums_in_runs(x, grid, targets, base, spread, run=8192):
    """The objective's value summed as the kernel documents it (numpy.einsum's order on
    NumPy 1.x and 2.x): ``(scale * v) * v`` added in texel order within runs of ``run``
    texels, the runs' sums added in order; in plain Python floats."""
    op = pen_fit.WindowedDose(grid)
    counts = (np.asarray(base, dtype=np.float64).ravel() + spread @ x).reshape(grid.shape)
    d = op.density(counts).ravel()
    under = np.maximum(targets.low.ravel() - d, 0.0).tolist()
    over = np.maximum(d - targets.high.ravel(), 0.0).tolist()
    scale = targets.scale.ravel().tolist()
    total_u = total_o = 0.0
    for a in range(0, len(scale), run):
        acc_u = acc_o = 0.0
        for k in range(a, min(a + run, len(scale))):
            acc_u += (scale[k] * under[k]) * under[k]
            acc_o += (scale[k] * over[k]) * over[k]
        total_u += acc_u
        total_o += acc_o
    return total_u + pen_fit.OVER_WEIGHT * total_o


@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (17, 23)])
def test_window_stamps_equal_their_reference(rng, shape):
    h, w = shape
    for _ in range(5):
        m = int(rng.integers(1, 60))
        by_texel = sparse.random(h * w, m, density=min(1.0, 5.0 / (h * w)), random_state=rng, format="csr")
        stamps = density_mod.WindowStamps(by_texel, shape)
        for _ in range(30):
            i, j = int(rng.integers(0, h)), int(rng.integers(0, w))
            hu, hv = int(rng.integers(0, 5)), int(rng.integers(0, 5))
            got = stamps(i, j, hu, hv)
            np.testing.assert_array_equal(got, stamps.reference(i, j, hu, hv))
        assert not stamps.seen.any()


@pytest.mark.parametrize("fmt", ["csc", "csr"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (23, 31), (97, 130)])
def test_band_gradient_equals_its_reference_exactly(rng, fmt, shape):
    h, w = shape
    for counts in (True, False):
        m = int(rng.integers(1, 80))
        grid, targets, base, spread = _random_fit_problem(rng, h, w, m, fmt, counts)
        gradient = pen_fit.BandGradient(grid, targets, spread)
        assert gradient.compiled
        for d in (np.zeros(h * w), rng.uniform(0, 400, h * w), rng.uniform(100, 300, h * w)):
            np.testing.assert_array_equal(gradient(d), gradient.reference(d))


@pytest.mark.parametrize("seed", range(6))
def test_dilated_square_equals_the_binary_dilation(seed):
    # the fine cartridge's "where the main footprint's needles can land": a square dilation
    # as a maximum filter, against SciPy's binary dilation by the square structure
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = (int(x) for x in rng.integers(1, 80, 2))
    mask = rng.random((h, w)) > rng.uniform(0.6, 0.999)
    if seed == 0:
        mask[:] = False
    for r in (0, 1, 3, 14, 40):
        want = ndimage.binary_dilation(mask, structure=np.ones((2 * r + 1, 2 * r + 1), bool))
        got = pen_fit.dilated_square(mask, r)
        assert got.dtype == bool and got.shape == mask.shape and np.array_equal(got, want), r
    # a transposed (strided) view reads as itself
    assert np.array_equal(pen_fit.dilated_square(mask.T, 2),
                          ndimage.binary_dilation(mask.T, structure=np.ones((5, 5), bool)))


def test_dilated_square_by_hand():
    mask = np.zeros((5, 7), dtype=bool)
    mask[0, 3] = True
    got = pen_fit.dilated_square(mask, 1)
    # the texel's 3 x 3 square, cut at the grid's top edge
    assert np.argwhere(got).tolist() == [[0, 2], [0, 3], [0, 4], [1, 2], [1, 3], [1, 4]]
    assert not pen_fit.dilated_square(np.zeros((3, 3), bool), 5).any()


@pytest.mark.parametrize("seed", range(4))
def test_candidate_arcs_many_equal_their_twin(seed):
    # seeded random walks of every length (none, one point, zero steps, no length at all),
    # at several steps: every path's centres and arc lengths equal candidate_arcs' bit for bit
    rng = np.random.default_rng(seed)
    for _ in range(80):
        paths = []
        for _ in range(int(rng.integers(0, 8))):
            n = int(rng.integers(0, 40))
            uv = np.cumsum(rng.normal(0, rng.choice([0.01, 0.3, 2.0]), size=(n, 2)), axis=0) + rng.uniform(-50, 50, 2)
            if n > 2 and rng.random() < 0.3:
                uv[1] = uv[0]
            if n > 3 and rng.random() < 0.2:
                uv[:] = uv[0]
            paths.append(uv)
        step = float(rng.choice([0.5, 0.3, 0.7, 1.0]))
        got = pen_fit.candidate_arcs_many(paths, step)
        want = pen_fit.candidate_arcs_many_reference(paths, step)
        assert len(got) == len(want) == len(paths)
        for (c1, a1), (c2, a2) in zip(got, want):
            assert c1.shape == c2.shape and np.array_equal(c1, c2) and np.array_equal(a1, a2)


def test_candidate_arcs_many_by_hand():
    straight = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])      # 2 mm along u
    short = np.array([[0.0, 0.0], [0.0, 0.2]])                     # 0.2 mm: one centre, midway
    got = pen_fit.candidate_arcs_many([straight, short, straight[:1], np.empty((0, 2))], 0.5)
    assert got[0][1].tolist() == [0.25, 0.75, 1.25, 1.75]
    assert got[0][0].tolist() == [[0.25, 1.0], [0.75, 1.0], [1.25, 1.0], [1.75, 1.0]]
    assert got[1][1].tolist() == [0.1] and np.allclose(got[1][0], [[0.0, 0.1]], atol=1e-15)
    assert [len(c) for c, _ in got[2:]] == [0, 0]
    # a point that is not finite: the twin decides (candidate_arcs itself cannot place stamps
    # along a path of NaN length, and says so)
    bad = np.array([[0.0, 0.0], [np.nan, 1.0], [2.0, 0.0]])
    for many in (pen_fit.candidate_arcs_many, pen_fit.candidate_arcs_many_reference):
        with pytest.raises(ValueError, match="arange"):
            many([straight, bad])


@pytest.mark.parametrize("seed", range(3))
def test_chart_arcs_many_equal_their_twin(seed):
    rng = np.random.default_rng(seed)
    for _ in range(80):
        paths = [np.cumsum(rng.normal(0, rng.choice([0.01, 0.5, 3.0]), size=(int(rng.integers(1, 50)), 2)), axis=0)
                 for _ in range(int(rng.integers(1, 8)))]
        got, want = pen_fit.chart_arcs_many(paths), pen_fit.chart_arcs_many_reference(paths)
        assert len(got) == len(want) == len(paths)
        for a, b in zip(got, want):
            assert a.shape == b.shape and np.array_equal(a, b)
    square = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0], [3.0, 4.0]])
    got = pen_fit.chart_arcs_many([square, square[:1], np.empty((0, 2)), np.array([[0.0, 0.0], [np.nan, 1.0]])])
    assert got[0].tolist() == [0.0, 3.0, 7.0, 7.0] and got[1].tolist() == [0.0] and got[2].tolist() == [0.0]
    assert got[3][0] == 0.0 and np.isnan(got[3][1])
