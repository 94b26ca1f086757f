"""Tokenizers: exact round trips, vocabulary sizes, reload from disk."""

import numpy as np
import pytest

from scalinglab.data import tokenizers
from scalinglab.errors import UserError

TEXTS = [
    "def f(x):\n    return x + 1  # comment\n",
    "héllo wörld — ünïcode ✓ 日本語 🙂\t\r\n",
    "   leading spaces and trailing   ",
    "",
]


def test_bytes_tokenizer_is_utf8():
    tok = tokenizers.ByteTokenizer()
    for t in TEXTS:
        ids = tok.encode(t)
        assert ids.dtype == np.int32
        assert list(ids) == list(t.encode("utf-8"))  # independent: Python's own UTF-8
        assert tok.decode(ids) == t.encode("utf-8")
    assert tok.vocab_size == 257 and tok.separator_id == 256
    from scalinglab.models.config import BYTE_VOCAB

    assert tok.vocab_size == BYTE_VOCAB


def test_ids_tokenizer():
    tok = tokenizers.IdsTokenizer(32)
    assert tok.vocab_size == 33 and tok.separator_id == 32
    np.testing.assert_array_equal(tok.encode(np.arange(5)), np.arange(5))


def test_bpe_train_round_trip_and_reload(tmp_path):
    corpus = [t * 20 for t in TEXTS] + ["the quick brown fox jumps over the lazy dog " * 50]
    tok = tokenizers.train_bpe(corpus, 300, tmp_path / tokenizers.BPE_FILE)
    assert tok.vocab_size == 300
    assert tok.separator_id == 0
    for t in TEXTS + ["unseen: ÆØÅ ∑ ∫ \x00 \x7f"]:
        ids = tok.encode(t)
        assert tok.decode(ids) == t
        assert tok.separator_id not in ids
        assert ids.max(initial=0) < tok.vocab_size
    # merges compress: fewer tokens than bytes on training-like text
    sample = "the quick brown fox jumps over the lazy dog " * 5
    assert len(tok.encode(sample)) < len(sample.encode()) / 2
    again = tokenizers.load_tokenizer("bpe", tmp_path)
    np.testing.assert_array_equal(again.encode(TEXTS[1]), tok.encode(TEXTS[1]))


def test_bad_tokenizer_inputs(tmp_path):
    with pytest.raises(UserError):
        tokenizers.load_tokenizer("nope", tmp_path)
    with pytest.raises(UserError):
        tokenizers.load_tokenizer("bpe", tmp_path)  # no tokenizer.json
    with pytest.raises(UserError):
        tokenizers.train_bpe(["abc"], 100, tmp_path / "t.json")
