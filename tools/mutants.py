#!/usr/bin/env python3
"""Mutation check: does the test suite notice planted one-line bugs?

    python tools/mutants.py                 # every Python mutant (a few minutes)
    python tools/mutants.py --cpp           # also the C++ kernel mutants (a rebuild each: slow)
    python tools/mutants.py --only ema_inverted next_token_order
    python tools/mutants.py --list

C++ mutants need CMake, a C++17 compiler and ``pip install pybind11`` in the environment.

Each mutant replaces one line of the package (an exact text match) in a *copy* of the
repository under a temporary directory, runs the test files relevant to it there (``pytest -x``),
and counts as killed when they fail. The working tree is never modified. Python mutants run
against the installed compiled modules (copied next to the mutated sources); C++ mutants
rebuild ``compmech._core`` and the GPU emulation ``compmech._cuda_emu`` in the copy with CMake
first. A mutant whose line no longer exists
(the code moved on) is reported as ``stale`` so the list can be updated. Not part of CI.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutant:
    name: str
    path: str        # file, relative to the repository root
    old: str         # exact text (one line or less) to replace; its first occurrence is used
    new: str
    tests: tuple     # test files (or node ids) that should catch it
    why: str = ""

    @property
    def cpp(self) -> bool:
        return self.path.startswith("csrc/")


T_TRAIN = ("tests/test_train.py", "tests/test_train_semantics.py")
T_DEMO = ("tests/test_cli_config.py", "tests/test_demo.py")

MUTANTS = [
    # ---- issue #14: trainer -----------------------------------------------------------------
    Mutant("distribution_targets_ignored", "compmech/train.py",
           'soft_targets=cfg.targets == "distribution")', "soft_targets=False)", T_TRAIN,
           "targets='distribution' silently falls back to sampled-token loss"),
    Mutant("grad_clip_removed", "compmech/_train_loop.py",
           "torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)", "pass", T_TRAIN),
    Mutant("ema_inverted", "compmech/_train_loop.py",
           "torch._foreach_lerp_(self._avg, self._live, 1.0 - min(self.decay, (1 + step) / (10 + step)))",
           "torch._foreach_lerp_(self._avg, self._live, min(self.decay, (1 + step) / (10 + step)))", T_TRAIN),
    Mutant("optimizer_step_removed", "compmech/_train_loop.py", "optimizer.step()", "pass",
           T_TRAIN + ("tests/test_demo.py",)),
    Mutant("eval_targets_shifted", "compmech/train.py",
           "b = _beliefs(process, seq[:, :n_in], dtype=np.float64)",
           "b = _beliefs(process, seq[:, 1:n_in + 1], dtype=np.float64)", T_TRAIN,
           "the periodic evaluation's targets shifted by one position"),
    Mutant("resume_ignored_in_train", "compmech/_run_dir.py",
           "    if resume and ck_path.exists():\n        return ck_path\n",
           "    if resume and ck_path.exists():\n        return None\n", T_TRAIN,
           "open_run_dir ignores the checkpoint: a resumed run silently starts over"),
    # ---- issue #14: demo and CLI ------------------------------------------------------------
    Mutant("demo_defaults_1M_token_targets", "compmech/experiment.py",
           '"tokens": 10_000_000, "targets": "distribution",', '"tokens": 1_000_000, "targets": "tokens",', T_DEMO),
    Mutant("toml_model_table_ignored", "compmech/commands/train.py",
           "d = merge_layer(d, load_config_file(args.config))",
           'd = merge_layer(d, {k: v for k, v in load_config_file(args.config).items() if k != "model"})',
           T_DEMO + ("tests/test_train.py",)),
    Mutant("cli_train_resume_ignored", "compmech/commands/train.py",
           "res = train(cfg, out, resume=args.resume,", "res = train(cfg, out, resume=False,", T_DEMO),
    Mutant("cli_demo_resume_ignored", "compmech/commands/demo.py",
           "exp = experiment.run(cfg, Path(run_dir), resume=args.resume,",
           "exp = experiment.run(cfg, Path(run_dir), resume=False,", T_DEMO),
    # ---- issue #14: estimates ---------------------------------------------------------------
    Mutant("mc_continuation_zero", "compmech/measures.py", "return total, se, L1, tail_err",
           "return 0.0, se, L1, tail_err", ("tests/test_measures.py",),
           "the Monte Carlo continuation of E returns 0"),
    Mutant("partial_sum_last_term_dropped", "compmech/measures.py",
           'geo = Measure("excess_entropy", float(d[:n].sum()) + tail,',
           'geo = Measure("excess_entropy", float(d[:n - 1].sum()) + tail,', ("tests/test_measures.py",)),
    Mutant("mc_path_last_exact_term_dropped", "compmech/measures.py",
           'mcm = Measure("excess_entropy", float(d.sum()) + mc,',
           'mcm = Measure("excess_entropy", float(d[:-1].sum()) + mc,', ("tests/test_measures.py",)),
    # ---- issue #14: probe -------------------------------------------------------------------
    Mutant("transformer_lens_wrong_embedding", "compmech/probe.py",
           'for n in ("blocks.0.hook_resid_pre", "hook_embed"):',
           'for n in ("hook_embed", "blocks.0.hook_resid_pre"):',
           ("tests/test_probe.py", "tests/test_probe_reference.py")),
    Mutant("summary_r2_uniform_as_weighted", "compmech/probe.py", '"r2_weighted": p["r2"]', '"r2_weighted": u["r2"]',
           ("tests/test_probe.py", "tests/test_probe_reference.py")),
    Mutant("summary_weighted_mse_as_unweighted", "compmech/probe.py", '"mse": u["mse"]', '"mse": p["mse"]',
           ("tests/test_probe.py", "tests/test_probe_reference.py")),
    # ---- issue #14: MSP tree and graph ------------------------------------------------------
    Mutant("next_token_probs_reversed", "compmech/msp_tree.py",
           "return back(np.asarray(beliefs, dtype=np.float64) @ Tw.T)",
           "return back(np.asarray(beliefs, dtype=np.float64) @ Tw.T[:, ::-1])",
           ("tests/test_core_msp_tree.py", "tests/test_msp_graph.py")),
    Mutant("state_distribution_off_by_one", "compmech/msp_graph.py", "for t in range(1, L + 1):\n            mu = Wt @ mu",
           "for t in range(0, L + 1):\n            mu = Wt @ mu", ("tests/test_msp_graph.py",)),
    # ---- further Python mutants -------------------------------------------------------------
    Mutant("soft_targets_shifted", "compmech/data.py",
           "b = _beliefs(p, seq[:, :n_in], dtype=np.float64) if n_in > 0",
           "b = _beliefs(p, seq[:, 1:n_in + 1], dtype=np.float64) if n_in > 0", ("tests/test_data.py",) + T_TRAIN,
           "training soft targets one position ahead"),
    Mutant("soft_targets_bos_not_stationary", "compmech/data.py",
           "b = np.concatenate([np.broadcast_to(p.stationary, (len(seq), 1, p.num_states)), b], 1)",
           "b = np.concatenate([b[:, :1], b], 1)", ("tests/test_data.py",) + T_TRAIN),
    Mutant("probe_prob_weights_uniform", "compmech/data.py", "            w = self.probs\n",
           "            w = self.multiplicity\n", ("tests/test_probe.py", "tests/test_probe_reference.py")),
    Mutant("warmup_off_by_one", "compmech/train.py", "return cfg.lr * (step + 1) / warm", "return cfg.lr * step / warm",
           T_TRAIN),
    Mutant("ghmm_w_ignored_in_predictive_entropy", "compmech/measures.py",
           "Tw = proc.token_weights.T.astype(bel.dtype)", "Tw = proc.T.sum(axis=2).T.astype(bel.dtype)",
           ("tests/test_measures.py",)),
    # ---- C++ kernels (opt-in: --cpp) --------------------------------------------------------
    Mutant("cpp_belief_norm_ignores_w", "csrc/include/compmech/kernels.hpp",
           "for (int j = 0; j < n; ++j) norm += out[j] * w[j];", "for (int j = 0; j < n; ++j) norm += out[j];",
           ("tests/test_core_beliefs.py", "tests/test_core_msp_tree.py")),
    Mutant("cpp_alias_swapped", "csrc/include/compmech/kernels.hpp",
           "e >> (frac < th_hi ? 0 : 16)", "e >> (frac < th_hi ? 16 : 0)",
           ("tests/test_core_sample.py",)),
    Mutant("cpp_categorical_no_subtract", "csrc/include/compmech/kernels.hpp", "      target -= px;\n", "\n",
           ("tests/test_core_sample.py",)),
    Mutant("cpp_tiny_norm_not_rescaled", "csrc/include/compmech/kernels.hpp", "  if (norm < kTinyNorm) {\n    ",
           "  if (norm < 0) {\n    ", ("tests/test_core_beliefs.py", "tests/test_core_errors.py")),
    Mutant("cpp_logprob_tiny_halved", "csrc/include/compmech/kernels.hpp", "extra += log(norm);",
           "extra += 0.5 * log(norm);", ("tests/test_core_errors.py", "tests/test_cuda.py"),
           "the GPU log-probability accumulator (run through the emulation) for subnormal probabilities"),
    Mutant("cpp_gpu_belief_norm_ignores_w", "csrc/include/compmech/kernels.hpp",
           "if (j < S) norm += out[j] * w[j];", "if (j < S) norm += out[j];", ("tests/test_cuda.py",),
           "the padded (GPU) belief step ignores w for GHMMs"),
]


def _copy_tree(dst: Path):
    """Tracked and untracked-but-not-ignored files of the repository (no venv, no build dir)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for f in files:
        if not f or not (ROOT / f).is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)


