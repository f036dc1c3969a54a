"""compmech bench: the machinery at tiny sizes (every workload and implementation runs), the
JSON schema, the plot, ratios computed from the measured values, resume and Ctrl-C, and every
baseline computing what the compmech call it stands against computes. No timing is asserted."""
from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

import compmech as cm
from compmech.bench import baselines as bl
from compmech.bench import run
from compmech.bench.report import SCHEMA, load_json, ratios, table
from compmech.bench.runner import Measurement
from compmech.bench.workloads import SUITES, cases
from compmech.cli import main

HAS_JAX = bl.jax_available()


@pytest.fixture(scope="module")
def tiny():
    # JAX compiles per shape (seconds each): its column is run through the machinery separately
    return run("all", device="cpu", mode="tiny", threads=[1, 2], use_jax=False)


def test_every_workload_and_implementation_runs(tiny):
    errors = [(m.case, m.impl, m.error) for m in tiny.measurements if m.error]
    assert not errors
    seen = {(m.workload, m.process) for m in tiny.measurements}
    assert seen == {(w, p) for w in SUITES["all"] for p in ("mess3", "random_s12_v4")}
    kinds = {m.kind for m in tiny.measurements}
    assert {"compmech", "numpy", "torch", "bound"} <= kinds
    assert {m.impl for m in tiny.measurements if m.kind == "compmech"} == {"compmech 1t", "compmech 2t"}
    for m in tiny.measurements:
        assert m.times_s and all(t > 0 for t in m.times_s)
        assert m.items > 0 and m.rate == pytest.approx(m.items / statistics.median(m.times_s))


@pytest.mark.skipif(not HAS_JAX, reason="JAX not installed")
def test_jax_column_runs():
    res = run("core", device="cpu", mode="tiny", threads=[1], processes=["mess3"], workloads=["beliefs"])
    jax = [m for m in res.measurements if m.kind == "jax"]
    assert len(jax) == 1 and jax[0].error is None and jax[0].rate > 0
    assert any(r["vs"] == "jax" for r in res.ratios())


def test_ratios_are_computed_from_measured_rates(tiny):
    rs = ratios(tiny.measurements)
    assert rs
    by = {(m.case, m.impl): m for m in tiny.measurements}
    for r in rs:
        ours = [m for m in tiny.measurements if m.case == r["case"] and m.kind == "compmech" and m.device == r["device"]]
        best = max(ours, key=lambda m: m.rate)
        assert r["compmech"] == best.impl and r["compmech_rate"] == best.rate
        assert r["vs_rate"] == by[(r["case"], r["vs"])].rate
        assert r["ratio"] == pytest.approx(best.rate / r["vs_rate"])
    # every baseline of every case got a ratio
    others = {(m.case, m.impl) for m in tiny.measurements if m.kind != "compmech"}
    assert others == {(r["case"], r["vs"]) for r in rs}


def test_bound_bytes_match_the_output(tiny):
    m = next(m for m in tiny.measurements if m.workload == "beliefs" and m.process == "mess3" and m.kind == "bound")
    assert m.bound_bytes == 8 * 5 * 3 * 4  # B * L * S float32
    s = next(m for m in tiny.measurements if m.workload == "sample" and m.kind == "bound")
    assert s.bound_bytes == 8 * 5  # uint8 tokens


def test_table_lists_every_workload_with_ratio_columns(tiny):
    t = tiny.table()
    for w in SUITES["all"]:
        assert f"\n{w}: " in "\n" + t
    assert "vs numpy" in t and "of bound" in t and "compmech 2t" in t
    assert "err" not in t.split()


def test_json_schema_and_roundtrip(tiny, tmp_path):
    p = tmp_path / "b.json"
    tiny.save_json(p)
    doc = load_json(p)
    assert doc["schema"] == SCHEMA and doc["interrupted"] is False
    mach = doc["machine"]
    for k in ("cpu", "cpu_simd_flags", "compmech_simd", "threads", "gpus", "versions", "blas_env"):
        assert k in mach
    assert mach["versions"]["numpy"] == np.__version__ and mach["versions"]["compmech-hmm"] == cm.__version__
    assert doc["command"]["mode"] == "tiny" and doc["command"]["threads"] == [1, 2]
    r0 = doc["results"][0]
    for k in ("case", "workload", "process", "size", "unit", "items", "impl", "kind", "device", "threads",
              "times_s", "median_s", "rate", "bound_bytes", "error"):
        assert k in r0
    back = [Measurement.from_dict(r) for r in doc["results"]]
    assert [m.rate for m in back] == [m.rate for m in tiny.measurements]
    assert doc["ratios"] == json.loads(json.dumps(ratios(back)))


