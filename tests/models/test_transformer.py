"""The transformer against an independent float64 numpy implementation, causality, dtypes, sharding."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scalinglab.models import sharding
from scalinglab.models.config import ModelConfig
from scalinglab.models.transformer import Transformer

# Shared shapes keep XLA compilations (each new parameter shape compiles its initializer) few.
TINY = {
    "gpt2": ModelConfig("gpt2", n_layer=2, d_model=32, n_head=4, n_ctx=16, vocab_size=40),
    "modern_gqa": ModelConfig("modern", n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=48, n_ctx=16, vocab_size=40),
    "modern_mha_tied": ModelConfig(
        "modern", n_layer=2, d_model=32, n_head=4, d_ff=48, n_ctx=16, vocab_size=40, tie_embeddings=True
    ),
}

_forward = nnx.jit(lambda model, tokens_BT: model(tokens_BT))


# ---------------------------------------------------------------- numpy reference (float64)
def _layernorm(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _rmsnorm(x, p, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p["scale"]


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _rope_complex(x_TNH, theta):
    """Rotary embedding as complex multiplication of (x_j, x_{j+H/2}) by exp(i·t·theta^(-2j/H))."""
    T, _, H = x_TNH.shape
    half = H // 2
    z = x_TNH[..., :half] + 1j * x_TNH[..., half:]
    freqs = theta ** (-np.arange(half) / half)
    z = z * np.exp(1j * np.arange(T)[:, None, None] * freqs[None, None, :])
    return np.concatenate([z.real, z.imag], axis=-1)


def _proj(x, p, spec):
    y = np.einsum(spec, x, p["kernel"])
    return y + p["bias"] if "bias" in p else y


def numpy_forward(cfg: ModelConfig, params: dict, tokens_T: np.ndarray) -> np.ndarray:
    """Decoder forward pass for one sequence in float64, written from the architecture description."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    T = len(tokens_T)
    norm = _layernorm if cfg.family == "gpt2" else _rmsnorm
    x = p["wte"]["embedding"][tokens_T]
    if cfg.family == "gpt2":
        x = x + p["wpe"]["embedding"][:T]
    group = cfg.n_head // cfg.kv_heads
    causal = np.tril(np.ones((T, T), bool))
    for i in range(cfg.n_layer):
        b = p["blocks"][i]
        h = norm(x, b["ln_1"], cfg.norm_eps)
        q = _proj(h, b["attn"]["q"], "td,dnh->tnh")
        k = _proj(h, b["attn"]["k"], "td,dnh->tnh")
        v = _proj(h, b["attn"]["v"], "td,dnh->tnh")
        if cfg.family == "modern":
            q, k = _rope_complex(q, cfg.rope_theta), _rope_complex(k, cfg.rope_theta)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # kv head of query head n: n // group
        s = np.einsum("tnh,snh->nts", q, k) / math.sqrt(cfg.head_dim)
        s = np.where(causal[None], s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        o = np.einsum("nts,snh->tnh", a, v)
        x = x + _proj(o, b["attn"]["o"], "tnh,nhd->td")
        h = norm(x, b["ln_2"], cfg.norm_eps)
        m = b["mlp"]
        if cfg.family == "gpt2":
            u = _gelu_tanh(_proj(h, m["up"], "td,df->tf"))
        else:
            g = _proj(h, m["gate"], "td,df->tf")
            u = g / (1 + np.exp(-g)) * _proj(h, m["up"], "td,df->tf")
        x = x + _proj(u, m["down"], "tf,fd->td")
    h = norm(x, p["ln_f"], cfg.norm_eps)
    head = p["wte"]["embedding"].T if cfg.tied else p["lm_head"]
    return h @ head


def _model(cfg, seed=0, **kw):
    return Transformer(cfg, rngs=nnx.Rngs(seed), **kw)


def _tokens(cfg, B, T, seed=1):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, cfg.vocab_size, dtype=jnp.int32)


