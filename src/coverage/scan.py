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
import scipy.sparse.csgraph as csgraph
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
    if path.is_dir():
        raise MeshError(f"{path}: is a directory, not a mesh file; give the scan's mesh file")
    if not path.is_file():
        raise MeshError(f"{path}: mesh file not found")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise MeshError(f"{path}: unsupported mesh format {path.suffix or '(none)'!r}; "
                        f"use one of {', '.join(MESH_SUFFIXES)}")
    kind = path.suffix.lower().lstrip(".").upper()
    try:
        with open(path, "rb") as fh:
            empty = not fh.read(1)
    except OSError as exc:
        raise MeshError(f"{path}: cannot open the mesh file ({exc.strerror}); check its permissions") from exc
    if empty:
        raise MeshError(f"{path}: the mesh file is empty (0 bytes); export the scan again")
    try:
        loaded = trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
    except Exception as exc:  # trimesh raises many types for corrupt files
        # trimesh looks for an optional text-encoding detector when a file is not decodable
        # text: the missing module is not the user's problem, the file is
        detail = (f"not decodable as {kind}" if isinstance(exc, ImportError)
                  else f"{type(exc).__name__}: {_one_line(exc)}")
        raise MeshError(f"{path}: cannot read mesh ({detail}); the file is damaged or not in {kind} format: "
                        "export the scan again") from exc
    vertices = np.asarray(getattr(loaded, "vertices", np.empty((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(loaded, "faces", np.empty((0, 3))), dtype=np.int64)
    if len(vertices) == 0 or len(faces) == 0:
        raise MeshError(f"{path}: mesh has no triangles; export the scan as a triangle mesh, not a point cloud")
    if len(vertices) == 3 * len(faces) and len(faces) > 1:
        # a triangle soup (STL stores each triangle's corners separately): join equal
        # corners so neighbouring triangles share edges and the scan's rim is its real rim
        vertices, inverse = unique_rows(vertices)
        faces = inverse.reshape(-1, 3)
    return np.ascontiguousarray(vertices), np.ascontiguousarray(faces, dtype=np.int64), str(path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def read_landmarks(landmarks) -> np.ndarray:
    """Landmarks ``(468, 3) float`` from an array or a ``.npy`` / ``.json`` file.

    A JSON file holds a list of 468 ``[x, y, z]`` triples, or an object with a
    ``"landmarks"`` list.
    """
    source = "landmarks"
    if isinstance(landmarks, (str, os.PathLike)):
        path = Path(landmarks)
        source = str(path)
        if path.is_dir():
            raise LandmarkError(f"{path}: is a folder, not a landmark file; give the .npy or .json file")
        if not path.is_file():
            raise LandmarkError(f"{path}: landmark file not found")
        fix = ("write them as a .npy of 468 x 3 floats (numpy.save) or a .json list of 468 [x, y, z] "
               "triples (or {\"landmarks\": [...]})")
        try:
            if path.suffix.lower() == ".npy":
                landmarks = np.load(path, allow_pickle=False)
            elif path.suffix.lower() == ".json":
                data = json.loads(path.read_text(encoding="utf-8-sig"))
                if isinstance(data, dict) and "landmarks" not in data:
                    raise LandmarkError(f"{path}: the JSON object has no \"landmarks\" list (keys: "
                                        f"{', '.join(map(str, list(data)[:5])) or 'none'}); {fix}")
                landmarks = data["landmarks"] if isinstance(data, dict) else data
            else:
                raise LandmarkError(f"{path}: unsupported landmark format {path.suffix or '(none)'!r}; "
                                    "use .npy or .json")
        except LandmarkError:
            raise
        except Exception as exc:
            raise LandmarkError(f"{path}: cannot read landmarks ({type(exc).__name__}: {_one_line(exc)}); "
                                f"{fix}") from exc
    if np.iscomplexobj(landmarks) or (isinstance(landmarks, np.ndarray) and landmarks.dtype.kind not in "biuf"):
        kind = landmarks.dtype if isinstance(landmarks, np.ndarray) else "complex"
        raise LandmarkError(f"{source}: landmarks are {kind} numbers; expected 468 x 3 real numbers (x, y, z)")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
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
    far = np.abs(array).max(axis=1) > LANDMARK_LIMIT
    if far.any():
        raise LandmarkError(f"{source}: landmark {int(np.argmax(far))} lies at {np.abs(array[far]).max():.3g} (input "
                            f"units), beyond {LANDMARK_LIMIT:.0e} in any unit: no face is that large; give the "
                            "landmarks in the scan's own frame and units")
    return np.ascontiguousarray(array)


LANDMARK_LIMIT = 1e9     # no landmark coordinate of a face lies farther from the origin, in any unit


def detect_units(points: np.ndarray, units: str, what: str) -> float:
    """Factor from input units to mm, from ``units`` or (``"auto"``) the face width.

    Given units are checked too: a face that is not 90-260 mm wide in them is refused.
    """
    width = float(np.linalg.norm(points[WIDTH_LANDMARKS[0]] - points[WIDTH_LANDMARKS[1]]))
    lo, hi = FACE_WIDTH_RANGE_MM
    if units != "auto":
        if units not in UNITS_TO_MM:
            raise MeshError(f"units = {units!r} is not known; use auto, {', '.join(UNITS_TO_MM)}")
        if not lo <= width * UNITS_TO_MM[units] <= hi:
            raise MeshError(f"{what}: with units = {units} the face is {width * UNITS_TO_MM[units]:.4g} mm wide "
                            f"(landmarks 234-454), and a face is {lo:.0f}-{hi:.0f} mm wide; give the scan's real "
                            "units, or units = auto to detect them")
        return UNITS_TO_MM[units]
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


# a triangle with less area than this fraction of the median triangle is collapsed: its
# corners coincide or are collinear, so it has no normal and no interior
DEGENERATE_AREA_FRACTION = 1e-9
# landmarks must lie on the scan: more than half within this distance of its surface (mm)
LANDMARK_SURFACE_MM = 10.0


def repair_mesh(vertices: np.ndarray, faces: np.ndarray, what: str = "mesh"):
    """A scan made usable as one surface, and a note for each repair made.

    vertices : (n, 3) float, faces : (m, 3) int (indices checked by the caller)

    Drops triangles with a non-finite (NaN, Inf) corner; joins coincident vertices (a
    triangle soup, texture seams); drops degenerate triangles (repeated or collinear
    corners) and duplicates (the same corners in any order); turns the triangles wound
    against their neighbours, so each connected piece keeps the winding of most of its area
    (which way the whole scan faces is decided later, by :func:`fit_template`); drops
    unused vertices. Edges shared by more than two triangles (non-manifold: fins, flaps,
    sheets glued along an edge) are kept and counted in a note: the template only takes
    the scan surface closest to each of its points, and where that surface does not face
    the way the skin does, the point is unobserved.

    Returns ``(vertices (n', 3) float, faces (m', 3) int, notes list[str])``; raises
    :class:`MeshError` when no triangle is left.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise MeshError(f"{what}: mesh has no triangles; export the scan as a triangle mesh, not a point cloud")
    notes = []
    finite = np.isfinite(vertices).all(axis=1)
    good = finite[faces].all(axis=1)
    if not good.all():
        notes.append(f"{what}: dropped {_count(~good)} triangles with non-finite (NaN or Inf) coordinates")
        faces = faces[good]
    if len(faces) == 0:
        raise MeshError(f"{what}: no triangle has finite coordinates (every one has a NaN or Inf corner); "
                        "export the scan again")
    used = np.flatnonzero(np.bincount(faces.ravel(), minlength=len(vertices)))
    merged, inverse = unique_rows(vertices[used])
    remap = np.empty(len(vertices), dtype=np.int64)
    remap[used] = inverse.ravel()
    vertices, faces = merged, remap[faces]

    # the corners gathered edge by edge (the same differences as from a (m, 3, 3) gather)
    corner0 = vertices[faces[:, 0]]
    area = 0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - corner0, vertices[faces[:, 2]] - corner0), axis=1)
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    reference = float(np.median(area[~repeated])) if (~repeated).any() else 0.0
    degenerate = repeated | (area <= DEGENERATE_AREA_FRACTION * reference)
    corners = np.sort(faces, axis=1)
    n = len(vertices)
    if n < 2 ** 20:   # one int64 key per triangle sorts much faster than rows
        _, first = np.unique((corners[:, 0] * n + corners[:, 1]) * n + corners[:, 2], return_index=True)
    else:
        _, first = np.unique(corners, axis=0, return_index=True)
    duplicate = np.ones(len(faces), dtype=bool)
    duplicate[first] = False
    duplicate &= ~degenerate
    if degenerate.any() or duplicate.any():
        parts = [f"{_count(degenerate)} degenerate (repeated or collinear corners)" if degenerate.any() else "",
                 f"{_count(duplicate)} duplicate" if duplicate.any() else ""]
        notes.append(f"{what}: dropped {' and '.join(part for part in parts if part)} triangles")
        keep = ~(degenerate | duplicate)
        faces, area = faces[keep], area[keep]
    if len(faces) == 0:
        raise MeshError(f"{what}: every triangle is degenerate (no area); export the scan again")

    faces, turned, nonmanifold = _consistent_winding(faces, area)
    if turned:
        notes.append(f"{what}: turned {_count(turned)} triangles wound against their neighbours to match them")
    if nonmanifold:
        notes.append(f"{what}: {_count(nonmanifold)} edge{'s are' if nonmanifold > 1 else ' is'} shared by more "
                     "than two triangles (non-manifold); "
                     "kept as they are: each template point takes only the scan surface closest to it")
    return (*_compact(vertices, faces), notes)


def _compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices some face uses, and the faces renumbered onto them (order kept)."""
    used = np.bincount(faces.ravel(), minlength=len(vertices)) > 0
    renumber = np.cumsum(used) - 1
    return np.ascontiguousarray(vertices[used]), np.ascontiguousarray(renumber[faces], dtype=np.int64)


def _count(n) -> str:
    """A count for a note, with thousands separators (``n``: an int or a bool mask)."""
    return f"{int(np.sum(n)):,}"


def _consistent_winding(faces: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Faces with each piece's winding made consistent across its manifold edges.

    Two triangles sharing an edge agree when they run along it in opposite directions. On
    the double cover of the triangle graph (node ``f``: triangle f as it is, ``f + m``:
    turned) an edge joins the pairs of states that agree, so one connected component of the
    cover holds one consistent winding of a whole piece. Each piece keeps the winding of
    most of its area. Returns ``(faces, triangles turned, non-manifold edges)``.
    """
    m = len(faces)
    one = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])   # half-edges one -> two
    two = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    owner = np.tile(np.arange(m), 3)
    forward = one < two
    key = np.minimum(one, two) * (int(faces.max()) + 1) + np.maximum(one, two)
    # any sort will do: only which half-edges share a key matters (the cover's components
    # are labelled in the order of their lowest node, whatever order its edges come in).
    # A stable one: the keys come in long ordered runs (a scan's rows, three passes over
    # the triangles), which it merges ~15x faster than the default quicksort sorts them
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    pair = starts[counts == 2]
    a, b = order[pair], order[pair + 1]
    fa, fb = owner[a], owner[b]
    disagree = (forward[a] == forward[b]).astype(np.int64)   # same direction: one must turn
    rows = np.concatenate([fa, fa + m])
    cols = np.concatenate([fb + disagree * m, fb + (1 - disagree) * m])
    cover = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(2 * m, 2 * m))
    _, state = csgraph.connected_components(cover, directed=False)
    # the pieces, read off the cover: a piece is one component of it (not orientable) or
    # two, one holding each triangle's either state, so the smaller label names the piece
    # (renumbered 0, 1, ... in label order; only which triangles share a piece matters)
    label = np.minimum(state[:m], state[m:])
    used = np.zeros(2 * m, dtype=bool)
    used[label] = True
    piece = (np.cumsum(used) - 1)[label]
    _, first = np.unique(piece, return_index=True)     # each piece's lowest triangle
    reference = state[first[piece]]                    # its winding, as it is
    turn = (state[m:] == reference) & (state[:m] != reference)   # a non-orientable piece is left alone
    turned_area = np.bincount(piece, weights=np.where(turn, area, 0.0))
    piece_area = np.bincount(piece, weights=area)
    orientable = np.bincount(piece, weights=(state[:m] != state[m:]).astype(float)) == np.bincount(piece)
    majority = (turned_area > 0.5 * piece_area) & orientable
    turn = np.where(majority[piece], ~turn, turn)
    faces = faces.copy()
    faces[turn] = faces[turn][:, ::-1]
    return faces, int(turn.sum()), int((counts > 2).sum())


def keep_face(vertices: np.ndarray, faces: np.ndarray, landmarks_mm: np.ndarray, what: str = "mesh",
              landmarks_what: str = "landmarks"):
    """The pieces of a scan (mm) the face's landmarks lie on, and a note if others were dropped.

    A scan may hold more than the face: hair, shoulders, a background, specks. A connected
    piece is kept if it is the closest scan surface to at least one landmark within
    ``LANDMARK_SURFACE_MM``; the others cannot be the face and are dropped. Landmarks must
    lie on the scan: if fewer than half are within ``LANDMARK_SURFACE_MM`` of its surface
    they are in another frame or unit than the mesh, or belong to another capture, and a
    :class:`LandmarkError` says so.

    Returns ``(vertices (n', 3) float, faces (m', 3) int, notes list[str])``.
    """
    vertices, faces, notes, _ = keep_face_and_grid(vertices, faces, landmarks_mm, what, landmarks_what)
    return vertices, faces, notes


def keep_face_and_grid(vertices: np.ndarray, faces: np.ndarray, landmarks_mm: np.ndarray, what: str = "mesh",
                       landmarks_what: str = "landmarks"):
    """:func:`keep_face`, and the search grid of what it keeps: ``(vertices, faces, notes,
    grid)``. The grid built to find the landmarks is kept for the template fit, with the
    dropped triangles taken out of it (:func:`kept_grid`) instead of binning the rest again."""
    grid = proximity.build_grid(vertices, faces)
    tri, _, _ = proximity.closest_points(grid, landmarks_mm, max_dist=LANDMARK_SURFACE_MM)
    near = tri >= 0
    if near.mean() < 0.5:
        _, _, dist = proximity.closest_points(grid, landmarks_mm)
        if not (dist >= 0).all():
            # beyond the search grid's reach: the distance to the nearest vertex says how far
            from scipy.spatial import cKDTree

            dist = cKDTree(vertices).query(landmarks_mm)[0]
        raise LandmarkError(f"{landmarks_what}: the landmarks lie {float(np.median(dist)):.4g} mm (median) from the "
                            f"surface of {what}, more than {LANDMARK_SURFACE_MM:g} mm; give landmarks of this scan, "
                            "in the mesh's frame and units")
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(vertices),) * 2)
    _, label = csgraph.connected_components(graph, directed=False)
    piece = label[faces[:, 0]]
    kept = np.isin(piece, piece[tri[near]])
    notes = []
    if not kept.all():
        dropped = len(np.unique(piece[~kept]))
        notes.append(f"{what}: kept the face; dropped {dropped} piece{'s' if dropped > 1 else ''} of the scan that "
                     f"no landmark lies on ({_count(~kept)} triangles: hair, shoulders, background or specks)")
        vertices, faces = _compact(vertices, faces[kept])
        # the whole scan's cells suit the kept pieces unless they were sized for much more
        # (a background far away); then the kept pieces are binned afresh
        edge = np.linalg.norm(vertices[faces[:, 1]] - vertices[faces[:, 0]], axis=1)
        fits = kept.mean() >= 0.5 and grid.cell <= 3.0 * float(np.median(edge))
        grid = kept_grid(grid, kept, vertices, faces) if fits else proximity.build_grid(vertices, faces)
    return np.ascontiguousarray(vertices), np.ascontiguousarray(faces, dtype=np.int64), notes, grid


def kept_grid(grid: proximity.MeshGrid, kept: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> proximity.MeshGrid:
    """The grid of a mesh's triangles ``kept (m,) bool``, from the whole mesh's ``grid``:
    the same cells (origin, size, counts), each listing its kept triangles, renumbered in
    order, ascending. ``vertices``, ``faces``: the kept mesh (``_compact`` of
    ``faces[kept]``). Closest points do not depend on how the cells are cut (the search is
    exact, ties go to the lowest triangle, and renumbering keeps the order), so this
    answers as ``proximity.build_grid(vertices, faces)`` would."""
    kept = np.asarray(kept, dtype=bool)
    renumber = np.cumsum(kept) - 1
    keep_item = kept[grid.items]
    cell_of_item = np.repeat(np.arange(len(grid.start) - 1, dtype=np.int64), np.diff(grid.start))
    start = np.zeros_like(grid.start)
    np.cumsum(np.bincount(cell_of_item[keep_item], minlength=len(grid.start) - 1), out=start[1:])
    items = np.ascontiguousarray(renumber[grid.items[keep_item]])
    return proximity.MeshGrid(np.ascontiguousarray(vertices, dtype=np.float64),
                              np.ascontiguousarray(faces, dtype=np.int64),
                              np.ascontiguousarray(grid.triangles[kept]), grid.origin, grid.cell, grid.dims,
                              start, items)


@dataclass(frozen=True)
class Fit:
    """The template fitted to a scan: refined vertices (mm) and what was observed."""

    vertices: np.ndarray    # (v, 3) float, mm, scan frame
    unobserved: np.ndarray  # (v,) bool
    distance: np.ndarray    # (v,) float, template point to scan surface (mm), -1 if none
    pose: np.ndarray        # (4, 4) similarity, canonical frame -> scan frame (mm)
    inside_out: bool = False  # the scan's triangles are wound with their normals into the head


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """Edges ``(k, 2) int`` used by exactly one triangle (sorted vertex pairs, in order)."""
    # the edges (a, b), (b, c), (c, a), each with its smaller end first (np.sort of the
    # pairs, several times faster)
    one = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    two = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    edges = np.stack([np.minimum(one, two), np.maximum(one, two)], axis=1)
    if len(edges) == 0:
        return np.empty((0, 2), dtype=edges.dtype)
    n = int(edges.max()) + 1
    if n >= 2 ** 31:
        unique, counts = np.unique(edges, axis=0, return_counts=True)
        return unique[counts == 1]
    # one int64 key per edge sorts several times faster than rows, in the same order
    key, counts = _unique_counts(edges[:, 0] * n + edges[:, 1])
    key = key[counts == 1]
    return np.stack([key // n, key % n], axis=1).astype(edges.dtype, copy=False)


def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_counts=True)`` of integer keys ``(k,)``, by a stable sort:
    equal integers are equal, so any sort gives the same sorted keys, and half-edge keys
    come in long ordered runs that a merge sort takes ~15x faster than the quicksort
    ``np.unique`` uses."""
    ordered = np.sort(keys, kind="stable")
    if len(ordered) == 0:
        return ordered, np.empty(0, dtype=np.intp)
    new = np.empty(len(ordered), dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    first = np.flatnonzero(new)
    return ordered[first], np.diff(np.append(first, len(ordered)))


def unique_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, axis=0, return_inverse=True)`` for finite float rows ``(k, d)``:
    the same rows in the same (lexicographic) order and the same inverse, by one lexsort
    (several times faster than NumPy's row unique, which sorts a structured view)."""
    values = np.asarray(values)
    if len(values) == 0:
        return values[:0].copy(), np.empty(0, dtype=np.int64)
    order = np.lexsort(values.T[::-1])
    ordered = values[order]
    new = np.empty(len(values), dtype=bool)
    new[0] = True
    new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    inverse = np.empty(len(values), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


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
    # the rim's keys come sorted (boundary_edges' order): a binary search instead of np.isin
    rim_key = rim[:, 0] * n + rim[:, 1]
    at = np.minimum(np.searchsorted(rim_key, key), max(len(rim_key) - 1, 0))
    on_edge = rim_key[at] == key if len(rim_key) else np.zeros(len(key), dtype=bool)
    return np.where(zeros == 2, rim_vertices[at_vertex], (zeros == 1) & on_edge)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``trimesh.Trimesh(vertices, faces, process=False, validate=False).vertex_normals``,
    the same bits: the same trimesh steps on the same arrays (face normals from the edge
    cross products, zero where a face has none; corner angles; their angle-weighted sum per
    vertex, unitised), without the mesh object, whose cache hashes the arrays on every
    property it fills (~15 % of the time on a 200k-triangle scan)."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3 or not len(faces):
        return np.asarray(trimesh.Trimesh(vertices, faces, process=False, validate=False).vertex_normals,
                          dtype=np.float64)
    triangles = vertices[faces]
    normals, valid = trimesh.triangles.normals(triangles=triangles, crosses=trimesh.triangles.cross(triangles))
    if not valid.all():
        padded = np.zeros((len(triangles), 3), dtype=np.float64)
        padded[valid] = normals
        normals = padded
    return np.asarray(trimesh.geometry.weighted_vertex_normals(vertex_count=len(vertices), faces=faces,
                                                               face_normals=normals,
                                                               face_angles=trimesh.triangles.angles(triangles)),
                      dtype=np.float64)


def fit_template(scan_vertices: np.ndarray, scan_faces: np.ndarray, landmarks_mm: np.ndarray,
                 tpl: _template.Template, *, tolerance_mm: float, smoothing: float,
                 rim_offset_mm: float = 0.3, max_normal_angle_deg: float = 60.0,
                 grid: proximity.MeshGrid | None = None) -> Fit:
    """Place the refined template on a scan (all inputs in mm, scan frame).

    ``grid``: ``proximity.build_grid(scan_vertices, scan_faces)`` if the caller has it already.
    """
    base, _, _ = _template.canonical()
    pose = similarity_fit(base, landmarks_mm)
    placed_base = smooth_landmarks(landmarks_mm, pose, smoothing)
    placed = tpl.place(placed_base)
    placed_normals = vertex_normals(placed, tpl.faces)

    if grid is None:
        grid = proximity.build_grid(scan_vertices, scan_faces)
    tri, bary, dist = proximity.closest_points(grid, placed, max_dist=tolerance_mm)
    found = tri >= 0
    closest = np.einsum("kj,kjd->kd", bary, scan_vertices[scan_faces[np.maximum(tri, 0)]])

    # the scan's normal at the closest point, interpolated from its vertex normals so the
    # answer does not jump between two triangles tied at a shared edge
    scan_normals = vertex_normals(scan_vertices, scan_faces)
    normal = np.einsum("kj,kjd->kd", bary, scan_normals[scan_faces[np.maximum(tri, 0)]])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    cosine = np.einsum("ij,ij->i", normal, placed_normals)
    # a scan may be wound either way: its orientation is what most matches say. Then a
    # template point must meet skin facing its own way: one that reached across to the
    # other side of a fold (a nostril's underside onto the lip) has the normal reversed
    inside_out = bool(found.any() and np.sum(cosine[found]) < 0)
    if inside_out:
        normal = -normal
        cosine = -cosine
    agree = cosine >= np.cos(np.radians(max_normal_angle_deg))

    offset = placed - closest
    tangential = offset - np.einsum("ij,ij->i", offset, normal)[:, None] * normal
    rim = on_boundary(scan_faces, tri, bary) & (np.linalg.norm(tangential, axis=1) > rim_offset_mm)
    observed = found & agree & ~rim
    vertices = np.where(observed[:, None], closest, placed)
    return Fit(np.ascontiguousarray(vertices), ~observed, np.where(found, dist, -1.0), pose, inside_out)
