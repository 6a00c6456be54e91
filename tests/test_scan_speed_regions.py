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


def test_cut_skips_only_triangles_whose_piece_has_no_area(rng):
    """The cut overlays only the boundary triangles whose interiors meet the region's: a
    triangle that merely touches it (shared edge or corner) has a piece of no area, which
    the general path drops; unions of whole triangles (unobserved skin) are all such."""
    from test_regions import drawn_regions, reference_split

    from coverage import Face

    face = Face.default(edge_mm=6.0)
    res = regions._resolution(face.subdivisions)
    centres = face.uv[face.faces].mean(axis=1)
    masks = [np.linalg.norm(centres - face.uv[rng.integers(len(face.uv))], axis=1) < rng.uniform(5, 40)
             for _ in range(6)]
    masks.append(rng.random(len(face.faces)) < 0.3)                 # scattered, with holes
    unions = [regions.triangles_region(face, m) for m in masks]
    for region in unions + drawn_regions(face, rng, 4):
        inter, within = regions._classify(res, region)
        partial = inter[~within]
        touching = shapely.touches(region, res.polys[partial])
        assert (shapely.area(shapely.intersection(res.polys[partial[touching]], region)) == 0).all()
        inside, kept, pieces = regions._split_triangles(face, region)
        ref_inside, ref_partial, ref_pieces = reference_split(face, region)
        np.testing.assert_array_equal(inside, ref_inside)
        np.testing.assert_array_equal(kept, ref_partial)
        assert shapely.to_wkb(pieces).tolist() == shapely.to_wkb(ref_pieces).tolist()
