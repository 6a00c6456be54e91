"""The repair's patch passes in one compiled call (StampEffects.patch_moves, the kernel
coverage._ext.density.repair_pass) against their NumPy twin (patch_moves_reference): the
same moves, stamps, blocks and densities bit for bit on seeded problems whose gradients tie,
small cases worked out by hand, and the bundled face's own repair."""
import importlib

import numpy as np
import pytest
from scipy import sparse

from coverage.face import Face

density_mod = importlib.import_module("coverage.density")
pen_fit = importlib.import_module("coverage.pen_fit")
plan_mod = importlib.import_module("coverage.plan")


def _problem(rng, h, w, m, most=4):
    """A StampEffects over whole counts, its WindowStamps, and a density (h * w,)."""
    half_u = rng.integers(0, most, h * w)
    half_v = rng.integers(0, most, h * w)
    # bands a few punctures wide and densities around them: drops, adds and shifts all have
    # something to mend (texels that never count, no floor or no cap among them)
    per_count = np.where(rng.random(h * w) > 0.2, rng.random(h * w) * 5, 0.0)
    low = np.where(rng.random(h * w) > 0.1, rng.random(h * w) * 30 + 20, 0.0)
    high = np.where(rng.random(h * w) > 0.1, low * (1.25 + 0.35 * rng.random(h * w)), np.inf)
    stamps = sparse.random(h * w, m, density=min(1.0, 4.0 / (h * w)), random_state=rng,
                           data_rvs=lambda k: rng.integers(1, 4, k).astype(float)).tocsc()
    area = rng.random(h * w)

    def make():
        return density_mod.StampEffects(stamps, (h, w), per_count, half_u, half_v, low, high, area)

    windows = density_mod.WindowStamps(stamps.tocsr(), (h, w))
    return make, windows, np.maximum(low, 30.0) * rng.uniform(0.5, 1.4, h * w)


def _copy(state):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}


@pytest.mark.parametrize("shape", [(1, 9), (6, 11), (23, 30)])
@pytest.mark.parametrize("mode", ["drop", "add", "shift"])
def test_patch_moves_equal_their_twin_bit_for_bit(rng, shape, mode):
    h, w = shape
    made = 0
    for trial in range(8):
        m = int(rng.integers(2, 90))
        make, windows, d0 = _problem(rng, h, w, m, most=int(rng.integers(1, 5)))
        fire = rng.random(m) < rng.random()
        blocked = rng.random(m) < 0.2
        hit = None if trial % 3 == 0 else rng.random(h * w) < 0.15
        # gradients on a coarse lattice: many ties, which go to the earlier stamp
        grad = np.round(rng.normal(size=m) * 2) / 2
        if trial == 1:
            grad[:] = 0.0
        groups = np.sort(rng.integers(0, 4, m))
        steps = np.array([-2, -1, 1, 2])
        ks = rng.integers(0, h * w, int(rng.integers(0, 25)))
        tries = int(rng.choice([1, 3, 40]))
        runs = {}
        for name in ("kernel", "tracked twin", "plain twin"):
            effects = make()
            d = d0.copy()
            assert effects.track(d)
            f, b = fire.copy(), blocked.copy()
            args = (mode, ks, tries, f, b, hit, grad, windows, groups, steps)
            if name == "kernel":
                moved = effects.patch_moves(*args)
            elif name == "tracked twin":
                moved = effects.patch_moves_reference(*args)
            else:
                # the twin on a density the effects do not track: the plain kernels weigh it
                d = d0.copy()
                moved = effects.patch_moves_reference(*args, density=d)
            runs[name] = {"moved": moved, "fire": f, "blocked": b, "d": d}
        for name in ("tracked twin", "plain twin"):
            for key in ("moved", "fire", "blocked", "d"):
                np.testing.assert_array_equal(runs["kernel"][key], runs[name][key], err_msg=f"{name} {key}")
        moved = runs["kernel"]["moved"]
        made += int((moved >= 0).any(axis=1).sum())
        # each patch moves at most one stamp (two for a shift: the one it leaves, the one it takes)
        if mode == "drop":
            assert (moved[:, 1] == -1).all()
            assert not runs["kernel"]["fire"][moved[moved[:, 0] >= 0, 0]].any()
        elif mode == "add":
            assert (moved[:, 0] == -1).all()
            assert runs["kernel"]["fire"][moved[moved[:, 1] >= 0, 1]].all()
        else:
            shifted = moved[moved[:, 0] >= 0]
            assert (np.abs(shifted[:, 1] - shifted[:, 0]) <= 2).all()
            assert (groups[shifted[:, 0]] == groups[shifted[:, 1]]).all()
    assert made > 0     # the passes do move stamps here


