"""Bad input gets one clear line and exit status 2, never a traceback (issue 11, "Clear errors
instead of tracebacks"), and changing the process resets its parameters."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.cli import main  # noqa: E402
from compmech.train import TrainConfig, train  # noqa: E402

TINY = ["--set", "model.n_layers=1", "--set", "model.d_model=8", "--set", "model.d_head=4",
        "--set", "model.d_mlp=16", "--set", "ctx=3", "--set", "batch_size=32", "--set", "snapshots=0", "--set", "tokens=960",
        "--threads", "1", "--no-progress"]


def one_line_error(capsys, argv, status=2):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == status, (argv, rc, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"compmech {argv[0]}: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(TrainConfig(ctx=3, tokens=960, batch_size=32, snapshots=0, threads=1,
                      model={"n_layers": 1, "d_model": 8, "d_head": 4, "d_mlp": 16}), run, progress=False)
    return run / "checkpoint.pt"


@pytest.mark.parametrize("argv, says", [
    (["--shuffles", "0"], "--shuffles"),
    (["--folds", "0"], "--folds"),
    (["--folds", "1"], "--folds"),
    (["--device", "bogus"], "not a torch device"),
    (["--folds", "28"], "at most 27 folds"),  # mess3 at ctx 3: 27 subtrees; 28 was silently cut to 27
    (["--seed", "-1"], "--seed must be >= 0"),  # was numpy's "expected non-negative integer"
    (["--layers"], "--layers needs at least one"),  # was "StopIteration", exit status 1
])
def test_probe_options_are_checked_before_any_work(capsys, checkpoint, argv, says):
    assert says in one_line_error(capsys, ["probe", str(checkpoint), "--no-figures", *argv])


def test_probe_records_its_cv_folds(tmp_path, capsys, checkpoint):
    out = tmp_path / "p"
    assert main(["probe", str(checkpoint), "--no-figures", "--folds", "27", "--shuffles", "1", "--out", str(out)]) == 0
    d = json.loads((out / "probe.json").read_text())
    assert (d["cv_folds"], d["shuffles"], d["seed"]) == (27, 1, 0)


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 50, "truncate"])
def test_corrupt_checkpoints_are_named_not_unpickled(tmp_path, capsys, checkpoint, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(checkpoint.read_bytes()[:300] if content == "truncate" else content)
    line = one_line_error(capsys, ["probe", str(bad)])
    assert "not a readable" in line and str(bad) in line and "weights_only" not in line


@pytest.mark.parametrize("command", ["train", "demo", "probe"])
def test_out_naming_a_file(tmp_path, capsys, checkpoint, command):
    f = tmp_path / "file"
    f.write_text("x")
    argv = {"train": ["train", "--out", str(f), *TINY], "demo": ["demo", "--out", str(f), *TINY],
            "probe": ["probe", str(checkpoint), "--out", str(f)]}[command]
    assert "is a file" in one_line_error(capsys, argv)


@pytest.mark.parametrize("setting, says", [
    ("device=bogus", "not a torch device"),
    ("betas=5", "betas"),
    ("batch_size=64.7", "batch_size must be an integer"),
    ("tokens=1e400", "tokens"),
    ("lr=nan", "lr must be a finite number"),
    ("ema=1.5", "ema"),
    ("bos=3", "bos must be true or false"),
    ("model.nosuch=1", "unknown model fields"),
    ("model.ctx=0", "set ctx"),       # was silently replaced by ctx=10: the run trained at ctx 10
    ("model.ctx=20", "set ctx"),
    ("model.vocab_size=5", "from the process"),
    ("model.out_vocab_size=2", "from the process"),
    ("model.n_layers=0", "n_layers must be >= 1"),
    ("process=nosuch", "unknown process"),
])
def test_config_errors_are_one_line(tmp_path, capsys, setting, says):
    assert says in one_line_error(capsys, ["train", "--out", str(tmp_path / "r"), *TINY, "--set", setting])
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_model_fields_are_checked_with_the_config():
    """A bad model field fails when the TrainConfig is made, not later when the model is built;
    a model.ctx equal to ctx is harmless and kept."""
    with pytest.raises(ValueError, match="ModelConfig.d_mlp must be >= 1"):
        TrainConfig(model={"d_mlp": 0})
    with pytest.raises(ValueError, match="model.ctx"):
        TrainConfig(ctx=4, model={"ctx": 10})
    assert TrainConfig(ctx=4, model={"ctx": 4}).model_config(cm.processes.mess3()).ctx == 4


def test_config_file_type_errors(tmp_path, capsys):
    for text, says in [('{"lr": "0.01"}', "lr must be a finite number"), ("[1, 2]", "table of fields"),
                       ("{not json", "invalid JSON")]:
        p = tmp_path / "c.json"
        p.write_text(text)
        assert says in one_line_error(capsys, ["train", "--config", str(p), "--out", str(tmp_path / "r")])
    p = tmp_path / "c.toml"
    p.write_text("lr = [")
    assert "invalid TOML" in one_line_error(capsys, ["train", "--config", str(p), "--out", str(tmp_path / "r")])


def test_cuda_without_a_gpu(tmp_path, capsys, checkpoint):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert "CUDA" in one_line_error(capsys, ["train", "--out", str(tmp_path / "r"), *TINY, "--device", "cuda"])
    assert "CUDA" in one_line_error(capsys, ["probe", str(checkpoint), "--device", "cuda"])


@pytest.mark.parametrize("argv, says", [
    (["measures", "post_quantum", "-p", "log_alpha=1e308"], ""),
    (["measures", "nosuch"], "unknown process"),
    (["measures", "golden_mean", "--tol", "1e-22"], "--tol"),
    (["measures", "golden_mean", "--tol", "nan"], "--tol"),
    (["measures", "golden_mean", "--max-states", "0"], "--max-states"),
    (["msp", "mess3", "--depth", "-1"], "depth"),
    (["train", "--out", "x", "--tokens", "64.5"], "--tokens"),
])
def test_bad_arguments_are_one_line(capsys, argv, says):
    assert says in one_line_error(capsys, argv)


@pytest.mark.parametrize("argv, says", [
    (["msp", "mess3", "--depth", "3", "--out", "{tmp}/fig.txt"], "--out must end in"),
    (["msp", "mess3", "--depth", "3", "--out", "{tmp}/missing/fig.png"], "does not exist"),
    (["msp", "mess3", "--depth", "3", "--out", "{tmp}"], "is a directory"),
    (["msp", "mess3", "--depth", "3", "--stream", "--out", "{tmp}/fig.txt"], "--out must end in"),
    (["bench", "--quick", "--plot", "{tmp}/missing/b.png"], "does not exist"),
    (["bench", "--quick", "--json", "{tmp}/missing/b.json"], "does not exist"),
])
def test_output_paths_are_checked_before_any_work(tmp_path, capsys, argv, says):
    """An unwritable figure or JSON path used to fail only after the whole enumeration or
    benchmark had run (the msp summary was printed, then the error)."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert says in one_line_error(capsys, argv)
    assert capsys.readouterr().out == "" and not list(tmp_path.iterdir())


