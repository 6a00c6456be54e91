"""Pictures: the zone map, and a plan for trainers (overview figure, session GIF, PDF handout).

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state), so the library
can draw from threads and servers without a display. Every view of the face is the front
view of the canonical frame (x the subject's left, y up), whatever the input mesh's pose.
The interactive 3D page is :mod:`coverage.page`.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch, PathPatch
from matplotlib.path import Path as MplPath
from shapely.ops import polylabel

from .errors import CoverageError
from .fileio import atomic_path, check_output

# one colour per standard zone; left and right share a hue, the right a shade darker
ZONE_COLOURS = {
    "forehead": "#f2c57c", "glabella": "#b5d99c",
    "temple_left": "#d9a3d9", "temple_right": "#c48bc4",
    "periorbital_left": "#9ec9f0", "periorbital_right": "#7fb2e0",
    "nose": "#f4a6a6",
    "cheek_left": "#f7d6a0", "cheek_right": "#ecc486",
    "zygoma_left": "#a8dcd1", "zygoma_right": "#8ccabd",
    "perioral": "#c9b3e6", "chin": "#e6c3a1",
    "jaw_left": "#bcd4a0", "jaw_right": "#a6c487",
}
EXTRA_COLOURS = ("#e8e27a", "#9bd3e8", "#e8a0c0", "#b0b0e8", "#d0e8a0")
EXCLUDED = "#d9d9d9"
UNOBSERVED = "#8c8c8c"
KEEPOUT_EDGE = "#b2182b"


def zone_colours(names) -> dict:
    """A colour per zone name (standard zones fixed, user zones from a spare palette)."""
    out, spare = {}, iter(EXTRA_COLOURS * 10)
    for name in names:
        out[name] = ZONE_COLOURS.get(name) or next(spare)
    return out


def short_label(name: str) -> str:
    """``cheek_left`` -> ``cheek L`` (the subject's left)."""
    for side, tag in (("_left", " L"), ("_right", " R")):
        if name.endswith(side):
            return name[: -len(side)] + tag
    return name


def geometry_path(geom, transform=None) -> MplPath | None:
    """A matplotlib path of a shapely (multi)polygon, holes included."""
    vertices, codes = [], []
    for poly in shapely.get_parts(geom):
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        for ring in [poly.exterior, *poly.interiors]:
            xy = np.asarray(ring.coords)[:, :2]
            if transform is not None:
                xy = transform(xy)
            if len(xy) < 3 or not np.isfinite(xy).all():
                continue
            vertices.append(xy)
            codes.append([MplPath.MOVETO] + [MplPath.LINETO] * (len(xy) - 2) + [MplPath.CLOSEPOLY])
    if not vertices:
        return None
    return MplPath(np.concatenate(vertices), np.concatenate(codes))


def _add_geometry(ax, geom, transform=None, **style) -> None:
    path = geometry_path(geom, transform)
    if path is not None:
        ax.add_patch(PathPatch(path, **style))


def _outline(ax, geom, transform=None, **style) -> None:
    for poly in shapely.get_parts(geom):
        if poly.geom_type != "Polygon":
            continue
        for ring in [poly.exterior, *poly.interiors]:
            xy = np.asarray(ring.coords)[:, :2]
            if transform is not None:
                xy = transform(xy)
            ax.plot(xy[:, 0], xy[:, 1], **style)


def _label_point(geom) -> tuple[float, float] | None:
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]
    if not parts:
        return None
    largest = max(parts, key=lambda p: p.area)
    point = polylabel(largest, tolerance=0.5)
    return point.x, point.y


def _front_xy(face, uv: np.ndarray) -> np.ndarray:
    """Front-view (x, y) in the canonical frame of chart points, via the surface."""
    return face.to_canonical_frame(face.lift(uv).points)[:, :2]


def _front_projection(face):
    """Chart polyline -> front-view (x, y), densified to 0.5 mm so it follows the surface."""
    def project(uv):
        dense = shapely.get_coordinates(shapely.segmentize(shapely.LineString(uv), 0.5))
        return _front_xy(face, dense)
    return project


def draw_chart_view(ax, zones) -> None:
    """Zones coloured and labelled in the chart; exclusions hatched; keep-outs outlined."""
    colours = zone_colours(zones.names)
    for name, poly in zones.polygons.items():
        _add_geometry(ax, poly, facecolor=colours[name], edgecolor="white", linewidth=0.6)
    for exc in zones.exclusions.values():
        unobserved = exc.name == "unobserved"
        _add_geometry(ax, exc.region, facecolor=UNOBSERVED if unobserved else EXCLUDED,
                      edgecolor="#555555", hatch="xx" if unobserved else "////", linewidth=0.5)
        _outline(ax, exc.keepout, color=KEEPOUT_EDGE, linewidth=0.8, linestyle="--")
    for name, poly in zones.polygons.items():
        at = _label_point(poly)
        if at is not None:
            ax.text(*at, short_label(name), ha="center", va="center", fontsize=7)
    ax.set_aspect("equal")
    domain = zones.face.uv
    ax.set_xlim(domain[:, 0].min() - 3, domain[:, 0].max() + 3)
    ax.set_ylim(domain[:, 1].min() - 3, domain[:, 1].max() + 3)
    ax.set_xlabel("chart u (mm, subject's left →)")
    ax.set_ylabel("chart v (mm, up)")
    ax.set_title("Chart (flattened skin)")


def shaded_colours(face, base_rgb: np.ndarray) -> np.ndarray:
    """Per-triangle colours lit from the front and above (Lambert plus ambient)."""
    p = face.to_canonical_frame(face.vertices)[face.faces]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    light = np.array([0.25, 0.45, 1.0])
    light /= np.linalg.norm(light)
    shade = 0.45 + 0.55 * np.clip(normal @ light, 0.0, 1.0)
    return np.clip(base_rgb * shade[:, None], 0.0, 1.0)


def front_triangles(face) -> tuple[np.ndarray, np.ndarray]:
    """Front-view triangles far to near (painter's order): ``(order (m,), xy (m, 3, 2) mm)``."""
    p = face.to_canonical_frame(face.vertices)[face.faces]
    order = np.argsort(p[:, :, 2].mean(axis=1))
    return order, p[order][:, :, :2]


def zone_rgb(zones, lighten: float = 0.0) -> np.ndarray:
    """Per-triangle zone colours ``(m, 3)``: excluded skin grey, unobserved dark grey; mixed
    with white by ``lighten`` (0 keeps the zone colours, 1 is white)."""
    face = zones.face
    colours = zone_colours(zones.names)
    palette = np.array([to_rgb(colours[n]) for n in zones.names] + [to_rgb(EXCLUDED)])
    palette = palette + (1.0 - palette) * lighten
    label = zones.triangle_labels
    rgb = palette[np.where(label >= 0, label, len(zones.names))]
    rgb[~face.treatable_triangles] = to_rgb(UNOBSERVED)
    return rgb


def draw_face(ax, face, rgb: np.ndarray, *, rasterized: bool = False) -> PolyCollection:
    """The face's triangles in the front view, coloured ``rgb (m, 3)`` and shaded."""
    order, xy = front_triangles(face)
    shaded = shaded_colours(face, rgb)
    collection = PolyCollection(xy, facecolors=shaded[order], edgecolors="none", antialiased=False,
                                rasterized=rasterized)
    ax.add_collection(collection)
    return collection


def exclusion_outlines(zones, tolerance_mm: float = 0.0) -> list:
    """Front-view outlines of the exclusions: ``[(kind, xy (n, 2)), ...]`` with kind
    ``"region"`` (hatched) or ``"keepout"`` (its margin's edge, dashed), simplified to within
    ``tolerance_mm`` if positive."""
    dense = _front_projection(zones.face)

    def project(uv):
        xy = dense(uv)
        if tolerance_mm > 0 and len(xy) > 3 and np.isfinite(xy).all():
            xy = shapely.get_coordinates(shapely.simplify(shapely.LineString(xy), tolerance_mm))
        return xy

    out = []
    for exc in zones.exclusions.values():
        for poly in shapely.get_parts(exc.region):
            if poly.geom_type == "Polygon" and exc.name != "unobserved":
                xy = project(np.asarray(poly.exterior.coords))
                out.append(("region", xy[np.isfinite(xy).all(axis=1)]))
        for poly in shapely.get_parts(exc.keepout):
            if poly.geom_type == "Polygon":
                out.append(("keepout", project(np.asarray(poly.exterior.coords))))
    return out


