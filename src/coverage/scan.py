"""Reading scans and landmarks, detecting units, and fitting the template to a scan.

A scan is any triangulation in any pose and units, possibly with holes and noise, with the
468 MediaPipe landmarks in its own frame and units. The canonical template is placed on the
landmarks (similarity fit plus a smoothed per-landmark correction), refined, and each
refined vertex is moved to the closest point of the scan. Template points with no scan
surface nearby, or whose closest scan point lies on the scan's rim beside them (a hole or
the scan's edge), or on a sheet facing another way, are marked unobserved.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import trimesh

from . import proximity
from . import template as _template
from .errors import LandmarkError, MeshError

UNITS_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4}
AUTO_UNITS = ("mm", "cm", "m")
# face width between the ear-side oval landmarks 234 and 454 (canonical face: 155 mm)
WIDTH_LANDMARKS = (234, 454)
FACE_WIDTH_RANGE_MM = (90.0, 260.0)
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".glb", ".gltf", ".off")


def read_mesh(mesh) -> tuple[np.ndarray, np.ndarray, str]:
    """Vertices ``(n, 3) float``, faces ``(m, 3) int`` and a description from a mesh input.

    ``mesh`` is a path (OBJ, PLY, STL, GLB/GLTF, OFF: read by trimesh; a scene's
    geometries are merged in world coordinates), a ``trimesh.Trimesh``, or a
    ``(vertices, faces)`` pair. The file's vertex order is kept.
    """
    if isinstance(mesh, trimesh.Trimesh):
        return (np.ascontiguousarray(mesh.vertices, dtype=np.float64),
                np.ascontiguousarray(mesh.faces, dtype=np.int64), "mesh object")
    if isinstance(mesh, (tuple, list)) and len(mesh) == 2:
        vertices = np.asarray(mesh[0], dtype=np.float64)
        faces = np.asarray(mesh[1])
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise MeshError(f"mesh vertices have shape {vertices.shape}; expected (n, 3)")
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
            raise MeshError(f"mesh faces have shape {faces.shape} and dtype {faces.dtype}; "
                            "expected (m, 3) integers")
        return np.ascontiguousarray(vertices), np.ascontiguousarray(faces, dtype=np.int64), "arrays"
    if not isinstance(mesh, (str, os.PathLike)):
        raise MeshError(f"mesh: expected a file path, a trimesh.Trimesh or (vertices, faces), "
                        f"got {type(mesh).__name__}")
    path = Path(mesh)
    if not path.is_file():
        raise MeshError(f"{path}: mesh file not found")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise MeshError(f"{path}: unsupported mesh format {path.suffix or '(none)'!r}; "
                        f"use one of {', '.join(MESH_SUFFIXES)}")
    try:
        loaded = trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise MeshError(f"{path}: cannot read mesh ({type(exc).__name__}: {exc})") from exc
    vertices = np.asarray(getattr(loaded, "vertices", np.empty((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(loaded, "faces", np.empty((0, 3))), dtype=np.int64)
    if len(vertices) == 0 or len(faces) == 0:
        raise MeshError(f"{path}: mesh has no triangles; export the scan as a triangle mesh")
    if len(vertices) == 3 * len(faces) and len(faces) > 1:
        # a triangle soup (STL stores each triangle's corners separately): join equal
        # corners so neighbouring triangles share edges and the scan's rim is its real rim
        vertices, inverse = np.unique(vertices, axis=0, return_inverse=True)
        faces = inverse.reshape(-1, 3)
    return np.ascontiguousarray(vertices), np.ascontiguousarray(faces, dtype=np.int64), str(path)


def read_landmarks(landmarks) -> np.ndarray:
    """Landmarks ``(468, 3) float`` from an array or a ``.npy`` / ``.json`` file.

    A JSON file holds a list of 468 ``[x, y, z]`` triples, or an object with a
    ``"landmarks"`` list.
    """
    source = "landmarks"
    if isinstance(landmarks, (str, os.PathLike)):
        path = Path(landmarks)
        source = str(path)
        if not path.is_file():
            raise LandmarkError(f"{path}: landmark file not found")
        try:
            if path.suffix.lower() == ".npy":
                landmarks = np.load(path, allow_pickle=False)
            elif path.suffix.lower() == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
                landmarks = data["landmarks"] if isinstance(data, dict) else data
            else:
                raise LandmarkError(f"{path}: unsupported landmark format {path.suffix or '(none)'!r}; "
                                    "use .npy or .json")
        except LandmarkError:
            raise
        except Exception as exc:
            raise LandmarkError(f"{path}: cannot read landmarks ({type(exc).__name__}: {exc})") from exc
    try:
        array = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LandmarkError(f"{source}: landmarks are not numeric ({exc}); expected 468 x 3 numbers") from exc
    if array.shape != (_template.N_LANDMARKS, 3):
        raise LandmarkError(f"{source}: landmarks have shape {array.shape}; expected (468, 3): "
                            "the 468 MediaPipe face-mesh landmarks as x, y, z in the scan's frame")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise LandmarkError(f"{source}: landmark {int(np.argmax(bad))} is not finite "
                            f"({int(bad.sum())} rows with NaN/Inf); re-run the landmark detector")
    return np.ascontiguousarray(array)


def detect_units(points: np.ndarray, units: str, what: str) -> float:
    """Factor from input units to mm, from ``units`` or (``"auto"``) the face width."""
    if units != "auto":
        if units not in UNITS_TO_MM:
            raise MeshError(f"units = {units!r} is not known; use auto, {', '.join(UNITS_TO_MM)}")
        return UNITS_TO_MM[units]
    width = float(np.linalg.norm(points[WIDTH_LANDMARKS[0]] - points[WIDTH_LANDMARKS[1]]))
    lo, hi = FACE_WIDTH_RANGE_MM
    for name in AUTO_UNITS:
        if lo <= width * UNITS_TO_MM[name] <= hi:
            return UNITS_TO_MM[name]
    raise MeshError(f"{what}: face width {width:.4g} (landmarks 234-454, input units) fits no unit: "
                    f"a face is {lo:.0f}-{hi:.0f} mm wide; check the landmarks or pass units "
                    f"({', '.join(UNITS_TO_MM)})")


def similarity_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``(4, 4)`` taking source points onto target (Umeyama 1991)."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mu_s, target - mu_t
    cov = t.T @ s / len(source)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / (s * s).sum() * len(source))
    out = np.eye(4)
    out[:3, :3] = scale * rotation
    out[:3, 3] = mu_t - scale * rotation @ mu_s
    return out


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``(4, 4)`` affine transform to points ``(n, 3)``."""
    return points @ transform[:3, :3].T + transform[:3, 3]


