"""The obvious implementations that compmech's kernels are compared against: numpy (time loop,
batch vectorised), torch (the same loops as tensor ops, on any device) and JAX (``jit`` +
``lax.scan``, built lazily so ``jax`` is only imported when asked for).

Every baseline computes what the compmech call it stands against computes (the tests check
that on small inputs), so a throughput ratio compares equal work."""
from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------
# numpy
# ---------------------------------------------------------------------------------------------


def beliefs_numpy(T, init, tokens):
    """``(B, L, S)`` float32 beliefs after each prefix (float64 arithmetic, like compmech)."""
    B, L = tokens.shape
    S = T.shape[1]
    out = np.empty((B, L, S), dtype=np.float32)
    eta = np.tile(init, (B, 1))
    for t in range(L):
        nxt = np.einsum("bi,bij->bj", eta, T[tokens[:, t]])
        eta = nxt / nxt.sum(axis=1, keepdims=True)
        out[:, t] = eta
    return out


def log_prob_numpy(T, init, tokens):
    """``(B,)`` float64 sequence log-probabilities (nats): the same loop, summing the log of
    each step's normaliser."""
    B, L = tokens.shape
    eta = np.tile(init, (B, 1))
    lp = np.zeros(B)
    for t in range(L):
        nxt = np.einsum("bi,bij->bj", eta, T[tokens[:, t]])
        z = nxt.sum(axis=1)
        lp += np.log(z)
        eta = nxt / z[:, None]
    return lp


def sample_numpy(T, init, B, L, seed):
    """``(B, L)`` uint8 tokens: per step one inverse-CDF draw over (token, next state)."""
    V, S = T.shape[0], T.shape[1]
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(T.transpose(1, 0, 2).reshape(S, V * S), axis=1)  # outcome x * S + j
    state = (rng.random(B)[:, None] > np.cumsum(init)[None, :]).sum(1)
    tokens = np.empty((B, L), dtype=np.uint8)
    for t in range(L):
        o = (rng.random(B)[:, None] > cdf[state]).sum(1)
        o = np.minimum(o, V * S - 1)
        tokens[:, t] = o // S
        state = o % S
    return tokens


def msp_numpy(T, init, depth):
    """Level-by-level tree expansion (impossible children dropped); returns the number of nodes."""
    beliefs, probs, n = init[None, :], np.ones(1), 0
    for _ in range(depth):
        child = np.einsum("ms,xst->mxt", beliefs, T)  # (M, V, S)
        cond = child.sum(axis=2)
        keep = cond > 0
        probs = (probs[:, None] * cond)[keep]
        beliefs = child[keep] / cond[keep][:, None]
        n += probs.size
    return n


def msp_graph_numpy(proc, max_states, tol=1e-9):
    """Mixed-state graph search: level-synchronous BFS, children of a level computed at once,
    deduplicated by a dict keyed on beliefs rounded to the tolerance grid. Returns ``(K, S)``
    beliefs."""
    T = proc.T
    seen = {}
    store = [proc.stationary]
    seen[tuple(np.round(proc.stationary / tol).astype(np.int64))] = 0
    level = np.array([proc.stationary])
    while len(level) and len(store) < max_states:
        kids = np.einsum("ns,xsj->nxj", level, T).reshape(-1, proc.num_states)
        p = kids.sum(axis=1)
        kids = kids[p > 0] / p[p > 0, None]
        keys = np.round(kids / tol).astype(np.int64)
        new = []
        for k, b in zip(map(tuple, keys), kids):
            if k not in seen:
                seen[k] = len(store)
                store.append(b)
                new.append(b)
                if len(store) >= max_states:
                    break
        level = np.array(new)
    return np.array(store)


def _affine_design(X, w):
    sw = np.sqrt(w)[:, None]
    return np.concatenate([X, np.ones((X.shape[0], 1), X.dtype)], 1) * sw, sw


def probe_fit_numpy(X, Y, w):
    """Weighted affine least squares (``np.linalg.lstsq`` on sqrt-weighted rows): ``(D+1, S)``
    coefficients, the intercept last."""
    A, sw = _affine_design(X, w)
    return np.linalg.lstsq(A, Y * sw, rcond=None)[0]


# ---------------------------------------------------------------------------------------------
# torch (any device)
# ---------------------------------------------------------------------------------------------


def beliefs_torch(T, init, tokens):
    """The torch time loop: a token-gathered batched ``(1, S) @ (S, S)`` per step."""
    import torch

    B, L = tokens.shape
    S = T.shape[1]
    tok = tokens.long()
    out = torch.empty((B, L, S), dtype=torch.float32, device=tokens.device)
    eta = init[None, :].expand(B, S).contiguous()
    for t in range(L):
        nxt = torch.bmm(eta[:, None, :], T[tok[:, t]])[:, 0]
        eta = nxt / nxt.sum(dim=1, keepdim=True)
        out[:, t] = eta
    return out


def log_prob_torch(T, init, tokens):
    import torch

    B, L = tokens.shape
    S = T.shape[1]
    tok = tokens.long()
    eta = init[None, :].expand(B, S).contiguous()
    lp = torch.zeros(B, dtype=T.dtype, device=tokens.device)
    for t in range(L):
        nxt = torch.bmm(eta[:, None, :], T[tok[:, t]])[:, 0]
        z = nxt.sum(dim=1)
        lp += torch.log(z)
        eta = nxt / z[:, None]
    return lp


