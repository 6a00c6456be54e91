"""The default face: frame, landmarks, refinement, chart distortion, curvature."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh

from coverage import Face
from coverage import template as tpl
from coverage.curvature import principal_curvatures


def test_default_face_keeps_landmarks_and_frame(default_face):
    base, _, sets = tpl.canonical()
    # vertices 0..467 are the landmarks, in mm (the OBJ is in cm)
    np.testing.assert_array_equal(default_face.landmarks, base)
    # the OBJ's widest vertex is at |x| = 7.743095 cm
    assert np.ptp(base[:, 0]) == pytest.approx(2 * 77.43095, abs=1e-6)
    # +z out of the face: the nose tip is the most forward landmark, and the smooth refined
    # surface bulges past it by well under a tenth of a millimetre
    assert int(np.argmax(default_face.landmarks[:, 2])) == sets["points"]["nose_tip"] == 4
    assert default_face.vertices[:, 2].max() - base[4, 2] < 0.1
    # +y up: forehead above chin; +x the subject's left: left eye corner at +x
    assert default_face.vertices[10, 1] > default_face.vertices[152, 1]
    assert default_face.vertices[263, 0] > 0 > default_face.vertices[33, 0]


def test_default_face_resolution(default_face):
    edges = default_face.mesh.edges_unique_length
    # about 1 mm edges by default
    assert 0.8 < np.median(edges) < 1.2
    assert default_face.area_mm2 / 100 == pytest.approx(361.4, abs=1.0)
    coarse = Face.default(edge_mm=2.0)
    assert len(coarse.faces) * 3.5 < len(default_face.faces)
    np.testing.assert_array_equal(coarse.landmarks, default_face.landmarks)


def test_refinement_topology_is_a_valid_disk(default_face):
    mesh = trimesh.Trimesh(default_face.vertices, default_face.faces, process=False)
    # one boundary loop (the face oval), Euler characteristic of a disk, consistent winding
    assert mesh.euler_number == 1
    assert mesh.is_winding_consistent
    assert (default_face.triangle_area_mm2 > 0).all()
    n = default_face.subdivisions
    assert len(default_face.faces) == 898 * n * n


def _spherical_triangle(radius, span_deg):
    """Three points on a sphere around +z, ``span_deg`` apart as seen from its centre."""
    a = np.radians(span_deg) / 2
    c = np.array([[np.sin(a), 0, np.cos(a)],
                  [-0.5 * np.sin(a), 0.866 * np.sin(a), np.cos(a)],
                  [-0.5 * np.sin(a), -0.866 * np.sin(a), np.cos(a)]])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return radius * c, c


@pytest.mark.parametrize("span_deg, ratio", [(40.0, 0.12), (20.0, 0.03)])
def test_pn_triangle_interpolates_corners_and_follows_a_sphere(span_deg, ratio):
    # a base triangle of the face spans a few tens of degrees of curvature: there the PN
    # patch's centre lies within a few per cent of the flat centroid's gap to the sphere
    corners, normals = _spherical_triangle(10.0, span_deg)
    bary = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]])
    pts = tpl.pn_triangle_points(corners[None].repeat(5, 0), normals[None].repeat(5, 0), bary)
    np.testing.assert_allclose(pts[:3], corners, atol=1e-12)
    flat_gap = 10.0 - np.linalg.norm(corners.mean(axis=0))
    pn_gap = abs(10.0 - np.linalg.norm(pts[3]))
    assert pn_gap < ratio * flat_gap
    # the edge point depends only on its edge's ends: the same from the other triangle
    other = tpl.pn_triangle_points(corners[[1, 0, 2]][None], normals[[1, 0, 2]][None], np.array([[0.5, 0.5, 0]]))
    np.testing.assert_allclose(other[0], pts[4], atol=1e-12)


def test_refinement_paths_follow_base_edges():
    t = tpl.template(4)
    path = t.path([33, 7])                  # a base edge of the right eye loop
    assert path[0] == 33 and path[-1] == 7 and len(path) == 5
    chord = t.path([33, 263])               # not an edge: joined directly
    assert chord.tolist() == [33, 263]


def test_chart_distortion_report(default_face):
    """The chart's area and angle distortion (printed with `pytest -s`)."""
    report = default_face.chart_distortion()
    area, angle = report["area_scale"], report["angle_ratio"]
    print("\nchart distortion (skin-area weighted; area scale relative to its median):")
    print(f"  area scale  p5 {area['p5']:.3f}  p50 {area['p50']:.3f}  p95 {area['p95']:.3f}  max {area['max']:.1f}")
    print(f"  angle ratio p50 {angle['p50']:.4f}  p95 {angle['p95']:.4f}  max {angle['max']:.3f}")
    assert report["flipped"] == 0
    assert angle["p50"] < 1.01 and angle["p95"] < 1.03 and angle["max"] < 2.0
    assert area["p5"] > 0.7 and area["p95"] < 1.8
    # the large area scales sit in the nostrils and the mouth corners (exclusions)


