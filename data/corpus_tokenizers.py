"""Tokenizers a corpus brings: a HF ``tokenizer.json``, a SentencePiece ``.model``, a tiktoken
encoding, or raw ``bytes``; resolved from the user's ``tokenizer=`` / ``eos=`` once, saved beside
the prepared data and reloaded from there.

Every tokenizer here encodes a document *without* added special tokens (no BOS/EOS from a
post-processor) to ids, and the prepared stream appends ``separator_id`` (the EOS token) after
each document. ``vocab_size`` is the number of ids (max id + 1).

Sources (``tokenizer=``):

* ``bytes`` (default): UTF-8 bytes 0..255, separator 256 (no ``eos=``).
* ``PATH.json``: a Hugging Face ``tokenizers`` file. EOS: ``eos=TOKEN``, else the ``eos_token`` of a
  ``tokenizer_config.json`` beside it, else the first special token among :data:`HF_EOS_NAMES`.
* ``PATH.model``: a SentencePiece model. EOS: ``eos=TOKEN``, else the model's own ``eos_id``.
* ``PATH.tiktoken``: tiktoken BPE ranks (``base64(token) rank`` per line). When the file's stem
  is a tiktoken encoding name (``cl100k_base.tiktoken``), that encoding's split pattern and
  special tokens apply; otherwise the pattern of ``tiktoken_pattern`` (an encoding name or a
  regex, default ``cl100k_base``) and one special token, the EOS (default ``<|endoftext|>``), with
  id max rank + 1.
* a tiktoken encoding name (``gpt2``, ``cl100k_base``, ``o200k_base``, ...): only when tiktoken
  finds it in its local cache; nothing is downloaded (a missing file is an error naming the fix).

All paths go through ``etils.epath`` (local or ``gs://``). Saved form in a prepared directory:
the file copied as ``tokenizer.json`` / ``tokenizer.model`` / ``tokenizer.tiktoken`` plus a
JSON-able ``spec`` (kind, EOS, pattern, special tokens, source) stored in the manifest.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from scalinglab.data.tokenizers import ByteTokenizer
from scalinglab.errors import UserError

KINDS = ("bytes", "hf", "sentencepiece", "tiktoken")
SAVED_FILE = {"hf": "tokenizer.json", "sentencepiece": "tokenizer.model", "tiktoken": "tokenizer.tiktoken"}
HF_EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
TIKTOKEN_EOS = "<|endoftext|>"
DEFAULT_TIKTOKEN_PATTERN = "cl100k_base"


def _epath(path: str):
    from etils import epath

    return epath.Path(os.path.expanduser(path) if "://" not in path else path)


def _read_bytes(path: str, what: str) -> bytes:
    try:
        return _epath(path).read_bytes()
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None


class BytesCorpusTokenizer(ByteTokenizer):
    """:class:`~scalinglab.data.tokenizers.ByteTokenizer` with batch encoding and a spec."""

    kind = "bytes"

    def __init__(self):
        self.spec = {"kind": "bytes", "eos": None, "source": "bytes"}

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]


class HfTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` (JSON text ``blob``) with separator ``eos``."""

    kind = "hf"

    def __init__(self, blob: bytes, eos: str, source: str):
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_str(blob.decode("utf-8"))
        except Exception as e:  # the library raises plain Exceptions on bad files
            raise UserError(f"{source} is not a Hugging Face tokenizer.json ({str(e).splitlines()[0]})") from None
        self.vocab_size = max(self._tok.get_vocab(with_added_tokens=True).values()) + 1
        sep = self._tok.token_to_id(eos)
        if sep is None:
            raise UserError(f"tokenizer {source} has no token {eos!r} (eos); name one it has with --config eos=TOKEN")
        self.separator_id = int(sep)
        self.spec = {"kind": "hf", "eos": eos, "source": source}

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def _hf_default_eos(blob: bytes, path: str) -> str:
    """``eos_token`` of a ``tokenizer_config.json`` beside ``path``, else a known special token."""
    config = _epath(path).parent / "tokenizer_config.json"
    with contextlib.suppress(OSError, ValueError):
        eos = json.loads(config.read_text()).get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and eos:
            return eos
    try:
        added = json.loads(blob).get("added_tokens") or []
    except ValueError:
        added = []  # HfTokenizer reports the bad file
    specials = [t.get("content") for t in added if t.get("special")]
    for name in HF_EOS_NAMES:
        if name in specials:
            return name
    listed = ", ".join(repr(s) for s in specials[:8]) or "none"
    raise UserError(
        f"tokenizer {path} names no EOS token (no tokenizer_config.json eos_token, special tokens: {listed}); "
        "name the document separator with --config eos=TOKEN"
    )


