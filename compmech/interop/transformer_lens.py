"""Weight conversion between compmech's :class:`~compmech.model.Transformer` and
TransformerLens's ``HookedTransformer`` (TransformerLens < 4; 4.0 removed ``HookedTransformer``).

    from compmech.interop.transformer_lens import to_hooked_transformer, from_hooked_transformer
    tl_model = to_hooked_transformer(model)        # same logits, same activations under the same names
    model2 = from_hooked_transformer(tl_model)     # and back

The two architectures are the same computation: learned token and position embeddings,
pre-LayerNorm blocks (causal attention with ``1/sqrt(d_head)`` scaling, then an MLP), a final
LayerNorm and an unembedding. compmech fuses Q, K and V into one ``Linear`` (rows ordered
``[q|k|v][head][d_head]``) and stores ``nn.Linear`` weights as ``(out, in)``; TransformerLens
keeps per-head ``W_Q (H, d_model, d_head)``, ``W_O (H, d_head, d_model)`` and ``(in, out)``
matrices. The residual-stream hook names are the same in both (``blocks.{i}.hook_resid_pre``
etc.), so a probe written for one runs unchanged on the other. One name differs in content:
TransformerLens's ``ln_final.hook_normalized`` is taken before the LayerNorm's affine map
(``w``, ``b``), compmech's after it; affine probes fit both equally well.
"""
from __future__ import annotations

import torch

__all__ = ["hooked_config", "to_hooked_transformer", "from_hooked_transformer", "state_dict_to_tl",
           "state_dict_from_tl", "model_config_from_tl"]

_ACT_TO_TL = {"relu": "relu", "gelu": "gelu", "silu": "silu"}


def _check_cfg(cfg):
    if getattr(cfg, "arch", "transformer") != "transformer":
        raise ValueError(f"only transformers convert to TransformerLens; this model is arch={cfg.arch!r}")
    if cfg.act not in _ACT_TO_TL:
        raise ValueError(f"activation {cfg.act!r} has no TransformerLens equivalent (use one of {sorted(_ACT_TO_TL)})")


def hooked_config(cfg, *, dtype=torch.float32, device="cpu"):
    """The ``HookedTransformerConfig`` of a compmech :class:`~compmech.model.ModelConfig`."""
    from transformer_lens import HookedTransformerConfig

    _check_cfg(cfg)
    return HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_ctx=cfg.ctx, d_head=cfg.d_head, n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp, d_vocab=cfg.vocab_size, d_vocab_out=cfg.out_vocab_size, act_fn=_ACT_TO_TL[cfg.act],
        normalization_type="LN" if cfg.layernorm else None, positional_embedding_type="standard",
        eps=1e-5, dtype=dtype, device=str(device), default_prepend_bos=False)


def model_config_from_tl(tl_cfg):
    """The compmech ``ModelConfig`` of a ``HookedTransformerConfig`` (refuses what compmech's
    transformer cannot express)."""
    from ..model import ModelConfig

    act = {v: k for k, v in _ACT_TO_TL.items()}.get(tl_cfg.act_fn)
    problems = []
    if act is None:
        problems.append(f"act_fn={tl_cfg.act_fn!r}")
    if tl_cfg.normalization_type not in ("LN", None):
        problems.append(f"normalization_type={tl_cfg.normalization_type!r}")
    if tl_cfg.positional_embedding_type != "standard":
        problems.append(f"positional_embedding_type={tl_cfg.positional_embedding_type!r}")
    if getattr(tl_cfg, "attn_only", False):
        problems.append("attn_only=True")
    if getattr(tl_cfg, "gated_mlp", False):
        problems.append("gated_mlp=True")
    if getattr(tl_cfg, "parallel_attn_mlp", False):
        problems.append("parallel_attn_mlp=True")
    if not getattr(tl_cfg, "use_attn_scale", True) or abs(tl_cfg.attn_scale - tl_cfg.d_head ** 0.5) > 1e-12:
        problems.append("attention scale other than sqrt(d_head)")
    if getattr(tl_cfg, "n_key_value_heads", None) not in (None, tl_cfg.n_heads):
        problems.append("grouped-query attention")
    if abs(getattr(tl_cfg, "eps", 1e-5) - 1e-5) > 0:
        problems.append(f"eps={tl_cfg.eps}")
    if problems:
        raise ValueError("HookedTransformer has no compmech equivalent: " + ", ".join(problems))
    return ModelConfig(vocab_size=tl_cfg.d_vocab, ctx=tl_cfg.n_ctx, out_vocab_size=tl_cfg.d_vocab_out,
                       n_layers=tl_cfg.n_layers, d_model=tl_cfg.d_model, n_heads=tl_cfg.n_heads,
                       d_head=tl_cfg.d_head, d_mlp=tl_cfg.d_mlp, act=act,
                       layernorm=tl_cfg.normalization_type == "LN")


