"""Synthetic scans of a face, made as a depth camera would see them.

Used by the tests and by the benchmark suite (:mod:`coverage.bench`), so it ships with the
package. The face is rendered into a depth buffer from the front (the camera looks along -z), each
pixel becomes a vertex and each quad of valid pixels two triangles, except across depth
jumps. Skin the camera cannot see (nostril undersides, under the chin) is simply missing,
as on a real scan. Then: noise along the view ray, optional holes, a rigid pose, and a
unit. Landmarks are the face's own, posed the same way, with detector noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from .errors import CoverageError


@dataclass
class SyntheticScan:
    """A synthetic scan: its mesh and landmarks as a scanner and a landmarker give them."""

    vertices: np.ndarray      # (n, 3) in the scan's units and pose
    faces: np.ndarray         # (m, 3)
    landmarks: np.ndarray     # (468, 3) same units and pose, with noise
    pose: np.ndarray          # (4, 4) canonical frame (mm) -> scan frame (scan units)
    scale_to_mm: float        # scan units -> mm
    holes_mm: list            # [(centre (3,) canonical mm, radius mm)]


def depth_render(vertices: np.ndarray, faces: np.ndarray, pitch_mm: float) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Front depth buffer (max z per pixel) of a mesh: ``(z (h, w) with NaN, origin, shape)``."""
    lo = vertices[:, :2].min(axis=0) - pitch_mm
    hi = vertices[:, :2].max(axis=0) + pitch_mm
    w, h = (np.ceil((hi - lo) / pitch_mm).astype(int) + 1)
    zbuf = np.full(h * w, -np.inf)
    p = vertices[faces]                                   # (m, 3, 3)
    px = (p[:, :, :2] - lo) / pitch_mm                    # pixel coordinates
    first = np.floor(px.min(axis=1)).astype(int)
    span = np.ceil(px.max(axis=1)).astype(int) - first + 1
    kx, ky = span.max(axis=0)
    for dy in range(ky):
        for dx in range(kx):
            cx = first[:, 0] + dx
            cy = first[:, 1] + dy
            q = np.stack([cx, cy], axis=1).astype(float)
            a, b, c = px[:, 0], px[:, 1], px[:, 2]
            v0, v1, v2 = b - a, c - a, q - a
            den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
                l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
            l0 = 1 - l1 - l2
            inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0) & (den != 0) & (cx >= 0) & (cy >= 0) & (cx < w) & (cy < h)
            z = l0 * p[:, 0, 2] + l1 * p[:, 1, 2] + l2 * p[:, 2, 2]
            np.maximum.at(zbuf, (cy * w + cx)[inside], z[inside])
    zbuf[~np.isfinite(zbuf)] = np.nan
    return zbuf.reshape(h, w), lo, (h, w)


def grid_mesh(z: np.ndarray, origin: np.ndarray, pitch_mm: float, max_jump_mm: float = 3.0):
    """Vertices at valid pixels; two triangles per quad of valid pixels without a depth jump."""
    h, w = z.shape
    ys, xs = np.mgrid[0:h, 0:w]
    valid = np.isfinite(z)
    index = np.full((h, w), -1)
    index[valid] = np.arange(valid.sum())
    vertices = np.stack([origin[0] + xs[valid] * pitch_mm, origin[1] + ys[valid] * pitch_mm, z[valid]], axis=1)
    i00, i10, i01, i11 = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    zq = np.stack([z[:-1, :-1], z[:-1, 1:], z[1:, :-1], z[1:, 1:]])
    corners = (np.stack([i00, i10, i01, i11]) >= 0).all(axis=0)
    jump = np.where(corners, zq.max(axis=0) - zq.min(axis=0), np.inf)
    ok = corners & (jump < max_jump_mm)
    faces = np.concatenate([np.stack([i00[ok], i10[ok], i11[ok]], 1), np.stack([i00[ok], i11[ok], i01[ok]], 1)])
    return vertices, faces


