"""One entry point per law name (the ``scalinglab fit --law`` choices), on a :class:`RunTable`.

``fit_law(table, law, n_bootstrap=0, level=0.95, seed=0)`` returns the law's plain dict;
``predict_table(result, table)`` gives predicted loss (nats/token) for each row, for the
loss laws (chinchilla and the Kaplan forms).
"""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling import chinchilla, kaplan
from scalinglab.scaling.envelope import fit_envelope
from scalinglab.scaling.isoflop import fit_isoflop
from scalinglab.scaling.load import RunTable, require_points

LAWS = ("chinchilla", "kaplan-n", "kaplan-d", "kaplan-c", "kaplan-nd", "isoflop", "envelope")
LOSS_LAWS = ("chinchilla", "kaplan-n", "kaplan-d", "kaplan-c", "kaplan-nd")
N_PARAMS = {"chinchilla": 5, "kaplan-n": 2, "kaplan-d": 2, "kaplan-c": 2, "kaplan-nd": 4, "isoflop": 6,
            "envelope": 2}


def fit_law(table: RunTable, law: str, *, n_bootstrap: int = 0, level: float = 0.95, seed: int = 0,
            starts: np.ndarray | None = None) -> dict:
    """Fit ``law`` to ``table``; UserError for unknown laws or too few points."""
    if law not in LAWS:
        raise UserError(f"unknown law {law!r}; choose from {', '.join(LAWS)}")
    require_points(table, N_PARAMS[law], law)
    kw = {"n_bootstrap": n_bootstrap, "level": level, "seed": seed}
    if law == "chinchilla":
        return chinchilla.fit_approach3(table.params, table.tokens, table.loss, starts=starts, **kw)
    if law == "isoflop":
        return fit_isoflop(table.params, table.tokens, table.flops, table.loss, **kw)
    if law == "envelope":
        return fit_envelope(table, **kw)
    fit = {"kaplan-n": kaplan.fit_kaplan_n, "kaplan-d": kaplan.fit_kaplan_d, "kaplan-c": kaplan.fit_kaplan_c,
           "kaplan-nd": kaplan.fit_kaplan_nd}[law]
    return fit(table, **kw)


def predict_table(result: dict, table: RunTable) -> np.ndarray:
    """Predicted loss for every row of ``table`` under a loss-law result."""
    law = result["law"]
    if law == "chinchilla":
        return chinchilla.predict_loss(result["params"], table.params, table.tokens)
    if law in LOSS_LAWS:
        return kaplan.predict_loss(result, n_params=table.params, n_tokens=table.tokens, flops=table.flops)
    raise UserError(f"law {law} does not predict a loss per run")
