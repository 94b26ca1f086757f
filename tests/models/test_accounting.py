"""Parameter and FLOP accounting against published counts, the real model's leaves, and its jaxpr."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from scalinglab.errors import UserError
from scalinglab.models import accounting
from scalinglab.models.config import PRESETS, ModelConfig, get_config
from scalinglab.models.jaxpr_flops import jaxpr_flops

CONFIGS = {
    "gpt2-tiny": get_config("gpt2-tiny"),
    "gpt2_wide_ff": ModelConfig("gpt2", n_layer=3, d_model=48, n_head=3, d_ff=100, n_ctx=40, vocab_size=101),
    "modern_gqa_untied": get_config("modern-tiny"),
    "modern_mqa_tied": ModelConfig(
        "modern", n_layer=2, d_model=64, n_head=8, n_kv_head=1, n_ctx=32, vocab_size=99, tie_embeddings=True
    ),
    "modern_mha_untied": ModelConfig("modern", n_layer=3, d_model=32, n_head=2, d_ff=72, n_ctx=24, vocab_size=50),
    "gpt2_untied": ModelConfig("gpt2", n_layer=1, d_model=32, n_head=4, n_ctx=16, vocab_size=64, tie_embeddings=False),
}


def _leaf_groups(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of the real (abstract) model, grouped by leaf path — no accounting formulas involved."""
    state = nnx.state(nnx.eval_shape(lambda: _build(cfg)), nnx.Param)
    groups = dict.fromkeys(("token_embedding", "position_embedding", "attention", "mlp", "norms", "biases", "head"), 0)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        keys = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
        if keys.startswith("wte"):
            g = "token_embedding"
        elif keys.startswith("wpe"):
            g = "position_embedding"
        elif keys.startswith("lm_head"):
            g = "head"
        elif re.search(r"ln_(1|2|f)", keys):
            g = "norms"
        elif keys.endswith("bias"):
            g = "biases"
        elif "/attn/" in keys:
            g = "attention"
        elif "/mlp/" in keys:
            g = "mlp"
        else:
            raise AssertionError(f"unclassified parameter {keys}")
        groups[g] += leaf.size
    return groups