def test_argparse_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["probe"])
    assert e.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", "--out", str(f)]) == 2
    for argv in (["--debug", "train", "--out", str(f)], ["train", "--out", str(f), "--debug"]):
        with pytest.raises(ValueError, match="is a file"):  # propagates: Python prints the traceback
            main(argv)


def test_train_refuses_a_process_before_starting(tmp_path, capsys):
    """A composite without its components is one line naming what it needs, before the start
    line and before the run directory exists."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--process", "mixture"]) == 2
    cap = capsys.readouterr()
    assert "needs processes" in cap.err and len(cap.err.strip().splitlines()) == 1
    assert "training" not in cap.out and not out.exists()


def test_a_deterministic_process_writes_strict_json(tmp_path, capsys):
    out = tmp_path / "det"
    assert main(["train", "--out", str(out), "--process", "coin", "-p", "p=1", "--set", "tokens=960",
                 "--set", "eval_every=5", "--set", "eval_sequences=64", *TINY]) == 0

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))

    final = strict((out / "final.json").read_text())
    assert final["eval"]["optimal"] == [0.0, 0.0, 0.0] and final["eval"]["ratio"] == [None] * 3
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict(line)
    capsys.readouterr()
    assert main(["measures", "coin", "-p", "p=1", "--json"]) == 0
    strict(capsys.readouterr().out)
    # one input subtree: the probe says why it cannot cross-validate (was "needs a positive total
    # sample weight" from inside the fit)
    assert main(["probe", str(out / "checkpoint.pt"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "one subtree" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("how", ["set", "toml", "api"])
def test_changing_the_process_resets_its_parameters(tmp_path, capsys, how):
    if how == "api":
        cfg = TrainConfig(process="rrxor")
        assert cfg.process_params == {} and cfg.make_process().num_states == 5
        assert TrainConfig().process_params == {"x": 0.05, "alpha": 0.85}  # the mess3 default is kept
        assert TrainConfig(process="mess3", process_params={"x": 0.1}).process_params == {"x": 0.1}
        return
    out = tmp_path / "r"
    if how == "set":
        # demo's base config carries mess3's parameters; naming another process drops them
        from compmech.cli import build_parser
        from compmech.commands.train import config_from_args
        from compmech.experiment import DEFAULTS

        args = build_parser().parse_args(["demo", "--set", "process=rrxor"])
        assert config_from_args(args, DEFAULTS["mess3"]).process_params == {}
        argv = ["train", "--out", str(out), *TINY, "--set", "tokens=480", "--set", "process=rrxor"]
    else:
        p = tmp_path / "c.toml"
        p.write_text('process = "rrxor"\ntokens = 480\n')
        argv = ["train", "--config", str(p), "--out", str(out), *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert saved["process"] == "rrxor" and saved["process_params"] == {}
    # explicit parameters in the same layer still apply
    assert main(["train", "--out", str(tmp_path / "s"), *TINY, "--set", "tokens=480", "--set", "process=golden_mean",
                 "--set", "process_params.p=0.3"]) == 0
    assert json.loads((tmp_path / "s" / "config.json").read_text())["process_params"] == {"p": 0.3}


def test_describe_unknown_process_is_a_value_error():
    with pytest.raises(ValueError, match="unknown process"):
        cm.processes.describe("nosuch")


def test_exit_status_1_for_failures_with_a_hint(capsys, monkeypatch):
    import compmech.commands.msp as msp_cmd

    def boom(args):
        raise RuntimeError("kernel failed\nsecond line")

    monkeypatch.setattr(msp_cmd, "run", boom)
    rc = main(["msp", "mess3"])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == ("compmech msp: error: RuntimeError: kernel failed "
                                       "(run with --debug for the traceback)")
    assert np.isfinite(rc)


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`compmech measures rrxor --json | head -3`: the reader leaves early. That printed
    "compmech measures: error: BrokenPipeError ..." and exit status 1; tools stop quietly."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "compmech.cli", "measures", "rrxor", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before anything is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 128 + 13 and err == "", err
