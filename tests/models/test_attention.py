"""causal_attention against jax.nn.dot_product_attention (XLA's, differentiated by autodiff)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalinglab.models.attention import causal_attention


def _qkv(B, T, N, K, H, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, T, N, H))
    k, v = rng.standard_normal((2, B, T, K, H))
    w = rng.standard_normal((B, T, N, H))  # a random cotangent: every output element matters
    return [jnp.asarray(a, dtype) for a in (q, k, v, w)]


@pytest.mark.parametrize(("N", "K", "scale"), [(4, 4, None), (4, 2, None), (6, 1, None), (4, 4, 1 / 8)])
def test_values_and_gradients_match_xla_attention(N, K, scale):
    B, T, H = 2, 24, 8
    q, k, v, w = _qkv(B, T, N, K, H)
    s = H**-0.5 if scale is None else scale

    def ours(q, k, v):
        return jnp.sum(causal_attention(q, k, v, s) * w)

    def ref(q, k, v):
        return jnp.sum(jax.nn.dot_product_attention(q, k, v, scale=s, is_causal=True, implementation="xla") * w)

    out = causal_attention(q, k, v, s)
    expected = jax.nn.dot_product_attention(q, k, v, scale=s, is_causal=True, implementation="xla")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(jax.grad(ours, (0, 1, 2))(q, k, v), jax.grad(ref, (0, 1, 2))(q, k, v), strict=True):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)


def test_first_position_attends_only_to_itself():
    """Causal: output 0 is v[0] of its kv head whatever the scores (closed form)."""
    q, k, v, _ = _qkv(1, 5, 4, 2, 8)
    out = causal_attention(q, k, v, 0.3)
    np.testing.assert_allclose(out[0, 0], jnp.repeat(v[0, 0], 2, axis=0), rtol=1e-6)


def test_bfloat16_follows_float32():
    q, k, v, w = _qkv(2, 16, 4, 4, 8)
    lo = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    out = causal_attention(*lo, 8**-0.5)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), causal_attention(q, k, v, 8**-0.5), atol=3e-2)
    grads = jax.grad(lambda *a: jnp.sum(causal_attention(*a, 8**-0.5).astype(jnp.float32) * w), (0, 1, 2))(*lo)
    assert all(g.dtype == jnp.bfloat16 for g in grads)
