"""roller.skin_directions keeps the direction-free axes of the face's own vertex normals
(made once per face and pose) and roller.jacobian_pinv finds the rows it still needs by
marking: both equal to computing everything afresh."""
import copy

import numpy as np

from coverage import chart, roller


def test_skin_directions_at_the_vertex_normals_equal_a_fresh_computation(default_face):
    face = default_face
    fresh = face.normals.copy()        # another array: not the face's own, never kept
    for theta in (0.0, 45.0, 90.0, 135.0, 17.5):
        kept = roller.skin_directions(face, theta, face.normals)
        again = roller.skin_directions(face, theta, face.normals)
        assert np.array_equal(kept, roller.skin_directions(face, theta, fresh))
        assert np.array_equal(again, kept)
    # a few other normals are not mixed up with the face's own
    some = face.normals[::7].copy()
    assert np.array_equal(roller.skin_directions(face, 30.0, some), roller.skin_directions(face, 30.0, fresh)[::7])


def test_jacobian_pinv_rows_equal_the_faces_own(default_face, rng):
    # a copy without the face's whole pseudo-inverse, so the rows are made as asked
    face = copy.copy(default_face)
    face.__dict__.pop("jacobian_pinv", None)
    m = len(face.faces)
    ref = chart.pseudo_inverses(face.jacobian)
    for _ in range(3):
        tri = rng.integers(-1, m, 500)
        tri[:20] = tri[20]            # repeats
        got = roller.jacobian_pinv(face, tri)
        rows = tri[tri >= 0]
        assert np.array_equal(got[rows], ref[rows], equal_nan=True)
