"""Shared benchmark plumbing: each benchmark records its work size and group; at the end a
table prints throughput (median) and the ratio to the group's baseline measured in this run."""
from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest

_RESULTS: dict[str, dict] = {}


@pytest.fixture
def throughput(benchmark, request):
    """``throughput(group, items, unit, baseline=False, bound=None)`` after a benchmark ran:
    remembers its median for the summary table. ``bound="fresh"``/``"reused"`` marks a write
    bound (filling an array of the group's output size); every row of the group is then also
    reported as a fraction of it."""

    def record(group: str, items: float, unit: str, baseline: bool = False, bound: str | None = None):
        stats = benchmark.stats.stats
        _RESULTS[request.node.name] = dict(group=group, items=items, unit=unit, baseline=baseline, bound=bound,
                                           median_s=stats.median, rate=items / stats.median)
        benchmark.extra_info.update(group=group, items=items, unit=unit, rate=items / stats.median)

    return record


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    by_group = defaultdict(list)
    for name, r in _RESULTS.items():
        by_group[r["group"]].append((name, r))
    tr = terminalreporter
    tr.section("compmech throughput (median; ratio to the group's baseline in this run)")
    tr.write_line(f"{'benchmark':58s} {'median':>10s} {'throughput':>16s} {'ratio':>8s} "
                  f"{'of fresh':>9s} {'of reused':>9s}  (write bound)")
    for group, rows in by_group.items():
        base = [r for _, r in rows if r["baseline"]]
        bounds = {r.get("bound"): r["rate"] for _, r in rows if r.get("bound")}
        for name, r in rows:
            ratio = f"{r['rate'] / base[0]['rate']:7.1f}x" if base else "      -"
            frac = " ".join(f"{r['rate'] / bounds[k]:8.0%}" if k in bounds else "       -" for k in ("fresh", "reused"))
            tr.write_line(f"{name:58s} {r['median_s'] * 1e3:8.2f}ms {r['rate'] / 1e6:10.1f} M{r['unit']}/s {ratio}"
                          f"  {frac}")
    out = os.environ.get("COMPMECH_BENCH_JSON")
    if out:
        with open(out, "w") as f:
            json.dump(_RESULTS, f, indent=1)
