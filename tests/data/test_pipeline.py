"""grain pipeline: determinism, resume, per-process shards, packing conservation, eval batches."""

import json
import shutil

import grain
import numpy as np
import pytest

from scalinglab.data import pipeline
from scalinglab.errors import UserError

SEQ = 32


def stream(it, n_batches):
    """Flattened tokens of ``n_batches`` batches (rows in order)."""
    return np.concatenate([next(it).reshape(-1) for _ in range(n_batches)])


def split_docs(tokens, sep):
    """Documents (as bytes) between separators; the unfinished last one is dropped."""
    cuts = np.flatnonzero(tokens == sep)
    out, start = [], 0
    for c in cuts:
        out.append(tokens[start:c].astype(np.uint8).tobytes())
        start = c + 1
    return out


def train_texts(ds):
    src = ds.data_source("train")
    return [src[i]["text"] for i in range(len(src))]


def test_document_tokens_are_utf8_plus_separator(text_ds, corpus):
    _, texts = corpus
    src = text_ds.data_source("train")
    for i in range(len(src)):
        rec = src[i]
        expected = list(texts[rec["path"].decode()].encode("utf-8")) + [256]
        assert list(text_ds.document_tokens(rec)) == expected


def test_same_seed_identical_different_seed_different(text_ds):
    kw = dict(seq_len=SEQ, global_batch_size=4, shuffle_window=1)  # document order visible in the stream
    a = pipeline.make_train_iterator(text_ds, seed=0, **kw)
    b = pipeline.make_train_iterator(text_ds, seed=0, **kw)
    c = pipeline.make_train_iterator(text_ds, seed=1, **kw)
    sa, sb, sc = stream(a, 60), stream(b, 60), stream(c, 60)
    assert sa.dtype == np.int32
    np.testing.assert_array_equal(sa, sb)
    da, dc = split_docs(sa, 256), split_docs(sc, 256)
    assert len(da) >= 5 and da[:5] != dc[:5]


