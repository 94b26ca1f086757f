"""``scalinglab report RUNS_DIR [--out DIR]``: fits, figures, report.md/report.html and fits.json."""

from __future__ import annotations

import argparse
import sys


def _report(args: argparse.Namespace) -> int:
    from scalinglab.errors import UserError
    from scalinglab.scaling.report import write_report

    if args.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    if args.holdout < 1:
        raise UserError("--holdout must be >= 1")
    out = write_report(
        args.runs_dir,
        args.out,
        n_bootstrap=args.bootstrap,
        holdout_budgets=args.holdout,
        seed=args.seed,
        force=args.force,
    )
    sys.stderr.write(f"report written to {out}/report.md (and report.html, fits.json, figures)\n")
    print(out / "report.md")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from scalinglab.scaling.report import DEFAULT_BOOTSTRAP

    p = sub.add_parser("report", help="fit every law on a ladder directory and write the scaling report")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="a ladder directory (run dirs, optional batch sweep)")
    p.add_argument("--out", default=None, help="report directory (default RUNS_DIR/report)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples per fit")
    p.add_argument("--holdout", type=int, default=1, help="largest budgets held out for the extrapolation check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an --out that is not a report directory (only the report's files are replaced)",
    )
    p.set_defaults(func=_report)