def _build(cfg):
    from scalinglab.models.transformer import Transformer

    return Transformer(cfg, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- parameters
def test_gpt2_small_published_count():
    counts = accounting.param_counts(get_config("gpt2-small"))
    assert counts["total"] == 124_439_808  # Radford et al. 2019 / the released checkpoint
    assert counts["non_embedding"] == 124_439_808 - 50257 * 768 - 1024 * 768
    assert counts["embedding"] == 50257 * 768 + 1024 * 768
    assert counts["closed_form_12Ld2"] == 12 * 12 * 768**2
    assert counts["gap_vs_12Ld2"] == counts["non_embedding"] - 12 * 12 * 768**2
    state = nnx.state(nnx.eval_shape(lambda: _build(get_config("gpt2-small"))), nnx.Param)
    assert accounting.count_params(state) == 124_439_808


@pytest.mark.parametrize("name", ["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_gpt2_presets_closed_form(name):
    """GPT-2 per block: 12·d² weights + 13·d biases/norm params; plus final LayerNorm 2d and the tables."""
    cfg = get_config(name)
    d, L = cfg.d_model, cfg.n_layer
    expected = cfg.vocab_size * d + cfg.n_ctx * d + L * (12 * d * d + 13 * d) + 2 * d
    assert accounting.param_counts(cfg)["total"] == expected
    assert accounting.param_counts(cfg)["non_embedding"] == L * (12 * d * d + 13 * d) + 2 * d


@pytest.mark.parametrize("name", sorted(CONFIGS) + ["modern-small"])
def test_param_groups_match_model_leaves(name):
    cfg = CONFIGS.get(name) or get_config(name)
    counts = accounting.param_counts(cfg)
    leaves = _leaf_groups(cfg)
    assert counts["by_group"] == leaves
    assert counts["total"] == sum(leaves.values())
    assert counts["total"] == counts["embedding"] + counts["head"] + counts["non_embedding"]
    assert (
        counts["non_embedding"]
        == counts["total"] - leaves["token_embedding"] - leaves["position_embedding"] - leaves["head"]
    )
    assert counts["non_embedding_with_head"] == counts["non_embedding"] + leaves["head"]
    assert (counts["head"] == 0) == cfg.tied


def test_every_preset_counts_consistently():
    for name in PRESETS:
        c = accounting.param_counts(get_config(name))
        assert c["total"] == sum(c["by_group"].values())
        assert all(isinstance(v, int) for v in c["by_group"].values())


# ---------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matmul_exact_equals_jaxpr_count(name):
    cfg = CONFIGS[name]
    for seq_len in sorted({1, 7, cfg.n_ctx}):
        exact = accounting.forward_flops_per_token(cfg, seq_len)["matmul_exact"]
        assert isinstance(exact, int)
        assert accounting.model_jaxpr_flops_per_token(cfg, seq_len) == exact


def test_matmul_exact_equals_jaxpr_count_gpt2_small_full_context():
    cfg = get_config("gpt2-small")
    exact = accounting.forward_flops_per_token(cfg, 1024)["matmul_exact"]
    assert accounting.model_jaxpr_flops_per_token(cfg, 1024) == exact


@pytest.mark.parametrize("name", ["gpt2-tiny", "modern_mqa_tied"])
def test_training_flops_are_three_forwards_from_the_grad_jaxpr(name):
    """The jaxpr of value_and_grad(cross-entropy) holds exactly 3× the forward matmul FLOPs."""
    cfg = CONFIGS[name]
    graphdef, state = accounting.abstract_model(cfg)
    B, T = 2, 16

    def loss(state, tokens):
        logits = nnx.merge(graphdef, state)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    flops = jaxpr_flops(jax.value_and_grad(loss), state, jax.ShapeDtypeStruct((B, T + 1), jnp.int32))
    assert flops == B * T * accounting.train_flops_per_token(cfg, T)


def test_kaplan_close_for_wide_short_context_and_gap_grows_with_context():
    wide = ModelConfig("gpt2", n_layer=4, d_model=1024, n_head=16, n_ctx=2048, vocab_size=257)
    f = accounting.forward_flops_per_token(wide, 32)
    assert abs(f["kaplan"] / f["matmul_exact"] - 1) < 0.02
    # The dropped term is the second half of the attention matmuls (2·L·T·d of the 4·L·T·d computed),
    # so the relative gap grows with n_ctx/d_model.
    gaps = []
    for ratio in (1 / 32, 1 / 8, 1 / 2, 2):
        f = accounting.forward_flops_per_token(wide, int(ratio * wide.d_model))
        gaps.append(f["matmul_exact"] / f["kaplan"] - 1)
    assert all(a < b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] > 0.1
    # the same at fixed context and shrinking width
    gaps_d = []
    for d in (1024, 256, 64):
        cfg = dataclasses.replace(wide, d_model=d, n_head=d // 64)
        f = accounting.forward_flops_per_token(cfg, 512)
        gaps_d.append(f["matmul_exact"] / f["kaplan"] - 1)
    assert all(a < b for a, b in zip(gaps_d, gaps_d[1:]))


def _chinchilla_paper(cfg: ModelConfig, seq: int) -> float:
    """Hoffmann et al. 2022 table A4 written per sequence (multi-head attention, 2-matrix MLP), then / seq."""
    d, V, L, ffw = cfg.d_model, cfg.vocab_size, cfg.n_layer, cfg.ff_dim
    key_size, heads = cfg.head_dim, cfg.n_head
    embeddings = 2 * seq * V * d
    kqv = 2 * 3 * seq * d * (key_size * heads)
    logits = 2 * seq * seq * (key_size * heads)
    softmax = 3 * heads * seq * seq
    reduction = 2 * seq * seq * (key_size * heads)
    project = 2 * seq * (key_size * heads) * d
    dense = 2 * seq * (d * ffw + d * ffw)
    final = 2 * seq * d * V
    total = embeddings + L * (kqv + logits + softmax + reduction + project + dense) + final
    return total / seq


@pytest.mark.parametrize("name", ["gpt2-small", "gpt2-xl", "gpt2-tiny"])
def test_chinchilla_matches_paper_formula(name):
    cfg = get_config(name)
    for seq in (64, cfg.n_ctx):
        assert accounting.forward_flops_per_token(cfg, seq)["chinchilla"] == _chinchilla_paper(cfg, seq)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_chinchilla_differs_from_matmul_exact_by_embeddings_and_softmax(name):
    """Chinchilla = the matmuls (same full T×T attention) + a 2·V·d embedding term + 3·heads·T softmax per layer."""
    cfg = CONFIGS[name]
    T = cfg.n_ctx
    f = accounting.forward_flops_per_token(cfg, T)
    assert f["chinchilla"] == f["matmul_exact"] + 2 * cfg.vocab_size * cfg.d_model + 3 * cfg.n_head * T * cfg.n_layer


def test_xla_cost_analysis_is_at_least_the_matmuls():
    cfg = get_config("gpt2-tiny")
    measured = accounting.measured_flops_per_token(cfg, 64, xla=True)
    if measured["xla"] is None:
        pytest.skip("backend gives no cost analysis")
    # XLA counts the same matmuls plus elementwise work (norms, GELU, softmax): a little more.
    assert measured["jaxpr"] <= measured["xla"] <= 1.25 * measured["jaxpr"]


def test_seq_len_validation():
    cfg = get_config("gpt2-tiny")
    with pytest.raises(UserError, match="n_ctx"):
        accounting.forward_flops_per_token(cfg, cfg.n_ctx + 1)
    with pytest.raises(UserError):
        accounting.train_flops_per_token(cfg, 0)
