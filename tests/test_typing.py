"""The typed surface: py.typed ships, the compiled modules' stubs match their signatures, the
version is stated once, and the README's stable API list names only things that exist.

Regenerate the stubs after changing a binding: ``python tests/test_typing.py --write``."""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "compmech"
# stub file -> module it describes; _cuda (built only with nvcc) has _cuda_emu's interface and
# its stub re-exports _cuda_emu's
STUBS = {"_core": "compmech._core", "_cuda_emu": "compmech._cuda_emu"}
CUDA_STUB = '"""compmech CUDA kernels: the same interface as the emulation module."""\nfrom ._cuda_emu import *\n'

_TYPES = [
    (r"typing\.SupportsInt \| typing\.SupportsIndex", "int"),
    (r"typing\.SupportsFloat \| typing\.SupportsIndex", "float"),
    (r"numpy\.typing\.NDArray\[numpy\.(\w+)\]", r"npt.NDArray[np.\1]"),
    (r"numpy\.ndarray", "np.ndarray"),
]


def _signatures(mod):
    """``name -> (signature text, pybind docstring's first line)`` of every function."""
    out = {}
    for n in sorted(dir(mod)):
        obj = getattr(mod, n)
        if n.startswith("__") or not callable(obj):
            continue
        first = obj.__doc__.splitlines()[0]
        sig = first[len(n):]
        for pat, rep in _TYPES:
            sig = re.sub(pat, rep, sig)
        doc = "\n".join(obj.__doc__.splitlines()[1:]).strip()
        out[n] = (sig, doc)
    return out


def render(mod_name: str) -> str:
    mod = importlib.import_module(mod_name)
    lines = [f'"""{mod.__doc__}"""' if mod.__doc__ else '"""Compiled compmech module."""',
             "# Generated from the module's pybind11 signatures: python tests/test_typing.py --write",
             "import numpy as np", "import numpy.typing as npt", ""]
    for n in sorted(dir(mod)):
        obj = getattr(mod, n)
        if not n.startswith("__") and not callable(obj) and not isinstance(obj, type(sys)):
            lines.append(f"{n}: {type(obj).__name__}")
    lines.append("")
    for n, (sig, doc) in _signatures(mod).items():
        lines.append(f"def {n}{sig}:")
        lines.append(f'    """{doc}"""' if doc else "    ...")
        lines.append("")
    if any("collections.abc." in line for line in lines[5:]):  # pybind11's name for std::vector arguments
        lines.insert(2, "import collections.abc")
    return "\n".join(lines).rstrip() + "\n"


def _parse(path: Path):
    tree = ast.parse(path.read_text())
    funcs = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            names = [x.arg for x in a.args]
            defaults = [ast.literal_eval(d) for d in a.defaults]
            funcs[node.name] = (names, defaults)
    attrs = {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)}
    return funcs, attrs


def _expected(mod_name):
    """What the stub must declare: parsed from the stub this module renders to now."""
    mod = importlib.import_module(mod_name)
    funcs = {}
    for node in ast.parse(render(mod_name)).body:
        if isinstance(node, ast.FunctionDef):
            funcs[node.name] = ([x.arg for x in node.args.args], [ast.literal_eval(d) for d in node.args.defaults])
    attrs = {n for n in dir(mod) if not n.startswith("__") and not callable(getattr(mod, n))}
    return funcs, attrs


@pytest.mark.parametrize("stub", sorted(STUBS))
def test_stub_matches_compiled_module(stub):
    path = PKG / f"{stub}.pyi"
    assert path.exists(), f"missing {path.name}: run python tests/test_typing.py --write"
    got_f, got_a = _parse(path)
    want_f, want_a = _expected(STUBS[stub])
    assert got_f == want_f, f"{path.name} is out of date: run python tests/test_typing.py --write"
    assert got_a == want_a


def test_cuda_stub_reexports_the_emulation_interface():
    assert (PKG / "_cuda.pyi").read_text() == CUDA_STUB


def test_py_typed_marker_is_packaged():
    """The marker and stubs sit in the package directory, which the wheel copies whole
    (scikit-build-core ``wheel.packages``)."""
    assert (PKG / "py.typed").exists()
    assert re.search(r'^wheel\.packages = \["compmech"\]', (ROOT / "pyproject.toml").read_text(), re.M)


def test_version_is_stated_once():
    import compmech
    from compmech._version import __version__

    assert compmech.__version__ == __version__ == importlib.metadata.version("compmech-hmm")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert not re.search(r"^version\s*=", pyproject, re.M)
    hits = [p for p in PKG.rglob("*.py") if re.search(r'^__version__\s*=\s*"', p.read_text(), re.M)]
    assert [p.name for p in hits] == ["_version.py"]


def _stable_api():
    """Names in the README's "Stable API" section: ``module: name, name, ...`` lines."""
    text = (ROOT / "README.md").read_text()
    sec = text.split("## Stable API", 1)[1].split("\n## ", 1)[0]
    out = []
    for m in re.finditer(r"^- `([\w.]+)`: (.+)$", sec, re.M):
        out += [(m.group(1), n.strip(" `.")) for n in m.group(2).split(",")]
    return out


def test_stable_api_list_exists_in_code():
    api = _stable_api()
    assert len(api) > 30
    for mod_name, name in api:
        mod = importlib.import_module(mod_name)
        obj = mod
        for part in name.split("."):
            obj = getattr(obj, part, None)
            assert obj is not None, f"README stable API names {mod_name}.{name}, which does not exist"


if __name__ == "__main__" and "--write" in sys.argv:
    for stub, mod in STUBS.items():
        (PKG / f"{stub}.pyi").write_text(render(mod))
        print(f"wrote compmech/{stub}.pyi")
    (PKG / "_cuda.pyi").write_text(CUDA_STUB)
