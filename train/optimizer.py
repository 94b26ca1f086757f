"""The optimizer: global-norm clipping followed by optax AdamW with a weight-decay mask.

Weight decay (decoupled, scaled by the learning rate as in optax.adamw) applies only
to matrices: parameters with ndim ≥ 2 whose path names no embedding table. Norm
scales, biases and the token/position embeddings are not decayed; an untied output
head is a matrix and is decayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import optax

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


def make_optimizer(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    clip: float = 1.0,
    decay_embeddings: bool = False,
) -> optax.GradientTransformation:
    """Clip by global norm (``clip`` > 0) then AdamW with decoupled, masked weight decay."""
    mask = (lambda p: decay_mask(p, embedding_keys=())) if decay_embeddings else decay_mask
    adamw = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    if clip and clip > 0:
        return optax.chain(optax.clip_by_global_norm(clip), adamw)
    return adamw


def optimizer_from_config(cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer of a :class:`scalinglab.train.config.TrainConfig`."""
    return make_optimizer(
        schedule, weight_decay=cfg.weight_decay, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, clip=cfg.clip
    )
