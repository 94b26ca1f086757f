"""The ``files`` builder: every format and tokenizer kind counted exactly against the tokenizer
libraries themselves, split by document, resumable after SIGKILL, bad input → exit 2, and
``train`` picking the vocabulary size up from the dataset."""

import collections
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from scalinglab.cli import main

WORDS = (
    "the of and to in is was for on that with by as at from his her it an be this which or had are "
    "were café naïve € — 1999 2024 x+y=z (a) [b] {c} quick brown fox jumps over lazy dog"
).split()


def make_docs(n, seed, prefix="doc"):
    """``n`` distinct documents: random words, some lines, non-ASCII, lengths 1..60 words."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(1, 60)))
        lines = [" ".join(chunk) for chunk in np.array_split(words, int(rng.integers(1, 4))) if len(chunk)]
        docs.append(f"{prefix}{i}: " + "\n".join(lines))
    return docs


def write_jsonl(path, docs, opener=open, extra_lines=()):
    with opener(path, "wt", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "text": d, "meta": {"n": len(d)}}) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def write_zst(path, docs):
    import zstandard

    raw = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))


def write_parquet(path, docs, column="text"):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: docs, "n": list(range(len(docs)))}), path, row_group_size=7)


DOCS = make_docs(150, seed=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """DOCS in every format, sorted file names in document order."""
    root = tmp_path_factory.mktemp("files_corpus")
    write_jsonl(root / "a.jsonl", DOCS[:40], extra_lines=["", "   "])  # blank lines are skipped
    write_jsonl(root / "b.jsonl.gz", DOCS[40:70], opener=gzip.open)
    write_zst(root / "c.jsonl.zst", DOCS[70:100])
    write_parquet(root / "d.parquet", DOCS[100:130])
    for i in range(130, 150):
        sub = root / ("e" if i < 140 else "f")
        sub.mkdir(exist_ok=True)
        (sub / f"{i}.{'txt' if i < 140 else 'md'}").write_text(DOCS[i], encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory):
    """Tokenizers trained here on DOCS: HF byte-level BPE, SentencePiece BPE, a tiktoken BPE file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("tokenizers")
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(
        DOCS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    hf.save(str(root / "hf.json"))

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(line for d in DOCS for line in d.split("\n")),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (root / "sp.model").write_bytes(model.getvalue())

    from tiktoken._educational import bpe_train

    ranks = bpe_train("\n".join(DOCS[:60]), 300, TIKTOKEN_PATTERN, visualise=None)
    (root / "mini.tiktoken").write_bytes(
        b"".join(
            __import__("base64").b64encode(t) + f" {r}\n".encode() for t, r in sorted(ranks.items(), key=lambda x: x[1])
        )
    )
    return root


TIKTOKEN_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def reference(kind, root):
    """(config, encode, separator id, vocab size) straight from the tokenizer library."""
    if kind == "bytes":
        return {"tokenizer": "bytes"}, lambda t: list(t.encode()), 256, 257
    if kind == "hf":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(root / "hf.json"))
        return (
            {"tokenizer": str(root / "hf.json")},
            lambda t: tok.encode(t, add_special_tokens=False).ids,
            tok.token_to_id("<|endoftext|>"),
            tok.get_vocab_size(),
        )
    if kind == "sentencepiece":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(root / "sp.model"))
        return {"tokenizer": str(root / "sp.model")}, lambda t: sp.encode(t), sp.eos_id(), sp.get_piece_size()
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(root / "mini.tiktoken"))
    enc = tiktoken.Encoding(
        "ref", pat_str=TIKTOKEN_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": len(ranks)}
    )
    cfg = {"tokenizer": str(root / "mini.tiktoken"), "tiktoken_pattern": TIKTOKEN_PATTERN}
    return cfg, enc.encode_ordinary, len(ranks), len(ranks) + 1


def in_validation(text, fraction):
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    return h < fraction * 2**64


def records(ds, split):
    src = ds.data_source(split)
    return [tuple(int(i) for i in ds.document_tokens(src[k])[:-1]) for k in range(len(src))]