class SentencePieceTokenizer:
    """A SentencePiece model (serialized proto ``blob``); separator ``eos`` or the model's EOS."""

    kind = "sentencepiece"

    def __init__(self, blob: bytes, eos: str | None, source: str):
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(blob)
        except Exception:  # RuntimeError / OSError from the C++ side
            raise UserError(f"{source} is not a SentencePiece model") from None
        self.vocab_size = int(self._sp.get_piece_size())
        if eos is None:
            sep = int(self._sp.eos_id())
            if sep < 0:
                raise UserError(f"SentencePiece model {source} has no EOS; name the separator with --config eos=TOKEN")
            eos = self._sp.id_to_piece(sep)
        else:
            sep = int(self._sp.piece_to_id(eos))
            if self._sp.id_to_piece(sep) != eos:  # unknown pieces map to <unk>
                raise UserError(f"SentencePiece model {source} has no piece {eos!r} (eos)")
        self.separator_id = sep
        self.spec = {"kind": "sentencepiece", "eos": eos, "source": source}

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text, out_type=int), dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), out_type=int, num_threads=1)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])


def _parse_tiktoken(blob: bytes, source: str) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    try:
        for line in blob.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except ValueError:
        raise UserError(f"{source} is not a tiktoken BPE file (expected 'base64 rank' lines)") from None
    if not ranks:
        raise UserError(f"{source} is an empty tiktoken BPE file")
    return ranks


def _dump_tiktoken(ranks: dict[bytes, int]) -> bytes:
    return b"".join(
        base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in sorted(ranks.items(), key=lambda x: x[1])
    )


@contextlib.contextmanager
def _tiktoken_offline(ranks: dict[bytes, int] | None = None):
    """Inside: tiktoken never downloads. A cache miss raises :class:`UserError`; with ``ranks``,
    the encoding constructors get these ranks instead of reading any file."""
    import tiktoken.load
    import tiktoken_ext.openai_public as public

    def no_download(blobpath: str) -> bytes:
        raise UserError(f"_offline:{blobpath}")

    saved = tiktoken.load.read_file, public.load_tiktoken_bpe
    tiktoken.load.read_file = no_download
    if ranks is not None:
        public.load_tiktoken_bpe = lambda *a, **k: dict(ranks)
    try:
        yield
    finally:
        tiktoken.load.read_file, public.load_tiktoken_bpe = saved


def _tiktoken_constructors() -> dict[str, Any]:
    from tiktoken import registry

    registry.list_encoding_names()  # fills the constructor table
    return dict(registry.ENCODING_CONSTRUCTORS or {})


def _tiktoken_definition(name: str, ranks: dict[bytes, int] | None = None) -> dict[str, Any]:
    """tiktoken's constructor output for encoding ``name`` (offline; see :func:`_tiktoken_offline`)."""
    try:
        with _tiktoken_offline(ranks):
            return _tiktoken_constructors()[name]()
    except UserError as e:
        if not str(e).startswith("_offline:"):
            raise
        raise UserError(
            f"tiktoken encoding {name!r} is not in tiktoken's local cache and nothing may be downloaded: "
            f"pass its BPE file instead (--config tokenizer=PATH/{name}.tiktoken)"
        ) from None


