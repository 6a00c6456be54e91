"""Every compiled kernel the planner calls, timed against its NumPy twin on the planner's own
input (``coverage-planner bench``: ``plan_kernels`` in the JSON).

The bench's kernel table (:data:`coverage.bench.KERNELS`) times the main kernels on inputs
built for the purpose. This part covers all the others too, without a hand-made input for
each: every wrapper in the package that calls a compiled kernel (its source reads one of
its module's ``coverage._ext`` modules) and has a NumPy twin beside it (``name_reference``,
the convention the tests compare them by) is wrapped while one automatic plan of the
bundled face runs; the input of the wrapper's longest call in that plan is kept (its array
arguments copied before the call, as a kernel may write into them), and afterwards the
wrapper and its twin are timed on it (fresh copies for every call, so each reads the same
input, made before the timed call on both sides: until stop 19 the wrapper's copies were
timed with it and the twin, given its input by keyword, got none). The twin is called with the arguments its own signature names (:data:`ADAPTERS`
and :data:`TWINS` where it takes them in another form).

Left out, and why: methods of objects whose state the calls change
(:class:`coverage.density.StampEffects`: the bench's ``stamp_effect`` cases time them), a
wrapper that changes an object it is given (:func:`coverage.roller.claim` takes each run's
band from its ``Occupancy``), and wrappers the plan does not call (listed under
``not_called``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import pkgutil
import time
import types

import numpy as np
from scipy import sparse

import coverage

STATEFUL = ("density.StampEffects",)   # owners whose methods change their own state
# wrappers whose arguments hold state the call changes (not arrays: not copied per call)
CHANGES_ITS_ARGUMENTS = ("roller.claim",)     # takes each run's band from the Occupancy it is given
KERNEL_REPEATS = 5
# wrappers whose arguments must stay the caller's own objects (the lazy sweep fields check
# that they are given their own arrays): neither kept as copies nor copied per call
SHARED = ("raster.line_walk", "raster.column_mode")
# twins that take the wrapper's input in another form: label -> (wrapper's bound arguments ->
# the twin's keyword arguments)
ADAPTERS = {
    # the twin searches the mesh itself, not the wrapper's grid of it
    "proximity.closest_points": lambda a: {"vertices": a["grid"].vertices, "faces": a["grid"].faces,
                                           **{k: v for k, v in a.items() if k != "grid"}},
}


@dataclasses.dataclass
class Pair:
    """A compiled wrapper and its NumPy twin: ``owner.name`` and ``owner.twin``."""

    label: str           # "module.name" or "module.Class.name"
    owner: object        # the module or class that holds both
    name: str
    twin: str


def _package_modules() -> list:
    """Every module of the package (the compiled ones and this one aside), imported."""
    names = [m.name for m in pkgutil.iter_modules(coverage.__path__) if not m.name.startswith("_")]
    out = []
    for name in sorted(names):
        if name in ("__main__", "kernel_calls"):
            continue
        with contextlib.suppress(ImportError):
            out.append(importlib.import_module(f"coverage.{name}"))
    return out


def _ext_names(module) -> set:
    """The names a module binds to compiled kernel modules (``from ._ext import pen as _kernel``)."""
    return {name for name, value in vars(module).items()
            if isinstance(value, types.ModuleType) and value.__name__.startswith("coverage._ext.")}


def _calls_compiled(func, ext_names: set) -> bool:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    return any(f"{name}." in source for name in ext_names) or "from ._ext import" in source


def compiled_pairs() -> list:
    """Every (wrapper, twin) pair of the package whose wrapper calls a compiled kernel."""
    pairs = []
    for module in _package_modules():
        short = module.__name__.rsplit(".", 1)[-1]
        ext = _ext_names(module)
        owners = [(short, module)] + [(f"{short}.{name}", cls) for name, cls in vars(module).items()
                                      if inspect.isclass(cls) and cls.__module__ == module.__name__]
        for label, owner in owners:
            if label in STATEFUL:
                continue
            for name, twin in vars(owner).items():
                if not name.endswith("_reference") or not callable(twin):
                    continue
                base = name[: -len("_reference")]
                func = vars(owner).get(base)
                if (callable(func) and not inspect.isclass(func) and _calls_compiled(func, ext)
                        and f"{label}.{base}" not in CHANGES_ITS_ARGUMENTS):
                    pairs.append(Pair(f"{label}.{base}", owner, base, name))
    return pairs


def _nbytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value if isinstance(v, np.ndarray))
    return 0


def _resample_twin(a: dict):
    """:func:`coverage.paths.resample_reference` path by path, as :func:`coverage.paths.resample`
    returns them: ``(points, starts)``."""
    from . import paths

    starts = np.asarray(a["starts"], dtype=np.int64)
    parts = [paths.resample_reference(a["uv"][i:j], a["points"][i:j], a["step_mm"])
             for i, j in zip(starts[:-1].tolist(), starts[1:].tolist())]
    out_starts = np.concatenate([[0], np.cumsum([len(p) for p in parts], dtype=np.int64)]).astype(np.int64)
    return (np.concatenate(parts) if parts else np.empty((0, 2))), out_starts


def _by_vertex(pairs) -> tuple:
    """Neighbour pairs ``(i, j)`` grouped by vertex, each vertex's in their own order."""
    i, j = (np.asarray(x) for x in pairs)
    order = np.argsort(i, kind="stable")
    return i[order], j[order]


