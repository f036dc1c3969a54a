"""cm.msp_tree against brute-force enumeration and against cm.beliefs / cm.log_prob."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import compmech as cm
from conftest import random_processes
from reference import ref_msp_level


@given(proc=random_processes(max_states=5, max_vocab=3), depth=st.integers(0, 5))
def test_matches_brute_force(proc, depth):
    tree = cm.msp_tree(proc, depth)
    assert tree.depth == depth and len(tree.level(0)) == 1
    for d in range(1, depth + 1):
        seqs, probs, beliefs = ref_msp_level(proc.T, proc.w, proc.stationary, d, proc.zero_tol)
        lvl = tree.level(d)
        np.testing.assert_array_equal(lvl.sequences, seqs)
        np.testing.assert_allclose(lvl.probs, probs, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(lvl.beliefs, beliefs, atol=1e-9 * max(1, np.abs(beliefs).max(initial=1)))
        assert np.isclose(lvl.probs.sum(), 1.0, atol=1e-9)


@given(proc=random_processes(max_states=8, max_vocab=4), depth=st.integers(1, 5))
def test_consistent_with_beliefs_and_log_prob(proc, depth):
    lvl = cm.msp_tree(proc, depth).level(depth)
    b, lp = cm.beliefs(proc, lvl.sequences, dtype=np.float64, return_log_prob=True)
    np.testing.assert_allclose(lvl.beliefs, b[:, -1], atol=1e-9 * max(1, np.abs(b).max(initial=1)))
    np.testing.assert_allclose(lvl.probs, np.exp(lp), rtol=1e-9)
    # next-token distribution: children probabilities / parent probability
    nxt = lvl.next_token_probs
    np.testing.assert_allclose(nxt.sum(axis=1), 1.0, atol=1e-9)


def test_mess3_depth_and_ordering(mess3):
    tree = cm.msp_tree(mess3, 6, dtype=np.float32)
    assert [len(l) for l in tree.levels] == [3**d for d in range(7)]
    seq = tree.level(6).sequences
    codes = (seq.astype(np.int64) * 3 ** np.arange(5, -1, -1)).sum(1)
    assert np.all(np.diff(codes) == 1)  # lexicographic and complete
    assert tree.level(6).beliefs.dtype == np.float32
    for lvl in tree.levels:
        assert np.isclose(lvl.probs.sum(), 1.0, atol=1e-12)
    assert tree.num_nodes == sum(3**d for d in range(1, 7))


def test_impossible_sequences_dropped_not_nan():
    gm = cm.processes.golden_mean(0.5)
    tree = cm.msp_tree(gm, 8)
    for d in range(1, 9):
        lvl = tree.level(d)
        s = lvl.sequences
        assert not np.any((s[:, 1:] == 1) & (s[:, :-1] == 1))
        assert np.all(np.isfinite(lvl.beliefs)) and np.all(lvl.probs > 0)
        assert np.isclose(lvl.probs.sum(), 1.0)
    # number of binary strings without "11" of length d from the stationary mix: Fibonacci-like
    assert [len(l) for l in tree.levels[1:4]] == [2, 3, 5]


def test_min_prob_prunes_subtrees(mess3):
    """Probabilities only shrink along a path, so the pruned level is exactly the full level's
    sequences with probability >= min_prob."""
    full = cm.msp_tree(mess3, 5)
    pruned = cm.msp_tree(mess3, 5, min_prob=1e-3)
    for d in range(1, 6):
        lp, lf = pruned.level(d), full.level(d)
        keep = lf.probs >= 1e-3
        np.testing.assert_array_equal(lp.sequences, lf.sequences[keep])
        np.testing.assert_array_equal(lp.probs, lf.probs[keep])
    assert len(pruned.level(5)) < len(full.level(5))


def test_chunked_levels_equal_full_level():
    proc = cm.processes.random_hmm(4, 3, seed=2, sparsity=0.4)
    full = cm.msp_tree(proc, 7).level(7)
    chunks = list(cm.msp_level_chunks(proc, 7, max_nodes=100))
    assert len(chunks) > 3 and all(len(c) <= 3 * 100 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.sequences for c in chunks]), full.sequences)
    np.testing.assert_array_equal(np.concatenate([c.probs for c in chunks]), full.probs)
    np.testing.assert_array_equal(np.concatenate([c.beliefs for c in chunks]), full.beliefs)
    only = list(cm.msp_level_chunks(proc, 0))
    assert len(only) == 1 and only[0].sequences.shape == (1, 0)


def test_ghmm_tree_probabilities_match_equivalent_hmm():
    hmm = cm.processes.random_hmm(3, 2, seed=4)
    ghmm = cm.processes.random_ghmm_like(3, 2, seed=4)
    a, b = cm.msp_tree(hmm, 6).level(6), cm.msp_tree(ghmm, 6).level(6)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    np.testing.assert_allclose(a.probs, b.probs, rtol=1e-9)


def test_thread_count_does_not_change_tree(mess3):
    cm.set_num_threads(1)
    one = cm.msp_tree(mess3, 9).level(9)
    cm.set_num_threads(2)
    two = cm.msp_tree(mess3, 9).level(9)
    np.testing.assert_array_equal(one.beliefs, two.beliefs)
    np.testing.assert_array_equal(one.probs, two.probs)


def test_custom_initial_and_single_state():
    coin = cm.processes.coin(0.5)
    tree = cm.msp_tree(coin, 4)
    assert len(tree.level(4)) == 16 and np.allclose(tree.level(4).probs, 1 / 16)
    z1r = cm.processes.zero_one_random()
    tree = cm.msp_tree(z1r, 3, initial=[1.0, 0.0, 0.0])
    np.testing.assert_array_equal(tree.level(3).sequences, [[0, 1, 0], [0, 1, 1]])
