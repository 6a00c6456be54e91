"""Pictures of a plan: the overview PNG, the offline HTML page, the session GIF, the PDF
handout. Each output is produced, non-trivial, and shows what it claims."""
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from coverage import CoverageError, page, viz


def _n_colours(image: np.ndarray) -> int:
    """Distinct colours of an RGB image ``(h, w, 3)`` with values in [0, 1] or 0..255."""
    rgb = np.asarray(image, dtype=np.float64)
    rgb = np.round(rgb * 255 if rgb.max() <= 1.0 else rgb).astype(np.int64)
    return len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))


def _stroke(id, device="roller", zone="cheek_left", pass_index=0, direction_deg=0.0, pattern="lines"):
    return SimpleNamespace(id=id, device=device, zone=zone, pass_index=pass_index, direction_deg=direction_deg,
                           pattern=pattern, times_s=np.array([float(id), id + 0.5]))


# --- small cases worked by hand ----------------------------------------------------------

def test_direction_key_is_the_nearest_direction_modulo_180():
    assert viz.direction_key(_stroke(0, direction_deg=0.0)) == "0°"
    assert viz.direction_key(_stroke(0, direction_deg=44.0)) == "45°"
    assert viz.direction_key(_stroke(0, direction_deg=170.0)) == "0°"      # 10° from 180°
    assert viz.direction_key(_stroke(0, direction_deg=112.0)) == "90°"     # 22° from 90°, 23° from 135°
    assert viz.direction_key(_stroke(0, direction_deg=113.0)) == "135°"
    assert viz.direction_key(_stroke(0, direction_deg=30.0, pattern="headland")) == viz.BORDER
    assert viz.direction_key(_stroke(0, device="pen", direction_deg=None, pattern="contour")) == viz.BORDER


def test_sweeps_group_consecutive_strokes_and_headland_closes_its_sweep():
    strokes = [_stroke(0), _stroke(1, zone="jaw_left"),                        # roller sweep 1 at 0°
               _stroke(2, direction_deg=77.0, pattern="headland"),               # ... its border
               _stroke(3, pass_index=1), _stroke(4, pass_index=1),               # sweep 2
               _stroke(5, direction_deg=90.0),                                   # sweep 3 at 90°
               _stroke(6, "pen", "nose", 0, None, "contour"), _stroke(7, "pen", "nose", 0, None, "contour"),
               _stroke(8, "pen", "chin", 0, 0.0, "raster"), _stroke(9, "pen", "chin", 1, 90.0, "raster")]
    sweeps = viz.plan_sweeps(SimpleNamespace(strokes=strokes))
    assert [w.strokes for w in sweeps] == [(0, 1, 2), (3, 4), (5,), (6, 7), (8,), (9,)]
    assert [w.direction for w in sweeps] == ["0°", "0°", "90°", viz.BORDER, "0°", "90°"]
    assert sweeps[0].zones == ("cheek_left", "jaw_left")
    assert [w.number for w in sweeps] == [1, 2, 3, 4, 5, 6]
    assert sweeps[0].start_s == 0.0 and sweeps[0].end_s == 2.5


def test_number_ranges():
    assert viz.number_ranges([9, 1, 2, 3, 7, 10]) == "1–3, 7, 9–10"
    assert viz.number_ranges([5]) == "5"
    assert viz.number_ranges(range(1, 40, 2), limit=12) == "1, 3, 5, 7, … 39"


def test_decimate_keeps_a_sample_every_step_and_both_ends():
    line = np.column_stack([np.arange(21) * 0.5, np.zeros(21), np.zeros(21)])    # 10 mm in 0.5 mm steps
    assert page.decimate(line, 2.0).tolist() == [0, 4, 8, 12, 16, 20]
    assert page.decimate(line[:2], 2.0).tolist() == [0, 1]


def test_sample_speed():
    points = np.array([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]])
    speed = page.sample_speed_mm_s(points, np.array([0.0, 0.1, 0.2]))
    assert np.allclose(speed, [10.0, 15.0, 20.0])


