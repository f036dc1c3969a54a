"""Arrays that went through pickle (Dask tasks, spawn/forkserver DataLoader workers) carry an
equal but distinct dtype object; the compiled core must accept them like any other array."""
import pickle

import numpy as np

import compmech as cm


def _roundtrip(x):
    return pickle.loads(pickle.dumps(x))


def test_unpickled_process_and_tokens_run_in_every_kernel():
    proc = cm.processes.mess3()
    back = _roundtrip(proc)
    assert back.T.dtype == np.float64 and back.T.dtype is not np.dtype(np.float64)
    tok = cm.sample(proc, 4, 9, seed=3)
    np.testing.assert_array_equal(cm.sample(back, 4, 9, seed=3), tok)
    tok_back = _roundtrip(tok)
    np.testing.assert_array_equal(cm.beliefs(back, tok_back), cm.beliefs(proc, tok))
    np.testing.assert_array_equal(cm.log_prob(back, _roundtrip(tok.astype(np.int64))), cm.log_prob(proc, tok))
    a, b = cm.msp_tree(back, 4), cm.msp_tree(proc, 4)
    np.testing.assert_array_equal(a.level(4).beliefs, b.level(4).beliefs)
    ghmm = _roundtrip(cm.processes.fanizza())
    np.testing.assert_array_equal(cm.sample(ghmm, 2, 5, seed=1), cm.sample(cm.processes.fanizza(), 2, 5, seed=1))
