"""Point location and lifting: kernel vs NumPy reference, hand cases, chart round trips."""
import numpy as np
import pytest
from scipy.spatial import Delaunay

from coverage import lifting


def _random_triangulation(rng, n=400):
    pts = rng.uniform(-50, 50, (n, 2))
    tri = Delaunay(pts)
    return np.ascontiguousarray(pts), np.ascontiguousarray(tri.simplices.astype(np.int64))


def test_locate_by_hand():
    # two triangles forming the square [0, 2] x [0, 2], split along its diagonal
    uv = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    grid = lifting.build_grid(uv, faces, cell=1.0)
    query = np.array([[1.5, 0.5], [0.5, 1.5], [3.0, 3.0], [np.nan, 0.0]])
    tri, bary = lifting.locate(grid, query)
    assert tri.tolist() == [0, 1, -1, -1]
    # (1.5, 0.5) = 0.25 * (0,0) + 0.5 * (2,0) + 0.25 * (2,2)
    np.testing.assert_allclose(bary[0], [0.25, 0.5, 0.25])
    # (0.5, 1.5) = 0.25 * (0,0) + 0.25 * (2,2) + 0.5 * (0,2)
    np.testing.assert_allclose(bary[1], [0.25, 0.25, 0.5])
    values = np.array([[0.0], [10.0], [20.0], [30.0]])
    out = lifting.interpolate(values, faces, tri, bary)
    np.testing.assert_allclose(out[:, 0], [0.25 * 0 + 0.5 * 10 + 0.25 * 20, 0.25 * 0 + 0.25 * 20 + 0.5 * 30, 0, 0])