def test_bad_outputs_are_refused_in_one_line(tmp_path):
    empty = SimpleNamespace(strokes=[])
    calls = [(lambda p: viz.save_figure(None, p), "x.bmp"),
             (lambda p: page.write_page(empty, p), "x.txt"),
             (lambda p: viz.session_animation(empty, p), "x.mp4"),
             (lambda p: viz.handout_pdf(empty, p), "x.png")]
    for call, name in calls:
        with pytest.raises(CoverageError) as err:
            call(tmp_path / name)
        message = str(err.value)
        assert "\n" not in message and Path(name).suffix in message
    with pytest.raises(CoverageError, match="no strokes"):
        viz.handout_pdf(empty, tmp_path / "x.pdf")
    assert list(tmp_path.iterdir()) == []


# --- the default auto plan ---------------------------------------------------------------

def test_front_raster_is_registered_with_the_front_view(default_face):
    raster = viz.front_raster(default_face, 0.5)
    x0, x1, y0, y1 = raster.extent
    h, w = raster.tri.shape
    assert np.isclose((x1 - x0) / w, 0.5) and np.isclose((y1 - y0) / h, 0.5)
    rows, cols = np.nonzero(raster.tri >= 0)
    pick = np.random.default_rng(1).choice(len(rows), 400, replace=False)
    r, c = rows[pick], cols[pick]
    centre = np.column_stack([x0 + (c + 0.5) * 0.5, y1 - (r + 0.5) * 0.5])       # row 0 is the top
    corners = default_face.to_canonical_frame(default_face.vertices)[default_face.faces[raster.tri[r, c]]][..., :2]
    # every pixel lies on (or within a pixel of) the triangle it names
    assert np.all(np.linalg.norm(corners.mean(axis=1) - centre, axis=1) < default_face.longest_edge_mm + 0.5)
    # the barycentrics give the point of that triangle at (or, where Agg gave the pixel to a
    # neighbour covering most of it, nearest) the pixel centre
    off = np.linalg.norm(np.einsum("kj,kjd->kd", raster.bary[r, c], corners) - centre, axis=1) / 0.5
    assert np.median(off) < 0.35 and np.percentile(off, 95) < 0.8
    assert 0.6 < (raster.tri >= 0).mean() < 0.9


def test_plan_figure_shows_every_stroke_the_table_and_the_dose_marks(auto_plan, tmp_path):
    from matplotlib.image import imread

    fig = viz.plan_figure(auto_plan)
    drawn = fig._coverage_drawn
    roller = [s for s in auto_plan.strokes if s.device == "roller"]
    pen = [s for s in auto_plan.strokes if s.device == "pen"]
    assert len(drawn["arrows"]) == len(roller)
    assert {a.get_gid() for a in drawn["arrows"]} == {f"roller-stroke-{s.id}" for s in roller}
    assert len(drawn["pen"]) == len(pen)
    assert len(drawn["numbers"]) == sum(w.device == "roller" for w in viz.plan_sweeps(auto_plan))
    # arrow colours follow the directions
    for arrow, s in zip(drawn["arrows"], roller):
        assert np.allclose(arrow.get_edgecolor()[:3], to_rgb(viz.DIRECTION_COLOURS[viz.direction_key(s)]))

    summary = auto_plan.summary()["zones"]
    table = next(ax for ax in fig.axes if ax.tables).tables[0]
    cells = table.get_celld()
    band_row = 1 + viz.ZONE_TABLE_ROWS.index("in band %")
    for j, name in enumerate(auto_plan.zones.names):
        assert cells[0, j].get_text().get_text() == viz.short_label(name)
        assert cells[band_row, j].get_text().get_text() == f"{100 * summary[name]['in_band_fraction']:.1f}"

    cbar = next(ax for ax in fig.axes if "punctures / cm²" in ax.get_ylabel())
    marks = {round(float(line.get_ydata()[0]), 3) for line in cbar.lines}
    for name in auto_plan.zones.names:
        dose = auto_plan.zones.dose(name)
        assert round(dose.target_per_cm2, 3) in marks and round(dose.cap_per_cm2, 3) in marks

    out = tmp_path / "plan.png"
    viz.save_figure(fig, out)
    assert out.stat().st_size > 300_000
    image = imread(out)[..., :3]
    assert _n_colours(image) > 5000
    assert (image.min(axis=-1) < 0.9).mean() > 0.3          # not mostly blank


