"""Pen cartridge stamps: needle layout, kernel vs NumPy reference, flat and curved skin by hand."""
import numpy as np
import pytest

from coverage import Face, simulate

LAYOUT = simulate.needle_layout(12, 7.0, 0.25)   # the default cartridge
RADIUS = np.linalg.norm(LAYOUT, axis=1)
NOSE_TIP, FOREHEAD = 1, 151                      # MediaPipe landmarks


def _fields(hits):
    return {name: getattr(hits, name) for name in ("uv", "points", "depth_mm", "stamp", "needle", "fired", "gap_mm")}


# --- layout ------------------------------------------------------------------------------

def test_layout_by_hand():
    # R = 3.5 - 0.125 = 3.375; needle 0 at radius R sqrt(0.5 / 12), angle 0
    np.testing.assert_allclose(LAYOUT[0], [3.375 * np.sqrt(0.5 / 12), 0.0], atol=1e-15)
    # needle 1: radius R sqrt(1.5 / 12), one golden angle (137.5 deg)
    golden = np.deg2rad(137.50776405003785)
    np.testing.assert_allclose(LAYOUT[1], 3.375 * np.sqrt(1.5 / 12) * np.array([np.cos(golden), np.sin(golden)]))
    np.testing.assert_allclose(simulate.needle_layout(1, 2.0, 0.0), [[np.sqrt(0.5), 0.0]])


@pytest.mark.parametrize("needles, footprint, needle", [(9, 5.0, 0.3), (12, 7.0, 0.25), (36, 8.0, 0.2), (42, 7.0, 0.5)])
def test_layout_inside_the_footprint_and_distinct(needles, footprint, needle):
    layout = simulate.needle_layout(needles, footprint, needle)
    assert layout.shape == (needles, 2)
    # the whole needle (its radius too) lies inside the footprint disc
    assert (np.linalg.norm(layout, axis=1) + needle / 2 <= footprint / 2 + 1e-12).all()
    gaps = np.linalg.norm(layout[:, None] - layout[None], axis=2) + np.eye(needles) * 1e9
    assert gaps.min() > needle / 2  # distinct, and not touching each other's centres
    np.testing.assert_array_equal(layout, simulate.needle_layout(needles, footprint, needle))


@pytest.mark.parametrize("args, field", [((0, 7.0, 0.25), "needles"), ((2.5, 7.0, 0.25), "needles"),
                                         ((12, 0.2, 0.25), "needle_diameter_mm")])
def test_layout_rejects_bad_cartridges(args, field):
    with pytest.raises(ValueError, match=field):
        simulate.needle_layout(*args)


# --- kernel vs reference -----------------------------------------------------------------

