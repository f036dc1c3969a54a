"""cm.msp: the deduplicated mixed-state graph, checked against a plain-Python BFS with the same
merging rule, the MSP tree, and known sizes."""
import numpy as np
import pytest
from hypothesis import given

import reference
from reference import ref_stationary, ref_w
from strategies import random_processes

import compmech as cm
from compmech import _core
from compmech import processes as P


def ref_msp_bfs(proc, max_depth, tol):
    """Naive BFS: linear scan for a stored belief within tol (max-norm); a state is expanded
    with all its children. Independent of the compiled kernel and its hash grid."""
    T = proc.T
    w, start, zero_tol = ref_w(T), ref_stationary(T), reference.zero_tol(T)
    store = np.empty((1024, proc.num_states))
    store[0] = start
    beliefs = [start.copy()]
    depth = [0]
    edges = []
    k = 0
    while k < len(beliefs):
        if depth[k] >= max_depth:
            k += 1
            continue
        for x in range(proc.vocab_size):
            v = beliefs[k] @ T[x]
            p = v @ w
            if not p > zero_tol:
                continue
            v = v / p
            close = np.flatnonzero(np.max(np.abs(store[:len(beliefs)] - v), axis=1) <= tol)
            hit = int(close[0]) if close.size else None  # the earliest state within tol
            if hit is None:
                beliefs.append(v)
                depth.append(depth[k] + 1)
                hit = len(beliefs) - 1
                if hit >= store.shape[0]:
                    store = np.concatenate([store, np.empty_like(store)])
                store[hit] = v
            edges.append((k, x, hit, p))
        k += 1
    return np.array(beliefs), np.array(depth), edges


@pytest.mark.parametrize("name,K", [("golden_mean", 3), ("even", 4), ("zero_one_random", 7), ("coin", 1)])
def test_small_finite_msps(name, K):
    proc = P.get(name)
    g = cm.msp(proc)
    assert g.is_complete and not g.hit_max_states
    assert g.num_states == K
    ref_b, ref_d, ref_e = ref_msp_bfs(proc, 50, 1e-9)
    np.testing.assert_allclose(g.beliefs, ref_b, atol=1e-12)
    np.testing.assert_array_equal(g.depth, ref_d)
    assert [(s, x, d) for s, x, d, _ in ref_e] == list(zip(g.src.tolist(), g.token.tolist(), g.dst.tolist()))


def test_rrxor_has_36_mixed_states():
    # 36 distinct beliefs: Shai et al., "Transformers represent belief state geometry in their
    # residual stream" (NeurIPS 2024), RRXOR mixed-state presentation.
    g = cm.msp(P.rrxor())
    assert g.is_complete and g.num_states == 36
    assert g.max_merge_distance < 1e-12
    # recurrent part = the 5 causal states, each a delta belief on one hidden state
    rec = g.recurrent
    assert rec.sum() == 5
    np.testing.assert_allclose(np.sort(g.beliefs[rec].max(axis=1)), 1.0)
    assert g.transient.sum() == 31 and not np.any(g.transient & g.recurrent)
    assert len(g.recurrent_classes) == 1
    # the long-run mixed-state distribution sits on the causal states with pi = (1/3, 1/6 x4)
    st = g.stationary
    assert st[~rec].sum() == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(np.sort(st[rec]), [1 / 6] * 4 + [1 / 3], atol=1e-12)


def test_edges_follow_the_belief_update():
    for proc in (P.rrxor(), P.mess3(), P.random_ghmm_like(4, 3, seed=2)):
        g = cm.msp(proc, max_depth=5)
        nxt = np.einsum("es,esj->ej", g.beliefs[g.src], proc.T[g.token])
        p = nxt @ proc.w
        np.testing.assert_allclose(g.prob, p, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g.beliefs[g.dst], nxt / p[:, None], atol=g.tol)
        # every expanded state's out-probabilities sum to 1
        tot = np.bincount(g.src, weights=g.prob, minlength=g.num_states)
        np.testing.assert_allclose(tot[g.expanded], 1.0, atol=1e-10)
        assert np.all(np.diff(g.src * proc.vocab_size + g.token) > 0)  # sorted, one per (state, token)


def test_mess3_is_truncated_with_a_flag():
    proc = P.mess3()
    g = cm.msp(proc, max_depth=6)
    assert not g.is_complete and not g.hit_max_states
    assert np.all(g.depth[g.frontier] == 6) and np.all(g.depth[g.expanded] < 6)
    assert g.recurrent.sum() == 0
    # the graph's states are exactly the distinct beliefs of the MSP tree to depth 6
    tree = cm.msp_tree(proc, 6)
    allb = np.concatenate([lvl.beliefs for lvl in tree.levels])
    uniq = np.unique(np.round(allb, 9), axis=0)
    assert g.num_states == uniq.shape[0]
    g2 = cm.msp(proc, max_states=500)
    assert g2.hit_max_states and not g2.is_complete and g2.num_states <= 500
    assert "truncated" in repr(g2) and "max_states" in repr(g2)
    # default cap when neither limit is given
    assert cm.msp(proc).num_states <= cm.msp_graph.DEFAULT_MAX_STATES


