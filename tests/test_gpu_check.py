"""benchmarks/gpu_check.sh, run here in its dry-run mode (the CPU emulation stands in for the
GPU): every step runs, at most 8 files come back, the summary tells the story on its own."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_DEADLINE="240", GPU_CHECK_QUICK="1")
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(out)], env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files
    assert {"summary.txt", "build.log", "smoke.txt", "tests.txt", "bench.txt", "sanitize.txt"} <= set(files)
    summary = (out / "summary.txt").read_text()
    # the console ends with the summary, one line per step
    assert proc.stdout.rstrip().endswith(summary.rstrip())
    for step in ("build", "smoke", "tests", "bench", "memcheck", "racecheck", "synccheck"):
        assert any(line.startswith(step) for line in summary.splitlines()), (step, summary)
    assert "DRY RUN" in summary
    assert "smoke: all kernels ok (emulation)" in (out / "smoke.txt").read_text()
    assert (out / "sanitize.txt").read_text().count("sanitize: ok") == 3
    assert "FAILED" not in summary


def test_gpu_check_is_valid_bash():
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)
