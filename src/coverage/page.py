"""The plan as one self-contained, offline HTML page: the 3D face coloured by density, the
strokes as lines, toggles per device, zone, direction and pass, hover per path sample.

The page inlines plotly's JavaScript bundle and makes no network request (no CDN script, no
MathJax, no fonts, no map tiles), so it opens from a USB stick in a clinic without internet.
Everything is drawn in the canonical frame (x the subject's left, y up, z out of the face),
the frame of the other pictures, whatever the input mesh's pose.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from . import viz
from .fileio import atomic_path, check_output

PAGE_SUFFIXES = (".html", ".htm")
DISPLAY_STEP_MM = 2.0      # stroke paths are shown with a sample at least every this much of path
ZOOM = 1.9                 # scene box scale: the face fills the view at first
HEAD_MM = 3.5              # roller arrowheads (cones) at each pass's end
LIFT_MM = 0.3              # lines float this far above the skin so the surface does not hide them
GROUP_KEYS = ("device", "zone", "direction", "kind")
PLOT_ID = "coverage-plan"
# the browser itself refuses any fetch: only inline scripts and styles, data:/blob: images
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; worker-src blob:; connect-src 'none'")
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": True,
                 "toImageButtonOptions": {"format": "png", "filename": "plan", "scale": 2}}


def decimate(points: np.ndarray, step_mm: float = DISPLAY_STEP_MM) -> np.ndarray:
    """Indices of path samples ``points (n, 3)`` to keep: the first, then each one at least
    ``step_mm`` of path after the last kept, and the last."""
    if len(points) <= 2:
        return np.arange(len(points))
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    keep = np.unique(np.searchsorted(s, np.arange(0.0, s[-1], step_mm)))
    return np.unique(np.concatenate([keep, [len(points) - 1]]))


def sample_speed_mm_s(points: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Travel speed at each path sample ``(n,)`` mm/s: the mean of its segments' speeds."""
    if len(points) < 2:
        return np.zeros(len(points))
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1) / np.maximum(np.diff(times_s), 1e-9)
    return np.concatenate([[seg[0]], (seg[:-1] + seg[1:]) / 2, [seg[-1]]])


def stroke_group(stroke) -> dict:
    """The toggle groups of a stroke: device, zone, direction class and pass kind."""
    return {"device": stroke.device, "zone": stroke.zone, "direction": viz.direction_key(stroke),
            "kind": "touch-up" if stroke.pattern == "touch-up" else "main"}


