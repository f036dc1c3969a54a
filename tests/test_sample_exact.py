"""The sampling draw is exact to 2^-64: alias thresholds, the draw on given Philox words, the
(row, position) stream layout, and bit-identity of every CPU sampling path (scalar, packed,
AVX-512 and AVX2 register tables), including the rare draws whose high word leaves the decision open."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import compmech as cm
from compmech import _core
from compmech.sampling import _force_path
from strategies import near_deterministic_hmm

M64 = (1 << 64) - 1
PATHS = _core.sample_paths()


# ---- an independent reference: numpy Philox4x32-10 and the draw in exact integers ---------------

def philox(seed: int, rows, domain: int, block) -> np.ndarray:
    """Philox4x32-10 words (n, 4) for counters (block, domain, row_lo, row_hi), key = seed."""
    rows = np.asarray(rows, dtype=np.uint64)
    block = np.broadcast_to(np.asarray(block, dtype=np.uint64), rows.shape)
    c = [block & 0xFFFFFFFF, np.full(rows.shape, domain, np.uint64), rows & 0xFFFFFFFF, rows >> np.uint64(32)]
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    for _ in range(10):
        p0 = c[0] * np.uint64(0xD2511F53)
        p1 = c[2] * np.uint64(0xCD9E8D57)
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & 0xFFFFFFFF,
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & 0xFFFFFFFF]
        k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
        k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return np.stack(c, axis=-1).astype(np.uint32)


def exact_draw(hi: int, lo: int, thresh, alias) -> int:
    """The draw's definition in unbounded integers: U = hi 2^32 + lo, P = U K, bucket P >> 64,
    own outcome when P mod 2^64 < threshold, else the alias."""
    K = len(thresh)
    P = ((int(hi) << 32) | int(lo)) * K
    b = P >> 64
    return b if (P & M64) < int(thresh[b]) else int(alias[b])


def outcome_probs(thresh, alias, bits=64) -> list:
    """Exact probability (as a count of the 2^bits uniforms U) of each outcome of one alias table."""
    K = len(thresh)
    counts = [0] * K
    start = lambda x: -(-x // K)  # smallest U with U * K >= x
    for b in range(K):
        lo, hi, cut = start(b << bits), start((b + 1) << bits), start((b << bits) + int(thresh[b]))
        counts[b] += cut - lo
        counts[int(alias[b])] += hi - cut
    return counts


def row_tables(proc, init=None):
    packed, thresh, alias, ithresh, ialias = _core.hmm_sample_tables(proc.T, proc.check_initial(init))
    return thresh, alias, ithresh, ialias


def reference_sample(proc, B, L, seed, row0=0):
    """Tokens and states of cm.sample for an HMM, from numpy Philox and exact_draw alone."""
    thresh, alias, ithresh, ialias = row_tables(proc)
    S = proc.num_states
    tokens = np.zeros((B, L), np.int64)
    states = np.zeros((B, L + 1), np.int64)
    for r in range(B):
        row = row0 + r
        w = philox(seed, [row], 1, 0)[0]
        s = exact_draw(w[0], w[1], ithresh, ialias)
        states[r, 0] = s
        nblk = (L + 3) // 4
        hi = philox(seed, np.full(nblk, row), 0, np.arange(nblk)).ravel()
        lo = philox(seed, np.full(nblk, row), 2, np.arange(nblk)).ravel()
        for t in range(L):
            o = exact_draw(hi[t], lo[t], thresh[s], alias[s])
            tokens[r, t], s = divmod(o, S)
            states[r, t + 1] = s
    return tokens, states


# ---- thresholds --------------------------------------------------------------------------------

@pytest.mark.parametrize("p_rare", [1e-10, 2e-10, 3e-13, 1e-15, 5e-18])
def test_rare_outcomes_keep_their_probability(p_rare):
    """A token of probability 1e-10 (never drawn with 32-bit thresholds) or 2e-10 (42% too rare)
    keeps its probability to ~1e-15 relative: computed exactly from the tables."""
    V = 5
    p = np.array([p_rare, 0.3, 0.0, 0.2, 0.5 - p_rare])
    proc = cm.HMM(p.reshape(V, 1, 1))
    thresh, alias, _, _ = row_tables(proc)
    counts = outcome_probs(thresh[0], alias[0])
    got = np.array([c / 2.0**64 for c in counts])
    assert got[2] == 0.0
    np.testing.assert_allclose(got, p, rtol=1e-13, atol=1e-19)
    # the old draw (one 32-bit word against 32-bit thresholds) gets the rare token badly wrong:
    # the check has power
    old = outcome_probs(thresh[0] >> np.uint64(32), alias[0], bits=32)
    assert abs(old[0] / 2.0**32 - p_rare) > 0.1 * p_rare


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.just(0.0), st.floats(1e-300, 1.0), st.floats(1e-12, 1e-8)), min_size=1, max_size=40))
def test_tables_reproduce_any_distribution(weights):
    w = np.array(weights)
    if w.sum() == 0:
        w[0] = 1.0
    p = w / w.sum()
    proc = cm.HMM(p.reshape(-1, 1, 1))
    thresh, alias, _, _ = row_tables(proc)
    got = np.array(outcome_probs(thresh[0], alias[0]), dtype=float) / 2.0**64
    assert np.all(got[p == 0] == 0)
    np.testing.assert_allclose(got, p, rtol=1e-12, atol=len(p) * 2.0**-62)


# ---- the draw on given words -------------------------------------------------------------------

def _random_table(rng, K):
    p = rng.dirichlet(np.full(K, 0.7))
    p[rng.random(K) < 0.2] = 0.0
    if p.sum() == 0:
        p[0] = 1
    thresh, alias, _, _ = row_tables(cm.HMM((p / p.sum()).reshape(K, 1, 1)))
    return thresh[0], alias[0]


def _hard_words(rng, thresh, K, n_per_bucket=6):
    """High words whose fraction lands in or next to the undecided band of a bucket, and next to
    a bucket boundary (where the low word can carry into the next bucket)."""
    his = []
    for b in range(K):
        th_hi = int(thresh[b]) >> 32
        for target in ((b << 32) + th_hi, (b + 1) << 32):
            centre = target // K
            his += [c for c in range(centre - n_per_bucket, centre + n_per_bucket + 1) if 0 <= c <= 0xFFFFFFFF]
    his = np.array(his, dtype=np.uint64)
    lo_choices = np.array([0, 1, 0xFFFFFFFF, 0x80000000], dtype=np.uint64)
    his = np.repeat(his, 6)
    los = np.concatenate([np.resize(lo_choices, len(his) // 2),
                          rng.integers(0, 1 << 32, len(his) - len(his) // 2, dtype=np.uint64)])
    return his.astype(np.uint32), los.astype(np.uint32)


@pytest.mark.parametrize("K", [1, 2, 3, 9, 27, 100, 1000])
def test_alias_draw_is_the_exact_64_bit_decision(K):
    rng = np.random.default_rng(K)
    thresh, alias = _random_table(rng, K)
    hi_h, lo_h = _hard_words(rng, thresh, K)
    hi = np.concatenate([hi_h, rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)])
    lo = np.concatenate([lo_h, rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)])
    exact, fast, decided = _core.alias_draw_words(thresh, alias, hi, lo)
    want = np.array([exact_draw(h, l, thresh, alias) for h, l in zip(hi, lo)])
    np.testing.assert_array_equal(exact, want)
    # wherever the high word alone decides, it decides right; the hard words do hit the band
    np.testing.assert_array_equal(fast[decided], want[decided])
    assert (~decided[: len(hi_h)]).sum() > 0
    # random words are (almost) always decided by the high word: about 2K in 2^32 are not
    assert (~decided[len(hi_h):]).sum() <= 1


# ---- the stream and the paths ------------------------------------------------------------------

def _gpu_samplers():
    """The CUDA kernels' sampler on the CPU emulation, and on a real GPU when one is visible."""
    runs = {"gpu-emulated": dict(device="cuda", emulate=True)}  # compmech._cuda_emu is always built
    if cm.build_info()["cuda"] and torch.cuda.is_available():
        runs["gpu"] = dict(device="cuda", emulate=False)
    return runs


