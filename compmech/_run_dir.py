"""A training run's directory: atomic checkpoints, the metrics log, and the rules that keep a
run's files from being lost or mixed with another run's.

Rules (documented in the README, "Interrupting and resuming"):

* a new run never starts in a directory that holds another run's checkpoint, metrics log or
  snapshots: it is refused unless ``overwrite`` (which deletes them first) or ``resume``;
* ``resume=True`` with no checkpoint is refused (it never silently starts over);
* a torn last line of ``metrics.jsonl`` (a kill during a write) is dropped on resume;
* SIGINT/SIGTERM during training are turned into a stop at the next step boundary, after a
  checkpoint is written (:class:`StopSignals`, :class:`TrainingInterrupted`).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from pathlib import Path

from ._json import dumps

CHECKPOINT_FORMAT = "compmech-checkpoint-v1"

# Files a run writes (relative to its directory). ``overwrite`` deletes exactly these.
_RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "metrics.json", "final.json", "config.json", "probe.json")
_RUN_GLOBS = ("checkpoints/step_*.pt", "figures/*.png", "figures/*.pdf")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT/SIGTERM after saving a resumable checkpoint (``checkpoint`` is
    its path, or None without a run directory). Subclasses ``KeyboardInterrupt`` so code that
    handles Ctrl-C keeps working."""

    def __init__(self, signum: int, step: int, total: int, checkpoint: Path | None):
        self.signum, self.step, self.total, self.checkpoint = signum, step, total, checkpoint
        name = signal.Signals(signum).name
        where = (f"checkpoint saved to {checkpoint}; continue with --resume (train(..., resume=True))"
                 if checkpoint else "nothing saved (no run directory)")
        super().__init__(f"training stopped by {name} at step {step:,} of {total:,}; {where}")


class StopSignals:
    """Context manager: SIGINT/SIGTERM set ``signum`` instead of raising, so the training loop
    can finish its step, save and stop cleanly; a second signal raises ``KeyboardInterrupt`` at
    once. Handlers can only be installed from the main thread; elsewhere this is a no-op."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[s] = signal.signal(s, self._handle)
                except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                    pass
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}
        return False


def atomic_save(obj, path: Path):
    """``torch.save`` to a temporary file, fsync, rename: a crash leaves the old file intact."""
    import torch

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


def _atomic_write_text(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code execution) and check its format.
    A missing file raises ``FileNotFoundError``; anything unreadable raises ``ValueError``."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # truncated, random bytes, or a pickle with code in it
        # torch's own text advises weights_only=False, i.e. running the file's code: not repeated
        raise ValueError(f"{path}: not a readable {CHECKPOINT_FORMAT} checkpoint (corrupt, truncated or "
                         f"not written by compmech; {type(exc).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    return obj


def json_line(row: dict) -> str:
    """One metrics row as strict JSON (non-finite floats written as ``null``)."""
    return dumps(row)


def read_history(path: Path, upto_step: int) -> list:
    """Rows of ``metrics.jsonl`` up to ``upto_step``. A torn *last* line (the process was killed
    while writing it) is dropped with a warning; a bad line elsewhere is an error naming it."""
    rows = []
    if not path.exists():
        return rows
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: dropped an incomplete last line (line {i + 1}: {exc.msg})")
                break
            raise ValueError(f"{path}, line {i + 1}: not a JSON row ({exc.msg}); fix or delete that line") from None
        if isinstance(r, dict) and r.get("step", 0) <= upto_step:
            rows.append(r)
    return rows


def write_history(path: Path, rows: list):
    _atomic_write_text(path, "".join(json_line(r) + "\n" for r in rows))


def existing_run_files(run_dir: Path) -> list[str]:
    """Files of an earlier run in ``run_dir`` that a new run would mix with."""
    found = [n for n in ("checkpoint.pt", "metrics.jsonl") if (run_dir / n).exists()]
    if any((run_dir / "checkpoints").glob("step_*.pt")):
        found.append("checkpoints/step_*.pt")
    return found


def clear_run(run_dir: Path):
    for n in _RUN_FILES:
        (run_dir / n).unlink(missing_ok=True)
    for g in _RUN_GLOBS:
        for p in run_dir.glob(g):
            p.unlink()


def open_run_dir(run_dir, *, resume, overwrite: bool):
    """Check and prepare ``run_dir`` for a run; return the checkpoint to resume from (or None).

    ``resume``: True (a checkpoint must exist), ``"auto"`` (resume if one exists, else start a
    new run) or False. ``overwrite``: delete an earlier run's files and start afresh."""
    run_dir = Path(run_dir)
    if resume not in (True, False, "auto"):
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    if resume is True and overwrite:
        raise ValueError("resume and overwrite contradict each other; pass one of them")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} is a file; choose a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    ck_path = run_dir / "checkpoint.pt"
    found = existing_run_files(run_dir)
    if resume and ck_path.exists():
        return ck_path
    if resume is True:
        why = ("the run there stopped before its first checkpoint; start it again with --overwrite"
               if found else "start a new run without --resume")
        raise ValueError(f"nothing to resume in {run_dir}: no checkpoint.pt ({why})")
    if found and not overwrite:
        raise ValueError(f"{run_dir} already holds a run ({', '.join(found)}); continue it with --resume, "
                         f"replace it with --overwrite, or choose another directory")
    if found:
        clear_run(run_dir)
    return None
