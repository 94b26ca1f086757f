"""Exact parameter and FLOP accounting for :class:`~scalinglab.models.transformer.Transformer`.

Every number is a Python ``int`` (parameters, or FLOPs per token; one FLOP is one
multiply or one add, so a multiply-accumulate is 2 FLOPs).

Notation: L = n_layer, D = d_model, V = vocab_size, C = n_ctx, N = n_head,
K = kv heads, H = head_dim (N·H = d_attn = D), F = MLP width (ff_dim),
T = sequence length actually run, m = MLP matrices (2 for GELU, 3 for SwiGLU).

Parameter groups (they partition the model: they sum to ``total``):

* ``token_embedding``    V·D (the tied head is this same table)
* ``position_embedding`` C·D for learned positions (gpt2), 0 for RoPE
* ``attention``          L·(D·N·H + 2·D·K·H + N·H·D)   projection weights only
* ``mlp``                L·m·D·F                        weights only
* ``norms``              (2L+1)·D·(2 for LayerNorm scale+shift, 1 for RMSNorm)
* ``biases``             L·(N·H + 2·K·H + D + F + D) for gpt2, 0 for modern
* ``head``               D·V when untied, 0 when tied

Conventions (Kaplan et al. 2020): ``embedding`` = token + position tables;
``non_embedding`` (Kaplan's N) = total − embedding − untied head. A tied head *is*
the embedding table; an untied head is a separate matrix reported as ``head`` and
excluded from N like the embedding it mirrors (``non_embedding_with_head`` includes it,
for papers that count it). So total = embedding + head + non_embedding.

Forward FLOPs per token (T = ``seq_len``):

* ``kaplan``       2·N + 2·L·T·D (Kaplan et al. 2020, table 1, with n_ctx = T, d_attn = D).
* ``chinchilla``   Hoffmann et al. 2022, appendix F, per token: embeddings 2·V·D;
  per layer QKV 2·D·H·(N + 2K) (= 2·3·D·d_attn without GQA), QK logits 2·T·H·N,
  softmax 3·N·T, values 2·T·H·N, output projection 2·H·N·D, MLP 2·m·D·F
  (the paper's 2·2·D·F, with a third matrix for SwiGLU); final logits 2·D·V.
* ``matmul_exact`` the sum of every matmul the forward actually runs:
  L·(2·D·H·(N+2K) + 2·T·N·H + 2·T·N·H + 2·N·H·D + 2·m·D·F) + 2·D·V.
  Attention scores and values are counted over the full T×T matrix, because
  ``jax.nn.dot_product_attention`` (XLA implementation) computes them all and masks
  afterwards. Embedding lookups are gathers (0 FLOPs). Equal, as an integer, to the
  count from walking the jaxpr (:func:`model_jaxpr_flops_per_token`).

Training FLOPs per token = 3 × matmul_exact (backward = 2 × forward); this is the
C the training loop accumulates.

MFU conventions: ``mfu`` divides the matmul-exact count (full T×T attention, what the XLA
kernel runs) by the peak; ``mfu_causal`` uses the causal count, where the attention score
and value matmuls (4·T·N·H per layer and token) are halved because half the T×T matrix is
masked, as MaxText counts since 2025 (``train_flops_per_token(cfg, T, causal=True)``).
"""

from __future__ import annotations

from typing import Any

from scalinglab.errors import UserError
from scalinglab.models.config import ModelConfig

# JAX and Flax are imported inside the functions that trace the model: the closed forms (what
# ``scalinglab params``/``--help`` need) must not pay for importing them.

__all__ = [
    "param_counts",
    "forward_flops_per_token",
    "chinchilla_terms",
    "train_flops_per_token",
    "model_jaxpr_flops_per_token",
    "xla_flops_per_token",
    "measured_flops_per_token",
    "count_params",
    "abstract_model",
]


def _mlp_matrices(cfg: ModelConfig) -> int:
    return 2 if cfg.family == "gpt2" else 3


