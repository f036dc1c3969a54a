"""Next-token training of a model on a process, with exact per-position evaluation.

    from compmech.train import TrainConfig, train
    result = train(TrainConfig(tokens=2_000_000), "runs/mess3")
    result.model, result.history, result.final["loss_ratio"]

The run directory gets ``config.json``, ``metrics.jsonl`` (one JSON object per log/eval point:
step, tokens, loss, lr, tokens_per_s, elapsed; eval rows add per-position loss and its ratio to
the optimum), ``checkpoint.pt`` (model + optimiser + step, written atomically, for resuming)
and ``checkpoints/step_XXXXXXX.pt`` (model snapshots at log-spaced steps, for emergence plots).
Training length is a token budget (``tokens`` = steps x batch x ctx predicted tokens), never the
clock, so a run is reproducible; a resumed run reproduces the uninterrupted run's losses.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import PrefixSet, make_source, n_tokens_for, to_model_io
from .model import ModelConfig, build_model
from .processes import get as get_process
from .beliefs import beliefs as _beliefs
from .sampling import sample

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "load_checkpoint", "load_model",
           "save_checkpoint", "lr_at", "snapshot_steps", "default_threads", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "compmech-checkpoint-v1"


@dataclass
class TrainConfig:
    """Everything that defines a training run (serialisable to JSON).

    Attributes:
        process, process_params: ``compmech.processes.get(process, **process_params)``.
        model: :class:`compmech.model.ModelConfig` fields (``vocab_size``, ``ctx`` and
            ``out_vocab_size`` are filled in from the process and ``ctx``).
        ctx: model context (positions per training sequence).
        bos: prepend a BOS token (id ``V``) to every input.
        data: ``"exact"`` (all length-``ctx+1`` sequences, drawn by probability) or
            ``"stream"`` (fresh samples every step).
        targets: ``"tokens"`` (default: cross-entropy against the sampled next token, as in the
            original work) or ``"distribution"`` (cross-entropy against the process's true
            next-token distribution given the input — the conditional expectation of the token
            loss: same optimum and expected gradient, lower variance; the model still sees only
            tokens, never beliefs).
        tokens: training budget in predicted tokens; steps = ceil(tokens / (batch_size * ctx)).
        batch_size: sequences per step.
        optimizer: ``"adamw"`` or ``"sgd"``; ``lr``, ``weight_decay``, ``betas`` (AdamW),
            ``momentum`` (SGD).
        schedule: ``"cosine"`` (warmup then cosine to ``min_lr_ratio * lr``), ``"linear"``
            (warmup then linear decay) or ``"constant"`` (warmup then flat).
        warmup: warmup length, a fraction of the steps if < 1, else a number of steps.
        grad_clip: max global gradient norm (0 disables).
        seed: seeds the initialisation and the data stream.
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        threads: torch CPU threads; ``None`` = the cores this process may use.
        log_every: steps between ``metrics.jsonl`` rows (train loss averaged over the interval).
        eval_every: steps between evaluations on ``eval_sequences`` sampled sequences (0: end only).
        snapshots: number of log-spaced model snapshots (0: none).
        save_every: steps between resumable checkpoints (0: only at the end).
        compile: wrap the training step in ``torch.compile`` (falls back to eager if it fails; on a
            small CPU model it compiles for about a minute and is not faster).
        ema: if > 0, keep an exponential moving average of the weights with this decay (warmed
            up as ``min(ema, (1 + t) / (10 + t))``); the averaged model is what is evaluated,
            snapshotted, probed and returned.
    """

    process: str = "mess3"
    process_params: dict = field(default_factory=lambda: {"x": 0.05, "alpha": 0.85})
    model: dict = field(default_factory=dict)
    ctx: int = 10
    bos: bool = False
    data: str = "exact"
    targets: str = "tokens"
    tokens: int = 20_000_000
    batch_size: int = 512
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.99)
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup: float = 0.02
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    log_every: int = 50
    eval_every: int = 0
    eval_sequences: int = 4096
    snapshots: int = 10
    save_every: int = 0
    compile: bool = False
    ema: float = 0.0

    def __post_init__(self):
        if self.data not in ("exact", "stream"):
            raise ValueError(f"TrainConfig.data must be 'exact' or 'stream', got {self.data!r}")
        if self.targets not in ("tokens", "distribution"):
            raise ValueError(f"TrainConfig.targets must be 'tokens' or 'distribution', got {self.targets!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"TrainConfig.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"TrainConfig.schedule must be cosine/linear/constant, got {self.schedule!r}")
        for name in ("tokens", "batch_size", "ctx", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        self.betas = tuple(self.betas)
        self.tokens = int(self.tokens)

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.tokens / (self.batch_size * self.ctx)))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.ctx

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)

    def make_process(self):
        return get_process(self.process, **(self.process_params or {}))

    def model_config(self, process=None) -> ModelConfig:
        proc = process or self.make_process()
        V = proc.vocab_size
        m = dict(self.model or {})
        for k in ("vocab_size", "out_vocab_size"):
            m.pop(k, None)
        m["ctx"] = self.ctx
        return ModelConfig(vocab_size=V + (1 if self.bos else 0), out_vocab_size=V, **m)


@dataclass
class TrainResult:
    model: torch.nn.Module
    config: TrainConfig
    history: list
    final: dict
    run_dir: Path | None


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for (0-based) ``step``."""
    total = cfg.steps
    warm = cfg.warmup * total if cfg.warmup < 1 else cfg.warmup
    warm = min(int(round(warm)), total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - warm) / max(1, total - warm)
    lo = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return lo + (cfg.lr - lo) * (1 - frac)
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * frac))


