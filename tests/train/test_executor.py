"""Executors (train/executor.py): --only, --emit-commands, per-run locks between drivers, bad settings.

The trainer here is a stand-in with the real trainer's contract (it takes the run's RunLock, returns
a finished run's summary at once, writes summary.json last), so the dispatch logic is checked on many
runs in a second; real training through an executor is in tests/train/test_ray_executor.py.
"""

from __future__ import annotations

import math
import shlex
import threading
import time
from pathlib import Path

import pytest

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, read_json
from scalinglab.models import accounting
from scalinglab.models.config import ModelConfig
from scalinglab.runlock import RunLock
from scalinglab.train.executor import ExecutorOptions, LocalExecutor, PendingRuns, make_executor
from scalinglab.train.ladder import run_ladder
from scalinglab.train.plan import LadderSpec, plan_ladder, plan_lr_search

# 3 sizes x 3 lrs searched (9 runs), then 2 budgets x 3 sizes (6 ladder runs) at the fitted lr_opt(N)
SPEC = LadderSpec(
    budgets=(1e11, 3e11),
    sizes_per_budget=3,
    size_span=16.0,
    seq_len=32,
    batch_size=8,
    vocab_size=64,
    head_dim=8,
    lr=3e-3,
    lr_grid=(0.5, 1.0, 2.0),
    lr_search_extend=0,
)
A_TRUE, K_TRUE = 0.01, -0.1  # the fake optimum lr_opt(N): 3.1e-3 .. 4.1e-3 for the searched sizes, mid-grid


class FakeTrain:
    """The trainer's contract without training (as loop.train): a finished run returns its summary;
    otherwise the run's lock is taken (LockHeld when another trainer holds it), the summary looked
    for again, ``seconds`` pass, and summary.json is written last. The final loss is a parabola in
    log lr around A_TRUE·N^K_TRUE."""

    def __init__(self, seconds: float = 0.0):
        self.calls: list[str] = []
        self.seconds = seconds

    def __call__(self, cfg):
        out = Path(cfg.out)
        if (out / "summary.json").exists():
            return read_json(out / "summary.json")
        with RunLock(out):
            if (out / "summary.json").exists():  # finished while we took the lock
                return read_json(out / "summary.json")
            self.calls.append(cfg.name)
            time.sleep(self.seconds)
            model = ModelConfig(**{**cfg.overrides, "family": cfg.preset.split("-")[0]})
            n = accounting.param_counts(model)["non_embedding"]
            loss = 2.0 + 0.5 * (math.log(cfg.lr) - math.log(A_TRUE * n**K_TRUE)) ** 2
            summary = {"status": "complete", "final_eval_loss": loss, "steps": cfg.steps}
            atomic_write_json(out / "summary.json", summary)
        return summary


def _plan():
    runs = plan_ladder(SPEC)
    return runs, plan_lr_search(SPEC, runs)


def _ladder(out, fake, **kw):
    runs, search = _plan()
    return run_ladder(runs, out, search_runs=search, train_fn=fake, log=lambda s: None, **kw)


def _pending(out, **kw) -> list[str]:
    with pytest.raises(PendingRuns) as e:
        _ladder(out, FakeTrain(), emit=True, **kw)
    return [t.name for t in e.value.tasks]


def test_only_and_emit_give_exactly_the_missing_runs_search_first(tmp_path):
    runs, search = _plan()
    assert len(search) == 9 and len(runs) == 6
    out = tmp_path / "ladder"
    assert _pending(out) == [r.name for r in search]  # the search runs first: the ladder runs need their lr
    first = FakeTrain()
    _ladder(out, first, only=[search[0].name, search[4].name])
    assert first.calls == [search[0].name, search[4].name]  # exactly those, nothing else
    assert _pending(out) == [r.name for i, r in enumerate(search) if i not in (0, 4)]
    with pytest.raises(UserError, match=f"{runs[0].name} need the lr search first; 7 search runs"):
        _ladder(out, FakeTrain(), only=[runs[0].name])  # refused before anything is trained
    with pytest.raises(UserError, match="--only: unknown run 'C1e11-nope'"):
        _ladder(out, FakeTrain(), only=["C1e11-nope"])
    rest = FakeTrain()
    _ladder(out, rest, only=[r.name for r in search[1:4] + search[5:]])
    assert sorted(rest.calls) == sorted(r.name for r in search[1:4] + search[5:])
    assert _pending(out) == [r.name for r in runs]  # the search is complete: now the ladder runs
    trained = []
    for r in runs:  # one driver per run, as the tasks of a SLURM array
        one = FakeTrain()
        summaries = _ladder(out, one, only=[r.name])
        assert one.calls == [r.name]
        trained += one.calls
    assert len(summaries) == len(runs) and sorted(trained) == sorted(r.name for r in runs)
    assert _ladder(out, FakeTrain(), emit=True) == summaries  # nothing missing: nothing emitted, no error
    # the same lrs as one driver training the whole ladder
    whole = tmp_path / "whole"
    _ladder(whole, FakeTrain())
    lrs = {r["name"]: r["lr"] for r in read_json(whole / "plan.json")["runs"]}
    assert {r["name"]: r["lr"] for r in read_json(out / "plan.json")["runs"]} == lrs
    for r in read_json(out / "plan.json")["runs"]:  # and the fake optimum, recovered by the search
        assert r["lr"] == pytest.approx(A_TRUE * r["non_embedding"] ** K_TRUE, rel=1e-6)


