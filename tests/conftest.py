import numpy as np
import pytest
from hypothesis import HealthCheck, settings, strategies as st

import compmech as cm

settings.register_profile("default", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


@st.composite
def random_processes(draw, max_states=12, max_vocab=8, ghmm=None):
    """Random HMMs (sometimes sparse) and GHMMs (similarity transforms of HMMs, so they
    generate a valid process with negative entries)."""
    S = draw(st.integers(1, max_states))
    V = draw(st.integers(1, max_vocab))
    seed = draw(st.integers(0, 2**31 - 1))
    as_ghmm = draw(st.booleans()) if ghmm is None else ghmm
    if as_ghmm:
        return cm.processes.random_ghmm_like(S, V, seed)
    sparsity = draw(st.sampled_from([0.0, 0.0, 0.5]))
    return cm.processes.random_hmm(S, V, seed, sparsity=sparsity)


@pytest.fixture
def mess3():
    return cm.processes.mess3(0.05, 0.85)


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    cm.set_num_threads(None)
