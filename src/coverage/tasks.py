"""A plan's coarse tasks on the machine's cores: threads, with results that do not depend on them.

A plan has a few pieces of work that do not read each other's results: the face's drum
conformity and the zone map; the roller's regions, the pen's texel grid and its two dose
fields; the pen's two cartridges' paths (the main one's contour loops traced ahead) and
candidates; the repair's parts and the roller's safe moves beside the pen's fit.
:class:`Tasks` runs such pieces on threads. The compiled kernels, ContourPy's threaded
tracer and most NumPy and shapely calls release the GIL, so two pieces overlap on two cores
(about 1.5 times the work of one thread per second here; Python's own steps still take
turns).

Every piece is a pure function of its inputs: it computes what the serial code computes,
in the same order within itself, so the plan is the same bit for bit on any number of
threads (``threads=1`` runs each piece as a plain call where its result is first read, in
the order the serial code reads them). Only the thread that made a :class:`Tasks` hands
work to its pool; a piece asked for from another thread runs where it is read, so no piece
ever waits for one queued behind it.

The number of threads: the ``threads`` argument, else ``$COVERAGE_THREADS``, else the
cores this process may run on; at most :data:`MAX_THREADS` (a plan never has more pieces
at once). A batch of scans in worker processes plans each scan on one thread.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import functools
import gc
import os
import threading
import time

import threadpoolctl

from .errors import CoverageError

THREADS_ENV = "COVERAGE_THREADS"
MAX_THREADS = 2
BLAS_LOCK = threading.RLock()   # held while BLAS is limited to one thread (see one_blas_thread)
# Held around GEOS predicates (and shapely.prepare) on geometries a plan's pieces may share:
# the zone map's polygons and keep-outs, and the regions cut from them. A prepared geometry
# builds its indexes when first asked, and shapely releases the GIL in its predicates: two
# threads asking a fresh one at once corrupted GEOS's heap in a stress test (shapely 2.2,
# GEOS 3.14: "malloc(): unsorted double linked list corrupted"). Each call is short; the
# lock makes them take turns.
GEOS_LOCK = threading.RLock()


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def thread_count(threads: int | None = None) -> int:
    """The threads a plan uses: ``threads``, else ``$COVERAGE_THREADS``, else the cores
    available, at most :data:`MAX_THREADS`."""
    where = "threads"
    if threads is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        if not text:
            return min(available_cores(), MAX_THREADS)
        where = f"${THREADS_ENV}"
        try:
            threads = int(text)
        except ValueError:
            raise CoverageError(f"{where} = {text!r} is not a whole number; give 1 or more threads, or leave "
                                f"it unset to use the cores available") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise CoverageError(f"{where} = {threads!r} is not a number of threads; give a whole number, 1 or more "
                            f"(--threads N on the command line)")
    return min(threads, MAX_THREADS)


class _Call:
    """One call of a piece and its outcome, kept for every reader as a future keeps it."""

    def __init__(self, fn, args, kwargs):
        self.call = (fn, args, kwargs)
        self._value, self._error = None, None

    def _run(self) -> None:
        fn, args, kwargs = self.call
        self.call = None
        try:
            self._value = fn(*args, **kwargs)
        except Exception as error:   # kept and raised to every reader
            self._error = error
        except BaseException as error:
            # an interrupt (Ctrl-C): its readers get it too, and it goes on up at once
            # rather than waiting for someone to read the piece
            self._error = error
            raise

    def _outcome(self):
        if self._error is not None:
            raise self._error
        return self._value


class _Later(_Call):
    """A piece run as a plain call when its result is first read, like a future: one
    thread runs every piece in the order the serial code reads them, and a piece nobody
    reads (a head start on work that is asked for again) is never run."""

    def result(self):
        # read by one thread only (the tasks hand one out where they are not shared)
        if self.call is not None:
            self._run()
        return self._outcome()


class _Piece(_Call):
    """A piece handed to the pool: run by a pool thread, or by a thread that needs its
    result before a pool thread has taken it."""

    def __init__(self, fn, args, kwargs, lend: bool = True):
        super().__init__(fn, args, kwargs)
        self.lend = lend
        self.done = threading.Event()
        self._tasks = None

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.done.set()

    def cancel(self) -> None:
        """Drop a piece never run: its readers get ``CancelledError`` rather than waiting."""
        self.call = None
        self._error = cf.CancelledError("the plan's tasks closed before this piece ran")
        self.done.set()

    def result(self):
        if not self.done.is_set():
            self._tasks._help_until(self)
        return self._outcome()


class Tasks:
    """Pieces of one plan run on ``threads`` threads: the caller's and a pool of the others.

    ``with Tasks(threads) as tasks:`` ... ``tasks.submit(fn, *args)`` gives a future-like
    piece whose ``result()`` is ``fn(*args)``; ``tasks.map(fn, items)`` gives ``[fn(item)
    ...]`` in order, the first on the caller's thread. A thread that waits for a piece first
    runs it itself if no pool thread has taken it yet, else the pieces still queued that may
    be lent, oldest first (``concurrent.futures`` has no pool that lends the waiting thread a
    hand, which is why this one is written here). Leaving the block drops the pieces never
    taken (reading one then raises ``CancelledError``) and waits for the ones running.
    """

    def __init__(self, threads: int | None = None):
        self.threads = thread_count(threads)
        self._owner = threading.get_ident()
        self._queue: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"coverage-plan-{i + 1}", daemon=True)
                         for i in range(self.threads - 1)]
        for worker in self._workers:
            worker.start()

    def __enter__(self) -> "Tasks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._ready.notify_all()
        for piece in dropped:
            piece.cancel()
        for worker in self._workers:
            worker.join()
        self._workers = []

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                piece = self._queue.popleft()
            piece.run()

    def _take(self, piece):
        """``piece`` out of the queue if no thread has taken it, else the oldest queued piece
        that may be lent to a waiting thread (or None)."""
        with self._ready:
            try:
                self._queue.remove(piece)
                return piece
            except ValueError:
                pass
            for other in self._queue:
                if other.lend:
                    self._queue.remove(other)
                    return other
            return None

    def _help_until(self, piece: _Piece) -> None:
        while not piece.done.is_set():
            other = self._take(piece)
            if other is None:
                piece.done.wait()
                return
            try:
                other.run()
            finally:
                if not other.done.is_set():      # interrupted before it started
                    other.cancel()

    def submit(self, fn, *args, lend: bool = True, **kwargs):
        """``fn(*args, **kwargs)`` on the pool; with one thread, or asked from a thread other
        than the one that made the tasks, a plain call when its result is first read.

        lend : whether a thread waiting for another piece may run this one meanwhile (False
            for a long piece that the pool's thread should take when it is free: the waiting
            thread would otherwise start it just before what it waits for is done, and leave
            the pool idle)."""
        if not self._workers or threading.get_ident() != self._owner:
            return _Later(fn, args, kwargs)
        piece = _Piece(fn, args, kwargs, lend)
        piece._tasks = self
        with self._ready:
            self._queue.append(piece)
            self._ready.notify()
        return piece

    def map(self, fn, items, then=None) -> list:
        """``[fn(item) for item in items]``: the first item on this thread, the others on the
        pool; ``then()`` is called once they are handed to it (before the first item runs)."""
        items = list(items)
        rest = [self.submit(fn, item) for item in items[1:]]
        if then is not None:
            then()
        if not items:
            return []
        first = fn(items[0])
        return [first] + [f.result() for f in rest]


def serial() -> Tasks:
    """Tasks that run every piece as a plain call, on the caller's thread."""
    return Tasks(1)