def draw_exclusions(ax, zones, *, hatch: str = "////", outlines: list | None = None) -> None:
    """Exclusions hatched and their keep-out edges dashed, in the front view (``outlines``:
    :func:`exclusion_outlines`, when drawn many times)."""
    for kind, xy in exclusion_outlines(zones) if outlines is None else outlines:
        if kind == "region":
            ax.add_artist(PathPatch(MplPath(xy), facecolor="none", edgecolor="#444444", hatch=hatch,
                                    linewidth=0.5, transform=ax.transData))
        else:
            ax.plot(xy[:, 0], xy[:, 1], color=KEEPOUT_EDGE, linewidth=0.8, linestyle="--")


def label_zones(ax, zones, **style) -> None:
    """Each zone's short name at its pole of inaccessibility, in the front view."""
    style = {"ha": "center", "va": "center", "fontsize": 7, **style}
    for name, poly in zones.polygons.items():
        at = _label_point(poly)
        if at is not None:
            xy = _front_xy(zones.face, np.array([at]))[0]
            if np.isfinite(xy).all():
                ax.text(*xy, short_label(name), **style)


def _front_limits(ax, face, pad_mm: float = 3.0) -> None:
    xy = face.to_canonical_frame(face.vertices)[:, :2]
    ax.set_xlim(xy[:, 0].min() - pad_mm, xy[:, 0].max() + pad_mm)
    ax.set_ylim(xy[:, 1].min() - pad_mm, xy[:, 1].max() + pad_mm)
    ax.set_aspect("equal")


def draw_front_view(ax, zones) -> None:
    """The face seen from the front (canonical frame), triangles coloured by zone and shaded."""
    draw_face(ax, zones.face, zone_rgb(zones))
    draw_exclusions(ax, zones)
    label_zones(ax, zones)
    _front_limits(ax, zones.face)
    ax.set_xlabel("x (mm, subject's left →)")
    ax.set_ylabel("y (mm, up)")
    ax.set_title("Front view (shaded)")


def zone_map_figure(zones) -> Figure:
    """Two panels: the chart view and the shaded front view of the zone map."""
    fig = Figure(figsize=(16, 8.5), dpi=120)
    FigureCanvasAgg(fig)
    chart_ax, front_ax = fig.subplots(1, 2)
    draw_chart_view(chart_ax, zones)
    draw_front_view(front_ax, zones)
    handles = [Patch(facecolor=EXCLUDED, edgecolor="#555555", hatch="////", label="excluded (eyes and upper lids, lips, nostrils, brows, lesions)"),
               Line2D([], [], color=KEEPOUT_EDGE, linestyle="--", label="keep-out edge (margin on the skin + positioning error)")]
    if "unobserved" in zones.exclusions:
        handles.append(Patch(facecolor=UNOBSERVED, edgecolor="#555555", hatch="xx", label="unobserved skin"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(f"Zone map: {zones.face.source or 'face'} — protocol {zones.protocol.name}", fontsize=12)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.92, bottom=0.1, wspace=0.15)
    return fig


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def save_figure(fig: Figure, path) -> None:
    """Save a figure atomically; the format follows the file's suffix (png, svg or pdf)."""
    check_output(path, FIGURE_SUFFIXES)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lower().lstrip("."))


# --- plans: shared pieces ----------------------------------------------------------------

DIRECTIONS_DEG = (0.0, 45.0, 90.0, 135.0)
BORDER = "border"   # roller headland passes and pen contour loops follow a border, not a direction
# Okabe-Ito hues: told apart with every common colour-vision deficiency
DIRECTION_COLOURS = {"0°": "#0072B2", "45°": "#009E73", "90°": "#D55E00", "135°": "#CC79A7", BORDER: "#222222"}
PEN_STYLES = {"raster": {"color": "#7a5a3a", "linestyle": "-"},
              "contour": {"color": "#00585a", "linestyle": "-"},
              "touch-up": {"color": "#4a3520", "linestyle": (0, (1.2, 1.2))}}
DENSITY_CMAP = "viridis"
NO_DOSE = "#cfcfcf"          # skin that is not treated (excluded, margins, unobserved)
HALO = [patheffects.withStroke(linewidth=2.2, foreground="white")]
NUMBER_BOX = {"boxstyle": "square,pad=0.08", "facecolor": "white", "edgecolor": "none", "alpha": 0.75}


def direction_key(stroke) -> str:
    """A stroke's direction class: ``"0°"``, ``"45°"``, ``"90°"`` or ``"135°"`` (the nearest,
    modulo 180°) for straight passes; ``"border"`` for roller headland passes and pen contour
    loops, which follow a zone's border."""
    if stroke.direction_deg is None or stroke.pattern in ("headland", "contour"):
        return BORDER
    d = float(stroke.direction_deg) % 180.0
    nearest = min(DIRECTIONS_DEG, key=lambda a: min(abs(d - a), 180.0 - abs(d - a)))
    return f"{nearest:g}°"


@dataclass(frozen=True)
class Sweep:
    """Consecutive strokes done as one pass: a roller sweep over a region (its parallel lines,
    then its headland along the border), or a pen pass over one zone."""

    number: int          # 1, 2, ... in session order
    device: str
    pattern: str         # roller: "lines"; pen: "raster", "contour" or "touch-up"
    direction: str       # direction_key of its straight strokes (or "border")
    zones: tuple         # main zones of its strokes, in order of first appearance
    strokes: tuple       # stroke ids in execution order
    start_s: float
    end_s: float


def plan_sweeps(plan) -> list:
    """The plan's strokes grouped into :class:`Sweep` objects, in session order."""
    groups, key = [], None
    for s in plan.strokes:
        if s.device == "roller":
            # a headland pass closes the sweep it follows
            k = key if (s.pattern == "headland" and key and key[0] == "roller") else ("roller", s.pass_index,
                                                                                     direction_key(s))
        else:
            k = ("pen", s.zone, s.pass_index, s.pattern, direction_key(s))
        if k != key or not groups:
            groups.append([])
            key = k
        groups[-1].append(s)
    out = []
    for i, g in enumerate(groups):
        straight = [s for s in g if s.pattern not in ("headland", "contour")] or g
        pattern = "lines" if g[0].device == "roller" else g[0].pattern
        out.append(Sweep(i + 1, g[0].device, pattern, direction_key(straight[0]),
                         tuple(dict.fromkeys(s.zone for s in g)), tuple(s.id for s in g),
                         float(g[0].times_s[0]), float(g[-1].times_s[-1])))
    return out


SIMPLIFY_MM = 0.1          # drawn paths and outlines keep this close to the exact ones


def stroke_paths(plan, tolerance_mm: float = SIMPLIFY_MM) -> dict:
    """Front-view paths of every stroke, ``id -> (n, 2)`` mm, simplified to within
    ``tolerance_mm`` (a straight pass keeps a few points: smaller files, faster drawing)."""
    out = {}
    for s in plan.strokes:
        xy = front_xy(plan.face, s.points)
        if len(xy) > 2:
            xy = shapely.get_coordinates(shapely.simplify(shapely.LineString(xy), tolerance_mm))
        out[s.id] = xy
    return out


def front_xy(face, points: np.ndarray) -> np.ndarray:
    """Front-view ``(n, 2)`` mm of surface points ``(n, 3)`` in the face's frame."""
    return face.to_canonical_frame(np.asarray(points, dtype=np.float64).reshape(-1, 3))[:, :2]


