"""Will it fit? A training run's memory, estimated before anything is compiled or written.

``estimate(model_cfg, batch_size=, seq_len=, grad_accum=, dtype=)`` in bytes, for the whole
global batch on one host (CPU) or per device (accelerators, divided by the mesh):

* state: every parameter in f32 four times (weights, gradient, AdamW's two moments) = 16·N_total,
  plus a bf16 copy of the weights under ``dtype=bfloat16``;
  plus one more f32 gradient (4·N_total, the accumulator) under ``grad_accum`` > 1;
* activations kept for the backward pass, per micro-batch of b sequences of s tokens:
  4·b·s·(n_layer·(16·d_model + 2·d_ff + 2·n_head·s) + 3·vocab) bytes (the residual stream and
  block inputs, the MLP hidden layer, attention scores before and after the softmax, and the
  logits with their softmax and gradient). With ``remat="full"`` a block keeps only its input
  (4·b·s·d_model per layer) and one block at a time holds its full working set; with
  ``remat="dots"`` the attention scores are recomputed (one block's worth at a time).
  A lower bound: XLA adds temporaries.

:func:`check_fits` refuses (UserError, exit 2) a run whose estimate exceeds the memory
available, naming the bytes and the levers (smaller --batch-size, --grad-accum, shorter
--seq-len, a smaller model). :func:`explain_oom` turns XLA's out-of-memory error into the same line.
"""

from __future__ import annotations

import os
from typing import Any

from scalinglab.errors import UserError


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def estimate(
    model_cfg: Any,
    *,
    batch_size: int,
    seq_len: int,
    grad_accum: int = 1,
    dtype: str = "float32",
    shards: int = 1,
    model_shards: int = 1,
    remat: str = "none",
) -> dict[str, int]:
    """Bytes of training state and activations (``shards``: data-parallel ways the batch is split,
    ``model_shards``: ways the state is split, fsdp × tensor); see the module doc for the formula."""
    from scalinglab.models import accounting

    n_total = int(accounting.param_counts(model_cfg)["total"])
    state = 16 * n_total + (2 * n_total if dtype == "bfloat16" else 0) + (4 * n_total if grad_accum > 1 else 0)
    cfg = model_cfg.resolved() if hasattr(model_cfg, "resolved") else model_cfg
    micro = max(1, batch_size // max(1, grad_accum))
    d, d_ff, heads = int(cfg.d_model), int(getattr(cfg, "ff_dim", 0) or 4 * cfg.d_model), int(cfg.n_head)
    n_layer, block, scores = int(cfg.n_layer), 16 * d + 2 * d_ff, 2 * heads * seq_len
    per_layer = {  # floats per token kept by all layers, plus one block's recomputed working set
        "none": n_layer * (block + scores),
        "dots": n_layer * block + scores,
        "full": n_layer * d + block + scores,
    }[remat]
    per_token = per_layer + 3 * int(cfg.vocab_size)
    act = 4 * micro * seq_len * per_token
    state //= max(1, model_shards)
    act //= max(1, shards)
    return {"state": state, "activations": act, "total": state + act}


def sizes_for(
    cfg: Any, mesh_shape: dict[str, int] | None = None, *, batch_size: int | None = None, seq_len: int | None = None
) -> dict[str, Any]:
    """:func:`estimate`'s keyword arguments for a :class:`~scalinglab.train.config.TrainConfig` (its batch,
    sequence, accumulation, dtype, remat; ``batch_size``/``seq_len`` override), per device of
    ``mesh_shape`` (None: unsharded, as on CPU, where every device shares the host's memory)."""
    shape = mesh_shape or {}
    return {
        "batch_size": cfg.batch_size if batch_size is None else batch_size,
        "seq_len": cfg.seq_len if seq_len is None else seq_len,
        "grad_accum": cfg.grad_accum,
        "dtype": cfg.dtype,
        "remat": cfg.remat,
        "shards": shape.get("data", 1) * shape.get("fsdp", 1),
        "model_shards": shape.get("fsdp", 1) * shape.get("tensor", 1),
    }


def available_bytes() -> tuple[int | None, str]:
    """(bytes, what) a run may use: the first device's limit on accelerators, physical RAM on CPU."""
    import jax

    dev = jax.local_devices()[0]
    if dev.platform != "cpu":
        try:
            stats = dev.memory_stats() or {}
        except Exception:  # noqa: BLE001 - some backends have no memory stats
            stats = {}
        limit = stats.get("bytes_limit")
        return (int(limit) if limit else None), f"{dev.device_kind} memory per device"
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "host RAM"
    except (ValueError, OSError, AttributeError):
        return None, "host RAM"


LEVERS = "lower --batch-size, raise --grad-accum, shorten --seq-len or use a smaller model"


def check_fits(model_cfg: Any, *, what: str = "this run", **sizes: Any) -> dict[str, int]:
    """UserError (exit 2, before anything is written) when the estimate exceeds the memory available;
    ``sizes``: the keyword arguments of :func:`estimate` (batch_size, seq_len, grad_accum, ...)."""
    est = estimate(model_cfg, **sizes)
    batch_size, grad_accum = sizes["batch_size"], sizes.get("grad_accum", 1)
    limit, where = available_bytes()
    if limit is not None and est["total"] > limit:
        raise UserError(
            f"{what} needs at least {_gib(est['total'])} ({_gib(est['state'])} weights, gradients and AdamW state, "
            f"{_gib(est['activations'])} activations of a {max(1, batch_size // max(1, grad_accum))}-sequence "
            f"micro-batch) but {where} is {_gib(limit)}; {LEVERS}"
        )
    return est


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is XLA's out-of-memory (compile or allocation)."""
    text = str(e)
    return (
        "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text
    ) and "No space left on device" not in text


def explain_oom(e: BaseException, est: dict[str, int] | None, what: str = "this run") -> UserError:
    """The one-line UserError for an out-of-memory ``e``."""
    need = (
        f" (estimated {_gib(est['total'])}: {_gib(est['state'])} state, {_gib(est['activations'])} activations)"
        if est
        else ""
    )
    first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    return UserError(f"{what} ran out of memory{need}: {first}; {LEVERS}")