class TiktokenTokenizer:
    """A tiktoken ``Encoding`` from BPE ranks, a split pattern and special tokens."""

    kind = "tiktoken"

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str,
        special_tokens: dict[str, int],
        eos: str,
        source: str,
        name: str = "custom",
    ):
        import tiktoken

        if eos not in special_tokens:
            raise UserError(
                f"tiktoken encoding {source} has no special token {eos!r} (eos); "
                f"its special tokens: {', '.join(sorted(special_tokens))}"
            )
        try:
            self._enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens)
        except ValueError as e:
            raise UserError(f"bad tiktoken encoding {source}: {e}") from None
        self.ranks = ranks
        self.vocab_size = int(self._enc.n_vocab)
        self.separator_id = int(special_tokens[eos])
        self.spec = {
            "kind": "tiktoken",
            "eos": eos,
            "source": source,
            "name": name,
            "pattern": pattern,
            "special_tokens": dict(special_tokens),
        }

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._enc.encode_ordinary(text), dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._enc.encode_ordinary(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode([int(i) for i in ids])


def _tiktoken_from_file(path: str, blob: bytes, eos: str | None, pattern: str | None) -> TiktokenTokenizer:
    ranks = _parse_tiktoken(blob, path)
    stem = _epath(path).name[: -len(".tiktoken")]
    eos = eos or TIKTOKEN_EOS
    if stem in _tiktoken_constructors() and not pattern:
        d = _tiktoken_definition(stem, ranks)
        return TiktokenTokenizer(ranks, d["pat_str"], d["special_tokens"], eos, path, name=stem)
    pattern = pattern or DEFAULT_TIKTOKEN_PATTERN
    if pattern in _tiktoken_constructors():
        pattern = _tiktoken_definition(pattern, ranks)["pat_str"]
    return TiktokenTokenizer(ranks, pattern, {eos: max(ranks.values()) + 1}, eos, path, name=stem)


def open_tokenizer(source: str, eos: str | None = None, tiktoken_pattern: str | None = None):
    """The tokenizer a user names with ``tokenizer=SOURCE`` (and ``eos=``); see the module doc.

    Raises :class:`UserError` for an unknown kind, an unreadable file, or a missing EOS.
    """
    eos = eos or None
    if source == "bytes":
        if eos is not None:
            raise UserError("the bytes tokenizer has its own separator (id 256): drop --config eos")
        return BytesCorpusTokenizer()
    name = source.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(".json"):
        blob = _read_bytes(source, "tokenizer")
        return HfTokenizer(blob, eos or _hf_default_eos(blob, source), source)
    if name.endswith(".model"):
        return SentencePieceTokenizer(_read_bytes(source, "tokenizer"), eos, source)
    if name.endswith(".tiktoken"):
        return _tiktoken_from_file(source, _read_bytes(source, "tokenizer"), eos, tiktoken_pattern)
    if "/" not in source and source in _tiktoken_constructors():
        d = _tiktoken_definition(source)
        return TiktokenTokenizer(
            d["mergeable_ranks"], d["pat_str"], d["special_tokens"], eos or TIKTOKEN_EOS, source, name=source
        )
    raise UserError(
        f"unknown tokenizer {source!r}: give bytes, a tokenizer.json path, a SentencePiece .model path, "
        "a .tiktoken file, or a tiktoken encoding name available offline"
    )


def serialized(tok) -> bytes:
    """The bytes of ``tok``'s saved file (empty for ``bytes``)."""
    if tok.kind == "hf":
        return tok._tok.to_str().encode("utf-8")
    if tok.kind == "sentencepiece":
        return tok._sp.serialized_model_proto()
    if tok.kind == "tiktoken":
        return _dump_tiktoken(tok.ranks)
    return b""


def save_tokenizer(tok, directory: str | os.PathLike) -> dict[str, Any]:
    """Write ``tok``'s file into local ``directory``; return the spec for :func:`load_saved`."""
    from pathlib import Path

    from scalinglab.fileio import atomic_write_bytes

    if tok.kind in SAVED_FILE:
        atomic_write_bytes(Path(directory) / SAVED_FILE[tok.kind], serialized(tok))
    return {**tok.spec, "vocab_size": int(tok.vocab_size), "separator_id": int(tok.separator_id)}


def load_saved(spec: dict[str, Any], directory: str | os.PathLike):
    """Reload the tokenizer saved by :func:`save_tokenizer` in ``directory`` from its ``spec``."""
    kind = spec.get("kind")
    if kind == "bytes":
        return BytesCorpusTokenizer()
    if kind not in SAVED_FILE:
        raise UserError(f"unknown saved tokenizer kind {kind!r}")
    path = os.path.join(os.fspath(directory), SAVED_FILE[kind])
    blob = _read_bytes(path, "tokenizer")
    if kind == "hf":
        tok = HfTokenizer(blob, spec["eos"], spec["source"])
    elif kind == "sentencepiece":
        tok = SentencePieceTokenizer(blob, spec["eos"], spec["source"])
    else:
        tok = TiktokenTokenizer(
            _parse_tiktoken(blob, path),
            spec["pattern"],
            spec["special_tokens"],
            spec["eos"],
            spec["source"],
            name=spec.get("name", "custom"),
        )
    if tok.vocab_size != spec.get("vocab_size", tok.vocab_size) or tok.separator_id != spec.get(
        "separator_id", tok.separator_id
    ):
        raise UserError(f"saved tokenizer in {directory} does not match its manifest")
    return tok
