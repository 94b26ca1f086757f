"""Synthetic run directories in the format of docs/interfaces.md (for tests, docs and demos).

No model is trained: the loss along the run is any function of tokens seen, e.g. a scaling
law, so fits can be checked against the law that generated the runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from scalinglab.rundir import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE


def write_run(
    d: str | Path,
    *,
    n: float = 1.0e6,
    total: float = 1.5e6,
    steps: int = 10,
    tokens_per_step: int = 1000,
    flops_per_token: float = 6.0e6,
    loss_fn: Callable[[float], float] | None = None,
    complete: bool = True,
    eval_every: int = 5,
    batch_size: int = 4,
    seq_len: int = 250,
    extra_fn: Callable[[int, float], dict] | None = None,
) -> Path:
    """Write ``config.json``, ``metrics.jsonl`` (train loss = eval loss + 0.01; eval every
    ``eval_every`` steps and at the last) and, if ``complete``, ``summary.json``.

    ``n`` non-embedding parameters, ``total`` all parameters, ``tokens_per_step`` tokens,
    ``flops_per_token`` training FLOPs per token, ``loss_fn(tokens) -> nats/token``;
    ``extra_fn(step, loss)`` returns more fields for each metrics line (e.g. ``gns_trace``).
    """
    d = Path(d)
    d.mkdir(parents=True)
    loss_fn = loss_fn or (lambda tok: 2.0 + 10.0 / tok**0.3)
    cfg = {
        "name": d.name,
        "model": {"preset": "synthetic"},
        "train": {"batch_size": batch_size, "seq_len": seq_len, "steps": steps, "tokens": steps * tokens_per_step},
        "data": {},
        "accounting": {
            "non_embedding": n,
            "total": total,
            "embedding": total - n,
            "train_flops_per_token": flops_per_token,
        },
    }
    (d / CONFIG_FILE).write_text(json.dumps(cfg))
    lines, evals = [], []
    for s in range(1, steps + 1):
        tok = s * tokens_per_step
        rec = {"step": s, "tokens": tok, "flops": tok * flops_per_token, "loss": loss_fn(tok) + 0.01}
        if extra_fn is not None:
            rec.update(extra_fn(s, rec["loss"]))
        if s % eval_every == 0 or s == steps:
            rec["eval_loss"] = loss_fn(tok)
            evals.append(rec["eval_loss"])
        lines.append(json.dumps(rec))
    (d / METRICS_FILE).write_text("\n".join(lines) + "\n")
    if complete:
        tok = steps * tokens_per_step
        (d / SUMMARY_FILE).write_text(
            json.dumps(
                {
                    "status": "complete",
                    "steps": steps,
                    "tokens": tok,
                    "flops": tok * flops_per_token,
                    "final_loss": loss_fn(tok) + 0.01,
                    "final_eval_loss": evals[-1],
                    "best_eval_loss": min(evals),
                    "non_embedding": n,
                    "total": total,
                    "batch_size": batch_size,
                    "seq_len": seq_len,
                }
            )
        )
    return d
