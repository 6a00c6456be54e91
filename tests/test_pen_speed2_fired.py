"""The dose field asks each texel's stamp only whether it fires enough needles."""
import numpy as np
import pytest

from coverage import pen, simulate
from coverage.density import texel_grid
from coverage.protocol import Protocol


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("needles", [12, 5])
def test_fired_needles_up_to_enough_equal_the_reference(default_face, seed, needles):
    rng = np.random.default_rng(seed)
    layout = simulate.needle_layout(needles, 7.0 if needles == 12 else 3.0, 0.25)
    lo, hi = default_face.uv.min(axis=0), default_face.uv.max(axis=0)
    k = 1500
    centres = rng.uniform(lo - 8.0, hi + 8.0, (k, 2))
    centres[:5] = np.nan
    angles = rng.uniform(-np.pi, np.pi, k)
    depth = rng.uniform(0.25, 2.5, k)
    full = pen.fired_needles(default_face, centres, angles, depth, layout, 0.5)
    assert ((full > 0) & (full < needles)).any()
    for enough in (0, 1, 3, needles - 1, needles, needles + 4):
        got = pen.fired_needles(default_face, centres, angles, depth, layout, 0.5, enough=enough)
        np.testing.assert_array_equal(got, pen.fired_needles_reference(default_face, centres, angles, depth, layout,
                                                                       0.5, enough=enough))
        np.testing.assert_array_equal(got >= enough, full >= enough)
        assert (got <= np.minimum(full, max(enough, 0))).all()


def test_dose_field_counts_its_needles_when_asked(default_zones):
    grid = texel_grid(default_zones)
    protocol = Protocol.default()
    for cartridge in (protocol.pen, pen.fine_cartridge(protocol.pen)):
        problem = pen.dose_field(default_zones, grid, protocol, np.zeros(grid.shape), set(default_zones.names),
                                 pen=cartridge)
        fired = problem.needles_fired
        assert fired is problem.needles_fired       # counted once
        assert fired.shape == grid.shape and (fired[problem.allowed] > 0).all()
        # allowed: the texels whose stamp fires a quarter of its needles
        np.testing.assert_array_equal(problem.allowed, fired >= 0.25 * cartridge.needles)
