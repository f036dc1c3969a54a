"""``compmech bench``: throughput of compmech against numpy, torch, JAX and the machine's bound."""
from __future__ import annotations

import argparse
import os
import sys


def add_parser(sub):
    p = sub.add_parser(
        "bench", help="benchmark compmech on this machine against numpy/torch/JAX and the memory bound",
        description="Measure compmech (at 1..all CPU threads, and CUDA when present) against numpy, torch "
                    "(CPU/CUDA), JAX (when installed) and the write bandwidth of each output, all in one run. "
                    "Prints a table; --json and --plot save the measurements. For a fair numpy baseline run it "
                    "as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE compmech bench`.")
    p.add_argument("--suite", choices=["core", "msp", "train", "all"], default="all",
                   help="core: beliefs, log_prob, sampling; msp: MSP tree and graph; train: probe fit, "
                        "training step, streaming batches (default: all)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default): CPU, plus CUDA columns when torch sees a GPU")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer rounds (under a minute on 2 cores)")
    p.add_argument("--json", metavar="FILE", help="write machine info, every measurement and the ratios here "
                                                   "(updated after every measurement)")
    p.add_argument("--plot", metavar="FILE", help="write throughput-vs-size plots here (PNG/PDF/SVG)")
    p.add_argument("--threads", metavar="N,N,...", help="compmech CPU thread counts (default: 1, 2, 4, ..., all)")
    p.add_argument("--workload", action="append", metavar="NAME",
                   help="only this workload (repeatable): beliefs, log_prob, sample, msp_tree, msp_graph, "
                        "probe_fit, train_step, stream_batches")
    p.add_argument("--process", action="append", metavar="NAME", help="only this process (repeatable): "
                                                                      "mess3, random_s12_v4")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX column even when JAX is installed")
    p.add_argument("--resume", action="store_true",
                   help="reuse the measurements already in --json FILE (same machine) and measure the rest")
    p.add_argument("--mode", choices=["tiny", "quick", "full"], default=None, help=argparse.SUPPRESS)  # tests
    p.set_defaults(func=run)
    return p


def _threads(text):
    if not text:
        return None
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--threads must be comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"--threads must be positive integers, got {text!r}")
    return sorted(set(out))


def run(args) -> int:
    from ..bench import run as run_bench
    from ..bench.report import load_json, write_json
    from ..bench.workloads import SUITES
    from ._params import output_file

    if args.workload:
        bad = [w for w in args.workload if w not in SUITES["all"]]
        if bad:
            raise ValueError(f"unknown workload {bad}; choose from {SUITES['all']}")
    if args.resume and not args.json:
        raise ValueError("--resume needs --json FILE (the file to resume from)")
    output_file(args.plot, "--plot", (".png", ".pdf", ".svg"))
    output_file(args.json, "--json")
    previous = None
    if args.resume and os.path.exists(args.json):
        previous = load_json(args.json)
        if previous.get("machine", {}).get("cpu") is not None:
            from ..bench.machine import cpu_model

            if previous["machine"]["cpu"] != cpu_model():
                raise ValueError(f"--resume: {args.json} was measured on {previous['machine']['cpu']!r}, "
                                 f"this machine is {cpu_model()!r}")
    save = (lambda res: write_json(args.json, res.to_json())) if args.json else None
    res = run_bench(args.suite, device=args.device, quick=args.quick, mode=args.mode, threads=_threads(args.threads),
                    use_jax=False if args.no_jax else None, processes=args.process, workloads=args.workload,
                    progress=sys.stderr.isatty(), resume_from=previous, on_result=save)
    for w in res.warnings:
        print(f"compmech bench: warning: {w}", file=sys.stderr)
    m = res.machine
    print(f"{m['cpu']} · {m['threads']} threads · compmech SIMD {m['compmech_simd']}"
          + (f" · GPU {', '.join(g['name'] for g in m['gpus'])}" if m["gpus"] else " · no GPU")
          + f" · {res.command['mode']} · {res.elapsed_s:.0f} s")
    print(res.table(), end="")
    if args.json:
        write_json(args.json, res.to_json())
        print(f"wrote {args.json}")
    if args.plot and res.measurements:
        res.plot(args.plot)
        print(f"wrote {args.plot}")
    if res.interrupted:
        print("compmech bench: interrupted; the measurements above are saved"
              + (f" in {args.json} (rerun with --resume to finish)" if args.json else ""), file=sys.stderr)
        return 130
    return 0
