"""The faster repair and fit steps against the code they replace, written out here: pieces
read off the winding cover, edges sorted by min/max, the rim found by binary search, rows
packed into one key, triangle areas from edge gathers."""
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from coverage import scan
from coverage.curvature import first_of_rows, voxel_subsample


def consistent_winding_reference(faces, area):
    """scan._consistent_winding as it was: the pieces from their own connected components."""
    m = len(faces)
    half = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(m), 3)
    forward = half[:, 0] < half[:, 1]
    key = half.min(axis=1) * (int(faces.max()) + 1) + half.max(axis=1)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    pair = starts[counts == 2]
    a, b = order[pair], order[pair + 1]
    fa, fb = owner[a], owner[b]
    disagree = (forward[a] == forward[b]).astype(np.int64)
    rows = np.concatenate([fa, fa + m])
    cols = np.concatenate([fb + disagree * m, fb + (1 - disagree) * m])
    cover = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(2 * m, 2 * m))
    _, state = csgraph.connected_components(cover, directed=False)
    plain = sp.coo_matrix((np.ones(len(fa)), (fa, fb)), shape=(m, m))
    _, piece = csgraph.connected_components(plain, directed=False)
    _, first = np.unique(piece, return_index=True)
    reference = state[first[piece]]
    turn = (state[m:] == reference) & (state[:m] != reference)
    turned_area = np.bincount(piece, weights=np.where(turn, area, 0.0))
    piece_area = np.bincount(piece, weights=area)
    orientable = np.bincount(piece, weights=(state[:m] != state[m:]).astype(float)) == np.bincount(piece)
    majority = (turned_area > 0.5 * piece_area) & orientable
    turn = np.where(majority[piece], ~turn, turn)
    faces = faces.copy()
    faces[turn] = faces[turn][:, ::-1]
    return faces, int(turn.sum()), int((counts > 2).sum())


def grid_sheet(nx, ny, offset=0):
    """A triangulated nx x ny grid of vertices, consistently wound."""
    idx = np.arange(nx * ny).reshape(ny, nx) + offset
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def mobius(n=12):
    """A Moebius strip: 2n vertices, 2n triangles, not orientable."""
    top, bottom = np.arange(n), np.arange(n) + n
    faces = []
    for i in range(n):
        j = (i + 1) % n
        t1, b1 = (top[j], bottom[j]) if j else (bottom[0], top[0])   # the half twist
        faces += [[top[i], bottom[i], t1], [bottom[i], b1, t1]]
    return np.array(faces)


def test_consistent_winding_by_hand():
    # two triangles sharing edge 1-2, the second wound against the first and bigger
    faces = np.array([[0, 1, 2], [1, 2, 3]])
    out, turned, nonmanifold = scan._consistent_winding(faces, np.array([1.0, 3.0]))
    assert out.tolist() == [[2, 1, 0], [1, 2, 3]] and turned == 1 and nonmanifold == 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_consistent_winding_equals_reference(seed):
    rng = np.random.default_rng(seed)
    pieces = [grid_sheet(9, 7), grid_sheet(5, 4, 63), mobius() + 83, np.array([[200, 201, 202]]),
              grid_sheet(6, 6, 110)]
    faces = np.concatenate(pieces)
    # flip a random set, add a fin (a third triangle on an edge: non-manifold)
    flip = rng.random(len(faces)) < 0.3
    faces[flip] = faces[flip][:, ::-1]
    faces = np.concatenate([faces, [[0, 1, 300]]])
    faces = faces[rng.permutation(len(faces))]
    area = rng.uniform(0.1, 2.0, len(faces))
    got = scan._consistent_winding(faces, area)
    expected = consistent_winding_reference(faces, area)
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[1:] == expected[1:]


@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_edges_and_rim_equal_the_sorting_code(seed):
    rng = np.random.default_rng(seed)
    faces = np.concatenate([grid_sheet(12, 10), mobius() + 120])
    faces = faces[rng.random(len(faces)) < 0.8]          # holes
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    rim = unique[counts == 1]
    np.testing.assert_array_equal(scan.boundary_edges(faces), rim)
    # on_boundary: points at corners, on edges and inside, against np.isin on the rim
    k = 3000
    tri = rng.integers(-1, len(faces), k)
    bary = rng.dirichlet([1, 1, 1], k)
    bary[np.arange(1000), rng.integers(0, 3, 1000)] = 0.0
    bary[:1000] /= bary[:1000].sum(axis=1, keepdims=True)
    bary[1000:1500] = np.eye(3)[rng.integers(0, 3, 500)]
    n = int(faces.max()) + 1
    rim_vertices = np.zeros(n, dtype=bool)
    rim_vertices[rim.ravel()] = True
    corners = faces[np.maximum(tri, 0)]
    zero = (bary <= 1e-9) & (tri >= 0)[:, None]
    at_vertex = corners[np.arange(k), np.argmax(~zero, axis=1)]
    skip = np.argmax(zero, axis=1)
    i = corners[np.arange(k), (skip + 1) % 3]
    j = corners[np.arange(k), (skip + 2) % 3]
    on_edge = np.isin(np.minimum(i, j) * n + np.maximum(i, j), rim[:, 0] * n + rim[:, 1])
    expected = np.where(zero.sum(axis=1) == 2, rim_vertices[at_vertex], (zero.sum(axis=1) == 1) & on_edge)
    got = scan.on_boundary(faces, tri, bary)
    np.testing.assert_array_equal(got, expected)
    assert got.any() and not got.all()
    # a closed mesh has no rim
    tetra = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]])
    assert not scan.on_boundary(tetra, np.array([0, 1]), np.array([[1.0, 0, 0], [0.5, 0.5, 0]])).any()