def test_chart_metric_converts_lengths_to_skin(default_face):
    rng = np.random.default_rng(1)
    tri = rng.integers(0, len(default_face.faces), 500)
    corners_uv = default_face.uv[default_face.faces[tri]]
    corners_3d = default_face.vertices[default_face.faces[tri]]
    d_uv = corners_uv[:, 1] - corners_uv[:, 0]
    skin = np.linalg.norm(corners_3d[:, 1] - corners_3d[:, 0], axis=1)
    g = default_face.metric[tri]
    from_metric = np.sqrt(np.einsum("ki,kij,kj->k", d_uv, g, d_uv))
    np.testing.assert_allclose(from_metric, skin, rtol=1e-9)
    e2 = corners_uv[:, 2] - corners_uv[:, 0]
    chart_area = 0.5 * np.abs(d_uv[:, 0] * e2[:, 1] - d_uv[:, 1] * e2[:, 0])
    np.testing.assert_allclose(chart_area * default_face.area_scale[tri], default_face.triangle_area_mm2[tri], rtol=1e-9)


def _sphere(radius, inward=False):
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    normals = -mesh.vertex_normals if inward else mesh.vertex_normals
    return mesh.vertices, normals


def test_curvature_of_a_sphere():
    vertices, normals = _sphere(30.0)
    c = principal_curvatures(vertices, normals, radius_mm=5.0)
    np.testing.assert_allclose(c.k1, 1 / 30.0, rtol=0.03)
    np.testing.assert_allclose(c.k2, 1 / 30.0, rtol=0.03)
    # seen from inside (a concave bowl) the sign flips
    vertices, normals = _sphere(30.0, inward=True)
    c = principal_curvatures(vertices, normals, radius_mm=5.0)
    np.testing.assert_allclose(c.k1, -1 / 30.0, rtol=0.03)


def test_curvature_of_a_cylinder_and_euler_formula():
    radius = 15.0
    theta, z = np.meshgrid(np.linspace(0, 2 * np.pi, 240, endpoint=False), np.linspace(-30, 30, 121))
    vertices = np.stack([radius * np.cos(theta), radius * np.sin(theta), z], -1).reshape(-1, 3)
    normals = np.stack([np.cos(theta), np.sin(theta), 0 * z], -1).reshape(-1, 3)
    c = principal_curvatures(vertices, normals, radius_mm=4.0)
    mid = np.abs(vertices[:, 2]) < 20        # away from the cut ends
    np.testing.assert_allclose(c.k1[mid], 1 / radius, rtol=0.02)
    np.testing.assert_allclose(c.k2[mid], 0.0, atol=2e-3)
    # k2's direction runs along the axis, k1's around it
    assert np.abs(c.d2[mid][:, 2]).min() > 0.99
    # Euler: along the axis 0, around 1/R, at 45 degrees half of it
    ids = np.nonzero(mid)[0][:100]
    around = np.cross([0, 0, 1.0], normals[ids])
    along = np.tile([0, 0, 1.0], (len(ids), 1))
    np.testing.assert_allclose(c.normal_curvature(ids, around), 1 / radius, rtol=0.02)
    np.testing.assert_allclose(c.normal_curvature(ids, along), 0.0, atol=2e-3)
    np.testing.assert_allclose(c.normal_curvature(ids, around + along), 0.5 / radius, rtol=0.03)