def test_heat_map_matches_the_density_map(auto_plan):
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    layer = viz.DensityLayer(ax, auto_plan.zones, viz.front_raster(auto_plan.face, 0.5))
    value = layer.update(auto_plan.density)
    shown = np.isfinite(value)
    assert shown.mean() > 0.4
    # the densest pixel shown is the densest texel's value, and nothing is over the top cap
    assert np.isclose(np.nanmax(value), np.nanmax(auto_plan.density.nominal_per_cm2), rtol=0.02)
    top_cap = max(auto_plan.zones.dose(n).cap_per_cm2 for n in auto_plan.zones.names)
    assert np.nanmax(value) <= top_cap


@pytest.fixture(scope="module")
def page_file(auto_plan, tmp_path_factory):
    """The default auto plan's page, written once."""
    return page.write_page(auto_plan, tmp_path_factory.mktemp("page") / "plan.html")


def test_page_is_offline_and_has_a_trace_per_group(auto_plan, page_file):
    html = page_file.read_text(encoding="utf-8")
    assert 3_000_000 < len(html) < 15_000_000
    assert not re.search(r"<script[^>]+src=", html, re.IGNORECASE)
    # outside the inlined scripts (plotly's bundle holds URLs it only uses for maps), no
    # element, style or link points anywhere
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.IGNORECASE | re.DOTALL)
    assert len(markup) < 100_000
    assert not re.search(r"""(src|href|action|data)\s*=\s*["']?(https?:)?//""", markup, re.IGNORECASE)
    assert not re.search(r"<(link|iframe|img|object|embed|base)\b", markup, re.IGNORECASE)
    assert "@import" not in markup and "url(" not in markup
    assert "Content-Security-Policy" in html and "connect-src 'none'" in html
    assert "Plotly.newPlot" in html and "MathJax" not in html.split("<body>")[0]

    groups = {tuple(page.stroke_group(s).values()) for s in auto_plan.strokes}
    roller_groups = {g for g in groups if g[0] == "roller"}
    fig = page.plan_plotly(auto_plan)
    assert len(fig.data) == 4 + len(groups) + len(roller_groups)
    assert html.count('"type":"scatter3d"') == 2 + len(groups)
    assert html.count('"type":"cone"') == len(roller_groups)
    assert html.count('"type":"mesh3d"') == 2
    for name in {s.zone for s in auto_plan.strokes}:
        assert f'data-key="zone" value="{name}"' in html
    for device in ("roller", "pen"):
        assert f'data-key="device" value="{device}"' in html
    for key in ("0°", "45°", "90°", "135°", viz.BORDER):
        assert f'data-key="direction" value="{key}"' in html
    lines = [t for t in fig.data if t.type == "scatter3d" and (t.meta or {}).get("group")]
    assert all("stroke %{customdata[0]" in t.hovertemplate and "depth" in t.hovertemplate
               and "speed" in t.hovertemplate for t in lines)
    # every stroke is in its group's trace, once
    ids = np.concatenate([np.unique(np.asarray(t.customdata)[:, 0][np.isfinite(np.asarray(t.customdata)[:, 0])])
                          for t in lines])
    assert sorted(ids.astype(int).tolist()) == [s.id for s in auto_plan.strokes]


def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


