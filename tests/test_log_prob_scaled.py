"""cm.log_prob's own arithmetic (ScaledLogProb, csrc/include/compmech/kernels.hpp): unnormalised
propagation v' = v T[x] with exact power-of-two rescaling every 8 positions (or sooner when the
norm falls below 2^-64), no division. Every path that can serve a row (tiled blocks of 32 rows
on AVX-512 or 12 on AVX2, 4-lane blocks of 16, scalar blocks of 8, single rows, the runtime-S and grouped
many-state paths, the CUDA twin) must give the same bits; `beliefs(..., return_log_prob=True)`
keeps the normalised arithmetic, so the two agree to a few ulp, not bitwise."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import compmech as cm
from reference import ref_beliefs
from strategies import random_processes

MESS3 = cm.processes.mess3(0.05, 0.85)
PROCS = {
    "mess3": MESS3,
    "S4V8": cm.processes.random_hmm(4, 8, seed=1),
    "S2V6": cm.processes.random_hmm(2, 6, seed=3),
    "S4V4": cm.processes.random_hmm(4, 4, seed=8),  # V <= 4: AVX2 tiles too
    "ghmm3V3": cm.processes.random_ghmm_like(3, 3, seed=11),
    "S3V12": cm.processes.random_hmm(3, 12, seed=4),  # V > 8: no lane paths
    "ghmm3": cm.processes.random_ghmm_like(3, 5, seed=2),
    "S7": cm.processes.random_hmm(7, 3, seed=5),  # runtime S
    "S20": cm.processes.random_hmm(20, 4, seed=6),  # rows grouped by token
}


def _alone(proc, tokens, **kw):
    return np.array([cm.log_prob(proc, t, **kw) for t in tokens])


def _threads(n, fn):
    old = cm.get_num_threads()
    try:
        cm.set_num_threads(n)
        return fn()
    finally:
        cm.set_num_threads(old)


@pytest.mark.parametrize("name", list(PROCS))
@pytest.mark.parametrize("L", [1, 7, 8, 9, 16, 23, 70])
def test_every_path_gives_the_same_bits(name, L):
    """83 rows = two 8-lane blocks + a 4-lane block + a block of 8 + 3 single rows (AVX-512), or
    six 12-row tiled blocks + a block of 8 + 3 single rows (AVX2, V <= 4); each row alone takes
    the scalar path; batch splits and thread counts change nothing."""
    proc = PROCS[name]
    tokens = cm.sample(proc, 83, L, seed=L)
    lp = cm.log_prob(proc, tokens)
    np.testing.assert_array_equal(lp, _alone(proc, tokens))
    np.testing.assert_array_equal(lp, np.concatenate([cm.log_prob(proc, tokens[:45]), cm.log_prob(proc, tokens[45:])]))
    np.testing.assert_array_equal(lp, _threads(1, lambda: cm.log_prob(proc, tokens)))
    # the normalised arithmetic of beliefs(..., return_log_prob=True) agrees to a few ulp
    _, blp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True)
    np.testing.assert_allclose(lp, blp, rtol=1e-14, atol=1e-13)
    _, rlp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w, proc.zero_tol)
    np.testing.assert_allclose(lp, rlp, rtol=1e-10, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(proc=random_processes(), B=st.integers(1, 90), L=st.integers(0, 60), seed=st.integers(0, 2**32))
def test_matches_reference_and_normalised_arithmetic(proc, B, L, seed):
    tokens = cm.sample(proc, B, L, seed=seed)
    lp = cm.log_prob(proc, tokens)
    _, rlp = ref_beliefs(proc.T, tokens)
    np.testing.assert_allclose(lp, rlp, rtol=1e-9, atol=1e-9)
    _, blp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True)
    np.testing.assert_allclose(lp, blp, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(lp, _alone(proc, tokens))


@settings(max_examples=40, deadline=None)
@given(proc=random_processes(ghmm=False, max_states=6, max_vocab=4), L=st.integers(1, 40),
       seed=st.integers(0, 2**32))
def test_impossible_tokens_where_the_reference_finds_them(proc, L, seed):
    """Random (often impossible) sequences: -inf exactly where beliefs(..., on_zero="nan") and the
    reference meet a zero-probability token, and "raise" names the same first position."""
    tokens = np.random.default_rng(seed).integers(0, proc.vocab_size, size=(45, L))
    lp = cm.log_prob(proc, tokens, on_zero="nan")
    b, blp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True, on_zero="nan")
    _, rlp = ref_beliefs(proc.T, tokens)
    np.testing.assert_array_equal(np.isinf(lp), np.isinf(rlp))
    np.testing.assert_array_equal(np.isinf(lp), np.isinf(blp))
    np.testing.assert_allclose(lp[np.isfinite(lp)], rlp[np.isfinite(rlp)], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(lp, _alone(proc, tokens, on_zero="nan"))
    if np.isinf(lp).any():
        with pytest.raises(ValueError) as log_err:
            cm.log_prob(proc, tokens)
        with pytest.raises(ValueError) as bel_err:
            cm.beliefs(proc, tokens)
        assert str(log_err.value) == str(bel_err.value)


def _rare_token_process(p):
    """One state; token 1 has probability p, token 0 the rest (as a 2-state HMM, so the lane
    paths carry it)."""
    T = np.zeros((2, 2, 2))
    T[0] = (1.0 - p) * np.eye(2)
    T[1] = p * np.eye(2)
    return cm.HMM(T)


@pytest.mark.parametrize("p", [1e-200, 1e-300, 1e-310])
def test_tiny_probabilities_many_times_in_a_row(p):
    """P = 1e-200 at every position: the log-probability (-46,000 and more) is finite and exact,
    on every path, also for subnormal conditional probabilities (rescaled from the norm's true
    exponent)."""
    proc = _rare_token_process(p)
    rng = np.random.default_rng(0)
    tokens = (rng.random((83, 61)) < 0.7).astype(np.uint8)
    tokens[:5] = 1  # every position rare
    tokens[5, :] = 0
    want = (tokens == 1).sum(1) * np.log(p) + (tokens == 0).sum(1) * np.log1p(-p)
    init = np.array([0.5, 0.5])
    lp = cm.log_prob(proc, tokens, initial=init)
    assert np.isfinite(lp).all()
    np.testing.assert_allclose(lp, want, rtol=1e-13, atol=1e-12)  # 1 - p rounds to 1
    np.testing.assert_array_equal(lp, _alone(proc, tokens, initial=init))
    _, blp = cm.beliefs(proc, tokens, initial=init, dtype=np.float64, return_log_prob=True)
    np.testing.assert_allclose(lp, blp, rtol=1e-14)


def test_rescaling_keeps_small_components_of_the_belief():
    """A state that carries 1e-250 of the mass and then explains a token no other state emits:
    the unnormalised v must not have pushed that component into subnormals."""
    T = np.zeros((3, 2, 2))
    T[0] = [[0.5, 1e-250], [0.0, 0.5]]  # state 0 leaks 1e-250 into state 1
    T[1] = [[0.5 - 1e-250, 0.0], [0.0, 0.0]]
    T[2] = [[0.0, 0.0], [0.0, 0.5]]  # only state 1 emits token 2
    proc = cm.HMM(T)
    tokens = np.array([[0] * 9 + [2] * 5 + [0] * 3] * 40, dtype=np.uint8)
    init = np.array([1.0, 0.0])
    lp = cm.log_prob(proc, tokens, initial=init)
    _, rlp = ref_beliefs(proc.T, tokens, init)
    assert np.isfinite(lp).all()
    np.testing.assert_allclose(lp, rlp, rtol=1e-13)
    np.testing.assert_array_equal(lp, _alone(proc, tokens, initial=init))


@pytest.mark.parametrize("V", [3, 5])
def test_ghmm_zero_tolerance_is_relative_to_the_belief(V):
    """GHMMs: a token whose conditional probability is below the zero tolerance (1e-12) is
    impossible, whatever scale the unnormalised v has reached."""
    proc = cm.processes.random_ghmm_like(3, V, seed=2)
    tokens = cm.sample(proc, 70, 40, seed=9)
    lp = cm.log_prob(proc, tokens, on_zero="nan")
    _, rlp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w, proc.zero_tol)
    np.testing.assert_array_equal(np.isinf(lp), np.isinf(rlp))
    np.testing.assert_allclose(lp, rlp, rtol=1e-9)


def test_empty_and_degenerate_shapes():
    assert cm.log_prob(MESS3, np.zeros((3, 0), np.uint8)).tolist() == [0.0, 0.0, 0.0]
    assert cm.log_prob(MESS3, np.zeros((0, 5), np.uint8)).shape == (0,)
    one = cm.HMM(np.ones((1, 1, 1)))
    assert cm.log_prob(one, np.zeros((40, 33), np.uint8)).tolist() == [0.0] * 40


@pytest.mark.parametrize("name", ["mess3", "S7", "S20", "ghmm3"])
def test_cuda_twin_on_the_emulation(name):
    """The CUDA kernel's log_prob branch (csrc/cuda/beliefs.cu, run by the CPU emulation of the
    .cu sources) follows the same schedule: equal to the CPU's up to the emulation build's
    multiply-add contraction (as for beliefs, tests/test_cuda.py), the same -inf rows, the same
    first impossible position, and exact logarithms of tiny probabilities."""
    torch = pytest.importorskip("torch")
    from compmech import _backend

    proc = PROCS[name]
    tokens = cm.sample(proc, 70, 45, seed=1)
    with _backend.routed(_backend.EmulationRouter()):
        lp = cm.log_prob(proc, torch.from_numpy(tokens)).numpy()
    np.testing.assert_allclose(lp, cm.log_prob(proc, tokens), rtol=1e-13)
    if name == "mess3":
        proc = _rare_token_process(1e-300)
        tokens = np.ones((3, 20), np.uint8)
        tokens[1, 7] = 0
        init = np.array([0.5, 0.5])
        with _backend.routed(_backend.EmulationRouter()):
            lp = cm.log_prob(proc, torch.from_numpy(tokens), initial=init).numpy()
        np.testing.assert_allclose(lp, cm.log_prob(proc, tokens, initial=init), rtol=1e-14)
        sparse = cm.HMM(np.stack([np.eye(2) * 0.5, np.diag([0.5, 0.0]), np.diag([0.0, 0.5])]))
        bad = np.zeros((40, 19), np.uint8)
        bad[33, 11], bad[33, 14] = 1, 2  # state 0 after token 1: token 2 is impossible
        bad[2, 5], bad[2, 6] = 2, 1
        want = cm.log_prob(sparse, bad, on_zero="nan", initial=init)
        assert np.isinf(want).sum() == 2
        with _backend.routed(_backend.EmulationRouter()):
            got = cm.log_prob(sparse, torch.from_numpy(bad), on_zero="nan", initial=init).numpy()
            with pytest.raises(ValueError, match="row 2, position 6 has zero probability"):
                cm.log_prob(sparse, torch.from_numpy(bad), initial=init)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-13)
