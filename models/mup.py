"""μP, the maximal-update parameterisation, for the ``modern`` family (pure functions of a config).

Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
Transfer" (μTransfer), Table 3 (Adam), as implemented by their ``mup`` package (``MuReadout``,
``MuAdamW``, attention scaled by 1/d in its Transformer example). With the width multiplier
m = d_model / ``mup_base_width`` (dimensionless; 1 at the base width):

* hidden matrices (attention q, k, v, o; MLP up, gate, down): init std ``init_std``·m^-1/2 (variance
  ∝ 1/fan_in, equal to the standard init at the base width); Adam learning rate lr/m, and the
  decoupled weight-decay coefficient ×m so that the decay per step lr·wd is unchanged (``MuAdamW``);
* token embedding, RMSNorm scales: init and learning rate unchanged (vector-like under Adam);
* output head: logits multiplied by 1/m (``MuReadout``: the head's input is divided by the width
  multiplier), init N(0, ``init_std``) and learning rate unchanged;
* attention logits: q·k / head_dim instead of q·k / sqrt(head_dim).

At the base width the model is the standard one except the attention scale (1/head_dim). The rules
cover width only: one multiplier m = d_model/base for every hidden matrix (d_ff follows d_model).
Depth is not transferred (the residual output projections keep GPT-2's 1/sqrt(2·n_layer) init).
Parameter counts and FLOPs do not change: μP rescales, it adds no parameter and no matmul.

The ``gpt2`` family (and any tied head) is not supported: a tied table would need the embedding's
and the readout's rules at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

SUPPORTED_FAMILIES = ("modern",)
HIDDEN = "hidden"  # optimizer group label of the hidden matrices (lr × 1/m)
VECTOR = "vector"  # everything else (lr × 1)


def enabled(cfg) -> bool:
    """Whether ``cfg`` (a ModelConfig) is in μP (``mup_base_width`` > 0)."""
    return bool(getattr(cfg, "mup_base_width", 0))


def width_multiplier(cfg) -> float:
    """m = d_model / mup_base_width; 1.0 under the standard parameterisation."""
    return cfg.d_model / cfg.mup_base_width if enabled(cfg) else 1.0


def hidden_init_scale(cfg) -> float:
    """Factor on the init std of every hidden matrix: m^-1/2 (1.0 under SP)."""
    return width_multiplier(cfg) ** -0.5


def output_multiplier(cfg) -> float | None:
    """Factor on the output head's input (so on the logits): 1/m under μP, None under SP."""
    return 1.0 / width_multiplier(cfg) if enabled(cfg) else None


def attention_scale(cfg) -> float | None:
    """Attention logit scale: 1/head_dim under μP, None (the default 1/sqrt(head_dim)) under SP."""
    return 1.0 / cfg.head_dim if enabled(cfg) else None


def _key(k: Any) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def is_hidden(path: Sequence[Any], leaf: Any) -> bool:
    """Whether a parameter (pytree key path, array) is a hidden matrix: a ``kernel`` inside ``blocks``."""
    names = [_key(k) for k in path]
    return bool(names) and names[0] == "blocks" and names[-1] == "kernel" and getattr(leaf, "ndim", 0) >= 2


def param_labels(params: Any) -> Any:
    """Pytree like ``params`` of optimizer group labels: :data:`HIDDEN` or :data:`VECTOR`."""
    return jax.tree_util.tree_map_with_path(lambda p, x: HIDDEN if is_hidden(p, x) else VECTOR, params)


def lr_factors(cfg) -> dict[str, float]:
    """Learning-rate factor per group label: hidden 1/m, vector 1."""
    return {HIDDEN: 1.0 / width_multiplier(cfg), VECTOR: 1.0}


def describe(cfg) -> str:
    """One line for logs and plans: the base width, m and what it scales."""
    m = width_multiplier(cfg)
    return (
        f"muP (Yang et al. 2022): base width {cfg.mup_base_width}, m = {m:g}; hidden matrices lr x {1 / m:.4g}, "
        f"init std x {m**-0.5:.4g}; logits x {1 / m:.4g}; attention 1/head_dim"
    )
