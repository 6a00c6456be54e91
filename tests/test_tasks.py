"""coverage.tasks: the plan's pieces on threads, and the number of threads.

The plan itself on one and on two threads is compared bit for bit in test_determinism.py.
"""
import concurrent.futures as cf
import threading

import numpy as np
import pytest
import shapely

from coverage import tasks
from coverage.errors import CoverageError


# --- how many threads --------------------------------------------------------------------------

def test_thread_count_takes_the_argument_then_the_environment_then_the_cores(monkeypatch):
    monkeypatch.delenv(tasks.THREADS_ENV, raising=False)
    assert tasks.thread_count(1) == 1
    assert tasks.thread_count(2) == 2
    assert tasks.thread_count(64) == tasks.MAX_THREADS == 2     # a plan never has more pieces at once
    monkeypatch.setattr(tasks, "available_cores", lambda: 1)
    assert tasks.thread_count() == 1
    monkeypatch.setattr(tasks, "available_cores", lambda: 8)
    assert tasks.thread_count() == 2
    monkeypatch.setenv(tasks.THREADS_ENV, " 1 ")
    assert tasks.thread_count() == 1
    assert tasks.thread_count(2) == 2            # the argument before the environment
    monkeypatch.setenv(tasks.THREADS_ENV, "")
    assert tasks.thread_count() == 2             # empty: unset


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "2"])
def test_a_bad_thread_count_names_the_argument_and_the_fix(value):
    with pytest.raises(CoverageError, match=r"threads = .* is not a number of threads; give a whole number, "
                                            r"1 or more \(--threads N"):
        tasks.thread_count(value)


@pytest.mark.parametrize("text, message", [("two", "is not a whole number"),
                                           ("0", "is not a number of threads")])
def test_a_bad_environment_value_names_the_variable(monkeypatch, text, message):
    monkeypatch.setenv(tasks.THREADS_ENV, text)
    with pytest.raises(CoverageError, match=rf"\$COVERAGE_THREADS = .*{message}"):
        tasks.thread_count()


# --- one thread: plain calls where the result is read ---------------------------------------------

def test_one_thread_runs_a_piece_when_its_result_is_read_and_never_if_unread():
    ran = []
    with tasks.Tasks(1) as pool:
        assert pool.threads == 1
        first = pool.submit(lambda x: ran.append(x) or x * 2, 3)
        pool.submit(ran.append, "never read")
        assert ran == []
        assert first.result() == 6 and first.result() == 6
        assert ran == [3]                                        # once, however often it is read
    assert ran == [3]


def test_an_error_is_raised_where_the_result_is_read_every_time():
    calls = []

    def fail():
        calls.append(1)
        raise ValueError("bad piece")

    for threads in (1, 2):
        calls.clear()
        with tasks.Tasks(threads) as pool:
            piece = pool.submit(fail)
            for _ in range(2):
                with pytest.raises(ValueError, match="bad piece"):
                    piece.result()
        assert calls == [1]


def test_map_keeps_the_order_and_calls_then_before_the_first_item():
    for threads in (1, 2):
        events = []
        with tasks.Tasks(threads) as pool:
            out = pool.map(lambda x: events.append(("item", x)) or x * x, [1, 2, 3],
                           then=lambda: events.append(("then",)))
        assert out == [1, 4, 9]
        assert events.index(("then",)) < events.index(("item", 1))
        with tasks.Tasks(threads) as pool:
            assert pool.map(abs, [], then=lambda: events.append("empty")) == []
        assert events[-1] == "empty"


# --- two threads ----------------------------------------------------------------------------------

def test_two_threads_run_a_piece_on_the_other_thread():
    with tasks.Tasks(2) as pool:
        assert pool.threads == 2
        ran = threading.Event()
        piece = pool.submit(lambda: (ran.set(), threading.current_thread())[1])
        assert ran.wait(10)           # read only once it ran (a piece still queued is run by its reader)
        where = piece.result()
        assert where is not threading.current_thread()
        assert where.name.startswith("coverage-plan-")
        # map: the first item on this thread, the second on the pool's (it is free)
        names = pool.map(lambda _: threading.current_thread().name, [0, 1])
        assert names[0] == threading.current_thread().name


def test_a_waiting_thread_runs_a_queued_piece_itself():
    """The pool's thread is busy: a piece queued behind it is run by the thread that needs it,
    and so is another queued piece while it waits for the busy one."""
    release, started = threading.Event(), threading.Event()
    me = threading.current_thread()

    def busy():
        started.set()
        release.wait(10)
        return "busy done"

    with tasks.Tasks(2) as pool:
        blocking = pool.submit(busy)
        assert started.wait(10)
        queued = pool.submit(threading.current_thread)
        assert queued.result() is me                 # taken out of the queue and run here
        other = pool.submit(threading.current_thread)
        # waiting for the busy piece: the queued one runs here meanwhile, then the wait
        threading.Timer(0.2, release.set).start()
        assert blocking.result() == "busy done"
        assert other.done.is_set() and other.result() is me


