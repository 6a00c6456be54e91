"""Kernels that share their passes agree with each other bit for bit: the fit's objective
and the band gradient pull the shortfall back through the same window spread and A^T
(density.pyx), so at the density the objective computes for weights x the band gradient is
the objective's gradient exactly. Each kernel against its NumPy reference: test_pen_fit.py,
test_density.py, test_pen_kernel.py, test_pen_speed2_fired.py, test_proximity.py and
test_moves_speed_proximity.py."""
import numpy as np
import pytest

from coverage import pen_fit
from test_pen_fit import _random_fit_problem


@pytest.mark.parametrize("counts", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (23, 31), (97, 130)])
def test_band_gradient_is_the_fit_objectives_gradient_at_its_density(rng, shape, counts):
    h, w = shape
    for _ in range(3):
        m = int(rng.integers(1, 80))
        grid, targets, base, spread = _random_fit_problem(rng, h, w, m, "csc", counts)
        objective = pen_fit.FitObjective(grid, targets, base, spread)
        gradient = pen_fit.BandGradient(grid, targets, spread)
        assert objective.compiled and gradient.compiled
        op = pen_fit.WindowedDose(grid)
        for x in (np.zeros(m), rng.random(m) * 30, np.where(rng.random(m) > 0.5, 1.0, 0.0)):
            # base + A x as the objective adds it: scipy's CSC product, then the base
            d = op.density((base.ravel() + spread @ x).reshape(h, w))
            _, grad = objective(x)
            np.testing.assert_array_equal(gradient(d), grad)
