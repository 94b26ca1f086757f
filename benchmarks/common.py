"""Shared benchmark helpers: machine description, timing, and the results file."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from scalinglab.fileio import atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """Describe the machine a benchmark ran on (CPU model, cores, accelerator, library versions)."""
    import jax

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devices = jax.devices()
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def time_call(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Wall-clock seconds of ``fn()`` (which must block until done): median, min and all repeats."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def write_result(name: str, result: dict[str, Any], results_dir: str | os.PathLike | None = None) -> Path:
    """Write ``result`` (plus machine info and a UTC timestamp) to ``benchmarks/results/<name>.json``."""
    out = Path(results_dir) if results_dir else RESULTS_DIR
    payload = {
        "benchmark": name,
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        **result,
    }
    path = out / f"{name}.json"
    atomic_write_json(path, payload)
    return path
