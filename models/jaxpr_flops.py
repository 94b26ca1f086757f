"""FLOPs of a JAX function counted from its jaxpr: 2·M·N·K for every ``dot_general``.

This is an independent count of the matmul work a function really traces: it knows
nothing of the model, only of the primitives. Sub-jaxprs are walked recursively
(``pjit``/``jit``, ``closed_call``, ``remat``/``checkpoint``, ``custom_jvp_call``,
``custom_vjp_call``, ``shard_map``...); a ``scan`` body counts ``length`` times;
a ``cond`` counts its most expensive branch. A ``while`` loop has no static trip
count, so a ``while`` whose body contains a ``dot_general`` raises ``ValueError``.

Only ``dot_general`` is counted (elementwise ops, reductions, gathers are not
matmuls); all counts are Python ints (exact, no float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
from jax.extend import core as jcore


def dot_general_flops(lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...], dimension_numbers: Any) -> int:
    """2·(batch·M·K)·N for one ``dot_general``: every lhs element meets every rhs free column.

    ``dimension_numbers = ((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))``.
    """
    (_, rhs_contract), (_, rhs_batch) = dimension_numbers
    rhs_free = [d for i, d in enumerate(rhs_shape) if i not in rhs_contract and i not in rhs_batch]
    return 2 * math.prod(int(d) for d in lhs_shape) * math.prod(int(d) for d in rhs_free)


def _sub_jaxprs(params: dict[str, Any]) -> Iterator[tuple[str, jcore.Jaxpr]]:
    """Every (param name, jaxpr) held in an equation's params (bare, closed, or in a tuple)."""
    for name, value in params.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if isinstance(item, jcore.ClosedJaxpr):
                yield name, item.jaxpr
            elif isinstance(item, jcore.Jaxpr):
                yield name, item


def count_jaxpr_flops(jaxpr: jcore.Jaxpr | jcore.ClosedJaxpr) -> int:
    """Matmul FLOPs of one (closed) jaxpr, recursing into nested jaxprs."""
    if isinstance(jaxpr, jcore.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    total = 0
    for eqn in jaxpr.eqns:
        prim = eqn.primitive.name
        if prim == "dot_general":
            lhs, rhs = (v.aval for v in eqn.invars[:2])
            total += dot_general_flops(lhs.shape, rhs.shape, eqn.params["dimension_numbers"])
            continue
        subs = list(_sub_jaxprs(eqn.params))
        if not subs:
            continue
        if prim == "cond":
            total += max(count_jaxpr_flops(j) for _, j in subs)
        elif prim == "scan":
            total += int(eqn.params["length"]) * sum(count_jaxpr_flops(j) for _, j in subs)
        elif prim == "while":
            inner = sum(count_jaxpr_flops(j) for _, j in subs)
            if inner:
                raise ValueError("while loop with matmuls: trip count unknown, FLOPs not countable")
        else:
            total += sum(count_jaxpr_flops(j) for _, j in subs)
    return total


def jaxpr_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Forward matmul FLOPs of ``fn(*args, **kwargs)`` (args may be ``jax.ShapeDtypeStruct``).

    Traces with ``jax.make_jaxpr`` only: nothing is compiled or allocated.
    """
    return count_jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))
