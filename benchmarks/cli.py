"""``scalinglab bench``: run every side-by-side benchmark and write benchmarks/results/*.json."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from scalinglab.benchmarks.common import RESULTS_DIR
from scalinglab.errors import UserError

# name -> module (each has run(quick: bool = False) -> dict and writes its own JSON via common.write_result).
BENCHMARKS = {
    "data_pipeline": "scalinglab.benchmarks.data_pipeline",
    "train_throughput": "scalinglab.benchmarks.train_throughput",
    "chinchilla_fit": "scalinglab.benchmarks.chinchilla_fit",
    "fit_process": "scalinglab.benchmarks.fit_process",
    "prepare_throughput": "scalinglab.benchmarks.prepare_throughput",
    "host_sync": "scalinglab.benchmarks.host_sync",
}


def _bench(args: argparse.Namespace) -> int:
    from scalinglab.benchmarks.common import write_result
    from scalinglab.benchmarks.summary import write_summary

    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise UserError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}")
    for name in names:
        sys.stderr.write(f"[bench] {name} ...\n")
        t0 = time.perf_counter()
        result = importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        path = write_result(name, result, args.results_dir)
        sys.stderr.write(f"[bench] {name} done in {time.perf_counter() - t0:.0f}s -> {path}\n")
    print(write_summary(Path(args.results_dir)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the side-by-side benchmarks, write benchmarks/results/*.json")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    p.add_argument(
        "--results-dir",
        default=str(RESULTS_DIR),
        help="where the JSON results and SUMMARY.md go (default: %(default)s of the working directory)",
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not for the README)")
    p.set_defaults(func=_bench)
