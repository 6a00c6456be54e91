"""Pictures: the zone map (chart view and shaded front view).

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state), so the library
can draw from threads and servers without a display.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from shapely.ops import polylabel
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch
from matplotlib.path import Path as MplPath

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


def draw_front_view(ax, zones) -> None:
    """The face seen from the front (canonical frame), triangles coloured by zone and shaded."""
    face = zones.face
    colours = zone_colours(zones.names)
    palette = np.array([to_rgb(colours[n]) for n in zones.names] + [to_rgb(EXCLUDED)])
    centroid_uv = face.uv[face.faces].mean(axis=1)
    label = zones.label_at(centroid_uv)
    rgb = palette[np.where(label >= 0, label, len(zones.names))]
    rgb[~face.treatable_triangles] = to_rgb(UNOBSERVED)
    rgb = shaded_colours(face, rgb)
    p = face.to_canonical_frame(face.vertices)[face.faces]
    order = np.argsort(p[:, :, 2].mean(axis=1))  # painter's algorithm: far triangles first
    ax.add_collection(PolyCollection(p[order][:, :, :2], facecolors=rgb[order], edgecolors="none",
                                     antialiased=False))
    project = _front_projection(face)
    for exc in zones.exclusions.values():
        for poly in shapely.get_parts(exc.region):
            if poly.geom_type == "Polygon" and exc.name != "unobserved":
                xy = project(np.asarray(poly.exterior.coords))
                ax.add_patch(PathPatch(MplPath(xy[np.isfinite(xy).all(axis=1)]), facecolor="none",
                                       edgecolor="#444444", hatch="////", linewidth=0.5))
        for poly in shapely.get_parts(exc.keepout):
            if poly.geom_type == "Polygon":
                xy = project(np.asarray(poly.exterior.coords))
                ax.plot(xy[:, 0], xy[:, 1], color=KEEPOUT_EDGE, linewidth=0.8, linestyle="--")
    for name, poly in zones.polygons.items():
        at = _label_point(poly)
        if at is not None:
            xy = _front_xy(face, np.array([at]))[0]
            if np.isfinite(xy).all():
                ax.text(*xy, short_label(name), ha="center", va="center", fontsize=7)
    xy = p[:, :, :2].reshape(-1, 2)
    ax.set_xlim(xy[:, 0].min() - 3, xy[:, 0].max() + 3)
    ax.set_ylim(xy[:, 1].min() - 3, xy[:, 1].max() + 3)
    ax.set_aspect("equal")
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