class Once:
    """Values computed once per key, whichever thread asks first; a thread that asks for a
    value another is computing waits for it. Only pure results are kept."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cells: dict = {}

    def get(self, key, make):
        with self._lock:
            cell = self._cells.get(key)
            mine = cell is None
            if mine:
                cell = self._cells[key] = cf.Future()
        if mine:
            try:
                cell.set_result(make())
            except BaseException as error:
                cell.set_exception(error)
        return cell.result()


@functools.lru_cache(maxsize=1)
def _blas_controller() -> threadpoolctl.ThreadpoolController:
    """The loaded thread pools, inspected once: ``threadpool_limits`` inspects them on every
    entry (about a millisecond), its controller's ``limit`` only sets them."""
    return threadpoolctl.ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread inside the block, for one thread of the process at a time.

    threadpoolctl's limits are the process's own: two threads limiting and restoring them
    at once could leave them limited after both (the second restores what the first set),
    so the blocks take turns (:data:`BLAS_LOCK`)."""
    with BLAS_LOCK, _blas_controller().limit(limits=1, user_api="blas"):
        yield


_COLLECTOR_LOCK = threading.Lock()
_collector = {"holders": 0, "was_enabled": False, "since": 0.0}
# Longest the collector stays paused while blocks overlap one another (a Dask worker's
# threads may plan scans back to back, so some block is always running): a block that ends
# after this long with others still running collects once, and the pause starts again.
COLLECTOR_PAUSE_MAX_S = 10.0


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector paused inside the block, then restored as it was.

    A plan makes tens of thousands of container objects, most of them freed by reference
    counting as it goes; with the collector running, each 700 of them set off a young
    collection (about 45 a plan) and every tenth of those an older one, and every few plans
    a full collection walked every object of the process (~25 ms with NumPy, SciPy and
    shapely loaded) while holding the GIL, so both of the plan's threads stood still. Paused,
    the objects the plan leaves behind are looked at once, by the first young collection
    after it. The collector is the process's own: blocks on several threads at once share
    one pause, and the state found by the first is restored when the last ends (a pause
    started by the caller is left as it is). The pause keeps no memory back: a plan of the
    bundled face leaves no unreachable reference cycles (a full collection after it finds
    none: tested), everything it drops is freed by reference counting as it goes. Blocks that
    keep overlapping (a Dask worker planning scans on several threads) never leave the
    collector off for long: one that ends more than :data:`COLLECTOR_PAUSE_MAX_S` into the
    pause, with others still running, collects once (what the rest of the process dropped)."""
    with _COLLECTOR_LOCK:
        if _collector["holders"] == 0:
            _collector["was_enabled"] = gc.isenabled()
            _collector["since"] = time.monotonic()
            gc.disable()
        _collector["holders"] += 1
    try:
        yield
    finally:
        with _COLLECTOR_LOCK:
            _collector["holders"] -= 1
            overdue = (_collector["holders"] > 0 and _collector["was_enabled"]
                       and time.monotonic() - _collector["since"] > COLLECTOR_PAUSE_MAX_S)
            if overdue:
                _collector["since"] = time.monotonic()
            if _collector["holders"] == 0 and _collector["was_enabled"]:
                gc.enable()
        if overdue:
            gc.collect()
