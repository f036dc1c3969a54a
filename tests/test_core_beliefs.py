"""cm.beliefs / cm.log_prob against the numpy float64 reference."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import compmech as cm
from strategies import random_processes
from reference import quantum_instrument_ghmm_T, ref_beliefs, ref_w


def _ref(proc, tokens, init=None):
    """Reference beliefs and log-probabilities from ``proc.T`` alone (own stationary
    distribution, own w, own zero tolerance)."""
    return ref_beliefs(proc.T, tokens, init)


def _in_ref_normalisation(proc, b):
    """Library beliefs rescaled so that ``b @ w_ref = 1`` (the reference's normalisation):
    compares directions without borrowing the library's w."""
    return b / (b @ ref_w(proc.T))[..., None]


@given(proc=random_processes(), B=st.integers(1, 40), L=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_matches_reference_on_sampled_sequences(proc, B, L, seed):
    tokens = cm.sample(proc, B, L, seed=seed)
    b64, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True)
    rb, rlp = _ref(proc, tokens)
    scale = max(1.0, np.abs(rb).max())
    np.testing.assert_allclose(b64 @ proc.w, 1.0, atol=1e-9 * scale)  # documented normalisation
    np.testing.assert_allclose(_in_ref_normalisation(proc, b64), rb, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(lp, rlp, rtol=1e-9, atol=1e-9)
    b32 = cm.beliefs(proc, tokens)
    assert b32.dtype == np.float32
    np.testing.assert_allclose(_in_ref_normalisation(proc, b32.astype(np.float64)), rb, rtol=0, atol=1e-5 * scale)


@given(proc=random_processes(ghmm=False, max_states=6, max_vocab=4), L=st.integers(1, 12),
       seed=st.integers(0, 2**32))
def test_random_tokens_nan_mode_matches_reference(proc, L, seed):
    """Arbitrary (often impossible) sequences: NaN rows and -inf log-probs exactly where the
    reference finds a zero-probability token."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, proc.vocab_size, size=(37, L))  # > 16 rows: SIMD lanes and remainder
    b, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True, on_zero="nan")
    rb, rlp = _ref(proc, tokens)
    np.testing.assert_array_equal(np.isnan(b), np.isnan(rb))
    np.testing.assert_allclose(b[~np.isnan(b)], rb[~np.isnan(rb)], atol=1e-9)
    np.testing.assert_array_equal(np.isinf(lp), np.isinf(rlp))
    np.testing.assert_allclose(lp[np.isfinite(lp)], rlp[np.isfinite(rlp)], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cm.log_prob(proc, tokens, on_zero="nan"), lp, rtol=1e-12, atol=1e-12)


def test_alignment_belief_after_prefix(mess3):
    tokens = np.array([2, 0, 1, 1])
    b = cm.beliefs(mess3, tokens, dtype=np.float64)
    eta = mess3.stationary
    for t, x in enumerate(tokens):
        eta = eta @ mess3.T[x]
        eta = eta / eta.sum()
        np.testing.assert_allclose(b[t], eta, atol=1e-15)


def test_custom_initial(mess3):
    init = np.array([1.0, 0.0, 0.0])
    tokens = cm.sample(mess3, 3, 20, seed=3, initial=init)
    b = cm.beliefs(mess3, tokens, initial=init, dtype=np.float64)
    np.testing.assert_allclose(b, _ref(mess3, tokens, init)[0], atol=1e-12)


def test_log_prob_sums_to_one_over_all_sequences():
    proc = cm.processes.random_hmm(4, 3, seed=7)
    seqs = np.array(np.meshgrid(*[np.arange(3)] * 5, indexing="ij")).reshape(5, -1).T
    assert np.isclose(np.exp(cm.log_prob(proc, seqs)).sum(), 1.0, atol=1e-12)


def test_single_sequence_shapes(mess3):
    b, lp = cm.beliefs(mess3, np.array([0, 1, 2], dtype=np.uint8), return_log_prob=True)
    assert b.shape == (3, 3) and lp.shape == ()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.uint64])
def test_any_integer_dtype(mess3, dtype):
    tokens = cm.sample(mess3, 4, 16, seed=1)
    ref = cm.beliefs(mess3, tokens.astype(np.int64))
    np.testing.assert_array_equal(cm.beliefs(mess3, tokens.astype(dtype)), ref)


def test_non_contiguous_and_read_only(mess3):
    tokens = cm.sample(mess3, 6, 40, seed=2).astype(np.int64)
    view = tokens[::2, ::3]
    np.testing.assert_array_equal(cm.beliefs(mess3, view), cm.beliefs(mess3, np.ascontiguousarray(view)))
    ro = tokens.copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(cm.beliefs(mess3, ro), cm.beliefs(mess3, tokens))
    fortran = np.asfortranarray(tokens)
    np.testing.assert_array_equal(cm.beliefs(mess3, fortran), cm.beliefs(mess3, tokens))


def test_torch_in_torch_out(mess3):
    tokens = cm.sample(mess3, 4, 12, seed=5)
    t = torch.from_numpy(tokens.astype(np.int64))
    b, lp = cm.beliefs(mess3, t, return_log_prob=True)
    assert isinstance(b, torch.Tensor) and isinstance(lp, torch.Tensor)
    assert b.dtype == torch.float32 and lp.dtype == torch.float64
    np.testing.assert_array_equal(b.numpy(), cm.beliefs(mess3, tokens))
    # non-contiguous torch input
    np.testing.assert_array_equal(cm.beliefs(mess3, t[:, ::2]).numpy(), cm.beliefs(mess3, tokens[:, ::2]))


def test_edge_sizes():
    coin = cm.processes.coin(0.3)  # S = 1
    b, lp = cm.beliefs(coin, np.array([[0, 1, 1]]), return_log_prob=True)
    assert b.shape == (1, 3, 1) and np.all(b == 1)
    assert np.isclose(lp[0], np.log(0.3 * 0.7 * 0.7))
    one_token = cm.HMM(np.array([[[0.5, 0.5], [0.2, 0.8]]]))  # V = 1
    b, lp = cm.beliefs(one_token, np.zeros((2, 4), np.uint8), return_log_prob=True, dtype=np.float64)
    np.testing.assert_allclose(b[:, -1], np.tile(one_token.stationary, (2, 1)), atol=1e-12)
    assert np.allclose(lp, 0)
    empty = cm.beliefs(one_token, np.zeros((3, 0), np.int64))
    assert empty.shape == (3, 0, 2)
    assert cm.beliefs(one_token, np.zeros((0, 5), np.int64)).shape == (0, 5, 2)


def test_very_long_sequence(mess3):
    L = 1_000_000
    tokens = cm.sample(mess3, 1, L, seed=11)
    b, lp = cm.beliefs(mess3, tokens[0], return_log_prob=True)
    assert b.shape == (L, 3) and np.all(np.isfinite(b))
    np.testing.assert_allclose(b.sum(axis=1), 1, atol=1e-5)
    # entropy rate of Mess3 is ~1.5 bits < log2(3): log-prob per token is finite and sensible
    assert -np.log(3) < lp / L < -0.5
    # a later window restarted from the belief before it agrees (renormalisation is exact)
    start = 999_000
    b2 = cm.beliefs(mess3, tokens[0, start:], initial=b[start - 1].astype(np.float64) / b[start - 1].sum(),
                    dtype=np.float64)
    np.testing.assert_allclose(b2, b[start:], atol=1e-5)


def test_thread_count_does_not_change_results(mess3):
    tokens = cm.sample(mess3, 37, 50, seed=9)
    cm.set_num_threads(1)
    one = cm.beliefs(mess3, tokens, return_log_prob=True)
    cm.set_num_threads(2)
    two = cm.beliefs(mess3, tokens, return_log_prob=True)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("name", ["mess3", "rrxor", "golden_mean"])
def test_rows_bit_identical_whatever_the_batch(name):
    """SIMD lanes, scalar remainder rows and single rows share arithmetic: a row's beliefs do
    not depend on which other rows are in the batch."""
    proc = cm.processes.get(name)
    tokens = cm.sample(proc, 37, 29, seed=4)
    b, lp = cm.beliefs(proc, tokens, return_log_prob=True, dtype=np.float64)
    for r in (0, 5, 16, 33, 36):
        br, lpr = cm.beliefs(proc, tokens[r], return_log_prob=True, dtype=np.float64)
        np.testing.assert_array_equal(br, b[r])
        np.testing.assert_allclose(lpr, lp[r], rtol=1e-13)  # lanes sum logs as mantissa * 2^k


@pytest.mark.parametrize("S", range(5, 14))
@pytest.mark.parametrize("kind", ["hmm3", "hmm5", "ghmm"])
def test_mid_size_state_counts(S, kind):
    """S = 5..12 take compile-time widths (beliefs.cpp, dispatch_beliefs: 4-lane table lookups
    for blocks of 16 rows when V <= 4, unrolled per-row steps otherwise, except at S = 8), the
    rest the runtime-S loop: every S against the float64 reference, and a row's bits independent of the batch, of
    the rows around it and of the thread count."""
    if kind == "ghmm":
        proc = cm.processes.random_ghmm_like(S, 4, S)
    else:
        proc = cm.processes.random_hmm(S, int(kind[-1]), seed=S)
    tokens = cm.sample(proc, 37, 40, seed=S)
    b, lp = cm.beliefs(proc, tokens, return_log_prob=True, dtype=np.float64)
    ref_b, ref_lp = _ref(proc, tokens)
    np.testing.assert_allclose(_in_ref_normalisation(proc, b), ref_b, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(lp, ref_lp, rtol=1e-9)
    np.testing.assert_allclose(cm.log_prob(proc, tokens), ref_lp, rtol=1e-9)
    for r in (0, 3, 20, 36):  # blocks of 16 lanes, of 8 or 4 rows, and the scalar tail
        np.testing.assert_array_equal(cm.beliefs(proc, tokens[r], dtype=np.float64), b[r])
    try:
        cm.set_num_threads(1)
        one = cm.beliefs(proc, tokens, return_log_prob=True, dtype=np.float64)
    finally:
        cm.set_num_threads(0)
    np.testing.assert_array_equal(one[0], b)
    np.testing.assert_array_equal(one[1], lp)


def test_out_buffer(mess3):
    tokens = cm.sample(mess3, 20, 9, seed=6)
    ref = cm.beliefs(mess3, tokens, dtype=np.float64)
    buf = np.empty((20, 9, 3), np.float64)
    got = cm.beliefs(mess3, tokens, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, ref)
    buf32 = torch.empty((20, 9, 3), dtype=torch.float32)
    got = cm.beliefs(mess3, torch.from_numpy(tokens), out=buf32)
    assert got is buf32
    np.testing.assert_array_equal(buf32.numpy(), ref.astype(np.float32))
    one = np.empty((9, 3), np.float32)
    assert cm.beliefs(mess3, tokens[0], out=one) is one
    np.testing.assert_array_equal(one, ref[0].astype(np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        cm.beliefs(mess3, tokens, out=np.empty((20, 9, 2), np.float32))
    with pytest.raises(TypeError, match="out must be a float32 or float64"):
        cm.beliefs(mess3, tokens, out=np.empty((20, 9, 3), np.int32))
    with pytest.raises(ValueError, match="C-contiguous"):
        cm.beliefs(mess3, tokens, out=np.empty((20, 9, 6), np.float32)[:, :, ::2])
    ro = np.empty((20, 9, 3), np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        cm.beliefs(mess3, tokens, out=ro)


@given(proc=random_processes(ghmm=False, ergodic=False), L=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_non_ergodic_processes_from_an_explicit_initial_belief(proc, L, seed):
    """Mixtures (several stationary distributions) and the other HMM kinds, started from a
    random initial belief."""
    init = np.random.default_rng(seed).dirichlet(np.ones(proc.num_states))
    tokens = cm.sample(proc, 9, L, seed=seed, initial=init)
    b, lp = cm.beliefs(proc, tokens, initial=init, dtype=np.float64, return_log_prob=True)
    rb, rlp = _ref(proc, tokens, init)
    np.testing.assert_allclose(b, rb, atol=1e-9)
    np.testing.assert_allclose(lp, rlp, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make", [
    lambda: cm.processes.random_hmm(80, 3, seed=1, sparsity=0.6),            # S > 64
    lambda: cm.processes.random_hmm(5, 300, seed=2),                          # V > 256: 16-bit tokens
    lambda: cm.GHMM(quantum_instrument_ghmm_T(11, 3, seed=3)),                # quasi-probabilistic, S = 66
    lambda: cm.processes.random_hmm(70, 260, seed=4, concentration=0.05),   # both, near-deterministic
], ids=["S80", "V300", "ghmm_S66", "S70_V260"])
def test_large_state_and_vocabulary_counts(make):
    proc = make()
    tokens = cm.sample(proc, 6, 25, seed=9)
    assert tokens.max() < proc.vocab_size
    b, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True)
    rb, rlp = _ref(proc, tokens)
    assert np.all(np.isfinite(rlp))  # sampled sequences are possible
    np.testing.assert_allclose(_in_ref_normalisation(proc, b), rb, atol=1e-9 * max(1, np.abs(rb).max()))
    np.testing.assert_allclose(lp, rlp, rtol=1e-9)
    np.testing.assert_allclose(cm.log_prob(proc, tokens), rlp, rtol=1e-9)
