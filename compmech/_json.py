"""Strict JSON for everything compmech writes: numpy scalars and arrays become plain numbers
and lists, and non-finite floats become ``null`` (``Infinity``/``NaN`` are not JSON, and other
parsers reject them; e.g. a loss ratio against an optimum of 0 for a deterministic process)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def finite(o):
    """``o`` with numpy types converted and every non-finite float replaced by ``None``."""
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return finite(o.tolist())
    if isinstance(o, (float, np.floating)):
        o = float(o)
        return o if math.isfinite(o) else None
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    return o


def dumps(obj, **kw) -> str:
    return json.dumps(finite(obj), allow_nan=False, **kw)


def dump(obj, path) -> None:
    """Write ``obj`` to ``path`` as indented strict JSON."""
    Path(path).write_text(dumps(obj, indent=2) + "\n")
