"""cm.msp_tree against brute-force enumeration and against cm.beliefs / cm.log_prob."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import compmech as cm
from strategies import random_processes
from reference import ref_beliefs, ref_msp_level, ref_sequence_prob, ref_stationary, ref_w


@given(proc=random_processes(max_states=5, max_vocab=3), depth=st.integers(0, 5))
def test_matches_brute_force(proc, depth):
    tree = cm.msp_tree(proc, depth)
    assert tree.depth == depth and len(tree.level(0)) == 1
    for d in range(1, depth + 1):
        seqs, probs, beliefs = ref_msp_level(proc.T, d)
        lvl = tree.level(d)
        np.testing.assert_array_equal(lvl.sequences, seqs)
        np.testing.assert_allclose(lvl.probs, probs, rtol=1e-9, atol=1e-15)
        got = lvl.beliefs / (lvl.beliefs @ ref_w(proc.T))[:, None]  # in the reference's normalisation
        np.testing.assert_allclose(got, beliefs, atol=1e-9 * max(1, np.abs(beliefs).max(initial=1)))
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


@given(proc=random_processes(max_states=6, max_vocab=4), depth=st.integers(0, 4))
def test_next_token_probs_are_the_reference_conditionals_in_token_order(proc, depth):
    """next_token_probs[m, x] = P(x | sequence m): the reference's probability of the sequence
    extended by x over that of the sequence (brute force, from T alone)."""
    lvl = cm.msp_tree(proc, depth).level(depth)
    V = proc.vocab_size
    for m in range(min(len(lvl), 20)):
        seq = tuple(int(t) for t in lvl.sequences[m])
        p = ref_sequence_prob(proc.T, seq)
        want = [ref_sequence_prob(proc.T, seq + (x,)) / p for x in range(V)]
        np.testing.assert_allclose(lvl.next_token_probs[m], want, atol=1e-9)


def test_next_token_probs_of_an_asymmetric_process():
    proc = cm.HMM(np.array([[[0.7, 0.0], [0.1, 0.0]], [[0.0, 0.2], [0.0, 0.6]], [[0.1, 0.0], [0.3, 0.0]]]))
    lvl = cm.msp_tree(proc, 1).level(0)
    pi = ref_stationary(proc.T)
    np.testing.assert_allclose(lvl.next_token_probs[0], [pi @ proc.T[x].sum(1) for x in range(3)], atol=1e-12)
    assert len(set(np.round(lvl.next_token_probs[0], 6))) == 3  # distinct: order matters


@pytest.mark.parametrize("S,V,depth", [(80, 3, 3), (3, 300, 2)])
def test_large_state_and_vocabulary_counts(S, V, depth):
    """S > 64 (beyond the specialised paths) and V > 256 (16-bit tokens) against the reference."""
    proc = cm.processes.random_hmm(S, V, seed=S + V, sparsity=0.5)
    tree = cm.msp_tree(proc, depth)
    lvl = tree.level(depth)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(lvl), size=min(len(lvl), 50), replace=False)
    rb, rlp = ref_beliefs(proc.T, lvl.sequences[pick])
    np.testing.assert_allclose(lvl.beliefs[pick], rb[:, -1], atol=1e-10)
    np.testing.assert_allclose(np.log(lvl.probs[pick]), rlp, rtol=1e-9)
    assert lvl.probs.sum() == pytest.approx(1.0, abs=1e-9)