def test_two_drivers_train_each_run_exactly_once(tmp_path):
    out = tmp_path / "ladder"
    fakes = [FakeTrain(seconds=0.2), FakeTrain(seconds=0.2)]
    results, errors = [None, None], []

    def driver(k):
        try:
            results[k] = _ladder(out, fakes[k])
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=driver, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    runs, search = _plan()
    names = [r.name for r in [*search, *runs]]
    trained = fakes[0].calls + fakes[1].calls
    assert sorted(trained) == sorted(names)  # every run once, none twice
    assert fakes[0].calls and fakes[1].calls  # both drivers trained some: they shared the work
    assert results[0] == results[1] and len(results[0]) == len(runs)  # both return the whole ladder


def test_held_run_is_waited_for_and_taken_over_when_its_holder_dies(tmp_path):
    """A run locked by a live trainer is left to it and waited for; once the lock is stale (its holder
    died) the driver trains it itself."""
    out = tmp_path / "ladder"
    runs = plan_ladder(LadderSpec(**{**SPEC.__dict__, "lr_protocol": "fixed"}))
    with pytest.raises(PendingRuns):  # the ladder directory as another driver set it up
        run_ladder(runs, out, train_fn=FakeTrain(), emit=True)
    held = out / runs[1].name
    lock = RunLock(held, auto_renew=False).acquire()  # another live trainer (this process, another token)
    log: list[str] = []
    fake = FakeTrain()

    def release_later():
        time.sleep(1.0)
        lock.release()  # as if its holder died: nothing written, the lock gone

    threading.Thread(target=release_later).start()
    summaries = run_ladder(runs, out, train_fn=fake, log=log.append)
    assert fake.calls == [r.name for r in runs if r is not runs[1]] + [runs[1].name]  # the held run last
    assert any(f"{runs[1].name}: held by" in line for line in log)
    assert len(summaries) == len(runs)
    assert any(line.startswith("[ladder] 6/6 runs done, 0 running, 0 queued;") for line in log)


def test_cli_emitted_commands_run_the_ladder(tmp_path, data_dir, dataset_name, monkeypatch, capsys):
    """`ladder --emit-commands` prints one command per runnable missing run; executed (here in this
    process, with the stand-in trainer), they complete the ladder, search runs first."""
    from scalinglab import cli
    from scalinglab.train import loop

    fake = FakeTrain()
    monkeypatch.setattr(loop, "train", fake)
    out = tmp_path / "ladder"
    argv = ["ladder", "--data-dir", data_dir, "--dataset", dataset_name, "--out", str(out), "--budgets", "1e11,3e11"]
    argv += ["--sizes-per-budget", "3", "--size-span", "16", "--seq-len", "32", "--batch-size", "8"]
    argv += ["--head-dim", "8", "--lr-grid", "0.5,1,2", "--lr-search-extend", "0"]
    waves = []
    while True:
        assert cli.main([*argv, "--emit-commands"]) == 0
        captured = capsys.readouterr()
        commands = captured.out.splitlines()
        if not commands:
            assert "every run is finished" in captured.err
            break
        waves.append(commands)
        for c in commands:
            words = shlex.split(c)
            assert words[:2] == ["scalinglab", "ladder"] and words[words.index("--out") + 1] == str(out)
            assert cli.main(words[1:]) == 0
    plan = read_json(out / "plan.json")
    assert [len(w) for w in waves] == [len(plan["lr_search"]), len(plan["runs"])] == [9, 6]
    assert sorted(fake.calls) == sorted(r["name"] for r in plan["lr_search"] + plan["runs"])  # each once
    assert all((out / r["name"] / "summary.json").exists() for r in plan["runs"])


@pytest.mark.parametrize(
    "opts, needle",
    [
        (ExecutorOptions(max_concurrent=2), "--max-concurrent needs --executor ray"),
        (ExecutorOptions(run_resources={"GPU": 1.0}), "--run-resources needs --executor ray"),
        (ExecutorOptions(executor="ray", max_concurrent=0), "--max-concurrent must be >= 1"),
    ],
)
def test_bad_executor_settings(opts, needle):
    with pytest.raises(UserError, match=needle):
        make_executor(opts)
    assert isinstance(make_executor(ExecutorOptions()), LocalExecutor)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--run-resources", "GPU=1"], "--run-resources expects a JSON object"),
        (["--run-resources", '{"GPU": -1}'], "'GPU' must be a non-negative number"),
        (["--executor", "local", "--max-concurrent", "2"], "--max-concurrent needs --executor ray"),
        (["--only", "nope"], "--only: unknown run 'nope'"),
    ],
)
def test_cli_bad_executor_flags_one_line_exit_2(tmp_path, data_dir, dataset_name, capsys, args, needle):
    from scalinglab import cli

    base = ["batch-sweep", "--data-dir", data_dir, "--dataset", dataset_name, "--out", str(tmp_path / "s")]
    assert cli.main([*base, "--tokens", "2e4", "--seq-len", "32", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "s" / "b8_lr0.0005").exists()


def test_executor_ray_without_ray_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError, match="make venv-ray"):
        make_executor(ExecutorOptions(executor="ray"))
