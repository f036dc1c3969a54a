"""``compmech probe CHECKPOINT [--out DIR]``: fit belief-state probes to a trained model.

Runs the model on every context of its process (all ``V**ctx`` inputs), regresses each
residual-stream layer and all layers concatenated onto the ground-truth beliefs (float64 affine
least squares, unweighted and probability-weighted), with k-fold cross-validation split by input
sequence and a shuffled-belief control; prints a table and writes ``probe.json`` and figures."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="fit belief-state probes to a trained model checkpoint", description=__doc__)
    p.add_argument("checkpoint", help="checkpoint.pt or a snapshot written by `compmech train`/`demo`")
    p.add_argument("--out", help="directory for probe.json and figures (default: beside the checkpoint)")
    p.add_argument("--layers", nargs="*", help="activation names (default: embed, every resid_mid/post, ln_final)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--shuffles", type=int, default=10, help="shuffle-control repeats (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all usable cores)")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=run)


def run_probe(model, cfg, *, folds=5, shuffles=10, seed=0, layers=None, device="cpu"):
    from ..data import PrefixSet
    from ..probe import probe_model

    proc = cfg.make_process()
    prefixes = PrefixSet.build(proc, cfg.ctx, bos=cfg.bos)
    rep = probe_model(model, proc, prefixes=prefixes, names=layers, device=device, cv_folds=folds,
                      shuffles=shuffles, seed=seed)
    return rep, prefixes


def write_probe_figures(rep, out_dir: Path, *, title: str, ev=None) -> list[str]:
    from ..plot import experiment as ex

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    paths += ex.save(ex.geometry_panels(rep, suptitle=title), out_dir / "geometry")
    paths += ex.save(ex.main_figure(rep, ev, title=title), out_dir / "main")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.5), dpi=150)
    ex.probe_errors(rep, ax=ax)
    paths += ex.save(fig, out_dir / "probe_errors")
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=150)
    ex.layer_fits(rep, ax=ax)
    paths += ex.save(fig, out_dir / "layers")
    if rep.concat_name:
        fig = ex.geometry_panels(rep, layer=rep.concat_name, suptitle=f"{title}: all layers concatenated")
        paths += ex.save(fig, out_dir / "geometry_concat")
    return paths


def run(args) -> int:
    import torch

    from ..train import default_threads, load_model

    torch.set_num_threads(args.threads or default_threads())
    t0 = time.perf_counter()
    model, cfg, ck = load_model(args.checkpoint, device=args.device)
    rep, _ = run_probe(model, cfg, folds=args.folds, shuffles=args.shuffles, seed=args.seed,
                       layers=args.layers, device=args.device)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    print(rep.table())
    s = rep.summary()
    print(f"\nfinal layer {s['layer']}: MSE (unweighted) {s['mse']:.3e}, R² (prob-weighted) {s['r2_weighted']:.5f}, "
          f"CV/in-sample {s['cv_ratio']:.3f}, shuffled/in-sample {s['shuffle_ratio']:.1f}x")
    if rep.concat_name:
        c = rep.layers[rep.concat_name]
        print(f"all layers concatenated: MSE {c['uniform']['mse']:.3e}, R² {c['prob']['r2']:.5f}")
    print(f"probe time {rep.timing['total_s']:.2f} s ({rep.timing['activations_s']:.2f} s activations, "
          f"{rep.timing['fit_s']:.2f} s fits)")
    d = rep.to_dict()
    d.update({"checkpoint": str(args.checkpoint), "step": ck["step"], "tokens": ck["tokens"]})
    (out / "probe.json").write_text(json.dumps(d, indent=2, default=_json_default) + "\n")
    if not args.no_figures:
        paths = write_probe_figures(rep, out / "figures", title=f"{cfg.process} after {ck['tokens']:,} tokens")
        print(f"figures in {out / 'figures'} ({len(paths)} files)")
    print(f"wrote {out / 'probe.json'} in {time.perf_counter() - t0:.1f} s")
    return 0


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
