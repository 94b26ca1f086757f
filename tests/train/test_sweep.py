"""Batch-size sweep driver: lr rules, planning, resume/skip, grid selection, CLI errors, and an
end-to-end tiny sweep on CPU analysed by ``fit-batch``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, read_json
from scalinglab.train import sweep as sw
from scalinglab.train.config import TrainConfig

SCALINGLAB = Path(sys.executable).parent / "scalinglab"


def base(**kw):
    d = dict(preset="gpt2-tiny", seq_len=32, tokens=32 * 128 * 20, lr=2e-3, schedule="constant")
    d.update(kw)
    return TrainConfig(**d)


@pytest.mark.parametrize(
    "rule, expected",
    [("sqrt", 1e-3 * math.sqrt(64 / 16)), ("linear", 1e-3 * 64 / 16), ("fixed", 1e-3), ("grid", 2e-3)],
)
def test_lr_rules(rule, expected):
    assert sw.lr_for(rule, 1e-3, 16, 64) == pytest.approx(expected, rel=1e-12)


def test_plan_shares_tokens_and_warmup(tmp_path):
    runs = sw.plan_sweep(base(), [64, 8, 16, 32], lr_rule="sqrt", out=tmp_path)
    assert [r.batch_size for r in runs] == [8, 16, 32, 64]
    for r in runs:
        assert r.config.total_steps() == math.ceil(32 * 128 * 20 / (r.batch_size * 32))
        assert r.lr == pytest.approx(2e-3 * math.sqrt(r.batch_size / 8))  # base batch = smallest
        assert r.config.resume is True and r.config.out == str(tmp_path / f"b{r.batch_size}")
    # the same warmup in steps for every run: 5 % of the shortest run (B=64: 40 steps → 2)
    assert {r.config.warmup for r in runs} == {2}


def test_plan_grid_has_factors_around_sqrt_rule(tmp_path):
    runs = sw.plan_sweep(base(), [8, 32, 128], lr_rule="grid", base_batch=32, lr_grid=(0.5, 2.0), out=tmp_path)
    assert len(runs) == 6
    lrs = sorted(r.lr for r in runs if r.batch_size == 128)
    assert lrs == pytest.approx([0.5 * 2e-3 * 2.0, 2.0 * 2e-3 * 2.0])
    assert len({r.subdir for r in runs}) == 6


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(batch_sizes=[8, 16]), "3 distinct batch sizes"),
        (dict(batch_sizes=[8, 8, 16]), "3 distinct batch sizes"),
        (dict(batch_sizes=[0, 8, 16]), "positive"),
        (dict(batch_sizes=[8, 16, 32], lr_rule="cubic"), "unknown --lr-rule"),
    ],
)
def test_plan_bad_input(tmp_path, kwargs, needle):
    with pytest.raises(UserError, match=needle):
        sw.plan_sweep(base(), out=tmp_path, **kwargs)


class FakeTrain:
    """Stands in for loop.train: writes the files a finished run has; eval loss from ``losses``."""

    def __init__(self, losses=None, stop_at=None):
        self.calls = []
        self.losses = losses or {}
        self.stop_at = stop_at

    def __call__(self, cfg):
        self.calls.append((cfg.batch_size, cfg.lr, cfg.resume))
        out = Path(cfg.out)
        atomic_write_json(out / "config.json", {"train": cfg.to_dict()})
        if self.stop_at == cfg.batch_size:
            return {"status": "preempted", "steps": 1}
        summary = {"status": "complete", "final_eval_loss": self.losses.get((cfg.batch_size, round(cfg.lr, 12)), 3.0)}
        atomic_write_json(out / "summary.json", summary)
        return summary


def test_sweep_resumes_partial_and_skips_finished(tmp_path):
    fake = FakeTrain(stop_at=32)
    with pytest.raises(UserError, match="rerun batch-sweep to resume"):
        sw.run_sweep(base(), [8, 16, 32, 64], out=tmp_path, train_fn=fake, lr_rule="sqrt")
    assert [c[0] for c in fake.calls] == [8, 16, 32]
    meta = read_json(tmp_path / "sweep.json")
    assert meta["kind"] == "batch-sweep" and meta["batch_sizes"] == [8, 16, 32, 64]
    assert meta["runs"] == {"8": "b8", "16": "b16", "32": "b32", "64": "b64"} and meta["lr_rule"] == "sqrt"
    fake2 = FakeTrain()
    sw.run_sweep(base(), [8, 16, 32, 64], out=tmp_path, train_fn=fake2, lr_rule="sqrt")
    assert [c[0] for c in fake2.calls] == [32, 64]  # finished runs skipped
    assert all(c[2] for c in fake2.calls)  # resume=True: partial runs continue from their checkpoint
    # a sweep with other shared settings may not reuse the directory
    with pytest.raises(UserError, match="different settings"):
        sw.run_sweep(base(tokens=999_999), [8, 16, 32], out=tmp_path, train_fn=fake2, lr_rule="sqrt")
    with pytest.raises(UserError, match="different settings"):  # nor another lr rule (the default is grid)
        sw.run_sweep(base(), [8, 16, 32], out=tmp_path, train_fn=fake2)


def test_grid_keeps_best_final_eval_loss(tmp_path):
    b = base(lr=1e-3)
    runs = sw.plan_sweep(b, [8, 16, 32], lr_rule="grid", lr_grid=(0.5, 1.0, 2.0), out=tmp_path)
    # the best lr is the largest at B=8, the smallest at B=32, the middle at B=16
    best = {8: 2e-3, 16: 1e-3 * math.sqrt(2), 32: 0.5e-3 * 2}
    losses = {
        (r.batch_size, round(r.lr, 12)): (2.0 if r.lr == pytest.approx(best[r.batch_size]) else 2.5) for r in runs
    }
    meta = sw.run_sweep(b, [8, 16, 32], out=tmp_path, lr_rule="grid", train_fn=FakeTrain(losses))
    for bs, lr in best.items():
        assert meta["lr"][str(bs)] == pytest.approx(lr)
        assert meta["runs"][str(bs)] == f"b{bs}_lr{sw._lr_tag(lr)}"
        assert (tmp_path / meta["runs"][str(bs)] / "summary.json").exists()


def test_default_is_a_five_point_grid_listed_in_sweep_json(tmp_path):
    meta = sw.run_sweep(base(lr=1e-3), [8, 32, 128], out=tmp_path, base_batch=32, train_fn=FakeTrain())
    assert meta["lr_rule"] == "grid" and sw.DEFAULT_LR_GRID == (0.25, 0.5, 1.0, 2.0, 4.0)
    for b in (8, 32, 128):
        lrs = sorted(meta["grid"][str(b)].values())
        centre = 1e-3 * math.sqrt(b / 32)
        assert lrs == pytest.approx([f * centre for f in (0.25, 0.5, 1.0, 2.0, 4.0)])
        assert all((tmp_path / sub / "summary.json").exists() for sub in meta["grid"][str(b)])
    assert meta["extended"] == {}


def test_extend_grid_follows_an_edge_optimum_until_it_is_interior(tmp_path):
    """B=8: loss falls with lr up to 8x the centre, so the grid (top 4x) is extended to 8x (still the best,
    an edge) then 16x (worse): the optimum 8x is interior and extension stops. B=16/32: interior, nothing added."""
    b = base(lr=1e-3)

    def loss(bs, lr):
        centre = 1e-3 * math.sqrt(bs / 8)
        x = math.log2(lr / centre)
        return 2.0 + 0.01 * (x - (3.0 if bs == 8 else 0.0)) ** 2

    class Fake(FakeTrain):
        def __call__(self, cfg):
            self.losses[(cfg.batch_size, round(cfg.lr, 12))] = loss(cfg.batch_size, cfg.lr)
            return super().__call__(cfg)

    fake = Fake()
    meta = sw.run_sweep(b, [8, 16, 32], out=tmp_path, extend_grid=3, train_fn=fake)
    assert meta["extended"] == {"8": pytest.approx([8e-3, 16e-3])}
    assert meta["lr"]["8"] == pytest.approx(8e-3) and len(meta["grid"]["8"]) == 7
    assert len(meta["grid"]["16"]) == 5 and meta["lr"]["16"] == pytest.approx(1e-3 * math.sqrt(2))
    assert len(fake.calls) == 17
    again = Fake()  # a rerun replays the same decisions from the summaries and trains nothing
    assert sw.run_sweep(b, [8, 16, 32], out=tmp_path, extend_grid=3, train_fn=again) == meta and again.calls == []
    with pytest.raises(UserError, match="extend-grid"):
        sw.run_sweep(b, [8, 16, 32], out=tmp_path, extend_grid=-1, train_fn=again)


def test_edge_extension_rule():
    assert sw.edge_extension({1.0: 3.0, 2.0: 2.5, 4.0: 2.0}) == 8.0
    assert sw.edge_extension({1.0: 2.0, 2.0: 2.5, 4.0: 3.0}) == 0.5
    assert sw.edge_extension({1.0: 2.5, 2.0: 2.0, 4.0: 3.0}) is None
    assert sw.edge_extension({1.0: math.inf, 2.0: math.inf}) is None


def _cli(*args, env=None, timeout=300):
    return subprocess.run(
        [str(SCALINGLAB), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--batch-sizes", "8,16"], "3 distinct batch sizes"),
        (["--batch-sizes", "8,x,16"], "comma-separated integers"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, args, needle):
    full = ["batch-sweep", "--out", str(tmp_path / "sw"), "--tokens", "1e4", *args]
    proc = _cli(*full)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sw").exists()


@pytest.mark.e2e
def test_tiny_sweep_end_to_end_gives_finite_positive_bcrit(tmp_path, data_dir, dataset_name):
    """Three batch sizes (the minimum for the fit) of a one-layer gpt2-tiny on the session's tiny corpus
    through the CLI, then fit-batch --json. XLA compilation (~3 programs per batch size) dominates."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}  # one device: any batch size shards
    sweep_dir = tmp_path / "sweep"
    cmd = [
        "batch-sweep",
        "--preset",
        "gpt2-tiny",
        "--set",
        "n_layer=1",
        "--dataset",
        dataset_name,
        "--data-dir",
        data_dir,
        "--seq-len",
        "32",
        "--batch-sizes",
        "4,8,16",
        "--tokens",
        str(32 * 32 * 60),
        "--lr",
        "3e-3",
        "--lr-rule",
        "sqrt",
        "--base-batch",
        "8",
        "--checkpoint-every",
        "0",
        "--eval-every",
        "0",
        "--out",
        str(sweep_dir),
    ]
    proc = _cli(*cmd, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = read_json(sweep_dir / "sweep.json")
    assert meta["batch_sizes"] == [4, 8, 16] and meta["lr_rule"] == "sqrt"
    # config.yaml: the sweep's resolved settings; as --config it repeats the same sweep
    from scalinglab.cli import build_parser
    from scalinglab.train.sweep_cli import settings

    again = build_parser().parse_args(["batch-sweep", "--config", str(sweep_dir / "config.yaml")])
    assert settings(again) == settings(build_parser().parse_args(cmd))
    for b, sub in meta["runs"].items():
        cfg = read_json(sweep_dir / sub / "config.json")["train"]
        assert cfg["batch_size"] == int(b) and cfg["steps"] == 32 * 60 // int(b)
        assert cfg["lr"] == pytest.approx(3e-3 * math.sqrt(int(b) / 8))
        rows = [json.loads(line) for line in (sweep_dir / sub / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["loss"] < rows[0]["loss"] - 0.5  # it learned something
    fit = _cli("fit-batch", str(sweep_dir), "--json", "--bootstrap", "200", env=env)
    assert fit.returncode == 0, fit.stderr
    result = json.loads(fit.stdout)
    assert len(result["targets"]) >= 2
    for t in result["targets"]:
        assert t["B_crit"] is not None and math.isfinite(t["B_crit"]) and t["B_crit"] > 0
        assert t["E_min"] == pytest.approx(t["S_min"] * t["B_crit"], rel=1e-9)
    # rerunning the finished sweep trains nothing
    again = _cli(*cmd, env=env)
    assert again.returncode == 0 and again.stderr.count("finished, skipped") == 3
