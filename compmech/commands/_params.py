"""Helpers shared by subcommands: process selection from ``NAME --param value`` pairs."""
from __future__ import annotations


def parse_params(pairs: list[str]) -> dict:
    """``["x=0.05", "alpha=0.85"]`` → ``{"x": 0.05, "alpha": 0.85}`` (ints/floats parsed)."""
    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise ValueError(f"process parameter {item!r} must look like name=value")
        key, val = item.split("=", 1)
        for conv in (int, float):
            try:
                out[key] = conv(val)
                break
            except ValueError:
                continue
        else:
            out[key] = val
    return out


def add_process_args(p) -> None:
    p.add_argument("process", nargs="?", default="mess3", help="process name (see compmech.processes.names())")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                   help="process parameter, repeatable (e.g. -p x=0.05 -p alpha=0.85)")


def process_from_args(args):
    from .. import processes

    return processes.get(args.process, **parse_params(args.param))
