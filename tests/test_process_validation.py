"""Every numeric parameter of every named process is validated (finite, in range) and bad
values raise at once with one clear ValueError; parameter checks share one error type."""
import inspect
import math
import signal

import numpy as np
import pytest

import compmech as cm
from compmech import _validate
from compmech._validate import ParameterError

P = cm.processes
COMPOSITES = {"mixture", "product", "with_bos"}


class _Deadline:
    """Turn a hang into a test failure (SIGALRM, Linux/macOS main thread)."""

    def __init__(self, seconds=10):
        self.seconds = seconds

    def __enter__(self):
        def boom(*_):
            raise TimeoutError(f"did not return within {self.seconds} s")

        self.old = signal.signal(signal.SIGALRM, boom)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def _numeric_params():
    out = []
    for name in P.names():
        if name in COMPOSITES:
            continue
        for pname, par in inspect.signature(P.get.__globals__["_REGISTRY"][name]).parameters.items():
            d = par.default
            if isinstance(d, (int, float)) and not isinstance(d, bool):
                out.append((name, pname))
    return out


NUMERIC = _numeric_params()


def test_every_process_has_its_parameters_listed():
    assert {n for n, _ in NUMERIC} >= {"coin", "mess3", "random_ghmm_like", "post_quantum", "fanizza", "tom_quantum"}


@pytest.mark.parametrize("name,param", NUMERIC)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "abc", None])
def test_non_finite_or_non_numeric_parameters_raise(name, param, bad):
    with _Deadline(10), pytest.raises(ValueError, match=param):
        P.get(name, **{param: bad})


@pytest.mark.parametrize("name", ["random_hmm", "random_ghmm_like", "random_epsilon_machine"])
@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_seeds_and_counts_are_integers(name, bad):
    with pytest.raises(ValueError, match="seed"):
        P.get(name, seed=bad)
    with pytest.raises(ValueError, match="num_states"):
        P.get(name, num_states=bad if bad is not True else 0)


def test_random_ghmm_like_mixing():
    with _Deadline(10), pytest.raises(ValueError, match="mixing"):
        P.random_ghmm_like(mixing=math.inf)
    with _Deadline(10), pytest.raises(ValueError, match="mixing"):
        P.random_ghmm_like(mixing=1e308)  # finite, but I + mixing * R overflows
    # large finite values still give the HMM's process (the perturbation is halved back)
    g = P.random_ghmm_like(mixing=1e6)
    h = P.random_hmm()
    toks = cm.sample(h, 4, 20, seed=1)
    np.testing.assert_allclose(cm.log_prob(g, toks), cm.log_prob(h, toks), rtol=1e-9)


@pytest.mark.parametrize("log_alpha", [1e308, 710.0, 0.0, -1.0])
def test_post_quantum_log_alpha_range_is_a_value_error(log_alpha):
    with pytest.raises(ValueError, match="log_alpha"):
        P.post_quantum(log_alpha=log_alpha)


def test_tom_quantum_overflow_and_ranges():
    with pytest.raises(ValueError, match="overflow"):
        P.tom_quantum(alpha=1e200, beta=1e200)
    with pytest.raises(ValueError, match="lam"):
        P.fanizza(lam=1.0)
    with pytest.raises(ValueError, match="open_probs"):
        P.matching_parens(open_probs=["a"])
    with pytest.raises(ValueError, match="open_probs"):
        P.matching_parens(open_probs=[0.5, math.nan])
    with pytest.raises(ValueError, match="concentration"):
        P.random_hmm(concentration=math.inf)


def test_describe_unknown_process_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown process 'nosuch'; known: .*mess3"):
        P.describe("nosuch")
    assert P.describe("mess3").startswith("mess3(")


def test_one_error_type_for_parameter_checks():
    # wrong type and wrong value both raise ParameterError, a ValueError and a TypeError
    assert issubclass(ParameterError, ValueError) and issubclass(ParameterError, TypeError)
    cases = [lambda: cm.sample(P.coin(), 2.5, 3, seed=0), lambda: cm.sample(P.coin(), -1, 3, seed=0),
             lambda: cm.msp(P.coin(), max_states=True), lambda: cm.msp(P.coin(), max_depth=-1),
             lambda: cm.measures.myopic_entropy(P.coin(), 1.5), lambda: cm.measures.state_uncertainty(P.coin(), -1),
             lambda: P.random_hmm(num_states=0), lambda: P.coin(p=2), lambda: cm.msp_tree(P.coin(), "3")]
    for f in cases:
        with pytest.raises(ParameterError):
            f()


