"""An interrupted or repeated run loses nothing and mixes nothing (issue 11, "Data loss")."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from compmech import experiment  # noqa: E402
from compmech.cli import main  # noqa: E402
from compmech._train_loop import _LossMeter  # noqa: E402
from compmech.train import TrainConfig, TrainingInterrupted, load_checkpoint, same_run, train  # noqa: E402

# 40 steps of a one-layer model on mess3 at context 4: a run takes well under a second.
TINY_RUN = dict(ctx=4, tokens=4 * 32 * 40, batch_size=32, lr=1e-2, log_every=5, snapshots=3, threads=1,
                warmup=0.1, model={"n_layers": 1, "d_model": 16, "d_head": 4, "d_mlp": 32})


def tiny_cfg(**kw):
    return TrainConfig(**{**TINY_RUN, **kw})


def losses(history):
    return [(r["step"], r["loss"]) for r in history]


def test_checkpoints_are_periodic_by_default():
    assert TrainConfig().save_seconds > 0  # a run that dies loses at most this much wall clock


def test_a_crash_mid_run_leaves_a_recent_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_add = _LossMeter.add

    def add(self, loss):
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("simulated crash")
        real_add(self, loss)

    monkeypatch.setattr(_LossMeter, "add", add)
    with pytest.raises(RuntimeError, match="simulated"):
        train(tiny_cfg(save_seconds=1e-9), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 12


def _interrupt_when_logged(path, stop: threading.Event, signum=signal.SIGINT):
    """Send ``signum`` to this process once ``path`` holds a metrics row."""
    def watch():
        while not stop.is_set():
            if path.exists() and path.stat().st_size > 0:
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_resume_reproduces_the_run(tmp_path, signum):
    cfg = tiny_cfg(tokens=4 * 32 * 400, snapshots=0, save_seconds=0)  # no periodic saves: only the signal's
    full = train(cfg, tmp_path / "full", progress=False, final_eval=False)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *a: None) for s in (signal.SIGINT, signal.SIGTERM)}  # stray-signal guard
    try:
        watcher = _interrupt_when_logged(tmp_path / "part" / "metrics.jsonl", stop, signum)
        with pytest.raises(TrainingInterrupted) as info:
            train(cfg, tmp_path / "part", progress=False, final_eval=False)
    finally:
        stop.set()
        watcher.join()
        for s, h in old.items():
            signal.signal(s, h)
    exc = info.value
    assert isinstance(exc, KeyboardInterrupt) and exc.signum == signum
    assert 5 <= exc.step < cfg.steps and "resume" in str(exc)
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["step"] == exc.step
    resumed = train(cfg, tmp_path / "part", resume=True, progress=False, final_eval=False)
    assert losses(resumed.history) == losses(full.history)  # bit for bit (same threads)
    for (n, p), (_, q) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), n


def test_ctrl_c_on_the_command_line_saves_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "compmech.cli", "train", "--out", str(out), "--no-progress", "--threads", "1",
           "--set", "ctx=4", "--set", "batch_size=32", "--set", "tokens=20000000", "--set", "log_every=5",
           "--set", "snapshots=0", "--set", "model.n_layers=1", "--set", "model.d_model=16",
           "--set", "model.d_head=4", "--set", "model.d_mlp=32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size > 0):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "checkpoint saved" in lines[0] and "--resume" in lines[0]
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert step >= 5
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] <= step


def test_resume_with_nothing_to_resume_refuses_and_keeps_the_log(tmp_path, capsys):
    with pytest.raises(ValueError, match="nothing to resume"):
        train(tiny_cfg(), tmp_path / "empty", resume=True, progress=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
    before = (run / "metrics.jsonl").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--set", "tokens=640"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and len(err.strip().splitlines()) == 1
    assert (run / "metrics.jsonl").read_bytes() == before


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path):
    cfg = tiny_cfg(save_every=10, snapshots=0)
    full = train(cfg, tmp_path / "full", progress=False, final_eval=False)
    train(cfg, tmp_path / "part", progress=False, stop_at_step=23, final_eval=False)
    log = tmp_path / "part" / "metrics.jsonl"
    with open(log, "a") as fh:
        fh.write('{"step": 25, "tokens": 3200, "loss": 0.8')  # killed mid-write
    with pytest.warns(UserWarning, match="incomplete last line"):
        resumed = train(cfg, tmp_path / "part", resume=True, progress=False, final_eval=False)
    assert losses(resumed.history) == losses(full.history)
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps == [r["step"] for r in full.history]
    # a bad line that is not the last one is an error naming the file and line
    log.write_text('{"step": 5}\nnot json\n{"step": 10}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2"):
        train(cfg, tmp_path / "part", resume=True, progress=False, final_eval=False)


def test_a_new_run_never_mixes_with_an_old_one(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(tokens=4 * 32 * 60, snapshots=6), run, progress=False, final_eval=False)
    old_snaps = {p.name for p in (run / "checkpoints").glob("step_*.pt")}
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny_cfg(), run, progress=False)
    new = tiny_cfg(snapshots=3)
    train(new, run, overwrite=True, progress=False, final_eval=False)
    snaps = {p.name for p in (run / "checkpoints").glob("step_*.pt")}
    assert snaps == {f"step_{s:07d}.pt" for s in [0, 1, 6, 40]} and snaps != old_snaps
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == new.steps and len(rows) == new.steps // new.log_every


def test_emergence_only_probes_the_runs_own_snapshots(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = tiny_cfg(snapshots=2)
    train(cfg, a, progress=False, final_eval=False)
    train(tiny_cfg(snapshots=2, seed=7), b, progress=False, final_eval=False)
    stray = b / "checkpoints" / "step_0000001.pt"
    (a / "checkpoints" / "step_0000001.pt").write_bytes(stray.read_bytes())  # another run's file
    snaps = experiment.probe_snapshots(a, cfg, depth=2)
    assert [st for _, st, _ in snaps] == [0, cfg.steps]


def test_thread_count_is_not_part_of_a_runs_identity(tmp_path):
    cfg = tiny_cfg(save_every=10, snapshots=0)
    train(cfg, tmp_path, progress=False, stop_at_step=20, final_eval=False)
    other = tiny_cfg(save_every=7, snapshots=0, threads=2, save_seconds=5.0)
    assert same_run(cfg, other)
    res = train(other, tmp_path, resume=True, progress=False, final_eval=False)
    assert res.final["steps"] == cfg.steps
    with pytest.raises(ValueError, match=r"differs in \['lr'\]"):
        train(tiny_cfg(lr=0.5, snapshots=0), tmp_path, resume=True, progress=False)


def test_demo_refuses_an_existing_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_cfg(), run, progress=False, final_eval=False)
    assert main(["demo", "--out", str(run), "--tokens", "1e3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_experiment_resume_finishes_an_interrupted_run(tmp_path):
    cfg = tiny_cfg(snapshots=2, save_every=10)
    train(cfg, tmp_path, progress=False, stop_at_step=15, final_eval=False)
    exp = experiment.resume(tmp_path, progress=False, emergence_depth=2, figures=False)
    assert exp.train.final["steps"] == cfg.steps
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["training"]["steps"] == cfg.steps and np.isfinite(m["probe"]["summary"]["mse"])
    assert "trained" in experiment.report(exp)
    # training time is the sum of the two sessions; resuming the finished run adds nothing to it
    tr = m["training"]
    assert [s["steps"] for s in tr["sessions"]] == [[0, 15], [15, cfg.steps]]
    assert tr["train_seconds"] == pytest.approx(sum(s["seconds"] for s in tr["sessions"]))
    assert min(s["seconds"] for s in tr["sessions"]) > 0
    experiment.resume(tmp_path, progress=False, emergence_depth=2, figures=False)
    again = json.loads((tmp_path / "metrics.json").read_text())["training"]
    assert again["train_seconds"] == tr["train_seconds"] and again["sessions"] == tr["sessions"]
    assert again["tokens_per_s"] == tr["tokens_per_s"]
    with pytest.raises(ValueError, match="nothing to resume"):
        experiment.resume(tmp_path / "nothing")


def test_resume_auto_continues_or_starts_but_never_mixes(tmp_path):
    cfg = tiny_cfg(snapshots=0, save_every=10)
    fresh = train(cfg, tmp_path / "a", resume="auto", progress=False, stop_at_step=20, final_eval=False)
    assert fresh.final["steps"] == 20
    cont = train(cfg, tmp_path / "a", resume="auto", progress=False, final_eval=False)
    assert cont.final["steps"] == cfg.steps and cont.history[0]["step"] == 5  # history kept
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.jsonl").write_text('{"step": 5}\n')  # died before its first checkpoint
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, tmp_path / "b", resume="auto", progress=False)
    with pytest.raises(ValueError, match="contradict"):
        train(cfg, tmp_path / "a", resume=True, overwrite=True, progress=False)


def test_sigterm_outside_training_is_one_line(capsys, monkeypatch):
    import compmech.commands.msp as msp_cmd

    def slow(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(msp_cmd, "run", slow)
    assert main(["msp", "mess3"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.strip() == "compmech msp: stopped by SIGTERM"
