"""One entry point per law name (the ``scalinglab fit --law`` choices), on a :class:`RunTable`.

``fit_law(table, law, n_bootstrap=0, level=0.95, seed=0)`` returns the law's plain dict;
``predict_table(result, table)`` gives predicted loss (nats/token) for each row, for the
loss laws (chinchilla and the Kaplan forms).
"""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling import chinchilla, kaplan, quality
from scalinglab.scaling.envelope import fit_envelope
from scalinglab.scaling.flops_model import model_from_table
from scalinglab.scaling.isoflop import fit_isoflop
from scalinglab.scaling.law_names import LAWS, LOSS_LAWS, N_PARAMS
from scalinglab.scaling.load import RunTable, require_points

# ``--params auto``: each law in its paper's convention, so its numbers compare like for like
# with the published ones (Hoffmann et al. 2022 count every parameter; Kaplan et al. 2020 leave
# out the embedding tables; see docs/readme/scaling.md).
PAPER_CONVENTION = {
    "chinchilla": "total",
    "isoflop": "total",
    "envelope": "total",
    "kaplan-n": "non_embedding",
    "kaplan-d": "non_embedding",
    "kaplan-c": "non_embedding",
    "kaplan-nd": "non_embedding",
    "kaplan-ns": "non_embedding",
    "kaplan-cmin": "non_embedding",
}


def resolve_convention(law: str, params: str | None) -> str | None:
    """``"auto"`` → the law's paper convention (:data:`PAPER_CONVENTION`); others unchanged."""
    return PAPER_CONVENTION.get(law, "non_embedding") if params == "auto" else params


def fit_law(
    table: RunTable,
    law: str,
    *,
    n_bootstrap: int = 0,
    level: float = 0.95,
    seed: int = 0,
    starts: np.ndarray | None = None,
    params: str | None = None,
    huber_delta: float = chinchilla.HUBER_DELTA,
    isoflop_keep: int | None = None,
    isoflop_window: float | None = None,
    envelope_method: str = "min",
    bcrit: dict | None = None,
) -> dict:
    """Fit ``law`` to ``table``; UserError for unknown laws or too few points.

    ``params``: the parameter convention N is counted in (``non_embedding``, ``total``,
    ``with_head`` or ``auto``, see :func:`resolve_convention`); ``None`` keeps the table's.
    The result records it as ``params_convention`` (and ``params_source``). Approach 3 gets the
    runs' exact FLOPs per token as a function of N (:mod:`scalinglab.scaling.flops_model`).
    ``kaplan-ns`` / ``kaplan-cmin`` take B_crit(L) from ``bcrit`` (a sweep's fit, see
    :func:`scalinglab.scaling.kaplan.bcrit_from_sweep`) or, when None, from the runs' B_simple.
    """
    if law not in LAWS:
        raise UserError(f"unknown law {law!r}; choose from {', '.join(LAWS)}")
    convention = resolve_convention(law, params)
    if convention is not None:
        table = table.with_params(convention)
    require_points(table, N_PARAMS[law], law)
    row_warnings = quality.check_rows(table, law)  # identical rows, one N or D: the specific message
    require_identifiable(table, law)  # then the distinct-value counts each law needs
    kw = {"n_bootstrap": n_bootstrap, "level": level, "seed": seed}
    if law == "chinchilla":
        result = chinchilla.fit_approach3(
            table.params,
            table.tokens,
            table.loss,
            starts=starts,
            huber_delta=huber_delta,
            flops_model=model_from_table(table),
            flops_range=(float(table.flops.min()), float(table.flops.max())),
            **kw,
        )
    elif law == "isoflop":
        result = fit_isoflop(
            table.params, table.tokens, table.flops, table.loss, keep=isoflop_keep, loss_window=isoflop_window, **kw
        )
    elif law == "envelope":
        result = fit_envelope(table, method=envelope_method, **kw)
    elif law in ("kaplan-ns", "kaplan-cmin"):
        bc = bcrit if bcrit is not None else kaplan.bcrit_from_b_simple(table)
        fit = kaplan.fit_kaplan_ns_table if law == "kaplan-ns" else kaplan.fit_kaplan_cmin
        result = fit(table, bc, **kw)
    else:
        fit = {
            "kaplan-n": kaplan.fit_kaplan_n,
            "kaplan-d": kaplan.fit_kaplan_d,
            "kaplan-c": kaplan.fit_kaplan_c,
            "kaplan-nd": kaplan.fit_kaplan_nd,
        }[law]
        result = fit(table, **kw)
    result["params_convention"] = table.params_convention
    result["params_source"] = table.params_source()
    return quality.apply(result, table, row_warnings)


# Distinct values a law needs along each axis: a power law in N cannot be fitted on one N, and
# approach 3's E + A/N^α + B/D^β needs three N and three D to separate E, A, α (B, β).
_DISTINCT = {
    "chinchilla": {"params": 3, "tokens": 3},
    "kaplan-n": {"params": 2},
    "kaplan-d": {"tokens": 2},
    "kaplan-c": {"flops": 2},
    "kaplan-nd": {"params": 2, "tokens": 2},
    "isoflop": {"params": 3},
    "envelope": {"flops": 2},
}
_AXIS = {"params": "N", "tokens": "D", "flops": "C"}


def require_identifiable(table: RunTable, law: str) -> None:
    """UserError ("cannot identify") when the rows cannot determine ``law``'s parameters: too few
    distinct N, D or C (e.g. 20 identical rows, or every row sharing one N) or a constant loss."""
    for axis, need in _DISTINCT.get(law, {}).items():
        values = np.asarray(getattr(table, axis), dtype=float)
        have = len(np.unique(values[np.isfinite(values)]))
        if have < need:
            raise UserError(
                f"cannot identify {law}: its {len(values)} rows have {have} distinct "
                f"{_AXIS[axis]} value{'s' if have != 1 else ''}, it needs at least {need}"
            )
    if len(np.unique(np.asarray(table.loss, dtype=float))) < 2:
        raise UserError(f"cannot identify {law}: every row has the same loss")


def predict_table(result: dict, table: RunTable) -> np.ndarray:
    """Predicted loss for every row of ``table`` under a loss-law result (N in the result's
    ``params_convention``)."""
    law = result["law"]
    convention = result.get("params_convention")
    if convention and convention != table.params_convention:
        table = table.with_params(convention)
    if law == "chinchilla":
        return chinchilla.predict_loss(result["params"], table.params, table.tokens)
    if law in LOSS_LAWS:
        return kaplan.predict_loss(result, n_params=table.params, n_tokens=table.tokens, flops=table.flops)
    raise UserError(f"law {law} does not predict a loss per run")
