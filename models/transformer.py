"""Flax NNX decoder-only transformer for both config families.

``Transformer(cfg, rngs=nnx.Rngs(0))(tokens_BT) -> logits_BTV``.

* ``gpt2`` family: learned absolute positions, pre-LayerNorm, GELU (tanh
  approximation, as GPT-2) MLP, biases everywhere, output head tied to the token
  embedding (``logits = h @ wte.T``). GPT-2 init: every weight N(0, init_std),
  residual output projections (attention out, MLP out) N(0, init_std/sqrt(2·n_layer)),
  biases 0, norm scales 1.
* ``modern`` family: RoPE, RMSNorm, SwiGLU MLP, no biases, untied head,
  grouped-query attention when ``n_kv_head < n_head``. Same init rule, or μP when
  ``mup_base_width`` is set (:mod:`scalinglab.models.mup`: hidden init std × m^-1/2, logits × 1/m,
  attention logits / head_dim; m = d_model / mup_base_width).

Parameters are always float32; ``dtype`` is the compute dtype (e.g. bfloat16).
Normalisation statistics, softmax and the final logits are float32.

Every parameter carries logical axis names in its ``out_sharding`` metadata
(``vocab``, ``embed``, ``position``, ``heads``, ``kv_heads``, ``head_dim``, ``mlp``,
``norm``); :mod:`scalinglab.models.sharding` maps them to mesh axes.

The layer stack is a plain Python loop over blocks, so the forward jaxpr holds one
copy of each block's matmuls (see :mod:`scalinglab.models.accounting`). ``remat``
rematerialises each block in the backward pass (``jax.checkpoint`` with a policy from
:data:`REMAT_POLICIES`): ``none`` keeps every activation, ``dots`` keeps only the outputs of
weight matmuls (projections, MLP; MaxText's "minimal"), recomputing elementwise work and the
T×T attention scores and weighted values, ``full`` keeps only each block's input. Every matmul
the forward runs is an ``einsum`` listed in this file or in :mod:`scalinglab.models.attention`
(the attention score and value matmuls, over the full T×T matrix).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from scalinglab.models import mup
from scalinglab.models.attention import causal_attention
from scalinglab.models.config import ModelConfig
from scalinglab.models.projection import cpu_einsum
from scalinglab.models.sharding import constrain_batch

Dtype = Any

# --remat name -> jax.checkpoint policy on each block (None: no rematerialisation).
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}

# matmul_impl name -> the einsum of every projection: "xla" as is; "cpu" with the weight gradient
# in the layout of XLA:CPU's fast dot kernel (scalinglab.models.projection).
MATMUL_IMPLS: dict[str, Any] = {"xla": jnp.einsum, "cpu": cpu_einsum}


def matmul_impl_for(platform: str) -> str:
    """The ``matmul_impl`` a model trained on ``platform``'s devices uses: ``cpu`` on XLA:CPU, whose fast
    dot kernel takes the weight gradients only in another layout; ``xla`` elsewhere."""
    return "cpu" if platform == "cpu" else "xla"


def _hidden_stds(cfg: ModelConfig) -> tuple[float, float]:
    """Init std of a block's input projections and of its residual output projections (GPT-2's
    1/sqrt(2·n_layer)), both × m^-1/2 under μP."""
    std = cfg.init_std * mup.hidden_init_scale(cfg)
    return std, std / math.sqrt(2 * cfg.n_layer)


def _normal(std: float):
    return nnx.initializers.normal(stddev=std)


def _meta(*names: str | None) -> dict[str, Any]:
    """Parameter metadata carrying logical axis names (one per array dimension).

    ``eager_sharding=False``: the names are logical, not mesh axes, so flax must not
    try to place the value at creation; :func:`scalinglab.models.sharding.state_shardings`
    maps them to mesh axes through ``LOGICAL_RULES``.
    """
    return {"out_sharding": tuple(names), "eager_sharding": False}


def _dense(
    spec: str,
    kernel_shape: tuple[int, ...],
    kernel_axes: tuple[str | None, ...],
    bias_shape: tuple[int, ...] | None,
    bias_axes: tuple[str | None, ...] | None,
    *,
    std: float,
    dtype: Dtype,
    rngs: nnx.Rngs,
    matmul_impl: str = "xla",
) -> nnx.Einsum:
    """An ``nnx.Einsum`` projection with f32 params, N(0, std) kernel, zero bias, computed by
    ``MATMUL_IMPLS[matmul_impl]``."""
    return nnx.Einsum(
        spec,
        kernel_shape,
        bias_shape,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_normal(std),
        bias_init=nnx.initializers.zeros_init(),
        einsum_op=MATMUL_IMPLS[matmul_impl],
        rngs=rngs,
        kernel_metadata=_meta(*kernel_axes),
        bias_metadata=_meta(*bias_axes) if bias_axes else {},
    )


def _norm(cfg: ModelConfig, dtype: Dtype, rngs: nnx.Rngs) -> nnx.Module:
    """LayerNorm (scale + bias) for gpt2, RMSNorm (scale only) for modern."""
    if cfg.family == "gpt2":
        return nnx.LayerNorm(
            cfg.d_model,
            epsilon=cfg.norm_eps,
            dtype=dtype,
            param_dtype=jnp.float32,
            scale_metadata=_meta("norm"),
            bias_metadata=_meta("norm"),
            rngs=rngs,
        )
    return nnx.RMSNorm(
        cfg.d_model,
        epsilon=cfg.norm_eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_metadata=_meta("norm"),
        rngs=rngs,
    )


def rope(x_BTNH: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (Su et al. 2021), rotate-half convention, positions 0..T-1.

    Elementwise only (no matmul), computed in float32 and cast back to the input dtype.
    """
    _, T, _, H = x_BTNH.shape
    half = H // 2
    inv_freq_F = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))
    angles_TF = jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq_F[None, :]
    cos = jnp.cos(angles_TF)[None, :, None, :]
    sin = jnp.sin(angles_TF)[None, :, None, :]
    x = x_BTNH.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)


