"""Helpers shared by subcommands: process selection from ``NAME --param value`` pairs, and
output paths checked before the work that they are for."""
from __future__ import annotations

import json
from pathlib import Path


def parse_params(pairs: list[str]) -> dict:
    """``["x=0.05", "alpha=0.85"]`` → ``{"x": 0.05, "alpha": 0.85}`` (ints/floats parsed; a value
    starting with ``[`` or ``{`` is JSON, e.g. ``processes=["mess3", "rrxor"]`` for a mixture)."""
    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise ValueError(f"process parameter {item!r} must look like name=value")
        key, val = item.split("=", 1)
        if val.lstrip()[:1] in ("[", "{"):
            try:
                out[key] = json.loads(val)
            except json.JSONDecodeError as e:
                raise ValueError(f"process parameter {key}: {val!r} is not valid JSON ({e.msg})") from None
            continue
        for conv in (int, float):
            try:
                out[key] = conv(val)
                break
            except ValueError:
                continue
        else:
            out[key] = val
    return out


def add_param_arg(p) -> None:
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                   help="process parameter, repeatable (e.g. -p x=0.05 -p alpha=0.85; lists as JSON: "
                        "-p 'processes=[\"mess3\", \"rrxor\"]')")


def add_process_args(p) -> None:
    p.add_argument("process", nargs="?", default="mess3", help="process name (see compmech.processes.names())")
    add_param_arg(p)


def process_from_args(args):
    from .. import processes

    return processes.get(args.process, **parse_params(args.param))


def output_file(path, flag: str, suffixes=None) -> None:
    """Refuse an output file that could not be written, before the (possibly long) work that
    produces it: a directory, a missing parent directory, or a suffix outside ``suffixes``
    (``"figure"``: the formats matplotlib can save; no suffix means matplotlib's default)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: directory {parent} does not exist")
    if suffixes == "figure":
        from matplotlib.backend_bases import FigureCanvasBase

        suffixes = ["." + ext for ext in FigureCanvasBase.get_supported_filetypes()]
        if not p.suffix:
            return
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} must end in {', '.join(sorted(suffixes))}; got {path!r}")
