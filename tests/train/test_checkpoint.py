"""Checkpointer: round trip, keep-last-N plus branch points, fallback past a corrupt newest step."""

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalinglab.train.checkpoint import Checkpointer


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStruct pytree (with shardings) for restoring into the layout of ``tree``."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _state(v):
    return {"params": {"w": jnp.full((4, 3), float(v))}, "step": jnp.asarray(v, jnp.int32)}


def test_round_trip_keep_policy_and_corrupt_fallback(tmp_path):
    ck = Checkpointer(tmp_path / "ck", keep=2, keep_steps=[1])
    for s in (1, 2, 3, 4):
        ck.save(s, _state(s), {"data": {"pos": s * 10}})
    ck.wait()
    assert ck.all_steps() == [1, 3, 4]  # newest two plus the branch point
    step, state, extra = ck.restore_latest(abstract_like(_state(0)))
    assert step == 4 and extra["data"] == {"pos": 40}
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.full((4, 3), 4.0))
    ck.close()

    # corrupt the newest step: every array file under it is truncated to nothing
    newest = tmp_path / "ck" / "4"
    for f in newest.rglob("*"):
        if f.is_file() and f.suffix not in (".json",) and "extra" not in str(f):
            f.write_bytes(b"")
    ck = Checkpointer(tmp_path / "ck", keep=2)
    with pytest.warns(UserWarning, match="step 4"):
        step, state, extra = ck.restore_latest(abstract_like(_state(0)))
    assert step == 3 and extra["data"] == {"pos": 30}
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.full((4, 3), 3.0))
    ck.close()


def test_empty_directory_restores_nothing(tmp_path):
    ck = Checkpointer(tmp_path / "ck")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ck.restore_latest(abstract_like(_state(0))) is None
    ck.close()
