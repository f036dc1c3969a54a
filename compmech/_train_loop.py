"""The pieces of the training loop in :func:`compmech.train.train`: the step itself (optionally
``torch.compile``d), the weight EMA, the loss meter, the metrics log with periodic evaluation,
and the checkpointer. Each keeps its own state so the loop body stays a few lines."""
from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ._run_dir import cpu_state, json_line, save_checkpoint


def _step_fn(model, optimizer, cfg, V: int):
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


def _make_step(model, optimizer, cfg, V: int):
    """The training step, ``torch.compile``d if asked; falls back to eager if compiling fails
    on the first call (the compiler is only known to work once it has run)."""
    eager = _step_fn(model, optimizer, cfg, V)
    if not cfg.compile:
        return eager
    try:
        compiled = torch.compile(eager)
    except Exception as exc:  # pragma: no cover - depends on the toolchain
        warnings.warn(f"torch.compile unavailable ({exc}); training eagerly")
        return eager
    state = {"fn": compiled, "tried": False}

    def step(x, y):
        if state["tried"]:
            return state["fn"](x, y)
        state["tried"] = True
        try:
            return compiled(x, y)
        except Exception as exc:
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly")
            state["fn"] = _step_fn(model, optimizer, cfg, V)
            return state["fn"](x, y)

    return step


class _EMA:
    """Exponential moving average of the weights, warmed up as ``min(decay, (1+t)/(10+t))``."""

    def __init__(self, model, decay: float, state: dict | None = None):
        self.decay = decay
        self.model = copy.deepcopy(model)
        if state is not None:
            self.model.load_state_dict(state)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._avg, self._live = list(self.model.parameters()), list(model.parameters())

    @torch.no_grad()
    def update(self, step: int):
        torch._foreach_lerp_(self._avg, self._live, 1.0 - min(self.decay, (1 + step) / (10 + step)))


class _LossMeter:
    """Mean training loss since the last log row, accumulated on the device (no sync per step)."""

    def __init__(self, device, total: float = 0.0, count: int = 0):
        self.total = torch.tensor(total, dtype=torch.float64, device=device)
        self.count = count

    def add(self, loss):
        self.total += loss
        self.count += 1

    def mean_and_reset(self) -> float:
        mean = float(self.total) / max(self.count, 1)
        self.total.zero_()
        self.count = 0
        return mean

    def state(self) -> dict:
        return {"acc_loss": float(self.total), "acc_count": self.count}


def session_times(ck: dict, history: list, start_step: int) -> list:
    """Earlier sessions' ``{"steps": [from, to], "seconds": s}`` from checkpoint ``ck``. A
    checkpoint from before sessions were saved gets one entry estimated from the log: the
    ``elapsed`` column restarts at 0 each session, so its last value before each restart is
    summed (time after the last logged step of a session is not counted)."""
    if "sessions" in ck:
        return [dict(d) for d in ck["sessions"]]
    seconds, last = 0.0, 0.0
    for row in history:
        e = float(row.get("elapsed", 0.0))
        if e < last:
            seconds += last
        last = e
    return [{"steps": [0, start_step], "seconds": seconds + last, "estimated": True}] if start_step else []


class _MetricsLog:
    """``metrics.jsonl`` rows (also kept in memory as the history) with throughput since the
    previous row; evaluation on the sampled set every ``eval_every`` steps."""

    def __init__(self, cfg, path: Path | None, history: list, eval_set, device, start_step: int):
        self.cfg, self.history, self.eval_set, self.device = cfg, history, eval_set, device
        self._fh = open(path, "a") if path else None
        self.t_start = self.t_last = time.perf_counter()
        self.step_last = start_step

    def due(self, step: int) -> bool:
        return step % self.cfg.log_every == 0 or step == self.cfg.steps

    def write(self, step: int, meter: _LossMeter, eval_model, lr: float) -> dict:
        cfg, now = self.cfg, time.perf_counter()
        mean_loss = meter.mean_and_reset()
        row = {"step": step, "tokens": step * cfg.tokens_per_step, "loss": mean_loss, "lr": lr,
               "tokens_per_s": (step - self.step_last) * cfg.tokens_per_step / max(now - self.t_last, 1e-9),
               "elapsed": now - self.t_start}
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"training loss became {mean_loss} at step {step}; lower lr or raise grad_clip")
        if self.eval_set is not None and (step % cfg.eval_every < cfg.log_every or step == cfg.steps):
            ev = self.eval_set.estimate(eval_model, self.device)  # a deterministic position: ratio inf -> null
            row.update({"eval_loss": ev["loss"], "eval_loss_se": ev["loss_se"], "eval_ratio": ev["ratio"],
                        "eval_ratio_se": ev["ratio_se"]})
        self.history.append(row)
        if self._fh:
            self._fh.write(json_line(row) + "\n")
            self._fh.flush()
        self.t_last, self.step_last = time.perf_counter(), step
        return row

    def close(self):
        if self._fh:
            self._fh.close()


class _Checkpointer:
    """Resumable checkpoints every ``save_every`` steps and/or ``save_seconds`` of wall clock
    (a save costs a few ms), plus log-spaced model snapshots."""

    def __init__(self, cfg, run_dir: Path, snapshots):
        self.cfg, self.run_dir, self.snapshots = cfg, run_dir, set(snapshots)
        self.path = run_dir / "checkpoint.pt"
        self._last = time.monotonic()

    def due(self, step: int) -> bool:
        c = self.cfg
        return bool((c.save_every and step % c.save_every == 0)
                    or (c.save_seconds and time.monotonic() - self._last >= c.save_seconds))

    def snapshot(self, model, step: int):
        save_checkpoint(self.run_dir / "checkpoints" / f"step_{step:07d}.pt", model, self.cfg, step=step)

    def save(self, model, optimizer, step: int, meter: _LossMeter, ema: _EMA | None, sessions: list):
        extra = meter.state()
        extra["sessions"] = sessions  # training time of the steps this checkpoint holds
        if ema is not None:
            extra["ema"] = cpu_state(ema.model.state_dict())
        save_checkpoint(self.path, model, self.cfg, step=step, optimizer=optimizer, extra=extra)
        self._last = time.monotonic()


def _progress_bar(cfg, start_step: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start_step, unit="step", desc=f"train {cfg.process}",
                dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
