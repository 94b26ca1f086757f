"""``scalinglab fit SOURCE --law ... [--bootstrap K] [--holdout K] [--json] [--plot DIR]``."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from scalinglab.cli import emit_json
from scalinglab.errors import UserError
from scalinglab.fileio import json_safe
from scalinglab.scaling.bootstrap import DEFAULT_RESAMPLES
from scalinglab.scaling.law_names import LAWS
from scalinglab.scaling.load import KNOWN_COLUMNS, PARAMS_CONVENTIONS

HUBER_DELTA = 1e-3  # = chinchilla.HUBER_DELTA (not imported here: that module imports jax)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a scaling law to runs or a CSV table",
        description="Fit a scaling law (Kaplan or Chinchilla) to a runs directory or a CSV with columns "
        "params,tokens,loss[,flops] (flops default 6*params*tokens).",
    )
    p.add_argument(
        "source", metavar="SOURCE", help="CSV file, run directory, or directory of runs (searched recursively)"
    )
    p.add_argument(
        "--law",
        required=True,
        choices=LAWS,
        help="chinchilla = approach 3, isoflop = approach 2, envelope = approach 1; kaplan-ns = "
        "L(N, S_min), kaplan-cmin = L(C_min) (B_crit(L) from --sweep, else from the runs' B_simple)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        nargs="?",
        const=DEFAULT_RESAMPLES,
        default=0,
        metavar="K",
        help=f"bootstrap resamples for confidence intervals (flag alone: {DEFAULT_RESAMPLES})",
    )
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        metavar="K",
        help="also refit without the K largest-compute runs (budgets for isoflop/envelope) and "
        "report the prediction error on them",
    )
    p.add_argument(
        "--flops",
        type=float,
        action="append",
        default=None,
        metavar="C",
        help="FLOP budget(s) for a compute-optimal allocation (chinchilla, isoflop, envelope)",
    )
    p.add_argument(
        "--starts",
        choices=["small", "hoffmann"],
        default="small",
        help="approach-3 start grid: small (162 starts, default) or hoffmann (the paper's 4,500)",
    )
    p.add_argument(
        "--params",
        choices=["auto", *PARAMS_CONVENTIONS],
        default="auto",
        help="which parameter count is N: non_embedding (Kaplan et al. 2020), total (Hoffmann et al. "
        "2022), with_head (non-embedding + output head, Porian et al. 2024); default auto = each law in "
        "its paper's convention: total for chinchilla/isoflop/envelope, non_embedding for kaplan-*. "
        "A CSV's params column is taken to be in this convention unless it has params_total / "
        "params_with_head columns",
    )
    p.add_argument(
        "--columns",
        metavar="NAME=HEADER,...",
        help="map a CSV's headers onto the known columns, e.g. params=N,tokens=D,loss=val_loss,run=id "
        f"(known: {', '.join(KNOWN_COLUMNS)}); rows sharing a run column form one training curve",
    )
    p.add_argument(
        "--huber-delta",
        type=float,
        default=HUBER_DELTA,
        metavar="DELTA",
        help=f"approach 3: Huber delta on log-loss residuals (default {HUBER_DELTA:g}, Hoffmann et al.)",
    )
    p.add_argument(
        "--isoflop-keep",
        type=int,
        default=None,
        metavar="K",
        help="approach 2: fit each budget's parabola to the K sizes around its lowest loss only (default: all sizes)",
    )
    p.add_argument(
        "--isoflop-window",
        type=float,
        default=None,
        metavar="F",
        help="approach 2: fit each parabola to the points within a factor (1+F) of the budget's lowest "
        "loss only (with --isoflop-keep: both)",
    )
    p.add_argument(
        "--envelope",
        choices=["min", "hull"],
        default="min",
        help="approach 1: min = lowest loss per FLOP budget (Hoffmann et al., default); hull = vertices "
        "of the lower convex hull of log loss vs log C",
    )
    p.add_argument(
        "--sweep",
        metavar="DIR",
        help="kaplan-ns / kaplan-cmin: take B_crit(L) from this batch-size sweep's fit (fit-batch) "
        "instead of the runs' in-loop B_simple",
    )
    p.add_argument(
        "--include-incomplete",
        action="store_true",
        help="use runs without summary.json (flagged) instead of skipping them",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", metavar="DIR", help="write figures (PNG) into DIR")
    p.add_argument(
        "--force",
        action="store_true",
        help="write figures into a --plot DIR that is not a figure directory (replacing only them)",
    )
    p.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from scalinglab.scaling.load import load_source, parse_columns

    if args.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    if args.holdout < 0:
        raise UserError("--holdout must be >= 0")
    if not 0.0 < args.level < 1.0:
        raise UserError("--level must be between 0 and 1")
    if args.holdout and args.law in ("kaplan-ns", "kaplan-cmin"):
        raise UserError(f"--holdout is not available for --law {args.law}")
    if args.flops and args.law not in ("chinchilla", "isoflop", "envelope"):
        raise UserError("--flops needs --law chinchilla, isoflop or envelope")
    if args.plot:  # refuse a bad --plot before fitting (write_plots checks again when it writes)
        from scalinglab.outdir import check_out_dir
        from scalinglab.scaling.plots import FIGURE_FILES

        check_out_dir(args.plot, "fit-plot", owned=FIGURE_FILES, force=args.force, flag="--plot")
    if not (np.isfinite(args.huber_delta) and args.huber_delta > 0):
        raise UserError("--huber-delta must be positive")
    if args.isoflop_keep is not None and args.isoflop_keep < 3:
        raise UserError("--isoflop-keep must be at least 3 (a parabola has 3 coefficients)")
    if args.isoflop_window is not None and not args.isoflop_window > 0:
        raise UserError("--isoflop-window must be positive")
    table = load_source(args.source, include_incomplete=args.include_incomplete, columns=parse_columns(args.columns))

    # heavier imports (jax) only once the input is known to be good
    from scalinglab.scaling import chinchilla, kaplan
    from scalinglab.scaling.allocation import allocate
    from scalinglab.scaling.holdout import holdout
    from scalinglab.scaling.laws import fit_law, resolve_convention
    from scalinglab.scaling.powerlaw import strip_samples

    if args.sweep and args.law not in ("kaplan-ns", "kaplan-cmin"):
        raise UserError("--sweep needs --law kaplan-ns or kaplan-cmin")

    table = table.with_params(resolve_convention(args.law, args.params))
    starts = chinchilla.hoffmann_grid() if args.starts == "hoffmann" else chinchilla.small_grid()
    fit_kw = {"starts": starts, "huber_delta": args.huber_delta} if args.law == "chinchilla" else {}
    if args.law == "isoflop":
        fit_kw = {"isoflop_keep": args.isoflop_keep, "isoflop_window": args.isoflop_window}
    if args.law == "envelope":
        fit_kw = {"envelope_method": args.envelope}
    if args.law in ("kaplan-ns", "kaplan-cmin") and args.sweep:
        fit_kw = {"bcrit": kaplan.bcrit_from_sweep(args.sweep)}
    result = fit_law(table, args.law, n_bootstrap=args.bootstrap, level=args.level, seed=args.seed, **fit_kw)
    allocation = [allocate(result, c) for c in (args.flops or [])]
    held = holdout(table, args.law, args.holdout, **fit_kw) if args.holdout else None
    plots = None
    if args.plot:
        from scalinglab.scaling.plots import write_plots

        plots = write_plots(table, args.law, result, args.plot, force=args.force)

    out = strip_samples(result)
    out["source"] = str(args.source)
    out["n_runs"] = len(table)
    if allocation:
        out["allocation"] = allocation
    if held is not None:
        out["holdout"] = held
    if plots is not None:
        out["plots"] = [f"{args.plot.rstrip('/')}/{name}" for name in plots]
    if args.json:
        for w in out.get("warnings", []):
            sys.stderr.write(f"warning: {w}\n")
        emit_json(json_safe(out))
    else:
        sys.stdout.write(format_text(out))
    return 0


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"


def format_text(out: dict) -> str:
    """Human-readable summary of a fit (the non ``--json`` output)."""
    lines = [
        f"law: {out['law']}   {out['formula']}",
        f"source: {out['source']} ({out['n_runs']} runs, {out['n_points']} points used)",
    ]
    if out.get("params_convention"):
        lines.append(f"N = {out['params_convention']} parameters ({out.get('params_source', '')})")
    ci = out.get("ci", {})
    if ci:
        lines.append(f"{out['ci_level']:.0%} bootstrap intervals from {out['n_bootstrap']} resamples")
    hidden = out.get("not_identified") or {}
    for name in out["param_names"]:
        v = out["params"][name]
        if name in hidden:  # never printed as a number (scaling/quality.py)
            lines.append(f"  {name:>8} = not identified ({hidden[name]})")
            continue
        s = f"  {name:>8} = {_fmt(v)}"
        if name in ci and ci[name][0] is not None and all(np.isfinite(ci[name])):
            s += f"   [{_fmt(ci[name][0])}, {_fmt(ci[name][1])}]"
        lines.append(s)
    lines.append(f"objective: {out['objective']:.6g} ({out['objective_kind']})")
    res = out.get("residuals", {})
    if "rms" in res:
        lines.append(f"residuals: rms {res['rms']:.4g}, max |r| {res['max_abs']:.4g}")
    if out["law"] == "chinchilla":
        from scalinglab.scaling.quality import shown

        t = out["tokens_per_param"]
        a, b = (shown(out, k, lambda v: f"C^{v:.4f}") for k in ("a", "b"))
        lines.append(
            f"compute-optimal (C = 6ND): N_opt ∝ {a}, D_opt ∝ {b}, "
            f"tokens/param = {t['coef']:.4g} · C^{t['exponent']:.4f}"
        )
        ax = out.get("allocation_exponents")
        if ax and ax.get("constraint") != "6ND":
            fm = out["flops_model"]
            s = (
                f"under the runs' exact FLOPs C = D·({fm['c1']:.4g}·N + {fm['c0']:.4g}·N^{fm['gamma']:.2f}) "
                f"over C in [{ax['flops_range'][0]:.3g}, {ax['flops_range'][1]:.3g}]: a = {ax['a']:.4f}, "
                f"b = {ax['b']:.4f}"
            )
            lines.append(s)
        boot = out.get("optimizer", {}).get("bootstrap")
        if boot:
            lines.append(
                f"bootstrap refits: {boot.get('n_polished', out['n_bootstrap'])} of {out['n_bootstrap']} "
                f"needed the float64 polish, {boot['n_hit_max_iter']} hit its {boot['max_iter']}-iteration "
                f"limit; max |grad| {boot['max_grad_norm']:.2g}"
            )
    if out.get("n_budgets"):
        lines.append(f"budgets used: {out['n_budgets']}")
    for a in out.get("allocation", []):
        s = f"at C = {a['flops']:.4g} FLOPs: N_opt = {a['N_opt']:.4g} params, D_opt = {a['D_opt']:.4g} tokens"
        if "loss" in a:
            s += f", loss = {a['loss']:.4f}"
        lines.append(s)
        for k, (lo, hi) in a.get("ci", {}).items():
            lines.append(f"    {k}: [{lo:.4g}, {hi:.4g}]")
    h = out.get("holdout")
    if h:
        lines.append(
            f"hold-out of the {h['k']} largest {h['unit']}: mean |error| {h['mean_abs_error']:.4g}, "
            f"max |error| {h['max_abs_error']:.4g} ({h['error_kind']})"
        )
    if out.get("plots"):
        lines.append("plots: " + ", ".join(out["plots"]))
    for w in out.get("warnings", []):
        if w.split(" ")[0] not in hidden:  # not-identified parameters are already marked above
            lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"
