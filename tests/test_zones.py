"""Zones and exclusions: a partition of the oval, skin areas, margins that hold on the skin."""
import numpy as np
import pytest
import shapely

from coverage import Face, Lesion, Protocol, ZoneMap, regions
from coverage import zones as zones_module
from coverage.protocol import STANDARD_ZONES
from coverage.zones import EXCLUSION_NAMES, canonical_exclusion_regions, chart_domain
from geometry_checks import exact_distance_to_region, keepout_edge_points


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
    ("nose", 12, 28), ("cheek_left", 35, 60), ("zygoma_left", 8, 20), ("perioral", 15, 32),
    ("chin", 8, 20), ("jaw_left", 12, 28),
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


@pytest.mark.parametrize("name", EXCLUSION_NAMES)
def test_every_margin_holds_on_the_skin(default_face, default_zones, name):
    exc = default_zones.exclusions[name]
    edge_3d = keepout_edge_points(default_zones)
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


@pytest.mark.parametrize("edge_mm", [6.0, 12.0])
def test_coarse_faces_build_their_zones(default_zones, edge_mm):
    """At coarse resolutions the chart triangles of a level set can overlap slightly (the
    fast coverage union refuses them): the zones are still built. Keep-outs widen with the
    triangle size (the interpolation slack), so a coarse face treats less skin, never more."""
    coarse = ZoneMap.default(Face.default(edge_mm=edge_mm))
    for name in default_zones.names:
        assert 0.5 * default_zones.area_cm2(name) < coarse.area_cm2(name) < 1.03 * default_zones.area_cm2(name), name


def reference_label_at(polygons, uv):
    """The general path of :meth:`ZoneMap.label_at`: each polygon in order asks every point
    not yet labelled."""
    out = np.full(len(uv), -1, dtype=np.int64)
    for index, poly in enumerate(polygons):
        todo = out < 0
        hit = shapely.contains_xy(poly, uv[todo, 0], uv[todo, 1])
        out[np.nonzero(todo)[0][hit]] = index
    return out


def hard_points(polygons, cells, rng):
    """Points where a fast path could go wrong: on polygon vertices and edges, on cell edges
    and corners, just beside them, outside every polygon, and not finite."""
    coords = shapely.get_coordinates(shapely.boundary(list(p for p in polygons if not p.is_empty)))
    mid = 0.5 * (coords[:-1] + coords[1:])
    u, v = cells.u, cells.v
    grid = np.stack(np.meshgrid(u[::3], v[::3]), -1).reshape(-1, 2)
    on_edges = np.stack([u[rng.integers(len(u), size=3000)], rng.uniform(v[0], v[-1], 3000)], 1)
    lo, hi = np.array([u[0], v[0]]), np.array([u[-1], v[-1]])
    scattered = rng.uniform(lo - 5, hi + 5, size=(20000, 2))
    tiny = np.nextafter(coords, coords + 1.0)
    special = np.array([[np.nan, 0.0], [0.0, np.nan], [np.inf, 0.0], [-np.inf, -np.inf], [u[0], v[0]], [u[-1], v[-1]]])
    return np.concatenate([coords, mid, grid, on_edges, scattered, tiny, special])


def test_label_at_equals_the_general_path(default_face, default_zones, rng):
    polygons = list(default_zones.polygons.values())
    cells = zones_module.label_cells(tuple(polygons))
    assert (cells.state >= 0).mean() > 0.5   # most cells answer for their points
    points = np.concatenate([hard_points(polygons, cells, rng), default_face.uv,
                             default_face.uv[default_face.faces].mean(axis=1)])
    np.testing.assert_array_equal(default_zones.label_at(points), reference_label_at(polygons, points))
    np.testing.assert_array_equal(default_zones.triangle_labels,
                                  reference_label_at(polygons, default_face.uv[default_face.faces].mean(axis=1)))
    assert default_zones.label_at(np.empty((0, 2))).shape == (0,)


@pytest.mark.parametrize("cell_mm", [0.3, 2.0, 7.0])
def test_label_cells_keep_the_first_polygon_rule(rng, cell_mm):
    """Overlapping polygons (the first holding a point wins), holes, several parts, an
    empty polygon, a polygon with a dangling line: the cells answer as the general path."""
    disc = shapely.Point(0, 0).buffer(10)
    polygons = (
        shapely.Polygon(),
        disc.difference(shapely.Point(0, 0).buffer(4)),                       # a ring
        shapely.box(-3, -3, 3, 3),                                            # in the hole
        shapely.box(5, -20, 30, 20),                                          # overlaps the ring
        shapely.union(shapely.Point(40, 0).buffer(3), shapely.Point(50, 0).buffer(3)),
        shapely.GeometryCollection([shapely.box(-30, -30, -20, -20), shapely.LineString([(-20, -25), (-10, -25)])]),
    )
    cells = zones_module.LabelCells(polygons, cell_mm)
    points = hard_points(polygons, cells, rng)
    out, rest = cells.lookup(points)
    got = zones_module._label_by_polygon(polygons, points, out, rest)
    np.testing.assert_array_equal(got, reference_label_at(polygons, points))
    none = zones_module.LabelCells((shapely.Polygon(),), cell_mm)
    out, rest = none.lookup(points)
    assert (out == -1).all() and len(rest) == 0


def test_label_cells_are_shared_by_equal_zone_maps(default_face):
    # two maps built one after the other (the shared cells are a small LRU: a map built long
    # before, many zone maps ago, may have been evicted)
    first, again = ZoneMap.default(default_face), ZoneMap.default(default_face)
    first.label_at(default_face.uv[:10])
    again.label_at(default_face.uv[:10])
    assert again.__dict__["_label_cells"][1] is first.__dict__["_label_cells"][1]


def test_a_rebuilt_zone_map_is_identical(default_face, default_zones):
    """What the verifier and re-lifting rebuild (from the caches) is what was built."""
    again = ZoneMap.default(default_face)
    assert again is not default_zones
    for name in default_zones.names:
        assert shapely.to_wkb(again.polygons[name]) == shapely.to_wkb(default_zones.polygons[name])
        assert again.area_cm2(name) == default_zones.area_cm2(name)
    assert shapely.to_wkb(again.keepout) == shapely.to_wkb(default_zones.keepout)
    np.testing.assert_array_equal(again.triangle_labels, default_zones.triangle_labels)


def test_label_cells_of_a_huge_polygon_stay_small(rng):
    polygons = (shapely.box(-1e6, -1e6, 1e6, 1e6).difference(shapely.Point(0, 0).buffer(10)),)
    cells = zones_module.LabelCells(polygons, 0.5)
    assert cells.state.size <= (zones_module.MAX_LABEL_CELLS + 2) ** 2
    points = np.concatenate([rng.uniform(-2e6, 2e6, size=(5000, 2)), rng.uniform(-20, 20, size=(5000, 2))])
    out, rest = cells.lookup(points)
    np.testing.assert_array_equal(zones_module._label_by_polygon(polygons, points, out, rest),
                                  reference_label_at(polygons, points))
