"""The language-model loss: next-token cross-entropy in nats/token, plus PaLM's optional z-loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def make_lm_loss(graphdef: nnx.GraphDef, z_loss: float = 0.0):
    """``loss(params, tokens_BT1) -> (objective, cross_entropy)``: next-token CE in nats/token,
    objective = CE + z_loss·mean(logsumexp(logits)²) (PaLM's z-loss)."""

    def loss_fn(params, tokens_BT1):
        logits_BTV = nnx.merge(graphdef, params)(tokens_BT1[:, :-1])
        targets_BT = tokens_BT1[:, 1:]
        lse_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
        target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
        ce = jnp.mean(lse_BT - target_logit_BT)
        objective = ce + z_loss * jnp.mean(lse_BT**2) if z_loss else ce
        return objective, ce

    return loss_fn
