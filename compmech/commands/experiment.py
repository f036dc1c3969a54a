"""``compmech experiment NAME [--out DIR]``: one follow-up experiment in one command — train,
probe, analyse, figures, ``metrics.json`` (with ``targets`` and ``analysis`` blocks) in DIR.

NAME: mess3 and rrxor (as ``compmech demo``), tom_quantum, post_quantum, fanizza (GHMM belief
geometry), factored (a product of processes; default Mess3 x Mess3), mixture (in-context
learning; default three Mess3 variants). Components are configurable, e.g.
``--set 'process_params={"processes": ["mess3", {"name": "rrxor"}]}'``. The experiment is
:mod:`compmech.followup`; this command only parses arguments."""
from __future__ import annotations

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
    add_common_train_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import followup
    from .demo import start

    cfg, run_dir = start(args, followup.EXPERIMENTS[args.name], args.name, f"experiment {args.name}")
    exp = followup.run(args.name, cfg, Path(run_dir), resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress, emergence_depth=args.emergence_depth,
                       probe_sequences=args.probe_sequences)
    print()
    print(followup.report(exp))
    return 0