def snapshot_steps(total_steps: int, n: int) -> list[int]:
    """``n`` (or fewer, after rounding) log-spaced steps in ``[1, total_steps]``, the last one
    being ``total_steps``; a snapshot at step ``s`` holds the model after ``s`` updates."""
    if n <= 0:
        return []
    s = np.unique(np.round(np.geomspace(1, total_steps, n)).astype(int))
    return [int(v) for v in s]


def _atomic_save(obj, path: Path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _cpu_state(sd):
    return {k: v.detach().to("cpu") if isinstance(v, torch.Tensor) else v for k, v in sd.items()}


def save_checkpoint(path, model, cfg: TrainConfig, *, step: int, optimizer=None, extra: dict | None = None):
    """Write a checkpoint atomically (temporary file, fsync, rename). Loadable with
    ``torch.load(path, weights_only=True)``."""
    obj = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "tokens": int(step) * cfg.tokens_per_step,
        "train_config": cfg.to_dict(),
        "model_config": model.cfg.to_dict(),
        "model": _cpu_state(model.state_dict()),
    }
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    if extra:
        obj.update(extra)
    _atomic_save(obj, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code execution) and check its format."""
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    return obj


def load_model(path, device="cpu"):
    """``(model, TrainConfig, checkpoint dict)`` from a checkpoint or snapshot file."""
    ck = load_checkpoint(path, map_location=device)
    model = build_model(ModelConfig.from_dict(ck["model_config"])).to(device)
    model.load_state_dict(ck["ema"] if ck.get("ema") is not None else ck["model"])
    model.eval()
    return model, TrainConfig.from_dict(ck["train_config"]), ck


def _make_optimizer(cfg: TrainConfig, model, device):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    kw = {}
    if torch.device(device).type in ("cpu", "cuda"):
        kw["fused"] = True
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **kw)
    except (RuntimeError, TypeError):  # fused not available on this build/device
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


class _EvalSet:
    """Sampled sequences with their true next-token distributions: expected cross-entropy per
    position (``-sum_x q(x) log p_model(x)``, far less noisy than the sampled-token loss) and the
    optimum on the same rows (``H(q)``), so the ratio's sampling noise largely cancels."""

    def __init__(self, process, cfg: TrainConfig, n: int, seed: int):
        n_tok = n_tokens_for(cfg.ctx, cfg.bos)
        seq = sample(process, n, n_tok, seed=seed)
        x, _ = to_model_io(torch.from_numpy(seq), process.vocab_size if cfg.bos else None)
        n_in = cfg.ctx - 1 if cfg.bos else cfg.ctx
        b = _beliefs(process, seq[:, :n_in], dtype=np.float64)  # after each input prefix
        if cfg.bos:
            b0 = np.broadcast_to(process.stationary, (n, 1, process.num_states))
            b = np.concatenate([b0, b], 1)
        Tw = process.token_weights
        q = np.einsum("nls,vs->nlv", b, Tw)  # (n, ctx, V); einsum keeps BLAS threads out of the loop
        self.inputs = x
        self.q = q
        with np.errstate(divide="ignore", invalid="ignore"):
            self.optimal = -np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(-1).mean(0)

    def loss(self, model, device) -> np.ndarray:
        logits = _forward_all(model, self.inputs, device)
        lp = torch.log_softmax(logits.double(), -1).numpy()
        return -(np.where(self.q > 0, self.q * lp, 0.0)).sum(-1).mean(0)


@torch.inference_mode()
def _forward_all(model, inputs, device, chunk: int = 16384):
    was = model.training
    model.eval()
    out = []
    for i in range(0, inputs.shape[0], chunk):
        x = torch.as_tensor(inputs[i:i + chunk]).to(device)
        out.append(model(x).float().cpu())
    model.train(was)
    return torch.cat(out)


