"""Bad input: each case raises a clear ValueError/TypeError naming what is wrong; none crashes."""
import numpy as np
import pytest
import torch

import compmech as cm
from compmech import _core


def test_hmm_validation():
    good = cm.processes.mess3().T
    with pytest.raises(ValueError, match=r"shape \(V, S, S\)"):
        cm.HMM(good[0])
    with pytest.raises(ValueError, match="last two differ"):
        cm.HMM(np.ones((2, 3, 4)) / 8)
    with pytest.raises(ValueError, match="V >= 1 and S >= 1"):
        cm.HMM(np.zeros((0, 2, 2)))
    for bad_value, word in ((np.nan, "not finite"), (np.inf, "not finite"), (-0.1, "negative")):
        T = good.copy()
        T[1, 2, 0] = bad_value
        with pytest.raises(ValueError, match=rf"T\[1, 2, 0\].*{word}"):
            cm.HMM(T)
    T = good.copy()
    T[0, 1, 1] += 0.01
    with pytest.raises(ValueError, match=r"row 1 of T.sum\(0\) sums to 1.01\d*, not 1"):  # not np.float64(1.01)
        cm.HMM(T)
    with pytest.raises(TypeError, match="numeric"):
        cm.HMM(np.array([[["a"]]]))
    with pytest.raises(ValueError, match="65535"):
        cm.HMM(np.full((70000, 1, 1), 1 / 70000))


def test_non_unique_stationary_is_an_error_not_a_guess():
    T = np.zeros((2, 2, 2))
    T[0, 0, 0] = 1.0
    T[1, 1, 1] = 1.0  # two absorbing states
    proc = cm.HMM(T)
    with pytest.raises(ValueError, match="not unique"):
        proc.stationary
    with pytest.raises(ValueError, match="initial"):
        cm.beliefs(proc, [0, 0])
    b = cm.beliefs(proc, [0, 0], initial=[0.5, 0.5])  # explicit initial works
    np.testing.assert_allclose(b[-1], [1, 0])


def test_ghmm_validation():
    with pytest.raises(ValueError, match="no real positive eigenvalue"):
        cm.GHMM(np.array([[[0.0, 1.0], [-1.0, 0.0]]]))  # eigenvalues ±i
    g = cm.GHMM(2.0 * cm.processes.mess3().T)
    assert np.isclose(g.scale, 2.0) and np.allclose(g.T.sum(0).sum(1), 1)


