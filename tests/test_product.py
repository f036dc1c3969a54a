"""Product processes run factor by factor: beliefs, log-probabilities and samples against the
joint process (float64 numpy reference on the kron-built joint T), per-factor bit-identity, and
the sampling stream (reproducible across threads, batch splits and row offsets)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

import compmech as cm
from compmech._product import factor_seed, split_tokens
from reference import ref_beliefs


@st.composite
def factor_lists(draw, max_factors=3, max_states=4, max_vocab=3):
    n = draw(st.integers(1, max_factors))
    out = []
    for _ in range(n):
        S, V = draw(st.integers(1, max_states)), draw(st.integers(1, max_vocab))
        seed = draw(st.integers(0, 2**31 - 1))
        kind = draw(st.sampled_from(["hmm", "hmm", "sparse", "ghmm"]))
        if kind == "ghmm":
            out.append(cm.processes.random_ghmm_like(S, V, seed))
        else:
            out.append(cm.processes.random_hmm(S, V, seed, sparsity=0.5 if kind == "sparse" else 0.0))
    return out


def _possible_tokens(proc, B, L, seed):
    """Joint tokens with positive probability (sampled from the joint process itself)."""
    joint = cm.GHMM(proc.T) if proc.is_generalized else cm.HMM(proc.T)
    # periodic factors make the joint chain non-ergodic: start it from the product's stationary
    return cm.sample(joint, B, L, seed=seed, initial=proc.stationary)


@settings(max_examples=30, deadline=None)
@given(fs=factor_lists(), B=st.integers(1, 4), L=st.integers(0, 8), seed=st.integers(0, 2**32))
def test_beliefs_and_log_prob_match_the_joint_reference(fs, B, L, seed):
    proc = cm.processes.product(fs)
    tokens = _possible_tokens(proc, B, L, seed)
    ref_b, ref_lp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w)
    b, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True)
    assert b.shape == (B, L, proc.num_states)
    np.testing.assert_allclose(b, ref_b, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(ref_b).max(initial=1)))
    np.testing.assert_allclose(lp, ref_lp, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cm.log_prob(proc, tokens), ref_lp, rtol=1e-9, atol=1e-9)
    # factors=True: each factor's beliefs are exactly cm.beliefs of that factor on its tokens
    per = cm.beliefs(proc, tokens, dtype=np.float64, factors=True)
    for f, t, bf in zip(fs, split_tokens(proc, tokens), per):
        np.testing.assert_array_equal(bf, cm.beliefs(f, t, dtype=np.float64))


def test_token_encoding_is_row_major_over_factors():
    a, b, c = cm.processes.coin(0.3), cm.processes.mess3(), cm.processes.random_hmm(2, 4, seed=1)
    proc = cm.processes.product([a, b, c])
    x = np.arange(proc.vocab_size)[None]
    parts = split_tokens(proc, x)
    np.testing.assert_array_equal((parts[0].astype(int) * 3 + parts[1]) * 4 + parts[2], x)
    # and agrees with the joint T's layout: T[x] = kron(T_a[x_a], T_b[x_b], T_c[x_c])
    for xx in (0, 7, 23):
        k = np.kron(np.kron(a.T[parts[0][0, xx]], b.T[parts[1][0, xx]]), c.T[parts[2][0, xx]])
        np.testing.assert_allclose(proc.T[xx], k)


def test_float32_output_and_torch_and_1d():
    proc = cm.processes.product([cm.processes.mess3(), cm.processes.rrxor()])
    tokens = _possible_tokens(proc, 3, 9, 5)
    b64 = cm.beliefs(proc, tokens, dtype=np.float64)
    b32 = cm.beliefs(proc, tokens)
    assert b32.dtype == np.float32
    np.testing.assert_allclose(b32, b64, rtol=1e-5, atol=1e-7)
    bt = cm.beliefs(proc, torch.from_numpy(tokens.astype(np.int64)))
    assert isinstance(bt, torch.Tensor)
    np.testing.assert_array_equal(bt.numpy(), b32)
    np.testing.assert_array_equal(cm.beliefs(proc, tokens[1]), b32[1])
    assert cm.log_prob(proc, tokens[1]).shape == ()
    out = np.empty_like(b64)
    assert cm.beliefs(proc, tokens, dtype=np.float64, out=out) is out
    np.testing.assert_array_equal(out, b64)


def test_impossible_tokens():
    proc = cm.processes.product([cm.processes.mess3(), cm.processes.golden_mean(0.5)])  # no "11" in factor 1
    tokens = np.array([[1, 1, 0], [0, 0, 0]])  # joint 1 = (0, 1): factor 1 emits 1 twice
    with pytest.raises(ValueError, match="factor 1"):
        cm.beliefs(proc, tokens)
    b, lp = cm.beliefs(proc, tokens, on_zero="nan", return_log_prob=True, dtype=np.float64)
    assert np.isnan(b[0, 1:]).all() and np.isfinite(b[1]).all()
    assert lp[0] == -np.inf and np.isfinite(lp[1])
    ref_b, ref_lp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w)
    np.testing.assert_allclose(b[1], ref_b[1], rtol=1e-12)
    np.testing.assert_allclose(lp[1], ref_lp[1], rtol=1e-12)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        cm.beliefs(proc, np.array([[0, 6]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        cm.log_prob(proc, np.array([[-1, 0]]))
    with pytest.raises(TypeError, match="integer"):
        cm.beliefs(proc, np.array([[0.5]]))
    with pytest.raises(ValueError, match="product process"):
        cm.beliefs(cm.processes.mess3(), np.array([[0]]), factors=True)
    with pytest.raises(ValueError, match="product process"):
        cm.sample(cm.processes.mess3(), 1, 1, seed=0, factors=True)


def test_initial_of_product_form_and_not():
    f1, f2 = cm.processes.mess3(), cm.processes.random_hmm(2, 2, seed=4)
    proc = cm.processes.product([f1, f2])
    tokens = _possible_tokens(proc, 3, 6, 1)
    e1, e2 = np.array([0.2, 0.5, 0.3]), np.array([0.9, 0.1])
    prod_init = np.kron(e1, e2)
    ref_b, ref_lp = ref_beliefs(proc.T, tokens, prod_init, proc.w)
    b, lp = cm.beliefs(proc, tokens, initial=prod_init, dtype=np.float64, return_log_prob=True)
    np.testing.assert_allclose(b, ref_b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lp, ref_lp, rtol=1e-10)
    per = cm.beliefs(proc, tokens, initial=prod_init, dtype=np.float64, factors=True)
    # (the factor's initial is the joint's marginal: e1 up to round-off)
    np.testing.assert_allclose(per[0], cm.beliefs(f1, split_tokens(proc, tokens)[0], initial=e1, dtype=np.float64),
                               rtol=1e-13)
    # a correlated initial is not a product: the joint process runs (still exact), and
    # factors=True says why it cannot split
    corr = np.zeros(6)
    corr[[0, 5]] = 0.5
    ref_b, ref_lp = ref_beliefs(proc.T, tokens, corr, proc.w)
    b, lp = cm.beliefs(proc, tokens, initial=corr, dtype=np.float64, return_log_prob=True, on_zero="nan")
    np.testing.assert_allclose(b, ref_b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lp, ref_lp, rtol=1e-10)
    with pytest.raises(ValueError, match="product form"):
        cm.beliefs(proc, tokens, initial=corr, factors=True)
    assert cm.sample(proc, 4, 5, seed=0, initial=corr).shape == (4, 5)


def test_stationary_is_the_product_of_the_factors():
    fs = [cm.processes.mess3(), cm.processes.random_ghmm_like(3, 2, 7)]
    proc = cm.processes.product(fs)
    np.testing.assert_allclose(proc.stationary, np.kron(fs[0].stationary, fs[1].stationary), atol=1e-12)
    np.testing.assert_allclose(proc.stationary @ proc.T.sum(0), proc.stationary, atol=1e-12)
    np.testing.assert_allclose(proc.stationary @ proc.w, 1.0)


# ---- sampling ----------------------------------------------------------------------------------

def test_sample_is_the_factors_streams_combined():
    fs = [cm.processes.mess3(), cm.processes.rrxor(), cm.processes.coin(0.3)]
    proc = cm.processes.product(fs)
    tok, states, bel = cm.sample(proc, 40, 17, seed=99, row_offset=5, return_states=True, return_beliefs=True,
                                 dtype=np.float64)
    assert tok.dtype == np.uint8 and states.shape == (40, 18) and bel.shape == (40, 17, proc.num_states)
    parts = [cm.sample(f, 40, 17, seed=factor_seed(99, i), row_offset=5, return_states=True)
             for i, f in enumerate(fs)]
    joint_tok = (parts[0][0].astype(int) * 2 + parts[1][0]) * 2 + parts[2][0]
    joint_st = (parts[0][1].astype(int) * 5 + parts[1][1]) * 1 + parts[2][1]
    np.testing.assert_array_equal(tok, joint_tok)
    np.testing.assert_array_equal(states, joint_st)
    np.testing.assert_allclose(bel, cm.beliefs(proc, tok, dtype=np.float64), rtol=0, atol=0)
    per = cm.sample(proc, 40, 17, seed=99, row_offset=5, return_beliefs=True, factors=True)[1]
    assert [p.shape for p in per] == [(40, 17, 3), (40, 17, 5), (40, 17, 1)]
    # every hidden transition is possible in the joint process
    assert np.all(proc.T[tok.astype(int), states[:, :-1].astype(int), states[:, 1:].astype(int)] > 0)


def test_sample_reproducible_across_threads_and_splits():
    proc = cm.processes.product([cm.processes.mess3()] * 3)
    cm.set_num_threads(1)
    a = cm.sample(proc, 50, 33, seed=3)
    cm.set_num_threads(2)
    np.testing.assert_array_equal(cm.sample(proc, 50, 33, seed=3), a)
    parts = [cm.sample(proc, n, 33, seed=3, row_offset=o) for o, n in ((0, 20), (20, 30))]
    np.testing.assert_array_equal(np.concatenate(parts), a)
    np.testing.assert_array_equal(cm.sample(proc, 50, 10, seed=3), a[:, :10])
    t = cm.sample(proc, 3, 4, seed=3, device="cpu")
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), a[:3, :4])


def test_sample_distribution_matches_the_joint_process():
    """Chi-square of joint-token bigrams against the joint process's probabilities."""
    fs = [cm.processes.mess3(), cm.processes.golden_mean(0.4)]
    proc = cm.processes.product(fs)
    V = proc.vocab_size
    tok = cm.sample(proc, 200_000, 3, seed=11)
    pi, T, ones = proc.stationary, proc.T, np.ones(proc.num_states)
    p_bi = np.array([pi @ T[x] @ T[y] @ ones for x in range(V) for y in range(V)])
    obs = np.bincount(tok[:, 1].astype(int) * V + tok[:, 2], minlength=V * V)
    keep = p_bi > 0
    assert obs[~keep].sum() == 0
    assert stats.chisquare(obs[keep], obs.sum() * p_bi[keep] / p_bi[keep].sum()).pvalue > 1e-4
    # power: a slightly wrong joint (factors swapped in the encoding) is rejected
    swapped = p_bi.reshape(3, 2, 3, 2).transpose(1, 0, 3, 2).reshape(-1)
    k2 = swapped > 0
    assert obs[~k2].sum() > 0 or stats.chisquare(obs[k2], obs.sum() * swapped[k2] / swapped[k2].sum()).pvalue < 1e-4