def evaluate(model, process, *, ctx: int, bos: bool = False, device="cpu", prefixes: PrefixSet | None = None) -> dict:
    """Exact per-position loss of ``model`` over every possible context (all ``V**ctx``
    inputs weighted by probability) against the optimum (myopic entropy from the MSP tree).

    Returns a dict: ``loss`` and ``optimal`` (``(ctx,)`` lists, nats), ``ratio`` (loss /
    optimal per position), ``excess_nats`` (loss - optimal), ``mean_loss``, ``mean_optimal``,
    ``worst_ratio``."""
    ps = prefixes or PrefixSet.build(process, ctx, bos=bos)
    if type(model).__module__ == "compmech.model" and model.cfg.arch == "transformer":
        from .probe import tree_forward  # each distinct prefix once

        _, row_logits = tree_forward(model, ps, [], return_logits=True, device=device)
        loss = ps.expected_loss(row_logits, per_row=True)
    else:
        loss = ps.expected_loss(_forward_all(model, torch.from_numpy(ps.inputs), device))
    opt = ps.optimal_loss()
    ratio = loss / opt
    return {"loss": loss.tolist(), "optimal": opt.tolist(), "ratio": ratio.tolist(),
            "excess_nats": (loss - opt).tolist(), "mean_loss": float(loss.mean()),
            "mean_optimal": float(opt.mean()), "worst_ratio": float(ratio.max()), "exact": True}


def _step_fn(model, optimizer, cfg: TrainConfig, V: int):
    clip = cfg.grad_clip

    def step(x, y):
        logits = model(x)
        if y.is_floating_point():  # soft targets (B, L, V)
            loss = -(y * F.log_softmax(logits, -1)).sum(-1).mean()
        else:
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip and clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
        optimizer.step()
        return loss.detach()

    return step


def _read_history(path: Path, upto_step: int) -> list:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("step", 0) <= upto_step:
                    rows.append(r)
    return rows


