"""ZoneSweeps.sample_validity locates only the samples whose triangle is read (those inside the
region, then those within the drum's reach of a sample still standing), and drum_fits reads
the band point by point only where the sample's own cell does not bound it: the same
validity, widths and curvatures as locating every sample and reading every point, and the
located triangles where read."""
import dataclasses

import numpy as np
import pytest

from coverage import Protocol, roller


def _validity_locating_all(sweeps, uv, design_mm, starts):
    """sample_validity(valid_only=True, located=True) as it was: every sample located first."""
    face = sweeps.face
    tri_all, bary_all = face.locate(uv)
    n = len(uv)
    at = np.nonzero((tri_all >= 0) & (sweeps.inside.at(uv, outside=-1.0) >= 0))[0]
    tri, bary = tri_all[at], bary_all[at]
    corners = face.faces[np.maximum(tri, 0)]
    along = np.einsum("kj,kj->k", bary, sweeps.conform.kappa_along[corners])
    kc_at, width_at, central = sweeps._band_rings_central(uv[at], (tri, bary))
    kc0_at = np.nan_to_num(kc_at)
    if not np.isfinite(kc_at[tri >= 0]).all():
        central = None
    design_at = design_mm[at] if np.ndim(design_mm) else design_mm
    ok = np.zeros(n, dtype=bool)
    ok[at] = (tri >= 0) & sweeps.drum.conforms(kc0_at, along, central) & np.isclose(width_at, design_at)
    width, kc0 = np.zeros(n), np.zeros(n)
    width[at], kc0[at] = width_at, kc0_at
    # every band and outline point read (the rasters not marked as distance rasters)
    inside = dataclasses.replace(sweeps.inside, distance=False)
    clearance = dataclasses.replace(sweeps.clearance, distance=False)
    ok &= roller.drum_fits(face, sweeps.drum, uv, width, inside, clearance, tri=tri_all, starts=starts, where=ok)
    return ok, width, kc0, tri_all


def _sweeps(default_face, default_zones, region_index, direction):
    protocol = Protocol.default()
    clearance = roller.keepout_clearance(default_zones)
    region = roller.roller_regions(default_zones, protocol)[region_index]
    dose = protocol.zone(region.zones[0])
    drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
    theta = dose.directions_deg[direction % len(dose.directions_deg)]
    conform = roller.conformity(default_face, drum, theta)
    return roller.ZoneSweeps(default_zones, region, drum, theta, conform, clearance)


def _captured_calls(monkeypatch, sweeps, offset):
    calls = []
    original = roller.ZoneSweeps.sample_validity

    def spy(self, uv, design_mm, starts=None, valid_only=False, located=False):
        calls.append((uv.copy(), np.copy(design_mm), None if starts is None else starts.copy()))
        return original(self, uv, design_mm, starts, valid_only, located)

    monkeypatch.setattr(roller.ZoneSweeps, "sample_validity", spy)
    roller.line_runs(sweeps, offset, 1)
    monkeypatch.setattr(roller.ZoneSweeps, "sample_validity", original)
    return calls


@pytest.mark.parametrize("region_index, direction, offset", [(0, 0, 0.0), (1, 1, 0.37), (0, 2, 0.8)])
def test_sample_validity_equals_locating_every_sample(monkeypatch, default_face, default_zones, region_index,
                                                      direction, offset):
    sweeps = _sweeps(default_face, default_zones, region_index, direction)
    calls = _captured_calls(monkeypatch, sweeps, offset)
    assert calls
    for uv, design, starts in calls:
        ok, width, kc, tri = sweeps.sample_validity(uv, design, starts, valid_only=True, located=True)
        ref_ok, ref_width, ref_kc, ref_tri = _validity_locating_all(sweeps, uv, design, starts)
        assert ok.any()
        assert np.array_equal(ok, ref_ok)
        assert np.array_equal(width, ref_width)
        assert np.array_equal(kc, ref_kc)
        # the triangles read (every standing sample's) are the located ones
        assert np.array_equal(tri[ok], ref_tri[ok])
        located = tri >= 0
        assert np.array_equal(tri[located], ref_tri[located])


@pytest.mark.parametrize("seed", range(6))
def test_near_standing_matches_a_loop(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 30, size=rng.integers(1, 8))
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(starts[-1])
    ok = rng.random(n) < rng.choice([0.0, 0.05, 0.3])
    reach = int(rng.integers(0, 6))
    expected = np.zeros(n, dtype=bool)
    for a, b in zip(starts[:-1], starts[1:]):
        for i in range(a, b):
            expected[i] = ok[max(a, i - reach):min(b, i + reach + 1)].any()
        if ok[a:b].any():
            expected[a] = expected[b - 1] = True
    assert np.array_equal(roller._near_standing(ok, starts, reach), expected)
