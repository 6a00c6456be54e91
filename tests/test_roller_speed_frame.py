"""roller.skin_frame (compiled) against roller.skin_frame_reference (NumPy), bit for bit and
sign of zero too, on seeded random frames: Jacobians with zero and non-finite entries,
travel along the axes, samples off the chart."""
from types import SimpleNamespace

import numpy as np
import pytest

from coverage import roller


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


def test_skin_frame_on_a_fresh_face(default_face):
    """A face whose pseudo-inverses are not made yet gives the frames of the face that has them."""
    from coverage.face import Face

    face = Face(default_face.vertices.copy(), default_face.subdivisions)
    assert "jacobian_pinv" not in vars(face)
    rng = np.random.default_rng(3)
    tri = rng.integers(-1, len(face.faces), 3000)
    angle = rng.uniform(0, 2 * np.pi, len(tri))
    travel = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    scale = rng.uniform(0.8, 1.2, len(tri))
    out = roller.skin_frame(face, tri, travel, scale)
    ref = roller.skin_frame_reference(default_face, tri, travel, scale)
    assert _same(out[0], ref[0]) and _same(out[1], ref[1])
    assert np.array_equal(face.jacobian_pinv, default_face.jacobian_pinv, equal_nan=True)
