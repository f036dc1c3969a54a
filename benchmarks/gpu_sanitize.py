"""Small calls of every CUDA kernel variant, for compute-sanitizer (memcheck, racecheck,
synccheck) on a GPU machine; used by benchmarks/gpu_check.sh. Sizes are odd on purpose (partial
blocks and tiles)."""
import numpy as np
import torch

import compmech as cm

procs = [cm.processes.mess3(), cm.processes.random_hmm(1, 2, 0), cm.processes.random_hmm(7, 3, 1),
         cm.processes.random_hmm(13, 2, 2), cm.processes.random_hmm(20, 2, 3), cm.processes.random_ghmm_like(5, 3, 4),
         cm.processes.random_hmm(3, 300, 5)]
for p in procs:
    tok, states = cm.sample(p, 131, 37, seed=1, return_states=True, device="cuda") if not p.is_generalized else (
        cm.sample(p, 131, 37, seed=1, device="cuda"), None)
    for dt in (np.float32, np.float64):
        cm.beliefs(p, tok, dtype=dt, return_log_prob=True)
        if p.num_states <= 64:
            cm.sample(p, 131, 37, seed=1, return_beliefs=True, dtype=dt, device="cuda")
        cm.msp_tree(p, 3, dtype=dt, min_prob=1e-3, device="cuda")
    torch.cuda.synchronize()
print("sanitize: ok")
