"""Prepared datasets on disk: build (TFDS + tokenizer + token counts) and load back.

Layout of ``<data_dir>/<builder>/<variant>/`` (see :mod:`scalinglab.data.datadir`):

* ``tfds/<builder>/<config>/<version>/``: the TFDS dataset (``array_record`` shards,
  ``dataset_info.json``, ``features.json``, ``metadata.json``), read back with
  ``tfds.builder_from_directory(...).as_data_source(split)`` (random access, no TensorFlow);
* ``tokenizer.json``: the BPE tokenizer, when the dataset uses one;
* ``prepared.json``: the manifest (config, tokenizer, vocabulary, exact token counts,
  entropy rate), written last: a dataset without it is not prepared.

Preparation writes into a temporary sibling directory and renames it into place, so an
interrupted ``prepare`` never leaves a half-written dataset.

Token accounting: a split's ``tokens`` is the length of its packed stream, i.e. the sum
over documents of (tokenised length + 1 separator); ``document_tokens`` excludes the
separators.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from scalinglab.data import datadir, markov, tokenizers
from scalinglab.errors import UserError, is_disk_full
from scalinglab.fileio import (
    atomic_write_json,
    outermost_missing,
    prune_empty_dirs,
    read_json,
    swap_into_place,
    temp_dir_beside,
)

MANIFEST = "prepared.json"
FORMAT_VERSION = 2  # 2: local_text documents are line-aligned chunks of files
SPLITS = ("train", "validation")
BUILDERS = ("local_text", "synthetic_markov", "files")
# Named variants (``BUILDER/VARIANT``) with preset configs; any other variant name starts
# from the builder defaults. ``--config`` overrides apply on top.
PRESETS: dict[str, dict[str, Any]] = {
    "local_text/bpe": {"tokenizer": "bpe", "bpe_vocab_size": 2048},
}
_TOKENIZER_KEYS = {"tokenizer": "bytes", "bpe_vocab_size": 2048}


def epochs(n_train_tokens: int, seq_len: int, global_batch_size: int, steps: int) -> float:
    """Passes over a train split of ``n_train_tokens`` stream tokens that ``steps`` global batches
    make: windows read / windows in one epoch (a window is ``seq_len + 1`` stream tokens, see
    :mod:`scalinglab.data.pipeline`); ``inf`` when the split holds no whole window."""
    windows = int(n_train_tokens) // (int(seq_len) + 1)
    return float("inf") if windows == 0 else int(steps) * int(global_batch_size) / windows


def prepare_command(name: str) -> str:
    return f"scalinglab data prepare --dataset {name}"


def _builder_parts(builder: str):
    """(builder class, config class, document feature key, default tokenizer)."""
    if builder == "local_text":
        from scalinglab.data.local_text import LocalText, LocalTextConfig

        return LocalText, LocalTextConfig, "text", "bytes"
    if builder == "synthetic_markov":
        from scalinglab.data.synthetic_markov import SyntheticMarkov, SyntheticMarkovConfig

        return SyntheticMarkov, SyntheticMarkovConfig, "tokens", "ids"
    raise UserError(
        f"unknown dataset builder {builder!r}; choose one of {', '.join(BUILDERS)} "
        "(your own corpus: files/NAME --config files=GLOB)"
    )


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert a ``--config`` value (often a string) to the type of the field's default."""
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"config {key}={value!r}: expected {kind.__name__}") from None


def resolve_config(name: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Full config of dataset ``name``: builder defaults ← preset ← ``config``; typed."""
    builder, _ = datadir.split_name(name)
    _, cfg_cls, _, default_tok = _builder_parts(builder)
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(cfg_cls)
        if f.default is not dataclasses.MISSING
        and f.name not in ("name", "version", "description")
        and not f.name.startswith(("release", "supported", "tags"))
    }
    defaults.update(_TOKENIZER_KEYS, tokenizer=default_tok)
    if builder == "synthetic_markov":  # tokens are already ids: no BPE
        del defaults["bpe_vocab_size"]
    merged = dict(defaults)
    for src in (PRESETS.get(name, {}), dict(config or {})):
        for key, value in src.items():
            if key not in defaults:
                raise UserError(f"unknown config key {key!r} for {builder}; known: {', '.join(sorted(defaults))}")
            merged[key] = _coerce(key, value, defaults[key])
    allowed_tok = ("ids",) if builder == "synthetic_markov" else ("bytes", "bpe")
    if merged["tokenizer"] not in allowed_tok:
        raise UserError(f"{builder} supports tokenizer {' or '.join(allowed_tok)}, got {merged['tokenizer']!r}")
    return merged


def _validate_builder_config(builder: str, cfg: dict[str, Any]) -> None:
    if builder == "synthetic_markov":
        v, k, b = cfg["vocab"], cfg["order"], cfg["branching"]
        if v < 2 or k < 1 or not 2 <= b <= v or cfg["alpha"] <= 0:
            raise UserError("synthetic_markov needs vocab >= 2, order >= 1, 2 <= branching <= vocab, alpha > 0")
        if v**k > markov.MAX_STATES:
            raise UserError(f"synthetic_markov: vocab**order = {v**k} exceeds {markov.MAX_STATES} states")
        if cfg["doc_length"] < k or cfg["train_docs"] < 1 or cfg["validation_docs"] < 1:
            raise UserError("synthetic_markov needs doc_length >= order and at least one document per split")
    else:
        if not 0 < cfg["validation_fraction"] < 1 or cfg["max_bytes"] <= 0:
            raise UserError("local_text needs 0 < validation_fraction < 1 and max_bytes > 0")


def _quiet_tfds():
    """Import TFDS with its progress bars off."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    return tfds


@contextlib.contextmanager
def _tfds_build_output_silenced():
    """Silence TFDS's build chatter (stdout prints, absl warnings) for the duration only."""
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        absl_logging.set_verbosity(level)


def _raise_if_disk_full(e: BaseException, where: Path) -> None:
    """A full disk reported only in an error's text (array_record, tensorstore) as the OSError
    ENOSPC naming ``where`` (the CLI: one line, exit 1)."""
    if is_disk_full(e) and not isinstance(e, OSError):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where)) from e


