"""Workload definitions shared by ``compmech bench`` and the pytest-benchmark files in
``benchmarks/``: which operation, on which process, at which sizes, and every implementation
that computes it (compmech at each thread count and device, numpy, torch, JAX, and the
machine's bound for the bytes the operation must move).

A :class:`Case` is one workload on one process at one size. ``case.prepare()`` builds its
inputs once (memoised, excluded from timing); each :class:`Impl` turns them into a zero-argument
callable that does the timed work once. Nothing here times anything (see :mod:`.runner`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import compmech as cm

from . import baselines as bl

SUITES = {
    "core": ["beliefs", "log_prob", "sample"],
    "msp": ["msp_tree", "msp_graph"],
    "train": ["probe_fit", "train_step", "stream_batches"],
}
SUITES["all"] = SUITES["core"] + SUITES["msp"] + SUITES["train"]

MODES = ("tiny", "quick", "full")

#: Mess3 as in the belief-geometry paper, and a larger dense random HMM (every sequence possible).
PROCESS_SPECS = {
    "mess3": ("mess3", {"x": 0.05, "alpha": 0.85}),
    "random_s12_v4": ("random_hmm", {"num_states": 12, "vocab_size": 4, "seed": 0}),
}

#: Sizes per workload and mode. ``depth`` sweeps are per process (V differs).
SIZES = {
    "beliefs": {"tiny": [dict(B=8, L=5)],
                "quick": [dict(B=1024, L=64), dict(B=8192, L=64)],
                "full": [dict(B=1024, L=64), dict(B=8192, L=64), dict(B=65536, L=64), dict(B=8192, L=512)]},
    "sample": {"tiny": [dict(B=8, L=5)],
               "quick": [dict(B=1024, L=64), dict(B=8192, L=64)],
               "full": [dict(B=1024, L=64), dict(B=8192, L=64), dict(B=65536, L=64), dict(B=8192, L=512)]},
    "msp_tree": {"tiny": {"mess3": [dict(depth=3)], "random_s12_v4": [dict(depth=2)]},
                 "quick": {"mess3": [dict(depth=6), dict(depth=9)], "random_s12_v4": [dict(depth=4), dict(depth=6)]},
                 "full": {"mess3": [dict(depth=6), dict(depth=9), dict(depth=12)],
                          "random_s12_v4": [dict(depth=4), dict(depth=6), dict(depth=8)]}},
    "msp_graph": {"tiny": [dict(max_states=20)],
                  "quick": [dict(max_states=1000), dict(max_states=5000)],
                  "full": [dict(max_states=1000), dict(max_states=10000), dict(max_states=50000)]},
    "probe_fit": {"tiny": [dict(N=50, D=8)],
                  "quick": [dict(N=2000, D=64), dict(N=20000, D=64)],
                  "full": [dict(N=2000, D=64), dict(N=20000, D=64), dict(N=200000, D=64)]},
    "train_step": {"tiny": [dict(B=4, ctx=4)],
                   "quick": [dict(B=64, ctx=10), dict(B=256, ctx=10)],
                   "full": [dict(B=64, ctx=10), dict(B=256, ctx=10), dict(B=1024, ctx=10)]},
    "stream_batches": {"tiny": [dict(B=4, ctx=4)],
                       "quick": [dict(B=64, ctx=10), dict(B=512, ctx=10)],
                       "full": [dict(B=64, ctx=10), dict(B=512, ctx=10), dict(B=4096, ctx=10)]},
}
SIZES["log_prob"] = SIZES["beliefs"]

UNITS = {"beliefs": "updates", "log_prob": "updates", "sample": "tokens", "msp_tree": "nodes",
         "msp_graph": "states", "probe_fit": "rows", "train_step": "tokens", "stream_batches": "tokens"}

DESCRIPTIONS = {
    "beliefs": "cm.beliefs: (B, L) tokens -> (B, L, S) float32 beliefs",
    "log_prob": "cm.log_prob: (B, L) tokens -> (B,) log-probabilities",
    "sample": "cm.sample: (B, L) tokens from the process",
    "msp_tree": "cm.msp_tree: every sequence up to depth, with belief and probability",
    "msp_graph": "cm.msp: deduplicated mixed-state graph up to max_states",
    "probe_fit": "BeliefProbe.fit: weighted affine least squares (N, D) -> (N, S)",
    "train_step": "training step of the default transformer (forward, backward, AdamW)",
    "stream_batches": "training batches from StreamSource (64 steps of (B, ctx) inputs and targets)",
}

STREAM_STEPS = 64  # StreamSource.chunk_steps: one generation unit of the stream


def process(name: str):
    """The named benchmark process (see :data:`PROCESS_SPECS`)."""
    fn, params = PROCESS_SPECS[name]
    return cm.processes.get(fn, **params)


@dataclass
class Impl:
    """One implementation of a case. ``kind``: compmech / numpy / torch / jax / bound."""

    kind: str
    device: str
    make: Callable[[dict], Callable[[], Any]]
    threads: int | None = None  # compmech: the thread count it runs with; others: all cores
    note: str = ""
    sweep: list | None = None  # thread counts tried (the best is kept): torch baselines, bounds

    @property
    def label(self) -> str:
        if self.kind == "compmech" and self.device == "cpu":
            return f"compmech {self.threads}t"
        return self.kind if self.device == "cpu" else f"{self.kind} {self.device}"


@dataclass
class Case:
    workload: str
    process: str
    size: dict
    unit: str
    prepare_fn: Callable[[], dict]
    impls: list = field(default_factory=list)
    _data: dict | None = field(default=None, repr=False)

    @property
    def size_label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.size.items())

    @property
    def key(self) -> str:
        return f"{self.workload}|{self.process}|{self.size_label}"

    def prepare(self) -> dict:
        """Inputs (memoised): arrays plus ``items`` (work units per call) and ``bound_bytes``
        (bytes the operation must move, or None when no memory bound applies)."""
        if self._data is None:
            self._data = self.prepare_fn()
        return self._data

    def release(self):
        self._data = None


def thread_counts(max_threads: int | None = None) -> list[int]:
    """1, 2, 4, ... up to all usable cores, and all of them."""
    n = max_threads or _usable_cores()
    out, t = [], 1
    while t < n:
        out.append(t)
        t *= 2
    return out + [n]


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def compmech_cuda_available() -> bool:
    return cuda_available() and bool(cm.build_info().get("cuda", False))


# ---------------------------------------------------------------------------------------------
# Implementation builders
# ---------------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _jnp():
    import jax.numpy as jnp

    return jnp


def _fill_bound(device):
    """Fill of a preallocated buffer of ``bound_bytes``: the write bandwidth the operation's
    output needs (``fill_`` in torch's threads on the CPU, one kernel on the GPU)."""

    def make(d):
        torch = _torch()
        buf = torch.empty(max(1, d["bound_bytes"] // 4), dtype=torch.float32, device=device)
        buf.fill_(0.0)  # first touch outside the timing: the bound is steady-state bandwidth
        return lambda: buf.fill_(0.5)

    return Impl("bound", device, make, note="fill_ of a preallocated buffer of the output's size",
                sweep=thread_counts() if device == "cpu" else None)


def _compmech_impls(make_cpu, make_cuda, devices, threads):
    out = []
    if "cpu" in devices:
        out += [Impl("compmech", "cpu", make_cpu, threads=n) for n in threads]
    if "cuda" in devices and make_cuda is not None and compmech_cuda_available():
        out.append(Impl("compmech", "cuda", make_cuda))
    return out


def _torch_impls(make, devices, note=""):
    return [Impl("torch", dev, lambda d, dev=dev: make(d, dev), note=note,
                 sweep=thread_counts() if dev == "cpu" else None) for dev in devices]


def _bounds(devices):
    return [_fill_bound(dev) for dev in devices]


# ---------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------


def _belief_like_cases(workload, proc_name, proc, sizes, devices, threads, use_jax):
    """beliefs and log_prob share inputs: tokens sampled from the process."""
    is_lp = workload == "log_prob"
    cm_fn = cm.log_prob if is_lp else cm.beliefs
    np_fn = bl.log_prob_numpy if is_lp else bl.beliefs_numpy
    torch_fn = bl.log_prob_torch if is_lp else bl.beliefs_torch
    cases = []
    for size in sizes:
        B, L = size["B"], size["L"]

        def prepare(B=B, L=L):
            tok = cm.sample(proc, B, L, seed=0)
            out_bytes = B * 8 if is_lp else B * L * proc.num_states * 4
            # log_prob's output is B floats: its memory traffic is reading the tokens
            return dict(tokens=tok, items=B * L, bound_bytes=tok.nbytes if is_lp else out_bytes)

        def make_cuda(d):
            tok = _torch().from_numpy(d["tokens"]).cuda()
            return lambda: cm_fn(proc, tok)

        def make_torch(d, dev):
            torch = _torch()
            T = torch.tensor(proc.T, device=dev)
            init = torch.tensor(proc.stationary, device=dev)
            tok = torch.from_numpy(d["tokens"]).to(dev)
            return lambda: torch_fn(T, init, tok)

        impls = _compmech_impls(lambda d: (lambda: cm_fn(proc, d["tokens"])), make_cuda, devices, threads)
        if "cpu" in devices:
            impls.append(Impl("numpy", "cpu", lambda d: (lambda: np_fn(proc.T, proc.stationary, d["tokens"]))))
        impls += _torch_impls(make_torch, devices)
        if use_jax and "cpu" in devices:
            def make_jax(d, jfn=bl.log_prob_jax if is_lp else bl.beliefs_jax):
                jnp, f = _jnp(), jfn()
                args = (jnp.asarray(proc.T, jnp.float32), jnp.asarray(proc.stationary, jnp.float32),
                        jnp.asarray(d["tokens"].astype(np.int32)))
                return lambda: f(*args).block_until_ready()

            impls.append(Impl("jax", "cpu", make_jax, note="jit + lax.scan, float32"))
        impls += _bounds(devices)
        cases.append(Case(workload, proc_name, dict(size), UNITS[workload], prepare, impls))
    return cases


def _sample_cases(proc_name, proc, sizes, devices, threads, use_jax):
    cases = []
    S = proc.num_states
    for size in sizes:
        B, L = size["B"], size["L"]

        def make_torch(d, dev, B=B, L=L):
            torch = _torch()
            P, init = bl.sample_tables_torch(proc.T, proc.stationary, dev)
            gen = torch.Generator(device=dev)

            def run():
                gen.manual_seed(1)
                return bl.sample_torch(P, init, B, L, S, gen)

            return run

        impls = _compmech_impls(lambda d, B=B, L=L: (lambda: cm.sample(proc, B, L, seed=1)),
                                lambda d, B=B, L=L: (lambda: cm.sample(proc, B, L, seed=1, device="cuda")),
                                devices, threads)
        if "cpu" in devices:
            impls.append(Impl("numpy", "cpu", lambda d, B=B, L=L: (lambda: bl.sample_numpy(proc.T, proc.stationary,
                                                                                          B, L, 1))))
        impls += _torch_impls(make_torch, devices)
        if use_jax and "cpu" in devices:
            def make_jax(d, B=B, L=L):
                import jax

                jnp, f = _jnp(), bl.sample_jax()
                V = proc.vocab_size
                cdf = jnp.asarray(np.cumsum(proc.T.transpose(1, 0, 2).reshape(S, V * S), 1), jnp.float32)
                icdf = jnp.asarray(np.cumsum(proc.stationary), jnp.float32)
                key = jax.random.PRNGKey(1)
                return lambda: f(key, cdf, icdf, B, L).block_until_ready()

            impls.append(Impl("jax", "cpu", make_jax, note="jit + lax.scan, jax.random"))
        impls += _bounds(devices)
        cases.append(Case("sample", proc_name, dict(size), UNITS["sample"],
                          lambda B=B, L=L: dict(items=B * L, bound_bytes=B * L), impls))
    return cases


def _msp_tree_cases(proc_name, proc, sizes, devices, threads, use_jax):
    cases = []
    for size in sizes:
        depth = size["depth"]

        def prepare(depth=depth):
            tree = cm.msp_tree(proc, depth)
            levels = [tree.level(k) for k in range(1, depth + 1)]
            nbytes = sum(lv.nbytes for lv in levels)  # what the tree stores (full levels: no parent/token)
            return dict(items=sum(len(lv) for lv in levels), bound_bytes=int(nbytes))

        def make_torch(d, dev, depth=depth):
            torch = _torch()
            T = torch.tensor(proc.T, device=dev)
            init = torch.tensor(proc.stationary, device=dev)
            return lambda: bl.msp_torch(T, init, depth)

        impls = _compmech_impls(lambda d, depth=depth: (lambda: cm.msp_tree(proc, depth)),
                                lambda d, depth=depth: (lambda: cm.msp_tree(proc, depth, device="cuda")),
                                devices, threads)
        if "cpu" in devices:
            impls.append(Impl("numpy", "cpu", lambda d, depth=depth: (lambda: bl.msp_numpy(proc.T, proc.stationary,
                                                                                           depth))))
        impls += _torch_impls(make_torch, devices)
        if use_jax and "cpu" in devices:
            def make_jax(d, depth=depth):
                jnp, f = _jnp(), bl.msp_jax()
                T, init = jnp.asarray(proc.T, jnp.float32), jnp.asarray(proc.stationary, jnp.float32)
                return lambda: f(T, init, depth)

            impls.append(Impl("jax", "cpu", make_jax, note="one jitted level expansion per level, float32"))
        impls += _bounds(devices)
        cases.append(Case("msp_tree", proc_name, dict(size), UNITS["msp_tree"], prepare, impls))
    return cases


def _msp_graph_cases(proc_name, proc, sizes, devices, threads, use_jax):
    cases = []
    for size in sizes:
        n = size["max_states"]

        def prepare(n=n):
            return dict(items=cm.msp(proc, max_states=n).num_states, bound_bytes=None)

        impls = _compmech_impls(lambda d, n=n: (lambda: cm.msp(proc, max_states=n)), None, devices, threads)
        if "cpu" in devices:
            impls.append(Impl("numpy", "cpu", lambda d, n=n: (lambda: bl.msp_graph_numpy(proc, n)),
                              note="BFS with a dict of rounded beliefs"))
        cases.append(Case("msp_graph", proc_name, dict(size), UNITS["msp_graph"], prepare, impls))
    return cases


def _probe_cases(proc_name, proc, sizes, devices, threads, use_jax):
    from ..probe import BeliefProbe

    cases = []
    for size in sizes:
        N, D = size["N"], size["D"]

        def prepare(N=N, D=D):
            rng = np.random.default_rng(0)
            _, b = cm.sample(proc, N, 8, seed=0, return_beliefs=True, dtype=np.float64)
            Y = b[:, -1]
            # activations: a random smooth embedding of the beliefs plus noise (only sizes matter)
            X = np.tanh(Y @ rng.standard_normal((proc.num_states, D))) @ rng.standard_normal((D, D))
            X = (X + 0.01 * rng.standard_normal(X.shape)).astype(np.float32)
            w = rng.random(N)
            return dict(X=X, Y=Y, w=w / w.sum(), items=N, bound_bytes=None)

        def make_torch(d, dev):
            torch = _torch()
            X, Y, w = (torch.as_tensor(np.asarray(a, np.float64), device=dev) for a in (d["X"], d["Y"], d["w"]))
            return lambda: bl.probe_fit_torch(X, Y, w)

        impls = _compmech_impls(lambda d: (lambda: BeliefProbe().fit(d["X"], d["Y"], sample_weight=d["w"])),
                                None, devices, threads)
        if "cpu" in devices:
            impls.append(Impl("numpy", "cpu", lambda d: (lambda: bl.probe_fit_numpy(d["X"].astype(np.float64),
                                                                                     d["Y"], d["w"])),
                              note="np.linalg.lstsq on sqrt-weighted rows"))
        impls += _torch_impls(make_torch, devices)
        if use_jax and "cpu" in devices:
            def make_jax(d):
                jnp, f = _jnp(), bl.probe_fit_jax()
                args = (jnp.asarray(d["X"]), jnp.asarray(d["Y"], jnp.float32), jnp.asarray(d["w"], jnp.float32))
                return lambda: f(*args).block_until_ready()

            impls.append(Impl("jax", "cpu", make_jax, note="jnp.linalg.lstsq, float32"))
        cases.append(Case("probe_fit", proc_name, dict(size), UNITS["probe_fit"], prepare, impls))
    return cases


def train_step_fn(model, lr=3e-3, clip=1.0, fused=True):
    """The trainer's step (cross-entropy, backward, global-norm clip, AdamW, fused where torch
    has it) for any module mapping ``(B, L)`` tokens to ``(B, L, V)`` logits."""
    torch = _torch()
    import torch.nn.functional as F

    try:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), fused=fused)
    except (RuntimeError, TypeError):  # no fused kernel for this build/device
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99))

    def step(x, y):
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
        opt.step()
        return loss.detach()

    return step


