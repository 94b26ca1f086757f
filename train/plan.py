"""Planning size ladders: which models to train, for how many tokens, at what compute.

Two kinds of plan:

* ``isoflop`` (Chinchilla approach 2): for each FLOP budget C, ``sizes_per_budget`` models
  spaced evenly in log N around a guess of the compute-optimal size, each trained for
  D = C / (exact training FLOPs per token) tokens, with a cosine schedule to its own length.
* ``sizes``: fixed model sizes × fixed token budgets (Kaplan-style L(N, D) grids).

Every number comes from :mod:`scalinglab.models.accounting` (exact integer FLOPs per token),
so the planned compute of each run equals its budget up to rounding D to whole steps.

Hyperparameters per size follow ``lr_protocol`` (:mod:`scalinglab.train.lr_protocol`): under
``search`` (default) the ladder runs' learning rate is left pending (``lr`` None) and
:func:`plan_lr_search` lists the search runs that will set it; under ``mup`` every model config is
in μP with the ladder's base width and ``lr`` is the base learning rate; every run records where each
of its hyperparameters came from (``hparams``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from scalinglab.errors import UserError
from scalinglab.models import accounting, mup
from scalinglab.models.config import ModelConfig
from scalinglab.models.ladder import ladder_config
from scalinglab.rundir import LR_SEARCH_DIR
from scalinglab.train import lr_protocol as lrp
from scalinglab.train.options import option

PLANS = ("isoflop", "sizes")
# Fewer steps than this and rounding D to whole batches moves C by more than 1%.
MIN_STEPS = 100


@dataclasses.dataclass(frozen=True)
class LadderSpec:
    """What the user asked for (``scalinglab ladder`` flags; config-file section ``ladder``)."""

    plan: str = option("isoflop", "isoflop or sizes", choices=PLANS)
    budgets: tuple[float, ...] = option(
        (1e12, 3e12, 1e13), "training FLOP budgets per run (isoflop), e.g. 1e12,3e12,1e13"
    )
    sizes: tuple[float, ...] = option(
        (), "target non-embedding parameter counts (sizes plan, or fixed isoflop sizes), e.g. 1e4,3e4,1e5"
    )
    tokens: tuple[float, ...] = option((), "token budgets D per size for --plan sizes, e.g. 1e6,3e6")
    family: str = option("gpt2", "gpt2 or modern")
    sizes_per_budget: int = option(5, "isoflop sizes per budget")
    size_span: float = option(32.0, "N_max/N_min within a budget (isoflop)")
    tokens_per_param: float = option(
        20.0, "D/N at the centre of each budget's sizes (default 20, Chinchilla's optimum)"
    )
    aspect_ratio: float = option(32.0, "d_model / n_layer of the ladder models")
    head_dim: int = option(16, "attention head size")
    seq_len: int = option(64, "tokens per sequence")
    batch_size: int = option(16, "global batch in sequences")
    vocab_size: int = option(257, "vocabulary size (default: the dataset's tokenizer)")
    lr: float = option(3e-3, "peak learning rate (--lr-protocol fixed) or the centre of the lr search grid")
    warmup_frac: float = option(0.05, "linear warmup as a fraction of each run's steps (--lr-protocol fixed)")
    lr_protocol: str = option(
        "search",
        "search (default): an lr grid at the smallest budget for a few sizes, then "
        "a fitted lr_opt(N) for every run, warmup = N tokens and beta2 0.99 at small batches "
        "(Porian et al. 2024); fixed: --lr, --warmup-frac and beta2 0.95 for every run; "
        "mup (--family modern): muP models (Yang et al. 2022), --lr tuned at --mup-base-width transfers "
        "to every width, warmup and beta2 as search",
        choices=lrp.PROTOCOLS,
    )
    mup_base_width: int = option(
        0, "muP base width: the d_model at which --lr was tuned (--lr-protocol mup; 0 = the smallest run's d_model)"
    )
    lr_grid: tuple[float, ...] = option(lrp.DEFAULT_LR_GRID, "lr factors x --lr tried per searched size")
    lr_search_extend: int = option(
        2,
        "a searched size whose best lr is at an edge of the grid gets one more lr 2x "
        "beyond it, up to this many times (0: never)",
    )
    lr_search_sizes: int = option(
        3, "sizes of the smallest budget the lr search trains, spread evenly in log N (0 = all)"
    )
    min_size: float = option(1.0, "smallest target non-embedding N (tiny configs collapse below ~1e3)")


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of a ladder: a model config trained for ``steps`` steps of ``batch_size`` sequences."""

    name: str
    budget: float  # the FLOP budget this run belongs to (isoflop), or its planned flops (sizes)
    config: ModelConfig
    non_embedding: int  # Kaplan's N, parameters
    total: int  # every parameter
    train_flops_per_token: int  # exact, FLOPs per token (forward + backward)
    steps: int
    batch_size: int  # sequences
    seq_len: int  # tokens per sequence
    lr: float | None  # None: pending, set by run_ladder from the lr search
    warmup: int  # steps
    beta2: float = 0.95
    role: str = "ladder"  # "ladder" | "search"
    hparams: tuple[tuple[str, str], ...] = ()  # (hyperparameter, where its value came from)

    @property
    def tokens(self) -> int:
        """D: training tokens (exact)."""
        return self.steps * self.batch_size * self.seq_len

    @property
    def flops(self) -> int:
        """C: training FLOPs (exact)."""
        return self.tokens * self.train_flops_per_token

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "budget": self.budget,
            "non_embedding": self.non_embedding,
            "total": self.total,
            "tokens": self.tokens,
            "flops": self.flops,
            "tokens_per_param": self.tokens / self.non_embedding,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "lr": self.lr,
            "warmup": self.warmup,
            "beta2": self.beta2,
            "role": self.role,
            "hparams": dict(self.hparams),
            "train_flops_per_token": self.train_flops_per_token,
            "config": self.config.to_dict(),
        }


