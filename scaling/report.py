"""The scaling report: every run and sweep of a ladder directory → fits, figures, report.md/html, fits.json.

``write_report(runs_dir, out_dir)`` loads the ladder's runs (``load_source``; batch sweeps are
loaded separately), fits Kaplan's L(N) and L(C), Chinchilla approaches 1-3 (bootstrap
intervals, hold-out of the largest budget), the compute-optimal allocation for the next 10×
budget, the critical batch size where a sweep exists, and — for a source with a known entropy
rate — compares the fitted irreducible loss E with it. Output is written into a temporary
directory and moved into place at the end, so a failed report leaves no partial files.

Units throughout: N non-embedding parameters, D tokens, C training FLOPs (exact), loss in nats/token.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, atomic_write_text, temp_dir_beside
from scalinglab.scaling.report_doc import Figure, Heading, Paragraph, Table, to_html, to_markdown

DEFAULT_BOOTSTRAP = 1000


def _g(x: Any, spec: str = ".4g") -> str:
    """A number for a table cell ('—' for missing or non-finite)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    return format(v, spec) if math.isfinite(v) else "—"


def _ci(result: dict, name: str) -> str:
    lo_hi = (result.get("ci") or {}).get(name)
    if not lo_hi or any(v is None or not math.isfinite(float(v)) for v in lo_hi):
        return "—"
    return f"[{_g(lo_hi[0])}, {_g(lo_hi[1])}]"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if k != "bootstrap_samples"}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _params_table(result: dict) -> Table:
    rows = [[name, _g(result["params"][name]), _ci(result, name)] for name in result["param_names"]]
    level = result.get("ci_level", 0.95)
    return Table(["parameter", "fit", f"{level:.0%} bootstrap interval"], rows)


def _try(fits: dict, key: str, fn: Callable[[], Any]) -> Any:
    """Run one analysis; a UserError (too few points...) is recorded in fits.json, not fatal."""
    try:
        value = fn()
    except UserError as e:
        fits[key] = {"error": str(e)}
        return None
    fits[key] = value
    return value


def _entropy_rate(runs_dir: Path) -> float | None:
    """The data source's exact entropy rate (nats/token) if every run's config.json records one."""
    rates = set()
    for cfg in runs_dir.rglob("config.json"):
        try:
            rate = json.loads(cfg.read_text()).get("data", {}).get("entropy_rate")
        except (OSError, ValueError):
            continue
        rates.add(rate)
    if len(rates) == 1 and None not in rates:
        return float(rates.pop())
    return None


def repeated_data(runs_dir: Path) -> dict[str, float]:
    """``{run name: epochs}`` of the runs whose config.json says they read their train split
    more than once (``data.epochs > 1``, written by ``train``)."""
    out = {}
    for cfg in sorted(runs_dir.rglob("config.json")):
        try:
            c = json.loads(cfg.read_text())
            epochs = c.get("data", {}).get("epochs")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(epochs, (int, float)) and epochs > 1:
            out[c.get("name") or cfg.parent.name] = float(epochs)
    return out


def _sweep_dirs(runs_dir: Path) -> list[Path]:
    return sorted(p.parent for p in runs_dir.rglob("sweep.json"))