def _train_cases(proc_name, proc, sizes, devices, threads, use_jax, mode):
    from ..model import ModelConfig, build_model

    cases = []
    V = proc.vocab_size
    tl_ok = mode == "full" and _has("transformer_lens")
    for size in sizes:
        B, ctx = size["B"], size["ctx"]
        mcfg = ModelConfig(vocab_size=V, ctx=ctx) if mode != "tiny" else ModelConfig(vocab_size=V, ctx=ctx, n_layers=1,
                                                                                    d_model=8, d_mlp=16)

        def prepare(B=B, ctx=ctx):
            seq = cm.sample(proc, B, ctx + 1, seed=0).astype(np.int64)
            return dict(x=seq[:, :-1], y=seq[:, 1:], items=B * ctx, bound_bytes=None)

        def make(d, dev, mcfg=mcfg, hooked=False):
            torch = _torch()
            torch.manual_seed(0)
            model = build_model(mcfg)
            if hooked:
                from ..interop.transformer_lens import to_hooked_transformer

                model = to_hooked_transformer(model)
            model.to(dev)
            step = train_step_fn(model)
            x, y = torch.from_numpy(d["x"]).to(dev), torch.from_numpy(d["y"]).to(dev)
            step(x, y)  # allocate optimiser state outside the timing
            return lambda: step(x, y)

        impls = _compmech_impls(lambda d, make=make: make(d, "cpu"), lambda d, make=make: make(d, "cuda"),
                                devices, threads)
        if tl_ok:
            impls += [Impl("torch", dev, lambda d, dev=dev, make=make: make(d, dev, hooked=True),
                           note="TransformerLens HookedTransformer, same weights and step",
                           sweep=thread_counts() if dev == "cpu" else None) for dev in devices]
        cases.append(Case("train_step", proc_name, dict(size), UNITS["train_step"], prepare, impls))
    return cases