def _size_name(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _config_for(spec: LadderSpec, n_target: float) -> ModelConfig:
    cfg = ladder_config(
        spec.family,
        n_non_embedding=max(n_target, spec.min_size),
        aspect_ratio=spec.aspect_ratio,
        head_dim=spec.head_dim,
        n_ctx=spec.seq_len,
        vocab_size=spec.vocab_size,
    )
    return dataclasses.replace(cfg, mup_base_width=spec.mup_base_width) if spec.lr_protocol == "mup" else cfg


def _mup_spec(spec: LadderSpec) -> LadderSpec:
    """``spec`` with its μP base width resolved (0 → d_model of the smallest target size); refuses a
    family μP does not support, and a base width without ``--lr-protocol mup``."""
    if spec.lr_protocol != "mup":
        if spec.mup_base_width:
            raise UserError(f"--mup-base-width needs --lr-protocol mup (got {spec.lr_protocol})")
        return spec
    if spec.family not in mup.SUPPORTED_FAMILIES:
        raise UserError(
            f"--lr-protocol mup supports --family {', '.join(mup.SUPPORTED_FAMILIES)} only (untied head), "
            f"not {spec.family}"
        )
    if spec.mup_base_width < 0:
        raise UserError(f"--mup-base-width must be a positive d_model (or 0), got {spec.mup_base_width}")
    if spec.mup_base_width:
        return spec
    targets = [t for b in spec.budgets for t in isoflop_sizes(spec, b)] if spec.plan == "isoflop" else spec.sizes
    base = dataclasses.replace(spec, lr_protocol="fixed")
    return dataclasses.replace(spec, mup_base_width=_config_for(base, min(targets)).d_model)


def _run(spec: LadderSpec, cfg: ModelConfig, n_tokens: float, budget: float, name: str) -> PlannedRun:
    counts = accounting.param_counts(cfg)
    fpt = accounting.train_flops_per_token(cfg, spec.seq_len)
    tokens_per_step = spec.batch_size * spec.seq_len
    steps = int(round(n_tokens / tokens_per_step))
    if steps < MIN_STEPS:
        raise UserError(
            f"run {name}: only {steps} steps of {tokens_per_step} tokens fit its budget "
            f"(need ≥ {MIN_STEPS}); raise the budget or lower --batch-size/--seq-len"
        )
    n = int(counts["non_embedding"])
    if spec.lr_protocol == "mup":
        warmup = lrp.porian_warmup(n, tokens_per_step, steps)
        lr, beta2 = spec.lr, lrp.porian_beta2(spec.batch_size)
        hparams = (
            ("lr", lrp.mup_lr_source(spec.lr, spec.mup_base_width)),
            ("warmup", "Porian et al. 2024: N tokens (at most a quarter of the run)"),
            ("beta2", f"Porian et al. 2024: 0.99 below {lrp.SMALL_BATCH} sequences per batch, else 0.95"),
            ("batch_size", "fixed: --batch-size"),
        )
    elif spec.lr_protocol == "fixed":
        warmup = max(1, int(round(spec.warmup_frac * steps)))
        lr, beta2 = spec.lr, 0.95
        hparams = (
            ("lr", "fixed: --lr for every run"),
            ("warmup", f"fixed: {spec.warmup_frac:g} of the run"),
            ("beta2", "fixed: 0.95"),
            ("batch_size", "fixed: --batch-size"),
        )
    else:
        warmup = lrp.porian_warmup(n, tokens_per_step, steps)
        lr, beta2 = None, lrp.porian_beta2(spec.batch_size)
        hparams = (
            ("lr", "pending: lr_opt(N) fitted to the lr search (lr_search/lr_search.json)"),
            ("warmup", "Porian et al. 2024: N tokens (at most a quarter of the run)"),
            ("beta2", f"Porian et al. 2024: 0.99 below {lrp.SMALL_BATCH} sequences per batch, else 0.95"),
            ("batch_size", "fixed: --batch-size"),
        )
    return PlannedRun(
        name=name,
        budget=float(budget),
        config=cfg,
        non_embedding=n,
        total=int(counts["total"]),
        train_flops_per_token=int(fpt),
        steps=steps,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        lr=lr,
        warmup=warmup,
        beta2=beta2,
        hparams=hparams,
    )


def isoflop_sizes(spec: LadderSpec, budget: float) -> list[float]:
    """Target N values for one budget: log-spaced over ``size_span`` around N_guess.

    N_guess solves C = 6·N·D with D = tokens_per_param·N, i.e. N = sqrt(C / (6·tokens_per_param)).
    """
    if spec.sizes:
        return sorted(spec.sizes)
    k = spec.sizes_per_budget
    centre = math.sqrt(budget / (6.0 * spec.tokens_per_param))
    lo = centre / math.sqrt(spec.size_span)
    return [lo * spec.size_span ** (i / (k - 1)) for i in range(k)]


def plan_ladder(spec: LadderSpec) -> list[PlannedRun]:
    """Expand a :class:`LadderSpec` into concrete runs (deterministic: same spec, same plan)."""
    if spec.plan not in PLANS:
        raise UserError(f"unknown plan {spec.plan!r}; choose isoflop or sizes")
    if spec.lr_protocol not in lrp.PROTOCOLS:
        raise UserError(f"unknown --lr-protocol {spec.lr_protocol!r}; choose {' or '.join(lrp.PROTOCOLS)}")
    if spec.lr_protocol == "search" and (len(set(spec.lr_grid)) < 3 or min(spec.lr_grid) <= 0):
        raise UserError(f"--lr-grid needs at least three distinct positive factors, got {list(spec.lr_grid)}")
    if not spec.lr > 0:
        raise UserError(f"--lr must be positive, got {spec.lr}")
    if spec.plan == "isoflop":
        if not spec.budgets:
            raise UserError("--plan isoflop needs --budgets")
        if not spec.sizes and not 3 <= spec.sizes_per_budget <= 15:
            raise UserError("--sizes-per-budget must be between 3 and 15")
    if spec.plan == "sizes" and (not spec.sizes or not spec.tokens):
        raise UserError("--plan sizes needs --sizes and --tokens")
    for label, values in (("budget", spec.budgets), ("size", spec.sizes), ("token budget", spec.tokens)):
        if any(not (v > 0 and math.isfinite(v)) for v in values):
            raise UserError(f"every {label} must be a positive number")
    if spec.plan == "isoflop" and not spec.sizes and not (spec.size_span > 1 and math.isfinite(spec.size_span)):
        raise UserError(f"--size-span is N_max/N_min within a budget and must be > 1, got {spec.size_span:g}")
    for flag, value in (
        ("--tokens-per-param", spec.tokens_per_param),
        ("--aspect-ratio", spec.aspect_ratio),
        ("--lr", spec.lr),
    ):
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"{flag} must be a positive number, got {value:g}")
    for flag, value in (
        ("--head-dim", spec.head_dim),
        ("--seq-len", spec.seq_len),
        ("--batch-size", spec.batch_size),
        ("--vocab-size", spec.vocab_size),
    ):
        if value < 1:
            raise UserError(f"{flag} must be a positive integer, got {value}")

    spec = _mup_spec(spec)
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    if spec.plan == "isoflop":
        for budget in sorted(spec.budgets):
            for n_target in isoflop_sizes(spec, budget):
                cfg = _config_for(spec, n_target)
                fpt = accounting.train_flops_per_token(cfg, spec.seq_len)
                n = accounting.param_counts(cfg)["non_embedding"]
                name = f"C{budget:.0e}-N{_size_name(n)}".replace("+", "")
                if name in seen:  # two targets rounded to the same config
                    continue
                seen.add(name)
                runs.append(_run(spec, cfg, budget / fpt, budget, name))
    else:
        for n_target in sorted(spec.sizes):
            cfg = _config_for(spec, n_target)
            n = accounting.param_counts(cfg)["non_embedding"]
            for d in sorted(spec.tokens):
                name = f"N{_size_name(n)}-D{d:.0e}".replace("+", "")
                if name in seen:
                    continue
                seen.add(name)
                fpt = accounting.train_flops_per_token(cfg, spec.seq_len)
                runs.append(_run(spec, cfg, d, d * fpt, name))
    return runs


