"""Cloud TPU launcher: create or reuse a TPU VM, install scalinglab on every worker, run one command on all.

    scalinglab-launch-tpu --name my-tpu --zone us-central2-b --accelerator-type v4-32 \\
        [--spot] [--dry-run] -- scalinglab ladder --ladder-preset tpu-v4-32 --out runs/v4

JAX's multi-controller runtime does the rest: on Cloud TPU ``jax.distributed.initialize()`` needs no
arguments, and every worker runs the same command (``--worker=all``). ``--dry-run`` prints the gcloud
commands instead of running them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
TARBALL = "scalinglab-src.tar.gz"


def tpu_commands(args: argparse.Namespace, command: Sequence[str], exists: bool) -> list[list[str]]:
    """The gcloud command lines, in order, that bring up the TPU VM and run ``command`` on all workers."""
    where = ["--zone", args.zone] + (["--project", args.project] if args.project else [])
    cmds: list[list[str]] = []
    if not exists:
        create = ["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, *where,
                  "--accelerator-type", args.accelerator_type, "--version", args.version]
        if args.spot:
            create.append("--spot")
        cmds.append(create)
    cmds.append(["git", "-C", str(REPO_ROOT), "archive", "--format=tar.gz", "-o", TARBALL, "HEAD"])
    cmds.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", TARBALL, f"{args.name}:~/", *where, "--worker=all"])
    install = (
        f"mkdir -p ~/scalinglab && tar xzf ~/{TARBALL} -C ~/scalinglab && cd ~/scalinglab && "
        "python3 -m pip install -q uv && python3 -m uv sync --frozen && "
        f"python3 -m uv pip install --python .venv/bin/python 'jax[tpu]=={args.jax_version}'"
    )
    cmds.append(["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *where, "--worker=all", "--command", install])
    run = "cd ~/scalinglab && " + " ".join(shlex.quote(c) for c in command).replace(
        "scalinglab ", ".venv/bin/scalinglab ", 1
    )
    cmds.append(["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *where, "--worker=all", "--command", run])
    return cmds


def _tpu_exists(args: argparse.Namespace) -> bool:
    where = ["--zone", args.zone] + (["--project", args.project] if args.project else [])
    probe = ["gcloud", "compute", "tpus", "tpu-vm", "describe", args.name, *where, "--format=value(state)"]
    try:
        out = subprocess.run(probe, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        sys.stderr.write("scalinglab-launch-tpu: error: gcloud not found; install the Google Cloud SDK "
                         "or use --dry-run\n")
        raise SystemExit(2)
    return out.returncode == 0 and out.stdout.strip() != ""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="scalinglab-launch-tpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="TPU VM name (reused if it exists)")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default="")
    p.add_argument("--accelerator-type", default="v4-8", help="e.g. v4-8, v4-32, v5litepod-16")
    p.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM software version")
    p.add_argument("--jax-version", default="0.10.2", help="jax[tpu] version installed on the workers")
    p.add_argument("--spot", action="store_true", help="request preemptible capacity (training resumes via --resume)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(own)
    if not command:
        p.error("give the command to run on every worker after --, e.g. -- scalinglab train ...")
    exists = False if args.dry_run else _tpu_exists(args)
    for cmd in tpu_commands(args, command, exists):
        print(shlex.join(cmd))
        if not args.dry_run:
            rc = subprocess.run(cmd, check=False).returncode
            if rc != 0:
                sys.stderr.write(f"scalinglab-launch-tpu: error: command failed with exit code {rc}\n")
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
