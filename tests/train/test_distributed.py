"""Two local processes under jax.distributed (4 CPU devices each) train like one 8-device process."""

import sys

import numpy as np
import pytest

from scalinglab.rundir import read_metrics
from scalinglab.train.loop import train


def _cli_args(cfg):
    """The `scalinglab train` flags of ``cfg`` (a make_config TrainConfig on 8 devices)."""
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
        "32",
        "--batch-size",
        "16",
        "--steps",
        str(cfg.steps),
        "--lr",
        str(cfg.lr),
        "--warmup",
        "1",
        "--log-every",
        "1",
        "--eval-every",
        "0",
        "--eval-batches",
        "2",
        "--checkpoint-every",
        str(cfg.checkpoint_every),
        "--out",
        cfg.out,
        "--no-progress",
        "--mesh",
        "data=8",
    ]


@pytest.mark.slow
def test_two_processes_match_one(make_config, tmp_path, run_processes):
    ref = tmp_path / "one"
    # one process reading both data shards sees the same global batches as two processes
    train(make_config(ref, steps=4, mesh={"data": 8}, data_shards=2), progress=False)
    cfg = make_config(tmp_path / "two", steps=4)
    args = _cli_args(cfg)
    done = run_processes([sys.executable, "-m", "scalinglab.cli", "train", *args], n=2, devices=4, timeout=400)
    assert [code for code, _ in done] == [0, 0], done[0][1][-3000:] + done[1][1][-3000:]
    one, two = read_metrics(ref), read_metrics(cfg.out)
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm", "eval_loss"):
        a = [r.get(key) for r in one]
        b = [r.get(key) for r in two]
        assert (a[-1] is None) == (b[-1] is None)
        np.testing.assert_allclose([x for x in b if x is not None], [x for x in a if x is not None], rtol=1e-5)


@pytest.mark.slow
def test_two_process_checkpoint_resumes_in_one_process(make_config, tmp_path, run_processes):
    """Killed after its step-2 checkpoint, a 2-process run (2 × 4 devices) resumes as 1 process of 8
    devices and ends where an uninterrupted 1-process run ends (orbax reshards the global arrays;
    the data position is the global one of --data-shards 2)."""
    ref = tmp_path / "one"
    kw = dict(steps=6, mesh={"data": 8}, data_shards=2, checkpoint_every=2)
    train(make_config(ref, **kw), progress=False)
    cfg = make_config(tmp_path / "two", **kw)
    ckpt = tmp_path / "two" / "checkpoints"

    def checkpointed():
        return len(read_metrics(cfg.out)) >= 3 and any(p.name.isdigit() for p in ckpt.glob("*"))

    cmd = [sys.executable, "-m", "scalinglab.cli", "train", *_cli_args(cfg), "--data-shards", "2"]
    done = run_processes(cmd, n=2, devices=4, timeout=400, until=checkpointed)
    assert [code for code, _ in done] == [-9, -9], done[0][1][-3000:]
    done = run_processes([*cmd, "--resume"], n=1, devices=8, timeout=400)  # one process, all 8 devices
    assert done[0][0] == 0, done[0][1][-3000:]
    one, two = read_metrics(ref), read_metrics(cfg.out)
    assert [r["step"] for r in two] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
