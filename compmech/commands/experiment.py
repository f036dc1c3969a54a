"""``compmech experiment NAME [--out DIR]``: one follow-up experiment in one command — train,
probe, analyse, figures, ``metrics.json`` (with ``targets`` and ``analysis`` blocks) in DIR.

NAME: mess3 and rrxor (as ``compmech demo``), tom_quantum, post_quantum, fanizza (GHMM belief
geometry), factored (a product of processes; default Mess3 x Mess3), mixture (in-context
learning; default three Mess3 variants). Components are configurable:
``--components '["mess3", {"name": "mess3", "x": 0.15, "alpha": 0.6}]'`` (JSON list of process
names or {"name": ..., parameters}) or ``process_params.processes`` in a ``--config`` file. The experiment is
:mod:`compmech.followup`; this command only parses arguments."""
from __future__ import annotations

import json
from pathlib import Path

from .train import add_common_train_args


def add_parser(sub) -> None:
    from ..followup import EXPERIMENTS

    p = sub.add_parser("experiment", help="one follow-up experiment: GHMMs, factored processes, mixtures",
                       description=__doc__)
    p.add_argument("name", choices=list(EXPERIMENTS), help="which experiment")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--emergence-depth", type=int, default=8,
                   help="prefix length up to which training snapshots are probed (default 8)")
    p.add_argument("--probe-sequences", type=int,
                   help="sequences sampled for the probe when there are too many contexts to enumerate "
                        "(default 10,000)")
    p.add_argument("--components", help="factored/mixture: JSON list of processes, e.g. "
                                        "'[\"mess3\", {\"name\": \"rrxor\"}]'")
    add_common_train_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import followup
    from .demo import start

    base = dict(followup.EXPERIMENTS[args.name])
    if args.components is not None:
        if args.name not in ("factored", "mixture"):
            raise ValueError(f"--components applies to the factored and mixture experiments, not {args.name}")
        try:
            comps = json.loads(args.components)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--components must be a JSON list of processes: {exc}") from None
        if not isinstance(comps, list) or not comps:
            raise ValueError(f"--components must be a non-empty JSON list, got {args.components!r}")
        base["process_params"] = {"processes": comps}
    cfg, run_dir = start(args, base, args.name, f"experiment {args.name}")
    exp = followup.run(args.name, cfg, Path(run_dir), resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress, emergence_depth=args.emergence_depth,
                       probe_sequences=args.probe_sequences)
    print()
    print(followup.report(exp))
    return 0
