"""chart.pseudo_inverses: the chart Jacobians' pseudo-inverses in closed form where the
triangle is not collapsed, NumPy's SVD pinv where it is; row by row."""
import numpy as np

from coverage import chart


def test_closed_form_matches_svd(default_face):
    jac = default_face.jacobian
    got = chart.pseudo_inverses(jac)
    want = np.linalg.pinv(jac)
    scale = np.abs(want).max(axis=(1, 2), keepdims=True)
    assert np.all(np.abs(got - want) <= 1e-13 * scale)
    # the inverse on the triangle's plane: pinv(J) J = I
    assert np.allclose(got @ jac, np.eye(2), atol=1e-12)


def test_random_and_degenerate():
    rng = np.random.default_rng(5)
    jac = rng.normal(size=(500, 3, 2)) * rng.choice([1e-3, 1.0, 1e3], size=(500, 1, 1))
    jac[::7, :, 1] = 2.5 * jac[::7, :, 0]                       # collapsed: parallel columns
    jac[1::11] = 0.0                                            # a point
    jac[2::13, :, 1] = jac[2::13, :, 0] * (1.0 + 1e-9)          # nearly parallel: the SVD's way
    jac[3::17, 1, 0] = np.nan
    jac[4::19, 2, 1] = np.inf
    got = chart.pseudo_inverses(jac)
    bad = ~np.isfinite(jac).all(axis=(1, 2))
    assert np.isnan(got[bad]).all()
    want = np.linalg.pinv(jac[~bad])
    scale = np.abs(want).max(axis=(1, 2), keepdims=True) + 1e-300
    assert np.all(np.abs(got[~bad] - want) <= 1e-12 * scale)
    # collapsed ones take NumPy's own answer (its rank cut), bit for bit
    flat = np.zeros(len(jac), dtype=bool)
    flat[::7] = flat[1::11] = flat[2::13] = True
    flat &= ~bad
    assert np.array_equal(got[flat], np.linalg.pinv(jac[flat]))


def test_far_ends_of_the_floats():
    """Columns so small or large that the closed form's products leave the floats take the SVD."""
    jac = np.array([[[1e-160, 0.0], [0.0, 2e-160], [0.0, 0.0]], [[1e160, 0.0], [0.0, 3e160], [0.0, 0.0]]])
    got = chart.pseudo_inverses(jac)
    assert np.isfinite(got).all()
    assert np.array_equal(got, np.linalg.pinv(jac))


def test_rows_are_their_own():
    rng = np.random.default_rng(6)
    jac = rng.normal(size=(300, 3, 2))
    jac[::5, :, 1] = jac[::5, :, 0]
    whole = chart.pseudo_inverses(jac)
    pick = rng.permutation(300)[:77]
    assert np.array_equal(chart.pseudo_inverses(jac[pick]), whole[pick], equal_nan=True)


def test_by_hand():
    # columns (2, 0, 0) and (0, 0, 4): the inverse scales back, 1/2 and 1/4, on their axes
    jac = np.array([[[2.0, 0.0], [0.0, 0.0], [0.0, 4.0]]])
    assert np.array_equal(chart.pseudo_inverses(jac), [[[0.5, 0.0, 0.0], [0.0, 0.0, 0.25]]])
