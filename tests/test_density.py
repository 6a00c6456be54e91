"""Density kernels vs references, hand cases, and the windowed density on the face."""
import numpy as np
import pytest

import importlib

# coverage.density is the public function; the module is reached through importlib
dens = importlib.import_module("coverage.density")


def test_splat_by_hand():
    uv = np.array([[0.1, 0.1], [0.9, 0.2], [1.5, 0.5], [-0.1, 0.0], [1.0, 2.5]])
    grid, dropped = dens.splat(uv, origin=np.array([0.0, 0.0]), cell=1.0, shape=(2, 2))
    # texel (row 0, col 0) gets the first two; (0, 1) the third; the last two fall outside
    assert grid.tolist() == [[2.0, 1.0], [0.0, 0.0]]
    assert dropped == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_splat_matches_reference(seed):
    rng = np.random.default_rng(seed)
    uv = rng.uniform(-5, 55, (20000, 2))
    uv[:10] = np.nan
    weight = rng.uniform(0, 2, len(uv))
    args = (np.array([0.0, 0.0]), 0.5, (90, 110))
    got, dropped = dens.splat(uv, *args, weight=weight)
    ref, dropped_ref = dens.splat_reference(uv, *args, weight=weight)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert dropped == dropped_ref > 10


@pytest.mark.parametrize("cell", [0.5, 0.25, 2.0, 0.3, 0.7])
def test_splat_on_texel_lines_matches_reference_exactly(cell):
    """Power-of-two cells multiply by 1 / cell (the same number as dividing), others divide:
    points on texel lines land where the reference puts them, over several blocks of points."""
    rng = np.random.default_rng(int(cell * 10))
    origin = np.array([-3.7, 12.1])
    shape = (23, 31)
    lines = origin + cell * rng.integers(-1, 33, (700, 2)).astype(float)
    inside = origin + rng.uniform(-1, 33, (300, 2)) * cell
    uv = np.concatenate([lines, inside, [[np.nan, 0.0], [np.inf, 1.0]]])
    for weight in (None, rng.uniform(0, 2, len(uv))):
        got, dropped = dens.splat(uv, origin, cell, shape, weight=weight)
        ref, dropped_ref = dens.splat_reference(uv, origin, cell, shape, weight=weight)
        np.testing.assert_array_equal(got, ref)
        assert dropped == dropped_ref > 2


def test_splat_default_weight_is_one_per_point():
    uv = np.random.default_rng(3).uniform(0, 10, (1000, 2))
    ones, dropped = dens.splat(uv, np.zeros(2), 0.5, (20, 20), weight=np.ones(len(uv)))
    np.testing.assert_array_equal(dens.splat(uv, np.zeros(2), 0.5, (20, 20))[0], ones)
    with pytest.raises(ValueError, match="weight has 3 values for 1000 points"):
        dens.splat(uv, np.zeros(2), 0.5, (20, 20), weight=np.ones(3))


def test_window_sums_by_hand():
    values = np.ones((4, 5))
    half = np.ones((4, 5), dtype=np.int64)
    mask = np.ones((4, 5), dtype=bool)
    out = dens.window_sums(values, half, half, mask)
    # a 3 x 3 window clipped by the border: 4 at the corners, 6 on edges, 9 inside
    assert out[0, 0] == 4 and out[0, 2] == 6 and out[1, 1] == 9 and out[3, 4] == 4
    half[1, 1] = 0
    mask[2, 2] = False
    out = dens.window_sums(values, half, half, mask)
    assert out[1, 1] == 1 and out[2, 2] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_window_sums_match_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = 40, 55
    values = rng.poisson(2.0, (h, w)).astype(float)
    half_u = rng.integers(0, 7, (h, w))
    half_v = rng.integers(0, 7, (h, w))
    mask = rng.random((h, w)) < 0.8
    got = dens.window_sums(values, half_u, half_v, mask)
    ref = dens.window_sums_reference(values, half_u, half_v, mask)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)


def test_merge_channels_by_hand():
    # along x: 0 and 0.2 merge (0.2 <= 0.25); 0.4 is 0.4 from the channel at 0: a new one
    points = np.array([[0.0, 0, 0], [0.2, 0, 0], [0.4, 0, 0], [0.55, 0, 0], [5.0, 0, 0]])
    assert dens.merge_channels(points, 0.25).tolist() == [0, 0, 2, 2, 4]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_channels_match_reference(seed):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 20, (300, 3))
    points = centres[rng.integers(0, 300, 4000)] + rng.normal(scale=0.2, size=(4000, 3))
    got = dens.merge_channels(points, 0.25)
    ref = dens.merge_channels_reference(points, 0.25)
    np.testing.assert_array_equal(got, ref)
    n_channels = int((got == np.arange(len(got))).sum())
    assert 300 < n_channels < 3000  # merging really happened, and not everything merged
    # every puncture sits within the radius of its channel's first puncture
    assert (np.linalg.norm(points - points[got], axis=1) <= 0.25 + 1e-12).all()