def param_counts(cfg: ModelConfig) -> dict[str, Any]:
    """Parameter counts by group, total, embedding, Kaplan's non-embedding N, 12·L·D² and the gap."""
    L, D, V, C = cfg.n_layer, cfg.d_model, cfg.vocab_size, cfg.n_ctx
    N, K, H, F = cfg.n_head, cfg.kv_heads, cfg.head_dim, cfg.ff_dim
    by_group = {
        "token_embedding": V * D,
        "position_embedding": C * D if cfg.learned_positions else 0,
        "attention": L * (D * N * H + 2 * D * K * H + N * H * D),
        "mlp": L * _mlp_matrices(cfg) * D * F,
        "norms": (2 * L + 1) * D * (2 if cfg.family == "gpt2" else 1),
        "biases": L * (N * H + 2 * K * H + D + F + D) if cfg.use_bias else 0,
        "head": 0 if cfg.tied else D * V,
    }
    total = sum(by_group.values())
    embedding = by_group["token_embedding"] + by_group["position_embedding"]
    non_embedding = total - embedding - by_group["head"]
    closed_form = 12 * L * D * D
    return {
        "total": total,
        "non_embedding": non_embedding,
        "non_embedding_with_head": non_embedding + by_group["head"],
        "embedding": embedding,
        "head": by_group["head"],
        "closed_form_12Ld2": closed_form,
        "gap_vs_12Ld2": non_embedding - closed_form,
        "by_group": by_group,
    }


def _check_seq_len(cfg: ModelConfig, seq_len: int) -> int:
    seq_len = int(seq_len)
    if not 1 <= seq_len <= cfg.n_ctx:
        raise UserError(f"--seq-len must be between 1 and n_ctx={cfg.n_ctx}, got {seq_len}")
    return seq_len


def chinchilla_terms(cfg: ModelConfig, seq_len: int) -> dict[str, int]:
    """Hoffmann et al. 2022 appendix F forward FLOPs per token, term by term (all layers summed)."""
    T = _check_seq_len(cfg, seq_len)
    L, D, V = cfg.n_layer, cfg.d_model, cfg.vocab_size
    N, K, H, F = cfg.n_head, cfg.kv_heads, cfg.head_dim, cfg.ff_dim
    return {
        "embeddings": 2 * V * D,
        "qkv": L * 2 * D * H * (N + 2 * K),
        "qk_logits": L * 2 * T * H * N,
        "softmax": L * 3 * N * T,
        "attention_values": L * 2 * T * H * N,
        "output_projection": L * 2 * H * N * D,
        "mlp": L * 2 * _mlp_matrices(cfg) * D * F,
        "final_logits": 2 * D * V,
    }


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, int]:
    """Forward FLOPs per token three ways: ``kaplan``, ``chinchilla``, ``matmul_exact``."""
    T = _check_seq_len(cfg, seq_len)
    L, D, V = cfg.n_layer, cfg.d_model, cfg.vocab_size
    N, K, H, F = cfg.n_head, cfg.kv_heads, cfg.head_dim, cfg.ff_dim
    n_non_embedding = param_counts(cfg)["non_embedding"]
    per_layer = (
        2 * D * H * (N + 2 * K)  # q, k, v projections
        + 2 * T * N * H  # scores q·k over all T keys
        + 2 * T * N * H  # probabilities · values
        + 2 * N * H * D  # output projection
        + 2 * _mlp_matrices(cfg) * D * F  # MLP
    )
    return {
        "kaplan": 2 * n_non_embedding + 2 * L * T * N * H,
        "chinchilla": sum(chinchilla_terms(cfg, T).values()),
        "matmul_exact": L * per_layer + 2 * D * V,
    }


def train_flops_per_token(cfg: ModelConfig, seq_len: int, *, causal: bool = False) -> int:
    """Training FLOPs per token: forward + backward = 3 × matmul-exact forward.

    ``causal=True``: the causal convention, attention scores and values halved (2·T·N·H of
    their 4·T·N·H per layer removed); for the ``mfu_causal`` figure, not for C.
    """
    forward = forward_flops_per_token(cfg, seq_len)["matmul_exact"]
    if causal:
        forward -= cfg.n_layer * 2 * int(seq_len) * cfg.n_head * cfg.head_dim
    return 3 * forward


