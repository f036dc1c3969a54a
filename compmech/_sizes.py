"""Up-front size checks for outputs that grow exponentially (MSP trees, MSP graphs): compute a
bound on the size first and refuse with one clear line naming it, instead of allocating level
by level until the machine runs out of memory."""
from __future__ import annotations

import os

import numpy as np

#: the streaming alternatives named in the errors
STREAMING_HINT = ("stream it instead: cm.scale.msp_reduce(...) (CLI: compmech msp --stream), or "
                  "cm.msp_level_chunks(...) for one level")


class TooLargeError(MemoryError, ValueError):
    """The requested output cannot fit in memory. A MemoryError (it is about memory) and a
    ValueError (the argument asks for too much), so either ``except`` clause catches it."""


def available_bytes() -> int | None:
    """Memory the process can still get (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def msp_level_bounds(T: np.ndarray, initial: np.ndarray, depth: int, min_prob: float = 0.0) -> list[float]:
    """Upper bounds on the number of sequences kept at levels 1..depth of the MSP tree.

    A sequence with nonzero probability needs a hidden-state path of nonzero entries, so level
    d holds at most min(V * bound(d-1), #nonzero (word, path) pairs of length d, 1/min_prob)
    sequences (probabilities of one level sum to at most 1). Floats: the counts overflow int64.
    """
    V = T.shape[0]
    support = (T != 0).sum(axis=0).astype(np.float64)  # (S, S): number of tokens i -> j
    paths = (np.asarray(initial) != 0).astype(np.float64)
    cap = 1.0 / min_prob if min_prob > 0 else np.inf
    bounds, prev = [], 1.0
    for _ in range(depth):
        paths = paths @ support
        total = float(paths.sum())
        if total > 1e300:  # keep the recurrence finite; the V-power bound has taken over anyway
            paths = paths / total * 1e300
        prev = min(prev * V, total, cap)
        bounds.append(prev)
    return bounds


def check_fits(what: str, nbytes: float, detail: str, available: int | None = None) -> None:
    """Raise TooLargeError when ``nbytes`` exceeds the memory available."""
    avail = available_bytes() if available is None else available
    if avail is not None and nbytes > avail:
        raise TooLargeError(f"{what} would need up to {detail} (~{_fmt_bytes(nbytes)}), more than the "
                            f"{_fmt_bytes(avail)} of memory available: {STREAMING_HINT}")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"