def _sample_gpu(proc, B, L, seed, row0, device, emulate, return_states=False):
    """The public sampler on the GPU kernels: on the emulation (CPU tensors standing in) or the GPU."""
    import contextlib

    from compmech import _backend

    swap = _backend.routed(_backend.EmulationRouter()) if emulate else contextlib.nullcontext()
    with swap:
        got = cm.sample(proc, B, L, seed=seed, row_offset=row0, return_states=return_states, device="cuda")
    if return_states:
        return tuple(g.cpu().numpy() for g in got)
    return got.cpu().numpy()


def _sample_all_paths(proc, B, L, seed, row0=0, gpu=True, **kw):
    """Tokens (and states) from every CPU path, and from the GPU kernels (emulated; real when present)."""
    out = {}
    for path in PATHS:
        with _force_path(path):
            out[path] = cm.sample(proc, B, L, seed=seed, row_offset=row0, **kw)
    if gpu and B > 0:
        for name, how in _gpu_samplers().items():
            out[name] = _sample_gpu(proc, B, L, seed, row0, how["device"], how["emulate"], **kw)
    return out


@pytest.mark.parametrize("name,kw", [("mess3", {}), ("rrxor", {}), ("golden_mean", {}),
                                     ("random_hmm", dict(num_states=7, vocab_size=5, seed=3))])
