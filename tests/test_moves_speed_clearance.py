"""signed_clearance, searched once without a bound on a coarser grid, reads exactly as the
original algorithm (a search bounded by ``reach`` per distinct reach on the face's own grid,
then an unbounded one for what it did not find), kept here as the reference."""
import numpy as np
import pytest

from coverage import proximity
from coverage.plan import _air_grid, signed_clearance


def signed_clearance_reference(face, points, reach=np.inf):
    """The algorithm as it was (and as relift and the moves were first built with)."""
    if np.ndim(reach) == 0:
        tri, bary, dist = proximity.closest_points(face.surface_grid, points, max_dist=reach)
    else:
        reach = np.asarray(reach, dtype=np.float64)
        tri, bary, dist = np.empty(len(points), np.int64), np.empty((len(points), 3)), np.empty(len(points))
        for r in np.unique(reach):
            mine = reach == r
            tri[mine], bary[mine], dist[mine] = proximity.closest_points(face.surface_grid, points[mine],
                                                                         max_dist=float(r))
    far = tri < 0
    if far.any():
        tri[far], bary[far], dist[far] = proximity.closest_points(face.surface_grid, points[far])
    closest = np.einsum("kj,kjd->kd", bary, face.vertices[face.faces[np.maximum(tri, 0)]])
    normal = np.einsum("kj,kjd->kd", bary, face.normals[face.faces[np.maximum(tri, 0)]])
    side = np.sign(np.einsum("ij,ij->i", points - closest, normal))
    signed = np.where(side < 0, -dist, dist)
    return np.where(far & (signed > 0), np.inf, signed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_signed_clearance_equals_the_original(default_face, seed):
    rng = np.random.default_rng(seed)
    n = 3000
    points = default_face.vertices[rng.choice(len(default_face.vertices), n)] + rng.normal(0.0, 8.0, (n, 3))
    points[:5] = np.nan
    reach = rng.choice([0.5, 2.0, 4.0, 11.0, 30.0, np.inf], size=n)
    got = signed_clearance(default_face, points, reach)
    assert np.array_equal(got, signed_clearance_reference(default_face, points, reach), equal_nan=True)
    for r in (4.0, np.inf):
        assert np.array_equal(signed_clearance(default_face, points, r),
                              signed_clearance_reference(default_face, points, r), equal_nan=True)
    assert np.isinf(got).any() and (got < 0).any() and ((got > 0) & np.isfinite(got)).any()


def test_points_at_exactly_the_reach(default_face, rng):
    """Distances within rounding of the reach: settled as the bounded search settles them."""
    grid = _air_grid(default_face)
    points = default_face.vertices[rng.choice(len(default_face.vertices), 200)] + rng.normal(0.0, 5.0, (200, 3))
    _, _, dist = proximity.closest_points(grid, points)
    for reach in (dist, np.nextafter(dist, np.inf), np.nextafter(dist, -np.inf)):
        assert np.array_equal(signed_clearance(default_face, points, reach),
                              signed_clearance_reference(default_face, points, reach))


def test_the_air_grid_finds_what_the_face_grid_finds(default_face, rng):
    points = default_face.vertices[rng.choice(len(default_face.vertices), 2000)] + rng.normal(0.0, 10.0, (2000, 3))
    for a, b in zip(proximity.closest_points(_air_grid(default_face), points),
                    proximity.closest_points(default_face.surface_grid, points)):
        assert np.array_equal(a, b)
