"""Arrays of other libraries in, the same kind out on the same device: JAX CPU arrays here
(DLPack), CUDA arrays (JAX/CuPy/any ``__cuda_array_interface__`` exporter) in cuda-marked tests."""
from __future__ import annotations

import numpy as np
import pytest

import compmech as cm
from compmech import _interop

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

MESS3 = cm.processes.mess3()
GHMM = cm.processes.random_ghmm_like(5, 3, seed=1)
CPU = jax.devices("cpu")[0]


def is_jax(a):
    return isinstance(a, jax.Array)


def device_of(a):
    return next(iter(a.devices()))


@pytest.mark.parametrize("proc", [MESS3, GHMM], ids=["hmm", "ghmm"])
@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.int32])
def test_beliefs_and_log_prob_of_jax_tokens(proc, dtype):
    tok = cm.sample(proc, 9, 17, seed=3)
    jt = jnp.asarray(tok, dtype=dtype)
    b, lp = cm.beliefs(proc, jt, return_log_prob=True)
    assert is_jax(b) and is_jax(lp) and device_of(b) == device_of(jt)
    ref_b, ref_lp = cm.beliefs(proc, tok, return_log_prob=True)
    assert b.dtype == jnp.float32 and b.shape == ref_b.shape
    np.testing.assert_array_equal(np.asarray(b), ref_b)
    want = np.asarray(cm.log_prob(proc, tok)).astype(lp.dtype)  # log_prob's own arithmetic, then jax's dtype
    np.testing.assert_array_equal(np.asarray(cm.log_prob(proc, jt)), want)
    np.testing.assert_allclose(np.asarray(lp, np.float64), ref_lp, rtol=1e-6)  # float32 unless jax_enable_x64
    one = cm.beliefs(proc, jt[4])
    assert is_jax(one) and one.shape == (17, proc.num_states)
    np.testing.assert_array_equal(np.asarray(one), ref_b[4])


def test_jax_errors_are_the_numpy_errors():
    tok = cm.sample(MESS3, 3, 8, seed=0).astype(np.int32)
    tok[1, 5] = 9
    with pytest.raises(ValueError) as np_err:
        cm.beliefs(MESS3, tok)
    with pytest.raises(ValueError) as jax_err:
        cm.beliefs(MESS3, jnp.asarray(tok))
    assert str(jax_err.value) == str(np_err.value)
    with pytest.raises(TypeError, match="integer"):
        cm.beliefs(MESS3, jnp.zeros((2, 3), jnp.float32))


def test_jax_tokens_are_read_in_place():
    jt = jnp.arange(12, dtype=jnp.int32).reshape(3, 4) % 3
    native, _ = _interop.incoming(jt)
    assert isinstance(native, torch.Tensor) and native.device.type == "cpu"
    assert native.data_ptr() == jt.unsafe_buffer_pointer()  # zero-copy


def test_beliefs_come_back_without_a_copy(monkeypatch):
    """float32 beliefs are written into a buffer aligned as XLA wants, which JAX adopts."""
    made = []
    orig = _interop.aligned_empty
    monkeypatch.setattr(_interop, "aligned_empty", lambda *a: made.append(orig(*a)) or made[-1])
    b = cm.beliefs(MESS3, jnp.asarray(cm.sample(MESS3, 5, 7, seed=0)))
    assert len(made) == 1 and b.unsafe_buffer_pointer() == made[0].ctypes.data


def test_out_must_be_writable():
    tok = cm.sample(MESS3, 2, 4, seed=0)
    with pytest.raises(TypeError, match="immutable"):
        cm.beliefs(MESS3, tok, out=jnp.zeros((2, 4, 3), jnp.float32))


@pytest.mark.parametrize("proc", [MESS3, GHMM], ids=["hmm", "ghmm"])
def test_sample_on_a_jax_device(proc):
    got = cm.sample(proc, 20, 11, seed=5, return_beliefs=True, device=CPU)
    ref = cm.sample(proc, 20, 11, seed=5, return_beliefs=True)
    for g, r in zip(got, ref):
        assert is_jax(g) and device_of(g) == CPU
        np.testing.assert_array_equal(np.asarray(g), r)
    assert got[0].dtype == jnp.uint8


