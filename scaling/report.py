"""The scaling report: every run and sweep of a ladder directory → fits, figures, report.md/html, fits.json.

``write_report(runs_dir, out_dir)`` fits (:func:`scalinglab.scaling.report_fits.fit_report`: Kaplan's
L(N) and L(C), Chinchilla approaches 1-3 with bootstrap intervals and the hold-out of the largest
budget, the compute-optimal allocation for the next 10× budget, the critical batch size where a
sweep exists, the fitted irreducible loss E against a known entropy rate), then renders
(:func:`report_doc`: the document blocks and the figures). Output is written into a temporary
directory and moved into place at the end, so a failed report leaves no partial files.

Units throughout: N non-embedding parameters, D tokens, C training FLOPs (exact), loss in nats/token.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, atomic_write_text, json_safe, temp_dir_beside
from scalinglab.scaling.report_doc import Figure, Heading, Paragraph, Table, to_html, to_markdown
from scalinglab.scaling.report_fits import DEFAULT_BOOTSTRAP, HOLDOUT_FITS, LOSS_FITS, ReportFits, fit_report


def _g(x: Any, spec: str = ".4g") -> str:
    """A number for a table cell ('—' for missing or non-finite)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    return format(v, spec) if math.isfinite(v) else "—"


def _ci(result: dict, name: str) -> str:
    if name in (result.get("not_identified") or {}):
        return "not identified"
    lo_hi = (result.get("ci") or {}).get(name)
    if not lo_hi or any(v is None or not math.isfinite(float(v)) for v in lo_hi):
        return "—"
    return f"[{_g(lo_hi[0])}, {_g(lo_hi[1])}]"


def _params_table(result: dict) -> Table:
    from scalinglab.scaling.quality import shown

    rows = [[name, shown(result, name, _g), _ci(result, name)] for name in result["param_names"]]
    level = result.get("ci_level", 0.95)
    return Table(["parameter", "fit", f"{level:.0%} bootstrap interval"], rows)