class Attention(nnx.Module):
    """Causal multi-head / grouped-query self-attention: :func:`scalinglab.models.attention.causal_attention`
    by default, ``jax.nn.dot_product_attention`` with ``implementation=attention_impl`` when one is named."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
        attention_impl: str | None = None,
        matmul_impl: str = "xla",
    ):
        D, N, K, H = cfg.d_model, cfg.n_head, cfg.kv_heads, cfg.head_dim
        bias = cfg.use_bias
        std, out_std = _hidden_stds(cfg)
        kw = dict(dtype=dtype, rngs=rngs, matmul_impl=matmul_impl)
        self.q = _dense(
            "BTD,DNH->BTNH",
            (D, N, H),
            ("embed", "heads", "head_dim"),
            (N, H) if bias else None,
            ("heads", "head_dim"),
            std=std,
            **kw,
        )
        self.k, self.v = (  # k first, then v: the order they draw their initial values
            _dense(
                "BTD,DKH->BTKH",
                (D, K, H),
                ("embed", "kv_heads", "head_dim"),
                (K, H) if bias else None,
                ("kv_heads", "head_dim"),
                std=std,
                **kw,
            )
            for _ in range(2)
        )
        self.o = _dense(
            "BTNH,NHD->BTD",
            (N, H, D),
            ("heads", "head_dim", "embed"),
            (D,) if bias else None,
            ("embed",),
            std=out_std,
            **kw,
        )
        self.use_rope = not cfg.learned_positions
        self.rope_theta = cfg.rope_theta
        self.attention_impl = attention_impl
        self.scale = mup.attention_scale(cfg)  # None: 1/sqrt(head_dim)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        q_BTNH, k_BTKH, v_BTKH = self.q(x_BTD), self.k(x_BTD), self.v(x_BTD)
        if self.use_rope:
            q_BTNH, k_BTKH = rope(q_BTNH, self.rope_theta), rope(k_BTKH, self.rope_theta)
        if self.attention_impl is None:
            scale = self.scale if self.scale is not None else q_BTNH.shape[-1] ** -0.5
            out_BTNH = causal_attention(q_BTNH, k_BTKH, v_BTKH, scale)
        else:
            out_BTNH = jax.nn.dot_product_attention(
                q_BTNH, k_BTKH, v_BTKH, scale=self.scale, is_causal=True, implementation=self.attention_impl
            )
        return self.o(out_BTNH)


class MLP(nnx.Module):
    """GELU (tanh) MLP for gpt2; SwiGLU (silu(x W_gate) ⊙ x W_up) W_down for modern."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32, matmul_impl: str = "xla"):
        D, F = cfg.d_model, cfg.ff_dim
        bias = cfg.use_bias
        std, out_std = _hidden_stds(cfg)
        kw = dict(dtype=dtype, rngs=rngs, matmul_impl=matmul_impl)
        self.gated = cfg.family != "gpt2"
        self.up = _dense("BTD,DF->BTF", (D, F), ("embed", "mlp"), (F,) if bias else None, ("mlp",), std=std, **kw)
        if self.gated:
            self.gate = _dense("BTD,DF->BTF", (D, F), ("embed", "mlp"), None, None, std=std, **kw)
        self.down = _dense(
            "BTF,FD->BTD", (F, D), ("mlp", "embed"), (D,) if bias else None, ("embed",), std=out_std, **kw
        )

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        if self.gated:
            h_BTF = jax.nn.silu(self.gate(x_BTD)) * self.up(x_BTD)
        else:
            h_BTF = jax.nn.gelu(self.up(x_BTD), approximate=True)
        return self.down(h_BTF)


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
        attention_impl: str | None = None,
        matmul_impl: str = "xla",
    ):
        self.ln_1 = _norm(cfg, dtype, rngs)
        self.attn = Attention(cfg, rngs=rngs, dtype=dtype, attention_impl=attention_impl, matmul_impl=matmul_impl)
        self.ln_2 = _norm(cfg, dtype, rngs)
        self.mlp = MLP(cfg, rngs=rngs, dtype=dtype, matmul_impl=matmul_impl)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        x_BTD = x_BTD + self.attn(self.ln_1(x_BTD))
        return x_BTD + self.mlp(self.ln_2(x_BTD))


