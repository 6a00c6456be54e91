"""Chart regions: the cut of the mesh along a region, its caches, and keep-outs.

The fast paths (the boundary-segment classification of triangles, the cuts kept per
resolution and region, the keep-outs kept per face) must give exactly what the general
path gives: each is compared here with the plain computation, written out in the test.
"""
import copy

import numpy as np
import pytest
import shapely

from coverage import Face, regions
from coverage.synthetic import deformed_face
from coverage.zones import canonical_exclusion_regions


def reference_split(face, region):
    """The general path: every chart triangle asked "intersects", then "within"."""
    polys = shapely.polygons(face.uv[face.faces])
    tree = shapely.STRtree(polys)
    candidates = np.sort(tree.query(region, predicate="intersects"))     # ascending, as the cut lists them
    within = shapely.within(polys[candidates], region)
    inside, partial = candidates[within], candidates[~within]
    pieces = shapely.intersection(polys[partial], region)
    keep = shapely.area(pieces) > 0
    return inside, partial[keep], pieces[keep]


def reference_triangles_3d(face, region):
    """Whole triangles, then the constrained Delaunay triangles of the boundary pieces."""
    inside, partial, pieces = reference_split(face, region)
    whole = face.vertices[face.faces[inside]]
    polys, source = regions._polygon_parts(pieces)
    tris, piece = regions._polygon_parts(shapely.constrained_delaunay_triangles(polys))
    if len(tris) == 0:
        return whole
    coords = shapely.get_coordinates(shapely.get_exterior_ring(tris)).reshape(len(tris), 4, 2)[:, :3]
    parent = partial[source[piece]]
    corners_uv = face.uv[face.faces[parent]]
    edges = np.stack([corners_uv[:, 1] - corners_uv[:, 0], corners_uv[:, 2] - corners_uv[:, 0]], axis=2)
    local = np.einsum("kij,kpj->kpi", np.linalg.inv(edges), coords - corners_uv[:, None, 0])
    bary = np.concatenate([1.0 - local.sum(axis=2, keepdims=True), local], axis=2)
    cut = np.einsum("kpj,kjd->kpd", bary, face.vertices[face.faces[parent]])
    return np.concatenate([whole, cut])


def drawn_regions(face, rng, n):
    """Regions of every kind a plan meets: discs, random (self-crossing, made valid)
    polygons, polygons through mesh vertices, unions of whole triangles (edges along mesh
    edges), boxes, and ones holding the whole chart or none of it."""
    uv = face.uv
    out = [shapely.box(-1e3, -1e3, 1e3, 1e3), shapely.box(1e3, 1e3, 1e3 + 1, 1e3 + 1)]
    for _ in range(n):
        c = uv[rng.integers(len(uv))]
        out.append(shapely.Point(c).buffer(rng.uniform(0.2, 30), quad_segs=int(rng.integers(1, 8))))
        out.append(shapely.make_valid(shapely.Polygon(c + rng.normal(scale=10, size=(7, 2)))))
        out.append(shapely.make_valid(shapely.Polygon(uv[rng.integers(len(uv), size=5)])))
        mask = np.linalg.norm(uv[face.faces].mean(axis=1) - c, axis=1) < rng.uniform(1, 20)
        out.append(regions.triangles_region(face, mask))
        out.append(shapely.box(*np.sort(c + rng.normal(scale=8, size=(2, 2)), axis=0).T.ravel()))
        # a disc with a hole, and two discs apart (a MultiPolygon)
        out.append(shapely.Point(c).buffer(12).difference(shapely.Point(c).buffer(4)))
        out.append(shapely.union(shapely.Point(c).buffer(3), shapely.Point(c + 20).buffer(3)))
    return [r for r in out if not r.is_empty]


@pytest.fixture(scope="module")
def coarse_face():
    return Face.default(edge_mm=6.0)


@pytest.mark.parametrize("which", ["coarse", "default"])
def test_classification_equals_the_general_path(request, rng, coarse_face, default_face, which):
    face = coarse_face if which == "coarse" else default_face
    res = regions._resolution(face.subdivisions)
    parts = [r for ps in canonical_exclusion_regions(face.subdivisions).values() for _, r in ps]
    for region in parts + drawn_regions(face, rng, 25 if which == "coarse" else 6):
        candidates = np.sort(res.tree.query(region, predicate="intersects"))
        within = shapely.within(res.polygons(candidates), region)
        got, got_within = regions._classify(res, region)
        # the same triangles, ascending (sums and arrays depend on the order)
        np.testing.assert_array_equal(got, candidates)
        np.testing.assert_array_equal(got_within, within)