def test_the_rooms_follow_the_kernels_moves(rng):
    # the tracked rooms after each pass are those of the density it leaves
    make, windows, d0 = _problem(rng, 17, 21, 70)
    effects, d = make(), d0.copy()
    assert effects.track(d)
    fire, blocked = rng.random(70) < 0.5, np.zeros(70, dtype=bool)
    made = 0
    for mode in ("drop", "add", "shift", "add"):
        moved = effects.patch_moves(mode, rng.integers(0, 17 * 21, 40), 40, fire, blocked, None, rng.normal(size=70),
                                    windows, np.repeat(np.arange(7), 10), np.array([-1, 1]))
        made += int((moved >= 0).any(axis=1).sum())
        for a, b in zip(effects._rooms, effects.rooms(d)):
            np.testing.assert_array_equal(a, b)
    assert made > 0


def _strip(n, half, stamps, per_count=20.0, low=90.0, high=122.5):
    """A 1 x n strip (windows of half texels either side), stamps ``{stamp: [texels]}``, one
    puncture each, the density of the fired ones tracked."""
    m = len(stamps)
    rows = [t for s in range(m) for t in stamps[s]]
    cols = [s for s in range(m) for _ in stamps[s]]
    spread = sparse.csc_array((np.ones(len(rows)), (rows, cols)), shape=(n, m))
    effects = density_mod.StampEffects(spread, (1, n), np.full(n, per_count), np.full(n, half), np.zeros(n),
                                       np.full(n, low), np.full(n, high), np.ones(n))
    return effects, density_mod.WindowStamps(spread.tocsr(), (1, n)), spread


def _windowed(spread, fire, n):
    """The strip's density (20 per cm^2 a puncture, windows of 3 texels) of the fired stamps."""
    ones = np.ones((1, n), dtype=np.int64)
    counts = (spread @ fire.astype(float)).reshape(1, n)
    return 20.0 * density_mod.window_sums(counts, ones, 0 * ones, ones.astype(bool)).ravel()


def test_a_drop_worked_by_hand_goes_to_the_earlier_of_two_equal_stamps():
    # 9 texels, each window the texel and its two neighbours (1 puncture = 20 per cm^2),
    # floor 90, mark 122.5. Stamps 0..8 one on each texel, stamps 9..12 four more on texel 4,
    # all fired: the windows of texels 3, 4 and 5 hold 2 + 5 = 7 punctures (140, over the
    # mark), those of 2 and 6 hold 3 (60). Dropping any of stamps 4, 9, 10, 11, 12 leaves 6
    # (120) in windows 3..5: three texels into band and off the mark, windows 2 and 6 not
    # touched. All five tie on both counts, and with the gradient tied as well the first in
    # stamp order goes: stamp 4.
    n = 9
    stamps = {s: [s] for s in range(9)}
    stamps.update({9: [4], 10: [4], 11: [4], 12: [4]})
    effects, windows, spread = _strip(n, 1, stamps)
    fire = np.ones(13, dtype=bool)
    d = _windowed(spread, fire, n)
    np.testing.assert_array_equal(d[2:7], [60.0, 140.0, 140.0, 140.0, 60.0])
    assert effects.track(d)
    grad = np.zeros(13)
    moved = effects.patch_moves("drop", [4], 40, fire, np.zeros(13, dtype=bool), None, grad, windows)
    assert moved.tolist() == [[4, -1]]
    np.testing.assert_array_equal(d[3:6], [120.0, 120.0, 120.0])
    # the gradient decides first: the drops weigh the largest gradients first; with stamp
    # 11's the largest and one try, stamp 11 goes
    grad[11] = 1.0
    fire[4] = True
    effects.apply(4, 1.0, d)
    moved = effects.patch_moves("drop", [4], 1, fire, np.zeros(13, dtype=bool), None, grad, windows)
    assert moved.tolist() == [[11, -1]] and not fire[11]


