"""AdamW with the weight-decay mask: one update against a hand-written numpy AdamW."""

import jax
import numpy as np
import optax
from flax import nnx

from scalinglab.models import mup
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


def _mup_tree(rng):
    shapes = {"blocks": {0: {"attn": {"q": {"kernel": (4, 2, 3)}}}}, "wte": {"embedding": (5, 4)}, "lm_head": (4, 5)}
    shapes["ln_f"] = {"scale": (4,)}
    return jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes, is_leaf=lambda x: isinstance(x, tuple))


def test_mup_groups_match_numpy_muadamw():
    """Hidden matrices at lr·f with decay wd/f (decay per step lr·wd, as mup.MuAdamW); the rest at lr."""

    rng = np.random.default_rng(1)
    params, grads = _mup_tree(rng), _mup_tree(rng)
    lr, wd, b1, b2, eps, f = 0.1, 0.5, 0.9, 0.95, 1e-8, 0.25
    opt = make_optimizer(
        lr, weight_decay=wd, b1=b1, b2=b2, eps=eps, clip=0.0, lr_groups=(mup.param_labels, {"hidden": f, "vector": 1.0})
    )
    state = opt.init(params)
    p = params
    m = {k: np.zeros_like(v) for k, v in _flat(params).items()}
    v = {k: np.zeros_like(x) for k, x in _flat(params).items()}
    ref = dict(_flat(params))
    for t in (1, 2):  # two steps: the moments carry over
        updates, state = opt.update(grads, state, p)
        p = optax.apply_updates(p, updates)
        for k, g in _flat(grads).items():
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g**2
            adam = (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
            hidden = k.startswith("['blocks']")
            decayed = hidden or k == "['lm_head']"
            ref[k] = ref[k] - lr * ((f if hidden else 1.0) * adam + (wd * ref[k] if decayed else 0.0))
    for k, x in _flat(p).items():
        np.testing.assert_allclose(np.asarray(x), ref[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_unit_group_factors_are_plain_adamw():

    rng = np.random.default_rng(2)
    params, grads = _mup_tree(rng), _mup_tree(rng)
    plain = make_optimizer(0.05, weight_decay=0.1)
    grouped = make_optimizer(0.05, weight_decay=0.1, lr_groups=(mup.param_labels, {"hidden": 1.0, "vector": 1.0}))
    u1, _ = plain.update(grads, plain.init(params), params)
    u2, _ = grouped.update(grads, grouped.init(params), params)
    for k, x in _flat(u1).items():
        np.testing.assert_allclose(np.asarray(_flat(u2)[k]), np.asarray(x), rtol=1e-6, err_msg=k)
