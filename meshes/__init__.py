"""The bundled canonical face: MediaPipe canonical_face_model.obj (Apache-2.0) and its landmark loops. Data only."""
