"""Chart regions: skin areas, sub-level sets of surface fields, and keep-outs.

Regions are shapely geometries in chart coordinates (mm). Three operations matter:

* :func:`skin_area_mm2`: the exact skin area of a chart region (each mesh triangle's chart
  piece times that triangle's area scale).
* :func:`sublevel_region`: the chart region where a per-vertex field, linear on each
  triangle, is below a level (each triangle clipped exactly, pieces merged as a coverage).
* :func:`keepout`: a region widened by a margin measured on the skin. Distances are exact
  3D distances from each mesh vertex to the region's own surface (the region cut out of
  the mesh triangle by triangle, then the closest-point kernel), so the keep-out holds on
  the skin: a straight-line distance never exceeds the distance along the skin, and across
  a fold it keeps a little more skin out than strictly needed, never less.
"""
from __future__ import annotations

import functools

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from . import proximity
from . import template as _template
from .chart import canonical_chart, signed_chart_areas


@functools.lru_cache(maxsize=4)
def _chart_triangles(subdivisions: int):
    """Chart triangles as shapely polygons, their STRtree and chart areas (per resolution)."""
    uv = canonical_chart(subdivisions)
    faces = _template.template(subdivisions).faces
    polys = shapely.polygons(uv[faces])
    return polys, shapely.STRtree(polys), np.abs(signed_chart_areas(uv, faces))


def empty() -> BaseGeometry:
    return shapely.Polygon()


def _split_triangles(face, region: BaseGeometry):
    """Triangles inside the region, and the chart pieces of those on its boundary.

    Returns ``(inside (k,) int, partial (j,) int, pieces (j,) geometries)``.
    """
    polys, tree, _ = _chart_triangles(face.subdivisions)
    if region.is_empty:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, object)
    shapely.prepare(region)
    candidates = tree.query(region, predicate="intersects")
    within = shapely.within(polys[candidates], region)
    inside = candidates[within]
    partial = candidates[~within]
    pieces = shapely.intersection(polys[partial], region)
    keep = shapely.area(pieces) > 0
    return inside, partial[keep], pieces[keep]


def skin_area_mm2(face, region: BaseGeometry) -> float:
    """Skin area (mm^2) of a chart region on this face."""
    inside, partial, pieces = _split_triangles(face, region)
    _, _, chart_area = _chart_triangles(face.subdivisions)
    scale = face.area_scale
    return float((chart_area[inside] * scale[inside]).sum() + (shapely.area(pieces) * scale[partial]).sum())


def _polygon_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polygon parts of each geometry with positive area, and the index of their source."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)
    return parts[keep], index[keep]


def region_triangles_3d(face, region: BaseGeometry) -> np.ndarray:
    """The region's own surface as 3D triangles ``(k, 3, 3) float`` (mm).

    Whole mesh triangles inside the region, plus the boundary triangles' pieces
    (constrained Delaunay in the chart) mapped to 3D by their triangle's affine map.
    """
    inside, partial, pieces = _split_triangles(face, region)
    whole = face.vertices[face.faces[inside]]
    polys, source = _polygon_parts(pieces)
    tris, piece = _polygon_parts(shapely.constrained_delaunay_triangles(polys))
    if len(tris) == 0:
        return whole
    coords = shapely.get_coordinates(shapely.get_exterior_ring(tris)).reshape(len(tris), 4, 2)[:, :3]
    parent = partial[source[piece]]
    corners_uv = face.uv[face.faces[parent]]            # (k, 3, 2)
    corners_3d = face.vertices[face.faces[parent]]      # (k, 3, 3)
    # barycentrics of each piece corner in its parent triangle, then the same weights in 3D
    edges = np.stack([corners_uv[:, 1] - corners_uv[:, 0], corners_uv[:, 2] - corners_uv[:, 0]], axis=2)
    local = np.einsum("kij,kpj->kpi", np.linalg.inv(edges), coords - corners_uv[:, None, 0])
    bary = np.concatenate([1.0 - local.sum(axis=2, keepdims=True), local], axis=2)
    cut = np.einsum("kpj,kjd->kpd", bary, corners_3d)
    return np.concatenate([whole, cut])


