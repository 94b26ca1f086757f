"""Signals: SIGTERM/SIGINT checkpoint the current run and stop (143/130); a ladder or sweep never
starts its next run; Ctrl-C is never swallowed, not even when it lands in a run's last step."""

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalinglab.errors import Interrupted
from scalinglab.train.metrics import read_metrics

_spec = importlib.util.spec_from_file_location("_ladder_test", Path(__file__).parents[1] / "train" / "test_ladder.py")
_ladder_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ladder_test)

# the tiny ladder of tests/train/test_ladder.py, run the way the CLI runs it (Interrupted -> 128 + signum)
WRAPPER = """
import runpy, sys
from scalinglab.errors import Interrupted
try:
    runpy.run_path(sys.argv.pop(1), run_name="__main__")
except Interrupted as e:
    sys.stderr.write(str(e) + "\\n")
    sys.exit(e.exit_code)
"""


def _runs(n=3):
    from scalinglab.train.plan import LadderSpec, plan_ladder

    return plan_ladder(
        LadderSpec(budgets=(1e9,), sizes_per_budget=3, vocab_size=256, batch_size=2, seq_len=16, lr_protocol="fixed")
    )[:n]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("status", ["preempted", "complete"])
def test_ladder_never_starts_the_next_run_after_a_signal(tmp_path, signum, status):
    from scalinglab.train.ladder import run_ladder

    trained = []

    def fake_train(cfg):
        trained.append(cfg.name)
        return {"status": status, "steps": 3, "signal": int(signum)}

    with pytest.raises(Interrupted) as e:
        run_ladder(_runs(), tmp_path / "l", train_fn=fake_train)
    assert len(trained) == 1 and e.value.exit_code == 128 + signum


def test_sweep_never_starts_the_next_run_after_a_signal(tmp_path):
    from scalinglab.train.config import TrainConfig
    from scalinglab.train.sweep import run_sweep

    trained = []

    def fake_train(cfg):
        trained.append(cfg.name)
        return {"status": "preempted", "steps": 1, "signal": int(signal.SIGTERM)}

    with pytest.raises(Interrupted) as e:
        run_sweep(
            TrainConfig(tokens=20_000, seq_len=32), [2, 4, 8], out=tmp_path / "s", lr_rule="sqrt", train_fn=fake_train
        )
    assert len(trained) == 1 and e.value.exit_code == 143


def test_cli_exit_code_is_128_plus_signal(capsys, monkeypatch):
    from scalinglab import cli

    def handler(args):
        raise Interrupted(signal.SIGINT, "stopped by signal 2 during run x; rerun the same command to resume")

    parser = cli.build_parser()
    args = parser.parse_args(["report", "x"])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(args, "func", handler)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    assert cli.main(["report", "x"]) == 130
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_real_ladder_signal_checkpoints_current_run_and_stops(tmp_path, data_dir, dataset_name, signum):
    script, wrapper = tmp_path / "ladder.py", tmp_path / "wrap.py"
    script.write_text(_ladder_test.SCRIPT)
    wrapper.write_text(WRAPPER)
    out = tmp_path / "ladder"
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), str(script), data_dir, dataset_name, str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline, second = time.time() + 300, None
    while proc.poll() is None and time.time() < deadline:
        if second is None and (out / "plan.json").exists():
            second = out / json.loads((out / "plan.json").read_text())["runs"][1]["name"]
        if second is not None and read_metrics(second) and read_metrics(second)[-1]["step"] >= 2:
            proc.send_signal(signum)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert proc.returncode == 128 + signum, err[-2000:]
    assert f"{signal.Signals(signum).name}: saved checkpoint at step" in err
    names = [r["name"] for r in json.loads((out / "plan.json").read_text())["runs"]]
    assert (out / names[0] / "summary.json").exists() and not (out / names[1] / "summary.json").exists()
    assert not any((out / n).exists() for n in names[2:])  # the next run never started
    from scalinglab.train.checkpoint import Checkpointer

    ck = Checkpointer(out / names[1] / "checkpoints", read_only=True)
    assert ck.all_steps()[-1] == read_metrics(out / names[1])[-1]["step"]  # checkpointed where it stopped
    ck.close()
    assert "Traceback" not in err
