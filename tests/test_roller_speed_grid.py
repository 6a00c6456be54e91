"""The roller's chart grids built faster, identical: roller.contains_grid against
shapely.contains_xy on the whole grid, and raster.clearance against SciPy's distance
transform (coverage.raster.clearance_reference), on seeded random inputs."""
import numpy as np
import pytest
import shapely

from coverage import raster, roller


def _reference(region, x, y):
    uu, vv = np.meshgrid(x, y)
    return shapely.contains_xy(region, uu.ravel(), vv.ravel()).reshape(len(y), len(x))


def _blob(rng, centre, radius, n=40):
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.5, 1.0, n)
    return shapely.Polygon(np.stack([centre[0] + r * np.cos(angle), centre[1] + r * np.sin(angle)], axis=1))


def _regions(rng):
    blob = _blob(rng, (0.0, 0.0), 20.0)
    hole = _blob(rng, (1.0, -1.0), 5.0)
    yield blob
    yield blob.difference(hole)                                         # a hole
    yield shapely.union_all([blob, _blob(rng, (45.0, 10.0), 8.0)])      # two parts
    yield shapely.box(-10.0, -10.0, 10.0, 10.0)                         # edges on grid points
    yield shapely.Polygon([(-30, 0), (30, 0.25), (30, 0.5), (-30, 0.25)])   # thinner than a block
    yield shapely.Polygon()                                             # empty


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contains_grid_matches_shapely(seed):
    rng = np.random.default_rng(seed)
    for region in _regions(rng):
        for cell, w, h in ((0.25, 260, 230), (0.5, 200, 37), (1.0, 17, 300), (0.5, 40, 40), (0.25, 1, 90)):
            x = -32.0 + (np.arange(w) + 0.5) * cell * rng.choice([1.0, 1.3])
            y = -30.0 + (np.arange(h) + 0.5) * cell
            if rng.random() < 0.5:         # points exactly on the box's edges
                x = -32.0 + np.arange(w) * cell
                y = -30.0 + np.arange(h) * cell
            assert np.array_equal(roller.contains_grid(region, x, y), _reference(region, x, y))


def test_contains_grid_on_the_default_zones(default_zones):
    face = default_zones.face
    lo, hi = face.uv.min(axis=0) - 30.0, face.uv.max(axis=0) + 30.0
    cell = roller.CLEARANCE_CELL_MM
    w, h = (int(x) for x in np.ceil((hi - lo) / cell) + 1)
    x, y = lo[0] + (np.arange(w) + 0.5) * cell, lo[1] + (np.arange(h) + 0.5) * cell
    for region in [default_zones.keepout] + [default_zones.polygons[n] for n in default_zones.names]:
        assert np.array_equal(roller.contains_grid(region, x, y), _reference(region, x, y))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clearance_matches_reference(seed):
    rng = np.random.default_rng(seed)
    for trial in range(150):
        h, w = (int(k) for k in rng.integers(1, 70, 2))
        away = rng.random((h, w)) < rng.choice([0.3, 0.9, 0.99, 0.999, 1.0])
        cell = float(rng.choice([0.25, 0.5, 0.3]))
        assert np.array_equal(raster.clearance(away, cell), raster.clearance_reference(away, cell))
    # a region's shape: one blob, and a grid with nothing away
    region = _blob(rng, (0.0, 0.0), 20.0)
    x = y = -25.0 + (np.arange(200) + 0.5) * 0.25
    inside = roller.contains_grid(region, x, y)
    for away in (inside, ~inside, np.zeros((5, 7), bool)):
        assert np.array_equal(raster.clearance(away, 0.25), raster.clearance_reference(away, 0.25))
