"""Issue 16's Mess3 targets in wall clock on a quiet machine: medians (and best) of REPS calls
(default 15) in one process, 2 threads (the default), B=65536, L=256, next to numpy filling a
fresh and a reused array of the beliefs' size (12 B per update) in the same run, and, for the MSP
tree, numpy filling fresh pages of the tree's size with one thread and with two. Run alone:

    python benchmarks/quiet_check.py          # REPS=25 python benchmarks/quiet_check.py
"""
import gc
import os
import threading
import time

import numpy as np
import compmech as cm

B, L = 65536, 256
P = cm.processes.mess3(0.05, 0.85)
N = B * L
REPS = int(os.environ.get("REPS", 15))

def med(fn, reps=REPS):
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); r = fn(); ts.append(time.perf_counter() - t); del r
    return float(np.median(ts)), float(np.min(ts))

toks = cm.sample(P, B, L, seed=0)
buf = np.empty((B, L, 3), np.float32)
def fill_fresh():
    a = np.empty((B, L, 3), np.float32); a.fill(0); return a
def fill_reused():
    buf.fill(0); return None
def _fresh_bytes(n, threads=1):
    # threads > 1: each fills its own contiguous part (2 MB-aligned cuts, so no huge page is
    # shared), as the kernels' threads first-touch their outputs; ndarray.fill releases the GIL
    a = np.empty(n, np.uint8)
    cut = [min(n, (n * k // threads) >> 21 << 21) for k in range(threads)] + [n]
    ts = [threading.Thread(target=a[cut[k]:cut[k + 1]].fill, args=(0,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return a
rows = []
def rep(name, t, n, unit):
    rows.append((name, t[0], t[1], n / t[0] / 1e9, unit))
rep("fill fresh f32 (B,L,3)", med(fill_fresh), N, "G items/s")
rep("fill reused f32 (B,L,3)", med(fill_reused), N, "G items/s")
rep("cm.sample", med(lambda: cm.sample(P, B, L, seed=1)), N, "G tokens/s")
rep("cm.beliefs fresh f32", med(lambda: cm.beliefs(P, toks)), N, "G updates/s")
rep("cm.beliefs out= f32", med(lambda: cm.beliefs(P, toks, out=buf)), N, "G updates/s")
rep("cm.log_prob", med(lambda: cm.log_prob(P, toks)), N, "G updates/s")
del buf; gc.collect()
nodes = (3 ** 17 - 1) // 2 - 1
tree_bytes = sum(lv.nbytes for lv in cm.msp_tree(P, 16, dtype=np.float32))  # the bound: numpy filling that many fresh bytes
rep(f"fill fresh {tree_bytes / 1e9:.2f} GB (tree)", med(lambda: _fresh_bytes(tree_bytes), 7), nodes, "G nodes/s")
rep("  same, 2 threads", med(lambda: _fresh_bytes(tree_bytes, 2), 7), nodes, "G nodes/s")
rep("cm.msp_tree depth16 f32", med(lambda: cm.msp_tree(P, 16, dtype=np.float32), 7), nodes, "G nodes/s")
print(f"load {os.getloadavg()}, simd {cm.build_info()['simd']}")
for r in rows:
    print(f"{r[0]:28s} median {r[1]*1e3:8.1f} ms  min {r[2]*1e3:8.1f} ms  {r[3]:6.3f} {r[4]}")
