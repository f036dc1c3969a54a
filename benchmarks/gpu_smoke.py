"""GPU smoke test: one small call of every CUDA kernel, each synchronised and checked, so that a
first run on a new GPU says in seconds which kernel (if any) fails and how. Run by
benchmarks/gpu_check.sh before the tests (with CUDA_LAUNCH_BLOCKING=1 and COMPMECH_CUDA_DEBUG=1).

    python benchmarks/gpu_smoke.py              # on the GPU
    python benchmarks/gpu_smoke.py --emulate    # the same calls on the CPU emulation (no GPU)

Prints one line per kernel and exits non-zero if any failed or disagreed with the CPU.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

os.environ.setdefault("CUDA_LAUNCH_BLOCKING", "1")  # before torch initialises CUDA
os.environ.setdefault("COMPMECH_CUDA_DEBUG", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import compmech as cm  # noqa: E402
from compmech import _backend  # noqa: E402

MESS3 = cm.processes.mess3()


def checks(dev, tensor_dev):
    """(name, call) pairs; each call returns (got, want) to compare. ``dev`` is passed as
    ``device=``; tokens are uploaded to ``tensor_dev`` (the CPU when emulating)."""
    host = lambda t: t.cpu().numpy()  # noqa: E731
    tok = cm.sample(MESS3, 131, 37, seed=1)
    gold = cm.processes.golden_mean()
    wide_v = cm.processes.random_hmm(3, 300, seed=5)
    ghmm = cm.processes.random_ghmm_like(5, 3, 4)
    s12 = cm.processes.random_hmm(12, 4, seed=0)
    s40 = cm.processes.random_hmm(40, 2, seed=1)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(tensor_dev)  # noqa: E731
    return [
        ("sample HMM, packed tables (Mess3)",
         lambda: (host(cm.sample(MESS3, 131, 37, seed=1, return_states=True, device=dev)[1]),
                  cm.sample(MESS3, 131, 37, seed=1, return_states=True)[1])),
        ("sample HMM, alias tables (V=300)",
         lambda: (host(cm.sample(wide_v, 70, 33, seed=5, device=dev)), cm.sample(wide_v, 70, 33, seed=5))),
        ("sample GHMM with beliefs (S=5)",
         lambda: (host(cm.sample(ghmm, 70, 33, seed=2, device=dev)), cm.sample(ghmm, 70, 33, seed=2))),
        ("beliefs float32, uint8 tokens (S=3)",
         lambda: (host(cm.beliefs(MESS3, t(tok))), cm.beliefs(MESS3, tok))),
        ("beliefs float64, int32 tokens (S=12)",
         lambda: (host(cm.beliefs(s12, t(cm.sample(s12, 65, 29, seed=0).astype(np.int32)), dtype=np.float64)),
                  cm.beliefs(s12, cm.sample(s12, 65, 29, seed=0), dtype=np.float64))),
        ("beliefs float64, int64 tokens (S=40)",
         lambda: (host(cm.beliefs(s40, t(cm.sample(s40, 65, 29, seed=0).astype(np.int64)), dtype=np.float64)),
                  cm.beliefs(s40, cm.sample(s40, 65, 29, seed=0), dtype=np.float64))),
        ("log_prob only (S=3)",
         lambda: (host(cm.log_prob(MESS3, t(tok))), cm.log_prob(MESS3, tok))),
        ("MSP full levels (Mess3, depth 4)",
         lambda: (host(cm.msp_tree(MESS3, 4, device=dev).level(4).probs), cm.msp_tree(MESS3, 4).level(4).probs)),
        ("MSP counted levels (golden mean, depth 6)",
         lambda: (host(cm.msp_tree(gold, 6, device=dev).level(6).probs), cm.msp_tree(gold, 6).level(6).probs)),
    ]


def main(argv) -> int:
    emulate = "--emulate" in argv
    if emulate:
        _backend._router = _backend.EmulationRouter()  # "cuda" runs the kernels compiled for the CPU
    elif not torch.cuda.is_available():
        print("smoke: torch sees no CUDA GPU (use --emulate to run the calls on the CPU emulation)")
        return 2
    dev = "cuda"
    sync = (lambda: None) if emulate else torch.cuda.synchronize
    failed = 0
    for name, call in checks(dev, "cpu" if emulate else dev):
        t0 = time.perf_counter()
        try:
            got, want = call()
            sync()
            ok = np.allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=1e-5, atol=1e-6)
            status = "ok" if ok else "MISMATCH vs CPU"
        except Exception as exc:  # report and go on: the next kernels may still tell something
            status = f"FAILED: {type(exc).__name__}: {exc}"
            traceback.print_exc(limit=3)
            ok = False
        failed += not ok
        print(f"smoke: {name:45s} {status} ({(time.perf_counter() - t0) * 1e3:.0f} ms)", flush=True)
    print(f"smoke: {'all kernels ok' if not failed else f'{failed} FAILED'}"
          f"{' (emulation)' if emulate else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