@pytest.mark.parametrize("tol", [1e-9, 1e-3, 2e-2])
def test_merging_matches_the_naive_reference(tol):
    # coarse tolerances merge many genuinely different beliefs, exercising the hash-grid probes
    proc = P.mess3()
    g = cm.msp(proc, max_depth=6, tol=tol)
    ref_b, ref_d, ref_e = ref_msp_bfs(proc, 6, tol)
    assert g.num_states == len(ref_b)
    np.testing.assert_allclose(g.beliefs, ref_b, atol=1e-13)
    np.testing.assert_array_equal(g.depth, ref_d)
    assert list(g.dst) == [d for _, _, d, _ in ref_e]
    if tol > 1e-6:
        assert g.max_merge_distance > 1e-6
        assert g.max_merge_distance <= tol


def test_ghmm_graph_mirrors_its_hmm():
    # random_ghmm_like is a similarity transform of random_hmm: same process, so the same
    # graph shape and edge probabilities, with beliefs mapped by eta' = eta A.
    h = P.random_hmm(3, 2, seed=4)
    gh = P.random_ghmm_like(3, 2, seed=4)
    a, b = cm.msp(h, max_depth=7), cm.msp(gh, max_depth=7)
    assert a.num_states == b.num_states
    np.testing.assert_array_equal(a.dst, b.dst)
    np.testing.assert_allclose(a.prob, b.prob, rtol=1e-9)


@pytest.mark.parametrize("proc", [P.rrxor(), P.zero_one_random(0.3), P.even(0.3)])
def test_as_hmm_reproduces_word_probabilities(proc):
    g = cm.msp(proc)
    assert g.is_complete
    m = g.as_hmm()
    K = g.num_states
    x = cm.sample(proc, 64, 40, seed=7)
    np.testing.assert_allclose(cm.log_prob(m, x, initial=np.eye(K)[0]), cm.log_prob(proc, x), rtol=1e-10)
    # unifilar: at most one successor per (state, token)
    assert np.all((m.T > 0).sum(axis=2) <= 1)
    with pytest.raises(ValueError, match="complete"):
        cm.msp(P.mess3(), max_depth=3).as_hmm()


def test_to_networkx():
    g = cm.msp(P.even())
    G = g.to_networkx()
    assert G.number_of_nodes() == g.num_states and G.number_of_edges() == g.num_edges
    for k in G.nodes:
        out = sum(d["prob"] for _, _, d in G.out_edges(k, data=True))
        assert out == pytest.approx(1.0)
        np.testing.assert_allclose(G.nodes[k]["belief"], g.beliefs[k])
    assert sum(G.nodes[k]["recurrent"] for k in G.nodes) == 2


def test_transient_recurrent_on_truncated_graph():
    # SNS: the observer synchronises to state A after each 1; truncated graphs still classify
    g = cm.msp(P.sns(), max_depth=12)
    assert not g.is_complete
    assert not np.any(g.recurrent & g.transient)
    # leaky RRXOR never synchronises: nothing is certainly recurrent, nothing certainly transient
    g2 = cm.msp(P.leaky_rrxor(), max_depth=5)
    assert g2.recurrent.sum() == 0 and g2.transient.sum() == 0


def test_mixture_has_two_recurrent_classes():
    from compmech.process import HMM

    gm = P.golden_mean()
    T = np.zeros((4, 2, 2))
    T[2:] = gm.T  # the same process on tokens 2, 3: the first token reveals the component
    mix = P.mixture([gm, HMM(T)], [0.3, 0.7])
    g = cm.msp(mix)
    assert g.is_complete and len(g.recurrent_classes) == 2
    st = g.stationary
    assert st.sum() == pytest.approx(1.0)
    masses = sorted(st[c].sum() for c in g.recurrent_classes)
    np.testing.assert_allclose(masses, [0.3, 0.7], atol=1e-12)


def test_result_does_not_depend_on_thread_count():
    proc = P.mess3()
    cm.set_num_threads(1)
    a = cm.msp(proc, max_states=20000)
    cm.set_num_threads(2)
    b = cm.msp(proc, max_states=20000)
    np.testing.assert_array_equal(a.beliefs, b.beliefs)
    np.testing.assert_array_equal(a.dst, b.dst)


def test_sns_merging_is_reported():
    # SNS beliefs converge like 1/n: tol eventually merges distinct beliefs, and says so
    g = cm.msp(P.sns(), max_states=100_000)
    assert g.is_complete
    assert 1e-11 < g.max_merge_distance <= 1e-9


