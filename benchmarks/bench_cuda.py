"""CUDA kernels vs the obvious torch-on-GPU code, on Mess3 (x=0.05, alpha=0.85) and a generic
S=12, V=4 random HMM; every baseline is measured in the same run on the same GPU.

Run (skipped when torch sees no CUDA GPU, or compmech was built without its CUDA kernels):

    pytest benchmarks/bench_cuda.py                            # full sizes
    COMPMECH_BENCH_QUICK=1 pytest benchmarks/bench_cuda.py     # 16x smaller, about a minute

Every timed call ends with ``torch.cuda.synchronize()``, so the medians measure completed GPU
work; warmup rounds keep module load, allocator growth and first-launch costs out of them.

H100 targets these numbers are read against (recorded only, never asserted):

* beliefs (float32): >= 50% of the float32 memory-write bound (the ``B*L*S*4`` bytes written,
  see ``extra_info["write_GBps"]`` and the ``write_bound_fill`` row of the same group) and
  >= 20x the torch time loop;
* sampling: >= 100 G tokens/s;
* MSP tree: >= 20 G nodes/s.
"""
import gc
import os
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.bench.baselines import beliefs_torch, sample_torch  # noqa: E402  (shared with compmech bench)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
    pytest.mark.skipif(not cm.build_info().get("cuda", False),
                       reason="compmech built without its CUDA kernels (build_info()['cuda'] is False)"),
]

MESS3 = cm.processes.mess3(0.05, 0.85)
GENERIC = cm.processes.random_hmm(12, 4, seed=0)

# COMPMECH_BENCH_QUICK=1 (benchmarks/gpu_check.sh's first pass): every size 16x smaller, MSP
# trees two levels shallower, so the whole file runs in about a minute.
QUICK = os.environ.get("COMPMECH_BENCH_QUICK", "0") == "1"
_Q = 4 if QUICK else 0  # log2 of the size reduction
# beliefs: B*L*S*4 bytes = 3.2 GB (Mess3) per float32 output; the torch loop runs fewer steps
B, L = 1 << (20 - _Q), 256
L_TORCH = 32
B_S12, L_S12 = 1 << (18 - _Q), 256  # S=12: B*L*S*4 = 3.2 GB too
# sampling: 1 G uint8 tokens = 1 GB per call
B_SAMPLE, L_SAMPLE = 1 << (20 - _Q), 1024
L_SAMPLE_TORCH = 16
# CPU reference point (same size as bench_core)
B_CPU, L_CPU = 65536 >> _Q, 256
# MSP tree: Mess3 depth 16 = 3^16 ~ 43 M leaves, ~65 M nodes; S=12 V=4 depth 12 = ~22 M nodes
DEPTH = 14 if QUICK else 16
DEPTH_S12 = 10 if QUICK else 12


def _nodes(depth, V=3):
    return sum(V**d for d in range(1, depth + 1))


