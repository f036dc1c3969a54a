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

Two architectures share this interface: :class:`Transformer` (causal self-attention, learned
positions, pre-LayerNorm) and :class:`RecurrentModel` (stacked GRU/LSTM; its per-layer outputs
are cached as ``blocks.{i}.hook_resid_post``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModelConfig", "Transformer", "RecurrentModel", "build_model", "hook_names"]

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
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {v!r}")
        if self.out_vocab_size is None:
            self.out_vocab_size = self.vocab_size
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
    """Every activation name a model built from ``cfg`` can cache, in forward order."""
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


class _Cache:
    """Collects requested activations; ``names=None`` means all."""

    __slots__ = ("names", "store")

    def __init__(self, names):
        self.names = None if names is None else set(names)
        self.store: dict[str, torch.Tensor] = {}

    def __call__(self, name, x):
        if self.names is None or name in self.names:
            self.store[name] = x
        return x


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


class Attention(nn.Module):
    """Multi-head causal self-attention (fused QKV projection)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.n_heads * cfg.d_head)
        self.out = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model)
        self.register_buffer("mask", torch.triu(torch.ones(cfg.ctx, cfg.ctx, dtype=torch.bool), 1),
                             persistent=False)

    def forward(self, x):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        # Explicit softmax attention: at L <= a few dozen and d_head 8 this is faster on CPU than
        # the fused kernels, and identical on GPU up to rounding.
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d_head))
        att = att.masked_fill(self.mask[:L, :L], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, L, self.n_heads * self.d_head)
        return self.out(y)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.prefix = f"blocks.{index}."
        self.ln1 = nn.LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.act = _ACTS[cfg.act]

    def forward(self, x, hook=None):
        if hook is not None:
            hook(self.prefix + "hook_resid_pre", x)
        x = x + self.attn(self.ln1(x))
        if hook is not None:
            hook(self.prefix + "hook_resid_mid", x)
        x = x + self.fc_out(self.act(self.fc_in(self.ln2(x))))
        if hook is not None:
            hook(self.prefix + "hook_resid_post", x)
        return x


class Transformer(nn.Module):
    """GPT-style decoder: token + learned position embeddings, ``n_layers`` pre-LN blocks
    (causal attention, MLP), final LayerNorm, unembedding.

    ``forward(tokens (B, L), return_cache=False, names=None)`` → logits ``(B, L, out_vocab)``,
    or ``(logits, cache)`` with ``cache[name]`` of shape ``(B, L, d_model)`` for the requested
    ``names`` (default: all of :func:`hook_names`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch != "transformer":
            raise ValueError(f"Transformer needs arch='transformer', got {cfg.arch!r}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Parameter(torch.empty(cfg.ctx, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.out_vocab_size)
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

    def forward(self, tokens, return_cache: bool = False, names=None):
        tokens = _check_tokens(tokens, self.cfg)
        hook = _Cache(names) if return_cache else None
        L = tokens.shape[1]
        e, p = self.embed(tokens), self.pos_embed[:L]
        x = e + p
        if hook is not None:
            hook("hook_embed", e)
            hook("hook_pos_embed", p.expand_as(e))
        for blk in self.blocks:
            x = blk(x, hook)
        x = self.ln_final(x)
        if hook is not None and self.cfg.layernorm:
            hook("ln_final.hook_normalized", x)
        logits = self.unembed(x)
        return (logits, hook.store) if return_cache else logits


class RecurrentModel(nn.Module):
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
        self.layers = nn.ModuleList(cell(cfg.d_model, cfg.d_model, batch_first=True) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.out_vocab_size)

    def forward(self, tokens, return_cache: bool = False, names=None):
        tokens = _check_tokens(tokens, self.cfg)
        hook = _Cache(names) if return_cache else None
        x = self.embed(tokens)
        if hook is not None:
            hook("hook_embed", x)
        for i, layer in enumerate(self.layers):
            x, _ = layer(x)
            if hook is not None:
                hook(f"blocks.{i}.hook_resid_post", x)
        x = self.ln_final(x)
        if hook is not None and self.cfg.layernorm:
            hook("ln_final.hook_normalized", x)
        logits = self.unembed(x)
        return (logits, hook.store) if return_cache else logits


def build_model(cfg: ModelConfig | dict) -> nn.Module:
    """A :class:`Transformer` or :class:`RecurrentModel` for ``cfg`` (a config or its dict)."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return Transformer(cfg) if cfg.arch == "transformer" else RecurrentModel(cfg)
