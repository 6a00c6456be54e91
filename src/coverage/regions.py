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

Results are kept where they are pure and asked for again (the planner, the verifier's own
zone map and re-lifting widen the same exclusion parts and measure the same zones): the
cut of a region out of the chart triangles, and its triangulation, per resolution (every
face of a resolution shares its chart), keyed by the region's WKB; keep-outs per face
(faces are read-only), keyed by the region's WKB and the margin. A key is the region's
exact coordinates, never an object that could change.
"""
from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from . import contact, lifting, proximity
from . import template as _template
from .chart import canonical_chart
from .tasks import GEOS_LOCK

# Cuts and unions of triangles kept per resolution, keep-outs per face (least recently used
# dropped first): a plan reads ~30 regions (exclusion parts, zones, keep-outs), and the
# verifier and re-lifting cut the same ones again.
CUTS_PER_RESOLUTION = 128
UNIONS_PER_RESOLUTION = 16
KEEPOUTS_PER_FACE = 64


class Memo:
    """A small thread-safe least-recently-used map. Values are computed outside the lock: two
    threads may both compute a missing value (the same value: only pure results are kept)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, make):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


def region_key(region: BaseGeometry) -> bytes:
    """A cache key that is the region itself: equal WKB, equal coordinates and structure."""
    return shapely.to_wkb(region, hex=False, output_dimension=3, byte_order=1, include_srid=True)