def build_report(runs_dir: Path, out: Path, *, n_bootstrap: int, holdout_budgets: int, seed: int) -> tuple[list, dict]:
    """Fit everything and draw the figures into ``out``; returns (document blocks, fits dict)."""
    from scalinglab.scaling import plots
    from scalinglab.scaling.allocation import allocate
    from scalinglab.scaling.budgets import group_budgets
    from scalinglab.scaling.holdout import holdout
    from scalinglab.scaling.laws import fit_law, predict_table
    from scalinglab.scaling.load import load_source

    t0 = time.perf_counter()
    table = load_source(runs_dir, exclude_sweeps=True)
    fits: dict[str, Any] = {"source": str(runs_dir), "n_runs": len(table), "n_bootstrap": n_bootstrap}
    labels, budgets = group_budgets(table.flops)
    fits["budgets"] = [float(b) for b in budgets]
    kw = {"n_bootstrap": n_bootstrap, "seed": seed}

    doc: list = [Heading("Scaling report", 1)]
    doc.append(Paragraph(
        f"{len(table)} runs from `{runs_dir}`, {len(budgets)} compute budgets from {_g(table.flops.min(), '.3g')} "
        f"to {_g(table.flops.max(), '.3g')} FLOPs, N from {_g(table.params.min(), ',.0f')} to "
        f"{_g(table.params.max(), ',.0f')} non-embedding parameters. Loss is the final eval loss on the fixed "
        f"validation batches (nats/token); C is the exact training compute (3 × the matmul-exact forward "
        f"FLOPs per token × tokens); N is Kaplan's non-embedding parameter count. Intervals are "
        f"{n_bootstrap}-resample bootstrap percentiles (95%)."))
    from scalinglab.scaling.protocol import describe_protocol

    protocol_lines, fits["hyperparameter_protocol"] = describe_protocol(runs_dir)
    if protocol_lines:
        doc.append(Heading("Hyperparameter protocol"))
        for line in protocol_lines:
            doc.append(Paragraph(line))
    doc.append(Heading("Runs"))
    rows = []
    for i in np.argsort(table.flops * 1e30 + table.params):
        rows.append([table.names[i], f"{int(table.params[i]):,}",
                     f"{int(table.params_total[i]):,}" if table.params_total is not None else "—",
                     _g(table.tokens[i], ".3g"), _g(table.flops[i], ".3g"), _g(table.tokens[i] / table.params[i], ".1f"),
                     _g(table.loss[i]), _g(table.best_loss[i]) if table.best_loss is not None else "—"])
    doc.append(Table(["run", "N", "N_total", "D (tokens)", "C (FLOPs)", "D/N", "final eval loss", "best eval loss"], rows))
    repeats = repeated_data(runs_dir)
    if repeats:
        fits["data_repeats"] = repeats
        worst = max(repeats, key=repeats.get)
        doc.append(Paragraph(
            f"Data repeats: {len(repeats)} of {len(table)} runs read their training data more than once (up to "
            f"{repeats[worst]:.2f} epochs, {worst}); the laws assume fresh tokens, so their D is worth less than "
            f"unique data (repeated tokens lose value after a few epochs, Muennighoff et al. 2023)."))
    figs: list[tuple[str, str]] = []

    def figure(name: str, caption: str, draw: Callable[[Path], None]) -> None:
        draw(out / name)
        doc.append(Figure(out / name, caption))
        figs.append((name, caption))

    figure("loss_curves.png", "Training curves (eval loss vs tokens), coloured by N.",
           lambda p: plots.plot_loss_curves(table, p))

    # ---- Kaplan
    doc.append(Heading("Kaplan et al. (2020): L(N) and L(C)"))
    kn = _try(fits, "kaplan_n", lambda: fit_law(table, "kaplan-n", **kw))
    kc = _try(fits, "kaplan_c", lambda: fit_law(table, "kaplan-c", **kw))
    for label, res in (("L(N) = (N_c/N)^α_N, lowest loss per size (Kaplan's L(N) assumes models trained to "
                        "convergence; on an IsoFLOP ladder the largest models see the fewest tokens, so read this "
                        "one as descriptive)", kn), ("L(C) = (C_c/C)^α_C on the compute frontier", kc)):
        if res is None:
            continue
        doc.append(Paragraph(label + ":"))
        doc.append(_params_table(res))

    # ---- Chinchilla approaches
    doc.append(Heading("Chinchilla (Hoffmann et al. 2022)"))
    a1 = _try(fits, "approach1_envelope", lambda: fit_law(table, "envelope", **kw))
    a2 = _try(fits, "approach2_isoflop", lambda: fit_law(table, "isoflop", **kw))
    a3 = _try(fits, "approach3_parametric", lambda: fit_law(table, "chinchilla", **kw))
    rows = []
    for label, res in (("1: min-loss envelope", a1), ("2: IsoFLOP parabolas", a2), ("3: parametric L(N, D)", a3)):
        if res is None:
            rows.append([label, "—", "—", "—", "—"])
            continue
        rows.append([label, _g(res["a"], ".3f"), _ci(res, "a"), _g(res["b"], ".3f"), _ci(res, "b")])
    doc.append(Paragraph("Compute-optimal exponents N_opt ∝ C^a, D_opt ∝ C^b (Chinchilla's published values: "
                         "a ≈ 0.50, 0.49, 0.46 and b ≈ 0.50, 0.51, 0.54 for approaches 1, 2, 3):"))
    doc.append(Table(["approach", "a", "a interval", "b", "b interval"], rows))
    if a3 is not None:
        doc.append(Paragraph("Approach 3, L(N, D) = E + A/N^α + B/D^β (Huber δ = 1e-3 on log loss, "
                             f"L-BFGS from {a3['n_starts']} starts; objective {_g(a3['objective'], '.4g')}):"))
        doc.append(_params_table(a3))
    figure("frontier.png", "Loss vs N and vs C with the fitted Kaplan laws and approach 3's compute-optimal loss.",
           lambda p: plots.plot_frontier(table, p, {k: v for k, v in (("kaplan-n", kn), ("kaplan-c", kc),
                                                                     ("chinchilla", a3)) if v is not None}))
    if a2 is not None:
        figure("isoflop.png", "IsoFLOP profiles: loss vs N per budget with fitted parabolas; minima vs C.",
               lambda p: plots.plot_isoflop(table, p, a2))
    if a3 is not None:
        figure("contours.png", "Approach 3: fitted L(N, D) contours, the runs, and the compute-optimal line.",
               lambda p: plots.plot_contours(table, a3, p))
        figure("residuals.png", "Approach 3 residuals ln(predicted/observed) vs compute.",
               lambda p: plots.plot_residuals(table, predict_table(a3, table), p, "approach 3"))

    # ---- allocation for the next 10× budget
    next_c = float(budgets.max()) * 10.0
    doc.append(Heading(f"Compute-optimal allocation at the next 10× budget (C = {next_c:.3g} FLOPs)"))
    rows = []
    alloc: dict[str, Any] = {}
    for key, res in (("approach1_envelope", a1), ("approach2_isoflop", a2), ("approach3_parametric", a3)):
        if res is None:
            continue
        al = allocate(res, next_c)
        alloc[key] = al
        ci = al.get("ci", {})
        iv = lambda k: f"[{_g(ci[k][0], '.3g')}, {_g(ci[k][1], '.3g')}]" if k in ci else "—"  # noqa: E731
        rows.append([key.replace("_", " "), _g(al["N_opt"], ".3g"), iv("N_opt"), _g(al["D_opt"], ".3g"), iv("D_opt"),
                     _g(al["tokens_per_param"], ".3g"), _g(al.get("loss")), iv("loss")])
    fits["allocation_next_10x"] = alloc
    doc.append(Table(["fit", "N_opt", "interval", "D_opt", "interval", "D/N", "predicted loss", "interval"], rows))

    # ---- hold-out
    doc.append(Heading("Extrapolation: hold out the largest budget"))
    rows = []
    hold: dict[str, Any] = {}
    for key, law in (("approach3_parametric", "chinchilla"), ("approach2_isoflop", "isoflop"),
                     ("kaplan_n", "kaplan-n")):
        if fits.get(key) is None or "error" in fits[key]:
            continue
        try:
            if law in ("isoflop",):
                h = holdout(table, law, holdout_budgets)
            else:
                n_held = int(np.sum(labels >= labels.max() + 1 - holdout_budgets))
                h = holdout(table, law, n_held)
        except UserError as e:
            hold[key] = {"error": str(e)}
            continue
        hold[key] = h
        rows.append([law, str(len(h["points"])), _g(h["mean_abs_error"], ".3g"), _g(h["max_abs_error"], ".3g"),
                     h["error_kind"]])
    fits["holdout"] = hold
    doc.append(Paragraph("Each law refitted without the runs of the largest compute budget, then asked to predict them."))
    doc.append(Table(["law", "held-out points", "mean |error|", "max |error|", "error"], rows))

    # ---- synthetic source: the true irreducible loss
    rate = _entropy_rate(runs_dir)
    if rate is not None and a3 is not None:
        rel = a3["E"] / rate - 1.0
        fits["entropy_rate_check"] = {"entropy_rate": rate, "fitted_E": a3["E"], "E_ci": (a3.get("ci") or {}).get("E"),
                                      "rel_error": rel}
        doc.append(Heading("Irreducible loss vs the source's exact entropy rate"))
        doc.append(Paragraph(
            f"The synthetic Markov source has an exact entropy rate of {rate:.4f} nats/token; approach 3's fitted "
            f"E = {a3['E']:.4f} {_ci(a3, 'E')}, a relative error of {rel:+.1%}."))

    # ---- critical batch size
    for sweep_dir in _sweep_dirs(runs_dir):
        from scalinglab.scaling import batch_plots
        from scalinglab.scaling.critical_batch import analyze_sweep, json_safe, load_sweep

        try:
            curves = load_sweep(sweep_dir)
            cb = analyze_sweep(curves, n_bootstrap=n_bootstrap, seed=seed)
        except UserError as e:
            fits.setdefault("critical_batch", {})[sweep_dir.name] = {"error": str(e)}
            continue
        fits.setdefault("critical_batch", {})[sweep_dir.name] = json_safe(cb)
        doc.append(Heading(f"Critical batch size ({sweep_dir.relative_to(runs_dir)})"))
        doc.append(Paragraph(
            f"Batch sizes {', '.join(str(b) for b in cb['batch_sizes'])} (sequences; {len(curves)} runs); per target "
            f"loss, the steps S of each batch size (the fewest over its learning rates) and examples E = B·S, "
            f"(S/S_min − 1)(E/E_min − 1) = 1 fitted; B_crit = E_min/S_min. "
            f"B_crit(L) = B*/L^(1/α_B): B* = {_g(cb.get('B_star'))}, α_B = {_g(cb.get('alpha_B'))}."))
        rows = [[_g(t["loss"]), _g(t["S_min"], ".4g"), _g(t["E_min"], ".4g"), _g(t["B_crit"], ".3g"),
                 _ci(t, "B_crit"), _g(t.get("b_simple"), ".3g")] for t in cb["targets"]]
        doc.append(Table(["target loss", "S_min (steps)", "E_min (sequences)", "B_crit", "interval", "B_simple"], rows))
        lr_rows = [[b, str(len(row["lrs"]))] + [("n/a" if lr is None else f"{lr:.3g}") + (" (edge)" if edge else "")
                                                for lr, edge in zip(row["best_lr"], row["at_edge"])]
                   for b, row in cb.get("lr_by_batch", {}).items()]
        if lr_rows:
            doc.append(Paragraph("Best learning rate of each batch size at each target loss (the run that set its "
                                 "steps; \"edge\": at the smallest or largest lr tried, so the optimum may lie "
                                 "outside the grid)."))
            doc.append(Table(["B", "lrs tried"] + [f"L={_g(t['loss'])}" for t in cb["targets"]], lr_rows))
        for w in cb.get("warnings", []):
            doc.append(Paragraph(f"Warning: {w}."))
        stem = sweep_dir.name
        for name, caption, draw in (
            (f"{stem}_tradeoff.png", "Steps vs examples to reach each target loss, with the fitted hyperbolas.",
             lambda p: batch_plots.plot_tradeoff(cb, p)),
            (f"{stem}_bcrit.png", "Critical batch size B_crit(L) from the sweep and the in-loop noise scale B_simple.",
             lambda p: batch_plots.plot_bcrit(cb, curves, p)),
        ):
            figure(name, caption, draw)

    fits["figures"] = [name for name, _ in figs]
    fits["seconds"] = time.perf_counter() - t0
    doc.append(Paragraph(f"Fitted in {fits['seconds']:.1f} s by `scalinglab report`."))
    return doc, fits


def write_report(runs_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                 n_bootstrap: int = DEFAULT_BOOTSTRAP, holdout_budgets: int = 1, seed: int = 0) -> Path:
    """Write report.md, report.html, fits.json and the figures into ``out_dir`` (default RUNS_DIR/report)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: no such runs directory")
    out = Path(out_dir) if out_dir else runs_dir / "report"
    tmp = temp_dir_beside(out)
    try:
        doc, fits = build_report(runs_dir, tmp, n_bootstrap=n_bootstrap, holdout_budgets=holdout_budgets, seed=seed)
        atomic_write_text(tmp / "report.md", to_markdown(doc, tmp))
        atomic_write_text(tmp / "report.html", to_html(doc, "scalinglab report"))
        atomic_write_json(tmp / "fits.json", _jsonable(fits))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
