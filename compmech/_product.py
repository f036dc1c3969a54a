"""Product processes run factor by factor.

For independent factors (``cm.processes.product``) the joint belief is the outer product of the
factors' beliefs, the log-probability is the sum of theirs, and a sample is the factors' samples
side by side. So ``cm.beliefs``/``cm.log_prob``/``cm.sample`` on a product split the joint tokens
(row-major over the factors' vocabularies, as ``product`` defines them), run each factor (S_i
states) and combine: five Mess3 factors cost five Mess3 propagations instead of one with
243 states and 243 tokens. ``factors=True`` returns the per-factor beliefs; the joint
(``prod S_i`` per position) is built only when asked for.
"""
from __future__ import annotations

import numpy as np

from ._arrays import is_torch, smallest_uint, to_numpy
from ._sizes import check_fits
from .results import beliefs_result, sample_result


def factors_of(proc):
    """The factors of a product process, or None for any other process."""
    return getattr(proc, "factors", None)


def _token_error(shape, first: int, value: int, V: int) -> ValueError:
    idx = np.unravel_index(first, shape)
    where = f"row {idx[0]}, position {idx[1]}" if len(shape) == 2 else f"position {idx[0]}"
    return ValueError(f"tokens: value {value} at {where} is outside the vocabulary [0, {V})")


def _check_token_array(dtype_ok: bool, dtype, shape) -> None:
    if not dtype_ok:
        raise TypeError(f"tokens must be an integer array, got dtype {dtype}")
    if len(shape) not in (1, 2):
        raise ValueError(f"tokens must have shape (B, L) or (L,), got shape {tuple(shape)}")


def _split_on_torch(tokens, fs, V: int) -> list:
    """split_tokens for tensors on a GPU: torch's own arithmetic, on their device."""
    import torch

    _check_token_array(not (tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool),
                       tokens.dtype, tokens.shape)
    bad = (tokens < 0) | (tokens >= V)
    if tokens.numel() and bool(bad.any()):
        first = int(bad.reshape(-1).int().argmax())
        raise _token_error(tuple(tokens.shape), first, int(tokens.reshape(-1)[first]), V)
    rest = tokens.long()
    parts = []
    for f in reversed(fs[1:]):
        parts.append(rest % f.vocab_size)
        rest = rest // f.vocab_size
    parts.append(rest)
    return [p.to(torch.uint8 if f.vocab_size <= 256 else torch.int32) for p, f in zip(reversed(parts), fs)]


def factor_tokens(proc, tokens):
    """``get(i)``: factor i's tokens of the joint ``tokens`` (numpy or torch, same kind and device
    out), each split when asked in one compiled, threaded pass, so that one factor's array is alive
    at a time (and a freed one comes back as warm memory for the next). The joint values are all
    checked here, before any factor runs. Digits are uint8, or uint16 for a factor with more than
    256 tokens (torch: uint8 or int32)."""
    from . import _core

    fs = factors_of(proc)
    V = proc.vocab_size
    if is_torch(tokens) and tokens.device.type != "cpu":
        parts = _split_on_torch(tokens, fs, V)
        return parts.__getitem__
    torch_in = is_torch(tokens)
    arr = to_numpy(tokens, "tokens")
    _check_token_array(arr.dtype != np.bool_ and arr.dtype.kind in "iu", arr.dtype, arr.shape)
    arr = np.ascontiguousarray(arr)
    radices = [f.vocab_size for f in fs]

    def split(i):
        parts, first = _core.split_digits(arr, radices, i)
        if parts is None:
            raise _token_error(arr.shape, first, int(arr.reshape(-1)[first]), V)
        p = parts[0]
        if torch_in:
            import torch

            return torch.from_numpy(p if p.dtype == np.uint8 else p.astype(np.int32))
        return p

    ready = {0: split(0)}  # checks every joint value
    return lambda i: ready.pop(i) if i in ready else split(i)


