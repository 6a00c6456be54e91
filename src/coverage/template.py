"""The canonical topology: the bundled MediaPipe face, refined to a working resolution.

Every face shares this topology, so vertex ``i < 468`` is always MediaPipe landmark ``i``
and zones, chart and landmark loops are defined once for all faces.

Refinement splits every base edge into ``n`` equal parts and every base triangle into
``n**2`` triangles (a regular n-fold split, so any resolution is reachable, not only powers
of two). New vertices are placed on PN triangles (Vlachos et al. 2001, "Curved PN
Triangles"): a cubic Bezier patch per base triangle built from its corner positions and
normals. The patch interpolates the base vertices (landmarks stay exactly where they are)
and two patches sharing an edge agree along it, so the refined surface is smooth where the
base mesh is faceted, which the drum's curvature model needs.
"""
from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass, field

import numpy as np
import trimesh

from .errors import CoverageError

N_LANDMARKS = 468
CM_TO_MM = 10.0


@functools.lru_cache(maxsize=1)
def canonical() -> tuple[np.ndarray, np.ndarray, dict]:
    """The bundled base face: ``(vertices (468, 3) float mm, faces (898, 3) int, landmarks dict)``.

    The OBJ is in centimetres; vertices are returned in millimetres. The mesh is rebuilt
    from vertices and faces only (texture coordinates are dropped), with the file's vertex
    order kept, because vertex ``i`` is landmark ``i``.
    """
    root = importlib.resources.files("coverage.meshes")
    with importlib.resources.as_file(root / "canonical_face_model.obj") as path:
        loaded = trimesh.load(str(path), file_type="obj", process=False, maintain_order=True)
    vertices = np.ascontiguousarray(loaded.vertices, dtype=np.float64) * CM_TO_MM
    faces = np.ascontiguousarray(loaded.faces, dtype=np.int64)
    if vertices.shape != (N_LANDMARKS, 3):  # pragma: no cover - the bundled file is fixed
        raise RuntimeError(f"bundled face has {len(vertices)} vertices, expected {N_LANDMARKS}")
    landmarks = json.loads((root / "landmarks.json").read_text(encoding="utf-8"))
    return vertices, faces, landmarks


def base_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals ``(n, 3) float``, weighted by the corner angles of each face."""
    mesh = trimesh.Trimesh(vertices, faces, process=False, validate=False)
    return np.ascontiguousarray(mesh.vertex_normals, dtype=np.float64)


EDGE_MM_MIN = 0.25   # the finest working resolution: the bundled face then has 432k vertices and its zone
                     # map alone takes 33 s and 2.7 GB here (0.05 mm, the bound until stop 29, ran out of
                     # memory: 25 times the vertices)


def subdivisions_for_edge(edge_mm: float) -> int:
    """Split count ``n`` whose median refined edge on the canonical face is nearest ``edge_mm``."""
    if not (EDGE_MM_MIN <= edge_mm <= 20.0):
        raise CoverageError(f"edge_mm = {edge_mm} is out of range; give the working resolution as an "
                            f"edge length from {EDGE_MM_MIN:g} to 20 mm (default 1.0)")
    vertices, faces, _ = canonical()
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    return max(1, int(round(float(np.median(lengths)) / edge_mm)))


def _local_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid points ``(j, k)`` of an n-split triangle and its ``n**2`` local triangles.

    A grid point has barycentrics ``((n - j - k) / n, j / n, k / n)`` on corners (a, b, c);
    local triangles keep the base triangle's orientation.
    """
    jk = np.array([(j, k) for k in range(n + 1) for j in range(n + 1 - k)], dtype=np.int64)
    index = {(int(j), int(k)): i for i, (j, k) in enumerate(jk)}
    up = [(index[j, k], index[j + 1, k], index[j, k + 1]) for j, k in jk if j + k <= n - 1]
    down = [(index[j + 1, k], index[j + 1, k + 1], index[j, k + 1]) for j, k in jk if j + k <= n - 2]
    return jk, np.array(up + down, dtype=np.int64).reshape(-1, 3)


