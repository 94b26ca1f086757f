"""The hyperparameter protocol of a ladder directory, in words, for the report (reads JSON only).

Sources: ``plan.json`` (each run's ``hparams``: where its lr, warmup, β2 and batch size came from,
and ``lr_law`` when an lr search set them), ``lr_search/lr_search.json`` (best lr per searched
size) and any batch sweep's ``sweep.json`` (``lr_rule``, ``settings.lr_grid``, ``extended``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scalinglab.fileio import read_json
from scalinglab.rundir import LR_SEARCH_DIR, LR_SEARCH_FILE, PLAN_FILE, SWEEP_FILE


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError, json.JSONDecodeError):
        return None


def describe_protocol(runs_dir: str | Path) -> tuple[list[str], dict[str, Any]]:
    """(sentences for the report, a JSON-able record) describing how hyperparameters were chosen.

    Empty when the directory has neither a plan nor a sweep (e.g. runs from elsewhere).
    """
    runs_dir = Path(runs_dir)
    lines: list[str] = []
    record: dict[str, Any] = {}
    plan = _read(runs_dir / PLAN_FILE)
    if isinstance(plan, dict) and isinstance(plan.get("runs"), list):
        sources: dict[str, set[str]] = {}
        for r in plan["runs"]:
            for key, value in (r.get("hparams") or {}).items():
                sources.setdefault(key, set()).add(str(value))
        record["ladder"] = {k: sorted(v) for k, v in sources.items()}
        law = plan.get("lr_law")
        if law:
            record["lr_law"] = law
            n_search = len(plan.get("lr_search") or [])
            search = _read(runs_dir / LR_SEARCH_DIR / LR_SEARCH_FILE) or {}
            best = ", ".join(
                f"N={s['non_embedding']:,}: {s['best_lr']:.3g}{' (grid edge)' if s['at_edge'] else ''}"
                for s in search.get("sizes", [])
            )
            lines.append(
                f"Learning rate per model size: {n_search} search runs at the smallest budget (a grid of learning "
                f"rates for each searched size; best lr = vertex of a parabola of final loss in log lr: {best}), "
                f"then lr_opt(N) = {law['A']:.4g}·N^{law['k']:.3f} for every ladder run (Porian et al. 2024)."
            )
        elif "lr" in sources:
            lines.append(f"Learning rate: {'; '.join(sorted(sources['lr']))}.")
        for key, label in (("warmup", "Warmup"), ("beta2", "AdamW β2"), ("batch_size", "Batch size")):
            if key in sources:
                lines.append(f"{label}: {'; '.join(sorted(sources[key]))}.")
    for sweep_path in sorted(runs_dir.rglob(SWEEP_FILE)):
        meta = _read(sweep_path)
        if not isinstance(meta, dict) or meta.get("kind") != "batch-sweep":
            continue
        rule = meta.get("lr_rule")
        grid = (meta.get("settings") or {}).get("lr_grid")
        extended = meta.get("extended") or {}
        name = str(sweep_path.parent.relative_to(runs_dir))
        record.setdefault("sweeps", {})[name] = {"lr_rule": rule, "lr_grid": grid, "extended": extended}
        if rule == "grid":
            lines.append(
                f"Batch sweep `{name}`: every batch size trained at {len(grid or [])} learning rates "
                f"({', '.join(f'{f:g}' for f in grid or [])} × the √-rule lr); the steps to each target loss are "
                f"the minimum over a batch size's learning rates (McCandlish et al. 2018; Shallue et al. 2019; "
                f"Zhang et al. 2024)" + (f"; grid extended at B = {', '.join(extended)}" if extended else "") + "."
            )
        elif rule:
            lines.append(
                f"Batch sweep `{name}`: one learning rate per batch size by the {rule} rule (untuned: "
                f"B_crit can be biased, see the README)."
            )
    return lines, record