def split_tokens(proc, tokens) -> list:
    """Every factor's tokens of joint tokens at once (see :func:`factor_tokens`)."""
    get = factor_tokens(proc, tokens)
    return [get(i) for i in range(len(factors_of(proc)))]


def combine(parts: list, sizes: list, out_dtype):
    """Row-major joint index of per-factor indices (numpy or torch); numpy parts in one compiled,
    threaded pass."""
    if is_torch(parts[0]):
        import torch

        acc = parts[0].to(torch.int64)
        for p, n in zip(parts[1:], sizes[1:]):
            acc = acc * n + p.to(torch.int64)
        return acc.to(out_dtype)
    if max(sizes) > 65536 or np.prod(sizes, dtype=float) >= 2.0**63:  # beyond the compiled digits
        acc = parts[0].astype(out_dtype)
        for p, n in zip(parts[1:], sizes[1:]):
            acc *= out_dtype(n)
            acc += p.astype(out_dtype, copy=False)
        return acc
    from . import _core

    digits = [np.ascontiguousarray(p, dtype=np.uint8 if n <= 256 else np.uint16) for p, n in zip(parts, sizes)]
    joint, first, factor = _core.join_digits(digits, list(sizes), np.dtype(out_dtype).name)
    if first >= 0:  # the factors' own samplers made these: a bug, not bad input
        raise RuntimeError(f"factor {factor}'s value {digits[factor].reshape(-1)[first]} at flat index "
                           f"{first} is outside [0, {sizes[factor]})")
    return joint


def split_initial(proc, initial) -> list | None:
    """Per-factor initial beliefs: the factors' own defaults for ``initial=None``; the marginals of
    a product-form ``initial``; None when ``initial`` is not a product of factor beliefs (the
    caller then runs the joint process)."""
    fs = factors_of(proc)
    if initial is None:
        return [None] * len(fs)
    joint = proc.check_initial(initial)
    shape = [f.num_states for f in fs]
    cube = joint.reshape(shape)
    margins = []
    for i, f in enumerate(fs):
        margins.append(_marginal(cube, fs, i))
    outer = margins[0]
    for m in margins[1:]:
        outer = np.multiply.outer(outer, m)
    if not np.allclose(outer.reshape(-1), joint, rtol=1e-12, atol=1e-14):
        return None
    return margins


def _marginal(cube, fs, i):
    """Factor i's belief from a product-form joint belief: contract every other factor's axis with
    its w (ones for an HMM), which gives 1 for a normalised factor belief."""
    out = cube
    for j in reversed(range(len(fs))):  # last axes first, so the lower axis numbers stay valid
        if j != i:
            out = np.tensordot(out, fs[j].w, axes=([j], [0]))
    return out


def joint_beliefs(parts: list, dtype=None):
    """Outer product of per-factor beliefs (..., S_i) -> (..., prod S_i) (numpy or torch)."""
    acc = parts[0]
    for p in parts[1:]:
        acc = (acc[..., :, None] * p[..., None, :]).reshape(*acc.shape[:-1], acc.shape[-1] * p.shape[-1])
    if dtype is not None:
        acc = acc.to(dtype) if is_torch(acc) else acc.astype(dtype, copy=False)
    return acc


def factor_seed(seed: int, i: int) -> int:
    """Seed of factor i's stream: SplitMix64 of seed + (i + 1) * golden ratio (a bijection of the
    seed for each i, and unrelated streams for different i)."""
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def _per_factor(fs, run):
    """run(i, factor) for every factor, naming the factor in a ValueError."""
    out = []
    for i, f in enumerate(fs):
        try:
            out.append(run(i, f))
        except ValueError as e:
            raise ValueError(f"factor {i} of the product ({f.name or type(f).__name__}): {e}") from None
    return out


