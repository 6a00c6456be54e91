"""The pen fit's quasi-Newton step, compiled (coverage.density: lbfgs_direction,
projected_step, step_pair) against its NumPy twins in coverage.pen_fit, a case
worked by hand, the fixed order of its sums, and the ring of pairs the fit keeps."""
import numpy as np
import pytest

from coverage import pen_fit


def _problem(rng, m, n_pairs, negative=0):
    """Weights in [0, hi] with some on each bound, a gradient, and pairs (s, y) oldest first
    (``negative`` of them with s . y < 0 on every restriction: y = -s)."""
    hi = rng.uniform(0.5, 2.0, m)
    x = np.clip(rng.uniform(-0.5, 1.5, m) * hi, 0.0, hi)
    g = rng.normal(size=m)
    # the first weight held at 0, the second at its bound (their gradients push out of the box)
    x[0], g[0] = 0.0, abs(g[0])
    if m > 1:
        x[1], g[1] = hi[1], -abs(g[1])
    pairs = []
    for k in range(n_pairs):
        s = rng.normal(size=m) * 0.1
        y = -s if k < negative else s * rng.uniform(0.5, 2.0, m) + 0.01 * rng.normal(size=m)
        pairs.append((s, y))
    return x, g, hi, pairs


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("m", [1, 3, 4, 7, 1001])
@pytest.mark.parametrize("n_pairs,negative", [(0, 0), (1, 0), (3, 1), (5, 0), (5, 5)])
def test_direction_kernel_equals_its_numpy_twin(seed, m, n_pairs, negative):
    rng = np.random.default_rng(1000 * seed + m)
    x, g, hi, pairs = _problem(rng, m, n_pairs, negative)
    d, slope = pen_fit._lbfgs_direction(x, g, hi, pairs)
    ref, ref_slope = pen_fit._lbfgs_direction_reference(x, g, hi, pairs)
    np.testing.assert_allclose(d, ref, rtol=1e-11, atol=1e-12 * np.abs(ref).max(initial=1.0))
    assert slope == pytest.approx(ref_slope, rel=1e-10, abs=1e-12 * np.abs(g).sum() * np.abs(ref).max(initial=1.0))
    assert slope <= 0     # a descent direction (or none)
    held = ((x <= 0) & (g > 0)) | ((x >= hi) & (g < 0))
    assert (d[held] == 0).all()
    # from the ring the fit keeps, the same step
    ring = pen_fit._Pairs(m)
    for s, y in pairs:
        ring.s[ring.spare], ring.y[ring.spare] = s, y
        if np.dot(s, y) > 0:       # the pairs the fit would keep
            ring.add(x + s, x, g + y, g)
    kept = [(s, y) for s, y in pairs if np.dot(s, y) > 0][-pen_fit.FIT_MEMORY:]
    np.testing.assert_allclose(pen_fit._lbfgs_direction(x, g, hi, ring)[0],
                               pen_fit._lbfgs_direction_reference(x, g, hi, kept)[0], rtol=1e-11,
                               atol=1e-12 * np.abs(ref).max(initial=1.0))


def test_direction_of_one_pair_by_hand():
    # x = (0.5, 0.5) free in [0, 1], g = (1, 2), one pair s = (1, 0), y = (2, 0):
    # s . y = 2, a = s . (-g) / 2 = -1/2, q = -g - a y = (0, -2); scaled by s.y / y.y = 1/2:
    # (0, -1); then b = y . q / 2 = 0 and q += (a - b) s = (-1/2, -1): -H g for the BFGS
    # matrix with curvature 2 along s and 1 / 0.5 across it
    d, slope = pen_fit._lbfgs_direction(np.array([0.5, 0.5]), np.array([1.0, 2.0]), np.ones(2),
                                        [(np.array([1.0, 0.0]), np.array([2.0, 0.0]))])
    assert np.array_equal(d, np.array([-0.5, -1.0]))
    assert slope == -2.5       # g . d = 1 x -0.5 + 2 x -1


