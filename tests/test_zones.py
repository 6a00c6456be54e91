"""Zones and exclusions: a partition of the oval, skin areas, margins that hold on the skin."""
import numpy as np
import pytest
import shapely
from scipy.spatial import cKDTree

from coverage import Lesion, Protocol, ZoneMap, regions
from coverage.protocol import STANDARD_ZONES
from coverage.zones import EXCLUSION_NAMES, canonical_exclusion_regions, chart_domain


def test_names(default_zones):
    assert default_zones.names == list(STANDARD_ZONES)
    assert sorted(default_zones.exclusions) == sorted(EXCLUSION_NAMES)


def test_zones_partition_the_oval(default_face, default_zones):
    outlines = list(default_zones.outlines.values())
    assert all(o.is_valid and o.area > 10 for o in outlines)
    domain = chart_domain(default_face.subdivisions)
    union = shapely.union_all(outlines)
    # no overlaps: the areas add up to the union's; no gaps: the union is the whole chart
    assert sum(o.area for o in outlines) == pytest.approx(union.area, rel=1e-9)
    assert union.symmetric_difference(domain).area < 1e-6
    # the chart's boundary is the mesh's boundary: the oval covers every triangle
    assert regions.skin_area_mm2(default_face, domain) == pytest.approx(default_face.area_mm2, rel=1e-9)


def test_zone_areas_sum_to_the_treatable_area(default_face, default_zones):
    total = sum(default_zones.area_cm2(n) for n in default_zones.names)
    treatable = regions.skin_area_mm2(default_face, default_zones.treatable) / 100
    assert total == pytest.approx(treatable, rel=1e-9)
    keepout = regions.skin_area_mm2(default_face, shapely.intersection(default_zones.keepout,
                                                                       chart_domain(default_face.subdivisions))) / 100
    # the canonical face measures ~360 cm^2 inside its oval: treatable + kept out
    assert treatable + keepout == pytest.approx(default_face.area_mm2 / 100, rel=1e-6)
    assert 355 < default_face.area_mm2 / 100 < 365
    assert 280 < treatable < 330


@pytest.mark.parametrize("name, low, high", [
    ("forehead", 35, 65), ("glabella", 2, 8), ("temple_left", 6, 16), ("periorbital_left", 5, 14),
    ("nose", 12, 28), ("cheek_left", 22, 45), ("zygoma_left", 8, 20), ("perioral", 15, 32),
    ("chin", 8, 20), ("jaw_left", 20, 40),
])
def test_zone_areas_are_plausible(default_zones, name, low, high):
    assert low < default_zones.area_cm2(name) < high


def test_left_and_right_are_the_subjects_and_symmetric(default_face, default_zones):
    for name in default_zones.names:
        if not name.endswith("_left"):
            continue
        right = name.replace("_left", "_right")
        assert default_zones.area_cm2(name) == pytest.approx(default_zones.area_cm2(right), rel=1e-3)
        centre = default_face.lift(np.array(default_zones.polygons[name].centroid.coords)).points[0]
        assert centre[0] > 10.0, name  # the subject's left is +x


def test_label_at(default_face, default_zones):
    uv = default_face.uv
    names = default_zones.names
    labels = default_zones.label_at(uv[[151, 205, 425, 13, 159]])
    # forehead centre, right and left cheek seeds; the mouth and the upper lid are excluded
    assert [names[i] if i >= 0 else None for i in labels] == ["forehead", "cheek_right", "cheek_left", None, None]
    # the same from points on the face; a point off the skin is in no zone
    on_face = default_face.vertices[[151, 205, 425, 13, 159]]
    np.testing.assert_array_equal(default_zones.label_at(on_face), labels)
    assert default_zones.label_at(on_face[:1] + [[0.0, 0.0, 3.0]])[0] == -1