def test_leaving_drops_the_pieces_never_taken_and_waits_for_the_running_ones():
    release, started = threading.Event(), threading.Event()
    ran = []

    def busy():
        started.set()
        release.wait(10)
        ran.append("busy")

    with tasks.Tasks(2) as pool:
        workers = list(pool._workers)
        pool.submit(busy)
        assert started.wait(10)
        dropped = pool.submit(ran.append, "queued")
        threading.Timer(0.2, release.set).start()
    assert ran == ["busy"]                            # the running piece finished before leaving
    assert len(workers) == 1 and not workers[0].is_alive()
    assert dropped.done.is_set()                       # a dropped piece says so, rather than hang
    with pytest.raises(cf.CancelledError):
        dropped.result()


def test_a_piece_asked_from_another_thread_runs_where_it_is_read():
    with tasks.Tasks(2) as pool:
        def inner():
            piece = pool.submit(threading.current_thread)
            assert isinstance(piece, tasks._Later)
            return threading.current_thread(), piece.result()

        ran = threading.Event()
        piece = pool.submit(lambda: (ran.set(), inner())[1])
        assert ran.wait(10)
        outer, inner_thread = piece.result()
        assert outer is inner_thread and outer is not threading.current_thread()


# --- values computed once -------------------------------------------------------------------------

def test_once_computes_each_key_once_whichever_thread_asks_first():
    once, calls, gate = tasks.Once(), [], threading.Barrier(4)

    def make():
        calls.append(1)
        return object()

    got = []

    def ask():
        gate.wait(10)
        got.append(once.get("key", make))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len(got) == 4 and all(g is got[0] for g in got)
    assert once.get("other", lambda: 5) == 5 and once.get("other", lambda: 6) == 5


def test_once_gives_an_error_to_every_reader():
    once = tasks.Once()

    def fail():
        raise KeyError("no such drum")

    for _ in range(2):
        with pytest.raises(KeyError, match="no such drum"):
            once.get("k", fail)


# --- BLAS limits ----------------------------------------------------------------------------------

def _blas_threads():
    import threadpoolctl

    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]


