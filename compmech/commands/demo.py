"""``compmech demo [--process mess3|rrxor] [--out DIR]``: the belief-geometry experiment in one
command. Trains the original work's transformer (4 layers, d_model 64, 1 head of 8, d_mlp 256,
context 10) on the process for a fixed token budget, probes its residual stream for the
ground-truth belief states (all V**10 inputs x 10 positions), probes log-spaced training
snapshots, and writes figures (PNG + PDF), ``metrics.json`` and the checkpoint to DIR.
Everything is determined by the configuration and seed (the budget is in tokens, not seconds).
The experiment itself is :mod:`compmech.experiment`; this command only parses arguments."""
from __future__ import annotations

from pathlib import Path

from ..experiment import DEFAULTS, TARGETS  # noqa: F401  (re-exported: the demo's defaults and targets)
from .train import add_common_train_args, check_out_dir, config_from_args

DEMO_DEFAULTS = DEFAULTS


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train → probe → figures: the belief-geometry reproduction", description=__doc__)
    p.add_argument("--process", default="mess3", choices=sorted(DEFAULTS),
                   help="mess3 (fractal in the 2-simplex) or rrxor (36 belief states, spread across layers)")
    p.add_argument("--out", help="run directory (default runs/<process>)")
    p.add_argument("--emergence-depth", type=int, default=8,
                   help="prefix length up to which training snapshots are probed (default 8; final probe uses all)")
    add_common_train_args(p)
    p.set_defaults(func=run)


def start(args, base: dict, name: str, label: str):
    """Config and run directory from the arguments, and the header lines (shared with
    ``compmech experiment``)."""
    cfg = config_from_args(args, dict(base))
    run_dir = check_out_dir(args.out or f"runs/{name}")
    if args.emergence_depth < 1:
        raise ValueError(f"--emergence-depth must be >= 1, got {args.emergence_depth}")
    proc = cfg.make_process()
    print(f"compmech {label}: {proc!r}, ctx {cfg.ctx}, model {cfg.model_config(proc).to_dict()}")
    print(f"  {cfg.data} data, {cfg.targets} targets, {cfg.optimizer} lr {cfg.lr} batch {cfg.batch_size}, {cfg.schedule} schedule; "
          f"budget {cfg.tokens:.3g} tokens = {cfg.steps:,} steps; device {cfg.device}; run dir {run_dir}")
    return cfg, run_dir


def run(args) -> int:
    from .. import experiment

    cfg, run_dir = start(args, DEFAULTS[args.process], args.process, "demo")
    exp = experiment.run(cfg, Path(run_dir), resume=args.resume, overwrite=args.overwrite,
                         progress=not args.no_progress, emergence_depth=args.emergence_depth)
    print()
    print(experiment.report(exp))
    return 0
