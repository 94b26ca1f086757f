"""``python -m scalinglab.launch_tpu``: the launcher in ``scripts/launch_tpu.py`` (console script
``scalinglab-launch-tpu``), importable under its old name."""

import sys

from scalinglab.scripts.launch_tpu import REPO_ROOT, job_commands, main, node_commands  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
