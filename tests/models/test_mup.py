"""μP for the modern family: init, readout and attention scalings against a rescaled standard model,
accounting unchanged, unsupported families refused."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scalinglab.errors import UserError
from scalinglab.models import accounting, mup
from scalinglab.models.config import ModelConfig
from scalinglab.models.transformer import Transformer

BASE = 16
SP = ModelConfig("modern", 1, 64, 8, n_kv_head=4, n_ctx=16, vocab_size=40)  # head_dim 8, width m = 4
MUP = dataclasses.replace(SP, mup_base_width=BASE)


def _params(cfg, seed=0):
    return nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs=nnx.Rngs(params=seed)), nnx.Param))


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_init_hidden_std_scales_as_inverse_sqrt_width_rest_unchanged():
    sp, mp = _flat(_params(SP)), _flat(_params(MUP))  # same seed: the same normal draws, rescaled
    m = SP.d_model / BASE
    hidden = [k for k in sp if k.startswith("['blocks']") and "kernel" in k]
    assert len(hidden) == 7  # q, k, v, o, up, gate, down
    for k in sp:
        ratio = (m**-0.5) if k in hidden else 1.0
        np.testing.assert_allclose(mp[k], sp[k] * ratio, rtol=1e-6, atol=0, err_msg=k)


def test_forward_equals_standard_model_with_rescaled_head_and_queries():
    """μP logits = h·W_head/m with attention q·k/head_dim: the same as the standard model (1/sqrt(head_dim))
    whose head is divided by m and whose query kernel is divided by sqrt(head_dim)."""
    params = _params(MUP, seed=1)
    m, hd = MUP.d_model / BASE, MUP.head_dim
    ref = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            x / m
            if jax.tree_util.keystr(p) == "['lm_head']"
            else (x / math.sqrt(hd) if "['q']" in jax.tree_util.keystr(p) else x)
        ),
        params,
    )
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, SP.vocab_size)
    g_mup, _ = nnx.split(Transformer(MUP, rngs=nnx.Rngs(0)))
    g_sp, _ = nnx.split(Transformer(SP, rngs=nnx.Rngs(0)))
    out_mup = nnx.merge(g_mup, params)(tokens)
    out_sp = nnx.merge(g_sp, ref)(tokens)
    out_plain = nnx.merge(g_sp, params)(tokens)
    np.testing.assert_allclose(np.asarray(out_mup), np.asarray(out_sp), rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(out_mup - out_plain))) > 1e-3  # the scalings do act


def test_base_width_model_is_the_standard_one_except_attention():
    at_base = dataclasses.replace(SP, mup_base_width=SP.d_model)
    assert mup.width_multiplier(at_base) == 1.0 and mup.hidden_init_scale(at_base) == 1.0
    assert mup.output_multiplier(at_base) == 1.0 and mup.attention_scale(at_base) == 1 / SP.head_dim
    assert mup.width_multiplier(SP) == 1.0 and mup.attention_scale(SP) is None and mup.output_multiplier(SP) is None
    assert mup.lr_factors(MUP) == {mup.HIDDEN: 0.25, mup.VECTOR: 1.0}


def test_labels_hidden_matrices_only():
    labels = _flat(mup.param_labels(_params(MUP)))
    hidden = {k for k, v in labels.items() if v == mup.HIDDEN}
    assert hidden == {k for k in labels if k.startswith("['blocks']") and "kernel" in k}
    assert labels["['wte']['embedding']"] == labels["['lm_head']"] == labels["['ln_f']['scale']"] == mup.VECTOR


def test_accounting_unchanged_by_mup():
    assert accounting.param_counts(MUP) == accounting.param_counts(SP)
    for T in (8, 16):
        assert accounting.forward_flops_per_token(MUP, T) == accounting.forward_flops_per_token(SP, T)
        assert accounting.train_flops_per_token(MUP, T) == accounting.train_flops_per_token(SP, T)
        exact = accounting.forward_flops_per_token(MUP, T)["matmul_exact"]
        assert accounting.model_jaxpr_flops_per_token(MUP, T) == exact  # no extra matmul in the μP forward


def test_config_contract_and_refusals():
    d = MUP.to_dict()
    assert d["mup_base_width"] == BASE and ModelConfig.from_dict(d) == MUP.resolved()
    assert "mup_base_width" not in SP.to_dict()  # standard configs read as before μP existed
    assert ModelConfig.from_dict(SP.to_dict()) == SP.resolved()
    with pytest.raises(UserError, match="modern family"):
        ModelConfig("gpt2", 2, 64, 4, n_ctx=16, vocab_size=40, mup_base_width=16)
    with pytest.raises(UserError, match="tied embeddings"):
        dataclasses.replace(MUP, tie_embeddings=True)
    with pytest.raises(UserError, match="mup_base_width"):
        dataclasses.replace(SP, mup_base_width=-1)
