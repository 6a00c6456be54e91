"""Zone label cells: the lift kernel's cell_labels against LabelCells.lookup_reference
(the NumPy code it replaces), on the default zones and by hand."""
import numpy as np
import pytest
import shapely

from coverage import lifting
from coverage.zones import LabelCells, label_cells


def test_cell_labels_by_hand():
    u = np.array([0.0, 1.0, 2.0])
    v = np.array([0.0, 1.0])
    state = np.array([[3, -2]], dtype=np.int32)
    uv = np.array([[0.5, 0.5],    # cell 0: marked 3
                   [1.5, 0.5],    # cell 1: ask
                   [1.0, 0.5],    # on the shared edge: cell 1 by the index, held by its closed edges
                   [2.5, 0.5],    # outside the grid
                   [np.nan, 0.5], # not finite: ask
                   [0.0, 0.0]])   # the grid's corner: cell 0
    labels, rest = lifting.cell_labels(u, v, state, uv)
    assert labels.tolist() == [3, -1, -1, -1, -1, 3]
    assert rest.tolist() == [1, 2, 4]


@pytest.mark.parametrize("cell_mm", [0.5, 2.0])
def test_cell_labels_equal_the_reference_on_the_default_zones(default_zones, rng, cell_mm):
    polygons = tuple(default_zones.polygons.values())
    cells = LabelCells(polygons, cell_mm)
    lo, hi = cells.u[0], cells.u[-1]
    k = 50_000
    uv = np.stack([rng.uniform(lo - 5, hi + 5, k), rng.uniform(cells.v[0] - 5, cells.v[-1] + 5, k)], axis=1)
    uv[:2000, 0] = cells.u[rng.integers(0, len(cells.u), 2000)]      # exactly on cell edges
    uv[2000:4000, 1] = cells.v[rng.integers(0, len(cells.v), 2000)]
    uv[4000:4010] = np.nan
    uv[4010:4020, 0] = np.inf
    uv[4020:4030, 1] = -np.inf
    uv[4030:4040] = [cells.u[-1], cells.v[-1]]
    # one rounding either side of the edges: the cell the quotient gives is checked exactly
    uv[4040:6040, 0] = np.nextafter(cells.u[rng.integers(0, len(cells.u), 2000)], rng.choice([-np.inf, np.inf], 2000))
    uv[6040:8040, 1] = np.nextafter(cells.v[rng.integers(0, len(cells.v), 2000)], rng.choice([-np.inf, np.inf], 2000))
    labels, rest = cells.lookup(uv)
    ref_labels, ref_rest = cells.lookup_reference(uv)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(rest, ref_rest)
    assert len(rest) and (labels >= 0).any() and (labels == -1).any()


def test_label_at_is_unchanged(default_zones, rng):
    uv = rng.uniform(-90, 90, (20_000, 2))
    got = default_zones.label_at(uv)
    # the general rule: the first polygon whose interior holds the point
    expected = np.full(len(uv), -1)
    for index, poly in reversed(list(enumerate(default_zones.polygons.values()))):
        expected[shapely.contains_xy(poly, uv[:, 0], uv[:, 1])] = index
    np.testing.assert_array_equal(got, expected)


def test_empty_cells_answer_nothing():
    cells = label_cells((shapely.Polygon(),))
    labels, rest = cells.lookup(np.zeros((3, 2)))
    assert labels.tolist() == [-1, -1, -1] and rest.size == 0
