"""Experiment sweeps on Dask: ``compmech sweep SWEEP.toml``.

A sweep file names a base :class:`compmech.train.TrainConfig` and the points to run::

    [sweep]                      # optional: output directory, probe on/off, threads per run
    out = "sweeps/layers"
    [base]                       # TrainConfig fields (nested tables for model / process_params)
    tokens = 2_000_000
    [grid]                       # cartesian product of these overrides (dotted keys allowed)
    process = ["mess3", "rrxor"]
    seed = [0, 1]
    "model.n_layers" = [1, 2, 4]
    [[points]]                   # and/or an explicit list (each combined with every grid point)
    lr = 1e-3

Each point is one Dask task that trains into ``OUT/runs/<name>-<hash>/`` (the format of
``compmech train``: config.json, metrics.jsonl, checkpoint.pt, final.json) and probes the
model (probe.json, figures/). ``<hash>`` is the hash of the resolved config: a rerun skips
points whose ``result.json`` exists, resumes interrupted ones from their checkpoint and records
failures (``failed.json`` with the traceback) without stopping the others. At the end
``results.csv`` / ``results.parquet`` hold every config field and headline metric, and
``summary.png`` plots them.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULT, FAILED, ATTEMPTS = "result.json", "failed.json", "attempts.jsonl"


# ------------------------------------------------------------------------- the sweep file
@dataclass
class Point:
    name: str            # directory name: <slug>-<hash>
    config: dict         # resolved TrainConfig dict (or the raw overrides when invalid)
    overrides: dict      # what this point changes relative to the base
    error: str | None = None  # the config is invalid: recorded as failed without running
    traceback: str | None = None

    @property
    def hash(self) -> str:
        return self.name.rsplit("-", 1)[-1]


def _set_dotted(d: dict, key: str, val):
    *parents, leaf = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = val


def _flatten(d: dict, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _slug(over: dict) -> str:
    parts = []
    for k, v in _flatten(over).items():
        leaf = k.split(".")[-1]
        parts.append(f"{leaf}={v}" if not isinstance(v, str) else str(v))
    s = "_".join(parts) or "base"
    return "".join(c if c.isalnum() or c in "=._-" else "-" for c in s)[:60]


def load_sweep(path) -> dict:
    from ..commands.train import load_config_file

    spec = load_config_file(path)
    unknown = set(spec) - {"sweep", "base", "grid", "points"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)} (expected sweep, base, grid, points)")
    grid = spec.get("grid", {})
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"{path}: grid.{k} must be a non-empty list")
    if not isinstance(spec.get("points", []), list):
        raise ValueError(f"{path}: points must be an array of tables ([[points]])")
    if not isinstance(spec.get("base", {}), dict):
        raise ValueError(f"{path}: base must be a table of TrainConfig fields")
    base: dict = {}  # dotted keys ("model.n_layers" = 2) as in [grid] and --set
    for k, v in _flatten(spec.get("base", {})).items():
        _set_dotted(base, k, v)
    spec["base"] = base
    from ..train import TrainConfig

    try:  # every point starts from the base: an invalid one is one error here, not a failure per point
        TrainConfig.from_dict(json.loads(json.dumps(base)))
    except ValueError as exc:
        raise ValueError(f"{path}: [base]: {exc}") from None
    spec.setdefault("sweep", {})
    spec["sweep"].setdefault("out", str(Path(path).with_suffix("")))
    return spec


def expand(spec: dict) -> list[Point]:
    """Resolve every point: base + list entry + grid combination -> a TrainConfig dict."""
    from ..train import TrainConfig

    base = spec.get("base", {})
    grid = spec.get("grid", {})
    keys = list(grid)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))] or [{}]
    entries = spec.get("points") or [{}]
    points, seen = [], set()
    for entry in entries:
        for combo in combos:
            over: dict = {}
            for k, v in {**_flatten(entry), **combo}.items():
                _set_dotted(over, k, v)
            cfg = json.loads(json.dumps(base))
            for k, v in _flatten(over).items():
                _set_dotted(cfg, k, v)
            # A new process without its own parameters starts from that process's defaults.
            if "process" in over and "process_params" not in over and over["process"] != base.get("process"):
                cfg["process_params"] = {}
            error = None
            try:
                cfg = TrainConfig.from_dict(cfg).to_dict()
                cfg["threads"] = None  # chosen per worker; not part of the run's identity
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                tb = traceback.format_exc()
            h = config_hash(cfg)
            name = f"{_slug(over)}-{h}"
            if name in seen:
                continue
            seen.add(name)
            points.append(Point(name, cfg, over, error, tb if error else None))
    return points


# ------------------------------------------------------------------------- one run (a task)
def _atomic_json(path: Path, obj):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def run_status(run_dir: Path, h: str) -> str:
    """done / failed / running (started, not finished) / pending."""
    for fname, status in ((RESULT, "done"), (FAILED, "failed")):
        p = run_dir / fname
        if p.exists():
            try:
                if json.loads(p.read_text()).get("config_hash") == h:
                    return status
            except (OSError, ValueError):
                pass
    return "running" if (run_dir / ATTEMPTS).exists() else "pending"


def _headline(final: dict, report) -> dict:
    """The flat metrics of one run for the results table."""
    m = {"tokens_trained": final.get("tokens"), "train_seconds": final.get("train_seconds"),
         "tokens_per_s": final.get("tokens_per_s")}
    ev = final.get("eval")
    if ev:
        m["worst_loss_ratio"] = ev["worst_ratio"]
        m["mean_loss"] = float(np.mean(ev["loss"]))
        m["mean_optimal"] = float(np.mean(ev["optimal"]))
        for i, r in enumerate(ev["ratio"]):
            m[f"loss_ratio_pos{i}"] = r
    if report is not None:
        for k, v in report.summary().items():
            if k != "layer":
                m[f"probe_{k}"] = v
        for name, per_w in report.layers.items():
            u, p = per_w["uniform"], per_w["prob"]
            m[f"probe[{name}].mse"] = u["mse"]
            m[f"probe[{name}].r2"] = p["r2"]
            m[f"probe[{name}].cv_ratio"] = u["cv_ratio"]
            m[f"probe[{name}].shuffle_ratio"] = u["shuffle_ratio"]
    return m


def _figures(run_dir: Path, final: dict, report):
    import matplotlib

    matplotlib.use("Agg")
    from ..plot import experiment as figs

    fig = figs.main_figure(report, final.get("eval"), title=run_dir.name)
    figs.save(fig, run_dir / "figures" / "main")
    import matplotlib.pyplot as plt

    plt.close(fig)


def _pick_gpu(device: str):
    """On a LocalCluster with one worker per GPU (workers named 0..n-1), make worker i use GPU i
    as "cuda"; on other clusters each worker is expected to see its own GPU (CUDA_VISIBLE_DEVICES)."""
    if not str(device).startswith("cuda") or ":" in str(device):
        return
    try:
        from dask.distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return
    import torch

    if isinstance(name, int) and torch.cuda.device_count() > 1:
        torch.cuda.set_device(name % torch.cuda.device_count())


def run_point(config: dict, run_dir: str, h: str, threads: int, probe: bool = True, figures: bool = True) -> dict:
    """Train (resuming from a checkpoint if one exists), probe and record one sweep point.
    Never raises for a failing run: the traceback goes to ``failed.json``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if run_status(run_dir, h) == "done":
        return json.loads((run_dir / RESULT).read_text())
    t0 = time.time()
    resume = (run_dir / "checkpoint.pt").exists()
    with open(run_dir / ATTEMPTS, "a") as fh:  # one line per start: retries are visible
        fh.write(json.dumps({"start": t0, "pid": os.getpid(), "resume": resume}) + "\n")
    try:
        from ..train import TrainConfig, load_checkpoint, train

        if resume:  # the checkpoint's config (threads included) must match to resume
            threads = load_checkpoint(run_dir / "checkpoint.pt")["train_config"].get("threads", threads)
        cfg = TrainConfig.from_dict({**config, "threads": threads})
        _pick_gpu(cfg.device)
        # a run killed before its first checkpoint left files behind: start it again
        res = train(cfg, run_dir, resume=resume, overwrite=not resume, progress=False)
        (run_dir / "final.json").write_text(json.dumps(res.final, indent=2, default=float) + "\n")
        report = None
        if probe:
            from ..probe import probe_model

            report = probe_model(res.model, cfg.make_process(), ctx=cfg.ctx, bos=cfg.bos)
            _atomic_json(run_dir / "probe.json", {"summary": report.summary(), "layers": report.layers})
        if figures and report is not None:
            _figures(run_dir, res.final, report)
        out = {"status": "done", "config_hash": h, "wall_seconds": time.time() - t0, "resumed": resume,
               "metrics": _headline(res.final, report)}
        _atomic_json(run_dir / RESULT, out)
        (run_dir / FAILED).unlink(missing_ok=True)
        return out
    except Exception as exc:
        out = {"status": "failed", "config_hash": h, "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(), "wall_seconds": time.time() - t0}
        _atomic_json(run_dir / FAILED, out)
        return out


# ------------------------------------------------------------------------- the driver
def _local_cluster(n_points: int, threads_per_run: int | None, device: str):
    """A LocalCluster sized so that concurrent runs do not oversubscribe the cores: one worker
    process per concurrent run, one task at a time each, ``threads`` torch threads per run;
    with CUDA runs, one worker per GPU (worker resource ``GPU=1``)."""
    from dask.distributed import LocalCluster

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.startswith("cuda"):
        import torch

        n_gpu = torch.cuda.device_count()
        if n_gpu == 0:
            raise ValueError("the sweep asks for device cuda but torch sees no GPU")
        workers = min(n_gpu, n_points)
        threads = threads_per_run or max(1, cores // workers)
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            resources={"GPU": 1}), threads
    threads = threads_per_run or max(1, cores // max(1, min(n_points, cores)))
    workers = max(1, min(n_points, cores // threads))
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None), threads


def status(spec: dict) -> dict:
    out = Path(spec["sweep"]["out"])
    counts = {"done": [], "failed": [], "running": [], "pending": []}
    for p in expand(spec):
        st = "failed" if p.error and not (out / "runs" / p.name / RESULT).exists() else run_status(out / "runs" / p.name, p.hash)
        counts[st].append(p.name)
    return counts


def run_sweep(spec: dict, *, client=None, threads_per_run: int | None = None, progress: bool = True,
              retries: int = 2, retry_failed: bool = False) -> list[dict]:
    """Run every point not yet finished, as Dask tasks; returns one row per point (also
    written to ``results.csv`` / ``results.parquet``). Failed points are kept as failed on a
    rerun unless ``retry_failed``; ``retries``: how often Dask reruns a task whose worker died."""
    from dask.distributed import Client, as_completed

    opts = spec["sweep"]
    out = Path(opts["out"])
    (out / "runs").mkdir(parents=True, exist_ok=True)
    points = expand(spec)
    (out / "sweep.json").write_text(json.dumps({k: spec.get(k) for k in ("sweep", "base", "grid", "points")},
                                               indent=2, default=str) + "\n")
    results = {}
    todo = []
    for p in points:
        rd = out / "runs" / p.name
        if p.error:  # an invalid config fails here with a clear message, no task needed
            rd.mkdir(parents=True, exist_ok=True)
            results[p.name] = {"status": "failed", "config_hash": p.hash, "error": p.error,
                               "traceback": p.traceback}
            _atomic_json(rd / FAILED, results[p.name])
        elif run_status(rd, p.hash) == "done":
            results[p.name] = json.loads((rd / RESULT).read_text())
        elif run_status(rd, p.hash) == "failed" and not retry_failed:
            results[p.name] = json.loads((rd / FAILED).read_text())
        else:
            todo.append(p)
    if progress:
        done = sum(r["status"] == "done" for r in results.values())
        invalid = sum(bool(p.error) for p in points)
        print(f"sweep {out}: {len(points)} points, {done} done before, {len(results) - done - invalid} failed before, "
              f"{invalid} with an invalid config, {len(todo)} to run")
    if todo:
        own = client is None
        threads = threads_per_run
        device = str(opts.get("device", spec.get("base", {}).get("device", "cpu")))
        if own:
            cluster, threads = _local_cluster(len(todo), threads_per_run, device)
            client = Client(cluster)
        elif isinstance(client, str):
            client, own, cluster = Client(client), True, None
        threads = threads or int(opts.get("threads_per_run", 1))
        resources = {"GPU": 1} if device.startswith("cuda") else None
        try:
            futs = {client.submit(run_point, p.config, str(out / "runs" / p.name), p.hash, threads,
                                  bool(opts.get("probe", True)), bool(opts.get("figures", True)),
                                  key=f"sweep-{p.name}", retries=retries, resources=resources, pure=False): p
                    for p in todo}
            for i, fut in enumerate(as_completed(futs), 1):
                p = futs[fut]
                try:
                    results[p.name] = fut.result()
                    fut.release()  # else Dask recomputes it if the worker holding it dies later
                except Exception as exc:  # the worker died more often than allowed
                    results[p.name] = {"status": "failed", "config_hash": p.hash, "error": f"{type(exc).__name__}: {exc}",
                                       "traceback": traceback.format_exc()}
                    _atomic_json(out / "runs" / p.name / FAILED, results[p.name])
                if progress:
                    print(f"  [{i}/{len(todo)}] {p.name}: {results[p.name]['status']}"
                          + (f" ({results[p.name]['error']})" if results[p.name]["status"] == "failed" else ""))
        except KeyboardInterrupt:
            print("interrupted: finished runs are saved; rerun `compmech sweep` to resume")
            raise
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    for p in points:  # the run directories are the record (a task rerun elsewhere rewrote them)
        rd = out / "runs" / p.name
        for fname in (RESULT, FAILED):
            if (rd / fname).exists() and run_status(rd, p.hash) in ("done", "failed"):
                results[p.name] = json.loads((rd / fname).read_text())
                break
    rows = _table(points, results)
    write_results(out, rows, spec)
    return rows


def _table(points, results) -> list[dict]:
    rows = []
    for p in points:
        r = results.get(p.name, {"status": "pending"})
        row = {"run": p.name, "status": r.get("status"), "error": r.get("error"),
               "wall_seconds": r.get("wall_seconds")}
        row.update({f"config.{k}": (json.dumps(v) if isinstance(v, (list, tuple)) else v)
                    for k, v in _flatten(p.config).items()})
        row.update(r.get("metrics", {}))
        rows.append(row)
    return rows


def write_results(out: Path, rows: list[dict], spec: dict):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    cols = list(dict.fromkeys(k for r in rows for k in r))
    data = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        kinds = {type(v) for v in vals if v is not None}
        if kinds and not kinds <= {int, float, bool} and not kinds <= {str}:
            vals = [None if v is None else str(v) for v in vals]  # mixed column: keep it readable
        elif kinds == {int, float} or kinds == {float, int}:
            vals = [None if v is None else float(v) for v in vals]
        data[c] = vals
    table = pa.table(data)
    pq.write_table(table, out / "results.parquet")
    pacsv.write_csv(table, out / "results.csv")
    summary_figure(out, rows, spec)


def summary_figure(out: Path, rows: list[dict], spec: dict):
    """Headline metrics against the first numeric swept parameter, one line per process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done"]
    grid = list(spec.get("grid", {}))
    xs = [k for k in grid if k != "process"] or ["config.tokens"]
    xkey = xs[0] if xs[0].startswith("config.") else f"config.{xs[0]}"
    metrics = [m for m in ("probe_mse", "probe_r2_weighted", "worst_loss_ratio", "tokens_per_s")
               if any(m in r for r in done)]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4 * max(1, len(metrics)), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for proc in sorted({str(r.get("config.process")) for r in done}):
            by_x: dict = {}  # other swept parameters (seeds, ...) are averaged; bars show min..max
            for r in done:
                if str(r.get("config.process")) == proc and m in r and isinstance(r.get(xkey), (int, float)):
                    by_x.setdefault(r[xkey], []).append(r[m])
            if by_x:
                x = sorted(by_x)
                y = np.array([np.mean(by_x[v]) for v in x])
                lo = y - np.array([min(by_x[v]) for v in x])
                hi = np.array([max(by_x[v]) for v in x]) - y
                ax.errorbar(x, y, yerr=[lo, hi], fmt="o-", capsize=3, label=proc)
        ax.set_xlabel(xkey.removeprefix("config."))
        ax.set_title(m)
        if m in ("probe_mse", "tokens_per_s"):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    if not metrics:
        axes[0][0].text(0.5, 0.5, "no finished runs", ha="center")
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=120)
    plt.close(fig)
