"""Small sequence models for belief-state experiments, in plain torch (nanoGPT style).

    from compmech.model import ModelConfig, build_model
    cfg = ModelConfig(vocab_size=3, ctx=10)            # the original work's transformer
    model = build_model(cfg)
    logits = model(tokens)                             # tokens (B, L) int → logits (B, L, V_out)
    logits, cache = model(tokens, return_cache=True)   # cache: name → (B, L, d_model)

Residual-stream names follow TransformerLens, so probes written for ``HookedTransformer``
work unchanged: ``hook_embed``, ``hook_pos_embed``, ``blocks.{i}.hook_resid_pre``,
``blocks.{i}.hook_resid_mid``, ``blocks.{i}.hook_resid_post``, ``ln_final.hook_normalized``.
Position ``t`` of every cached activation has seen ``tokens[:, :t+1]`` (causal), so with no BOS
token it corresponds to ``cm.beliefs(...)[:, t]``, the belief *after* ``tokens[:, :t+1]``.

Hook points are identity :class:`HookPoint` modules named by ``named_modules()`` (as in
TransformerLens), so ``model.hook_dict[name].register_forward_hook(...)`` reads or edits an
activation, and every way of running the model — ``forward``, the cache, and
:meth:`Transformer.forward_tree` (each distinct prefix of a prefix tree once, with a key/value
cache; used by the probe and the exact evaluation) — goes through the same modules.

Two architectures share this interface: :class:`Transformer` (causal self-attention, learned
positions, pre-LayerNorm) and :class:`RecurrentModel` (stacked GRU/LSTM; its per-layer outputs
are cached as ``blocks.{i}.hook_resid_post``).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import integer

__all__ = ["ModelConfig", "Transformer", "RecurrentModel", "HookPoint", "build_model", "hook_names"]

_ACTS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


@dataclass
class ModelConfig:
    """Architecture hyper-parameters. Defaults: the original belief-geometry transformer
    (4 layers, d_model 64, one head of d_head 8, d_mlp 256, ReLU, LayerNorm, context 10).

    Attributes:
        vocab_size: number of input token ids (the process's ``V``, plus one for a BOS token).
        ctx: maximum sequence length the model accepts.
        arch: ``"transformer"``, ``"gru"`` or ``"lstm"``.
        out_vocab_size: number of output logits; default ``vocab_size`` (set it to ``V`` when
            the inputs include a BOS id that is never predicted).
        n_layers, d_model, n_heads, d_head, d_mlp, act: transformer sizes; ``act`` one of
            relu / gelu / silu / tanh. Recurrent models use ``n_layers`` and ``d_model`` only.
        layernorm: pre-LN blocks and a final LayerNorm (transformer); final LayerNorm (RNN).
    """

    vocab_size: int = 3
    ctx: int = 10
    arch: str = "transformer"
    out_vocab_size: int | None = None
    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 1
    d_head: int = 8
    d_mlp: int = 256
    act: str = "relu"
    layernorm: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "ctx", "n_layers", "d_model", "n_heads", "d_head", "d_mlp"):
            setattr(self, name, integer(getattr(self, name), f"ModelConfig.{name}", minimum=1))
        if self.out_vocab_size is None:
            self.out_vocab_size = self.vocab_size
        self.out_vocab_size = integer(self.out_vocab_size, "ModelConfig.out_vocab_size", minimum=1)
        if self.arch not in ("transformer", "gru", "lstm"):
            raise ValueError(f"ModelConfig.arch must be 'transformer', 'gru' or 'lstm', got {self.arch!r}")
        if self.act not in _ACTS:
            raise ValueError(f"ModelConfig.act must be one of {sorted(_ACTS)}, got {self.act!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)


def hook_names(cfg: ModelConfig) -> list[str]:
    """Every activation name a model built from ``cfg`` can cache, in forward order: the paths
    of its :class:`HookPoint` modules (listed here without building the model; a test checks
    the two agree for every architecture)."""
    names = ["hook_embed"]
    if cfg.arch == "transformer":
        names.append("hook_pos_embed")
        for i in range(cfg.n_layers):
            names += [f"blocks.{i}.hook_resid_pre", f"blocks.{i}.hook_resid_mid", f"blocks.{i}.hook_resid_post"]
    else:
        names += [f"blocks.{i}.hook_resid_post" for i in range(cfg.n_layers)]
    if cfg.layernorm:
        names.append("ln_final.hook_normalized")
    return names


class HookPoint(nn.Module):
    """Identity module marking an activation (as TransformerLens's ``HookPoint``): its name is
    its path in ``named_modules()``, so ``register_forward_hook`` works on it like on any module
    (to read or to change the activation), and ``model(tokens, return_cache=True)`` /
    :meth:`Transformer.forward_tree` read activations through such hooks, after any the user
    registered. No parameters: checkpoints are unaffected."""

    def __init__(self):
        super().__init__()
        self.name = ""

    def forward(self, x):
        return x


class _HookedModel(nn.Module):
    """Names every :class:`HookPoint` after its module path and routes them to a sink."""

    def _name_hooks(self):
        self._hook_points = {}
        for name, m in self.named_modules():
            if isinstance(m, HookPoint):
                m.name = name
                self._hook_points[name] = m

    @property
    def hook_dict(self) -> dict:
        """``name -> HookPoint`` in forward order (the names of :func:`hook_names`)."""
        return dict(self._hook_points)

    @contextmanager
    def _hooks_to(self, sink, names=None):
        """Forward hooks sending ``(name, activation)`` of the hook points ``names`` (default
        all) to ``sink`` for the duration of the block."""
        handles = [p.register_forward_hook(lambda _m, _i, out, n=n: sink(n, out))
                   for n, p in self._hook_points.items() if names is None or n in names]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _run(self, fn, return_cache, names):
        if not return_cache:
            return fn()
        store: dict[str, torch.Tensor] = {}
        with self._hooks_to(store.__setitem__, None if names is None else set(names)):
            out = fn()
        return out, store


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose output passes through ``hook_normalized`` (TransformerLens name)."""

    def __init__(self, d):
        super().__init__(d)
        self.hook_normalized = HookPoint()

    def forward(self, x):
        return self.hook_normalized(super().forward(x))


def _check_tokens(tokens: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch tensor of shape (B, L), got {type(tokens).__name__}")
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape (B, L), got {tuple(tokens.shape)}")
    if tokens.shape[1] > cfg.ctx:
        raise ValueError(f"sequence length {tokens.shape[1]} exceeds the model context {cfg.ctx}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be integers, got {tokens.dtype}")
    return tokens.long() if tokens.dtype != torch.long else tokens


class TreeKV:
    """Key/value cache of one attention layer for a prefix-tree walk: row ``r`` of a
    :class:`~compmech.data.PrefixSet`-like tree stores its own key and value once; a level of
    rows attends to the cached entries of its ancestors ``anc (M, p + 1)`` (the row itself last)."""

    __slots__ = ("K", "V", "rows", "anc")

    def __init__(self, R, n_heads, d_head, device, dtype=torch.float32):
        self.K = torch.zeros(R, n_heads, d_head, device=device, dtype=dtype)
        self.V = torch.zeros(R, n_heads, d_head, device=device, dtype=dtype)
        self.rows = self.anc = None


class Attention(nn.Module):
    """Multi-head causal self-attention (fused QKV projection). ``forward(x (B, L, d))`` attends
    causally within each sequence; ``forward(x (M, d), kv=TreeKV)`` is one level of a prefix-tree
    walk (each row attends to its cached ancestors)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.n_heads * cfg.d_head)
        self.out = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model)
        self.register_buffer("mask", torch.triu(torch.ones(cfg.ctx, cfg.ctx, dtype=torch.bool), 1),
                             persistent=False)

    def forward(self, x, kv: TreeKV | None = None):
        H, dh = self.n_heads, self.d_head
        scale = 1.0 / math.sqrt(dh)
        if kv is not None:
            q, k, v = self.qkv(x).view(-1, 3, H, dh).unbind(1)
            kv.K[kv.rows], kv.V[kv.rows] = k, v
            Ka, Va = kv.K[kv.anc], kv.V[kv.anc]  # (M, p+1, H, dh)
            att = torch.einsum("mhd,mjhd->mhj", q, Ka) * scale
            y = torch.einsum("mhj,mjhd->mhd", att.softmax(-1), Va).reshape(-1, H * dh)
            return self.out(y)
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, H, dh).permute(2, 0, 3, 1, 4)
        # Explicit softmax attention: at L <= a few dozen and d_head 8 this is faster on CPU than
        # the fused kernels, and identical on GPU up to rounding.
        att = (q @ k.transpose(-1, -2)) * scale
        att = att.masked_fill(self.mask[:L, :L], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, L, H * dh)
        return self.out(y)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.act = _ACTS[cfg.act]
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x, kv: TreeKV | None = None):
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.attn(self.ln1(x), kv))
        return self.hook_resid_post(x + self.fc_out(self.act(self.fc_in(self.ln2(x)))))


class Transformer(_HookedModel):
    """GPT-style decoder: token + learned position embeddings, ``n_layers`` pre-LN blocks
    (causal attention, MLP), final LayerNorm, unembedding.

    ``forward(tokens (B, L), return_cache=False, names=None)`` → logits ``(B, L, out_vocab)``,
    or ``(logits, cache)`` with ``cache[name]`` of shape ``(B, L, d_model)`` for the requested
    ``names`` (default: all of :func:`hook_names`). :meth:`forward_tree` runs the same layers
    over a prefix tree, computing each distinct prefix once."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch != "transformer":
            raise ValueError(f"Transformer needs arch='transformer', got {cfg.arch!r}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Parameter(torch.empty(cfg.ctx, cfg.d_model))
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.out_vocab_size)
        self._name_hooks()
        self.reset_parameters()

    def reset_parameters(self):
        std = 0.02
        for name, p in self.named_parameters():
            if p.ndim == 1:
                nn.init.zeros_(p) if not name.endswith("weight") else nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=std)
        # GPT-2: scale residual-writing projections by 1/sqrt(2 * n_layers).
        for blk in self.blocks:
            nn.init.normal_(blk.attn.out.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
            nn.init.normal_(blk.fc_out.weight, std=std / math.sqrt(2 * self.cfg.n_layers))

    def _layers(self, tok, pos, kvs=None):
        """Embedding, blocks, final LayerNorm and unembedding: the one forward pass, for whole
        sequences (``pos`` a slice of positions) or one tree level (``kvs`` given)."""
        e = self.hook_embed(self.embed(tok))
        x = e + self.hook_pos_embed(self.pos_embed[pos].expand_as(e))
        for i, blk in enumerate(self.blocks):
            x = blk(x, None if kvs is None else kvs[i])
        return self.unembed(self.ln_final(x))

    def forward(self, tokens, return_cache: bool = False, names=None):
        tokens = _check_tokens(tokens, self.cfg)
        return self._run(lambda: self._layers(tokens, slice(0, tokens.shape[1])), return_cache, names)

    def forward_tree(self, token, parent, position, names=None, *, return_logits: bool = True):
        """Run the model over a prefix tree, each distinct prefix once, with a key/value cache.

        Row ``r`` is the prefix ending in ``token[r]`` at ``position[r]``; ``parent[r]`` is the
        row of its prefix one shorter (any value, e.g. -1, at position 0). Rows are processed
        level by level (position); each attends to the cached keys/values of its ancestors, so
        the result equals running every full sequence through :meth:`forward` and reading each
        prefix's last position (the model is causal), with one row per distinct prefix.

        Args:
            token, parent, position: ``(R,)`` integer arrays (numpy or torch).
            names: hook names to collect (default none); hooks registered on the
                :class:`HookPoint` modules see the ``(M, d_model)`` rows of each level.
            return_logits: also return the ``(R, out_vocab)`` logits.

        Returns ``(logits or None, {name: (R, d_model) float32 tensor})`` on the model's device.
        Runs under ``torch.inference_mode``; the caller sets ``eval()``."""
        import numpy as np

        cfg = self.cfg
        device = next(self.parameters()).device
        token, parent, position = (np.asarray(a.cpu() if hasattr(a, "cpu") else a, dtype=np.int64)
                                   for a in (token, parent, position))
        R = token.shape[0]
        if not (parent.shape == position.shape == (R,)):
            raise ValueError(f"token, parent and position must be (R,) arrays of one length, got "
                             f"{token.shape}, {parent.shape}, {position.shape}")
        if R == 0:
            raise ValueError("forward_tree needs at least one row")
        if position.min() < 0 or position.max() >= cfg.ctx:
            raise ValueError(f"positions must be in [0, {cfg.ctx}) (the model context), got "
                             f"[{position.min()}, {position.max()}]")
        if token.min() < 0 or token.max() >= cfg.vocab_size:
            raise ValueError(f"tokens must be in [0, {cfg.vocab_size}), got [{token.min()}, {token.max()}]")
        names = list(names or [])
        unknown = [n for n in names if n not in self._hook_points]
        if unknown:
            raise ValueError(f"unknown activation names {unknown}; available: {list(self._hook_points)}")
        # anc[r, j]: row of the ancestor at position j (the row itself at its own position).
        P = int(position.max()) + 1
        anc = np.zeros((R, P), np.int64)
        order = np.argsort(position, kind="stable")
        levels = []
        for p in range(P):
            rows = order[position[order] == p]
            if p > 0:
                if rows.size and (position[parent[rows]] != p - 1).any():
                    raise ValueError("parent[r] must be a row at position position[r] - 1")
                anc[rows, :p] = anc[parent[rows], :p]
            anc[rows, p] = rows
            levels.append(rows)
        rows_t = None
        out: dict[str, torch.Tensor] = {}

        def sink(name, x):
            out[name][rows_t] = x.float()

        with torch.inference_mode(), self._hooks_to(sink, set(names)):
            out.update({n: torch.empty(R, cfg.d_model, device=device) for n in names})
            logits = torch.empty(R, cfg.out_vocab_size, device=device) if return_logits else None
            dtype = next(self.parameters()).dtype  # the cache holds keys/values in the model's own precision
            kvs = [TreeKV(R, cfg.n_heads, cfg.d_head, device, dtype) for _ in self.blocks]
            for p, rows_np in enumerate(levels):
                if rows_np.size == 0:
                    continue
                rows_t = torch.from_numpy(rows_np).to(device)
                A = torch.from_numpy(anc[rows_np, :p + 1]).to(device)  # (M, p+1)
                for kv in kvs:
                    kv.rows, kv.anc = rows_t, A
                lg = self._layers(torch.from_numpy(token[rows_np]).to(device), p, kvs)
                if return_logits:
                    logits[rows_t] = lg.float()
        return logits, out


class _RecurrentHooks(nn.Module):
    """Hook point of one recurrent layer, named ``blocks.{i}.hook_resid_post``."""

    def __init__(self):
        super().__init__()
        self.hook_resid_post = HookPoint()


class RecurrentModel(_HookedModel):
    """Stacked GRU/LSTM baseline with the transformer's interface: embedding, ``n_layers``
    recurrent layers of width ``d_model`` (layer ``i``'s output cached as
    ``blocks.{i}.hook_resid_post``), optional final LayerNorm, unembedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch not in ("gru", "lstm"):
            raise ValueError(f"RecurrentModel needs arch 'gru' or 'lstm', got {cfg.arch!r}")
        self.cfg = cfg
        cell = nn.GRU if cfg.arch == "gru" else nn.LSTM
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.hook_embed = HookPoint()
        self.layers = nn.ModuleList(cell(cfg.d_model, cfg.d_model, batch_first=True) for _ in range(cfg.n_layers))
        self.blocks = nn.ModuleList(_RecurrentHooks() for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.out_vocab_size)
        self._name_hooks()

    def _layers(self, tokens):
        x = self.hook_embed(self.embed(tokens))
        for layer, blk in zip(self.layers, self.blocks):
            x = blk.hook_resid_post(layer(x)[0])
        return self.unembed(self.ln_final(x))

    def forward(self, tokens, return_cache: bool = False, names=None):
        tokens = _check_tokens(tokens, self.cfg)
        return self._run(lambda: self._layers(tokens), return_cache, names)


def build_model(cfg: ModelConfig | dict) -> nn.Module:
    """A :class:`Transformer` or :class:`RecurrentModel` for ``cfg`` (a config or its dict)."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return Transformer(cfg) if cfg.arch == "transformer" else RecurrentModel(cfg)
