"""The compiled normal curvatures (coverage._ext.curvature.normal_curvature and
path_normal_curvatures) against their NumPy twins, bit for bit and sign of zero too, on
seeded random curvatures and directions (zero, axis-aligned and non-finite ones included),
and on a hand-worked case."""
from types import SimpleNamespace

import numpy as np
import pytest

from coverage import roller
from coverage.curvature import Curvature, normal_curvature_reference


def _same(a, b):
    finite = np.isfinite(a) & np.isfinite(b)
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
            and np.array_equal(np.signbit(a[finite]), np.signbit(b[finite])))


def _curvature(rng, n):
    k1 = rng.normal(scale=0.05, size=n)
    k2 = np.minimum(k1, rng.normal(scale=0.05, size=n))
    d1 = rng.normal(size=(n, 3))
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    d2 = rng.normal(size=(n, 3))
    d1[::7] = [1.0, 0.0, 0.0]
    d2[::7] = [0.0, -0.0, 1.0]
    k1[3::11] = 0.0
    k2[4::13] = -0.0
    d1[5::17] = 0.0                       # no direction: the curvature reads 0
    d2[5::17] = 0.0
    k1[6::19] = np.nan                    # a fit that did not solve
    d2[8::23, 1] = np.inf
    return Curvature(k1, k2, d1, d2, 5.0)


def _directions(rng, m):
    t = rng.normal(size=(m, 3)) * rng.choice([1e-3, 1.0, 1e3], size=(m, 1))
    t[::5] = [0.0, 1.0, 0.0]
    t[1::9] = [-0.0, 0.0, -1.0]
    t[2::11] = 0.0
    t[3::37] = np.nan
    return t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normal_curvature_matches_reference(seed):
    rng = np.random.default_rng(seed)
    curv = _curvature(rng, 300)
    for m in (0, 1, 2, 3, 5, 17, 2000):
        vertex = rng.integers(0, 300, m)
        direction = _directions(rng, m)
        with np.errstate(invalid="ignore", over="ignore"):
            out = curv.normal_curvature(vertex, direction)
            ref = normal_curvature_reference(curv, vertex, direction)
        assert _same(out, ref)
    # another layout of the directions (einsum sums it in another order): left to the twin
    direction = np.asfortranarray(_directions(rng, 400))
    vertex = rng.integers(0, 300, 400)
    with np.errstate(invalid="ignore", over="ignore"):
        assert _same(curv.normal_curvature(vertex, direction), normal_curvature_reference(curv, vertex, direction))
        assert _same(curv.normal_curvature(vertex[::2], direction[::2]),
                     normal_curvature_reference(curv, vertex[::2], direction[::2]))


def test_normal_curvature_by_hand():
    # k1 = 0.1 along x, k2 = -0.02 along y: at 45 degrees (1, 1, 5) (its normal part is not
    # read) c1 = c2 = 1, so (0.1 - 0.02) / 2; along y alone k2; a direction along the
    # normal reads 0
    curv = Curvature(np.array([0.1]), np.array([-0.02]), np.array([[1.0, 0.0, 0.0]]),
                     np.array([[0.0, 1.0, 0.0]]), 5.0)
    out = curv.normal_curvature(np.zeros(3, dtype=np.int64), np.array([[1.0, 1.0, 5.0], [0.0, 2.0, 0.0],
                                                                       [0.0, 0.0, 1.0]]))
    assert out.tolist() == [(0.1 - 0.02) / 2, -0.02, 0.0]


def _lifted(rng, n, m):
    """A lift's arrays (C-contiguous): unit normals, barycentrics summing to one, triangles
    with some off the chart (NaN point and normal, zero barycentrics)."""
    tri = rng.integers(-1, m, n)
    bary = rng.dirichlet([1.0, 1.0, 1.0], n)
    bary[::9] = [1.0, 0.0, 0.0]
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = np.cumsum(rng.normal(size=(n, 3)), axis=0)
    off = tri < 0
    bary[off] = 0.0
    normals[off] = np.nan
    points[off] = np.nan
    points[4::31] = points[3::31][:len(points[4::31])]     # a repeated point: no travel
    return SimpleNamespace(tri=tri, bary=bary, normals=normals, points=points, inside=~off)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_path_curvatures_match_reference(seed):
    rng = np.random.default_rng(seed)
    nv, m = 300, 500
    curv = _curvature(rng, nv)
    face = SimpleNamespace(faces=rng.integers(0, nv, (m, 3)))
    for n in (0, 1, 2, 3, 8, 1500):
        lifted = _lifted(rng, n, m)
        cuts = np.sort(rng.choice(np.arange(1, max(n, 1)), size=min(4, max(n - 1, 0)), replace=False))
        starts = np.concatenate([[0], cuts, [n]]).astype(np.int64)
        for s in (None, starts):
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                if s is None and n < 2:
                    continue                  # np.gradient needs two samples
                out = roller.path_curvatures(face, curv, None, lifted, s)
                ref = roller.path_curvatures_reference(face, curv, None, lifted, s)
            assert _same(out[0], ref[0]) and _same(out[1], ref[1]) and np.array_equal(out[2], ref[2])


def test_path_curvatures_on_the_default_face(default_face):
    rng = np.random.default_rng(4)
    curv = default_face.curvature(10.0)
    lo, hi = default_face.uv.min(axis=0), default_face.uv.max(axis=0)
    uv = np.cumsum(rng.normal(scale=0.7, size=(3000, 2)), axis=0) % (hi - lo) + lo
    starts = np.array([0, 10, 11, 1200, 3000], dtype=np.int64)
    lifted = default_face.lift(uv)
    out = roller.path_curvatures(default_face, curv, uv, lifted, starts)
    ref = roller.path_curvatures_reference(default_face, curv, uv, lifted, starts)
    assert lifted.inside.any() and not lifted.inside.all()
    assert _same(out[0], ref[0]) and _same(out[1], ref[1])
    # a stand-in curvature (not a Curvature) is asked through its own method
    stand_in = SimpleNamespace(normal_curvature=curv.normal_curvature)
    alt = roller.path_curvatures(default_face, stand_in, uv, lifted, starts)
    assert _same(alt[0], ref[0]) and _same(alt[1], ref[1])
