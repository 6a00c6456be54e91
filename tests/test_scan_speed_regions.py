"""regions.ring_polygons (shapely.from_ragged_array) makes the same polygons as
shapely.polygons."""
import numpy as np
import pytest
import shapely

from coverage import regions


def test_ring_polygons_by_hand():
    got = regions.ring_polygons(np.array([[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]]))
    assert got.shape == (1,)
    assert shapely.get_coordinates(got[0]).tolist() == [[0, 0], [2, 0], [0, 1], [0, 0]]
    assert got[0].area == 1.0
    assert regions.ring_polygons(np.empty((0, 3, 2))).shape == (0,)


def test_ring_polygons_close_rings_as_shapely_does():
    # three corners: always closed; four or more: closed unless the last is the first
    tri = regions.ring_polygons(np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]]))[0]
    assert len(shapely.get_coordinates(tri)) == 4
    quads = regions.ring_polygons(np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]],
                                            [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [-0.0, 0.0]],
                                            [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]))
    assert [len(shapely.get_coordinates(q)) for q in quads] == [4, 4, 5]


@pytest.mark.parametrize("k", [3, 4, 5])
def test_ring_polygons_equal_shapely_polygons(rng, k):
    corners = rng.normal(scale=20.0, size=(500, k, 2))
    corners[:20, 1] = corners[:20, 0]                 # repeated corners (no area)
    corners[20:40, :, 0] = 3.0                        # collinear
    corners[40:60] *= -1.0                            # the other winding
    corners[60] = 0.0                                 # one point
    corners[61:70, -1] = corners[61:70, 0]            # the last corner is the first
    corners[70:75, -1] = -corners[70:75, 0] * 0.0     # ... up to the sign of zero
    corners[70:75, 0] = 0.0
    got = regions.ring_polygons(corners)
    expected = shapely.polygons(corners)
    assert shapely.to_wkb(got).tolist() == shapely.to_wkb(expected).tolist()
