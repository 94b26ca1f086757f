"""The Cloud TPU launcher's dry run and the local multi-process launcher's environments."""

import argparse
import shlex
import subprocess
import sys

import pytest

from scalinglab import launch_local, launch_tpu


def _dry_run(*args):
    cmd = [sys.executable, "-m", "scalinglab.launch_tpu", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def _mount(bucket):
    return (
        "(command -v gcsfuse > /dev/null || (export GCSFUSE_REPO=gcsfuse-$(lsb_release -c -s) && "
        'echo "deb https://packages.cloud.google.com/apt $GCSFUSE_REPO main" | sudo tee '
        "/etc/apt/sources.list.d/gcsfuse.list > /dev/null && curl -s https://packages.cloud.google.com/apt/doc/"
        "apt-key.gpg | sudo apt-key add - && sudo apt-get update -q && sudo apt-get install -y -q fuse gcsfuse)) "
        f"&& sudo mkdir -p /mnt/gcs/{bucket} && sudo chown $(id -u):$(id -g) /mnt/gcs/{bucket} && "
        f"(mountpoint -q /mnt/gcs/{bucket} || gcsfuse --implicit-dirs {bucket} /mnt/gcs/{bucket})"
    )


def _expected(name, zone, accel, image, job, create_extra=(), prepare=None, bucket=None):
    """The exact lines, written out here independently of the launcher's code."""
    root = str(launch_tpu.REPO_ROOT)
    ssh = f"gcloud compute tpus tpu-vm ssh {name} --zone {zone}"
    lines = [
        f"gcloud compute tpus tpu-vm create {name} --zone {zone} --accelerator-type {accel} --version {image}"
        + "".join(" " + c for c in create_extra),
        f"git -C {root} archive --format=tar.gz -o /tmp/scalinglab-{name}.tar.gz HEAD",
        f"gcloud compute tpus tpu-vm scp /tmp/scalinglab-{name}.tar.gz '{name}:~/scalinglab-src.tar.gz' "
        f"--zone {zone} --worker=all",
        f"{ssh} --worker=all --command 'rm -rf ~/scalinglab && mkdir -p ~/scalinglab && tar xzf "
        "~/scalinglab-src.tar.gz -C ~/scalinglab && cd ~/scalinglab && python3 -m pip install --user -q uv==0.13.9 "
        "&& ~/.local/bin/uv sync --frozen --python 3.11 --extra tpu'",
    ]
    if bucket:
        lines.append(f"{ssh} --worker=all --command '{_mount(bucket)}'")
    if prepare:
        lines.append(f"{ssh} --worker=0 --command 'cd ~/scalinglab && .venv/bin/scalinglab data prepare {prepare}'")
    lines += [
        f"{ssh} --worker=all --command 'mkdir -p ~/scalinglab-logs && cd ~/scalinglab && SCALINGLAB_DISTRIBUTED=1 "
        f"nohup .venv/bin/scalinglab {job} > ~/scalinglab-logs/{name}-$(hostname).log 2>&1 < /dev/null &'",
        f"# watch: {ssh} --worker=all --command 'tail -n 20 ~/scalinglab-logs/{name}-$(hostname).log'",
    ]
    return lines


@pytest.mark.parametrize(
    "accel, image",
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_tpu_dry_run_is_exact_per_generation(accel, image):
    got = _dry_run(
        "--name",
        "lad",
        "--zone",
        "z1",
        "--accelerator-type",
        accel,
        "--dry-run",
        "--",
        "scalinglab",
        "ladder",
        "--ladder-preset",
        "tpu-v4-32",
        "--out",
        "gs://b/runs",
    )
    job = "ladder --ladder-preset tpu-v4-32 --out /mnt/gcs/b/runs"  # the bucket through its gcsfuse mount
    assert got == _expected("lad", "z1", accel, image, job, bucket="b")


def test_tpu_dry_run_spot_with_data_preparation():
    got = _dry_run(
        "--name",
        "n",
        "--zone",
        "z",
        "--accelerator-type",
        "v5litepod-16",
        "--spot",
        "--prepare",
        "local_text",
        "--data-dir",
        "gs://b/data",
        "--dry-run",
        "--",
        "scalinglab",
        "train",
        "--steps",
        "9",
        "--data-dir=gs://b/data",
    )
    assert got == _expected(
        "n",
        "z",
        "v5litepod-16",
        "v2-alpha-tpuv5-lite",
        "train --steps 9 --data-dir=/mnt/gcs/b/data",
        ["--spot"],
        prepare="--dataset local_text --data-dir /mnt/gcs/b/data",
        bucket="b",
    )


def test_tpu_queued_resource_and_preempted_node_is_deleted_and_recreated():
    args = argparse.Namespace(
        name="q", zone="z", project="", accelerator_type="v6e-8", version=None, spot=True, queued=True
    )
    assert launch_tpu.node_commands(args, "READY") == []
    assert [shlex.join(c) for c in launch_tpu.node_commands(args, "PREEMPTED")] == [
        "gcloud compute tpus queued-resources delete q --zone z --force --quiet",
        "gcloud compute tpus queued-resources create q --node-id q --zone z --accelerator-type v6e-8 "
        "--runtime-version v2-alpha-tpuv6e --spot",
    ]
    args.queued = False
    assert [shlex.join(c) for c in launch_tpu.node_commands(args, "PREEMPTED")] == [
        "gcloud compute tpus tpu-vm delete q --zone z --quiet",
        "gcloud compute tpus tpu-vm create q --zone z --accelerator-type v6e-8 --version v2-alpha-tpuv6e --spot",
    ]


def test_tpu_launcher_needs_a_command():
    out = subprocess.run(
        [sys.executable, "-m", "scalinglab.launch_tpu", "--name", "x", "--zone", "z", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
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
