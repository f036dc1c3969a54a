"""Name → constructor registry for the process library."""
from __future__ import annotations

import inspect
from typing import Callable

_REGISTRY: dict[str, Callable] = {}


def register(fn: Callable) -> Callable:
    """Decorator: make ``fn`` available as ``get(fn.__name__, **params)``."""
    _REGISTRY[fn.__name__] = fn
    return fn


def names() -> list[str]:
    """Registered process names, sorted."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> Callable:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown process {name!r}; known: {', '.join(names())}") from None


def get(name: str, **params):
    """Build the process registered as ``name`` with the given parameters (defaults otherwise)."""
    fn = _lookup(name)
    sig = inspect.signature(fn)
    unknown = [k for k in params if k not in sig.parameters]
    if unknown:
        raise TypeError(f"process {name!r} has no parameter(s) {unknown}; parameters: {list(sig.parameters)}")
    missing = [k for k, v in sig.parameters.items() if v.default is inspect.Parameter.empty and k not in params
               and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    if missing:
        raise TypeError(f"process {name!r} needs {', '.join(missing)} (no default); parameters: {list(sig.parameters)}")
    return fn(**params)


def describe(name: str) -> str:
    """Signature and docstring of a registered process."""
    fn = _lookup(name)
    return f"{name}{inspect.signature(fn)}\n{inspect.getdoc(fn) or ''}"