def test_msp_tree_on_a_jax_device():
    tree = cm.msp_tree(MESS3, 5, device=CPU)
    ref = cm.msp_tree(MESS3, 5)
    lv, rl = tree.level(5), ref.level(5)
    for name in ("beliefs", "probs", "parent", "token"):
        assert is_jax(getattr(lv, name)), name
        np.testing.assert_allclose(np.asarray(getattr(lv, name)), getattr(rl, name), rtol=1e-6)
    assert is_jax(lv.sequences)
    np.testing.assert_array_equal(np.asarray(lv.sequences), rl.sequences)
    np.testing.assert_allclose(np.asarray(lv.next_token_probs), rl.next_token_probs, rtol=1e-6)


def test_initial_as_a_jax_array():
    init = jnp.asarray([0.2, 0.3, 0.5])
    tok = cm.sample(MESS3, 4, 6, seed=1)
    np.testing.assert_array_equal(np.asarray(cm.beliefs(MESS3, jnp.asarray(tok), initial=init)),
                                  cm.beliefs(MESS3, tok, initial=np.asarray(init)))  # JAX's float32 values
    tree = cm.msp_tree(MESS3, 3, initial=init, device=CPU)
    np.testing.assert_allclose(np.asarray(tree.level(3).probs),
                               cm.msp_tree(MESS3, 3, initial=np.asarray(init)).level(3).probs, rtol=1e-6)


def test_numpy_and_torch_pass_through_untouched():
    a, t = np.zeros(3), torch.zeros(3)
    assert _interop.incoming(a) == (a, _interop.identity) and _interop.incoming(t)[0] is t
    assert isinstance(_interop.incoming(t)[1](a), torch.Tensor)  # a CPU result for torch input
    assert _interop.for_device("cpu") == ("cpu", _interop.identity)


# ---- CUDA arrays (on a GPU only) -------------------------------------------------------------

HAS_GPU = torch.cuda.is_available() and cm.build_info()["cuda"]


class CudaArrayInterface:
    """A minimal third-party CUDA array: only ``__cuda_array_interface__`` (as numba's)."""

    def __init__(self, t):
        self._t = t
        self.__cuda_array_interface__ = t.__cuda_array_interface__


class DLPackOnly:
    """A minimal third-party array that exports DLPack only."""

    def __init__(self, t):
        self._t = t

    def __dlpack__(self, **kw):
        return self._t.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU visible")
@pytest.mark.parametrize("wrap", [DLPackOnly, CudaArrayInterface])
def test_cuda_arrays_of_other_libraries(wrap):
    tok = cm.sample(MESS3, 64, 32, seed=0, device="cuda")
    foreign = wrap(tok)
    native, _ = _interop.incoming(foreign)
    assert native.data_ptr() == tok.data_ptr()  # zero-copy
    b = cm.beliefs(MESS3, foreign)  # an exporter compmech does not know: torch tensors come back
    assert b.is_cuda and b.device == tok.device
    np.testing.assert_allclose(b.cpu().numpy(), cm.beliefs(MESS3, tok.cpu().numpy()), rtol=2e-7, atol=2e-7)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU visible")
def test_jax_or_cupy_cuda_arrays():
    try:
        import cupy as xp

        make, dev = xp.asarray, xp.cuda.Device(0)
    except ImportError:
        gpus = [d for d in jax.devices() if d.platform == "gpu"] if any(
            d.platform == "gpu" for d in jax.devices()) else []
        if not gpus:
            pytest.skip("neither CuPy nor a CUDA build of JAX is installed")
        make, dev = (lambda a: jax.device_put(jnp.asarray(a), gpus[0])), gpus[0]
    tok = cm.sample(MESS3, 64, 32, seed=0)
    b = cm.beliefs(MESS3, make(tok))
    assert type(b).__module__.split(".")[0] in ("cupy", "jax", "jaxlib")
    np.testing.assert_allclose(np.asarray(b.get() if hasattr(b, "get") else b), cm.beliefs(MESS3, tok),
                               rtol=2e-7, atol=2e-7)
    t = cm.sample(MESS3, 16, 8, seed=1, device=dev)
    np.testing.assert_array_equal(np.asarray(t.get() if hasattr(t, "get") else t), cm.sample(MESS3, 16, 8, seed=1))
