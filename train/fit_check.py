"""Does a ladder preset's plan fit its machine? Checked on the plan's largest run before anything trains.

Two methods (``ladder --fit-check``):

* ``aot``: the real train step compiled for the preset's TPU topology with libtpu
  (:func:`scalinglab.train.aot.check`): XLA's per-chip bytes against the chip's HBM;
* ``estimate``: the analytic bytes per device of :func:`scalinglab.train.memory.estimate`
  (state sharded over fsdp × tensor, activations over data × fsdp) against the preset's
  ``device_memory_bytes`` — a lower bound, so it refuses only plans that certainly do not fit.

``auto`` takes ``aot`` when libtpu is installed and the preset names a topology (not in a dry run:
compiling a billion-parameter step takes minutes on a laptop), else ``estimate``.
A plan that does not fit is refused (UserError, exit 2) in one line naming the largest run, the
bytes per device, the capacity, and the levers that make the estimate fit (an FSDP mesh,
``--remat full``, more ``--grad-accum``; else a smaller ``--batch-size``, model or a bigger slice).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scalinglab.errors import UserError
from scalinglab.train import memory
from scalinglab.train.config import TrainConfig
from scalinglab.train.plan import LadderPreset, PlannedRun

METHODS = ("auto", "aot", "estimate", "off")


def largest_run(runs: Sequence[PlannedRun]) -> PlannedRun:
    """The run with the most parameters (ties: the most FLOPs per token, then the biggest batch)."""
    return max(runs, key=lambda r: (r.total, r.train_flops_per_token, r.batch_size))


def estimate_bytes(run: PlannedRun, cfg: TrainConfig, chips: int) -> dict[str, int]:
    """:func:`memory.estimate` of ``run`` per device under ``cfg``'s dtype, mesh, remat and accumulation."""
    sizes = memory.sizes_for(cfg, cfg.mesh_shape(chips, 1), batch_size=run.batch_size, seq_len=run.seq_len)
    return memory.estimate(run.config, **sizes)


def _lever(run: PlannedRun, cfg: TrainConfig, chips: int, capacity: int) -> str:
    """The levers (taken in turn, cumulatively: FSDP mesh, full remat, doubling accumulation) after
    which the estimate fits, as flags."""
    shape = cfg.mesh_shape(chips, 1)
    steps: list[tuple[str, dict[str, Any]]] = []
    if shape["fsdp"] * shape["tensor"] < chips:
        steps.append((f"an FSDP mesh (--mesh fsdp={chips})", {"mesh": {"fsdp": chips}}))
    if cfg.remat != "full":
        steps.append(("--remat full", {"remat": "full"}))
    accum = cfg.grad_accum
    while run.batch_size % (accum * 2) == 0:
        accum *= 2
        steps.append((f"--grad-accum {accum}", {"grad_accum": accum}))
    texts: list[str] = []
    for text, change in steps:
        cfg = dataclasses.replace(cfg, **change)
        texts = [t for t in texts if not t.startswith("--grad-accum")] + [text]
        if estimate_bytes(run, cfg, chips)["total"] <= capacity:
            return " and ".join(texts)
    return "a smaller --batch-size or model, or a bigger slice"


def check_plan_fits(
    preset_name: str, preset: LadderPreset, runs: Sequence[PlannedRun], cfg: TrainConfig, *, method: str = "auto"
) -> dict[str, Any] | None:
    """UserError when the largest of ``runs`` does not fit one device of ``preset`` under ``cfg``
    (the settings every run shares: dtype, mesh, remat, grad_accum); else what was checked
    (``method``, ``run``, ``bytes_per_device``, ``capacity_bytes``), None when ``method`` is ``off``."""
    if method not in METHODS:
        raise UserError(f"--fit-check {method!r}: choose one of {', '.join(METHODS)}")
    if method == "off" or not runs or not preset.device_memory_bytes:
        return None
    if method == "auto":
        method = "aot" if preset.topology and importlib.util.find_spec("libtpu") is not None else "estimate"
    run = largest_run(runs)
    capacity = int(preset.device_memory_bytes)
    if method == "aot":
        from scalinglab.train import aot
        from scalinglab.train.ladder import train_config_for

        if not preset.topology:
            raise UserError(f"--fit-check aot: --ladder-preset {preset_name} names no TPU topology; use estimate")
        aot.require_libtpu()
        lr = run.lr if run.lr is not None else preset.spec.lr
        run_cfg = train_config_for(dataclasses.replace(run, lr=lr), Path("aot-check"), **_shared(cfg))  # not written
        result = aot.check(run_cfg, run.config, preset.topology)
        need, capacity = int(result["hbm_bytes_per_chip"]), int(result["hbm_capacity_bytes"] or capacity)
        fits = bool(result["fits"])
    else:
        need = estimate_bytes(run, cfg, preset.chips)["total"]
        fits = need <= capacity
    if not fits:
        raise UserError(
            f"--ladder-preset {preset_name}: the largest run {run.name} ({run.total:,} parameters, batch "
            f"{run.batch_size} x {run.seq_len}) needs {memory._gib(need)} per device by the {method} check, "
            f"{memory._gib(capacity)} available; use {_lever(run, cfg, preset.chips, capacity)}"
        )
    return {"method": method, "run": run.name, "bytes_per_device": need, "capacity_bytes": capacity}


def _shared(cfg: TrainConfig) -> dict[str, Any]:
    return {"dtype": cfg.dtype, "mesh": cfg.mesh, "remat": cfg.remat, "grad_accum": cfg.grad_accum}