def test_first_of_rows_by_hand():
    keys = np.array([[1, 2], [0, 5], [1, 2], [0, 5], [0, 0]])
    # rows in order (0,0), (0,5), (1,2); their first occurrences 4, 1, 0
    assert first_of_rows(keys).tolist() == [4, 1, 0]


@pytest.mark.parametrize("high", [3, 1000, 2 ** 40])
def test_first_of_rows_equals_row_unique(rng, high):
    keys = rng.integers(0, high, (5000, 3))
    keys[100:200] = keys[:100]                       # repeats
    np.testing.assert_array_equal(first_of_rows(keys), np.unique(keys, axis=0, return_index=True)[1])
    keys[7, 1] = -4                                  # negative: NumPy's own path
    np.testing.assert_array_equal(first_of_rows(keys), np.unique(keys, axis=0, return_index=True)[1])


def test_voxel_subsample_equals_row_unique(default_face):
    points = default_face.vertices
    keys = np.floor((points - points.min(axis=0)) / (5.0 / 3.0)).astype(np.int64)
    expected = np.sort(np.unique(keys, axis=0, return_index=True)[1])
    np.testing.assert_array_equal(voxel_subsample(points, 5.0 / 3.0), expected)


def test_triangle_areas_from_edge_gathers_equal_the_corner_gather(rng):
    vertices = rng.normal(scale=30.0, size=(500, 3))
    faces = rng.integers(0, 500, (2000, 3))
    p = vertices[faces]
    expected = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    corner0 = vertices[faces[:, 0]]
    got = 0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - corner0, vertices[faces[:, 2]] - corner0), axis=1)
    np.testing.assert_array_equal(got, expected)


def test_component_labels_do_not_depend_on_edge_order(rng):
    """What the winding's unstable sort relies on: SciPy labels an undirected graph's
    components in the order of their lowest node, whatever order the edges come in."""
    n = 3000
    rows, cols = rng.integers(0, n, 2000), rng.integers(0, n, 2000)
    graph = sp.coo_matrix((np.ones(2000), (rows, cols)), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    for _ in range(3):
        perm = rng.permutation(2000)
        flip = rng.random(2000) < 0.5
        r, c = np.where(flip, cols, rows)[perm], np.where(flip, rows, cols)[perm]
        _, again = csgraph.connected_components(sp.coo_matrix((np.ones(2000), (r, c)), shape=(n, n)), directed=False)
        np.testing.assert_array_equal(again, labels)
    first = np.unique(labels, return_index=True)[1]
    assert np.all(np.diff(first) > 0)     # label k's lowest node comes before label k + 1's


def test_unique_counts_equal_numpys_unique(rng):
    keys = [rng.integers(0, 50, 2000), rng.integers(-5, 5, 300), np.sort(rng.integers(0, 10 ** 12, 5000)),
            np.array([7]), np.array([], dtype=np.int64), np.array([3, 3, 3, 1, 1, 9])]
    for k in keys:
        got, want = scan._unique_counts(k), np.unique(k, return_counts=True)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert scan._unique_counts(np.array([3, 3, 3, 1, 1, 9]))[1].tolist() == [2, 3, 1]


def test_vertex_normals_equal_trimeshs(default_face, rng):
    import trimesh

    from coverage.synthetic import deformed_face, make_scan

    meshes = [(default_face.vertices, default_face.faces)]
    sc = make_scan(deformed_face(default_face), units="mm", seed=1)
    meshes.append((sc.vertices, sc.faces))
    # a soup with degenerate triangles (repeated and collinear corners: no normal, no
    # angles) and vertices no triangle uses
    v = rng.normal(size=(300, 3)) * 10.0
    f = rng.integers(0, 250, (400, 3))
    f[:20, 1] = f[:20, 0]
    v[260:270] = v[250] + np.outer(np.arange(10.0), [1.0, 2.0, 3.0])
    f[20:25] = [[260, 262, 265], [261, 263, 269], [250, 260, 268], [262, 264, 266], [260, 261, 262]]
    meshes.append((v, f))
    for vertices, faces in meshes:
        want = trimesh.Trimesh(vertices, faces, process=False, validate=False).vertex_normals
        got = scan.vertex_normals(vertices, faces)
        np.testing.assert_array_equal(got, want)
    # the soup really has faces without a normal and vertices without a face
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (np.linalg.norm(cross, axis=1) < 1e-9).sum() >= 20
    assert not np.linalg.norm(scan.vertex_normals(v, f)[270:], axis=1).any()