def refine_topology(base_faces: np.ndarray, n_vertices: int, n: int):
    """Refined triangles of the n-fold split and where each refined vertex sits.

    Returns ``(faces (m, 3) int, vertex_face (v,) int, vertex_bary (v, 3) float,
    face_parent (m,) int, edge_points dict)``. Vertices are ordered: base vertices, then
    ``n - 1`` points per base edge (from its lower to its higher vertex index), then the
    interior points of each base triangle. ``edge_points[(i, j)]`` (``i < j``) lists the
    refined vertices along base edge ``(i, j)`` from ``i`` to ``j``, ends included.
    """
    base_faces = np.asarray(base_faces, dtype=np.int64)
    nf = len(base_faces)
    a, b, c = base_faces.T
    pairs = np.concatenate([base_faces[:, [0, 1]], base_faces[:, [1, 2]], base_faces[:, [2, 0]]])
    edges, inverse = np.unique(np.sort(pairs, axis=1), axis=0, return_inverse=True)
    edge_of = inverse.reshape(3, nf)  # edge ids of (a, b), (b, c), (c, a)
    n_edges = len(edges)
    edge_base = n_vertices + np.arange(n_edges, dtype=np.int64) * (n - 1)
    n_inner = (n - 1) * (n - 2) // 2
    face_base = n_vertices + n_edges * (n - 1) + np.arange(nf, dtype=np.int64) * n_inner

    jk, local_faces = _local_grid(n)
    grid = np.empty((nf, len(jk)), dtype=np.int64)
    inner = 0
    for col, (j, k) in enumerate(jk):
        i = n - j - k
        if i == n:
            grid[:, col] = a
        elif j == n:
            grid[:, col] = b
        elif k == n:
            grid[:, col] = c
        elif k == 0:  # on edge a-b, j steps from a
            grid[:, col] = edge_base[edge_of[0]] + np.where(a < b, j, n - j) - 1
        elif i == 0:  # on edge b-c, k steps from b
            grid[:, col] = edge_base[edge_of[1]] + np.where(b < c, k, n - k) - 1
        elif j == 0:  # on edge c-a, i steps from c
            grid[:, col] = edge_base[edge_of[2]] + np.where(c < a, i, n - i) - 1
        else:
            grid[:, col] = face_base + inner
            inner += 1

    n_total = n_vertices + n_edges * (n - 1) + nf * n_inner
    faces = grid[:, local_faces].reshape(-1, 3)
    face_parent = np.repeat(np.arange(nf, dtype=np.int64), len(local_faces))

    # each refined vertex takes its barycentrics from the first base triangle holding it
    flat = grid.ravel()
    first = np.full(n_total, -1, dtype=np.int64)
    order = np.arange(flat.size, dtype=np.int64)[::-1]
    first[flat[order]] = order
    vertex_face = first // len(jk)
    col = first % len(jk)
    j, k = jk[col, 0], jk[col, 1]
    vertex_bary = np.stack([n - j - k, j, k], axis=1).astype(np.float64) / n

    edge_points = {}
    steps = np.arange(1, n, dtype=np.int64)
    for e, (i0, i1) in enumerate(edges):
        inner_ids = edge_base[e] + steps - 1
        edge_points[(int(i0), int(i1))] = np.concatenate([[i0], inner_ids, [i1]]).astype(np.int64)
    return faces, vertex_face, vertex_bary, face_parent, edge_points


