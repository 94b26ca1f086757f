"""cpu_einsum: jnp.einsum's values and gradients, with every dot on XLA:CPU's fast (YNNPACK) kernel."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalinglab.models.projection import cpu_einsum

SHAPES = {  # the model's projections
    "BTD,DNH->BTNH": ((2, 64, 32), (32, 4, 8)),
    "BTNH,NHD->BTD": ((2, 64, 4, 8), (4, 8, 32)),
    "BTD,DF->BTF": ((2, 64, 32), (32, 48)),
}


def _args(spec, seed=0):
    rng = np.random.default_rng(seed)
    x_shape, k_shape = SHAPES[spec]
    x, k = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in (x_shape, k_shape))
    w = jnp.asarray(rng.standard_normal(jnp.einsum(spec, x, k).shape), jnp.float32)
    return x, k, w


@pytest.mark.parametrize("spec", sorted(SHAPES))
def test_values_and_gradients_equal_einsum(spec):
    x, k, w = _args(spec)
    np.testing.assert_allclose(cpu_einsum(spec, x, k), jnp.einsum(spec, x, k), rtol=1e-5, atol=1e-5)
    ours = jax.grad(lambda x, k: jnp.sum(cpu_einsum(spec, x, k) * w), (0, 1))(x, k)
    ref = jax.grad(lambda x, k: jnp.sum(jnp.einsum(spec, x, k) * w), (0, 1))(x, k)
    for g, g_ref in zip(ours, ref, strict=True):
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-4)


def test_other_einsums_fall_back():
    x = jnp.ones((3, 4))
    np.testing.assert_array_equal(cpu_einsum("ij,kj->ik", x, jnp.ones((5, 4))), jnp.full((3, 5), 4.0))


def _plain_dots(fn, *args) -> int:
    """Dots that XLA:CPU left outside its YNNPACK fusions (the slower Eigen path)."""
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    ynn_bodies = set(re.findall(r"calls=(%[\w.\-]+).*__ynn_fusion", hlo))
    plain, body = 0, None
    for line in hlo.splitlines():
        header = re.match(r"(?:ENTRY )?(%[\w.\-]+) ", line)
        if header and line.rstrip().endswith("{"):
            body = header.group(1)
        elif " dot(" in line and body not in ynn_bodies:
            plain += 1
    return plain


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU layout property")
def test_weight_gradient_runs_on_the_fast_kernel():
    spec = "BTD,DF->BTF"
    x, k, w = _args(spec)
    x, w = jnp.tile(x, (2, 2, 1)), jnp.tile(w, (2, 2, 1))  # 256 tokens, 32 -> 48 features

    def grad_k(einsum):
        return jax.grad(lambda k, x, w: jnp.sum(einsum(spec, x, k) * w))

    assert _plain_dots(grad_k(jnp.einsum), k, x, w) >= 1  # the premise: autodiff's dW is not on it
    assert _plain_dots(grad_k(cpu_einsum), k, x, w) == 0