def train(cfg: TrainConfig | dict, run_dir=None, *, resume: bool = False, progress: bool = True,
          stop_at_step: int | None = None, final_eval: bool = True) -> TrainResult:
    """Train a model per ``cfg``; write logs and checkpoints under ``run_dir`` (if given).

    Args:
        resume: continue from ``run_dir/checkpoint.pt`` if present (same config required).
        progress: show a tqdm bar.
        stop_at_step: stop early after this many steps (the schedule still spans ``cfg.steps``;
            used to simulate an interruption).
        final_eval: run the exact per-position evaluation at the end (skipped if the number of
            contexts ``V**ctx`` exceeds 2 million; then the sampled evaluation set is used).
    """
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} requested but torch sees no CUDA GPU")
    torch.set_num_threads(int(cfg.threads) if cfg.threads else default_threads())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    proc = cfg.make_process()
    V = proc.vocab_size
    mcfg = cfg.model_config(proc)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg).to(device)
    optimizer = _make_optimizer(cfg, model, device)

    run_dir = Path(run_dir) if run_dir is not None else None
    start_step, history, acc, resume_ema = 0, [], (0.0, 0), None
    ck_path = run_dir / "checkpoint.pt" if run_dir else None
    if run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = run_dir / "config.json"
        if resume and ck_path.exists():
            ck = load_checkpoint(ck_path, map_location=device)
            if ck["train_config"] != cfg.to_dict():
                diff = sorted(k for k in cfg.to_dict() if ck["train_config"].get(k) != cfg.to_dict()[k])
                raise ValueError(f"cannot resume {ck_path}: its config differs in {diff}")
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            resume_ema = ck.get("ema")
            start_step = int(ck["step"])
            acc = (float(ck.get("acc_loss", 0.0)), int(ck.get("acc_count", 0)))
            history = _read_history(run_dir / "metrics.jsonl", start_step)
        cfg_path.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        with open(run_dir / "metrics.jsonl", "w") as fh:
            for r in history:
                fh.write(json.dumps(r) + "\n")

    total = cfg.steps
    end = total if stop_at_step is None else min(total, int(stop_at_step))
    snaps = set(snapshot_steps(total, cfg.snapshots)) if run_dir else set()
    ema_model = None
    if cfg.ema and cfg.ema > 0:
        import copy

        ema_model = copy.deepcopy(model)
        if resume_ema is not None:
            ema_model.load_state_dict(resume_ema)
        for p_ in ema_model.parameters():
            p_.requires_grad_(False)
        ema_params, live_params = list(ema_model.parameters()), list(model.parameters())
    result_model = ema_model if ema_model is not None else model
    if run_dir and cfg.snapshots and start_step == 0:
        save_checkpoint(run_dir / "checkpoints" / f"step_{0:07d}.pt", result_model, cfg, step=0)
    eval_set = _EvalSet(proc, cfg, cfg.eval_sequences, seed=cfg.seed + 1_000_003) if cfg.eval_every else None

    step_fn = _step_fn(model, optimizer, cfg, V)
    if cfg.compile:
        try:
            step_fn = torch.compile(step_fn)
        except Exception as exc:  # pragma: no cover - depends on the toolchain
            warnings.warn(f"torch.compile unavailable ({exc}); training eagerly")

    source = make_source(cfg.data, proc, cfg.ctx, cfg.batch_size, seed=cfg.seed, bos=cfg.bos, device=device,
                         soft_targets=cfg.targets == "distribution")
    log_fh = open(run_dir / "metrics.jsonl", "a") if run_dir else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start_step, unit="step", desc=f"train {cfg.process}",
                   dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def log(row):
        history.append(row)
        if log_fh:
            log_fh.write(json.dumps(row) + "\n")
            log_fh.flush()

    acc_loss = torch.tensor(acc[0], dtype=torch.float64, device=device)
    acc_count = acc[1]
    t_start = time.perf_counter()
    t_last, step_last = t_start, start_step
    batches = source.batches(start_step)
    step = start_step
    model.train()
    try:
        while step < end:
            for g in optimizer.param_groups:
                g["lr"] = lr_at(cfg, step)
            x, y = next(batches)
            try:
                loss = step_fn(x, y)
            except Exception as exc:
                if cfg.compile and step == start_step:
                    warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly")
                    step_fn = _step_fn(model, optimizer, cfg, V)
                    loss = step_fn(x, y)
                else:
                    raise
            acc_loss += loss
            acc_count += 1
            if ema_model is not None:
                decay = min(cfg.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, live_params, 1.0 - decay)
            step += 1
            if step % cfg.log_every == 0 or step == total:
                now = time.perf_counter()
                tps = (step - step_last) * cfg.tokens_per_step / max(now - t_last, 1e-9)
                mean_loss = float(acc_loss) / max(acc_count, 1)
                row = {"step": step, "tokens": step * cfg.tokens_per_step, "loss": mean_loss,
                       "lr": lr_at(cfg, step - 1), "tokens_per_s": tps, "elapsed": now - t_start}
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"training loss became {mean_loss} at step {step}")
                acc_loss.zero_()
                acc_count = 0
                if eval_set is not None and (step % cfg.eval_every < cfg.log_every or step == total):
                    ev = eval_set.loss(result_model, device)
                    row.update({"eval_loss": ev.tolist(), "eval_ratio": (ev / eval_set.optimal).tolist()})
                log(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{tps:,.0f}", refresh=False)
                t_last, step_last = time.perf_counter(), step
            if bar is not None:
                bar.update(1)
            if run_dir:
                if step in snaps:
                    save_checkpoint(run_dir / "checkpoints" / f"step_{step:07d}.pt", result_model, cfg, step=step)
                if (cfg.save_every and step % cfg.save_every == 0) or step == end:
                    extra = {"acc_loss": float(acc_loss), "acc_count": acc_count}
                    if ema_model is not None:
                        extra["ema"] = _cpu_state(ema_model.state_dict())
                    save_checkpoint(ck_path, model, cfg, step=step, optimizer=optimizer, extra=extra)
    finally:
        if bar is not None:
            bar.close()
        if log_fh:
            log_fh.close()
        batches.close()
    train_time = time.perf_counter() - t_start
    final = {"steps": step, "tokens": step * cfg.tokens_per_step, "train_seconds": train_time,
             "tokens_per_s": (step - start_step) * cfg.tokens_per_step / max(train_time, 1e-9)}
    if final_eval and step == total:
        if proc.vocab_size ** (cfg.ctx - (1 if cfg.bos else 0)) <= 2_000_000:
            final["eval"] = evaluate(result_model, proc, ctx=cfg.ctx, bos=cfg.bos, device=device)
        else:
            es = eval_set or _EvalSet(proc, cfg, max(cfg.eval_sequences, 16384), seed=cfg.seed + 1_000_003)
            ev = es.loss(result_model, device)
            final["eval"] = {"loss": ev.tolist(), "optimal": es.optimal.tolist(),
                             "ratio": (ev / es.optimal).tolist(), "worst_ratio": float((ev / es.optimal).max()),
                             "exact": False}
    result_model.eval()
    return TrainResult(model=result_model, config=cfg, history=history, final=final, run_dir=run_dir)
