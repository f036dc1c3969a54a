"""``compmech demo [--process mess3|rrxor] [--out DIR]``: the belief-geometry experiment in one
command. Trains the original work's transformer (4 layers, d_model 64, 1 head of 8, d_mlp 256,
context 10) on the process for a fixed token budget, probes its residual stream for the
ground-truth belief states (all V**10 inputs x 10 positions), probes log-spaced training
snapshots, and writes figures (PNG + PDF), ``metrics.json`` and the checkpoint to DIR.
Everything is determined by the configuration and seed (the budget is in tokens, not seconds)."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path


from .train import add_common_train_args, config_from_args

# Tuned defaults (see README: measured on a 2-core CPU). Mess3 parameters are the original's.
# targets="distribution": the loss is the cross-entropy against the true next-token distribution
# given the input (the conditional expectation of the sampled-token loss: same optimum and
# expected gradient, far less noise); the model still sees only tokens. At equal tokens it gives
# a ~3x lower probe MSE than sampled-token targets; use --set targets=tokens for the original's.
DEMO_DEFAULTS = {
    "mess3": {
        "process": "mess3", "process_params": {"x": 0.05, "alpha": 0.85},
        "tokens": 10_000_000, "targets": "distribution", "batch_size": 512, "lr": 3e-3, "warmup": 0.02, "schedule": "cosine",
        "min_lr_ratio": 0.02, "betas": [0.9, 0.99], "weight_decay": 0.0, "grad_clip": 1.0,
        "snapshots": 10, "log_every": 50, "eval_every": 250, "eval_sequences": 4096,
    },
    "rrxor": {
        "process": "rrxor", "process_params": {},
        "tokens": 10_000_000, "targets": "distribution", "batch_size": 512, "lr": 3e-3, "warmup": 0.02, "schedule": "cosine",
        "min_lr_ratio": 0.02, "betas": [0.9, 0.99], "weight_decay": 0.0, "grad_clip": 1.0,
        "snapshots": 10, "log_every": 50, "eval_every": 250, "eval_sequences": 4096,
    },
}

# Targets of the reproduction (issue 4) for Mess3.
TARGETS = {"probe_mse_max": 2.5e-4, "r2_weighted_min": 0.99, "shuffle_ratio_min": 10.0,
           "cv_ratio_max": 1.25, "loss_ratio_max": 1.005}


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train → probe → figures: the belief-geometry reproduction", description=__doc__)
    p.add_argument("--process", default="mess3", choices=sorted(DEMO_DEFAULTS),
                   help="mess3 (fractal in the 2-simplex) or rrxor (36 belief states, spread across layers)")
    p.add_argument("--out", help="run directory (default runs/<process>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--emergence-depth", type=int, default=8,
                   help="prefix length up to which training snapshots are probed (default 8; final probe uses all)")
    add_common_train_args(p)
    p.set_defaults(func=run)


def _probe_snapshots(run_dir: Path, cfg, depth: int, device):
    """Probe every log-spaced snapshot on the prefixes of up to ``depth`` tokens (final layer)."""
    from ..data import PrefixSet
    from ..probe import collect_activations, probe_activations
    from ..train import load_model

    paths = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    if not paths:
        return []
    proc = cfg.make_process()
    n_in = min(cfg.ctx, depth + (1 if cfg.bos else 0))
    prefixes = PrefixSet.build(proc, n_in, bos=cfg.bos)
    out = []
    for path in paths:
        model, _, ck = load_model(path, device=device)
        layer = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        acts = collect_activations(model, prefixes, [layer], device=device)
        rep = probe_activations(acts, prefixes, cv_folds=2, shuffles=0, final_layer=layer, concat=[])
        out.append((ck["tokens"], ck["step"], rep))
    return out


def _fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def run(args) -> int:
    import torch

    from ..plot import experiment as ex
    from ..train import train
    from .probe import _json_default, run_probe, write_probe_figures

    t_all = time.perf_counter()
    base = dict(DEMO_DEFAULTS[args.process])
    cfg = config_from_args(args, base)
    run_dir = Path(args.out or f"runs/{args.process}")
    fig_dir = run_dir / "figures"
    proc = cfg.make_process()
    print(f"compmech demo: {proc!r}, ctx {cfg.ctx}, model {cfg.model_config(proc).to_dict()}")
    print(f"  {cfg.data} data, {cfg.targets} targets, {cfg.optimizer} lr {cfg.lr} batch {cfg.batch_size}, {cfg.schedule} schedule; "
          f"budget {cfg.tokens:.3g} tokens = {cfg.steps:,} steps; device {cfg.device}; run dir {run_dir}")

    # 1. Train.
    res = train(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    model, ev = res.model, res.final.get("eval")
    t_train = time.perf_counter()

    # 2. Probe the final model: every layer, all layers concatenated, CV, shuffles.
    rep, prefixes = run_probe(model, cfg, device=cfg.device)
    t_probe = time.perf_counter()

    # 3. Emergence: probe the log-spaced snapshots.
    snaps = _probe_snapshots(run_dir, cfg, args.emergence_depth, cfg.device)
    t_snap = time.perf_counter()

    # 4. Figures.
    title = (f"{cfg.process} {cfg.process_params or ''} — {res.final['tokens']:,} training tokens"
             + (" (distribution targets)" if cfg.targets == "distribution" else ""))
    figs = write_probe_figures(rep, fig_dir, title=title, ev=ev)
    if ev is not None:
        figs += ex.save(ex.loss_vs_optimal(ev).figure, fig_dir / "loss_per_position")
    probe_pts = [(t, r.layers[r.final_layer]["uniform"]["mse"]) for t, _, r in snaps if t > 0]
    figs += ex.save(ex.training_curve(res.history, optimal_mean=ev["mean_optimal"] if ev else None,
                                      probe_points=probe_pts,
                                      probe_label=f"probe MSE, final layer (prefixes <= {args.emergence_depth})").figure,
                    fig_dir / "training")
    if snaps:
        figs += ex.save(ex.emergence([(t, r) for t, _, r in snaps]), fig_dir / "emergence")
    t_fig = time.perf_counter()

    # 5. Metrics.
    s = rep.summary()
    layers = {n: {w: {k: v for k, v in m.items()} for w, m in d.items()} for n, d in rep.layers.items()}
    checks = None
    if cfg.process == "mess3" and ev is not None:
        checks = {
            "probe_mse": [s["mse"], "<=", TARGETS["probe_mse_max"], s["mse"] <= TARGETS["probe_mse_max"]],
            "r2_weighted": [s["r2_weighted"], ">=", TARGETS["r2_weighted_min"], s["r2_weighted"] >= TARGETS["r2_weighted_min"]],
            "shuffle_ratio": [s["shuffle_ratio"], ">=", TARGETS["shuffle_ratio_min"], s["shuffle_ratio"] >= TARGETS["shuffle_ratio_min"]],
            "cv_ratio": [s["cv_ratio"], "<=", TARGETS["cv_ratio_max"], s["cv_ratio"] <= TARGETS["cv_ratio_max"]],
            "worst_loss_ratio": [ev["worst_ratio"], "<=", TARGETS["loss_ratio_max"], ev["worst_ratio"] <= TARGETS["loss_ratio_max"]],
        }
    metrics = {
        "process": {"name": cfg.process, "params": cfg.process_params, "num_states": proc.num_states,
                    "vocab_size": proc.vocab_size},
        "config": cfg.to_dict(),
        "model": cfg.model_config(proc).to_dict(),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "training": {k: res.final[k] for k in ("steps", "tokens", "train_seconds", "tokens_per_s")},
        "loss": ev,
        "probe": {"summary": s, "layers": layers, "timing": rep.timing,
                  "concat": rep.concat_name, "rows": len(prefixes), "inputs": int(prefixes.inputs.shape[0])},
        "emergence": [{"tokens": t, "step": st, "mse": r.layers[r.final_layer]["uniform"]["mse"],
                       "r2_weighted": r.layers[r.final_layer]["prob"]["r2"]} for t, st, r in snaps],
        "emergence_depth": args.emergence_depth,
        "targets": checks,
        "timing": {"train_s": t_train - t_all, "probe_s": t_probe - t_train, "emergence_s": t_snap - t_probe,
                   "figures_s": t_fig - t_snap, "total_s": time.perf_counter() - t_all},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "machine": platform.machine(), "device": str(cfg.device)},
        "checkpoint": str(run_dir / "checkpoint.pt"),
        "figures": figs,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")

    # 6. Summary.
    print()
    print(rep.table())
    print()
    tr = res.final
    print(f"trained   {tr['tokens']:,} tokens in {tr['train_seconds']:.1f} s ({tr['tokens_per_s']:,.0f} tokens/s)")
    if ev is not None:
        print(f"loss      {ev['mean_loss']:.5f} nats/token vs optimal {ev['mean_optimal']:.5f}; worst position "
              f"ratio {ev['worst_ratio']:.5f}")
    print(f"probe     {s['layer']}: MSE {s['mse']:.3e} (unweighted), R² {s['r2_weighted']:.5f} (prob-weighted), "
          f"CV {s['cv_ratio']:.3f}x in-sample, shuffled {s['shuffle_ratio']:.0f}x worse")
    if rep.concat_name:
        c = rep.layers[rep.concat_name]
        print(f"concat    all layers ({c['uniform']['dims']} dims): MSE {c['uniform']['mse']:.3e}, "
              f"R² {c['prob']['r2']:.5f}, CV {c['uniform']['cv_ratio']:.3f}x")
    print(f"timing    probe {rep.timing['total_s']:.1f} s, snapshots {t_snap - t_probe:.1f} s, figures {t_fig - t_snap:.1f} s, "
          f"total {metrics['timing']['total_s']:.1f} s")
    if checks:
        ok = all(v[-1] for v in checks.values())
        print("targets   " + ", ".join(f"{k} {_fmt(v[0], '.4g')} {v[1]} {v[2]:g} {'ok' if v[3] else 'MISSED'}"
                                       for k, v in checks.items()))
        print(f"          {'all targets met' if ok else 'some targets missed'}")
    print(f"wrote     {run_dir / 'metrics.json'}, {run_dir / 'checkpoint.pt'}, {len(figs)} figure files in {fig_dir}")
    return 0