def texel_values(grid, values: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``values (h, w)`` of a texel grid read at chart points ``uv (n, 2)`` (NaN off the grid)."""
    h, w = values.shape
    ij = np.floor((np.asarray(uv, dtype=np.float64) - grid.origin) / grid.cell_mm)
    ok = np.isfinite(ij).all(axis=1) & (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < w) & (ij[:, 1] < h)
    out = np.full(len(ij), np.nan)
    out[ok] = values[ij[ok, 1].astype(np.int64), ij[ok, 0].astype(np.int64)]
    return out


def density_norm(zones) -> Normalize:
    """Colour scale of densities (punctures/cm²): 0 to just above the highest zone cap."""
    top = max(zones.dose(n).cap_per_cm2 for n in zones.names)
    return Normalize(0.0, 1.08 * top)


@dataclass(frozen=True, eq=False)
class FrontRaster:
    """The front view as pixels: which triangle is seen at each pixel and where in it.

    Pixels are square, ``pixel_mm`` a side; row 0 is the top (``imshow(..., extent=extent)``
    with the default ``origin="upper"`` puts them in place).
    """

    extent: tuple          # (x0, x1, y0, y1) mm, front view
    pixel_mm: float
    tri: np.ndarray        # (h, w) int, the triangle seen (-1: background)
    bary: np.ndarray       # (h, w, 3) its barycentrics at the pixel centre

    def gather(self, per_triangle: np.ndarray, background=np.nan) -> np.ndarray:
        """Per-triangle values ``(m, ...)`` at every pixel ``(h, w, ...)``."""
        values = np.asarray(per_triangle)
        out = values[np.maximum(self.tri, 0)].astype(np.float64)
        out[self.tri < 0] = background
        return out

    def uv(self, face) -> np.ndarray:
        """Chart coordinates ``(h, w, 2)`` mm of every pixel (NaN on the background)."""
        corners = face.uv[face.faces[np.maximum(self.tri, 0)]]
        out = np.einsum("hwk,hwkd->hwd", self.bary, corners)
        out[self.tri < 0] = np.nan
        return out


def front_raster(face, pixel_mm: float = 0.3, pad_mm: float = 3.0) -> FrontRaster:
    """Rasterise the front view: the triangles are drawn far to near (as in every front view)
    by matplotlib's Agg renderer without antialiasing, each in a colour encoding its index;
    the pixels read back name the triangle seen. Agg gives a pixel to the last triangle
    covering most of it, so its centre lies in that triangle or within a pixel of it (95 %
    within 0.7 pixel); the barycentrics are those of the triangle's point nearest the centre
    (exact where the centre is inside)."""
    order, xy = front_triangles(face)
    lo, hi = xy.reshape(-1, 2).min(axis=0) - pad_mm, xy.reshape(-1, 2).max(axis=0) + pad_mm
    w, h = (int(x) for x in np.ceil((hi - lo) / pixel_mm))
    x0, y0 = lo
    x1, y1 = x0 + w * pixel_mm, y0 + h * pixel_mm
    dpi = 100.0
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    code = order + 1   # 0 is the background
    rgb = np.stack([(code >> 16) & 255, (code >> 8) & 255, code & 255], axis=1) / 255.0
    ax.add_collection(PolyCollection(xy, facecolors=rgb, edgecolors="none", antialiased=False, linewidths=0))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    fig.patch.set_facecolor((0, 0, 0))
    canvas.draw()
    buf = np.asarray(canvas.buffer_rgba())[:, :, :3].astype(np.int64)
    tri = ((buf[:, :, 0] << 16) | (buf[:, :, 1] << 8) | buf[:, :, 2]) - 1
    tri = tri[:h, :w]
    # barycentrics of each pixel centre in its triangle's projection (clipped: a pixel at an
    # edge may sample just outside the triangle Agg gave it)
    cx = x0 + (np.arange(tri.shape[1]) + 0.5) * pixel_mm
    cy = y1 - (np.arange(tri.shape[0]) + 0.5) * pixel_mm
    p = np.stack(np.meshgrid(cx, cy), axis=-1)
    corners = face.to_canonical_frame(face.vertices)[face.faces[np.maximum(tri, 0)]][..., :2]
    a, b, c = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    v0, v1, v2 = b - a, c - a, p - a
    det = v0[..., 0] * v1[..., 1] - v0[..., 1] * v1[..., 0]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    l1 = (v2[..., 0] * v1[..., 1] - v2[..., 1] * v1[..., 0]) / det
    l2 = (v0[..., 0] * v2[..., 1] - v0[..., 1] * v2[..., 0]) / det
    bary = np.clip(np.stack([1 - l1 - l2, l1, l2], axis=-1), 0.0, 1.0)
    bary /= np.maximum(bary.sum(axis=-1, keepdims=True), 1e-12)
    return FrontRaster((x0, x1, y0, y1), float(pixel_mm), tri, bary)


def face_rgba(face, raster: FrontRaster, rgb: np.ndarray) -> np.ndarray:
    """The face as an image ``(h, w, 4) uint8``: per-triangle colours ``rgb (m, 3)`` shaded,
    transparent around the face."""
    shaded = shaded_colours(face, rgb)
    rgba = np.concatenate([raster.gather(shaded, 0.0), (raster.tri >= 0)[..., None].astype(np.float64)], axis=-1)
    return np.round(255 * rgba).astype(np.uint8)


def face_image(ax, face, raster: FrontRaster, rgb: np.ndarray | None = None, *, rgba: np.ndarray | None = None,
               view: tuple | None = None, zorder: float = 0.5):
    """Show the face in the front view: per-triangle colours ``rgb (m, 3)`` shaded, or a
    ready :func:`face_rgba` image; ``view`` (x0, x1, y0, y1) mm keeps only the pixels in it."""
    image = face_rgba(face, raster, rgb) if rgba is None else rgba
    extent = raster.extent
    if view is not None:     # only the pixels in view (a zoomed panel draws a fraction of the face)
        x0, _, _, y1 = raster.extent
        px = raster.pixel_mm
        c0, c1 = (int(np.clip(np.floor((v - x0) / px), 0, image.shape[1])) for v in (view[0], view[1] + px))
        r0, r1 = (int(np.clip(np.floor((y1 - v) / px), 0, image.shape[0])) for v in (view[3], view[2] - px))
        image = image[r0:r1, c0:c1]
        extent = (x0 + c0 * px, x0 + c1 * px, y1 - r1 * px, y1 - r0 * px)
    return ax.imshow(image, extent=extent, interpolation="antialiased", zorder=zorder)


class DensityLayer:
    """The front view's pixels coloured by a density map (lightly shaded, grey where the skin
    is not treated), for updating frame by frame: ``update(density_map)`` recolours them."""

    def __init__(self, ax, zones, raster: FrontRaster | None = None, *, norm: Normalize | None = None,
                 zorder: float = 0.5):
        face = zones.face
        self.raster = raster or front_raster(face)
        self.norm = norm or density_norm(zones)
        self.cmap = colormaps[DENSITY_CMAP]
        self.uv = self.raster.uv(face).reshape(-1, 2)
        lambert = shaded_colours(face, np.ones((len(face.faces), 3)))[:, 0]
        # mild shading keeps the colours readable against the colour bar and the face a face
        self.shade = self.raster.gather(0.8 + 0.2 * (lambert - 0.45) / 0.55, 1.0)
        self.inside = self.raster.tri >= 0
        h, w = self.raster.tri.shape
        self.image = ax.imshow(np.zeros((h, w, 4)), extent=self.raster.extent, interpolation="antialiased",
                               zorder=zorder)
        self.mappable = ScalarMappable(self.norm, self.cmap)

    def update(self, density_map) -> np.ndarray:
        """Recolour from ``density_map`` (a DensityMap); returns the density at each pixel
        ``(h, w)`` (NaN off treated skin)."""
        h, w = self.raster.tri.shape
        value = texel_values(density_map.grid, density_map.nominal_per_cm2, self.uv).reshape(h, w)
        value[~self.inside] = np.nan
        rgb = np.asarray(self.cmap(self.norm(np.nan_to_num(value))))[..., :3]
        rgb[~np.isfinite(value)] = to_rgb(NO_DOSE)
        rgba = np.concatenate([np.clip(rgb * self.shade[..., None], 0, 1), self.inside[..., None]], axis=-1)
        self.image.set_data(rgba)
        return value


def zone_outlines(ax, zones, **style) -> None:
    """Zone borders in the front view."""
    style = {"color": "white", "linewidth": 0.6, **style}
    project = _front_projection(zones.face)
    for poly in zones.outlines.values():
        for part in shapely.get_parts(poly):
            if part.geom_type == "Polygon":
                xy = project(np.asarray(part.exterior.coords))
                ax.plot(xy[:, 0], xy[:, 1], **style)


def dose_groups(zones) -> list:
    """``[(target, cap, [zone names])]``: zones sharing a dose, in falling target order."""
    groups: dict = {}
    for n in zones.names:
        d = zones.dose(n)
        groups.setdefault((d.target_per_cm2, d.cap_per_cm2), []).append(n)
    return [(t, c, names) for (t, c), names in sorted(groups.items(), reverse=True)]


def _group_label(names) -> str:
    """``['cheek_left', 'cheek_right', 'chin']`` -> ``cheeks, chin``."""
    out = []
    for n in names:
        for side in ("_left", "_right"):
            if n.endswith(side):
                base = n[: -len(side)]
                pair = base + ("_right" if side == "_left" else "_left")
                n = base + "s" if pair in names else short_label(n)
        if n not in out:
            out.append(n)
    return ", ".join(out)


def density_colourbar(fig, ax, mappable, zones, *, fontsize: float = 7.5, label_zones: bool = True,
                     fraction: float = 0.05):
    """A colour bar in punctures/cm² with each dose group's target (solid black) and cap (red
    dashed), named beside the bar; ``label_zones`` adds which zones each dose applies to."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    # a bar exactly as tall as the face's axes (which its equal aspect may have shortened)
    cax = make_axes_locatable(ax).append_axes("right", size=f"{100 * fraction:g}%", pad=0.08)
    cbar = fig.colorbar(mappable, cax=cax)
    cbar.set_label("punctures / cm² (in each 1 cm² window of skin)", fontsize=fontsize + 0.5)
    cbar.ax.tick_params(labelsize=fontsize)
    marks: dict = {}
    for target, cap, _ in dose_groups(zones):
        cbar.ax.axhline(target, color="white", linewidth=2.2)
        cbar.ax.axhline(target, color="black", linewidth=1.0)
        cbar.ax.axhline(cap, color="white", linewidth=2.2)
        cbar.ax.axhline(cap, color="#b2182b", linewidth=1.4, linestyle=(0, (2.5, 1.2)))
        marks.setdefault(target, []).append("target")
        marks.setdefault(cap, []).append("cap")
    # the ticks are the doses, named; round numbers only where no dose is near
    spacing = 0.06 * (mappable.norm.vmax - mappable.norm.vmin)
    plain = [v for v in np.arange(0.0, mappable.norm.vmax, 50.0) if all(abs(v - m) > spacing for m in marks)]
    ticks = sorted([*plain, *marks])
    cbar.set_ticks(ticks, labels=[f"{v:.4g} " + " / ".join(dict.fromkeys(marks[v])) if v in marks else f"{v:g}"
                                  for v in ticks])
    for label, value in zip(cbar.ax.get_yticklabels(), ticks):
        if marks.get(value) == ["cap"]:
            label.set_color("#b2182b")
    if label_zones:
        text = ["target / cap (punctures/cm²):"]
        text += [f"{target:.4g} / {cap:.4g}: {_group_label(names)}" for target, cap, names in dose_groups(zones)]
        ax.text(0.01, 0.01, "\n".join(text), transform=ax.transAxes, fontsize=fontsize, va="bottom",
                ha="left", bbox={"facecolor": "white", "edgecolor": "#999999", "alpha": 0.9, "pad": 3})
    return cbar