def _point_segment_distance(p, a, b):
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-300), 0, 1)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def exact_distance_to_region(face, region, query, reach):
    """Exact 3D distance from points to a chart region's surface, written independently.

    The region's surface is a union of planar pieces: each mesh triangle clipped by the
    region in the chart, mapped to 3D by the triangle's own affine map. The closest point
    of such a union lies on a piece's edge or projects into a piece's interior; both are
    measured exactly. Distances beyond ``reach`` come back as ``reach``.
    """
    tri_polys = shapely.polygons(face.uv[face.faces])
    hit = np.nonzero(shapely.intersects(tri_polys, region))[0]
    pieces = shapely.intersection(tri_polys[hit], region)
    corners_uv = face.uv[face.faces[hit]]
    corners = face.vertices[face.faces[hit]]
    inv = np.linalg.inv(np.stack([corners_uv[:, 1] - corners_uv[:, 0], corners_uv[:, 2] - corners_uv[:, 0]], 2))

    def to_3d(k, uv):  # chart points in piece k's triangle -> 3D, by the affine map
        local = np.einsum("ij,pj->pi", inv[k], uv - corners_uv[k, 0])
        return corners[k, 0] + local[:, :1] * (corners[k, 1] - corners[k, 0]) + local[:, 1:] * (corners[k, 2] - corners[k, 0])

    seg_a, seg_b, seg_piece = [], [], []
    for k, piece in enumerate(pieces):
        for ring in shapely.get_rings(piece) if not piece.is_empty else []:
            xy = np.asarray(ring.coords)
            if len(xy) < 2:
                continue
            pts = to_3d(k, xy)
            seg_a.append(pts[:-1])
            seg_b.append(pts[1:])
    seg_a, seg_b = np.concatenate(seg_a), np.concatenate(seg_b)
    out = np.full(len(query), reach)

    def pairs(lists):
        q = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
        return q, np.fromiter((j for x in lists for j in x), dtype=np.int64, count=len(q))

    # edges: KD-tree on segment midpoints, radius reach + the longest half segment
    mid = (seg_a + seg_b) / 2
    half = np.linalg.norm(seg_b - seg_a, axis=1).max() / 2
    q, j = pairs(cKDTree(mid).query_ball_point(query, reach + half))
    np.minimum.at(out, q, _point_segment_distance(query[q], seg_a[j], seg_b[j]))
    # interiors: the projection onto a piece's plane, where it lands inside the piece
    e1 = corners[:, 1] - corners[:, 0]
    e2 = corners[:, 2] - corners[:, 0]
    normal = np.cross(e1, e2)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    q, k = pairs(cKDTree(corners.mean(axis=1)).query_ball_point(query, reach + face.longest_edge_mm))
    rel = query[q] - corners[k, 0]
    height = np.abs(np.einsum("ij,ij->i", rel, normal[k]))
    # in-plane coordinates along e1, e2 (normal equations of the 3 x 2 system)
    g = np.stack([np.stack([np.einsum("ij,ij->i", e1[k], e1[k]), np.einsum("ij,ij->i", e1[k], e2[k])], 1),
                  np.stack([np.einsum("ij,ij->i", e2[k], e1[k]), np.einsum("ij,ij->i", e2[k], e2[k])], 1)], 1)
    rhs = np.stack([np.einsum("ij,ij->i", rel, e1[k]), np.einsum("ij,ij->i", rel, e2[k])], 1)
    local = np.linalg.solve(g, rhs[..., None])[..., 0]
    uv = corners_uv[k, 0] + local[:, :1] * (corners_uv[k, 1] - corners_uv[k, 0]) \
        + local[:, 1:] * (corners_uv[k, 2] - corners_uv[k, 0])
    inside = shapely.contains_xy(pieces[k], uv[:, 0], uv[:, 1])
    np.minimum.at(out, q[inside], height[inside])
    return out


