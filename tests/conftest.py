"""Shared fixtures: the default face and its zone map are built once per test session."""
import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

# the suite's own chart cache (coverage.chart.cache_dir), shared with the commands it runs and
# removed at the end: nothing read from or left in the user's
_CHART_CACHE = tempfile.mkdtemp(prefix="coverage-test-cache-")
os.environ["COVERAGE_CACHE_DIR"] = _CHART_CACHE
atexit.register(shutil.rmtree, _CHART_CACHE, True)


@pytest.fixture(scope="session")
def default_face():
    from coverage import Face

    return Face.default()


@pytest.fixture(scope="session")
def default_zones(default_face):
    from coverage import ZoneMap

    return ZoneMap.default(default_face)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def auto_plan(default_face, default_zones):
    """The default face's automatic plan (roller, then pen and touch-ups), made once."""
    from coverage import plan

    return plan(default_face, zones=default_zones)


@pytest.fixture(scope="session")
def roller_plan(default_face, default_zones):
    """The default face's roller-only plan, made once."""
    from coverage import plan

    return plan(default_face, zones=default_zones, device="roller")


@pytest.fixture(scope="session", autouse=True)
def every_plan_matches_the_schema():
    """Every plan the suite makes (planned, re-lifted, resumed) is checked against the
    published JSON Schema as it is made."""
    import copy
    import dataclasses
    import sys

    from coverage.planio import plan_document, schema_errors

    def checked(make, plan_of):
        def wrapper(*args, **kwargs):
            result = make(*args, **kwargs)
            plan = plan_of(result)
            # on a copy whose zone map is its own: a re-lifted plan builds its zones only when
            # they are read (tested), and describing it reads them
            doc = plan_document(dataclasses.replace(plan, zones=copy.copy(plan.zones)))
            doc["arrays"].update(file="PLAN.npz", sha256="0" * 64)
            errors = schema_errors(doc)
            assert not errors, errors[:3]
            return result
        return wrapper

    plan_mod, relift, resume = (sys.modules["coverage.plan"], pytest.importorskip("coverage.relift"),
                                pytest.importorskip("coverage.resume"))
    patched = [(plan_mod, "build_plan", lambda p: p), (relift.Retargeter, "retarget", lambda r: r.plan),
               (resume, "remaining", lambda r: r.plan)]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
    for owner, name, plan_of in patched:
        setattr(owner, name, checked(getattr(owner, name), plan_of))
    yield
    for owner, name, original in saved:
        setattr(owner, name, original)
