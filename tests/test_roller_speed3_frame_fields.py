"""roller.sweep_frame_fields (one compiled pass per point: locate, scale, band) against
roller.sweep_frame_fields_reference (face.locate, then NumPy gathers): equal on a small
hand-worked chart, on seeded random points, rasters and conformity maps of the default
face, and on the default face's own sweep frames."""
import types

import numpy as np
import pytest

from coverage import Protocol, lifting, roller


def _conform(swath, conforms):
    n = len(swath)
    return roller.Conformity(0.0, np.zeros(n), np.zeros(n), np.asarray(swath, dtype=float),
                             np.asarray(conforms, dtype=bool))


def _same(face, chart, inside, conform, rows=(1,)):
    ref = roller.sweep_frame_fields_reference(face, chart, inside, conform)
    # visited column by column for any count of rows (one that does not divide the points:
    # in order)
    for r in rows:
        got = roller.sweep_frame_fields(face, chart, inside, conform, r)
        for a, b in zip(got, ref):
            assert np.array_equal(a, b, equal_nan=True)
    return got


def test_hand_worked_square():
    # the unit square as two triangles: T0 (0,0) (1,0) (1,1) below the diagonal, T1 (0,0) (1,1) (0,1)
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    grid = lifting.build_grid(uv, faces)
    face = types.SimpleNamespace(chart_grid=grid, faces=faces, vertices=np.zeros((4, 3)),
                                 linear_scale=np.array([2.0, 3.0]),
                                 locate=lambda p, eps=1e-9: lifting.locate(grid, p, eps))
    # region raster of 0.5 mm cells from (0, 0): the cell holding (0.4, 0.1) is outside (-1)
    values = np.full((4, 4), 0.3)
    values[0, 0] = -1.0
    inside = roller.ChartRaster(np.zeros(2), 0.5, values)
    chart = np.array([[0.75, 0.25],    # T0, in the region: band min(4, 5, 6) = 4
                      [0.4, 0.1],      # T0, outside the region: no band
                      [0.25, 0.75],    # T1: its corners' least swath is 0, no band
                      [5.0, 5.0],      # off the chart: scale 1
                      [np.nan, 0.5]])
    scale, band = _same(face, chart, inside, _conform([4.0, 5.0, 6.0, 0.0], [True] * 4), rows=(1, 5, 2))
    assert scale.tolist() == [2.0, 2.0, 3.0, 1.0, 1.0]
    assert np.array_equal(band, [4.0, np.nan, np.nan, np.nan, np.nan], equal_nan=True)
    # a corner that does not conform takes T0's band away; a NaN swath wins the least
    _, band = _same(face, chart, inside, _conform([4.0, 5.0, 6.0, 0.0], [True, False, True, True]))
    assert np.isnan(band).all()
    _, band = _same(face, chart, inside, _conform([4.0, np.nan, 6.0, 0.0], [True] * 4))
    assert np.isnan(band).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_points_rasters_and_conformity(default_face, seed):
    rng = np.random.default_rng(seed)
    face = default_face
    nv = len(face.vertices)
    lo, hi = face.uv.min(axis=0) - 5, face.uv.max(axis=0) + 5
    chart = rng.uniform(lo, hi, (20000, 2))
    chart[rng.random(len(chart)) < 0.01] = np.nan
    chart[:50, 0] = np.inf
    # points exactly on chart vertices and edges (ties between triangles)
    chart[50:150] = face.uv[rng.integers(0, nv, 100)]
    swath = rng.choice([0.0, 10.0, 15.0, 20.0, np.nan, np.inf, -5.0], nv, p=[.2, .2, .2, .3, .04, .03, .03])
    conforms = rng.random(nv) < 0.8
    # a region raster over most of the points (a cell a power of two or not; part of the
    # points off it)
    cell = float(rng.choice([0.5, 0.75, 1.0, 2.0]))
    w, h = (int(x) for x in (hi - lo) / cell * rng.uniform(0.6, 1.1, 2))
    inside = roller.ChartRaster(lo + rng.uniform(-3, 3, 2), cell, rng.uniform(-1.5, 3.0, (h, w)))
    _, band = _same(face, chart, inside, _conform(swath, conforms), rows=(1, 100, 7, 20000))
    assert (~np.isnan(band)).sum() > 100


def test_default_sweep_frames(default_face, default_zones):
    protocol = Protocol.default()
    for region in roller.roller_regions(default_zones, protocol):
        dose = protocol.zone(region.zones[0])
        drum = roller.Drum.from_protocol(protocol, dose.roller_needle_length_mm)
        for theta in dose.directions_deg[:2]:
            conform = roller.conformity(default_face, drum, theta)
            frame = roller.SweepFrame.build(default_face, region, theta, conform)
            uu, vv = np.meshgrid(frame.u_cols, frame.v_rows)
            chart = np.stack([uu.ravel(), vv.ravel()], axis=1) @ frame.to_chart.T
            scale, band = _same(default_face, chart, region.inside, conform, rows=(1, len(frame.v_rows)))
            assert np.array_equal(scale.reshape(uu.shape), frame.scale)
            assert np.array_equal(band.reshape(uu.shape), frame.works_swath, equal_nan=True)