def _random_stamps(face, seed, k):
    """``k`` stamps on, across and off the chart's edge (the first 10 at NaN), at random
    turns and depths: ``(centres (k, 2), angles (k,), depth_mm (k,))``."""
    rng = np.random.default_rng(seed)
    lo, hi = face.uv.min(axis=0), face.uv.max(axis=0)
    centres = rng.uniform(lo - 8.0, hi + 8.0, (k, 2))
    centres[:10] = np.nan
    return centres, rng.uniform(-np.pi, np.pi, k), rng.uniform(0.25, 2.5, k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stamp_matches_reference(default_face, seed):
    k = 3000
    centres, angles, depth = _random_stamps(default_face, seed, k)
    hits = simulate.stamp(default_face, centres, angles, depth, LAYOUT, 0.5)
    ref = simulate.stamp_reference(default_face, centres, angles, depth, LAYOUT, 0.5)
    for name, value in _fields(hits).items():
        expected = getattr(ref, name)
        assert value.shape == expected.shape and value.dtype == expected.dtype, name
        np.testing.assert_allclose(value, expected, atol=1e-9, rtol=0, equal_nan=True, err_msg=name)

    # the inputs exercise every case: centre off, centre on with needles off, all on
    centre_on = ~np.isnan(hits.uv[:, 0]).reshape(k, -1).all(axis=1)
    needle_on = ~np.isnan(hits.points[:, 0]).reshape(k, -1)
    partial = centre_on & ~needle_on.all(axis=1)
    assert 0.2 < (~centre_on).mean() < 0.6 and partial.sum() > 50 and needle_on.all(axis=1).sum() > 1000
    assert 0.0 < (~hits.fired[needle_on.ravel()]).mean() < 0.5  # some on-chart needles miss
    np.testing.assert_array_equal(hits.stamp, np.repeat(np.arange(k), len(LAYOUT)))
    np.testing.assert_array_equal(hits.needle, np.tile(np.arange(len(LAYOUT)), k))

    # depth never exceeds the setting; skin rising into the cartridge gets exactly the setting
    setting = np.repeat(depth, len(LAYOUT))
    on = needle_on.ravel()
    assert (hits.depth_mm[on] <= setting[on]).all()
    rising = on & (hits.gap_mm <= 0)
    assert rising.sum() > 100
    np.testing.assert_array_equal(hits.depth_mm[rising], setting[rising])
    assert not hits.fired[~on].any()


# --- flat skin by hand -------------------------------------------------------------------

@pytest.fixture(scope="module")
def flat_face(default_face):
    """The chart itself as a face: the plane z = 0, chart mm = skin mm."""
    return Face(np.column_stack([default_face.uv, np.zeros(len(default_face.uv))]), default_face.subdivisions)


def test_flat_skin_by_hand(flat_face):
    assert np.allclose(flat_face.normals, [0.0, 0.0, 1.0])  # so e1 = +x, e2 = z x x = +y, M = identity
    centres = flat_face.uv[[FOREHEAD, 205, 425]]
    hits = simulate.stamp(flat_face, centres, [0.0, np.pi / 2, np.pi], [1.0, 1.5, 0.5], LAYOUT, 0.5)
    x, y = LAYOUT[:, 0], LAYOUT[:, 1]
    expected = np.concatenate([centres[0] + LAYOUT,                          # no rotation
                               centres[1] + np.column_stack([-y, x]),        # a quarter turn
                               centres[2] - LAYOUT])                         # a half turn
    np.testing.assert_allclose(hits.uv, expected, atol=1e-12)
    np.testing.assert_allclose(hits.points, np.column_stack([expected, np.zeros(len(expected))]), atol=1e-12)
    np.testing.assert_allclose(hits.gap_mm, 0.0, atol=1e-12)
    np.testing.assert_allclose(hits.depth_mm, np.repeat([1.0, 1.5, 0.5], 12), atol=1e-12)
    assert hits.fired.all()


def test_flat_skin_off_the_chart(flat_face):
    lo = flat_face.uv.min(axis=0)
    # centre 20 mm beyond the chart: nothing is defined; centre 1 mm inside an edge: half reach
    left = flat_face.uv[np.argmin(flat_face.uv[:, 0])]
    hits = simulate.stamp(flat_face, [lo - 20.0, left + [1.0, 0.0]], 0.0, 1.0, LAYOUT, 0.5)
    first, second = slice(0, 12), slice(12, 24)
    assert np.isnan(hits.uv[first]).all() and np.isnan(hits.points[first]).all()
    assert np.isnan(hits.gap_mm[first]).all() and not hits.fired[first].any()
    np.testing.assert_allclose(hits.uv[second], left + [1.0, 0.0] + LAYOUT, atol=1e-12)  # uv kept off the chart
    off = np.isnan(hits.points[second, 0])
    assert 0 < off.sum() < 12
    np.testing.assert_array_equal(hits.fired[second], ~off)


def test_no_stamps_and_unusable_centres(default_face):
    empty = simulate.stamp(default_face, np.empty((0, 2)), 0.0, 1.0, LAYOUT, 0.5)
    assert empty.uv.shape == (0, 2) and empty.fired.shape == (0,)
    # infinite and absurdly far centres are off the chart, like NaN; the last stamp is fine
    centres = [[np.inf, 0.0], [1e300, -1e300], [np.nan, 0.0], default_face.uv[FOREHEAD]]
    for fn in (simulate.stamp, simulate.stamp_reference):
        hits = fn(default_face, centres, 0.0, 1.0, LAYOUT, 0.5)
        assert np.isnan(hits.uv[:36]).all() and not hits.fired[:36].any()
        assert hits.fired[36:].all()


# --- the default face --------------------------------------------------------------------

def _around(face, landmark, n, spread_mm, seed):
    rng = np.random.default_rng(seed)
    centres = face.uv[landmark] + rng.normal(0.0, spread_mm, (n, 2))
    return centres, rng.uniform(0.0, 2 * np.pi, n)


def test_forehead_is_nearly_flat(default_face):
    centres, angles = _around(default_face, FOREHEAD, 300, 3.0, 7)
    hits = simulate.stamp(default_face, centres, angles, 1.0, LAYOUT, 0.5)
    assert hits.fired.all()
    gap = hits.gap_mm.reshape(len(centres), -1)
    assert abs(gap.mean()) < 0.01 and np.abs(gap).max() < 0.1
    # needles land on the skin at their layout distance from the lifted stamp centre
    c = default_face.lift(centres).points
    dist = np.linalg.norm(hits.points.reshape(len(centres), -1, 3) - c[:, None], axis=2)
    np.testing.assert_allclose(dist, np.broadcast_to(RADIUS, dist.shape), rtol=0.02)


def test_nose_tip_is_convex(default_face):
    centres, angles = _around(default_face, NOSE_TIP, 200, 0.2, 8)
    hits = simulate.stamp(default_face, centres, angles, 1.0, LAYOUT, 1.0)
    gap = hits.gap_mm.reshape(len(centres), -1)
    depth = hits.depth_mm.reshape(len(centres), -1)
    outer, inner = RADIUS > 2.5, RADIUS < 1.6
    assert (gap[:, outer] > 0.2).all()
    # the skin falls away under the outer needles: they go less deep than the inner ones
    assert depth[:, outer].max() < depth[:, inner].min()
    assert depth[:, outer].mean() < depth[:, inner].mean() - 0.3
    np.testing.assert_allclose(depth, 1.0 - gap)  # no concave needle here: depth = setting - gap


def test_gap_tolerance_decides_fired(default_face):
    centres, angles = _around(default_face, NOSE_TIP, 100, 0.5, 9)
    strict = simulate.stamp(default_face, centres, angles, 0.5, LAYOUT, 0.0)
    loose = simulate.stamp(default_face, centres, angles, 0.5, LAYOUT, 100.0)
    on = ~np.isnan(loose.points[:, 0])
    assert on.all()
    np.testing.assert_array_equal(loose.fired, on)
    np.testing.assert_array_equal(strict.fired, strict.gap_mm <= 0.0)
    assert strict.fired.sum() < 0.5 * loose.fired.sum()
    # only the flag changes with the tolerance
    np.testing.assert_array_equal(strict.depth_mm, loose.depth_mm)
    np.testing.assert_array_equal(strict.points, loose.points)


@pytest.mark.parametrize("kwargs, field", [
    ({"centres_uv": np.zeros((3, 3))}, "centres_uv"),
    ({"angles_rad": np.zeros(2)}, "angles_rad"),
    ({"depth_mm": -1.0}, "depth_mm"),
    ({"layout": np.zeros((12, 3))}, "layout"),
    ({"gap_tolerance": -0.1}, "gap_tolerance"),
])
def test_stamp_rejects_bad_inputs(default_face, kwargs, field):
    args = {"centres_uv": np.zeros((3, 2)), "angles_rad": 0.0, "depth_mm": 1.0, "layout": LAYOUT,
            "gap_tolerance": 0.5, **kwargs}
    for fn in (simulate.stamp, simulate.stamp_reference):
        with pytest.raises(ValueError, match=field):
            fn(default_face, **args)


# --- fired needles per stamp (the dose field's kernel) ------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("layout", [LAYOUT, simulate.needle_layout(5, 3.0, 0.25)])
def test_fired_needles_equal_the_stamps_and_the_reference(default_face, seed, layout):
    from coverage import pen

    k = 3000
    centres, angles, depth = _random_stamps(default_face, seed, k)
    counts = pen.fired_needles(default_face, centres, angles, depth, layout, 0.5)
    hits = simulate.stamp(default_face, centres, angles, depth, layout, 0.5)
    np.testing.assert_array_equal(counts, hits.fired.reshape(k, -1).sum(axis=1))
    np.testing.assert_array_equal(counts, pen.fired_needles_reference(default_face, centres, angles, depth, layout,
                                                                      0.5))
    assert (counts == 0).sum() > 100 and (counts == len(layout)).sum() > 100 and ((counts > 0) & (counts < len(layout))).any()
    assert pen.fired_needles(default_face, np.empty((0, 2)), np.empty(0), np.empty(0), layout, 0.5).shape == (0,)
