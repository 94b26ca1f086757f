"""A tiny document model rendered twice: Markdown (report.md) and self-contained HTML (report.html).

The report is built once as a list of blocks (headings, paragraphs, tables, figures); the two
renderers walk the same list, so the Markdown and HTML reports can never disagree.
"""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Sequence
from pathlib import Path


@dataclasses.dataclass
class Heading:
    text: str
    level: int = 2


@dataclasses.dataclass
class Paragraph:
    text: str


@dataclasses.dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclasses.dataclass
class Figure:
    path: Path  # PNG file inside the report directory
    caption: str


Block = Heading | Paragraph | Table | Figure


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    """Markdown with figures linked relative to ``base`` (the report directory)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out.extend("| " + " | ".join(str(c) for c in row) + " |" for row in b.rows)
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({b.path.relative_to(base).as_posix()})\n\n*{b.caption}*")
        out.append("")
    return "\n".join(out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
    "figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}code{background:#f4f4f4}"
)


def _inline(text: str) -> str:
    """Escape, then render `code` spans (the only inline markup the report uses)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One HTML file with every figure embedded as a base64 PNG (no external files)."""
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>"
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(
                f"<figure><img alt='{html.escape(b.caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)