def test_validate_helpers():
    assert _validate.integer(np.int64(3), "n") == 3
    assert _validate.integer(None, "n", none_ok=True) is None
    with pytest.raises(ParameterError, match="n must be < 2\\*\\*8"):
        _validate.integer(256, "n", limit=256)
    assert _validate.real(np.float32(0.5), "x", low=0, high=1) == 0.5
    with pytest.raises(ParameterError, match=r"x must be in \(0, 1\]"):
        _validate.real(0, "x", low=0, high=1, open_low=True)
    with pytest.raises(ParameterError, match="finite"):
        _validate.real(float("inf"), "x")
    with pytest.raises(ParameterError, match="real number"):
        _validate.real(10**400, "x")


@pytest.mark.parametrize("call", [
    lambda: cm.measures.entropy_rate(P.mess3(), max_tokens=-5, max_states=10),
    lambda: cm.measures.entropy_rate(P.mess3(), max_tokens=1.5, max_states=10),
    lambda: cm.measures.excess_entropy(P.mess3(), seed=-1, max_states=10),
    lambda: cm.measures.summary(P.mess3(), max_tokens=10, max_states=10),
    lambda: cm.measures.myopic_entropy(P.mess3(), 5, seed=math.nan, max_states=10),
    lambda: cm.measures.cryptic_order(P.even(), threshold=math.nan),
    lambda: cm.measures.cryptic_order(P.even(), max_L=0),
    lambda: P.mixture([P.coin(), P.coin()], ["a", "b"]),
], ids=["max_tokens<0", "max_tokens float", "seed<0", "max_tokens small", "seed nan", "threshold nan", "max_L 0",
        "weights str"])
def test_measure_and_composite_arguments_are_validated(call):
    with _Deadline(20), pytest.raises(ParameterError):
        call()


def _min_word_prob(T, w, eta, length):
    """Plain numpy reference: the smallest probability of any word of 1..length tokens."""
    worst, rows = np.inf, eta[None, :]
    for _ in range(length):
        rows = np.concatenate([rows @ T[x] for x in range(T.shape[0])])
        worst = min(worst, float((rows @ w).min()))
    return worst


def test_fanizza_rejects_parameters_with_negative_word_probabilities(capsys):
    from compmech._validate import ParameterError
    from compmech.cli import main
    from compmech.processes.ghmm import _fanizza_T

    with pytest.raises(ParameterError, match=r"negative word probabilities \(P\(0 \| 0\) = -0\.35.*lam <= 0\.62"):
        P.fanizza(lam=0.7)
    # the unvalidated matrices agree: P(00) < 0 at lam = 0.63, none negative at the default 0.49
    bad = cm.GHMM(_fanizza_T(2000.0, 0.63))
    assert _min_word_prob(bad.T, bad.w, bad.stationary, 2) < -1e-3
    # every accepted (alpha, lam) has no negative word up to length 10; the reported edge is accepted
    rng = np.random.default_rng(3)
    for alpha, lam in [(2000.0, 0.49), (2000.0, 0.62), *zip(rng.uniform(0, 7, 8), rng.uniform(0.05, 0.9, 8))]:
        try:
            g = P.fanizza(alpha=float(alpha), lam=float(lam))
        except ParameterError as exc:
            edge = float(str(exc).rsplit("lam <= ", 1)[1])
            assert edge < lam
            g = P.fanizza(alpha=float(alpha), lam=edge)  # the edge itself is a process
            with pytest.raises(ParameterError):
                P.fanizza(alpha=float(alpha), lam=min(edge + 0.01, 0.999))
        assert _min_word_prob(g.T, g.w, g.stationary, 10) >= -1e-12
    assert main(["experiment", "fanizza", "--set", "process_params.lam=0.7", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "negative word probabilities" in err[0]