def test_quadric_normal_equations_by_hand():
    from coverage._ext.curvature import quadric_normal_equations

    # vertex 0 at the origin, frame = the axes; neighbour 1 at (1, 2, 3), neighbour 2 at (0, 0, 0)
    vertices = np.array([[0.0, 0, 0], [1.0, 2, 3], [0.0, 0, 0]])
    normals = np.tile([0.0, 0, 1], (3, 1))
    e1, e2 = np.tile([1.0, 0, 0], (3, 1)), np.tile([0.0, 1, 0], (3, 1))
    a, rhs, count = quadric_normal_equations(vertices, normals, e1, e2, np.array([0, 0]), np.array([1, 2]), 1.0, 3)
    w = math.exp(-(1 + 4) / 2.0)                   # x = 1, y = 2, z = 3, sigma = 1
    phi = np.array([1.0, 2.0, 4.0, 1.0, 2.0])      # x^2, xy, y^2, x, y; the second pair's phi is 0
    np.testing.assert_allclose(a[0], w * np.outer(phi, phi), rtol=1e-15)
    np.testing.assert_allclose(rhs[0], w * 3.0 * phi, rtol=1e-15)
    assert count.tolist() == [2, 0, 0] and not a[1:].any() and not rhs[1:].any()
    with pytest.raises(ValueError, match="outside the mesh"):
        quadric_normal_equations(vertices, normals, e1, e2, np.array([0]), np.array([3]), 1.0, 3)