def __getattr__(name: str) -> Any:
    if name == "jaxpr_flops":  # re-exported lazily (it imports JAX)
        from scalinglab.models.jaxpr_flops import jaxpr_flops

        return jaxpr_flops
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def count_params(tree: Any) -> int:
    """Parameters in a model or state, counted as the sum of its ``nnx.Param`` leaf sizes."""
    import jax
    from flax import nnx

    state = nnx.state(tree, nnx.Param) if isinstance(tree, nnx.Module) else tree
    return sum(int(x.size) for x in jax.tree.leaves(state))


class _OneKey:
    """Stand-in for ``nnx.Rngs`` when only shapes are wanted: every initializer gets one fixed key.

    Under ``nnx.eval_shape`` the values are never computed, so the keys do not matter, and
    skipping ``nnx.Rngs``' traced counter update avoids a cost quadratic in depth
    (flax 0.12 builds an error message on every update): gpt2-xl in ~1 s instead of ~12 s.
    """

    def __init__(self):
        import jax

        self._key = jax.random.key(0)

    def params(self) -> Any:
        return self._key

    __call__ = params


def abstract_model(
    cfg: ModelConfig, dtype: Any = None, remat: str = "none", matmul_impl: str = "xla"
) -> tuple[Any, Any]:
    """(graphdef, abstract state) of the model: shapes only, no weights allocated (dtype: float32;
    ``remat``, ``matmul_impl``: see the transformer)."""
    import jax.numpy as jnp
    from flax import nnx

    from scalinglab.models.transformer import Transformer

    dtype = jnp.float32 if dtype is None else dtype
    keys = _OneKey()
    model = nnx.eval_shape(
        lambda: Transformer(cfg, rngs=keys, dtype=dtype, remat=remat, matmul_impl=matmul_impl)  # type: ignore[arg-type]
    )
    return nnx.split(model)


def _trace_forward(cfg: ModelConfig, seq_len: int, dtype: Any = None) -> Any:
    """``jax.jit(forward).trace`` of the model on an abstract int32[1, seq_len] batch (no weights)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, state = abstract_model(cfg, dtype)

    def forward(state, tokens_BT):
        return nnx.merge(graphdef, state)(tokens_BT)

    return jax.jit(forward).trace(state, jax.ShapeDtypeStruct((1, seq_len), jnp.int32))


def measured_flops_per_token(cfg: ModelConfig, seq_len: int, *, xla: bool = False, dtype: Any = None) -> dict[str, Any]:
    """Forward FLOPs per token measured on the traced model (one trace, no weights allocated).

    ``jaxpr``: int, from walking the jaxpr (2·M·N·K per dot_general);
    ``xla``: XLA's ``cost_analysis()['flops']`` / seq_len of the lowered, unoptimised HLO
    (counts elementwise work too), or None when not asked for or the backend gives none.
    """
    from scalinglab.models.jaxpr_flops import count_jaxpr_flops

    T = _check_seq_len(cfg, seq_len)
    traced = _trace_forward(cfg, T, dtype)
    flops = count_jaxpr_flops(traced.jaxpr)
    if flops % T:
        raise AssertionError(f"jaxpr FLOPs {flops} not a multiple of seq_len {T}")
    out: dict[str, Any] = {"jaxpr": flops // T, "xla": None}
    if xla:
        try:
            analysis = traced.lower().cost_analysis()
        except NotImplementedError:
            analysis = None
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0] if analysis else None
        if analysis and "flops" in analysis:
            out["xla"] = float(analysis["flops"]) / T
    return out


def model_jaxpr_flops_per_token(cfg: ModelConfig, seq_len: int, *, dtype: Any = None) -> int:
    """Forward FLOPs per token from walking the jaxpr of the model on a [1, seq_len] batch."""
    return measured_flops_per_token(cfg, seq_len, dtype=dtype)["jaxpr"]


def xla_flops_per_token(cfg: ModelConfig, seq_len: int) -> float | None:
    """XLA's own ``cost_analysis()['flops']`` of the forward per token, or None if unavailable."""
    return measured_flops_per_token(cfg, seq_len, xla=True)["xla"]
