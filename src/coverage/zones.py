"""Treatment zones and exclusions in the chart, built from the landmark loops.

Zones are a planar partition of the face oval: boundary chains through landmarks (drawn
for the subject's right side and mirrored) are noded and polygonised by shapely, and each
cell is named by the landmark it contains. Zones therefore never overlap and cover the
oval exactly. Exclusions (eyes with the upper lids, lips, nostrils, eyebrows, user
lesions, unobserved skin) are carved out of them together with their margins, measured on
the skin and widened by the positioning error (see :mod:`coverage.regions`).

Left and right are the subject's: the left lies at +x (+u in the chart).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry.base import BaseGeometry

from . import lifting, regions
from . import template as _template
from .chart import canonical_chart
from .errors import ProtocolError
from .protocol import Lesion, Protocol
from .tasks import GEOS_LOCK

# Boundary chains of the partition on the subject's right; the left side is their mirror.
# Chosen on the canonical face (see docs/zones.md for the picture and the reasoning).
RIGHT_CHAINS = (
    (70, 71, 21),                                        # forehead | temple
    (127, 34, 143, 156, 70),                             # temple | zygoma, periorbital
    (70, 46, 53, 52, 65, 55),                            # forehead | periorbital: brow's lower edge
    (55, 107, 9),                                        # glabella: side and top
    (55, 193),                                           # glabella | periorbital, down to the nose
    (143, 111, 117, 118, 119, 120, 121, 128),            # periorbital | zygoma, cheek: orbital rim
    (234, 227, 123, 50, 101, 119),                       # zygoma | cheek
    (98, 203, 206, 216, 212, 202, 204, 194, 201, 200),   # perioral outline
    (202, 210, 135, 138, 215, 132),                      # cheek | jaw: ~20 mm above the mandible's border
    (204, 32, 140, 176),                                 # chin | jaw
)
CLOSED_LOOPS = ("face_oval", "nose_full_outline_derived")
# one landmark inside each cell names it (right side; left seeds are mirrored)
SEEDS = {
    "forehead": 151, "glabella": 8, "nose": 5, "perioral": 164, "chin": 199,
    "temple_right": 139, "periorbital_right": 145, "cheek_right": 205,
    "zygoma_right": 116, "jaw_right": 169,
}
# the upper eyelid up to the brow: upper lash line, medial canthus to the brow head,
# the brow's lower edge, and back down past the lateral canthus
UPPER_LID_RIGHT = (33, 246, 161, 160, 159, 158, 157, 173, 133, 243, 189, 221, 55, 65, 52, 53, 46, 113, 130)
EXCLUSION_NAMES = ("eye_left", "eye_right", "lips", "nostril_left", "nostril_right",
                   "eyebrow_left", "eyebrow_right")
LABEL_CELL_MM = 0.5   # side of the chart cells that answer most zone look-ups at once
MAX_LABEL_CELLS = 2048


def _mirror(ids) -> tuple:
    mirror = _template.canonical()[2]["mirror_derived"]
    return tuple(int(mirror[i]) for i in ids)


def _seed_names() -> dict:
    seeds = dict(SEEDS)
    for name, seed in SEEDS.items():
        if name.endswith("_right"):
            seeds[name[:-len("_right")] + "_left"] = _mirror([seed])[0]
    return seeds


def _line(tpl, uv, ids, closed=False):
    path = tpl.path(ids, closed=closed)
    coords = uv[path]
    return shapely.Polygon(coords) if closed else shapely.LineString(coords)


@functools.lru_cache(maxsize=4)
def canonical_outlines(subdivisions: int) -> dict:
    """Zone cells (name -> chart Polygon) of the standard partition at one resolution."""
    tpl = _template.template(subdivisions)
    uv = canonical_chart(subdivisions)
    loops = tpl.landmark_sets["loops"]
    lines = []
    for chain in RIGHT_CHAINS:
        lines.append(_line(tpl, uv, chain))
        lines.append(_line(tpl, uv, _mirror(chain)))
    for name in CLOSED_LOOPS:
        lines.append(_line(tpl, uv, loops[name], closed=True).exterior)
    cells = shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.union_all(lines))))
    seeds = _seed_names()
    points = shapely.points(uv[list(seeds.values())])
    outlines = {}
    for cell in cells:
        names = [name for name, point in zip(seeds, points) if cell.contains(point)]
        if len(names) != 1:  # pragma: no cover - a fixed construction, checked by the tests
            raise RuntimeError(f"zone partition cell holds seeds {names}; fix RIGHT_CHAINS")
        outlines[names[0]] = cell
    missing = set(seeds) - set(outlines)
    if missing:  # pragma: no cover
        raise RuntimeError(f"zone partition has no cell for {sorted(missing)}")
    return outlines


@functools.lru_cache(maxsize=4)
def canonical_exclusion_regions(subdivisions: int) -> dict:
    """Exclusion regions before margins: name -> tuple of (part name, chart Polygon)."""
    tpl = _template.template(subdivisions)
    uv = canonical_chart(subdivisions)
    loops = tpl.landmark_sets["loops"]

    def poly(ids):
        return shapely.make_valid(_line(tpl, uv, ids, closed=True))

    return {
        "eye_left": (("eye", poly(loops["left_eye"])), ("upper_eyelid", poly(_mirror(UPPER_LID_RIGHT)))),
        "eye_right": (("eye", poly(loops["right_eye"])), ("upper_eyelid", poly(UPPER_LID_RIGHT))),
        "lips": (("lips", poly(loops["lips_outer"])),),
        "nostril_left": (("nostril", poly(loops["left_nostril_derived"])),),
        "nostril_right": (("nostril", poly(loops["right_nostril_derived"])),),
        "eyebrow_left": (("eyebrow", poly(loops["left_eyebrow"])),),
        "eyebrow_right": (("eyebrow", poly(loops["right_eyebrow"])),),
    }


@dataclass(frozen=True, eq=False)
class Exclusion:
    """A keep-out: the excluded skin and the band around it that no tool may touch."""

    name: str
    region: BaseGeometry    # chart region of the feature itself
    keepout: BaseGeometry   # region plus its margins (chart)
    margins_mm: tuple       # ((part, margin on the skin incl. positioning error), ...)

    @property
    def margin_mm(self) -> float:
        """The widest margin of the exclusion's parts (mm, on the skin)."""
        return max(m for _, m in self.margins_mm)


