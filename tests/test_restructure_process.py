"""The process owns its derived quantities (token weights, next-token probabilities), and each
meaning has one name (myopic entropy in bits in measures; optimal loss in nats in data)."""
import math

import numpy as np
import pytest

import compmech as cm
from compmech import _core

P = cm.processes


@pytest.mark.parametrize("proc", [P.mess3(), P.rrxor(), P.fanizza(), P.post_quantum(), P.random_ghmm_like()],
                         ids=lambda p: p.name)
def test_token_weights_are_cached_read_only_and_the_samplers_numbers(proc):
    tw = proc.token_weights
    assert tw is proc.token_weights and tw.shape == (proc.vocab_size, proc.num_states)
    assert not tw.flags.writeable
    np.testing.assert_array_equal(tw, _core.token_weights(proc.T, proc.w if proc.is_generalized else None))
    np.testing.assert_allclose(tw, proc.T @ proc.w, atol=1e-15)
    b = cm.beliefs(proc, cm.sample(proc, 3, 5, seed=0), dtype=np.float64)
    np.testing.assert_allclose(proc.next_token_probs(b), np.einsum("blS,xSt,t->blx", b, proc.T, proc.w), atol=1e-14)
    lvl = cm.msp_tree(proc, 2).level(2)
    np.testing.assert_allclose(lvl.next_token_probs, proc.next_token_probs(lvl.beliefs), atol=1e-15)


def test_one_name_per_meaning_for_myopic_entropy():
    from compmech import data

    p = P.rrxor()
    nats = data.optimal_loss_per_position(p, 6)
    bits = cm.measures.myopic_entropy(p, 6)
    np.testing.assert_allclose(nats, np.asarray(bits) * math.log(2), rtol=1e-12)
    with pytest.warns(DeprecationWarning, match="optimal_loss_per_position"):
        old = data.myopic_entropy(p, 6)
    np.testing.assert_array_equal(old, nats)