def _uniform_punctures(face, zones, per_cm2, rng):
    """Punctures scattered uniformly over the treatable skin, as a plan would.

    Stratified: each triangle gets its expected count's whole part plus one more with the
    fractional part's probability, so a zone's count is nearly exact (Poisson counts
    would put the chin, 14 cm^2, at 200 +- 3.7 /cm^2).
    """
    area = face.triangle_area_mm2
    expected = area * per_cm2 / 100.0
    counts = np.floor(expected).astype(np.int64) + (rng.random(len(area)) < expected % 1.0)
    tri = np.repeat(np.arange(len(area)), counts)
    bary = rng.dirichlet([1, 1, 1], len(tri))
    uv = np.einsum("kj,kjd->kd", bary, face.uv[face.faces[tri]])
    keep = zones.label_at(uv) >= 0
    return np.einsum("kj,kjd->kd", bary[keep], face.vertices[face.faces[tri[keep]]])


def test_uniform_punctures_read_back_at_their_density(default_face, default_zones):
    rng = np.random.default_rng(7)
    punctures = _uniform_punctures(default_face, default_zones, 200.0, rng)
    dmap = dens.density(default_face, default_zones, punctures)
    assert dmap.n_punctures == len(punctures) and dmap.off_surface == 0
    for name in ("forehead", "cheek_left", "cheek_right", "jaw_left", "nose", "chin"):
        stats = dmap.zone_stats(name)
        # window noise ~7 % (sd); on the zone mean it is well under 1 %
        assert abs(stats.mean - 200.0) < 4.0, (name, stats.mean)
        assert 150.0 < stats.p5 < stats.p50 < stats.p95 < 250.0, (name, stats)


def test_zone_statistics_by_hand(default_face, default_zones):
    # a uniform 250 /cm^2 over the cheek: a window of 1 cm^2 holds 250 +- 16, so nearly all
    # of it lies within [0.9 x 250, 312.5]; only small edge windows stray over the cap
    rng = np.random.default_rng(8)
    punctures = _uniform_punctures(default_face, default_zones, 250.0, rng)
    stats = dens.density(default_face, default_zones, punctures).zone_stats("cheek_left")
    assert stats.target_per_cm2 == 250.0 and stats.cap_per_cm2 == 312.5
    assert stats.mean == pytest.approx(250.0, rel=0.03)
    assert stats.in_band_fraction > 0.85
    assert stats.over_cap_fraction < 0.01
    assert stats.area_cm2 == pytest.approx(default_zones.area_cm2("cheek_left"))


def test_distinct_channels_fewer_than_nominal_when_stacked(default_face, default_zones):
    rng = np.random.default_rng(9)
    once = _uniform_punctures(default_face, default_zones, 100.0, rng)
    stacked = np.concatenate([once, once + rng.normal(scale=0.02, size=once.shape)])
    flat = default_face.flatten(stacked)
    on_face = default_face.lift(flat.uv).points
    dmap = dens.density(default_face, default_zones, on_face)
    single = dens.density(default_face, default_zones, once)
    s = dmap.zone_stats("cheek_left")
    assert s.mean == pytest.approx(2 * single.zone_stats("cheek_left").mean, rel=1e-3)
    # each copy joins a channel within reach; one whose original sat at the rim of its
    # channel (0.24 of 0.25 mm) can land just outside and open a new one: a few in a thousand
    assert single.n_channels <= dmap.n_channels <= 1.01 * single.n_channels
    assert s.distinct_mean == pytest.approx(single.zone_stats("cheek_left").distinct_mean, rel=0.01)
    # at 1 puncture/mm^2 a Poisson pattern merges ~lambda pi r^2 / 2 = 10 %; the stratified
    # pattern here clumps less, so fewer merge, but some must
    assert 0.85 < single.n_channels / single.n_punctures < 0.98


