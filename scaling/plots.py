"""Figures for scaling fits (matplotlib, Agg backend, log axes, units on every axis).

Each ``plot_*`` function takes the table (and fit results) and an output path (PNG).
:func:`write_plots` renders the figures for one law into a directory atomically: everything
goes to a temporary sibling directory first, so an error leaves no partial output.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from scalinglab.fileio import atomic_write_bytes, temp_dir_beside  # noqa: E402
from scalinglab.scaling import chinchilla, kaplan  # noqa: E402
from scalinglab.scaling.isoflop import isoflop_profiles  # noqa: E402
from scalinglab.scaling.load import RunTable  # noqa: E402

CMAP = "viridis"


def save_figure(fig, path: str | Path) -> Path:
    """Render ``fig`` to PNG bytes and write them atomically; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _finish(fig, path) -> None:
    fig.tight_layout()
    save_figure(fig, path)


def _size_colours(table: RunTable):
    norm = LogNorm(vmin=table.params.min(), vmax=max(table.params.max(), table.params.min() * 1.0001))
    return norm, plt.get_cmap(CMAP)


def plot_loss_curves(table: RunTable, path) -> None:
    """Loss (nats/token) vs training FLOPs, one curve per run, coloured by N (parameters)."""
    fig, ax = plt.subplots(figsize=(7, 5))
    norm, cmap = _size_colours(table)
    for i in range(len(table)):
        cv = table.curves[i] if table.curves else None
        if cv is not None and cv.flops.size:
            ax.plot(cv.flops, cv.loss, color=cmap(norm(table.params[i])), lw=1.2)
        ax.scatter([table.flops[i]], [table.loss[i]], color=cmap(norm(table.params[i])), s=14, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("loss curves (final points as dots)")
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap),
        ax=ax,
        label=f"N ({table.params_convention.replace('_', '-')} parameters)",
    )
    _finish(fig, path)


def plot_frontier(table: RunTable, path, fits: dict | None = None) -> None:
    """Two panels: L vs N and L vs C (FLOPs), points coloured by N, with any fitted lines in
    ``fits`` (keys ``kaplan-n``, ``kaplan-c``, ``chinchilla``: the compute-optimal loss)."""
    fits = fits or {}
    fig, (ax_n, ax_c) = plt.subplots(1, 2, figsize=(12, 5))
    norm, cmap = _size_colours(table)
    for ax, x in ((ax_n, table.params), (ax_c, table.flops)):
        ax.scatter(x, table.loss, c=cmap(norm(table.params)), s=14, label="runs")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("loss (nats/token)")
    n_grid = np.geomspace(table.params.min() / 2, table.params.max() * 4, 100)
    c_grid = np.geomspace(table.flops.min() / 2, table.flops.max() * 4, 100)
    if "kaplan-n" in fits:
        p = fits["kaplan-n"]
        ax_n.plot(n_grid, kaplan.predict_loss(p, n_params=n_grid), "k--", label=f"L(N) = (N_c/N)^{p['alpha_N']:.3f}")
    if "kaplan-c" in fits:
        p = fits["kaplan-c"]
        ax_c.plot(c_grid, kaplan.predict_loss(p, flops=c_grid), "k--", label=f"L(C) = (C_c/C)^{p['alpha_C']:.3f}")
    if "chinchilla" in fits:
        p = fits["chinchilla"]["params"]
        n_opt, d_opt = chinchilla.compute_optimal(p, c_grid, fits["chinchilla"].get("flops_model"))
        ax_c.plot(c_grid, chinchilla.predict_loss(p, n_opt, d_opt), "r-", label="approach 3, compute-optimal")
    ax_n.set_xlabel(f"N ({table.params_convention.replace('_', '-')} parameters)")
    ax_c.set_xlabel("training compute C (FLOPs)")
    ax_n.set_title("loss vs model size")
    ax_c.set_title("loss vs compute")
    ax_n.legend()
    ax_c.legend()
    _finish(fig, path)


