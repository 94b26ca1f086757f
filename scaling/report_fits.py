"""The fitting half of the scaling report: every law on a ladder directory, no drawing, no text.

:func:`fit_report` loads the ladder's runs (``load_source``; batch sweeps are loaded separately),
fits Kaplan's L(N) and L(C), Chinchilla approaches 1-3 (bootstrap intervals), the compute-optimal
allocation for the next 10× budget, the hold-out of the largest budget(s), the critical batch size
of every sweep and, for a source with a known entropy rate, the fitted irreducible loss E against
it. An analysis that cannot run (too few points...) is recorded as ``{"error": message}``.
:mod:`scalinglab.scaling.report` renders the result.

Units throughout: N parameters (non-embedding for Kaplan's laws, total for Chinchilla's approaches:
each result's ``params_convention``), D tokens, C training FLOPs (exact), loss in nats/token.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scalinglab.errors import UserError
from scalinglab.fileio import json_safe
from scalinglab.rundir import CONFIG_FILE, SWEEP_FILE
from scalinglab.scaling.load import RunTable

DEFAULT_BOOTSTRAP = 1000
# fits.json key -> law, in the order the report shows them
LOSS_FITS = {
    "kaplan_n": "kaplan-n",
    "kaplan_c": "kaplan-c",
    "approach1_envelope": "envelope",
    "approach2_isoflop": "isoflop",
    "approach3_parametric": "chinchilla",
}
ALLOCATION_FITS = ("approach1_envelope", "approach2_isoflop", "approach3_parametric")
HOLDOUT_FITS = ("approach3_parametric", "approach2_isoflop", "kaplan_n")


@dataclasses.dataclass
class ReportFits:
    """What the report shows: the runs, their budgets, and every fit (``fits`` is fits.json's content)."""

    runs_dir: Path
    table: RunTable
    labels: np.ndarray  # int[runs]: the compute budget index of each run
    budgets: np.ndarray  # float[budgets]: FLOPs per budget
    n_bootstrap: int
    fits: dict[str, Any]
    sweeps: list[tuple[Path, list, dict]]  # (sweep dir, its run curves, critical-batch analysis) per analysed sweep
    protocol_lines: list[str]  # how the hyperparameters were chosen (:func:`describe_protocol`), for the report

    def result(self, key: str) -> dict | None:
        """The fit stored under ``key``; None when it failed or did not run."""
        value = self.fits.get(key)
        return None if value is None or "error" in value else value


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
    for cfg in runs_dir.rglob(CONFIG_FILE):
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
    for cfg in sorted(runs_dir.rglob(CONFIG_FILE)):
        try:
            c = json.loads(cfg.read_text())
            epochs = c.get("data", {}).get("epochs")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(epochs, (int, float)) and epochs > 1:
            out[c.get("name") or cfg.parent.name] = float(epochs)
    return out


def _sweep_dirs(runs_dir: Path) -> list[Path]:
    return sorted(p.parent for p in runs_dir.rglob(SWEEP_FILE))


def fit_report(runs_dir: Path, *, n_bootstrap: int, holdout_budgets: int, seed: int) -> ReportFits:
    """Fit every law on the runs under ``runs_dir`` (see the module docstring)."""
    from scalinglab.scaling.allocation import allocate
    from scalinglab.scaling.budgets import group_budgets
    from scalinglab.scaling.holdout import holdout
    from scalinglab.scaling.laws import fit_law
    from scalinglab.scaling.load import load_source
    from scalinglab.scaling.protocol import describe_protocol

    table = load_source(runs_dir, exclude_sweeps=True)
    fits: dict[str, Any] = {"source": str(runs_dir), "n_runs": len(table), "n_bootstrap": n_bootstrap}
    labels, budgets = group_budgets(table.flops)
    fits["budgets"] = [float(b) for b in budgets]
    protocol_lines, fits["hyperparameter_protocol"] = describe_protocol(runs_dir)
    rf = ReportFits(runs_dir, table, labels, budgets, n_bootstrap, fits, [], protocol_lines)
    repeats = repeated_data(runs_dir)
    if repeats:
        fits["data_repeats"] = repeats
    # each law in its paper's N convention (scaling.laws.PAPER_CONVENTION): like for like with the
    # published values the report compares it with
    for key, law in LOSS_FITS.items():
        _try(fits, key, lambda law=law: fit_law(table, law, n_bootstrap=n_bootstrap, seed=seed, params="auto"))

    next_c = float(budgets.max()) * 10.0
    fits["allocation_next_10x"] = {
        key: allocate(rf.result(key), next_c) for key in ALLOCATION_FITS if rf.result(key) is not None
    }

    hold: dict[str, Any] = {}
    for key in HOLDOUT_FITS:
        if rf.result(key) is None:
            continue
        law = LOSS_FITS[key]
        try:
            if law in ("isoflop",):
                hold[key] = holdout(table, law, holdout_budgets, params="auto")
            else:
                n_held = int(np.sum(labels >= labels.max() + 1 - holdout_budgets))
                hold[key] = holdout(table, law, n_held, params="auto")
        except UserError as e:
            hold[key] = {"error": str(e)}
    fits["holdout"] = hold

    rate = _entropy_rate(runs_dir)
    a3 = rf.result("approach3_parametric")
    if rate is not None and a3 is not None:
        fits["entropy_rate_check"] = {
            "entropy_rate": rate,
            "fitted_E": a3["E"],
            "E_ci": (a3.get("ci") or {}).get("E"),
            "rel_error": a3["E"] / rate - 1.0,
        }

    for sweep_dir in _sweep_dirs(runs_dir):
        from scalinglab.scaling.batch_load import load_sweep
        from scalinglab.scaling.critical_batch import analyze_sweep

        try:
            curves = load_sweep(sweep_dir)
            cb = analyze_sweep(curves, n_bootstrap=n_bootstrap, seed=seed)
        except UserError as e:
            fits.setdefault("critical_batch", {})[sweep_dir.name] = {"error": str(e)}
            continue
        fits.setdefault("critical_batch", {})[sweep_dir.name] = json_safe(cb)
        rf.sweeps.append((sweep_dir, curves, cb))

    # Kaplan's L(N, S_min) and L(C_min): B_crit(L) from the first sweep that gives a law, else the runs' B_simple
    from scalinglab.scaling.kaplan import bcrit_from_analysis

    bcrit = None
    for sweep_dir, _, cb in rf.sweeps:
        try:
            bcrit = bcrit_from_analysis(cb, sweep_dir.relative_to(runs_dir))
            break
        except UserError:
            continue
    for key, law in (("kaplan_ns", "kaplan-ns"), ("kaplan_cmin", "kaplan-cmin")):
        _try(
            fits,
            key,
            lambda law=law: fit_law(table, law, n_bootstrap=n_bootstrap, seed=seed, params="auto", bcrit=bcrit),
        )
    return rf
