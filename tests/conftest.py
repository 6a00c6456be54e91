"""Shared fixtures: the default face and its zone map are built once per test session."""
import numpy as np
import pytest


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
