"""Tokenizers: raw bytes, byte-level BPE (HF ``tokenizers``) and identity ids.

Every tokenizer maps one document to ``np.int32[n_tokens]`` ids (no separator; the
pipeline appends ``separator_id`` after each document) and back, exactly:

* ``bytes``: ids 0..255 are the UTF-8 bytes, 256 is the separator → vocab 257
  (``scalinglab.models.config.BYTE_VOCAB``).
* ``bpe``: byte-level BPE trained offline on the train split with a chosen vocabulary
  size (separator ``<|sep|>`` is id 0); saved as ``tokenizer.json`` beside the prepared
  data and reloaded from there. Byte-level pre-tokenisation makes decode∘encode exact.
* ``ids``: documents that already are token ids ``0..V-1`` (the synthetic source);
  separator ``V`` → vocab ``V + 1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from scalinglab.errors import UserError

BPE_FILE = "tokenizer.json"
SEPARATOR_TEXT = "<|sep|>"
TOKENIZERS = ("bytes", "bpe", "ids")


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, separator 256."""

    name = "bytes"
    vocab_size = 257
    separator_id = 256

    def encode(self, doc: bytes | str) -> np.ndarray:
        if isinstance(doc, str):
            doc = doc.encode("utf-8")
        return np.frombuffer(doc, dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Iterable[int]) -> bytes:
        return np.asarray(ids, dtype=np.uint8).tobytes()


class IdsTokenizer:
    """Identity over ``0..vocab-1`` with separator ``vocab`` (vocab size ``vocab + 1``)."""

    name = "ids"

    def __init__(self, vocab: int):
        self.vocab_size = int(vocab) + 1
        self.separator_id = int(vocab)

    def encode(self, doc: np.ndarray) -> np.ndarray:
        return np.asarray(doc, dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> np.ndarray:
        return np.asarray(ids, dtype=np.int32)


class BpeTokenizer:
    """Byte-level BPE loaded from a ``tokenizer.json`` written by :func:`train_bpe`."""

    name = "bpe"

    def __init__(self, path: str | os.PathLike):
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # missing or unreadable file
            raise UserError(f"cannot load BPE tokenizer {path}: {e}") from None
        self.vocab_size = self._tok.get_vocab_size()
        sep = self._tok.token_to_id(SEPARATOR_TEXT)
        if sep is None:
            raise UserError(f"BPE tokenizer {path} has no {SEPARATOR_TEXT} token")
        self.separator_id = sep

    def encode(self, doc: bytes | str) -> np.ndarray:
        if isinstance(doc, bytes):
            doc = doc.decode("utf-8")
        return np.asarray(self._tok.encode(doc, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, docs: list[bytes | str]) -> list[np.ndarray]:
        texts = [d.decode("utf-8") if isinstance(d, bytes) else d for d in docs]
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def train_bpe(texts: Iterable[bytes | str], vocab_size: int, path: str | os.PathLike) -> BpeTokenizer:
    """Train byte-level BPE with ``vocab_size`` ids (incl. the separator) and save it to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257 + 1:
        raise UserError(f"BPE vocab_size must be at least 258 (256 bytes + separator), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SEPARATOR_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    it = (t.decode("utf-8") if isinstance(t, bytes) else t for t in texts)
    tok.train_from_iterator(it, trainer=trainer)
    from scalinglab.fileio import atomic_write_text

    atomic_write_text(path, tok.to_str())
    return BpeTokenizer(path)


def load_tokenizer(name: str, directory: str | os.PathLike, *, vocab: int | None = None):
    """Reload tokenizer ``name`` (``bytes``, ``bpe``, ``ids``) of a prepared dataset in ``directory``."""
    if name == "bytes":
        return ByteTokenizer()
    if name == "ids":
        if vocab is None:
            raise ValueError("the ids tokenizer needs the source vocabulary size")
        return IdsTokenizer(vocab)
    if name == "bpe":
        return BpeTokenizer(Path(directory) / BPE_FILE)
    raise UserError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
