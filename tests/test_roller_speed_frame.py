"""roller.skin_frame (compiled) against roller.skin_frame_reference (NumPy), bit for bit and
sign of zero too, on seeded random frames: Jacobians with zero and non-finite entries,
travel along the axes, samples off the chart."""
from types import SimpleNamespace

import numpy as np
import pytest

from coverage import chart, roller


def _face(rng, m):
    jac = rng.normal(size=(m, 3, 2))
    jac[::11] = 0.0                                  # collapsed: zero normal, pinv zero
    jac[3::17, :, 0] = 0.0
    jac[5::23] = np.nan                              # a scan's broken triangle
    jac[7::29, 1, 1] = np.inf
    with np.errstate(invalid="ignore"):
        normal = np.cross(jac[:, :, 0], jac[:, :, 1])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    pinv = np.full((m, 2, 3), np.nan)
    finite = np.isfinite(jac).all(axis=(1, 2))
    pinv[finite] = np.linalg.pinv(jac[finite])
    pinv[13::31] *= 1e3                              # beyond the frame's limit
    return SimpleNamespace(faces=np.zeros((m, 3), dtype=np.int64), jacobian=jac, jacobian_normal=normal,
                           jacobian_pinv=pinv)


def _same(a, b):
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
            and np.array_equal(np.signbit(a), np.signbit(b)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_skin_frame_matches_reference(seed):
    rng = np.random.default_rng(seed)
    face = _face(rng, 400)
    for trial in range(20):
        n = int(rng.integers(0, 900))
        tri = rng.integers(-1, 400, n)
        if trial % 3 == 0:
            tri = np.abs(tri)                        # every sample on the chart
        travel = rng.normal(size=(n, 2))
        travel /= np.maximum(np.linalg.norm(travel, axis=1, keepdims=True), 1e-12)
        travel[::5] = [1.0, 0.0]
        travel[1::7] = [-0.0, 1.0]
        travel[2::9] = [0.0, -1.0]
        travel[3::13] = 0.0
        scale = rng.uniform(0.3, 2.5, n)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            ref = roller.skin_frame_reference(face, tri, travel, scale)
            out = roller.skin_frame(face, tri, travel, scale)
        assert _same(out[0], ref[0]) and _same(out[1], ref[1])


def test_skin_frame_on_the_default_face(default_face):
    rng = np.random.default_rng(5)
    n = 5000
    tri = rng.integers(-1, len(default_face.faces), n)
    angle = rng.uniform(0, 2 * np.pi, n)
    travel = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    scale = rng.uniform(0.8, 1.2, n)
    ref = roller.skin_frame_reference(default_face, tri, travel, scale)
    out = roller.skin_frame(default_face, tri, travel, scale)
    assert _same(out[0], ref[0]) and _same(out[1], ref[1])
    with pytest.raises(ValueError, match="triangle"):
        roller.skin_frame(default_face, np.array([len(default_face.faces)]), travel[:1], scale[:1])


def test_jacobian_pinv_rows_are_the_faces(default_face):
    from coverage.face import Face

    face = Face(default_face.vertices.copy(), default_face.subdivisions)   # a face with no pinv yet
    assert "jacobian_pinv" not in vars(face)
    rng = np.random.default_rng(3)
    m = len(face.faces)
    for _ in range(4):
        tri = rng.integers(-1, m, 4000)
        pinv = roller.jacobian_pinv(face, tri)
        on = tri[tri >= 0]
        assert np.array_equal(pinv[on], default_face.jacobian_pinv[on])
    # a frame built on demand is the frame built from the whole
    tri = rng.integers(-1, m, 3000)
    angle = rng.uniform(0, 2 * np.pi, len(tri))
    travel = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    scale = rng.uniform(0.8, 1.2, len(tri))
    out = roller.skin_frame(face, tri, travel, scale)
    ref = roller.skin_frame_reference(default_face, tri, travel, scale)
    assert _same(out[0], ref[0]) and _same(out[1], ref[1])
    assert "jacobian_pinv" not in vars(face)


def test_jacobian_pinv_leaves_non_finite_triangles_nan():
    class Bare:
        pass

    rng = np.random.default_rng(4)
    face = Bare()
    face.faces = np.zeros((300, 3), dtype=np.int64)
    face.jacobian = rng.normal(size=(300, 3, 2))
    face.jacobian[::7] = np.nan
    face.jacobian[1::9, 0, 0] = np.inf
    finite = np.isfinite(face.jacobian).all(axis=(1, 2))
    whole = np.full((300, 2, 3), np.nan)
    whole[finite] = chart.pseudo_inverses(face.jacobian[finite])
    tri = rng.integers(-1, 300, 500)
    pinv = roller.jacobian_pinv(face, tri)
    on = tri[tri >= 0]
    assert np.array_equal(pinv[on], whole[on], equal_nan=True)
    assert np.isnan(roller.jacobian_pinv(face, np.array([0]))[0]).all()
