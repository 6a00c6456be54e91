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


def test_footprint_clearance_reads_as_on_finer_grids(default_zones):
    # the region grids are binned in cells of at least 2 mm (regions.REGION_GRID_CELL_MM),
    # which the footprint's searches take as they are: the answers are those of the parts
    # binned as build_grid bins them by default, twice the median edge (the closest point
    # does not depend on the binning)
    from coverage import proximity, regions
    from coverage.zones import canonical_exclusion_regions

    coarse = pen.FootprintClearance(default_zones)
    fine = pen.FootprintClearance(default_zones)
    face = default_zones.face
    standard = canonical_exclusion_regions(face.subdivisions)
    grids = [regions.region_grid(face, region) for name, parts in standard.items() if name in default_zones.exclusions
             for _, region in parts]
    assert all(g.cell >= pen.CLEAR_CELL_MM == regions.REGION_GRID_CELL_MM for g in grids)
    # no part binned again: the clearance searches the region grids themselves
    assert [id(g) for g, _ in coarse.parts] == [id(g) for g in grids]
    finer = [proximity.build_grid(g.vertices, g.faces) for g in grids]
    assert any(f.cell < pen.CLEAR_CELL_MM for f in finer)
    fine.parts = [(g, margin) for g, (_, margin) in zip(finer, coarse.parts)]
    rng = np.random.default_rng(3)
    hidden = face.uv[default_zones.label_at(face.uv) < 0]
    near = hidden[rng.integers(0, len(hidden), 6000)] + rng.normal(0.0, 5.0, (6000, 2))
    for radius in (0.0, 1.5, 2.5, 3.5):
        got = coarse.clear(near, radius)
        np.testing.assert_array_equal(got, fine.clear(near, radius))
        assert got.any() and not got.all()
    # the keep-outs' distances from every vertex, searched in both binnings: the same
    for g, f in zip(grids, finer):
        for reach in (2.0, 6.0):
            a = proximity.closest_points(g, face.vertices, max_dist=reach)
            b = proximity.closest_points(f, face.vertices, max_dist=reach)
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)
            assert (a[0] >= 0).any() and (a[0] < 0).any()



@pytest.mark.parametrize("seed", range(3))
def test_dilated_equals_its_reference(seed):
    rng = np.random.default_rng(seed)
    for shape in [(1, 1), (2, 9), (33, 17)]:
        for density in (0.0, 0.01, 0.3):
            mask = rng.random(shape) < density
            for iterations in (1, 2, 4):
                np.testing.assert_array_equal(pen._dilated(mask, iterations), pen._dilated_reference(mask, iterations))


def test_distance_to_is_made_once_when_two_threads_ask_at_once(monkeypatch):
    # the main and fine cartridges' dose fields ask for the same distances side by side on a
    # plan's two threads: the second to ask waits for the first's (one transform, one array)
    import threading
    import time

    class Grid:        # a texel grid as distance_to reads it (weakly keyed)
        cell_mm = 0.5

    made = []
    real = pen.ndimage.distance_transform_edt

    def slow(x, **kwargs):
        made.append(threading.current_thread().name)
        time.sleep(0.05)      # long enough for the other thread to ask meanwhile
        return real(x, **kwargs)

    monkeypatch.setattr(pen.ndimage, "distance_transform_edt", slow)
    grid = Grid()
    mask = np.zeros((9, 12), dtype=bool)
    mask[4, 5] = True
    got = [None, None]

    def ask(i):
        got[i] = pen.distance_to(grid, mask)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and got[0] is got[1]
    # worked by hand: a texel 3 across and 4 down from the mask's lies 0.5 * 5 mm from it
    assert got[0][4, 5] == 0.0 and got[0][8, 8] == pytest.approx(2.5) and got[0][4, 6] == 0.5
    assert not got[0].flags.writeable
    # another mask is another transform
    other = mask.copy()
    other[0, 0] = True
    assert pen.distance_to(grid, other)[0, 0] == 0.0 and len(made) == 2


def _raster_lines_one_by_one(mask_uv, theta_deg, spacing, phase):
    # raster_lines as it was written, one line at a time
    import math

    t = math.radians(theta_deg)
    along, across = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    a, c = mask_uv @ along, mask_uv @ across
    lo, hi = c.min(), c.max()
    offsets = lo + (np.arange(int(math.floor((hi - lo) / spacing - phase)) + 2) + phase) * spacing
    lines = []
    for o in offsets:
        if o > hi + spacing:
            break
        ends = np.array([a.min() - 1.0, a.max() + 1.0])
        lines.append(ends[:, None] * along[None] + o * across[None])
    return lines


@pytest.mark.parametrize("seed", range(4))
def test_raster_lines_all_at_once_equal_one_by_one(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        pts = rng.normal(size=(int(rng.integers(1, 200)), 2)) * rng.uniform(0.1, 50.0)
        theta, spacing = float(rng.uniform(0.0, 180.0)), float(rng.uniform(0.05, 10.0))
        phase = float(rng.choice([0.0, 0.5, rng.uniform()]))
        want = _raster_lines_one_by_one(pts, theta, spacing, phase)
        got = pen.raster_lines(pts, theta, spacing, phase)
        assert len(got) == len(want) and len(want) >= 1
        for x, y in zip(got, want):
            assert x.shape == (2, 2) and x.tobytes() == y.tobytes()


def test_raster_lines_by_hand():
    # points from (0, 0) to (4, 2): lines along x (theta 0), 1 apart, half a spacing in from
    # y = 0, while no more than a spacing beyond y = 2; each from x = -1 to x = 5
    pts = np.array([[0.0, 0.0], [4.0, 2.0]])
    got = pen.raster_lines(pts, 0.0, 1.0, 0.5)
    assert [line.tolist() for line in got] == [[[-1.0, y], [5.0, y]] for y in (0.5, 1.5, 2.5)]
