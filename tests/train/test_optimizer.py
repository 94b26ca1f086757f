"""AdamW with the weight-decay mask: one update against a hand-written numpy AdamW."""

import jax
import numpy as np
from flax import nnx

from scalinglab.models.config import get_config
from scalinglab.models.transformer import Transformer
from scalinglab.train.optimizer import decay_mask, make_optimizer


def _flat(tree):
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_mask_decays_matrices_only():
    for preset in ("gpt2-tiny", "modern-tiny"):
        params = nnx.to_pure_dict(nnx.state(Transformer(get_config(preset), rngs=nnx.Rngs(0)), nnx.Param))
        mask = _flat(decay_mask(params))
        decayed = {k for k, v in mask.items() if v}
        assert all("kernel" in k or "lm_head" in k for k in decayed), decayed
        assert not any("wte" in k or "wpe" in k or "bias" in k or "scale" in k for k in decayed)
        n_kernels = sum("kernel" in k for k in mask)
        assert len(decayed) == n_kernels + (preset == "modern-tiny")  # untied head decayed


def test_one_adamw_step_matches_numpy():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)).astype(np.float32), "bias": rng.normal(size=4).astype(np.float32)}
    grads = {"w": rng.normal(size=(3, 4)).astype(np.float32), "bias": rng.normal(size=4).astype(np.float32)}
    lr, wd, b1, b2, eps, clip = 0.1, 0.5, 0.9, 0.95, 1e-8, 1.0
    opt = make_optimizer(lr, weight_decay=wd, b1=b1, b2=b2, eps=eps, clip=clip)
    state = opt.init(params)
    updates, _ = opt.update(grads, state, params)
    norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    for k, p in params.items():
        g = grads[k] * min(1.0, clip / norm)
        m_hat = (1 - b1) * g / (1 - b1)
        v_hat = (1 - b2) * g**2 / (1 - b2)
        expected = -lr * (m_hat / (np.sqrt(v_hat) + eps) + (wd * p if k == "w" else 0.0))
        np.testing.assert_allclose(np.asarray(updates[k]), expected, rtol=1e-5, atol=1e-7)