def test_argument_errors():
    proc = P.golden_mean()
    with pytest.raises(ValueError, match="tol"):
        cm.msp(proc, tol=0)
    with pytest.raises(ValueError, match="tol"):
        cm.msp(proc, tol=float("nan"))
    with pytest.raises(ValueError, match="max_depth"):
        cm.msp(proc, max_depth=-1)
    with pytest.raises(ValueError, match="max_states"):
        cm.msp(proc, max_states=0)
    with pytest.raises(ValueError, match="max_states"):
        cm.msp(proc, max_states=True)
    with pytest.raises(ValueError, match="initial"):
        cm.msp(proc, initial=[1.0, 0.0, 0.0])
    with pytest.raises(TypeError):
        cm.msp(proc.T)
    T = np.ascontiguousarray(proc.T)
    init = proc.stationary.copy()
    with pytest.raises(TypeError, match="T must be a float64"):
        _core.msp_graph(T.astype(np.float32), None, init, -1, 10, 1e-9, 0.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.msp_graph(T[:, :, ::-1], None, init, -1, 10, 1e-9, 0.0)
    bad = T.copy()
    bad[1, 0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        _core.msp_graph(bad, None, init, -1, 10, 1e-9, 0.0)
    with pytest.raises(ValueError, match="initial: dimension 0"):
        _core.msp_graph(T, None, np.ones(3), -1, 10, 1e-9, 0.0)
    with pytest.raises(ValueError, match="w: dimension 0"):
        _core.msp_graph(T, np.ones(3), init, -1, 10, 1e-9, 0.0)
    with pytest.raises(ValueError, match="tol"):
        _core.msp_graph(T, None, init, -1, 10, -1.0, 0.0)
    with pytest.raises(ValueError, match="max_depth"):
        _core.msp_graph(T, None, init, -5, 10, 1e-9, 0.0)
    with pytest.raises(ValueError, match="zero_tol"):
        _core.msp_graph(T, None, init, -1, 10, 1e-9, -1.0)


def test_max_states_boundary():
    assert cm.msp(P.rrxor(), max_states=36).is_complete
    g = cm.msp(P.rrxor(), max_states=35)
    assert g.hit_max_states and not g.is_complete and g.num_states <= 35
    # explored states keep all their edges; unexplored ones have none
    assert set(np.unique(g.src).tolist()) == set(np.flatnonzero(g.expanded).tolist())


def test_with_bos_graph_starts_at_bos():
    base = P.rrxor()
    g = cm.msp(P.with_bos(base))
    assert g.is_complete and g.num_states == 37
    assert g.beliefs[0, -1] == 1.0 and g.src[0] == 0 and g.token[0] == base.vocab_size
    np.testing.assert_allclose(g.beliefs[1, :-1], base.stationary)


@given(proc=random_processes(max_states=6, max_vocab=4))
def test_graph_matches_tree_on_random_processes(proc):
    # property: the deduplicated graph to depth 4 holds exactly the distinct beliefs of the tree
    g = cm.msp(proc, max_depth=4)
    tree = cm.msp_tree(proc, 4)
    allb = np.concatenate([lvl.beliefs for lvl in tree.levels])
    ref_b, ref_d, _ = ref_msp_bfs(proc, 4, g.tol)
    assert g.num_states == len(ref_b)
    np.testing.assert_allclose(g.beliefs, ref_b, atol=1e-9)
    # every graph state is a tree belief; every tree belief is within tol of a graph state,
    # unless the tree has distinct beliefs (more than round-off apart) closer than tol before
    # its last level: the graph merges them and, through updates conditioned on tiny
    # probabilities, their descendants drift apart (near-deterministic processes: up to ~1e-3 at
    # depth 4; fanizza with alpha near 0, a near-trivial rotation: up to ~1e-6, from beliefs
    # 1e-13 apart) -- the documented cost of merging, not a defect
    d = np.abs(allb[:, None, :] - g.beliefs[None, :, :]).max(axis=2)
    assert np.all(d.min(axis=0) <= 1e-12)
    inner = np.concatenate([lvl.beliefs for lvl in tree.levels[:-1]])
    near = np.abs(inner[:, None, :] - inner[None, :, :]).max(axis=2)
    merges_distinct = bool(np.any((near > 1e-14) & (near <= g.tol)))
    if proc.name != "near_deterministic" and not merges_distinct:
        assert np.all(d.min(axis=1) <= g.tol + 1e-12)


@pytest.mark.parametrize("name", ["golden_mean", "even", "rrxor", "zero_one_random"])
def test_state_distribution_is_the_probability_of_reaching_each_mixed_state(name):
    """Row L: total probability of the length-L words whose belief is mixed state k,
    enumerated word by word in the reference (no graph propagation)."""
    proc = P.get(name)
    g = cm.msp(proc)
    L = 6
    dist = g.state_distribution(L)
    assert dist.shape == (L + 1, g.num_states)
    np.testing.assert_array_equal(dist[0], np.eye(g.num_states)[0])
    for t in range(1, L + 1):
        _, probs, beliefs = reference.ref_msp_level(proc.T, t)
        want = np.zeros(g.num_states)
        for p, b in zip(probs, beliefs):
            k = int(np.argmin(np.abs(g.beliefs - b).max(axis=1)))
            assert np.abs(g.beliefs[k] - b).max() < 1e-9
            want[k] += p
        np.testing.assert_allclose(dist[t], want, atol=1e-12, err_msg=f"L = {t}")
