"""Where a fresh MSP tree's time goes: the whole tree and its three largest levels, each next to
numpy filling a fresh array of the same bytes (the first-touch bound) with one thread and with
two, in the same run.

    python benchmarks/bench_msp_levels.py [--depth 16] [--rounds 7] [--dtype float32]

Prints medians (and the spread: fresh pages on a shared VM vary several-fold between rounds).
A full level is written as beliefs + probs only (its parent/token are implicit), so the bound
for a level is ``M * (S * itemsize + 8)`` bytes."""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np

import compmech as cm
from compmech import _backend


def fresh_fill(nbytes: int, threads: int = 1) -> float:
    """Seconds numpy takes to fill a fresh array of ``nbytes``; with several threads each fills
    its own contiguous part (cut at 2 MB, so no huge page is shared; ``fill`` releases the GIL)."""
    t = time.perf_counter()
    a = np.empty(nbytes, np.uint8)
    cut = [min(nbytes, (nbytes * k // threads) >> 21 << 21) for k in range(threads)] + [nbytes]
    workers = [threading.Thread(target=a[cut[k]:cut[k + 1]].fill, args=(1,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    proc = cm.processes.mess3()
    D, dt = args.depth, np.dtype(args.dtype)
    nodes = sum(3 ** d for d in range(1, D + 1))
    tree = cm.msp_tree(proc, D, dtype=dt)
    nbytes = sum(lv.nbytes for lv in tree.levels)
    del tree
    print(f"Mess3 depth {D} {dt.name}: {nodes / 1e6:.1f} M nodes, {nbytes / 1e9:.2f} GB; "
          f"{cm.get_num_threads()} threads, SIMD {cm.build_info()['simd']}")
    rows = []
    for _ in range(args.rounds):
        b1, b2 = fresh_fill(nbytes), fresh_fill(nbytes, 2)
        t = time.perf_counter()
        tree = cm.msp_tree(proc, D, dtype=dt)
        rows.append((b1, b2, time.perf_counter() - t))
        del tree
    b1, b2, t = np.median(rows, axis=0)
    spread = f"{min(r[2] for r in rows) * 1e3:.0f}-{max(r[2] for r in rows) * 1e3:.0f}"
    print(f"tree: {t * 1e3:.0f} ms (rounds {spread} ms) = {nodes / t / 1e9:.3f} G nodes/s; numpy fresh fill of "
          f"{nbytes / 1e9:.2f} GB: 1 thread {b1 * 1e3:.0f} ms, 2 threads {b2 * 1e3:.0f} ms; tree at "
          f"{b2 / t:.0%} of the 2-thread bound (median of the rounds' ratios "
          f"{np.median([r[1] / r[2] for r in rows]):.0%})")
    # the three largest levels, each expanded from the one above into fresh arrays
    top = cm.msp_tree(proc, D - 3, dtype=dt).level(D - 3)
    parents, probs = top.beliefs, top.probs
    del top
    for d in range(D - 2, D + 1):
        k, f1, f2 = [], [], []
        for _ in range(max(1, args.rounds // 2)):
            t0 = time.perf_counter()
            level, _ = _backend.CPU.msp_full(proc, parents, probs, 0.0)  # (beliefs, probs, None, None)
            k.append(time.perf_counter() - t0)
            lb = level[0].nbytes + level[1].nbytes
            f1.append(fresh_fill(lb))
            f2.append(fresh_fill(lb, 2))
        print(f"level {d}: {len(level[1]) / 1e6:.1f} M nodes, {lb / 1e6:.0f} MB: kernel {np.median(k) * 1e3:.0f} ms, "
              f"numpy fresh fill {np.median(f1) * 1e3:.0f} ms (1 thread), {np.median(f2) * 1e3:.0f} ms (2 threads)")
        parents, probs = level[0], level[1]


if __name__ == "__main__":
    main()