def zone_rows(plan) -> list:
    """Per-zone rows ``(name, cells, in_band_fraction, over_cap_fraction)``; cells (strings)
    follow :data:`ZONE_TABLE_ROWS`: devices, target, cap, mean, p5, in band %, over cap %."""
    summary = plan.summary()["zones"]

    def num(x, fmt):
        return "–" if x is None else format(x, fmt)

    rows = []
    for name in plan.zones.names:
        z = summary[name]
        devices = sorted({s.device for s in plan.strokes if name in (s.zones or [s.zone])})
        band, over = z["in_band_fraction"], z["over_cap_fraction"]
        rows.append((name, ["+".join(devices) or "–", num(z["target_per_cm2"], ".4g"), num(z["cap_per_cm2"], ".4g"),
                            num(z["mean"], ".0f"), num(z["p5"], ".0f"),
                            num(None if band is None else 100 * band, ".1f"),
                            num(None if over is None else 100 * over, ".1f")], band, over))
    return rows


ZONE_TABLE_ROWS = ["devices", "target", "cap", "mean", "p5", "in band %", "over cap %"]
BAND_GOOD, BAND_LOW, OVER_CAP = "#d9f0d3", "#fee8c8", "#f4a6a6"


def _colour_dose_cell(cell, key: str, band, over) -> None:
    if key == "in band %" and band is not None:
        cell.set_facecolor(BAND_GOOD if band >= 0.95 else BAND_LOW)
    if key == "over cap %" and over is not None and over > 0:
        cell.set_facecolor(OVER_CAP)


def _style_table(table, fontsize: float) -> None:
    table.auto_set_font_size(False)
    table.set_fontsize(fontsize)
    for (i, j), cell in table.get_celld().items():
        cell.set_edgecolor("#bbbbbb")
        cell.set_linewidth(0.4)
        if i == 0 or j == -1:
            cell.set_facecolor("#eeeeee")
            cell.set_text_props(fontweight="bold")


def draw_zone_table(ax, plan, *, fontsize: float = 8.5, transpose: bool = True, names=None):
    """The per-zone dose table on an axes (densities in punctures/cm²), one column per zone
    (``transpose``) or one row per zone. In-band cells are green at ≥ 95 %, amber below;
    over-cap cells red when any skin is over its cap."""
    ax.axis("off")
    rows = [r for r in zone_rows(plan) if names is None or r[0] in names]
    if transpose:
        cells = [[r[1][k] for r in rows] for k in range(len(ZONE_TABLE_ROWS))]
        table = ax.table(cellText=cells, colLabels=[short_label(r[0]) for r in rows], rowLabels=ZONE_TABLE_ROWS,
                         loc="upper center", cellLoc="center", bbox=[0.06, 0.0, 0.94, 1.0])
        _style_table(table, fontsize)
        for (i, j), cell in table.get_celld().items():
            if i > 0 and j >= 0:
                _colour_dose_cell(cell, ZONE_TABLE_ROWS[i - 1], rows[j][2], rows[j][3])
    else:
        table = ax.table(cellText=[[short_label(r[0])] + r[1] for r in rows], colLabels=["zone"] + ZONE_TABLE_ROWS,
                         loc="upper center", cellLoc="center", bbox=[0.0, 0.0, 1.0, 1.0])
        _style_table(table, fontsize)
        for (i, j), cell in table.get_celld().items():
            if i > 0 and j >= 1:
                _colour_dose_cell(cell, ZONE_TABLE_ROWS[j - 1], rows[i - 1][2], rows[i - 1][3])
            if i > 0 and j == 0:
                cell.set_text_props(ha="left")
                cell._loc = "left"
    return table


def draw_roller_arrow(ax, xy: np.ndarray, colour, *, linewidth: float = 0.9, head: float = 7.0,
                      gid: str | None = None, zorder: float = 3) -> FancyArrowPatch | None:
    """A roller stroke ``xy (n, 2)`` as one arrow along its path, the head at its end."""
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) < 2:
        return None
    path = MplPath(xy)
    arrow = FancyArrowPatch(path=path, arrowstyle=f"-|>,head_length={0.4 * head / 7:.3f},"
                                                   f"head_width={0.22 * head / 7:.3f}",
                            mutation_scale=head * 2.2, color=colour, linewidth=linewidth, zorder=zorder,
                            shrinkA=0, shrinkB=0)
    if gid:
        arrow.set_gid(gid)
    ax.add_artist(arrow)    # every caller fixes the limits: skip add_patch's autoscaling
    return arrow


def draw_pen_stroke(ax, xy: np.ndarray, pattern: str, *, linewidth: float = 0.55, gid: str | None = None,
                    alpha: float = 1.0, zorder: float = 2.5):
    """A pen stroke ``xy (n, 2)`` as a thin line: raster solid brown, contour solid teal,
    touch-up dotted."""
    style = PEN_STYLES.get(pattern, PEN_STYLES["raster"])
    (line,) = ax.plot(xy[:, 0], xy[:, 1], linewidth=linewidth, alpha=alpha, zorder=zorder, **style)
    if gid:
        line.set_gid(gid)
    return line