def plan_lr_search(spec: LadderSpec, runs: Sequence[PlannedRun]) -> list[PlannedRun]:
    """The search runs of the ``search`` protocol (none under ``fixed``), trained before the ladder.

    The smallest budget's sizes (``lr_search_sizes`` of them, evenly spread in log N including the
    smallest and largest; 0 = all), each at every ``lr_grid`` factor × ``spec.lr``, with that budget's
    steps, warmup and β2. Names: ``lr_search/<ladder run>-lr<lr>`` (a sub-directory of the ladder).
    """
    if spec.lr_protocol != "search":
        return []
    budget = min(r.budget for r in runs)
    sizes = sorted((r for r in runs if r.budget == budget), key=lambda r: r.non_embedding)
    k = spec.lr_search_sizes
    if 0 < k < len(sizes):
        picks = sorted({round(i * (len(sizes) - 1) / max(k - 1, 1)) for i in range(k)})
        sizes = [sizes[i] for i in picks]
    out = []
    for r in sizes:
        for f in sorted(set(spec.lr_grid)):
            lr = spec.lr * f
            out.append(
                dataclasses.replace(
                    r,
                    name=f"{SEARCH_DIR}/{r.name}-lr{lr:.3g}".replace("+", ""),
                    lr=lr,
                    role="search",
                    hparams=tuple((k_, v) for k_, v in r.hparams if k_ != "lr")
                    + (("lr", f"search grid: {f:g} x {spec.lr:g}"),),
                )
            )
    return out


