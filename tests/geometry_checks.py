"""Independent geometric checks for the tests (written apart from coverage.regions)."""
import numpy as np
import shapely
from scipy.spatial import cKDTree

from coverage.zones import chart_domain


def keepout_edge_points(zones, spacing_mm: float = 0.25) -> np.ndarray:
    """Points (3D, mm) along the edge of a zone map's keep-outs, inside the face's oval."""
    domain = chart_domain(zones.face.subdivisions)
    edge = shapely.get_coordinates(shapely.segmentize(shapely.boundary(zones.keepout), spacing_mm))
    inner = shapely.distance(shapely.boundary(domain), shapely.points(edge)) > 0.05
    return zones.face.lift(edge[inner]).points


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

    seg_a, seg_b = [], []
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
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    flat = length[:, 0] > 1e-12 * face.longest_edge_mm ** 2  # a collapsed triangle is only its edges
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    q, k = pairs(cKDTree(corners.mean(axis=1)).query_ball_point(query, reach + face.longest_edge_mm))
    keep = flat[k]
    q, k = q[keep], k[keep]
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


def assert_same_runs(a, b, arrays=("uv", "swath_mm", "kappa_cross")):
    """Two nestings of roller runs ``[[Run]]`` equal part for part: the same fields, and the
    given arrays bit for bit."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert len(ra) == len(rb)
        for x, y in zip(ra, rb):
            assert (x.zone, x.theta_deg, x.sweep, x.line, x.phase_mm, x.meta) == \
                (y.zone, y.theta_deg, y.sweep, y.line, y.phase_mm, y.meta)
            for k in arrays:
                assert np.array_equal(getattr(x, k), getattr(y, k))