@pytest.mark.parametrize("kind", ["bytes", "hf", "sentencepiece", "tiktoken"])
def test_exact_counts_every_format(kind, corpus, tokenizer_files, tmp_path):
    from scalinglab.data import pipeline

    cfg, encode, sep, vocab = reference(kind, tokenizer_files)
    cfg = {
        **cfg,
        "files": f"{corpus}/*.jsonl*,{corpus}/d.parquet,{corpus}/e/*.txt,{corpus}/f/*.md",
        "validation_fraction": 0.25,
        "unit_bytes": 1500,
    }  # several units per jsonl, parquet groups
    ds = pipeline.prepare_dataset(f"files/{kind}", tmp_path, cfg, workers=1)
    s = ds.stats()
    assert (s["tokenizer"], s["vocab_size"], s["separator_id"]) == (kind, vocab, sep)
    val = [in_validation(d, 0.25) for d in DOCS]
    for split, want in (("train", False), ("validation", True)):
        expected = [tuple(encode(d)) for d, v in zip(DOCS, val) if v == want]
        assert s["splits"][split] == {
            "documents": len(expected),
            "document_tokens": sum(map(len, expected)),
            "tokens": sum(map(len, expected)) + len(expected),
        }
        assert records(ds, split) == expected  # the library's ids, in corpus order
    assert s["total_tokens"] == sum(len(encode(d)) + 1 for d in DOCS)
    assert s["sources"] == {"files": 24, "bytes": sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())}

    # a training window decodes to source text: whole documents between separators exactly
    it = pipeline.make_train_iterator(ds, seq_len=1024, global_batch_size=1, seed=3)
    window = next(it)[0]
    it.close()
    cuts = np.flatnonzero(window == sep)
    assert len(cuts) >= 3
    whole = [window[a + 1 : b] for a, b in zip(cuts[:-1], cuts[1:])]

    def text(ids):
        out = ds.tokenizer.decode(ids)
        return out.decode() if isinstance(out, bytes) else out

    for ids in whole:
        assert text(ids) in DOCS
    if kind != "bytes":
        assert any(text(window[cuts[-1] + 1 :]) in d for d in DOCS)  # the cut tail is a piece of one document


def test_split_by_document(tmp_path):
    from scalinglab.data import pipeline

    one = make_docs(2000, seed=7)
    write_jsonl(tmp_path / "one.jsonl", one)
    ds = pipeline.prepare_dataset(
        "files/one", tmp_path / "d", {"files": str(tmp_path / "one.jsonl"), "validation_fraction": 0.1}
    )
    frac = ds.n_documents("validation") / 2000
    assert abs(frac - 0.1) < 0.02  # binomial sd 0.0067
    assert ds.n_documents("validation") == sum(in_validation(d, 0.1) for d in one)

    parts = [make_docs(700, seed=10 + k, prefix=f"f{k}-") for k in range(3)]
    for k, docs in enumerate(parts):
        write_jsonl(tmp_path / f"p{k}.jsonl", docs)
    ds = pipeline.prepare_dataset(
        "files/three", tmp_path / "d", {"files": str(tmp_path / "p*.jsonl"), "validation_fraction": 0.2}, workers=1
    )
    per_file = collections.Counter(ds.tokenizer.decode(r).decode().split("-")[0] for r in records(ds, "validation"))
    assert abs(sum(per_file.values()) / 2100 - 0.2) < 0.03  # binomial sd 0.0087
    assert all(90 < per_file[f"f{k}"] < 190 for k in range(3))  # every file is split, not assigned whole

    ds = pipeline.prepare_dataset(
        "files/byfile",
        tmp_path / "d",
        {"files": str(tmp_path / "p*.jsonl"), "validation_files": str(tmp_path / "p2.jsonl")},
    )
    assert ds.n_documents("validation") == 700 and ds.n_documents("train") == 1400
    assert {ds.tokenizer.decode(r).decode().split("-")[0] for r in records(ds, "validation")} == {"f2"}