SEARCH_DIR = LR_SEARCH_DIR


def run_epochs(runs: Sequence[PlannedRun], train_tokens: int | None) -> list[float | None]:
    """Passes each run makes over a train split of ``train_tokens`` stream tokens (None: unknown)."""
    from scalinglab.data.prepared import epochs

    return [None if train_tokens is None else epochs(train_tokens, r.seq_len, r.batch_size, r.steps) for r in runs]


def plan_table(
    runs: Sequence[PlannedRun], flops_per_s: float | None = None, epochs: Sequence[float | None] | None = None
) -> str:
    """A readable table of the plan (N, N_total, D, C, tokens per parameter, estimated time, and
    the passes over the training data when ``epochs`` is known, one per run).

    Columns are as wide as their widest cell and separated by two spaces, so large counts
    (``144,787,136``) never run into their neighbours.
    """
    show_epochs = epochs is not None and len(epochs) == len(runs) and all(e is not None for e in epochs)
    head = (
        ["run", "N", "N_total", "D tokens", "C FLOPs", "D/N", "steps", "lr"]
        + (["epochs"] if show_epochs else [])
        + (["est. time"] if flops_per_s else [])
    )
    rows = []
    for i, r in enumerate(runs):
        row = [
            r.name,
            f"{r.non_embedding:,}",
            f"{r.total:,}",
            f"{r.tokens:.3g}",
            f"{r.flops:.3g}",
            f"{r.tokens / r.non_embedding:.1f}",
            str(r.steps),
            "search" if r.lr is None else f"{r.lr:.3g}",
        ]
        if show_epochs:
            row.append(f"{epochs[i]:.2f}")
        if flops_per_s:
            row.append(format_seconds(r.flops / flops_per_s))
        rows.append(row)
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:  # the run name left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(row) for row in rows]
    total = sum(r.flops for r in runs)
    foot = f"{len(runs)} runs, {total:.3g} training FLOPs in all"
    if flops_per_s:
        foot += f", about {format_seconds(total / flops_per_s)} at {flops_per_s:.3g} FLOP/s"
    lines.append(foot)
    if show_epochs and max(epochs) > 1:
        lines.append(
            f"{sum(e > 1 for e in epochs)} of {len(runs)} runs read the training data more than once "
            f"(up to {max(epochs):.2f} epochs)"
        )
    return "\n".join(lines)


