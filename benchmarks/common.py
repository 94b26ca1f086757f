"""Shared benchmark helpers: machine description and the results file."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from scalinglab.fileio import atomic_write_json

# Results go into the checkout the benchmarks are run from (`make bench` runs in the repo root), not
# beside the installed package files; `scalinglab bench --results-dir` picks another folder.
RESULTS_DIR = Path("benchmarks") / "results"


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


def write_result(name: str, result: dict[str, Any], results_dir: str | os.PathLike | None = None) -> Path:
    """Write ``result`` (plus machine info and a UTC timestamp) to ``<results_dir>/<name>.json``
    (default :data:`RESULTS_DIR`, ``benchmarks/results`` of the working directory)."""
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
