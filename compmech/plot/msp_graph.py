"""Drawing of a mixed-state graph (:func:`compmech.msp`): nodes at their beliefs' positions
in the simplex (or principal components), coloured by belief, edges as arrows labelled by
token."""
from __future__ import annotations

import numpy as np

from .simplex import _TRIANGLE, belief_colors, pca_coords, simplex_coords


def _positions(graph, layout):
    b = graph.beliefs
    if layout == "belief":
        return simplex_coords(b) if b.shape[1] == 3 else pca_coords(b, 2)
    if layout == "spring":
        import networkx as nx

        pos = nx.spring_layout(nx.DiGraph(list(zip(graph.src.tolist(), graph.dst.tolist()))), seed=0)
        out = np.zeros((graph.num_states, 2))
        for k, v in pos.items():
            out[k] = v
        return out
    raise ValueError(f"layout must be 'belief' or 'spring', got {layout!r}")


def msp_graph(graph, ax=None, *, layout: str = "belief", labels: bool | None = None, node_size=None,
              max_edges: int = 5000):
    """Draw an :class:`compmech.MSPGraph`.

    ``layout="belief"`` places each mixed state at its belief (2-simplex for S=3, principal
    components otherwise); ``"spring"`` uses a force layout (networkx). Recurrent states get a
    black outline, frontier (unexplored) states a grey one; node size shrinks with depth.
    Token labels are drawn on edges when ``labels`` (default: graphs with at most 60 edges).
    At most ``max_edges`` edges are drawn. Returns the axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    pos = _positions(graph, layout)
    if layout == "belief" and graph.beliefs.shape[1] == 3:
        tri = np.vstack([_TRIANGLE, _TRIANGLE[:1]])
        ax.plot(tri[:, 0], tri[:, 1], color="0.75", lw=0.8, zorder=0)
    E = min(graph.num_edges, max_edges)
    src, dst, tok = graph.src[:E], graph.dst[:E], graph.token[:E]
    loops = src == dst
    segs = np.stack([pos[src[~loops]], pos[dst[~loops]]], axis=1)
    alpha = np.clip(0.25 + 0.75 * graph.prob[:E][~loops], 0, 1)
    lc = LineCollection(segs, colors=[(0.3, 0.3, 0.3, a) for a in alpha], linewidths=0.7, zorder=1)
    ax.add_collection(lc)
    if labels is None:
        labels = graph.num_edges <= 60
    if labels:
        for s_, d_, x, p in zip(src, dst, tok, graph.prob[:E]):
            if s_ == d_:
                ax.annotate(f"{x}", pos[s_], xytext=(6, 6), textcoords="offset points", fontsize=7)
                continue
            mid = 0.6 * pos[d_] + 0.4 * pos[s_]
            ax.annotate("", xy=pos[d_], xytext=pos[s_],
                        arrowprops=dict(arrowstyle="-|>", color="0.35", lw=0.6, shrinkA=5, shrinkB=5))
            ax.text(mid[0], mid[1], f"{x}|{p:.2f}", fontsize=6, color="0.2", ha="center", va="center")
    if node_size is None:
        node_size = 120.0 / (1.0 + graph.depth) if graph.num_states <= 500 else 4.0
    edge = np.where(graph.recurrent, "k", np.where(graph.expanded, "none", "0.5"))
    ax.scatter(pos[:, 0], pos[:, 1], c=belief_colors(graph.beliefs), s=node_size, edgecolors=edge,
               linewidths=0.8, zorder=2)
    status = "complete" if graph.is_complete else "truncated"
    ax.set_title(f"{graph.process.name or 'process'}: {graph.num_states} mixed states ({status})", fontsize=9)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.autoscale_view()
    return ax