def format_seconds(s: float) -> str:
    """Seconds as a short human string (``42s``, ``3m10s``, ``2h05m``)."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int((s % 3600) // 60):02d}m"


@dataclasses.dataclass(frozen=True)
class LadderPreset:
    """A ladder sized for a machine: the spec, how its runs execute there, and what we assume
    to estimate its wall time. ``dtype``, ``mesh``, ``remat`` and ``grad_accum`` are applied to
    every run (:meth:`train_kwargs`); ``topology`` is the TPU slice ``scalinglab aot`` checks."""

    description: str
    spec: LadderSpec
    peak_flops_per_s: float  # the hardware's dense peak (bf16 on accelerators), FLOP/s
    assumed_mfu: float  # model FLOPs utilisation used for the time estimate
    dtype: str = "bfloat16"
    mesh: dict[str, int] | None = None  # None: every device on ``data``
    remat: str = "none"
    grad_accum: int = 1
    topology: str | None = None  # e.g. "v4-32"; None for GPU presets
    chips: int = 1  # accelerator devices the runs are spread over
    device_memory_bytes: int = 0  # memory of one device (HBM), bytes

    def estimated_seconds(self, runs: Sequence[PlannedRun]) -> float:
        return sum(r.flops for r in runs) / (self.peak_flops_per_s * self.assumed_mfu)

    def train_kwargs(self) -> dict[str, Any]:
        """The TrainConfig fields this preset sets on every run."""
        return {
            "dtype": self.dtype,
            "mesh": dict(self.mesh) if self.mesh else None,
            "remat": self.remat,
            "grad_accum": self.grad_accum,
        }


def _accel_spec(budgets: tuple[float, ...], seq_len: int, batch: int) -> LadderSpec:
    return LadderSpec(
        plan="isoflop",
        budgets=budgets,
        family="modern",
        sizes_per_budget=7,
        size_span=32.0,
        aspect_ratio=64.0,
        head_dim=64,
        seq_len=seq_len,
        batch_size=batch,
        vocab_size=32000,
        lr=1e-3,
        tokens_per_param=20.0,
    )


# Peaks: H100 SXM 989 TFLOP/s dense bf16; TPU v4 275 TFLOP/s per chip (v4-32 = 16 chips);
# TPU v5e 197 TFLOP/s per chip (v5litepod-16 = 16 chips). MFU 0.4 is a typical well-tuned value.
# Memory: f32 weights + AdamW moments are 12 bytes per parameter (36 GB for tpu-v4-32's largest run);
# the TPU presets shard them over every chip (fsdp), keep only block inputs (remat full) and split
# the batch into microbatches so the T×T attention scores of one microbatch stay small; checked with
# `scalinglab aot --ladder-preset NAME --largest` (numbers in the README's accelerator section).
LADDER_PRESETS: dict[str, LadderPreset] = {
    "gpu-h100": LadderPreset(
        "one H100: 3 budgets × 7 sizes, ~1e17–1e18 FLOPs per run",
        _accel_spec((1e17, 3e17, 1e18), 1024, 128),
        989e12,
        0.4,
        mesh={"data": 1},
        remat="full",
        grad_accum=2,
        device_memory_bytes=80 * 10**9,  # H100 SXM: 80 GB HBM3
    ),
    "tpu-v4-32": LadderPreset(
        "Cloud TPU v4-32 slice (16 chips): 3 budgets × 7 sizes, 3e18–3e19 FLOPs per run",
        _accel_spec((3e18, 1e19, 3e19), 2048, 512),
        16 * 275e12,
        0.4,
        mesh={"fsdp": 16},
        remat="full",
        # aot of the largest run: 21.67 GiB of 32 per chip; with 8 microbatches the compiler refuses it
        # (31.23 GiB of temporaries alone)
        grad_accum=16,
        topology="v4-32",
        chips=16,
        device_memory_bytes=32 * 2**30,
    ),
    "tpu-v5e-16": LadderPreset(
        "Cloud TPU v5e-16 slice (16 chips): 3 budgets × 7 sizes, 1e18–1e19 FLOPs per run",
        _accel_spec((1e18, 3e18, 1e19), 2048, 256),
        16 * 197e12,
        0.4,
        mesh={"fsdp": 16},
        remat="full",
        grad_accum=4,
        topology="v5litepod-16",
        chips=16,
        device_memory_bytes=16 * 2**30,
    ),
}
