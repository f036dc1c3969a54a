"""Small calls of every CUDA kernel variant, for compute-sanitizer (memcheck, racecheck,
synccheck) on a GPU machine; run by benchmarks/gpu_check.sh with PYTORCH_NO_CUDA_MEMORY_CACHING=1
(so every tensor is its own allocation and an overrun is reported) and a kernel-name filter.

Variants: beliefs for every per-thread storage width (S = 1, 2, 3, 4, 5..8, 9..16, 17..64), with
uint8 / uint16 / int32 / int64 tokens, float32 / float64 / no output, staged and unstaged output
tiles (the launch plan is printed and both kinds are required); HMM sampling with packed and
plain alias tables and wide state types; GHMM sampling for S = 3, 5, 12, 30; MSP levels, full and
counted, float32 / float64. Sizes are odd on purpose (partial blocks and tiles).

    python benchmarks/gpu_sanitize.py [--emulate] [--quick]
"""
import sys

import numpy as np
import torch

import compmech as cm
from compmech import _backend

B, L = 131, 37


def plan_module(emulate):
    if emulate:
        from compmech import _cuda_emu

        return _cuda_emu, 0
    from compmech import _cuda

    return _cuda, torch.cuda.current_device()


def main(argv) -> int:
    emulate = "--emulate" in argv
    if emulate:
        _backend._router = _backend.EmulationRouter()
    mod, dev_index = plan_module(emulate)
    sync = (lambda: None) if emulate else torch.cuda.synchronize
    dev = "cuda"
    quick = "--quick" in argv  # a few variants only: the dry run of gpu_check.sh in the tests
    sizes = ((4, 2), (64, 2)) if quick else ((1, 2), (2, 3), (4, 2), (7, 3), (12, 4), (16, 2), (24, 3), (40, 2), (64, 2))
    hmms = [cm.processes.mess3()] + [cm.processes.random_hmm(S, V, seed=S) for S, V in sizes]
    ghmms = [cm.processes.random_ghmm_like(S, 3, seed=S) for S in ((5,) if quick else (3, 5, 12, 30))]
    staged = set()
    for p in hmms + ghmms:
        tok = cm.sample(p, B, L, seed=1)
        for k, tok_dtype in enumerate((np.uint8, np.uint16, np.int32, np.int64)):
            t = torch.from_numpy(tok.astype(tok_dtype)).to(dev if not emulate else "cpu")
            for dt in (np.float32, np.float64):
                if k and dt == np.float32 and p.num_states not in (4, 64):
                    continue  # every token type once per process (twice at S = 4 and 64)
                cm.beliefs(p, t, dtype=dt, return_log_prob=True)
                plan = mod.beliefs_plan(dev_index, p.vocab_size, p.num_states, np.dtype(dt).itemsize)
                staged.add((np.dtype(dt).name, plan["staged"]))
            cm.log_prob(p, t)
        sync()
        cm.sample(p, B, L, seed=1, device=dev, return_beliefs=True, dtype=np.float64)
        cm.sample(p, B, L, seed=2, device=dev, return_beliefs=True, dtype=np.float32)
        if not p.is_generalized:
            cm.sample(p, B, L, seed=1, return_states=True, device=dev)
        for dt in (np.float32, np.float64):
            cm.msp_tree(p, 3, dtype=dt, device=dev)                  # full levels
            cm.msp_tree(p, 3, dtype=dt, min_prob=1e-2, device=dev)   # counted levels
        sync()
        print(f"sanitize: S={p.num_states:2d} V={p.vocab_size} {'GHMM' if p.is_generalized else 'HMM '} ok",
              flush=True)
    for S, V in ((3, 300), (300, 2)):  # plain alias tables, uint16 tokens / states
        wide = cm.processes.random_hmm(S, V, seed=1, sparsity=0.0)
        cm.sample(wide, B, L, seed=5, return_states=True, device=dev)
    sync()
    print("sanitize: beliefs output tiles hit (dtype, staged):", sorted(staged), flush=True)
    missing = {("float32", True), ("float64", True), ("float64", False)} - staged
    if missing:
        print(f"sanitize: NOT COVERED: {sorted(missing)}", flush=True)
        return 3
    print("sanitize: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
