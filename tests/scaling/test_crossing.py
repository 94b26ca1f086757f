"""Steps to target on monotone curves, the minimum over learning rates, and fit-batch on synthetic sweeps
generated from McCandlish et al.'s (2018) model with a known B_crit(L)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import isotonic_regression

from scalinglab.scaling import batch_load
from scalinglab.scaling import critical_batch as cb
from scalinglab.scaling.crossing import isotonic_decreasing, min_over_lr
from scalinglab.scaling.mccandlish import McCandlishModel, sqrt_rule, write_sweep

SCALINGLAB = Path(sys.executable).parent / "scalinglab"
MODEL = McCandlishModel()
TARGETS = np.geomspace(2.6, 1.9, 6)
FACTORS = tuple(2.0 ** np.arange(-2, 3))  # the default grid: 5 factors, 2x apart


# ---- isotonic fit and the minimum over learning rates ----------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_isotonic_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    y = np.linspace(3, 1, 300) + 0.2 * rng.standard_normal(300)
    w = rng.uniform(0.5, 2.0, 300)
    ref = isotonic_regression(y, weights=w, increasing=False).x
    np.testing.assert_allclose(isotonic_decreasing(y, w), ref, rtol=1e-12, atol=1e-12)
    mono = np.linspace(3, 1, 50)
    np.testing.assert_array_equal(isotonic_decreasing(mono), mono)  # already monotone: unchanged


def test_min_over_lr_picks_minimum_and_flags_edges():
    lrs = [4e-3, 1e-3, 2e-3]  # unsorted on purpose
    steps = np.array(
        [
            [50.0, 90.0, 60.0],  # best at the largest lr → edge
            [80.0, 90.0, 70.0],  # best in the middle
            [np.nan, 40.0, np.inf],  # only the smallest lr got there → edge
            [np.nan, np.nan, np.nan],
        ]
    )  # nobody
    res = min_over_lr(lrs, steps)
    np.testing.assert_array_equal(res["steps"][:3], [50.0, 70.0, 40.0])
    assert math.isnan(res["steps"][3]) and math.isnan(res["lr"][3]) and res["index"][3] == -1
    np.testing.assert_array_equal(res["lr"][:3], [4e-3, 2e-3, 1e-3])
    assert res["at_edge"].tolist() == [True, False, True, False]
    one = min_over_lr([1e-3], np.array([[10.0], [np.nan]]))
    assert one["at_edge"].tolist() == [False, False] and one["steps"][0] == 10.0


# ---- the synthetic model itself ----------------------------------------------------------------------
def test_model_tuned_steps_are_the_hyperbola():
    """At the tuned lr (r = 1 at every step) S(B) = S_min + E_min/B exactly, checked by integrating
    the step rule numerically at a fine grid of learning rates per step (independent of the closed form)."""
    for b in (2.0, 16.0, 128.0):
        tau = np.linspace(0.0, float(MODEL.tau_at(2.0)), 200001)
        bn = MODEL.b_noise(MODEL.loss(tau))
        steps = np.trapezoid(1.0 + bn / b, tau)  # dstep/dtau at r = 1
        expected = MODEL.true_s_min(2.0) + MODEL.true_e_min(2.0)[0] / b
        assert steps == pytest.approx(expected, rel=1e-4)
    # the best constant lr is close to but never better than the tuned limit
    for b in (4.0, 64.0):
        fine = [MODEL.steps_to_loss(b, f * MODEL.lr_opt(b, 2.2), 2.0)[0] for f in np.geomspace(0.25, 2, 200)]
        tuned = MODEL.true_s_min(2.0) + MODEL.true_e_min(2.0)[0] / b
        assert tuned <= min(fine) <= 1.15 * tuned
    # r >= 2 stalls the run: the target is never reached
    assert np.isinf(MODEL.steps_to_loss(8.0, 2.5 * MODEL.lr_max, 2.0)[0])


# ---- first-crossing bias under noise ---------------------------------------------------------------
def _noisy_crossings(batch_size, noise, n_rep=100, seed=0):
    lr = MODEL.lr_opt(batch_size, 2.2)
    n = 80000 // batch_size
    steps, clean = MODEL.curve(batch_size, lr, n, max(1, n // 400))
    truth = MODEL.steps_to_loss(batch_size, lr, TARGETS[:-1])
    rng = np.random.default_rng(seed)
    raw, ours = [], []
    for _ in range(n_rep):
        y = clean + noise * math.sqrt(8.0 / batch_size) * rng.standard_normal(len(clean))
        curve = batch_load.curve_from_rows(
            [{"step": int(s), "loss": float(v)} for s, v in zip(steps, y)], batch_size=batch_size, seq_len=64
        )
        raw.append([cb.steps_to_target(steps, y, t) for t in TARGETS[:-1]])
        ours.append([cb.steps_to_target(curve.steps, curve.loss, t) for t in TARGETS[:-1]])
    return np.median(np.array(raw) / truth, 0) - 1, np.median(np.array(ours) / truth, 0) - 1


@pytest.mark.parametrize("batch_size", [2, 8])
def test_first_crossing_bias_is_bounded_on_smoothed_monotone_curves(batch_size):
    """Noise 0.05 nats at B=8 (∝ 1/√B), median over 100 noisy copies: the raw first crossing comes
    4-43 % early; the smoothed, isotonic curve's crossing is within 3 % of the noise-free one
    (measured: −1.2 to +1.9 %)."""
    raw_bias, our_bias = _noisy_crossings(batch_size, 0.05)
    assert np.all(np.abs(our_bias) < 0.03), our_bias
    assert np.min(raw_bias) < -0.10 and np.all(raw_bias < 0), raw_bias  # what first crossings on raw curves do


# ---- fit-batch on McCandlish sweeps: the grid protocol vs the √ rule ----------------------------------
def _fit_exact(batch_sizes, base_lr, base_batch, factors):
    """B_crit per target from exact steps (no curves): min over the lr grid at each B."""
    b = np.array(batch_sizes, dtype=float)
    steps = np.array(
        [[MODEL.steps_to_loss(bb, f * sqrt_rule(base_lr, base_batch, bb), TARGETS) for f in factors] for bb in b]
    )  # [B, F, K]
    best = steps.min(axis=1).T
    _, b_crit, _ = cb.fit_hyperbola_batch(b, np.where(np.isfinite(best), best, np.nan))
    return b_crit / MODEL.true_b_crit(TARGETS)


@pytest.mark.parametrize("lr_scale", [0.25, 1.0, 2.0])
def test_grid_protocol_recovers_bcrit_whatever_the_base_lr(lr_scale):
    """The grid (5 factors 2x apart around the √ rule, min over lr per B) recovers the true B_crit
    within 25 % at every target, whether the base lr is 4x too small, right, or 2x too large."""
    sizes = (4, 8, 16, 32, 64, 128, 256)
    ratio = _fit_exact(sizes, lr_scale * MODEL.lr_opt(16, 2.2), 16, FACTORS)
    assert np.all(np.abs(ratio - 1) < 0.25), ratio


def test_sqrt_rule_bias_is_shown():
    """The √ rule with one lr per B: right only if the base lr happens to be tuned; 4x off, B_crit
    comes out 1.5-3.3x the truth (numbers quoted in the README)."""
    sizes = (4, 8, 16, 32, 64, 128, 256)
    off = _fit_exact(sizes, 0.25 * MODEL.lr_opt(16, 2.2), 16, (1.0,))
    assert np.all(off > 1.4) and np.max(off) > 3.0, off
    tuned = _fit_exact(sizes, MODEL.lr_opt(16, 2.2), 16, (1.0,))
    assert np.max(np.abs(tuned - 1)) > 0.15, tuned  # even tuned at B0, the rule misses lr_opt(B) elsewhere
    diverged = _fit_exact(sizes, 2.0 * MODEL.lr_opt(16, 2.2), 16, (1.0,))
    assert np.sum(np.isfinite(diverged)) < len(TARGETS), diverged  # 2x too high: large B stall, no fit


def _cli(*args):
    return subprocess.run([str(SCALINGLAB), *args], capture_output=True, text=True, timeout=300)


def test_fit_batch_recovers_bcrit_on_noisy_mccandlish_grid_sweep(tmp_path):
    """End to end through the files and the CLI: noisy training curves, grid protocol, default targets.
    B_crit within 25 % of the truth at >= 5 of 6 targets; each batch size's best lr is reported."""
    sizes = (4, 8, 16, 32, 64, 128)
    base_lr = 0.5 * MODEL.lr_opt(16, 2.2)
    sweep = write_sweep(
        tmp_path / "grid",
        MODEL,
        sizes,
        base_lr=base_lr,
        base_batch=16,
        factors=FACTORS,
        examples=40000,
        noise=0.03,
        seed=1,
    )
    proc = _cli("fit-batch", str(sweep), "--json", "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["loss_source"]["source"] == "train"  # no eval rows: auto falls back to the train loss
    ratios = np.array([t["B_crit"] / float(MODEL.true_b_crit(t["loss"])[0]) for t in result["targets"]])
    assert np.sum(np.abs(ratios - 1) < 0.25) >= 5, ratios
    assert set(result["lr_by_batch"]) == {str(b) for b in sizes}
    for b, row in result["lr_by_batch"].items():
        assert len(row["lrs"]) == 5 and len(row["best_lr"]) == len(result["targets"])
        for lr in row["best_lr"]:
            # the best grid lr is within one grid step (2x) of the model's optimum at that B
            opt = float(MODEL.lr_opt(int(b), 2.2))
            assert abs(math.log2(lr / opt)) <= 1.0 + 1e-9 or row["at_edge"]
    for t in result["targets"]:
        for r in t["runs"]:
            assert r["lr"] == pytest.approx(
                result["lr_by_batch"][str(r["batch_size"])]["best_lr"][
                    [x["loss"] for x in result["targets"]].index(t["loss"])
                ]
            )
    # the same sweep's √-rule runs alone (factor 1) are further off than the grid
    sqrt_only = write_sweep(
        tmp_path / "sqrt", MODEL, sizes, base_lr=base_lr, base_batch=16, examples=40000, noise=0.03, seed=1
    )
    res_sqrt = json.loads(
        _cli(
            "fit-batch",
            str(sqrt_only),
            "--json",
            "--bootstrap",
            "200",
            "--targets",
            ",".join(str(t["loss"]) for t in result["targets"]),
        ).stdout
    )
    r_sqrt = np.array([t["B_crit"] / float(MODEL.true_b_crit(t["loss"])[0]) for t in res_sqrt["targets"]])
    assert np.mean(np.abs(np.log(r_sqrt))) > np.mean(np.abs(np.log(ratios))), (r_sqrt, ratios)


def test_edge_of_grid_is_flagged_and_warned(tmp_path):
    """A grid far too low (base lr 16x below the optimum): the best lr sits at the top edge → warning."""
    sweep = write_sweep(
        tmp_path / "low",
        MODEL,
        (4, 16, 64),
        base_lr=MODEL.lr_opt(16, 2.2) / 16,
        base_batch=16,
        factors=(0.5, 1.0, 2.0),
        examples=20000,
    )
    proc = _cli("fit-batch", str(sweep), "--json", "--bootstrap", "50", "--n-targets", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert all(all(row["at_edge"]) for row in result["lr_by_batch"].values())
    assert len(result["warnings"]) == 6 and "high edge" in result["warnings"][0]
    assert proc.stderr.count("warning: ") == 6