def sample_tables_torch(T, init, device="cpu"):
    """``(P (S, V*S), init)`` tensors for :func:`sample_torch`: ``P[i, x*S + j] = T[x, i, j]``."""
    import torch

    V, S = T.shape[0], T.shape[1]
    P = torch.tensor(np.ascontiguousarray(T.transpose(1, 0, 2).reshape(S, V * S)), device=device)
    return P, torch.tensor(np.asarray(init), device=device)


def sample_torch(P, init, B, L, S, gen):
    """The torch sampler: per step one multinomial draw over (token, next state) pairs."""
    import torch

    states = torch.multinomial(init, B, replacement=True, generator=gen)
    tokens = torch.empty((B, L), dtype=torch.uint8, device=P.device)
    for t in range(L):
        o = torch.multinomial(P[states], 1, generator=gen)[:, 0]
        tokens[:, t] = o // S
        states = o % S
    return tokens


def msp_torch(T, init, depth):
    """:func:`msp_numpy` with torch tensors (any device); returns the number of nodes."""
    import torch

    beliefs, probs, n = init[None, :], torch.ones(1, dtype=T.dtype, device=T.device), 0
    for _ in range(depth):
        child = torch.einsum("ms,xst->mxt", beliefs, T)
        cond = child.sum(dim=2)
        keep = cond > 0
        probs = (probs[:, None] * cond)[keep]
        beliefs = child[keep] / cond[keep][:, None]
        n += probs.numel()
    return n


def probe_fit_torch(X, Y, w):
    """Weighted affine least squares with ``torch.linalg.lstsq`` (float64 tensors)."""
    import torch

    sw = w.sqrt()[:, None]
    A = torch.cat([X, torch.ones((X.shape[0], 1), dtype=X.dtype, device=X.device)], 1) * sw
    # gelsd is the CPU driver that, like numpy, handles rank-deficient designs; CUDA has gels only
    driver = "gelsd" if X.device.type == "cpu" else None
    return torch.linalg.lstsq(A, Y * sw, driver=driver).solution


# ---------------------------------------------------------------------------------------------
# JAX: jit + lax.scan (float32, JAX's default)
# ---------------------------------------------------------------------------------------------


def jax_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is not None


def beliefs_jax():
    """A jitted ``f(T, init, tokens) -> (B, L, S)``: ``lax.scan`` over positions."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(T, init, tokens):
        def step(eta, tok):
            nxt = jnp.einsum("bi,bij->bj", eta, T[tok])
            nxt = nxt / nxt.sum(1, keepdims=True)
            return nxt, nxt

        eta0 = jnp.broadcast_to(init, (tokens.shape[0], init.shape[0]))
        _, out = jax.lax.scan(step, eta0, tokens.T)
        return jnp.swapaxes(out, 0, 1)

    return run


def log_prob_jax():
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(T, init, tokens):
        def step(carry, tok):
            eta, lp = carry
            nxt = jnp.einsum("bi,bij->bj", eta, T[tok])
            z = nxt.sum(1)
            return (nxt / z[:, None], lp + jnp.log(z)), None

        B = tokens.shape[0]
        eta0 = jnp.broadcast_to(init, (B, init.shape[0]))
        (_, lp), _ = jax.lax.scan(step, (eta0, jnp.zeros(B, eta0.dtype)), tokens.T)
        return lp

    return run


def sample_jax():
    """A jitted ``f(key, cdf (S, V*S), init_cdf (S,), B, L) -> (B, L) uint8``."""
    from functools import partial

    import jax
    import jax.numpy as jnp

    @partial(jax.jit, static_argnums=(3, 4))
    def run(key, cdf, init_cdf, B, L):
        S = init_cdf.shape[0]
        k0, key = jax.random.split(key)
        state = jnp.minimum((jax.random.uniform(k0, (B,))[:, None] > init_cdf).sum(1), S - 1)

        def step(state, k):
            o = (jax.random.uniform(k, (B,))[:, None] > cdf[state]).sum(1)
            o = jnp.minimum(o, cdf.shape[1] - 1)
            return o % S, (o // S).astype(jnp.uint8)

        _, tok = jax.lax.scan(step, state, jax.random.split(key, L))
        return tok.T

    return run


def msp_jax():
    """``f(T, init, depth) -> number of nodes``: one jitted level expansion, compiled once per
    level shape (no pruning: use on processes where every sequence is possible)."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def expand(beliefs, probs, T):
        child = jnp.einsum("ms,xst->mxt", beliefs, T)
        cond = child.sum(2)
        return (child / cond[..., None]).reshape(-1, T.shape[1]), (probs[:, None] * cond).reshape(-1)

    def run(T, init, depth):
        beliefs, probs, n = init[None, :], jnp.ones(1, init.dtype), 0
        for _ in range(depth):
            beliefs, probs = expand(beliefs, probs, T)
            n += probs.shape[0]
        probs.block_until_ready()
        return n

    return run


def probe_fit_jax():
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(X, Y, w):
        sw = jnp.sqrt(w)[:, None]
        A = jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], 1) * sw
        return jnp.linalg.lstsq(A, Y * sw)[0]

    return run
