"""Ladder hyperparameter protocol: lr search → lr_opt(N) law, Porian β2/warmup, provenance in plan.json."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from scalinglab.cli import main
from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, read_json
from scalinglab.models import accounting, mup
from scalinglab.models.config import ModelConfig, get_config
from scalinglab.train import lr_protocol as lrp
from scalinglab.train.ladder import run_ladder, train_config_for
from scalinglab.train.plan import LadderSpec, plan_ladder, plan_lr_search

SPEC = LadderSpec(
    budgets=(1e11, 3e11),
    sizes_per_budget=5,
    size_span=16.0,
    seq_len=32,
    batch_size=8,
    vocab_size=64,
    head_dim=8,
    lr=3e-3,
)
A_TRUE, K_TRUE = 0.2, -0.4  # the fake optimum lr_opt(N) = 0.2·N^−0.4


def test_best_lr_is_the_parabola_vertex_in_log_lr():
    lrs = [1e-3 * 2.0**i for i in range(5)]
    opt = 3.1e-3
    losses = {lr: 2.0 + 0.3 * (math.log(lr) - math.log(opt)) ** 2 for lr in lrs}
    best, edge = lrp.best_lr(losses)
    assert best == pytest.approx(opt, rel=1e-9) and not edge
    low = {lr: 2.0 + 0.1 * math.log(lr) for lr in lrs}  # falls all the way down: optimum below the grid
    assert lrp.best_lr(low) == (1e-3, True)
    diverged = {**losses, 8e-3: math.nan, 16e-3: math.inf}  # a diverged neighbour: no parabola, flagged
    assert lrp.best_lr({lr: v for lr, v in diverged.items() if lr >= 4e-3}) == (4e-3, True)
    with pytest.raises(UserError, match="diverged"):
        lrp.best_lr({1e-3: math.nan, 2e-3: math.inf})


def test_lr_law_recovers_power_law_and_porian_rules():
    n = np.array([1e3, 4e3, 1.6e4])
    law = lrp.fit_lr_law(n, A_TRUE * n**K_TRUE)
    assert law["A"] == pytest.approx(A_TRUE, rel=1e-9) and law["k"] == pytest.approx(K_TRUE, rel=1e-9)
    assert lrp.lr_from_law(law, 1e5) == pytest.approx(A_TRUE * 1e5**K_TRUE, rel=1e-9)
    assert lrp.fit_lr_law([5e3], [2e-3]) == {"A": pytest.approx(2e-3), "k": 0.0}
    assert lrp.porian_beta2(8) == 0.99 and lrp.porian_beta2(512) == 0.95
    assert lrp.porian_warmup(10_000, 256, 1000) == 40  # ceil(10000 / 256) steps = N tokens
    assert lrp.porian_warmup(1_000_000, 256, 1000) == 250  # capped at a quarter of the run
    assert lrp.porian_warmup(10, 256, 1000) == 1


def test_plan_records_protocol_and_lists_search_runs():
    runs = plan_ladder(SPEC)
    assert all(r.lr is None and r.beta2 == 0.99 for r in runs)
    for r in runs:
        h = dict(r.hparams)
        assert h["lr"].startswith("pending") and "Porian" in h["warmup"] and "Porian" in h["beta2"]
        assert r.warmup == max(1, min(math.ceil(r.non_embedding / (8 * 32)), r.steps // 4))
    search = plan_lr_search(SPEC, runs)
    smallest = sorted(r.non_embedding for r in runs if r.budget == 1e11)
    searched = sorted({r.non_embedding for r in search})
    assert searched == [smallest[0], smallest[2], smallest[4]]  # 3 sizes, both ends included
    assert len(search) == 15 and all(r.budget == 1e11 and r.role == "search" for r in search)
    assert sorted({r.lr for r in search}) == pytest.approx([3e-3 * f for f in lrp.DEFAULT_LR_GRID])
    assert all(r.name.startswith("lr_search/") for r in search)
    fixed = plan_ladder(LadderSpec(**{**SPEC.__dict__, "lr_protocol": "fixed"}))
    assert all(r.lr == 3e-3 and r.beta2 == 0.95 and r.warmup == max(1, round(0.05 * r.steps)) for r in fixed)
    assert plan_lr_search(LadderSpec(**{**SPEC.__dict__, "lr_protocol": "fixed"}), fixed) == []
    with pytest.raises(UserError, match="lr-protocol"):
        plan_ladder(LadderSpec(**{**SPEC.__dict__, "lr_protocol": "mup?"}))


class FakeTrain:
    """Final eval loss quadratic in log lr around lr_opt(N) = A_TRUE·N^K_TRUE; records every config."""

    def __init__(self):
        self.calls = []

    def __call__(self, cfg):
        self.calls.append(cfg)
        model = ModelConfig(**{**cfg.overrides, "family": cfg.preset.split("-")[0]})
        n = accounting.param_counts(model)["non_embedding"]
        loss = 2.0 + 0.5 * (math.log(cfg.lr) - math.log(A_TRUE * n**K_TRUE)) ** 2
        summary = {"status": "complete", "final_eval_loss": loss}
        atomic_write_json(Path(cfg.out) / "summary.json", summary)
        return summary


def test_run_ladder_searches_first_then_trains_at_the_fitted_law(tmp_path):
    runs = plan_ladder(SPEC)
    search = plan_lr_search(SPEC, runs)
    fake = FakeTrain()
    run_ladder(runs, tmp_path, search_runs=search, train_fn=fake, log=lambda s: None)
    assert [c.name for c in fake.calls[:15]] == [r.name for r in search]  # the search comes first
    record = read_json(tmp_path / "lr_search" / "lr_search.json")
    # the grid spans 0.75e-3..12e-3; lr_opt(N) of the searched sizes lies inside it, so every vertex is exact
    assert not any(s["at_edge"] for s in record["sizes"])
    assert record["law"]["A"] == pytest.approx(A_TRUE, rel=1e-6)
    assert record["law"]["k"] == pytest.approx(K_TRUE, rel=1e-6)
    plan = read_json(tmp_path / "plan.json")
    assert len(plan["lr_search"]) == 15 and plan["lr_law"]["k"] == pytest.approx(K_TRUE, rel=1e-6)
    trained = {c.name: c for c in fake.calls[15:]}
    for r in plan["runs"]:
        expected = A_TRUE * r["non_embedding"] ** K_TRUE
        assert r["lr"] == pytest.approx(expected, rel=1e-6) and trained[r["name"]].lr == pytest.approx(expected)
        assert trained[r["name"]].beta2 == 0.99 and trained[r["name"]].warmup == r["warmup"]
        assert r["hparams"]["lr"].startswith("lr_opt(N) =") and set(r["hparams"]) == {
            "lr",
            "warmup",
            "beta2",
            "batch_size",
        }
    for r in plan["lr_search"]:
        assert r["hparams"]["lr"].startswith("search grid")
    from scalinglab.scaling.protocol import describe_protocol

    lines, record = describe_protocol(tmp_path)  # what the report states
    assert record["lr_law"]["k"] == pytest.approx(K_TRUE, rel=1e-6) and "15 search runs" in lines[0]
    assert any(line.startswith("AdamW β2: Porian") for line in lines)
    again = FakeTrain()  # rerun: everything finished, nothing trained, the same law
    run_ladder(runs, tmp_path, search_runs=search, train_fn=again, log=lambda s: None)
    assert again.calls == [] and read_json(tmp_path / "plan.json") == plan


def test_pending_lrs_without_search_is_an_error(tmp_path):
    with pytest.raises(UserError, match="pending an lr search"):
        run_ladder(plan_ladder(SPEC), tmp_path, train_fn=FakeTrain(), log=lambda s: None)


def test_report_loader_skips_the_search_runs(tmp_path):
    from scalinglab.scaling.load import load_source
    from scalinglab.scaling.synthetic import write_run

    write_run(tmp_path / "C1e11-N1k")
    write_run(tmp_path / "lr_search" / "C1e11-N1k-lr0.001")
    atomic_write_json(tmp_path / "lr_search" / "lr_search.json", {"kind": "lr-search"})
    assert len(load_source(tmp_path, exclude_sweeps=True).names) == 1  # what the report fits
    assert len(load_source(tmp_path).names) == 2  # without the flag (fit on a folder) both are runs


def test_search_grid_is_extended_beyond_an_edge_optimum(tmp_path):
    """Grid centred 8x too low (0.09e-3 .. 1.5e-3): every searched size's optimum (0.2·N^-0.4 = 1.9e-3 to
    5.7e-3) lies above its top; with extend_search the search adds lrs 2x beyond the edge until the optimum
    is interior, and the law is recovered exactly again. Without it the edges stay flagged."""
    spec = LadderSpec(**{**SPEC.__dict__, "lr": 3e-3 / 8})
    runs = plan_ladder(spec)
    search = plan_lr_search(spec, runs)
    fake = FakeTrain()
    run_ladder(runs, tmp_path, search_runs=search, extend_search=4, train_fn=fake, log=lambda s: None)
    record = read_json(tmp_path / "lr_search" / "lr_search.json")
    assert not any(s["at_edge"] for s in record["sizes"])
    assert record["law"]["k"] == pytest.approx(K_TRUE, rel=1e-6)
    plan = read_json(tmp_path / "plan.json")
    extended = [r for r in plan["lr_search"] if r["hparams"]["lr"].startswith("search grid extended")]
    assert extended and len(plan["lr_search"]) == 15 + len(extended)
    assert all(r["lr"] > 12e-3 / 8 for r in extended)  # all beyond the top of the original grid
    without = FakeTrain()
    run_ladder(runs, tmp_path / "no", search_runs=search, train_fn=without, log=lambda s: None)
    assert any(s["at_edge"] for s in read_json(tmp_path / "no" / "lr_search" / "lr_search.json")["sizes"])


MUP_SPEC = dataclasses.replace(SPEC, family="modern", lr_protocol="mup")


def test_mup_plan_transfers_base_lr_and_records_it():
    runs = plan_ladder(MUP_SPEC)
    fixed = plan_ladder(dataclasses.replace(MUP_SPEC, lr_protocol="fixed"))
    base = min(r.config.d_model for r in runs)  # default base width: the smallest model's d_model
    assert plan_lr_search(MUP_SPEC, runs) == []  # no search runs: the base lr transfers
    assert [r.name for r in runs] == [r.name for r in fixed]
    for r, f in zip(runs, fixed):
        assert r.config.mup_base_width == base and r.lr == MUP_SPEC.lr and r.beta2 == 0.99
        assert dataclasses.replace(r.config, mup_base_width=0) == f.config  # same architecture
        counts = (r.non_embedding, r.total, r.train_flops_per_token)
        assert counts == (f.non_embedding, f.total, f.train_flops_per_token)
        assert r.warmup == lrp.porian_warmup(r.non_embedding, r.batch_size * r.seq_len, r.steps)
        src = r.to_dict()["hparams"]["lr"]
        assert f"base lr {MUP_SPEC.lr:g}" in src and f"d_model={base}" in src and "Yang et al. 2022" in src
        cfg = train_config_for(r, Path("/tmp/ladder"))
        assert get_config(cfg.preset, cfg.overrides) == r.config.resolved()  # it trains the planned μP model
    wide = max(runs, key=lambda r: r.config.d_model)
    assert mup.lr_factors(wide.config)["hidden"] == pytest.approx(base / wide.config.d_model)
    explicit = plan_ladder(dataclasses.replace(MUP_SPEC, mup_base_width=256))
    assert {r.config.mup_base_width for r in explicit} == {256}


def test_mup_refused_where_unsupported():
    with pytest.raises(UserError, match="--lr-protocol mup supports --family modern only"):
        plan_ladder(dataclasses.replace(MUP_SPEC, family="gpt2"))
    with pytest.raises(UserError, match="--mup-base-width needs --lr-protocol mup"):
        plan_ladder(dataclasses.replace(SPEC, mup_base_width=64))


def test_mup_cli_dry_run_and_one_line_refusal(tmp_path, capsys):
    base = ["ladder", "--dry-run", "--budgets", "1e12", "--seq-len", "64", "--batch-size", "8"]
    base += ["--data-dir", str(tmp_path), "--lr-protocol", "mup"]
    assert main([*base, "--family", "gpt2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "supports --family modern only" in err and "Traceback" not in err
    assert main([*base, "--family", "modern", "--mup-base-width", "64", "--lr", "0.01", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan and all(r["config"]["mup_base_width"] == 64 and r["lr"] == 0.01 for r in plan)
    assert all("base lr 0.01 (--lr) at base width d_model=64" in r["hparams"]["lr"] for r in plan)
