"""The CUDA kernels against the CPU core, through the public API on two back ends with the
same test bodies:

* ``emu``: the .cu sources compiled for the CPU (``compmech._cuda_emu``: one std::thread per
  CUDA thread, real barriers, per-block shared memory), with CPU tensors standing in for CUDA
  ones: the one swap is the backend router (``_backend.EmulationRouter``). Runs everywhere, so
  the kernels' indexing, tiling and error flags and the public API's GPU code paths (device
  dispatch, MSP levels as tensors, GPU streaming batches) are tested on every machine.
* ``cuda``: the real GPU (``device="cuda"``, CUDA tensors); marked ``cuda`` and skipped when
  torch sees no GPU.

Sampled tokens must equal the CPU's bit for bit; beliefs and probabilities agree to round-off
(the GPU contracts multiply-adds into FMAs where the CPU build may not, and vice versa).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import compmech as cm
from compmech import _backend, _cuda_ops

torch = pytest.importorskip("torch")

HAS_GPU = torch.cuda.is_available() and cm.build_info()["cuda"]
gpu_only = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU visible (or compmech built without CUDA)")


class Runner:
    """The public API with CUDA devices on the emulation (``emu``) or on the real GPU."""

    def __init__(self, kind: str):
        self.kind = kind
        self.cuda = kind == "cuda"

    def routed(self):
        return contextlib.nullcontext() if self.cuda else _backend.routed(_backend.EmulationRouter())

    def tensor(self, a):
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.cuda() if self.cuda else t

    def beliefs(self, proc, tokens, *, dtype=np.float32, return_log_prob=False, on_zero="raise", out=None,
                initial=None):
        tok = tokens if isinstance(tokens, torch.Tensor) else self.tensor(tokens)
        with self.routed():
            return cm.beliefs(proc, tok, dtype=dtype, return_log_prob=return_log_prob, on_zero=on_zero, out=out,
                              initial=initial)

    def log_prob(self, proc, tokens, on_zero="raise"):
        with self.routed():
            return cm.log_prob(proc, self.tensor(tokens), on_zero=on_zero)

    def sample(self, proc, B, L, *, seed, return_states=False, return_beliefs=False, row_offset=0,
               dtype=np.float32, initial=None):
        with self.routed():
            return cm.sample(proc, B, L, seed=seed, return_states=return_states, return_beliefs=return_beliefs,
                             row_offset=row_offset, dtype=dtype, initial=initial, device="cuda")

    def msp_levels(self, proc, depth, *, dtype=np.float64, min_prob=0.0):
        """Levels 0..depth as (beliefs, probs, parent, token) tensors on this back end."""
        with self.routed():
            tree = cm.msp_tree(proc, depth, dtype=dtype, min_prob=min_prob, device="cuda")
        return [(lv.beliefs, lv.probs, lv.parent, lv.token) for lv in tree]


@pytest.fixture(params=["emu", pytest.param("cuda", marks=[pytest.mark.cuda, gpu_only])])
def run(request, monkeypatch):
    if request.param == "emu":  # the whole test (not only the Runner's calls) on the emulation
        monkeypatch.setattr(_backend, "_router", _backend.EmulationRouter())
    return Runner(request.param)


api = run  # tests of the public API's device plumbing (the Runner is the public API on both)


def host(t):
    return t.cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def close(a, b, dtype):
    """GPU vs CPU beliefs: float64 to round-off; float32 within one float32 rounding."""
    a, b = host(a).astype(np.float64), host(b).astype(np.float64)
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 2e-7
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


MESS3 = cm.processes.mess3(0.05, 0.85)


def processes():
    """Small random HMMs and GHMMs covering the fixed-S kernels (2, 3, 4) and the generic one."""
    return st.builds(lambda S, V, seed, gh: (cm.processes.random_ghmm_like(S, V, seed) if gh
                                             else cm.processes.random_hmm(S, V, seed)),
                     st.sampled_from([1, 2, 3, 4, 5, 9, 16, 20]), st.integers(1, 5), st.integers(0, 2**31 - 1),
                     st.booleans())


# ---- build ----------------------------------------------------------------------------------

def test_cuda_kernels_built_when_nvcc_present():
    """CI has nvcc but no GPU: the CUDA module must still be built (and import without a driver)."""
    if shutil.which("nvcc") is None or os.environ.get("COMPMECH_CUDA", "ON").upper() in ("OFF", "0", "FALSE"):
        pytest.skip("no nvcc on PATH or COMPMECH_CUDA=OFF")
    assert cm.build_info()["cuda"] is True
    from compmech import _cuda

    assert _cuda.max_states == 64
    assert _cuda.runtime_version()[0].isdigit()


def test_no_gpu_gives_clear_errors():
    if HAS_GPU:
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="no CUDA GPU|no CUDA kernels"):
        cm.sample(MESS3, 4, 8, seed=0, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU|no CUDA kernels"):
        cm.msp_tree(MESS3, 2, device="cuda")
    if cm.build_info()["cuda"]:
        from compmech import _cuda

        try:
            n = _cuda.device_count()
        except RuntimeError as exc:  # no driver: the CUDA error text comes through
            assert "CUDA error" in str(exc)
        else:
            assert n == 0 or not torch.cuda.is_available()


# ---- beliefs --------------------------------------------------------------------------------

@settings(max_examples=12)
@given(proc=processes(), B=st.integers(1, 260), L=st.integers(0, 45), seed=st.integers(0, 1000),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_beliefs_match_cpu(proc, B, L, seed, dtype):
    run = Runner("emu")
    _beliefs_match(run, proc, B, L, seed, dtype)


@pytest.mark.cuda
@gpu_only
@settings(max_examples=40)
@given(proc=processes(), B=st.integers(1, 700), L=st.integers(0, 300), seed=st.integers(0, 1000),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_beliefs_match_cpu_gpu(proc, B, L, seed, dtype):
    _beliefs_match(Runner("cuda"), proc, B, L, seed, dtype)


def _beliefs_match(run, proc, B, L, seed, dtype):
    tok = cm.sample(proc, B, L, seed=seed)
    b, lp = run.beliefs(proc, tok, dtype=dtype, return_log_prob=True)
    rb, rlp = cm.beliefs(proc, tok, dtype=dtype, return_log_prob=True)
    assert b.dtype == getattr(torch, np.dtype(dtype).name) and tuple(b.shape) == rb.shape
    close(b, rb, dtype)
    np.testing.assert_allclose(host(lp), rlp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tok_dtype", [np.uint8, np.int16, np.uint16, np.int32, np.int64])
def test_beliefs_token_dtypes_and_1d(run, tok_dtype):
    tok = cm.sample(MESS3, 5, 40, seed=3)
    ref = cm.beliefs(MESS3, tok, dtype=np.float64)
    close(run.beliefs(MESS3, tok.astype(tok_dtype), dtype=np.float64), ref, np.float64)
    one = run.beliefs(MESS3, tok[2].astype(tok_dtype), dtype=np.float64)
    assert tuple(one.shape) == (40, 3)
    close(one, ref[2], np.float64)


def test_beliefs_wide_states_and_tiles(run):
    """S = 12 (no staged output for float64), S = 64 (the limit), B and L off the tile sizes."""
    for S, B, L in ((12, 131, 37), (64, 3, 9)):
        proc = cm.processes.random_hmm(S, 3, seed=S)
        tok = cm.sample(proc, B, L, seed=1)
        for dtype in (np.float32, np.float64):
            close(run.beliefs(proc, tok, dtype=dtype), cm.beliefs(proc, tok, dtype=dtype), dtype)


def test_explicit_initial_belief(run):
    """A non-stationary initial belief is uploaded per call; the kernel must read it (the upload
    once went out of scope before the launch, and the emulation read freed memory)."""
    init = np.array([0.7, 0.2, 0.1])
    tok = cm.sample(MESS3, 37, 30, seed=4, initial=init)
    for _ in range(3):
        b, lp = run.beliefs(MESS3, tok, dtype=np.float64, return_log_prob=True, initial=init)
        rb, rlp = cm.beliefs(MESS3, tok, dtype=np.float64, return_log_prob=True, initial=init)
        close(b, rb, np.float64)
        np.testing.assert_allclose(host(lp), rlp, rtol=1e-12)


def test_beliefs_too_many_states(run):
    proc = cm.processes.random_hmm(65, 2, seed=0)
    with pytest.raises(ValueError, match="at most 64 states"):
        run.beliefs(proc, np.zeros((2, 3), np.uint8))


def test_beliefs_into_out_buffer(run):
    tok = cm.sample(MESS3, 7, 20, seed=2)
    out = torch.full((7, 20, 3), float("nan"), dtype=torch.float64, device="cuda" if run.cuda else "cpu")
    got = run.beliefs(MESS3, tok, out=out)
    assert got is out
    close(out, cm.beliefs(MESS3, tok, dtype=np.float64), np.float64)
    with pytest.raises(ValueError, match="shape"):
        run.beliefs(MESS3, tok, out=out[:, :5])


def test_beliefs_zero_probability_token(run):
    proc = cm.processes.golden_mean() if hasattr(cm.processes, "golden_mean") else None
    if proc is None:
        pytest.skip("no golden_mean process")
    tok = cm.sample(proc, 6, 12, seed=0)
    # find an impossible continuation: in the golden mean process "1" cannot follow "1"
    bad = tok.copy()
    bad[4, 7] = bad[4, 8] = 1 if proc.T[1].sum() > 0 else 0
    ref_b, ref_lp = cm.beliefs(proc, bad, return_log_prob=True, on_zero="nan", dtype=np.float64)
    first = int(np.argmax(np.isnan(ref_b[4, :, 0])))
    with pytest.raises(ValueError, match=f"row 4, position {first}"):
        run.beliefs(proc, bad)
    b, lp = run.beliefs(proc, bad, return_log_prob=True, on_zero="nan", dtype=np.float64)
    b, lp = host(b), host(lp)
    assert np.isnan(b[4, first:]).all() and not np.isnan(b[4, :first]).any()
    assert lp[4] == -np.inf and np.isfinite(np.delete(lp, 4)).all()
    np.testing.assert_allclose(np.delete(lp, 4), np.delete(ref_lp, 4), rtol=1e-12)


def test_log_prob_of_tiny_probabilities(run):
    """Conditional probabilities far below 1e-290 (down to subnormal) are accumulated as exact
    logarithms, not dropped or halved: against log p computed by hand."""
    tiny = (1e-300, 1e-310)  # normal and subnormal
    for p in tiny:
        # one state: token 1 has probability p, token 0 the rest
        proc = cm.HMM(np.array([[[1.0 - p]], [[p]]]))
        tok = np.array([[1, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=np.uint8)
        want = (tok == 1).sum(1) * np.log(p) + (tok == 0).sum(1) * np.log1p(-p)
        for got in (host(run.log_prob(proc, tok)), host(run.beliefs(proc, tok, return_log_prob=True,
                                                                      dtype=np.float64)[1])):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cm.log_prob(proc, tok), want, rtol=1e-12, atol=1e-12)


def test_beliefs_out_of_vocabulary(run):
    tok = cm.sample(MESS3, 4, 10, seed=0).astype(np.int64)
    tok[2, 6] = 3
    tok[3, 1] = -1
    with pytest.raises(ValueError, match=r"value 3 at row 2, position 6 is outside the vocabulary \[0, 3\)"):
        run.beliefs(MESS3, tok)
    tok[2, 6] = 0
    with pytest.raises(ValueError, match="value -1 at row 3, position 1"):
        run.beliefs(MESS3, tok, on_zero="nan")


def test_beliefs_empty(run):
    b, lp = run.beliefs(MESS3, np.zeros((0, 5), np.uint8), return_log_prob=True)
    assert tuple(b.shape) == (0, 5, 3) and tuple(lp.shape) == (0,)
    b, lp = run.beliefs(MESS3, np.zeros((3, 0), np.uint8), return_log_prob=True)
    assert tuple(b.shape) == (3, 0, 3)
    np.testing.assert_array_equal(host(lp), 0.0)


# ---- sampling -------------------------------------------------------------------------------

@settings(max_examples=10)
@given(proc=processes(), B=st.integers(0, 200), L=st.integers(0, 140), seed=st.integers(0, 2**64 - 1),
       row0=st.integers(0, 2**40))
def test_sample_bit_identical(proc, B, L, seed, row0):
    _sample_identical(Runner("emu"), proc, B, L, seed, row0)


@pytest.mark.cuda
@gpu_only
@settings(max_examples=40)
@given(proc=processes(), B=st.integers(0, 3000), L=st.integers(0, 300), seed=st.integers(0, 2**64 - 1),
       row0=st.integers(0, 2**40))
def test_sample_bit_identical_gpu(proc, B, L, seed, row0):
    _sample_identical(Runner("cuda"), proc, B, L, seed, row0)


def _sample_identical(run, proc, B, L, seed, row0):
    got = run.sample(proc, B, L, seed=seed, row_offset=row0, return_beliefs=True, dtype=np.float64)
    ref = cm.sample(proc, B, L, seed=seed, row_offset=row0, return_beliefs=True, dtype=np.float64)
    assert got[0].dtype == torch.uint8
    np.testing.assert_array_equal(host(got[0]), ref[0])
    close(got[1], ref[1], np.float64)
    if not proc.is_generalized:
        tok, states = run.sample(proc, B, L, seed=seed, row_offset=row0, return_states=True)
        ref_tok, ref_states = cm.sample(proc, B, L, seed=seed, row_offset=row0, return_states=True)
        np.testing.assert_array_equal(host(tok), ref_tok)
        np.testing.assert_array_equal(host(states), ref_states)


def test_sample_generic_tables_and_wide_types(run):
    """V > 256 (uint16 tokens, unpacked alias tables) and S > 256 (uint16 states)."""
    for S, V in ((3, 300), (300, 2)):
        proc = cm.processes.random_hmm(S, V, seed=1, sparsity=0.0)
        tok, states = run.sample(proc, 70, 33, seed=5, return_states=True)
        ref_tok, ref_states = cm.sample(proc, 70, 33, seed=5, return_states=True)
        assert host(tok).dtype == ref_tok.dtype and host(states).dtype == ref_states.dtype
        np.testing.assert_array_equal(host(tok), ref_tok)
        np.testing.assert_array_equal(host(states), ref_states)


def test_sample_row_offset_splits(run):
    whole = host(run.sample(MESS3, 300, 50, seed=9))
    parts = [host(run.sample(MESS3, 100, 50, seed=9, row_offset=r)) for r in (0, 100, 200)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_sample_initial_state(run):
    init = np.array([0.0, 1.0, 0.0])
    tok, states = run.sample(MESS3, 50, 10, seed=4, return_states=True, initial=init)
    assert (host(states)[:, 0] == 1).all()
    np.testing.assert_array_equal(host(tok), cm.sample(MESS3, 50, 10, seed=4, initial=init))


# ---- MSP ------------------------------------------------------------------------------------

@settings(max_examples=8)
@given(proc=processes(), depth=st.integers(0, 5), min_prob=st.sampled_from([0.0, 0.0, 1e-3]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_msp_levels_match_cpu(proc, depth, min_prob, dtype):
    _msp_match(Runner("emu"), proc, depth, min_prob, dtype)


@pytest.mark.cuda
@gpu_only
@settings(max_examples=30)
@given(proc=processes(), depth=st.integers(0, 8), min_prob=st.sampled_from([0.0, 0.0, 1e-4]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_msp_levels_match_cpu_gpu(proc, depth, min_prob, dtype):
    _msp_match(Runner("cuda"), proc, depth, min_prob, dtype)


def _msp_match(run, proc, depth, min_prob, dtype):
    ref = cm.msp_tree(proc, depth, dtype=dtype, min_prob=min_prob)
    got = run.msp_levels(proc, depth, dtype=dtype, min_prob=min_prob)
    assert len(got) == depth + 1
    for d, (b, p, par, tok) in enumerate(got):
        lv = ref.level(d)
        # float32 trees compound round-off level by level, and a child right at min_prob may
        # fall on either side: compare structure exactly where the CPU's decision is clear
        assert len(p) == len(lv), f"level {d}: {len(p)} vs {len(lv)} nodes"
        np.testing.assert_array_equal(host(par), lv.parent)
        np.testing.assert_array_equal(host(tok), lv.token)
        np.testing.assert_allclose(host(p), lv.probs, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)
        np.testing.assert_allclose(host(b).astype(np.float64), lv.beliefs,
                                   rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-6 if dtype == np.float32 else 1e-12)


def test_msp_full_layout_fallback(run):
    """Level 2 is full, level 3 is not (min_prob drops children): the optimistic fixed-offset
    pass must notice and redo the level by counting."""
    proc = cm.processes.random_hmm(4, 3, seed=2)
    ref = cm.msp_tree(proc, 4, min_prob=0.0)
    cut = float(np.quantile(ref.level(3).probs, 0.3))
    assert len(cm.msp_tree(proc, 2, min_prob=cut).level(2)) == 9
    _msp_match(run, proc, 4, cut, np.float64)


def test_msp_tree_public_api(api):
    tree = cm.msp_tree(MESS3, 6, device="cuda")
    ref = cm.msp_tree(MESS3, 6)
    lv, rl = tree.level(6), ref.level(6)
    assert isinstance(lv.beliefs, torch.Tensor) and lv.beliefs.is_cuda == api.cuda
    assert tree.num_nodes == ref.num_nodes
    np.testing.assert_array_equal(host(lv.sequences), rl.sequences)
    np.testing.assert_allclose(host(lv.next_token_probs), rl.next_token_probs, rtol=1e-12)
    g = cm.processes.random_ghmm_like(5, 3, 1)
    for d, lv in enumerate(cm.msp_tree(g, 4, dtype=torch.float32, min_prob=1e-3, device="cuda")):
        np.testing.assert_array_equal(host(lv.sequences), cm.msp_tree(g, 4, dtype=np.float32, min_prob=1e-3)
                                      .level(d).sequences)


# ---- GPU-only plumbing: devices, streams, dtypes --------------------------------------------

@pytest.mark.cuda
@gpu_only
def test_gpu_outputs_stay_on_device_and_stream():
    tok = cm.sample(MESS3, 256, 64, seed=0, device="cuda")
    assert tok.is_cuda and tok.dtype == torch.uint8
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())  # tok was written on the default stream
    with torch.cuda.stream(s):
        b = cm.beliefs(MESS3, tok)
        t2 = cm.sample(MESS3, 256, 64, seed=0, device="cuda")
    tok.record_stream(s)
    s.synchronize()
    assert b.is_cuda and b.device == tok.device
    torch.testing.assert_close(t2, tok, rtol=0, atol=0)
    close(b, cm.beliefs(MESS3, tok.cpu().numpy()), np.float32)
    # non-contiguous tokens are accepted (copied), as on the CPU
    close(cm.beliefs(MESS3, tok.t().contiguous().t()), b, np.float32)


@pytest.mark.cuda
@gpu_only
def test_gpu_out_on_wrong_device_rejected():
    tok = cm.sample(MESS3, 4, 8, seed=0, device="cuda")
    with pytest.raises(ValueError, match="device"):
        cm.beliefs(MESS3, tok, out=np.empty((4, 8, 3), np.float32))
    with pytest.raises(ValueError, match="device"):
        cm.beliefs(MESS3, tok.cpu(), out=torch.empty((4, 8, 3), device="cuda"))


@pytest.mark.parametrize("soft,bos", [(False, False), (True, False), (True, True)])
def test_stream_source_generates_on_gpu(api, monkeypatch, soft, bos):
    from compmech.data import StreamSource

    gpu = StreamSource(MESS3, 10, 32, seed=3, bos=bos, device="cuda" if api.cuda else "cpu", soft_targets=soft)
    cpu = StreamSource(MESS3, 10, 32, seed=3, bos=bos, device="cpu", soft_targets=soft, background=False)
    if api.cuda:
        assert gpu.on_gpu() and not cpu.on_gpu()
    else:
        monkeypatch.setattr(gpu, "on_gpu", lambda: True)
    for step in (0, 5, 70):  # 70: past the CPU path's first 64-step chunk
        xg, yg = gpu.batch(step)
        xc, yc = cpu.batch(step)
        assert xg.is_cuda == yg.is_cuda == api.cuda
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=0)
        if soft:
            torch.testing.assert_close(yg.cpu(), yc, rtol=1e-6, atol=1e-7)
        else:
            torch.testing.assert_close(yg.cpu(), yc, rtol=0, atol=0)
    it = gpu.batches(69)
    torch.testing.assert_close(next(it)[0].cpu(), cpu.batch(69)[0], rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_GPU or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_second_gpu_and_current_device_untouched():
    torch.cuda.set_device(0)
    tok = cm.sample(MESS3, 300, 40, seed=2, device="cuda:1")
    assert tok.device == torch.device("cuda", 1)
    b = cm.beliefs(MESS3, tok, dtype=np.float64)
    tree = cm.msp_tree(MESS3, 4, device="cuda:1")
    assert b.device == tok.device and tree.level(4).beliefs.device == tok.device
    assert torch.cuda.current_device() == 0
    np.testing.assert_array_equal(host(tok), cm.sample(MESS3, 300, 40, seed=2))
    close(b, cm.beliefs(MESS3, host(tok), dtype=np.float64), np.float64)


# ---- one backend boundary: the same primitives and messages on every backend ----------------

def _error(fn):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    return str(info.value)


def test_error_messages_identical_on_cpu_and_emulation():
    """The backends report where; the wrapper words the message once (compmech._errors)."""
    tok = cm.sample(MESS3, 4, 10, seed=0).astype(np.int64)
    tok[2, 6] = 7
    gold = cm.processes.golden_mean()
    bad = np.zeros((3, 6), np.uint8)
    bad[1, 3:5] = 1  # "11" is impossible
    emu = Runner("emu")
    for proc, t in ((MESS3, tok), (gold, bad)):
        cpu_msg = _error(lambda: cm.beliefs(proc, t))
        assert cpu_msg == _error(lambda: emu.beliefs(proc, t))
        assert cpu_msg == _error(lambda: cm.beliefs(proc, torch.from_numpy(t)))
    tom = cm.processes.get("tom_quantum")
    outside_later = np.array([1 / 3, -0.11529596, -0.65655378])  # a state until a token makes it not one
    for call in (lambda b: b.sample(tom, 3, 6, seed=0, initial=outside_later),
                 lambda b: b.beliefs(tom, np.array([[2, 2, 2], [0, 0, 1]]), initial=outside_later, on_zero="nan")):
        cpu_msg = _error(lambda: call(cm))
        assert "initial is not a state of this GHMM" in cpu_msg and cpu_msg == _error(lambda: call(emu))
    huge = np.array([[0, 2**64 - 1]], np.uint64)  # wraps negative in the kernel dtype; message keeps the value
    assert _error(lambda: cm.beliefs(MESS3, huge)) == _error(lambda: emu.beliefs(MESS3, huge))
    assert f"value {2**64 - 1} at row 0, position 1" in _error(lambda: cm.beliefs(MESS3, huge))


def test_state_limit_defined_once():
    from compmech import _cuda_emu

    assert _cuda_ops.CudaBackend(None, emulate=True).max_states == _cuda_emu.max_states == 64
    if cm.build_info()["cuda"]:
        assert _backend.cuda_state_limit() == 64


def test_msp_optimistic_levels_read_flags_once(monkeypatch):
    """Mess3 keeps every child: one read of the dropped-flags for the whole tree. With a tiny
    speculation budget the flags are read more often; the tree is the same."""
    reads = []
    orig = _cuda_ops.CudaBackend.first_dropped
    monkeypatch.setattr(_cuda_ops.CudaBackend, "first_dropped",
                        lambda self, flags: reads.append(len(flags)) or orig(self, flags))
    run = Runner("emu")
    _msp_match(run, MESS3, 7, 0.0, np.float64)
    assert reads == [6]  # levels 2..7 are optimistic, level 1 is counted from the root
    reads.clear()
    monkeypatch.setattr(_cuda_ops, "SPECULATION_BYTES", 1)
    _msp_match(run, MESS3, 7, 0.0, np.float64)
    assert reads == [1] * 6


def test_msp_redo_from_first_dropped_level():
    """A drop deep in a run of optimistic levels: levels from the first one that dropped are
    redone by counting (and those after it stay correct)."""
    proc = cm.processes.random_hmm(3, 2, seed=4, sparsity=0.0)
    ref = cm.msp_tree(proc, 6)
    cut = float(np.sort(ref.level(4).probs)[0]) * 1.0001  # drops only at level 4
    assert len(cm.msp_tree(proc, 3, min_prob=cut).level(3)) == 8
    _msp_match(Runner("emu"), proc, 6, cut, np.float64)


def test_beliefs_tile_plan():
    """Tiles sized from the blocks per SM that registers allow (emulated device: an sm_90-like
    SM without the shared-memory opt-in): S = 12 gets long tiles, S = 64 float64 is unstaged."""
    from compmech import _cuda_emu

    mess3 = _cuda_emu.beliefs_plan(0, 3, 3, 4)
    s12 = _cuda_emu.beliefs_plan(0, 4, 12, 4)
    s64 = _cuda_emu.beliefs_plan(0, 2, 64, 8)
    assert mess3["staged"] and s12["staged"] and not s64["staged"]
    n = s12["tile"] * 12  # floats per staged row, copied out by a warp
    assert s12["tile"] > 3 and n / (32 * -(-n // 32)) >= 0.9  # the fixed 24 KiB budget gave 3: 36 of 64 lanes
    assert s12["blocks_per_sm"] < mess3["blocks_per_sm"]
    for plan in (mess3, s12, s64, _cuda_emu.beliefs_plan(0, 3, 3, 0)):
        assert plan["smem"] <= 48 * 1024 and 1 <= plan["tile"] <= 32


def test_beliefs_long_tiles_match_cpu(run):
    """S = 12 float32/float64 with the register-sized tiles, L and B off every tile size."""
    proc = cm.processes.random_hmm(12, 4, seed=3)
    tok = cm.sample(proc, 133, 53, seed=2)
    for dtype in (np.float32, np.float64):
        close(run.beliefs(proc, tok, dtype=dtype), cm.beliefs(proc, tok, dtype=dtype), dtype)


def test_debug_switch_read_from_environment():
    code = "from compmech import _cuda_emu; print(_cuda_emu.debug_mode())"
    for value, want in (("1", "True"), ("0", "False")):
        env = dict(os.environ, COMPMECH_CUDA_DEBUG=value)
        got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert got.stdout.strip() == want, got.stderr


def test_data_uses_the_backend_not_cuda_internals():
    import inspect

    from compmech import data

    src = inspect.getsource(data)
    assert "_cuda_ops" not in src and "_cuda_emu" not in src


def test_backends_offer_the_same_primitives():
    primitives = ("tokens", "value_at", "out_buffer", "from_numpy", "beliefs", "read", "sample_hmm", "sample_ghmm",
                  "msp_counted", "msp_full", "first_dropped", "speculate", "nbytes")
    for be in (_backend.CPU, _cuda_ops.CudaBackend(None, emulate=True)):
        missing = [p for p in primitives if not callable(getattr(be, p, None))]
        assert not missing, (be.name, missing)
