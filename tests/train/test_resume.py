"""Crash safety: kill -9 (and SIGTERM) mid-run, resume from the CLI, same metrics as an uninterrupted run."""

import signal
import subprocess
import sys
import time

import pytest

from scalinglab.rundir import read_metrics
from scalinglab.train.loop import train

STEPS, EVERY = 40, 5


def _cli_args(cfg):
    return [
        "--preset",
        cfg.preset,
        "--set",
        "n_layer=1",
        "--dataset",
        cfg.dataset,
        "--data-dir",
        cfg.data_dir,
        "--seq-len",
        str(cfg.seq_len),
        "--batch-size",
        str(cfg.batch_size),
        "--steps",
        str(cfg.steps),
        "--lr",
        str(cfg.lr),
        "--warmup",
        str(cfg.warmup),
        "--log-every",
        "1",
        "--eval-every",
        str(cfg.eval_every),
        "--eval-batches",
        str(cfg.eval_batches),
        "--checkpoint-every",
        str(cfg.checkpoint_every),
        "--out",
        cfg.out,
        "--no-progress",
    ]


def _train_cmd(args):
    return [sys.executable, "-m", "scalinglab.cli", "train", *args]


def _interrupt(cmd, run_dir, sig, after_step):
    """Start ``cmd``, send ``sig`` once metrics.jsonl has reached ``after_step``; return the exit code."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        records = read_metrics(run_dir)
        if records and records[-1]["step"] >= after_step:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err.decode()


def _reference(make_config, tmp_path):
    ref = tmp_path / "ref"
    train(make_config(ref, steps=STEPS, checkpoint_every=EVERY, eval_every=20), progress=False)
    return [(r["step"], r["loss"], r.get("eval_loss")) for r in read_metrics(ref)]


def _check_same(run_dir, reference):
    records = read_metrics(run_dir)
    steps = [r["step"] for r in records]
    assert steps == list(range(1, STEPS + 1))  # no step logged twice, none missing
    assert [(r["step"], r["loss"], r.get("eval_loss")) for r in records] == reference  # bitwise
    assert (run_dir / "summary.json").exists()


def test_kill9_then_resume_matches_uninterrupted(make_config, tmp_path):
    reference = _reference(make_config, tmp_path)
    cfg = make_config(tmp_path / "run", steps=STEPS, checkpoint_every=EVERY, eval_every=20)
    run_dir = tmp_path / "run"
    code, _ = _interrupt(_train_cmd(_cli_args(cfg)), run_dir, signal.SIGKILL, after_step=12)
    assert code == -signal.SIGKILL
    logged = [r["step"] for r in read_metrics(run_dir)]
    assert 12 <= logged[-1] < STEPS and not (run_dir / "summary.json").exists()
    # resume: every other setting comes from the run's config.json
    done = subprocess.run(
        _train_cmd(["--out", str(run_dir), "--resume", "--no-progress"]), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    _check_same(run_dir, reference)


@pytest.mark.slow
def test_sigterm_saves_and_resumes(make_config, tmp_path):
    reference = _reference(make_config, tmp_path)
    cfg = make_config(tmp_path / "run", steps=STEPS, checkpoint_every=EVERY, eval_every=20)
    run_dir = tmp_path / "run"
    code, err = _interrupt(_train_cmd(_cli_args(cfg)), run_dir, signal.SIGTERM, after_step=12)
    assert code == 143 and "SIGTERM: saved checkpoint at step" in err, err[-2000:]
    from scalinglab.train.checkpoint import Checkpointer

    last_logged = read_metrics(run_dir)[-1]["step"]
    ck = Checkpointer(run_dir / "checkpoints", read_only=True)
    assert ck.all_steps()[-1] == last_logged  # saved at the step it stopped
    ck.close()
    done = subprocess.run(
        _train_cmd(["--out", str(run_dir), "--resume", "--no-progress"]), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    _check_same(run_dir, reference)