def _shard_bytes(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_sigkill_mid_prepare_then_rerun_is_identical(tmp_path, tokenizer_files):
    for k in range(6):
        write_jsonl(tmp_path / f"s{k}.jsonl", make_docs(600, seed=100 + k))
    args = [
        "data",
        "prepare",
        "--dataset",
        "files/big",
        "--config",
        f"files={tmp_path}/s*.jsonl",
        "--config",
        f"tokenizer={tokenizer_files / 'hf.json'}",
        "--config",
        "unit_bytes=8000",
    ]
    assert main([*args, "--data-dir", str(tmp_path / "ref"), "--workers", "1"]) == 0
    ref = tmp_path / "ref" / "files" / "big"

    data = tmp_path / "killed"
    staging = data / "files" / ".big.prepare"
    cmd = [sys.executable, "-m", "scalinglab.cli", *args, "--data-dir", str(data), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    children = []
    while proc.poll() is None and time.time() < deadline:
        if len(list((staging / "shards").glob("*.json"))) >= 3:
            children = psutil.Process(proc.pid).children(recursive=True)
            os.kill(proc.pid, signal.SIGKILL)  # the main process only, as `kill -9 PID` would
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert len(children) >= 2 and not alive  # the workers die with their parent
    assert not (data / "files" / "big").exists()  # nothing in place after the kill
    n_units = len(json.loads((staging / "plan.json").read_text())["plan"]["units"])
    done = sorted((staging / "shards").glob("*.json"))
    assert 3 <= len(done) < n_units
    kept = {
        p.name: p.stat().st_ino
        for p in (staging / "shards").glob("*.array_record")
        if p.with_name(p.name.split(".")[0] + ".json") in done
    }

    assert main([*args, "--data-dir", str(data), "--workers", "2"]) == 0
    out = data / "files" / "big"
    assert not staging.exists()
    assert _shard_bytes(out) == _shard_bytes(ref)  # manifest, tokenizer and every shard, byte for byte
    assert kept and all((out / "shards" / name).stat().st_ino == ino for name, ino in kept.items())  # resumed


BAD = {
    "malformed_line": ({"a.jsonl": ['{"text": "ok"}', '{"text": "fine"}', '{"text": broken']}, {}, "a.jsonl:3:"),
    "missing_field": ({"a.jsonl": ['{"text": "ok"}', '{"body": "no text"}']}, {}, "a.jsonl:2: no field 'text'"),
    "not_a_string": ({"a.jsonl": ['{"text": 5}']}, {}, "a.jsonl:1: field 'text' is not a string (int)"),
    "parquet_column": ({"a.parquet": None}, {"text_field": "body"}, "no column 'body'"),
    "empty_corpus": ({"a.jsonl": ['{"text": ""}'], "b.txt": ""}, {}, "empty corpus"),
    "no_match": ({}, {}, "no files match"),
    "corrupt_gzip": ({"a.jsonl": ['{"text": "ok"}'] * 50, "b.jsonl.gz": b"not gzip at all"}, {}, "cannot read"),
    "corrupt_parquet": ({"a.parquet": b"PAR1 nonsense"}, {}, "cannot read"),
    "bad_eos": ({"a.jsonl": ['{"text": "ok"}']}, {"tokenizer": "HF", "eos": "<nope>"}, "no token '<nope>'"),
    "no_eos": ({"a.jsonl": ['{"text": "ok"}']}, {"tokenizer": "NOEOS"}, "eos=TOKEN"),
    "sp_bad_eos": ({"a.jsonl": ['{"text": "ok"}']}, {"tokenizer": "SP", "eos": "<nope>"}, "no piece '<nope>'"),
    "offline_name": ({"a.jsonl": ['{"text": "ok"}']}, {"tokenizer": "o200k_base"}, "nothing may be downloaded"),
    "unknown_format": ({"a.csv": "x"}, {"files": "*.csv"}, "unsupported file"),
    "one_split_empty": ({"a.jsonl": ['{"text": "only"}']}, {}, "split is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_and_leaves_nothing(case, tmp_path, tokenizer_files, capsys, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty_cache"))  # no cached encodings
    files, config, expected = BAD[case]
    src = tmp_path / "src"
    src.mkdir()
    for name, content in files.items():
        if content is None:
            write_parquet(src / name, ["a", "b"])
        elif isinstance(content, bytes):
            (src / name).write_bytes(content)
        elif isinstance(content, str):
            (src / name).write_text(content)
        else:
            (src / name).write_text("\n".join(content) + "\n")
    noeos = tmp_path / "noeos.json"
    noeos.write_text((tokenizer_files / "hf.json").read_text().replace("<|endoftext|>", "<|sep|>"))
    subst = {"HF": str(tokenizer_files / "hf.json"), "SP": str(tokenizer_files / "sp.model"), "NOEOS": str(noeos)}
    config = {"files": f"{src}/*", "unit_bytes": "200", **config}
    config = {k: subst.get(v, v) for k, v in config.items()}
    config["files"] = ",".join(f"{src}/{p}" if not p.startswith("/") else p for p in config["files"].split(","))
    data = tmp_path / "data"
    argv = ["data", "prepare", "--dataset", "files/bad", "--data-dir", str(data), "--workers", "1"]
    for k, v in config.items():
        argv += ["--config", f"{k}={v}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err
    assert not data.exists() or [p for p in data.rglob("*") if not p.is_dir()] == []


def test_on_error_skip_counts_bad_records(tmp_path):
    from scalinglab.data import pipeline

    lines = ['{"text": "a b c"}', "{broken", '{"body": 1}', '{"text": ""}'] + [
        json.dumps({"text": d}) for d in make_docs(60, seed=4)
    ]
    (tmp_path / "x.jsonl").write_text("\n".join(lines) + "\n")
    ds = pipeline.prepare_dataset(
        "files/skip",
        tmp_path / "d",
        {"files": str(tmp_path / "x.jsonl"), "on_error": "skip", "validation_fraction": 0.2},
    )
    s = ds.stats()
    assert s["skipped_records"] == {"malformed": 1, "missing_field": 1} and s["empty_documents"] == 1
    assert s["splits"]["train"]["documents"] + s["splits"]["validation"]["documents"] == 61


def test_format_forced_for_c4_style_json_gz(tmp_path):
    from scalinglab.data import pipeline

    docs = make_docs(40, seed=9)
    write_jsonl(tmp_path / "c4-train.00000-of-00002.json.gz", docs[:20], opener=gzip.open)
    write_jsonl(tmp_path / "c4-train.00001-of-00002.json.gz", docs[20:], opener=gzip.open)
    cfg = {"files": str(tmp_path / "c4-train.*.json.gz"), "validation_fraction": 0.3}
    with pytest.raises(Exception, match="unsupported file"):
        pipeline.prepare_dataset("files/c4", tmp_path / "d", cfg)
    ds = pipeline.prepare_dataset("files/c4", tmp_path / "d", {**cfg, "format": "jsonl"})
    assert ds.n_documents("train") + ds.n_documents("validation") == 40
    assert ds.n_tokens("train") + ds.n_tokens("validation") == sum(len(d.encode()) + 1 for d in docs)


def test_stats_cli_reports_tokenizer_and_train_picks_up_vocab(tmp_path, corpus, tokenizer_files, capsys):
    data = str(tmp_path / "data")
    base = [
        "data",
        "prepare",
        "--data-dir",
        data,
        "--config",
        f"files={corpus}/*.jsonl*",
        "--config",
        f"tokenizer={tokenizer_files / 'sp.model'}",
        "--config",
        "validation_fraction=0.3",
    ]
    assert main([*base, "--dataset", "files/sp"]) == 0
    assert main([*base, "--dataset", "files/sp128", "--config", "vocab_multiple=128"]) == 0
    capsys.readouterr()
    assert main(["data", "stats", "--dataset", "files/sp", "--data-dir", data, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["tokenizer"], s["vocab_size"], s["separator_id"]) == ("sentencepiece", 400, 2)
    assert s["tokenizer_spec"]["eos"] == "</s>"
    assert main(["data", "stats", "--dataset", "files/sp128", "--data-dir", data]) == 0
    out = capsys.readouterr().out
    assert "vocab_size 512  separator_id 2" in out and "400 ids" in out

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "gpt2-tiny",
                "--set",
                "n_layer=1",
                "--dataset",
                "files/sp128",
                "--data-dir",
                data,
                "--seq-len",
                "16",
                "--batch-size",
                "8",
                "--steps",
                "2",
                "--eval-batches",
                "1",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["vocab_size"] == 512 and cfg["data"]["vocab_size"] == 512
    train_tokens = json.loads((tmp_path / "data" / "files" / "sp128" / "prepared.json").read_text())["splits"]["train"][
        "tokens"
    ]
    assert cfg["data"]["train_tokens"] == train_tokens
    epochs = 2 * 8 / (train_tokens // 17)  # 2 steps of 8 windows of 17 stream tokens
    assert cfg["data"]["epochs"] == pytest.approx(epochs)
    assert json.loads((run / "summary.json").read_text())["epochs"] == pytest.approx(epochs)
