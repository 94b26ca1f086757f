"""The optimizer: global-norm clipping followed by optax AdamW with a weight-decay mask.

Weight decay (decoupled, scaled by the learning rate as in optax.adamw) applies only
to matrices: parameters with ndim ≥ 2 whose path names no embedding table. Norm
scales, biases and the token/position embeddings are not decayed; an untied output
head is a matrix and is decayed.

Per-group learning rates (μP, :mod:`scalinglab.models.mup`): ``lr_groups`` = (labels, factors) scales
the Adam direction of group g by ``factors[g]`` before the weight decay is added, i.e. group g trains at
``factors[g]`` × the learning rate with weight decay ``weight_decay / factors[g]``: the decay per step,
lr·wd, is the same in every group, as ``mup.MuAdamW`` (Yang et al. 2022) does. It is optax.adamw's own
chain (scale_by_adam, add_decayed_weights, scale_by_learning_rate) with one stateless step inserted, so
the optimizer state has the same param-shaped leaves as plain AdamW (``optax.partition`` would hold
``MaskedNode`` placeholders there, which ``optax.tree_map_params`` cannot map to shardings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from scalinglab.models import mup

# Substrings of a parameter path that mark an embedding table (token or position).
EMBEDDING_KEYS: tuple[str, ...] = ("embed", "wte", "wpe", "pos_emb", "tok_emb")
# Leaf names that are never decayed whatever their rank (attention biases are [heads, head_dim]).
NO_DECAY_LEAVES: tuple[str, ...] = ("bias", "scale")


def _path_str(path: Sequence[Any]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def is_embedding_path(path: Sequence[Any], embedding_keys: Sequence[str] = EMBEDDING_KEYS) -> bool:
    """Whether a pytree key path names an embedding table."""
    s = _path_str(path).lower()
    return any(k in s for k in embedding_keys)


def _leaf_name(path: Sequence[Any]) -> str:
    return _path_str(path[-1:]).lower() if path else ""


def decay_mask(params: Any, embedding_keys: Sequence[str] = EMBEDDING_KEYS) -> Any:
    """Pytree of bools like ``params``: True where weight decay applies (matrices, not embeddings)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: bool(
            p.ndim >= 2 and _leaf_name(path) not in NO_DECAY_LEAVES and not is_embedding_path(path, embedding_keys)
        ),
        params,
    )


def scale_by_group(labels: Callable[[Any], Any], factors: Mapping[str, float]) -> optax.GradientTransformation:
    """Stateless: multiply each update leaf by ``factors[label]``, its label from ``labels(updates)``."""

    def update(updates, state, params=None):
        del params
        scaled = jax.tree.map(lambda u, g: u * factors[g], updates, labels(updates))
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    clip: float = 1.0,
    decay_embeddings: bool = False,
    lr_groups: tuple[Callable[[Any], Any], Mapping[str, float]] | None = None,
) -> optax.GradientTransformation:
    """Clip by global norm (``clip`` > 0) then AdamW with decoupled, masked weight decay.

    ``lr_groups``: (params -> pytree of group labels, {label: learning-rate factor}); None: one group.
    """
    mask = (lambda p: decay_mask(p, embedding_keys=())) if decay_embeddings else decay_mask

    if lr_groups is None:
        adamw = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    else:
        adamw = optax.chain(
            optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
            scale_by_group(*lr_groups),
            optax.add_decayed_weights(weight_decay, mask),
            optax.scale_by_learning_rate(learning_rate),
        )
    if clip and clip > 0:
        return optax.chain(optax.clip_by_global_norm(clip), adamw)
    return adamw


def optimizer_from_config(cfg, schedule: optax.Schedule, model_cfg=None) -> optax.GradientTransformation:
    """The optimizer of a :class:`scalinglab.train.config.TrainConfig`; per-group learning rates when
    ``model_cfg`` (a ModelConfig) is in μP."""
    lr_groups = (
        (mup.param_labels, mup.lr_factors(model_cfg)) if model_cfg is not None and mup.enabled(model_cfg) else None
    )
    return make_optimizer(
        schedule,
        weight_decay=cfg.weight_decay,
        b1=cfg.beta1,
        b2=cfg.beta2,
        eps=cfg.eps,
        clip=cfg.clip,
        lr_groups=lr_groups,
    )