def _apply_block(block: Block, x_BTD: jax.Array) -> jax.Array:
    return block(x_BTD)


class Transformer(nnx.Module):
    """Decoder-only language model: ``tokens_BT int32 -> logits_BTV float32``.

    Args:
      cfg: the model config (a ModelConfig is valid by construction).
      rngs: ``nnx.Rngs`` used for parameter init.
      dtype: compute dtype; parameters are stored in float32 regardless.
      attention_impl: None → :func:`scalinglab.models.attention.causal_attention` (hand-written
        backward, the same numbers); a name (``"xla"``, ``"cudnn"`` for the fused GPU kernel) →
        ``jax.nn.dot_product_attention`` with that implementation.
      remat: ``none``, ``dots`` or ``full`` (see :data:`REMAT_POLICIES`); the same
        numbers, less activation memory, more backward FLOPs.
      matmul_impl: ``xla`` or ``cpu`` (see :data:`MATMUL_IMPLS`); the same numbers, ``cpu``
        faster on XLA:CPU.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
        attention_impl: str | None = None,
        remat: str = "none",
        matmul_impl: str = "xla",
    ):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat {remat!r}; choose one of {', '.join(REMAT_POLICIES)}")
        if matmul_impl not in MATMUL_IMPLS:
            raise ValueError(f"unknown matmul_impl {matmul_impl!r}; choose one of {', '.join(MATMUL_IMPLS)}")
        self.cfg = cfg
        self.dtype = dtype
        self.remat = remat
        D, V, std = cfg.d_model, cfg.vocab_size, cfg.init_std
        self.wte = nnx.Embed(
            V,
            D,
            dtype=dtype,
            param_dtype=jnp.float32,
            embedding_init=_normal(std),
            embedding_metadata=_meta("vocab", "embed"),
            rngs=rngs,
        )
        if cfg.learned_positions:
            self.wpe = nnx.Embed(
                cfg.n_ctx,
                D,
                dtype=dtype,
                param_dtype=jnp.float32,
                embedding_init=_normal(std),
                embedding_metadata=_meta("position", "embed"),
                rngs=rngs,
            )
        self.blocks = nnx.List(
            [
                Block(cfg, rngs=rngs, dtype=dtype, attention_impl=attention_impl, matmul_impl=matmul_impl)
                for _ in range(cfg.n_layer)
            ]
        )
        self.ln_f = _norm(cfg, dtype, rngs)
        if not cfg.tied:
            self.lm_head = nnx.Param(_normal(std)(rngs.params(), (D, V), jnp.float32), **_meta("embed", "vocab"))

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        T = tokens_BT.shape[1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx={self.cfg.n_ctx}")
        x_BTD = self.wte(tokens_BT)
        if self.cfg.learned_positions:
            x_BTD = x_BTD + self.wpe(jnp.arange(T, dtype=jnp.int32))[None]
        apply = _apply_block
        if self.remat != "none":
            apply = nnx.remat(_apply_block, policy=REMAT_POLICIES[self.remat])
        x_BTD = constrain_batch(x_BTD)  # batch-sharded activations under sharding.activation_sharding
        for block in self.blocks:
            x_BTD = constrain_batch(apply(block, x_BTD))
        h_BTD = self.ln_f(x_BTD).astype(self.dtype)
        out_mult = mup.output_multiplier(self.cfg)
        if out_mult is not None:  # μP readout: logits × 1/m (elementwise, no matmul)
            h_BTD = h_BTD * jnp.asarray(out_mult, self.dtype)
        if self.cfg.tied:
            head_VD = self.wte.embedding[...].astype(self.dtype)
            return constrain_batch(jnp.einsum("BTD,VD->BTV", h_BTD, head_VD, preferred_element_type=jnp.float32))
        head_DV = self.lm_head[...].astype(self.dtype)
        return constrain_batch(jnp.einsum("BTD,DV->BTV", h_BTD, head_DV, preferred_element_type=jnp.float32))