def test_plot_is_written(tiny, tmp_path):
    from compmech.bench.report import plot

    p = tmp_path / "b.png"
    plot([m for m in tiny.measurements if m.workload in SUITES["core"]], p)
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _cli(tmp_path, *extra):
    return ["bench", "--mode", "tiny", "--suite", "core", "--workload", "beliefs", "--process", "mess3",
            "--threads", "1", "--no-jax", "--device", "cpu", *extra]


def test_cli_writes_table_json_plot(tmp_path, capsys):
    j, p = tmp_path / "r.json", tmp_path / "r.png"
    assert main(_cli(tmp_path, "--json", str(j), "--plot", str(p))) == 0
    out = capsys.readouterr().out
    assert "beliefs:" in out and "compmech 1t" in out and "vs numpy" in out
    doc = load_json(j)
    assert {r["impl"] for r in doc["results"]} == {"compmech 1t", "numpy", "torch", "bound"}
    assert p.stat().st_size > 0


def test_cli_resume_reuses_saved_measurements(tmp_path):
    j = tmp_path / "r.json"
    assert main(_cli(tmp_path, "--json", str(j))) == 0
    first = {r["impl"]: r["times_s"] for r in load_json(j)["results"]}
    # resume with a wider request: the saved cells are kept, only the new thread count is measured
    argv = _cli(tmp_path, "--json", str(j), "--resume")
    argv[argv.index("--threads") + 1] = "1,2"
    assert main(argv) == 0
    again = {r["impl"]: r["times_s"] for r in load_json(j)["results"]}
    assert set(again) == set(first) | {"compmech 2t"}
    assert all(again[k] == v for k, v in first.items())


