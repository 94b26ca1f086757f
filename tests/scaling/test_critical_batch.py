"""Critical-batch analysis against ground truth: known hyperbolas, power laws and loss curves."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import least_squares

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, atomic_write_text, json_safe
from scalinglab.scaling import batch_load
from scalinglab.scaling import critical_batch as cb

SCALINGLAB = Path(sys.executable).parent / "scalinglab"

# ---- ground truth of the synthetic sweep: S(L, B) = S_min(L)·(1 + B_crit(L)/B) ------------------
B_STAR, INV_ALPHA = 2000.0, 4.0  # B_crit(L) = B*/L^4 sequences, i.e. α_B = 0.25
SEQ_LEN = 64


def true_s_min(loss):
    return 100.0 * (np.asarray(loss) - 1.0) ** -2.0


def true_b_crit(loss):
    return B_STAR * np.asarray(loss) ** -INV_ALPHA


def true_steps(loss, batch_size):
    return true_s_min(loss) * (1.0 + true_b_crit(loss) / batch_size)


def synthetic_rows(batch_size, *, final_loss=1.7, log_every=10, noise=0.02, seed=0):
    """metrics.jsonl rows of a run following the true S(L, B), with per-step loss noise ∝ 1/sqrt(B)."""
    grid_L = np.linspace(1.5, 8.0, 20000)
    log_s = np.log(true_steps(grid_L, batch_size))  # decreasing in L
    last = int(true_steps(final_loss, batch_size)) + log_every
    steps = np.arange(log_every, last, log_every)
    clean = np.interp(np.log(steps), log_s[::-1], grid_L[::-1])
    rng = np.random.default_rng(seed)
    noisy = clean + noise * math.sqrt(8.0 / batch_size) * rng.standard_normal(len(steps))
    return [
        {
            "step": int(s),
            "tokens": int(s * batch_size * SEQ_LEN),
            "loss": float(l),
            "gns_b_simple": float(0.5 * true_b_crit(c)),
        }
        for s, l, c in zip(steps, noisy, clean)
    ]


def write_sweep(root: Path, batch_sizes, warmup=None, **kw) -> Path:
    runs = {}
    for i, b in enumerate(batch_sizes):
        run = root / f"b{b}"
        train = {"batch_size": b, "seq_len": SEQ_LEN, "lr": 1e-3, "warmup": warmup}
        atomic_write_json(run / "config.json", {"name": run.name, "train": train})
        rows = synthetic_rows(b, seed=i, **kw)
        atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_json(run / "summary.json", {"status": "complete"})
        runs[str(b)] = run.name
    atomic_write_json(
        root / "sweep.json", {"kind": "batch-sweep", "batch_sizes": list(batch_sizes), "lr_rule": "fixed", "runs": runs}
    )
    return root


# ---- the hyperbola fit -------------------------------------------------------------------------
def test_hyperbola_exact_on_noise_free_points_matches_closed_form():
    b = np.array([4, 8, 16, 32, 64, 128, 256.0])
    s = cb.hyperbola_steps(b, 1000.0, 64000.0)
    # the trade-off relation itself holds for the generated points
    np.testing.assert_allclose((s / 1000.0 - 1) * (b * s / 64000.0 - 1), 1.0, rtol=1e-12)
    a, e = cb.linear_init(b, s)  # closed form: S linear in 1/B
    assert a == pytest.approx(1000.0, rel=1e-10) and e == pytest.approx(64000.0, rel=1e-10)
    fit = cb.fit_hyperbola(b, s)
    assert fit["S_min"] == pytest.approx(1000.0, rel=1e-7)
    assert fit["E_min"] == pytest.approx(64000.0, rel=1e-7)
    assert fit["B_crit"] == pytest.approx(64.0, rel=1e-7)
    assert not fit["at_bound"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hyperbola_recovered_from_noisy_points_and_agrees_with_scipy(seed):
    rng = np.random.default_rng(seed)
    b = np.array([8, 16, 32, 64, 128, 256, 512.0])
    s_true = cb.hyperbola_steps(b, 2000.0, 2000.0 * 96.0)
    s = s_true * np.exp(0.03 * rng.standard_normal(len(b)))  # 3 % multiplicative noise
    fit = cb.fit_hyperbola(b, s)
    assert fit["S_min"] == pytest.approx(2000.0, rel=0.1)
    assert fit["E_min"] == pytest.approx(192000.0, rel=0.1)
    assert fit["B_crit"] == pytest.approx(96.0, rel=0.2)
    # second implementation: scipy's least squares on the same log-space objective
    ref = least_squares(
        lambda th: np.log(s) - np.log(np.exp(th[0]) + np.exp(th[1]) / b),
        x0=[math.log(1000.0), math.log(1e5)],
        xtol=1e-14,
        ftol=1e-14,
        gtol=1e-14,
    )
    assert fit["S_min"] == pytest.approx(math.exp(ref.x[0]), rel=1e-6)
    assert fit["E_min"] == pytest.approx(math.exp(ref.x[1]), rel=1e-6)


def test_hyperbola_fit_needs_three_batch_sizes():
    with pytest.raises(UserError, match="3 distinct batch sizes"):
        cb.fit_hyperbola([8, 16, 16], [100.0, 60.0, 61.0])


def test_batched_fit_with_count_weights_equals_repeated_points():
    b = np.array([8, 16, 32, 64, 128.0])
    s = cb.hyperbola_steps(b, 500.0, 500.0 * 40) * np.array([1.05, 0.97, 1.02, 0.99, 1.04])
    counts = np.array([[2, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=float)
    s_min, b_crit, _ = cb.fit_hyperbola_batch(b, np.broadcast_to(s, (2, 5)), counts)
    rep = cb.fit_hyperbola(np.array([8, 8, 32, 64, 128.0]), np.array([s[0], s[0], s[2], s[3], s[4]]))
    assert s_min[0] == pytest.approx(rep["S_min"], rel=1e-7)
    assert b_crit[0] == pytest.approx(rep["B_crit"], rel=1e-7)
    assert b_crit[1] == pytest.approx(cb.fit_hyperbola(b, s)["B_crit"], rel=1e-7)


# ---- B_crit(L) -------------------------------------------------------------------------------
def test_bcrit_power_law_recovered():
    rng = np.random.default_rng(0)
    loss = np.geomspace(2.0, 4.0, 8)
    b = true_b_crit(loss) * np.exp(0.03 * rng.standard_normal(len(loss)))
    fit = cb.fit_bcrit_power_law(loss, b)
    assert fit["alpha_B"] == pytest.approx(1 / INV_ALPHA, rel=0.05)
    assert fit["B_star"] == pytest.approx(B_STAR, rel=0.15)
    exact = cb.fit_bcrit_power_law(loss, true_b_crit(loss))
    assert exact["alpha_B"] == pytest.approx(0.25, rel=1e-10)
    assert exact["B_star"] == pytest.approx(B_STAR, rel=1e-10)


# ---- curves ----------------------------------------------------------------------------------
def test_steps_to_target_exact_on_linear_curve_with_and_without_smoothing():
    steps = np.arange(10, 1001, 10, dtype=float)
    loss = 5.0 - 0.002 * steps  # crosses L at s = (5 − L)/0.002
    for smoothed in (loss, batch_load.smooth_loss(steps, loss, 0.2)):
        np.testing.assert_allclose(smoothed, loss, atol=1e-12)  # symmetric window: linear curve unchanged
        assert cb.steps_to_target(steps, smoothed, 4.7) == pytest.approx(150.0, abs=1e-9)
        assert cb.steps_to_target(steps, smoothed, 4.6912) == pytest.approx(154.4, abs=1e-9)
    assert math.isnan(cb.steps_to_target(steps, loss, 2.0))  # never reached
    assert math.isnan(cb.steps_to_target(steps, loss, 4.99))  # crossed before the first logged step


def test_steps_to_target_exact_on_piecewise_linear_curve_first_crossing():
    steps = np.array([1.0, 5.0, 9.0, 13.0, 17.0])
    loss = np.array([4.0, 3.0, 3.4, 2.0, 1.0])  # crosses 3.2 first between steps 1 and 5
    assert cb.steps_to_target(steps, loss, 3.2) == pytest.approx(1.0 + 0.8 / 1.0 * 4.0)
    assert cb.steps_to_target(steps, loss, 2.5) == pytest.approx(9.0 + 0.9 / 1.4 * 4.0)


def test_steps_to_target_on_power_law_curve():
    steps = np.arange(1, 5001, dtype=float)
    loss = 10.0 * steps**-0.3
    for target in (3.0, 1.5, 0.9):
        assert cb.steps_to_target(steps, loss, target) == pytest.approx((10.0 / target) ** (1 / 0.3), rel=1e-4)


def test_smoothing_removes_noise_without_shifting_the_crossing():
    rng = np.random.default_rng(0)
    steps = np.arange(10, 20001, 10, dtype=float)
    clean = 4.0 - 0.25 * np.log(steps)
    noisy = clean + 0.05 * rng.standard_normal(len(steps))
    sm = batch_load.smooth_loss(steps, noisy, 0.2)
    tail = steps > 1000
    assert np.std((sm - clean)[tail]) < np.std((noisy - clean)[tail]) / 5
    true = math.exp((4.0 - 2.0) / 0.25)  # ≈ 2981 steps
    assert cb.steps_to_target(steps, sm, 2.0) == pytest.approx(true, rel=0.03)


# ---- the whole analysis on a synthetic sweep with known B_crit(L) ----------------------------------
def test_synthetic_sweep_recovers_bcrit_law_and_b_simple(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", [8, 16, 32, 64, 128, 256])
    curves = batch_load.load_sweep(sweep)
    result = json_safe(cb.analyze_sweep(curves, n_bootstrap=300))
    json.dumps(result, allow_nan=False)  # strict JSON
    assert result["bootstrap"]["method"] == "cases"
    losses = [t["loss"] for t in result["targets"]]
    assert len(losses) == cb.DEFAULT_N_TARGETS and losses == sorted(losses, reverse=True)
    for t in result["targets"]:
        truth = float(true_b_crit(t["loss"]))
        assert t["B_crit"] == pytest.approx(truth, rel=0.2)
        assert t["S_min"] == pytest.approx(float(true_s_min(t["loss"])), rel=0.2)
        lo, hi = t["ci"]["B_crit"]
        assert lo <= t["B_crit"] <= hi
        assert t["b_simple"] == pytest.approx(0.5 * truth, rel=0.05)
        adv = t["advice"]
        assert adv["min_examples"]["batch_size"] == 8 and adv["min_steps"]["batch_size"] == 256
        assert adv["trade_off"]["steps"] == pytest.approx(2 * t["S_min"])
        assert adv["trade_off"]["examples"] == pytest.approx(2 * t["E_min"])
    assert result["alpha_B"] == pytest.approx(1 / INV_ALPHA, rel=0.15)
    assert result["B_star"] == pytest.approx(B_STAR, rel=0.4)
    assert result["bcrit_rises_as_loss_falls"] is True


def test_default_targets_are_crossed_after_the_warmup_by_every_run(tmp_path):
    plain = cb.default_targets(batch_load.load_sweep(write_sweep(tmp_path / "a", [8, 32, 128])))
    curves = batch_load.load_sweep(write_sweep(tmp_path / "b", [8, 32, 128], warmup=40))
    assert [c.warmup for c in curves] == [40, 40, 40]
    targets = cb.default_targets(curves)
    assert targets[0] < plain[0] and targets[-1] == pytest.approx(plain[-1])  # only the top moves
    steps = cb.steps_matrix(curves, targets)
    assert np.nanmin(steps) >= cb.WARMUP_MARGIN * 40 * 0.97  # 3 % slack for the smoothing
    assert np.nanmin(steps[0]) == pytest.approx(cb.WARMUP_MARGIN * 40, rel=0.03)  # the cap binds


def test_few_runs_use_residual_bootstrap_with_nondegenerate_intervals(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", [8, 32, 128])
    result = json_safe(cb.analyze_sweep(batch_load.load_sweep(sweep), targets=[2.2, 2.0], n_bootstrap=200))
    assert result["bootstrap"]["method"] == "residuals"
    for t in result["targets"]:
        lo, hi = t["ci"]["B_crit"]
        assert lo < t["B_crit"] < hi


def test_targets_not_reached_and_too_few_batch_sizes_raise(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", [8, 32, 128])
    curves = batch_load.load_sweep(sweep)
    with pytest.raises(UserError, match="no run reaches target loss 1.2"):
        cb.analyze_sweep(curves, targets=[2.0, 1.2])
    with pytest.raises(UserError, match="3 distinct batch sizes"):
        cb.analyze_sweep(curves[:2])


# ---- CLI -------------------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([str(SCALINGLAB), *args], capture_output=True, text=True, timeout=120)


def test_cli_json_and_plots(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", [8, 16, 64, 256])
    proc = _cli("fit-batch", str(sweep), "--json", "--plot", str(tmp_path / "plots"), "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    for key in ("targets", "B_star", "alpha_B", "b_simple"):
        assert key in result
    for t in result["targets"]:
        for key in ("loss", "S_min", "E_min", "B_crit", "ci", "b_simple", "advice"):
            assert key in t
        assert t["B_crit"] == pytest.approx(float(true_b_crit(t["loss"])), rel=0.25)
    for name in ("tradeoff.png", "bcrit.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "case, needle",
    [
        ("two_sizes", "3 distinct batch sizes"),
        ("unreached", "no run reaches target loss"),
        ("bad_target", "--targets expects loss values"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, case, needle):
    if case == "two_sizes":
        args = [str(write_sweep(tmp_path / "s", [8, 64]))]
    elif case == "unreached":
        args = [str(write_sweep(tmp_path / "s", [8, 16, 64])), "--targets", "1.0"]
    else:
        args = [str(write_sweep(tmp_path / "s", [8, 16, 64])), "--targets", "abc"]
    proc = _cli("fit-batch", *args, "--plot", str(tmp_path / "plots"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "plots").exists()  # no partial output
