"""A user's corpus files: list them (globs), cut them into work units, read their documents.

Formats, chosen by the file name (or forced for all files by ``format``): ``.jsonl`` /
``.jsonl.gz`` / ``.jsonl.zst`` (one JSON object per line, the document in ``text_field``; blank
lines are skipped), ``.parquet`` (the document in column ``text_field``), ``.txt`` / ``.md`` (one
document per file, UTF-8, undecodable bytes replaced by U+FFFD). Every path goes through
``etils.epath``, so ``gs://bucket/dir/*.jsonl`` takes the same code as a local path (remote
paths need the filesystem package epath uses, ``gcsfs``).

Work units (:class:`Unit`): an uncompressed ``.jsonl`` file is cut into byte ranges of about
``unit_bytes`` (a line belongs to the range holding its first byte), a ``.parquet`` file into
runs of row groups, a compressed file is one unit, consecutive text files are grouped up to
``unit_bytes``. Units depend only on the files and ``unit_bytes``, never on the worker count,
so a resumed or re-parallelised preparation produces the same documents in the same order.

Bad input raises :class:`~scalinglab.errors.UserError` naming the file and line (or row);
with ``on_error="skip"`` a malformed line or a row without the text field is counted instead.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from scalinglab.errors import UserError

FORMATS = {
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl.gz",
    ".jsonl.zst": "jsonl.zst",
    ".parquet": "parquet",
    ".txt": "text",
    ".md": "text",
}
GLOB_CHARS = "*?["


def epath_of(path: str):
    """``etils.epath.Path`` of a user path (``~`` expanded for local paths)."""
    from etils import epath

    return epath.Path(path if "://" in path else os.path.expanduser(path))


def format_of(path: str, forced: str = "") -> str:
    """The format key of ``path`` (see :data:`FORMATS`) or a :class:`UserError`. ``forced``
    (``jsonl``, ``parquet`` or ``text``) overrides the name, e.g. for C4's ``*.json.gz``; a
    forced ``jsonl`` still takes its compression from a ``.gz`` / ``.zst`` suffix."""
    name = path.rsplit("/", 1)[-1].lower()
    if forced:
        if forced not in ("jsonl", "parquet", "text"):
            raise UserError(f"format must be jsonl, parquet or text, got {forced!r}")
        if forced == "jsonl" and name.endswith((".gz", ".zst")):
            return "jsonl." + name.rsplit(".", 1)[-1]
        return forced
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise UserError(f"unsupported file {path}: expected {', '.join(FORMATS)}")


def expand(patterns: str) -> list[str]:
    """Sorted, de-duplicated files matched by comma-separated globs (a plain path must exist)."""
    out: set[str] = set()
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern:
            continue
        parts = pattern.split("/")
        first = next((i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS)), None)
        if first is None:
            path = epath_of(pattern)
            if not path.is_file():
                raise UserError(f"no such file: {pattern}")
            out.add(os.fspath(path))
            continue
        base = "/".join(parts[:first]) or ("/" if pattern.startswith("/") else ".")
        matches = [os.fspath(p) for p in epath_of(base).glob("/".join(parts[first:])) if p.is_file()]
        if not matches:
            raise UserError(f"no files match {pattern}")
        out.update(matches)
    if not out:
        raise UserError("files= names no files")
    return sorted(out)


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit of work: ``(path, start, end)`` pieces of one format.

    ``start, end``: byte offsets (``jsonl``), row-group indices (``parquet``), or ``0, size``
    (whole files). ``n_bytes``: input bytes it covers (the progress bar's unit).
    """

    fmt: str
    pieces: tuple[tuple[str, int, int], ...]
    n_bytes: int

    def to_json(self) -> dict:
        return {"fmt": self.fmt, "pieces": [list(p) for p in self.pieces], "n_bytes": self.n_bytes}

    @classmethod
    def from_json(cls, d: dict) -> Unit:
        return cls(d["fmt"], tuple((str(p), int(a), int(b)) for p, a, b in d["pieces"]), int(d["n_bytes"]))