def test_ctrl_c_saves_what_was_measured(tmp_path, monkeypatch, capsys):
    import compmech.bench.runner as runner

    real, calls = runner.measure, []

    def measure(case, impl, mode):
        calls.append(impl.label)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(case, impl, mode)

    monkeypatch.setattr(runner, "measure", measure)
    j = tmp_path / "r.json"
    assert main(_cli(tmp_path, "--json", str(j))) == 130
    doc = load_json(j)
    assert doc["interrupted"] is True and len(doc["results"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_failing_implementation_is_recorded_not_raised():
    cs = cases("core", "tiny", ["cpu"], threads=[1], use_jax=False, processes=["mess3"], workloads=["sample"])
    bad = cs[0].impls[1]
    bad.make = lambda d: (lambda: 1 / 0)
    from compmech.bench.runner import run_cases

    ms, interrupted = run_cases(cs, "tiny", progress=False)
    assert not interrupted
    err = [m for m in ms if m.error]
    assert len(err) == 1 and err[0].error.startswith("ZeroDivisionError") and err[0].rate is None
    assert "err" in table(ms) and "ZeroDivisionError" in table(ms)


@pytest.mark.parametrize("argv, msg", [
    (["--threads", "x"], "--threads"),
    (["--threads", "0"], "--threads"),
    (["--plot", "a.txt"], "--plot"),
    (["--resume"], "--resume needs --json"),
    (["--workload", "nope"], "unknown workload"),
])
def test_cli_bad_arguments_one_line(argv, msg, capsys):
    assert main(["bench", "--mode", "tiny", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_cli_cuda_without_gpu_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--mode", "tiny", "--device", "cuda"]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err


def test_bad_suite_and_mode():
    with pytest.raises(ValueError, match="suite"):
        cases("nope")
    with pytest.raises(ValueError, match="mode"):
        cases("all", "huge")
    with pytest.raises(ValueError, match="process"):
        cases("core", "tiny", processes=["nope"])


def test_blas_env_warning(monkeypatch):
    from compmech.bench.machine import blas_env_warning

    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert blas_env_warning() is None
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert "env -u OPENBLAS_CORETYPE" in blas_env_warning()


# ---- the baselines compute what compmech computes -------------------------------------------

PROCS = [cm.processes.mess3(0.05, 0.85), cm.processes.random_hmm(5, 3, seed=2)]


@pytest.mark.parametrize("proc", PROCS, ids=["mess3", "random"])
def test_belief_baselines_match_compmech(proc):
    import torch

    tok = cm.sample(proc, 64, 12, seed=3)
    ref_b, ref_lp = cm.beliefs(proc, tok, dtype=np.float64), cm.log_prob(proc, tok)
    np.testing.assert_allclose(bl.beliefs_numpy(proc.T, proc.stationary, tok), ref_b, atol=1e-6)
    np.testing.assert_allclose(bl.log_prob_numpy(proc.T, proc.stationary, tok), ref_lp, rtol=1e-10)
    T, init, tt = torch.tensor(proc.T), torch.tensor(proc.stationary), torch.from_numpy(tok)
    np.testing.assert_allclose(bl.beliefs_torch(T, init, tt).numpy(), ref_b, atol=1e-6)
    np.testing.assert_allclose(bl.log_prob_torch(T, init, tt).numpy(), ref_lp, rtol=1e-10)
    if HAS_JAX:
        import jax.numpy as jnp

        args = (jnp.asarray(proc.T, jnp.float32), jnp.asarray(proc.stationary, jnp.float32), jnp.asarray(tok))
        np.testing.assert_allclose(np.asarray(bl.beliefs_jax()(*args)), ref_b, atol=1e-4)
        np.testing.assert_allclose(np.asarray(bl.log_prob_jax()(*args)), ref_lp, rtol=1e-4)


@pytest.mark.parametrize("proc", PROCS, ids=["mess3", "random"])
def test_msp_baselines_count_the_same_nodes(proc):
    import torch

    depth = 5
    tree = cm.msp_tree(proc, depth)
    n = sum(len(tree.level(k)) for k in range(1, depth + 1))
    assert bl.msp_numpy(proc.T, proc.stationary, depth) == n
    assert bl.msp_torch(torch.tensor(proc.T), torch.tensor(proc.stationary), depth) == n
    if HAS_JAX:
        import jax.numpy as jnp

        assert bl.msp_jax()(jnp.asarray(proc.T), jnp.asarray(proc.stationary), depth) == n


def test_msp_graph_baseline_finds_the_same_states():
    proc = cm.processes.rrxor()
    g = cm.msp(proc)
    ref = bl.msp_graph_numpy(proc, 10_000)
    assert len(ref) == g.num_states == 36
    d = np.abs(ref[:, None, :] - g.beliefs[None, :, :]).max(2)
    assert (d.min(1) < 1e-8).all()


def test_probe_baselines_match_belief_probe():
    import torch

    from compmech.probe import BeliefProbe

    rng = np.random.default_rng(0)
    X, Y, w = rng.standard_normal((300, 6)), rng.random((300, 3)), rng.random(300)
    p = BeliefProbe().fit(X, Y, sample_weight=w)
    ref = np.vstack([p.coef_, p.intercept_])
    np.testing.assert_allclose(bl.probe_fit_numpy(X, Y, w), ref, atol=1e-10)
    np.testing.assert_allclose(bl.probe_fit_torch(*(torch.from_numpy(a) for a in (X, Y, w))).numpy(), ref, atol=1e-10)
    if HAS_JAX:
        import jax.numpy as jnp

        got = np.asarray(bl.probe_fit_jax()(jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32),
                                            jnp.asarray(w, jnp.float32)))
        np.testing.assert_allclose(got, ref, atol=1e-3)


@pytest.mark.parametrize("proc", PROCS, ids=["mess3", "random"])
def test_sample_baselines_draw_from_the_process(proc):
    """Shape, dtype, only possible sequences, and token frequencies near the stationary ones."""
    import torch

    B, L = 4000, 8
    q = proc.stationary @ proc.T.sum(2).T  # P(token) at any position (stationary start)
    outs = [bl.sample_numpy(proc.T, proc.stationary, B, L, 1)]
    P, init = bl.sample_tables_torch(proc.T, proc.stationary)
    outs.append(bl.sample_torch(P, init, B, L, proc.num_states, torch.Generator().manual_seed(1)).numpy())
    if HAS_JAX:
        import jax

        S, V = proc.num_states, proc.vocab_size
        cdf = np.cumsum(proc.T.transpose(1, 0, 2).reshape(S, V * S), 1)
        outs.append(np.asarray(bl.sample_jax()(jax.random.PRNGKey(1), cdf.astype(np.float32),
                                               np.cumsum(proc.stationary).astype(np.float32), B, L)))
    for tok in outs:
        assert tok.shape == (B, L) and tok.dtype == np.uint8
        assert np.isfinite(cm.log_prob(proc, tok)).all()
        freq = np.bincount(tok.ravel(), minlength=proc.vocab_size) / tok.size
        # 5 sigma of the mean of B*L tokens, with a 4x allowance for correlation along a row
        assert np.abs(freq - q).max() < 5 * math.sqrt(4 * 0.25 / (B * L))
