"""The Cloud TPU launcher's dry run and the local multi-process launcher's environments."""

import shlex
import subprocess
import sys

from scalinglab import launch_local


def test_tpu_dry_run_prints_create_install_and_run_on_all_workers():
    cmd = [sys.executable, "-m", "scalinglab.launch_tpu", "--name", "ladder-v4", "--zone", "us-central2-b",
           "--accelerator-type", "v4-32", "--dry-run", "--", "scalinglab", "ladder", "--ladder-preset", "tpu-v4-32"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [shlex.split(line) for line in out.stdout.strip().splitlines()]
    assert lines[0][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "ladder-v4"]
    assert "v4-32" in lines[0]
    ssh = [line for line in lines if line[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
    assert len(ssh) == 2 and all("--worker=all" in line for line in ssh)
    assert "jax[tpu]" in ssh[0][-1]
    assert ssh[1][-1].endswith(".venv/bin/scalinglab ladder --ladder-preset tpu-v4-32")


def test_tpu_launcher_needs_a_command():
    out = subprocess.run([sys.executable, "-m", "scalinglab.launch_tpu", "--name", "x", "--zone", "z", "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_local_launcher_environments_are_one_per_process():
    envs = launch_local.process_envs(4, 2, 12345, base={})
    assert [e["SCALINGLAB_PROCESS_ID"] for e in envs] == ["0", "1", "2", "3"]
    assert {e["SCALINGLAB_NUM_PROCESSES"] for e in envs} == {"4"}
    assert {e["SCALINGLAB_COORDINATOR"] for e in envs} == {"127.0.0.1:12345"}
    assert {e["XLA_FLAGS"] for e in envs} == {"--xla_force_host_platform_device_count=2"}


def test_local_launcher_runs_every_process_and_propagates_failure(tmp_path):
    script = "import os,sys; open(os.path.join(sys.argv[1], os.environ['SCALINGLAB_PROCESS_ID']), 'w').close()"
    rc = launch_local.main(["--processes", "3", "--", sys.executable, "-c", script, str(tmp_path)])
    assert rc == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2"]
    assert launch_local.main(["--processes", "2", "--", sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
