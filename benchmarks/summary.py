"""A markdown table of the latest benchmark results (benchmarks/results/*.json → SUMMARY.md).

Each result JSON may carry a ``headline`` list of ``{"metric", "ours", "reference", "ratio", "goal"}``
objects (``reference``/``ratio``/``goal`` optional); those rows are what the README shows.
"""

from __future__ import annotations

import json
from pathlib import Path

from scalinglab.benchmarks.common import RESULTS_DIR
from scalinglab.fileio import atomic_write_text


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def summary_markdown(results_dir: Path = RESULTS_DIR) -> str:
    rows = ["| benchmark | metric | ours | reference | ratio | goal | machine |", "|---|---|---|---|---|---|---|"]
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        m = data.get("machine", {})
        machine = m.get("device_kind") if m.get("platform") not in (None, "cpu") else m.get("cpu", "")
        machine = f"{machine} ({m.get('cpu_count', '?')} cores, {m.get('platform', '?')})"
        for h in data.get("headline", []):
            rows.append(
                f"| {data.get('benchmark', path.stem)} | {h.get('metric', '')} | {_fmt(h.get('ours'))} | "
                f"{_fmt(h.get('reference'))} | {_fmt(h.get('ratio'))} | {_fmt(h.get('goal'))} | {machine} |"
            )
    return "\n".join(rows) + "\n"


def write_summary(results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``SUMMARY.md`` beside the results and return its path."""
    path = results_dir / "SUMMARY.md"
    atomic_write_text(path, summary_markdown(results_dir))
    return path
