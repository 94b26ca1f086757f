"""Optional Weights & Biases logging of a run's metrics (``--wandb PROJECT``, the ``wandb`` extra).

wandb is imported only when a run asks for it; without the package ``--wandb`` is a user error
that says how to install it. Every numeric value of each ``metrics.jsonl`` record is logged at
its ``step``. The W&B run id is kept in ``<run dir>/wandb/run_id``, so a resumed run continues the
same W&B run. wandb's own environment variables apply: ``WANDB_MODE=offline`` logs into
``<run dir>/wandb/`` without any network (``wandb sync`` uploads it later), ``WANDB_ENTITY``,
``WANDB_API_KEY``...
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_text

INSTALL_HINT = "pip install 'scalinglab[wandb]' (in a checkout: uv sync --extra wandb)"
RUN_ID_FILE = Path("wandb") / "run_id"


def require_wandb() -> Any:
    """The ``wandb`` module, or UserError saying how to install it."""
    try:
        import wandb
    except ImportError:
        raise UserError(f"--wandb needs the wandb package: {INSTALL_HINT}") from None
    return wandb


class WandbLogger:
    """One W&B run mirroring one training run's metrics (the main process only)."""

    def __init__(self, project: str, run_dir: str | Path, *, name: str, config: Mapping[str, Any], resume: bool):
        wandb = require_wandb()
        run_dir = Path(run_dir)
        id_path = run_dir / RUN_ID_FILE
        run_id = id_path.read_text().strip() if resume and id_path.exists() else secrets.token_hex(4)
        atomic_write_text(id_path, run_id + "\n")
        try:
            self.run = wandb.init(
                project=project, name=name, dir=str(run_dir), config=dict(config), id=run_id, resume="allow"
            )
        except Exception as e:  # wandb raises its own error types (not logged in, no network, ...)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(
                f"--wandb {project}: W&B could not start a run ({reason}); run `wandb login` or set WANDB_MODE=offline"
            ) from None

    def log(self, record: Mapping[str, Any]) -> None:
        """Log one JSON-clean metrics record (numbers only; ``step`` becomes W&B's step)."""
        values = {
            k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.run.log(values, step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()