def _margin_for(part: str, protocol: Protocol) -> float:
    margins = protocol.margins
    return {"eye": margins.eye_mm, "upper_eyelid": margins.upper_eyelid_mm, "lips": margins.lips_mm,
            "nostril": margins.nostril_mm, "eyebrow": margins.eyebrow_mm}[part]


def lesion_exclusion(face, lesion: Lesion, protocol: Protocol) -> Exclusion:
    """A user-marked lesion (a point and radius on the face, or a chart polygon) as a keep-out."""
    margin = (protocol.margins.lesion_mm if lesion.margin_mm is None else lesion.margin_mm) \
        + protocol.session.positioning_error_mm
    if lesion.polygon_chart is not None:
        region = shapely.make_valid(shapely.Polygon(lesion.polygon_chart))
        domain = chart_domain(face.subdivisions)
        if not shapely.intersects(region, domain):
            raise ProtocolError(f"lesions.{lesion.name}.polygon_chart lies off the face's chart (its corners span "
                                f"{_span(region)}, the chart {_span(domain)}); give chart mm (see coverage-planner "
                                "zones --png)")
        keep = regions.keepout(face, region, margin)
    else:
        # the lesion is the skin within radius_mm of its centre (straight-line distance)
        dist = np.linalg.norm(face.vertices - np.asarray(lesion.center_mm, dtype=np.float64), axis=1)
        region = regions.sublevel_region(face, dist, lesion.radius_mm)
        if region.is_empty:
            raise ProtocolError(f"lesions.{lesion.name}.center_mm = {list(lesion.center_mm)} is more than "
                                f"{lesion.radius_mm} mm from the face surface; give a point on the face "
                                "in the face's frame (mm)")
        level = lesion.radius_mm + margin + regions.interpolation_slack_mm(face.longest_edge_mm, margin)
        keep = shapely.union(regions.sublevel_region(face, dist, level), region)
    return Exclusion(f"lesion:{lesion.name}", region, shapely.make_valid(keep), (("lesion", margin),))