class _Cut:
    """A chart region cut out of the chart triangles of one resolution (face-independent:
    every face of a resolution shares its chart)."""

    def __init__(self, inside: np.ndarray, partial: np.ndarray, pieces: np.ndarray, piece_area: np.ndarray):
        self.inside, self.partial, self.pieces, self.piece_area = _frozen(inside, partial, pieces, piece_area)
        self._triangulated = None
        self._skin_pieces = None

    def triangulated(self, uv: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The boundary pieces triangulated (constrained Delaunay in the chart): each
        triangle's parent mesh triangle ``(k,) int`` and the barycentrics of its corners in
        that parent ``(k, 3, 3) float``; ``uv``, ``faces``: the resolution's chart."""
        if self._triangulated is None:
            polys, source = _polygon_parts(self.pieces)
            tris, piece = _polygon_parts(shapely.constrained_delaunay_triangles(polys))
            if len(tris) == 0:
                parent, bary = np.empty(0, np.int64), np.empty((0, 3, 3))
            else:
                coords = shapely.get_coordinates(shapely.get_exterior_ring(tris)).reshape(len(tris), 4, 2)[:, :3]
                parent = self.partial[source[piece]]
                corners_uv = uv[faces[parent]]            # (k, 3, 2)
                edges = np.stack([corners_uv[:, 1] - corners_uv[:, 0], corners_uv[:, 2] - corners_uv[:, 0]], axis=2)
                local = np.einsum("kij,kpj->kpi", np.linalg.inv(edges), coords - corners_uv[:, None, 0])
                bary = np.concatenate([1.0 - local.sum(axis=2, keepdims=True), local], axis=2)
            self._triangulated = _frozen(parent, bary)
        return self._triangulated

    def skin_pieces(self, uv: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole triangles (identity barycentrics) then the triangulated pieces: ``parent
        (k,) int`` and ``bary (k, 3, 3) float``, as :func:`skin_pieces`."""
        if self._skin_pieces is None:
            parent, bary = self.triangulated(uv, faces)
            whole = np.broadcast_to(np.eye(3), (len(self.inside), 3, 3))
            if len(parent) == 0:
                out = self.inside.astype(np.int64), np.array(whole)
            else:
                out = np.concatenate([self.inside, parent]).astype(np.int64), np.concatenate([whole, bary])
            self._skin_pieces = _frozen(*out)
        return self._skin_pieces


class _Resolution:
    """The chart triangles of one resolution: their corners, bounding boxes and chart areas,
    their shapely polygons (made when first asked for, :meth:`polygons`), box queries over
    them (:meth:`query_box`, :meth:`query_boxes`: the sets an STRtree's envelope query gives),
    and the cuts of regions already made on it."""

    def __init__(self, subdivisions: int):
        self.uv = canonical_chart(subdivisions)
        self.faces = _template.template(subdivisions).faces
        # ax, ay, bx, by, cx, cy (contacts): uv[faces], gathered by np.take (~15 times faster
        # here than NumPy's fancy indexing of rows)
        self.corners = np.take(self.uv, self.faces, axis=0).reshape(-1, 6)
        ax, ay, bx, by, cx, cy = np.ascontiguousarray(self.corners.T)
        # each triangle's chart box, axis by axis (contiguous: a box query reads four columns)
        self.box = _frozen(np.minimum(np.minimum(ax, bx), cx), np.minimum(np.minimum(ay, by), cy),
                           np.maximum(np.maximum(ax, bx), cx), np.maximum(np.maximum(ay, by), cy))
        f = self.faces
        self.top_corner = np.maximum(np.maximum(f[:, 0], f[:, 1]), f[:, 2])   # the vertex a cut asks for a whole triangle
        # chart.signed_chart_areas' arithmetic, column by column (the same values)
        self.area = np.abs(0.5 * ((bx - ax) * (cy - ay) - (by - ay) * (cx - ax)))
        # slivers (none on the bundled chart): a triangle of (almost) no area may not be
        # "within" what holds it, so these always take the general predicates
        self.thin = self.area <= 1e-9 * float(np.median(self.area))
        self.cuts = Memo(CUTS_PER_RESOLUTION)
        self.unions = Memo(UNIONS_PER_RESOLUTION)
        # the polygons made so far (``made``) and the grid of the boxes, each made once
        # whichever thread asks first (pieces of a plan run on two threads)
        self._polys = np.empty(len(self.faces), dtype=object)
        self._made = np.zeros(len(self.faces), dtype=bool)
        self._grid = None
        self._lock = threading.Lock()

    # --- the triangles' polygons ----------------------------------------------------------

    def polygons(self, idx=None) -> np.ndarray:
        """The chart triangles' shapely polygons at ``idx`` (indices, or a boolean mask over
        the triangles; None: all), as ``ring_polygons(corners)`` makes them (the same WKB).
        Each is made once, when first asked for, and is the same object on every later call
        (from any thread: the making takes a lock; no GEOS predicate runs under it)."""
        m = len(self._polys)
        if idx is None:
            idx = np.arange(m)
        else:
            idx = np.asarray(idx)
            idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64, copy=False)
        made = self._made
        if not made[idx].all():
            with self._lock:
                todo = idx[~made[idx]]
                if len(todo):
                    todo = np.unique(np.where(todo < 0, todo + m, todo))
                    self._polys[todo] = ring_polygons(self.corners[todo].reshape(-1, 3, 2))
                    made[todo] = True        # after the polygons: a reader that sees it finds them
        return self._polys[idx]

    @property
    def polys(self) -> np.ndarray:
        """Every chart triangle's polygon (:meth:`polygons`; all of them made)."""
        return self.polygons()

    @functools.cached_property
    def tree(self) -> shapely.STRtree:
        """An STRtree of every chart triangle's polygon, for callers that want one; the
        package's own queries use :meth:`query_box` and :meth:`query_boxes` instead."""
        return shapely.STRtree(self.polygons())

    # --- box queries ------------------------------------------------------------------------

    def query_box(self, xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
        """The chart triangles whose boxes meet the box ``[xmin, xmax] x [ymin, ymax]``
        (closed: boxes that only touch meet), ascending: the set an STRtree's
        ``query(geometry)`` gives for a geometry of that envelope. A NaN bound meets nothing."""
        lx, ly, hx, hy = self.box
        return np.flatnonzero((lx <= xmax) & (hx >= xmin) & (ly <= ymax) & (hy >= ymin))

    def query_region(self, region: BaseGeometry) -> np.ndarray:
        """The chart triangles whose boxes meet the region's envelope, ascending (an empty
        region meets none)."""
        if region.is_empty:
            return np.empty(0, dtype=np.int64)
        return self.query_box(*shapely.bounds(region))

    def query_boxes(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each of the boxes ``[lo, hi]`` (``(s, 2) float``) paired with the chart triangles
        whose boxes meet it (closed): ``(box (k,), tri (k,))`` sorted by box, then triangle;
        the pairs an STRtree's ``query(geometries)`` gives for geometries of those
        envelopes. A box with a NaN bound meets nothing.

        The triangles' boxes are binned into a uniform grid (:class:`_BoxGrid`); a box
        meeting ``[lo, hi]`` shares a cell with it (the cell of a coordinate,
        ``floor((x - origin) / cell)`` clipped to the grid as :func:`coverage.lifting.bin_boxes`
        bins, is monotone in it; clipped before the cast, so however far out it is), so
        the exact box test of the triangles listed in the cells over ``[lo, hi]`` finds
        every pair; one met in several cells is kept once."""
        lo = np.asarray(lo, dtype=np.float64).reshape(-1, 2)
        hi = np.asarray(hi, dtype=np.float64).reshape(-1, 2)
        q = np.stack([lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]])       # (4, s): rows xmin, ymin, xmax, ymax
        ok = None
        nan = np.isnan(q).any(axis=0)
        if nan.any():
            ok = np.flatnonzero(~nan)
            q = np.ascontiguousarray(q[:, ok])
        m = len(self.faces)
        if q.shape[1] == 0 or m == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        g = self._box_grid()
        x0, y0, x1, y1 = np.clip(np.floor((q - g.origin4) / g.cell), 0, g.upper4).astype(np.int64)
        qlx, qly, qhx, qhy = q
        width = x1 - x0 + 1
        cells = width * (y1 - y0 + 1)
        # long boxes (many cells) are taken a part at a time, so that no part lists too many
        # (box, cell) and (box, triangle) pairs
        bounds = [0, len(cells)]
        if int(cells.sum()) * (g.most + 1) > _PAIRS_PER_PART:
            weight = np.cumsum(cells) * (g.most + 1)
            cuts = np.searchsorted(weight, np.arange(_PAIRS_PER_PART, int(weight[-1]), _PAIRS_PER_PART), side="right")
            bounds = np.unique(np.concatenate([bounds, cuts]).astype(np.int64))
        lx, ly, hx, hy = self.box
        keys = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a >= b:
                continue
            n = cells[a:b]
            box = np.repeat(np.arange(a, b), n)
            local = np.arange(len(box)) - np.repeat(np.cumsum(n) - n, n)
            w = width.take(box)
            cell = (x0.take(box) + local % w) + (y0.take(box) + local // w) * g.shape[0]
            first = g.start.take(cell)
            count = g.start.take(cell + 1) - first
            box = np.repeat(box, count)
            tri = g.items.take(np.repeat(first - (np.cumsum(count) - count), count) + np.arange(len(box)))
            meet = ((lx.take(tri) <= qhx.take(box)) & (hx.take(tri) >= qlx.take(box))
                    & (ly.take(tri) <= qhy.take(box)) & (hy.take(tri) >= qly.take(box)))
            keys.append((box * m + tri)[meet])
        key = np.sort(np.concatenate(keys))
        if len(key) > 1:
            key = key[np.concatenate([[True], key[1:] != key[:-1]])]
        box, tri = np.divmod(key, m)
        return (box if ok is None else ok.take(box)), tri

    def _box_grid(self) -> "_BoxGrid":
        if self._grid is None:
            with self._lock:
                if self._grid is None:
                    self._grid = _BoxGrid(*self.box)
        return self._grid


# a box query lists at most about this many (box, cell) and (box, triangle) pairs at once
_PAIRS_PER_PART = 1 << 20


class _BoxGrid:
    """The chart triangles' boxes binned into a uniform grid (:func:`coverage.lifting.bin_boxes`):
    cell ``c`` (x fastest) lists ``items[start[c]:start[c + 1]]``, ascending, every triangle
    whose box meets the cell; ``most``: the longest list. The cell is the mean triangle
    box's longer side (a few triangles a cell), at most about four cells a triangle."""

    def __init__(self, lx, ly, hx, hy):
        m = len(lx)
        self.origin = np.array([lx.min(), ly.min()]) if m else np.zeros(2)
        top = np.array([hx.max(), hy.max()]) if m else np.zeros(2)
        extent = np.maximum(top - self.origin, 1e-9)
        side = float(np.maximum(hx - lx, hy - ly).mean()) if m else 0.0
        self.cell = max(side, float(np.sqrt(np.prod(extent) / (4.0 * max(m, 1)))), 1e-9)
        self.shape = tuple(int(n) for n in np.floor(extent / self.cell).astype(np.int64) + 1)
        self.start, self.items = lifting.bin_boxes(np.stack([lx, ly], axis=1), np.stack([hx, hy], axis=1),
                                                   self.origin, self.cell, self.shape)
        self.most = int(np.diff(self.start).max(initial=0))
        # per row of a (4, s) array of boxes (xmin, ymin, xmax, ymax): the origin, the last cell
        self.origin4 = self.origin[[0, 1, 0, 1], None]
        self.upper4 = np.array([self.shape[0] - 1, self.shape[1] - 1] * 2, dtype=np.float64)[:, None]


def ring_polygons(corners: np.ndarray) -> np.ndarray:
    """Shapely polygons from the corners ``(m, k, 2) float`` of their exterior rings
    (``k >= 3``): the same polygons (the same WKB) as ``shapely.polygons(corners)``, made from
    one coordinate array by ``shapely.from_ragged_array`` in about half the time.

    As ``shapely.polygons`` does, a ring is closed by repeating its first corner, except a
    ring of four or more corners whose last corner already equals its first.
    """
    corners = np.asarray(corners, dtype=np.float64)
    m, k = corners.shape[:2]
    if m == 0:
        return np.empty(0, dtype=object)
    closed = np.concatenate([corners, corners[:, :1]], axis=1)
    if k == 3:
        coords = closed.reshape(-1, 2)
        length = np.full(m, k + 1, dtype=np.int64)
    else:
        length = k + (corners[:, 0] != corners[:, -1]).any(axis=1)
        keep = np.ones((m, k + 1), dtype=bool)
        keep[:, k] = length > k
        coords = closed[keep]
    offsets = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, np.ascontiguousarray(coords),
                                     (offsets, np.arange(m + 1, dtype=np.int64)))


@functools.lru_cache(maxsize=4)
def _resolution(subdivisions: int) -> _Resolution:
    return _Resolution(subdivisions)


def empty() -> BaseGeometry:
    return shapely.Polygon()


_NO_CUT = _Cut(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, object), np.empty(0))


def _cut(subdivisions: int, region: BaseGeometry) -> _Cut:
    """The region's cut of the chart triangles (kept per resolution and region)."""
    if region.is_empty:
        return _NO_CUT
    res = _resolution(subdivisions)
    return res.cuts.get(region_key(region), lambda: _make_cut(res, region))


def _make_cut(res: _Resolution, region: BaseGeometry) -> _Cut:
    """Cut a region: the triangles within it, and the others' pieces of positive area."""
    with GEOS_LOCK:     # the region may be another thread's too: see coverage.tasks.GEOS_LOCK
        shapely.prepare(region)
        intersecting, within, known = _classify_contacts(res, region)
    inside = intersecting[within]
    partial = intersecting[~within]
    # a triangle that only touches the region (a shared edge or corner, interiors apart)
    # has a piece of no area, which is dropped below: where the boundary's contacts did not
    # already say so, the prepared predicate does, several times faster than the overlay
    # would (slivers are cut all the same)
    touching = known[~within]
    ask = np.flatnonzero(~touching)
    with GEOS_LOCK:
        touching[ask] = shapely.touches(region, res.polygons(partial[ask])) & ~res.thin[partial[ask]]
    partial = partial[~touching]
    pieces = shapely.intersection(res.polygons(partial), region)
    area = shapely.area(pieces)
    keep = area > 0
    return _Cut(inside, partial[keep], pieces[keep], area[keep])


def _classify(res: _Resolution, region: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The chart triangles that intersect a (prepared) region, ascending, and whether each
    lies within it (see :func:`_classify_contacts`)."""
    with GEOS_LOCK:
        return _classify_contacts(res, region)[:2]


def boundary_pairs(res: _Resolution, region: BaseGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A polygonal region's boundary paired with the chart triangles near it, as a cut decides
    their contacts: ``(ends (s, 4), seg (k,), tri (k,))``, the boundary's segments then its
    vertices (segments of no length) as ``px, py, qx, qy``, and each pair of a segment and a
    chart triangle whose boxes meet (closed boxes), sorted by segment, then triangle."""
    coords, index = shapely.get_coordinates(shapely.get_rings(shapely.get_parts(region)), return_index=True)
    edge = (index[1:] == index[:-1]) & (coords[:-1] != coords[1:]).any(axis=1)
    ends = np.concatenate([np.hstack([coords[:-1][edge], coords[1:][edge]]), np.hstack([coords, coords])])
    seg, tri = res.query_boxes(np.minimum(ends[:, :2], ends[:, 2:]), np.maximum(ends[:, :2], ends[:, 2:]))
    return ends, seg, tri


def _classify_contacts(res: _Resolution, region: BaseGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chart triangles that intersect a (prepared) region, ascending (the set of an
    STRtree's ``query(region, predicate="intersects")``), whether each lies within it, and whether
    its contact with the region is known without the general predicates (such a triangle,
    when not within the region, only touches it: interiors apart).

    The general path asks both predicates of every triangle near the region. For a
    polygonal region most triangles need neither: a triangle that meets no segment or
    vertex of the region's boundary lies wholly in the region's interior or wholly outside
    it (a triangle is connected), and any one corner tells which (``contains_xy``, each
    vertex asked once for the triangles it answers for). Nor do most
    triangles the boundary does meet: where it meets only their edges and corners (an
    outline drawn along mesh edges, through mesh vertices), the interior again lies wholly
    on one side, and an interior point tells which; such a triangle intersects the region
    (it meets its boundary), and lies within it or only touches it. Which triangles the
    boundary meets, and where, is decided exactly pair by pair (:func:`coverage.contact.contacts`,
    each segment and vertex with the triangles whose boxes meet its box). The triangles
    whose interiors it crosses, any whose contact or interior point is not certain, and any
    sliver of a chart triangle are asked the general predicates.
    """
    if shapely.get_type_id(region) not in (3, 6):
        candidates = res.query_region(region)    # bounding boxes meet, then the predicate
        near = res.polygons(candidates)
        meets = shapely.intersects(region, near)
        candidates = candidates[meets]
        return candidates, shapely.within(near[meets], region), np.zeros(len(candidates), dtype=bool)
    candidates = res.query_region(region)        # bounding boxes meet; ascending
    ends, seg, tri = boundary_pairs(res, region)
    codes = contact.contacts(res.corners, ends, tri, seg)
    general = res.thin.copy()                    # the boundary meets it (or may)
    general[tri[codes != contact.DISJOINT]] = True
    crossed = res.thin.copy()                    # ... and may meet its interior
    crossed[tri[codes >= contact.INTERIOR]] = True
    ask = general[candidates]
    # any corner of a triangle the boundary misses answers for all of it: each is asked at
    # its highest-numbered corner, and each such vertex once (about 3 triangles a vertex)
    corner = res.top_corner[candidates[~ask]]
    asked = np.zeros(len(res.uv), dtype=bool)
    asked[corner] = True
    asked = np.flatnonzero(asked)
    holds = np.zeros(len(res.uv), dtype=bool)
    holds[asked] = shapely.contains_xy(region, res.uv[asked, 0], res.uv[asked, 1])
    meets = np.empty(len(candidates), dtype=bool)
    within = np.empty(len(candidates), dtype=bool)
    within[~ask] = meets[~ask] = holds[corner]
    known = np.zeros(len(candidates), dtype=bool)
    touched = np.flatnonzero(ask)
    touched = touched[~crossed[candidates[touched]]]
    if len(touched):
        # an interior point of each: the centroid, where it is certainly inside
        t = res.corners[candidates[touched]]
        centre = np.stack([(t[:, 0] + t[:, 2] + t[:, 4]) / 3.0, (t[:, 1] + t[:, 3] + t[:, 5]) / 3.0], axis=1)
        own = np.arange(len(t))
        inner = contact.contacts(t, np.hstack([centre, centre]), own, own) == contact.INTERIOR
        touched = touched[inner]
        meets[touched] = True
        within[touched] = shapely.contains_xy(region, centre[inner, 0], centre[inner, 1])
        known[touched] = True
    rest = ask & ~known
    near = res.polygons(candidates[rest])
    meets[rest] = shapely.intersects(region, near)
    within[rest] = shapely.within(near, region)
    return candidates[meets], within[meets], known[meets]


def _split_triangles(face, region: BaseGeometry):
    """Triangles inside the region, and the chart pieces of those on its boundary.

    Returns ``(inside (k,) int, partial (j,) int, pieces (j,) geometries)``, read-only
    (shared by every face of the resolution).
    """
    cut = _cut(face.subdivisions, region)
    return cut.inside, cut.partial, cut.pieces


def skin_area_mm2(face, region: BaseGeometry) -> float:
    """Skin area (mm^2) of a chart region on this face."""
    cut = _cut(face.subdivisions, region)
    chart_area = _resolution(face.subdivisions).area
    scale = face.area_scale
    inside, partial = cut.inside, cut.partial
    return float((chart_area[inside] * scale[inside]).sum() + (cut.piece_area * scale[partial]).sum())


def _polygon_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polygon parts of each geometry with positive area, and the index of their source."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)
    return parts[keep], index[keep]


def skin_pieces(face, region: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The region's own surface as face-relative triangles, the same on every face of the
    resolution: ``parent (k,) int`` and the barycentrics ``(k, 3, 3) float`` of each
    triangle's corners in its parent (whole mesh triangles first, identity barycentrics,
    then the boundary pieces). Read-only arrays, kept per resolution and region."""
    if region.is_empty:
        return np.empty(0, np.int64), np.empty((0, 3, 3))
    return _cut(face.subdivisions, region).skin_pieces(face.uv, face.faces)


def region_triangles_3d(face, region: BaseGeometry) -> np.ndarray:
    """The region's own surface as 3D triangles ``(k, 3, 3) float`` (mm).

    Whole mesh triangles inside the region, plus the boundary triangles' pieces
    (constrained Delaunay in the chart) mapped to 3D by their triangle's affine map.
    The cut and its triangulation depend on the chart only, so they are kept per
    resolution and region; only the last step, to this face's 3D, is done per call.
    """
    cut = _cut(face.subdivisions, region)
    whole = face.vertices[face.faces[cut.inside]]
    parent, bary = cut.triangulated(face.uv, face.faces)
    if len(parent) == 0:
        return whole
    corners_3d = face.vertices[face.faces[parent]]      # (k, 3, 3)
    return np.concatenate([whole, np.einsum("kpj,kjd->kpd", bary, corners_3d)])


# the least cell (mm) a region's surface is binned in: the pen's footprint clearance
# searches these grids (coverage.pen.CLEAR_CELL_MM, the same 2 mm), and a keep-out's
# vertices searched in them take no longer than in the ~1 mm cells of twice the median edge
# (the closest point does not depend on the binning: one grid serves both)
REGION_GRID_CELL_MM = 2.0


def region_grid(face, region: BaseGeometry):
    """The region's own surface (:func:`region_triangles_3d`, corner-distinct triangles) binned
    for closest-point searches (:func:`coverage.proximity.build_grid`: cells of twice the
    median edge, at least :data:`REGION_GRID_CELL_MM`), None where it has no triangle. Kept
    with the face, keyed by the region's WKB: the keep-outs search it, and the pen's
    footprint clearance searches the same exclusion parts again."""
    if region.is_empty:
        return None
    memo = _memo_of(_GRIDS, face)
    if memo is None:
        return _region_grid(face, region)
    return memo.get(region_key(region), lambda: _region_grid(face, region))


def _region_grid(face, region: BaseGeometry):
    tris = region_triangles_3d(face, region)
    if len(tris) == 0:
        return None
    vertices = np.ascontiguousarray(tris.reshape(-1, 3))
    return proximity.build_grid(vertices, np.arange(len(vertices), dtype=np.int64).reshape(-1, 3),
                                min_cell=REGION_GRID_CELL_MM)


def distance_to_region(face, region: BaseGeometry, max_dist_mm: float) -> np.ndarray:
    """3D distance (mm) from every face vertex to the region's surface; inf beyond max_dist."""
    grid = region_grid(face, region)
    out = np.full(len(face.vertices), np.inf)
    if grid is None:
        return out
    vertices = grid.vertices
    # only vertices within max_dist of the region's box can be within max_dist of it
    query = np.arange(len(face.vertices))
    if np.isfinite(max_dist_mm):
        lo, hi = vertices.min(axis=0) - max_dist_mm, vertices.max(axis=0) + max_dist_mm
        v = face.vertices
        query = np.flatnonzero((v[:, 0] >= lo[0]) & (v[:, 0] <= hi[0]) & (v[:, 1] >= lo[1]) & (v[:, 1] <= hi[1])
                               & (v[:, 2] >= lo[2]) & (v[:, 2] <= hi[2]))
    if max_dist_mm > 0:
        # a vertex that is the first or second corner of a whole triangle of the region is
        # at distance 0 exactly, as the search finds it: the closest-point walk puts such a
        # point in that corner's own region (p = a: d1 = d2 = 0; p = b: d3 = d4 = 0, or
        # a = b), and its point there is the corner itself, p - p = 0 (see
        # closest_on_triangle); no distance is below 0, and 0 is below max_dist
        corner = np.zeros(len(face.vertices), dtype=bool)
        corner[face.faces[_cut(face.subdivisions, region).inside][:, :2]] = True
        out[corner] = 0.0
        query = query[~corner[query]]
    if len(query) == 0:
        return out
    tri, _, dist = proximity.closest_points(grid, face.vertices[query], max_dist=max_dist_mm)
    found = tri >= 0
    out[query[found]] = dist[found]
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
    below = (field < level)[faces]   # per vertex, then gathered: fewer comparisons
    count = below[:, 0].astype(np.int64) + below[:, 1] + below[:, 2]
    polys = [_resolution(face.subdivisions).polygons(count == 3)]   # whole triangles: the chart's own

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
        polys.append(ring_polygons(ring))
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
    """Union of the chart triangles selected by ``mask (m,) bool`` (kept per resolution and
    mask: a scan's unobserved skin is merged again by the verifier and re-lifting)."""
    res = _resolution(face.subdivisions)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return empty()
    key = (mask.shape, np.packbits(mask).tobytes())
    return res.unions.get(key, lambda: _union_of_pieces(res.polygons(mask)))


def interpolation_slack_mm(longest_edge_mm: float, margin_mm: float) -> float:
    """Extra margin covering linear interpolation of a distance field over one triangle.

    The distance to a set is semi-concave with constant 1/d: along an edge of length h the
    linear interpolant exceeds it by at most h^2 / (8 d), d >= the margin near the
    contour. Given the longest edge there, plus 0.01 mm for rounding.
    """
    h = longest_edge_mm
    return h * h / (8.0 * max(margin_mm, h)) + 0.01


_KEEPOUTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_KEEPOUTS_LOCK = threading.Lock()


def _memo_of(store: "weakref.WeakKeyDictionary", face) -> Memo | None:
    """The results already kept in ``store`` for this face (kept as long as the face lives,
    as its own cached properties are); None for a face that cannot carry them."""
    with _KEEPOUTS_LOCK:
        try:
            memo = store.get(face)
            if memo is None:
                memo = store[face] = Memo(KEEPOUTS_PER_FACE)
        except TypeError:   # not hashable or not weakly referenceable
            return None
    return memo


_GRIDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # face -> its region grids (region_grid)


def keepout(face, region: BaseGeometry, margin_mm: float) -> BaseGeometry:
    """The region plus every point of the face within ``margin_mm`` of it (3D distance).

    A pure function of the face (read-only), the region and the margin, so each result is
    kept with the face, keyed by the region's WKB and the margin: the planner, the
    verifier's own zone map and re-lifting all widen the same exclusion parts.
    """
    if region.is_empty:
        return empty()
    if margin_mm <= 0:
        return region
    memo = _memo_of(_KEEPOUTS, face)
    if memo is None:
        return _keepout(face, region, margin_mm)
    return memo.get((region_key(region), float(margin_mm)), lambda: _keepout(face, region, margin_mm))


def _keepout(face, region: BaseGeometry, margin_mm: float) -> BaseGeometry:
    reach = margin_mm + interpolation_slack_mm(face.longest_edge_mm, margin_mm) + 1.0
    dist = distance_to_region(face, region, max_dist_mm=reach)
    # the slack needs the longest edge where the contour can run, not the face's longest
    close = dist < reach
    f = face.faces
    near = close[f[:, 0]] | close[f[:, 1]] | close[f[:, 2]]
    longest = float(face.triangle_longest_edge_mm[near].max()) if near.any() else face.longest_edge_mm
    level = margin_mm + interpolation_slack_mm(longest, margin_mm)
    # beyond the search the distance is at least `reach`: using `reach` there can only
    # widen the keep-out, never narrow it
    dist = np.minimum(dist, reach)
    grown = sublevel_region(face, dist, level)
    return shapely.make_valid(shapely.union(grown, region))
