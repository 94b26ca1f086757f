"""The Ray executor with real training (skipped without the `ray` extra: make venv-ray).

One tiny 3-run ladder trained twice: in this process (--executor local), then as Ray tasks on a local
Ray instance with at most 2 at once, while the Ray worker of one run is killed mid-run. The Ray
ladder completes, two runs overlap in time, the killed run's task is retried and resumes from its
checkpoint with no step logged twice, and every final loss equals the local ladder's (runs are
deterministic, and resume is exact).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from scalinglab.rundir import LOG_FILE, read_metrics
from scalinglab.runlock import RunLock

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # ~4 min on a loaded 2-core machine (compiles dominate)
STEPS = 120


@pytest.fixture(scope="module")
def ray_instance():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def _runs(data_dir, dataset):
    from scalinglab.data.pipeline import load_dataset
    from scalinglab.train.plan import LadderSpec, plan_ladder

    vocab = int(load_dataset(dataset, data_dir).vocab_size)
    spec = LadderSpec(
        budgets=(1e11,), sizes_per_budget=3, size_span=4.0, seq_len=32, batch_size=8, vocab_size=vocab,
        head_dim=16, lr=3e-3, lr_protocol="fixed",
    )  # fmt: skip
    # one layer each (compile time dominates these runs), widths as planned: 3 distinct models
    return [
        dataclasses.replace(r, config=dataclasses.replace(r.config, n_layer=1), steps=STEPS, warmup=1)
        for r in plan_ladder(spec)
    ]


def _kill_worker_mid_run(run_dir: Path, at_step: int, killed: dict) -> None:
    """SIGKILL the Ray worker (the parent of the trainer holding ``run_dir``'s lock) at ``at_step``."""
    deadline = time.time() + 600
    while time.time() < deadline and "pid" not in killed:
        info = RunLock(run_dir, auto_renew=False).read()
        records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
        if info and records and records[-1]["step"] >= at_step:
            with open(f"/proc/{int(info['pid'])}/stat") as f:
                worker = int(f.read().rsplit(")", 1)[1].split()[1])  # field 4: the parent pid
            os.kill(worker, signal.SIGKILL)
            killed.update(pid=worker, step=records[-1]["step"])
        time.sleep(0.02)


def test_ray_ladder_runs_concurrently_survives_a_killed_worker_and_equals_local(
    tmp_path, data_dir, dataset_name, ray_instance
):
    from scalinglab.train.executor import LocalExecutor
    from scalinglab.train.ladder import run_ladder
    from scalinglab.train.ray_executor import RayExecutor

    runs = _runs(data_dir, dataset_name)
    common = dict(dataset=dataset_name, data_dir=data_dir, eval_every=0, eval_batches=2, log_every=1)
    local = run_ladder(runs, tmp_path / "local", executor=LocalExecutor(), checkpoint_every=10, **common)

    out = tmp_path / "ray"
    killed: dict = {}
    victim = out / runs[0].name
    killer = threading.Thread(target=_kill_worker_mid_run, args=(victim, 20, killed), daemon=True)
    killer.start()
    log: list[str] = []
    with RayExecutor(max_concurrent=2) as ex:
        remote = run_ladder(runs, out, executor=ex, log=log.append, checkpoint_every=10, **common)
    killer.join(timeout=5)

    assert killed, "the victim's worker was never killed"
    assert [s["final_loss"] for s in remote] == [s["final_loss"] for s in local]  # same numbers, bitwise
    assert [s["final_eval_loss"] for s in remote] == [s["final_eval_loss"] for s in local]
    spans = sorted((s["started_at"], s["finished_at"]) for s in remote)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans  # at least two runs overlapped
    starts = [x for x in (victim / LOG_FILE).read_text().splitlines() if x.startswith("[executor]") and " on " in x]
    assert len(starts) >= 2 and " resuming on " in starts[-1], starts  # retried, from its checkpoint
    for r in runs:
        steps = [rec["step"] for rec in read_metrics(out / r.name)]
        assert steps == list(range(1, STEPS + 1)), r.name  # none twice, none missing
    assert any(line.startswith("[ladder] 3/3 runs done, 0 running, 0 queued;") for line in log)
