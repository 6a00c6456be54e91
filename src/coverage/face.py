"""A face surface on the canonical topology, in millimetres, with its chart.

Frame of the bundled face: +y up, +z out of the face (the nose tip is the most forward
point), +x the subject's left. A scan keeps its own frame (rotation and origin); only its
units become millimetres. ``face.pose`` maps the canonical frame into the face's frame.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass

import numpy as np
import trimesh

from . import chart as _chart
from . import lifting, proximity, scan
from . import template as _template
from .curvature import Curvature, principal_curvatures
from .errors import LandmarkError, MeshError

DEFAULT_EDGE_MM = 1.0


@dataclass(frozen=True)
class Lifted:
    """Chart points lifted onto the surface (rows outside the chart: tri -1, NaN points)."""

    points: np.ndarray   # (k, 3) float, mm
    normals: np.ndarray  # (k, 3) float, unit outward normals
    tri: np.ndarray      # (k,) int
    bary: np.ndarray     # (k, 3) float

    @property
    def inside(self) -> np.ndarray:
        return self.tri >= 0


@dataclass(frozen=True)
class Flattened:
    """Surface points mapped into the chart through their closest surface point."""

    uv: np.ndarray        # (k, 2) float, chart mm (NaN where not found)
    tri: np.ndarray       # (k,) int, -1 where nothing was within reach
    bary: np.ndarray      # (k, 3) float
    distance: np.ndarray  # (k,) float, mm from the point to the surface (-1 if not found)


LINEAR_SCALE_FLOOR = 0.05   # skin mm per chart mm below which a triangle counts as collapsed
_CURVATURE_LOCK = threading.Lock()   # one curvature fit at a time (Face.curvature)


@functools.lru_cache(maxsize=4)
def _chart_grid(subdivisions: int) -> lifting.TriangleGrid:
    tpl = _template.template(subdivisions)
    return lifting.build_grid(_chart.canonical_chart(subdivisions), tpl.faces)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


class Face:
    """A face: refined canonical-topology mesh (mm), chart, metric, observed mask.

    Build one with :meth:`default` (the bundled face) or :meth:`load` (a scan). Arrays are
    read-only; derived quantities are computed on first use and kept.
    """

    def __init__(self, vertices: np.ndarray, subdivisions: int, *, unobserved: np.ndarray | None = None,
                 pose: np.ndarray | None = None, source: str = "", notes: tuple = ()):
        self.template = _template.template(subdivisions)
        vertices = np.asarray(vertices, dtype=np.float64)
        if vertices.shape != (self.template.n_vertices, 3):
            raise MeshError(f"face vertices have shape {vertices.shape}; the canonical topology at "
                            f"{subdivisions} subdivisions has {self.template.n_vertices} vertices")
        self.vertices = _frozen(vertices)
        self.unobserved = _frozen(np.zeros(len(vertices), dtype=bool) if unobserved is None
                                  else np.asarray(unobserved, dtype=bool))
        self.pose = _frozen(np.eye(4) if pose is None else np.asarray(pose, dtype=np.float64))
        self.source = source
        self.notes = tuple(notes)
        self._curvature: dict[float, Curvature] = {}

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def default(cls, edge_mm: float = DEFAULT_EDGE_MM) -> "Face":
        """The bundled canonical face (MediaPipe, Apache-2.0) in mm, refined to ~``edge_mm``."""
        return _default_face(_template.subdivisions_for_edge(float(edge_mm)))

    @classmethod
    def load(cls, mesh_or_path, landmarks=None, units: str = "auto", *, edge_mm: float = DEFAULT_EDGE_MM,
             tolerance_mm: float = 4.0, landmark_smoothing: float = 1.0) -> "Face":
        """A face from a scan.

        mesh_or_path : path (OBJ, PLY, STL, GLB, ...), ``trimesh.Trimesh`` or ``(vertices, faces)``
            Any triangulation, pose and units; holes and noise are allowed.
        landmarks : (468, 3) float, or a ``.npy`` / ``.json`` path, optional
            MediaPipe face landmarks in the scan's frame and units. Not needed when the
            mesh has exactly the canonical topology (468 vertices, canonical triangles).
        units : ``"auto"``, ``"mm"``, ``"cm"``, ``"m"`` or ``"in"``
            ``auto`` reads the face width (landmarks 234-454; a face is 90-260 mm wide).
        tolerance_mm : float
            Template points with no scan surface within this distance are unobserved.
        landmark_smoothing : float
            How strongly per-landmark detector noise is smoothed (0 keeps them as given).

        Coordinates stay in the scan's frame, converted to millimetres. A scan is repaired
        first (:func:`scan.repair_mesh`: NaN/Inf, degenerate and duplicate triangles,
        inconsistent winding; :func:`scan.keep_face`: pieces no landmark lies on), and each
        repair is a line of ``face.notes``; a scan wound inside out is read reversed, also noted.
        """
        vertices, faces, what = scan.read_mesh(mesh_or_path)
        if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise MeshError(f"{what}: a face refers to vertex {int(faces.max())} but the mesh has "
                            f"{len(vertices)} vertices; the file is corrupt")
        subdivisions = _template.subdivisions_for_edge(float(edge_mm))
        if landmarks is None:
            if not scan.is_canonical_topology(vertices, faces):
                raise LandmarkError(f"{what}: landmarks are needed: the mesh has {len(vertices)} vertices, "
                                    "not the canonical 468-vertex topology; pass the 468 MediaPipe "
                                    "landmarks (--landmarks FILE.npy)")
            finite = np.isfinite(vertices).all(axis=1)
            if not finite.all():
                raise MeshError(f"{what}: vertex {int(np.argmin(finite))} is not finite; "
                                "a canonical-topology mesh needs all 468 vertices")
            factor = scan.detect_units(vertices, units, what)
            base = vertices * factor
            pose = scan.similarity_fit(_template.canonical()[0], base)
            refined = _template.template(subdivisions).place(base)
            return cls(refined, subdivisions, pose=pose, source=what)
        lm = scan.read_landmarks(landmarks)
        lm_what = str(landmarks) if isinstance(landmarks, (str, os.PathLike)) else "landmarks"
        factor = scan.detect_units(lm, units, lm_what)
        vertices, faces, notes = scan.repair_mesh(vertices * factor, faces, what)
        # the scan's search grid is built once: it finds the pieces the landmarks lie on,
        # then (those pieces' part of it) the template's closest points
        vertices, faces, kept, grid = scan.keep_face_and_grid(vertices, faces, lm * factor, what, lm_what)
        notes += kept
        fit = scan.fit_template(vertices, faces, lm * factor, _template.template(subdivisions),
                                tolerance_mm=float(tolerance_mm), smoothing=float(landmark_smoothing), grid=grid)
        if fit.inside_out:
            notes.append(f"{what}: the scan is wound inside out (its normals point into the head); "
                         "read with its normals reversed")
        share = float(fit.unobserved.mean())
        if share > 0:
            notes.append(f"{100 * share:.1f}% of the template is unobserved on the scan")
        return cls(fit.vertices, subdivisions, unobserved=fit.unobserved, pose=fit.pose, source=what,
                   notes=notes)

    # --- geometry -------------------------------------------------------------------------

    @property
    def subdivisions(self) -> int:
        return self.template.subdivisions

    @property
    def faces(self) -> np.ndarray:
        """Refined triangles ``(m, 3) int`` (shared by every face at this resolution)."""
        return self.template.faces

    @property
    def landmarks(self) -> np.ndarray:
        """The 468 landmark positions ``(468, 3) float`` (mm) on this face's surface."""
        return self.vertices[:_template.N_LANDMARKS]

    @functools.cached_property
    def mesh(self) -> trimesh.Trimesh:
        """The face as a ``trimesh.Trimesh`` in mm (built from vertices and faces only)."""
        return trimesh.Trimesh(self.vertices, self.faces, process=False, validate=False)

    @functools.cached_property
    def normals(self) -> np.ndarray:
        """Unit vertex normals ``(v, 3) float`` pointing out of the face.

        A vertex all of whose triangles collapsed (a scan can pull several template points
        onto one scan point) has no normal of its own: it takes the mean of its neighbours'.
        """
        # trimesh's vertex normals, bit for bit, without building the mesh object
        normals = np.array(scan.vertex_normals(self.vertices, self.faces), dtype=np.float64)
        bad = ~(np.linalg.norm(normals, axis=1) > 0.5)
        if bad.any():
            from scipy import sparse

            f = self.faces
            rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
            cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
            adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(normals),) * 2)
            for _ in range(50):
                summed = adjacency @ np.where(bad[:, None], 0.0, normals)
                length = np.linalg.norm(summed, axis=1)
                fixed = bad & (length > 1e-9)
                normals[fixed] = summed[fixed] / length[fixed, None]
                bad &= ~fixed
                if not bad.any():
                    break
        return _frozen(normals)

    @functools.cached_property
    def _frames(self) -> np.ndarray:
        return _frozen(lifting.frames(self.vertices, self.normals))

    @functools.cached_property
    def triangle_area_mm2(self) -> np.ndarray:
        """Skin area of each triangle ``(m,) float`` (mm^2)."""
        p = self.vertices[self.faces]
        return _frozen(0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1))

    @functools.cached_property
    def triangle_longest_edge_mm(self) -> np.ndarray:
        """Length of each triangle's longest edge ``(m,) float`` (mm).

        Each edge's length as ``np.linalg.norm`` gives it (the root of dx*dx + dy*dy + dz*dz,
        summed in that order), the longest taken before the root (the root keeps order):
        coordinate by coordinate, the corners gathered per axis, ~10x faster than norms
        along a three-long axis and the same bits.
        """
        x, y, z = (np.take(np.ascontiguousarray(self.vertices[:, k]), self.faces) for k in range(3))
        squared = []
        for i, j in ((0, 2), (1, 0), (2, 1)):   # each corner minus the one before it
            dx, dy, dz = x[:, i] - x[:, j], y[:, i] - y[:, j], z[:, i] - z[:, j]
            squared.append(dx * dx + dy * dy + dz * dz)
        return _frozen(np.sqrt(np.maximum(np.maximum(squared[0], squared[1]), squared[2])))

    @property
    def longest_edge_mm(self) -> float:
        """Length of the face's longest edge (mm)."""
        return float(self.triangle_longest_edge_mm.max())

    @property
    def area_mm2(self) -> float:
        """Total skin area of the face mesh (mm^2)."""
        return float(self.triangle_area_mm2.sum())

    @property
    def uv(self) -> np.ndarray:
        """Chart coordinates of the vertices ``(v, 2) float`` (mm; shared by all faces)."""
        return _chart.canonical_chart(self.subdivisions)

    @functools.cached_property
    def jacobian(self) -> np.ndarray:
        """Per-triangle Jacobian ``(m, 3, 2)`` of the chart -> surface map."""
        return _frozen(_chart.jacobians(self.vertices, self.faces, self.uv))

    @functools.cached_property
    def jacobian_pinv(self) -> np.ndarray:
        """Per-triangle pseudo-inverse ``(m, 2, 3)`` of :attr:`jacobian`: the chart vector of a
        surface vector in the triangle's plane (NaN for a triangle with a non-finite Jacobian;
        :func:`coverage.chart.pseudo_inverses`, closed form where the triangle is not
        collapsed). Computed once for all triangles: each matrix's pseudo-inverse does not
        depend on the others, so a gather of it equals ``pseudo_inverses(jacobian[t])`` bit
        for bit.
        """
        return _frozen(_chart.pseudo_inverses(self.jacobian))

    @functools.cached_property
    def jacobian_normal(self) -> np.ndarray:
        """Per-triangle unit normal ``(m, 3)`` of the chart -> surface map: the cross product
        of the :attr:`jacobian`'s columns, normalised (zero for a collapsed triangle).

        Row by row the same arithmetic as on a gathered subset, so a gather of it equals the
        normal computed from ``jacobian[t]`` bit for bit.
        """
        jac = self.jacobian
        normal = np.cross(jac[:, :, 0], jac[:, :, 1])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        return _frozen(normal)

    @functools.cached_property
    def metric(self) -> np.ndarray:
        """Per-triangle first fundamental form ``(m, 2, 2)``: skin length = sqrt(d.G.d)."""
        return _frozen(_chart.metric(self.jacobian))

    @functools.cached_property
    def area_scale(self) -> np.ndarray:
        """Skin mm^2 per chart mm^2 in each triangle ``(m,) float``."""
        return _frozen(_chart.area_scale(self.jacobian))

    @functools.cached_property
    def linear_scale(self) -> np.ndarray:
        """Skin mm per chart mm in each triangle ``(m,) float`` (the chart is conformal to
        ~2 %), floored at ``LINEAR_SCALE_FLOOR``: a scan can collapse a triangle (several
        template points on one scan point), and path construction divides by this."""
        return _frozen(np.sqrt(np.maximum(self.area_scale, LINEAR_SCALE_FLOOR ** 2)))

    @functools.cached_property
    def treatable_triangles(self) -> np.ndarray:
        """Triangles ``(m,) bool`` whose three vertices were observed."""
        return _frozen(~self.unobserved[self.faces].any(axis=1))

    def chart_distortion(self) -> dict:
        """Area and angle distortion of the chart on this face (see :func:`chart.distortion`)."""
        return _chart.distortion(self.vertices, self.faces, self.uv)

    def curvature(self, radius_mm: float = 5.0) -> Curvature:
        """Principal curvatures and directions per vertex, fitted over ``radius_mm`` (once per
        radius: a thread that asks while another fits it waits for that fit)."""
        key = float(radius_mm)
        found = self._curvature.get(key)
        if found is None:
            with _CURVATURE_LOCK:
                found = self._curvature.get(key)
                if found is None:
                    found = self._curvature[key] = principal_curvatures(
                        self.vertices, self.normals, key, support=_curvature_support(self.subdivisions, key))
        return found

    # --- chart <-> surface ----------------------------------------------------------------

    @property
    def chart_grid(self) -> lifting.TriangleGrid:
        return _chart_grid(self.subdivisions)

    def locate(self, uv: np.ndarray, eps: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
        """Triangle ``(k,) int`` (-1 outside the chart) and barycentrics of chart points."""
        return lifting.locate(self.chart_grid, uv, eps)

    def lift(self, uv: np.ndarray) -> Lifted:
        """Lift chart points ``(k, 2)`` (mm) to surface points and unit normals (mm)."""
        tri, bary, points, normals = lifting.lift(self.chart_grid, self.faces, self._frames, uv)
        return Lifted(points, normals, tri, bary)

    @functools.cached_property
    def surface_grid(self) -> proximity.MeshGrid:
        return proximity.build_grid(self.vertices, self.faces)

    def flatten(self, points: np.ndarray, max_dist_mm: float = np.inf, guided: bool = False) -> Flattened:
        """Chart coordinates of surface points ``(k, 3)`` via their closest surface point.

        ``guided``: search with :func:`~coverage.proximity.closest_points_guessed` (each
        search bounded from the start by the previous query's answer), the same answers,
        faster for big batches of neighbouring points (a plan's punctures or paths), slower
        for a few points (it clears a stamp per triangle)."""
        if guided:
            tri, bary, dist = proximity.closest_points_guessed(self.surface_grid, points, max_dist=max_dist_mm)
        else:
            tri, bary, dist = proximity.closest_points(self.surface_grid, points, max_dist_mm)
        uv = lifting.interpolate(self.uv, self.faces, tri, bary)
        uv[tri < 0] = np.nan
        return Flattened(uv, tri, bary, dist)

    def to_canonical_frame(self, points: np.ndarray) -> np.ndarray:
        """Points of this face's frame ``(k, 3)`` expressed in the canonical frame (mm)."""
        return scan.apply(np.linalg.inv(self.pose), np.asarray(points, dtype=np.float64))

    def __repr__(self) -> str:
        return (f"Face({self.source or 'unnamed'}, {len(self.vertices)} vertices, {len(self.faces)} triangles, "
                f"{self.area_mm2 / 100:.1f} cm2, {100 * self.unobserved.mean():.1f}% unobserved)")


@functools.cache
def _curvature_support(subdivisions: int, radius_mm: float) -> np.ndarray:
    """The vertices curvature fits use on every face of a resolution: evenly spaced on the
    canonical face (one per voxel of side radius / 3), chosen by index so the fit does not
    depend on a face's pose or units."""
    from .curvature import voxel_subsample

    return _frozen(voxel_subsample(_default_face(subdivisions).vertices, radius_mm / 3.0))


@functools.lru_cache(maxsize=4)
def _default_face(subdivisions: int) -> Face:
    base, _, _ = _template.canonical()
    vertices = _template.template(subdivisions).place(base)
    return Face(vertices, subdivisions, source="canonical face (MediaPipe)")