def test_boundary_contacts_decide_the_outlines_triangles(default_face):
    """An exclusion's outline runs along mesh edges: the triangles it meets are decided from
    its exact contacts (coverage.contact), not asked the general predicates, and what they
    are said to be is what the predicates say (within, or touching only)."""
    res = regions._resolution(default_face.subdivisions)
    for parts in canonical_exclusion_regions(default_face.subdivisions).values():
        for _, region in parts:
            got, within, known = regions._classify_contacts(res, region)
            boundary = shapely.intersects(shapely.boundary(region), res.polygons(got))
            assert known[boundary].mean() > 0.9
            assert shapely.within(res.polygons(got[known & within]), region).all()
            assert shapely.touches(region, res.polygons(got[known & ~within])).all()


def test_classification_of_sliver_triangles(coarse_face, rng):
    """Triangles marked as slivers take the general predicates, with the same answers."""
    res = copy.copy(regions._resolution(coarse_face.subdivisions))
    res.thin = rng.random(len(res.faces)) < 0.3
    for region in drawn_regions(coarse_face, rng, 5):
        candidates = np.sort(res.tree.query(region, predicate="intersects"))
        got, within = regions._classify(res, region)
        np.testing.assert_array_equal(got, candidates)
        np.testing.assert_array_equal(within, shapely.within(res.polygons(candidates), region))


def test_classification_of_other_geometry_types(coarse_face):
    res = regions._resolution(coarse_face.subdivisions)
    c = coarse_face.uv[5]
    mixed = shapely.GeometryCollection([shapely.Point(c).buffer(10), shapely.LineString([c + 20, c + 30])])
    for region in (mixed, shapely.LineString([c - 10, c + 10])):
        got, within = regions._classify(res, region)
        np.testing.assert_array_equal(got, np.sort(res.tree.query(region, predicate="intersects")))
        np.testing.assert_array_equal(within, shapely.within(res.polygons(got), region))


def test_cut_equals_the_general_path_and_is_kept(coarse_face, rng):
    for region in drawn_regions(coarse_face, rng, 5):
        inside, partial, pieces = regions._split_triangles(coarse_face, region)
        ref_inside, ref_partial, ref_pieces = reference_split(coarse_face, region)
        np.testing.assert_array_equal(inside, ref_inside)
        np.testing.assert_array_equal(partial, ref_partial)
        assert shapely.equals_exact(pieces, ref_pieces, tolerance=0).all()
        assert not inside.flags.writeable and not partial.flags.writeable
        # a copy of the region (equal WKB, another object) is served from the cache
        again = shapely.from_wkb(shapely.to_wkb(region))
        assert regions._split_triangles(coarse_face, again)[0] is inside
    # a region that differs in one coordinate bit is another region
    box = shapely.box(0.0, 0.0, 10.0, 10.0)
    moved = shapely.box(0.0, 0.0, np.nextafter(10.0, 11.0), 10.0)
    assert regions._cut(coarse_face.subdivisions, box) is not regions._cut(coarse_face.subdivisions, moved)


def test_region_triangles_and_areas_equal_the_general_path_on_every_face(default_face):
    """The cut and its triangulation are kept per resolution; the 3D triangles and skin
    areas are still each face's own (here the default face and a deformed one)."""
    other = deformed_face(default_face)
    regions_ = [r for ps in canonical_exclusion_regions(default_face.subdivisions).values() for _, r in ps][:4]
    regions_.append(shapely.Point(default_face.uv[205]).buffer(15.0))
    for face in (default_face, other):
        for region in regions_:
            np.testing.assert_array_equal(regions.region_triangles_3d(face, region),
                                          reference_triangles_3d(face, region))
            inside, partial, pieces = reference_split(face, region)
            chart_area = regions._resolution(face.subdivisions).area
            scale = face.area_scale
            expected = float((chart_area[inside] * scale[inside]).sum() + (shapely.area(pieces) * scale[partial]).sum())
            assert regions.skin_area_mm2(face, region) == expected


def test_skin_pieces_rebuild_the_region_triangles(default_face):
    region = canonical_exclusion_regions(default_face.subdivisions)["eye_left"][1][1]
    parent, bary = regions.skin_pieces(default_face, region)
    corners = default_face.vertices[default_face.faces[parent]]
    tris = regions.region_triangles_3d(default_face, region)
    inside = regions._split_triangles(default_face, region)[0]
    np.testing.assert_array_equal(parent[:len(inside)], inside)
    np.testing.assert_array_equal(np.einsum("kpj,kjd->kpd", bary[len(inside):], corners[len(inside):]),
                                  tris[len(inside):])
    empty_parent, empty_bary = regions.skin_pieces(default_face, regions.empty())
    assert empty_parent.shape == (0,) and empty_bary.shape == (0, 3, 3)
    assert regions.region_triangles_3d(default_face, regions.empty()).shape == (0, 3, 3)


