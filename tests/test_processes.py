"""Process library: every registered process builds with its defaults, follows the stated
definition, validates its parameters, and (for GHMMs) defines non-negative word probabilities."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given

import compmech as cm
from compmech import processes as P
from reference import ref_sequence_prob, ref_stationary, ref_w
from strategies import random_processes

ALL_DEFAULT = [n for n in P.names() if n not in ("mixture", "product", "with_bos")]


def _check_valid(proc):
    T = proc.T
    if proc.is_generalized:
        M = T.sum(0)
        np.testing.assert_allclose(M @ proc.w, proc.w, atol=1e-10)
        np.testing.assert_allclose(proc.stationary @ M, proc.stationary, atol=1e-10)
        assert proc.stationary @ proc.w == pytest.approx(1.0)
    else:
        assert np.all(T >= 0)
        np.testing.assert_allclose(T.sum(axis=(0, 2)), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", ALL_DEFAULT)
def test_defaults_build_and_are_valid(name):
    proc = P.get(name)
    assert proc.name == name
    _check_valid(proc)
    assert name in P.describe(name)
    # every word of length <= 4 has probability >= 0, and they sum to 1 per length
    tree = cm.msp_tree(proc, 4)
    for d in range(1, 5):
        lvl = tree.level(d)
        assert lvl.probs.sum() == pytest.approx(1.0, abs=1e-9)
        assert np.all(lvl.probs > -1e-12)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown process"):
        P.get("nope")
    with pytest.raises(TypeError, match="no parameter"):
        P.get("golden_mean", q=0.3)
    # composites name what they need instead of Python's "missing 1 required positional argument"
    for name, needs in (("mixture", "processes"), ("product", "processes"), ("with_bos", "process")):
        with pytest.raises(TypeError, match=f"process '{name}' needs {needs} \\(no default\\)"):
            P.get(name)


def test_cli_process_params_take_json_lists():
    from compmech.commands._params import parse_params

    got = parse_params(["processes=[\"mess3\", {\"name\": \"rrxor\"}]", "weights=[0.25, 0.75]", "x=0.05", "n=3",
                        "name=abc"])
    assert got == {"processes": ["mess3", {"name": "rrxor"}], "weights": [0.25, 0.75], "x": 0.05, "n": 3,
                   "name": "abc"}
    mix = P.get("mixture", **{k: got[k] for k in ("processes", "weights")})
    assert mix.num_states == P.get("mess3").num_states + P.get("rrxor").num_states
    with pytest.raises(ValueError, match="processes.*not valid JSON"):
        parse_params(["processes=[\"mess3\","])


@pytest.mark.parametrize("name,params,match", [
    ("leaky_rrxor", dict(eps=1.5), "eps"),
    ("leaky_rrxor", dict(p1=-0.1), "p1"),
    ("matching_parens", dict(open_probs=()), "open_probs"),
    ("matching_parens", dict(open_probs=(0.5, 1.2)), r"open_probs\[1\]"),
    ("random_epsilon_machine", dict(num_states=0), "num_states"),
    ("random_epsilon_machine", dict(sparsity=1.0), "sparsity"),
    ("random_epsilon_machine", dict(concentration=0), "concentration"),
    ("tom_quantum", dict(alpha=0, beta=0), "alpha and beta"),
    ("tom_quantum", dict(alpha=float("nan")), "alpha"),
    ("post_quantum", dict(log_alpha=-0.1), "alpha"),
    ("post_quantum", dict(beta=1.0), "beta"),
    ("post_quantum", dict(log_alpha=math.log(1.5), beta=0.5), "alpha \\+ beta"),
    ("fanizza", dict(lam=1.0), "lam"),
    ("fanizza", dict(alpha=float("inf")), "alpha"),
])
def test_parameter_validation(name, params, match):
    with pytest.raises(ValueError, match=match):
        P.get(name, **params)


def test_leaky_rrxor_definition():
    base = P.rrxor(0.3, 0.6).T
    T = P.leaky_rrxor(0.3, 0.6, 0.2).T
    np.testing.assert_allclose(T, 0.8 * base + 0.02, atol=1e-15)
    np.testing.assert_allclose(P.leaky_rrxor(0.3, 0.6, 0.0).T, base)


def test_rrxor_third_bit_is_xor():
    proc = P.rrxor()
    x = cm.sample(proc, 64, 30, seed=3, initial=np.eye(5)[0]).astype(int)  # start in state S
    np.testing.assert_array_equal(x[:, 2::3], x[:, 0::3] ^ x[:, 1::3])


def test_matching_parens_is_balanced_and_bounded():
    probs = (0.7, 0.4, 0.9)
    proc = P.matching_parens(probs)
    D = len(probs) + 1
    assert proc.num_states == D + 1 and proc.vocab_size == 2
    x = cm.sample(proc, 256, 200, seed=1, initial=np.eye(D + 1)[0]).astype(int)
    depth = np.cumsum(np.where(x == 0, 1, -1), axis=1)
    assert depth.min() >= 0 and depth.max() <= D
    # the conditional open probability at depth d matches open_probs[d - 1]
    prev = np.concatenate([np.zeros((x.shape[0], 1), int), depth[:, :-1]], axis=1)
    assert np.all(x[prev == 0] == 0)
    assert np.all(x[prev == D] == 1)
    for d in range(1, D):
        frac = (x[prev == d] == 0).mean()
        n = (prev == d).sum()
        assert abs(frac - probs[d - 1]) < 5 * math.sqrt(probs[d - 1] * (1 - probs[d - 1]) / n)


def test_random_epsilon_machine_is_unifilar_irreducible_and_seeded():
    from compmech.epsilon_machine import is_unifilar

    a = P.random_epsilon_machine(7, 3, seed=5, sparsity=0.3)
    b = P.random_epsilon_machine(7, 3, seed=5, sparsity=0.3)
    c = P.random_epsilon_machine(7, 3, seed=6, sparsity=0.3)
    np.testing.assert_array_equal(a.T, b.T)
    assert not np.array_equal(a.T, c.T)
    assert is_unifilar(a)
    assert np.all((a.T > 0).sum(axis=2) <= 1)
    assert np.all(a.stationary > 0)  # irreducible: unique, strictly positive stationary


def test_tom_quantum_definition():
    a, b = 1.0, math.sqrt(51)
    g = 1 / (4 * (a * a + b * b))
    c, m, o = 0.25, (a * a - b * b) * g, 2 * a * b * g
    T = P.tom_quantum(a, b).T
    np.testing.assert_allclose(T[0], [[c, 0, o], [0, m, 0], [o, 0, c]])
    np.testing.assert_allclose(T[3], [[c, -o, 0], [-o, c, 0], [0, 0, m]])
    assert T.min() < 0  # genuinely quasi-probabilistic


def test_post_quantum_definition():
    proc = P.post_quantum(1.0, 0.5)
    al, be = math.e, 0.5
    T0 = np.outer([1, 1, 0], [1, -1, -1])
    T1 = np.array([[al, 0, 0], [0, 1, 0], [0, 1.0, 1]])
    T2 = np.array([[be, 0, 0], [0, 1, 0], [0, math.log(be), 1]])
    raw = np.stack([T0, T1, T2]).astype(float)
    rho = max(abs(np.linalg.eigvals(raw.sum(0))))
    np.testing.assert_allclose(proc.T, raw / rho, atol=1e-14)


def test_fanizza_definition_and_word_probabilities():
    al, lam = 2000.0, 0.49
    proc = P.fanizza(al, lam)
    cs, sn = math.cos(al), math.sin(al)
    w = np.array([1, 1 - lam, 1 + lam * (sn - cs), 1 - lam * (sn + cs)])
    np.testing.assert_allclose(proc.T[1], lam * np.array([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, cs, -sn],
                                                          [0, 0, sn, cs]]), atol=1e-14)
    assert np.linalg.matrix_rank(proc.T[0]) == 1
    np.testing.assert_allclose(proc.T[0] @ np.ones(4), w * (proc.T[0][0] @ np.ones(4)) / w[0], atol=1e-12)
    # brute-force word probabilities (independent of the compiled kernels) are >= 0 and sum to 1
    for L in (1, 5, 8):
        ps = [ref_sequence_prob(proc.T, s) for s in itertools.product(range(2), repeat=L)]
        assert min(ps) > -1e-12
        assert sum(ps) == pytest.approx(1.0, abs=1e-10)


def test_mixture_is_block_diagonal_with_weighted_stationary():
    gm, z1r = P.golden_mean(), P.zero_one_random()
    mix = P.mixture([gm, z1r], [0.25, 0.75])
    assert mix.num_states == 5
    np.testing.assert_allclose(mix.T[:, :2, :2], gm.T)
    np.testing.assert_allclose(mix.T[:, 2:, 2:], z1r.T)
    assert np.all(mix.T[:, :2, 2:] == 0)
    np.testing.assert_allclose(mix.stationary, np.concatenate([0.25 * gm.stationary, 0.75 * z1r.stationary]))
    # word probabilities are the weighted mixture of the components'
    seq = [0, 1, 0, 0, 1]
    init = np.concatenate([0.25 * ref_stationary(gm.T), 0.75 * ref_stationary(z1r.T)])
    pm = ref_sequence_prob(mix.T, seq, init)
    pg = ref_sequence_prob(gm.T, seq)
    pz = ref_sequence_prob(z1r.T, seq)
    assert pm == pytest.approx(0.25 * pg + 0.75 * pz)
    with pytest.raises(ValueError, match="weights"):
        P.mixture([gm, z1r], [0.5, 0.6])
    with pytest.raises(ValueError, match="length 2"):
        P.mixture([gm, z1r], [1.0])
    assert isinstance(P.mixture([gm, P.post_quantum()]), P.MixtureGHMM)  # GHMM mixtures work (#11)


def test_product_joint_tokens_are_independent():
    a, b = P.golden_mean(0.3), P.coin(0.2)
    prod = P.product([a, b])
    assert prod.vocab_size == 4 and prod.num_states == 2
    seq_a, seq_b = [0, 1, 0, 0], [1, 1, 0, 1]
    joint = [xa * 2 + xb for xa, xb in zip(seq_a, seq_b)]
    p = ref_sequence_prob(prod.T, joint)
    assert p == pytest.approx(ref_sequence_prob(a.T, seq_a) * ref_sequence_prob(b.T, seq_b))
    assert P.product([a, P.post_quantum()]).is_generalized


@pytest.mark.parametrize("base", [P.mess3(), P.post_quantum()])
def test_with_bos(base):
    proc = P.with_bos(base)
    V, S = base.vocab_size, base.num_states
    assert proc.bos_token == V and proc.bos_state == S
    x = cm.sample(proc, 128, 12, seed=0)
    assert np.all(x[:, 0] == V) and np.all(x[:, 1:] < V)
    # P(BOS, w) under the wrapper == P(w) under the base process, for every word of length 3
    for w in itertools.product(range(V), repeat=3):
        pw = ref_sequence_prob(proc.T, (V,) + w, init=np.eye(S + 1)[S])  # start in the BOS state
        assert pw == pytest.approx(ref_sequence_prob(base.T, w), abs=1e-12)


@given(proc=random_processes())
def test_stationary_and_w_match_the_reference(proc):
    """The library's derived vectors against the reference's own linear algebra (SVD null
    spaces of sum_x T[x] - I), for every kind of random process."""
    w = ref_w(proc.T)
    np.testing.assert_allclose(proc.w / proc.w.mean(), w / w.mean(), atol=1e-8)
    pi = ref_stationary(proc.T)
    np.testing.assert_allclose(proc.stationary / (proc.stationary @ w), pi, atol=1e-8 * max(1, np.abs(pi).max()))
