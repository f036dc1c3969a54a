"""Calls whose number of outputs depends on flags return named tuples that still unpack."""
import numpy as np

import compmech as cm
from compmech.results import (BeliefsWithLogProb, SampleWithBeliefs, SampleWithStates,
                              SampleWithStatesAndBeliefs)


def test_sample_results_are_named_and_unpack():
    p = cm.processes.mess3()
    tok = cm.sample(p, 3, 5, seed=1)
    assert isinstance(tok, np.ndarray)
    r = cm.sample(p, 3, 5, seed=1, return_states=True)
    assert isinstance(r, SampleWithStates) and r._fields == ("tokens", "states")
    t, s = r
    np.testing.assert_array_equal(t, tok)
    assert s.shape == (3, 6) and r.states is s
    r = cm.sample(p, 3, 5, seed=1, return_beliefs=True)
    assert isinstance(r, SampleWithBeliefs)
    np.testing.assert_array_equal(r.beliefs, cm.beliefs(p, tok))
    r = cm.sample(p, 3, 5, seed=1, return_states=True, return_beliefs=True)
    assert isinstance(r, SampleWithStatesAndBeliefs) and len(r) == 3
    np.testing.assert_array_equal(r.tokens, tok)


def test_product_sample_and_beliefs_are_named_too():
    p = cm.processes.product([cm.processes.mess3(), cm.processes.golden_mean()])
    r = cm.sample(p, 2, 4, seed=0, return_states=True)
    assert isinstance(r, SampleWithStates)
    r2 = cm.beliefs(p, r.tokens, return_log_prob=True)
    assert isinstance(r2, BeliefsWithLogProb)
    np.testing.assert_allclose(r2.log_prob, cm.log_prob(p, r.tokens))


def test_beliefs_with_log_prob_is_named():
    p = cm.processes.mess3()
    tok = cm.sample(p, 2, 6, seed=2)
    r = cm.beliefs(p, tok, return_log_prob=True)
    assert isinstance(r, BeliefsWithLogProb) and r._fields == ("beliefs", "log_prob")
    b, lp = r
    np.testing.assert_allclose(lp, cm.log_prob(p, tok), rtol=1e-14)
    np.testing.assert_array_equal(b, cm.beliefs(p, tok))
