"""Hyperparameters per model size in a ladder: learning-rate protocols, β2 and warmup (pure logic).

Protocols (``LadderSpec.lr_protocol``):

* ``search`` (default): at the smallest budget, ``lr_search_sizes`` of its model sizes are each
  trained at every factor of ``lr_grid`` × ``lr``; the best learning rate of each size is the vertex
  of a parabola of final loss in log lr through the best grid point and its two neighbours (the grid
  minimum itself when it is at an edge, flagged), and a power law lr_opt(N) = A·N^k fitted to them
  sets the learning rate of every ladder run (Porian et al. 2024 tune the learning rate per size and
  fit such laws; a single lr for a 100× range of N biases the compute-optimal exponent).
* ``fixed``: ``lr`` for every run, warmup 5 % of each run and β2 0.95 (older papers' protocol:
  Kaplan et al. 2020, Hoffmann et al. 2022 used one lr schedule family across sizes).
* ``mup`` (``modern`` family only): every model in μP (Yang et al. 2022, :mod:`scalinglab.models.mup`)
  with base width ``mup_base_width`` (0: the smallest ladder model's d_model); ``lr`` is the base
  learning rate, tuned at the base width, and transfers: embeddings, head and norms train at ``lr``,
  hidden matrices at ``lr``·base/d_model. Width only: the ladder's depth grows too, and μP does not
  cover depth.

β2 and warmup under ``search`` and ``mup`` follow Porian et al. (2024): warmup as many tokens as the model
has parameters (their fix for the long fixed warmup that penalised small models), and a larger AdamW
β2 at small batches (they found the usual 0.95 clearly suboptimal there): 0.99 below
``SMALL_BATCH`` sequences, 0.95 above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling.powerlaw import fit_loglinear

PROTOCOLS = ("search", "fixed", "mup")
DEFAULT_LR_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)  # five factors, 2x apart, around LadderSpec.lr
SMALL_BATCH = 256  # sequences: below this, β2 = 0.99 (Porian et al. 2024)
FIXED_WARMUP_FRACTION = 0.05
MAX_WARMUP_FRACTION = 0.25  # warmup never takes more than this share of a run


def porian_beta2(batch_size: int) -> float:
    """AdamW β2 for a global batch of ``batch_size`` sequences."""
    return 0.99 if batch_size < SMALL_BATCH else 0.95


def porian_warmup(n_params: int, tokens_per_step: int, steps: int) -> int:
    """Warmup steps: N tokens (``n_params`` parameters), at least 1, at most a quarter of the run."""
    return int(min(max(1, math.ceil(n_params / tokens_per_step)), max(1, int(MAX_WARMUP_FRACTION * steps))))


def mup_lr_source(lr: float, base_width: int) -> str:
    """Where a μP run's learning rate comes from, in words (the same for every run of a ladder)."""
    b = base_width
    return (
        f"muP (Yang et al. 2022): base lr {lr:g} (--lr) at base width d_model={b}, transferred; hidden "
        f"matrices train at lr x {b}/d_model (init std x sqrt({b}/d_model), logits x {b}/d_model, "
        "attention 1/head_dim), embeddings, head and norms at lr"
    )


def fixed_warmup(steps: int) -> int:
    return max(1, int(round(FIXED_WARMUP_FRACTION * steps)))


def best_lr(losses: Mapping[float, float]) -> tuple[float, bool]:
    """(best learning rate, at_edge) from ``{lr: final loss}`` of one model size.

    Interior minimum: vertex of the parabola through (log lr, loss) of the best point and its two
    neighbours, kept inside that bracket. A minimum at the smallest or largest lr (or with a
    non-finite neighbour) is returned as is with ``at_edge`` True. UserError when no loss is finite.
    """
    lrs = sorted(lr for lr in losses)
    y = np.array([losses[lr] for lr in lrs], dtype=np.float64)
    y = np.where(np.isfinite(y), y, np.inf)
    if not np.isfinite(y).any():
        raise UserError("every run of the learning-rate search diverged (no finite final loss)")
    i = int(np.argmin(y))
    if i == 0 or i == len(lrs) - 1 or not (np.isfinite(y[i - 1]) and np.isfinite(y[i + 1])):
        return float(lrs[i]), True
    x = np.log(np.array(lrs[i - 1 : i + 2]))
    coef = np.polyfit(x, y[i - 1 : i + 2], 2)
    if coef[0] <= 0:
        return float(lrs[i]), False
    vertex = float(np.clip(-coef[1] / (2 * coef[0]), x[0], x[2]))
    return math.exp(vertex), False


def fit_lr_law(n_params: Sequence[float], lrs: Sequence[float]) -> dict[str, float]:
    """lr_opt(N) = A·N^k by least squares in log-log over the searched sizes; one size: k = 0."""
    n = np.asarray(n_params, dtype=np.float64)
    lr = np.asarray(lrs, dtype=np.float64)
    if len(n) == 0 or np.any(n <= 0) or np.any(lr <= 0):
        raise UserError("the learning-rate law needs positive sizes and learning rates")
    if len(np.unique(n)) < 2:
        return {"A": float(np.exp(np.mean(np.log(lr)))), "k": 0.0}
    icpt, slope = fit_loglinear(np.log(n), np.log(lr))
    return {"A": float(np.exp(icpt)), "k": float(slope)}


def lr_from_law(law: Mapping[str, float], n_params: float) -> float:
    return float(law["A"] * float(n_params) ** law["k"])