def prepare_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    workers: int | None = None,
):
    """Build dataset ``name`` under the data dir and return it as a :class:`PreparedDataset`.

    ``config`` overrides builder fields (e.g. ``root``, ``pattern``, ``vocab``, ``order``)
    and the tokenizer (``tokenizer``, ``bpe_vocab_size``); for ``files/NAME`` see
    :mod:`scalinglab.data.files_builder` (``workers``: tokenising processes, that builder only).
    An existing prepared copy is replaced atomically.
    """
    builder_name, _ = datadir.split_name(name)
    if builder_name == "files":
        from scalinglab.data import files_builder

        try:  # its finished shards stay in its work directory: the rerun resumes
            files_builder.prepare(name, data_dir, config, workers)
        except Exception as e:
            _raise_if_disk_full(e, datadir.dataset_dir(name, data_dir).parent)
            raise
        return load_dataset(name, data_dir)
    cfg = resolve_config(name, config)
    _validate_builder_config(builder_name, cfg)
    builder_cls, cfg_cls, feature, _ = _builder_parts(builder_name)
    tfds = _quiet_tfds()

    final = datadir.dataset_dir(name, data_dir)
    created = outermost_missing(final.parent)
    tmp = temp_dir_beside(final, "tmp-")
    try:
        builder_fields = {k: v for k, v in cfg.items() if k not in _TOKENIZER_KEYS}
        tfds_cfg = cfg_cls(name="prepared", version="1.0.0", **builder_fields)
        with _tfds_build_output_silenced():
            builder = builder_cls(data_dir=str(tmp / "tfds"), config=tfds_cfg, file_format="array_record")
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        shutil.rmtree(tmp / "tfds" / "downloads", ignore_errors=True)
        tfds_rel = Path(str(builder.data_dir)).relative_to(tmp).as_posix()
        sources = {s: builder.as_data_source(s) for s in SPLITS}

        tok_name = cfg["tokenizer"]
        if tok_name == "bpe":
            train_src = sources["train"]
            texts = (train_src[i][feature] for i in range(len(train_src)))
            tok = tokenizers.train_bpe(texts, cfg["bpe_vocab_size"], tmp / tokenizers.BPE_FILE)
        else:
            tok = tokenizers.load_tokenizer(tok_name, tmp, vocab=cfg.get("vocab"))

        splits = {}
        for split, source in sources.items():
            n_docs = len(source)
            doc_tokens = 0
            for i in range(n_docs):
                doc_tokens += len(tok.encode(source[i][feature]))
            splits[split] = {
                "documents": n_docs,
                "document_tokens": doc_tokens,
                "tokens": doc_tokens + n_docs,
            }
        entropy = None
        conditional = None
        if builder_name == "synthetic_markov":
            entropy = float(builder.info.metadata["entropy_rate"])
            conditional = [float(h) for h in builder.info.metadata["conditional_entropies"]]
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "builder": builder_name,
            "config": cfg,
            "feature": feature,
            "tfds_dir": tfds_rel,
            "tokenizer": tok_name,
            "vocab_size": int(tok.vocab_size),
            "separator_id": int(tok.separator_id),
            "entropy_rate": entropy,
            "conditional_entropies": conditional,
            "splits": splits,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        swap_into_place(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        prune_empty_dirs(created)
        _raise_if_disk_full(e, final.parent)
        raise
    return load_dataset(name, data_dir)


@dataclasses.dataclass
class PreparedDataset:
    """A prepared dataset: manifest + TFDS data sources + tokenizer.

    ``vocab_size`` and ``separator_id`` in token ids; ``entropy_rate`` in nats/token (the
    synthetic source's exact irreducible loss) or ``None``.
    """

    name: str
    directory: Path
    manifest: dict[str, Any]

    @property
    def builder(self) -> str:
        return self.manifest["builder"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def separator_id(self) -> int:
        return int(self.manifest["separator_id"])

    @property
    def tokenizer_name(self) -> str:
        return self.manifest["tokenizer"]

    @property
    def entropy_rate(self) -> float | None:
        return self.manifest.get("entropy_rate")

    @property
    def conditional_entropies(self) -> list[float] | None:
        return self.manifest.get("conditional_entropies")

    @property
    def stores_tokens(self) -> bool:
        """True when the records are token ids (the ``files`` builder), not text to tokenise."""
        return self.manifest.get("storage") == "tokens"

    @cached_property
    def tokenizer(self):
        if "tokenizer_spec" in self.manifest:
            from scalinglab.data import corpus_tokenizers

            return corpus_tokenizers.load_saved(self.manifest["tokenizer_spec"], self.directory)
        return tokenizers.load_tokenizer(
            self.tokenizer_name, self.directory, vocab=self.manifest["config"].get("vocab")
        )

    @cached_property
    def _tfds_builder(self):
        tfds = _quiet_tfds()
        return tfds.builder_from_directory(str(self.directory / self.manifest["tfds_dir"]))

    def data_source(self, split: str):
        """Random-access TFDS source of ``split`` (``len()``, ``[i]`` → feature dict)."""
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if self.stores_tokens:  # records: bytes of token ids; "[0:n]" spares opening every shard
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            shards = self.manifest["shards"][split]
            return ArrayRecordDataSource([f"{self.directory / rel}[0:{n}]" for rel, n in shards])
        return self._tfds_builder.as_data_source(split)

    def n_documents(self, split: str = "train") -> int:
        return int(self.manifest["splits"][split]["documents"])

    def n_tokens(self, split: str = "train") -> int:
        """Tokens in the packed stream of ``split``: document tokens + one separator per document."""
        return int(self.manifest["splits"][split]["tokens"])

    def document_tokens(self, record: Mapping[str, Any]) -> np.ndarray:
        """int32[n + 1]: one record's tokens (stored, or the tokenised TFDS text), then the separator."""
        if self.stores_tokens:
            ids = np.frombuffer(record, dtype=np.dtype(self.manifest["token_dtype"]).newbyteorder("<"))
        else:
            ids = self.tokenizer.encode(record[self.manifest["feature"]])
        out = np.empty(len(ids) + 1, dtype=np.int32)
        out[:-1] = ids
        out[-1] = self.separator_id
        return out

    def window_entropy(self, seq_len: int) -> float | None:
        """Bayes loss per target of a packed window (nats), synthetic sources only."""
        cond = self.conditional_entropies
        return None if cond is None else markov.window_entropy(cond, seq_len)

    def stats(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "dataset": self.name,
            "builder": self.builder,
            "directory": str(self.directory),
            "config": m["config"],
            "tokenizer": self.tokenizer_name,
            "vocab_size": self.vocab_size,
            "separator_id": self.separator_id,
            "splits": m["splits"],
            "total_tokens": sum(s["tokens"] for s in m["splits"].values()),
            "entropy_rate": self.entropy_rate,
            "conditional_entropies": self.conditional_entropies,
            **{
                k: m[k]
                for k in ("tokenizer_spec", "tokenizer_vocab_size", "skipped_records", "empty_documents", "sources")
                if k in m
            },
        }


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> PreparedDataset:
    """Open prepared dataset ``name``; a missing or corrupt one raises :class:`UserError`
    naming the command ``scalinglab data prepare --dataset NAME``."""
    directory = datadir.dataset_dir(name, data_dir)
    fix = f"run `{prepare_command(name)}`" + (f" with --data-dir {data_dir}" if data_dir else "")
    path = directory / MANIFEST
    if not path.is_file():
        raise UserError(f"dataset {name!r} is not prepared in {directory}: {fix}")
    try:
        manifest = read_json(path)
        ok = (
            manifest.get("format_version") == FORMAT_VERSION
            and manifest.get("name") == name
            and all(s in manifest["splits"] for s in SPLITS)
            and int(manifest["vocab_size"]) > int(manifest["separator_id"]) >= 0
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise UserError(f"prepared dataset {name!r} in {directory} is corrupt: {fix}")
    ds = PreparedDataset(name=name, directory=directory, manifest=manifest)
    try:
        for split in SPLITS:
            source = ds.data_source(split)
            if len(source) != ds.n_documents(split):
                raise ValueError("document count mismatch")
            for i in {0, len(source) - 1}:  # shards open lazily: touch both ends
                ds.document_tokens(source[i])
        if ds.tokenizer.vocab_size != manifest.get("tokenizer_vocab_size", ds.vocab_size):
            raise ValueError("tokenizer vocabulary mismatch")
    except UserError:
        raise UserError(f"prepared dataset {name!r} in {directory} is corrupt: {fix}") from None
    except Exception as e:  # unreadable TFDS files, bad shards, ...
        raise UserError(f"prepared dataset {name!r} in {directory} is corrupt ({type(e).__name__}): {fix}") from None
    return ds
