"""plan._run_path_frames (every roller run lifted and framed together) against
plan.chart_path_frames of each run alone: the same lift, tangents, arc lengths and chart
vectors across, bit for bit, on the default plan's runs and on seeded random paths."""
import importlib

import numpy as np
import pytest

plan_mod = importlib.import_module("coverage.plan")   # coverage.plan is also the function's name


def _same(together, paths, face):
    assert len(together) == len(paths)
    for (lifted, tangent, s, across), uv in zip(together, paths):
        ref_lifted, ref_tangent, ref_s, ref_across = plan_mod.chart_path_frames(face, uv)
        for k in ("points", "normals", "tri", "bary"):
            assert np.array_equal(getattr(lifted, k), getattr(ref_lifted, k))
        assert np.array_equal(tangent, ref_tangent)
        assert np.array_equal(s, ref_s)
        assert np.array_equal(across, ref_across)


def test_run_path_frames_equal_each_run_alone(default_face, roller_plan):
    paths = [s.uv for s in roller_plan.strokes if s.device == "roller"]
    assert len(paths) > 10
    _same(plan_mod._run_path_frames(default_face, paths), paths, default_face)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_path_frames_equal_each_random_path_alone(default_face, seed):
    rng = np.random.default_rng(seed)
    centre = default_face.uv.mean(axis=0)
    paths = []
    for _ in range(int(rng.integers(1, 12))):
        n = int(rng.integers(2, 80))
        start = centre + rng.uniform(-40, 40, 2)
        step = rng.normal(0, 0.6, (n, 2)).cumsum(axis=0)
        paths.append(start + step)
    _same(plan_mod._run_path_frames(default_face, paths), paths, default_face)


def test_run_path_frames_refuse_a_path_off_the_chart(default_face):
    good = default_face.uv.mean(axis=0) + np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    with pytest.raises(ValueError, match="leaves the chart"):
        plan_mod._run_path_frames(default_face, [good, np.array([[1e4, 0.0], [1e4 + 1, 0.0]])])
    assert plan_mod._run_path_frames(default_face, []) == []