def smooth_landmarks(landmarks: np.ndarray, pose: np.ndarray, smoothing: float) -> np.ndarray:
    """Landmarks with their deviation from the posed canonical face smoothed over the mesh.

    Solves ``(I + smoothing * L) d = d_observed`` with the base mesh's graph Laplacian
    ``L``, so one landmark's detector noise is shared with its neighbours while the
    person's broad shape (a wider jaw, a longer nose) is kept. ``smoothing = 0`` keeps the
    landmarks as given.
    """
    base, faces, _ = _template.canonical()
    posed = apply(pose, base)
    if smoothing <= 0:
        return landmarks.copy()
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = len(base)
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    laplacian = sp.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj
    system = (sp.identity(n) + smoothing * laplacian).tocsc()
    deviation = spla.splu(system).solve(landmarks - posed)
    return posed + deviation


def is_canonical_topology(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """True for 468 vertices whose triangles are the canonical ones (any winding or order)."""
    _, base_faces, _ = _template.canonical()
    if len(vertices) != _template.N_LANDMARKS or len(faces) != len(base_faces):
        return False
    a = np.unique(np.sort(faces, axis=1), axis=0)
    b = np.unique(np.sort(base_faces, axis=1), axis=0)
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass(frozen=True)
class Fit:
    """The template fitted to a scan: refined vertices (mm) and what was observed."""

    vertices: np.ndarray    # (v, 3) float, mm, scan frame
    unobserved: np.ndarray  # (v,) bool
    distance: np.ndarray    # (v,) float, template point to scan surface (mm), -1 if none
    pose: np.ndarray        # (4, 4) similarity, canonical frame -> scan frame (mm)


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """Edges ``(k, 2) int`` used by exactly one triangle (sorted vertex pairs)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return unique[counts == 1]


def on_boundary(faces: np.ndarray, tri: np.ndarray, bary: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Whether each closest point (triangle + barycentrics) lies on the mesh's rim."""
    n = int(faces.max()) + 1 if len(faces) else 0
    rim = boundary_edges(faces)
    rim_vertices = np.zeros(n, dtype=bool)
    rim_vertices[rim.ravel()] = True
    corners = faces[np.maximum(tri, 0)]
    zero = (bary <= tol) & (tri >= 0)[:, None]
    zeros = zero.sum(axis=1)
    # at a vertex: the corner with the non-zero weight
    at_vertex = corners[np.arange(len(tri)), np.argmax(~zero, axis=1)]
    # on an edge: the two corners other than the zero one
    skip = np.argmax(zero, axis=1)
    i = corners[np.arange(len(tri)), (skip + 1) % 3]
    j = corners[np.arange(len(tri)), (skip + 2) % 3]
    key = np.minimum(i, j) * n + np.maximum(i, j)
    on_edge = np.isin(key, rim[:, 0] * n + rim[:, 1])
    return np.where(zeros == 2, rim_vertices[at_vertex], (zeros == 1) & on_edge)


def fit_template(scan_vertices: np.ndarray, scan_faces: np.ndarray, landmarks_mm: np.ndarray,
                 tpl: _template.Template, *, tolerance_mm: float, smoothing: float,
                 rim_offset_mm: float = 0.3, max_normal_angle_deg: float = 60.0) -> Fit:
    """Place the refined template on a scan (all inputs in mm, scan frame)."""
    base, _, _ = _template.canonical()
    pose = similarity_fit(base, landmarks_mm)
    placed_base = smooth_landmarks(landmarks_mm, pose, smoothing)
    placed = tpl.place(placed_base)
    placed_normals = trimesh.Trimesh(placed, tpl.faces, process=False, validate=False).vertex_normals

    grid = proximity.build_grid(scan_vertices, scan_faces)
    tri, bary, dist = proximity.closest_points(grid, placed, max_dist=tolerance_mm)
    found = tri >= 0
    closest = np.einsum("kj,kjd->kd", bary, scan_vertices[scan_faces[np.maximum(tri, 0)]])

    # the scan's normal at the closest point, interpolated from its vertex normals so the
    # answer does not jump between two triangles tied at a shared edge
    scan_mesh = trimesh.Trimesh(scan_vertices, scan_faces, process=False, validate=False)
    vertex_normals = np.asarray(scan_mesh.vertex_normals, dtype=np.float64)
    normal = np.einsum("kj,kjd->kd", bary, vertex_normals[scan_faces[np.maximum(tri, 0)]])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    cosine = np.einsum("ij,ij->i", normal, placed_normals)
    # a scan may be wound either way: its orientation is what most matches say. Then a
    # template point must meet skin facing its own way: one that reached across to the
    # other side of a fold (a nostril's underside onto the lip) has the normal reversed
    if found.any() and np.sum(cosine[found]) < 0:
        normal = -normal
        cosine = -cosine
    agree = cosine >= np.cos(np.radians(max_normal_angle_deg))

    offset = placed - closest
    tangential = offset - np.einsum("ij,ij->i", offset, normal)[:, None] * normal
    rim = on_boundary(scan_faces, tri, bary) & (np.linalg.norm(tangential, axis=1) > rim_offset_mm)
    observed = found & agree & ~rim
    vertices = np.where(observed[:, None], closest, placed)
    return Fit(np.ascontiguousarray(vertices), ~observed, np.where(found, dist, -1.0), pose)
