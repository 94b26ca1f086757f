"""Cloud TPU launcher: bring up a TPU slice, install scalinglab on every worker, start one command on all.

    scalinglab-launch-tpu --name ladder --zone us-central2-b --accelerator-type v4-32 \\
        [--spot] [--queued] [--prepare local_text --data-dir gs://BUCKET/data] [--dry-run] -- \\
        scalinglab ladder --ladder-preset tpu-v4-32 --data-dir gs://BUCKET/data --out gs://BUCKET/runs/v4

Steps (each a gcloud/git command; ``--dry-run`` prints exactly these lines and runs nothing):

1. the node: reused when READY; a PREEMPTED (or TERMINATED) spot node is deleted and recreated;
   created with the software image of its generation (v4 ``tpu-ubuntu2204-base``, v5e
   ``v2-alpha-tpuv5-lite``, v5p ``v2-alpha-tpuv5``, v6e ``v2-alpha-tpuv6e``), directly or, with
   ``--queued``, as a queued resource (waited for until ACTIVE);
2. the source: ``git archive`` of HEAD to one absolute path on this machine, copied from that
   same path to every worker, unpacked, and the locked environment with the ``tpu`` extra
   installed (``uv sync --frozen --extra tpu``);
3. the buckets: every ``gs://BUCKET/...`` in ``--data-dir`` and in the job command is mounted with
   gcsfuse at ``/mnt/gcs/BUCKET`` on every worker (installed from Google's apt repository when
   missing) and the path rewritten to the mount, because scalinglab writes run directories with the
   OS and array_record reads local files only (google/array_record#120); optionally the data,
   prepared once (worker 0) on the shared directory;
4. the job on every worker under ``nohup`` (it survives the ssh session), each worker logging to
   ``~/scalinglab-logs/<name>-<hostname>.log``; watch with the printed ``tail`` command. After a
   preemption, run the launcher again with the same command: training commands resume from
   their checkpoints on the shared ``--out``.

On Cloud TPU ``jax.distributed.initialize()`` needs no arguments; the launcher sets
``SCALINGLAB_DISTRIBUTED=1`` so every scalinglab command joins the slice's processes.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Cloud TPU software versions per generation (cloud.google.com/tpu/docs/runtimes).
IMAGES = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
_GENERATION = {"v4": "v4", "v5litepod": "v5e", "v5e": "v5e", "v5p": "v5p", "v6e": "v6e"}
UV_VERSION = "0.13.9"
MOUNT_ROOT = "/mnt/gcs"  # where each gs:// bucket is mounted on the workers
_GS = re.compile(r"gs://([a-z0-9][a-z0-9._-]*)(/.*)?$")
# gcsfuse from Google's apt repository (cloud.google.com/storage/docs/cloud-storage-fuse/install).
_INSTALL_GCSFUSE = (
    "(command -v gcsfuse > /dev/null || (export GCSFUSE_REPO=gcsfuse-$(lsb_release -c -s) && "
    'echo "deb https://packages.cloud.google.com/apt $GCSFUSE_REPO main" | '
    "sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null && "
    "curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && "
    "sudo apt-get update -q && sudo apt-get install -y -q fuse gcsfuse))"
)


def mounted(word: str, buckets: list[str]) -> str:
    """``word`` with a ``gs://BUCKET/path`` (alone or after ``--flag=``) rewritten to the worker's
    mount ``/mnt/gcs/BUCKET/path``; the bucket is added to ``buckets``."""
    flag, eq, value = word.partition("=") if word.startswith("--") and "=" in word else ("", "", word)
    m = _GS.match(value)
    if not m:
        return word
    if m.group(1) not in buckets:
        buckets.append(m.group(1))
    return f"{flag}{eq}{MOUNT_ROOT}/{m.group(1)}{m.group(2) or ''}"


def mount_command(buckets: Sequence[str]) -> str:
    """The shell line that mounts each bucket at ``/mnt/gcs/BUCKET`` (kept when already mounted)."""
    parts = [_INSTALL_GCSFUSE]
    for b in buckets:
        d = f"{MOUNT_ROOT}/{b}"
        parts.append(
            f"sudo mkdir -p {d} && sudo chown $(id -u):$(id -g) {d} && "
            f"(mountpoint -q {d} || gcsfuse --implicit-dirs {b} {d})"
        )
    return " && ".join(parts)


def generation(accelerator_type: str) -> str:
    """``v4``, ``v5e``, ``v5p`` or ``v6e`` from an accelerator type such as ``v5litepod-16``."""
    m = re.fullmatch(r"(v4|v5litepod|v5e|v5p|v6e)-\d+", accelerator_type)
    if not m:
        raise SystemExit(
            f"scalinglab-launch-tpu: error: unknown --accelerator-type {accelerator_type!r} "
            "(expected v4-N, v5litepod-N, v5p-N or v6e-N)"
        )
    return _GENERATION[m.group(1)]


def tarball_path(name: str) -> str:
    """Where the source tarball is written and read from (one absolute path on this machine)."""
    return f"/tmp/scalinglab-{name}.tar.gz"


def _where(args: argparse.Namespace) -> list[str]:
    return ["--zone", args.zone] + (["--project", args.project] if args.project else [])


def node_commands(args: argparse.Namespace, state: str | None) -> list[list[str]]:
    """Commands that leave a READY node named ``args.name``, given its current ``state``
    (None: no such node; READY: nothing to do; PREEMPTED/TERMINATED/other: delete, recreate)."""
    if state == "READY":
        return []
    where = _where(args)
    version = args.version or IMAGES[generation(args.accelerator_type)]
    cmds: list[list[str]] = []
    if state is not None:
        if args.queued:
            cmds.append(
                ["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *where, "--force", "--quiet"]
            )
        else:
            cmds.append(["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *where, "--quiet"])
    if args.queued:
        create = [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "create",
            args.name,
            "--node-id",
            args.name,
            *where,
            "--accelerator-type",
            args.accelerator_type,
            "--runtime-version",
            version,
        ]
    else:
        create = [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "create",
            args.name,
            *where,
            "--accelerator-type",
            args.accelerator_type,
            "--version",
            version,
        ]
    if args.spot:
        create.append("--spot")
    cmds.append(create)
    return cmds


def _ssh(args: argparse.Namespace, worker: str, command: str) -> list[str]:
    return [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        args.name,
        *_where(args),
        f"--worker={worker}",
        "--command",
        command,
    ]


def job_commands(args: argparse.Namespace, command: Sequence[str]) -> list[list[str]]:
    """Source tarball, install, bucket mounts, optional data preparation, and the job under nohup
    on every worker (``gs://`` paths rewritten to the mounts)."""
    tarball = tarball_path(args.name)
    cmds = [
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar.gz", "-o", tarball, "HEAD"],
        [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "scp",
            tarball,
            f"{args.name}:~/scalinglab-src.tar.gz",
            *_where(args),
            "--worker=all",
        ],
        _ssh(
            args,
            "all",
            "rm -rf ~/scalinglab && mkdir -p ~/scalinglab && tar xzf ~/scalinglab-src.tar.gz -C ~/scalinglab && "
            f"cd ~/scalinglab && python3 -m pip install --user -q uv=={UV_VERSION} && "
            "~/.local/bin/uv sync --frozen --python 3.11 --extra tpu",
        ),
    ]
    buckets: list[str] = []
    data_dir = mounted(args.data_dir, buckets) if args.data_dir else ""
    words = [mounted(w, buckets) for w in command]
    if buckets:
        cmds.append(_ssh(args, "all", mount_command(buckets)))
    if args.prepare:
        cmds.append(
            _ssh(
                args,
                "0",
                "cd ~/scalinglab && .venv/bin/scalinglab data prepare "
                f"--dataset {shlex.quote(args.prepare)} --data-dir {shlex.quote(data_dir)}",
            )
        )
    if words and words[0] == "scalinglab":
        words[0] = ".venv/bin/scalinglab"
    log = f"~/scalinglab-logs/{args.name}-$(hostname).log"
    cmds.append(
        _ssh(
            args,
            "all",
            f"mkdir -p ~/scalinglab-logs && cd ~/scalinglab && SCALINGLAB_DISTRIBUTED=1 nohup "
            f"{shlex.join(words)} > {log} 2>&1 < /dev/null &",
        )
    )
    return cmds


def watch_command(args: argparse.Namespace) -> list[str]:
    return _ssh(args, "all", f"tail -n 20 ~/scalinglab-logs/{args.name}-$(hostname).log")


def _gcloud_value(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        sys.stderr.write(
            "scalinglab-launch-tpu: error: gcloud not found; install the Google Cloud SDK or use --dry-run\n"
        )
        raise SystemExit(2) from None
    return out.stdout.strip() or None if out.returncode == 0 else None


def node_state(args: argparse.Namespace) -> str | None:
    """The node's state (READY, PREEMPTED, CREATING, ...), or None when it does not exist."""
    return _gcloud_value(
        ["gcloud", "compute", "tpus", "tpu-vm", "describe", args.name, *_where(args), "--format=value(state)"]
    )


def wait_for_queued(args: argparse.Namespace, poll_s: float = 60.0) -> None:
    """Block until the queued resource is ACTIVE (its node exists); exit 1 if it FAILED."""
    probe = [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "describe",
        args.name,
        *_where(args),
        "--format=value(state.state)",
    ]
    while True:
        state = _gcloud_value(probe)
        if state == "ACTIVE":
            return
        if state in ("FAILED", "SUSPENDED"):
            sys.stderr.write(f"scalinglab-launch-tpu: error: queued resource {args.name} is {state}\n")
            raise SystemExit(1)
        sys.stderr.write(f"scalinglab-launch-tpu: queued resource {args.name}: {state or 'not visible yet'}; waiting\n")
        time.sleep(poll_s)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="scalinglab-launch-tpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="TPU node name (reused while READY)")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default="")
    p.add_argument("--accelerator-type", default="v4-8", help="e.g. v4-32, v5litepod-16, v5p-8, v6e-8")
    p.add_argument("--version", default=None, help="software image (default: the generation's, see IMAGES)")
    p.add_argument("--spot", action="store_true", help="preemptible capacity (rerun the launcher after a preemption)")
    p.add_argument("--queued", action="store_true", help="request the node as a queued resource")
    p.add_argument("--prepare", default="", metavar="DATASET", help="prepare DATASET on --data-dir first (worker 0)")
    p.add_argument(
        "--data-dir", default="", help="shared data directory, e.g. gs://BUCKET/data (mounted at /mnt/gcs/BUCKET)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(own)
    if not command:
        p.error("give the command to run on every worker after --, e.g. -- scalinglab train ...")
    if args.prepare and not args.data_dir.startswith("gs://"):
        p.error("--prepare needs --data-dir gs://... (a directory every worker reads)")
    generation(args.accelerator_type)
    state = None if args.dry_run else node_state(args)
    steps = node_commands(args, state)
    for i, cmd in enumerate(steps + job_commands(args, command)):
        print(shlex.join(cmd))
        if args.dry_run:
            continue
        rc = subprocess.run(cmd, check=False).returncode
        if rc != 0:
            sys.stderr.write(f"scalinglab-launch-tpu: error: command failed with exit code {rc}\n")
            return rc
        if args.queued and i == len(steps) - 1 and cmd[4] == "create":
            wait_for_queued(args)
    print("# watch: " + shlex.join(watch_command(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