def _probe(path: str, forced: str = "") -> tuple[int, float, list[int] | None]:
    """(size in bytes, mtime, compressed bytes per parquet row group or None); reads one byte."""
    p = epath_of(path)
    try:
        st = p.stat()
        with p.open("rb") as f:
            f.read(1)
        groups = None
        if format_of(path, forced) == "parquet":
            import pyarrow.parquet as pq

            with p.open("rb") as f:
                meta = pq.ParquetFile(f).metadata
            groups = [
                sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.num_columns))
                for g in range(meta.num_row_groups)
            ]
    except UserError:
        raise
    except Exception as e:  # OSError, pyarrow's ArrowInvalid, ...
        raise UserError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return int(st.length), float(st.mtime), groups


def probe_files(paths: list[str], forced: str = "", threads: int = 16) -> list[tuple[int, float, list[int] | None]]:
    """:func:`_probe` of every path (in threads: remote stat calls are slow), in order."""
    with ThreadPoolExecutor(max(1, min(threads, len(paths)))) as pool:
        return list(pool.map(lambda p: _probe(p, forced), paths))


def make_units(
    paths: list[str], probes: list[tuple[int, float, list[int] | None]], unit_bytes: int, forced: str = ""
) -> list[Unit]:
    """Cut the files into units of about ``unit_bytes`` input bytes (see the module doc)."""
    units: list[Unit] = []
    texts: list[tuple[str, int, int]] = []
    text_bytes = 0

    def flush_texts():
        nonlocal texts, text_bytes
        if texts:
            units.append(Unit("text", tuple(texts), text_bytes))
        texts, text_bytes = [], 0

    for path, (size, _, groups) in zip(paths, probes):
        fmt = format_of(path, forced)
        if fmt == "text":
            if texts and text_bytes + size > unit_bytes:
                flush_texts()
            texts.append((path, 0, size))
            text_bytes += size
            continue
        flush_texts()
        if fmt == "jsonl":
            for start in range(0, max(size, 1), unit_bytes):
                end = min(size, start + unit_bytes)
                units.append(Unit(fmt, ((path, start, end),), end - start))
        elif fmt == "parquet":
            first, acc = 0, 0
            for g, n in enumerate(groups or []):
                acc += n
                if acc >= unit_bytes or g == len(groups) - 1:
                    units.append(Unit(fmt, ((path, first, g + 1),), acc))
                    first, acc = g + 1, 0
        else:
            units.append(Unit(fmt, ((path, 0, size),), size))
    flush_texts()
    return units


@dataclasses.dataclass
class Document:
    """One document: ``text``, where it came from (``path``, 1-based ``line`` or row), and the
    input bytes read since the previous document (``n_bytes``, for progress)."""

    text: str
    path: str
    line: int
    n_bytes: int


class BadRecord(Exception):
    """A record that is not a document (malformed line, no text field); ``kind`` names which."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _json_text(line: bytes, text_field: str) -> str:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise BadRecord("malformed", f"malformed JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(obj, dict):
        raise BadRecord("malformed", f"a JSON {type(obj).__name__}, not an object")
    text = obj.get(text_field)
    if text is None:
        raise BadRecord("missing_field", f"no field {text_field!r}")
    if not isinstance(text, str):
        raise BadRecord("malformed", f"field {text_field!r} is not a string ({type(text).__name__})")
    return text


def _line_number_at(path: str, offset: int) -> int:
    """1-based number of the line starting at byte ``offset`` of an uncompressed file."""
    n = 1
    with epath_of(path).open("rb") as f:
        remaining = offset
        while remaining > 0:
            block = f.read(min(remaining, 1 << 20))
            if not block:
                break
            n += block.count(b"\n")
            remaining -= len(block)
    return n


class _Counting(io.RawIOBase):
    """Read-only wrapper counting the bytes read from the underlying (compressed) file."""

    def __init__(self, f):
        self._f = f
        self.n_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        self.n_read += n
        return n


def _jsonl_lines(f, start: int, end: int | None) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of the lines whose first byte lies in ``[start, end)`` of binary ``f``."""
    pos = start
    if start > 0:
        f.seek(start - 1)
        pos = start - 1 + len(f.readline())  # the rest of a line that began before start
    while end is None or pos < end:
        line = f.readline()
        if not line:
            return
        yield pos, line
        pos += len(line)