def _compiled_modules() -> list[Path]:
    """The installed compiled extension modules (wherever the editable install put them)."""
    code = ("import importlib, compmech\n"
            "for m in ('_core', '_cuda_emu', '_cuda'):\n"
            "    try: print(importlib.import_module('compmech.' + m).__file__)\n"
            "    except ImportError: pass\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [Path(p) for p in out.split()]


# Runs pytest with the copy's `compmech` first: an editable install's import redirector (a
# meta-path finder) would otherwise send `import compmech` back to the working tree.
_RUNNER = ("import sys\n"
           "sys.meta_path[:] = [f for f in sys.meta_path if 'compmech' not in repr(f).lower()\n"
           "                    and 'scikitbuild' not in type(f).__name__.lower()]\n"
           "sys.path.insert(0, sys.argv[1])\n"
           "import compmech, pytest\n"
           "assert compmech.__file__.startswith(sys.argv[1]), compmech.__file__\n"
           "sys.exit(pytest.main(sys.argv[2:]))\n")


def _build_core(copy: Path, log):
    try:
        import pybind11
    except ImportError:
        raise SystemExit("--cpp rebuilds the extension with CMake: `pip install pybind11` first") from None

    build = copy / "_mutant_build"
    cfg = ["cmake", "-S", str(copy), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DCOMPMECH_CUDA=OFF",
           f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"]
    subprocess.run(cfg, check=True, stdout=log, stderr=subprocess.STDOUT)
    # the CPU core and the GPU emulation (csrc/include is shared by both; tests/test_cuda.py
    # runs the CUDA kernels' code through the emulation)
    for target in ("_core", "_cuda_emu"):
        subprocess.run(["cmake", "--build", str(build), "--target", target, "-j", str(os.cpu_count() or 1)],
                       check=True, stdout=log, stderr=subprocess.STDOUT)
        so = next(build.glob(f"{target}.*so"))
        for old in (copy / "compmech").glob(f"{target}.*so"):
            old.unlink()
        shutil.copy2(so, copy / "compmech" / so.name)


def run_mutant(m: Mutant, modules, timeout: float, verbose: bool) -> tuple[str, float, str]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
        copy = Path(tmp)
        _copy_tree(copy)
        src = copy / m.path
        text = src.read_text()
        if m.old not in text:
            return "stale", time.perf_counter() - t0, f"text not found in {m.path}"
        src.write_text(text.replace(m.old, m.new, 1))
        for so in modules:
            shutil.copy2(so, copy / "compmech" / so.name)
        log_path = copy / "mutant.log"
        with open(log_path, "w") as log:
            if m.cpp:
                try:
                    _build_core(copy, log)
                except subprocess.CalledProcessError:
                    return "killed (build failed)", time.perf_counter() - t0, log_path.read_text()[-2000:]
            cmd = [sys.executable, "-c", _RUNNER, str(copy), "-x", "-q", "-p", "no:cacheprovider",
                   "-o", "addopts=", *m.tests]
            env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
            if m.cpp or not any(so.name.startswith("_cuda.") for so in modules):
                env["COMPMECH_CUDA"] = "OFF"  # the tested build has no CUDA kernels (tests skip their check)
            try:
                rc = subprocess.run(cmd, cwd=copy, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                    env=env).returncode
            except subprocess.TimeoutExpired:
                return "timeout", time.perf_counter() - t0, ""
        out = log_path.read_text()
        if rc == 0:
            status = "SURVIVED"
        elif rc == 1:
            status = "killed"
        else:
            status = f"error (pytest exit {rc})"
        lines = out.splitlines()  # the failing tests' names first, then their first error lines
        tail = "\n".join(([l for l in lines if l.startswith(("FAILED", "ERROR"))]
                          + [l for l in lines if l.startswith("E ")])[:6])
        return status, time.perf_counter() - t0, tail if verbose or rc > 1 else tail.split("\n")[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpp", action="store_true", help="also run the C++ kernel mutants (rebuild each)")
    ap.add_argument("--only", nargs="*", help="run only these mutants")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per mutant's test run")
    ap.add_argument("--no-control", action="store_true",
                    help="skip the control run (the unmutated copy must pass the selected tests)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    todo = [m for m in MUTANTS if (args.cpp or not m.cpp) and (not args.only or m.name in args.only)]
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:40s} {m.path:40s} {' '.join(m.tests)}")
        return 0
    modules = _compiled_modules()
    if not args.no_control:
        tests = tuple(dict.fromkeys(t for m in todo for t in m.tests))
        control = Mutant("control (no mutation)", "README.md", "", "", tests)
        status, secs, detail = run_mutant(control, modules, args.timeout, True)
        print(f"{'passed' if status == 'SURVIVED' else status:24s} {control.name:40s} {secs:6.1f} s  {detail}", flush=True)
        if status != "SURVIVED":
            print("the unmutated copy fails its tests: fix that first")
            return 2
    results = []
    for m in todo:
        status, secs, detail = run_mutant(m, modules, args.timeout, args.verbose)
        results.append((m, status))
        print(f"{status:24s} {m.name:40s} {secs:6.1f} s  {detail}", flush=True)
    live = [r for r in results if r[1] != "stale"]
    killed = sum(1 for _, s in live if s.startswith("killed") or s.startswith("error"))
    print(f"\nkilled {killed} of {len(live)} mutants"
          + (f" ({len(results) - len(live)} stale)" if len(live) < len(results) else ""))
    survivors = [m.name for m, s in live if not (s.startswith("killed") or s.startswith("error"))]
    if survivors:
        print("survived: " + ", ".join(survivors))
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
