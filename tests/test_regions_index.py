"""The chart triangles' lazy polygons and box queries (coverage.regions._Resolution).

The box queries replace an STRtree over the triangles' polygons: they must give exactly the
tree's sets (envelopes meeting, boundaries included), in ascending triangle order (pairs
sorted by box, then triangle). The polygons are made when first asked for: the same WKB as
``ring_polygons`` of all the triangles, the same objects on every later call and from two
threads at once.
"""
import threading

import numpy as np
import pytest
import shapely

from coverage import lifting, regions
from coverage.face import Face
from coverage.zones import canonical_exclusion_regions


@pytest.fixture(scope="module")
def res():
    return regions._resolution(Face.default().subdivisions)


@pytest.fixture(scope="module")
def coarse():
    return regions._resolution(Face.default(edge_mm=6.0).subdivisions)


@pytest.fixture(scope="module")
def tree(res):
    """The reference: an STRtree of every chart triangle's polygon."""
    return shapely.STRtree(regions.ring_polygons(res.uv[res.faces]))


def tree_pairs(tree, lo, hi):
    """The tree's (box, triangle) pairs for boxes [lo, hi] (as geometries of those envelopes:
    segments from corner to corner), sorted by box, then triangle."""
    if len(lo) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    seg, tri = tree.query(shapely.linestrings(np.stack([lo, hi], axis=1)))
    order = np.lexsort((tri, seg))
    return seg[order], tri[order]


