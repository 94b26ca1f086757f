"""Run one scalinglab command as several local CPU processes under ``jax.distributed``.

    scalinglab-launch-local --processes 2 [--devices-per-process 4] -- \\
        scalinglab train --preset gpt2-tiny --steps 50 --out runs/mp

Each process gets ``SCALINGLAB_COORDINATOR`` (localhost and a free port),
``SCALINGLAB_NUM_PROCESSES`` and ``SCALINGLAB_PROCESS_ID``, plus ``JAX_PLATFORMS=cpu`` and
``--xla_force_host_platform_device_count``; this is how multi-host training is tested on one
machine. Exits with the first non-zero exit code (and stops the other processes).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_envs(n: int, devices_per_process: int, port: int, base: dict | None = None) -> list[dict[str, str]]:
    """The environment of each of the ``n`` processes."""
    envs = []
    for i in range(n):
        env = dict(os.environ if base is None else base)
        env.update(
            {
                "SCALINGLAB_COORDINATOR": f"127.0.0.1:{port}",
                "SCALINGLAB_NUM_PROCESSES": str(n),
                "SCALINGLAB_PROCESS_ID": str(i),
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}",
            }
        )
        envs.append(env)
    return envs


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="scalinglab-launch-local", description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--devices-per-process", type=int, default=1)
    p.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
    args = p.parse_args(own)
    if not command:
        p.error("give the command after --, e.g. -- scalinglab train ...")
    if command[0] == "scalinglab":
        command = [sys.executable, "-m", "scalinglab.cli", *command[1:]]
    envs = process_envs(args.processes, args.devices_per_process, args.port or free_port())
    procs = [subprocess.Popen(command, env=env) for env in envs]
    rc = 0
    while procs:
        for proc in list(procs):
            code = proc.poll()
            if code is None:
                continue
            procs.remove(proc)
            if code != 0 and rc == 0:
                rc = code
                for other in procs:
                    other.terminate()
        time.sleep(0.1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
