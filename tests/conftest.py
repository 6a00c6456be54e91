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