def test_blas_limits_taken_by_two_threads_at_once_are_restored():
    import numpy as np
    import threadpoolctl

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        inside, gate = [], threading.Barrier(2)

        def limit_many():
            gate.wait(10)
            for _ in range(30):
                with tasks.one_blas_thread():
                    inside.append(_blas_threads())
                    np.ones((8, 2)) @ np.ones((2, 2))

        threads = [threading.Thread(target=limit_many) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(inside) == 60
        assert _blas_threads() == before


def test_a_plan_on_two_threads_leaves_the_blas_threads_as_they_were(default_face, default_zones):
    import threadpoolctl

    from coverage import plan

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        plan(default_face, zones=default_zones, device="roller", threads=2)
        assert _blas_threads() == before



def test_an_interrupt_in_a_piece_the_waiting_thread_took_goes_on_up_at_once():
    """Ctrl-C while the waiting thread runs a lent piece is not kept for a later reader."""
    release, started = threading.Event(), threading.Event()

    def busy():
        started.set()
        release.wait(10)

    def interrupted():
        raise KeyboardInterrupt

    with tasks.Tasks(2) as pool:
        blocking = pool.submit(busy)
        assert started.wait(10)
        lent = pool.submit(interrupted)
        with pytest.raises(KeyboardInterrupt):
            blocking.result()            # runs the lent piece meanwhile: the interrupt comes out here
        release.set()
        assert lent.done.is_set()
        with pytest.raises(KeyboardInterrupt):
            lent.result()


def test_one_thread_does_not_keep_an_interrupt_for_later():
    def interrupted():
        raise KeyboardInterrupt

    with tasks.Tasks(1) as pool:
        piece = pool.submit(interrupted)
        for _ in range(2):            # and a later reader gets it too, not None
            with pytest.raises(KeyboardInterrupt):
                piece.result()


# --- GEOS predicates on shared geometries take turns ----------------------------------------------

def _waits_for_the_geos_lock(call):
    """Whether ``call()`` on another thread waits while this thread holds GEOS_LOCK, then ends."""
    done = threading.Event()
    errors = []

    def run():
        try:
            call()
        except Exception as error:     # reported below
            errors.append(error)
        done.set()

    with tasks.GEOS_LOCK:
        worker = threading.Thread(target=run)
        worker.start()
        waited = not done.wait(0.3)
    finished = done.wait(30)
    worker.join(30)
    assert not errors, errors
    return waited and finished


def test_zone_lookups_and_region_cuts_take_turns_on_geos(default_face, default_zones):
    """Two threads asking a freshly prepared polygon at once corrupted GEOS's heap (shapely
    2.2, GEOS 3.14): the planner's predicates on shared geometries hold coverage.tasks.GEOS_LOCK."""
    from coverage import regions, roller
    from coverage.zones import ZoneMap

    uv = default_face.uv[default_face.faces].mean(axis=1)[::7]
    assert _waits_for_the_geos_lock(lambda: ZoneMap.label_at(default_zones, uv))
    region = shapely.box(-10.0, -5.0, 12.5, 7.5)            # a region no cache holds yet
    shapely.prepare(region)
    res = regions._resolution(default_face.subdivisions)
    assert _waits_for_the_geos_lock(lambda: regions._make_cut(res, region))
    polygon = default_zones.polygons["forehead"]
    x0, y0, x1, y1 = polygon.bounds
    x, y = np.linspace(x0 - 5, x1 + 5, 200), np.linspace(y0 - 5, y1 + 5, 150)     # across its border
    # (contains_grid_scan asks shapely only about points within rounding of the border)
    assert _waits_for_the_geos_lock(lambda: roller.contains_grid_blocks(polygon, x, y))


def test_the_collector_is_paused_inside_and_restored_by_the_last_block_to_end():
    import gc

    assert gc.isenabled()
    first, second = tasks.collector_paused(), tasks.collector_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()          # the other block still runs
    second.__exit__(None, None, None)
    assert gc.isenabled()
    # an error inside restores it too
    with pytest.raises(ZeroDivisionError):
        with tasks.collector_paused():
            assert not gc.isenabled()
            1 / 0
    assert gc.isenabled()


def test_a_pause_the_caller_made_is_left_as_it_is():
    import gc

    gc.disable()
    try:
        with tasks.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_blocks_on_two_threads_share_one_pause():
    import gc

    inside, go = threading.Barrier(2), threading.Event()
    seen = []

    def block():
        with tasks.collector_paused():
            inside.wait(30)
            seen.append(gc.isenabled())
            go.wait(30)

    threads = [threading.Thread(target=block) for _ in range(2)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(30)
    assert seen == [False, False]
    assert gc.isenabled()


def test_overlapping_blocks_never_keep_the_collector_off_for_long(monkeypatch):
    """Blocks that keep overlapping: one ending past the longest pause, with another still
    running, collects once and starts the pause again; none ending earlier collects."""
    import gc

    collections_run = []

    def seen(phase, info):
        # full collections only (the collector, once back on, may run a young one by itself)
        if phase == "start" and info["generation"] == 2:
            collections_run.append(info["generation"])

    clock = [100.0]
    monkeypatch.setattr(tasks.time, "monotonic", lambda: clock[0])
    gc.callbacks.append(seen)
    try:
        first, second, third = tasks.collector_paused(), tasks.collector_paused(), tasks.collector_paused()
        first.__enter__()
        second.__enter__()
        clock[0] += tasks.COLLECTOR_PAUSE_MAX_S / 2
        first.__exit__(None, None, None)          # not yet overdue
        assert collections_run == [] and not gc.isenabled()
        third.__enter__()
        clock[0] += tasks.COLLECTOR_PAUSE_MAX_S
        second.__exit__(None, None, None)         # overdue, the third still running: one full collection
        assert collections_run == [2] and not gc.isenabled()
        clock[0] += 1.0
        third.__exit__(None, None, None)          # the last: the collector back on, nothing collected here
        assert collections_run == [2] and gc.isenabled()
    finally:
        gc.callbacks.remove(seen)
        gc.enable()


def test_a_plan_pauses_the_collector_and_leaves_no_cycles_behind(default_face, default_zones, monkeypatch):
    """The plan runs with the collector paused, restores it, and leaves nothing for it: a
    full collection after a plan (the collector off throughout) finds no unreachable cycle."""
    import gc
    import importlib

    from coverage import plan

    plan_module = importlib.import_module("coverage.plan")    # the module (coverage.plan is also the function)

    during = []
    original = plan_module.build_plan

    def spy(*args, **kwargs):
        during.append(gc.isenabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(plan_module, "build_plan", spy)
    assert gc.isenabled()
    plan(default_face, zones=default_zones, threads=2)
    assert during == [False] and gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        plan(default_face, threads=2)          # the zone map made in the plan too
        assert not gc.isenabled()
        assert gc.collect() == 0
    finally:
        gc.enable()
