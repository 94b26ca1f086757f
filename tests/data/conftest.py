"""Fixtures for the data tests: small prepared datasets in a session temp data dir."""

import numpy as np
import pytest

TEXT_DOCS = 34  # 27 train documents: not divisible by 2 or 4, so shards differ in size
MARKOV = {"vocab": 8, "order": 2, "branching": 3, "doc_length": 300, "train_docs": 12, "validation_docs": 3, "seed": 5}


def make_corpus(root, n_docs=TEXT_DOCS, seed=0):
    """Write ``n_docs`` distinct text files of random length (1..700 bytes, some non-ASCII)."""
    rng = np.random.default_rng(seed)
    alphabet = list("abcdefghij klmnop\nqrstuvwxyzé€")
    texts = {}
    for i in range(n_docs):
        n = int(rng.integers(1, 700))
        body = "".join(rng.choice(alphabet, size=n))
        text = f"doc{i}:{body}"
        sub = root / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:03d}.txt").write_text(text, encoding="utf-8")
        texts[f"d{i % 3}/f{i:03d}.txt"] = text
    return texts


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, make_corpus(root)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def text_ds(corpus, data_dir):
    """local_text over the temp corpus, bytes tokenizer, 20 % validation."""
    from scalinglab.data import pipeline

    root, _ = corpus
    cfg = {"root": str(root), "pattern": "**/*.txt", "validation_fraction": 0.2}
    return pipeline.prepare_dataset("local_text/tiny", data_dir, cfg)


@pytest.fixture(scope="session")
def markov_ds(data_dir):
    from scalinglab.data import pipeline

    return pipeline.prepare_dataset("synthetic_markov/tiny", data_dir, MARKOV)