def pn_triangle_points(corners: np.ndarray, normals: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Points on PN-triangle patches.

    corners : (k, 3, 3) float
        Corner positions of the base triangle holding each point.
    normals : (k, 3, 3) float
        Unit normals at those corners.
    bary : (k, 3) float
        Barycentric coordinates of each point in its base triangle.

    Returns ``(k, 3) float``. Corners map to themselves; along an edge the curve depends
    only on that edge's two corners and normals, so neighbouring patches meet exactly.
    """
    p1, p2, p3 = corners[:, 0], corners[:, 1], corners[:, 2]
    n1, n2, n3 = normals[:, 0], normals[:, 1], normals[:, 2]

    def edge_point(pi, pj, ni):
        w = np.einsum("ij,ij->i", pj - pi, ni)[:, None]
        return (2.0 * pi + pj - w * ni) / 3.0

    b210, b120 = edge_point(p1, p2, n1), edge_point(p2, p1, n2)
    b021, b012 = edge_point(p2, p3, n2), edge_point(p3, p2, n3)
    b102, b201 = edge_point(p3, p1, n3), edge_point(p1, p3, n1)
    e = (b210 + b120 + b021 + b012 + b102 + b201) / 6.0
    v = (p1 + p2 + p3) / 3.0
    b111 = e + (e - v) / 2.0
    w, u, t = bary[:, 0:1], bary[:, 1:2], bary[:, 2:3]
    return (p1 * w**3 + p2 * u**3 + p3 * t**3
            + 3.0 * (b210 * w * w * u + b120 * w * u * u + b201 * w * w * t
                     + b021 * u * u * t + b102 * w * t * t + b012 * u * t * t)
            + 6.0 * b111 * w * u * t)


@dataclass(frozen=True, eq=False)
class Template:
    """The canonical topology at one refinement level (shared by every face)."""

    subdivisions: int
    base_faces: np.ndarray       # (898, 3) int
    faces: np.ndarray            # (m, 3) int, refined triangles
    vertex_face: np.ndarray      # (v,) int, base triangle holding each refined vertex
    vertex_bary: np.ndarray      # (v, 3) float, barycentrics in that base triangle
    face_parent: np.ndarray      # (m,) int, base triangle of each refined triangle
    edge_points: dict = field(repr=False)
    landmark_sets: dict = field(repr=False)

    @property
    def n_vertices(self) -> int:
        return len(self.vertex_face)

    def place(self, base_vertices: np.ndarray, base_normals: np.ndarray | None = None) -> np.ndarray:
        """Refined vertex positions ``(v, 3) float`` for base positions ``(468, 3)``."""
        base_vertices = np.asarray(base_vertices, dtype=np.float64)
        if base_normals is None:
            base_normals = base_vertex_normals(base_vertices, self.base_faces)
        corner_ids = self.base_faces[self.vertex_face]
        points = pn_triangle_points(base_vertices[corner_ids], base_normals[corner_ids], self.vertex_bary)
        points[:N_LANDMARKS] = base_vertices  # exact, not just to rounding
        return np.ascontiguousarray(points)

    def path(self, landmark_ids, closed: bool = False) -> np.ndarray:
        """Refined vertex ids along a chain of landmarks.

        Consecutive landmarks joined by a base edge follow that edge's refined vertices;
        others are joined directly (a straight chord in the chart).
        """
        ids = [int(i) for i in landmark_ids]
        if closed:
            ids = ids + ids[:1]
        out = [ids[0]]
        for i, j in zip(ids[:-1], ids[1:]):
            pts = self.edge_points.get((min(i, j), max(i, j)))
            if pts is None:
                out.append(j)
            else:
                seq = pts if i < j else pts[::-1]
                out.extend(int(x) for x in seq[1:])
        if closed:
            out = out[:-1]
        return np.asarray(out, dtype=np.int64)


@functools.lru_cache(maxsize=4)
def template(subdivisions: int) -> Template:
    """The canonical topology split ``subdivisions`` times per base edge (cached)."""
    if subdivisions < 1:
        raise ValueError(f"subdivisions must be >= 1, got {subdivisions}")
    _, base_faces, landmark_sets = canonical()
    faces, vertex_face, vertex_bary, face_parent, edge_points = refine_topology(
        base_faces, N_LANDMARKS, subdivisions)
    return Template(subdivisions, base_faces, faces, vertex_face, vertex_bary, face_parent,
                    edge_points, landmark_sets)
