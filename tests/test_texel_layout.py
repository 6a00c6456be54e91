"""The texel grid's layout (density.texel_layout), made once per face and cell beside the
zone map: what texel_grid computed in place before, read-only, the same from any thread."""
import importlib
import threading

import numpy as np
import pytest

from coverage.face import Face

# coverage.density is the public function; the module is reached through importlib
density = importlib.import_module("coverage.density")


def test_layout_is_the_grid_s_own(default_face):
    origin, (h, w), centres, tri = density.texel_layout(default_face)
    uv = default_face.uv
    cell = density.DEFAULT_TEXEL_MM
    assert np.array_equal(origin, uv.min(axis=0) - cell)
    assert (w, h) == tuple(int(x) for x in np.ceil((uv.max(axis=0) + cell - origin) / cell))
    assert np.array_equal(centres, density.texel_centres(origin, cell, (h, w)))
    assert np.array_equal(tri, default_face.locate(centres)[0])
    assert not (origin.flags.writeable or centres.flags.writeable or tri.flags.writeable)
    # once per face and cell: the same arrays again; another cell, another layout
    assert density.texel_layout(default_face)[3] is tri
    other = density.texel_layout(default_face, 2 * cell)
    assert other[1] != (h, w)


def test_grid_from_the_layout(default_zones):
    grid = density.texel_grid(default_zones)
    origin, shape, _, tri = density.texel_layout(default_zones.face)
    assert grid.shape == shape and np.array_equal(grid.tri.ravel(), tri)
    # the grid's arrays are its own: writing one leaves the shared layout as it was
    assert grid.tri.flags.writeable and grid.tri.base is not tri
    assert np.array_equal(grid.origin, origin) and grid.origin is not origin


@pytest.mark.parametrize("threads", [2, 4])
def test_threads_get_one_layout(threads):
    face = Face.default(2.0)
    got, start = [None] * threads, threading.Barrier(threads)

    def ask(i):
        start.wait()
        got[i] = density.texel_layout(face)

    workers = [threading.Thread(target=ask, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert all(g is got[0] for g in got)