# twins called in another way than with the wrapper's arguments: label -> (bound arguments -> result)
TWINS = {"paths.resample": _resample_twin}
# results compared in another way: label -> (kernel result, twin result) -> bool
COMPARE = {
    # the same pairs, each vertex's in the same order, the vertices interleaved differently
    "curvature.neighbour_pairs": lambda k, r: same(_by_vertex(k), _by_vertex(r)),
}


def _copied(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    if isinstance(value, list):
        return [_copied(v) for v in value]
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    return value


def _ready(fn, args: tuple, kwargs: dict, copy=_copied):
    """``fn`` on fresh copies of ``args`` and ``kwargs``: ``() -> (() -> result)``, the copies
    made by the outer call, so that only the inner one is timed."""
    def prepare():
        a, k = copy(args), copy(kwargs)
        return lambda: fn(*a, **k)
    return prepare


@dataclasses.dataclass
class Captured:
    """A wrapper's calls during the plan, and the input of its longest one."""

    calls: int = 0
    seconds: float = -1.0   # the longest call's, in the plan
    nbytes: int = 0         # its array arguments' bytes
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)


@contextlib.contextmanager
def recording(pairs: list):
    """Within the block, each pair's wrapper keeps its largest call's arguments (copied):
    yields ``{label: Captured}``. Every binding of the wrapper in the package's modules
    (``from .density import window_sums``) is wrapped too."""
    captured = {p.label: Captured() for p in pairs}
    patched = []   # (owner, attribute, original)
    modules = _package_modules()
    for pair in pairs:
        raw = vars(pair.owner)[pair.name]
        func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw

        def recorder(*args, __func=func, __slot=captured[pair.label], __keep=pair.label not in SHARED, **kwargs):
            __slot.calls += 1
            # the call's input, kept as it was before the call (it may write into it)
            before = (_copied(args), _copied(kwargs)) if __keep else (args, kwargs)
            start = time.perf_counter()
            result = __func(*args, **kwargs)
            elapsed = time.perf_counter() - start
            if elapsed > __slot.seconds:
                __slot.seconds = elapsed
                __slot.args, __slot.kwargs = before
                __slot.nbytes = sum(_nbytes(a) for a in args) + sum(_nbytes(v) for v in kwargs.values())
            return result

        wrapped = staticmethod(recorder) if isinstance(raw, staticmethod) else recorder
        patched.append((pair.owner, pair.name, raw))
        setattr(pair.owner, pair.name, wrapped)
        if inspect.ismodule(pair.owner):
            for module in modules:
                if module is not pair.owner and vars(module).get(pair.name) is func:
                    patched.append((module, pair.name, func))
                    setattr(module, pair.name, recorder)
    try:
        yield captured
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


