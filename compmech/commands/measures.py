"""``compmech measures NAME -p k=v ...``: computational-mechanics measures of a named process
(entropy rate, excess entropy, statistical complexity, crypticity, transient and
synchronisation information, Markov and cryptic orders), exact when its mixed-state
presentation is finite, estimates with error bars otherwise."""
from __future__ import annotations

import json
import math
import time

import numpy as np

from .._json import dumps
from ._params import add_process_args, process_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("measures", help="print the computational-mechanics measures of a process",
                       description=__doc__)
    add_process_args(p)
    p.add_argument("--max-states", type=int, default=100_000,
                   help="largest mixed-state graph to explore before treating the MSP as infinite (default 100000)")
    p.add_argument("--tol", type=float, default=1e-9, help="belief merging tolerance (max-norm, default 1e-9)")
    p.add_argument("--tokens", type=int, default=1 << 23,
                   help="Monte Carlo tokens for estimates on infinite MSPs (default 2^23)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo estimates (default 0)")
    p.add_argument("--myopic", type=int, default=0, metavar="L",
                   help="also print h_mu(L) and the block entropy H(L) for L = 1..L")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _num(v):
    v = float(v)
    return None if math.isnan(v) else ("inf" if v == math.inf else v)


def run(args) -> int:
    from .. import measures as M

    if not 1e-15 <= args.tol < 1:
        raise ValueError(f"--tol must be in [1e-15, 1) (beliefs are float64; below 1e-15 merging finds only exact "
                         f"duplicates and the search slows down quadratically), got {args.tol!r}")
    for name in ("max_states", "tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.myopic < 0:
        raise ValueError(f"--myopic must be >= 0, got {args.myopic}")
    proc = process_from_args(args)
    t0 = time.perf_counter()
    s = M.summary(proc, max_states=args.max_states, tol=args.tol, seed=args.seed, max_tokens=args.tokens)
    dt = time.perf_counter() - t0
    my = M.myopic_entropy(proc, args.myopic, max_states=args.max_states, tol=args.tol) if args.myopic > 0 else None
    if args.json:
        out = {"process": proc.name, "params": vars(args).get("param", []), "msp_states": s.msp_states,
               "msp_complete": s.msp_complete, "msp_finite": s.msp_finite, "seconds": dt,
               "measures": {k: {"value": _num(m.value), "exact": m.exact,
                                "error": None if m.exact else _num(m.error), "units": m.units,
                                "method": m.method, "note": m.note} for k, m in s.measures.items()}}
        if my is not None:
            out["myopic_entropy"] = {"value": np.asarray(my.value).tolist(), "exact": my.exact,
                                     "error": np.asarray(my.error).tolist()}
        print(dumps(out, indent=2))
        return 0
    print(s.table())
    notes = sorted({m.note for m in s.measures.values() if m.note})
    for n in notes:
        print(f"  note: {n}")
    if my is not None:
        H = np.concatenate([[0.0], np.cumsum(my.value)])
        print(f"\n  {'L':>5s} {'h_mu(L) bits':>14s} {'H(L) bits':>12s}")
        for L in range(1, args.myopic + 1):
            err = "" if float(my.error[L - 1]) == 0 else f" ± {float(my.error[L - 1]):.1e}"
            print(f"  {L:>5d} {float(my.value[L - 1]):>14.8f} {H[L]:>12.6f}{err}")
    print(f"\n  ({dt:.2f} s)")
    return 0
