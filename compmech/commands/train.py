"""``compmech train [--config FILE] --out DIR [overrides]``: train a model on a process.

The configuration is a :class:`compmech.train.TrainConfig`, read from a JSON or TOML file
(``--config``) and/or overridden on the command line (``--set key=value``, repeatable; nested
model fields as ``model.d_model=128``). ``--resume`` continues from ``DIR/checkpoint.pt``;
a directory that already holds a run needs ``--resume`` or ``--overwrite``."""
from __future__ import annotations

import json
from pathlib import Path

from ._params import add_param_arg, parse_params


def load_config_file(path) -> dict:
    """A JSON or TOML file → dict (TOML needs Python >= 3.11 or the ``tomli`` package)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"config file {path} is not a file")
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # pragma: no cover - Python < 3.11
            import tomli as tomllib
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path}: invalid TOML ({exc})") from None
    else:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path}: invalid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"config file {path} must hold a table of fields, not a {type(d).__name__}")
    return d


def merge_layer(d: dict, layer: dict) -> dict:
    """``d`` updated by ``layer``; a layer that changes the process but gives no parameters
    resets them (the previous process's parameters would not fit the new one)."""
    out = dict(d)
    if "process" in layer and "process_params" not in layer and layer["process"] != d.get("process"):
        out.pop("process_params", None)
    out.update(layer)
    return out


def apply_overrides(base: dict, pairs) -> dict:
    """``["lr=0.01", "model.d_model=128", "bos=true"]`` applied to a config dict (top-level
    fields first, as one layer, then nested ones such as ``process_params.p=0.3``)."""
    top, nested = {}, []
    for key, val in parse_params(pairs).items():
        if isinstance(val, str) and val.lower() in ("true", "false"):
            val = val.lower() == "true"
        elif isinstance(val, str) and val.lower() in ("none", "null"):
            val = None
        if "." in key:
            nested.append((key, val))
        else:
            top[key] = val
    out = merge_layer(json.loads(json.dumps(base)), top)
    for key, val in nested:
        *parents, leaf = key.split(".")
        d = out
        for p in parents:
            if d.get(p) is None:
                d[p] = {}
            d = d[p]
            if not isinstance(d, dict):
                raise ValueError(f"--set {key}: {p} is not a table of fields")
        d[leaf] = val
    return out


def add_common_train_args(p) -> None:
    p.add_argument("--config", help="TrainConfig as a JSON or TOML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set lr=0.01 --set model.n_layers=2")
    p.add_argument("--tokens", type=float, help="training budget in predicted tokens (e.g. 2e7)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="torch device: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all usable cores)")
    p.add_argument("--data", choices=["exact", "stream"], help="exact: all sequences by probability; stream: fresh samples")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier run's files in --out and start afresh")


def config_from_args(args, base: dict) -> "TrainConfig":
    """Layers, later ones winning: ``base`` → ``--config`` file → flags → ``--set``."""
    from ..train import TrainConfig

    d = dict(base)
    if args.config:
        d = merge_layer(d, load_config_file(args.config))
    flags = {}
    for attr in ("tokens", "batch_size", "lr", "seed", "device", "threads", "data", "compile"):
        v = getattr(args, attr, None)
        if v is not None:
            flags[attr] = v
    if "tokens" in flags:
        t = flags["tokens"]
        if not (t == t and abs(t) != float("inf")) or t != int(t):
            raise ValueError(f"--tokens must be a whole number of tokens, got {t!r}")
        flags["tokens"] = int(t)
    d = merge_layer(d, flags)
    d = apply_overrides(d, args.set)
    return TrainConfig.from_dict(d)


def check_out_dir(path) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; give a directory")
    return path


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a transformer (or GRU/LSTM) on a process", description=__doc__)
    add_common_train_args(p)
    p.add_argument("--process", help="process name (default mess3)")
    add_param_arg(p)
    p.add_argument("--out", required=True, help="run directory (config.json, metrics.jsonl, checkpoints)")
    p.set_defaults(func=run)


def run(args) -> int:
    base = {}
    if args.process:
        base["process"] = args.process
        base["process_params"] = parse_params(args.param)
    elif args.param:
        base["process_params"] = parse_params(args.param)
    cfg = config_from_args(args, base)
    out = check_out_dir(args.out)
    cfg.make_process()  # a bad process or parameter fails here, before the start line
    from ..experiment import json_dump
    from ..train import train

    print(f"training {cfg.process} {cfg.process_params}: {cfg.steps:,} steps x {cfg.tokens_per_step:,} tokens "
          f"= {cfg.steps * cfg.tokens_per_step:,} tokens -> {out}")
    res = train(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    f = res.final
    print(f"trained {f['tokens']:,} tokens in {f['train_seconds']:.1f} s ({f['tokens_per_s']:,.0f} tokens/s)")
    if "eval" in f:
        ev = f["eval"]
        if ev.get("exact", True):
            print("loss / optimum per position: " + " ".join(f"{r:.5f}" for r in ev["ratio"]))
            print(f"worst ratio {ev['worst_ratio']:.5f}")
        else:  # estimated on sampled sequences: with its standard error
            print(f"loss / optimum per position (estimated on {ev['sequences']:,} sampled sequences, ± one "
                  f"standard error): " + " ".join(f"{r:.5f}±{e:.1g}" for r, e in zip(ev["ratio"], ev["ratio_se"])))
            print(f"worst ratio {ev['worst_ratio']:.5f} ± {ev['worst_ratio_se']:.1g}")
    json_dump(f, out / "final.json")
    print(f"checkpoint {out / 'checkpoint.pt'}")
    return 0
