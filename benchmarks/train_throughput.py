"""Training throughput and MFU, side by side with a plain-PyTorch nanoGPT reference.

* tokens/s and MFU of our jitted train step (AdamW, clipping, GNS statistics on) for three
  GPT-2-architecture sizes; MFU = tokens/s × exact training FLOPs/token
  (``accounting.train_flops_per_token``) / peak, the peak measured by a large f32 matmul
  on CPU (``train.mfu``) or taken from the table on GPU/TPU (bf16 there);
* the same model, config, batch and optimizer in plain PyTorch on CPU (nanoGPT-style,
  ``benchmarks/torch_gpt.py``): ratio ours / theirs (skipped when torch is not installed);
* GNS overhead: step time with the GNS statistics vs without.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from scalinglab.models import accounting
from scalinglab.models.config import ModelConfig
from scalinglab.models.transformer import Transformer
from scalinglab.train import mfu as mfu_lib
from scalinglab.train import step as step_lib
from scalinglab.train.loss import make_lm_loss
from scalinglab.train.optimizer import make_optimizer

VOCAB = 257  # the byte-level default corpus
SIZES = {  # name: (n_layer, d_model, n_head)
    "gpt2-2L-64d": (2, 64, 4),
    "gpt2-4L-128d": (4, 128, 4),
    "gpt2-6L-256d": (6, 256, 8),
}
LR = 1e-3


def _timed(fn, n_steps: int, repeats: int) -> float:
    """Median seconds per step over ``repeats`` runs of ``n_steps`` steps (after one warm-up run)."""
    fn(1)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n_steps)
        times.append((time.perf_counter() - t0) / n_steps)
    return statistics.median(times)


def _ours(cfg: ModelConfig, batch: int, seq_len: int, *, gns: bool, dtype, n_steps: int, repeats: int) -> float:
    model = Transformer(cfg, rngs=nnx.Rngs(params=0), dtype=dtype)
    graphdef, state = nnx.split(model, nnx.Param)
    schedule = optax.constant_schedule(LR)
    opt = make_optimizer(schedule, weight_decay=0.1, clip=1.0)
    step = jax.jit(
        step_lib.make_train_step(make_lm_loss(graphdef), opt, schedule, gns=gns, gns_groups=2, has_aux=True),
        donate_argnums=0,
    )
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (batch, seq_len + 1)), jnp.int32)
    box = {"state": step_lib.init_state(nnx.to_pure_dict(state), opt)}

    def run(n):
        for _ in range(n):
            box["state"], m = step(box["state"], tokens)
        jax.block_until_ready(m["loss"])

    return _timed(run, n_steps, repeats)


def _torch(cfg: ModelConfig, batch: int, seq_len: int, *, n_steps: int, repeats: int) -> float:
    import torch

    from scalinglab.benchmarks import torch_gpt

    torch.manual_seed(0)
    model = torch_gpt.GPT(cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_ctx, cfg.vocab_size)
    opt = torch_gpt.make_optimizer(model, LR)
    data = torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, (batch, seq_len + 1)).astype(np.int64))
    idx, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def run(n):
        for _ in range(n):
            torch_gpt.train_step(model, opt, idx, targets)

    return _timed(run, n_steps, repeats)


def run(quick: bool = False) -> dict[str, Any]:
    platform = jax.devices()[0].platform
    dtype_name = "float32" if platform == "cpu" else "bfloat16"
    dtype = jnp.float32 if dtype_name == "float32" else jnp.bfloat16
    peak = mfu_lib.peak_flops(jax.devices()[:1], dtype=dtype_name)
    batch, seq_len = (8, 64) if quick else (16, 128)
    n_steps, repeats = (2, 2) if quick else (5, 3)
    sizes = dict(list(SIZES.items())[:2]) if quick else SIZES
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False

    models = {}
    for name, (n_layer, d_model, n_head) in sizes.items():
        cfg = ModelConfig("gpt2", n_layer, d_model, n_head, n_ctx=max(256, seq_len), vocab_size=VOCAB)
        flops_per_token = accounting.train_flops_per_token(cfg, seq_len)
        tokens_per_step = batch * seq_len
        t_ours = _ours(cfg, batch, seq_len, gns=True, dtype=dtype, n_steps=n_steps, repeats=repeats)
        t_plain = _ours(cfg, batch, seq_len, gns=False, dtype=dtype, n_steps=n_steps, repeats=repeats)
        row: dict[str, Any] = {
            "n_layer": n_layer, "d_model": d_model, "n_head": n_head,
            "params_non_embedding": int(accounting.param_counts(cfg)["non_embedding"]),
            "train_flops_per_token": int(flops_per_token),
            "step_s": t_ours,
            "tokens_per_s": tokens_per_step / t_ours,
            "mfu": tokens_per_step * flops_per_token / t_ours / peak if peak else None,
            "step_s_without_gns": t_plain,
            "gns_overhead": t_ours / t_plain - 1.0,
        }
        if have_torch and platform == "cpu":
            t_torch = _torch(cfg, batch, seq_len, n_steps=n_steps, repeats=repeats)
            row["torch_step_s"] = t_torch
            row["torch_tokens_per_s"] = tokens_per_step / t_torch
            row["ours_over_torch"] = t_torch / t_ours
        models[name] = row

    result: dict[str, Any] = {
        "device": jax.devices()[0].device_kind,
        "dtype": dtype_name,
        "batch_size": batch,
        "seq_len": seq_len,
        "peak_flops": peak,
        "peak_source": "measured f32 matmul" if platform == "cpu" else "table (bf16 dense)",
        "models": models,
        "gns_overhead_max": max(r["gns_overhead"] for r in models.values()),
    }
    headline = []
    for name, r in models.items():
        if "ours_over_torch" in r:
            headline.append({"metric": f"train tokens/s {name} (f32, CPU) vs nanoGPT-style PyTorch",
                             "ours": r["tokens_per_s"], "reference": r["torch_tokens_per_s"],
                             "ratio": r["ours_over_torch"], "goal": ">= 1"})
        headline.append({"metric": f"MFU {name} ({dtype_name})", "ours": r["mfu"]})
    headline.append({"metric": "GNS statistics overhead (max over sizes, fraction of step time)",
                     "ours": result["gns_overhead_max"], "goal": "<= 0.03"})
    result["headline"] = headline
    if have_torch:
        import torch

        result["torch_version"] = torch.__version__
        result["torch_threads"] = torch.get_num_threads()
        ratios = [r["ours_over_torch"] for r in models.values() if "ours_over_torch" in r]
        result["ours_over_torch_min"] = min(ratios) if ratios else None
    else:
        result["torch"] = "skipped: torch is not installed (make bench installs it)"
    return result


if __name__ == "__main__":
    import json

    from scalinglab.benchmarks.common import write_result

    res = run()
    print(json.dumps(res, indent=2))
    print(write_result("train_throughput", res))