def report_doc(rf: ReportFits, out: Path) -> list:
    """The report's document blocks for the fits ``rf``; draws the figures into ``out`` and lists
    their names in ``rf.fits["figures"]``."""
    from scalinglab.scaling import batch_plots, plots
    from scalinglab.scaling.laws import predict_table
    from scalinglab.scaling.quality import shown

    table, budgets, fits, n_bootstrap = rf.table, rf.budgets, rf.fits, rf.n_bootstrap
    doc: list = [Heading("Scaling report", 1)]
    doc.append(
        Paragraph(
            f"{len(table)} runs from `{rf.runs_dir}`, {len(budgets)} compute budgets "
            f"from {_g(table.flops.min(), '.3g')} "
            f"to {_g(table.flops.max(), '.3g')} FLOPs, N from {_g(table.params.min(), ',.0f')} to "
            f"{_g(table.params.max(), ',.0f')} non-embedding parameters. Loss is the final eval loss on the fixed "
            f"validation batches (nats/token); C is the exact training compute (3 × the matmul-exact forward "
            f"FLOPs per token × tokens). N conventions: Kaplan's laws count non-embedding parameters (Kaplan et al. "
            f"2020), Chinchilla's approaches 1–3 count every parameter (Hoffmann et al. 2022), each like for like with "
            f"its paper; approach 3 allocates compute under the runs' exact C(N, D), not 6ND. Intervals are "
            f"{n_bootstrap}-resample bootstrap percentiles (95%); a parameter whose interval spans more than 10× "
            f'(or reaches zero) is shown as "not identified".'
        )
    )
    if rf.protocol_lines:
        doc.append(Heading("Hyperparameter protocol"))
        for line in rf.protocol_lines:
            doc.append(Paragraph(line))
    doc.append(Heading("Runs"))
    rows = []
    for i in np.argsort(table.flops * 1e30 + table.params):
        rows.append(
            [
                table.names[i],
                f"{int(table.params[i]):,}",
                f"{int(table.params_total[i]):,}" if table.params_total is not None else "—",
                _g(table.tokens[i], ".3g"),
                _g(table.flops[i], ".3g"),
                _g(table.tokens[i] / table.params[i], ".1f"),
                _g(table.loss[i]),
                _g(table.best_loss[i]) if table.best_loss is not None else "—",
            ]
        )
    doc.append(
        Table(["run", "N", "N_total", "D (tokens)", "C (FLOPs)", "D/N", "final eval loss", "best eval loss"], rows)
    )
    repeats = fits.get("data_repeats")
    if repeats:
        worst = max(repeats, key=repeats.get)
        doc.append(
            Paragraph(
                f"Data repeats: {len(repeats)} of {len(table)} runs read their training data more than once (up to "
                f"{repeats[worst]:.2f} epochs, {worst}); the laws assume fresh tokens, so their D is worth less than "
                f"unique data (repeated tokens lose value after a few epochs, Muennighoff et al. 2023)."
            )
        )
    figs: list[tuple[str, str]] = []

    def figure(name: str, caption: str, draw: Callable[[Path], None]) -> None:
        draw(out / name)
        doc.append(Figure(out / name, caption))
        figs.append((name, caption))

    figure(
        "loss_curves.png",
        "Training curves (eval loss vs tokens), coloured by N.",
        lambda p: plots.plot_loss_curves(table, p),
    )

    # ---- Kaplan
    doc.append(Heading("Kaplan et al. (2020): L(N) and L(C)"))
    kn, kc = rf.result("kaplan_n"), rf.result("kaplan_c")
    for label, res in (
        (
            "L(N) = (N_c/N)^α_N, lowest loss per size (Kaplan's L(N) assumes models trained to "
            "convergence; on an IsoFLOP ladder the largest models see the fewest tokens, so read this "
            "one as descriptive)",
            kn,
        ),
        ("L(C) = (C_c/C)^α_C on the compute frontier", kc),
    ):
        if res is None:
            continue
        doc.append(Paragraph(label + ":"))
        doc.append(_params_table(res))
    for label, key in (
        (
            "L(N, S_min) = (N_c/N)^α_N + (S_c/S_min)^α_S on every curve point after the first 10 % of "
            "each run, S_min = S/(1 + B_crit(L)/B)",
            "kaplan_ns",
        ),
        ("L(C_min) = (C_c/C_min)^α_C on the frontier of the curves in C_min = C/(1 + B/B_crit(L))", "kaplan_cmin"),
    ):
        res = rf.result(key)
        if res is not None:
            doc.append(Paragraph(f"{label}; B_crit(L) from the {res['bcrit']['source']}:"))
            doc.append(_params_table(res))

    # ---- Chinchilla approaches
    doc.append(Heading("Chinchilla (Hoffmann et al. 2022)"))
    a1, a2, a3 = (rf.result(k) for k in ("approach1_envelope", "approach2_isoflop", "approach3_parametric"))
    rows = []
    for label, res in (("1: min-loss envelope", a1), ("2: IsoFLOP parabolas", a2), ("3: parametric L(N, D)", a3)):
        if res is None:
            rows.append([label, "—", "—", "—", "—"])
            continue
        ex = res.get("allocation_exponents") or res  # approach 3: slopes of its optimum under the runs' exact C
        rows.append(
            [
                label,
                shown(ex, "a", lambda v: _g(v, ".3f")) if ex is res else _g(ex["a"], ".3f"),
                _ci(ex, "a"),
                shown(ex, "b", lambda v: _g(v, ".3f")) if ex is res else _g(ex["b"], ".3f"),
                _ci(ex, "b"),
            ]
        )
    doc.append(
        Paragraph(
            "Compute-optimal exponents N_opt ∝ C^a, D_opt ∝ C^b, N = total parameters, over the runs' "
            "FLOP range and under their exact C (approach 3: the slopes of the fitted law's optimum "
            "under C = D·f(N), f fitted to the runs' FLOPs per token; its closed-form 6ND exponent is in "
            "its table below). Chinchilla's published values: a ≈ 0.50, 0.49, 0.46 and b ≈ 0.50, 0.51, "
            "0.54 for approaches 1, 2, 3:"
        )
    )
    doc.append(Table(["approach", "a", "a interval", "b", "b interval"], rows))
    if a3 is not None:
        boot = a3.get("optimizer", {}).get("bootstrap")
        fm = a3.get("flops_model") or {}
        doc.append(
            Paragraph(
                f"Approach 3, L(N, D) = E + A/N^α + B/D^β (Huber δ = {a3['huber_delta']:g} on log loss, L-BFGS from "
                f"{a3['n_starts']} starts; objective {_g(a3['objective'], '.4g')}"
                + (
                    f"; {boot.get('n_polished', a3['n_bootstrap'])} of {a3['n_bootstrap']} bootstrap refits needed "
                    f"the float64 polish, {boot['n_hit_max_iter']} hit its iteration limit"
                    if boot
                    else ""
                )
                + (
                    f"; FLOPs per token f(N) = {_g(fm['c1'])}·N + {_g(fm['c0'])}·N^{fm['gamma']:.2f}, within "
                    f"{fm['max_rel_error']:.2%} of every run"
                    if fm
                    else ""
                )
                + "):"
            )
        )
        doc.append(_params_table(a3))
    figure(
        "frontier.png",
        "Loss vs N and vs C with the fitted Kaplan laws and approach 3's compute-optimal loss.",
        lambda p: plots.plot_frontier(
            table, p, {k: v for k, v in (("kaplan-n", kn), ("kaplan-c", kc), ("chinchilla", a3)) if v is not None}
        ),
    )
    if a2 is not None:
        figure(
            "isoflop.png",
            "IsoFLOP profiles: loss vs N per budget with fitted parabolas; minima vs C.",
            lambda p: plots.plot_isoflop(table.with_params(a2["params_convention"]), p, a2),
        )
    if a3 is not None:
        t3 = table.with_params(a3["params_convention"])
        figure(
            "contours.png",
            "Approach 3: fitted L(N, D) contours, the runs, and the compute-optimal line.",
            lambda p: plots.plot_contours(t3, a3, p),
        )
        figure(
            "residuals.png",
            "Approach 3 residuals ln(predicted/observed) vs compute.",
            lambda p: plots.plot_residuals(t3, predict_table(a3, t3), p, "approach 3"),
        )

    # ---- allocation for the next 10× budget
    next_c = float(budgets.max()) * 10.0
    doc.append(Heading(f"Compute-optimal allocation at the next 10× budget (C = {next_c:.3g} FLOPs)"))
    rows = []
    for key, al in fits["allocation_next_10x"].items():
        ci = al.get("ci", {})
        iv = lambda k, ci=ci: f"[{_g(ci[k][0], '.3g')}, {_g(ci[k][1], '.3g')}]" if k in ci else "—"  # noqa: E731
        rows.append(
            [
                key.replace("_", " "),
                _g(al["N_opt"], ".3g"),
                iv("N_opt"),
                _g(al["D_opt"], ".3g"),
                iv("D_opt"),
                _g(al["tokens_per_param"], ".3g"),
                _g(al.get("loss")),
                iv("loss"),
            ]
        )
    doc.append(Table(["fit", "N_opt", "interval", "D_opt", "interval", "D/N", "predicted loss", "interval"], rows))

    # ---- hold-out
    doc.append(Heading("Extrapolation: hold out the largest budget"))
    rows = []
    for key in HOLDOUT_FITS:
        h = fits["holdout"].get(key)
        if h is None or "error" in h:
            continue
        rows.append(
            [
                LOSS_FITS[key],
                str(len(h["points"])),
                _g(h["mean_abs_error"], ".3g"),
                _g(h["max_abs_error"], ".3g"),
                h["error_kind"],
            ]
        )
    doc.append(
        Paragraph("Each law refitted without the runs of the largest compute budget, then asked to predict them.")
    )
    doc.append(Table(["law", "held-out points", "mean |error|", "max |error|", "error"], rows))

    # ---- synthetic source: the true irreducible loss
    check = fits.get("entropy_rate_check")
    if check is not None:
        doc.append(Heading("Irreducible loss vs the source's exact entropy rate"))
        doc.append(
            Paragraph(
                f"The synthetic Markov source has an exact entropy rate of {check['entropy_rate']:.4f} nats/token; "
                f"approach 3's fitted E = {a3['E']:.4f} {_ci(a3, 'E')}, a relative error of {check['rel_error']:+.1%}."
            )
        )

    # ---- critical batch size
    for sweep_dir, curves, cb in rf.sweeps:
        doc.append(Heading(f"Critical batch size ({sweep_dir.relative_to(rf.runs_dir)})"))
        doc.append(
            Paragraph(
                f"Batch sizes {', '.join(str(b) for b in cb['batch_sizes'])} (sequences; {len(curves)} runs); "
                f"per target "
                f"loss, the steps S of each batch size (the fewest over its learning rates) and examples E = B·S, "
                f"(S/S_min − 1)(E/E_min − 1) = 1 fitted; B_crit = E_min/S_min. "
                f"B_crit(L) = B*/L^(1/α_B): B* = {_g(cb.get('B_star'))}, α_B = {_g(cb.get('alpha_B'))}."
            )
        )
        rows = [
            [
                _g(t["loss"]),
                _g(t["S_min"], ".4g"),
                _g(t["E_min"], ".4g"),
                _g(t["B_crit"], ".3g"),
                _ci(t, "B_crit"),
                _g(t.get("b_simple"), ".3g"),
            ]
            for t in cb["targets"]
        ]
        doc.append(Table(["target loss", "S_min (steps)", "E_min (sequences)", "B_crit", "interval", "B_simple"], rows))
        lr_rows = [
            [b, str(len(row["lrs"]))]
            + [
                ("n/a" if lr is None else f"{lr:.3g}") + (" (edge)" if edge else "")
                for lr, edge in zip(row["best_lr"], row["at_edge"])
            ]
            for b, row in cb.get("lr_by_batch", {}).items()
        ]
        if lr_rows:
            doc.append(
                Paragraph(
                    "Best learning rate of each batch size at each target loss (the run that set its "
                    'steps; "edge": at the smallest or largest lr tried, so the optimum may lie '
                    "outside the grid)."
                )
            )
            doc.append(Table(["B", "lrs tried"] + [f"L={_g(t['loss'])}" for t in cb["targets"]], lr_rows))
        for w in cb.get("warnings", []):
            doc.append(Paragraph(f"Warning: {w}."))
        stem = sweep_dir.name
        for name, caption, draw in (
            (
                f"{stem}_tradeoff.png",
                "Steps vs examples to reach each target loss, with the fitted hyperbolas.",
                lambda p, cb=cb: batch_plots.plot_tradeoff(cb, p),
            ),
            (
                f"{stem}_bcrit.png",
                "Critical batch size B_crit(L) from the sweep and the in-loop noise scale B_simple.",
                lambda p, cb=cb, curves=curves: batch_plots.plot_bcrit(cb, curves, p),
            ),
        ):
            figure(name, caption, draw)

    warned = [
        (key, w)
        for key, value in fits.items()
        if isinstance(value, dict)
        for w in value.get("warnings", [])
        if isinstance(w, str)
    ]
    if warned:
        doc.append(Heading("Fit-quality warnings"))
        doc.append(Table(["fit", "warning"], [[key.replace("_", " "), w] for key, w in warned]))
    fits["figures"] = [name for name, _ in figs]
    return doc