def test_an_add_worked_by_hand_blocks_what_would_go_over_and_skips_the_blocked():
    # 7 texels, windows of 3, floor 90, mark 122.5; stamps 0..6 one on each texel, 7 on
    # texel 3. Fired: 0, 1, 2, 4, 5, 6 and 7 (texel 3 holds stamp 7 only), so texels 2..4
    # hold 3 punctures (60: under the floor)... stamp 3 would bring them to 80. Stamp 8, on
    # texels 2 and 3 and 4 (3 punctures), would bring texel 3's window to 120 and texels 2
    # and 4 to 100+: it is weighed first (the gradient ranks it first) and taken, since it
    # brings 3 texels into band and lifts none over the mark.
    n = 7
    stamps = {s: [s] for s in range(7)}
    stamps.update({7: [3], 8: [2, 3, 4]})
    effects, windows, spread = _strip(n, 1, stamps)
    fire = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0], dtype=bool)
    d = _windowed(spread, fire, n)
    np.testing.assert_array_equal(d, [40.0, 60.0, 60.0, 60.0, 60.0, 60.0, 40.0])
    assert effects.track(d)
    grad = np.zeros(9)
    grad[8] = -1.0
    blocked = np.zeros(9, dtype=bool)
    moved = effects.patch_moves("add", [3], 40, fire, blocked, None, grad, windows)
    assert moved.tolist() == [[-1, 8]] and fire[8]
    np.testing.assert_array_equal(d, [40.0, 80.0, 100.0, 120.0, 100.0, 80.0, 40.0])
    # now (windows 40, 80, 100, 120, 100, 80, 40) stamp 9 on texels 2..4 again and stamp 10
    # on texel 0. Texel 1's window (texels 0..2) holds stamps 0, 1, 2 and 8 (fired), 9 and
    # 10: stamp 9 would lift the windows of texels 2, 3, 4 to 140, 180, 140 (over): it is
    # blocked and not taken; stamp 10 lifts texel 0's window to 60 and texel 1's to 100
    # (into band, none over): taken
    stamps[9] = [2, 3, 4]
    stamps[10] = [0]
    effects, windows, spread = _strip(n, 1, stamps)
    fire = np.append(fire, [False, False])
    d = _windowed(spread, fire, n)
    assert effects.track(d)
    blocked = np.zeros(11, dtype=bool)
    before = fire.copy()
    moved = effects.patch_moves("add", [1], 40, fire, blocked, None, np.zeros(11), windows)
    assert moved.tolist() == [[-1, 10]]
    assert blocked.tolist() == [False] * 9 + [True, False]
    np.testing.assert_array_equal(d, [60.0, 100.0, 100.0, 120.0, 100.0, 80.0, 40.0])
    # a blocked stamp is not weighed again; a stamp touching hit is not weighed at all
    effects, windows, spread = _strip(n, 1, stamps)
    d = _windowed(spread, before, n)
    assert effects.track(d)
    blocked = np.zeros(11, dtype=bool)
    blocked[10] = True
    hit = np.zeros(n, dtype=bool)
    hit[[2, 3, 4]] = True
    moved = effects.patch_moves("add", [1], 40, before, blocked, hit, np.zeros(11), windows)
    assert moved.tolist() == [[-1, -1]] and blocked.tolist() == [False] * 10 + [True]
    # stamp 10 touching hit (texel 0), given as the (1, n) grid: not weighed either
    effects, windows, spread = _strip(n, 1, stamps)
    d = _windowed(spread, before, n)
    assert effects.track(d)
    hit = np.zeros((1, n), dtype=bool)
    hit[0, 0] = True
    blocked = np.zeros(11, dtype=bool)
    moved = effects.patch_moves("add", [1], 40, before.copy(), blocked, hit, np.zeros(11), windows)
    assert moved.tolist() == [[-1, -1]] and blocked.tolist() == [False] * 9 + [True, False]


