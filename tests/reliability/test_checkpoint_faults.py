"""Corrupt checkpoints: the newest unreadable step is moved aside (kept), the previous restores,
saving that step again works; when none restores, a UserError names the directory."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from scalinglab.errors import UserError
from scalinglab.train.checkpoint import Checkpointer


def abstract_like(tree):
    """ShapeDtypeStruct pytree for restoring into the layout of ``tree``."""
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _state(v):
    return {"params": {"w": jnp.full((64, 3), float(v))}, "step": jnp.asarray(v, jnp.int32)}


def _arrays(step_dir):
    return [
        f
        for f in step_dir.rglob("*")
        if f.is_file() and "extra" not in str(f) and f.suffix != ".json" and f.stat().st_size > 0
    ]


def _truncate(step_dir):
    for f in _arrays(step_dir):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _bitflip(step_dir):
    for f in _arrays(step_dir):
        data = bytearray(f.read_bytes())
        for i in range(0, len(data), 7):
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))


def _empty(step_dir):
    for f in step_dir.rglob("*"):
        if f.is_file():
            f.write_bytes(b"")


def _saved(tmp_path, steps=(1, 2, 3)):
    ck = Checkpointer(tmp_path / "ck", keep=5)
    for s in steps:
        ck.save(s, _state(s), {"data": {"pos": s}})
    ck.close()


@pytest.mark.parametrize("corrupt", [_truncate, _bitflip, _empty])
def test_corrupt_newest_moved_aside_previous_restores_and_step_saves_again(tmp_path, corrupt):
    _saved(tmp_path)
    corrupt(tmp_path / "ck" / "3")
    ck = Checkpointer(tmp_path / "ck", keep=5)
    with pytest.warns(UserWarning, match="step 3 .* unreadable"):
        step, state, extra = ck.restore_latest(abstract_like(_state(0)))
    assert step == 2 and extra["data"] == {"pos": 2}
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.full((64, 3), 2.0))
    kept = list((tmp_path / "ck.corrupt").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("3-")  # moved aside, not deleted
    assert ck.all_steps() == [1, 2]
    ck.save(3, _state(30), {"data": {"pos": 30}})  # training continues: no StepAlreadyExistsError
    ck.close()
    ck = Checkpointer(tmp_path / "ck", keep=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step, state, _ = ck.restore_latest(abstract_like(_state(0)))
    assert step == 3 and float(np.asarray(state["params"]["w"])[0, 0]) == 30.0
    ck.close()


def test_no_restorable_checkpoint_is_an_error_naming_the_directory(tmp_path):
    _saved(tmp_path, steps=(1, 2))
    for s in (1, 2):
        _truncate(tmp_path / "ck" / str(s))
    ck = Checkpointer(tmp_path / "ck", keep=5)
    with pytest.warns(UserWarning), pytest.raises(UserError, match=f"no checkpoint in {tmp_path / 'ck'} can be"):
        ck.restore_latest(abstract_like(_state(0)))
    ck.close()
    assert len(list((tmp_path / "ck.corrupt").iterdir())) == 2