def test_chart_points_give_the_same_map_as_surface_points(default_face, default_zones):
    rng = np.random.default_rng(10)
    punctures = _uniform_punctures(default_face, default_zones, 150.0, rng)
    from_surface = dens.density(default_face, default_zones, punctures)
    uv = default_face.flatten(punctures).uv
    from_chart = dens.density(default_face, default_zones, np.concatenate([uv, [[500.0, 500.0]]]))
    np.testing.assert_array_equal(from_chart.counts, from_surface.counts)
    np.testing.assert_array_equal(from_chart.channel, from_surface.channel)
    assert from_chart.off_surface == 1


def test_off_surface_punctures_are_counted_not_mapped(default_face, default_zones):
    p = default_face.lift(default_face.uv[[205]]).points
    off = p + np.array([[0.0, 0.0, 5.0]])
    dmap = dens.density(default_face, default_zones, np.concatenate([p, off]))
    assert dmap.n_punctures == 1 and dmap.off_surface == 1
    assert dmap.punctures_outside_treatable == 1


def test_window_covers_one_square_centimetre(default_face, default_zones):
    grid = dens.texel_grid(default_zones)
    inner = grid.treatable & (grid.window_area_mm2 > 0)
    # away from edges, a window's treatable skin area is ~1 cm^2 (rounded to whole texels)
    full = grid.window_area_mm2[inner]
    assert np.percentile(full, 50) == pytest.approx(100.0, rel=0.12)
    # every window wholly on the chart covers 1 cm^2 of skin within 12 % (its first guess,
    # the square at the centre's scale, ran from 74 to 127 mm^2), 98 % of them within 6 %
    off = dens.window_sums((grid.tri < 0).astype(float), grid.half_u, grid.half_v, grid.treatable)
    whole = grid.treatable & (off == 0)
    skin = dens.window_sums(grid.area_mm2, grid.half_u, grid.half_v, grid.treatable)[whole]
    assert whole.sum() > 0.8 * grid.treatable.sum()
    assert 88.0 < skin.min() and skin.max() < 112.0
    assert 94.0 < np.percentile(skin, 1) and np.percentile(skin, 99) < 106.0
    # near squares: the halves differ by one texel at most
    assert np.abs(grid.half_u - grid.half_v)[grid.treatable].max() <= 1


def test_window_halves_by_hand():
    # chart mm = skin mm, 0.5 mm texels: the square at the scale is 21 x 21 texels
    # (rint(9.5) = 10 halves), 110.25 mm^2; 19 x 21 covers 99.75 mm^2, the nearest (the
    # first of the two ways to make it); 19 x 19 would be 90.25
    h, w = 60, 60
    scale = np.ones((h, w))
    on, mask = np.ones((h, w), bool), np.zeros((h, w), bool)
    mask[30, 30] = mask[0, 0] = mask[30, 45] = True
    on[:, 50:] = False       # off the chart: the windows there are weighed by the rest
    scale[30, 45:50] = 3.0   # a denser strip beside texel (30, 45)
    for fn in (dens.window_halves, dens.window_halves_reference):
        hu, hv = fn(scale, on, mask, 0.5, 100.0)
        assert (hu[30, 30], hv[30, 30]) == (9, 10)
        # cut by the grid's corner: what it holds is taken as the whole at its scale
        assert (hu[0, 0], hv[0, 0]) == (9, 10)
        # texels off the mask keep the first guess
        assert (hu[5, 5], hv[5, 5]) == (10, 10)
        # (30, 45): its scale is 3, so its first guess is rint((sqrt(100 / 3) / 0.5 - 1) / 2) = 5,
        # 11 x 11 texels, column 50 off the chart: 110 on it, 5 of them the strip's, so mean
        # scale 120 / 110 and 121 x 0.25 x 120 / 110 = 33.0 mm^2; the widest tried, 13 x 13
        # (+1, +1): 143 on, 169 x 0.25 x 153 / 143 = 45.2 mm^2, the nearest to 100
        assert (hu[30, 45], hv[30, 45]) == (6, 6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_window_halves_kernel_equals_its_twin(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
    scale = rng.uniform(0.3, 4.0, (h, w)) * (rng.random((h, w)) < 0.95)
    on = rng.random((h, w)) < 0.9
    mask = rng.random((h, w)) < 0.7
    cell, window = float(rng.uniform(0.3, 1.5)), float(rng.uniform(20.0, 150.0))
    got = dens.window_halves(scale, on, mask, cell, window)
    want = dens.window_halves_reference(scale, on, mask, cell, window)
    for g, x in zip(got, want):
        np.testing.assert_array_equal(g, x)
    assert (got[0] >= 0).all() and (got[1] >= 0).all()
