"""Ahead-of-time check of a train step on a TPU slice this host does not have.

libtpu compiles for any TPU topology on a CPU host: ``get_topology_desc`` gives compile-only
devices, the step of :func:`scalinglab.train.program.build_program` (the one ``train`` runs, with its
shardings) is lowered and compiled for them, and XLA reports per-chip memory
(``memory_analysis``) and its estimate of the step time (``cost_analysis()["optimal_seconds"]``).

Per run (:func:`check`): ``hbm_bytes_per_chip`` = arguments + temporaries + outputs − aliased
(donated state buffers are counted once), ``hbm_capacity_bytes`` of the chip, ``fits``,
``estimated_step_s`` (XLA's estimate, seconds; XLA costs a loop body once, so a step with a
microbatch loop — accumulation, or GNS over two sequential halves — is estimated as K × the
loop-free step of one microbatch, ``estimate_method`` says which), ``predicted_mfu`` = exact training FLOPs of the
step (:mod:`scalinglab.models.accounting`) / (chips × bf16 peak × estimated_step_s), under the
full-attention count and the causal count (``predicted_mfu_causal``), ``topology``, ``device_kind``.

XLA's ``optimal_seconds`` is sometimes ≤ 0 (seen for gpt2-small on v5e:2x2 and for the ladder presets'
largest runs): ``estimated_step_s`` is then None. Beside it, always labelled as such,
``roofline_step_s`` is a roofline from the same ``cost_analysis()``: per chip, the larger of
``flops`` / the chip's bf16 peak (:data:`scalinglab.train.mfu.PEAK_FLOPS`) and ``bytes accessed`` /
the chip's HBM bandwidth (:data:`HBM_BANDWIDTH`), × K for a step of K microbatches like the estimate
(the SPMD program XLA costs is one chip's); ``roofline_mfu`` is ``predicted_mfu`` with it. It assumes
compute and memory traffic overlap perfectly and ignores communication between chips: a bound from
XLA's own counts, not XLA's estimate and not a measurement.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import warnings
from typing import Any

from scalinglab.errors import UserError
from scalinglab.platforms import has_tpu_chips

GiB = 1 << 30

# HBM per chip (Cloud TPU system architecture pages), by jax device_kind.
HBM_BYTES: dict[str, int] = {
    "TPU v4": 32 * GiB,
    "TPU v5 lite": 16 * GiB,  # v5e
    "TPU v5": 95 * GiB,  # v5p
    "TPU v6 lite": 32 * GiB,  # v6e (Trillium)
}

# HBM bandwidth per chip, bytes/s, by jax device_kind (Cloud TPU system architecture pages,
# docs.cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e: 1200, 819, 2765 and 1638 GBps).
HBM_BANDWIDTH: dict[str, float] = {
    "TPU v4": 1200e9,
    "TPU v5 lite": 819e9,  # v5e
    "TPU v5": 2765e9,  # v5p
    "TPU v6 lite": 1638e9,  # v6e (Trillium)
}

# generation → (topology prefix, 3-D torus?, chips per accelerator-type core count)
_GENERATIONS = {
    "v4": ("v4", True, 2),  # v4-32 = 32 TensorCores = 16 chips (megacore)
    "v5p": ("v5", True, 2),
    "v5litepod": ("v5e", False, 1),
    "v5e": ("v5e", False, 1),
    "v6e": ("v6e", False, 1),
}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8", 512: "8x8x8"}


def require_libtpu() -> None:
    """UserError (exit 2) naming ``make venv-tpu`` when libtpu is not installed."""
    if importlib.util.find_spec("libtpu") is None:
        raise UserError("aot needs libtpu: run `make venv-tpu` (installs the tpu extra)")


def topology_name(name: str) -> tuple[str, str]:
    """``(topology, chip_config)`` for ``v5e:2x2``-style names or accelerator types (``v4-32``,
    ``v5litepod-16``, ``v5p-8``, ``v6e-8``); chip_config is ``megacore`` on v4/v5p."""
    name = name.strip()
    m = re.fullmatch(r"(v4|v5p|v5litepod|v5e|v6e)-(\d+)", name)
    if m:
        prefix, three_d, per_chip = _GENERATIONS[m.group(1)]
        chips = int(m.group(2)) // per_chip
        shape = (_SHAPES_3D if three_d else _SHAPES_2D).get(chips)
        if shape is None:
            raise UserError(f"--topology {name}: no known slice shape for {chips} chips")
        return f"{prefix}:{shape}", "megacore" if three_d else "default"
    m = re.fullmatch(r"(v4|v5p?|v5e|v6e):(\d+(?:x\d+){1,2})", name)
    if not m:
        raise UserError(f"--topology {name!r}: expected e.g. v5e:2x2, v4:2x2x4 or an accelerator type like v4-32")
    gen = "v5" if m.group(1) == "v5p" else m.group(1)
    return f"{gen}:{m.group(2)}", "megacore" if gen in ("v4", "v5") else "default"


# What libtpu probes for the slice it runs on (metadata server, accelerator type, workers); on a
# host without chips these values stop its warnings and do not change the described topology.
_NOT_A_TPU_VM = {
    "TPU_SKIP_MDS_QUERY": "1",
    "TPU_ACCELERATOR_TYPE": "v5litepod-4",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "TPU_WORKER_ID": "0",
}


def topology_devices(name: str) -> list[Any]:
    """Compile-only devices of the TPU topology ``name`` (needs libtpu)."""
    require_libtpu()
    # compile-only: no chip is opened, so several processes may load libtpu (else its lockfile refuses)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    if not has_tpu_chips():  # a host that is no TPU VM: libtpu would warn that it cannot find its slice
        for var, value in _NOT_A_TPU_VM.items():
            os.environ.setdefault(var, value)
    from jax.experimental import topologies

    topo, chip_config = topology_name(name)
    try:
        return list(topologies.get_topology_desc(topo, platform="tpu", chip_config_name=chip_config).devices)
    except Exception as e:  # noqa: BLE001 - libtpu's error is a RuntimeError subclass of its own
        raise UserError(f"--topology {name}: libtpu cannot describe {topo}: {str(e).splitlines()[0]}") from None


def _by_kind(table: dict[str, Any], device_kind: str) -> Any:
    """``table``'s entry for ``device_kind`` (longest matching key first), None if none matches."""
    for kind, value in sorted(table.items(), key=lambda kv: -len(kv[0])):
        if kind.lower() in device_kind.lower():
            return value
    return None


