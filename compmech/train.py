"""Next-token training of a model on a process, with exact per-position evaluation.

    from compmech.train import TrainConfig, train
    result = train(TrainConfig(tokens=2_000_000), "runs/mess3")
    result.model, result.history, result.final["loss_ratio"]

The run directory gets ``config.json``, ``metrics.jsonl`` (one JSON object per log/eval point:
step, tokens, loss, lr, tokens_per_s, elapsed; eval rows add per-position loss and its ratio to
the optimum), ``checkpoint.pt`` (model + optimiser + step, written atomically every
``save_seconds``/``save_every``, on SIGINT/SIGTERM and at the end, for resuming) and
``checkpoints/step_XXXXXXX.pt`` (model snapshots at log-spaced steps, for emergence plots).
Training length is a token budget (``tokens`` = steps x batch x ctx predicted tokens), never the
clock, so a run is reproducible; a resumed run reproduces the uninterrupted run's losses.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._run_dir import (CHECKPOINT_FORMAT, StopSignals, TrainingInterrupted, load_checkpoint, open_run_dir,
                       read_history, save_checkpoint, write_history)
from ._train_loop import _EMA, _Checkpointer, _LossMeter, _make_step, _MetricsLog, _progress_bar, session_times
from ._train_loop import _step_fn  # noqa: F401  (the bare step, timed by benchmarks/bench_probe.py)
from .data import PrefixSet, entropy_nats, make_source, n_tokens_for, to_model_io
from .model import ModelConfig, build_model
from .processes import get as get_process
from .beliefs import beliefs as _beliefs
from .sampling import sample

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "load_checkpoint", "load_model",
           "save_checkpoint", "lr_at", "snapshot_steps", "default_threads", "same_run", "read_run_config",
           "TrainingInterrupted", "RUNTIME_FIELDS", "CHECKPOINT_FORMAT"]

# Fields that say how a run is executed, not what it computes: they may differ on resume.
RUNTIME_FIELDS = frozenset({"threads", "save_every", "save_seconds"})

_MESS3_PARAMS = {"x": 0.05, "alpha": 0.85}
_INT_FIELDS = {"ctx": 1, "tokens": 1, "batch_size": 1, "log_every": 1, "eval_every": 0, "eval_sequences": 1,
               "snapshots": 0, "save_every": 0, "seed": 0}
_FLOAT_FIELDS = {"lr": (0, False), "weight_decay": (0, True), "momentum": (0, True), "warmup": (0, True),
                 "min_lr_ratio": (0, True), "grad_clip": (0, True), "ema": (0, True), "save_seconds": (0, True)}
_CHOICES = {"data": ("exact", "stream"), "targets": ("tokens", "distribution"), "optimizer": ("adamw", "sgd"),
            "schedule": ("cosine", "linear", "constant")}


def _int_field(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"TrainConfig.{name} must be an integer, got {v!r}")
    if v < lo:
        raise ValueError(f"TrainConfig.{name} must be >= {lo}, got {v!r}")
    return int(v)


def _float_field(name, v, lo, inclusive):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"TrainConfig.{name} must be a finite number, got {v!r}")
    if v < lo or (v == lo and not inclusive):
        raise ValueError(f"TrainConfig.{name} must be {'>=' if inclusive else '>'} {lo}, got {v!r}")
    return v


@dataclass
class TrainConfig:
    """Everything that defines a training run (serialisable to JSON).

    Attributes:
        process, process_params: ``compmech.processes.get(process, **process_params)``.
            ``process_params=None`` (the default) means the process's own defaults, except
            for mess3, whose default is the original work's ``{"x": 0.05, "alpha": 0.85}``.
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
        save_every: steps between resumable checkpoints (0: none by step count).
        save_seconds: wall-clock seconds between resumable checkpoints (0: none by time). A
            checkpoint is also written at the end and when SIGINT/SIGTERM stops the run.
            ``threads``, ``save_every`` and ``save_seconds`` are not part of a run's identity:
            a run may be resumed with other values.
        compile: wrap the training step in ``torch.compile`` (falls back to eager if it fails; on a
            small CPU model it compiles for about a minute and is not faster).
        ema: if > 0, keep an exponential moving average of the weights with this decay (warmed
            up as ``min(ema, (1 + t) / (10 + t))``); the averaged model is what is evaluated,
            snapshotted, probed and returned.
    """

    process: str = "mess3"
    process_params: dict | None = None
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
    save_seconds: float = 60.0
    compile: bool = False
    ema: float = 0.0

    def __post_init__(self):
        if not isinstance(self.process, str):
            raise ValueError(f"TrainConfig.process must be a process name, got {self.process!r}")
        if self.process_params is None:
            self.process_params = dict(_MESS3_PARAMS) if self.process == "mess3" else {}
        for name in ("process_params", "model"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"TrainConfig.{name} must be a table of name = value, got {getattr(self, name)!r}")
        unknown = set(self.model) - {f.name for f in dataclasses.fields(ModelConfig)}
        if unknown:
            raise ValueError(f"unknown model fields {sorted(unknown)}; known: "
                             f"{[f.name for f in dataclasses.fields(ModelConfig)]}")
        derived = sorted({"vocab_size", "out_vocab_size"} & set(self.model))
        if derived:  # model_config() would silently replace them
            raise ValueError(f"TrainConfig.model.{derived[0]} is set from the process (its V, plus a BOS id "
                             f"with bos=true); remove it")
        for name, options in _CHOICES.items():
            if getattr(self, name) not in options:
                raise ValueError(f"TrainConfig.{name} must be one of {'/'.join(options)}, got {getattr(self, name)!r}")
        for name, lo in _INT_FIELDS.items():
            setattr(self, name, _int_field(name, getattr(self, name), lo))
        if self.threads is not None:
            self.threads = _int_field("threads", self.threads, 1)
        if "ctx" in self.model and self.model["ctx"] != self.ctx:  # model_config() would silently use ctx
            raise ValueError(f"TrainConfig.model.ctx ({self.model['ctx']!r}) differs from ctx ({self.ctx}): the "
                             f"model's context is the training context; set ctx (--set ctx=N), not model.ctx")
        ModelConfig(**{**self.model, "ctx": self.ctx})  # bad model fields fail here, before any work
        for name, (lo, inclusive) in _FLOAT_FIELDS.items():
            _float_field(name, getattr(self, name), lo, inclusive)
        if not (0 <= self.ema < 1 and self.min_lr_ratio <= 1):
            raise ValueError(f"TrainConfig.ema must be in [0, 1) and min_lr_ratio in [0, 1], "
                             f"got {self.ema!r}, {self.min_lr_ratio!r}")
        for name in ("bos", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if (isinstance(self.betas, (str, bytes)) or not hasattr(self.betas, "__len__") or len(self.betas) != 2
                or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1 for b in self.betas)):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(self.betas)
        if not isinstance(self.device, str):
            raise ValueError(f"TrainConfig.device must be a string such as 'cpu' or 'cuda:0', got {self.device!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise ValueError(f"TrainConfig.device {self.device!r} is not a torch device (use cpu, cuda or cuda:N)") from None

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
        if not isinstance(d, dict):
            raise ValueError(f"a TrainConfig needs a table of fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)

    def identity(self) -> dict:
        """The fields that define what the run computes (everything but :data:`RUNTIME_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def make_process(self):
        """The process this config names. Built once per (process, process_params) and kept
        on the config: the CLI (to fail before the start line), ``train()``, the evaluation
        and the experiment's probe all ask for it, and a composite or checked process is not
        free to build. A changed field (or a params table changed in place) rebuilds it."""
        try:
            key = (self.process, json.dumps(self.process_params or {}, sort_keys=True))
        except (TypeError, ValueError):  # parameters JSON cannot hold: no cache
            return get_process(self.process, **(self.process_params or {}))
        hit = self.__dict__.get("_process")
        if hit is None or hit[0] != key:
            hit = self.__dict__["_process"] = (key, get_process(self.process, **(self.process_params or {})))
        return hit[1]

    def __getstate__(self):  # pickles (sweep tasks) carry the fields, not the built process
        return {k: v for k, v in self.__dict__.items() if k != "_process"}

    def model_config(self, process=None) -> ModelConfig:
        proc = process or self.make_process()
        V = proc.vocab_size
        m = dict(self.model or {})
        for k in ("vocab_size", "out_vocab_size"):
            m.pop(k, None)
        m["ctx"] = self.ctx
        return ModelConfig(vocab_size=V + (1 if self.bos else 0), out_vocab_size=V, **m)


def same_run(a: TrainConfig, b: TrainConfig) -> bool:
    """True when two configs describe the same run (they may differ in :data:`RUNTIME_FIELDS`)."""
    return a.identity() == b.identity()


def read_run_config(run_dir) -> TrainConfig:
    """The :class:`TrainConfig` of the run in ``run_dir`` (from its ``config.json``)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ValueError(f"nothing to resume in {run_dir}: no config.json")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None


@dataclass
class TrainResult:
    """``final``: steps, tokens, ``train_seconds`` (summed over the run's sessions, resumes
    included), ``tokens_per_s`` (over those seconds), ``sessions`` (``{"steps": [from, to],
    "seconds": s}`` per session that trained) and, after the last step, ``eval``."""

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


def load_model(path, device="cpu"):
    """``(model, TrainConfig, checkpoint dict)`` from a checkpoint or snapshot file."""
    ck = load_checkpoint(path, map_location=device)
    try:
        cfg = TrainConfig.from_dict(ck["train_config"])
        model = build_model(ModelConfig.from_dict(ck["model_config"])).to(device)
        model.load_state_dict(ck["ema"] if ck.get("ema") is not None else ck["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: inconsistent checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    model.eval()
    return model, cfg, ck


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
        self.optimal_rows = entropy_nats(q)  # (n, ctx)
        self.optimal = self.optimal_rows.mean(0)

    def loss(self, model, device, *, per_row: bool = False) -> np.ndarray:
        """``(ctx,)`` mean expected cross-entropy per position, or ``(n, ctx)`` per sequence."""
        logits = _forward_all(model, self.inputs, device)
        lp = torch.log_softmax(logits.double(), -1).numpy()
        rows = -(np.where(self.q > 0, self.q * lp, 0.0)).sum(-1)
        return rows if per_row else rows.mean(0)

    def estimate(self, model, device) -> dict:
        """The per-position loss, optimum and their ratio on these samples, each with its
        standard error (the ratio's by the delta method on the same rows, so the part of the
        sampling noise that loss and optimum share cancels)."""
        rows, opt_rows = self.loss(model, device, per_row=True), self.optimal_rows
        n = rows.shape[0]
        loss, opt = rows.mean(0), opt_rows.mean(0)
        se = lambda a: a.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.full(a.shape[1], np.nan)  # noqa: E731
        with np.errstate(divide="ignore", invalid="ignore"):  # optimum 0 (deterministic position): ratio inf
            ratio = loss / opt
            ratio_se = se(rows - ratio * opt_rows) / opt
        worst = int(np.argmax(ratio))
        return {"loss": loss.tolist(), "loss_se": se(rows).tolist(), "optimal": opt.tolist(),
                "optimal_se": se(opt_rows).tolist(), "ratio": ratio.tolist(), "ratio_se": ratio_se.tolist(),
                "excess_nats": (loss - opt).tolist(), "excess_nats_se": se(rows - opt_rows).tolist(),
                "mean_loss": float(loss.mean()), "mean_optimal": float(opt.mean()),
                "worst_ratio": float(ratio[worst]), "worst_ratio_se": float(ratio_se[worst]),
                "exact": False, "sequences": int(n)}


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
    with np.errstate(divide="ignore", invalid="ignore"):  # optimum 0 (deterministic position): ratio inf
        ratio = loss / opt
    return {"loss": loss.tolist(), "optimal": opt.tolist(), "ratio": ratio.tolist(),
            "excess_nats": (loss - opt).tolist(), "mean_loss": float(loss.mean()),
            "mean_optimal": float(opt.mean()), "worst_ratio": float(ratio.max()), "exact": True}


def _final_eval(cfg, proc, model, eval_set, device) -> dict:
    """Exact per-position evaluation when ``V**ctx`` contexts fit (<= 2 M), else on samples."""
    if proc.vocab_size ** (cfg.ctx - (1 if cfg.bos else 0)) <= 2_000_000:
        return evaluate(model, proc, ctx=cfg.ctx, bos=cfg.bos, device=device)
    es = eval_set or _EvalSet(proc, cfg, max(cfg.eval_sequences, 16384), seed=cfg.seed + 1_000_003)
    return es.estimate(model, device)


def _setup(cfg: TrainConfig):
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} requested but torch sees no CUDA GPU")
    torch.set_num_threads(int(cfg.threads) if cfg.threads else default_threads())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _open_run(run_dir: Path, cfg: TrainConfig, model, optimizer, device, *, resume, overwrite):
    """Prepare ``run_dir`` (refusing to mix runs) and, when resuming, restore the model,
    optimiser, loss meter, EMA and earlier sessions' training times:
    ``(start_step, history, meter, ema_state, sessions)``."""
    start_step, history, meter, ema_state, sessions = 0, [], _LossMeter(device), None, []
    ck_path = open_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if ck_path is not None:
        ck = load_checkpoint(ck_path, map_location=device)
        old = TrainConfig.from_dict(ck["train_config"])
        if not same_run(old, cfg):
            diff = sorted(k for k, v in cfg.identity().items() if old.identity().get(k) != v)
            raise ValueError(f"cannot resume {ck_path}: its config differs in {diff}")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        start_step, ema_state = int(ck["step"]), ck.get("ema")
        meter = _LossMeter(device, float(ck.get("acc_loss", 0.0)), int(ck.get("acc_count", 0)))
        history = read_history(run_dir / "metrics.jsonl", start_step)
        sessions = session_times(ck, history, start_step)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    write_history(run_dir / "metrics.jsonl", history)
    return start_step, history, meter, ema_state, sessions


def _session(start_step: int, step: int, t_start: float) -> dict:
    return {"steps": [int(start_step), int(step)], "seconds": time.perf_counter() - t_start}


def train(cfg: TrainConfig | dict, run_dir=None, *, resume: bool | str = False, overwrite: bool = False,
          progress: bool = True, stop_at_step: int | None = None, final_eval: bool = True) -> TrainResult:
    """Train a model per ``cfg``; write logs and checkpoints under ``run_dir`` (if given).

    Args:
        resume: ``True``: continue from ``run_dir/checkpoint.pt`` (same config required, up to
            :data:`RUNTIME_FIELDS`; ``ValueError`` if there is none). ``"auto"``: resume if a
            checkpoint exists, else start a new run.
        overwrite: delete an earlier run's files in ``run_dir`` first. Without ``resume`` or
            ``overwrite`` a directory that holds a run is refused (``ValueError``), so two
            runs' snapshots and logs are never mixed.
        progress: show a tqdm bar.
        stop_at_step: stop early after this many steps (the schedule still spans ``cfg.steps``;
            used to simulate an interruption).
        final_eval: run the exact per-position evaluation at the end (skipped if the number of
            contexts ``V**ctx`` exceeds 2 million; then the sampled evaluation set is used).

    SIGINT/SIGTERM (in the main thread) stop the run at the next step boundary after writing a
    checkpoint, and raise :class:`TrainingInterrupted` (a ``KeyboardInterrupt``).
    """
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    device = _setup(cfg)
    proc = cfg.make_process()
    V = proc.vocab_size
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model_config(proc)).to(device)
    optimizer = _make_optimizer(cfg, model, device)

    run_dir = Path(run_dir) if run_dir is not None else None
    start_step, history, meter, ema_state, sessions = 0, [], _LossMeter(device), None, []
    if run_dir:
        start_step, history, meter, ema_state, sessions = _open_run(run_dir, cfg, model, optimizer, device,
                                                          resume=resume, overwrite=overwrite)
    total = cfg.steps
    end = total if stop_at_step is None else min(total, int(stop_at_step))
    ema = _EMA(model, cfg.ema, ema_state) if cfg.ema > 0 else None
    eval_model = ema.model if ema is not None else model  # what is evaluated, snapshotted, returned
    ckpt = _Checkpointer(cfg, run_dir, snapshot_steps(total, cfg.snapshots)) if run_dir else None
    if ckpt and cfg.snapshots and start_step == 0:
        ckpt.snapshot(eval_model, 0)
    eval_set = _EvalSet(proc, cfg, cfg.eval_sequences, seed=cfg.seed + 1_000_003) if cfg.eval_every else None
    step_fn = _make_step(model, optimizer, cfg, V)
    source = make_source(cfg.data, proc, cfg.ctx, cfg.batch_size, seed=cfg.seed, bos=cfg.bos, device=device,
                         soft_targets=cfg.targets == "distribution")
    log = _MetricsLog(cfg, run_dir / "metrics.jsonl" if run_dir else None, history, eval_set, device, start_step)
    bar = _progress_bar(cfg, start_step, progress)
    batches = source.batches(start_step)
    step, saved = start_step, None
    model.train()
    try:
        with StopSignals() as stop:
            while step < end:
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(cfg, step)
                x, y = next(batches)
                loss = step_fn(x, y)
                meter.add(loss)
                if ema is not None:
                    ema.update(step)
                step += 1
                if log.due(step):
                    row = log.write(step, meter, eval_model, lr=lr_at(cfg, step - 1))
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:,.0f}", refresh=False)
                if bar is not None:
                    bar.update(1)
                if ckpt:
                    if step in ckpt.snapshots:
                        ckpt.snapshot(eval_model, step)
                    if ckpt.due(step) or step == end or stop.signum:
                        saved = _session(start_step, step, log.t_start)
                        ckpt.save(model, optimizer, step, meter, ema, sessions + [saved])
                if stop.signum:
                    raise TrainingInterrupted(stop.signum, step, total, ckpt.path if ckpt else None)
    finally:
        if bar is not None:
            bar.close()
        log.close()
        batches.close()
    if step > start_step:  # a resume with nothing left to train adds no session
        # the figure the last checkpoint holds, so a later resume reports the same total
        sessions = sessions + [saved if saved and saved["steps"][1] == step else _session(start_step, step, log.t_start)]
    train_time = sum(d["seconds"] for d in sessions)
    final = {"steps": step, "tokens": step * cfg.tokens_per_step, "train_seconds": train_time,
             "tokens_per_s": step * cfg.tokens_per_step / max(train_time, 1e-9), "sessions": sessions}
    if final_eval and step == total:
        final["eval"] = _final_eval(cfg, proc, eval_model, eval_set, device)
    eval_model.eval()
    return TrainResult(model=eval_model, config=cfg, history=history, final=final, run_dir=run_dir)
