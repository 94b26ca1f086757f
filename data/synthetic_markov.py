"""TFDS builder ``synthetic_markov``: documents sampled from a seeded sparse Markov source.

Feature ``tokens``: int32[doc_length] ids in ``0..vocab-1``. The source is
:func:`scalinglab.data.markov.make_source` (vocab, order, branching, alpha, seed); each
document starts from the stationary distribution (so every token is on-distribution).
The exact entropy rate (nats/token) and the conditional entropies ``H_0..H_k`` are stored
in the TFDS metadata (``metadata.json``) and in the prepared manifest.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from scalinglab.data import markov
from scalinglab.data.tfds_compat import OfflineBuilderMixin


@dataclasses.dataclass(eq=False)
class SyntheticMarkovConfig(tfds.core.BuilderConfig):
    """Source parameters (vocab in tokens, lengths in tokens, counts in documents)."""

    vocab: int = 32
    order: int = 2
    branching: int = 4
    alpha: float = 1.0
    doc_length: int = 4096
    train_docs: int = 256
    validation_docs: int = 16
    seed: int = 0

    def source(self) -> markov.MarkovSource:
        return markov.make_source(self.vocab, self.order, self.branching, self.alpha, self.seed)


def source_entropies(cfg: SyntheticMarkovConfig) -> dict:
    """``{"entropy_rate": E, "conditional_entropies": [H_0..H_k]}`` in nats/token."""
    src = cfg.source()
    pi = markov.stationary_distribution(src)
    return {
        "entropy_rate": markov.entropy_rate(src, pi),
        "conditional_entropies": markov.conditional_entropies(src, pi),
    }


class SyntheticMarkov(OfflineBuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Sampled documents of a random order-k Markov source with known entropy rate."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [SyntheticMarkovConfig(name="default", version="1.0.0")]

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        meta = tfds.core.MetadataDict(source_entropies(cfg))
        return tfds.core.DatasetInfo(
            builder=self,
            description="Random sparse order-k Markov source; entropy rate in metadata.",
            features=tfds.features.FeaturesDict({"tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32)}),
            metadata=meta,
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        return {
            "train": self._generate_examples(cfg.train_docs, 1),
            "validation": self._generate_examples(cfg.validation_docs, 2),
        }

    def _generate_examples(self, n_docs: int, stream: int):
        cfg = self.builder_config
        src = cfg.source()
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, stream]))
        docs = markov.sample(src, n_docs, cfg.doc_length, rng)
        for i, doc in enumerate(docs):
            yield i, {"tokens": doc}