def stroke_legend_handles(devices) -> list:
    """Legend entries for roller directions and pen patterns."""
    handles = []
    if "roller" in devices:
        handles += [Line2D([], [], color=DIRECTION_COLOURS[k], linewidth=2.2, marker=">", markersize=6,
                           label=f"roller {k}" if k != BORDER else "roller along the border")
                    for k in ("0°", "45°", "90°", "135°", BORDER)]
    if "pen" in devices:
        handles += [Line2D([], [], linewidth=1.2, label=f"pen {k}", **PEN_STYLES[k])
                    for k in ("raster", "contour", "touch-up")]
    return handles


def _mmss(t: float) -> str:
    t = max(0.0, float(t))
    minutes, seconds = divmod(round(t), 60)
    return f"{minutes}:{seconds:02d}"


def _check_plan(plan) -> None:
    if not getattr(plan, "strokes", None):
        raise CoverageError("plan: it has no strokes; nothing to draw (plan again with a device that "
                            "treats some zone)")


# --- plans: the overview figure ----------------------------------------------------------

def draw_plan_strokes(ax, plan, *, stroke_ids=None, number: str = "sweeps", roller_width: float = 0.8,
                      pen_width: float = 0.5, head: float = 6.0) -> dict:
    """Strokes in the front view: roller passes as arrows coloured by direction, pen strokes as
    thin lines by pattern. ``number``: ``"sweeps"`` writes each roller sweep's number (session
    order) at its first stroke's start, ``"strokes"`` each drawn stroke's order (1, 2, ... among
    those drawn) at its start, ``"none"`` nothing. Returns ``{"arrows": [...], "pen": [...],
    "numbers": [...]}`` (the artists drawn)."""
    face = plan.face
    wanted = None if stroke_ids is None else {int(i) for i in stroke_ids}
    drawn = {"arrows": [], "pen": [], "numbers": []}
    strokes = [s for s in plan.strokes if wanted is None or s.id in wanted]
    for s in strokes:       # pen under the roller arrows
        if s.device == "pen":
            drawn["pen"].append(draw_pen_stroke(ax, front_xy(face, s.points), s.pattern, linewidth=pen_width,
                                                gid=f"pen-stroke-{s.id}"))
    for s in strokes:
        if s.device == "roller":
            arrow = draw_roller_arrow(ax, front_xy(face, s.points), DIRECTION_COLOURS[direction_key(s)],
                                      linewidth=roller_width, head=head, gid=f"roller-stroke-{s.id}")
            if arrow is not None:
                drawn["arrows"].append(arrow)
    if number == "strokes":
        for k, s in enumerate(strokes):
            start = front_xy(face, s.points[:1])[0]
            colour = DIRECTION_COLOURS[direction_key(s)] if s.device == "roller" else PEN_STYLES[s.pattern]["color"]
            ax.plot(*start, marker="o", markersize=2.2, color=colour, zorder=4)
            drawn["numbers"].append(ax.text(*start, str(k + 1), fontsize=5.5, color=colour, ha="right",
                                            va="bottom", zorder=5, path_effects=HALO))
    elif number == "sweeps":
        roller_sweeps = [w for w in plan_sweeps(plan) if w.device == "roller"]
        placed: list = []
        for k, w in enumerate(roller_sweeps):
            first = plan.strokes[w.strokes[0]]
            if wanted is not None and first.id not in wanted:
                continue
            start = _free_spot(front_xy(face, first.points[:1])[0], placed, 4.5)
            drawn["numbers"].append(ax.text(
                *start, str(k + 1), fontsize=6.5, fontweight="bold", color=DIRECTION_COLOURS[w.direction],
                ha="center", va="center", zorder=6,
                bbox={"boxstyle": "circle,pad=0.18", "facecolor": "white", "edgecolor": DIRECTION_COLOURS[w.direction],
                      "linewidth": 0.8}))
    return drawn


def _free_spot(at: np.ndarray, placed: list, gap_mm: float) -> np.ndarray:
    """``at``, or the nearest of a ring of spots around it at least ``gap_mm`` from every
    spot in ``placed`` (so numbers do not cover one another); appends the spot chosen."""
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = np.concatenate([[[0.0, 0.0]], *[r * gap_mm * np.column_stack([np.cos(angles), np.sin(angles)])
                                            for r in (1.0, 1.6, 2.2)]])
    candidates = np.asarray(at, dtype=np.float64) + ring
    if placed:
        clear = (np.linalg.norm(candidates[:, None] - np.asarray(placed)[None], axis=-1) >= gap_mm).all(axis=1)
        chosen = candidates[np.argmax(clear)] if clear.any() else candidates[0]
    else:
        chosen = candidates[0]
    placed.append(chosen)
    return chosen


def plan_overview(ax, plan, *, number: str = "sweeps", stroke_ids=None, labels: bool = True,
                  raster: FrontRaster | None = None) -> dict:
    """The shaded front view with zones coloured lightly, exclusions hatched and the strokes
    (see :func:`draw_plan_strokes`). Returns the artists drawn."""
    zones = plan.zones
    face_image(ax, plan.face, raster or front_raster(plan.face, FIGURE_PIXEL_MM), zone_rgb(zones, lighten=0.55))
    draw_exclusions(ax, zones)
    if labels:
        label_zones(ax, zones, color="#555555", fontsize=6.5, fontstyle="italic", zorder=1.5)
    drawn = draw_plan_strokes(ax, plan, stroke_ids=stroke_ids, number=number)
    _front_limits(ax, plan.face)
    return drawn


FIGURE_PIXEL_MM = 0.2      # front-view raster of printed and saved figures
ANIMATION_PIXEL_MM = 0.3


def plan_figure(plan) -> Figure:
    """The plan for trainers on one page.

    Left: the shaded front view with the zones, every roller pass as an arrow coloured by its
    direction, each roller sweep numbered in session order at its first pass, pen strokes as
    thin lines (raster, contour loops, touch-ups), exclusions hatched. Right: the density heat
    map (punctures/cm², colour bar with each zone's target and cap). Below: the per-zone table.
    The figure's ``_coverage_drawn`` holds the stroke artists (see :func:`draw_plan_strokes`).
    """
    _check_plan(plan)
    fig = Figure(figsize=(18, 13), dpi=110)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 2, width_ratios=[1.0, 1.0], height_ratios=[4.6, 0.42, 1.0],
                            left=0.035, right=0.915, top=0.945, bottom=0.015, wspace=0.1, hspace=0.08)
    ax = fig.add_subplot(grid[0, 0])
    raster = front_raster(plan.face, FIGURE_PIXEL_MM)
    drawn = plan_overview(ax, plan, raster=raster)
    ax.set_xlabel("x (mm, subject's left →)")
    ax.set_ylabel("y (mm, up)")
    n_roller = sum(s.device == "roller" for s in plan.strokes)
    n_pen = len(plan.strokes) - n_roller
    n_sweeps = sum(w.device == "roller" for w in plan_sweeps(plan))
    ax.set_title(f"{n_roller} roller passes in {n_sweeps} sweeps (circled: sweep order, at its first pass), "
                 f"{n_pen} pen strokes", fontsize=10.5)
    handles = stroke_legend_handles({s.device for s in plan.strokes})
    handles += [Patch(facecolor="none", edgecolor="#444444", hatch="////", label="excluded"),
                Line2D([], [], color=KEEPOUT_EDGE, linestyle="--", label="keep-out edge")]
    legend_ax = fig.add_subplot(grid[1, :])
    legend_ax.axis("off")
    legend_ax.legend(handles=handles, loc="center", ncol=5, fontsize=9, frameon=False, columnspacing=2.5)
    heat = fig.add_subplot(grid[0, 1])
    layer = DensityLayer(heat, plan.zones, raster)
    layer.update(plan.density)
    zone_outlines(heat, plan.zones, color="white", linewidth=0.6, alpha=0.9)
    draw_exclusions(heat, plan.zones)
    _front_limits(heat, plan.face)
    heat.set_xlabel("x (mm, subject's left →)")
    heat.set_yticks([])
    heat.set_title("Simulated density, front view (zone borders white)", fontsize=10.5)
    density_colourbar(fig, heat, layer.mappable, plan.zones, fontsize=8)
    table_ax = fig.add_subplot(grid[2, :])
    draw_zone_table(table_ax, plan)
    table_ax.set_title("Per zone (densities in punctures/cm²; in band = share of the zone's skin within "
                       "[0.9 × target, cap]; green ≥ 95 %)", fontsize=9.5)
    s = plan.summary()
    fig.suptitle(f"Plan: {plan.face.source or 'face'} — protocol {plan.protocol.name} — "
                 f"{len(plan.strokes)} strokes, {s['punctures']:,} punctures — session {_mmss(s['time_s'])} "
                 f"min:s ({_mmss(s['stroke_time_s'])} in contact)", fontsize=13)
    fig._coverage_drawn = drawn    # what plan_figure drew, for tests and callers
    return fig


