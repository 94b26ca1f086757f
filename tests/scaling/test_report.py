"""``scalinglab report``: every file written, numbers agree with the law that generated the runs."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from scalinglab.errors import UserError
from scalinglab.scaling import chinchilla
from scalinglab.scaling.report import write_report
from scalinglab.scaling.synthetic import write_run

LAW = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, approach 3
BUDGETS = (1e18, 3e18, 1e19, 3e19)
STEPS = 20


def _ladder(root, entropy_rate=None):
    """An IsoFLOP ladder of synthetic runs whose loss along each run follows LAW exactly (C = 6·N·D)."""
    for budget in BUDGETS:
        centre = math.sqrt(budget / 6 / 20)
        for n in centre * np.logspace(-0.6, 0.6, 5):
            d = budget / (6 * n)
            run = write_run(
                root / f"C{budget:.0e}-N{n:.3g}",
                n=n,
                total=1.1 * n,
                steps=STEPS,
                tokens_per_step=d / STEPS,
                flops_per_token=6 * n,
                loss_fn=lambda tok, n=n: float(chinchilla.predict_loss(LAW, n, tok)),
            )
            if entropy_rate is not None:
                cfg = json.loads((run / "config.json").read_text())
                cfg["data"] = {"dataset": "synthetic_markov", "entropy_rate": entropy_rate}
                (run / "config.json").write_text(json.dumps(cfg))
    return root


def test_report_files_and_fits_recover_the_generating_law(tmp_path):
    runs = _ladder(tmp_path / "ladder", entropy_rate=1.60)
    out = write_report(runs, tmp_path / "report", n_bootstrap=20)
    fits = json.loads((out / "fits.json").read_text())
    for name in ["report.md", "report.html", "fits.json", *fits["figures"]]:
        assert (out / name).stat().st_size > 0, name
    assert {"loss_curves.png", "frontier.png", "isoflop.png", "contours.png", "residuals.png"} <= set(fits["figures"])
    assert fits["n_runs"] == 20 and len(fits["budgets"]) == 4

    a3 = fits["approach3_parametric"]
    for k in ("E", "alpha", "beta"):  # noiseless data: the fit is the law
        assert a3[k] == pytest.approx(LAW[k], rel=1e-3)
    assert a3["a"] == pytest.approx(LAW["beta"] / (LAW["alpha"] + LAW["beta"]), rel=1e-3)
    # every CI brackets its point estimate
    for k, (lo, hi) in a3["ci"].items():
        assert lo <= a3[k] * (1 + 1e-9) and hi >= a3[k] * (1 - 1e-9), k

    # the next-10x allocation agrees with the closed-form optimum of the law at that budget; the report
    # counts approach 3's N as total parameters (Chinchilla's convention), 1.1x the law's N here
    c = 10 * max(BUDGETS)
    n_opt, d_opt = chinchilla.compute_optimal(LAW, c)
    alloc = fits["allocation_next_10x"]["approach3_parametric"]
    assert a3["params_convention"] == "total" and fits["kaplan_n"]["params_convention"] == "non_embedding"
    assert a3["flops_model"]["c1"] == pytest.approx(6 / 1.1, rel=1e-12) and a3["flops_model"]["c0"] == 0.0
    assert alloc["N_opt"] == pytest.approx(1.1 * float(n_opt), rel=1e-2)
    assert alloc["D_opt"] == pytest.approx(float(d_opt), rel=1e-2)

    # hold-out of the largest budget: a law fitted without it predicts it (noiseless, so nearly exactly)
    assert fits["holdout"]["approach3_parametric"]["mean_abs_error"] < 1e-3

    check = fits["entropy_rate_check"]
    assert check["entropy_rate"] == 1.60
    assert check["rel_error"] == pytest.approx(a3["E"] / 1.60 - 1)

    md = (out / "report.md").read_text()
    assert "![" in md and "Extrapolation" in md and "entropy rate" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(fits["figures"])  # self-contained

    def finite(x):
        if isinstance(x, dict):
            return all(finite(v) for k, v in x.items() if k not in ("error",))
        if isinstance(x, list):
            return all(finite(v) for v in x)
        return not isinstance(x, float) or math.isfinite(x)

    assert finite(
        {
            k: fits[k]
            for k in (
                "kaplan_n",
                "kaplan_c",
                "approach1_envelope",
                "approach2_isoflop",
                "approach3_parametric",
                "allocation_next_10x",
            )
        }
    )


def test_failed_report_leaves_no_output(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        write_report(tmp_path / "empty", tmp_path / "report", n_bootstrap=0)
    assert not (tmp_path / "report").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no temporary directory left behind


@pytest.mark.parametrize(
    "args, needle",
    [
        (["does-not-exist"], "no such runs directory"),
        (["RUNS", "--bootstrap", "-1"], "--bootstrap"),
    ],
)
def test_cli_errors_one_line_exit_2(tmp_path, args, needle):
    args = [str(tmp_path) if a == "RUNS" else a for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "scalinglab.cli", "report", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert needle in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_report_states_the_protocol_and_each_batch_sizes_best_lr(tmp_path):
    """A ladder with a plan.json (hparams per run) and a grid sweep from McCandlish's model inside:
    the report states both protocols and tabulates the best lr per batch size and target."""
    from scalinglab.fileio import atomic_write_json
    from scalinglab.scaling.mccandlish import McCandlishModel, write_sweep

    runs = _ladder(tmp_path / "ladder")
    hp = {
        "lr": "fixed: --lr for every run",
        "warmup": "fixed: 0.05 of the run",
        "beta2": "fixed: 0.95",
        "batch_size": "fixed: --batch-size",
    }
    atomic_write_json(runs / "plan.json", {"runs": [{"name": "x", "hparams": hp}]})
    model = McCandlishModel()
    write_sweep(
        runs / "sweep",
        model,
        (4, 16, 64),
        base_lr=model.lr_opt(16, 2.2),
        base_batch=16,
        factors=(0.25, 0.5, 1.0, 2.0, 4.0),
        examples=20000,
    )
    out = write_report(runs, tmp_path / "report", n_bootstrap=20)
    md = (out / "report.md").read_text()
    fits = json.loads((out / "fits.json").read_text())
    assert fits["n_runs"] == 20  # the sweep's 15 runs are not ladder points
    assert "## Hyperparameter protocol" in md and "Learning rate: fixed: --lr for every run." in md
    assert "every batch size trained at 5 learning rates" in md
    cb = fits["critical_batch"]["sweep"]
    assert set(cb["lr_by_batch"]) == {"4", "16", "64"}
    assert "Best learning rate of each batch size" in md
    best16 = cb["lr_by_batch"]["16"]["best_lr"][0]
    assert f"{best16:.3g}" in md
