"""`compmech sweep` on a LocalCluster of 2 worker processes: every result present, a killed
worker's run retried, a broken config recorded as failed, a rerun skips everything."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("pyarrow")

from compmech.scale import sweep

TOML = """
[sweep]
out = "{out}"
figures = false

[base]
tokens = 3000
batch_size = 32
ctx = 4
snapshots = 0
log_every = 5
save_every = 10
targets = "distribution"
[base.model]
n_layers = 1
d_model = 16
n_heads = 1
d_head = 8
d_mlp = 32

[grid]
seed = [0, 1]
"model.n_layers" = [1, 2]

[[points]]
[[points]]
process = "no_such_process"
[[points]]
tokens = 60000
seed = 7
"""


def _spec(tmp_path, text=TOML):
    f = tmp_path / "s.toml"
    f.write_text(text.format(out=tmp_path / "out"))
    return f, sweep.load_sweep(f)


def test_expand_grid_points_and_hashes(tmp_path):
    _, spec = _spec(tmp_path)
    pts = sweep.expand(spec)
    # 3 list entries x 4 grid combinations (the broken process collapses to distinct configs too)
    assert len(pts) == 12
    names = [p.name for p in pts]
    assert len(set(names)) == 12
    good = [p for p in pts if p.config["process"] == "mess3"]
    assert {(p.config["seed"], p.config["model"]["n_layers"]) for p in good[:4]} == {(0, 1), (0, 2), (1, 1), (1, 2)}
    assert all(p.config["process_params"] == {} for p in pts if p.config["process"] == "no_such_process")
    # Same resolved config -> same hash, whatever the file order.
    assert sweep.expand(spec)[0].name == pts[0].name
    bad = json.loads(json.dumps(spec))
    bad["points"] = [{"lr": -1.0}]
    assert all(p.error and "lr" in p.error for p in sweep.expand(bad))


def test_base_takes_dotted_keys_and_is_checked_up_front(tmp_path):
    """[base] accepts the grid's dotted keys ("model.n_layers" = 1 used to make every point fail
    with "unknown TrainConfig fields: ['model.n_layers']"), and an invalid base is one error when
    the file is read, not a failed run per point."""
    text = TOML.replace('ctx = 4\n', 'ctx = 4\n"model.act" = "gelu"\n"process_params.x" = 0.1\n', 1)
    _, spec = _spec(tmp_path, text)
    pts = sweep.expand(spec)
    assert not any(p.error for p in pts)
    assert all(p.config["model"]["act"] == "gelu" and p.config["model"]["d_model"] == 16 for p in pts)
    assert all(p.config["process_params"] == {"x": 0.1} for p in pts if p.config["process"] == "mess3")
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[sweep]\nout = "{tmp_path / "badout"}"\n[base]\nlr = -1.0\n[grid]\nseed = [0, 1]\n')
    with pytest.raises(ValueError, match=r"\[base\].*lr must be > 0"):
        sweep.load_sweep(bad)
    r = subprocess.run([sys.executable, "-m", "compmech.cli", "sweep", str(bad)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "lr must be > 0" in r.stderr
    assert not (tmp_path / "badout").exists()


@pytest.mark.slow
def test_sweep_runs_retries_records_failures_and_skips(tmp_path):
    from dask.distributed import Client, LocalCluster

    f, spec = _spec(tmp_path)
    spec["grid"] = {"seed": [0, 1]}  # 2 quick runs + 2 broken + 1 long (killed once) = small and fast
    spec["points"] = [{}, {"process": "no_such_process"}, {"tokens": 20000}]
    pts = sweep.expand(spec)
    long_pt = next(p for p in pts if p.config["tokens"] == 20000 and p.config["seed"] == 0)
    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            Client(cl) as client:
        import threading

        killed = {}

        def killer():
            key = f"sweep-{long_pt.name}"
            attempts = out / "runs" / long_pt.name / "attempts.jsonl"
            deadline = time.time() + 60
            while time.time() < deadline and not killed:
                proc = client.processing()
                for addr, keys in proc.items():
                    if key in keys and attempts.exists() and (out / "runs" / long_pt.name / "metrics.jsonl").exists():
                        pid = client.run(os.getpid, workers=[addr])[addr]
                        os.kill(pid, signal.SIGKILL)
                        killed["pid"] = pid
                        return
                time.sleep(0.05)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        rows = sweep.run_sweep(spec, client=client, threads_per_run=1, progress=False)
        t.join(1)
    assert killed, "the long run was never seen running"
    by = {r["run"]: r for r in rows}
    assert len(rows) == len(pts) == 6
    ok = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 4 and len(failed) == 2
    for r in failed:
        assert "no_such_process" in (r["error"] or "")
        tb = json.loads((out / "runs" / r["run"] / "failed.json").read_text())["traceback"]
        assert "Traceback" in tb
    attempts = (out / "runs" / long_pt.name / "attempts.jsonl").read_text().splitlines()
    assert len(attempts) >= 2, "the killed worker's run was not retried"
    assert by[long_pt.name]["status"] == "done"
    for r in ok:
        rd = out / "runs" / r["run"]
        for fname in ("config.json", "metrics.jsonl", "checkpoint.pt", "final.json", "probe.json", "result.json"):
            assert (rd / fname).exists(), fname
        assert r["probe_mse"] > 0 and r["worst_loss_ratio"] > 0.9
        assert r["config.seed"] in (0, 1)
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results.parquet")
    assert table.num_rows == 6 and "config.model.n_layers" in table.column_names
    assert (out / "results.csv").read_text().count("\n") == 7
    assert (out / "summary.png").exists()
    # Second invocation: nothing to run (no cluster is even started), same table.
    rows2 = sweep.run_sweep(spec, client="tcp://127.0.0.1:1", progress=False)  # would fail if it connected
    assert rows2 == rows
    st = sweep.status(spec)
    assert len(st["done"]) == 4 and len(st["failed"]) == 2 and not st["running"] and not st["pending"]


def test_cli_status_and_bad_file(tmp_path):
    f, spec = _spec(tmp_path)
    r = subprocess.run([sys.executable, "-m", "compmech.cli", "sweep", str(f), "--status"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "0 done" in r.stdout and "12 pending" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nseed = 3\n")
    r = subprocess.run([sys.executable, "-m", "compmech.cli", "sweep", str(bad)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "grid.seed must be a non-empty list" in r.stderr


def test_interrupted_run_resumes_from_checkpoint(tmp_path):
    """A run stopped mid-way (its checkpoint on disk) is continued, not restarted, and ends with
    the same losses as an uninterrupted run."""
    from compmech.train import TrainConfig, train

    cfg = TrainConfig.from_dict({"tokens": 2560, "batch_size": 32, "ctx": 4, "snapshots": 0, "log_every": 5,
                                 "save_every": 5, "model": {"n_layers": 1, "d_model": 16, "n_heads": 1,
                                                            "d_head": 8, "d_mlp": 32}})
    conf = {**cfg.to_dict(), "threads": None}
    h = sweep.config_hash(conf)
    rd = tmp_path / "run"
    train(TrainConfig.from_dict({**conf, "threads": 1}), rd, stop_at_step=10, progress=False)
    res = sweep.run_point(conf, str(rd), h, threads=1, probe=False, figures=False)
    assert res["status"] == "done" and res["resumed"] is True
    ref = sweep.run_point(conf, str(tmp_path / "ref"), h, threads=1, probe=False, figures=False)
    assert ref["resumed"] is False
    assert res["metrics"]["mean_loss"] == ref["metrics"]["mean_loss"]
    assert sweep.run_status(rd, h) == "done"
    assert sweep.run_point(conf, str(rd), h, threads=1, probe=False)["wall_seconds"] == res["wall_seconds"]
