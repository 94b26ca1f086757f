"""Resource faults: a full disk leaves checkpoint and log consistent and ends in one line, exit 1, no
hang; the run then resumes exactly. A real tiny tmpfs where the test may mount one (root), else a
simulated ENOSPC with orbax's own error text."""

import contextlib
import dataclasses
import errno
import json
import logging
import os
import subprocess
import sys
import threading
import uuid

import pytest

from scalinglab.train.diskfull import NOISY_LOGGERS, DiskFull, is_disk_full, quiet_background_errors
from scalinglab.train.metrics import read_metrics

ORBAX_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing "params/0" in OCDBT database: Failed to write 370880 bytes '
    "to file 9: No space left on device [os_error_code='28']"
)


def _cli(*argv, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "scalinglab.cli", *argv], capture_output=True, text=True, timeout=timeout
    )


def _tiny_train_args(data_dir, out, *, steps):
    """``train`` argv of a one-layer gpt2-tiny run that logs and checkpoints every step."""
    return [
        "train",
        *("--preset", "gpt2-tiny", "--set", "n_layer=1", "--dataset", "synthetic_markov", "--data-dir", data_dir),
        *("--seq-len", "32", "--batch-size", "16", "--steps", str(steps), "--log-every", "1"),
        *("--eval-every", "0", "--eval-batches", "2", "--checkpoint-every", "1", "--out", str(out), "--no-progress"),
    ]


@contextlib.contextmanager
def _tmpfs(path, size):
    """A tmpfs of ``size`` at ``path`` (skip when this process may not mount one)."""
    path.mkdir(parents=True, exist_ok=True)
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here (not root); the simulated ENOSPC tests cover this")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_orbax_and_os_disk_full_recognised():
    assert is_disk_full(ValueError(ORBAX_ENOSPC)) and is_disk_full(OSError(28, "No space left on device"))
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(122, "Disk quota exceeded")
    assert is_disk_full(wrapped) and not is_disk_full(ValueError("RESOURCE_EXHAUSTED: out of memory"))


def _thread_raising(exc):
    def target():
        raise exc

    t = threading.Thread(target=target)
    t.start()
    t.join()


def test_abandoned_save_errors_are_silent_after_disk_full_and_others_are_not(monkeypatch, caplog):
    """The 'Event loop is closed' errors of orbax's abandoned saves arrive before, during and after
    the main thread's DiskFull (at shutdown): none reaches the printing hook; an unrelated one does."""
    printed = []
    monkeypatch.setattr(threading, "excepthook", lambda a: printed.append(str(a.exc_value)))
    for name in ("excepthook", "unraisablehook"):
        monkeypatch.setattr(sys, name, getattr(sys, name))  # restored after the test
    filters = {n: list(logging.getLogger(n).filters) for n in NOISY_LOGGERS}
    try:
        with pytest.raises(DiskFull), quiet_background_errors():
            _thread_raising(RuntimeError("Event loop is closed"))  # before any disk-full error was seen
            raise DiskFull("/runs/x/checkpoints")
        _thread_raising(RuntimeError("Event loop is closed"))  # after the context: hooks stay installed
        logging.getLogger("asyncio").error(  # what asyncio logs for an orbax task whose write failed
            "Task exception was never retrieved", exc_info=ValueError(ORBAX_ENOSPC)
        )
        _thread_raising(RuntimeError("an unrelated bug"))
        assert printed == ["an unrelated bug"]
        assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
        logging.getLogger("asyncio").error("an unrelated asyncio error")
        assert [r.getMessage() for r in caplog.records] == ["an unrelated asyncio error"]
    finally:
        for n, fs in filters.items():
            logging.getLogger(n).filters[:] = fs


def test_hooks_are_restored_after_a_run_without_disk_full(monkeypatch):
    for mod, name in ((threading, "excepthook"), (sys, "excepthook"), (sys, "unraisablehook")):
        monkeypatch.setattr(mod, name, getattr(mod, name))
    before = (threading.excepthook, sys.excepthook, sys.unraisablehook)
    with quiet_background_errors():
        pass
    assert (threading.excepthook, sys.excepthook, sys.unraisablehook) == before