# --- plans: the session played pass by pass ----------------------------------------------

ANIMATION_SUFFIXES = (".gif",)


def frame_sweeps(plan, frames: int) -> list:
    """The sweeps each animation frame adds: ``[[Sweep, ...], ...]`` of at most ``frames``
    frames, one sweep per frame when there are few enough, else consecutive sweeps merged
    evenly."""
    sweeps = plan_sweeps(plan)
    n = min(frames, len(sweeps))
    ends = np.unique(np.round(np.arange(1, n + 1) * len(sweeps) / n).astype(int))
    starts = np.concatenate([[0], ends[:-1]])
    return [sweeps[a:b] for a, b in zip(starts, ends)]


def _describe(sweeps: list) -> str:
    last = sweeps[-1]
    where = ", ".join(short_label(z) for z in last.zones[:3]) + (" …" if len(last.zones) > 3 else "")
    what = (f"roller sweep at {last.direction}" if last.device == "roller" else
            f"pen {last.pattern}" + (f" {last.direction}" if last.direction != BORDER else ""))
    ids = [i for w in sweeps for i in w.strokes]
    return f"{what} — {where} (strokes {ids[0]}–{ids[-1]})"


def _segments(face, strokes) -> list:
    return [front_xy(face, s.points) for s in strokes]


def _shared_palette(images: list) -> list:
    """Frames ``RGB`` as ``P`` images sharing one palette, without dithering (flat areas stay
    flat from frame to frame and compress well): the legend's colours exactly, the rest a
    median cut of a mosaic of every frame."""
    from PIL import Image

    fixed = [to_rgb(c) for c in (*DIRECTION_COLOURS.values(), *(v["color"] for v in PEN_STYLES.values()),
                                 KEEPOUT_EDGE, "#ffffff", "#000000", NO_DOSE)]
    fixed = [tuple(round(255 * x) for x in c) for c in dict.fromkeys(fixed)]
    thumbs = [im.reduce(3) for im in images]
    tw, th = thumbs[0].size
    mosaic = Image.new("RGB", (tw, th * len(thumbs)))
    for i, t in enumerate(thumbs):
        mosaic.paste(t, (0, i * th))
    cut = mosaic.quantize(colors=GIF_COLOURS - len(fixed), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    colours = fixed + [tuple(c) for c in np.asarray(cut.getpalette()[: 3 * (GIF_COLOURS - len(fixed))]).reshape(-1, 3)]
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for c in colours for v in c] + [0] * 3 * (256 - len(colours)))
    return [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]


GIF_COLOURS = 192


def session_animation(plan, path, *, frames: int = 48, fps: float = 6.0, hold_s: float = 2.5,
                      dpi: float = 64.0) -> Path:
    """Write a GIF of the session played pass by pass (atomically).

    Each frame adds the next sweep(s) (see :func:`frame_sweeps`): left, the front view with the
    strokes done so far (the frame's own in bold, roller passes with arrowheads); right, the
    density of the punctures delivered so far (recomputed with :func:`coverage.density`).
    The title gives the session clock and what the frame added. The last frame is held for
    ``hold_s`` seconds. Returns the path.
    """
    from matplotlib.collections import LineCollection
    from PIL import Image

    from .density import density, texel_grid

    check_output(path, ANIMATION_SUFFIXES)
    _check_plan(plan)
    if frames < 1 or fps <= 0:
        raise CoverageError(f"animation: frames = {frames}, fps = {fps}; both must be positive")
    face, zones = plan.face, plan.zones
    groups = frame_sweeps(plan, frames)
    grid = plan.density.grid if "density" in plan.__dict__ else texel_grid(zones)

    fig = Figure(figsize=(13.0, 7.2), dpi=dpi)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"wspace": 0.02, "left": 0.01, "right": 0.95, "top": 0.9,
                                                   "bottom": 0.06})
    raster = front_raster(face, ANIMATION_PIXEL_MM)
    face_image(left, face, raster, zone_rgb(zones, lighten=0.55))
    draw_exclusions(left, zones)
    _front_limits(left, face)
    layer = DensityLayer(right, zones, raster)
    zone_outlines(right, zones, color="white", linewidth=0.5, alpha=0.8)
    draw_exclusions(right, zones)
    _front_limits(right, face)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    left.set_title("strokes so far (this step in bold)", fontsize=11)
    right.set_title("density so far (punctures/cm²)", fontsize=11)
    cbar = fig.colorbar(layer.mappable, ax=right, fraction=0.05, pad=0.01, aspect=30)
    cbar.ax.tick_params(labelsize=9)
    for target, cap, _ in dose_groups(zones):
        cbar.ax.axhline(target, color="black", linewidth=1.0)
        cbar.ax.axhline(cap, color="#b2182b", linewidth=1.2, linestyle=(0, (2.5, 1.2)))
    left.legend(handles=stroke_legend_handles({s.device for s in plan.strokes}), loc="lower center",
                bbox_to_anchor=(0.5, -0.075), ncol=4, fontsize=8, frameon=False)
    done = LineCollection([], linewidths=0.6, alpha=0.75, zorder=3)
    now = LineCollection([], linewidths=2.0, zorder=4)
    left.add_collection(done)
    left.add_collection(now)
    title = fig.suptitle("", fontsize=13)

    def colour(s):
        return DIRECTION_COLOURS[direction_key(s)] if s.device == "roller" else PEN_STYLES[s.pattern]["color"]

    images, heads = [], []
    total = plan.time_s
    # punctures delivered once each stroke is done (they are stored in firing order)
    delivered_by = np.array([int((plan.puncture_stroke <= i).sum()) for i in range(len(plan.strokes))]) \
        if not np.all(np.diff(plan.puncture_stroke) >= 0) else \
        np.searchsorted(plan.puncture_stroke, np.arange(len(plan.strokes)), side="right")
    finished = []
    for k, sweeps in enumerate(groups):
        current = [plan.strokes[i] for w in sweeps for i in w.strokes]
        last_id = current[-1].id
        n_punct = int(delivered_by[last_id])
        layer.update(density(face, zones, plan.puncture_points[:n_punct], grid=grid))
        done.set_segments(_segments(face, finished))
        done.set_color([colour(s) for s in finished])
        now.set_segments(_segments(face, current))
        now.set_color([colour(s) for s in current])
        for h in heads:
            h.remove()
        heads = [draw_roller_arrow(left, front_xy(face, s.points[-6:]), colour(s), linewidth=0.0, head=7.0, zorder=5)
                 for s in current if s.device == "roller"]
        heads = [h for h in heads if h is not None]
        title.set_text(f"{_mmss(current[-1].times_s[-1])} / {_mmss(total)} min:s — step {k + 1}/{len(groups)}: "
                       f"{_describe(sweeps)}")
        fig.canvas.draw()
        images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()))
        finished += current
    frames_p = _shared_palette(images)
    durations = [round(1000 / fps)] * len(frames_p)
    durations[-1] = round(1000 * max(hold_s, 1 / fps))
    with atomic_path(path) as tmp:
        frames_p[0].save(tmp, format="GIF", save_all=True, append_images=frames_p[1:], duration=durations,
                         loop=0, optimize=False, disposal=1)
    return Path(path)


# --- plans: the printed handout ----------------------------------------------------------

A4_PORTRAIT_IN = (8.27, 11.69)
HANDOUT_SUFFIXES = (".pdf",)
HANDOUT_IMAGE_DPI = 110   # pictures of the face in the PDF: sharp on paper, a few MB in all


