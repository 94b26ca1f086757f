"""Model configs for scaling ladders: a target size (or depth) at a given shape.

:func:`ladder_config` turns "a ``family`` model with about N non-embedding parameters and
d_model/n_layer ≈ ``aspect_ratio``" into the nearest buildable :class:`ModelConfig`:

* ``head_dim`` is fixed (default 16, small enough for CPU-sized models), so
  ``n_head = d_model / head_dim`` always divides d_model; d_model is a multiple of
  ``head_dim`` (times ``query_groups`` for grouped-query attention).
* For every depth L the width d_L is the allowed width whose *exact* non-embedding N
  (:func:`scalinglab.models.accounting.param_counts`) is closest to the target in log.
  Among the depths whose d_L/L lies within a factor ``aspect_tolerance`` (default 2) of
  ``aspect_ratio``, the one whose N is closest to the target wins (ties: the closer
  shape). Kaplan et al. (2020) found loss within ~1% over aspect ratios 20–200, so the
  size is matched first and the shape only kept in band. When no depth is in the band
  (targets below one layer of the asked shape), the closest shape wins.
* With ``n_layer`` given, the depth is fixed: the width matches ``n_non_embedding`` if
  given, else d_model ≈ aspect_ratio · n_layer.

Default aspect ratio 32 (d_model = 32·n_layer): tiny CPU ladders, where Kaplan et al.
(2020) found loss nearly flat for d_model/n_layer between ~20 and ~200; GPT-2 small is 64.
"""

from __future__ import annotations

import math

from scalinglab.errors import UserError
from scalinglab.models.accounting import param_counts
from scalinglab.models.config import FAMILIES, ModelConfig, swiglu_hidden

DEFAULT_ASPECT_RATIO = 32.0
DEFAULT_HEAD_DIM = 16
DEFAULT_ASPECT_TOLERANCE = 2.0  # accept d_model/n_layer within a factor 2 of the asked ratio
SWIGLU_MULTIPLE = 16  # ladder SwiGLU widths: 8/3·d_model rounded up to a multiple of 16

_MAX_LAYERS = 512


def _make(
    family: str, n_layer: int, d_model: int, head_dim: int, query_groups: int, n_ctx: int, vocab_size: int
) -> ModelConfig:
    n_head = d_model // head_dim
    return ModelConfig(
        family=family,
        n_layer=n_layer,
        d_model=d_model,
        n_head=n_head,
        n_kv_head=n_head // query_groups,
        d_ff=4 * d_model if family == "gpt2" else swiglu_hidden(d_model, SWIGLU_MULTIPLE),
        n_ctx=n_ctx,
        vocab_size=vocab_size,
    )


def _n(cfg: ModelConfig) -> int:
    return param_counts(cfg)["non_embedding"]


def _best_width(make, n_layer: int, step: int, target: float) -> ModelConfig:
    """Config at depth ``n_layer`` whose non-embedding N is nearest ``target`` in log (width = k·step)."""
    lo, hi = 1, 1
    while _n(make(n_layer, hi * step)) < target:  # N grows monotonically with width
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _n(make(n_layer, mid * step)) < target:
            lo = mid
        else:
            hi = mid
    cands = [make(n_layer, k * step) for k in {lo, hi}]
    return min(cands, key=lambda c: abs(math.log(_n(c) / target)))


