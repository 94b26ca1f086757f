"""Peak FLOP/s of the hardware, for model-FLOPs utilisation (MFU = achieved FLOP/s / peak).

* CPU: measured, the best of a few large f32 matmuls (2·n³ FLOPs each) on all cores;
  the result is cached per process (the machine does not change between runs).
* GPU/TPU: per-device dense peak from a table (bf16 or f32), times the device count.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

# Dense peak FLOP/s per device (vendor datasheets; bf16 tensor-core / MXU, f32 without sparsity).
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float32": 30e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12 / 4},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 4},
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12 / 4},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12 / 4},
    "TPU v5": {"bfloat16": 459e12, "float32": 459e12 / 4},  # v5p's jax device_kind
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12 / 4},
    "TPU v6e": {"bfloat16": 918e12, "float32": 918e12 / 4},
}


@functools.cache
def measured_cpu_peak_flops(n: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` f32 ``n×n @ n×n`` matmuls on the default CPU device."""
    cpu = jax.devices("cpu")[0]
    a = jax.device_put(jnp.ones((n, n), jnp.float32), cpu)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def table_peak_flops(device_kind: str, dtype: str) -> float | None:
    """Per-device peak from :data:`PEAK_FLOPS` by substring of ``device_kind``; None if unknown."""
    for name, peaks in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if name.lower() in device_kind.lower():
            return peaks.get(dtype, peaks["float32"])
    return None


def peak_flops(devices=None, dtype: str = "float32") -> float | None:
    """Peak FLOP/s of all ``devices`` (default: every device of the run); None if unknown.

    On CPU, forced host devices share the same cores, so the peak is the measured
    whole-machine matmul rate (not multiplied by the device count).
    """
    devices = list(devices if devices is not None else jax.devices())
    kind = devices[0].platform
    if kind == "cpu":
        return measured_cpu_peak_flops()
    per_device = table_peak_flops(devices[0].device_kind, dtype)
    return None if per_device is None else per_device * len(devices)
