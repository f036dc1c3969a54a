"""Fixtures and the hypothesis profile only; shared helpers live in reference.py (independent
numpy references) and strategies.py (hypothesis strategies)."""
import os

import pytest
from hypothesis import HealthCheck, settings

import compmech as cm

settings.register_profile("default", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
# CI (CI=true) runs a fixed set of examples, so a landing never depends on the draw; local runs
# keep exploring new ones.
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, database=None)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def mess3():
    return cm.processes.mess3(0.05, 0.85)


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    cm.set_num_threads(None)
