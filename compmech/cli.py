"""``compmech`` command line. Each subcommand lives in ``compmech/commands/<name>.py`` and
defines ``add_parser(subparsers)`` (which sets ``func``); they are discovered automatically.

Errors are one line on stderr, never a traceback (``--debug`` shows it): exit status 2 for
bad input (usage errors), 1 for a failure while running, 130/143 when stopped by
SIGINT/SIGTERM (with how to resume, where there is something to resume)."""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shlex
import signal
import sys
import threading

from . import commands

# Exceptions that mean "the input was wrong" (exit status 2). Everything else is a failure (1).
_USAGE_ERRORS = (ValueError, TypeError, KeyError, LookupError, FileNotFoundError, IsADirectoryError,
                 NotADirectoryError, FileExistsError, OverflowError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, status 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="compmech", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        if not mod.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{mod}").add_parser(sub)
    for p in sub.choices.values():  # --debug also after the subcommand; SUPPRESS keeps the top-level value
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which handles it itself)."""


def _on_sigterm(signum, frame):
    raise _Terminated


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"unknown name {exc.args[0]!r}"
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, OverflowError):
        first += " (a numeric argument or parameter is too large)"
    return first if isinstance(exc, _USAGE_ERRORS) or not text else f"{type(exc).__name__}: {first}"


def _resume_hint(argv) -> str:
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return "compmech " + " ".join(shlex.quote(a) for a in args)


def _interrupted(exc: KeyboardInterrupt, command: str, argv) -> int:
    from ._run_dir import TrainingInterrupted

    signum = getattr(exc, "signum", signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT)
    name = signal.Signals(signum).name
    if isinstance(exc, TrainingInterrupted) and exc.checkpoint is not None:
        msg = (f"stopped by {name} at step {exc.step:,} of {exc.total:,}; checkpoint saved to {exc.checkpoint}; "
               f"resume with: {_resume_hint(argv)}")
    else:
        msg = f"stopped by {name}"
        if command in ("train", "demo", "experiment"):
            msg += f" (if a checkpoint was written, resume with: {_resume_hint(argv)})"
    print(f"compmech {command}: {msg}", file=sys.stderr)
    return 128 + int(signum)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        return _interrupted(exc, args.command, [a for a in argv if a != "--debug"])
    except BrokenPipeError:  # `compmech ... | head`: the reader left; stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush of stdout does not fail again
        return 128 + signal.SIGPIPE
    except Exception as exc:
        if args.debug:
            raise
        usage = isinstance(exc, _USAGE_ERRORS)
        hint = "" if usage else " (run with --debug for the traceback)"
        print(f"compmech {args.command}: error: {_one_line(exc)}{hint}", file=sys.stderr)
        return 2 if usage else 1
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
