"""TFDS builder ``local_text``: documents read from local text files (no download).

Documents are files cut at line boundaries into chunks of at most ``chunk_bytes`` UTF-8 bytes
(a longer single line is a chunk of its own; ``chunk_bytes=0`` keeps whole files), so the
document shuffle mixes files: without it one 700 KB file (``pydoc_data/topics.py``) would fill
hundreds of consecutive training batches. Features ``text`` (UTF-8; undecodable bytes are
replaced by U+FFFD) and ``path`` (the file's path relative to ``root``; all chunks of a file
share it and its split). Files are listed with ``root.glob(pattern)``,
sorted, filtered (``exclude``: directory names skipped anywhere in the relative path),
and taken in sorted order until ``max_bytes`` bytes of text are collected. The split is
deterministic: a file goes to ``validation`` when the first 8 bytes of SHA-1(relative
path) as a fraction of 2**64 are below ``validation_fraction``, else to ``train``.

Default config: the running interpreter's standard library ``*.py`` files
(``sysconfig.get_paths()['stdlib']``), excluding ``site-packages``, test suites and
IDLE, capped at 16 MB (about 11 MB on CPython 3.11), 2 % validation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sysconfig
from pathlib import Path

import tensorflow_datasets as tfds

from scalinglab.data.tfds_compat import OfflineBuilderMixin
from scalinglab.errors import UserError

DEFAULT_EXCLUDE = "site-packages,dist-packages,test,tests,idlelib,__pycache__"


def stdlib_root() -> str:
    """The running interpreter's standard-library directory."""
    return sysconfig.get_paths()["stdlib"]


@dataclasses.dataclass(eq=False)
class LocalTextConfig(tfds.core.BuilderConfig):
    """Which files become documents (sizes in bytes; empty ``root`` = the stdlib)."""

    root: str = ""
    pattern: str = "**/*.py"
    exclude: str = DEFAULT_EXCLUDE
    max_bytes: int = 16_000_000
    validation_fraction: float = 0.02
    chunk_bytes: int = 4096


def split_chunks(text: str, chunk_bytes: int) -> list[str]:
    """``text`` cut at line ends into consecutive chunks of ≤ ``chunk_bytes`` UTF-8 bytes.

    ``"".join(chunks) == text``; a single line longer than ``chunk_bytes`` is one chunk;
    ``chunk_bytes <= 0`` returns ``[text]``.
    """
    if chunk_bytes <= 0:
        return [text]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8"))
        if current and size + n > chunk_bytes:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += n
    if current:
        chunks.append("".join(current))
    return chunks


def validation_split_of(rel_path: str, fraction: float) -> bool:
    """True when ``rel_path`` belongs to the validation split (hash of the path)."""
    h = int.from_bytes(hashlib.sha1(rel_path.encode("utf-8")).digest()[:8], "big")
    return h / 2.0**64 < fraction


def list_files(cfg: LocalTextConfig) -> list[tuple[str, Path]]:
    """Sorted ``(relative path, path)`` of the files selected by ``cfg`` (after the byte cap)."""
    root = Path(cfg.root or stdlib_root()).expanduser()
    if not root.is_dir():
        raise UserError(f"local_text root {str(root)!r} is not a directory")
    excluded = {e for e in cfg.exclude.split(",") if e}
    files = []
    total = 0
    for path in sorted(root.glob(cfg.pattern)):
        rel = path.relative_to(root).as_posix()
        if excluded.intersection(rel.split("/")[:-1]) or not path.is_file():
            continue
        size = path.stat().st_size
        if size == 0:
            continue
        if total + size > cfg.max_bytes:
            break
        total += size
        files.append((rel, path))
    if not files:
        raise UserError(f"local_text: no non-empty files match {cfg.pattern!r} under {str(root)!r}")
    return files


class LocalText(OfflineBuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Text files → documents (``text``: bytes, ``path``: str), splits train/validation."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [LocalTextConfig(name="default", version="1.0.0")]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local text files, one document per file.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text(), "path": tfds.features.Text()}),
        )

    def _split_generators(self, dl_manager):
        files = list_files(self.builder_config)
        frac = self.builder_config.validation_fraction
        val = [f for f in files if validation_split_of(f[0], frac)]
        train = [f for f in files if not validation_split_of(f[0], frac)]
        if not train or not val:
            raise UserError(
                f"local_text: {len(files)} files give an empty split "
                f"(train {len(train)}, validation {len(val)}); add files or change validation_fraction"
            )
        return {"train": self._generate_examples(train), "validation": self._generate_examples(val)}

    def _generate_examples(self, files):
        for rel, path in files:
            text = path.read_bytes().decode("utf-8", errors="replace")
            for k, chunk in enumerate(split_chunks(text, self.builder_config.chunk_bytes)):
                yield f"{rel}#{k}", {"text": chunk, "path": rel}
