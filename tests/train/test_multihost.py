"""Ladders and batch sweeps as 2 processes × 2 CPU devices under jax.distributed (launch_local's
environment): decisions agreed, one writer, each run trained and logged once; after a SIGKILL of
every process a rerun trains only what is missing."""

import json
import sys

import pytest

from scalinglab.rundir import is_complete, read_metrics

SCRIPT = """
import dataclasses, sys
from scalinglab.train import distributed
distributed.initialize()
from scalinglab.data.pipeline import load_dataset
from scalinglab.train.ladder import run_ladder
from scalinglab.train.plan import LadderSpec, plan_ladder

data_dir, dataset, out = sys.argv[1:4]
vocab = int(load_dataset(dataset, data_dir).vocab_size)
spec = LadderSpec(budgets=(1e11,), sizes_per_budget=3, size_span=4.0, seq_len=32, batch_size=8,
                  vocab_size=vocab, head_dim=16, lr=3e-3, lr_protocol="fixed")
runs = [dataclasses.replace(r, steps=6, warmup=1) for r in plan_ladder(spec)]
run_ladder(runs, out, dataset=dataset, data_dir=data_dir, eval_every=0, eval_batches=2, log_every=1,
           checkpoint_every=2)
"""


def _check_runs_logged_once(out, names):
    for name in names:
        steps = [r["step"] for r in read_metrics(out / name)]
        assert steps == list(range(1, 7)), (name, steps)  # every step once: one writer, no repeats
        assert is_complete(out / name)


def _ladder(tmp_path, data_dir, dataset_name, run_processes, until=None):
    script = tmp_path / "ladder.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ladder"
    done = run_processes([sys.executable, str(script), data_dir, dataset_name, str(out)], until=until)
    return out, done


def test_two_process_ladder_trains_each_run_once(tmp_path, data_dir, dataset_name, run_processes):
    out, done = _ladder(tmp_path, data_dir, dataset_name, run_processes)
    assert [code for code, _ in done] == [0, 0], done[0][1][-3000:] + done[1][1][-3000:]
    names = [r["name"] for r in json.loads((out / "plan.json").read_text())["runs"]]
    assert len(names) == 3
    _check_runs_logged_once(out, names)
    assert sum(f"training {n}" in done[0][1] for n in names) == 3  # process 0 reports each run once
    assert not any(f"training {n}" in done[1][1] for n in names)  # the other one is silent


@pytest.mark.slow
def test_two_process_ladder_killed_then_rerun_finishes_only_the_rest(tmp_path, data_dir, dataset_name, run_processes):
    plan = tmp_path / "ladder" / "plan.json"

    def second_started():
        if not plan.exists():
            return False
        second = tmp_path / "ladder" / json.loads(plan.read_text())["runs"][1]["name"]
        return (second / "metrics.jsonl").exists() and len(read_metrics(second)) >= 3

    out, done = _ladder(tmp_path, data_dir, dataset_name, run_processes, until=second_started)
    assert [code for code, _ in done] == [-9, -9], done[0][1][-3000:]
    names = [r["name"] for r in json.loads(plan.read_text())["runs"]]
    first = (out / names[0] / "summary.json").read_text()
    assert not is_complete(out / names[2])
    out, done = _ladder(tmp_path, data_dir, dataset_name, run_processes)
    assert [code for code, _ in done] == [0, 0], done[0][1][-3000:] + done[1][1][-3000:]
    assert (out / names[0] / "summary.json").read_text() == first  # finished before: not trained again
    assert f"{names[0]}: finished, skipped" in done[0][1] and f"resuming {names[1]}" in done[0][1]
    _check_runs_logged_once(out, names)


@pytest.mark.slow
def test_two_process_batch_sweep(tmp_path, data_dir, dataset_name, run_processes):
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "scalinglab.cli",
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
        "--base-batch",
        "8",
        "--lr",
        "3e-3",
        "--warmup",
        "1",
        "--tokens",
        str(4 * 16 * 32),
        "--log-every",
        "1",
        "--eval-every",
        "0",
        "--checkpoint-every",
        "2",
        "--out",
        str(out),
    ]
    done = run_processes(cmd)
    assert [code for code, _ in done] == [0, 0], done[0][1][-3000:] + done[1][1][-3000:]
    sweep = json.loads((out / "sweep.json").read_text())
    assert sorted(sweep["runs"], key=int) == ["4", "8", "16"]
    for b, sub in sweep["runs"].items():
        steps = [r["step"] for r in read_metrics(out / sub)]
        assert steps == sorted(set(steps)) and is_complete(out / sub), (b, steps)
