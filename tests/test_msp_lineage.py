"""Full MSP levels keep no parent/token arrays (their lineage is implicit: k // V, k % V).

The lazily computed arrays must equal the ones the counting pass materialises, with the same
dtypes; the single-pass full-level kernel (8 SIMD lanes with AVX-512) must give the counting
pass's bits; sequences rebuilt from mixed full/partial lineages must be the brute-force ones.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import compmech as cm
from compmech import _backend, _core
from compmech.msp_tree import chain_levels
from strategies import random_processes


def counted_levels(proc, depth, dtype, min_prob=0.0, initial=None):
    """Levels 0..depth through the counting kernel only (every level materialised)."""
    init = proc.check_initial(initial)
    levels = [_backend.root_level(_backend.CPU, proc, init, np.dtype(dtype).name)]
    w = proc.w if proc.is_generalized else None
    for _ in range(depth):
        levels.append(_core.msp_level(proc.T, w, levels[-1][0], levels[-1][1], float(min_prob), proc.zero_tol, False))
    return levels


def sequences_from_links(levels, d):
    """Level d's sequences walked up through materialised parent/token arrays."""
    idx = np.arange(len(levels[d][1]))
    seq = np.empty((len(idx), d), dtype=levels[d][3].dtype)
    for k in range(d, 0, -1):
        seq[:, k - 1] = levels[k][3][idx]
        idx = levels[k][2][idx]
    return seq


def assert_tree_equals_counted(tree, proc, dtype, min_prob=0.0, initial=None):
    ref = counted_levels(proc, tree.depth, dtype, min_prob, initial)
    V = proc.vocab_size
    for d, (lv, (b, p, par, tok)) in enumerate(zip(tree.levels, ref)):
        # bit for bit: the full-level pass does the counting pass's arithmetic
        np.testing.assert_array_equal(lv.beliefs, b)
        np.testing.assert_array_equal(lv.probs, p)
        assert lv.beliefs.dtype == b.dtype and lv.probs.dtype == np.float64
        full = d > 0 and len(lv) == V * len(tree.level(d - 1))
        assert lv.is_full == full
        if full:  # nothing stored until asked for
            assert lv.nbytes == lv.beliefs.nbytes + lv.probs.nbytes
        assert lv.parent.dtype == np.int32 and lv.token.dtype == tok.dtype
        np.testing.assert_array_equal(lv.parent, par)
        np.testing.assert_array_equal(lv.token, tok)
        assert lv.parent is lv.parent  # computed once, then kept
        seq = tree.level(d).sequences
        assert seq.dtype == tok.dtype
        np.testing.assert_array_equal(seq, sequences_from_links(ref, d))


@settings(max_examples=40, deadline=None)
@given(proc=random_processes(max_states=6, max_vocab=5), depth=st.integers(0, 6),
       min_prob=st.sampled_from([0.0, 0.0, 1e-4, 1e-2]), dtype=st.sampled_from([np.float32, np.float64]))
def test_lazy_lineage_equals_materialised(proc, depth, min_prob, dtype):
    # sequences are rebuilt before any parent/token is asked for (the arithmetic walk), and
    # compared with the walk through the counting pass's arrays
    tree = cm.msp_tree(proc, depth, dtype=dtype, min_prob=min_prob)
    ref = counted_levels(proc, depth, dtype, min_prob)
    for d in range(depth + 1):
        np.testing.assert_array_equal(tree.level(d).sequences, sequences_from_links(ref, d))
    assert_tree_equals_counted(tree, proc, dtype, min_prob)


@pytest.mark.parametrize("V", [2, 3, 4, 5])
@pytest.mark.parametrize("S", [2, 3, 4, 5])
def test_full_kernel_bits_every_fixed_width(S, V):
    """Every (S, V) the lane kernel specialises (and the runtime-S/V fallbacks), with level
    sizes that are not multiples of the 8 lanes, float32 and float64, equal the counting pass."""
    proc = cm.processes.random_hmm(S, V, seed=10 * S + V)
    depth = {2: 9, 3: 6, 4: 5, 5: 5}[V]
    for dtype in (np.float32, np.float64):
        tree = cm.msp_tree(proc, depth, dtype=dtype)
        assert all(lv.is_full for lv in tree.levels[1:])
        assert_tree_equals_counted(tree, proc, dtype)