def _randomize(model, seed=3):
    """Give every parameter (biases, norm scales included) random values so each one matters."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)  # numpy: no XLA compilation per parameter shape
    new = [jnp.asarray(0.3 * rng.standard_normal(x.shape) + (1.0 if x.ndim == 1 else 0.0), x.dtype) for x in leaves]
    nnx.update(model, jax.tree.unflatten(treedef, new))


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_matches_numpy_reference(name):
    cfg = TINY[name]
    model = _model(cfg)
    _randomize(model)
    tokens = _tokens(cfg, 2, cfg.n_ctx)
    logits = np.asarray(_forward(model, tokens))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for b in range(2):
        ref = numpy_forward(cfg, params, np.asarray(tokens[b]))
        np.testing.assert_allclose(logits[b], ref, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("name", ["gpt2", "modern_gqa"])
def test_causality(name):
    """Changing token t+1 never changes logits at positions ≤ t (but does change later ones)."""
    cfg = TINY[name]
    model = _model(cfg)
    _randomize(model)
    fwd = lambda t: _forward(model, t)  # noqa: E731
    base = _tokens(cfg, 1, cfg.n_ctx)
    ref = np.asarray(fwd(base))
    for t in (0, 5, cfg.n_ctx - 2):
        changed = base.at[0, t + 1].set((base[0, t + 1] + 1) % cfg.vocab_size)
        out = np.asarray(fwd(changed))
        np.testing.assert_array_equal(out[0, : t + 1], ref[0, : t + 1])
        assert np.abs(out[0, t + 1] - ref[0, t + 1]).max() > 1e-4


def test_dtypes_params_f32_logits_f32_under_bf16():
    cfg = TINY["modern_gqa"]
    model = _model(cfg, dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    tokens = _tokens(cfg, 2, 8)
    logits = _forward(model, tokens)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 8, cfg.vocab_size)
    ref = _forward(_model(cfg), tokens)  # same seed → same params, f32 compute
    assert float(jnp.max(jnp.abs(logits - ref))) < 0.05 * float(jnp.max(jnp.abs(ref))) + 1e-3


def test_gpt2_init_statistics():
    """GPT-2 init: N(0, 0.02) weights, residual projections N(0, 0.02/sqrt(2·n_layer)), zero biases, unit norms."""
    cfg = TINY["gpt2"]
    model = _model(cfg)
    std = cfg.init_std
    resid = std / math.sqrt(2 * cfg.n_layer)

    def pooled(*arrays):
        return np.concatenate([np.ravel(np.asarray(a)) for a in arrays])

    blocks = list(model.blocks)
    plain = pooled(
        model.wte.embedding[...],
        model.wpe.embedding[...],
        *[getattr(b.attn, n).kernel[...] for b in blocks for n in "qkv"],
        *[b.mlp.up.kernel[...] for b in blocks],
    )
    residual = pooled(*[b.attn.o.kernel[...] for b in blocks], *[b.mlp.down.kernel[...] for b in blocks])
    for arr, want in ((plain, std), (residual, resid)):
        assert abs(arr.mean()) < 4 * want / math.sqrt(arr.size)
        assert abs(arr.std() / want - 1) < 4 / math.sqrt(2 * arr.size)  # 4 standard errors of a std estimate
    assert all(float(jnp.abs(b.attn.q.bias[...]).max()) == 0 for b in model.blocks)
    assert float(jnp.abs(model.ln_f.scale[...] - 1).max()) == 0


def test_logical_axis_names_on_every_parameter():
    for cfg in TINY.values():
        leaves = jax.tree.leaves(nnx.state(_model(cfg), nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))
        for v in leaves:
            names = v.get_metadata()["out_sharding"]
            assert len(names) == v.get_value().ndim
            sharding.logical_to_spec(names)  # every name has a rule


def test_sharded_forward_matches_unsharded_on_2x2x2_mesh():
    assert len(jax.devices()) >= 8, "tests/conftest.py forces 8 host devices"
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    for cfg in (TINY["gpt2"], TINY["modern_gqa"]):
        model = _model(cfg)  # GPT-2 init: logits O(0.1), so 1e-5 is ~1e-4 relative
        tokens = _tokens(cfg, 8, cfg.n_ctx)
        ref = np.asarray(_forward(model, tokens))

        graphdef, state = nnx.split(model)
        shardings = sharding.state_shardings(state, mesh)
        state = jax.device_put(state, shardings)
        tokens_sharded = jax.device_put(tokens, jax.sharding.NamedSharding(mesh, sharding.batch_spec()))
        # parameters really are split: the (vocab, embed) table over tensor × fsdp
        wte = state["wte"]["embedding"][...]
        assert wte.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
        assert wte.addressable_shards[0].data.shape == (cfg.vocab_size // 2, cfg.d_model // 2)
        out = jax.jit(lambda s, t, g=graphdef: nnx.merge(g, s)(t))(state, tokens_sharded)
        assert len(out.sharding.device_set) == 8
        np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=0)


def test_uneven_dimension_is_replicated():
    """A vocab of 37 cannot be split over tensor=2: that dimension falls back to replication."""
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    cfg = dataclasses.replace(TINY["gpt2"], vocab_size=37)
    state = nnx.state(nnx.eval_shape(lambda: _model(cfg)), nnx.Param)
    spec = sharding.state_shardings(state, mesh)["wte"]["embedding"].get_value().spec
    assert spec == jax.sharding.PartitionSpec(None, "fsdp")


def test_rules_and_batch_spec():
    assert sharding.logical_to_spec(("embed", "mlp")) == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert sharding.logical_to_spec(("heads", "head_dim", "embed")) == jax.sharding.PartitionSpec(
        "tensor", None, "fsdp"
    )
    assert sharding.batch_spec() == jax.sharding.PartitionSpec(("data", "fsdp"), None)
    with pytest.raises(ValueError):
        sharding.logical_to_spec(("nonsense",))


def test_sequence_longer_than_context_is_rejected():
    cfg = TINY["gpt2"]
    with pytest.raises(ValueError, match="n_ctx"):
        nnx.eval_shape(lambda: _model(cfg)(jnp.zeros((1, cfg.n_ctx + 1), jnp.int32)))


@pytest.mark.parametrize("name", ["gpt2", "modern_gqa"])
def test_cpu_kernels_give_autodiffs_loss_and_gradients(name):
    """The hand-written backward passes (causal_attention, matmul_impl="cpu") against JAX autodiff of
    jax.nn.dot_product_attention and jnp.einsum, from the same initial parameters."""
    cfg = TINY[name]
    tokens = _tokens(cfg, 2, cfg.n_ctx + 1)

    def loss_and_grads(**kw):
        model = _model(cfg, **kw)
        _randomize(model)
        graphdef, params = nnx.split(model, nnx.Param)

        def loss(params):
            logits = nnx.merge(graphdef, params)(tokens[:, :-1])
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

        value, grads = jax.value_and_grad(loss)(params)
        return value, jax.tree.leaves(grads)

    value, grads = loss_and_grads(matmul_impl="cpu")
    ref_value, ref_grads = loss_and_grads(attention_impl="xla", matmul_impl="xla")
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    scale = max(float(jnp.max(jnp.abs(g))) for g in ref_grads)  # the key bias's true gradient is 0: noise
    for g, g_ref in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-6 * scale)
