"""Projection matmuls whose weight gradient XLA:CPU runs on its fast dot kernel.

``cpu_einsum(spec, x, kernel)`` is ``jnp.einsum(spec, x, kernel)`` for a projection (the kernel's
leading axes contract with the input's trailing axes, e.g. ``BTD,DNH->BTNH``), computed as one
[tokens, in] × [in, out] matmul with a hand-written backward. The weight gradient
``dW = Xᵀ·dY`` contracts over tokens, the leading axis of both operands; autodiff leaves that
transposed operand to XLA, whose CPU backend then skips its YNNPACK dot kernel (it takes
row-major, untransposed operands only) for the generic Eigen contraction, 2-2.5× slower at
these shapes. Here ``Xᵀ`` is materialised behind ``lax.optimization_barrier`` (so XLA cannot
fold the transpose back into the dot): one [in, tokens] copy, then the fast kernel.

Measured on one core of the 2-core Xeon, a 6-block 256→1024→256 GELU MLP chain on 1,024
tokens, forward + backward: 206 ms with ``jnp.einsum``, 183 ms here. Same numbers (the same
matmuls in another order of operands): the model tests compare losses and gradients.

Used only when the model runs on XLA:CPU (``Transformer(..., matmul_impl="cpu")``, chosen by
:mod:`scalinglab.train.program` from the devices): GPU and TPU dot emitters take transposed
operands natively, and ``aot`` compiles the plain einsum their training runs.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _matmul(x_MK: jax.Array, w_KN: jax.Array) -> jax.Array:
    return x_MK @ w_KN


def _matmul_fwd(x_MK, w_KN):
    return x_MK @ w_KN, (x_MK, w_KN)


def _matmul_bwd(residuals, dy_MN):
    x_MK, w_KN = residuals
    dx_MK = dy_MN @ w_KN.T
    dw_NK = jax.lax.optimization_barrier(dy_MN.T) @ x_MK  # both operands row-major, contracting M
    dw_KN = jax.lax.optimization_barrier(dw_NK).T
    return dx_MK, dw_KN


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _projection_split(spec: str, x_ndim: int, k_ndim: int) -> int | None:
    """How many trailing input axes the kernel's leading axes contract, when ``spec`` is a
    projection ``<batch><c>,<c><out>-><batch><out>``; None for any other einsum."""
    lhs_rhs, out = spec.replace(" ", "").split("->")
    lhs, rhs = lhs_rhs.split(",")
    if len(lhs) != x_ndim or len(rhs) != k_ndim:
        return None
    n = sum(1 for c in lhs if c in rhs)
    if n == 0 or lhs[len(lhs) - n :] != rhs[:n] or out != lhs[: len(lhs) - n] + rhs[n:]:
        return None
    return n


def cpu_einsum(
    spec: str,
    x: jax.Array,
    kernel: jax.Array,
    *,
    precision: Any = None,
    out_sharding: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``jnp.einsum(spec, x, kernel)`` (the ``einsum_op`` of ``nnx.Einsum``), as one matmul with
    the CPU-friendly backward when ``spec`` is a plain projection; ``jnp.einsum`` otherwise."""
    n = _projection_split(spec, x.ndim, kernel.ndim)
    if n is None or precision is not None or out_sharding is not None or preferred_element_type is not None:
        kw = {"out_sharding": out_sharding} if out_sharding is not None else {}
        if preferred_element_type is not None:
            kw["preferred_element_type"] = preferred_element_type
        return jnp.einsum(spec, x, kernel, precision=precision, **kw)
    batch, out = x.shape[: x.ndim - n], kernel.shape[n:]
    k = math.prod(kernel.shape[:n])
    y = _matmul(x.reshape(math.prod(batch), k), kernel.reshape(k, math.prod(out)))
    return y.reshape(*batch, *out)
