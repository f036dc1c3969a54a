"""cm.sample: exact distributions (chi-square), reproducibility, shapes and dtypes."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from scipy import stats

import compmech as cm
from reference import ref_stationary
from strategies import random_processes

# Rows are independent draws, so a fixed position across rows is an exact multinomial sample.
P_MIN = 1e-4  # fixed seeds make these deterministic; a broken sampler gives p ~ 0


def _chisq(observed, expected_probs):
    keep = expected_probs > 0
    assert observed[~keep].sum() == 0, "an impossible outcome was sampled"
    n = observed.sum()
    return stats.chisquare(observed[keep], n * expected_probs[keep] / expected_probs[keep].sum()).pvalue


@pytest.mark.parametrize("name", ["mess3", "rrxor", "golden_mean", "even", "zero_one_random"])
def test_token_bigram_and_state_frequencies(name):
    proc = cm.processes.get(name)
    pi, T, V, S = ref_stationary(proc.T), proc.T, proc.vocab_size, proc.num_states
    B = 200_000
    tokens, states = cm.sample(proc, B, 8, seed=2024, return_states=True)
    assert tokens.dtype == np.uint8 and states.dtype == np.uint8 and states.shape == (B, 9)
    ones = np.ones(S)
    # single tokens at several positions (stationary start → same marginal everywhere)
    p_tok = np.array([pi @ T[x] @ ones for x in range(V)])
    for t in (0, 3, 7):
        assert _chisq(np.bincount(tokens[:, t], minlength=V), p_tok) > P_MIN
    # bigrams at positions (4, 5)
    p_bi = np.array([pi @ T[x] @ T[y] @ ones for x in range(V) for y in range(V)])
    obs_bi = np.bincount(tokens[:, 4].astype(int) * V + tokens[:, 5], minlength=V * V)
    assert _chisq(obs_bi, p_bi) > P_MIN
    # hidden states: initial and final marginals are pi; joint (state, token, next state) exact
    for t in (0, 8):
        assert _chisq(np.bincount(states[:, t], minlength=S), pi) > P_MIN
    joint = np.array([pi[i] * T[x, i, j] for i in range(S) for x in range(V) for j in range(S)])
    obs = np.bincount((states[:, 2].astype(int) * V + tokens[:, 2]) * S + states[:, 3], minlength=S * V * S)
    assert _chisq(obs, joint) > P_MIN


def test_chi_square_has_power():
    """The same test rejects a slightly wrong distribution: guards against a vacuous check."""
    proc = cm.processes.mess3()
    tokens = cm.sample(proc, 200_000, 1, seed=1)
    wrong = np.array([0.34, 0.33, 0.33])
    assert _chisq(np.bincount(tokens[:, 0], minlength=3), wrong) < P_MIN


def test_ghmm_samples_the_same_process_as_its_hmm():
    hmm = cm.processes.random_hmm(4, 3, seed=5)
    ghmm = cm.processes.random_ghmm_like(4, 3, seed=5)
    assert np.any(ghmm.T < 0)
    tokens = cm.sample(ghmm, 100_000, 3, seed=77)
    V = 3
    p = np.exp(cm.log_prob(hmm, np.array(np.meshgrid(*[np.arange(V)] * 2, indexing="ij")).reshape(2, -1).T))
    obs = np.bincount(tokens[:, 1].astype(int) * V + tokens[:, 2], minlength=V * V)
    assert _chisq(obs, p) > P_MIN


def test_initial_distribution_respected(mess3):
    init = np.array([0.7, 0.3, 0.0])
    _, states = cm.sample(mess3, 100_000, 1, seed=4, initial=init, return_states=True)
    assert _chisq(np.bincount(states[:, 0], minlength=3), init) > P_MIN


def test_same_seed_same_output_across_threads_splits_and_lengths(mess3):
    cm.set_num_threads(1)
    a = cm.sample(mess3, 50, 37, seed=123, return_states=True)
    cm.set_num_threads(2)
    b = cm.sample(mess3, 50, 37, seed=123, return_states=True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # batch split with row_offset reproduces the single call
    parts = [cm.sample(mess3, n, 37, seed=123, row_offset=o) for o, n in ((0, 13), (13, 30), (43, 7))]
    np.testing.assert_array_equal(np.concatenate(parts), a[0])
    # a shorter call is a prefix of the longer one; a smaller batch is a prefix of rows
    np.testing.assert_array_equal(cm.sample(mess3, 50, 10, seed=123), a[0][:, :10])
    np.testing.assert_array_equal(cm.sample(mess3, 5, 37, seed=123), a[0][:5])
    # different seeds differ
    assert not np.array_equal(cm.sample(mess3, 50, 37, seed=124), a[0])


@given(proc=random_processes(max_states=6, max_vocab=5), B=st.integers(1, 5), L=st.integers(0, 30),
       seed=st.integers(0, 2**64 - 1))
def test_samples_are_possible_and_beliefs_consistent(proc, B, L, seed):
    """Every sampled sequence has positive probability, and return_beliefs equals cm.beliefs."""
    if proc.is_generalized:
        tokens, b = cm.sample(proc, B, L, seed=seed, return_beliefs=True, dtype=np.float64)
    else:
        tokens, states, b = cm.sample(proc, B, L, seed=seed, return_states=True, return_beliefs=True,
                                      dtype=np.float64)
        assert states.shape == (B, L + 1) and states.max(initial=0) < proc.num_states
        # each hidden transition is possible
        if L:
            assert np.all(proc.T[tokens.astype(int), states[:, :-1].astype(int), states[:, 1:].astype(int)] > 0)
    assert tokens.shape == (B, L) and tokens.max(initial=0) < proc.vocab_size
    lp = cm.log_prob(proc, tokens)
    assert np.all(np.isfinite(lp))
    np.testing.assert_allclose(b, cm.beliefs(proc, tokens, dtype=np.float64), atol=1e-9 * max(1, np.abs(b).max(initial=1)))


def test_token_dtype_is_smallest_unsigned():
    big = cm.processes.random_hmm(2, 300, seed=0)
    assert cm.sample(big, 2, 3, seed=0).dtype == np.uint16
    assert cm.sample(cm.processes.mess3(), 2, 3, seed=0).dtype == np.uint8


def test_device_returns_torch(mess3):
    t, s = cm.sample(mess3, 3, 5, seed=0, return_states=True, device="cpu")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and s.shape == (3, 6)
    np.testing.assert_array_equal(t.numpy(), cm.sample(mess3, 3, 5, seed=0))


def test_empty_shapes(mess3):
    assert cm.sample(mess3, 0, 10, seed=0).shape == (0, 10)
    assert cm.sample(mess3, 4, 0, seed=0).shape == (4, 0)
    coin = cm.processes.coin(0.25)
    t = cm.sample(coin, 1, 100_000, seed=0)
    assert abs((t == 0).mean() - 0.25) < 0.01


def test_zero_probability_outcomes_never_drawn():
    proc = cm.processes.golden_mean(0.5)  # no "11"
    t = cm.sample(proc, 1000, 200, seed=8)
    assert not np.any((t[:, 1:] == 1) & (t[:, :-1] == 1))


@pytest.mark.parametrize("S,V", [(300, 3), (2, 300)])
def test_generic_path_for_large_s_or_v(S, V):
    """More than 256 states or tokens bypasses the packed fast path; same statistics."""
    proc = cm.processes.random_hmm(S, V, seed=1, concentration=0.5)
    pi, T = ref_stationary(proc.T), proc.T
    tokens, states = cm.sample(proc, 100_000, 2, seed=3, return_states=True)
    assert states.dtype == (np.uint16 if S > 256 else np.uint8)
    p_tok = np.einsum("i,xij->x", pi, T)
    if V > 50:  # pool rare tokens so expected counts stay large enough for chi-square
        order = np.argsort(p_tok)
        groups = np.zeros(V, int)
        groups[order] = np.minimum(np.arange(V) // 30, V // 30 - 1)
        obs = np.bincount(groups[tokens[:, 1]], minlength=groups.max() + 1)
        exp = np.bincount(groups, weights=p_tok)
    else:
        obs, exp = np.bincount(tokens[:, 1], minlength=V), p_tok
    assert _chisq(obs, exp) > P_MIN
    assert np.all(T[tokens[:, 0].astype(int), states[:, 0].astype(int), states[:, 1].astype(int)] > 0)