def test_patch_moves_refuse_what_they_cannot_do(rng):
    make, windows, d0 = _problem(rng, 5, 6, 12)
    effects = make()
    fire, blocked = np.zeros(12, dtype=bool), np.zeros(12, dtype=bool)
    with pytest.raises(ValueError, match="not tracked"):
        effects.patch_moves("drop", [0], 4, fire, blocked, None, np.zeros(12), windows)
    d = d0.copy()
    assert effects.track(d)
    with pytest.raises(KeyError):
        effects.patch_moves("swap", [0], 4, fire, blocked, None, np.zeros(12), windows)
    with pytest.raises(ValueError, match="fire"):
        effects.patch_moves("drop", [0], 4, fire.astype(np.uint8), blocked, None, np.zeros(12), windows)
    with pytest.raises(ValueError, match="outside"):
        effects.patch_moves("drop", [30], 4, fire, blocked, None, np.zeros(12), windows)
    for moves in (effects.patch_moves, effects.patch_moves_reference):
        with pytest.raises(ValueError, match="tries = -1"):
            moves("add", [0], -1, fire, blocked, None, np.zeros(12), windows)
    with pytest.raises(ValueError, match="n_tries -1"):
        density_mod._kernel.repair_pass(1, np.zeros(1, dtype=np.int64), -1, np.zeros(0, dtype=np.int64),
                                        windows.indptr, windows.indices, fire.view(np.uint8), blocked.view(np.uint8),
                                        np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64), np.zeros(12),
                                        effects.indptr, effects.texels, effects.counts, effects.totals, d,
                                        effects.low, effects.high, effects.area, effects.per_count, effects.half_u,
                                        effects.half_v, effects._ext_u, effects._ext_v, effects._cap,
                                        *effects._rooms, 5, 6, np.empty((1, 2), dtype=np.int64))
    # no tries: nothing is weighed, nothing moves
    assert (effects.patch_moves("drop", [0, 1], 0, np.ones(12, dtype=bool), blocked, None, np.zeros(12),
                                windows) == -1).all()
    bad = density_mod.WindowStamps(sparse.csr_array(np.ones((30, 13))), (5, 6))
    with pytest.raises(ValueError, match="outside the 12 stamps"):
        effects.patch_moves("drop", [0], 4, fire, blocked, None, np.zeros(12), bad)
    assert effects.patch_moves("add", [], 4, fire, blocked, None, np.zeros(12), windows).shape == (0, 2)


def _bundled_repairs(monkeypatch) -> list:
    """The arguments ``[(args, kwargs)]`` (without the prepared parts) of every repair a
    one-thread plan of the bundled face makes."""
    seen = []
    real = pen_fit.repair

    def spy(*args, **kwargs):
        kwargs = dict(kwargs)
        kwargs.pop("parts", None)
        seen.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(pen_fit, "repair", spy)
    plan_mod.plan(Face.default(), threads=1)
    monkeypatch.setattr(pen_fit, "repair", real)
    assert seen
    return seen


def test_the_bundled_faces_repair_is_its_twins(monkeypatch):
    # the repair a plan of the bundled face makes, run again with the NumPy twin's passes:
    # the same stamps fire
    seen = _bundled_repairs(monkeypatch)
    real = pen_fit.repair
    for args, kwargs in seen:
        compiled = real(*args, **kwargs)
        twin = real(*args, **kwargs, compiled=False)
        assert compiled.sum() > 0 and compiled.tolist() != np.asarray(args[4]).tolist()
        np.testing.assert_array_equal(compiled, twin)


def test_a_round_after_one_that_moved_nothing_reads_the_density_as_it_was(monkeypatch):
    # the bundled face's repair stalls before it ends (a round with REPAIR_TRIES moves
    # nothing; one with REPAIR_TRIES_STALLED follows): that round's density is the one the
    # round before read, so its gradient and patches are not made again; every gradient
    # the repair asks for is of a density it has not asked about just before
    from coverage.density import StampEffects

    seen = _bundled_repairs(monkeypatch)
    real = pen_fit.repair
    densities, tries = [], []
    gradient, moves = pen_fit.BandGradient.__call__, StampEffects.patch_moves

    def gradient_of(self, d):
        densities.append(np.array(d, copy=True))
        return gradient(self, d)

    def moves_with(self, mode, ks, n, *rest, **kw):
        tries.append((mode, n))
        return moves(self, mode, ks, n, *rest, **kw)

    monkeypatch.setattr(pen_fit.BandGradient, "__call__", gradient_of)
    monkeypatch.setattr(StampEffects, "patch_moves", moves_with)
    args, kwargs = seen[0]
    got = real(*args, **kwargs)
    assert ("add", pen_fit.REPAIR_TRIES_STALLED) in tries          # it stalled
    assert len(densities) >= 3
    for a, b in zip(densities, densities[1:]):
        assert not np.array_equal(a, b)
    monkeypatch.undo()
    np.testing.assert_array_equal(got, real(*args, **kwargs, compiled=False))