def test_stream_layout_matches_numpy_philox(name, kw):
    """cm.sample is the documented function of (seed, row, position): numpy Philox + exact draw."""
    proc = cm.processes.get(name, **kw) if kw else cm.processes.get(name)
    seed, row0, B, L = 0xDEADBEEF12345678, 2**33 - 5, 20, 23  # rows straddle 2^33 (row_hi changes)
    ref_tok, ref_st = reference_sample(proc, B, L, seed, row0)
    for path, (tok, states) in _sample_all_paths(proc, B, L, seed, row0, return_states=True).items():
        np.testing.assert_array_equal(tok, ref_tok, err_msg=path)
        np.testing.assert_array_equal(states, ref_st, err_msg=path)
    for path, tok in _sample_all_paths(proc, B, L, seed, row0).items():
        np.testing.assert_array_equal(tok, ref_tok, err_msg=path)


@pytest.mark.parametrize("row0", [2**32 - 20, 2**32 - 16, 2**34 - 48])
def test_row_groups_across_a_multiple_of_2_32(row0):
    """The SIMD paths take a Philox shortcut for row groups that share their high 32 bits and the
    general rounds for a group that straddles 2^32 k: both give the reference tokens."""
    proc = cm.processes.mess3(0.05, 0.85)
    seed, B, L = 0x0123456789ABCDEF, 96, 37
    ref_tok, _ = reference_sample(proc, B, L, seed, row0)
    for path, tok in _sample_all_paths(proc, B, L, seed, row0, gpu=False).items():
        np.testing.assert_array_equal(tok, ref_tok, err_msg=path)


@settings(max_examples=25, deadline=None)
@given(S=st.integers(1, 9), V=st.integers(1, 6), B=st.integers(0, 70), L=st.integers(0, 40),
       seed=st.integers(0, 2**64 - 1), row0=st.integers(0, 2**40), threads=st.sampled_from([1, 2]))