@pytest.mark.parametrize("name", EXCLUSION_NAMES)
def test_every_margin_holds_on_the_skin(default_face, default_zones, name):
    exc = default_zones.exclusions[name]
    domain = chart_domain(default_face.subdivisions)
    # points on the keep-out's edge inside the face (not on the face's own edge)
    edge = shapely.get_coordinates(shapely.segmentize(shapely.boundary(default_zones.keepout), 0.25))
    inner = shapely.distance(shapely.boundary(domain), shapely.points(edge)) > 0.05
    edge_3d = default_face.lift(edge[inner]).points
    parts = dict(canonical_exclusion_regions(default_face.subdivisions)[name])
    for part, margin in exc.margins_mm:
        dist = exact_distance_to_region(default_face, parts[part], edge_3d, reach=margin + 2.0)
        # the straight-line distance, and so the distance along the skin, is at least the
        # margin everywhere on the keep-out's edge
        assert dist.min() >= margin, (name, part, dist.min(), margin)
        # and the keep-out is tight where this part shapes it (not needlessly wide)
        near = dist < margin + 2.0
        assert near.sum() > 20
        assert np.median(dist[near] - margin) < 0.5, (name, part, np.median(dist[near] - margin))


def test_margins_follow_the_protocol(default_face, default_zones):
    wider = Protocol.from_dict({"margins": {"eye_mm": 8.0}, "session": {"positioning_error_mm": 2.0}})
    zones = ZoneMap.default(default_face, wider)
    eye = dict(zones.exclusions["eye_left"].margins_mm)
    assert eye == {"eye": 10.0, "upper_eyelid": 2.0}
    assert zones.exclusions["eye_left"].keepout.area > default_zones.exclusions["eye_left"].keepout.area * 1.15
    assert zones.area_cm2("periorbital_left") < default_zones.area_cm2("periorbital_left") - 1.0


def test_eyebrows_can_be_treated_when_the_protocol_says_so(default_face, default_zones):
    zones = ZoneMap.default(default_face, Protocol.from_dict({"margins": {"exclude_eyebrows": False}}))
    assert "eyebrow_left" not in zones.exclusions
    assert zones.area_cm2("forehead") > default_zones.area_cm2("forehead") + 2.0


def test_point_lesion_becomes_a_keepout_of_lesion_plus_margins(default_face, default_zones):
    centre = default_face.vertices[425]            # the left cheek seed
    protocol = Protocol.default().with_lesions(Lesion("mole", center_mm=tuple(centre), radius_mm=3.0))
    zones = ZoneMap.default(default_face, protocol)
    exc = zones.exclusions["lesion:mole"]
    assert exc.margin_mm == 5.0  # lesion margin 4 + positioning error 1, beyond the 3 mm lesion
    edge = shapely.get_coordinates(shapely.segmentize(exc.keepout.exterior, 0.25))
    d = np.linalg.norm(default_face.lift(edge).points - centre, axis=1)
    # radius 3 + lesion margin 4 + positioning error 1 = 8 mm, measured in 3D (<= on the skin)
    assert d.min() >= 8.0 and np.median(d) < 8.4
    lost = default_zones.area_cm2("cheek_left") - zones.area_cm2("cheek_left")
    assert lost == pytest.approx(np.pi * 0.8 ** 2, rel=0.15)  # a disc of 8 mm radius


def test_chart_polygon_lesion_and_user_zone(default_face, default_zones):
    square = ((30.0, -20.0), (40.0, -20.0), (40.0, -10.0), (30.0, -10.0))
    protocol = Protocol.default().with_lesions(Lesion("tattoo", polygon_chart=square))
    zones = ZoneMap.default(default_face, protocol)
    assert zones.label_at(np.array([[35.0, -15.0]]))[0] == -1
    patch = ((-40.0, -30.0), (-20.0, -30.0), (-20.0, -10.0), (-40.0, -10.0))
    custom = Protocol.from_dict({"zones": {"scar_patch": {
        "polygon_chart": [list(p) for p in patch], "devices": ["pen"], "depth_mm": 1.0,
        "max_depth_mm": 1.5, "target_per_cm2": 300.0}}})
    zones = ZoneMap.default(default_face, custom)
    assert "scar_patch" in zones.names
    union = shapely.union_all(list(zones.outlines.values()))
    assert sum(o.area for o in zones.outlines.values()) == pytest.approx(union.area, rel=1e-9)
    assert zones.names[zones.label_at(np.array([[-30.0, -20.0]]))[0]] == "scar_patch"
    assert zones.area_cm2("cheek_right") < default_zones.area_cm2("cheek_right")
