"""The compiled principal curvatures from the quadric fits' normal equations
(coverage._ext.curvature.principal_from_equations) against their NumPy twin
(coverage.curvature.principal_from_equations_reference), bit for bit and sign of zero too,
on seeded random systems (too few pairs, non-finite sums, singular systems, umbilic points,
steep graphs included); the twin against LAPACK's solve and eig (the fit as it was solved
before stop 20) to rounding; and cases worked by hand."""
import numpy as np
import pytest

from coverage import curvature
from coverage._ext import curvature as kernel


def _same(a, b):
    finite = np.isfinite(a) & np.isfinite(b)
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
            and np.array_equal(np.signbit(a[finite]), np.signbit(b[finite])))


def _frames(rng, n):
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    e1, e2 = curvature.tangent_frames(normals)
    return normals, e1, e2


def _systems(rng, n):
    """Normal equations as the fits make them: sums of w phi phi^T over random neighbours."""
    m = 12
    x, y = rng.normal(scale=2.0, size=(2, n, m))
    coef = rng.normal(scale=[0.05, 0.05, 0.05, 0.3, 0.3], size=(n, 5))
    phi = np.stack([x * x, x * y, y * y, x, y], axis=2)                  # (n, m, 5)
    z = np.einsum("nmk,nk->nm", phi, coef) + rng.normal(scale=1e-3, size=(n, m))
    w = np.exp(-(x * x + y * y) / 12.5)
    a = np.einsum("nm,nmi,nmj->nij", w, phi, phi)
    rhs = np.einsum("nm,nmi,nm->ni", w, phi, z)
    count = rng.integers(4, 40, size=n)
    kind = _kinds(n)
    a[kind == 1] = 0.0                                 # no neighbours at all: the ridge alone
    rhs[kind == 1] = 0.0
    a[kind == 2] *= 1e-30                              # sums of almost nothing
    a[kind == 3, 0, 0] = np.nan                        # a non-finite sum: no fit
    rhs[kind == 4, 2] = np.inf
    ridge = 1e-9 * 1e-12                               # a singular system, enough pairs: the
    a[kind == 5] = 0.0                                 # ridge (1e-9 x the trace, at least
    a[kind == 5, 0, 0] = -ridge                        # 1e-12) cancels the one entry left
    count[(kind >= 5) & (count < 8)] = 30
    a[kind == 6] = np.eye(5)                           # an umbilic point: z = 0.1 (x^2 + y^2)
    rhs[kind == 6] = [0.1, 0.0, 0.1, 0.0, 0.0]
    a[kind == 7] = np.eye(5)                           # a steep graph (|grad| = 50)
    rhs[kind == 7] = [0.02, -0.01, 0.03, 40.0, -30.0]
    return a, rhs, count


def _kinds(n):
    """Each row's case in _systems: 0 a fit as made, 1 to 7 the special cases (every 10th row
    one of them, in turn)."""
    kind = np.zeros(n, dtype=np.int64)
    kind[::10] = 1 + (np.arange(len(kind[::10])) % 7)
    return kind