def ladder_config(
    family: str,
    *,
    n_non_embedding: float | None = None,
    n_layer: int | None = None,
    aspect_ratio: float = DEFAULT_ASPECT_RATIO,
    head_dim: int = DEFAULT_HEAD_DIM,
    n_ctx: int = 256,
    vocab_size: int = 257,
    query_groups: int = 1,
    aspect_tolerance: float = DEFAULT_ASPECT_TOLERANCE,
) -> ModelConfig:
    """Nearest valid config to a target non-embedding size and/or depth.

    Args:
      family: ``gpt2`` or ``modern``.
      n_non_embedding: target Kaplan N (parameters); required unless ``n_layer`` is given.
      n_layer: fixed depth (then the width follows N, or the aspect ratio if N is None).
      aspect_ratio: wanted d_model / n_layer.
      head_dim: fixed attention head width; n_head = d_model / head_dim.
      n_ctx, vocab_size: passed through (N does not depend on them).
      query_groups: query heads per kv head (modern family GQA); 1 = multi-head.
      aspect_tolerance: depths whose d_model/n_layer is within this factor of
        ``aspect_ratio`` are candidates; the one matching N best wins.
    """
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    if n_non_embedding is None and n_layer is None:
        raise UserError("ladder_config needs a target n_non_embedding or an n_layer")
    if n_non_embedding is not None and not n_non_embedding > 0:
        raise UserError(f"target non-embedding size must be positive, got {n_non_embedding}")
    if n_layer is not None and int(n_layer) < 1:
        raise UserError(f"n_layer must be positive, got {n_layer}")
    if not aspect_ratio > 0:
        raise UserError(f"aspect ratio d_model/n_layer must be positive, got {aspect_ratio}")
    if not aspect_tolerance >= 1:
        raise UserError(f"aspect tolerance must be ≥ 1, got {aspect_tolerance}")
    if head_dim < 1 or (family == "modern" and head_dim % 2):
        raise UserError(f"head_dim must be positive (and even for RoPE), got {head_dim}")
    if query_groups < 1 or (family == "gpt2" and query_groups != 1):
        raise UserError(f"query_groups must be 1 for gpt2 and ≥ 1 for modern, got {query_groups}")

    step = head_dim * query_groups  # d_model granularity: whole kv groups of whole heads

    def make(L: int, d: int) -> ModelConfig:
        return _make(family, L, d, head_dim, query_groups, n_ctx, vocab_size)

    if n_non_embedding is None:
        L = int(n_layer)
        return make(L, step * max(1, round(aspect_ratio * L / step)))
    target = float(n_non_embedding)
    if n_layer is not None:
        return _best_width(make, int(n_layer), step, target)

    # Every depth with its N-matching width, until d_L/L falls below the tolerated band.
    candidates = []
    for L in range(1, _MAX_LAYERS + 1):
        cfg = _best_width(make, L, step, target)
        candidates.append(cfg)
        if cfg.d_model / L < aspect_ratio / aspect_tolerance:
            break

    def shape_err(c: ModelConfig) -> float:
        return abs(math.log(c.d_model / c.n_layer / aspect_ratio))

    def size_err(c: ModelConfig) -> float:
        return abs(math.log(_n(c) / target))

    in_band = [c for c in candidates if shape_err(c) <= math.log(aspect_tolerance) + 1e-12]
    if not in_band:  # tiny targets: even one layer is off the band; take the closest shape
        return min(candidates, key=lambda c: (shape_err(c), size_err(c)))
    return min(in_band, key=lambda c: (size_err(c), shape_err(c)))


def log_spaced_sizes(n_min: float, n_max: float, k: int) -> list[float]:
    """``k`` target sizes spaced evenly in log N from ``n_min`` to ``n_max`` (inclusive)."""
    if k < 1:
        raise UserError(f"number of ladder sizes must be ≥ 1, got {k}")
    if not 0 < n_min <= n_max:
        raise UserError(f"ladder sizes need 0 < n_min ≤ n_max, got {n_min}, {n_max}")
    if k == 1:
        return [math.sqrt(n_min * n_max)]
    r = math.log(n_max / n_min) / (k - 1)
    return [n_min * math.exp(i * r) for i in range(k)]


def ladder_configs(family: str, n_min: float, n_max: float, k: int, **kwargs) -> list[ModelConfig]:
    """Configs for ``k`` sizes log-spaced between ``n_min`` and ``n_max`` (non-embedding N).

    Distinct targets can round to the same config at small sizes; duplicates are
    removed, so fewer than ``k`` configs may come back (in increasing N).
    """
    out: list[ModelConfig] = []
    for n in log_spaced_sizes(n_min, n_max, k):
        cfg = ladder_config(family, n_non_embedding=n, **kwargs)
        if cfg not in out:
            out.append(cfg)
    return sorted(out, key=_n)


__all__ = [
    "ladder_config",
    "ladder_configs",
    "log_spaced_sizes",
    "DEFAULT_ASPECT_RATIO",
    "DEFAULT_ASPECT_TOLERANCE",
    "DEFAULT_HEAD_DIM",
]
