"""The jaxpr FLOP walker on functions whose matmul FLOPs are known by hand (2·M·N·K)."""

import jax
import jax.numpy as jnp
import pytest

from scalinglab.models.jaxpr_flops import jaxpr_flops

f32 = jnp.float32


def S(*shape):
    return jax.ShapeDtypeStruct(shape, f32)


def test_plain_matmul():
    assert jaxpr_flops(jnp.dot, S(3, 5), S(5, 7)) == 2 * 3 * 5 * 7
    assert jaxpr_flops(jnp.dot, S(5), S(5)) == 2 * 5  # inner product


def test_batched_einsum_and_vmap():
    fn = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)  # noqa: E731
    assert jaxpr_flops(fn, S(4, 3, 5), S(4, 5, 7)) == 4 * 2 * 3 * 5 * 7
    assert jaxpr_flops(jax.vmap(jnp.dot), S(4, 3, 5), S(4, 5, 7)) == 4 * 2 * 3 * 5 * 7
    # two contracting dimensions
    fn2 = lambda a, b: jnp.einsum("ijk,jkl->il", a, b)  # noqa: E731
    assert jaxpr_flops(fn2, S(2, 3, 4), S(3, 4, 6)) == 2 * 2 * (3 * 4) * 6


def test_nested_jit_remat_and_custom_derivatives():
    inner = jax.jit(lambda a, b: a @ b)

    @jax.custom_jvp
    def cj(a):
        return a @ a

    cj.defjvp(lambda p, t: (cj(p[0]), t[0] @ p[0] + p[0] @ t[0]))

    @jax.custom_vjp
    def cv(a):
        return a @ a

    cv.defvjp(lambda a: (a @ a, a), lambda a, g: (g @ a.T + a.T @ g,))

    def fn(a, b):
        x = inner(a, b)  # 2·4·4·4
        x = jax.checkpoint(lambda y: y @ y)(x)  # 2·4·4·4
        return cj(x) + cv(x)  # 2 × 2·4·4·4

    assert jaxpr_flops(fn, S(4, 4), S(4, 4)) == 4 * 2 * 4**3


def test_scan_multiplies_by_length_and_cond_takes_the_costlier_branch():
    def body(c, w):
        return c @ w, None

    fn = lambda c, ws: jax.lax.scan(body, c, ws)[0]  # noqa: E731
    assert jaxpr_flops(fn, S(2, 8), S(5, 8, 8)) == 5 * 2 * 2 * 8 * 8

    def branchy(p, a):
        return jax.lax.cond(p, lambda x: x @ x @ x, lambda x: x, a)

    assert jaxpr_flops(branchy, jax.ShapeDtypeStruct((), jnp.bool_), S(3, 3)) == 2 * (2 * 27)


def test_while_with_matmul_is_refused():
    def fn(a):
        return jax.lax.while_loop(lambda c: c[0, 0] < 10.0, lambda c: c @ c, a)

    with pytest.raises(ValueError, match="while"):
        jaxpr_flops(fn, S(3, 3))
    # a while loop without matmuls is fine
    assert jaxpr_flops(lambda a: jax.lax.while_loop(lambda c: c[0] < 1.0, lambda c: c + 1, a), S(3)) == 0


def test_elementwise_work_is_not_counted():
    assert jaxpr_flops(lambda a: jnp.tanh(a) * a + jnp.sum(a), S(16, 16)) == 0