def test_many_chunks_and_threads_same_bits(mess3):
    """Level 12 spans several of the full kernel's ~4 MB chunks; 1 or 2 threads, same bits."""
    trees = []
    for n in (1, 2):
        cm.set_num_threads(n)
        trees.append(cm.msp_tree(mess3, 12, dtype=np.float32))
    cm.set_num_threads(0)
    for a, b in zip(*[t.levels for t in trees]):
        np.testing.assert_array_equal(a.beliefs, b.beliefs)
        np.testing.assert_array_equal(a.probs, b.probs)
    assert_tree_equals_counted(trees[1], mess3, np.float32)


def _gate():
    """V=2, S=2: from state 0 only token 0 (to state 1); from state 1 both tokens, to both
    states. From state 0 level 1 keeps one child of two, every level after that is full."""
    T = np.zeros((2, 2, 2))
    T[0, 0, 1] = 1.0
    T[0, 1] = [0.25, 0.25]
    T[1, 1] = [0.25, 0.25]
    return cm.HMM(T, name="gate")


def test_partial_then_full_levels():
    proc = _gate()
    tree = cm.msp_tree(proc, 6, initial=[1.0, 0.0])
    assert [lv.is_full for lv in tree.levels[1:]] == [False] + [True] * 5
    assert [len(lv) for lv in tree.levels] == [1, 1, 2, 4, 8, 16, 32]
    assert_tree_equals_counted(tree, proc, np.float64, initial=[1.0, 0.0])
    seqs = tree.level(6).sequences
    assert np.all(seqs[:, 0] == 0)
    codes = (seqs[:, 1:].astype(np.int64) * 2 ** np.arange(4, -1, -1)).sum(1)
    np.testing.assert_array_equal(codes, np.arange(32))


def test_full_then_partial_then_full(mess3):
    """min_prob cuts from some level on: the optimistic pass stops early and the level is
    redone by counting; the levels above stay implicit."""
    full = cm.msp_tree(mess3, 8)
    cut = float(np.quantile(full.level(6).probs, 0.2))
    tree = cm.msp_tree(mess3, 8, min_prob=cut)
    flags = [lv.is_full for lv in tree.levels[1:]]
    assert flags[:5] == [True] * 5 and not flags[5]
    assert_tree_equals_counted(tree, mess3, np.float64, cut)
    for d in range(1, 9):
        keep = full.level(d).probs >= cut
        np.testing.assert_array_equal(tree.level(d).sequences, full.level(d).sequences[keep])


def test_chain_levels_drops_links_of_full_levels(mess3):
    """Trees rebuilt from arrays (scale.load_tree, products) keep full levels implicit too."""
    tree = cm.msp_tree(mess3, 5)
    arrays = [(lv.beliefs, lv.probs, lv.parent.copy(), lv.token.copy()) for lv in tree.levels]
    again = chain_levels(mess3, arrays)
    assert [lv.is_full for lv in again] == [False] + [True] * 5
    for a, b in zip(again, tree.levels):
        np.testing.assert_array_equal(a.parent, b.parent)
        np.testing.assert_array_equal(a.token, b.token)
        np.testing.assert_array_equal(a.sequences, b.sequences)
    kept = chain_levels(mess3, arrays, implicit=False)
    assert not any(lv.is_full for lv in kept)


def test_ten_trees_hold_one_tree_of_memory(mess3):
    """No reference cycles: each tree is freed when the next replaces it (memory test of the
    benchmark, small)."""
    import gc
    import weakref

    gc.disable()
    try:
        tree = cm.msp_tree(mess3, 6)
        ref = weakref.ref(tree.level(6))
        tree.level(6).parent  # a computed lineage does not create a cycle either
        tree = cm.msp_tree(mess3, 6)
        assert ref() is None
    finally:
        gc.enable()


def test_emulated_gpu_levels_are_implicit_too(monkeypatch, mess3):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_backend, "_router", _backend.EmulationRouter())
    tree = cm.msp_tree(mess3, 5, dtype=np.float32, device="cuda")
    ref = cm.msp_tree(mess3, 5, dtype=np.float32)
    for lv, rl in zip(tree.levels, ref.levels):
        assert lv.is_full == rl.is_full
        assert isinstance(lv.parent, torch.Tensor) and lv.parent.dtype == torch.int32
        assert lv.token.dtype == torch.uint8
        np.testing.assert_array_equal(lv.parent.numpy(), rl.parent)
        np.testing.assert_array_equal(lv.token.numpy(), rl.token)
        np.testing.assert_array_equal(lv.sequences.numpy(), rl.sequences)
    # partial levels on the emulation: counted, materialised
    gate = _gate()
    t = cm.msp_tree(gate, 4, initial=[1.0, 0.0], device="cuda")
    r = cm.msp_tree(gate, 4, initial=[1.0, 0.0])
    assert [lv.is_full for lv in t.levels] == [lv.is_full for lv in r.levels]
    np.testing.assert_array_equal(t.level(4).sequences.numpy(), r.level(4).sequences)