def test_point_just_outside_snaps_within_eps_only():
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    faces = np.array([[0, 1, 2]])
    grid = lifting.build_grid(uv, faces, cell=0.5)
    tri, _ = lifting.locate(grid, np.array([[0.5, -1e-12], [0.5, -1e-3]]), eps=1e-9)
    assert tri.tolist() == [0, -1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_locate_matches_reference(seed):
    rng = np.random.default_rng(seed)
    uv, faces = _random_triangulation(rng)
    grid = lifting.build_grid(uv, faces)
    query = rng.uniform(-60, 60, (5000, 2))
    query[:50] = uv[rng.integers(0, len(uv), 50)]          # exactly on vertices
    query[50:60] = np.nan
    tri, bary = lifting.locate(grid, query)
    tri_ref, bary_ref = lifting.locate_reference(grid, query)
    np.testing.assert_array_equal(tri, tri_ref)
    np.testing.assert_allclose(bary, bary_ref, atol=1e-12)
    inside = tri >= 0
    assert 0.5 < inside.mean() < 0.95  # the test exercises both outcomes
    # every located point is reproduced by its barycentrics
    rebuilt = np.einsum("kj,kjd->kd", bary[inside], uv[faces[tri[inside]]])
    np.testing.assert_allclose(rebuilt, query[inside], atol=1e-9)


@pytest.mark.parametrize("seed", [3, 4])
def test_interpolate_matches_reference(seed):
    rng = np.random.default_rng(seed)
    uv, faces = _random_triangulation(rng, 200)
    values = rng.normal(size=(len(uv), 3))
    tri = rng.integers(-1, len(faces), 3000)
    bary = rng.dirichlet([1, 1, 1], 3000)
    for normalize in (False, True):
        out = lifting.interpolate(values, faces, tri, bary, normalize)
        ref = lifting.interpolate_reference(values, faces, tri, bary, normalize)
        np.testing.assert_allclose(out, ref, atol=1e-12)
        assert (out[tri < 0] == 0).all()


def _spelled_out_interpolation(values, faces, tri, bary, normalize):
    """The kernel's arithmetic in NumPy, term for term: b0 a + b1 b + b2 c, then times
    1 / sqrt(x^2 + y^2 + z^2) where that sum is positive; rows with tri < 0 are 0."""
    corners = values[faces[np.maximum(tri, 0)]]
    out = bary[:, 0:1] * corners[:, 0] + bary[:, 1:2] * corners[:, 1] + bary[:, 2:3] * corners[:, 2]
    if normalize:
        s = out[:, 0] * out[:, 0] + out[:, 1] * out[:, 1] + out[:, 2] * out[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(s > 0, 1.0 / np.sqrt(s), 1.0)
        out = out * scale[:, None]
    out[tri < 0] = 0.0
    return out


# sizes around the kernel's prefetch distances and its normalisation lag (32 points)
@pytest.mark.parametrize("n", [0, 1, 8, 31, 32, 33, 64, 65, 2000])
def test_interpolate_three_columns_is_exact(n):
    """The 3-column kernel (positions, normals) gives the same bits as its arithmetic spelled out."""
    rng = np.random.default_rng(n)
    values = rng.normal(size=(60, 3)) * rng.choice([1e-3, 1.0, 1e3], size=(60, 1))
    values[:5] = 0.0                      # zero-length normals stay zero
    values[5] = np.nan
    faces = rng.integers(0, len(values), (90, 3))
    tri = rng.integers(-1, len(faces), n)
    bary = rng.dirichlet([1, 1, 1], n)
    for normalize in (False, True):
        out = lifting.interpolate(values, faces, tri, bary, normalize)
        np.testing.assert_array_equal(out, _spelled_out_interpolation(values, faces, tri, bary, normalize))


def test_interpolate_without_triangles_gives_zeros():
    out = lifting.interpolate(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.full(50, -1),
                              np.zeros((50, 3)), normalize=True)
    assert out.shape == (50, 3) and (out == 0).all()


@pytest.mark.parametrize("width", [1, 2, 4])
def test_interpolate_other_widths_match_reference(width):
    rng = np.random.default_rng(width)
    values = rng.normal(size=(50, width))
    faces = rng.integers(0, len(values), (70, 3))
    tri = rng.integers(-1, len(faces), 500)
    bary = rng.dirichlet([1, 1, 1], 500)
    for normalize in (False, True):
        out = lifting.interpolate(values, faces, tri, bary, normalize)
        np.testing.assert_allclose(out, lifting.interpolate_reference(values, faces, tri, bary, normalize),
                                   atol=1e-12)


def test_grid_cell_size_does_not_change_answers():
    rng = np.random.default_rng(5)
    uv, faces = _random_triangulation(rng, 300)
    query = rng.uniform(-50, 50, (2000, 2))
    results = [lifting.locate(lifting.build_grid(uv, faces, cell), query) for cell in (0.7, 3.0, 25.0)]
    for tri, bary in results[1:]:
        # a point on a shared edge may fall in either triangle; its position may not move
        same = tri == results[0][0]
        assert same.mean() > 0.999
        p0 = np.einsum("kj,kjd->kd", results[0][1], uv[faces[results[0][0]]])
        p1 = np.einsum("kj,kjd->kd", bary, uv[faces[tri]])
        np.testing.assert_allclose(p0, p1, atol=1e-9)


def test_face_lift_then_flatten_round_trip(default_face):
    rng = np.random.default_rng(6)
    uv = default_face.uv
    query = rng.uniform(uv.min(0), uv.max(0), (20000, 2))
    lifted = default_face.lift(query)
    inside = lifted.inside
    assert inside.mean() > 0.7
    assert np.isnan(lifted.points[~inside]).all()
    np.testing.assert_allclose(np.linalg.norm(lifted.normals[inside], axis=1), 1.0, atol=1e-12)
    flat = default_face.flatten(lifted.points[inside])
    assert flat.distance.max() < 1e-9
    np.testing.assert_allclose(flat.uv, query[inside], atol=1e-8)


def test_lifted_normals_point_out_of_the_face(default_face):
    # the nose tip's normal points forward (+z) and the cheek's forward and outward
    lifted = default_face.lift(default_face.uv[[4, 205, 425]])
    n = lifted.normals
    assert n[0, 2] > 0.9
    assert n[1, 2] > 0.5 and n[1, 0] < 0     # subject's right cheek faces -x
    assert n[2, 2] > 0.5 and n[2, 0] > 0


def _spelled_out_lift(face, query):
    """face.lift's arithmetic in NumPy, term for term: locate, then positions and normals
    b0 a + b1 b + b2 c of the corner frames, normals times 1 / sqrt(x^2 + y^2 + z^2)."""
    tri, bary = lifting.locate(face.chart_grid, query)
    frames = face._frames
    points = _spelled_out_interpolation(frames[:, :3].copy(), face.faces, tri, bary, False)
    normals = _spelled_out_interpolation(frames[:, 3:].copy(), face.faces, tri, bary, True)
    points[tri < 0] = np.nan
    normals[tri < 0] = np.nan
    return tri, bary, points, normals


# sizes around the kernel's prefetch distances (24 points ahead, in a ring of 32)
@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 12, 13, 24, 25, 31, 32, 33, 100, 5000])
def test_lift_is_locate_then_interpolate_exactly(default_face, n):
    """The lifting kernel (located all first, then interpolated, fetching ahead) gives the
    bits of its arithmetic spelled out, in and outside the chart, NaN and far points included."""
    rng = np.random.default_rng(n)
    lo, hi = default_face.uv.min(axis=0), default_face.uv.max(axis=0)
    query = rng.uniform(lo - 5.0, hi + 5.0, (n, 2))
    query[rng.random(n) < 0.05] = np.nan
    query[rng.random(n) < 0.05] = [1e300, -np.inf]
    on_vertex = rng.random(n) < 0.2
    query[on_vertex] = default_face.uv[rng.integers(0, len(default_face.uv), int(on_vertex.sum()))]
    got = lifting.lift(default_face.chart_grid, default_face.faces, default_face._frames, query)
    for a, b in zip(got, _spelled_out_lift(default_face, query)):
        np.testing.assert_array_equal(a, b)
    # and the NumPy reference (locate_reference, then interpolate_reference)
    tri, bary = lifting.locate_reference(default_face.chart_grid, query)
    np.testing.assert_array_equal(got[0], tri)
    inside = tri >= 0
    np.testing.assert_allclose(got[2][inside], lifting.interpolate_reference(
        default_face.vertices, default_face.faces, tri, bary)[inside], atol=1e-9)
    np.testing.assert_allclose(got[3][inside], lifting.interpolate_reference(
        default_face.normals, default_face.faces, tri, bary, normalize=True)[inside], atol=1e-9)