def _one_to_one(cfg) -> list:
    """``(compmech name, TransformerLens name, transposed)`` of every parameter that maps
    one to one (``nn.Linear`` stores ``(out, in)``, TransformerLens ``(in, out)``)."""
    pairs = [("embed.weight", "embed.W_E", False), ("pos_embed", "pos_embed.W_pos", False),
             ("unembed.weight", "unembed.W_U", True), ("unembed.bias", "unembed.b_U", False)]
    norms = [("ln_final.", "ln_final.")] if cfg.layernorm else []
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        pairs += [(p + "attn.out.bias", p + "attn.b_O", False),
                  (p + "fc_in.weight", p + "mlp.W_in", True), (p + "fc_in.bias", p + "mlp.b_in", False),
                  (p + "fc_out.weight", p + "mlp.W_out", True), (p + "fc_out.bias", p + "mlp.b_out", False)]
        if cfg.layernorm:
            norms += [(p + "ln1.", p + "ln1."), (p + "ln2.", p + "ln2.")]
    for c, t in norms:
        pairs += [(c + "weight", t + "w", False), (c + "bias", t + "b", False)]
    return pairs


def _clean(d: dict) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in d.items()}


def state_dict_to_tl(sd: dict, cfg) -> dict:
    """compmech ``Transformer.state_dict()`` → ``HookedTransformer`` parameter dict."""
    H, dh, D = cfg.n_heads, cfg.d_head, cfg.d_model
    out = {t: sd[c].T if tr else sd[c] for c, t, tr in _one_to_one(cfg)}
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        W = sd[p + "attn.qkv.weight"].view(3, H, dh, D)  # rows ordered [q|k|v][head][d_head]
        b = sd[p + "attn.qkv.bias"].view(3, H, dh)
        for j, n in enumerate("QKV"):
            out[p + f"attn.W_{n}"] = W[j].transpose(1, 2)  # (H, D, dh)
            out[p + f"attn.b_{n}"] = b[j]
        out[p + "attn.W_O"] = sd[p + "attn.out.weight"].T.reshape(H, dh, D)
    return _clean(out)


def state_dict_from_tl(sd: dict, cfg) -> dict:
    """``HookedTransformer`` parameters → compmech ``Transformer.state_dict()`` (inverse of
    :func:`state_dict_to_tl`)."""
    H, dh, D = cfg.n_heads, cfg.d_head, cfg.d_model
    out = {c: sd[t].T if tr else sd[t] for c, t, tr in _one_to_one(cfg)}
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        out[p + "attn.qkv.weight"] = torch.stack([sd[p + f"attn.W_{n}"].transpose(1, 2) for n in "QKV"]).reshape(
            3 * H * dh, D)
        out[p + "attn.qkv.bias"] = torch.stack([sd[p + f"attn.b_{n}"] for n in "QKV"]).reshape(3 * H * dh)
        out[p + "attn.out.weight"] = sd[p + "attn.W_O"].reshape(H * dh, D).T
    return _clean(out)


def _load(model, sd):
    """Load ``sd`` into every parameter of ``model`` (buffers such as attention masks are
    left as built); a missing or unexpected parameter is an error."""
    params = dict(model.named_parameters())
    missing, extra = sorted(set(params) - set(sd)), sorted(set(sd) - set(params))
    if missing or extra:
        raise ValueError(f"weight conversion mismatch: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for k, p in params.items():
            if tuple(sd[k].shape) != tuple(p.shape):
                raise ValueError(f"weight {k}: shape {tuple(sd[k].shape)} != {tuple(p.shape)}")
            p.copy_(sd[k].to(p.dtype))
    return model


def to_hooked_transformer(model, *, dtype=None, device=None):
    """A ``HookedTransformer`` computing exactly what the compmech transformer ``model``
    computes (same weights; dtype and device default to the model's)."""
    from transformer_lens import HookedTransformer

    p0 = next(model.parameters())
    dtype = dtype or p0.dtype
    device = device or p0.device
    tl = HookedTransformer(hooked_config(model.cfg, dtype=dtype, device=device), move_to_device=False)
    return _load(tl, state_dict_to_tl(model.state_dict(), model.cfg)).to(device)


def from_hooked_transformer(tl_model):
    """A compmech :class:`~compmech.model.Transformer` with ``tl_model``'s weights (same dtype
    and device)."""
    from ..model import build_model

    cfg = model_config_from_tl(tl_model.cfg)
    p0 = next(tl_model.parameters())
    model = build_model(cfg).to(device=p0.device, dtype=p0.dtype)
    return _load(model, state_dict_from_tl(tl_model.state_dict(), cfg))
