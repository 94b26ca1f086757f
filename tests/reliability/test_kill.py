"""SIGKILL at random points, including inside a checkpoint save (a save every step, so most kills
land in one): the resumed run's metrics are bitwise those of the uninterrupted run. Reuses the
helpers of tests/train/test_resume.py."""

import importlib.util
import random
import signal
import subprocess
from pathlib import Path

import pytest

from scalinglab.train.metrics import read_metrics

_spec = importlib.util.spec_from_file_location("_resume_test", Path(__file__).parents[1] / "train" / "test_resume.py")
_rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rt)


@pytest.mark.parametrize(
    "seed",
    [
        0,
        pytest.param(1, marks=pytest.mark.slow),
        pytest.param(2, marks=pytest.mark.slow),
        pytest.param(3, marks=pytest.mark.slow),
    ],
)
def test_sigkill_at_random_step_during_saves_then_resume_is_exact(make_config, tmp_path, seed):
    rng = random.Random(seed)
    reference = _rt._reference(make_config, tmp_path)  # saves every EVERY steps; cadence does not change metrics
    run_dir = tmp_path / "run"
    cfg = make_config(run_dir, steps=_rt.STEPS, checkpoint_every=1, eval_every=20)
    kills = 0
    for _ in range(2):  # two kills in one run: the second lands in a resumed process
        after = rng.randint(3, _rt.STEPS - 5) if kills == 0 else None
        if after is None:
            logged = read_metrics(run_dir)
            after = min(_rt.STEPS - 2, (logged[-1]["step"] if logged else 0) + rng.randint(2, 6))
        args = _rt._cli_args(cfg) if kills == 0 else ["--out", str(run_dir), "--resume", "--no-progress"]
        code, err = _rt._interrupt(_rt._train_cmd(args), run_dir, signal.SIGKILL, after_step=after)
        if code == 0:  # finished before the kill landed
            break
        assert code == -signal.SIGKILL, err[-2000:]
        kills += 1
    done = subprocess.run(
        _rt._train_cmd(["--out", str(run_dir), "--resume", "--no-progress"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    _rt._check_same(run_dir, reference)