def hbm_capacity(device_kind: str) -> int | None:
    return _by_kind(HBM_BYTES, device_kind)


def roofline_seconds(cost: dict[str, float], device_kind: str) -> float | None:
    """One chip's roofline time of a program XLA costed (``cost_analysis()``: ``flops``, ``bytes
    accessed``), seconds: max(flops / bf16 peak, bytes / HBM bandwidth); None when unknown."""
    from scalinglab.train import mfu as mfu_lib

    peak, bandwidth = mfu_lib.table_peak_flops(device_kind, "bfloat16"), _by_kind(HBM_BANDWIDTH, device_kind)
    flops, moved = float(cost.get("flops", float("nan"))), float(cost.get("bytes accessed", float("nan")))
    if not (peak and bandwidth and flops >= 0 and moved >= 0):  # NaN fails too
        return None
    seconds = max(flops / peak, moved / bandwidth)
    return seconds if seconds > 0 else None


def _compile(lowered: Any) -> Any:
    """``lowered.compile()``, without JAX's warning that a cached compile-only TPU executable cannot
    be loaded back (no TPU client here): it compiles again, which is what happens anyway."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*PjRtCompiler must be constructed with a Client")
        return lowered.compile()


def check(cfg: Any, model_cfg: Any, topology: str, devices: list[Any] | None = None) -> dict[str, Any]:
    """Compile ``cfg``'s train step for ``topology`` and report memory, time and MFU (see module doc)."""
    from scalinglab.train.program import lower_train_step

    devices = topology_devices(topology) if devices is None else devices
    n_proc = process_count(devices)
    built = lower_train_step(cfg, model_cfg, devices=devices, n_processes=n_proc)
    state_bytes = _per_chip_bytes(built.abstract_state)
    try:
        compiled = _compile(built.lowered)
    except Exception as e:  # noqa: BLE001 - libtpu refuses a program that cannot fit: that is a result
        needed = _refused_bytes(str(e))
        if needed is None:
            raise
        return _result(
            cfg,
            model_cfg,
            topology,
            devices,
            fits=False,
            hbm=needed,
            state_bytes=state_bytes,
            memory_source="the compiler's out-of-memory refusal (rounded to 0.01 GiB)",
        )
    mem = compiled.memory_analysis()
    k = built.micro_steps
    if k == 1:
        costed, method = compiled, "xla optimal_seconds"
    else:  # the loop-free step of one microbatch, K times
        unit = dataclasses.replace(cfg, batch_size=cfg.batch_size // k, grad_accum=1, gns=False)
        costed = _compile(lower_train_step(unit, model_cfg, devices=devices, n_processes=n_proc).lowered)
        method = f"{k} x xla optimal_seconds of one microbatch"
    cost = _cost(costed)
    step_s = k * float(cost.get("optimal_seconds", float("nan")))
    roofline = roofline_seconds(cost, devices[0].device_kind)
    hbm = int(mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes)
    capacity = hbm_capacity(devices[0].device_kind)
    return _result(
        cfg,
        model_cfg,
        topology,
        devices,
        fits=capacity is not None and hbm <= capacity,
        hbm=hbm,
        state_bytes=state_bytes,
        memory_source="memory_analysis",
        mem=mem,
        step_s=step_s,
        method=method,
        roofline_s=None if roofline is None else k * roofline,
    )


def _result(
    cfg,
    model_cfg,
    topology,
    devices,
    *,
    fits,
    hbm,
    state_bytes,
    memory_source,
    mem=None,
    step_s=float("nan"),
    method=None,
    roofline_s=None,
) -> dict[str, Any]:
    from scalinglab.models import accounting
    from scalinglab.train import mfu as mfu_lib

    kind = devices[0].device_kind
    tokens = cfg.batch_size * cfg.seq_len
    flops = tokens * accounting.train_flops_per_token(model_cfg, cfg.seq_len)
    flops_causal = tokens * accounting.train_flops_per_token(model_cfg, cfg.seq_len, causal=True)
    peak = mfu_lib.table_peak_flops(kind, "bfloat16")
    denom = len(devices) * peak * step_s if (peak and step_s > 0) else None  # NaN/negative: no estimate
    counts = accounting.param_counts(model_cfg)
    return {
        "topology": topology,
        "device_kind": kind,
        "chips": len(devices),
        "hbm_bytes_per_chip": hbm,
        "hbm_capacity_bytes": hbm_capacity(kind),
        "fits": bool(fits),
        "memory_source": memory_source,
        "state_bytes_per_chip": state_bytes,
        "argument_bytes": None if mem is None else int(mem.argument_size_in_bytes),
        "temp_bytes": None if mem is None else int(mem.temp_size_in_bytes),
        "output_bytes": None if mem is None else int(mem.output_size_in_bytes),
        "alias_bytes": None if mem is None else int(mem.alias_size_in_bytes),
        "estimated_step_s": step_s if step_s > 0 else None,  # NaN (no compile) or ≤ 0: none
        "estimate_method": method,
        "train_flops_per_step": int(flops),
        "train_flops_per_step_causal": int(flops_causal),
        "predicted_mfu": flops / denom if denom else None,
        "predicted_mfu_causal": flops_causal / denom if denom else None,
        "roofline_step_s": roofline_s,  # a bound from XLA's flops and bytes (module doc), not XLA's estimate
        "roofline_mfu": flops / (len(devices) * peak * roofline_s) if (peak and roofline_s) else None,
        "non_embedding": int(counts["non_embedding"]),
        "total": int(counts["total"]),
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "dtype": cfg.dtype,
        "remat": cfg.remat,
        "grad_accum": cfg.grad_accum,
        "mesh": build_mesh_text(cfg, len(devices), devices),
    }


_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _refused_bytes(message: str) -> int | None:
    """Bytes per chip named by libtpu's out-of-memory refusal, None if ``message`` is not one."""
    if "RESOURCE_EXHAUSTED" not in message:
        return None
    m = re.search(r"required for HLO temporaries \(([\d.]+)([KMGT])\)", message) or re.search(
        r"Used ([\d.]+)([KMGT]) of [\d.]+[KMGT] hbm", message
    )
    return None if m is None else int(float(m.group(1)) * _UNITS[m.group(2)])


def _per_chip_bytes(abstract: Any) -> int:
    """Bytes of one device's shards of a pytree of sharded ShapeDtypeStructs."""
    import jax
    import numpy as np

    return int(
        sum(
            np.prod(x.sharding.shard_shape(x.shape), dtype=np.int64) * x.dtype.itemsize
            for x in jax.tree.leaves(abstract)
        )
    )


def _cost(compiled: Any) -> dict[str, float]:
    """XLA's cost analysis of a compiled program (``flops``, ``bytes accessed``, ``optimal_seconds``
    in seconds, ...); empty when it gives none."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return dict(cost or {})


def process_count(devices: list[Any]) -> int:
    """Hosts owning ``devices`` (a compile-only TPU device names its host's process)."""
    return len({int(getattr(d, "process_index", 0)) for d in devices})


def build_mesh_text(cfg: Any, n_devices: int, devices: list[Any]) -> str:
    shape = cfg.mesh_shape(n_devices, process_count(devices))
    return ",".join(f"{k}={v}" for k, v in shape.items())
