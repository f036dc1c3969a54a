"""``compmech probe CHECKPOINT [--out DIR]``: fit belief-state probes to a trained model.

Runs the model on every context of its process (all ``V**ctx`` inputs), regresses each
residual-stream layer and all layers concatenated onto the ground-truth beliefs (float64 affine
least squares, unweighted and probability-weighted), with k-fold cross-validation split by input
sequence and a shuffled-belief control; prints a table and writes ``probe.json`` and figures."""
from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="fit belief-state probes to a trained model checkpoint", description=__doc__)
    p.add_argument("checkpoint", help="checkpoint.pt or a snapshot written by `compmech train`/`demo`")
    p.add_argument("--out", help="directory for probe.json and figures (default: beside the checkpoint)")
    p.add_argument("--layers", nargs="*", help="activation names (default: embed, every resid_mid/post, ln_final)")
    p.add_argument("--folds", type=int, help="cross-validation folds (default 5, or the number of input "
                                              "subtrees where there are fewer)")
    p.add_argument("--shuffles", type=int, default=10, help="shuffle-control repeats (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all usable cores)")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..experiment import json_dump, probe_prefixes, run_probe, write_probe_figures
    from ..train import default_threads, load_model

    if args.folds is not None and args.folds < 2:
        raise ValueError(f"--folds must be >= 2 (k-fold cross-validation), got {args.folds}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.layers == []:
        raise ValueError("--layers needs at least one activation name (omit it for the default layers)")
    if args.shuffles < 1:
        raise ValueError(f"--shuffles must be >= 1 (the shuffled-belief control), got {args.shuffles}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory")
    _check_device(args.device)
    torch.set_num_threads(args.threads or default_threads())
    t0 = time.perf_counter()
    model, cfg, ck = load_model(args.checkpoint, device=args.device)
    prefixes = probe_prefixes(cfg)[0]
    if prefixes.n_subtrees < 2:
        raise ValueError(f"{cfg.process}: every input starts with the same {prefixes.group_depth} tokens (one "
                         f"subtree), so the probe's cross-validation by subtree has nothing to hold out")
    folds = 5 if args.folds is None else args.folds
    if folds > prefixes.n_subtrees:  # CV deals whole subtrees into folds; more used to be dropped silently
        if args.folds is not None:
            raise ValueError(f"--folds {folds}: cross-validation splits the inputs by subtree (their first "
                             f"{prefixes.group_depth} tokens) and there are {prefixes.n_subtrees}; use at most "
                             f"{prefixes.n_subtrees} folds")
        folds = prefixes.n_subtrees
    rep, _ = run_probe(model, cfg, folds=folds, shuffles=args.shuffles, seed=args.seed,
                       layers=args.layers, device=args.device, prefixes=prefixes)
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
    d.update({"checkpoint": str(args.checkpoint), "step": ck["step"], "tokens": ck["tokens"], "cv_folds": folds,
              "shuffles": args.shuffles, "seed": args.seed})
    json_dump(d, out / "probe.json")
    if not args.no_figures:
        paths = write_probe_figures(rep, out / "figures", title=f"{cfg.process} after {ck['tokens']:,} tokens")
        print(f"figures in {out / 'figures'} ({len(paths)} files)")
    print(f"wrote {out / 'probe.json'} in {time.perf_counter() - t0:.1f} s")
    return 0


def _check_device(device: str):
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a torch device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r} requested but torch sees no CUDA GPU")