def build_report(runs_dir: Path, out: Path, *, n_bootstrap: int, holdout_budgets: int, seed: int) -> tuple[list, dict]:
    """Fit everything and draw the figures into ``out``; returns (document blocks, fits dict)."""
    t0 = time.perf_counter()
    rf = fit_report(runs_dir, n_bootstrap=n_bootstrap, holdout_budgets=holdout_budgets, seed=seed)
    doc = report_doc(rf, out)
    fits = rf.fits
    fits["seconds"] = time.perf_counter() - t0
    doc.append(Paragraph(f"Fitted in {fits['seconds']:.1f} s by `scalinglab report`."))
    return doc, fits


# What a report directory holds (besides ``<sweep>_tradeoff.png`` / ``<sweep>_bcrit.png`` figures).
REPORT_FILES = (
    "report.md",
    "report.html",
    "fits.json",
    "loss_curves.png",
    "frontier.png",
    "isoflop.png",
    "contours.png",
    "residuals.png",
)


def _report_owned(out: Path) -> list[str]:
    """Names in an existing ``out`` that a report writes (legacy report directories have no marker)."""
    extra = [e.name for e in out.iterdir() if e.name.endswith(("_tradeoff.png", "_bcrit.png"))] if out.is_dir() else []
    return [*REPORT_FILES, *extra]


def write_report(
    runs_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    holdout_budgets: int = 1,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write report.md, report.html, fits.json and the figures into ``out_dir`` (default RUNS_DIR/report).

    Built in a temporary directory and swapped in by name (:func:`scalinglab.outdir.swap_in`): an
    ``out_dir`` that is not a report directory (e.g. the runs themselves) is refused unless ``force``,
    and even then only the report's own files are written into it."""
    from scalinglab.outdir import check_out_dir, swap_in

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: no such runs directory")
    out = Path(out_dir) if out_dir else runs_dir / "report"
    ours = check_out_dir(out, "report", owned=_report_owned(out), force=force)
    tmp = temp_dir_beside(out)
    try:
        doc, fits = build_report(runs_dir, tmp, n_bootstrap=n_bootstrap, holdout_budgets=holdout_budgets, seed=seed)
        atomic_write_text(tmp / "report.md", to_markdown(doc, tmp))
        atomic_write_text(tmp / "report.html", to_html(doc, "scalinglab report"))
        atomic_write_json(tmp / "fits.json", json_safe(fits, drop_keys=("bootstrap_samples",)))
        swap_in(tmp, out, "report", mark=ours)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
