"""Typed training configuration (``TrainConfig``), JSON round-trip and validation.

Units: ``batch_size`` is the global batch in sequences, ``seq_len`` in tokens,
``tokens`` the training budget in tokens, ``steps`` in optimizer steps (one step
consumes ``batch_size × seq_len`` tokens), ``warmup`` in steps, ``lr`` the peak
learning rate. ``wsd_decay`` is the fraction of the run spent in the WSD cooldown.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from scalinglab.errors import UserError

SCHEDULES = ("cosine", "constant", "wsd")
WSD_SHAPES = ("linear", "1-sqrt")
DTYPES = ("float32", "bfloat16")
MESH_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines one training run (saved as ``config.json["train"]``)."""

    name: str | None = None
    # model
    preset: str = "gpt2-tiny"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    # data
    dataset: str = "local_text"
    data_dir: str | None = None
    seq_len: int = 128  # tokens per sequence
    batch_size: int = 32  # global batch, sequences
    data_shards: int | None = None  # pipeline shards defining the global stream; None → process count
    tokens: int | None = None  # token budget; steps = ceil(tokens / (batch_size*seq_len))
    steps: int | None = None
    # optimizer
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: int | None = None  # steps; None → 5% of the run (at least 1 when steps > 1)
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    wsd_decay: float = 0.2  # fraction of the run in the WSD cooldown
    wsd_decay_shape: str = "linear"
    wsd_decay_start: int | None = None  # step where the cooldown starts (set for branched runs)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip: float = 1.0  # global-norm clip; 0 disables
    z_loss: float = 0.0
    # execution
    out: str = "runs/default"
    seed: int = 0
    mesh: dict[str, int] | None = None  # {"data","fsdp","tensor"}; None → all devices on data
    grad_accum: int = 1
    dtype: str = "float32"
    gns: bool = True  # gradient-noise-scale statistics in the step
    gns_window: int = 1024  # examples summed per B_simple window (0 → the per-step EMA below)
    gns_ema: float = 0.95  # EMA decay per step, used only when gns_window == 0
    max_bad_steps: int = 5  # consecutive non-finite steps that stop the run
    # logging / eval / checkpoints
    eval_every: int = 100
    eval_batches: int = 4
    eval_batch_size: int | None = None  # None → batch_size
    log_every: int = 10
    checkpoint_every: int = 200  # 0 → only at the end (and on SIGTERM)
    keep_checkpoints: int = 3
    resume: bool = False
    branch_from: str | None = None
    branch_step: int | None = None

    # ---- JSON -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**dict(d))

    # ---- derived ----------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def total_steps(self) -> int:
        """Optimizer steps of the run (from ``steps`` or the ``tokens`` budget)."""
        if self.steps is not None:  # authoritative when both are set (config.json stores both)
            return int(self.steps)
        if self.tokens is not None:
            return max(1, math.ceil(self.tokens / self.tokens_per_step))
        raise UserError("give --steps or --tokens")

    def warmup_steps(self) -> int:
        if self.warmup is not None:
            return int(self.warmup)
        steps = self.total_steps()
        return max(1, round(0.05 * steps)) if steps > 1 else 0

    def mesh_shape(self, n_devices: int, n_processes: int = 1) -> dict[str, int]:
        """Mesh axis sizes; unspecified axes are 1 except ``data``, which takes the rest.

        A single process may use fewer devices than it has (the first data·fsdp·tensor);
        several processes must use all of them.
        """
        mesh = dict(self.mesh or {})
        for k in mesh:
            if k not in MESH_AXES:
                raise UserError(f"unknown mesh axis {k!r}; axes: {', '.join(MESH_AXES)}")
        fsdp, tensor = int(mesh.get("fsdp", 1)), int(mesh.get("tensor", 1))
        data = mesh.get("data")
        if data is None:
            if n_devices % (fsdp * tensor):
                raise UserError(f"fsdp×tensor={fsdp * tensor} does not divide {n_devices} devices")
            data = n_devices // (fsdp * tensor)
        shape = {"data": int(data), "fsdp": fsdp, "tensor": tensor}
        if min(shape.values()) < 1:
            raise UserError(f"mesh axis sizes must be positive, got {shape}")
        n = math.prod(shape.values())
        if n > n_devices or (n < n_devices and n_processes > 1):
            raise UserError(
                f"mesh data={shape['data']},fsdp={fsdp},tensor={tensor} has "
                f"{n} devices, but {n_devices} are available"
            )
        return shape


def validate(cfg: TrainConfig) -> TrainConfig:
    """Return ``cfg`` if it is a runnable config, else raise UserError (no device access)."""
    if cfg.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if cfg.wsd_decay_shape not in WSD_SHAPES:
        raise UserError(f"unknown --wsd-decay-shape {cfg.wsd_decay_shape!r}; choose {' or '.join(WSD_SHAPES)}")
    if cfg.dtype not in DTYPES:
        raise UserError(f"unknown dtype {cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
    for name in ("seq_len", "batch_size", "grad_accum", "eval_batches", "log_every", "max_bad_steps"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name} must be ≥ 1, got {getattr(cfg, name)}")
    for name in ("eval_every", "checkpoint_every", "keep_checkpoints"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must be ≥ 0, got {getattr(cfg, name)}")
    if cfg.steps is None and cfg.tokens is None and cfg.branch_from is None:
        raise UserError("give --steps or --tokens")
    if cfg.steps is not None and cfg.steps < 1:
        raise UserError(f"steps must be ≥ 1, got {cfg.steps}")
    if cfg.tokens is not None and cfg.tokens < 1:
        raise UserError(f"tokens must be ≥ 1, got {cfg.tokens}")
    if not cfg.lr > 0 and cfg.lr != 0:
        raise UserError(f"lr must be ≥ 0, got {cfg.lr}")
    if cfg.warmup is not None and cfg.warmup < 0:
        raise UserError(f"warmup must be ≥ 0, got {cfg.warmup}")
    if not 0.0 < cfg.wsd_decay < 1.0:
        raise UserError(f"--wsd-decay is a fraction in (0, 1), got {cfg.wsd_decay}")
    if cfg.batch_size % cfg.grad_accum:
        raise UserError(f"--grad-accum {cfg.grad_accum} does not divide --batch-size {cfg.batch_size}")
    if cfg.clip < 0 or cfg.weight_decay < 0 or cfg.z_loss < 0:
        raise UserError("--clip, --weight-decay and --z-loss must be ≥ 0")
    if cfg.gns_window < 0:
        raise UserError(f"gns_window must be ≥ 0 examples, got {cfg.gns_window}")
    if not 0.0 <= cfg.gns_ema < 1.0:
        raise UserError(f"gns_ema must be in [0, 1), got {cfg.gns_ema}")
    if (cfg.branch_from is None) != (cfg.branch_step is None):
        raise UserError("--branch-from and --branch-step go together")
    if cfg.data_shards is not None and (cfg.data_shards < 1 or cfg.batch_size % cfg.data_shards):
        raise UserError(f"data_shards must be ≥ 1 and divide --batch-size, got {cfg.data_shards}")
    if cfg.branch_from is not None and cfg.resume:
        raise UserError("--branch-from starts a new run; it cannot be combined with --resume")
    return cfg
