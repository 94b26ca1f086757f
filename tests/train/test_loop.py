"""End-to-end training loop tests on 8 forced CPU devices with a tiny model and dataset."""

import math
import warnings

import numpy as np
import pytest

from scalinglab.errors import UserError
from scalinglab.fileio import read_json
from scalinglab.models import accounting
from scalinglab.models.config import get_config
from scalinglab.rundir import read_metrics
from scalinglab.train.checkpoint import load_params
from scalinglab.train.config import TRAIN_SCHEMA, TrainConfig
from scalinglab.train.loop import train


def _flat(params):
    import jax

    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])


def test_meshes_match_one_device_and_run_directory_contract(make_config, tmp_path):
    """Same losses (≤ 1e-5 relative) and parameters as one device; the (8,1,1) run's files.

    Parameters are compared as vectors (‖Δ‖/‖p‖ ≤ 5e-5): Adam divides each gradient entry by
    its own magnitude, so entries whose gradient is a near-cancelling sum (rounding-level,
    summation-order dependent) move by O(lr) either way; elementwise comparison of those
    entries would test rounding noise, not the sharding. On this 2-core host the (1,4,2) mesh
    lands at 1.2e-5 after 4 steps (the same with the loop of before the refactors), so 5e-5
    leaves room for the reduction order; a sharding bug moves the parameters by O(1).
    """
    runs = {}
    for mesh in [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 4, 2)]:
        out = tmp_path / "x".join(map(str, mesh))
        cfg = make_config(
            out,
            steps=4,
            eval_every=2,
            gns_window=16,  # one batch: a B_simple every step
            mesh=dict(zip(("data", "fsdp", "tensor"), mesh)),
        )
        summary = train(cfg, progress=False)
        records = read_metrics(out)
        runs[mesh] = (records, _flat(load_params(out)[1]), summary)
    ref_records, ref_params, ref_summary = runs[(1, 1, 1)]
    assert [r["step"] for r in ref_records] == [1, 2, 3, 4]
    assert ref_records[-1]["loss"] < ref_records[0]["loss"]
    for mesh, (records, params, summary) in runs.items():
        for key in ("loss", "grad_norm"):
            np.testing.assert_allclose(
                [r[key] for r in records], [r[key] for r in ref_records], rtol=1e-5, err_msg=f"{mesh} {key}"
            )
        np.testing.assert_allclose(
            [records[1]["eval_loss"], records[3]["eval_loss"]],
            [ref_records[1]["eval_loss"], ref_records[3]["eval_loss"]],
            rtol=1e-5,
        )
        assert np.linalg.norm(params - ref_params) <= 5e-5 * np.linalg.norm(ref_params), mesh
        np.testing.assert_allclose(summary["final_eval_loss"], ref_summary["final_eval_loss"], rtol=1e-5)
    _check_run_directory(make_config, tmp_path / "8x1x1", runs[(8, 1, 1)][2])


def _check_run_directory(make_config, out, summary):
    conf = read_json(out / "config.json")
    model_cfg = get_config("gpt2-tiny", {"n_layer": 1, "vocab_size": conf["data"]["vocab_size"]})
    assert conf["model"]["vocab_size"] == conf["data"]["vocab_size"]  # from the dataset's tokenizer
    assert conf["accounting"]["train_flops_per_token"] == accounting.train_flops_per_token(model_cfg, 32)
    assert conf["accounting"]["non_embedding"] == accounting.param_counts(model_cfg)["non_embedding"]
    assert conf["train"]["steps"] == 4 and conf["train"]["tokens"] == 4 * 16 * 32
    records = read_metrics(out)
    for r in records:
        assert r["tokens"] == r["step"] * 16 * 32
        assert r["flops"] == r["tokens"] * conf["accounting"]["train_flops_per_token"]
        assert ("eval_loss" in r) == (r["step"] % 2 == 0) and r["skipped_steps"] == 0
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] and r["lr"] > 0
        assert math.isclose(r["gns_b_simple"], r["gns_trace"] / r["gns_g2"], rel_tol=1e-5)
    assert summary == read_json(out / "summary.json")
    assert summary["final_eval_loss"] == records[-1]["eval_loss"] and summary["steps"] == 4
    assert summary["best_eval_loss"] == min(r["eval_loss"] for r in records if "eval_loss" in r)
    assert list((out / "tb").iterdir())
    # config.yaml: the run's settings by section; as --config it gives back the same TrainConfig
    mesh = {"data": 8, "fsdp": 1, "tensor": 1}
    assert TRAIN_SCHEMA.build(TrainConfig, TRAIN_SCHEMA.read_file(out / "config.yaml")) == make_config(
        out, steps=4, eval_every=2, gns_window=16, mesh=mesh
    )
    # a finished run resumes to its summary; a fresh run into a used directory is refused
    assert train(make_config(out, steps=4, gns_window=16, resume=True), progress=False) == summary
    with pytest.raises(UserError, match="already holds a run"):
        train(make_config(out, steps=4, gns_window=16), progress=False)