def _synced(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` then wait for the GPU; returns nothing so no result outlives a round."""

    def run():
        fn(*args, **kwargs)
        torch.cuda.synchronize()

    return run


def _bench(benchmark, fn, rounds, warmup_rounds=2):
    torch.cuda.synchronize()  # nothing queued before the first round
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()


def _record_write_rate(benchmark, nbytes, write_bw):
    """Achieved output write bandwidth, and its fraction of the measured fill bandwidth."""
    gbps = nbytes / benchmark.stats.stats.median / 1e9
    benchmark.extra_info["write_GBps"] = gbps
    benchmark.extra_info["write_bound_GBps"] = write_bw
    benchmark.extra_info["write_bound_frac"] = gbps / write_bw


@pytest.fixture(autouse=True)
def _free_gpu_memory():
    yield
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def mess3_tokens():
    # sampled on the CPU and uploaded, so these benchmarks do not depend on the GPU sampler
    tok = torch.from_numpy(cm.sample(MESS3, B, L, seed=0)).to("cuda")
    yield tok
    del tok


@pytest.fixture(scope="module")
def generic_tokens():
    tok = torch.from_numpy(cm.sample(GENERIC, B_S12, L_S12, seed=0)).to("cuda")
    yield tok
    del tok


@pytest.fixture(scope="module")
def write_bw():
    """GB/s of ``fill_`` into a 3.2 GB float32 buffer: the memory-write bound of the beliefs output."""
    buf = torch.empty((B, L, 3), dtype=torch.float32, device="cuda")
    for _ in range(3):
        buf.fill_(0.5)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        buf.fill_(0.25)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    nbytes = buf.numel() * buf.element_size()
    del buf
    torch.cuda.empty_cache()
    return nbytes / float(np.median(times)) / 1e9


# ---- torch-on-GPU baselines -----------------------------------------------------------------

def msp_torch(T, init, depth):
    """Level-by-level tree expansion keeping what compmech keeps per level (beliefs, float64
    probs, int32 parent, uint8 token); impossible children are dropped. Returns the levels."""
    V, S = T.shape[0], T.shape[1]
    dev = T.device
    beliefs, probs = init[None, :], torch.ones(1, dtype=torch.float64, device=dev)
    levels = []
    tok_row = torch.arange(V, dtype=torch.uint8, device=dev)
    for _ in range(depth):
        P = beliefs.shape[0]
        child = torch.einsum("ps,xst->pxt", beliefs, T).reshape(P * V, S)
        norm = child.sum(dim=1)
        probs = (probs[:, None] * norm.view(P, V)).reshape(-1)
        parent = torch.arange(P, dtype=torch.int32, device=dev).repeat_interleave(V)
        token = tok_row.repeat(P)
        keep = norm > 0
        if not bool(keep.all()):
            child, norm, probs, parent, token = child[keep], norm[keep], probs[keep], parent[keep], token[keep]
        beliefs = child / norm[:, None]
        levels.append((beliefs, probs, parent, token))
    return levels


def _t(a, dtype=torch.float32):
    return torch.tensor(np.array(a), dtype=dtype, device="cuda")  # np.array: a writable copy


# ---- beliefs --------------------------------------------------------------------------------

def test_beliefs_mess3_cuda(benchmark, throughput, mess3_tokens, write_bw):
    """Fresh float32 output each call (from torch's caching allocator)."""
    _bench(benchmark, _synced(cm.beliefs, MESS3, mess3_tokens, dtype=np.float32), rounds=20)
    throughput("cuda beliefs mess3", B * L, "updates")
    _record_write_rate(benchmark, B * L * 3 * 4, write_bw)


def test_beliefs_mess3_cuda_into_buffer(benchmark, throughput, mess3_tokens, write_bw):
    """Steady state of a training loop: one preallocated output buffer, reused."""
    buf = torch.empty((B, L, 3), dtype=torch.float32, device="cuda")
    _bench(benchmark, _synced(cm.beliefs, MESS3, mess3_tokens, out=buf), rounds=20)
    throughput("cuda beliefs mess3", B * L, "updates")
    _record_write_rate(benchmark, B * L * 3 * 4, write_bw)
    del buf


def test_beliefs_mess3_cuda_log_prob_only(benchmark, throughput, mess3_tokens):
    """No belief output at all: the read/compute side of the kernel."""
    _bench(benchmark, _synced(cm.log_prob, MESS3, mess3_tokens), rounds=20)
    throughput("cuda beliefs mess3", B * L, "updates")


def test_beliefs_mess3_cuda_with_log_prob(benchmark, throughput, mess3_tokens, write_bw):
    _bench(benchmark, _synced(cm.beliefs, MESS3, mess3_tokens, return_log_prob=True), rounds=20)
    throughput("cuda beliefs mess3", B * L, "updates")
    _record_write_rate(benchmark, B * L * 3 * 4, write_bw)


def test_beliefs_mess3_cuda_write_bound_fill(benchmark, throughput):
    """Not compmech: ``fill_`` of a (B, L, 3) float32 buffer, the memory-write bound, expressed
    in the same updates/s as the rows above (ratio to it = fraction of the bound reached)."""
    buf = torch.empty((B, L, 3), dtype=torch.float32, device="cuda")
    _bench(benchmark, _synced(buf.fill_, 0.5), rounds=20)
    throughput("cuda beliefs mess3", B * L, "updates")
    benchmark.extra_info["write_GBps"] = B * L * 3 * 4 / benchmark.stats.stats.median / 1e9
    del buf


def test_beliefs_mess3_torch(benchmark, throughput, mess3_tokens):
    T, init = _t(MESS3.T), _t(MESS3.stationary)
    tok = mess3_tokens[:, :L_TORCH].contiguous()
    # the baseline computes the same thing as compmech (checked against the CPU path on a slice)
    ref = cm.beliefs(MESS3, tok[:256].cpu().numpy())
    np.testing.assert_allclose(beliefs_torch(T, init, tok[:256]).cpu().numpy(), ref, rtol=1e-4, atol=1e-5)
    _bench(benchmark, _synced(beliefs_torch, T, init, tok), rounds=5, warmup_rounds=1)
    throughput("cuda beliefs mess3", B * L_TORCH, "updates", baseline=True)
    benchmark.extra_info["write_GBps"] = B * L_TORCH * 3 * 4 / benchmark.stats.stats.median / 1e9


def test_beliefs_generic_s12_cuda(benchmark, throughput, generic_tokens, write_bw):
    _bench(benchmark, _synced(cm.beliefs, GENERIC, generic_tokens, dtype=np.float32), rounds=10)
    throughput("cuda beliefs S=12 V=4", B_S12 * L_S12, "updates")
    _record_write_rate(benchmark, B_S12 * L_S12 * 12 * 4, write_bw)


def test_beliefs_generic_s12_torch(benchmark, throughput, generic_tokens):
    T, init = _t(GENERIC.T), _t(GENERIC.stationary)
    tok = generic_tokens[:, :L_TORCH].contiguous()
    _bench(benchmark, _synced(beliefs_torch, T, init, tok), rounds=5, warmup_rounds=1)
    throughput("cuda beliefs S=12 V=4", B_S12 * L_TORCH, "updates", baseline=True)


# ---- sampling -------------------------------------------------------------------------------

def _sample_torch_args(proc, Bt, Lt):
    V, S = proc.T.shape[0], proc.T.shape[1]
    P = _t(proc.T.transpose(1, 0, 2).reshape(S, V * S))  # row i: outcome x * S + j
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1)
    return P, _t(proc.stationary), Bt, Lt, S, gen


def test_sample_mess3_cuda(benchmark, throughput):
    _bench(benchmark, _synced(cm.sample, MESS3, B_SAMPLE, L_SAMPLE, seed=1, device="cuda"), rounds=10)
    throughput("cuda sample mess3", B_SAMPLE * L_SAMPLE, "tokens")


def test_sample_mess3_torch(benchmark, throughput):
    _bench(benchmark, _synced(sample_torch, *_sample_torch_args(MESS3, B_SAMPLE, L_SAMPLE_TORCH)), rounds=5,
           warmup_rounds=1)
    throughput("cuda sample mess3", B_SAMPLE * L_SAMPLE_TORCH, "tokens", baseline=True)


def test_sample_generic_s12_cuda(benchmark, throughput):
    _bench(benchmark, _synced(cm.sample, GENERIC, B_SAMPLE, L_SAMPLE, seed=1, device="cuda"), rounds=10)
    throughput("cuda sample S=12 V=4", B_SAMPLE * L_SAMPLE, "tokens")


def test_sample_generic_s12_torch(benchmark, throughput):
    _bench(benchmark, _synced(sample_torch, *_sample_torch_args(GENERIC, B_SAMPLE, L_SAMPLE_TORCH)), rounds=5,
           warmup_rounds=1)
    throughput("cuda sample S=12 V=4", B_SAMPLE * L_SAMPLE_TORCH, "tokens", baseline=True)


# ---- GPU vs compmech's own CPU path (reference point, bench_core's size) ----------------------

def test_sample_mess3_cpu_reference(benchmark, throughput):
    benchmark.pedantic(cm.sample, args=(MESS3, B_CPU, L_CPU), kwargs=dict(seed=1), rounds=3, warmup_rounds=1)
    benchmark.extra_info["threads"] = cm.get_num_threads()
    throughput("cuda vs cpu sample mess3", B_CPU * L_CPU, "tokens", baseline=True)


def test_sample_mess3_cuda_small(benchmark, throughput):
    """The CPU reference's size on the GPU (16 M tokens: launch/sync overheads show here)."""
    _bench(benchmark, _synced(cm.sample, MESS3, B_CPU, L_CPU, seed=1, device="cuda"), rounds=20)
    throughput("cuda vs cpu sample mess3", B_CPU * L_CPU, "tokens")


# ---- MSP tree -------------------------------------------------------------------------------

def _msp_cuda(proc, depth, sizes):
    def run():
        tree = cm.msp_tree(proc, depth, dtype=np.float32, device="cuda")
        torch.cuda.synchronize()
        sizes.append(tree.num_nodes)

    return run


def test_msp_tree_mess3_cuda_depth16_f32(benchmark, throughput):
    sizes = []
    _bench(benchmark, _msp_cuda(MESS3, DEPTH, sizes), rounds=5, warmup_rounds=1)
    throughput("cuda msp mess3", sizes[-1], "nodes")


def test_msp_tree_mess3_cuda_depth8_latency(benchmark, throughput):
    """A small tree (9,840 nodes): per-tree host round trips dominate here. Every level after the
    first is full, so the dropped-flags are read back once for the whole tree."""
    sizes = []
    _bench(benchmark, _msp_cuda(MESS3, 8, sizes), rounds=30, warmup_rounds=3)
    throughput("cuda msp mess3 depth 8", sizes[-1], "nodes")


def test_msp_tree_mess3_torch(benchmark, throughput):
    T, init = _t(MESS3.T), _t(MESS3.stationary)
    assert sum(len(lv[1]) for lv in msp_torch(T, init, 8)) == _nodes(8)
    _bench(benchmark, _synced(msp_torch, T, init, DEPTH), rounds=3, warmup_rounds=1)
    throughput("cuda msp mess3", _nodes(DEPTH), "nodes", baseline=True)


def test_msp_tree_generic_s12_cuda_depth12_f32(benchmark, throughput):
    sizes = []
    _bench(benchmark, _msp_cuda(GENERIC, DEPTH_S12, sizes), rounds=5, warmup_rounds=1)
    throughput("cuda msp S=12 V=4", sizes[-1], "nodes")


def test_msp_tree_generic_s12_torch(benchmark, throughput):
    T, init = _t(GENERIC.T), _t(GENERIC.stationary)
    sizes = []

    def run():
        levels = msp_torch(T, init, DEPTH_S12)
        torch.cuda.synchronize()
        sizes.append(sum(len(lv[1]) for lv in levels))

    _bench(benchmark, run, rounds=3, warmup_rounds=1)
    throughput("cuda msp S=12 V=4", sizes[-1], "nodes", baseline=True)


# ---- trainer streaming batches: generated on the GPU vs on the CPU and copied ----------------

STREAM_B, STREAM_CTX, STREAM_STEPS = 4096, 64, 64


def _stream_batches(source, steps):
    def run():
        it = source.batches(0)
        for _ in range(steps):
            next(it)
        it.close()
        torch.cuda.synchronize()

    return run


def test_stream_batches_soft_targets_gpu(benchmark, throughput):
    from compmech.data import StreamSource

    src = StreamSource(MESS3, STREAM_CTX, STREAM_B, seed=0, device="cuda", soft_targets=True)
    assert src.on_gpu()
    _bench(benchmark, _stream_batches(src, STREAM_STEPS), rounds=5, warmup_rounds=1)
    throughput("cuda stream batches (soft targets)", STREAM_STEPS * STREAM_B * STREAM_CTX, "tokens")


def test_stream_batches_soft_targets_cpu_then_copy(benchmark, throughput, monkeypatch):
    """The path a CPU-only build takes: sampled and targets computed on the CPU (prefetch
    thread), then copied to the GPU."""
    from compmech.data import StreamSource

    src = StreamSource(MESS3, STREAM_CTX, STREAM_B, seed=0, device="cuda", soft_targets=True)
    monkeypatch.setattr(src, "on_gpu", lambda: False)
    _bench(benchmark, _stream_batches(src, STREAM_STEPS), rounds=3, warmup_rounds=1)
    throughput("cuda stream batches (soft targets)", STREAM_STEPS * STREAM_B * STREAM_CTX, "tokens", baseline=True)
