"""``python -m scalinglab.launch_local``: the launcher in ``scripts/launch_local.py`` (console script
``scalinglab-launch-local``), importable under its old name."""

import sys

from scalinglab.scripts.launch_local import free_port, main, process_envs  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