def distance_to_region(face, region: BaseGeometry, max_dist_mm: float) -> np.ndarray:
    """3D distance (mm) from every face vertex to the region's surface; inf beyond max_dist."""
    tris = region_triangles_3d(face, region)
    out = np.full(len(face.vertices), np.inf)
    if len(tris) == 0:
        return out
    vertices = tris.reshape(-1, 3)
    faces = np.arange(len(vertices), dtype=np.int64).reshape(-1, 3)
    grid = proximity.build_grid(vertices, faces)
    tri, _, dist = proximity.closest_points(grid, face.vertices, max_dist=max_dist_mm)
    found = tri >= 0
    out[found] = dist[found]
    return out


def sublevel_region(face, field: np.ndarray, level: float) -> BaseGeometry:
    """Chart region where a per-vertex field (linear on each triangle) is below ``level``.

    Each triangle is clipped exactly; a crossing on a shared edge is computed from the
    edge's lower-index vertex in both neighbours, so the pieces match bit for bit and merge
    as a coverage.
    """
    field = np.asarray(field, dtype=np.float64)
    faces = face.faces
    uv = face.uv
    below = field[faces] < level
    count = below.sum(axis=1)
    polys = [shapely.polygons(uv[faces[count == 3]])]

    def crossing(a, b):
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        t = (level - field[lo]) / (field[hi] - field[lo])
        return uv[lo] + t[:, None] * (uv[hi] - uv[lo])

    for n_below in (1, 2):
        sel = faces[count == n_below]
        if len(sel) == 0:
            continue
        flags = below[count == n_below]
        # rotate each triangle (keeping its winding) so the odd vertex comes first
        odd = np.argmax(flags if n_below == 1 else ~flags, axis=1)
        rows = np.arange(len(sel))[:, None]
        rot = sel[rows, (odd[:, None] + np.arange(3)) % 3]
        a, b, c = rot[:, 0], rot[:, 1], rot[:, 2]
        ab, ac = crossing(a, b), crossing(a, c)
        if n_below == 1:   # a below: triangle a, ab, ac
            ring = np.stack([uv[a], ab, ac], axis=1)
        else:              # b, c below: quad ab, b, c, ac
            ring = np.stack([ab, uv[b], uv[c], ac], axis=1)
        polys.append(shapely.polygons(ring))
    pieces = np.concatenate(polys)
    pieces = pieces[shapely.area(pieces) > 0]
    if len(pieces) == 0:
        return empty()
    return _union_of_pieces(pieces)


def _union_of_pieces(pieces) -> BaseGeometry:
    """Union of polygons that tile without overlap: the fast coverage union, or, where the
    pieces overlap after all (coarse meshes fold slightly in the chart), the general one."""
    try:
        return shapely.make_valid(shapely.coverage_union_all(pieces))
    except shapely.errors.GEOSException:
        return shapely.make_valid(shapely.union_all(pieces))


def triangles_region(face, mask: np.ndarray) -> BaseGeometry:
    """Union of the chart triangles selected by ``mask (m,) bool``."""
    polys, _, _ = _chart_triangles(face.subdivisions)
    chosen = polys[np.asarray(mask, dtype=bool)]
    if len(chosen) == 0:
        return empty()
    return _union_of_pieces(chosen)


def interpolation_slack_mm(longest_edge_mm: float, margin_mm: float) -> float:
    """Extra margin covering linear interpolation of a distance field over one triangle.

    The distance to a set is semi-concave with constant 1/d: along an edge of length h the
    linear interpolant exceeds it by at most h^2 / (8 d), d >= the margin near the
    contour. Given the longest edge there, plus 0.01 mm for rounding.
    """
    h = longest_edge_mm
    return h * h / (8.0 * max(margin_mm, h)) + 0.01


def keepout(face, region: BaseGeometry, margin_mm: float) -> BaseGeometry:
    """The region plus every point of the face within ``margin_mm`` of it (3D distance)."""
    if region.is_empty:
        return empty()
    if margin_mm <= 0:
        return region
    reach = margin_mm + interpolation_slack_mm(face.longest_edge_mm, margin_mm) + 1.0
    dist = distance_to_region(face, region, max_dist_mm=reach)
    # the slack needs the longest edge where the contour can run, not the face's longest
    near = (dist[face.faces] < reach).any(axis=1)
    longest = float(face.triangle_longest_edge_mm[near].max()) if near.any() else face.longest_edge_mm
    level = margin_mm + interpolation_slack_mm(longest, margin_mm)
    # beyond the search the distance is at least `reach`: using `reach` there can only
    # widen the keep-out, never narrow it
    dist = np.minimum(dist, reach)
    grown = sublevel_region(face, dist, level)
    return shapely.make_valid(shapely.union(grown, region))
