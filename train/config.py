"""Typed training configuration (``TrainConfig``), JSON round-trip and validation.

Units: ``batch_size`` is the global batch in sequences, ``seq_len`` in tokens,
``tokens`` the training budget in tokens, ``steps`` in optimizer steps (one step
consumes ``batch_size × seq_len`` tokens), ``warmup`` in steps, ``lr`` the peak
learning rate. ``wsd_decay`` is the fraction of the run spent in the WSD cooldown.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from scalinglab.errors import UserError
from scalinglab.models.config import parse_model_set, typed_overrides
from scalinglab.train.options import Part, Schema, option

SCHEDULES = ("cosine", "constant", "wsd")
WSD_SHAPES = ("linear", "1-sqrt")
DTYPES = ("float32", "bfloat16")
REMATS = ("none", "dots", "full")  # see scalinglab.models.transformer.REMAT_POLICIES
MESH_AXES = ("data", "fsdp", "tensor")


def parse_mesh(value: str | Mapping[str, Any]) -> dict[str, int]:
    """``data=2,fsdp=2,tensor=2`` (or a mapping) → ``{"data": 2, "fsdp": 2, "tensor": 2}``.

    Missing axes are omitted (``data`` then takes the devices left); ``-1`` also means "the rest".
    """
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
        text = ",".join(f"{k}={v}" for k, v in items)
    elif isinstance(value, str):
        text = value
        items = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, size = part.partition("=")
            if not sep:
                raise UserError(f"--mesh expects data=N,fsdp=N,tensor=N, got {value!r}")
            items.append((key.strip(), size.strip()))
    else:
        raise UserError(f"--mesh expects data=N,fsdp=N,tensor=N, got {value!r}")
    mesh: dict[str, int] = {}
    for key, size in items:
        if key not in MESH_AXES:
            raise UserError(f"--mesh expects data=N,fsdp=N,tensor=N, got {text!r}")
        try:
            n = int(size)
        except (TypeError, ValueError):
            raise UserError(f"--mesh: {key} must be an integer, got {size!r}") from None
        if n == -1:
            continue
        if n < 1:
            raise UserError(f"--mesh: {key} must be ≥ 1")
        mesh[key] = n
    return mesh


def parse_tokens(value: str | int | float) -> int:
    """A token count, also in float notation (``2e6``); must be a positive whole number."""
    if isinstance(value, bool):
        raise UserError(f"--tokens expects a number of tokens (e.g. 2e6), got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--tokens expects a number of tokens (e.g. 2e6), got {value!r}") from None
    if not number >= 1 or number != int(number):
        raise UserError(f"--tokens must be a positive whole number of tokens, got {value!r}")
    return int(number)


def parse_overrides(value: str | Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Model-field overrides: ``--set k=v`` texts (repeatable) or a mapping from a config file, each
    value in its model field's declared type (``n_layer=1`` → the int 1, as a config file gives it)."""
    if isinstance(value, Mapping):
        return typed_overrides({str(k): v for k, v in value.items()})
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
        raise UserError(f"--set expects key=value (a config file: a mapping of model fields), got {value!r}")
    return parse_model_set(items)


