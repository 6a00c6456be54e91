"""The chart: a low-distortion flattening of the face, and its per-triangle metric.

The chart is a least-squares conformal map (Levy et al. 2002, "Least Squares Conformal
Maps for Automatic Texture Atlas Generation") of the canonical face at the working
resolution, pinned at the two outer eye corners, scaled so chart area equals skin area
overall, with +u the subject's left, +v up and the nose tip at the origin. It is computed
once per resolution and shared by every face (same topology); each face converts chart
lengths and areas to skin with its own per-triangle metric.

The solve takes ~0.25 s at the working resolution, so the chart is kept between processes in
a cache directory (:func:`cache_dir`): a file named by a SHA-256 over everything the chart
is computed from (the placed template, the pins, this module's code, the NumPy and SciPy
versions), so a hit returns exactly the array the solve would, and anything unreadable,
mismatched or unwritable falls back to the solve.

Do not plan in a frontal projection: on the canonical face it has angle ratio p95 4.9 and
area scale p5 0.2 (shared DESIGN.md), against ~1.02 and ~0.7 here.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import threadpoolctl

from . import template as _template
from .tasks import BLAS_LOCK

# outer eye corners (subject's right, left): far apart, on stable skin, symmetric
PIN_LANDMARKS = (33, 263)
ORIGIN_LANDMARK = 4  # nose tip


def lscm(vertices: np.ndarray, faces: np.ndarray, pins, pin_uv: np.ndarray) -> np.ndarray:
    """Least-squares conformal map ``(n, 2) float`` of a disk-like mesh with pinned vertices.

    The conformal energy is written over complex chart coordinates ``z = u + iv`` (one
    unknown per vertex rather than two) and its normal equations are solved by SuperLU;
    at ~29k vertices this takes ~0.4 s against ~1.4 s for the split real system.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    pins = np.asarray(pins, dtype=np.int64)
    nv, nf = len(vertices), len(faces)
    p0, p1, p2 = (vertices[faces[:, i]] for i in range(3))
    e1, e2 = p1 - p0, p2 - p0
    len1 = np.linalg.norm(e1, axis=1)
    x_axis = e1 / len1[:, None]
    normal = np.cross(e1, e2)
    twice_area = np.linalg.norm(normal, axis=1)
    y_axis = np.cross(normal / twice_area[:, None], x_axis)
    # each triangle in its own plane: corners (0, 0), (len1, 0), (x2, y2)
    local = np.zeros((nf, 3), dtype=np.complex128)
    local[:, 1] = len1
    local[:, 2] = np.einsum("ij,ij->i", e2, x_axis) + 1j * np.einsum("ij,ij->i", e2, y_axis)
    weight = np.stack([local[:, (j + 2) % 3] - local[:, (j + 1) % 3] for j in range(3)], axis=1)
    weight /= np.sqrt(twice_area)[:, None]
    m = sp.csr_matrix((weight.ravel(), (np.repeat(np.arange(nf), 3), faces.ravel())), shape=(nf, nv))
    free = np.ones(nv, dtype=bool)
    free[pins] = False
    z_pins = pin_uv[:, 0] + 1j * pin_uv[:, 1]
    m_free = m[:, free].tocsc()
    rhs = -(m[:, pins] @ z_pins)
    normal_matrix = (m_free.conj().T @ m_free).tocsc()
    # one BLAS thread: SuperLU's dense kernels gain nothing from more on a system this size,
    # and threaded OpenBLAS stalls for seconds when the cores are busy (measured: 0.7 s -> 13-28 s)
    with BLAS_LOCK, threadpoolctl.threadpool_limits(1, user_api="blas"):   # one limiting thread at a time
        solution = spla.splu(normal_matrix).solve(m_free.conj().T @ rhs)
    z = np.empty(nv, dtype=np.complex128)
    z[free] = solution
    z[pins] = z_pins
    return np.ascontiguousarray(np.stack([z.real, z.imag], axis=1))