def random_segments(res, rng, n):
    """Segments of every kind: short ones on the chart, long ones, ones of no length, ones
    outside the chart and ones from triangle corners and box edges (boxes that only touch)."""
    uv, lx, ly, hx, hy = res.uv, *res.box
    lo_c, hi_c = uv.min(axis=0), uv.max(axis=0)
    out = []
    p = rng.uniform(lo_c, hi_c, size=(n, 2))
    out.append(np.hstack([p, p + rng.normal(scale=1.0, size=(n, 2))]))          # short
    out.append(np.hstack([p, p + rng.normal(scale=30.0, size=(n, 2))]))         # long
    out.append(np.hstack([p, p]))                                                # no length
    v = uv[rng.integers(len(uv), size=n)]
    out.append(np.hstack([v, v]))                                                # at mesh vertices
    out.append(np.hstack([v, uv[rng.integers(len(uv), size=n)]]))                # vertex to vertex
    t = rng.integers(len(lx), size=n)
    # boxes touching a triangle's box at an edge or a corner only, from outside and inside
    corner = np.stack([hx[t], hy[t]], axis=1)
    out.append(np.hstack([corner, corner + rng.uniform(0.0, 2.0, size=(n, 2))]))  # at its top right corner
    low = np.stack([lx[t], ly[t]], axis=1)
    out.append(np.hstack([low - rng.uniform(0.0, 2.0, size=(n, 2)), low]))      # at its lower left corner
    edge = np.stack([hx[t], rng.uniform(ly[t] - 1, hy[t] + 1)], axis=1)
    out.append(np.hstack([edge, edge + [1.0, 0.0] * rng.uniform(0, 3, size=(n, 1))]))  # along its right edge
    just = np.nextafter(hx[t], np.inf)
    out.append(np.stack([just, ly[t], just + 1.0, hy[t]], axis=1))               # one ulp beyond it
    out.append(np.stack([lx[t], ly[t], lx[t], ly[t]], axis=1))                   # its lower corner, a point
    far = rng.uniform(-1e4, 1e4, size=(n, 2)) + np.sign(rng.normal(size=(n, 2))) * 1e3
    out.append(np.hstack([far, far + rng.normal(scale=5.0, size=(n, 2))]))       # outside the chart
    out.append(np.array([[-1e3, -1e3, 1e3, 1e3], [-1e3, 0.0, 1e3, 0.0], [lo_c[0], lo_c[1], lo_c[0], lo_c[1]],
                         [hi_c[0], hi_c[1], hi_c[0], hi_c[1]], [-1e300, -5.0, 1e300, 5.0]]))
    ends = np.concatenate(out)
    return ends[rng.permutation(len(ends))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_pairs_equal_the_trees(res, tree, seed):
    rng = np.random.default_rng(seed)
    ends = random_segments(res, rng, 300)
    lo, hi = np.minimum(ends[:, :2], ends[:, 2:]), np.maximum(ends[:, :2], ends[:, 2:])
    seg, tri = res.query_boxes(lo, hi)
    ref_seg, ref_tri = tree_pairs(tree, ends[:, :2], ends[:, 2:])
    np.testing.assert_array_equal(seg, ref_seg)
    np.testing.assert_array_equal(tri, ref_tri)
    assert len(seg) > 1000


def test_box_pairs_in_parts_equal_one_part(res, tree, monkeypatch):
    """Long boxes are taken a part at a time: the same pairs whatever the parts."""
    rng = np.random.default_rng(5)
    ends = random_segments(res, rng, 50)
    lo, hi = np.minimum(ends[:, :2], ends[:, 2:]), np.maximum(ends[:, :2], ends[:, 2:])
    whole = res.query_boxes(lo, hi)
    monkeypatch.setattr(regions, "_PAIRS_PER_PART", 5000)
    parts = res.query_boxes(lo, hi)
    for a, b, r in zip(whole, parts, tree_pairs(tree, ends[:, :2], ends[:, 2:])):
        np.testing.assert_array_equal(a, r)
        np.testing.assert_array_equal(b, r)


def test_box_pairs_of_nothing_and_of_nan(res):
    seg, tri = res.query_boxes(np.empty((0, 2)), np.empty((0, 2)))
    assert len(seg) == len(tri) == 0 and seg.dtype == tri.dtype == np.int64
    p = res.uv[10]
    lo = np.array([[np.nan, 0.0], p, [0.0, np.nan]])
    seg, tri = res.query_boxes(lo, lo)
    # a box with a NaN bound meets nothing; the others keep their own index
    assert set(seg.tolist()) == {1}
    np.testing.assert_array_equal(tri, res.query_box(p[0], p[1], p[0], p[1]))


def test_boundary_pairs_equal_the_trees(res, tree):
    """The cut's pairs (each boundary segment and vertex with the triangles near it) on the
    exclusions' outlines (along mesh edges, through mesh vertices) and on drawn regions."""
    rng = np.random.default_rng(3)
    drawn = [shapely.Point(res.uv[rng.integers(len(res.uv))]).buffer(rng.uniform(0.5, 20)) for _ in range(5)]
    drawn.append(shapely.box(-1e3, -1e3, 1e3, 1e3))
    outlines = [r for ps in canonical_exclusion_regions(Face.default().subdivisions).values() for _, r in ps]
    for region in outlines + drawn:
        ends, seg, tri = regions.boundary_pairs(res, region)
        ref_seg, ref_tri = tree_pairs(tree, ends[:, :2], ends[:, 2:])
        np.testing.assert_array_equal(seg, ref_seg)
        np.testing.assert_array_equal(tri, ref_tri)


def test_region_queries_equal_the_trees(res, tree):
    rng = np.random.default_rng(4)
    uv, lx, ly, hx, hy = res.uv, *res.box
    shapes = [shapely.box(-1e3, -1e3, 1e3, 1e3), shapely.box(1e3, 1e3, 1e3 + 1, 1e3 + 1), shapely.Polygon(),
              shapely.Point(uv[7]), shapely.LineString([uv[3], uv[900]])]
    for _ in range(40):
        c = uv[rng.integers(len(uv))]
        shapes.append(shapely.Point(c).buffer(rng.uniform(0.1, 40)))
        t = rng.integers(len(lx))
        # boxes that meet a triangle's box at a corner or along an edge only
        shapes.append(shapely.box(hx[t], hy[t], hx[t] + rng.uniform(0, 3), hy[t] + rng.uniform(0, 3)))
        shapes.append(shapely.box(lx[t] - 2.0, ly[t], lx[t], hy[t]))
        shapes.append(shapely.box(np.nextafter(hx[t], np.inf), ly[t], hx[t] + 1, hy[t]))
        shapes.append(shapely.Point(lx[t], hy[t]))
    for shape in shapes:
        np.testing.assert_array_equal(res.query_region(shape), np.sort(tree.query(shape)))
        # the non-polygonal path: the box candidates, then "intersects" on their polygons
        if shapely.get_type_id(shape) not in (3, 6) and not shape.is_empty:
            got, within = regions._classify(res, shape)
            np.testing.assert_array_equal(got, np.sort(tree.query(shape, predicate="intersects")))
            np.testing.assert_array_equal(within, shapely.within(res.polygons(got), shape))


def test_the_grid_bins_as_the_reference(res):
    """The grid's lists are the NumPy twin's (the cells the query's arithmetic assumes)."""
    g = res._box_grid()
    lx, ly, hx, hy = res.box
    lo, hi = np.stack([lx, ly], axis=1), np.stack([hx, hy], axis=1)
    start, items = lifting.bin_boxes_reference(lo, hi, g.origin, g.cell, g.shape)
    np.testing.assert_array_equal(g.start, start)
    np.testing.assert_array_equal(g.items, items)


def test_boxes_and_areas_are_the_charts(res, coarse):
    from coverage.chart import signed_chart_areas

    for r in (res, coarse):
        corners = r.uv[r.faces]
        np.testing.assert_array_equal(r.corners, corners.reshape(-1, 6))
        np.testing.assert_array_equal(np.stack(r.box, axis=1),
                                      np.hstack([corners.min(axis=1), corners.max(axis=1)]))
        np.testing.assert_array_equal(r.area, np.abs(signed_chart_areas(r.uv, r.faces)))
        np.testing.assert_array_equal(r.top_corner, r.faces.max(axis=1))


def lazy(r):
    """A resolution of the same chart as ``r`` with no polygon made yet (the cached one has
    some already)."""
    out = object.__new__(regions._Resolution)
    out.__dict__.update(r.__dict__)
    out._polys = np.empty(len(r.faces), dtype=object)
    out._made = np.zeros(len(r.faces), dtype=bool)
    out._lock = threading.Lock()
    out.__dict__.pop("tree", None)
    return out


def test_lazy_polygons_equal_ring_polygons(res):
    r = lazy(res)
    ref = shapely.to_wkb(regions.ring_polygons(res.uv[res.faces]))
    rng = np.random.default_rng(0)
    idx = rng.integers(len(r.faces), size=500)                  # repeats included
    got = r.polygons(idx)
    assert shapely.to_wkb(got).tolist() == ref[idx].tolist()
    assert r._made.sum() == len(np.unique(idx))
    # a mask, negative indices, and a second call: the same objects
    mask = rng.random(len(r.faces)) < 0.1
    again = r.polygons(mask)
    assert shapely.to_wkb(again).tolist() == ref[mask].tolist()
    assert all(a is b for a, b in zip(r.polygons(idx), got))
    assert r.polygons([-1])[0] is r.polygons([len(r.faces) - 1])[0]
    assert shapely.to_wkb(r.polygons()).tolist() == ref.tolist()
    assert r._made.all() and len(r.polygons([])) == 0
    assert shapely.to_wkb(r.polys).tolist() == ref.tolist()


def test_lazy_polygons_from_two_threads(res):
    """Two threads asking for overlapping sets at once get the same objects (each polygon
    made once), equal to ring_polygons by WKB."""
    ref = shapely.to_wkb(regions.ring_polygons(res.uv[res.faces]))
    m = len(res.faces)
    for trial in range(20):
        r = lazy(res)
        rng = np.random.default_rng(trial)
        sets = [rng.permutation(m)[: m // 2], rng.permutation(m)[: m // 2]]
        barrier = threading.Barrier(2)
        out = [None, None]

        def ask(k):
            barrier.wait()
            out[k] = r.polygons(sets[k])

        threads = [threading.Thread(target=ask, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        both = np.intersect1d(sets[0], sets[1])
        first = dict(zip(sets[0].tolist(), out[0]))
        second = dict(zip(sets[1].tolist(), out[1]))
        assert all(first[i] is second[i] for i in both.tolist())
        assert all(r.polygons([i])[0] is first[i] for i in both[:50].tolist())
        assert shapely.to_wkb(out[0]).tolist() == ref[sets[0]].tolist()
        assert shapely.to_wkb(out[1]).tolist() == ref[sets[1]].tolist()


def test_the_zone_maps_regions_make_few_polygons():
    """The point of the laziness: a zone map makes a minority of the chart's polygons (the
    boundary triangles of its regions, the whole triangles of its keep-outs)."""
    from coverage import bench
    from coverage.protocol import Protocol
    from coverage.zones import ZoneMap

    bench.clear_caches()
    face = Face.default()
    ZoneMap.default(face, Protocol.default())
    r = regions._resolution(face.subdivisions)
    assert 0 < r._made.sum() < 0.5 * len(r.faces)
    assert "tree" not in r.__dict__ and r._grid is not None