def _kernel(a, rhs, count, min_neighbours, normals, e1, e2):
    n = len(count)
    out = (np.empty(n), np.empty(n), np.empty((n, 3)), np.empty((n, 3)))
    kernel.principal_from_equations(np.ascontiguousarray(a), np.ascontiguousarray(rhs),
                                    np.ascontiguousarray(count, dtype=np.int64), min_neighbours, normals, e1, e2, *out)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_kernel_matches_twin(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    normals, e1, e2 = _frames(rng, n)
    a, rhs, count = _systems(rng, n)
    got = _kernel(a, rhs, count, 8, normals, e1, e2)
    want = curvature.principal_from_equations_reference(a, rhs, count, 8, normals, e1, e2)
    for g, w in zip(got, want):
        assert _same(g, w)
    k1, k2 = got[:2]
    assert np.all(np.isfinite(k1)) and np.all(np.isfinite(k2)) and np.all(k1 >= k2)
    assert np.all(k1[count < 8] == 0.0) and np.all(k2[count < 8] == 0.0)
    kind = _kinds(n)
    none = (count < 8) | np.isin(kind, [3, 4, 5])      # too few pairs, non-finite sums, singular
    assert none.sum() > n // 10
    assert np.all(k1[none] == 0.0) and np.all(k2[none] == 0.0) and np.allclose(got[2][none], e1[none], rtol=0, atol=1e-15)
    assert np.all(k1[~none & (kind == 0)] != 0.0)
    assert np.allclose(k1[kind == 6], -0.2 / (1.0 + 5e-9)) and np.allclose(k2[kind == 6], -0.2 / (1.0 + 5e-9))
    # unit directions, d2 = normal x d1
    assert np.allclose(np.linalg.norm(got[2], axis=1), 1.0)
    assert np.allclose(got[3], np.cross(normals, got[2]))


def _lapack(a, rhs, count, min_neighbours, e1, e2):
    """The fit as principal_curvatures solved it before stop 20: LAPACK's solve and eig."""
    n = len(count)
    ok = count >= min_neighbours
    a = a + (1e-9 * np.maximum(np.trace(a, axis1=1, axis2=2), 1e-12))[:, None, None] * np.eye(5)
    coef = np.zeros((n, 5))
    coef[ok] = np.linalg.solve(a[ok], rhs[ok][..., None])[..., 0]
    ca, cb, cc, cd, ce = coef.T
    first = np.stack([np.stack([1 + cd * cd, cd * ce], 1), np.stack([cd * ce, 1 + ce * ce], 1)], 1)
    second = np.stack([np.stack([2 * ca, cb], 1), np.stack([cb, 2 * cc], 1)], 1)
    second /= np.sqrt(1.0 + cd * cd + ce * ce)[:, None, None]
    eigval, eigvec = np.linalg.eig(np.linalg.solve(first, second))
    kappa = -eigval.real
    order = np.argsort(-kappa, axis=1)
    kappa = kappa[np.arange(n)[:, None], order]
    first_dir = eigvec.real[np.arange(n), :, order[:, 0]]
    d1 = first_dir[:, 0:1] * e1 + first_dir[:, 1:2] * e2
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    return np.where(ok, kappa[:, 0], 0.0), np.where(ok, kappa[:, 1], 0.0), d1


@pytest.mark.parametrize("seed", range(3))
def test_twin_matches_lapack(seed):
    rng = np.random.default_rng(100 + seed)
    n = 3000
    normals, e1, e2 = _frames(rng, n)
    a, rhs, count = _systems(rng, n)
    # LAPACK refuses these (NaN, inf, singular; sums of almost nothing fit a graph so steep
    # that E G - F^2 cancels in the old 2 x 2 solve)
    good = ~np.isin(_kinds(n), [2, 3, 4, 5])
    a, rhs, count, normals, e1, e2 = a[good], rhs[good], count[good], normals[good], e1[good], e2[good]
    k1, k2, d1, _ = curvature.principal_from_equations_reference(a, rhs, count, 8, normals, e1, e2)
    l1, l2, ld1 = _lapack(a, rhs, count, 8, e1, e2)
    scale = np.maximum(np.abs(l1), np.abs(l2)) + 1e-12
    assert np.all(np.abs(k1 - l1) <= 1e-8 * scale)
    assert np.all(np.abs(k2 - l2) <= 1e-8 * scale)
    # the direction where the two curvatures are apart (at an umbilic any is right)
    apart = (l1 - l2) > 1e-6 * scale
    assert apart.sum() > 0.9 * len(l1) - 200
    assert np.all(np.abs(np.einsum("ij,ij->i", d1[apart], ld1[apart])) > 1.0 - 1e-9)


def test_by_hand():
    """Graphs over the frame (e1, e2, n) = (x, y, z), the normal equations the identity (so
    the fit is rhs, less the ridge's 5e-9 share)."""
    normals = np.array([[0.0, 0.0, 1.0]] * 4)
    e1 = np.array([[1.0, 0.0, 0.0]] * 4)
    e2 = np.array([[0.0, 1.0, 0.0]] * 4)
    rhs = np.array([
        [-0.05, 0.0, -0.01, 0.0, 0.0],    # z = -0.05 x^2 - 0.01 y^2: convex, k1 = 0.1 along x, k2 = 0.02 along y
        [0.0, 0.0, 0.04, 0.0, 0.0],       # z = 0.04 y^2: concave across y: k1 = 0 along x, k2 = -0.08 along y
        [-0.03, 0.04, -0.03, 0.0, 0.0],   # a cap turned 45 deg: Hessian [[-0.06, 0.04], [0.04, -0.06]]
        [0.0, 0.0, 0.0, 0.0, 0.0],        # a plane
    ])
    a = np.repeat(np.eye(5)[None], 4, axis=0)
    count = np.array([20, 20, 20, 20])
    k1, k2, d1, d2 = _kernel(a, rhs, count, 8, normals, e1, e2)
    shrink = 1.0 / (1.0 + 5e-9)
    assert k1 == pytest.approx([0.1 * shrink, 0.0, 0.1 * shrink, 0.0], abs=1e-15)
    assert k2 == pytest.approx([0.02 * shrink, -0.08 * shrink, 0.02 * shrink, 0.0], abs=1e-15)
    assert abs(d1[0] @ [1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert abs(d1[1] @ [1.0, 0.0, 0.0]) == pytest.approx(1.0)
    # the turned cap: eigenvalues -0.06 -+ 0.04, the larger curvature 0.1 along x = -y
    assert abs(d1[2] @ [np.sqrt(0.5), -np.sqrt(0.5), 0.0]) == pytest.approx(1.0)
    assert np.array_equal(d1[3], [1.0, 0.0, 0.0]) and np.array_equal(d2[3], [0.0, 1.0, 0.0])
    # too few neighbours: no fit
    k1, k2, d1, _ = _kernel(a, rhs, np.array([7, 7, 7, 7]), 8, normals, e1, e2)
    assert np.all(k1 == 0.0) and np.all(k2 == 0.0) and np.allclose(d1, e1, rtol=0, atol=1e-15)


def test_shapes_are_checked():
    a, rhs, count = np.zeros((3, 5, 5)), np.zeros((3, 5)), np.zeros(3, dtype=np.int64)
    f = np.zeros((3, 3))
    with pytest.raises(ValueError, match="must agree"):
        kernel.principal_from_equations(a, rhs, count, 8, f, f, f, np.empty(2), np.empty(3), np.empty((3, 3)),
                                        np.empty((3, 3)))


def test_default_face_matches_twin(default_face):
    """On the bundled face's own fits (5 mm radius), the kernel equals its twin."""
    v, normals = default_face.vertices, default_face.normals
    e1, e2 = curvature.tangent_frames(normals)
    i, j = curvature.neighbour_pairs(v, curvature.voxel_subsample(v, 5.0 / 3.0), 5.0)
    a, rhs, count = kernel.quadric_normal_equations(v, normals, e1, e2, np.ascontiguousarray(i),
                                                    np.ascontiguousarray(j), 2.5, len(v))
    got = _kernel(a, rhs, count, 8, normals, e1, e2)
    want = curvature.principal_from_equations_reference(a, rhs, count, 8, normals, e1, e2)
    for g, w in zip(got, want):
        assert _same(g, w)
    c = curvature.principal_curvatures(v, normals, 5.0)
    assert np.array_equal(c.k1, got[0]) and np.array_equal(c.d2, got[3])