def plot_isoflop(table: RunTable, path, result: dict | None = None) -> None:
    """IsoFLOP profiles: loss vs N per FLOP budget with the fitted parabolas and their minima;
    a second panel shows N_opt vs C with the fitted power law when ``result`` is given."""
    sel = (result or {}).get("selection") or {}
    profiles, _, _ = isoflop_profiles(
        table.params, table.tokens, table.flops, table.loss, keep=sel.get("keep"), loss_window=sel.get("loss_window")
    )
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    norm = LogNorm(
        vmin=min((p["flops"] for p in profiles), default=1), vmax=max((p["flops"] for p in profiles), default=10)
    )
    cmap = plt.get_cmap("plasma")
    for p in profiles:
        idx = np.asarray(p["index"])
        col = cmap(norm(p["flops"]))
        ax.scatter(table.params[idx], table.loss[idx], color=col, s=14)
        x = np.linspace(np.log(table.params[idx]).min(), np.log(table.params[idx]).max(), 100)
        c0, c1, c2 = p["coef"]
        ax.plot(np.exp(x), c0 + c1 * x + c2 * x**2, color=col, lw=1.2, label=f"C = {p['flops']:.2g} FLOPs")
        ax.plot([p["N_opt"]], [p["loss_opt"]], "k*", ms=9)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("IsoFLOP profiles (parabola in ln N, minima starred)")
    if len(profiles) <= 12:
        ax.legend(fontsize=7)
    c = np.array([p["flops"] for p in profiles])
    ax2.scatter(c, [p["N_opt"] for p in profiles], label="N_opt (parameters)")
    ax2.scatter(c, [p["D_opt"] for p in profiles], marker="s", label="D_opt (tokens)")
    if result is not None and c.size:
        cg = np.geomspace(c.min() / 3, c.max() * 3, 50)
        ax2.plot(cg, result["N_coef"] * cg ** result["a"], "C0-", label=f"N_opt ∝ C^{result['a']:.3f}")
        ax2.plot(cg, result["D_coef"] * cg ** result["b"], "C1-", label=f"D_opt ∝ C^{result['b']:.3f}")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("training compute C (FLOPs)")
    ax2.set_ylabel("parameters / tokens")
    ax2.set_title("compute-optimal allocation")
    ax2.legend()
    _finish(fig, path)


def plot_contours(table: RunTable, result: dict, path) -> None:
    """Fitted L(N, D) contours (approach 3) over the runs, with the compute-optimal line."""
    p = result["params"]
    n_grid = np.geomspace(table.params.min() / 3, table.params.max() * 3, 120)
    d_grid = np.geomspace(table.tokens.min() / 3, table.tokens.max() * 3, 120)
    nn, dd = np.meshgrid(n_grid, d_grid)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    cs = ax.contourf(nn, dd, chinchilla.predict_loss(p, nn, dd), levels=20, cmap=CMAP)
    fig.colorbar(cs, ax=ax, label="fitted loss (nats/token)")
    ax.scatter(table.params, table.tokens, c="w", edgecolors="k", s=14, label="runs")
    c_line = np.geomspace(6 * n_grid.min() * d_grid.min(), 6 * n_grid.max() * d_grid.max(), 100)
    n_opt, d_opt = chinchilla.compute_optimal(p, c_line, result.get("flops_model"))
    ex = result.get("allocation_exponents") or p  # the exact-C slopes where the runs carry their FLOPs
    ax.plot(n_opt, d_opt, "r-", lw=2, label=f"compute-optimal: N ∝ C^{ex['a']:.3f}, D ∝ C^{ex['b']:.3f}")
    ax.set_xlim(n_grid.min(), n_grid.max())
    ax.set_ylim(d_grid.min(), d_grid.max())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("D (training tokens)")
    ax.set_title("L(N, D) = E + A/N^α + B/D^β")
    ax.legend(loc="lower right", fontsize=8)
    _finish(fig, path)


def plot_residuals(table: RunTable, predicted_loss, path, label: str = "fit") -> None:
    """Relative residuals ln(predicted/observed loss) vs training FLOPs, coloured by N."""
    r = np.log(np.asarray(predicted_loss) / table.loss)
    norm, cmap = _size_colours(table)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(0.0, color="k", lw=0.8)
    ax.scatter(table.flops, r, c=cmap(norm(table.params)), s=14, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("ln(predicted / observed loss)")
    ax.set_title(f"residuals ({label})")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="N (parameters)")
    ax.legend()
    _finish(fig, path)


FIGURE_FILES = ("loss_curves.png", "frontier.png", "contours.png", "isoflop.png", "residuals.png")


def write_plots(table: RunTable, law: str, result: dict, out_dir, *, force: bool = False) -> list[str]:
    """Render the figures that make sense for ``law`` into ``out_dir``; returns the file names written.

    Built in a temporary directory and swapped in by name (:mod:`scalinglab.outdir`): a directory
    that is not a ``fit --plot`` output is refused unless ``force``; nothing but these figures is replaced."""
    from scalinglab.outdir import check_out_dir, swap_in
    from scalinglab.scaling.laws import LOSS_LAWS, predict_table

    out = Path(out_dir)
    ours = check_out_dir(out, "fit-plot", owned=FIGURE_FILES, force=force, flag="--plot")
    tmp = temp_dir_beside(out)
    try:
        plot_loss_curves(table, tmp / "loss_curves.png")
        plot_frontier(
            table, tmp / "frontier.png", {law: result} if law in ("kaplan-n", "kaplan-c", "chinchilla") else {}
        )
        if law == "chinchilla":
            plot_contours(table, result, tmp / "contours.png")
        if law == "isoflop" or (
            law == "chinchilla" and isoflop_profiles(table.params, table.tokens, table.flops, table.loss)[0]
        ):
            plot_isoflop(table, tmp / "isoflop.png", result if law == "isoflop" else None)
        if law in LOSS_LAWS:
            plot_residuals(table, predict_table(result, table), tmp / "residuals.png", law)
        names = [n for n in FIGURE_FILES if (tmp / n).exists()]
        swap_in(tmp, out, "fit-plot", mark=ours)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return names