def make_scan(face, *, units: str = "m", rotation_deg=(12.0, -20.0, 6.0), translation_mm=(35.0, -60.0, 420.0),
              pitch_mm: float = 0.8, depth_noise_mm: float = 0.15, landmark_noise_mm: float = 0.6,
              holes=((205, 9.0),), seed: int = 0) -> SyntheticScan:
    """A depth-camera scan of ``face`` (canonical frame, mm) in another pose and unit.

    ``holes`` lists (landmark, radius mm): skin within that distance of the landmark is cut
    out of the scan (as an occlusion or a missing patch would).
    """
    rng = np.random.default_rng(seed)
    z, origin, _ = depth_render(face.vertices, face.faces, pitch_mm)
    z = z + rng.normal(scale=depth_noise_mm, size=z.shape)
    hole_list = []
    h, w = z.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pixels = np.stack([origin[0] + xs * pitch_mm, origin[1] + ys * pitch_mm, z], axis=-1)
    for landmark, radius in holes:
        centre = face.vertices[landmark]
        z[np.linalg.norm(pixels - centre, axis=-1) < radius] = np.nan
        hole_list.append((centre, radius))
    vertices, faces = grid_mesh(z, origin, pitch_mm)
    scale = {"mm": 1.0, "cm": 10.0, "m": 1000.0}[units]
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    pose[:3, 3] = translation_mm
    pose = np.diag([1 / scale] * 3 + [1.0]) @ pose          # canonical mm -> scan units

    def place(points):
        return points @ pose[:3, :3].T + pose[:3, 3]

    landmarks = face.landmarks + rng.normal(scale=landmark_noise_mm, size=face.landmarks.shape)
    return SyntheticScan(place(vertices), faces, place(landmarks), pose, scale, hole_list)


def deformed_face(face, *, scale=(1.04, 0.97, 1.03), bumps=((205, 2.0, 18.0), (425, 2.0, 18.0), (151, -1.5, 25.0),
                                                             (175, 1.5, 12.0))):
    """Another person: ``face`` (canonical frame, mm) with a smooth change of shape.

    The face is scaled per axis about its landmarks' centroid by ``scale``, then each of
    ``bumps`` (landmark, height mm, radius mm) pushes the skin along its normals by a
    Gaussian of that height and radius (3D distance) around the landmark: fuller cheeks,
    a flatter forehead, a fuller chin by default. Same topology, so the result is a
    :class:`coverage.Face` that ``make_scan`` can scan.
    """
    from .face import Face

    centre = face.landmarks.mean(axis=0)
    vertices = centre + (face.vertices - centre) * np.asarray(scale, dtype=float)
    normals = face.normals
    for landmark, height, radius in bumps:
        d2 = ((face.vertices - face.vertices[landmark]) ** 2).sum(axis=1)
        vertices = vertices + (height * np.exp(-0.5 * d2 / radius ** 2))[:, None] * normals
    return Face(vertices, face.subdivisions, source="deformed canonical face")


def scan_with_vertices(face, vertices: int, *, start_pitch_mm: float = 0.8, rel_tol: float = 0.02,
                       **kwargs) -> tuple[SyntheticScan, float]:
    """A scan of ``face`` (see :func:`make_scan`; ``kwargs`` go to it) with about ``vertices``
    vertices, and the pixel pitch (mm) that gives it.

    The vertex count goes as 1 / pitch^2, so the pitch is corrected by the square root of the
    count's ratio to the goal until it is within ``rel_tol`` (at most four scans are made).
    """
    if vertices < 100:
        raise CoverageError(f"vertices = {vertices}: a synthetic face scan needs at least 100 vertices; "
                            "ask for more")
    pitch = float(start_pitch_mm)
    for _ in range(4):
        scan = make_scan(face, pitch_mm=pitch, **kwargs)
        n = len(scan.vertices)
        if abs(n / vertices - 1.0) <= rel_tol:
            break
        pitch *= float(np.sqrt(n / vertices))
    return scan, pitch
