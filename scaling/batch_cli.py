"""``scalinglab fit-batch SWEEP_DIR``: critical batch size from a batch-size sweep.

Prints a table (or with ``--json`` the full result of
:func:`scalinglab.scaling.critical_batch.analyze_sweep`); ``--plot DIR`` writes ``tradeoff.png``
and ``bcrit.png`` there.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scalinglab.cli import emit_json
from scalinglab.errors import UserError
from scalinglab.fileio import json_safe
from scalinglab.scaling import batch_load
from scalinglab.scaling import critical_batch as cb


def _targets(values: list[str] | None) -> list[float] | None:
    if not values:
        return None
    out = []
    for item in values:
        for part in item.split(","):
            if not part.strip():
                continue
            try:
                out.append(float(part))
            except ValueError:
                raise UserError(f"--targets expects loss values (numbers), got {part!r}") from None
    if not out:
        raise UserError("--targets needs at least one loss value")
    return out


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fit-batch",
        help="critical batch size from a batch-size sweep (S-E trade-off, B_crit(L), B_simple)",
        description=(
            "For target losses, find the steps S and examples E = B*S each run of a batch-size sweep "
            "needs (crossing of its smoothed, monotone loss curve; the minimum over a batch size's learning "
            "rates when the sweep has a grid), fit (S/S_min - 1)(E/E_min - 1) = 1 per "
            "target (B_crit = E_min/S_min, bootstrap intervals over runs), fit B_crit(L) = B*/L^(1/alpha_B), "
            "and report the in-loop noise scale B_simple at the same losses."
        ),
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="directory written by `scalinglab batch-sweep`")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--plot", metavar="DIR", help="write tradeoff.png and bcrit.png into DIR")
    p.add_argument(
        "--force",
        action="store_true",
        help="write figures into a --plot DIR that is not a figure directory (replacing only them)",
    )
    p.add_argument(
        "--targets",
        nargs="+",
        metavar="LOSS",
        help="target losses in nats/token (space or comma separated); "
        "default: evenly spaced in log over losses every run reaches",
    )
    p.add_argument("--n-targets", type=int, default=cb.DEFAULT_N_TARGETS, help="number of default targets")
    p.add_argument(
        "--source",
        choices=batch_load.SOURCES,
        default="auto",
        help="loss curve: auto (default: eval_loss when every run logged >= "
        f"{batch_load.MIN_EVAL_POINTS} of them, else the smoothed training loss), train, or eval; "
        "either is made monotone (isotonic fit) before the crossing is found",
    )
    p.add_argument(
        "--smooth",
        type=float,
        default=batch_load.DEFAULT_REL_WIDTH,
        help="half-width of the centred smoothing window as a fraction of the step (0 = none)",
    )
    p.add_argument("--bootstrap", type=int, default=cb.DEFAULT_N_BOOTSTRAP, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n_targets < 2:
        raise UserError(f"--n-targets must be >= 2, got {args.n_targets}")
    if args.bootstrap < 1:
        raise UserError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    if args.smooth < 0:
        raise UserError(f"--smooth must be >= 0, got {args.smooth}")
    if args.plot:  # refuse a bad --plot before fitting
        from scalinglab.outdir import check_out_dir
        from scalinglab.scaling.batch_plots import FIGURE_FILES

        check_out_dir(args.plot, "fit-batch-plot", owned=FIGURE_FILES, force=args.force, flag="--plot")
    curves = batch_load.load_sweep(args.sweep_dir, source=args.source, rel_width=args.smooth)
    result = cb.analyze_sweep(
        curves, _targets(args.targets), n_targets=args.n_targets, n_bootstrap=args.bootstrap, seed=args.seed
    )
    used = result["loss_curve"]["source"]
    result["loss_source"] = {
        "source": used,
        "requested": args.source,
        "smooth_rel_width": args.smooth if used == "train" else 0.0,
    }
    result = json_safe(result)
    for w in result["warnings"]:
        sys.stderr.write(f"warning: {w}\n")
    if args.plot:
        from scalinglab.scaling.batch_plots import write_plots

        result["plots"] = [str(p) for p in write_plots(result, curves, args.plot, force=args.force)]
    if args.json:
        emit_json(result)
    else:
        print(format_table(result))
    return 0


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "n/a" if x is None else format(x, spec)


def _ci(pair: list[float] | None) -> str:
    return "[n/a]" if pair is None else f"[{pair[0]:.3g}, {pair[1]:.3g}]"


def format_table(result: dict[str, Any]) -> str:
    """Human-readable summary of a fit-batch result."""
    lines = [
        f"batch sizes {result['batch_sizes']} (sequences of {result['seq_len']} tokens); "
        f"{int(result['bootstrap']['level'] * 100)}% intervals, {result['bootstrap']['method']} bootstrap",
        f"{'loss':>7} {'S_min':>9} {'CI':>20} {'E_min':>10} {'CI':>20} {'B_crit':>8} {'CI':>20} {'B_simple':>9}",
    ]
    for t in result["targets"]:
        lines.append(
            f"{t['loss']:7.4f} {_fmt(t['S_min'], '9.4g')} {_ci(t['ci']['S_min']):>20} {_fmt(t['E_min'], '10.4g')} "
            f"{_ci(t['ci']['E_min']):>20} {_fmt(t['B_crit'], '8.4g')} {_ci(t['ci']['B_crit']):>20} "
            f"{_fmt(t['b_simple'], '9.4g')}"
        )
    lines.append(
        f"B_crit(L) = B*/L^(1/alpha_B): B* = {_fmt(result['B_star'])} {_ci(result['ci']['B_star'])} sequences, "
        f"alpha_B = {_fmt(result['alpha_B'])} {_ci(result['ci']['alpha_B'])}"
    )
    lines.append("best learning rate per batch size (the run setting its steps; * = at the edge of its grid):")
    for b, row in result.get("lr_by_batch", {}).items():
        best = "  ".join(
            "n/a" if lr is None else f"{lr:.3g}{'*' if edge else ''}"
            for lr, edge in zip(row["best_lr"], row["at_edge"])
        )
        lines.append(f"  B={b:>5} ({len(row['lrs'])} lr): {best}")
    lines.append("advice (per target): fewest examples | fewest steps | 2x trade-off point B = B_crit")
    for t in result["targets"]:
        a = t["advice"]
        lines.append(
            f"  L={t['loss']:.4f}: B={a['min_examples']['batch_size']:g} ({a['min_examples']['examples']:.4g} ex) | "
            f"B={a['min_steps']['batch_size']:g} ({a['min_steps']['steps']:.4g} steps) | "
            f"B={a['trade_off']['batch_size']:.4g} ({a['trade_off']['steps']:.4g} steps, "
            f"{a['trade_off']['examples']:.4g} ex)"
        )
    for p in result.get("plots", []):
        lines.append(f"wrote {p}")
    return "\n".join(lines)