def test_simulated_enospc_in_checkpoint_save_then_exact_resume(tmp_path, make_config, monkeypatch):
    from scalinglab.train import checkpoint
    from scalinglab.train.loop import train

    ref = tmp_path / "ref"
    train(make_config(ref, steps=6, checkpoint_every=2), progress=False)
    manager = checkpoint.ocp.CheckpointManager
    real_save = manager.save

    def save(self, step, *a, **kw):  # orbax's own failure, raised where orbax raises it
        if step == 4:
            raise ValueError(ORBAX_ENOSPC)
        return real_save(self, step, *a, **kw)

    monkeypatch.setattr(manager, "save", save)
    run = tmp_path / "run"
    cfg = make_config(run, steps=6, checkpoint_every=2)
    with pytest.raises(DiskFull):
        train(cfg, progress=False)
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]  # the log is whole up to the failure
    monkeypatch.setattr(manager, "save", real_save)
    train(dataclasses.replace(cfg, resume=True), progress=False)  # resumes from step 2: exact
    strip = lambda d: [(r["step"], r["loss"]) for r in read_metrics(d)]  # noqa: E731
    assert strip(run) == strip(ref) and (run / "summary.json").exists()


def test_simulated_enospc_in_metrics_write_is_one_line_exit_1(tmp_path, data_dir):
    code = (
        "import errno, sys\n"
        "from scalinglab.train import metrics\n"
        "real = metrics.MetricsWriter.write\n"
        "def write(self, record):\n"
        "    if record['step'] == 3: raise OSError(errno.ENOSPC, 'No space left on device', str(self.path))\n"
        "    return real(self, record)\n"
        "metrics.MetricsWriter.write = write\n"
        "from scalinglab.cli import main\n"
        "sys.argv = ['scalinglab'] + sys.argv[1:]\n"
        "sys.exit(main())\n"
    )
    run = tmp_path / "run"
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            *_tiny_train_args(data_dir, run, steps=6),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 1, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "disk full" in lines[0] and "metrics.jsonl" in lines[0], p.stderr[-3000:]
    assert [r["step"] for r in read_metrics(run)] == [1, 2]


def test_real_full_tmpfs_one_line_exit_1_no_hang_then_resume(tmp_path, data_dir):
    with _tmpfs(tmp_path / f"full-{uuid.uuid4().hex[:6]}", "1200k") as mnt:
        run = mnt / "run"
        args = _tiny_train_args(data_dir, run, steps=12)
        p = _cli(*args, timeout=600)  # a hang would fail here
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 1 and len(lines) == 1 and "disk full" in lines[0], p.stderr[-3000:]
        logged = [r["step"] for r in read_metrics(run)]
        assert logged == list(range(1, len(logged) + 1))  # consistent: no hole, no torn record
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        done = _cli("train", "--out", str(run), "--resume", "--no-progress")
        assert done.returncode == 0, done.stderr[-3000:]
        assert [r["step"] for r in read_metrics(run)] == list(range(1, 13))
        assert json.loads((run / "summary.json").read_text())["steps"] == 12


def test_data_dir_that_is_a_file_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("x")
    p = _cli("data", "prepare", "--dataset", "synthetic_markov", "--data-dir", str(blocker))
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-3000:]
    assert blocker.read_text() == "x"


def test_data_prepare_on_a_full_disk_is_one_line_exit_1_nothing_left_then_works(tmp_path):
    with _tmpfs(tmp_path / f"pfull-{uuid.uuid4().hex[:6]}", "200k") as mnt:
        args = ["data", "prepare", "--dataset", "synthetic_markov", "--data-dir", str(mnt / "data")]
        args += ["--config", "train_docs=200", "--config", "validation_docs=4", "--config", "doc_length=1024"]
        p = _cli(*args)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 1 and len(lines) == 1 and "disk full" in lines[0], p.stderr[-3000:]
        assert "checkpoint" not in lines[0]  # not a training command
        assert list(mnt.iterdir()) == []  # no half-written dataset, not even the data dir it created
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        assert _cli(*args, "--json").returncode == 0
        assert (mnt / "data" / "synthetic_markov").is_dir()


def test_disk_full_reported_only_in_text_becomes_enospc_and_leaves_nothing(tmp_path, monkeypatch):
    """array_record/tensorstore report a full disk as a RuntimeError's text: the same ENOSPC (exit 1)."""
    from scalinglab.data import prepared

    def full(*a, **k):
        raise RuntimeError('Failed to finalize writing of split "train": write() failed: No space left on device')

    monkeypatch.setattr(prepared.tokenizers, "load_tokenizer", full)
    with pytest.raises(OSError) as err:
        prepared.prepare_dataset("synthetic_markov", tmp_path / "d" / "data", {"train_docs": 4, "validation_docs": 1})
    assert err.value.errno == errno.ENOSPC and err.value.filename.startswith(str(tmp_path / "d" / "data"))
    assert list(tmp_path.iterdir()) == []
