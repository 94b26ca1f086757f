"""The run-directory lock: one holder, the owner named to the second, stale locks taken over."""

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from scalinglab.runlock import LOCK_FILE, LockHeld, LockLost, RunLock, is_stale


def _write(run_dir, **info):
    base = {
        "owner": "alice",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": "t0",
        "acquired": time.time(),
        "lease_s": 300,
        "expires": time.time() + 300,
    }
    base.update(info)
    (run_dir / LOCK_FILE).write_text(json.dumps(base))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_acquire_writes_owner_host_pid_lease_and_release_removes(tmp_path):
    lock = RunLock(tmp_path / "run", lease_s=60, owner="bob", auto_renew=False).acquire()
    info = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert info["owner"] == "bob" and info["host"] == socket.gethostname() and info["pid"] == os.getpid()
    assert info["expires"] - info["acquired"] == pytest.approx(60)
    lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == []  # no temp files left


def test_second_holder_refused_naming_the_owner(tmp_path):
    with RunLock(tmp_path, owner="alice", auto_renew=False):
        with pytest.raises(LockHeld, match=rf"alice@{socket.gethostname()} pid {os.getpid()}"):
            RunLock(tmp_path, owner="bob").acquire()
    RunLock(tmp_path).acquire().release()  # free again


def test_lock_of_another_live_host_is_respected_until_its_lease_expires(tmp_path):
    _write(tmp_path, host="other-host", pid=1)
    with pytest.raises(LockHeld, match="other-host"):
        RunLock(tmp_path).acquire()
    _write(tmp_path, host="other-host", pid=1, expires=time.time() - 1)
    lock = RunLock(tmp_path, auto_renew=False).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == lock.token
    lock.release()


def test_dead_pid_on_this_host_is_stale_and_taken_over(tmp_path):
    pid = _dead_pid()
    _write(tmp_path, pid=pid)
    assert is_stale(json.loads((tmp_path / LOCK_FILE).read_text()))
    lock = RunLock(tmp_path, auto_renew=False).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_renew_extends_lease_and_a_taken_over_holder_finds_out(tmp_path):
    lock = RunLock(tmp_path, lease_s=30, auto_renew=False).acquire()
    first = json.loads((tmp_path / LOCK_FILE).read_text())
    time.sleep(0.05)
    lock.renew()
    second = json.loads((tmp_path / LOCK_FILE).read_text())
    assert second["expires"] > first["expires"] and second["acquired"] == first["acquired"]
    _write(tmp_path, owner="carol", token="someone-else")  # our lease lapsed and carol took over
    with pytest.raises(LockLost, match="carol"):
        lock.check()
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["owner"] == "carol"  # not ours: left alone


def test_auto_renew_keeps_a_short_lease_alive(tmp_path):
    with RunLock(tmp_path, lease_s=0.3) as lock:
        time.sleep(0.8)  # > 2 leases: only renewals keep it valid
        info = json.loads((tmp_path / LOCK_FILE).read_text())
        assert info["token"] == lock.token and info["expires"] > time.time()


@pytest.mark.parametrize("hard_links", [True, False], ids=["local", "no-hard-links"])
def test_racing_acquirers_exactly_one_wins(tmp_path, monkeypatch, hard_links):
    if not hard_links:  # a gcsfuse mount: os.link fails with EPERM, the lock uses an exclusive create

        def no_link(*a, **k):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    barrier = threading.Barrier(8)
    won, refused = [], []

    def attempt():
        barrier.wait()
        try:
            won.append(RunLock(tmp_path, auto_renew=False).acquire())
        except LockHeld:
            refused.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    won[0].release()


def test_racing_processes_exactly_one_wins(tmp_path):
    code = (
        "import sys, time; from scalinglab.runlock import RunLock, LockHeld\n"
        "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
        "try:\n    RunLock(sys.argv[1], auto_renew=False).acquire(); print('won'); time.sleep(2)\n"
        "except LockHeld:\n    print('refused')\n"
    )
    start = time.time() + 3
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(start)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outs == ["refused", "refused", "refused", "won"]
