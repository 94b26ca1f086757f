"""Two local processes under jax.distributed (4 CPU devices each) train like one 8-device process."""

import subprocess
import sys

import numpy as np
import pytest

from scalinglab.launch_local import free_port, process_envs
from scalinglab.rundir import read_metrics
from scalinglab.train.loop import train


@pytest.mark.slow
def test_two_processes_match_one(make_config, tmp_path):
    ref = tmp_path / "one"
    # one process reading both data shards sees the same global batches as two processes
    train(make_config(ref, steps=4, mesh={"data": 8}, data_shards=2), progress=False)
    cfg = make_config(tmp_path / "two", steps=4)
    args = [
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
        "4",
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
        "0",
        "--out",
        cfg.out,
        "--no-progress",
        "--mesh",
        "data=8",
    ]
    cmd = [sys.executable, "-m", "scalinglab.cli", "train", *args]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for env in process_envs(2, 4, free_port())
    ]
    outs = [p.communicate(timeout=400)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    one, two = read_metrics(ref), read_metrics(cfg.out)
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm", "eval_loss"):
        a = [r.get(key) for r in one]
        b = [r.get(key) for r in two]
        assert (a[-1] is None) == (b[-1] is None)
        np.testing.assert_allclose([x for x in b if x is not None], [x for x in a if x is not None], rtol=1e-5)