@pytest.mark.parametrize("seed", range(6))
def test_patch_worst_equals_its_twin(seed):
    # seeded masks of every density over grids of every shape (empty ones too), badness
    # with ties, -0.0 beside 0.0 and NaN
    rng = np.random.default_rng(seed)
    for _ in range(150):
        h, w = (int(x) for x in rng.integers(0, 25, size=2))
        mask = rng.random(h * w) < rng.uniform(0.0, 0.9)
        badness = rng.integers(-2, 3, size=h * w).astype(float)
        if rng.random() < 0.4:
            badness[rng.random(h * w) < 0.25] = np.nan
        if rng.random() < 0.4:
            badness[badness == 0] = -0.0
        want = pen_fit.patch_worst_reference(mask, badness, (h, w))
        got = pen_fit.patch_worst(mask, badness, (h, w))
        assert got.dtype == np.int64 and np.array_equal(got, want)
        # a scratch given (dirty: it is read only where the mask is in) changes nothing
        assert np.array_equal(pen_fit.patch_worst(mask, badness, (h, w), np.full(h * w, 7, np.int64)), want)


@pytest.mark.parametrize("seed", range(4))
def test_patch_worst_equals_its_twin_on_sparse_wide_masks(seed):
    # the kernel passes over the texels out eight at a time: masks mostly out, on rows of
    # every width (a multiple of 8 or not), patches at row ends, in long stretches out and
    # on a grid's last texels
    rng = np.random.default_rng(100 + seed)
    for _ in range(60):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 300))
        mask = rng.random(h * w) < rng.choice([0.0005, 0.005, 0.03, 0.2])
        if rng.random() < 0.3:
            mask[rng.integers(0, h) * w + w - 1] = True          # a row's last texel
        if rng.random() < 0.3:
            mask[-int(rng.integers(1, 10)):] = True                # the grid's last texels
        if rng.random() < 0.3:
            mask[: int(rng.integers(0, h * w))] = False            # a long stretch out
        badness = rng.normal(size=h * w)
        badness[rng.random(h * w) < 0.1] = np.nan
        want = pen_fit.patch_worst_reference(mask, badness, (h, w))
        assert np.array_equal(pen_fit.patch_worst(mask, badness, (h, w), np.full(h * w, 3, np.int64)), want)


def test_patch_worst_by_hand():
    # 4 x 5 grid, flat index i * 5 + j:
    #   row 0: X X . . X      patches (8-connected, numbered by first texel in raster order):
    #   row 1: . . . X .      A = {0, 1}; B = {4, 8, 12, 13} (8 touches 4 diagonally, 12 and 13
    #   row 2: . . X X .      touch 8); C = {15}
    #   row 3: X . . . .
    mask = np.zeros(20, dtype=bool)
    mask[[0, 1, 4, 8, 12, 13, 15]] = True
    badness = np.zeros(20)
    badness[[0, 1]] = [1.0, 1.0]              # a tie: the first in raster order
    badness[[4, 8, 12, 13]] = [np.nan, 2.0, 5.0, 5.0]   # NaN below every number; a tie again
    badness[15] = np.nan                      # all NaN: the first
    for worst in (pen_fit.patch_worst, pen_fit.patch_worst_reference):
        assert worst(mask, badness, (4, 5)).tolist() == [0, 12, 15]
    assert pen_fit.patch_worst(np.zeros(20, bool), badness, (4, 5)).tolist() == []
    with pytest.raises(ValueError, match="must hold 4 x 5 texels"):
        pen_fit.patch_worst(mask[:-1], badness[:-1], (4, 5))