MODEL, DATA, OPTIMIZER, TRAIN = "model", "data", "optimizer", "train"  # config-file sections


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines one training run (saved as ``config.json["train"]``).

    Each field is a setting of the training commands: its flag (``--field-name``), config-file
    key (``section: {field_name: ...}``) and help text come from its :func:`option` declaration.
    """

    name: str | None = option(None, "run name (default: the run directory's name)", section=TRAIN)
    # model
    preset: str = option(
        "gpt2-tiny", "model preset, e.g. gpt2-tiny, modern-mini (see `scalinglab params`)", section=MODEL
    )
    overrides: dict[str, Any] = option(
        default_factory=dict,
        help="override a model field (repeatable), e.g. n_layer=4",
        section=MODEL,
        flag="--set",
        metavar="KEY=VALUE",
        parse=parse_overrides,
        repeat=True,
        merge=True,
    )
    # data
    dataset: str = option("local_text", "prepared dataset name (see `scalinglab data prepare`)", section=DATA)
    data_dir: str | None = option(
        None, "data directory (default $SCALINGLAB_DATA_DIR or ~/.cache/scalinglab/data)", section=DATA
    )
    seq_len: int = option(128, "tokens per sequence", section=DATA)
    batch_size: int = option(32, "global batch size in sequences (over all devices and processes)", section=TRAIN)
    data_shards: int | None = option(
        None, "pipeline shards defining the global batch stream (default: process count)", section=DATA
    )
    tokens: int | None = option(
        None,
        "training budget in tokens (e.g. 2e6); steps = ceil(tokens / (batch·seq))",
        section=TRAIN,
        parse=parse_tokens,
        exclusive="length",
    )
    steps: int | None = option(None, "training length in optimizer steps", section=TRAIN, exclusive="length")
    # optimizer
    lr: float = option(1e-3, "peak learning rate", section=OPTIMIZER)
    schedule: str = option("cosine", "learning-rate schedule", section=OPTIMIZER, choices=SCHEDULES)
    warmup: int | None = option(None, "linear warmup steps (default 5% of the run, at least 1)", section=OPTIMIZER)
    min_lr_ratio: float = option(0.1, "cosine floor as a fraction of the peak lr", section=OPTIMIZER)
    wsd_decay: float = option(0.2, "WSD: fraction of the run spent in the cooldown", section=OPTIMIZER)
    wsd_decay_shape: str = option("linear", "WSD cooldown shape", section=OPTIMIZER, choices=WSD_SHAPES)
    wsd_decay_start: int | None = option(
        None, "WSD: step where the cooldown starts (set for branched runs)", section=OPTIMIZER, cli=False
    )
    weight_decay: float = option(
        0.1, "AdamW decoupled weight decay (not on norms/biases/embeddings)", section=OPTIMIZER
    )
    beta1: float = option(0.9, "AdamW beta1", section=OPTIMIZER)
    beta2: float = option(0.95, "AdamW beta2", section=OPTIMIZER)
    eps: float = option(1e-8, "AdamW epsilon", section=OPTIMIZER)
    clip: float = option(1.0, "global gradient-norm clip; 0 disables", section=OPTIMIZER)
    z_loss: float = option(0.0, "z-loss coefficient (default 0)", section=OPTIMIZER)
    # execution
    out: str = option("runs/default", "run directory", section=TRAIN)
    seed: int = option(0, "random seed (init and data order)", section=TRAIN)
    mesh: dict[str, int] | None = option(
        None, "device mesh, e.g. data=4,fsdp=2,tensor=1 (default: all devices on data)", section=TRAIN, parse=parse_mesh
    )
    grad_accum: int = option(1, "microbatches per step (gradient accumulation)", section=TRAIN)
    dtype: str = option("float32", "compute dtype (parameters stay float32)", section=TRAIN, choices=DTYPES)
    remat: str = option(
        "none",
        "per-block rematerialisation: none, dots (keep weight-matmul outputs), full (keep block inputs only)",
        section=TRAIN,
        choices=REMATS,
    )
    gns: bool = option(True, "skip the gradient-noise-scale statistics", section=TRAIN)
    gns_window: int = option(
        1024, "examples summed per B_simple window (0: the per-step EMA, --gns-ema)", section=TRAIN
    )
    gns_ema: float = option(
        0.95, "EMA decay per step of the noise-scale statistics (only with --gns-window 0)", section=TRAIN
    )
    max_bad_steps: int = option(5, "stop after K consecutive non-finite steps", section=TRAIN)
    # logging / eval / checkpoints
    eval_every: int = option(
        100, "evaluate on the fixed validation batches every K steps (0: only at the end)", section=TRAIN
    )
    eval_batches: int = option(4, "number of validation batches", section=TRAIN)
    eval_batch_size: int | None = option(
        None, "validation batch size in sequences (default: --batch-size)", section=TRAIN
    )
    log_every: int = option(10, "write a metrics.jsonl record every K steps", section=TRAIN)
    wandb: str | None = option(
        None,
        "also log the metrics to this Weights & Biases project (the wandb extra)",
        section=TRAIN,
        metavar="PROJECT",
    )
    checkpoint_every: int = option(
        200, "save a checkpoint every K steps (0: only at the end and on SIGTERM)", section=TRAIN
    )
    keep_checkpoints: int = option(3, "keep the newest N checkpoints (plus WSD branch points)", section=TRAIN)
    resume: bool = option(False, "continue from the newest complete checkpoint in --out", section=TRAIN)
    branch_from: str | None = option(
        None, "WSD: branch a cooldown from this (stable-phase) run's checkpoint", section=TRAIN, metavar="DIR"
    )
    branch_step: int | None = option(None, "WSD: the checkpoint step to branch from", section=TRAIN, metavar="S")

    # ---- JSON -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
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
                f"mesh data={shape['data']},fsdp={fsdp},tensor={tensor} has {n} devices, but {n_devices} are available"
            )
        return shape


# `scalinglab train`'s settings: every TrainConfig field (flags, config-file keys; see train/options.py).
TRAIN_SCHEMA = Schema("train", Part(TrainConfig))


def validate(cfg: TrainConfig) -> TrainConfig:
    """Return ``cfg`` if it is a runnable config, else raise UserError (no device access)."""
    from scalinglab.checks import check_field_types

    check_field_types(cfg, "train")
    if cfg.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if cfg.wsd_decay_shape not in WSD_SHAPES:
        raise UserError(f"unknown --wsd-decay-shape {cfg.wsd_decay_shape!r}; choose {' or '.join(WSD_SHAPES)}")
    if cfg.dtype not in DTYPES:
        raise UserError(f"unknown dtype {cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
    if cfg.remat not in REMATS:
        raise UserError(f"unknown remat {cfg.remat!r}; choose one of {', '.join(REMATS)}")
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
    if cfg.wandb is not None:
        from scalinglab.train.wandb_log import require_wandb

        require_wandb()
    return cfg