@pytest.mark.parametrize("min_prob", [0.0, 1e-4])
def test_level_chunks_of_full_levels(mess3, min_prob):
    """The depth-first walk (msp_level_chunks, scale's chunk phase) over implicit levels."""
    ref = cm.msp_tree(mess3, 8, min_prob=min_prob, dtype=np.float32).level(8)
    chunks = list(cm.msp_level_chunks(mess3, 8, max_nodes=50, min_prob=min_prob, dtype=np.float32))
    assert len(chunks) > 10 and all(len(c) <= 50 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.sequences for c in chunks]), ref.sequences)
    np.testing.assert_array_equal(np.concatenate([c.beliefs for c in chunks]), ref.beliefs)
    np.testing.assert_array_equal(np.concatenate([c.probs for c in chunks]), ref.probs)


def _full_and_counted(proc, parents, probs, min_prob=0.0):
    """One level from the same parents through the full-level kernel and the counting pass."""
    w = proc.w if proc.is_generalized else None
    args = (proc.T, w, np.ascontiguousarray(parents), np.ascontiguousarray(probs), float(min_prob), proc.zero_tol)
    return _core.msp_level(*args, True), _core.msp_level(*args, False)


def _assert_same_level(full, counted):
    assert full is not None and full[2] is None and full[3] is None
    np.testing.assert_array_equal(full[0], counted[0])
    np.testing.assert_array_equal(full[1], counted[1])


@pytest.mark.parametrize("S", [2, 3, 4])
@pytest.mark.parametrize("V", [2, 3, 4])
@pytest.mark.parametrize("ghmm", [False, True])
def test_full_kernel_every_parent_count(S, V, ghmm):
    """1..21 parents: whole lane groups (4 with AVX2, 8 with AVX-512) and every tail length of
    the scalar pass, float32 and float64, HMM and GHMM (parents from a real level, so every
    GHMM token probability is positive): the counting pass's bits."""
    proc = (cm.processes.random_ghmm_like if ghmm else cm.processes.random_hmm)(S, V, seed=7 * S + V)
    for dtype in (np.float32, np.float64):
        level = cm.msp_tree(proc, 3, dtype=dtype).level(3)
        for P in range(1, 22):
            _assert_same_level(*_full_and_counted(proc, level.beliefs[P:2 * P], level.probs[P:2 * P]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_kernel_tiny_norms(dtype):
    """Token 0's norms lie below kTinyNorm (safe_inverse rescales them before 1 / norm): the
    lane groups holding them give the counting pass's bits too."""
    T = cm.processes.random_hmm(3, 3, seed=5).T.copy()
    T[0] *= 1e-300
    T[1:] /= T[1:].sum(axis=(0, 2))[None, :, None]
    proc = cm.HMM(T)
    rng = np.random.default_rng(0)
    parents = rng.dirichlet(np.ones(3), size=13).astype(dtype)
    full, counted = _full_and_counted(proc, parents, rng.random(13) + 0.5)
    _assert_same_level(full, counted)
    assert np.all(full[1][0::3] < 1e-290) and np.allclose(full[0].sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_kernel_drop_in_any_lane(dtype):
    """A single dropped child at any parent of 9 (every lane of a group, and the tail) stops
    the full-level pass; counting then keeps the other 17 children."""
    proc = cm.processes.golden_mean(0.5)  # state 1 never emits token 1
    rng = np.random.default_rng(1)
    for k in range(9):
        parents = rng.dirichlet(np.ones(2), size=9)
        parents[k] = [0.0, 1.0]
        full, counted = _full_and_counted(proc, parents.astype(dtype), rng.random(9) + 0.5)
        assert full is None and len(counted[1]) == 17


def test_full_kernel_min_prob_edges(mess3):
    """min_prob equal to the smallest child probability keeps every child (>=), the next double
    up drops one; a parent of probability 0 drops its children even with min_prob = 0."""
    level = cm.msp_tree(mess3, 2).level(2)
    _, counted = _full_and_counted(mess3, level.beliefs, level.probs)
    least = counted[1].min()
    _assert_same_level(*_full_and_counted(mess3, level.beliefs, level.probs, least))
    assert _full_and_counted(mess3, level.beliefs, level.probs, np.nextafter(least, 1.0))[0] is None
    probs = level.probs.copy()
    probs[4] = 0.0
    full, counted = _full_and_counted(mess3, level.beliefs, probs)
    assert full is None and len(counted[1]) == 3 * (len(probs) - 1)
