"""Ratios, the terminal table, the JSON file and the plot of a benchmark run."""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections import OrderedDict

SCHEMA = "compmech-bench/1"

_KIND_ORDER = {"compmech": 0, "numpy": 1, "torch": 2, "jax": 3, "bound": 4}


def _impl_order(m):
    return (_KIND_ORDER.get(m.kind, 9), m.device != "cpu", (m.threads or 0) if m.kind == "compmech" else 0)


def by_case(measurements) -> "OrderedDict[str, list]":
    out = OrderedDict()
    for m in measurements:
        out.setdefault(m.case, []).append(m)
    return out


def ratios(measurements) -> list:
    """For every case and device: the fastest compmech implementation on that device against
    every other implementation there (numpy counts as CPU). ``ratio`` = compmech rate / other
    rate: a speed-up for numpy/torch/jax, the fraction of the machine's bound for ``bound``.
    Every number comes from rates measured in this run."""
    out = []
    for key, ms in by_case(measurements).items():
        for dev in sorted({m.device for m in ms}):
            ours = [m for m in ms if m.kind == "compmech" and m.device == dev and m.rate]
            if not ours:
                continue
            best = max(ours, key=lambda m: m.rate)
            for o in ms:
                if o.kind == "compmech" or o.device != dev or not o.rate:
                    continue
                out.append({"case": key, "workload": o.workload, "process": o.process, "size": o.size,
                            "device": dev, "compmech": best.impl, "compmech_rate": best.rate, "vs": o.impl,
                            "kind": o.kind, "vs_rate": o.rate, "ratio": best.rate / o.rate})
    return out


def _si(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for div, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{p}"
    return f"{x:.3g}"


def _ratio_cell(r: dict) -> str:
    if r["kind"] == "bound":
        return f"{100 * r['ratio']:.0f}%"
    v = r["ratio"]
    return f"{v:.3g}x" if v < 100 else f"{v:.0f}x"


def table(measurements, *, width_hint: int = 0) -> str:
    """One block per workload: a row per (process, size), a throughput column (work units/s,
    median) per implementation, then compmech's ratio to each baseline and to the bound."""
    from .workloads import DESCRIPTIONS

    rats = ratios(measurements)
    rat_by = {}
    for r in rats:
        rat_by[(r["case"], r["vs"])] = r
    lines = []
    errors = []
    workloads = OrderedDict()
    for m in measurements:
        workloads.setdefault(m.workload, []).append(m)
    for w, ms in workloads.items():
        impls = sorted({(_impl_order(m), m.impl) for m in ms})
        labels = [lab for _, lab in impls]
        others = [lab for lab in labels if not lab.startswith("compmech")]
        head = ["process", "size"] + labels + [("of " if lab.startswith("bound") else "vs ") + lab for lab in others]
        rows = []
        for key, cms in by_case(ms).items():
            cell = {m.impl: m for m in cms}
            c0 = cms[0]
            row = [c0.process, " ".join(f"{k}={v}" for k, v in c0.size.items())]
            for lab in labels:
                m = cell.get(lab)
                if m is None:
                    row.append("")
                elif m.error:
                    row.append("err")
                    errors.append(f"{w} {c0.process} {row[1]} {lab}: {m.error}")
                else:
                    row.append(_si(m.rate))
            for lab in others:
                r = rat_by.get((key, lab))
                row.append(_ratio_cell(r) if r else "")
            rows.append(row)
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        unit = ms[0].unit
        lines.append(f"{w}: {DESCRIPTIONS.get(w, '')}  [{unit}/s; ratios: fastest compmech / other]")
        fmt = lambda r: "  " + "  ".join(str(x).ljust(wd) if i < 2 else str(x).rjust(wd)  # noqa: E731
                                         for i, (x, wd) in enumerate(zip(r, widths)))
        lines.append(fmt(head))
        lines += [fmt(r) for r in rows]
        lines.append("")
    if errors:
        lines.append("errors:")
        lines += ["  " + e for e in errors]
    return "\n".join(lines).rstrip() + "\n"


def to_json(measurements, *, machine: dict, command: dict, interrupted: bool, elapsed_s: float) -> dict:
    return {"schema": SCHEMA, "command": command, "machine": machine, "interrupted": bool(interrupted),
            "elapsed_s": elapsed_s, "results": [m.to_dict() for m in measurements], "ratios": ratios(measurements)}


def write_json(path, doc: dict):
    """Atomic write (a temp file renamed over ``path``), so an interrupted run never leaves a
    half-written file."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bench-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_json(path) -> dict:
    with open(path) as f:
        doc = json.load(f)
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a compmech bench file (schema {doc.get('schema')!r}, expected {SCHEMA!r})")
    return doc


def plot(measurements, path):
    """Throughput against work size (log-log), one panel per (workload, process), one line per
    implementation; the bound is a dashed line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = OrderedDict()
    for m in measurements:
        if m.rate:
            panels.setdefault((m.workload, m.process), []).append(m)
    if not panels:
        raise ValueError("nothing was measured: no plot to draw")
    procs = list(OrderedDict.fromkeys(p for _, p in panels))
    wls = list(OrderedDict.fromkeys(w for w, _ in panels))
    fig, axes = plt.subplots(len(wls), len(procs), figsize=(5.2 * len(procs), 3.2 * len(wls)), squeeze=False)
    for i, w in enumerate(wls):
        for j, p in enumerate(procs):
            ax = axes[i][j]
            ms = panels.get((w, p), [])
            if not ms:
                ax.set_visible(False)
                continue
            lines = OrderedDict()
            for m in sorted(ms, key=_impl_order):
                lines.setdefault(m.impl, []).append(m)
            for lab, pts in lines.items():
                pts = sorted(pts, key=lambda m: m.items)
                x, y = [m.items for m in pts], [m.rate for m in pts]
                if lab.startswith("bound"):
                    ax.plot(x, y, "--", color="k" if lab == "bound" else "0.5", lw=1.2, label=lab)
                else:
                    ax.plot(x, y, "o-", ms=3, lw=1.2, label=lab)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{w} · {p}", fontsize=9)
            ax.set_xlabel(f"{ms[0].unit} per call", fontsize=8)
            ax.set_ylabel(f"{ms[0].unit}/s", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="both", alpha=0.25)
            ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