def test_keepouts_are_kept_per_face_and_equal_a_fresh_one(default_face):
    region = canonical_exclusion_regions(default_face.subdivisions)["nostril_left"][0][1]
    first = regions.keepout(default_face, region, 3.0)
    assert regions.keepout(default_face, shapely.from_wkb(shapely.to_wkb(region)), 3.0) is first
    assert shapely.equals_exact(regions._keepout(default_face, region, 3.0), first, tolerance=0)
    wider = regions.keepout(default_face, region, 3.5)
    assert wider is not first and wider.area > first.area
    # another face (same resolution, same cut) gets its own keep-out: distances are 3D
    other = deformed_face(default_face)
    theirs = regions.keepout(other, region, 3.0)
    assert theirs is not first
    assert shapely.equals_exact(regions._keepout(other, region, 3.0), theirs, tolerance=0)
    assert regions.keepout(default_face, region, 0.0) is region
    assert regions.keepout(default_face, regions.empty(), 3.0).is_empty


def test_triangles_region_is_kept_per_mask(coarse_face):
    mask = np.zeros(len(coarse_face.faces), dtype=bool)
    mask[:40] = True
    first = regions.triangles_region(coarse_face, mask)
    assert regions.triangles_region(coarse_face, mask.copy()) is first
    polys = shapely.polygons(coarse_face.uv[coarse_face.faces])
    assert shapely.equals_exact(first, regions._union_of_pieces(polys[mask]), tolerance=0)
    mask[40] = True
    assert regions.triangles_region(coarse_face, mask) is not first
    assert regions.triangles_region(coarse_face, np.zeros_like(mask)).is_empty


def test_memo_drops_the_least_recently_used():
    memo = regions.Memo(2)
    calls = []

    def make(x):
        return lambda: calls.append(x) or x

    assert memo.get("a", make("a")) == "a"
    assert memo.get("b", make("b")) == "b"
    assert memo.get("a", make("a2")) == "a"          # kept, and now the most recent
    memo.get("c", make("c"))                          # drops b
    assert memo.get("b", make("b2")) == "b2"
    assert calls == ["a", "b", "c", "b2"]


def test_distance_to_region_equals_a_search_of_every_vertex(default_face):
    """The region's corner vertices read 0 without a search: every vertex reads what one
    search of the region's grid, from every vertex, reads (bit for bit), on a canonical
    region and on a region cut across triangles."""
    from coverage import proximity

    eye = canonical_exclusion_regions(default_face.subdivisions)["eye_left"][0][1]
    across = shapely.affinity.rotate(eye, 17.0, origin="centroid")   # boundary off the mesh edges
    for region in (eye, across):
        for reach in (0.5, 3.0, 9.0):
            got = regions.distance_to_region(default_face, region, reach)
            grid = regions.region_grid(default_face, region)
            tri, _, dist = proximity.closest_points(grid, default_face.vertices, max_dist=reach)
            want = np.where(tri >= 0, dist, np.inf)
            assert np.array_equal(got, want)
            assert (got == 0).sum() > 0


def test_region_grid_is_kept_per_face_and_shared_with_the_pen(default_zones):
    """The footprint clearance searches the grids the keep-outs were searched on."""
    from coverage import pen

    face = default_zones.face
    clearance = pen.FootprintClearance(default_zones)
    standard = canonical_exclusion_regions(face.subdivisions)
    grids = [regions.region_grid(face, region) for name, parts in standard.items() if name in default_zones.exclusions
             for _, region in parts]
    assert len(grids) == len(clearance.parts)
    # the grids themselves: binned in cells of at least pen.CLEAR_CELL_MM already (twice the
    # median edge where that is coarser), so none is binned again for the footprint's searches
    for g, (mesh, _) in zip(grids, clearance.parts):
        assert mesh is g
        edge = np.linalg.norm(g.vertices[g.faces[:, 1]] - g.vertices[g.faces[:, 0]], axis=1)
        assert g.cell >= max(2.0 * float(np.median(edge)), pen.CLEAR_CELL_MM)
    assert any(g.cell == pen.CLEAR_CELL_MM for g in grids)
    tris = regions.region_triangles_3d(face, standard["lips"][0][1])
    assert np.array_equal(regions.region_grid(face, standard["lips"][0][1]).vertices, tris.reshape(-1, 3))