def beliefs(proc, tokens, *, initial, dtype, return_log_prob, on_zero, out, factors):
    """cm.beliefs on a product, factor by factor; None when ``initial`` is not of product form."""
    from .beliefs import beliefs as factor_beliefs

    fs = factors_of(proc)
    inits = split_initial(proc, initial)
    if inits is None:
        if factors:
            raise ValueError("factors=True needs an initial belief of product form (the outer product of "
                             "one belief per factor)")
        return None
    if factors and out is not None:
        raise ValueError("out= gives the joint beliefs; it cannot be combined with factors=True")
    toks = factor_tokens(proc, tokens)
    if out is not None:
        dtype = str(out.dtype).replace("torch.", "")
    runs = _per_factor(fs, lambda i, f: factor_beliefs(
        f, toks(i), initial=inits[i], dtype=dtype, return_log_prob=return_log_prob, on_zero=on_zero))
    per = [r[0] for r in runs] if return_log_prob else runs
    result = per if factors else joint_beliefs(per)
    if out is not None:
        if is_torch(out):
            out.copy_(result)
        else:
            np.copyto(to_numpy(out, "out"), result)
        result = out
    if not return_log_prob:
        return result
    lp = runs[0][1]
    for r in runs[1:]:
        lp = lp + r[1]
    return beliefs_result(result, lp, want_log_prob=True)


def log_prob(proc, tokens, *, initial, on_zero):
    """cm.log_prob on a product: the sum of the factors'; None when ``initial`` is not of product form."""
    from .beliefs import log_prob as factor_log_prob

    fs = factors_of(proc)
    inits = split_initial(proc, initial)
    if inits is None:
        return None
    toks = factor_tokens(proc, tokens)
    lps = _per_factor(fs, lambda i, f: factor_log_prob(f, toks(i), initial=inits[i], on_zero=on_zero))
    total = lps[0]
    for lp in lps[1:]:
        total = total + lp
    return total


def _torch_dtype(np_dtype):
    import torch

    return {np.uint8: torch.uint8, np.uint16: torch.uint16, np.uint32: torch.uint32}[np.dtype(np_dtype).type]


def sample(proc, batch, length, *, seed, initial, return_states, return_beliefs, device, row_offset, dtype,
           factors):
    """cm.sample on a product: each factor samples its own stream (seed ``factor_seed(seed, i)``,
    same rows and positions), and the joint tokens/states are the row-major combinations. None
    when ``initial`` is not of product form."""
    from .sampling import sample as factor_sample

    fs = factors_of(proc)
    inits = split_initial(proc, initial)
    if inits is None:
        if factors:
            raise ValueError("factors=True needs an initial belief of product form")
        return None
    runs = _per_factor(fs, lambda i, f: factor_sample(
        f, batch, length, seed=factor_seed(seed, i), initial=inits[i], return_states=return_states,
        return_beliefs=return_beliefs, device=device, row_offset=row_offset, dtype=dtype))
    runs = [r if isinstance(r, tuple) else (r,) for r in runs]
    torch_out = is_torch(runs[0][0])
    V_dt, S_dt = smallest_uint(proc.vocab_size), smallest_uint(proc.num_states)
    tokens = combine([r[0] for r in runs], [f.vocab_size for f in fs], _torch_dtype(V_dt) if torch_out else V_dt)
    states = beliefs = None
    if return_states:
        states = combine([r[1] for r in runs], [f.num_states for f in fs], _torch_dtype(S_dt) if torch_out else S_dt)
    if return_beliefs:
        per = [r[-1] for r in runs]
        beliefs = per if factors else joint_beliefs(per)
    return sample_result(tokens, states, beliefs, want_states=bool(return_states), want_beliefs=bool(return_beliefs))