def jacobians(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Per-triangle Jacobian ``(m, 3, 2) float`` of the affine map chart -> surface.

    A chart displacement ``d (2,)`` inside triangle t moves ``J[t] @ d`` on the surface.
    """
    p = vertices[faces]
    q = uv[faces]
    edges3 = np.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]], axis=2)  # (m, 3, 2)
    edges2 = np.stack([q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]], axis=2)  # (m, 2, 2)
    return edges3 @ np.linalg.inv(edges2)


PINV_CLOSED_SIN2 = 1e-12   # closed-form pseudo-inverse where sin^2 of the columns' angle is above this


def pseudo_inverses(jac: np.ndarray) -> np.ndarray:
    """The Moore-Penrose pseudo-inverse ``(m, 2, 3)`` of each Jacobian ``(m, 3, 2)``: the
    chart vector of a surface vector in the triangle's plane.

    With columns ``a``, ``b`` of full rank it is ``(J^T J)^-1 J^T``, in closed form:
    ``((b.b) a - (a.b) b) / |a x b|^2`` and ``((a.a) b - (a.b) a) / |a x b|^2`` (the
    determinant of ``J^T J`` as the squared cross product, without cancellation), taken where
    the columns are well apart (``|a x b|^2 > PINV_CLOSED_SIN2 |a|^2 |b|^2``); elsewhere
    ``np.linalg.pinv`` (the SVD, with its rank cut: a collapsed triangle gets a rank-one
    inverse); NaN where the Jacobian is not finite. Row by row: a gather of the result equals
    the result of the gathered Jacobians bit for bit. Against the SVD the closed form agrees
    to a few units in the last place on the chart's Jacobians (a tested bound: 1e-13 relative)."""
    jac = np.asarray(jac, dtype=np.float64)
    out = np.full((len(jac), 2, 3), np.nan)
    finite = np.isfinite(jac).all(axis=(1, 2))
    a, b = jac[:, :, 0], jac[:, :, 1]
    with np.errstate(all="ignore"):     # rows not finite, or collapsed, are not taken from here
        aa = np.einsum("ij,ij->i", a, a)
        bb = np.einsum("ij,ij->i", b, b)
        ab = np.einsum("ij,ij->i", a, b)
        c = np.cross(a, b)
        det = np.einsum("ij,ij->i", c, c)
        closed = finite & (det > PINV_CLOSED_SIN2 * aa * bb)
        inv = 1.0 / det
        out[closed, 0] = ((bb * inv)[:, None] * a - (ab * inv)[:, None] * b)[closed]
        out[closed, 1] = ((aa * inv)[:, None] * b - (ab * inv)[:, None] * a)[closed]
    # a closed form out of range (entries near the ends of the floats) takes the SVD too
    rest = finite & ~(closed & np.isfinite(out).all(axis=(1, 2)))
    if rest.any():
        out[rest] = np.linalg.pinv(jac[rest])
    return out


def metric(jac: np.ndarray) -> np.ndarray:
    """First fundamental form ``(m, 2, 2) float``: skin length of chart vector d is sqrt(d.G.d)."""
    return np.transpose(jac, (0, 2, 1)) @ jac


def area_scale(jac: np.ndarray) -> np.ndarray:
    """Skin mm^2 per chart mm^2 in each triangle ``(m,) float``."""
    g = metric(jac)
    return np.sqrt(np.maximum(g[:, 0, 0] * g[:, 1, 1] - g[:, 0, 1] * g[:, 1, 0], 0.0))


def signed_chart_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Signed chart area of each triangle ``(m,) float`` (positive = not flipped)."""
    q = uv[faces]
    d1, d2 = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
    return 0.5 * (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])


def distortion(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> dict:
    """Area and angle distortion of a chart, weighted by skin area.

    ``area_scale`` is skin area per chart area relative to its (area-weighted) median;
    ``angle_ratio`` is the ratio of the metric's singular values (1 = conformal).
    Returns p5/p50/p95/max for both, and the count of flipped triangles.
    """
    jac = jacobians(vertices, faces, uv)
    singular = np.sqrt(np.maximum(np.linalg.eigvalsh(metric(jac)), 0.0))
    ratio = singular[:, 1] / np.maximum(singular[:, 0], 1e-300)
    scale = singular[:, 0] * singular[:, 1]
    skin = 0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]],
                                         vertices[faces[:, 2]] - vertices[faces[:, 0]]), axis=1)
    scale = scale / weighted_percentile(scale, skin, 50.0)

    def summary(x):
        out = {f"p{q:g}": float(weighted_percentile(x, skin, q)) for q in (5, 50, 95)}
        out["max"] = float(x.max())
        out["min"] = float(x.min())
        return out

    return {"area_scale": summary(scale), "angle_ratio": summary(ratio),
            "flipped": int((signed_chart_areas(uv, faces) <= 0).sum())}


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-th percentile (0..100) of values under non-negative weights (lower value at ties)."""
    return weighted_percentiles(values, weights, (q,))[0]


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs) -> list:
    """:func:`weighted_percentile` at each of ``qs``, with one sort of the values."""
    values = np.asarray(values, dtype=np.float64).ravel()
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if values.size == 0 or weights.sum() <= 0:
        return [float("nan")] * len(qs)
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    ranked = values[order]
    out = []
    for q in qs:
        k = int(np.searchsorted(cum, q / 100.0 * cum[-1], side="left"))
        out.append(float(ranked[min(k, len(values) - 1)]))
    return out