def test_every_path_gives_the_same_tokens(S, V, B, L, seed, row0, threads):
    proc = cm.processes.random_hmm(S, V, seed=seed % 1000, concentration=0.4)
    cm.set_num_threads(threads)
    try:
        outs = _sample_all_paths(proc, B, L, seed, row0)
        outs_st = _sample_all_paths(proc, B, L, seed, row0, return_states=True)
    finally:
        cm.set_num_threads(0)
    ref = outs["scalar"]
    for path in outs:
        np.testing.assert_array_equal(outs[path], ref, err_msg=path)
        np.testing.assert_array_equal(outs_st[path][0], ref, err_msg=path)
        np.testing.assert_array_equal(outs_st[path][1], outs_st["scalar"][1], err_msg=path)
    # a batch split with row_offset reproduces the whole batch on the fastest path
    if B > 20:
        parts = [cm.sample(proc, n, L, seed=seed, row_offset=row0 + o) for o, n in ((0, 17), (17, B - 17))]
        np.testing.assert_array_equal(np.concatenate(parts), ref)


def reference_rows(proc, rows, L, seed, distance=False):
    """Vectorised reference over many rows: tokens and, per draw, whether its high word left
    the decision undecided (so that the low word was needed); with distance=True also, per draw,
    the high words' threshold minus fraction (th_hi - frac_hi, a signed int64)."""
    thresh, alias, ithresh, ialias = row_tables(proc)
    S, K = proc.num_states, thresh.shape[1]
    u32 = np.uint64(0xFFFFFFFF)
    rows = np.asarray(rows, dtype=np.uint64)
    w = philox(seed, rows, 1, 0).astype(np.uint64)
    state = np.array([exact_draw(a, b, ithresh, ialias) for a, b in w[:, :2]], dtype=np.int64)
    nblk = (L + 3) // 4
    hi = philox(seed, np.repeat(rows, nblk), 0, np.tile(np.arange(nblk), len(rows))).reshape(len(rows), -1)
    lo = philox(seed, np.repeat(rows, nblk), 2, np.tile(np.arange(nblk), len(rows))).reshape(len(rows), -1)
    hi, lo = hi.astype(np.uint64), lo.astype(np.uint64)
    tokens = np.zeros((len(rows), L), np.int64)
    undecided = np.zeros((len(rows), L), bool)
    dist = np.zeros((len(rows), L), np.int64)
    kk = np.uint64(K)
    for t in range(L):
        plo = lo[:, t] * kk
        m = hi[:, t] * kk + (plo >> np.uint64(32))
        b = (m >> np.uint64(32)).astype(np.int64)
        frac = ((m & u32) << np.uint64(32)) | (plo & u32)
        o = np.where(frac < thresh[state, b], b, alias[state, b].astype(np.int64))
        fhi = (hi[:, t] * kk) & u32
        b0 = ((hi[:, t] * kk) >> np.uint64(32)).astype(np.int64)
        th_hi = thresh[state, b0] >> np.uint64(32)
        undecided[:, t] = (((th_hi - fhi) & u32) < kk) | (fhi > np.uint64(2**32 - K))
        dist[:, t] = th_hi.astype(np.int64) - fhi.astype(np.int64)
        tokens[:, t], state = np.divmod(o, S)
    return (tokens, undecided, dist) if distance else (tokens, undecided)


def test_vectorised_reference_agrees_with_exact_integers():
    proc = cm.processes.random_hmm(3, 4, seed=2)
    tok, _ = reference_rows(proc, np.arange(5, 12), 13, 99)
    np.testing.assert_array_equal(tok, reference_sample(proc, 7, 13, 99, 5)[0])


def _check_rows_with_undecided(proc, seed, rows, L):
    ref, und = reference_rows(proc, rows, L, seed)
    assert und.any(), "no undecided draw in these rows: the test would be vacuous"
    _check_rows_on_every_path(proc, seed, rows, L, ref)


