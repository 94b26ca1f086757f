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


WAIT_SCRIPT = """
import sys, time
from scalinglab.train import distributed
distributed.initialize()
from scalinglab.train.multihost import agreed
first = agreed(lambda: (time.sleep(float(sys.argv[1])), [1, 2])[1])
second = agreed(lambda: "two")
print("agreed", first, second, flush=True)
"""


@pytest.mark.parametrize("seconds", [3, pytest.param(40, marks=pytest.mark.slow)])
def test_agreed_waits_for_a_slow_process_0(tmp_path, run_processes, seconds):
    """Process 0 takes a while to decide (the demo's data preparation, a report's fits); the other process
    waits for its value, then both take the next decision. 40 s (slow run): longer than a CPU gloo
    collective waits (30 s), which the first version of agreed() used."""
    script = tmp_path / "wait.py"
    script.write_text(WAIT_SCRIPT)
    done = run_processes([sys.executable, str(script), str(seconds)], devices=1, timeout=300)
    assert [code for code, _ in done] == [0, 0], done[0][1][-3000:] + done[1][1][-3000:]
    assert all("agreed [1, 2] two" in out for _, out in done)


DEMO_SCRIPT = """
import dataclasses, sys
from scalinglab.cli import main
from scalinglab.train import demo

data_dir, out = sys.argv[1:3]
# the demo, shrunk: 4 ladder runs (2 budgets, fixed lr), a 3 × 2 batch-size sweep, a tiny synthetic corpus
demo.DEMO_SPEC = dataclasses.replace(
    demo.DEMO_SPEC, budgets=(3e9, 6e9), sizes_per_budget=3, size_span=4.0, seq_len=32, batch_size=8, head_dim=16,
    tokens_per_param=20.0, lr_protocol="fixed",
)
demo.DEMO_SWEEP = dict(preset="gpt2-tiny", batch_sizes=(4, 8, 16), tokens=2112, lr=3e-3, base_batch=8, lr_grid=(0.5, 1))
demo.DEMO_TRAIN = dict(eval_every=0, eval_batches=2, log_every=1, checkpoint_every=0)
demo.SYNTHETIC_DATASET = (
    "synthetic_markov/order1", {"order": 1, "train_docs": 32, "validation_docs": 4, "doc_length": 1024}
)
sys.exit(main(["demo", "--synthetic", "--data-dir", data_dir, "--out", out, *sys.argv[3:]]))
"""


def _demo(tmp_path, run_processes, *args):
    script = tmp_path / "demo.py"
    script.write_text(DEMO_SCRIPT)
    data, out = tmp_path / "data", tmp_path / "demo"
    return data, out, run_processes([sys.executable, str(script), str(data), str(out), *args], timeout=1200)


def test_two_process_demo_refuses_a_foreign_out_dir_on_every_process(tmp_path, run_processes):
    """The demo's first decision (the --out check, before any data is prepared) is process 0's, agreed:
    both processes print the same one line and exit 2; nothing is prepared or written."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine\n")
    data, out, done = _demo(tmp_path, run_processes)
    assert [code for code, _ in done] == [2, 2], done[0][1][-3000:] + done[1][1][-3000:]
    lines = [[ln for ln in text.splitlines() if "error:" in ln] for _, text in done]
    assert len(lines[0]) == 1 and lines[0] == lines[1] and "was not written by scalinglab demo" in lines[0][0]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and not data.exists()


@pytest.mark.slow
def test_two_process_demo_trains_each_run_once(tmp_path, run_processes):
    """A shrunk demo as 2 processes × 2 devices: process 0 prepares the data while the other waits, every
    ladder and sweep run is trained once (each step logged once), process 0 alone writes the report and
    prints; the other is silent. About 6 minutes on one shared core."""
    data, out, done = _demo(tmp_path, run_processes)
    assert [code for code, _ in done] == [0, 0], done[0][1][-3000:] + done[1][1][-3000:]
    (_, log0), (_, log1) = done
    assert log0.count("[demo] preparing dataset") == 1 and "[demo]" not in log1
    assert str(out / "report" / "report.md") in log0.splitlines() and "report.md" not in log1
    plan = json.loads((out / "ladder" / "plan.json").read_text())
    sweep = out / "ladder" / "sweep"
    runs = [out / "ladder" / r["name"] for r in plan["runs"]]
    runs += sorted(d for d in sweep.iterdir() if (d / "metrics.jsonl").exists())
    assert len(runs) == 4 + 3 * 2 and sorted(json.loads((sweep / "sweep.json").read_text())["runs"]) == ["16", "4", "8"]
    for run in runs:
        steps = [r["step"] for r in read_metrics(run)]
        assert steps == list(range(1, len(steps) + 1)) and is_complete(run), (run, steps)
        assert log0.count(f"training {run.name}:") == 1 and run.name not in log1
    assert {"report.md", "report.html", "fits.json"} <= {p.name for p in (out / "report").iterdir()}
