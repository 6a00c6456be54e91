"""Scans: synthetic depth-camera scans of the default face load, register and mark holes."""
import numpy as np
import pytest
import shapely
import trimesh

from coverage import Face, LandmarkError, MeshError, ZoneMap, scan
from coverage import template as tpl
from geometry_checks import exact_distance_to_region, keepout_edge_points
from synthetic import make_scan


def _undo(pose_scan_units, scale_to_mm):
    """Transform from the scan's frame (mm) back to the canonical frame (mm)."""
    to_mm = np.diag([scale_to_mm] * 3 + [1.0]) @ pose_scan_units
    return np.linalg.inv(to_mm)


def _zone_centroids(face, zones):
    """Skin-area weighted 3D centroid of each zone's outline (before keep-outs)."""
    centroid_uv = face.uv[face.faces].mean(axis=1)
    centre = face.vertices[face.faces].mean(axis=1)
    area = face.triangle_area_mm2
    out = {}
    for name, outline in zones.outlines.items():
        inside = shapely.contains_xy(outline, centroid_uv[:, 0], centroid_uv[:, 1])
        out[name] = (centre[inside] * area[inside, None]).sum(0) / area[inside].sum()
    return out


@pytest.fixture(scope="module")
def metre_scan(default_face):
    return make_scan(default_face, units="m", seed=0)


@pytest.fixture(scope="module")
def metre_face(metre_scan):
    return Face.load((metre_scan.vertices, metre_scan.faces), metre_scan.landmarks)


def test_scan_in_metres_registers_onto_the_surface(default_face, metre_scan, metre_face):
    back = scan.apply(_undo(metre_scan.pose, 1000.0), metre_face.vertices)
    observed = ~metre_face.unobserved
    err = np.linalg.norm(back[observed] - default_face.vertices[observed], axis=1)
    # depth noise is 0.15 mm and landmark noise 0.6 mm: the surface itself is recovered
    # to the noise, the registration along the surface to well under the landmark noise
    assert np.median(err) < 0.3 and np.percentile(err, 99) < 1.0
    # the recovered pose is the synthetic one (units detected: metres -> mm)
    expected = np.diag([1000.0] * 3 + [1.0]) @ metre_scan.pose
    np.testing.assert_allclose(metre_face.pose[:3, :3], expected[:3, :3], atol=0.01)
    np.testing.assert_allclose(metre_face.pose[:3, 3], expected[:3, 3], atol=1.0)


def test_zones_land_where_the_default_faces_do(default_face, default_zones, metre_scan, metre_face):
    zones = ZoneMap.default(metre_face)
    mine = _zone_centroids(metre_face, zones)
    ref = _zone_centroids(default_face, default_zones)
    undo = _undo(metre_scan.pose, 1000.0)
    for name in ref:
        moved = scan.apply(undo, mine[name][None])[0]
        assert np.linalg.norm(moved - ref[name]) < 2.0, name


def test_the_hole_is_unobserved_and_never_treatable(default_face, metre_scan, metre_face):
    centre, radius = metre_scan.holes_mm[0]
    dist = np.linalg.norm(default_face.vertices - centre, axis=1)
    assert metre_face.unobserved[dist < radius - 1.0].all()
    # well inside the scanned cheek, away from the hole, everything is observed
    cheek = default_face.vertices[205]
    ring = (dist > radius + 3.0) & (np.linalg.norm(default_face.vertices - cheek, axis=1) < radius + 12.0)
    assert not metre_face.unobserved[ring].any()
    zones = ZoneMap.default(metre_face)
    assert "unobserved" in zones.exclusions
    labels = zones.label_at(default_face.uv[dist < radius + 0.5])
    assert (labels == -1).all()
    # the unobserved keep-out holds the positioning error on the skin: every point of the
    # keep-out's edge is at least 1 mm (3D, so also along the skin) from unobserved skin
    edge = keepout_edge_points(zones)
    dist = exact_distance_to_region(metre_face, zones.exclusions["unobserved"].region, edge, reach=3.0)
    assert dist.min() >= 1.0


def test_what_a_frontal_camera_cannot_see_is_unobserved(default_face, metre_scan, metre_face):
    centre, radius = metre_scan.holes_mm[0]
    away = np.linalg.norm(default_face.vertices - centre, axis=1) > radius + 3.0
    facing = default_face.normals[:, 2]    # the camera looks along -z of the canonical frame
    # skin turned away from the camera (under the chin, the nostrils' underside) has no scan
    # surface and must not be matched to the skin across the fold
    assert metre_face.unobserved[away & (facing < 0)].mean() > 0.9
    # skin facing the camera within 60 degrees is seen
    assert metre_face.unobserved[away & (facing > 0.5)].mean() < 0.02


def test_inside_out_scan_gives_the_same_face(metre_scan, metre_face):
    flipped = Face.load((metre_scan.vertices, metre_scan.faces[:, ::-1]), metre_scan.landmarks)
    np.testing.assert_array_equal(flipped.unobserved, metre_face.unobserved)
    np.testing.assert_allclose(flipped.vertices, metre_face.vertices, atol=1e-9)