CACHE_ENV = "COVERAGE_CACHE_DIR"
CACHE_FORMAT = b"coverage canonical chart 1"


def cache_dir() -> Path | None:
    """Where canonical charts are kept between processes: ``$COVERAGE_CACHE_DIR`` (empty: no
    cache), else ``$XDG_CACHE_HOME/coverage``, else ``~/.cache/coverage``."""
    given = os.environ.get(CACHE_ENV)
    if given is not None:
        return Path(given).expanduser() if given.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "coverage"


def _chart_inputs(subdivisions: int) -> tuple:
    tpl = _template.template(subdivisions)
    base, _, _ = _template.canonical()
    vertices = tpl.place(base)
    pins = np.asarray(PIN_LANDMARKS)
    return vertices, tpl.faces, pins, base[pins, :2]


def chart_key(subdivisions: int) -> str:
    """SHA-256 (hex) of everything :func:`canonical_chart` at this resolution is computed from:
    the canonical face, the code that refines, places and flattens it, and the library
    versions."""
    digest = hashlib.sha256(CACHE_FORMAT)
    code = (Path(__file__).read_bytes(), Path(_template.__file__).read_bytes())
    for part in (str(subdivisions), str(PIN_LANDMARKS), np.__version__, scipy.__version__, *code):
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    for array in _template.canonical()[:2]:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def chart_cache_file(subdivisions: int) -> Path | None:
    """The cache file of the canonical chart at this resolution (None with the cache off)."""
    where = cache_dir()
    return None if where is None else _cache_file(where, subdivisions, chart_key(subdivisions))


def _cache_file(where: Path, subdivisions: int, key: str) -> Path:
    return where / f"chart-s{subdivisions}-{key[:32]}.npz"


def compute_canonical_chart(subdivisions: int) -> np.ndarray:
    """The canonical chart at one resolution, solved (no cache): see :func:`canonical_chart`."""
    vertices, faces, pins, pin_uv = _chart_inputs(subdivisions)
    uv = lscm(vertices, faces, pins, pin_uv)
    # chart area equal to skin area overall, nose tip at the origin
    skin = 0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]],
                                         vertices[faces[:, 2]] - vertices[faces[:, 0]]), axis=1)
    chart = np.abs(signed_chart_areas(uv, faces))
    return (uv - uv[ORIGIN_LANDMARK]) * np.sqrt(skin.sum() / chart.sum())


def _read_cached(path: Path, key: str, n_vertices: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as stored:  # the zip's CRCs catch a damaged file
            if str(stored["key"]) != key:
                return None
            uv = np.array(stored["uv"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if uv.dtype != np.float64 or uv.shape != (n_vertices, 2) or not np.isfinite(uv).all():
        return None
    return uv


def _write_cached(path: Path, key: str, uv: np.ndarray) -> None:
    """Write atomically (a reader sees the old file or the whole new one); a cache that
    cannot be written is skipped."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as fh:
            tmp = fh.name
            np.savez(fh, key=np.array(key), uv=uv)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


@functools.lru_cache(maxsize=4)
def canonical_chart(subdivisions: int) -> np.ndarray:
    """Chart coordinates ``(v, 2) float`` (mm) of the canonical face at one resolution
    (read-only), from the cache directory when it holds them (:func:`cache_dir`), else solved
    (:func:`compute_canonical_chart`) and stored there."""
    where = cache_dir()
    path = key = uv = None
    if where is not None:
        key = chart_key(subdivisions)
        path = _cache_file(where, subdivisions, key)
        uv = _read_cached(path, key, _template.template(subdivisions).n_vertices)
    if uv is None:
        uv = compute_canonical_chart(subdivisions)
        if path is not None:
            _write_cached(path, key, uv)
    uv.setflags(write=False)
    return uv
