"""Roller speed work (sixth round): each change equal to what it replaces."""
import numpy as np


def test_headland_sweeps_reuse_the_designs_cut_contours_exactly(default_face):
    """The sweeps' levels lie above the design's (half the drum's width): its cut generator
    serves them, each level's lines the whole raster's."""
    from coverage import ZoneMap, roller
    from coverage.protocol import Protocol

    protocol = Protocol.default()
    zones = ZoneMap.default(default_face, protocol)
    clearance = roller.keepout_clearance(zones)
    for region in roller.roller_regions(zones, protocol)[:2]:
        drum = roller.Drum.from_protocol(protocol, protocol.zone(region.zones[0]).roller_needle_length_mm)
        headland = roller.Headland(zones, region, drum, clearance)
        assert [low for low, _, _ in headland._cuts] == [drum.width_mm / 2]
        levels = [headland.design / 2 + roller.HEADLAND_INSET_MM + drum.ring_pitch_mm * j / 4 for j in range(4)]
        assert min(levels) >= drum.width_mm / 2
        cut = headland._contours_above(min(levels))
        assert cut is headland._cuts[0][2] and len(headland._cuts) == 1
        for level in levels:
            want = headland._contours.lines(level)
            got = cut.lines(level)
            assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))
        # a level whose own box is much smaller than the design's is cut anew
        top = float(headland.border.values.max())
        assert headland._contours_above(0.9 * top) is not cut and len(headland._cuts) == 2
