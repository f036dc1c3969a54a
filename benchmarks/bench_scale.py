"""Scale-out benchmark for compmech.scale.msp_reduce (Mess3, x=0.05, alpha=0.85).

    python benchmarks/bench_scale.py                 # ~1-2 minutes on 2 cores
    python benchmarks/bench_scale.py --depth 20      # the headline run (5.2e9 nodes), with peak RSS

Reports (medians of repeats, wall and CPU time):
  1. per-node cost of the compiled depth-first walk (one thread, no Dask);
  2. per-task overhead of Dask (many tiny shards; in-process scheduler and a LocalCluster);
  3. speed-up of a LocalCluster with 2 worker processes over 1 (same shards);
  4. the full streamed reduction at --depth in a fresh process (wall, CPU, peak RSS), and the
     depth an N-machine cluster reaches in an hour from the measured per-node cost.
Timings on a shared machine are noisy: compare the ratios of one run; the CPU-time figures
are less sensitive to other load than wall times.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

import compmech as cm
from compmech import _core

MESS3 = cm.processes.mess3(0.05, 0.85)


def nodes_to(depth: int, V: int = 3) -> int:
    return (V ** (depth + 1) - 1) // (V - 1) - 1


def per_node_cost(depth: int, repeats: int = 3) -> dict:
    r, p = np.array([MESS3.stationary]), np.ones(1)
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        counts, *_ = _core.msp_entropy_sums(MESS3.T, None, r, p, depth, 0.0, MESS3.zero_tol, True)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    n = int(counts.sum())
    return {"depth": depth, "nodes": n, "wall_ns_per_node": statistics.median(walls) / n * 1e9,
            "cpu_ns_per_node": statistics.median(cpus) / n * 1e9}


def task_overhead(client, shards: int = 128, repeats: int = 3) -> float:
    """Seconds per task for shards that hold almost no work (depth 5, 128 shards)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        cm.scale.msp_reduce(MESS3, 5, client=client, shards=shards)
        times.append(time.perf_counter() - t)
    return statistics.median(times) / shards


def cluster_speedup(depth: int, shards: int = 32, repeats: int = 3) -> dict:
    from dask.distributed import Client, LocalCluster

    out = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
                Client(lc) as client:
            cm.scale.msp_reduce(MESS3, 8, client=client, shards=shards)  # warm the workers
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                res = cm.scale.msp_reduce(MESS3, depth, client=client, shards=shards)
                times.append(time.perf_counter() - t)
            out[workers] = statistics.median(times)
            if workers == 1:
                out["overhead_s_per_task"] = task_overhead(client)
    out["speedup"] = out[1] / out[2]
    out["nodes"] = int(res.entropy.nodes.sum())
    return out


def headline(depth: int) -> dict:
    """msp_reduce(mess3, depth) in a fresh process: wall, CPU and peak RSS of that process."""
    code = ("import time, compmech as cm\n"
            "t = time.perf_counter()\n"
            f"r = cm.scale.msp_reduce(cm.processes.mess3(0.05, 0.85), {depth})\n"
            "import json; print(json.dumps({'wall': time.perf_counter() - t, 'H': r.entropy.H.tolist(), "
            "'nodes': int(r.entropy.nodes.sum())}))\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    res["peak_rss_mb"] = after.ru_maxrss / 1024
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=18, help="depth of the headline run (20: the target)")
    ap.add_argument("--scaling-depth", type=int, default=17, help="depth of the 1- vs 2-worker run")
    args = ap.parse_args(argv)
    info = cm.build_info()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, build {info['simd']}, load average {load:.1f} "
          f"({'loaded: timings noisy' if load > (os.cpu_count() or 1) else 'quiet'})")
    c = per_node_cost(16)
    print(f"1. per node (compiled walk, 1 thread, depth 16, {c['nodes']:,} nodes): "
          f"{c['cpu_ns_per_node']:.1f} ns CPU, {c['wall_ns_per_node']:.1f} ns wall")
    s = cluster_speedup(args.scaling_depth)
    print(f"2. Dask per-task overhead (LocalCluster, 1 worker, 128 empty shards): {s['overhead_s_per_task'] * 1e3:.1f} ms")
    print(f"3. LocalCluster depth {args.scaling_depth} ({s['nodes']:,} nodes, 32 shards): 1 worker {s[1]:.2f} s, "
          f"2 workers {s[2]:.2f} s, speed-up {s['speedup']:.2f}x")
    h = headline(args.depth)
    print(f"4. depth {args.depth} ({h['nodes']:,} nodes), client=None: wall {h['wall']:.1f} s, CPU {h['cpu']:.1f} s, "
          f"peak RSS {h['peak_rss_mb']:.0f} MB; H({args.depth}) = {h['H'][-1]:.15f} bits")
    ns = c["cpu_ns_per_node"]
    print(f"   per-core rate {1e3 / ns:.0f} M nodes/s -> depth 20 needs {nodes_to(20) * ns / 1e9:.0f} core-s, "
          f"depth 22 {nodes_to(22) * ns / 1e9:.0f} core-s")
    for machines, cores in ((1, 2), (1, 32), (10, 32), (100, 32)):
        budget = 3600 * machines * cores / (ns * 1e-9)
        d = max(dd for dd in range(1, 60) if nodes_to(dd) <= budget)
        print(f"   {machines:4d} machine(s) x {cores} cores, one hour: Mess3 depth {d} ({nodes_to(d):.2e} nodes)")


if __name__ == "__main__":
    main()
