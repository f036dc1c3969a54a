"""``compmech sweep SWEEP.toml [--scheduler ADDR] [--status]``: run a grid of training runs
(each trained, evaluated and probed) as Dask tasks; rerunning skips finished runs and resumes
interrupted ones. See :mod:`compmech.scale.sweep` for the file format."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep of training runs on Dask (local or a cluster)",
                       description=__doc__)
    p.add_argument("sweep_file", help="sweep definition (TOML or JSON)")
    p.add_argument("--scheduler", help="Dask scheduler address (default: a LocalCluster sized to this machine)")
    p.add_argument("--threads-per-run", type=int, help="torch threads per run (default: cores / concurrent runs)")
    p.add_argument("--status", action="store_true", help="show done / running / failed / pending and exit")
    p.add_argument("--retry-failed", action="store_true", help="run failed points again (default: keep them failed)")
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..scale import sweep

    spec = sweep.load_sweep(args.sweep_file)
    if args.status:
        st = sweep.status(spec)
        print(f"sweep {spec['sweep']['out']}: " + ", ".join(f"{len(v)} {k}" for k, v in st.items()))
        for k in ("failed", "running"):
            for name in st[k]:
                print(f"  {k:8s} {name}")
        return 0
    try:
        rows = sweep.run_sweep(spec, client=args.scheduler, threads_per_run=args.threads_per_run,
                               progress=not args.quiet, retry_failed=args.retry_failed)
    except KeyboardInterrupt:
        return 130
    n_fail = sum(r["status"] != "done" for r in rows)
    out = spec["sweep"]["out"]
    print(f"{len(rows) - n_fail}/{len(rows)} runs done; results {out}/results.csv, {out}/results.parquet, "
          f"figure {out}/summary.png")
    return 1 if n_fail else 0
