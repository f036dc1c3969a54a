"""``compmech msp [NAME] --depth N --out fig.png``: enumerate the mixed-state tree of a process,
print a summary (with the deduplicated mixed-state graph) and draw its belief geometry
(``--draw graph``: the mixed-state graph itself)."""
from __future__ import annotations

import time

import numpy as np

from ._params import add_process_args, output_file, process_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("msp", help="enumerate the mixed-state tree and draw the belief geometry",
                       description=__doc__)
    add_process_args(p)
    p.add_argument("--depth", type=int, default=10, help="tree depth (default 10)")
    p.add_argument("--out", default="msp.png", help="figure path (.png or .pdf; default msp.png)")
    p.add_argument("--min-prob", type=float, default=0.0, help="drop sequences less likely than this")
    p.add_argument("--draw", choices=["beliefs", "graph"], default="beliefs",
                   help="beliefs: every tree node in the simplex (default); graph: the deduplicated MSP graph")
    p.add_argument("--stream", action="store_true",
                   help="stream the tree on Dask (exact H(L), h(L) per level, any depth; see compmech.scale)")
    p.add_argument("--scheduler", help="with --stream: Dask scheduler address (default: in-process, all cores)")
    p.add_argument("--zarr", help="with --stream: also write every level to this Zarr store")
    p.set_defaults(func=run)


# Above this many tree nodes the figure merges nodes that share a cell of a grid over the
# simplex (finer than the figure's pixels), so drawing costs memory and time in the number of
# occupied cells, not in the (exponentially growing) number of nodes.
MAX_FIGURE_POINTS = 200_000


def _figure_points(tree, max_points: int | None = None):
    """``(beliefs, weights, cells)`` to draw: every node when the tree is small (``cells`` 0),
    else one point per occupied grid cell of side ``1/cells`` at the cell's centre, weighted
    by the total probability of the nodes in it; built level by level (no full copy)."""
    if tree.num_nodes + 1 <= (MAX_FIGURE_POINTS if max_points is None else max_points):
        return (np.concatenate([np.asarray(l.beliefs, np.float64) for l in tree.levels]),
                np.concatenate([np.asarray(l.probs, np.float64) for l in tree.levels]), 0)
    S = np.asarray(tree.level(0).beliefs).shape[1]
    cells = 512 if S <= 3 else 128
    radix = np.int64(cells + 2)  # rounded, clipped coordinates lie in [0, cells + 1]
    packed = S * np.log2(float(radix)) < 62  # one int64 code per cell (sorting codes is fast)
    keys = np.empty(0, np.int64) if packed else np.empty((0, S), np.int64)
    w = np.empty(0)
    for lvl in tree.levels:
        q = np.clip(np.rint(np.asarray(lvl.beliefs, np.float64) * cells), 0, cells + 1).astype(np.int64)
        if packed:
            code = np.zeros(len(q), np.int64)
            for j in range(S):
                code = code * radix + q[:, j]
            q = code
        keys, inv = np.unique(np.concatenate([keys, q]), axis=None if packed else 0, return_inverse=True)
        w = np.bincount(inv.ravel(), weights=np.concatenate([w, np.asarray(lvl.probs, np.float64)]),
                        minlength=len(keys))
    if packed:
        coords = np.empty((len(keys), S), np.int64)
        for j in range(S - 1, -1, -1):
            keys, coords[:, j] = np.divmod(keys, radix)
        keys = coords
    return keys / cells, w, cells


def run(args) -> int:
    output_file(args.out, "--out", "figure")
    if args.stream or args.scheduler or args.zarr:
        from ..scale.cli import run_stream

        return run_stream(args)
    from ..msp_tree import msp_tree

    proc = process_from_args(args)
    t0 = time.perf_counter()
    tree = msp_tree(proc, args.depth, min_prob=args.min_prob)
    dt = time.perf_counter() - t0
    deepest = tree.level(tree.depth)
    uniq = np.unique(np.round(np.asarray(deepest.beliefs, dtype=np.float64), 9), axis=0).shape[0]
    print(f"process      {proc!r}")
    print(f"depth        {tree.depth}")
    print(f"nodes        {tree.num_nodes:,} ({tree.num_nodes / max(dt, 1e-9) / 1e6:.1f} M nodes/s, {dt * 1e3:.1f} ms)")
    print(f"level sizes  {[len(l) for l in tree.levels]}")
    print(f"distinct beliefs at depth {tree.depth}: {uniq:,}")
    print(f"level prob sums: min {min(l.probs.sum() for l in tree.levels):.12f}")
    from ..msp_graph import msp

    t0 = time.perf_counter()
    graph = msp(proc, max_depth=args.depth)
    dt = time.perf_counter() - t0
    print(f"graph        {graph.num_states:,} distinct mixed states to depth {args.depth}, {graph.num_edges:,} "
          f"transitions, {int(graph.recurrent.sum())} recurrent ({dt * 1e3:.1f} ms)")
    full = msp(proc, max_states=100_000)
    print(f"full MSP     " + (f"finite: {full.num_states} mixed states" if full.is_complete else
                              f"not finite within {full.num_states:,} states (truncated)"))
    from ..plot import msp_graph as draw_graph, simplex
    import matplotlib.pyplot as plt

    if args.draw == "graph":
        fig, ax = plt.subplots(figsize=(6, 6), dpi=150)
        draw_graph(full if full.is_complete else graph, ax=ax)
    else:
        beliefs, weights, cells = _figure_points(tree)
        if cells:
            print(f"figure       {tree.num_nodes + 1:,} nodes drawn as {len(weights):,} cells of 1/{cells} "
                  f"(probabilities summed per cell)")
        fig = plt.figure(figsize=(6, 6), dpi=150)
        ax = fig.add_subplot(projection="3d" if beliefs.shape[1] == 4 else None)
        simplex(beliefs, weights=weights, ax=ax, rasterized=True)
        ax.set_title(f"{proc.name or 'process'}: mixed states to depth {tree.depth}")
    fig.savefig(args.out, bbox_inches="tight")
    plt.close(fig)
    print(f"figure       {args.out}")
    return 0