def _canonical(face, points: np.ndarray, normals: np.ndarray | None = None):
    """Points (and unit normals) in the canonical frame."""
    p = face.to_canonical_frame(np.asarray(points, dtype=np.float64).reshape(-1, 3))
    if normals is None:
        return p
    linear = np.linalg.inv(face.pose[:3, :3])
    n = np.asarray(normals, dtype=np.float64).reshape(-1, 3) @ linear.T
    return p, n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def vertex_density(plan) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex density ``(v,)`` punctures/cm² (mean over its treated triangles, NaN where
    none) and the treated-triangle mask ``(m,)`` (treatable skin under the centroid)."""
    face, dm = plan.face, plan.density
    centroid_uv = face.uv[face.faces].mean(axis=1)
    value = viz.texel_values(dm.grid, dm.nominal_per_cm2, centroid_uv)
    treated = np.isfinite(value) & (plan.zones.triangle_labels >= 0) & face.treatable_triangles
    f = face.faces[treated]
    total = np.bincount(f.ravel(), weights=np.repeat(value[treated], 3), minlength=len(face.vertices))
    count = np.bincount(f.ravel(), minlength=len(face.vertices))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan), treated


def _mesh_traces(plan) -> list:
    face, zones = plan.face, plan.zones
    vertices = _canonical(face, face.vertices).astype(np.float32)
    density, treated = vertex_density(plan)
    norm = viz.density_norm(zones)
    marks = {}
    for target, cap, _ in viz.dose_groups(zones):
        marks.setdefault(target, []).append("target")
        marks.setdefault(cap, []).append("cap")
    ticks = sorted(set(np.arange(0.0, norm.vmax, 50.0)) | set(marks))
    ticktext = [f"{' / '.join(dict.fromkeys(marks[t]))} {t:.4g}" if t in marks else f"{t:g}" for t in ticks]
    lighting = {"ambient": 0.75, "diffuse": 0.45, "specular": 0.04, "roughness": 0.9, "fresnel": 0.05}
    light = {"x": 200.0, "y": 400.0, "z": 1000.0}
    x, y, z = vertices.T
    treated_faces = face.faces[treated].astype(np.int32)
    other_faces = face.faces[~treated].astype(np.int32)
    dose = go.Mesh3d(
        x=x, y=y, z=z, i=treated_faces[:, 0], j=treated_faces[:, 1], k=treated_faces[:, 2],
        intensity=np.nan_to_num(density, nan=0.0).astype(np.float32), intensitymode="vertex",
        colorscale=viz.DENSITY_CMAP.capitalize(), cmin=norm.vmin, cmax=norm.vmax,
        colorbar={"title": {"text": "punctures/cm²<br>(1 cm² window)", "side": "right"}, "tickvals": ticks,
                  "ticktext": ticktext, "len": 0.85, "thickness": 18},
        lighting=lighting, lightposition=light, flatshading=False, name="density",
        hovertemplate="density %{intensity:.0f} punctures/cm²<extra></extra>",
        meta={"layer": "surface"})
    rest = go.Mesh3d(x=x, y=y, z=z, i=other_faces[:, 0], j=other_faces[:, 1], k=other_faces[:, 2],
                     color=viz.NO_DOSE, lighting=lighting, lightposition=light, name="not treated",
                     hovertemplate="not treated (excluded, margin or unobserved)<extra></extra>",
                     meta={"layer": "surface"})
    return [dose, rest]


def _outline_trace(plan, geoms, colour: str, name: str, layer: str, width: float) -> go.Scatter3d:
    """Chart outlines lifted onto the skin (slightly above it) as one NaN-separated line trace."""
    import shapely

    face = plan.face
    parts = []
    for geom in geoms:
        for poly in shapely.get_parts(geom):
            if poly.geom_type != "Polygon" or poly.is_empty:
                continue
            ring = shapely.get_coordinates(shapely.segmentize(poly.exterior, 1.0))
            lifted = face.lift(ring)
            p, n = _canonical(face, lifted.points, lifted.normals)
            p = p + LIFT_MM * n
            p[~lifted.inside] = np.nan
            parts += [p, np.full((1, 3), np.nan)]
    xyz = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 3), np.float32)
    return go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", name=name,
                        line={"color": colour, "width": width}, hoverinfo="skip", connectgaps=False,
                        showlegend=False, meta={"layer": layer})


def _stroke_traces(plan, step_mm: float) -> list:
    """One line trace per (device, zone, direction, pass kind), NaN between strokes, and one
    cone trace of arrowheads per roller group."""
    face = plan.face
    groups: dict = {}
    for s in plan.strokes:
        groups.setdefault(tuple(stroke_group(s).values()), []).append(s)
    traces = []
    for key, strokes in groups.items():
        meta = dict(zip(GROUP_KEYS, key))
        meta["group"] = True
        device, zone, direction, kind = key
        xyz, data, heads = [], [], []
        for s in strokes:
            keep = decimate(s.points, step_mm)
            p, n = _canonical(face, s.points[keep], s.normals[keep])
            p = p + LIFT_MM * n
            speed = sample_speed_mm_s(s.points, s.times_s)[keep]
            row = np.column_stack([np.full(len(keep), s.id), np.full(len(keep), s.depth_mm), speed,
                                   s.times_s[keep], np.full(len(keep), s.needle_length_mm)])
            xyz += [p, np.full((1, 3), np.nan)]
            data += [row, np.full((1, 5), np.nan)]
            if device == "roller":
                tangent = _canonical(face, s.points[-1:], s.tangents[-1:])[1][0]
                heads.append(np.concatenate([p[-1], tangent]))
        xyz = np.concatenate(xyz).astype(np.float32)
        data = np.concatenate(data).astype(np.float32)
        if device == "roller":
            colour, width, label = viz.DIRECTION_COLOURS[direction], 4, f"roller {direction}"
        else:
            pattern = strokes[0].pattern
            colour, width, label = viz.PEN_STYLES[pattern]["color"], 2.5, f"pen {pattern}"
        traces.append(go.Scatter3d(
            x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", connectgaps=False, customdata=data,
            line={"color": colour, "width": width}, name=f"{label} · {zone}", showlegend=False, meta=meta,
            hovertemplate=(f"<b>stroke %{{customdata[0]:.0f}}</b> ({label}{', touch-up' if kind == 'touch-up' else ''})"
                           f"<br>zone {zone}<br>depth %{{customdata[1]:.2f}} mm (needle %{{customdata[4]:.2f}} mm)"
                           "<br>speed %{customdata[2]:.1f} mm/s<br>at %{customdata[3]:.1f} s<extra></extra>")))
        if heads:
            h = np.asarray(heads, dtype=np.float32)
            size = HEAD_MM   # "raw": the cone is as long as its vector, in mm
            traces.append(go.Cone(x=h[:, 0], y=h[:, 1], z=h[:, 2], u=size * h[:, 3], v=size * h[:, 4],
                                  w=size * h[:, 5], sizemode="raw", sizeref=1.0, anchor="tip", showscale=False,
                                  colorscale=[[0, colour], [1, colour]], hoverinfo="skip", name=f"{label} heads",
                                  meta={**meta, "heads": True}))
    return traces


def plan_plotly(plan, *, step_mm: float = DISPLAY_STEP_MM) -> go.Figure:
    """The plotly figure of the page: the face coloured by density (and grey where not
    treated), zone borders, exclusion outlines, and the strokes grouped for the toggles."""
    viz._check_plan(plan)
    traces = _mesh_traces(plan)
    traces.append(_outline_trace(plan, plan.zones.outlines.values(), "white", "zone borders", "borders", 2))
    traces.append(_outline_trace(plan, [e.region for e in plan.zones.exclusions.values()], "#b2182b",
                                 "exclusions", "borders", 3))
    traces += _stroke_traces(plan, step_mm)
    fig = go.Figure(traces)
    axis = {"visible": False, "showspikes": False}
    lo = np.nanmin([np.nanmin(t.x) for t in traces[:1]]), np.nanmin(traces[0].y), np.nanmin(traces[0].z)
    hi = np.nanmax(traces[0].x), np.nanmax(traces[0].y), np.nanmax(traces[0].z)
    extent = np.subtract(hi, lo)
    ratio = dict(zip("xyz", (ZOOM * extent / extent.max()).tolist()))
    fig.update_layout(
        template="none", margin={"l": 0, "r": 0, "t": 0, "b": 0}, paper_bgcolor="white",
        scene={"xaxis": axis, "yaxis": axis, "zaxis": axis, "aspectmode": "manual", "aspectratio": ratio,
               "dragmode": "orbit",
               "camera": {"eye": {"x": 0.3, "y": 0.12, "z": 1.4}, "up": {"x": 0, "y": 1, "z": 0},
                          "projection": {"type": "orthographic"}}},
        hoverlabel={"font": {"size": 12}}, uirevision="plan")
    return fig


def _title(plan) -> str:
    s = plan.summary()
    return (f"Plan: {html.escape(plan.face.source or 'face')}, protocol {html.escape(plan.protocol.name)}: "
            f"{len(plan.strokes)} strokes, {s['punctures']:,} punctures, session {viz._mmss(s['time_s'])} min:s")


def _controls(plan) -> str:
    """The side panel: a checkbox per device, direction, pass kind and zone, and layers."""
    groups = [stroke_group(s) for s in plan.strokes]

    def present(key, order=None):
        values = list(dict.fromkeys(g[key] for g in groups))
        return [v for v in order if v in values] if order else values

    def boxes(key, values, swatch=None):
        out = []
        for v in values:
            colour = (swatch or {}).get(v)
            dot = f'<span class="sw" style="background:{colour}"></span>' if colour else ""
            label = viz.short_label(v) if key == "zone" else ("along a border" if v == viz.BORDER else v)
            out.append(f'<label>{dot}<input type="checkbox" data-key="{key}" value="{html.escape(v)}" checked> '
                       f"{html.escape(label)}</label>")
        return "\n".join(out)

    directions = present("direction", [*(f"{d:g}°" for d in viz.DIRECTIONS_DEG), viz.BORDER])
    return f"""<div id="controls">
