"""The threaded kernels give the same results, bit for bit, on any number of threads."""
import importlib

import numpy as np
import pytest

from coverage import lifting, pen_fit
from coverage._ext import density as density_kernel
from coverage._ext import lift as lift_kernel

from test_pen_fit import _random_fit_problem


@pytest.fixture
def threads():
    """Set a module's forced thread count, restored after the test."""
    changed = []

    def force(module, n):
        changed.append((module, module.get_threads() if hasattr(module, "get_threads") else 0))
        module.set_threads(n)

    yield force
    for module, n in reversed(changed):
        module.set_threads(n)


@pytest.mark.parametrize("shape", [(97, 130), (160, 61)])
def test_fit_objective_and_band_gradient_do_not_depend_on_threads(rng, threads, shape):
    h, w = shape
    for fmt in ("csc", "csr"):
        m = int(rng.integers(20, 300))
        grid, targets, base, spread = _random_fit_problem(rng, h, w, m, fmt, True)
        objective = pen_fit.FitObjective(grid, targets, base, spread)
        gradient = pen_fit.BandGradient(grid, targets, spread)
        for x in (rng.random(m), rng.random(m) * 30):
            d = rng.uniform(0, 400, h * w)
            got = []
            for n in (1, 2, 3, 5):
                threads(density_kernel, n)
                got.append((objective(x), gradient(d)))
            (v1, g1), b1 = got[0]
            for (v, g), b in got[1:]:
                assert v == v1
                np.testing.assert_array_equal(g, g1)
                np.testing.assert_array_equal(b, b1)


def test_interpolate_does_not_depend_on_threads(default_face, threads):
    face = default_face
    rng = np.random.default_rng(7)
    lo, hi = face.uv.min(axis=0), face.uv.max(axis=0)
    tri, bary = face.locate(rng.uniform(lo, hi, (40000, 2)))
    for values in (face.normals, face.vertices):
        got = []
        for n in (1, 2, 3):
            threads(lift_kernel, n)
            got.append(lifting.interpolate(values, face.faces, tri, bary, values is face.normals))
        for g in got[1:]:
            np.testing.assert_array_equal(g, got[0])
