"""Resume faults on real (tiny) runs: identity changes refused before anything is written, corrupt
checkpoints and metrics lines recovered from (exactly: the same metrics as the uninterrupted run),
a second trainer refused by the run lock."""

import dataclasses
import shutil

import pytest

from scalinglab.errors import UserError
from scalinglab.runlock import LockHeld, RunLock
from scalinglab.train.loop import train
from scalinglab.train.metrics import read_metrics


def _records(run_dir):
    return [(r["step"], r["loss"], r.get("eval_loss")) for r in read_metrics(run_dir)]


def _snapshot(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir, base_config):
    """A 6-step run checkpointed at 2, 4 and 6, and its metrics (the uninterrupted reference)."""
    d = tmp_path_factory.mktemp("ref") / "run"
    cfg = base_config(data_dir, d, steps=6, checkpoint_every=2, eval_every=3)
    train(cfg, progress=False)
    return cfg, _records(d)


def _partial(tmp_path, finished, drop_steps=(6,)):
    """A copy of the finished run as if killed after its step-4 checkpoint (metrics logged to 6)."""
    cfg, _ = finished
    d = tmp_path / "run"
    shutil.copytree(cfg.out, d)
    (d / "summary.json").unlink()
    for s in drop_steps:
        shutil.rmtree(d / "checkpoints" / str(s))
    return dataclasses.replace(cfg, out=str(d), resume=True), d


@pytest.mark.parametrize(
    "change, field",
    [
        ({"overrides": {"n_layer": 1, "d_model": 32}}, "model.d_model"),
        ({"batch_size": 8}, "train.batch_size"),
        ({"lr": 1e-2}, "train.lr"),
        ({"seed": 1}, "train.seed"),
        ({"steps": 8}, "train.steps"),
    ],
)
def test_resume_with_another_identity_refused_before_writing(tmp_path, finished, change, field):
    cfg, d = _partial(tmp_path, finished)
    before = _snapshot(d)
    with pytest.raises(UserError, match=rf"a resume may not change .*{field}"):
        train(dataclasses.replace(cfg, **change), progress=False)
    assert _snapshot(d) == before  # config.json, metrics and checkpoints untouched


def test_safe_override_resumes_exactly_and_truncates_the_log(tmp_path, finished):
    cfg, d = _partial(tmp_path, finished)
    assert [r["step"] for r in read_metrics(d)][-1] == 6  # logged past the checkpoint
    train(dataclasses.replace(cfg, checkpoint_every=1, keep_checkpoints=5), progress=False)
    assert _records(d) == finished[1]  # no gap, no duplicate, bitwise the uninterrupted run


def test_corrupt_newest_checkpoint_falls_back_and_saves_again(tmp_path, finished):
    cfg, d = _partial(tmp_path, finished, drop_steps=())
    for f in (d / "checkpoints" / "6").rglob("*"):
        if f.is_file() and "extra" not in str(f) and f.suffix != ".json":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with pytest.warns(UserWarning, match="step 6 .* unreadable"):
        train(cfg, progress=False)
    assert _records(d) == finished[1] and (d / "summary.json").exists()
    assert (d / "checkpoints" / "6").is_dir() and any((d / "checkpoints.corrupt").iterdir())


def test_no_readable_checkpoint_stops_with_exit_2_never_restarts(tmp_path, finished):
    cfg, d = _partial(tmp_path, finished, drop_steps=(4, 6))
    for f in (d / "checkpoints" / "2").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    metrics = (d / "metrics.jsonl").read_bytes()
    with pytest.warns(UserWarning), pytest.raises(UserError, match="no checkpoint in .* can be restored"):
        train(cfg, progress=False)
    assert (d / "metrics.jsonl").read_bytes() == metrics and not (d / "summary.json").exists()


def test_corrupt_metrics_line_reported_and_kept(tmp_path, finished):
    cfg, d = _partial(tmp_path, finished)
    lines = (d / "metrics.jsonl").read_text().splitlines()
    lines[1] = '{"step": 2, "lo'  # garbage in the middle (not a torn last line)
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"1 corrupt line\(s\) \(2\)"):
        train(cfg, progress=False)
    kept = list(d.glob("metrics.jsonl.corrupt-*"))
    assert len(kept) == 1 and '{"step": 2, "lo' in kept[0].read_text()
    assert [r[0] for r in _records(d)] == [1, 3, 4, 5, 6]  # the hole is visible, not papered over


def test_second_trainer_refused_naming_the_holder(tmp_path, finished):
    cfg, d = _partial(tmp_path, finished)
    with RunLock(d, owner="first-trainer"):
        before = _snapshot(d)
        with pytest.raises(LockHeld, match="first-trainer@"):
            train(cfg, progress=False)
        assert {k: v for k, v in _snapshot(d).items() if k != "lock.json"} == {
            k: v for k, v in before.items() if k != "lock.json"
        }
