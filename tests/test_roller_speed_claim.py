"""roller.claim (one kernel call per claim) against roller.claim_reference (run by run):
the same stretches kept and the same occupancy taken, on the default face's own sweeps and
on seeded random runs."""
import copy

import numpy as np
import pytest

from coverage import Protocol, roller
from geometry_checks import assert_same_runs


def _claims(face, batches, bounds):
    mine, theirs = roller.Occupancy(bounds), roller.Occupancy(bounds)
    for lines in batches:
        assert_same_runs(roller.claim(face, copy.deepcopy(lines), mine),
                    roller.claim_reference(face, copy.deepcopy(lines), theirs))
        assert np.array_equal(mine.taken, theirs.taken)
    return mine


def test_claim_matches_reference_on_the_default_sweeps(default_face, default_zones):
    protocol = Protocol.default()
    clearance = roller.keepout_clearance(default_zones)
    region = roller.roller_regions(default_zones, protocol)[0]
    dose = protocol.zone(region.zones[0])
    drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
    theta = dose.directions_deg[0]
    conform = roller.conformity(default_face, drum, theta)
    families = [roller.ZoneSweeps(default_zones, region, drum, theta, conform, clearance)]
    families += [roller.ZoneSweeps(default_zones, region, drum, theta, conform, clearance, w)
                 for w in roller.band_widths(default_face, default_zones, region, conform)]
    batches = [roller.sweep_runs(f, j, 2, 0.3) for j in range(2) for f in families]
    batches.append(roller.Headland(default_zones, region, drum, clearance).runs(0, 2))
    occupancy = _claims(default_face, batches, region.polygon.bounds)
    assert occupancy.taken.any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_claim_matches_reference_on_random_runs(default_face, seed):
    rng = np.random.default_rng(seed)
    face = default_face
    centre = face.uv.mean(axis=0)
    batches = []
    for _ in range(3):
        lines = []
        for line in range(int(rng.integers(1, 6))):
            runs = []
            for _ in range(int(rng.integers(1, 4))):
                n = int(rng.integers(2, 160))
                start = centre + rng.uniform(-40, 40, 2)
                heading = rng.uniform(0, 2 * np.pi)
                turn = np.cumsum(rng.normal(0, 0.05, n))
                steps = 0.5 * np.stack([np.cos(heading + turn), np.sin(heading + turn)], axis=1)
                uv = start + np.cumsum(steps, axis=0)
                swath = rng.choice([0.0, 2.5, 5.0, 7.5, 10.0], n)
                meta = {"ring_pitch_mm": float(rng.choice([1.25, 2.5]))} if rng.random() < 0.8 else {}
                runs.append(roller.Run("z", 30.0, 0, line, uv, swath, rng.normal(size=n), float(rng.uniform(0, 3)),
                                       meta))
            lines.append(runs)
        batches.append(lines)
    bounds = (*(centre - 50), *(centre + 50))
    _claims(face, batches, bounds)


def test_claim_with_a_non_finite_run_is_the_reference(default_face):
    uv = default_face.uv.mean(axis=0) + np.stack([np.arange(60) * 0.5, np.zeros(60)], axis=1)
    swath = np.full(60, 5.0)
    swath[30] = np.nan
    lines = [[roller.Run("z", 0.0, 0, 0, uv, swath, np.zeros(60))]]
    bounds = (*(uv.min(axis=0) - 10), *(uv.max(axis=0) + 10))
    with np.errstate(invalid="ignore"):
        try:
            _claims(default_face, [lines], bounds)
        except ValueError:       # the reference refuses a NaN band (math.ceil of NaN): so does claim
            with pytest.raises(ValueError):
                roller.claim(default_face, lines, roller.Occupancy(bounds))


def test_runs_carry_their_located_triangles(default_face, default_zones):
    """The triangles a run carries (so claims need not locate again) are face.locate's."""
    protocol = Protocol.default()
    clearance = roller.keepout_clearance(default_zones)
    region = roller.roller_regions(default_zones, protocol)[0]
    dose = protocol.zone(region.zones[0])
    drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
    theta = dose.directions_deg[-1]
    sweeps = roller.ZoneSweeps(default_zones, region, drum, theta, roller.conformity(default_face, drum, theta),
                               clearance)
    occupancy = roller.Occupancy(region.polygon.bounds)
    lines = roller.claim(default_face, roller.sweep_runs(sweeps, 1, 3, 0.0), occupancy)
    border = roller.claim(default_face, roller.Headland(default_zones, region, drum, clearance).runs(1, 3), occupancy)
    runs = [r for rr in lines + border for r in rr]
    assert len(runs) >= 3       # the drum reaches with all its rings on few stretches of this region at 135 deg
    for r in runs:
        assert r.tri is not None and np.array_equal(r.tri, default_face.locate(r.uv)[0])