def test_five_mess3_factors():
    """The 243-state, 243-token product of five Mess3 runs as five Mess3 propagations."""
    m = cm.processes.mess3()
    proc = cm.processes.product([m] * 5)
    assert (proc.num_states, proc.vocab_size) == (243, 243)
    tok = cm.sample(proc, 64, 20, seed=0)
    per = cm.beliefs(proc, tok, factors=True, dtype=np.float64)
    joint = cm.beliefs(proc, tok[:4], dtype=np.float64)
    ref_b, _ = ref_beliefs(proc.T, tok[:4], proc.stationary, proc.w)
    np.testing.assert_allclose(joint, ref_b, atol=1e-12)
    lp = cm.log_prob(proc, tok)
    np.testing.assert_allclose(lp, sum(cm.log_prob(m, t) for t in split_tokens(proc, tok)), rtol=1e-14)
    assert len(per) == 5 and per[0].shape == (64, 20, 3)


# ---- mixed-state trees -------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(fs=factor_lists(max_factors=3, max_states=3, max_vocab=3), depth=st.integers(0, 4),
       min_prob=st.sampled_from([0.0, 0.0, 1e-3]), dtype=st.sampled_from([np.float64, np.float32]))
def test_msp_tree_from_the_factors_equals_the_joint_tree(fs, depth, min_prob, dtype):
    proc = cm.processes.product(fs)
    joint = cm.GHMM(proc.T) if proc.is_generalized else cm.HMM(proc.T)
    a = cm.msp_tree(proc, depth, min_prob=min_prob, dtype=dtype)
    b = cm.msp_tree(joint, depth, min_prob=min_prob, dtype=dtype, initial=proc.stationary)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for la, lb in zip(a, b):
        if min_prob and len(la) != len(lb):  # a node within round-off of min_prob may go either way
            continue
        assert len(la) == len(lb)
        np.testing.assert_array_equal(la.token, lb.token)
        np.testing.assert_array_equal(la.parent, lb.parent)
        np.testing.assert_allclose(la.probs, lb.probs, rtol=tol, atol=1e-300)
        np.testing.assert_allclose(la.beliefs, lb.beliefs, rtol=tol, atol=tol)
        assert la.beliefs.dtype == np.dtype(dtype)
        # each joint node is one node of every factor's tree
        for i, ft in enumerate(a.factor_trees):
            np.testing.assert_array_equal(la.sequences[:, :].astype(int) if la.depth == 0 else
                                          split_tokens(proc, la.sequences)[i],
                                          ft.level(la.depth).sequences[la.factor_index[:, i]])