def _check_rows_on_every_path(proc, seed, rows, L, ref):
    for r, ref_row in zip(rows, ref):
        # batches of 32 with the row in the first or the second group of 16 (the AVX-512 path
        # interleaves two such groups; the AVX2 path works on groups of 8), and a batch of one
        for lane in {int(r) % 16, 16 + int(r) % 16}:
            if lane > int(r):
                continue
            for path, tok in _sample_all_paths(proc, 32, L, seed, int(r) - lane).items():
                np.testing.assert_array_equal(tok[lane], ref_row, err_msg=path)
        for path, tok in _sample_all_paths(proc, 1, L, seed, int(r)).items():
            np.testing.assert_array_equal(tok[0], ref_row, err_msg=path)


# (S, V) with S * V * S <= 32 (the register-table paths): tables of 8, 16 and 32 entries, a single
# state (no chain), and the largest S.
REG_SHAPES = [(1, 8), (2, 4), (3, 3), (2, 8), (4, 2), (1, 32), (5, 1), (1, 3)]


@pytest.mark.parametrize("S,V", REG_SHAPES)
def test_register_table_paths_on_every_table_size(S, V):
    """Batches and lengths that are not multiples of the SIMD paths' 8, 16 and 32 rows or their
    16 positions per chunk, against the exact reference and the scalar path."""
    proc = cm.processes.random_hmm(S, V, seed=S * 100 + V, concentration=0.5)
    seed, row0, B, L = 0x1234_5678_9ABC_DEF0, 2**32 - 21, 75, 53
    ref_tok, _ = reference_sample(proc, B, L, seed, row0)
    for path, tok in _sample_all_paths(proc, B, L, seed, row0, gpu=False).items():
        np.testing.assert_array_equal(tok, ref_tok, err_msg=path)


