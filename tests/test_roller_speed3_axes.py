"""roller.skin_directions keeps the direction-free axes of the face's own vertex normals
(made once per face and pose): equal to computing them afresh."""

import numpy as np

from coverage import roller


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
