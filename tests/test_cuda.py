"""The CUDA kernels against the CPU core, on three back ends with the same test bodies:

* ``emu``: the .cu sources compiled for the CPU (``compmech._cuda_emu``: one std::thread per
  CUDA thread, real barriers, per-block shared memory), driven through ``compmech._cuda_ops``
  with CPU tensors. Runs everywhere, so the kernels' indexing, tiling and error flags are
  tested on every machine.
* ``api``: the public API's CUDA code paths (``device="cuda"``, dispatch on tensor devices,
  MSP levels as tensors, GPU streaming batches) with the device routed to the emulation and
  CPU tensors standing in for CUDA ones (monkeypatched). Runs everywhere.
* ``cuda``: the real GPU through the public API (``device="cuda"``, CUDA tensors); marked
  ``cuda`` and skipped when torch sees no GPU.

Sampled tokens must equal the CPU's bit for bit; beliefs and probabilities agree to round-off
(the GPU contracts multiply-adds into FMAs where the CPU build may not, and vice versa).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import compmech as cm
from compmech import _cuda_ops
from compmech.msp_tree import MSPLevel

torch = pytest.importorskip("torch")

HAS_GPU = torch.cuda.is_available() and cm.build_info()["cuda"]
gpu_only = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU visible (or compmech built without CUDA)")


def route_cuda_to_emulation(monkeypatch):
    """Make the public API's CUDA paths run on the emulation, with CPU tensors as 'CUDA' ones."""
    import importlib

    # (compmech.beliefs / compmech.msp_tree are also the names of functions: import the modules)
    beliefs_mod, msp_mod, sampling_mod = (importlib.import_module(f"compmech.{m}")
                                          for m in ("beliefs", "msp_tree", "sampling"))

    def any_tensor(x):
        return isinstance(x, torch.Tensor)

    class EmulatedBackend(_cuda_ops._Backend):
        def __init__(self, dev, emulate):
            super().__init__(dev, True)

    monkeypatch.setattr(beliefs_mod, "is_cuda", any_tensor)
    monkeypatch.setattr(msp_mod, "is_cuda", any_tensor)
    monkeypatch.setattr(sampling_mod, "_is_cuda_device", lambda d: torch.device(d).type == "cuda")
    monkeypatch.setattr(_cuda_ops, "_Backend", EmulatedBackend)
    monkeypatch.setattr(_cuda_ops, "device", lambda d: torch.device("cpu"))


class Runner:
    """The same operations on the emulated or the real GPU back end."""

    def __init__(self, kind: str):
        self.kind = kind
        self.cuda = kind == "cuda"
        self.public = kind in ("api", "cuda")  # through cm.beliefs / cm.sample / cm.msp_tree

    def tensor(self, a):
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.cuda() if self.cuda else t

    def beliefs(self, proc, tokens, *, dtype=np.float32, return_log_prob=False, on_zero="raise", out=None,
                initial=None):
        tok = tokens if isinstance(tokens, torch.Tensor) else self.tensor(tokens)
        if self.public:
            return cm.beliefs(proc, tok, dtype=dtype, return_log_prob=return_log_prob, on_zero=on_zero, out=out,
                              initial=initial)
        proc = cm.process.as_process(proc)
        b, lp = _cuda_ops.beliefs(proc, tok, proc.check_initial(initial), np.dtype(dtype).name, return_log_prob,
                                  on_zero == "nan", out, emulate=True)
        return (b, lp) if return_log_prob else b

    def log_prob(self, proc, tokens, on_zero="raise"):
        return self.beliefs(proc, tokens, dtype=None, return_log_prob=True, on_zero=on_zero)[1] if not self.public \
            else cm.log_prob(proc, self.tensor(tokens), on_zero=on_zero)

    def sample(self, proc, B, L, *, seed, return_states=False, return_beliefs=False, row_offset=0,
               dtype=np.float32, initial=None):
        if self.public:
            return cm.sample(proc, B, L, seed=seed, return_states=return_states, return_beliefs=return_beliefs,
                             row_offset=row_offset, dtype=dtype, initial=initial, device="cuda")
        proc = cm.process.as_process(proc)
        tok, states, bel = _cuda_ops.sample(proc, B, L, seed, row_offset, proc.check_initial(initial),
                                            return_states, np.dtype(dtype).name if return_beliefs else None,
                                            None, emulate=True)
        out = [tok] + ([states] if return_states else []) + ([bel] if return_beliefs else [])
        return out[0] if len(out) == 1 else tuple(out)

    def msp_levels(self, proc, depth, *, dtype=np.float64, min_prob=0.0):
        """Levels 0..depth as (beliefs, probs, parent, token) tensors on this back end."""
        if self.public:
            tree = cm.msp_tree(proc, depth, dtype=dtype, min_prob=min_prob, device="cuda")
            return [(lv.beliefs, lv.probs, lv.parent, lv.token) for lv in tree]
        root = cm.msp_tree(proc, 0, dtype=dtype).level(0)
        levels = [tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in
                        (root.beliefs, root.probs, root.parent, root.token))]
        for d in range(depth):  # same optimistic/full bookkeeping as compmech.msp_tree
            full = d > 0 and len(levels[-1][1]) == proc.vocab_size * len(levels[-2][1])
            levels.append(_cuda_ops.msp_level(proc, levels[-1][0], levels[-1][1], min_prob, full, emulate=True))
        return levels


@pytest.fixture(params=["emu", "api", pytest.param("cuda", marks=[pytest.mark.cuda, gpu_only])])
def run(request, monkeypatch):
    if request.param == "api":
        route_cuda_to_emulation(monkeypatch)
    return Runner(request.param)


@pytest.fixture(params=["api", pytest.param("cuda", marks=[pytest.mark.cuda, gpu_only])])
def api(request, monkeypatch):
    """The public API on the real GPU, or routed to the emulation."""
    if request.param == "api":
        route_cuda_to_emulation(monkeypatch)
    return Runner(request.param)


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
    with torch.cuda.stream(s):
        b = cm.beliefs(MESS3, tok)
        t2 = cm.sample(MESS3, 256, 64, seed=0, device="cuda")
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