@st.composite
def _small_processes(draw):
    """Processes small enough for the register-table paths (S * V * S <= 32): dense, sparse or
    near-deterministic HMMs, and GHMMs (sampled through their beliefs on every path)."""
    S = draw(st.integers(1, 5))
    V = draw(st.integers(1, max(1, 32 // (S * S))))
    seed = draw(st.integers(0, 10_000))
    kind = draw(st.sampled_from(["dense", "sparse", "near_deterministic", "ghmm"]))
    if kind == "ghmm":
        return cm.processes.random_ghmm_like(S, V, seed)
    if kind == "near_deterministic":
        return near_deterministic_hmm(S, V, seed)
    return cm.processes.random_hmm(S, V, seed, sparsity=0.6 if kind == "sparse" else 0.0)


@settings(max_examples=30, deadline=None)
@given(proc=_small_processes(), B=st.integers(0, 100), L=st.integers(0, 70), seed=st.integers(0, 2**64 - 1),
       row0=st.integers(0, 2**40), threads=st.sampled_from([1, 2]))
def test_small_processes_give_the_same_tokens_on_every_path(proc, B, L, seed, row0, threads):
    """Every forced CPU path (and the GPU kernels, emulated) gives the scalar path's tokens, for any
    batch (AVX-512 groups of 32 and 16 rows, AVX2 groups of 8, scalar leftovers) and length."""
    cm.set_num_threads(threads)
    try:
        outs = _sample_all_paths(proc, B, L, seed, row0, gpu=L <= 40)
    finally:
        cm.set_num_threads(0)
    for path, tok in outs.items():
        np.testing.assert_array_equal(tok, outs["scalar"], err_msg=path)


def test_undecided_draws_take_the_low_word_on_the_packed_and_scalar_paths():
    """K = 10^4 outcomes per state makes undecided draws (about 2K in 2^32) frequent enough to
    find with numpy (5 in these 10^6 draws); those rows must match the exact reference on every path."""
    proc = cm.processes.random_hmm(100, 100, seed=11, concentration=0.3)
    seed, L = 7, 32
    rows = np.arange(1 << 15, dtype=np.uint64)
    _, und = reference_rows(proc, rows, L, seed)
    hit = rows[und.any(axis=1)]
    assert len(hit) >= 3
    _check_rows_with_undecided(proc, seed, hit, L)


# Rows whose high word leaves a draw of Mess3 (default parameters) undecided, found by a search
# over ~10^9 draws (the test re-checks that they are, so it cannot go vacuous): they exercise the
# AVX-512 path's redo of a chunk, including tails shorter than its 16 positions.
MESS3_UNDECIDED = {0: [380408, 6099105, 6761855, 10034663]}


@pytest.mark.parametrize("L", [256, 37])
def test_undecided_draws_take_the_low_word_on_the_avx512_path(L):
    proc = cm.processes.mess3()
    for seed, rows in MESS3_UNDECIDED.items():
        _check_rows_with_undecided(proc, seed, np.array(rows, dtype=np.uint64), L)


# Rows of Mess3 (default parameters) with a draw whose fraction lies within 1000 of its bucket's
# threshold (high words: 40, -57, 257, 276, -610; a search over 5 * 10^7 draws), which the high
# word decides: the AVX2 path keeps 24-bit thresholds, redoes the chunks of draws within about
# 2^8 of one and decides those just outside that band itself. L = 600 builds the output in place
# (more than its L1 stage holds).
MESS3_NEAR_THRESHOLD = {0: [124134, 442627, 881863, 1284014, 545726]}


@pytest.mark.parametrize("L", [256, 37, 600])
def test_draws_near_a_threshold_on_every_path(L):
    proc = cm.processes.mess3()
    K = proc.num_states * proc.vocab_size
    for seed, rows in MESS3_NEAR_THRESHOLD.items():
        rows = np.array(rows, dtype=np.uint64)
        ref, und, dist = reference_rows(proc, rows, L, seed, distance=True)
        near = (np.abs(dist) < 1000) & ~und
        assert near.any(axis=1).all(), "a row lost its near-threshold draw: the test would be vacuous"
        assert (np.abs(dist[near]) >= K).all()
        _check_rows_on_every_path(proc, seed, rows, L, ref)


def test_ghmm_draw_reads_the_low_word():
    """GHMM sampling draws with a 53-bit uniform (high word, then the low word's top 21 bits): a
    coin whose P(0) = (hi + 1/2) / 2^32 sits between two 32-bit grid points at a chosen draw, so
    that draw's token is 0 exactly when the low word is below 2^31 (a 32-bit uniform would always
    give 1)."""
    seed, row, t = 12345, 6, 9
    hi = int(philox(seed, [row], 0, t // 4)[0, t % 4])
    lo = int(philox(seed, [row], 2, t // 4)[0, t % 4])
    p0 = (hi + 0.5) / 2**32
    coin = cm.GHMM(np.array([[[p0]], [[1 - p0]]]))
    want = 0 if lo < 2**31 else 1
    assert cm.sample(coin, 1, t + 1, seed=seed, row_offset=row)[0, t] == want
    for name, how in _gpu_samplers().items():
        assert _sample_gpu(coin, 1, t + 1, seed, row, how["device"], how["emulate"])[0, t] == want, name
    # and the other branch: a row whose low word is on the other side gives the other token
    for r in range(row + 1, row + 40):
        lo_r = int(philox(seed, [r], 2, t // 4)[0, t % 4])
        if (lo_r < 2**31) != (lo < 2**31):
            hi_r = int(philox(seed, [r], 0, t // 4)[0, t % 4])
            p0 = (hi_r + 0.5) / 2**32
            coin = cm.GHMM(np.array([[[p0]], [[1 - p0]]]))
            assert cm.sample(coin, 1, t + 1, seed=seed, row_offset=r)[0, t] == (0 if lo_r < 2**31 else 1)
            break
    else:
        raise AssertionError("no row with the other low bit")


@pytest.mark.parametrize("L", [1, 15, 16, 17, 64, 128, 192, 256, 320, 1000])
def test_long_rows_on_every_path(L):
    """Lengths around the AVX-512 path's 16-position chunks and 64-byte output lines (whole
    aligned lines go out with streaming stores), batches that are not multiples of 16, and a
    batch split inside a group of 16 rows."""
    for proc in (cm.processes.mess3(), cm.processes.random_hmm(2, 8, seed=4, concentration=0.3)):
        outs = _sample_all_paths(proc, 100, L, 2024, 3, gpu=L <= 64)
        for path, tok in outs.items():
            np.testing.assert_array_equal(tok, outs["scalar"], err_msg=path)
        parts = [cm.sample(proc, n, L, seed=2024, row_offset=3 + o) for o, n in ((0, 37), (37, 63))]
        np.testing.assert_array_equal(np.concatenate(parts), outs["scalar"])


def test_every_output_alignment_on_every_path():
    """The AVX-512 path writes 64-byte lines: with L % 64 == 0 a row's first (64 - offset) % 64
    positions share a line with the row before, which it writes whole at the end (partial stores
    only at the block's ends). numpy places the output at each 16-byte offset mod 64 for some
    batch size; every offset gives the scalar path's tokens, with 1 and 2 threads. Where numpy
    puts an array depends on the allocator's state, so further batch sizes are tried until every
    offset has been seen."""
    proc = cm.processes.mess3()
    seen = set()
    for B in [32, 33, 34, 35, 47, 64, 65, 96, 97, 3000]:
        for threads in (1, 2):
            cm.set_num_threads(threads)
            try:
                outs = _sample_all_paths(proc, B, 256, 77, 5, gpu=False)
            finally:
                cm.set_num_threads(0)
            seen.add(outs["avx512"].ctypes.data % 64 if "avx512" in outs else None)
            for path, tok in outs.items():
                np.testing.assert_array_equal(tok, outs["scalar"], err_msg=f"{path} B={B}")
    if "avx512" not in PATHS:
        return
    for B in range(98, 600):
        if {0, 16, 32, 48} <= seen:
            break
        with _force_path("avx512"):
            tok = cm.sample(proc, B, 256, seed=77, row_offset=5)
        with _force_path("scalar"):
            ref = cm.sample(proc, B, 256, seed=77, row_offset=5)
        seen.add(tok.ctypes.data % 64)
        np.testing.assert_array_equal(tok, ref, err_msg=f"avx512 B={B} offset {tok.ctypes.data % 64}")
    assert {0, 16, 32, 48} <= seen, seen


def test_decided_draws_are_those_of_the_32_bit_draw():
    """0.1 drew from the high word against 32-bit thresholds; 0.2 differs only at undecided draws
    (none in these 131,072), so ordinary streams are unchanged."""
    proc = cm.processes.random_hmm(5, 4, seed=3)
    thresh, alias, ithresh, ialias = row_tables(proc)
    S, K = proc.num_states, thresh.shape[1]
    B, L, seed = 2048, 64, 77
    rows = np.arange(B, dtype=np.uint64)

    def draw32(hi, n, th, al, state):
        m = hi * np.uint64(n)
        b = (m >> np.uint64(32)).astype(np.int64)
        frac = m & np.uint64(0xFFFFFFFF)
        th_b = th[b] if state is None else th[state, b]
        al_b = al[b] if state is None else al[state, b]
        return np.where(frac < (th_b >> np.uint64(32)), b, al_b.astype(np.int64))

    state = draw32(philox(seed, rows, 1, 0)[:, 0].astype(np.uint64), S, ithresh, ialias, None)
    hi = philox(seed, np.repeat(rows, L // 4), 0, np.tile(np.arange(L // 4), B)).reshape(B, L).astype(np.uint64)
    old = np.zeros((B, L), np.int64)
    for t in range(L):
        old[:, t], state = np.divmod(draw32(hi[:, t], K, thresh, alias, state), S)
    _, undecided = reference_rows(proc, rows, L, seed)
    assert not undecided.any()
    np.testing.assert_array_equal(cm.sample(proc, B, L, seed=seed), old)
