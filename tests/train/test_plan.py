"""Ladder planning math: budgets met with the exact accounting, valid configs, deterministic plans."""

import json
import math
import subprocess
import sys

import pytest

from scalinglab.errors import UserError
from scalinglab.models import accounting
from scalinglab.models.config import validate
from scalinglab.train.plan import LADDER_PRESETS, LadderSpec, isoflop_sizes, plan_ladder

SPEC = LadderSpec(budgets=(1e12, 3e12, 1e13), sizes_per_budget=5, seq_len=64, batch_size=8)


def test_isoflop_runs_meet_their_budget_with_exact_flops():
    runs = plan_ladder(SPEC)
    assert len(runs) == 15
    for r in runs:
        # Recompute C independently from the accounting module and the run's own D.
        fpt = accounting.train_flops_per_token(r.config, r.seq_len)
        assert fpt == 3 * accounting.forward_flops_per_token(r.config, r.seq_len)["matmul_exact"]
        c = r.steps * r.batch_size * r.seq_len * fpt
        assert c == r.flops
        assert abs(c - r.budget) / r.budget < 0.01
        assert validate(r.config) is r.config
        assert r.non_embedding == accounting.param_counts(r.config)["non_embedding"]


def test_isoflop_sizes_span_and_spacing():
    for budget in SPEC.budgets:
        targets = isoflop_sizes(SPEC, budget)
        ratios = [b / a for a, b in zip(targets, targets[1:])]
        assert all(math.isclose(q, ratios[0]) for q in ratios)  # evenly spaced in log N
        assert math.isclose(targets[-1] / targets[0], SPEC.size_span)
        # centred on sqrt(C / (6 · tokens_per_param)) (C = 6ND with D = 20 N)
        centre = math.sqrt(targets[0] * targets[-1])
        assert math.isclose(centre, math.sqrt(budget / (6 * SPEC.tokens_per_param)))
    runs = [r for r in plan_ladder(SPEC) if r.budget == 1e13]
    n = [r.non_embedding for r in runs]
    assert n == sorted(n) and n[-1] / n[0] > 15  # real configs keep most of the span


def test_plan_is_deterministic_and_json_round_trips():
    a = [r.to_dict() for r in plan_ladder(SPEC)]
    b = [r.to_dict() for r in plan_ladder(SPEC)]
    assert json.dumps(a) == json.dumps(b)
    assert {"budget", "non_embedding", "total", "tokens", "flops", "config"} <= set(a[0])


def test_sizes_plan_is_a_grid():
    spec = LadderSpec(plan="sizes", sizes=(2e4, 1e5), tokens=(2e5, 1e6), seq_len=64, batch_size=8)
    runs = plan_ladder(spec)
    assert len(runs) == 4
    # D rounded to the nearest whole number of 512-token steps: 391 and 1953 steps.
    assert sorted({r.tokens for r in runs}) == [391 * 512, 1953 * 512]
    for r in runs:
        assert r.flops == r.tokens * accounting.train_flops_per_token(r.config, 64)


def test_budget_too_small_is_a_user_error():
    with pytest.raises(UserError, match="steps"):
        plan_ladder(LadderSpec(budgets=(1e8,), seq_len=64, batch_size=8))


def test_accelerator_presets_have_sane_estimates():
    for name, preset in LADDER_PRESETS.items():
        runs = plan_ladder(preset.spec)
        hours = preset.estimated_seconds(runs) / 3600
        assert 0.5 < hours < 200, (name, hours)
        for r in runs:
            assert abs(r.flops - r.budget) / r.budget < 0.01


def test_cli_dry_run_json_and_errors(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "scalinglab.cli",
        "ladder",
        "--dry-run",
        "--json",
        "--budgets",
        "1e12,1e13",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--vocab-size",
        "257",
        "--data-dir",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert len(plan) == 10 + 15 and all(abs(r["flops"] / r["budget"] - 1) < 0.01 for r in plan)
    assert sum(r["role"] == "search" for r in plan) == 15  # 3 sizes x 5 lrs at the smallest budget, listed
    bad = subprocess.run(cmd[:-6] + ["--budgets", "abc"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("vocab", [257, 33])  # the byte corpus and the default synthetic source
def test_demo_ladder_meets_its_promise(vocab):
    """make demo: >= 3 budgets spanning >= 10x in compute, >= 5 sizes each spanning >= 30x in N."""
    import dataclasses

    from scalinglab.train.demo import DEMO_SPEC

    runs = plan_ladder(dataclasses.replace(DEMO_SPEC, vocab_size=vocab))
    budgets = sorted({r.budget for r in runs})
    assert len(budgets) >= 3 and budgets[-1] / budgets[0] >= 10
    for b in budgets:
        n = [r.non_embedding for r in runs if r.budget == b]
        assert len(n) >= 5 and max(n) / min(n) >= 30, (b, n)
        assert all(abs(r.flops / b - 1) < 0.01 for r in runs if r.budget == b)