def test_quadric_normal_equations_equal_the_reference(default_face, rng):
    from coverage import curvature
    from coverage._ext.curvature import quadric_normal_equations

    # random points and frames, random pairs, in random order
    vertices, normals = rng.normal(size=(500, 3)) * 5.0, rng.normal(size=(500, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    e1, e2 = curvature.tangent_frames(normals)
    i, j = rng.integers(0, 500, 20_000), rng.integers(0, 500, 20_000)
    cases = [(vertices, normals, e1, e2, i, j, 2.0, 500)]
    # and the bundled face's own neighbour pairs
    v, n = default_face.vertices, default_face.normals
    i, j = curvature.neighbour_pairs(v, curvature.voxel_subsample(v, 5.0 / 3.0), 5.0)
    cases.append((v, n, *curvature.tangent_frames(n), i, j, 2.5, len(v)))
    for args in cases:
        got, want = quadric_normal_equations(*args), curvature.quadric_normal_equations_reference(*args)
        np.testing.assert_array_equal(got[2], want[2])
        for g, r in zip(got[:2], want[:2]):
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12 * np.abs(r).max())


def _by_vertex(i, j):
    """Pairs regrouped by vertex, each vertex's in their own order (all the fits read)."""
    order = np.argsort(i, kind="stable")
    return i[order], j[order]


def test_neighbour_pairs_equal_scipys_sparse_distance_matrix(default_face, rng):
    from coverage import curvature

    cases = []
    # random clouds, stretched, the support a random subset, several radii
    for _ in range(4):
        points = rng.normal(size=(2000, 3)) * rng.uniform(1.0, 5.0, 3)
        cases.append((points, np.sort(rng.choice(2000, 500, replace=False)), float(rng.uniform(0.3, 2.0))))
    # a lattice: many pairs exactly at the radius (kept: the test is <=), and points far
    # outside the support's grid
    lattice = np.stack(np.meshgrid(*[np.arange(6.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    lattice = np.concatenate([lattice, [[40.0, 0, 0], [-30.0, 2, 2]]])
    cases.append((lattice, np.arange(0, len(lattice) - 2, 3), 2.0))
    v = default_face.vertices
    cases.append((v, curvature.voxel_subsample(v, 5.0 / 3.0), 5.0))
    for points, support, radius in cases:
        got = _by_vertex(*curvature.neighbour_pairs(points, support, radius))
        want = _by_vertex(*curvature.neighbour_pairs_reference(points, support, radius))
        assert len(want[0]) > 100
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert not (got[0] == got[1]).any()
    # a non-finite vertex is refused, as SciPy's tree refuses it
    bad = lattice.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        curvature.neighbour_pairs(bad, np.arange(0, len(bad) - 2, 3), 2.0)
    # the lattice really has pairs at exactly the radius
    i, j = curvature.neighbour_pairs(lattice, np.arange(0, len(lattice) - 2, 3), 2.0)
    assert (np.linalg.norm(lattice[i] - lattice[j], axis=1) == 2.0).sum() > 50


def test_face_curvature_same_from_either_pair_finder(default_face, monkeypatch):
    from coverage import curvature

    v, n = default_face.vertices, default_face.normals
    support = curvature.voxel_subsample(v, 5.0 / 3.0)
    got = curvature.principal_curvatures(v, n, 5.0, support=support)
    monkeypatch.setattr(curvature, "neighbour_pairs", curvature.neighbour_pairs_reference)
    want = curvature.principal_curvatures(v, n, 5.0, support=support)
    for name in ("k1", "k2", "d1", "d2"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_face_curvature_signs_where_anatomy_says(default_face):
    c = default_face.curvature()
    # the nose tip is convex in every direction; the nasolabial fold side of the nose (ala
    # groove) is concave across; the forehead is gently convex
    assert c.k2[4] > 0
    assert c.k1[151] > 0 and abs(c.k1[151]) < 0.05
    assert np.median(c.k2[default_face.faces[:, 0]]) < 0.01


def test_collapsed_triangles_keep_unit_normals_and_a_floored_scale(default_face):
    """A scan can pull a vertex's whole fan onto one point: its normal comes from its
    neighbours, and the chart scale used for paths never reaches zero."""
    vertices = default_face.vertices.copy()
    centre = 425
    fan = np.unique(default_face.faces[(default_face.faces == centre).any(axis=1)])
    vertices[fan] = vertices[centre]
    face = Face(vertices, default_face.subdivisions)
    lengths = np.linalg.norm(face.normals, axis=1)
    np.testing.assert_allclose(lengths, 1.0, atol=1e-9)
    # the collapsed vertex's normal is its neighbours': close to the original one
    assert float(face.normals[centre] @ default_face.normals[centre]) > 0.95
    collapsed = (face.faces == centre).any(axis=1)
    assert (face.area_scale[collapsed] < 1e-12).all()
    assert (face.linear_scale[collapsed] > 0).all() and np.isfinite(face.linear_scale).all()


def test_skin_frame_follows_an_anisotropic_chart(default_face):
    """On a face stretched along x (a chart no longer conformal), the drum's across vector is
    one skin millimetre perpendicular to the travel, as the needle simulation maps it."""
    from coverage.roller import skin_frame

    stretched = Face(default_face.vertices * [2.0, 1.0, 1.0], default_face.subdivisions)
    uv = stretched.uv[[425, 205, 151]]
    tri, _ = stretched.locate(uv)
    travel = np.array([[0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)], [1.0, 0.0]])
    along, across = skin_frame(stretched, tri, travel, stretched.linear_scale[tri])
    jac = stretched.jacobian[tri]
    skin_along = np.einsum("kij,kj->ki", jac, along)
    skin_across = np.einsum("kij,kj->ki", jac, across)
    np.testing.assert_allclose(np.linalg.norm(skin_along, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(skin_across, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.einsum("ki,ki->k", skin_along, skin_across), 0.0, atol=1e-9)



def test_longest_edges_equal_the_norms_of_the_edges(default_face, rng):
    """triangle_longest_edge_mm (per axis, the longest before the root) is, bit for bit, the
    largest np.linalg.norm of the three edge vectors, on the default face and on a mesh of
    random corners of every magnitude (some triangles with a repeated corner)."""
    def norms(vertices, faces):
        p = vertices[faces]
        return np.linalg.norm(p - np.roll(p, 1, axis=1), axis=2).max(axis=1)

    vertices = rng.normal(size=(3000, 3)) * 10.0 ** rng.uniform(-4, 4, size=(3000, 1))
    faces = rng.integers(3000, size=(50000, 3))
    faces[:10, 1] = faces[:10, 0]
    random_mesh = SimpleNamespace(vertices=vertices, faces=faces)
    for face in (default_face, random_mesh):
        got = Face.triangle_longest_edge_mm.func(face)
        assert np.array_equal(got.view(np.int64), norms(face.vertices, face.faces).view(np.int64))
    assert default_face.triangle_longest_edge_mm.max() == default_face.longest_edge_mm