def _span(geometry) -> str:
    """A geometry's bounds as "u a..b, v c..d" (chart mm)."""
    u0, v0, u1, v1 = geometry.bounds
    return f"u {u0:.0f}..{u1:.0f}, v {v0:.0f}..{v1:.0f} mm"


class ZoneMap:
    """Zones (treatable chart polygons) and exclusions (keep-outs) of one face.

    ``polygons[name]`` is the zone's treatable skin: its cell minus every keep-out (features,
    margins, lesions, unobserved skin). ``outlines[name]`` is the cell before that.
    """

    def __init__(self, face, protocol: Protocol, outlines: dict, exclusions: dict):
        self.face = face
        self.protocol = protocol
        self.outlines = outlines
        self.exclusions = exclusions
        keep = [e.keepout for e in exclusions.values() if not e.keepout.is_empty]
        self.keepout = shapely.union_all(keep) if keep else regions.empty()
        shapely.prepare(self.keepout)
        self.polygons = {name: shapely.make_valid(shapely.difference(cell, self.keepout))
                         for name, cell in outlines.items()}
        for poly in self.polygons.values():
            shapely.prepare(poly)
        self._area: dict[str, float] = {}

    @classmethod
    def default(cls, face, protocol: Protocol | None = None) -> "ZoneMap":
        """The standard zones and exclusions of a face under a protocol (default protocol)."""
        protocol = Protocol.default() if protocol is None else protocol
        error_mm = protocol.session.positioning_error_mm
        exclusions = {}
        for name, parts in canonical_exclusion_regions(face.subdivisions).items():
            if name.startswith("eyebrow") and not protocol.margins.exclude_eyebrows:
                continue
            margins = tuple((part, _margin_for(part, protocol) + error_mm) for part, _ in parts)
            keep = shapely.union_all([regions.keepout(face, region, m)
                                      for (_, region), (_, m) in zip(parts, margins)])
            region = shapely.union_all([region for _, region in parts])
            exclusions[name] = Exclusion(name, region, shapely.make_valid(keep), margins)
        for lesion in protocol.lesions:
            exc = lesion_exclusion(face, lesion, protocol)
            exclusions[exc.name] = exc
        if face.unobserved.any():
            region = regions.triangles_region(face, ~face.treatable_triangles)
            exclusions["unobserved"] = Exclusion("unobserved", region, regions.keepout(face, region, error_mm),
                                                 (("unobserved", error_mm),))
        outlines = cls._outlines(face, protocol)
        return cls(face, protocol, outlines, exclusions)

    @staticmethod
    def _outlines(face, protocol: Protocol) -> dict:
        """Standard cells, with user zones (chart polygons) cut out of them first.

        User zones take priority over the standard ones, and an earlier user zone over a
        later one, so the zones still never overlap.
        """
        domain = chart_domain(face.subdivisions)
        held = regions.empty()
        custom = {}
        for name, zone in protocol.zones.items():
            if zone.polygon_chart is not None:
                polygon = shapely.make_valid(shapely.Polygon(zone.polygon_chart))
                if not shapely.intersects(polygon, domain):
                    raise ProtocolError(f"zones.{name}.polygon_chart lies off the face's chart (its corners span "
                                        f"{_span(polygon)}, the chart {_span(domain)}); give chart mm (see "
                                        "coverage-planner zones --png)")
                custom[name] = shapely.make_valid(shapely.intersection(shapely.difference(polygon, held), domain))
                held = shapely.union(held, polygon)
        standard = canonical_outlines(face.subdivisions)
        return {name: custom[name] if name in custom else shapely.make_valid(shapely.difference(standard[name], held))
                for name in protocol.zones}

    # --- queries ------------------------------------------------------------------------

    @property
    def names(self) -> list:
        """Zone names, in protocol order."""
        return list(self.polygons)

    def dose(self, name: str):
        """The protocol's dose and depth settings for a zone."""
        return self.protocol.zone(name)

    def area_cm2(self, name: str) -> float:
        """Treatable skin area of a zone (cm^2)."""
        if name not in self.polygons:
            raise KeyError(f"unknown zone {name!r}; zones are {', '.join(self.names)}")
        if name not in self._area:
            self._area[name] = regions.skin_area_mm2(self.face, self.polygons[name]) / 100.0
        return self._area[name]

    @functools.cached_property
    def treatable(self) -> BaseGeometry:
        """Union of all zones' treatable polygons (chart)."""
        return shapely.union_all(list(self.polygons.values()))

    @functools.cached_property
    def triangle_labels(self) -> np.ndarray:
        """Zone index (:attr:`names`) of each face triangle's chart centroid; -1 if none."""
        face = self.face
        return self.label_at(face.uv[face.faces].mean(axis=1))

    def label_at(self, points: np.ndarray) -> np.ndarray:
        """Index into :attr:`names` of the zone holding each point; -1 if none.

        points : (k, 2) chart points (mm), or (k, 3) points on the face (mm, the face's
            frame; a point more than 0.5 mm off the surface is in no zone).

        A point's zone is the first (in :attr:`names` order) whose interior holds it
        (``shapely.contains_xy``). Most points are answered by the chart cell they lie in
        (:class:`LabelCells`), the rest polygon by polygon, each polygon asked only about the
        points inside its bounding box: the same answer, without asking every polygon about
        every point.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.ndim == 2 and points.shape[1] == 3:
            flat = self.face.flatten(points, max_dist_mm=0.5)
            uv = np.where((flat.tri >= 0)[:, None], flat.uv, np.nan)
        else:
            uv = points.reshape(-1, 2)
        polygons = tuple(self.polygons.values())
        made = self.__dict__.get("_label_cells")   # (the polygons it was made for, the cells)
        if made is None or len(made[0]) != len(polygons) or any(a is not b for a, b in zip(made[0], polygons)):
            made = self.__dict__["_label_cells"] = (polygons, label_cells(polygons))
        out, rest = made[1].lookup(uv)
        return _label_by_polygon(polygons, uv, out, rest)

    def __repr__(self) -> str:
        return f"ZoneMap({len(self.polygons)} zones, {len(self.exclusions)} exclusions)"


def _label_by_polygon(polygons, uv: np.ndarray, out: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Fill ``out`` at the indices ``rest`` with the first polygon whose interior holds the
    point (-1 if none): each polygon in turn, asked only about the points still unlabelled
    inside its bounding box (a point outside it is not in its interior)."""
    todo = np.asarray(rest, dtype=np.int64)
    for index, poly in enumerate(polygons):
        if not len(todo):
            break
        if poly.is_empty:
            continue
        x0, y0, x1, y1 = poly.bounds
        u, v = uv[todo, 0], uv[todo, 1]
        near = (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)
        ask = todo[near]
        if not len(ask):
            continue
        with GEOS_LOCK:
            hit = shapely.contains_xy(poly, uv[ask, 0], uv[ask, 1])
        out[ask[hit]] = index
        todo = np.concatenate([todo[~near], ask[~hit]])
    return out