def _check_joint_size(proc, trees, depth, dtype, tok_dt) -> None:
    """Refuse up front a joint tree that cannot fit in memory: joint level d has at most the
    product of the factors' level-d sizes (exactly that with ``min_prob=0``), each node holding
    its joint belief, probability, parent, token and one index per factor."""
    nodes = sum(float(np.prod([len(t.level(d)) for t in trees])) for d in range(1, depth + 1))
    per_node = (proc.num_states * np.dtype(dtype).itemsize + 8 + 4 + np.dtype(tok_dt).itemsize
                + 8 * len(trees))
    check_fits(f"cm.msp_tree(depth={depth})", nodes * per_node, f"{nodes:.3g} sequences ({per_node} bytes each)")


def msp_tree(proc, depth, *, dtype, min_prob, initial):
    """cm.msp_tree on a product from the factors' trees: a joint node is one node per factor, its
    probability the product of theirs, its belief the outer product of theirs. Children of a
    joint node are the factors' children combined row-major, which is joint-token order, so each
    level is in the joint tree's lexicographic order. Each level also carries ``factor_index``
    ``(M, k)``: the node's index in each factor's level (``tree.factor_trees[i]``). None when
    ``initial`` is not of product form."""
    from .msp_tree import MSPTree, chain_levels, msp_tree as factor_tree

    fs = factors_of(proc)
    inits = split_initial(proc, initial)
    if inits is None:
        return None
    # a joint node is at most as probable as each of its factor nodes: pruning the factor trees
    # at min_prob drops nothing that the joint tree keeps
    trees = [factor_tree(f, depth, dtype=dtype, min_prob=min_prob, initial=i0) for f, i0 in zip(fs, inits)]
    tok_dt = smallest_uint(proc.vocab_size)
    _check_joint_size(proc, trees, depth, dtype, tok_dt)
    V = [f.vocab_size for f in fs]
    idx = np.zeros((1, len(fs)), np.int64)
    arrays = [(np.ascontiguousarray(joint_beliefs([t.level(0).beliefs for t in trees])), np.ones(1),
               np.zeros(1, np.int32), np.zeros(1, tok_dt))]
    factor_index = [idx]
    for d in range(1, depth + 1):
        flv = [t.level(d) for t in trees]
        prev_sizes = [len(t.level(d - 1)) for t in trees]
        counts = [np.full(n, v) if lv.is_full else np.bincount(lv.parent, minlength=n)
                  for lv, n, v in zip(flv, prev_sizes, V)]
        starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in counts]
        per_factor = np.stack([c[idx[:, i]] for i, c in enumerate(counts)], axis=1)  # (M_prev, k)
        n_child = per_factor.prod(axis=1)
        parent = np.repeat(np.arange(len(idx)), n_child)
        local = np.arange(len(parent)) - np.repeat(np.cumsum(n_child) - n_child, n_child)
        child = np.empty((len(parent), len(fs)), np.int64)
        for i in reversed(range(len(fs))):  # row-major: the last factor varies fastest
            cnt = per_factor[parent, i]
            child[:, i] = starts[i][idx[parent, i]] + local % cnt
            local //= cnt
        probs = np.ones(len(parent))
        for i, lv in enumerate(flv):
            probs *= lv.probs[child[:, i]]
        keep = (probs > 0) & (probs >= min_prob)
        parent, child, probs = parent[keep], child[keep], probs[keep]
        tokens = np.zeros(len(parent), np.int64)
        for i, lv in enumerate(flv):
            tokens = tokens * V[i] + (child[:, i] % V[i] if lv.is_full else lv.token[child[:, i]])
        beliefs = joint_beliefs([lv.beliefs[child[:, i]] for i, lv in enumerate(flv)])
        arrays.append((np.ascontiguousarray(beliefs), probs, parent.astype(np.int32), tokens.astype(tok_dt)))
        factor_index.append(child)
        idx = child
    levels = chain_levels(proc, arrays)  # a level that kept every child gets implicit links
    for lvl, fi in zip(levels, factor_index):
        lvl.factor_index = fi
    tree = MSPTree(proc, levels, min_prob)
    tree.factor_trees = trees
    return tree