<h3>Show</h3>
<label><input type="checkbox" data-layer="surface" checked> face (density)</label>
<label><input type="checkbox" data-layer="borders" checked> zone borders, exclusions</label>
<h3>Device</h3>
{boxes("device", present("device", ["roller", "pen"]))}
<h3>Direction</h3>
{boxes("direction", directions, viz.DIRECTION_COLOURS)}
<p class="note">roller: colour = direction; pen: brown raster, teal contour loops</p>
<h3>Pass</h3>
{boxes("kind", present("kind", ["main", "touch-up"]))}
<h3>Zone <button type="button" data-all="zone" data-on="1">all</button><button type="button" data-all="zone"
data-on="0">none</button></h3>
{boxes("zone", [n for n in plan.zones.names if n in {g["zone"] for g in groups}])}
<p class="note">drag to turn, scroll to zoom; hover a stroke for its id, depth and speed</p>
</div>"""


STYLE = """<style>
body { margin: 0; font-family: sans-serif; font-size: 13px; display: flex; }
#controls { width: 190px; flex: none; padding: 6px 10px; overflow-y: auto; height: 100vh; box-sizing: border-box;
            border-right: 1px solid #ccc; background: #fafafa; }
#controls h3 { font-size: 13px; margin: 10px 0 3px; }
#controls label { display: block; white-space: nowrap; line-height: 1.55; }
#controls .sw { display: inline-block; width: 10px; height: 10px; margin-right: 3px; border-radius: 2px; }
#controls .note { color: #666; font-size: 11px; margin: 4px 0; }
#controls button { font-size: 11px; margin-left: 4px; padding: 0 4px; }
#plot { flex: 1; min-width: 0; }
#title { height: 34px; line-height: 34px; padding-left: 12px; font-size: 15px; }
</style>"""

SCRIPT = """
(function () {
  var gd = document.getElementById('{plot_id}');
  var keys = GROUP_KEYS;
  function chosen(key) {
    var out = {};
    document.querySelectorAll('#controls input[data-key="' + key + '"]').forEach(function (e) {
      if (e.checked) { out[e.value] = true; }
    });
    return out;
  }
  function layerOn(layer) {
    var box = document.querySelector('#controls input[data-layer="' + layer + '"]');
    return !box || box.checked;
  }
  function apply() {
    var sel = {};
    keys.forEach(function (k) { sel[k] = chosen(k); });
    var visible = gd.data.map(function (t) {
      var m = t.meta || {};
      if (m.layer) { return layerOn(m.layer); }
      if (!m.group) { return true; }
      return keys.every(function (k) { return sel[k][m[k]] === true; });
    });
    Plotly.restyle(gd, {visible: visible});
  }
  document.querySelectorAll('#controls input').forEach(function (e) { e.addEventListener('change', apply); });
  document.querySelectorAll('#controls button[data-all]').forEach(function (b) {
    b.addEventListener('click', function () {
      document.querySelectorAll('#controls input[data-key="' + b.dataset.all + '"]').forEach(function (e) {
        e.checked = b.dataset.on === '1';
      });
      apply();
    });
  });
})();
""".replace("GROUP_KEYS", json.dumps(list(GROUP_KEYS)))


def plan_page(plan, *, step_mm: float = DISPLAY_STEP_MM) -> str:
    """The plan as one self-contained HTML page (plotly's JavaScript inlined, no network
    request): 3D face coloured by density, strokes, toggles, hover per path sample."""
    fig = plan_plotly(plan, step_mm=step_mm)
    body = fig.to_html(full_html=False, include_plotlyjs=True, include_mathjax=False, config=PLOTLY_CONFIG,
                       div_id=PLOT_ID, default_height="calc(100vh - 34px)", default_width="100%",
                       post_script=SCRIPT)
    title = html.escape(f"coverage plan: {plan.face.source or 'face'}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            f"<title>{title}</title>\n{STYLE}\n</head>\n<body>\n{_controls(plan)}\n"
            f"<div id=\"plot\">\n<div id=\"title\">{_title(plan)}</div>\n{body}\n</div>\n</body>\n</html>\n")


def write_page(plan, path, *, step_mm: float = DISPLAY_STEP_MM) -> Path:
    """Write :func:`plan_page` to ``path`` (``.html``) atomically; returns the path."""
    check_output(path, PAGE_SUFFIXES)
    text = plan_page(plan, step_mm=step_mm)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