class LabelCells:
    """Square chart cells (side ``cell_mm``) over zone polygons, each marked with what every
    point of the closed cell gets from the first-polygon-holding-it rule, where that is
    the same for all its points:

    * a cell that no polygon's boundary (nor any line or point of a polygon's geometry)
      can touch lies wholly inside or wholly outside each polygon, and so does each
      edge-connected set of such cells: it is marked with the zone of one of its cells'
      centres (``-1``: none);
    * ``-2``: a boundary may touch it: its points are asked one by one.

    A cell counts as touched when it meets the bounding box of a boundary segment, tested
    with exact comparisons against the cells' exact double edges, and the centre's zone
    comes from ``shapely.contains_xy`` itself, so a point inside a marked cell (also tested
    exactly) gets the answer ``contains_xy`` would give it.
    """

    def __init__(self, polygons: tuple, cell_mm: float):
        self.cell_mm = float(cell_mm)
        live = [p for p in polygons if not p.is_empty]
        if not live:
            self.u = self.v = None
            return
        lo = shapely.bounds(live)
        x0, y0, x1, y1 = lo[:, 0].min(), lo[:, 1].min(), lo[:, 2].max(), lo[:, 3].max()
        # at most MAX_LABEL_CELLS a side, whatever the polygons' extent
        self.cell_mm = max(self.cell_mm, max(x1 - x0, y1 - y0) / MAX_LABEL_CELLS)
        self.u = _cell_edges(x0, x1, self.cell_mm)
        self.v = _cell_edges(y0, y1, self.cell_mm)
        nu, nv = len(self.u) - 1, len(self.v) - 1
        touched = np.zeros((nv, nu), dtype=bool)
        a, b = _segments(live)
        _mark_boxes(touched, self.u, self.v, np.minimum(a, b), np.maximum(a, b))
        # untouched cells sharing an edge form a connected set that meets no linework
        # either, so one centre answers for each such component
        component, n = ndimage.label(~touched)
        first = np.unique(component.ravel(), return_index=True)[1][1:]   # a cell of each, skipping 0
        iv, iu = np.divmod(first, nu)
        centres = np.stack([0.5 * (self.u[iu] + self.u[iu + 1]), 0.5 * (self.v[iv] + self.v[iv + 1])], axis=1)
        marks = _label_by_polygon(polygons, centres, np.full(n, -1, dtype=np.int64), np.arange(n))
        self.state = np.concatenate([[-2], marks]).astype(np.int32)[component]

    def lookup(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(k,) int`` of the points a cell answers (-1 elsewhere too) and the indices
        ``(j,) int`` of the points left to ask polygon by polygon (the lift kernel's
        :func:`lifting.cell_labels`; :meth:`lookup_reference` is its NumPy twin)."""
        if self.u is None:   # no polygon holds anything
            return np.full(len(uv), -1, dtype=np.int64), np.empty(0, dtype=np.int64)
        return lifting.cell_labels(self.u, self.v, self.state, uv)

    def lookup_reference(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NumPy twin of :meth:`lookup`."""
        out = np.full(len(uv), -1, dtype=np.int64)
        if self.u is None:   # no polygon holds anything
            return out, np.empty(0, dtype=np.int64)
        u, v = uv[:, 0], uv[:, 1]
        iu, iv = _cell_index(self.u, u), _cell_index(self.v, v)
        # outside the grid (which covers every polygon's bounds) a point is in no zone;
        # a point that is not finite, or that rounding put in the wrong cell, is asked
        outside = (u < self.u[0]) | (u > self.u[-1]) | (v < self.v[0]) | (v > self.v[-1])
        inside = ((self.u[iu] <= u) & (u <= self.u[iu + 1]) & (self.v[iv] <= v) & (v <= self.v[iv + 1]))
        mark = np.where(inside, self.state[iv, iu], -2)
        known = outside | (mark != -2)
        out[known & ~outside] = mark[known & ~outside]
        return out, np.nonzero(~known)[0]


_LABEL_CELLS = regions.Memo(8)


def label_cells(polygons: tuple, cell_mm: float = LABEL_CELL_MM) -> LabelCells:
    """The :class:`LabelCells` of zone polygons, kept by the polygons' WKB: the verifier's
    own zone map and a re-lifted plan's have the same polygons as the planner's."""
    key = (tuple(regions.region_key(p) for p in polygons), float(cell_mm))
    return _LABEL_CELLS.get(key, lambda: LabelCells(polygons, cell_mm))


def _segments(geoms) -> tuple[np.ndarray, np.ndarray]:
    """Every segment of the geometries' linework (polygon rings, lines; a point is a segment
    of length 0): start and end points ``(s, 2) float``, twice."""
    parts = np.asarray(geoms, dtype=object)
    while True:   # down to single polygons, lines and points
        multi = np.isin(shapely.get_type_id(parts), (4, 5, 6, 7))
        if not multi.any():
            break
        parts = np.concatenate([parts[~multi], shapely.get_parts(parts[multi])])
    polygon = shapely.get_type_id(parts) == 3
    lines = np.concatenate([shapely.get_rings(parts[polygon]), parts[~polygon]])
    coords, index = shapely.get_coordinates(lines, return_index=True)
    same = index[1:] == index[:-1]
    return np.concatenate([coords[:-1][same], coords]), np.concatenate([coords[1:][same], coords])


def _mark_boxes(touched: np.ndarray, u: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Set ``touched`` on every cell (edges ``u``, ``v``) that meets a box ``[lo, hi]``
    (``(s, 2) float`` each): cell i meets [a, b] along an axis iff u[i] <= b and u[i+1] >= a."""
    i0 = np.searchsorted(u[1:], lo[:, 0], side="left")
    i1 = np.searchsorted(u[:-1], hi[:, 0], side="right") - 1
    j0 = np.searchsorted(v[1:], lo[:, 1], side="left")
    j1 = np.searchsorted(v[:-1], hi[:, 1], side="right") - 1
    ok = (i0 <= i1) & (j0 <= j1)
    i0, i1, j0, j1 = i0[ok], i1[ok], j0[ok], j1[ok]
    ni, nj = i1 - i0 + 1, j1 - j0 + 1
    count = ni * nj
    box = np.repeat(np.arange(len(count)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    dj, di = np.divmod(k, ni[box])
    touched[j0[box] + dj, i0[box] + di] = True


def _cell_edges(lo: float, hi: float, cell_mm: float) -> np.ndarray:
    """Cell edges ``(n + 1,) float`` from ``lo`` in steps of ``cell_mm``, the last one >= ``hi``."""
    n = max(int(np.ceil((hi - lo) / cell_mm)), 1)
    edges = lo + cell_mm * np.arange(n + 1, dtype=np.float64)
    while edges[-1] < hi:
        edges = np.append(edges, lo + cell_mm * len(edges))
    return edges


def _cell_index(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The cell ``(k,) int`` whose edges should bracket each coordinate (clipped to the grid;
    the caller checks the bracket exactly)."""
    with np.errstate(invalid="ignore"):
        index = np.floor((x - edges[0]) / (edges[1] - edges[0]))
    return np.clip(np.nan_to_num(index, nan=0.0), 0, len(edges) - 2).astype(np.int64)


@functools.lru_cache(maxsize=4)
def chart_domain(subdivisions: int) -> BaseGeometry:
    """The whole chart (the face oval) as one polygon."""
    return shapely.union_all(list(canonical_outlines(subdivisions).values()))


class LazyZoneMap(ZoneMap):
    """The standard zone map of a face (:meth:`ZoneMap.default`), built on first use: a
    re-lifted or loaded plan carries one, and what does not read it (re-lifting's hot path,
    exporting a trajectory) does not pay for it."""

    def __init__(self, face, protocol):
        self.face = face
        self.protocol = protocol

    def __getattr__(self, name):
        if name.startswith("__") or "outlines" in self.__dict__:
            raise AttributeError(name)
        built = ZoneMap.default(self.__dict__["face"], self.__dict__["protocol"])
        self.__dict__.update(built.__dict__)
        return getattr(self, name)

    def __repr__(self) -> str:
        return "ZoneMap(not built yet)" if "outlines" not in self.__dict__ else super().__repr__()
