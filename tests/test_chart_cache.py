"""The canonical chart's cache between processes (coverage.chart.canonical_chart): a hit is
the solve's array bit for bit, and a missing, damaged, stale or unwritable cache falls back
to the solve."""
import os
import subprocess
import sys

import numpy as np
import pytest

from coverage import chart

SUBDIVISIONS = 2  # a small resolution: the solve takes milliseconds


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(chart.CACHE_ENV, str(tmp_path / "cache"))
    chart.canonical_chart.cache_clear()
    yield tmp_path / "cache"
    chart.canonical_chart.cache_clear()


def _no_solve(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("solved although the cache holds the chart")

    monkeypatch.setattr(chart, "lscm", refuse)


def test_a_hit_is_the_solve_bit_for_bit(cache, monkeypatch):
    solved = chart.compute_canonical_chart(SUBDIVISIONS)
    first = chart.canonical_chart(SUBDIVISIONS)
    files = list(cache.iterdir())
    assert [f.name for f in files] == [chart.chart_cache_file(SUBDIVISIONS).name]
    chart.canonical_chart.cache_clear()
    _no_solve(monkeypatch)
    second = chart.canonical_chart(SUBDIVISIONS)
    assert np.array_equal(first, solved) and np.array_equal(second, solved)
    assert second.dtype == np.float64 and not second.flags.writeable


def test_a_new_process_reads_the_file(cache):
    chart.canonical_chart(SUBDIVISIONS)
    code = ("import sys; from coverage import chart\n"
            "chart.lscm = None  # a solve would fail\n"
            f"uv = chart.canonical_chart({SUBDIVISIONS}); sys.stdout.write(uv.tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, chart.CACHE_ENV: str(cache)})
    assert bytes.fromhex(out.stdout) == chart.compute_canonical_chart(SUBDIVISIONS).tobytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong key", "wrong shape", "not finite"])
def test_a_bad_file_is_solved_again_and_replaced(cache, damage):
    chart.canonical_chart(SUBDIVISIONS)
    path = chart.chart_cache_file(SUBDIVISIONS)
    good = path.read_bytes()
    uv = chart.compute_canonical_chart(SUBDIVISIONS)
    key = chart.chart_key(SUBDIVISIONS)
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "wrong key":
        np.savez(path, key=np.array("0" * 64), uv=uv + 1.0)
    elif damage == "wrong shape":
        np.savez(path, key=np.array(key), uv=uv[:-1])
    else:
        bad = uv.copy()
        bad[3, 1] = np.nan
        np.savez(path, key=np.array(key), uv=bad)
    chart.canonical_chart.cache_clear()
    assert np.array_equal(chart.canonical_chart(SUBDIVISIONS), uv)
    with np.load(path) as stored:  # rewritten with the solve
        assert str(stored["key"]) == key and np.array_equal(stored["uv"], uv)


def test_a_flipped_byte_is_caught_by_the_zip_checksum(cache):
    chart.canonical_chart(SUBDIVISIONS)
    path = chart.chart_cache_file(SUBDIVISIONS)
    data = bytearray(path.read_bytes())
    uv = chart.compute_canonical_chart(SUBDIVISIONS)
    at = bytes(data).find(uv[5].tobytes())  # a chart value inside the stored (uncompressed) array
    assert at > 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    chart.canonical_chart.cache_clear()
    assert np.array_equal(chart.canonical_chart(SUBDIVISIONS), uv)


def test_the_key_names_the_resolution_and_the_inputs(cache, monkeypatch):
    keys = {chart.chart_key(s) for s in (1, 2, 3)}
    assert len(keys) == 3
    before = chart.chart_key(SUBDIVISIONS)
    monkeypatch.setattr(chart, "PIN_LANDMARKS", (33, 362))
    assert chart.chart_key(SUBDIVISIONS) != before


def test_cache_off_or_unwritable_still_gives_the_chart(tmp_path, monkeypatch):
    uv = chart.compute_canonical_chart(SUBDIVISIONS)
    monkeypatch.setenv(chart.CACHE_ENV, "")
    chart.canonical_chart.cache_clear()
    assert chart.cache_dir() is None and chart.chart_cache_file(SUBDIVISIONS) is None
    assert np.array_equal(chart.canonical_chart(SUBDIVISIONS), uv)
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    monkeypatch.setenv(chart.CACHE_ENV, str(blocker / "cache"))  # its parent is a file
    chart.canonical_chart.cache_clear()
    assert np.array_equal(chart.canonical_chart(SUBDIVISIONS), uv)
    assert blocker.read_text() == "in the way"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file"]  # no temporary file left
    chart.canonical_chart.cache_clear()


def test_the_default_location(monkeypatch, tmp_path):
    monkeypatch.delenv(chart.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert chart.cache_dir() == tmp_path / "coverage"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert chart.cache_dir() == tmp_path / "home" / ".cache" / "coverage"