def same(a, b) -> bool:
    """Whether a kernel's result equals its twin's: arrays equal (NaN where NaN), or within
    1e-9 relative where the twin sums in another order; tuples, lists and dataclass-like
    results part by part."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        a, b = list(a), list(b)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if sparse.issparse(a) or sparse.issparse(b):
        # by their entries, whatever their index types and cached flags
        if not (sparse.issparse(a) and sparse.issparse(b)) or a.shape != b.shape:
            return False
        a, b = sparse.csc_array(a, copy=True), sparse.csc_array(b, copy=True)
        a.sum_duplicates()
        b.sum_duplicates()
        return same([a.indptr, a.indices, a.data], [b.indptr, b.indices, b.data])
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True))
        return bool(np.array_equal(a, b))
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return same([getattr(a, f.name) for f in dataclasses.fields(a)],
                    [getattr(b, f.name) for f in dataclasses.fields(b)])
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True))
    if hasattr(a, "__dict__") and hasattr(b, "__dict__") and type(a) is type(b):
        return same(list(vars(a).values()), list(vars(b).values()))
    return bool(a == b)


def _twin_call(pair: Pair, slot: Captured):
    """The wrapper and its twin bound to the wrapper's longest call: ``(kernel, reference)``,
    each ``() -> (() -> result)`` (:func:`_ready`: fresh copies of the input for every call,
    made before the call that is timed, on both sides alike)."""
    wrapper = getattr(pair.owner, pair.name)
    twin = getattr(pair.owner, pair.twin)
    is_method = inspect.isclass(pair.owner) and not isinstance(vars(pair.owner)[pair.name], staticmethod)
    args = slot.args
    if is_method:     # unbound: self first
        self_, args = args[0], args[1:]
        wrapper, twin = getattr(self_, pair.name), getattr(self_, pair.twin)
    bound = inspect.signature(wrapper).bind(*args, **slot.kwargs)
    arguments = dict(bound.arguments)
    if pair.label in ADAPTERS:
        arguments = ADAPTERS[pair.label](arguments)
    copy = _copied if pair.label not in SHARED else (lambda value: value)
    kernel = _ready(wrapper, tuple(args), dict(slot.kwargs), copy)
    if pair.label in TWINS:
        return kernel, _ready(TWINS[pair.label], (arguments,), {}, copy)
    accepted = inspect.signature(twin).parameters
    return kernel, _ready(twin, (), {k: v for k, v in arguments.items() if k in accepted}, copy)


def time_pairs(pairs: list, captured: dict, kernel_repeats: int = KERNEL_REPEATS,
               reference_budget_s: float = 2.0) -> dict:
    """``{label: entry}`` of every pair the plan called: its calls, the largest call's array
    bytes, kernel and reference medians (ms), their ratio and whether they agree; the
    reference is called up to three times, fewer when one call takes ``reference_budget_s``."""
    out = {}
    for pair in pairs:
        slot = captured[pair.label]
        if not slot.calls:
            continue
        try:
            out[pair.label] = _time_pair(pair, slot, kernel_repeats, reference_budget_s)
        except Exception as error:  # noqa: BLE001  (one pair failing must not lose the others)
            out[pair.label] = {"calls": slot.calls, "error": f"{type(error).__name__}: {error}"}
    return out


def _time_pair(pair: Pair, slot: Captured, kernel_repeats: int, reference_budget_s: float) -> dict:
    """One pair timed on its longest call's input (see :func:`time_pairs`)."""
    kernel, reference = _twin_call(pair, slot)
    k_result = kernel()()
    k_times = []
    for _ in range(kernel_repeats):
        call = kernel()
        start = time.perf_counter()
        call()
        k_times.append(time.perf_counter() - start)
    r_times, r_result = [], None
    for _ in range(3):
        call = reference()
        start = time.perf_counter()
        result = call()
        r_times.append(time.perf_counter() - start)
        r_result = result if r_result is None else r_result
        if sum(r_times) >= reference_budget_s:
            break
    k_ms, r_ms = 1e3 * float(np.median(k_times)), 1e3 * float(np.median(r_times))
    return {"calls": slot.calls, "input_bytes": slot.nbytes, "kernel_ms": k_ms, "reference_ms": r_ms,
            "speedup": r_ms / k_ms if k_ms > 0 else None,
            "agree": COMPARE.get(pair.label, same)(k_result, r_result)}


def plan_kernels(make_plan, kernel_repeats: int = KERNEL_REPEATS) -> dict:
    """Run ``make_plan()`` with every pair recorded, then time them:
    ``{"pairs": {label: entry}, "not_called": [labels]}``."""
    pairs = compiled_pairs()
    with recording(pairs) as captured:
        make_plan()
    timed = time_pairs(pairs, captured, kernel_repeats)
    return {"pairs": timed, "not_called": sorted(p.label for p in pairs if p.label not in timed)}