def test_a_pair_is_left_out_where_its_restricted_curvature_is_not_positive():
    # the second weight is held at 0 (g > 0): restricted to the first, s . y = 1 * -1 < 0,
    # so the pair is dropped and the step is the scaled projected gradient
    x, g, hi = np.array([0.5, 0.0]), np.array([1.0, 1.0]), np.ones(2)
    pair = [(np.array([1.0, 1.0]), np.array([-1.0, 5.0]))]
    d, _ = pen_fit._lbfgs_direction(x, g, hi, pair)
    # clip(x - g, 0, 1) - x = (-0.5, 0): largest move 0.5, so the step is -g / 0.5 on the free one
    assert np.array_equal(d, np.array([-2.0, 0.0]))
    assert np.array_equal(d, pen_fit._lbfgs_direction_reference(x, g, hi, pair)[0])


def _four_lanes(a, b):
    """sum of a_i b_i as the kernels take it: elements i, i + 4, ... on lane i % 4, the last
    n % 4 on lane 0, then (lane 0 + lane 1) + (lane 2 + lane 3)."""
    lanes = [0.0, 0.0, 0.0, 0.0]
    n = len(a)
    whole = n - n % 4
    for i in range(whole):
        lanes[i % 4] += float(a[i]) * float(b[i])
    for i in range(whole, n):
        lanes[0] += float(a[i]) * float(b[i])
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])


@pytest.mark.parametrize("n", [1, 4, 10, 4099])
def test_sums_go_in_four_lanes_in_a_fixed_order(n):
    # values over sixteen orders of magnitude: another order of the sum gives another result
    rng = np.random.default_rng(n)
    x_new, x = rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, n), np.zeros(n)
    g_new, g = rng.normal(size=n), np.zeros(n)
    s, y = np.empty(n), np.empty(n)
    assert pen_fit._step_pair(x_new, x, g_new, g, s, y) == _four_lanes(x_new, g_new)
    # the step's slope: with no pair and every weight free, q = -g / max |clip(x - g) - x|
    hi = np.full(n, 1e9)
    x0 = np.full(n, 1e6)
    q, slope = pen_fit._lbfgs_direction(x0, x_new, hi, [])
    assert slope == _four_lanes(x_new, q)
    step, moved = pen_fit._projected_step(x0, g_new, x_new, hi, 1.0)
    assert moved == _four_lanes(x_new, step - x0)


@pytest.mark.parametrize("seed", range(4))
def test_projected_step_and_pair_equal_their_numpy_twins(seed):
    rng = np.random.default_rng(seed)
    m = 997
    x, g, hi, _ = _problem(rng, m, 0)
    d = rng.normal(size=m)
    for lam in (1.0, 0.25, 1e-7):
        out, moved = pen_fit._projected_step(x, d, g, hi, lam)
        ref, ref_moved = pen_fit._projected_step_reference(x, d, g, hi, lam)
        assert np.array_equal(out, ref)       # elementwise: the same operations
        assert moved == pytest.approx(ref_moved, rel=1e-10, abs=1e-14)
        assert (out >= 0).all() and (out <= hi).all()
    g_new = g + rng.normal(size=m)
    s, y, s_ref, y_ref = (np.empty(m) for _ in range(4))
    sy = pen_fit._step_pair(out, x, g_new, g, s, y)
    sy_ref = pen_fit._step_pair_reference(out, x, g_new, g, s_ref, y_ref)
    assert np.array_equal(s, s_ref) and np.array_equal(y, y_ref)
    assert sy == pytest.approx(sy_ref, rel=1e-10)


def test_the_ring_keeps_the_latest_pairs_in_order_and_never_overwrites_one_it_keeps():
    m = 4
    ring = pen_fit._Pairs(m, memory=3)
    x, g = np.zeros(m), np.zeros(m)
    for k in range(1, 6):
        step = np.full(m, float(k))
        ring.add(x + step, x, g + step, g)          # s . y = 4 k^2 > 0: kept
    assert [s[0] for s, _ in ring] == [3.0, 4.0, 5.0]
    assert [s[0] for s, _ in reversed(ring)] == [5.0, 4.0, 3.0]
    ring.add(x + 1.0, x, g - 1.0, g)                # s . y < 0: not kept, nothing lost
    assert [s[0] for s, _ in ring] == [3.0, 4.0, 5.0] and len(ring) == 3
    assert ring.spare not in ring.rows
    ring.add(x + 6.0, x, g + 6.0, g)
    assert [s[0] for s, _ in ring] == [4.0, 5.0, 6.0]