def zone_steps(plan, name: str) -> list:
    """The steps of one zone for the handout: its strokes (``zone == name``) in execution
    order, grouped by device, direction class and pass kind, each step listed where its first
    stroke falls. Returns ``[(title, [stroke, ...]), ...]``; a stroke's number in the zone is
    its position among all the zone's strokes (1, 2, ...)."""
    steps: dict = {}
    for s in plan.strokes:
        if s.zone != name:
            continue
        kind = "touch-up" if s.pattern == "touch-up" else s.pattern
        if s.device == "roller":
            key = ("roller", direction_key(s), "")
        else:
            key = ("pen", direction_key(s), kind)
        steps.setdefault(key, []).append(s)
    out = []
    for (device, direction, kind), strokes in steps.items():
        if device == "roller":
            title = "roller along the border (headland)" if direction == BORDER else f"roller {direction}"
        elif kind == "contour":
            title = "pen contour loops"
        else:
            title = f"pen {kind} {direction}"
        out.append((title, strokes))
    return out


def number_ranges(numbers, limit: int | None = None) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1–3, 7, 9–10"``; past ``limit`` characters the list is cut
    with an ellipsis."""
    numbers = sorted(int(n) for n in numbers)
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(f"{start}" if n == start else f"{start}–{n}")
            start = None
    text = ", ".join(parts)
    if limit is not None and len(text) > limit:
        cut = text[:limit].rsplit(",", 1)[0]
        text = f"{cut}, … {numbers[-1]}"
    return text


def _zone_view(face, zones, name: str, paths: list = (), pad_mm: float = 6.0) -> tuple:
    """Front-view limits ``(x0, x1, y0, y1)`` around a zone's outline and the stroke paths
    ``[(n, 2), ...]`` given (a roller pass may run on into the next zone), padded."""
    outline = shapely.convex_hull(zones.outlines[name])
    xy = _front_projection(face)(np.asarray(shapely.get_coordinates(outline.exterior)))
    xy = np.concatenate([xy[np.isfinite(xy).all(axis=1)], *paths])
    lo, hi = xy.min(axis=0) - pad_mm, xy.max(axis=0) + pad_mm
    return lo[0], hi[0], lo[1], hi[1]


def _panel_grid(n: int, aspect: float, width_in: float, height_in: float, title_in: float = 0.3,
                gap_in: float = 0.25) -> tuple:
    """``(ncols, nrows, panel_width_in)``: the column count giving the largest panels of
    width/height ``aspect`` for ``n`` panels in a ``width_in`` x ``height_in`` area."""
    best = None
    for ncols in range(1, min(n, 4) + 1):
        nrows = -(-n // ncols)
        cell_w = (width_in - gap_in * (ncols - 1)) / ncols
        cell_h = height_in / nrows - title_in
        panel_w = min(cell_w, cell_h * aspect)
        if best is None or panel_w > best[2] + 1e-9:
            best = (ncols, nrows, panel_w)
    return best


def _zone_highlight_rgb(zones, name: str) -> np.ndarray:
    """Triangle colours: the zone in its colour, the rest of the face pale grey."""
    rgb = zone_rgb(zones, lighten=0.25)
    other = zones.triangle_labels != zones.names.index(name)
    rgb[other] = 0.35 * rgb[other] + 0.65 * np.array(to_rgb("#eeeeee"))
    return rgb


def draw_zone_step(ax, plan, raster: FrontRaster, rgba: np.ndarray, strokes: list, numbers: dict,
                   context: list, view: tuple, paths: dict, outlines: list) -> dict:
    """One handout panel: the zone zoomed in the front view (``rgba``: the face image), the
    step's strokes in colour with a dot at each start, an arrowhead at each end and the
    stroke's number in the zone; the zone's other strokes (``context``) faint grey behind.
    ``paths``: :func:`stroke_paths`; ``outlines``: :func:`exclusion_outlines`. Returns the
    artists drawn."""
    from matplotlib.collections import LineCollection

    face_image(ax, plan.face, raster, rgba=rgba, view=view)
    draw_exclusions(ax, plan.zones, outlines=outlines)
    ax.add_collection(LineCollection([paths[s.id] for s in context], colors="#8a8a8a", linewidths=0.35,
                                     alpha=0.6, zorder=1), autolim=False)
    drawn = {"arrows": [], "pen": [], "numbers": []}
    placed: list = []
    starts: list = []
    gap = 0.032 * max(view[1] - view[0], view[3] - view[2])
    for s in strokes:
        xy = paths[s.id]
        if s.device == "roller":
            colour = DIRECTION_COLOURS[direction_key(s)]
            drawn["arrows"].append(draw_roller_arrow(ax, xy, colour, linewidth=1.0, head=5.5,
                                                     gid=f"roller-stroke-{s.id}", zorder=4))
        else:
            colour = PEN_STYLES[s.pattern]["color"]
            line = draw_pen_stroke(ax, xy, s.pattern, linewidth=0.8, gid=f"pen-stroke-{s.id}", zorder=4)
            line.set_linestyle("-")
            drawn["pen"].append(line)
            tail = front_xy(plan.face, s.points[-4:])
            draw_roller_arrow(ax, tail, colour, linewidth=0.0, head=4.5, zorder=4)
        starts.append((xy[0], colour))
        at = _free_spot(xy[0], placed, gap)
        # a pale box, not a stroked halo: a halo turns the digits into outlines (a PDF 3x the size)
        drawn["numbers"].append(ax.text(*at, str(numbers[s.id]), fontsize=5.2, color="black", ha="center",
                                        va="center", zorder=6, bbox=NUMBER_BOX))
    if starts:
        ax.scatter([p[0] for p, _ in starts], [p[1] for p, _ in starts], s=5, c=[c for _, c in starts], zorder=5,
                   linewidths=0)
    ax.set_xlim(view[0], view[1])
    ax.set_ylim(view[2], view[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return drawn


def _percent(fraction):
    return None if fraction is None else 100.0 * fraction


def _fmt(x, spec: str = "g", unit: str = "") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{format(x, spec)}{unit}"


TEXT_COLUMN_CHARS = 86


def _zone_text(plan, summary: dict, name: str, steps: list, numbers: dict) -> tuple[str, str]:
    """The handout's two text columns for a zone: settings and order; simulated result."""
    z = summary["zones"][name]
    dose = plan.zones.dose(name)
    mine = [s for s in plan.strokes if s.zone == name]
    lines = [(f"Dose: target {_fmt(dose.target_per_cm2)} / cap {_fmt(dose.cap_per_cm2)} punctures/cm²; "
              f"depth {_fmt(dose.depth_mm)} mm (max {_fmt(dose.max_depth_mm)} mm)")]
    roller, pen = z.get("roller") or {}, z.get("pen") or {}
    rolled = [s for s in mine if s.device == "roller"]
    if rolled:
        sweeps = roller.get("sweeps_planned") or {}
        lines.append(f"Roller: needles {_fmt(rolled[0].needle_length_mm)} mm, {rolled[0].speed_mm_s:g} mm/s, "
                     f"sweeps per direction " + ", ".join(f"{d}°: {n}" for d, n in sweeps.items())
                     + f"; {len(rolled)} passes here")
        if roller.get("shared_with"):
            lines.append("  swept together with " + ", ".join(short_label(n) for n in roller["shared_with"]))
    elif roller.get("status"):
        lines.append(f"Roller: {roller['status']}" + (f" ({roller['reason']})" if roller.get("reason") else ""))
    pens = [s for s in mine if s.device == "pen"]
    if pens and pen.get("status") == "planned":
        needles = sorted({s.cartridge["needles"] for s in pens if s.cartridge})
        lines.append(f"Pen: {pen.get('pattern')}, depth {_fmt(pen.get('depth_mm'))} mm, {pen.get('passes')} passes "
                     f"{_fmt(pen.get('spacing_mm'), '.2f')} mm apart, {_fmt(pen.get('speed_mm_s'))} mm/s, "
                     f"{_fmt(pen.get('stamp_hz'), '.1f')} stamps/s "
                     f"(one every {_fmt(pen.get('stamp_spacing_mm'), '.2f')} mm)")
        lines.append(f"  cartridge {'/'.join(str(n) for n in needles)} needles; {pen.get('stamps', 0)} stamps "
                     f"+ {pen.get('touch_up_stamps', 0)} touch-up; {len(pens)} strokes")
    elif pen.get("status"):
        lines.append(f"Pen: {pen['status']}" + (f" ({pen['reason']})" if pen.get("reason") else ""))
    lines.append("Order (numbers on the pictures):")
    for title, strokes in steps:
        lines.append(f"  {title} — {len(strokes)} stroke{'s' if len(strokes) > 1 else ''} from "
                     f"{_mmss(strokes[0].times_s[0])} min:s: "
                     f"{number_ranges(numbers[s.id] for s in strokes)}")
    lines = [wrapped for line in lines for wrapped in textwrap.wrap(
        line, width=TEXT_COLUMN_CHARS, subsequent_indent="      " if line.startswith("  ") else "  ")]
    result = [f"Simulated ({z.get('area_cm2', 0):.1f} cm² of skin):",
              (f"mean {_fmt(z['mean'], '.0f')}, p5 {_fmt(z['p5'], '.0f')}, p95 {_fmt(z['p95'], '.0f')}, "
               f"max {_fmt(z['max'], '.0f')} /cm²"),
              f"in band [0.9 × target, cap]: {_fmt(_percent(z['in_band_fraction']), '.1f', ' %')}",
              f"over cap: {_fmt(_percent(z['over_cap_fraction']), '.1f', ' %')}",
              f"contact time {z['time_s']:.0f} s ({z['strokes']} strokes touch it)"]
    return "\n".join(lines), "\n".join(result)