def test_token_errors(mess3):
    with pytest.raises(ValueError, match=r"value 3 at row 1, position 2 is outside the vocabulary \[0, 3\)"):
        cm.beliefs(mess3, np.array([[0, 1, 2], [0, 0, 3]]))
    with pytest.raises(ValueError, match=r"value -1 at row 0, position 1"):
        cm.beliefs(mess3, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        cm.beliefs(mess3, np.array([[0, 2**40]], dtype=np.uint64))
    with pytest.raises(TypeError, match="integer array, got dtype float64"):
        cm.beliefs(mess3, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="integer"):
        cm.beliefs(mess3, np.array([True, False]))
    with pytest.raises(ValueError, match=r"shape \(B, L\) or \(L,\)"):
        cm.beliefs(mess3, np.zeros((2, 2, 2), np.int64))
    with pytest.raises(TypeError, match="integer"):
        cm.beliefs(mess3, torch.zeros(3))


def test_zero_probability_sequence(mess3):
    gm = cm.processes.golden_mean()
    with pytest.raises(ValueError, match=r"token 1 at row 1, position 3 has zero probability"):
        cm.beliefs(gm, np.array([[0, 1, 0, 1], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="zero probability"):
        cm.log_prob(gm, [1, 1])
    b, lp = cm.beliefs(gm, np.array([[0, 1, 0, 1], [0, 0, 1, 1]]), on_zero="nan", return_log_prob=True)
    assert np.isfinite(lp[0]) and lp[1] == -np.inf
    assert np.all(np.isnan(b[1, 3])) and np.all(np.isfinite(b[1, :3]))
    with pytest.raises(ValueError, match="on_zero"):
        cm.beliefs(gm, [0], on_zero="ignore")


def test_initial_errors(mess3):
    with pytest.raises(ValueError, match="length 3"):
        cm.beliefs(mess3, [0], initial=[0.5, 0.5])
    with pytest.raises(ValueError, match="sums to"):
        cm.beliefs(mess3, [0], initial=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="negative"):
        cm.sample(mess3, 1, 1, seed=0, initial=[1.5, -0.5, 0.0])
    with pytest.raises(ValueError, match="non-finite"):
        cm.msp_tree(mess3, 1, initial=[np.nan, 0.5, 0.5])
    g = cm.processes.random_ghmm_like(3, 2, seed=0)
    with pytest.raises(ValueError, match="initial @ w"):
        cm.beliefs(g, [0], initial=np.zeros(3))


def test_a_ghmm_initial_must_be_a_state():
    """tom_quantum's states are the Bloch disk. From a point outside it some tokens have negative
    probability; the kernels used to drop them as impossible and return the rest: msp_tree level
    probabilities summing to 2.56, and cm.sample drawing the negative-probability tokens."""
    g = cm.processes.get("tom_quantum")
    outside = np.array([1 / 3, 5.0, 5.0])  # initial @ w == 1, token probabilities (1.28, -0.78, 1.28, -0.78)
    for call in (lambda: cm.msp_tree(g, 2, initial=outside), lambda: cm.sample(g, 2, 4, seed=0, initial=outside),
                 lambda: cm.beliefs(g, [0, 2], initial=outside)):
        with pytest.raises(ValueError, match="initial is not a state of this GHMM: it gives token 1 the negative"):
            call()
    # Every token possible at first, a negative-probability pair of tokens after (found by search):
    inside_first = np.array([1 / 3, -0.11529596, -0.65655378])
    assert np.einsum("i,xij,j->x", inside_first, g.T, g.w).min() > 0
    with pytest.raises(ValueError, match="length 2 have negative probability"):
        cm.msp_tree(g, 3, initial=inside_first)
    # ... and the kernels that walk sequences find it where it happens (sample used to draw on)
    deep = "initial is not a state of this GHMM: the belief it leads to before row {}, position {} gives token 0 the negative"
    with pytest.raises(ValueError, match=deep.format(1, 3)):
        cm.sample(g, 3, 6, seed=0, initial=inside_first)
    with pytest.raises(ValueError, match=deep.format(1, 3)):
        cm.sample(g, 3, 6, seed=0, initial=inside_first, return_beliefs=True, dtype=np.float64)
    toks = np.array([[2, 2, 2], [0, 0, 1]])  # row 1: token 0 has probability -0.0036 after one 0
    for on_zero in ("raise", "nan"):  # not an impossible sequence: on_zero does not apply
        for call in (lambda: cm.beliefs(g, toks, initial=inside_first, on_zero=on_zero),
                     lambda: cm.log_prob(g, toks, initial=inside_first, on_zero=on_zero)):
            with pytest.raises(ValueError, match=deep.format(1, 1)):
                call()
    assert g.most_negative_token(inside_first, [0])[0] == 0
    assert g.most_negative_token(inside_first, []) is None
    reached = cm.msp_tree(g, 3).level(3).beliefs[5]  # a state: the belief after a sequence
    for dtype in (np.float32, np.float64):  # valid states pass, float32 round-off included
        t = cm.msp_tree(g, 8, dtype=dtype, initial=reached)
        assert abs(t.level(8).probs.sum() - 1) < 1e-5


def test_size_and_seed_errors(mess3):
    with pytest.raises(ValueError, match="batch must be >= 0"):
        cm.sample(mess3, -1, 5, seed=0)
    with pytest.raises(ValueError, match="length must be >= 0"):
        cm.sample(mess3, 1, -5, seed=0)
    with pytest.raises(TypeError, match="batch must be an integer"):
        cm.sample(mess3, 2.5, 5, seed=0)
    with pytest.raises(TypeError, match="seed is required"):
        cm.sample(mess3, 1, 1, seed=None)
    with pytest.raises(ValueError, match="seed must be < 2\\*\\*64"):
        cm.sample(mess3, 1, 1, seed=2**64)
    with pytest.raises(ValueError, match="a GHMM has no hidden states"):
        cm.sample(cm.processes.random_ghmm_like(2, 2), 1, 1, seed=0, return_states=True)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        cm.msp_tree(mess3, -1)
    with pytest.raises(ValueError, match="min_prob"):
        cm.msp_tree(mess3, 2, min_prob=-1)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        cm.beliefs(mess3, [0], dtype=np.int32)
    with pytest.raises(TypeError, match="HMM or compmech.GHMM"):
        cm.beliefs(np.ones((1, 1, 1)), [0])


def test_extension_checks_its_own_arguments():
    """The compiled module validates what it is handed, even bypassing the Python layer."""
    T = cm.processes.mess3().T
    init = np.full(3, 1 / 3)
    tok = np.zeros((1, 2), np.int64)
    with pytest.raises(TypeError, match="T must be a float64"):
        _core.beliefs(T.astype(np.float32), None, init, tok, "float32", False, 0.0)
    with pytest.raises(ValueError, match="initial: dimension 0 must be 3"):
        _core.beliefs(T, None, np.ones(2), tok, "float32", False, 0.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.beliefs(T, None, init, np.zeros((2, 4), np.int64)[:, ::2], "float32", False, 0.0)
    with pytest.raises(TypeError, match="tokens must be uint8"):
        _core.beliefs(T, None, init, np.zeros((1, 2)), "float32", False, 0.0)
    bad = T.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        _core.msp_level(bad, None, init[None], np.ones(1), 0.0, 0.0, False)
    with pytest.raises(ValueError, match="non-negative"):
        _core.sample_hmm(-T, init, 1, 1, 0, 0, False)
    with pytest.raises(ValueError, match="parent beliefs must have shape"):
        _core.msp_level(T, None, np.ones((1, 2)), np.ones(1), 0.0, 0.0, False)


def test_tiny_but_possible_probabilities_stay_finite():
    """A token of subnormal probability (1/p would overflow) is possible, not an error."""
    eps = 1e-310
    T = np.zeros((2, 2, 2))
    T[0] = 0.5
    T[1, 0] = eps / 2
    T[0, 0] *= 1 - eps
    proc = cm.HMM(T)
    seq = [0, 0, 1, 0, 0, 0]
    lp = cm.log_prob(proc, seq)
    ref = np.log(proc.stationary @ T[0] @ T[0] @ T[1] @ T[0] @ T[0] @ T[0] @ np.ones(2))
    assert np.isfinite(lp) and np.isclose(lp, ref, rtol=1e-9)
    assert np.all(np.isfinite(cm.beliefs(proc, np.tile(seq, (20, 1)))))  # SIMD lanes path too
    lvl = cm.msp_tree(proc, 2).level(2)
    assert np.all(np.isfinite(lvl.beliefs)) and np.all(np.isfinite(lvl.probs))
    assert np.isclose(lvl.probs.sum(), 1.0)


def test_periodic_hmm_is_a_ghmm_with_unit_w():
    for name in ("zero_one_random", "matching_parens", "rrxor"):
        hmm = cm.processes.get(name)
        g = cm.GHMM(hmm.T)
        np.testing.assert_array_equal(g.w, np.ones(hmm.num_states))
        assert g.scale == 1.0


def test_non_native_byte_order_and_metadata(mess3):
    tokens = np.array([[0, 1, 2]])
    ref = cm.beliefs(mess3, tokens)
    np.testing.assert_array_equal(cm.beliefs(mess3, tokens.astype(">i8")), ref)
    np.testing.assert_array_equal(cm.beliefs(mess3, tokens.astype(np.dtype(np.int64, metadata={"a": 1}))), ref)
    with pytest.raises(ValueError, match="native byte order"):
        cm.beliefs(mess3, tokens, out=np.empty((1, 3, 3), ">f8"))


def test_argument_type_errors(mess3):
    with pytest.raises(TypeError, match="min_prob must be a real number"):
        cm.msp_tree(mess3, 2, min_prob="a")
    with pytest.raises(TypeError, match="min_prob must be a real number"):
        cm.msp_tree(mess3, 2, min_prob=np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="n must be >= 1"):
        cm.set_num_threads(-5)
    with pytest.raises(ValueError, match="batch must be < 2"):
        cm.sample(mess3, 2**63, 1, seed=0)
    with pytest.raises(ValueError, match="parent probabilities must be >= 0"):
        _core.msp_level(mess3.T, None, np.full((1, 3), 1 / 3), -np.ones(1), 0.0, 0.0, False)
    with pytest.raises(ValueError, match="parent beliefs contain a non-finite"):
        _core.msp_level(mess3.T, None, np.full((1, 3), np.nan), np.ones(1), 0.0, 0.0, False)


def test_import_stays_light():
    """`import compmech` must not pull in torch, matplotlib, scikit-learn (or networkx/scipy)."""
    import subprocess
    import sys

    code = ("import sys, compmech; heavy = [m for m in ('torch', 'matplotlib', 'sklearn', 'networkx', 'scipy') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"


@pytest.mark.parametrize("device, says", [("bogus", "is not a device"), (3.5, "is not a device"),
                                          (object(), "is not a device"), ("meta", "holds no data")])
def test_bad_devices_are_one_value_error(device, says):
    """torch's RuntimeError/TypeError (a list of every device type) used to escape, and 'meta'
    returned data-less tensors: the sampled tokens were silently lost."""
    p = cm.processes.mess3()
    for call in (lambda: cm.sample(p, 2, 3, seed=0, device=device), lambda: cm.msp_tree(p, 2, device=device)):
        with pytest.raises(ValueError, match=says) as e:
            call()
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("value, threads, warns", [("3", 3, False), (" 2 ", 2, False), ("bogus", None, True),
                                                   ("1.5", None, True), ("4x", None, True), ("0", None, True),
                                                   ("-2", None, True)])
def test_compmech_num_threads_env(value, threads, warns):
    """A bad COMPMECH_NUM_THREADS was silently ignored ("bogus") or cut ("1.5" ran 1 thread,
    "4x" 4): now only whole numbers count, and anything else is ignored with a warning."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-W", "always", "-c", "import compmech as cm, os; "
                        "print(cm.get_num_threads(), os.cpu_count())"], capture_output=True, text=True,
                       env={**os.environ, "COMPMECH_NUM_THREADS": value}, timeout=120)
    got, cores = map(int, r.stdout.split())
    assert got == (threads or cores)
    assert ("COMPMECH_NUM_THREADS" in r.stderr and "ignored" in r.stderr) == warns, r.stderr