def _stream_cases(proc_name, proc, sizes, devices, threads, use_jax):
    from ..data import StreamSource

    cases = []
    S, C = proc.num_states, STREAM_STEPS
    for size in sizes:
        B, ctx = size["B"], size["ctx"]

        def prepare(B=B, ctx=ctx):
            return dict(items=C * B * ctx, bound_bytes=2 * C * B * ctx * 8)  # int64 inputs and targets

        def make_cm(d, dev, B=B, ctx=ctx):
            src = StreamSource(proc, ctx, B, seed=0, device=dev, background=False)

            def run():
                it = src.batches(0)
                for _ in range(C):
                    next(it)
                it.close()

            return run

        def make_numpy(d, B=B, ctx=ctx):
            torch = _torch()

            def run():
                seq = bl.sample_numpy(proc.T, proc.stationary, C * B, ctx + 1, 0)
                x = seq[:, :-1].astype(np.int64).reshape(C, B, ctx)
                y = seq[:, 1:].astype(np.int64).reshape(C, B, ctx)
                for i in range(C):
                    torch.from_numpy(x[i]), torch.from_numpy(y[i])

            return run

        def make_torch(d, dev, B=B, ctx=ctx):
            torch = _torch()
            P, init = bl.sample_tables_torch(proc.T, proc.stationary, dev)
            gen = torch.Generator(device=dev)

            def run():
                gen.manual_seed(0)
                seq = bl.sample_torch(P, init, C * B, ctx + 1, S, gen).long().view(C, B, ctx + 1)
                for i in range(C):
                    seq[i, :, :-1].contiguous(), seq[i, :, 1:].contiguous()

            return run

        impls = _compmech_impls(lambda d, m=make_cm: m(d, "cpu"), lambda d, m=make_cm: m(d, "cuda"), devices, threads)
        if "cpu" in devices:
            impls.append(Impl("numpy", "cpu", make_numpy, note="numpy sampler, int64 batches, torch.from_numpy"))
        impls += _torch_impls(make_torch, devices)
        impls += _bounds(devices)
        cases.append(Case("stream_batches", proc_name, dict(size), UNITS["stream_batches"], prepare, impls))
    return cases


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def cases(suite: str = "all", mode: str = "quick", devices=("cpu",), threads=None, use_jax: bool | None = None,
          processes=None, workloads=None) -> list[Case]:
    """Every case of ``suite`` at ``mode``'s sizes. ``devices``: subset of ``("cpu", "cuda")``;
    ``threads``: compmech CPU thread counts (default 1, 2, 4, ..., all); ``use_jax``: default
    when JAX is installed; ``processes``/``workloads``: restrict to these names."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {suite!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    bad = set(devices) - {"cpu", "cuda"}
    if bad or not devices:
        raise ValueError(f"devices must be a non-empty subset of ('cpu', 'cuda'), got {list(devices)}")
    threads = list(threads) if threads else thread_counts()
    if use_jax is None:  # jit compiles once per shape: seconds each, too slow for a quick run
        use_jax = bl.jax_available() and mode != "quick"
    names = list(processes) if processes else list(PROCESS_SPECS)
    unknown = [p for p in names if p not in PROCESS_SPECS]
    if unknown:
        raise ValueError(f"unknown benchmark process {unknown}; choose from {sorted(PROCESS_SPECS)}")
    wanted = SUITES[suite] if workloads is None else [w for w in SUITES[suite] if w in workloads]
    out = []
    for w in wanted:
        for pname in names:
            proc = process(pname)
            sizes = SIZES[w][mode]
            if isinstance(sizes, dict):
                sizes = sizes[pname]
            args = (pname, proc, sizes, list(devices), threads, use_jax)
            if w in ("beliefs", "log_prob"):
                out += _belief_like_cases(w, *args)
            elif w == "sample":
                out += _sample_cases(*args)
            elif w == "msp_tree":
                out += _msp_tree_cases(*args)
            elif w == "msp_graph":
                out += _msp_graph_cases(*args)
            elif w == "probe_fit":
                out += _probe_cases(*args)
            elif w == "train_step":
                out += _train_cases(*args, mode)
            else:
                out += _stream_cases(*args)
    if mode != "full":  # baselines at one thread: a quick run cannot afford an oversubscribed sweep
        for c in out:
            for i in c.impls:
                if i.sweep:
                    i.sweep = [1]
    return out