def handout_pages(plan):
    """The handout's figures, one A4 portrait page each: the cover (summary, overview, table),
    then one page per zone with strokes. A generator of ``(title, Figure)``."""
    _check_plan(plan)
    zones, face = plan.zones, plan.face
    raster = front_raster(face, FIGURE_PIXEL_MM)
    summary = plan.summary()
    shared = {"raster": raster, "summary": summary, "paths": stroke_paths(plan),
              "outlines": exclusion_outlines(zones, SIMPLIFY_MM)}
    yield "cover", _cover_page(plan, raster)
    for name in zones.names:
        steps = zone_steps(plan, name)
        if steps:
            yield name, _zone_page(plan, name, steps, **shared)


def _cover_page(plan, raster: FrontRaster) -> Figure:
    s = plan.summary()
    fig = Figure(figsize=A4_PORTRAIT_IN, dpi=150)
    FigureCanvasAgg(fig)
    fig.text(0.06, 0.965, "Treatment plan — trainer's handout", fontsize=16, fontweight="bold", va="top")
    sweeps = plan_sweeps(plan)
    roller = [w for w in sweeps if w.device == "roller"]
    pens = [w for w in sweeps if w.device == "pen"]
    n_roller = sum(st.device == "roller" for st in plan.strokes)
    info = [f"Face: {face_name(plan)};  protocol: {plan.protocol.name};  devices: {', '.join(s['devices'])}",
            (f"{len(plan.strokes)} strokes ({n_roller} roller passes in {len(roller)} sweeps, "
             f"{len(plan.strokes) - n_roller} pen strokes in {len(pens)} passes); "
             f"{s['punctures']:,} punctures ({s['distinct_channels']:,} distinct channels)"),
            (f"Session {_mmss(s['time_s'])} min:s: {_mmss(s['stroke_time_s'])} in contact, "
             f"{_mmss(s['transition_time_s'])} moving between strokes")]
    if roller:
        info.append(f"Roller first: sweeps 1–{len(roller)} ({_mmss(roller[0].start_s)}–{_mmss(roller[-1].end_s)}), "
                    "each sweep's parallel passes snaked, then its border (headland)")
    if pens:
        info.append(f"Pen after ({_mmss(pens[0].start_s)}–{_mmss(pens[-1].end_s)}): zone by zone, main passes, "
                    "then touch-ups where the skin is still under target")
    fig.text(0.06, 0.935, "\n".join(info), fontsize=8.2, va="top", linespacing=1.5)
    ax = fig.add_axes((0.06, 0.36, 0.88, 0.45))
    plan_overview(ax, plan, raster=raster, labels=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("All strokes, front view (circled: roller sweep order)", fontsize=9)
    legend_ax = fig.add_axes((0.06, 0.325, 0.88, 0.03))
    legend_ax.axis("off")
    legend_ax.legend(handles=stroke_legend_handles({st.device for st in plan.strokes}), loc="center", ncol=4,
                     fontsize=6.8, frameon=False)
    table_ax = fig.add_axes((0.06, 0.035, 0.88, 0.27))
    draw_zone_table(table_ax, plan, fontsize=7.2, transpose=False)
    table_ax.set_title("Per zone, simulated (punctures/cm²; in band = share of skin within [0.9 × target, cap])",
                       fontsize=8.5)
    fig.text(0.5, 0.012, "page 1 — one page per zone follows", ha="center", fontsize=7, color="#666666")
    return fig


def face_name(plan) -> str:
    return plan.face.source or "face"


def _zone_page(plan, name: str, steps: list, *, raster: FrontRaster, summary: dict, paths: dict,
               outlines: list) -> Figure:
    zones, face = plan.zones, plan.face
    fig = Figure(figsize=A4_PORTRAIT_IN, dpi=150)
    FigureCanvasAgg(fig)
    mine = [s for s in plan.strokes if s.zone == name]
    numbers = {s.id: k + 1 for k, s in enumerate(mine)}
    fig.text(0.06, 0.97, f"{short_label(name)}", fontsize=16, fontweight="bold", va="top")
    fig.text(0.94, 0.97, f"zone {name} — {face_name(plan)}", fontsize=8, va="top", ha="right", color="#555555")
    settings, result = _zone_text(plan, summary, name, steps, numbers)
    top = 0.935
    fig.text(0.05, top, settings, fontsize=7.4, va="top", linespacing=1.4, family="DejaVu Sans")
    fig.text(0.95, top, result, fontsize=7.4, va="top", ha="right", linespacing=1.4,
             bbox={"facecolor": "#f4f4f4", "edgecolor": "#cccccc", "pad": 4})
    n_lines = settings.count("\n") + 1
    text_bottom = top - 7.4 * 1.4 / 72 / A4_PORTRAIT_IN[1] * n_lines - 0.01
    view = _zone_view(face, zones, name, [paths[s.id] for s in mine])
    aspect = (view[1] - view[0]) / max(view[3] - view[2], 1e-9)
    page_w, page_h = A4_PORTRAIT_IN
    left, right, bottom, title_in = 0.04, 0.96, 0.03, 0.3
    top_panels = text_bottom - 0.015
    ncols, nrows, panel_w = _panel_grid(len(steps), aspect, (right - left) * page_w, (top_panels - bottom) * page_h,
                                        title_in)
    # the panels take the height they need, from the top; the rest of the page stays blank
    used = nrows * (panel_w / aspect + title_in) / page_h
    rgba = face_rgba(face, raster, _zone_highlight_rgb(zones, name))
    grid = fig.add_gridspec(nrows, ncols, left=left, right=right, top=top_panels - title_in * 0.6 / page_h,
                            bottom=max(bottom, top_panels - used), wspace=0.06, hspace=title_in / (panel_w / aspect))
    for k, (title, strokes) in enumerate(steps):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        step_ids = {s.id for s in strokes}
        context = [s for s in mine if s.id not in step_ids]
        draw_zone_step(ax, plan, raster, rgba, strokes, numbers, context, view, paths, outlines)
        ax.set_title(f"{title}: {number_ranges((numbers[s.id] for s in strokes), 34)}", fontsize=7.6)
    fig.text(0.5, 0.012, "dots: where a stroke starts; arrowheads: where it ends; numbers: order in this zone",
             ha="center", fontsize=6.8, color="#666666")
    return fig


def handout_pdf(plan, path) -> Path:
    """Write the trainer's handout as a PDF (atomically): a cover page (session summary, all
    strokes, the per-zone table), then one A4 page per zone with strokes: its settings, order
    and simulated dose, and one zoomed picture per step with the strokes numbered in order.
    Returns the path."""
    from matplotlib.backends.backend_pdf import PdfPages

    check_output(path, HANDOUT_SUFFIXES)
    _check_plan(plan)
    metadata = {"Title": f"Treatment plan: {face_name(plan)}", "Creator": "coverage"}
    with atomic_path(path) as tmp, PdfPages(tmp, metadata=metadata) as pdf:
        for _, fig in handout_pages(plan):
            pdf.savefig(fig, dpi=HANDOUT_IMAGE_DPI)
    return Path(path)