def test_nan_batches_skipped_counted_and_stop(make_config, tmp_path, monkeypatch):
    """Token id = vocab_size is out of range → the embedding gather yields NaN → loss NaN."""
    from scalinglab.data import pipeline

    real = pipeline.make_train_iterator
    poisoned = {3, 6, 7}

    class Poison:
        def __init__(self, it):
            self.it, self.n = it, 0

        def __iter__(self):
            return self

        def __next__(self):
            batch = np.array(next(self.it))
            self.n += 1
            if self.n in poisoned:
                batch[0, 5] = 10**6
            return batch

        def get_state(self):
            return self.it.get_state()

        def set_state(self, s):
            self.it.set_state(s)

    monkeypatch.setattr(pipeline, "make_train_iterator", lambda *a, **k: Poison(real(*a, **k)))
    out = tmp_path / "nan"
    cfg = make_config(out, steps=10, max_bad_steps=2, checkpoint_every=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError, match="2 consecutive non-finite steps.*last good checkpoint: step 5"):
            train(cfg, progress=False)
    assert sum("non-finite" in str(w.message) for w in caught) == 3
    records = {r["step"]: r for r in read_metrics(out)}
    assert records[3]["loss"] is None and records[2]["skipped_steps"] == 0
    assert records[3]["skipped_steps"] == records[5]["skipped_steps"] == 1
    assert records[6]["skipped_steps"] == 2 and 7 not in records  # stopped at step 7
    assert all(records[s]["loss"] is not None for s in (1, 2, 4, 5))
    step, params = load_params(out)
    assert step == 5 and np.isfinite(_flat(params)).all()
    assert not (out / "summary.json").exists()


@pytest.mark.slow
def test_wsd_cooldown_branch_beats_stable_run(make_config, tmp_path, dataset_name):
    """A cooldown branched from step 60 of the stable phase ends (step 90) below the stable run
    at step 90: by then the stable loss sits on the noise floor of its high learning rate."""
    stable = tmp_path / "stable"
    cfg = make_config(
        stable,
        steps=120,
        schedule="wsd",
        wsd_decay=0.25,
        lr=1e-2,
        warmup=2,
        eval_every=30,
        checkpoint_every=30,
        keep_checkpoints=1,
        log_every=10,
    )
    train(cfg, progress=False)
    from scalinglab.train.checkpoint import Checkpointer

    ck = Checkpointer(stable / "checkpoints", read_only=True)
    assert {30, 60, 90}.issubset(ck.all_steps())  # stable-phase branch points kept beyond keep-last-1
    ck.close()
    branch = tmp_path / "branch"
    from scalinglab.train.config import TrainConfig

    summary = train(
        TrainConfig(branch_from=str(stable), branch_step=60, steps=90, out=str(branch), eval_every=30, log_every=10),
        progress=False,
    )
    stable_eval = {r["step"]: r["eval_loss"] for r in read_metrics(stable) if "eval_loss" in r}
    branch_records = read_metrics(branch)
    assert [r["step"] for r in branch_records if r["step"] <= 60] == [10, 20, 30, 40, 50, 60]  # parent's curve
    assert branch_records[-1]["step"] == 90 and branch_records[-1]["lr"] < 0.1 * 1e-2
    assert summary["final_eval_loss"] < stable_eval[90], (summary["final_eval_loss"], stable_eval)
    conf = read_json(branch / "config.json")["train"]
    assert conf["wsd_decay_start"] == 60 and conf["branch_from"] == str(stable) and conf["dataset"] == dataset_name
