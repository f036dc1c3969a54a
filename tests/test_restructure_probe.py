"""BeliefProbe is a scikit-learn estimator, and refuses NaN targets instead of fitting NaNs."""
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import KFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from compmech.probe import BeliefProbe  # noqa: E402


def _data(n=200, d=4, s=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, s)) + 0.3 + 0.01 * rng.standard_normal((n, s))
    return X, Y


def test_passes_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(BeliefProbe())


def test_params_clone_and_cross_validation():
    p = BeliefProbe(fit_intercept=False, rcond=1e-8)
    assert p.get_params() == {"fit_intercept": False, "rcond": 1e-8}
    assert p.set_params(rcond=1e-6) is p and p.rcond == 1e-6
    c = clone(p)
    assert c is not p and c.get_params() == p.get_params()
    X, Y = _data()
    scores = cross_val_score(BeliefProbe(), X, Y, cv=KFold(4))
    assert scores.shape == (4,) and np.all(scores > 0.99)
    pipe = make_pipeline(StandardScaler(), BeliefProbe()).fit(X, Y)
    assert pipe.score(X, Y) > 0.99
    # a 1-D target predicts a 1-D array (scikit-learn convention)
    assert BeliefProbe().fit(X, Y[:, 0]).predict(X).shape == (200,)


def test_unfitted_and_bad_params():
    with pytest.raises(NotFittedError):
        BeliefProbe().predict(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="rcond"):
        BeliefProbe(rcond=float("nan")).fit(*_data())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_targets_raise(bad):
    X, Y = _data()
    Y[17, 1] = bad
    with pytest.raises(ValueError, match="targets.*NaN or infinite.*17"):
        BeliefProbe().fit(X, Y)
    with pytest.raises(ValueError, match="targets"):
        BeliefProbe().fit(*_data()).score(X, Y)


def test_zero_weights_raise():
    X, Y = _data()
    with pytest.raises(ValueError, match="weight"):
        BeliefProbe().fit(X, Y, sample_weight=np.zeros(len(X)))


def test_probe_activations_refuses_non_finite_activations():
    import compmech as cm
    from compmech.data import PrefixSet
    from compmech.probe import probe_activations

    ps = PrefixSet.build(cm.processes.mess3(), 3)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((len(ps), 4)).astype(np.float32)
    probe_activations({"x": a}, ps, shuffles=2)
    a[5, 1] = np.nan
    with pytest.raises(ValueError, match="'x' contain 1 rows with NaN"):
        probe_activations({"x": a}, ps, shuffles=2)
