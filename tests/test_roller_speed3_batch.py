"""The roller's batched builders against building one item at a time: line_runs_many (every
sweep and family of a region and direction checked together) equals line_runs of each item,
Headland.runs_many equals Headland.runs of each sweep, and plan._rigid_drum_runs_many equals
plan._rigid_drum_runs of each batch, on the default face's own sweeps."""
import copy
import importlib

import numpy as np

from coverage import Protocol, roller
from geometry_checks import assert_same_runs

plan_mod = importlib.import_module("coverage.plan")   # coverage.plan is also the function's name


def _same(a, b):
    assert_same_runs(a, b, ("uv", "swath_mm", "kappa_cross", "tri"))


def _setup(face, zones, region_index=0, direction=0):
    protocol = Protocol.default()
    clearance = roller.keepout_clearance(zones)
    region = roller.roller_regions(zones, protocol)[region_index]
    dose = protocol.zone(region.zones[0])
    drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
    theta = dose.directions_deg[direction]
    conform = roller.conformity(face, drum, theta)

    def families():
        out = [roller.ZoneSweeps(zones, region, drum, theta, conform, clearance)]
        out += [roller.ZoneSweeps(zones, region, drum, theta, conform, clearance, w)
                for w in roller.band_widths(face, zones, region, conform)]
        return out
    return region, drum, clearance, families


def test_line_runs_many_equals_each_item_alone(default_face, default_zones):
    for region_index, direction in ((0, 0), (1, 2)):
        _, _, _, families = _setup(default_face, default_zones, region_index, direction)
        fam = families()
        assert len(fam) >= 2
        items = [(f, off, j) for j, off in enumerate((0.0, 0.37, 0.8)) for f in fam]
        together = roller.line_runs_many(items)
        alone = [roller.line_runs(f, off, j) for f, off, j in items]
        assert any(together)
        for a, b in zip(together, alone):
            _same(a, b)


def test_sweep_runs_many_hands_out_best_offsets_trials_as_sweep_runs_does(default_face, default_zones):
    _, _, _, families = _setup(default_face, default_zones)
    a, b = families(), families()
    n = 4
    best_a, best_b = roller.best_offset(a[0], n), roller.best_offset(b[0], n)
    assert best_a == best_b
    together = roller.sweep_runs_many([(f, j, n, best_a if i == 0 else 0.0) for j in range(n)
                                       for i, f in enumerate(a)])
    alone = [roller.sweep_runs(f, j, n, best_b if i == 0 else 0.0) for j in range(n) for i, f in enumerate(b)]
    assert a[0].kept_trials.keys() == b[0].kept_trials.keys()
    for x, y in zip(together, alone):
        _same(x, y)


def test_headland_runs_many_equals_each_sweep_alone(default_face, default_zones):
    region, drum, clearance, _ = _setup(default_face, default_zones, 1)
    headland = roller.Headland(default_zones, region, drum, clearance)
    together = headland.runs_many(range(5), 5)
    assert any(together)
    for j, lines in enumerate(together):
        _same(lines, headland.runs(j, 5))


def test_rigid_drum_runs_many_equals_each_batch_alone(default_face, default_zones):
    region, drum, clearance, families = _setup(default_face, default_zones)
    batches = [roller.sweep_runs(f, j, 2, 0.3) for j in range(2) for f in families()]
    batches.append(roller.Headland(default_zones, region, drum, clearance).runs(0, 2))
    batches.append([])
    together = plan_mod._rigid_drum_runs_many(default_face, drum, region, clearance, copy.deepcopy(batches))
    alone = [plan_mod._rigid_drum_runs(default_face, drum, region, clearance, copy.deepcopy(b)) for b in batches]
    # some runs are cut by the check, so the two are compared where it does something
    assert sum(len(r.uv) for lines in together for rr in lines for r in rr) < \
        sum(len(r.uv) for lines in batches for rr in lines for r in rr)
    for x, y in zip(together, alone):
        _same(x, y)


def test_region_sweeps_build_the_main_family_only_as_its_trials(default_face, default_zones, monkeypatch):
    # best_offset tries the sweeps' own phases (roller.sweep_offset): every sweep of the main
    # family takes a trial's lines, so its lines are built once per tried phase, as the
    # trials (sweep 0), and no family's lines at one phase are built twice
    protocol = Protocol.default()
    region = roller.roller_regions(default_zones, protocol)[1]
    per_direction, built = [], []
    real_built, real_passes = roller._line_runs_built, roller.passes_for_target

    def logged(items):
        built.extend((sweeps.theta_deg, sweeps.family, offset, j) for sweeps, offset, j in items)
        return real_built(items)

    def passes(*args, **kwargs):
        got = real_passes(*args, **kwargs)
        per_direction.extend(got)
        return got

    monkeypatch.setattr(roller, "_line_runs_built", logged)
    monkeypatch.setattr(roller, "passes_for_target", passes)
    plan_mod._region_sweeps(default_face, default_zones, protocol, region, roller.keepout_clearance(default_zones),
                            plan_mod.Conformity(default_face, protocol))
    theta = protocol.zone(region.zones[0]).directions_deg
    assert max(per_direction) >= 3       # sweeps at phases other than the trials' of one sweep
    main = [b for b in built if b[1] == 0]
    assert all(j == 0 for *_, j in main)
    for t, n in zip(theta, per_direction):
        count = roller.phase_trials(n)
        assert sorted(o for d, _, o, _ in main if d == t) == (np.arange(count) / count).tolist()
    assert len({b[:3] for b in built}) == len(built) > 0
