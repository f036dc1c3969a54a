"""The tiled belief path (S <= 4; csrc/cpu/lanes.hpp) at its edges: on AVX-512 builds blocks of
32 rows (8 lanes x 4 groups, V <= 8), on AVX2 builds blocks of 12 rows (4 lanes x 3 groups,
V <= 4), with remainder rows on the other paths, 8-position token tiles, 16/8-position output
tiles (float32 / float64) written row by row as whole cache lines, non-temporal for outputs over
32 MiB. Every row must have the bits it has alone (single rows take the scalar path), on every
build."""
import numpy as np
import pytest

import compmech as cm
from reference import ref_beliefs

MESS3 = cm.processes.mess3(0.05, 0.85)
STREAM_BYTES = 32 << 20  # csrc/cpu/beliefs.cpp kStreamBytes


def _alone(proc, tokens, dtype, **kw):
    return np.stack([cm.beliefs(proc, tokens[r], dtype=dtype, **kw) for r in range(len(tokens))])


@pytest.mark.parametrize("L", [1, 7, 8, 9, 15, 16, 17, 24, 33, 50])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_lengths_bit_identical(L, dtype):
    """L around the token tile (8) and the output tiles (16 floats, 8 doubles); 70 rows = two
    blocks of 32 plus a remainder of 6."""
    tokens = cm.sample(MESS3, 70, L, seed=L)
    b, lp = cm.beliefs(MESS3, tokens, dtype=dtype, return_log_prob=True)
    assert b.dtype == dtype
    np.testing.assert_array_equal(b, _alone(MESS3, tokens, dtype))
    # log_prob has its own (unnormalised) arithmetic: a few ulp from beliefs' log-probability,
    # and the same bits on every path (tests/test_log_prob_scaled.py)
    lp_alone = cm.log_prob(MESS3, tokens)
    np.testing.assert_allclose(lp, lp_alone, rtol=1e-14)
    np.testing.assert_array_equal(lp_alone, np.array([cm.log_prob(MESS3, t) for t in tokens]))


@pytest.mark.parametrize("B", [31, 32, 33, 47, 48, 64, 65, 97])
def test_batch_sizes_around_the_lane_block(B):
    tokens = cm.sample(MESS3, B, 21, seed=B)
    b = cm.beliefs(MESS3, tokens)
    np.testing.assert_array_equal(b, _alone(MESS3, tokens, np.float32))
    rb, _ = ref_beliefs(MESS3.T, tokens)
    np.testing.assert_allclose(b, rb, rtol=0, atol=1e-6)


# V <= 4 reaches the AVX2 tiles too (token bits as blend selectors); V 5..8 only AVX-512's
SMALL = {"mess3": MESS3, "S4V8": cm.processes.random_hmm(4, 8, seed=1), "ghmm3": cm.processes.random_ghmm_like(3, 5, seed=2),
         "S2V6": cm.processes.random_hmm(2, 6, seed=3), "S4V4": cm.processes.random_hmm(4, 4, seed=8),
         "S2V2": cm.processes.random_hmm(2, 2, seed=9), "S1V3": cm.processes.random_hmm(1, 3, seed=10),
         "ghmm3V3": cm.processes.random_ghmm_like(3, 3, seed=11), "ghmm4V4": cm.processes.random_ghmm_like(4, 4, seed=12)}


@pytest.mark.parametrize("tok_dtype", [np.uint8, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("name", list(SMALL))
def test_token_types_and_widths(tok_dtype, name):
    proc = SMALL[name]
    tokens = cm.sample(proc, 40, 27, seed=7).astype(tok_dtype)
    b, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True)
    np.testing.assert_array_equal(b, _alone(proc, tokens, np.float64))
    np.testing.assert_array_equal(cm.beliefs(proc, tokens), b.astype(np.float32))
    rb, rlp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w, proc.zero_tol)
    np.testing.assert_allclose(b, rb, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lp, rlp, rtol=1e-9)


