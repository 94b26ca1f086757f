"""Steps/s of the real training loop (``train.loop.train``) with ``--log-every 1`` vs ``100``,
side by side with a loop that syncs the host on every step (the loop before metrics were read
one step late).

Contestants (same tiny run, same data, XLA CPU):
* ``log1``: ``--log-every 1`` (a JSON line and TensorBoard scalars every step);
* ``log100``: ``--log-every 100``;
* ``log1_sync``, ``log100_sync``: the same with every train step followed by
  ``jax.block_until_ready`` of its outputs, i.e. the host waits for each step before preparing
  the next one.

Steps/s is measured from the dispatch times of the steps (wrapped ``train_step``) after a
10-step warm-up, so compilation, data loading, the final eval and checkpoint are excluded.
Contestants run in interleaved rounds and each reports its median: the machine is shared, its
load changes by the minute (the 1-minute load average is recorded before and after).
The model is deliberately tiny (per-step host work is then a large share of a step).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import jax

WARMUP = 10


def _one_run(data_dir: str, out: str, *, log_every: int, sync: bool, steps: int) -> float:
    """Steps/s of one ``train`` run (dispatch times of steps WARMUP+1 … steps)."""
    from scalinglab.train import loop as loop_mod
    from scalinglab.train.config import TrainConfig

    stamps: list[float] = []
    real_build = loop_mod.build_program

    def build(*a, **k):
        program = real_build(*a, **k)
        step = program.train_step

        def timed(state, batch):
            stamps.append(time.perf_counter())
            out = step(state, batch)
            return jax.block_until_ready(out) if sync else out

        object.__setattr__(program, "train_step", timed)
        return program

    cfg = TrainConfig(
        preset="gpt2-tiny",
        overrides={"n_layer": 1},
        dataset="synthetic_markov",
        data_dir=data_dir,
        seq_len=32,
        batch_size=16,
        steps=steps,
        lr=1e-3,
        warmup=1,
        log_every=log_every,
        eval_every=0,
        eval_batches=1,
        checkpoint_every=0,
        out=out,
    )
    loop_mod.build_program = build
    try:
        loop_mod.train(cfg, progress=False)
    finally:
        loop_mod.build_program = real_build
    timed_steps = stamps[WARMUP:]
    return (len(timed_steps) - 1) / (timed_steps[-1] - timed_steps[0])


def run(quick: bool = False) -> dict[str, Any]:
    from scalinglab.data import pipeline

    steps, rounds = (60, 2) if quick else (400, 5)
    contestants = {"log1": (1, False), "log100": (100, False), "log1_sync": (1, True), "log100_sync": (100, True)}
    rates: dict[str, list[float]] = {k: [] for k in contestants}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        pipeline.prepare_dataset(
            "synthetic_markov", data_dir=data_dir, config={"train_docs": 32, "validation_docs": 4, "doc_length": 1024}
        )
        load = [os.getloadavg()[0]]
        for r in range(rounds):
            for name, (log_every, sync) in contestants.items():
                out = os.path.join(tmp, f"{name}-{r}")
                rates[name].append(_one_run(data_dir, out, log_every=log_every, sync=sync, steps=steps))
        load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "model": "gpt2-tiny n_layer=1, seq 32, batch 16, f32, XLA CPU",
        "steps_per_run": steps,
        "timing": f"median of {rounds} interleaved rounds; steps/s from step dispatch times after {WARMUP} steps",
        "load_average_1min": load,
        "steps_per_s": rates,
        "median_steps_per_s": med,
        "log100_over_log1": med["log100"] / med["log1"],
        "log1_over_log1_sync": med["log1"] / med["log1_sync"],
        "headline": [
            {
                "metric": "train loop steps/s, --log-every 1 (vs 100)",
                "ours": med["log1"],
                "reference": med["log100"],
                "ratio": med["log1"] / med["log100"],
            },
            {
                "metric": "train loop steps/s, metrics read a step late (vs a host sync every step)",
                "ours": med["log1"],
                "reference": med["log1_sync"],
                "ratio": med["log1"] / med["log1_sync"],
            },
        ],
    }
