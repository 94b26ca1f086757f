"""Data pipeline throughput vs the training step's token consumption (the pipeline must not be
the bottleneck: target ≥ 10× on 2 CPU cores).

* prepare time of the default corpus (``local_text``: the interpreter's stdlib sources), of
  the default synthetic source and (full run only) of ``local_text/bpe`` (BPE training
  included), into a temporary data dir;
* pipeline tokens/s (target tokens = batch × seq_len per batch) of
  ``make_train_iterator`` for each, batch 32 × seq_len 256, reader threads = 2;
* the demo model's consumption rate: ``gpt2-mini`` (4 layers, d_model 128, byte vocab)
  trained by a jitted ``value_and_grad`` + ``optax.adamw`` step on the same batch shape;
* ratio pipeline / training (≥ 10 means the input pipeline cannot be the bottleneck).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import numpy as np

BATCH = 32
SEQ_LEN = 256


def _pipeline_rate(ds, n_batches: int, repeats: int) -> dict[str, Any]:
    from scalinglab.data import pipeline

    rates = []
    for r in range(repeats):
        it = pipeline.make_train_iterator(ds, seq_len=SEQ_LEN, global_batch_size=BATCH, seed=r)
        next(it)  # start-up (threads, first documents)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        dt = time.perf_counter() - t0
        it.close()
        rates.append(n_batches * pipeline.tokens_per_batch(BATCH, SEQ_LEN) / dt)
    return {"tokens_per_s": statistics.median(rates), "tokens_per_s_all": rates, "batches": n_batches}


def _train_rate(n_steps: int, repeats: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from scalinglab.models.config import get_config
    from scalinglab.models.transformer import Transformer

    cfg = get_config("gpt2-mini")
    model = Transformer(cfg, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = optax.adamw(1e-3, weight_decay=0.1)
    opt_state = opt.init(params)

    def loss_fn(p, batch_BT1):
        logits_BTV = nnx.merge(graphdef, p)(batch_BT1[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch_BT1[:, 1:]).mean()

    @jax.jit
    def step(p, s, batch_BT1):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch_BT1)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    batch = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (BATCH, SEQ_LEN + 1)), jnp.int32)
    params, opt_state, loss = step(params, opt_state, batch)  # compile
    loss.block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n_steps):
            params, opt_state, loss = step(params, opt_state, batch)
        loss.block_until_ready()
        times.append((time.perf_counter() - t0) / n_steps)
    step_s = statistics.median(times)
    return {
        "model": "gpt2-mini",
        "n_layer": cfg.n_layer,
        "d_model": cfg.d_model,
        "step_s": step_s,
        "tokens_per_s": BATCH * SEQ_LEN / step_s,
    }


def run(quick: bool = False) -> dict[str, Any]:
    from scalinglab.data import pipeline

    n_batches, repeats, n_steps = (30, 2, 3) if quick else (200, 3, 10)
    out: dict[str, Any] = {"batch_size": BATCH, "seq_len": SEQ_LEN, "reader_threads": 2}
    with tempfile.TemporaryDirectory() as data_dir:
        datasets = {}
        names = ("local_text", "synthetic_markov") if quick else ("local_text", "synthetic_markov", "local_text/bpe")
        for name in names:
            t0 = time.perf_counter()
            datasets[name] = pipeline.prepare_dataset(name, data_dir)
            out[f"prepare_s_{name}"] = time.perf_counter() - t0
            out[f"train_tokens_{name}"] = datasets[name].n_tokens("train")
        out["pipeline"] = {name: _pipeline_rate(ds, n_batches, repeats) for name, ds in datasets.items()}
    out["train_step"] = _train_rate(n_steps, repeats)
    train_rate = out["train_step"]["tokens_per_s"]
    out["ratio_pipeline_over_train"] = {name: r["tokens_per_s"] / train_rate for name, r in out["pipeline"].items()}
    out["target_ratio"] = 10.0
    out["meets_target"] = out["ratio_pipeline_over_train"]["local_text"] >= 10.0  # the default config
    out["headline"] = [
        {
            "metric": f"pipeline tokens/s (local_text, bytes) vs training consumption ({out['train_step']['model']})",
            "ours": out["pipeline"]["local_text"]["tokens_per_s"],
            "reference": train_rate,
            "ratio": out["ratio_pipeline_over_train"]["local_text"],
            "goal": ">= 10x",
        }
    ]
    return out


if __name__ == "__main__":
    import json
    import sys

    from scalinglab.benchmarks.common import write_result

    res = run(quick="--quick" in sys.argv)
    print(json.dumps({k: v for k, v in res.items()}, indent=2))
    print(write_result("data_pipeline", res))