PROBE_HEAD = """<script>
window.__violations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__violations.push(e.blockedURI + ' ' + e.violatedDirective);
});
</script>"""
PROBE_BODY = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var gd = document.getElementById('coverage-plan');
  function shown() { return gd.data.filter(function (t) { return t.visible !== false; }).length; }
  var out = {traces: gd.data.length, shown: shown(), canvases: document.querySelectorAll('canvas').length,
             resources: performance.getEntriesByType('resource').map(function (e) { return e.name; }),
             violations: window.__violations};
  document.querySelector('#controls input[data-key="device"][value="roller"]').click();
  document.querySelector('#controls button[data-all="zone"][data-on="0"]').click();
  document.querySelector('#controls input[data-key="zone"][value="cheek_left"]').click();
  out.after = shown();
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 1500); });
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on PATH (apt-get install chromium) to open the page in")
def test_page_in_headless_chromium(auto_plan, page_file, tmp_path):
    """Open the page in a real browser: it draws (many colours), fetches nothing, breaks no
    content-security rule, and its toggles hide what they should."""
    from matplotlib.image import imread

    out = page_file
    html = out.read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("<title>", PROBE_HEAD + "\n<title>", 1).replace("</body>", PROBE_BODY + "</body>"),
                     encoding="utf-8")
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
             "--disable-background-networking",
             "--no-first-run", "--window-size=1400,900", "--virtual-time-budget=20000"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, "the page's script did not run"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    fig = page.plan_plotly(auto_plan)
    assert result["traces"] == len(fig.data) == result["shown"]
    assert result["canvases"] >= 1
    assert result["resources"] == [] and result["violations"] == []
    # pen only, cheek L only: the two surfaces, the two outline layers and the cheek's pen groups
    pen_cheek = {tuple(page.stroke_group(s).values()) for s in auto_plan.strokes
                 if s.device == "pen" and s.zone == "cheek_left"}
    assert result["after"] == 4 + len(pen_cheek)

    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", out.as_uri()], capture_output=True, timeout=120, check=True)
    image = imread(shot)[..., :3]
    plot = image[60:850, 220:1150]            # the 3D view, right of the controls
    assert _n_colours(plot) > 2000, "the 3D view looks blank"
    assert (plot.min(axis=-1) < 0.9).mean() > 0.2


def test_session_animation_builds_up_the_density(auto_plan, tmp_path):
    from PIL import Image

    groups = viz.frame_sweeps(auto_plan, 8)
    assert len(groups) == 8
    assert [w.number for g in groups for w in g] == [w.number for w in viz.plan_sweeps(auto_plan)]
    out = viz.session_animation(auto_plan, tmp_path / "session.gif", frames=8, fps=4, hold_s=2.0)
    assert 50_000 < out.stat().st_size < 5_000_000
    with Image.open(out) as gif:
        assert gif.n_frames == 8
        frames, durations = [], []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("RGB"), dtype=np.float64))
            durations.append(gif.info["duration"])
    assert durations[0] == 250 and durations[-1] == 2000
    w = frames[0].shape[1]
    heat = [f[:, w // 2:] for f in frames]
    # the right half (density) changes from frame to frame as punctures accumulate
    assert all(np.abs(a - b).mean() > 0.05 for a, b in itertools.pairwise(heat))
    assert _n_colours(frames[-1]) > 100


def test_handout_has_a_cover_and_a_page_per_treated_zone(auto_plan, tmp_path):
    zones = [n for n in auto_plan.zones.names if any(s.zone == n for s in auto_plan.strokes)]
    for name in zones:
        steps = viz.zone_steps(auto_plan, name)
        ids = sorted(s.id for _, strokes in steps for s in strokes)
        assert ids == [s.id for s in auto_plan.strokes if s.zone == name]
    out = viz.handout_pdf(auto_plan, tmp_path / "handout.pdf")
    data = out.read_bytes()
    assert data.startswith(b"%PDF") and 300_000 < len(data) < 15_000_000
    assert len(re.findall(rb"/Type /Page\b(?!s)", data)) == 1 + len(zones)
