"""scalinglab.data: offline datasets → exact, resumable, sharded token batches.

Modules: ``datadir`` (where prepared data lives), ``local_text`` and ``synthetic_markov``
(TFDS builders, array_record, no TensorFlow), ``files_builder`` (a user's corpus, read by
``corpus_files``, tokenised by ``corpus_tokenizers``: HF, SentencePiece, tiktoken; parallel,
resumable, pre-tokenised array_record shards), ``markov`` (the synthetic source's math:
stationary distribution, exact entropy rate), ``tokenizers`` (bytes, BPE, ids),
``prepared`` (build/load a prepared dataset and its token accounting), ``pipeline``
(grain: shuffle, shard, tokenise, pack, batch; checkpointable iterator state), ``cli``
(``scalinglab data prepare|stats``).
"""
