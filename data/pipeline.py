"""grain pipeline: prepared dataset → packed, sharded, resumable ``int32[batch, seq_len+1]``.

Train stream (:func:`make_train_iterator`), one JAX process's view:

1. ``MapDataset.source(train data source)`` — documents in TFDS order;
2. ``.shuffle(seed')`` then ``.repeat()`` — a fresh permutation per epoch (grain folds
   the epoch into the seed); ``seed'`` is a 32-bit hash of the user seed;
3. ``[process_index::process_count]`` — process ``p`` reads global positions
   ``p, p+P, p+2P, ...`` of that endless shuffled sequence, so the processes' shards are
   disjoint and, over each global epoch, together cover every document exactly once;
4. ``.map(tokenize)`` — document → ``int32[n+1]`` ids ending with the separator;
5. ``to_iter_dataset(ReadOptions)`` — ``num_threads`` reader threads decode and tokenise
   documents ahead of the consumer into a prefetch buffer (grain's worker prefetch);
6. ``ConcatThenSplitIterDataset`` — concatenates the documents into one stream and cuts
   it into consecutive, non-overlapping windows of ``seq_len + 1`` tokens (a document
   runs across windows; no padding, no token dropped);
7. ``.batch(block)`` and a block shuffle — the windows are read in blocks of ``shuffle_window``
   (default 256, rounded up to whole local batches), each block's rows permuted by a
   generator seeded with (seed, block index) and served as consecutive local batches, so
   one batch mixes windows from many documents instead of ``batch`` consecutive slices of
   one (``shuffle_window=1``: no shuffle). The same idea as grain's
   ``WindowShuffleIterDataset``, done on whole numpy blocks: that one pays per
   window in Python bookkeeping and made the stream 7× slower, the bottleneck for tiny models.

Targets: for a window ``w`` (``seq_len + 1`` tokens) the model gets ``w[:-1]`` as input
and ``w[1:]`` as targets, so each window trains on ``seq_len`` target tokens; the first
token of each window is used only as context (windows overlap by 0 tokens). Tokens per
global batch (the ``D`` of scaling fits): ``global_batch_size * seq_len``
(:func:`tokens_per_batch`); stream tokens consumed: ``global_batch_size * (seq_len+1)``.

Iterator state (``get_state``/``set_state``) is a small JSON-able dict: grain's own
checkpoint of the packing stage (index of the next document and the slice of a split
document) plus the arguments, checked on restore.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
from grain.experimental import ConcatThenSplitIterDataset

from scalinglab.data.prepared import PreparedDataset, epochs, load_dataset, prepare_dataset  # noqa: F401
from scalinglab.errors import UserError

STATE_VERSION = 2
FEATURE = "tokens"
# Packed windows shuffled together (a block of 256 windows of 65 tokens spans ~16 KB of text).
DEFAULT_SHUFFLE_WINDOW = 256


def tokens_per_batch(global_batch_size: int, seq_len: int) -> int:
    """Target tokens trained on per global batch (``batch × seq_len``)."""
    return int(global_batch_size) * int(seq_len)


def shuffle_seed(seed: int) -> int:
    """32-bit shuffle seed derived from the user seed (grain adds the epoch to it)."""
    return int(np.random.SeedSequence([int(seed), 0x5EED]).generate_state(1)[0])


def document_order(
    ds: PreparedDataset, *, seed: int, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
    """Endless ``MapDataset`` of document indices (into the train source) one process reads."""
    n = ds.n_documents("train")
    order = grain.MapDataset.range(n).shuffle(seed=shuffle_seed(seed)).repeat()
    return order[process_index::process_count]


def _documents(ds: PreparedDataset, split: str) -> grain.MapDataset:
    return grain.MapDataset.source(ds.data_source(split))


def pack(docs: grain.IterDataset, seq_len: int) -> grain.IterDataset:
    """Concatenate ``{"tokens": int32[n]}`` documents and cut ``seq_len + 1`` windows.

    Output elements: ``{"tokens": int32[seq_len+1], "tokens_segment_ids": ...,
    "tokens_positions": ...}`` (grain's format). A finite input ends with one partial
    window padded with 0 and segment id 0 (the "tail").
    """
    return ConcatThenSplitIterDataset(docs, length_struct={FEATURE: seq_len + 1}, split_full_length_features=True)


def _read_options(num_threads: int) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(16, 4 * num_threads))


def _check_shape(seq_len: int, batch_size: int) -> None:
    if int(seq_len) < 1:
        raise UserError(f"seq_len must be >= 1, got {seq_len}")
    if int(batch_size) < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")


def _to_json(obj: Any) -> Any:
    """Tuples → lists, numpy scalars → Python numbers (what json.dumps accepts)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _from_json_cts(state: dict[str, Any]) -> dict[str, Any]:
    """Undo JSON's tuple → list in grain's ConcatThenSplit state (it compares slices to tuples)."""
    state = dict(state)
    state["remainder_slices"] = {k: tuple(v) for k, v in state["remainder_slices"].items()}
    return state


class TrainIterator(Iterator[np.ndarray]):
    """Endless iterator of ``np.int32[global_batch_size // process_count, seq_len + 1]``.

    ``get_state()`` returns a JSON-able dict; ``set_state(state)`` on an iterator built with
    the same arguments continues exactly where the saved one stopped.
    """

    def __init__(
        self,
        ds: PreparedDataset,
        *,
        seq_len: int,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        num_threads: int = 2,
        shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
    ):
        _check_shape(seq_len, global_batch_size)
        if int(shuffle_window) < 1:
            raise UserError(f"shuffle_window must be >= 1, got {shuffle_window}")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise UserError(f"bad process_index {process_index} for process_count {process_count}")
        if global_batch_size % process_count:
            raise UserError(f"global batch size {global_batch_size} is not divisible by process count {process_count}")
        self.dataset = ds
        self.seq_len = int(seq_len)
        self.global_batch_size = int(global_batch_size)
        self.local_batch_size = self.global_batch_size // process_count
        self.tokens_per_batch = tokens_per_batch(self.global_batch_size, self.seq_len)
        self._args = {
            "dataset": ds.name,
            "seq_len": self.seq_len,
            "global_batch_size": self.global_batch_size,
            "seed": int(seed),
            "process_index": int(process_index),
            "process_count": int(process_count),
            "shuffle_window": int(shuffle_window),
        }
        source = _documents(ds, "train")
        docs = document_order(ds, seed=seed, process_index=process_index, process_count=process_count)
        docs = docs.map(lambda i: {FEATURE: ds.document_tokens(source[int(i)])})
        packed = pack(docs.to_iter_dataset(_read_options(num_threads)), self.seq_len)
        self._batches_per_block = -(-int(shuffle_window) // self.local_batch_size)
        self._shuffle = int(shuffle_window) > 1
        self._seed = shuffle_seed(seed)
        block_rows = self._batches_per_block * self.local_batch_size
        self._it = iter(packed.map(lambda e: e[FEATURE]).batch(block_rows, drop_remainder=True))
        self._block: np.ndarray | None = None  # int32[block_rows, seq_len+1], rows permuted
        self._block_index = 0  # index of the current block (or of the next one, before the first)
        self._pos = 0  # local batches already served from the current block
        self._block_start_state: Any = None  # grain state just before the current block

    def _load_block(self) -> None:
        block = np.asarray(next(self._it), dtype=np.int32)
        if self._shuffle:
            block = block[np.random.default_rng([self._seed, self._block_index]).permutation(len(block))]
        self._block = block

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> np.ndarray:
        if self._block is None or self._pos == self._batches_per_block:
            if self._block is not None:
                self._block_index += 1
            self._block_start_state = self._it.get_state()
            self._load_block()
            self._pos = 0
        b = self.local_batch_size
        out = self._block[self._pos * b : (self._pos + 1) * b].copy()
        self._pos += 1
        return out

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position of the iterator (store it with the model checkpoint)."""
        loaded = self._block is not None
        grain_state = self._block_start_state if loaded else self._it.get_state()
        return {
            "version": STATE_VERSION,
            **self._args,
            "grain": _to_json(grain_state),
            "block_index": self._block_index,
            "block_loaded": loaded,
            "batches_served": self._pos,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`get_state` of an identically built iterator)."""
        if (
            not isinstance(state, dict)
            or state.get("version") != STATE_VERSION
            or not {"grain", "block_index", "block_loaded", "batches_served"} <= set(state)
        ):
            raise UserError("data iterator state is missing or from an incompatible version")
        diff = {k: (state.get(k), v) for k, v in self._args.items() if state.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise UserError(f"data iterator state does not match this run ({detail})")
        grain_state = _from_json_cts(state["grain"])
        self._it.set_state(grain_state)
        self._block_index = int(state["block_index"])
        self._block, self._pos = None, 0
        if state["block_loaded"]:  # re-read the current block, skip what was already served
            self._block_start_state = grain_state
            self._load_block()
            self._pos = int(state["batches_served"])

    def close(self) -> None:
        """Stop the background reader threads."""
        self._it.close()


def make_train_iterator(ds: PreparedDataset, **kwargs: Any) -> TrainIterator:
    """Endless, reshuffled-per-epoch, per-process train batches: ``TrainIterator(ds, **kwargs)``
    (keywords ``seq_len, global_batch_size, seed, process_index, process_count, num_threads,
    shuffle_window``; see the module docstring)."""
    return TrainIterator(ds, **kwargs)


def make_eval_batches(ds: PreparedDataset, *, seq_len: int, batch_size: int, n_batches: int) -> np.ndarray:
    """Fixed ``np.int32[n_batches, batch_size, seq_len+1]`` from the validation split.

    Validation documents in TFDS order (no shuffle), packed exactly like the train
    stream; if the split holds fewer than ``n_batches * batch_size`` windows it is read
    again from the start (the same documents, in the same order).
    """
    _check_shape(seq_len, batch_size)
    if int(n_batches) < 1:
        raise UserError(f"n_batches must be >= 1, got {n_batches}")
    source = _documents(ds, "validation")
    docs = grain.MapDataset.range(len(source)).repeat()
    docs = docs.map(lambda i: {FEATURE: ds.document_tokens(source[int(i)])})
    packed = pack(docs.to_iter_dataset(_read_options(2)), int(seq_len))
    n_windows = int(n_batches) * int(batch_size)
    out = np.empty((n_windows, int(seq_len) + 1), dtype=np.int32)
    it = iter(packed)
    for i in range(n_windows):
        out[i] = next(it)[FEATURE]
    return out.reshape(int(n_batches), int(batch_size), int(seq_len) + 1)