@pytest.mark.parametrize("B", [11, 12, 13, 25, 37, 61])
@pytest.mark.parametrize("name", ["mess3", "S4V4", "S2V2", "ghmm3V3"])
def test_batch_splits_threads_and_outputs_around_the_avx2_block(B, name):
    """Blocks of 12 rows (AVX2) with remainders, L = 45 (5 token tiles + 5, 2 float32 output
    tiles + 13): fresh and out= outputs in both precisions, 1 and 2 threads, batch splits and
    log_prob all give each row its bits alone."""
    proc = SMALL[name]
    L = 45
    tokens = cm.sample(proc, B, L, seed=B)
    for dtype in (np.float32, np.float64):
        b, lp = cm.beliefs(proc, tokens, dtype=dtype, return_log_prob=True)
        np.testing.assert_array_equal(b, _alone(proc, tokens, dtype))
        cm.set_num_threads(1)  # the default (2 here) comes back after the test (conftest)
        one = cm.beliefs(proc, tokens, dtype=dtype, return_log_prob=True)
        cm.set_num_threads(None)
        np.testing.assert_array_equal(one[0], b)
        np.testing.assert_array_equal(one[1], lp)
        buf = np.full((B, L, proc.num_states), np.nan, dtype)
        assert cm.beliefs(proc, tokens, out=buf) is buf
        np.testing.assert_array_equal(buf, b)
        cut = B // 2
        np.testing.assert_array_equal(np.concatenate([cm.beliefs(proc, tokens[:cut], dtype=dtype),
                                                      cm.beliefs(proc, tokens[cut:], dtype=dtype)]), b)
    lpo = cm.log_prob(proc, tokens)
    np.testing.assert_array_equal(lpo, np.array([cm.log_prob(proc, t) for t in tokens]))
    cm.set_num_threads(1)
    np.testing.assert_array_equal(lpo, cm.log_prob(proc, tokens))
    np.testing.assert_allclose(lpo, lp, rtol=1e-14, atol=1e-13)
    rb, rlp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w, proc.zero_tol)
    np.testing.assert_allclose(b, rb, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lpo, rlp, rtol=1e-10, atol=1e-10)


def _sparse_process():
    """S = 3, V = 3: token x leads to state x, and state s never emits (s + 2) % 3, so after
    token y the token (y + 2) % 3 is impossible."""
    T = np.zeros((3, 3, 3))
    for s in range(3):
        for x in (s, (s + 1) % 3):
            T[x, s, x] = 0.5
    return cm.HMM(T)


def test_impossible_tokens_mid_tile():
    proc = _sparse_process()
    tokens = np.random.default_rng(0).integers(0, 3, size=(70, 37))
    b, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True, on_zero="nan")
    rb, rlp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w, proc.zero_tol)
    assert np.isnan(rb).any() and not np.isnan(rb).all()
    np.testing.assert_array_equal(np.isnan(b), np.isnan(rb))
    np.testing.assert_allclose(b[~np.isnan(b)], rb[~np.isnan(rb)], atol=1e-12)
    np.testing.assert_array_equal(np.isinf(lp), np.isinf(rlp))
    np.testing.assert_array_equal(b, _alone(proc, tokens, np.float64, on_zero="nan"))
    np.testing.assert_allclose(lp, cm.log_prob(proc, tokens, on_zero="nan"), rtol=1e-14)
    # "raise" names the first impossible token in row-major order, also inside a lane block
    ok = cm.sample(proc, 40, 37, seed=1)
    assert not np.isinf(cm.log_prob(proc, ok, on_zero="nan")).any()
    bad = ok.copy()
    t = 21  # mid-tile
    bad[35, t] = (bad[35, t - 1] + 2) % 3
    with pytest.raises(ValueError, match=rf"row 35, position {t} has zero probability"):
        cm.beliefs(proc, bad)
    with pytest.raises(ValueError, match=rf"row 35, position {t} has zero probability"):
        cm.log_prob(proc, bad)


def _finite_and_row_by_row(proc, tokens, init):
    """float64 beliefs and log-probabilities of the batch: finite, and bit-identical to each row's
    own call (the lanes against the one-row path)."""
    b, lp = cm.beliefs(proc, tokens, initial=init, dtype=np.float64, return_log_prob=True)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(b))
    np.testing.assert_array_equal(b, _alone(proc, tokens, np.float64, initial=init))
    np.testing.assert_array_equal(lp, np.array([cm.beliefs(proc, t, initial=init, dtype=np.float64,
                                                           return_log_prob=True)[1] for t in tokens]))
    return b, lp


