"""Roller speed work (fifth round): each change equal to what it replaces."""
import numpy as np

from test_roller_speed4 import _loops_alone


class _Lines:
    """A contour generator stand-in: the same lines at every level (per level, its own)."""

    def __init__(self, per_level):
        self.per_level = per_level

    def lines(self, level):
        return self.per_level[level]


def _crumbs(rng, centre):
    """Border lines as a scan's border gives them: crumbs of 1 to 4 points, repeated points
    (steps of 0 and below 1e-9), a closed loop and a long open line."""
    lines = []
    for _ in range(40):
        n = int(rng.integers(1, 5))
        pts = centre + rng.uniform(-4, 4, 2) + np.cumsum(rng.uniform(-0.5, 0.5, (n, 2)), axis=0)
        if n > 1 and rng.random() < 0.5:
            pts[int(rng.integers(1, n))] = pts[int(rng.integers(0, n - 1))]     # a repeated point
        lines.append(pts)
    t = np.linspace(0.0, 2 * np.pi, 200)
    loop = centre + 4.0 * np.stack([np.cos(t), np.sin(t)], axis=1)
    loop[-1] = loop[0]
    loop[50] = loop[49] + 1e-10          # a step below 1e-9: not kept
    lines.append(loop)
    lines.append(centre + np.stack([np.linspace(-5, 5, 120), np.linspace(-1, 1, 120)], axis=1))
    lines.insert(int(rng.integers(0, len(lines))), np.zeros((0, 2)))
    order = rng.permutation(len(lines))
    return [lines[i] for i in order]


def test_headland_loops_many_keeps_the_moving_points_of_each_line_as_alone(default_face):
    from coverage import ZoneMap, roller
    from coverage.protocol import Protocol

    protocol = Protocol.default()
    zones = ZoneMap.default(default_face, protocol)
    clearance = roller.keepout_clearance(zones)
    region = roller.roller_regions(zones, protocol)[0]
    drum = roller.Drum.from_protocol(protocol, protocol.zone(region.zones[0]).roller_needle_length_mm)
    headland = roller.Headland(zones, region, drum, clearance)
    centre = np.asarray(region.polygon.representative_point().coords[0])
    for seed in range(4):
        rng = np.random.default_rng(seed)
        levels = [1.0, 2.0, 3.0]
        stub = _Lines({1.0: _crumbs(rng, centre), 2.0: [], 3.0: _crumbs(rng, centre)})
        headland.__dict__["_contours"] = stub
        headland._contours_above = lambda level: stub
        for min_samples in (0, roller.MIN_RUN_SAMPLES):
            many = headland._loops_many(levels, min_samples)
            for level, got in zip(levels, many):
                ref = _loops_alone(headland, level, min_samples)
                assert len(got) == len(ref)
                for a, b in zip(got, ref):
                    assert (a is None and b is None) or np.array_equal(a, b)
        assert headland._loops_many([2.0], 0) == [[]]
