"""TFDS builders: work with TensorFlow blocked, deterministic splits, entropy-rate metadata."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scalinglab.data import markov

NO_TF_SCRIPT = textwrap.dedent(
    """
    import json, sys, time

    class HideTF:
        # Wraps a meta-path finder so that it never finds tensorflow: as if not installed.

        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                return None
            return self.finder.find_spec(name, path, target)

        def invalidate_caches(self):
            getattr(self.finder, "invalidate_caches", lambda: None)()

    sys.meta_path[:] = [HideTF(f) for f in sys.meta_path]
    assert "tensorflow" not in sys.modules

    try:
        import tensorflow  # noqa: F401
        sys.exit("tensorflow importable")
    except ImportError:
        pass

    from scalinglab.data import pipeline

    data_dir, root = sys.argv[1], sys.argv[2]
    out = {}
    t0 = time.time()
    ds = pipeline.prepare_dataset("local_text", data_dir)  # the default config: the stdlib
    out["stdlib_prepare_s"] = time.time() - t0
    out["stdlib"] = ds.stats()
    files = pipeline.load_dataset("local_text", data_dir).data_source("validation")
    out["stdlib_val_paths"] = sorted({files[i]["path"].decode() for i in range(len(files))})
    train = pipeline.load_dataset("local_text", data_dir).data_source("train")
    # every 50th chunk: at most 4096 bytes unless it is a single long line
    out["stdlib_chunks_fit"] = all(len(t) <= 4096 or t.count(b"\\n") <= 1
                                   for t in (train[i]["text"] for i in range(0, len(train), 50)))
    ds = pipeline.prepare_dataset(
        "synthetic_markov/notf", data_dir, {"train_docs": 4, "validation_docs": 2, "doc_length": 64}
    )
    out["markov"] = ds.stats()
    it = pipeline.make_train_iterator(ds, seq_len=16, global_batch_size=2, seed=0)
    out["batch_shape"] = list(next(it).shape)
    out["tf_loaded"] = any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
    print(json.dumps(out))
    """
)


def test_builders_without_tensorflow(tmp_path):
    env = dict(os.environ, SCALINGLAB_DATA_DIR=str(tmp_path / "unused"))
    proc = subprocess.run(
        [sys.executable, "-c", NO_TF_SCRIPT, str(tmp_path / "data"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tf_loaded"] is False
    assert out["batch_shape"] == [2, 17]
    st = out["stdlib"]
    assert st["tokenizer"] == "bytes" and st["vocab_size"] == 257
    # Independent listing of the stdlib corpus: *.py, no site-packages / test dirs.
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    files = sorted(
        p
        for p in root.glob("**/*.py")
        if p.is_file() and p.stat().st_size and not skip.intersection(p.relative_to(root).parts[:-1])
    )
    size = 0
    kept = []
    for p in files:
        if size + p.stat().st_size > 16_000_000:
            break
        size += p.stat().st_size
        kept.append(p.relative_to(root).as_posix())
    # documents are line-aligned chunks of <= 4096 bytes (one long line may exceed it): the
    # chunk count is at least the number of files and at least total bytes / 4096
    n_docs = st["splits"]["train"]["documents"] + st["splits"]["validation"]["documents"]
    assert n_docs >= max(len(kept), size / 4096)
    assert st["splits"]["train"]["tokens"] + st["splits"]["validation"]["tokens"] == pytest.approx(
        size + n_docs, rel=1e-3
    )
    assert out["stdlib_chunks_fit"]
    val = [r for r in kept if int.from_bytes(hashlib.sha1(r.encode()).digest()[:8], "big") < 0.02 * 2**64]
    assert out["stdlib_val_paths"] == sorted(val)
    assert 0 < len(val) < 0.05 * len(kept)
    assert out["markov"]["splits"]["train"]["tokens"] == 4 * 65


def test_synthetic_metadata_matches_source(markov_ds):
    c = markov_ds.manifest["config"]  # vocab 8, order 2, branching 3, seed 5 (conftest.MARKOV)
    assert (c["vocab"], c["order"], c["branching"], c["seed"], c["doc_length"]) == (8, 2, 3, 5, 300)
    src = markov.make_source(8, 2, 3, 1.0, 5)
    e = markov.entropy_rate(src)
    assert markov_ds.entropy_rate == pytest.approx(e, rel=1e-12)
    meta_files = list(markov_ds.directory.rglob("metadata.json"))
    tfds_meta = [json.loads(p.read_text()) for p in meta_files if "entropy_rate" in p.read_text()]
    assert tfds_meta and tfds_meta[0]["entropy_rate"] == pytest.approx(e, rel=1e-12)
    # Every stored document is a valid path of the source (nonzero probability transitions).
    data = markov_ds.data_source("train")
    for i in range(len(data)):
        toks = data[i]["tokens"]
        assert toks.shape == (300,)
        assert np.isfinite(markov.log_probs(src, toks)).all()


def test_prepare_is_deterministic_and_replaces_atomically(tmp_path):
    from scalinglab.data import pipeline
    from scalinglab.errors import UserError

    cfg = {"train_docs": 3, "validation_docs": 1, "doc_length": 50, "vocab": 6}
    a = pipeline.prepare_dataset("synthetic_markov/x", tmp_path, cfg)
    first = a.data_source("train")[0]["tokens"]
    b = pipeline.prepare_dataset("synthetic_markov/x", tmp_path, cfg)  # replaces the old copy
    np.testing.assert_array_equal(b.data_source("train")[0]["tokens"], first)
    with pytest.raises(UserError):
        pipeline.prepare_dataset("synthetic_markov/x", tmp_path, {"branching": 99})
    with pytest.raises(UserError):
        pipeline.prepare_dataset("local_text/y", tmp_path, {"root": str(tmp_path / "missing")})
    # failures leave neither temp dirs nor half-built datasets
    assert sorted(p.name for p in (tmp_path / "synthetic_markov").iterdir()) == ["x"]
    assert not (tmp_path / "local_text").exists() or not any((tmp_path / "local_text").iterdir())
    assert pipeline.load_dataset("synthetic_markov/x", tmp_path).n_documents() == 3


@pytest.mark.parametrize("chunk", [0, 1, 7, 64, 4096])
def test_split_chunks_line_aligned_and_lossless(chunk):
    from scalinglab.data.local_text import split_chunks

    rng = np.random.default_rng(chunk)
    lines = ["".join(rng.choice(list("ab é€"), size=int(rng.integers(0, 90)))) + "\n" for _ in range(300)]
    text = "".join(lines) + "tail without newline"
    chunks = split_chunks(text, chunk)
    assert "".join(chunks) == text
    if chunk <= 0:
        assert chunks == [text]
        return
    for c in chunks:
        # each chunk ends at a line end (but the last) and fits, unless it is one long line
        assert c.endswith("\n") or c is chunks[-1]
        assert len(c.encode()) <= chunk or c.count("\n") <= 1