def read_unit(unit: Unit, text_field: str, on_error: str, count_skip: Callable[[str], None]) -> Iterator[Document]:
    """The documents of ``unit`` in order. A bad record raises :class:`UserError` naming file and
    line, or with ``on_error == "skip"`` calls ``count_skip(kind)`` and continues."""
    for path, start, end in unit.pieces:
        try:
            if unit.fmt == "text":
                raw = epath_of(path).read_bytes()
                yield Document(raw.decode("utf-8", errors="replace"), path, 1, len(raw))
            elif unit.fmt == "parquet":
                yield from _read_parquet(path, start, end, text_field, on_error, count_skip)
            else:
                yield from _read_jsonl(unit.fmt, path, start, end, text_field, on_error, count_skip)
        except (UserError, GeneratorExit):
            raise
        except Exception as e:  # OSError, gzip/zstd/arrow decoding errors
            raise UserError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def _read_jsonl(fmt, path, start, end, text_field, on_error, count_skip) -> Iterator[Document]:
    with epath_of(path).open("rb") as raw:
        if fmt == "jsonl":
            f, counter, lines = raw, None, _jsonl_lines(raw, start, end)
        else:
            counter = _Counting(raw)
            if fmt == "jsonl.gz":
                f = gzip.GzipFile(fileobj=io.BufferedReader(counter, 1 << 20))
            else:
                import zstandard

                f = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(counter), 1 << 20)
            lines = _jsonl_lines(f, 0, None)
        line_no = None  # computed lazily: only an error message needs it
        last = start
        for k, (offset, line) in enumerate(lines):
            if not line.strip():
                continue
            try:
                text = _json_text(line, text_field)
            except BadRecord as bad:
                if on_error == "skip":
                    count_skip(bad.kind)
                    continue
                if fmt == "jsonl":
                    line_no = _line_number_at(path, offset)
                else:
                    line_no = k + 1
                raise UserError(f"{path}:{line_no}: {bad} (--config on_error=skip skips such lines)") from None
            if counter is None:
                n, last = offset + len(line) - last, offset + len(line)
            else:
                n, last = counter.n_read - last, counter.n_read
            yield Document(text, path, k + 1, n)


def _read_parquet(path, first, stop, text_field, on_error, count_skip) -> Iterator[Document]:
    import pyarrow.parquet as pq

    with epath_of(path).open("rb") as raw:
        pf = pq.ParquetFile(raw)
        if text_field not in pf.schema_arrow.names:
            raise UserError(f"{path}: no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names[:10])})")
        meta = pf.metadata
        row0 = sum(meta.row_group(g).num_rows for g in range(first))
        for g in range(first, stop):
            group_bytes = sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.num_columns))
            values = pf.read_row_group(g, columns=[text_field]).column(0).to_pylist()
            for i, text in enumerate(values):
                n = group_bytes if i == 0 else 0
                if not isinstance(text, str):
                    kind = "missing_field" if text is None else "malformed"
                    if on_error == "skip":
                        count_skip(kind)
                        continue
                    raise UserError(
                        f"{path}: row {row0 + i + 1} has no text in column {text_field!r} "
                        "(--config on_error=skip skips such rows)"
                    )
                yield Document(text, path, row0 + i + 1, n)
            row0 += len(values)