def test_batches_shape_and_epochs_reshuffled(text_ds):
    n = text_ds.n_documents("train")
    it = pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=4, seed=3, shuffle_window=1)
    b = next(it)
    assert b.shape == (4, SEQ + 1) and b.dtype == np.int32
    toks = np.concatenate([b.reshape(-1), stream(it, 2 * text_ds.n_tokens("train") // (4 * (SEQ + 1)) + 2)])
    docs = split_docs(toks, 256)
    assert len(docs) >= 2 * n
    everything = sorted(train_texts(text_ds))
    assert sorted(docs[:n]) == everything  # epoch 1: every document exactly once
    assert sorted(docs[n : 2 * n]) == everything  # epoch 2 too
    assert docs[:n] != docs[n : 2 * n]  # in a different order


def test_stream_is_documents_in_order_without_loss(text_ds):
    """Flattened batches == concatenation of (doc + separator) in the shuffled order."""
    it = pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=2, seed=7, shuffle_window=1)
    src = text_ds.data_source("train")
    order = pipeline.document_order(text_ds, seed=7)
    n = text_ds.n_documents("train")
    expected = np.concatenate(
        [np.frombuffer(src[int(order[j])]["text"], np.uint8).astype(np.int32).tolist() + [256] for j in range(2 * n)]
    )
    got = stream(it, len(expected) // (2 * (SEQ + 1)))
    np.testing.assert_array_equal(got, expected[: len(got)])


def test_window_shuffle_permutes_windows_within_blocks(text_ds):
    """With shuffle_window W, each block of W windows is a permutation of the unshuffled block."""
    w, n_blocks = 8, 6
    plain = pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=2, seed=4, shuffle_window=1)
    mixed = pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=2, seed=4, shuffle_window=w)
    rows_plain = np.concatenate([next(plain) for _ in range(n_blocks * w // 2)])
    rows_mixed = np.concatenate([next(mixed) for _ in range(n_blocks * w // 2)])
    assert not np.array_equal(rows_plain, rows_mixed)
    for k in range(n_blocks):
        block = slice(k * w, (k + 1) * w)
        key = lambda rows: sorted(map(bytes, rows.astype(np.int32)))  # noqa: E731
        assert key(rows_plain[block]) == key(rows_mixed[block])


@pytest.mark.parametrize("k", [0, 7, 190])  # fresh; mid-epoch; after the first epoch boundary
def test_resume_after_k_batches(text_ds, k):
    a = pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=2, seed=0)
    for _ in range(k):
        next(a)
    state = json.loads(json.dumps(a.get_state()))  # must survive JSON
    ref = [next(a) for _ in range(12)]
    b = pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=2, seed=0)
    next(b)  # a used iterator is rewound too
    b.set_state(state)
    for r in ref:
        np.testing.assert_array_equal(next(b), r)


def test_set_state_rejects_other_run(text_ds):
    a = pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=2, seed=0)
    next(a)
    b = pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=2, seed=1)
    with pytest.raises(UserError, match="seed"):
        b.set_state(a.get_state())
    with pytest.raises(UserError):
        b.set_state({"garbage": 1})


@pytest.mark.parametrize("n_proc", [2, 4])
def test_process_shards_disjoint_and_cover_epoch(text_ds, n_proc):
    n = text_ds.n_documents("train")
    assert n % n_proc  # uneven shards are the interesting case
    seen = []
    for p in range(n_proc):
        it = pipeline.make_train_iterator(
            text_ds,
            seq_len=SEQ,
            global_batch_size=8,
            seed=2,
            process_index=p,
            process_count=n_proc,
            shuffle_window=1,
        )
        want = len(range(p, n, n_proc))  # this process's share of the first global epoch
        toks = np.zeros(0, np.int32)
        while len(split_docs(toks, 256)) < want:
            b = next(it)
            assert b.shape == (8 // n_proc, SEQ + 1)
            toks = np.concatenate([toks, b.reshape(-1)])
        seen.append(split_docs(toks, 256)[:want])
    flat = [d for docs in seen for d in docs]
    assert len(flat) == n == len(set(flat))  # disjoint, no duplicates
    assert sorted(flat) == sorted(train_texts(text_ds))  # every document once


def test_packing_conserves_tokens(text_ds):
    src = text_ds.data_source("train")
    docs = [text_ds.document_tokens(src[i]) for i in range(len(src))]
    n_in = sum(len(d) for d in docs)
    ds = grain.MapDataset.source(docs).map(lambda d: {"tokens": d}).to_iter_dataset()
    windows = list(pipeline.pack(ds, SEQ))
    full = [w for w in windows if (w["tokens_segment_ids"] > 0).all()]
    tail = [w for w in windows if not (w["tokens_segment_ids"] > 0).all()]
    assert len(tail) <= 1 and len(full) + len(tail) == len(windows)
    n_tail = int((tail[0]["tokens_segment_ids"] > 0).sum()) if tail else 0
    assert n_tail <= SEQ  # the documented tail: < one window
    assert len(full) * (SEQ + 1) + n_tail == n_in
    out = np.concatenate([w["tokens"][w["tokens_segment_ids"] > 0] for w in windows])
    np.testing.assert_array_equal(out, np.concatenate(docs))
    assert all(w["tokens"].shape == (SEQ + 1,) for w in windows)


def test_eval_batches_fixed_and_from_validation(text_ds):
    val = text_ds.data_source("validation")
    one_pass = np.concatenate([text_ds.document_tokens(val[i]) for i in range(len(val))])
    assert len(one_pass) == text_ds.n_tokens("validation")
    n_b, bs = 3, 4
    need = n_b * bs * (SEQ + 1)
    expected = np.tile(one_pass, need // len(one_pass) + 1)[:need]  # read again from the start when short
    e1 = pipeline.make_eval_batches(text_ds, seq_len=SEQ, batch_size=bs, n_batches=n_b)
    e2 = pipeline.make_eval_batches(text_ds, seq_len=SEQ, batch_size=bs, n_batches=n_b)
    assert e1.shape == (n_b, bs, SEQ + 1) and e1.dtype == np.int32
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(e1.reshape(-1), expected)


def test_token_accounting(text_ds, corpus, markov_ds):
    _, texts = corpus
    s = text_ds.stats()
    total_bytes = sum(len(t.encode("utf-8")) for t in texts.values())
    assert s["splits"]["train"]["document_tokens"] + s["splits"]["validation"]["document_tokens"] == total_bytes
    assert s["total_tokens"] == total_bytes + len(texts)  # one separator per document
    assert s["splits"]["train"]["documents"] + s["splits"]["validation"]["documents"] == len(texts)
    assert pipeline.tokens_per_batch(16, 128) == 16 * 128
    m = markov_ds.stats()
    assert m["splits"]["train"]["tokens"] == 12 * (300 + 1)
    assert markov_ds.vocab_size == 9 and markov_ds.separator_id == 8


def test_bad_arguments(text_ds):
    with pytest.raises(UserError, match="divisible"):
        pipeline.make_train_iterator(text_ds, seq_len=SEQ, global_batch_size=6, seed=0, process_count=4)
    with pytest.raises(UserError):
        pipeline.make_train_iterator(text_ds, seq_len=0, global_batch_size=4, seed=0)
    with pytest.raises(UserError):
        pipeline.make_eval_batches(text_ds, seq_len=SEQ, batch_size=4, n_batches=0)


def test_missing_and_corrupt_data_name_the_prepare_command(tmp_path, text_ds):
    with pytest.raises(UserError, match="scalinglab data prepare --dataset local_text"):
        pipeline.load_dataset("local_text", tmp_path)
    copy = tmp_path / "local_text" / "tiny"
    shutil.copytree(text_ds.directory, copy)
    assert pipeline.load_dataset("local_text/tiny", tmp_path).n_documents() == text_ds.n_documents()
    shard = next(copy.rglob("*-train.array_record-*"))
    shard.write_bytes(b"not an array record")
    with pytest.raises(UserError, match="corrupt.*scalinglab data prepare --dataset local_text/tiny"):
        pipeline.load_dataset("local_text/tiny", tmp_path)
    (copy / "prepared.json").write_text('{"format_version": 1, "name": ')
    with pytest.raises(UserError, match="corrupt.*scalinglab data prepare --dataset local_text/tiny"):
        pipeline.load_dataset("local_text/tiny", tmp_path)


def test_data_dir_resolution(monkeypatch, tmp_path):
    from scalinglab.data import datadir

    monkeypatch.setenv("SCALINGLAB_DATA_DIR", str(tmp_path / "env"))
    assert datadir.resolve_data_dir() == tmp_path / "env"
    assert datadir.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("SCALINGLAB_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert datadir.resolve_data_dir() == tmp_path / "home" / ".cache" / "scalinglab" / "data"
    assert datadir.dataset_dir("synthetic_markov", tmp_path) == tmp_path / "synthetic_markov" / "default"
    with pytest.raises(UserError):
        datadir.split_name("a/b/c")
    with pytest.raises(UserError):
        datadir.split_name("../etc")