def test_msp_tree_of_five_mess3_factors():
    m = cm.processes.mess3()
    proc = cm.processes.product([m] * 5)
    tree = cm.msp_tree(proc, 2, dtype=np.float32)
    lvl = tree.level(2)
    assert len(lvl) == 243**2 and lvl.beliefs.shape == (243**2, 243)
    np.testing.assert_allclose(lvl.probs.sum(), 1.0, rtol=1e-6)  # float32 beliefs: float32 round-off
    # probabilities are products of the factors' word probabilities
    m_tree = cm.msp_tree(m, 2, dtype=np.float32)
    np.testing.assert_allclose(lvl.probs, np.prod(m_tree.level(2).probs[lvl.factor_index], axis=1), rtol=1e-14)
    seq = lvl.sequences[[0, 5000, 59048]]
    np.testing.assert_allclose(lvl.probs[[0, 5000, 59048]], np.exp(cm.log_prob(proc, seq)), rtol=1e-6)


def test_sample_arguments_checked_before_the_factors_run():
    proc = cm.processes.product([cm.processes.mess3()] * 2)
    for kw, msg in ((dict(seed=-1), "seed"), (dict(seed=2**64), "seed"), (dict(seed=1, row_offset=-1), "row_offset")):
        with pytest.raises(ValueError, match=msg):
            cm.sample(proc, 2, 3, **kw)
    with pytest.raises(ValueError, match="^batch"):
        cm.sample(proc, -2, 3, seed=1)
    with pytest.raises(ValueError, match="factor 1 .*no hidden states"):
        cm.sample(cm.processes.product([cm.processes.mess3(), cm.processes.random_ghmm_like(2, 2, 1)]), 2, 3,
                  seed=1, return_states=True)
    assert cm.sample(proc, 0, 5, seed=1).shape == (0, 5)
    assert cm.sample(proc, 3, 0, seed=1, return_beliefs=True)[1].shape == (3, 0, 9)
