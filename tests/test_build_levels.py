"""The CPU sources compile at every SIMD level a build may target, not only at the building
machine's: x86-64 (the portable build, COMPMECH_NATIVE=OFF: no AVX2), x86-64-v3 (AVX2 only) and
x86-64-v4 (AVX-512). Syntax and template instantiation only (``g++ -fsyntax-only``, seconds, not
a build); CI installs the native build. A header that declares something only inside an
``#if defined(__AVX2__)`` block once broke the portable build unnoticed."""
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "csrc" / "cpu").glob("*.cpp"))

pytestmark = pytest.mark.skipif(shutil.which("g++") is None or platform.machine() not in ("x86_64", "AMD64"),
                                reason="needs g++ on x86-64")


@pytest.mark.parametrize("march", ["x86-64", "x86-64-v3", "x86-64-v4"])
def test_cpu_sources_compile(march):
    flags = ["g++", "-std=gnu++17", "-fsyntax-only", f"-march={march}", "-Wno-psabi",
             f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'csrc' / 'include'}"]
    procs = [(src, subprocess.Popen(flags + [str(src)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
             for src in SOURCES]
    failed = []
    for src, p in procs:
        out, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            failed.append(f"{src.name}:\n" + "\n".join(line for line in out.splitlines() if "error" in line)[:2000])
    assert not failed, f"-march={march}: " + "\n".join(failed)
