"""``compmech msp NAME --depth N --stream [--scheduler ADDR] [--zarr OUT.zarr]``: the MSP tree's
exact per-level entropies at depths far beyond memory, on Dask, resumable after Ctrl-C."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def run_stream(args) -> int:
    from ..commands._params import process_from_args
    from .msp import msp_reduce

    proc = process_from_args(args)
    store = args.zarr or str(Path(args.out).with_suffix("")) + ".stream.zarr"
    client = args.scheduler
    print(f"process      {proc!r}")
    print(f"depth        {args.depth} (streamed on Dask{' at ' + client if client else ', in-process'}; "
          f"progress in {store})")
    t0 = time.perf_counter()
    try:
        res = msp_reduce(proc, args.depth, ("entropy",), client=client, min_prob=args.min_prob, store=store,
                         zarr=bool(args.zarr), progress=True)
    except KeyboardInterrupt:
        print(f"interrupted: finished shards are saved in {store}; rerun the same command to resume")
        return 130
    dt = time.perf_counter() - t0
    if res.info["extended_from"] is not None:
        kept = res.info["levels_kept"]
        print(f"extended     the finished depth-{res.info['extended_from']} run in {store} to depth {args.depth}"
              + (f" (levels 0..{kept} kept)" if kept else ""))
    e = res.entropy
    n = int(e.nodes[1:].sum())
    print(f"nodes        {n:,} in {dt:.1f} s ({n / max(dt, 1e-9) / 1e6:.1f} M nodes/s; "
          f"{res.info['shards']} shards split at level {res.info['split_level']})")
    print(f"{'L':>4s} {'nodes':>16s} {'sum p - 1':>11s} {'H(L) bits':>20s} {'h(L) bits':>20s}")
    for L in range(len(e.H)):
        h = f"{e.h[L - 1]:20.15f}" if L else " " * 20
        print(f"{L:4d} {int(e.nodes[L]):16,d} {e.total_prob[L] - 1:11.2e} {e.H[L]:20.15f} {h}")
    if args.zarr:
        print(f"levels       written to {args.zarr} (compmech.scale.load_tree / open_levels)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5), dpi=150)
    L = np.arange(len(e.H))
    axes[0].plot(L, e.H, "o-")
    axes[0].set(xlabel="L", ylabel="H(L) [bits]", title="block entropy")
    axes[1].plot(L[1:], e.h, "o-")
    axes[1].set(xlabel="L", ylabel="h(L) [bits]", title="myopic entropy")
    gap = e.h[:-1] - e.h[-1]  # convergence toward the entropy rate (exact sums: no noise floor)
    pos = gap > 0
    axes[2].semilogy(L[1:-1][pos], gap[pos], "o-")
    axes[2].set(xlabel="L", ylabel=f"h(L) - h({len(e.h)}) [bits]", title="convergence")
    fig.suptitle(f"{proc.name or 'process'}: exact, depth {args.depth}")
    fig.tight_layout()
    fig.savefig(args.out, bbox_inches="tight")
    plt.close(fig)
    print(f"figure       {args.out}")
    return 0