@pytest.mark.parametrize("step", [-1, 0, 1])
def test_norms_at_the_tiny_bound_in_lanes(step):
    """Norms of exactly kTinyNorm (1e-290, kernels.hpp) and its neighbours: the tiled step's one
    fast-path compare (norm > kTinyNorm's predecessor) must split them as norm < kTinyNorm does."""
    tiny = 1e-290
    v = tiny if step == 0 else np.nextafter(tiny, step * np.inf)
    T = np.zeros((2, 2, 2))
    T[0] = [[1 - v, 0], [0, 0.5]]
    T[1] = [[v, 0], [0, 0.5]]
    proc = cm.HMM(T)
    init = np.array([1.0, 0.0])  # state 0 throughout: every token 1 has norm v exactly
    tokens = np.random.default_rng(2).integers(0, 2, size=(70, 29))
    b, lp = _finite_and_row_by_row(proc, tokens, init)
    np.testing.assert_array_equal(cm.beliefs(proc, tokens, initial=init), b.astype(np.float32))


def test_tiny_norms_in_lanes():
    """Norms below 1e-290 (scaled before the inverse, logged directly) inside 32-row blocks."""
    T = np.zeros((2, 2, 2))
    T[0] = [[1 - 1e-300, 0], [0, 0.5]]
    T[1] = [[1e-300, 0], [0, 0.5]]
    proc = cm.HMM(T)
    init = np.array([0.5, 0.5])
    tokens = np.random.default_rng(1).integers(0, 2, size=(70, 45))
    b, lp = _finite_and_row_by_row(proc, tokens, init)
    lp_alone = cm.log_prob(proc, tokens, initial=init)
    np.testing.assert_allclose(lp_alone, lp, rtol=1e-14)
    np.testing.assert_array_equal(lp_alone, np.array([cm.log_prob(proc, t, initial=init) for t in tokens]))
    rb, rlp = ref_beliefs(proc.T, tokens, init)
    np.testing.assert_allclose(lp, rlp, rtol=1e-12)


@pytest.mark.parametrize("dtype,L", [(np.float32, 1367), (np.float64, 701)])
def test_streamed_output_matches_cached(dtype, L):
    """Outputs over 32 MiB leave by non-temporal full lines (rows start mid-line: L * 3 values
    is not a multiple of a line); they must equal the same rows computed in small calls."""
    B = 2048
    assert B * L * 3 * np.dtype(dtype).itemsize >= STREAM_BYTES
    tokens = cm.sample(MESS3, B, L, seed=3)
    big = cm.beliefs(MESS3, tokens, dtype=dtype)
    step = 256
    assert step * L * 3 * np.dtype(dtype).itemsize < STREAM_BYTES
    for r in range(0, B, step):
        np.testing.assert_array_equal(big[r:r + step], cm.beliefs(MESS3, tokens[r:r + step], dtype=dtype))
    buf = np.full((B, L, 3), np.nan, dtype)
    assert cm.beliefs(MESS3, tokens, out=buf) is buf
    np.testing.assert_array_equal(buf, big)
    # a buffer starting mid-line: a view one row into a larger array; nothing is written around it
    bigger = np.full((B + 2, L, 3), np.nan, dtype)
    cm.beliefs(MESS3, tokens, out=bigger[1:B + 1])
    np.testing.assert_array_equal(bigger[1:B + 1], big)
    assert np.isnan(bigger[0]).all() and np.isnan(bigger[B + 1]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_view_writes_nothing_around_it(dtype):
    tokens = cm.sample(MESS3, 40, 19, seed=5)
    bigger = np.full((42, 19, 3), np.nan, dtype)
    cm.beliefs(MESS3, tokens, out=bigger[1:41])
    np.testing.assert_array_equal(bigger[1:41], cm.beliefs(MESS3, tokens, dtype=dtype))
    assert np.isnan(bigger[0]).all() and np.isnan(bigger[41]).all()
