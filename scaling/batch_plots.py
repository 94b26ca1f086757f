"""Figures of a batch-size sweep (matplotlib, Agg, log axes), written atomically as PNG.

- ``tradeoff.png``: steps S vs examples E for each target loss, one point per run (labelled by
  batch size), with the fitted hyperbola (S/S_min − 1)(E/E_min − 1) = 1 and its 2× point
  (2·E_min, 2·S_min) at B = B_crit.
- ``bcrit.png``: B_crit(L) with bootstrap intervals and the fitted B*/L^(1/α_B), together with the
  in-loop B_simple(L) trajectory of every run and its median at the target losses. Batch sizes in
  sequences, loss in nats/token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalinglab.scaling.batch_load import RunCurve
from scalinglab.scaling.critical_batch import hyperbola_steps
from scalinglab.scaling.plots import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Log-log axes with labels, title, legend and grid (every sweep figure)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)


def plot_tradeoff(result: dict[str, Any], path: str | Path) -> Path:
    """S vs E per target with the fitted hyperbola (``result``: JSON-safe :func:`analyze_sweep` output)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("viridis")
    targets = result["targets"]
    b_all = np.array(result["batch_sizes"], dtype=np.float64)
    b_curve = np.geomspace(b_all.min() / 8, b_all.max() * 8, 200)
    for k, t in enumerate(targets):
        color = cmap(k / max(len(targets) - 1, 1))
        pts = [(r["examples"], r["steps"], r["batch_size"]) for r in t["runs"] if r["steps"] is not None]
        e, s, b = (np.array(v, dtype=np.float64) for v in zip(*pts))
        ax.scatter(e, s, color=color, zorder=3, s=18)
        if k == 0:
            for ei, si, bi in zip(e, s, b):
                ax.annotate(f"B={bi:g}", (ei, si), textcoords="offset points", xytext=(4, 4), fontsize=7)
        s_fit = hyperbola_steps(b_curve, t["S_min"], t["E_min"])
        ax.plot(b_curve * s_fit, s_fit, color=color, lw=1.2, label=f"L={t['loss']:.3f}  B_crit={t['B_crit']:.3g}")
        ax.scatter([2 * t["E_min"]], [2 * t["S_min"]], marker="x", color=color, s=40, zorder=4)
    _log_axes(
        ax,
        "examples E = B·S (sequences)",
        "steps S",
        "steps vs examples to reach each target loss (x: B = B_crit, 2·S_min, 2·E_min)",
    )
    return save_figure(fig, path)


def plot_bcrit(result: dict[str, Any], curves: Sequence[RunCurve], path: str | Path) -> Path:
    """B_crit(L) with intervals and fitted power law, plus each run's in-loop B_simple(L)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    loss = np.array([t["loss"] for t in result["targets"]])
    bcrit = np.array([t["B_crit"] for t in result["targets"]])
    lo = np.array([(t["ci"]["B_crit"] or [np.nan, np.nan])[0] for t in result["targets"]])
    hi = np.array([(t["ci"]["B_crit"] or [np.nan, np.nan])[1] for t in result["targets"]])
    yerr = np.array([np.where(np.isfinite(lo), bcrit - lo, 0.0), np.where(np.isfinite(hi), hi - bcrit, 0.0)])
    ax.errorbar(loss, bcrit, yerr=yerr, fmt="o", color="C0", capsize=3, label="B_crit (sweep fit, 95% CI)")
    if result.get("B_star") is not None and result.get("inv_alpha_B") is not None:
        grid = np.geomspace(loss.min() * 0.97, loss.max() * 1.03, 100)
        alpha = "n/a" if result.get("alpha_B") is None else f"{result['alpha_B']:.3g}"
        ax.plot(
            grid,
            result["B_star"] * grid ** (-result["inv_alpha_B"]),
            color="C0",
            lw=1,
            label=f"B*/L^(1/α_B): B*={result['B_star']:.3g}, α_B={alpha}",
        )
    cmap = plt.get_cmap("plasma")
    used = {r.get("run") for t in result["targets"] for r in t["runs"]} - {None}
    curves = [c for c in curves if not used or c.name in used]  # a grid's best runs only
    for i, c in enumerate(curves):
        ok = np.isfinite(c.b_simple) & (c.b_simple > 0)  # log axis: non-positive windows cannot be drawn
        if ok.sum() > 1:
            ax.plot(
                c.loss[ok],
                c.b_simple[ok],
                lw=0.8,
                alpha=0.6,
                color=cmap(i / max(len(curves), 1)),
                label=f"B_simple in-loop, B={c.batch_size}",
            )
    bs = [t["b_simple"] for t in result["targets"]]
    if any(v is not None for v in bs):
        ax.plot(loss, [np.nan if v is None else v for v in bs], "s", color="C3", label="B_simple median at targets")
    _log_axes(ax, "loss (nats/token, smoothed)", "batch size (sequences)", "critical batch size vs loss")
    ax.invert_xaxis()  # training proceeds to the right
    return save_figure(fig, path)


FIGURE_FILES = ("tradeoff.png", "bcrit.png")


def write_plots(
    result: dict[str, Any], curves: Sequence[RunCurve], out_dir: str | Path, *, force: bool = False
) -> list[Path]:
    """Both figures into ``out_dir`` (built aside, swapped in by name; see :mod:`scalinglab.outdir`);
    returns their paths."""
    import shutil

    from scalinglab.fileio import temp_dir_beside
    from scalinglab.outdir import check_out_dir, swap_in

    out_dir = Path(out_dir)
    ours = check_out_dir(out_dir, "fit-batch-plot", owned=FIGURE_FILES, force=force, flag="--plot")
    tmp = temp_dir_beside(out_dir)
    try:
        plot_tradeoff(result, tmp / "tradeoff.png")
        plot_bcrit(result, curves, tmp / "bcrit.png")
        names = swap_in(tmp, out_dir, "fit-batch-plot", mark=ours)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out_dir / n for n in names]