@pytest.mark.parametrize("units, expected", [("mm", 1.0), ("cm", 10.0)])
def test_units_are_detected(default_face, units, expected):
    s = make_scan(default_face, units=units, holes=(), seed=1)
    face = Face.load((s.vertices, s.faces), s.landmarks)
    scale = np.cbrt(np.linalg.det(face.pose[:3, :3]))
    assert scale == pytest.approx(1.0, abs=0.02)
    span = np.ptp(face.landmarks, axis=0).max()
    assert 120 < span < 220  # mm, whatever the input unit


def test_units_can_be_given(default_face):
    s = make_scan(default_face, units="cm", holes=(), seed=2)
    face = Face.load((s.vertices, s.faces), s.landmarks, units="cm")
    assert np.ptp(face.landmarks[:, 0]) == pytest.approx(np.ptp(default_face.landmarks[:, 0]), rel=0.05)
    with pytest.raises(MeshError, match="fits no unit"):
        Face.load((s.vertices * 0.001, s.faces), s.landmarks * 0.001)


def test_scan_file_round_trip(default_face, tmp_path):
    s = make_scan(default_face, units="mm", seed=3)
    path = tmp_path / "scan.ply"
    trimesh.Trimesh(s.vertices, s.faces, process=False).export(path)
    np.save(tmp_path / "landmarks.npy", s.landmarks)
    face = Face.load(path, tmp_path / "landmarks.npy")
    same = Face.load((s.vertices, s.faces), s.landmarks)
    # PLY stores float32: positions agree to its precision, except where the rounding tips
    # a rim decision (a handful of vertices at the scan's edges)
    close = np.linalg.norm(face.vertices - same.vertices, axis=1) < 1e-3
    assert close.mean() > 0.999
    assert (face.unobserved == same.unobserved).mean() > 0.999


@pytest.mark.parametrize("suffix", [".stl", ".glb", ".obj"])
def test_other_mesh_formats_give_the_same_face(default_face, tmp_path, suffix):
    s = make_scan(default_face, units="mm", seed=3)
    path = tmp_path / f"scan{suffix}"
    trimesh.Trimesh(s.vertices, s.faces, process=False).export(path)
    face = Face.load(path, s.landmarks)
    same = Face.load((s.vertices, s.faces), s.landmarks)
    # STL and GLB store float32; an STL arrives as a triangle soup and is re-joined
    close = np.linalg.norm(face.vertices - same.vertices, axis=1) < 1e-3
    assert close.mean() > 0.999
    assert (face.unobserved == same.unobserved).mean() > 0.999


def test_canonical_topology_needs_no_landmarks(default_face, tmp_path):
    # the bundled OBJ itself: 468 vertices in cm, no landmarks needed
    import importlib.resources
    path = importlib.resources.files("coverage.meshes") / "canonical_face_model.obj"
    with importlib.resources.as_file(path) as p:
        face = Face.load(p)
    np.testing.assert_allclose(face.vertices, default_face.vertices, atol=1e-9)
    assert not face.unobserved.any()


@pytest.mark.parametrize("landmarks, message", [
    (np.zeros((10, 3)), r"shape \(10, 3\)"),
    (np.full((468, 3), np.nan), "not finite"),
    ("missing.npy", "not found"),
])
def test_bad_landmarks(default_face, tmp_path, landmarks, message):
    mesh = trimesh.creation.icosphere()
    if isinstance(landmarks, str):
        landmarks = tmp_path / landmarks
    with pytest.raises(LandmarkError, match=message):
        Face.load(mesh, landmarks)


def test_canonical_mesh_with_a_nan_vertex_says_so():
    base, faces, _ = tpl.canonical()
    broken = base.copy()
    broken[100] = np.nan
    with pytest.raises(MeshError, match="vertex 100 is not finite"):
        Face.load((broken, faces))


def test_bad_meshes(tmp_path):
    with pytest.raises(MeshError, match="not found"):
        Face.load(tmp_path / "nothing.ply")
    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"\x00\x01not a mesh at all")
    with pytest.raises(MeshError, match="garbage.ply"):
        Face.load(garbage)
    points = tmp_path / "scan.xyz"
    points.write_text("1 2 3\n")
    with pytest.raises(MeshError, match="unsupported mesh format"):
        Face.load(points)
    with pytest.raises(LandmarkError, match="landmarks are needed"):
        Face.load(trimesh.creation.icosphere())


def test_unique_rows_equals_numpys_row_unique(rng):
    from coverage.scan import unique_rows

    values = np.round(rng.normal(size=(5000, 3)), 1)          # many repeated rows, signs mixed
    values[::7] = values[3]
    rows, inverse = unique_rows(values)
    want_rows, want_inverse = np.unique(values, axis=0, return_inverse=True)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(inverse, want_inverse.ravel())
    np.testing.assert_array_equal(rows[inverse], values)
    empty_rows, empty_inverse = unique_rows(np.empty((0, 3)))
    assert empty_rows.shape == (0, 3) and empty_inverse.shape == (0,)


def test_boundary_edges_by_hand_and_against_row_unique(rng):
    from coverage.scan import boundary_edges

    # two triangles sharing the edge 1-2: the four outer edges are the rim, in order
    np.testing.assert_array_equal(boundary_edges(np.array([[0, 1, 2], [2, 1, 3]])), [[0, 1], [0, 2], [1, 3], [2, 3]])
    faces = rng.integers(0, 300, size=(2000, 3))
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    np.testing.assert_array_equal(boundary_edges(faces), unique[counts == 1])
