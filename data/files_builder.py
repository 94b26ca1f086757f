"""The ``files`` builder: a user's corpus files + tokenizer → pre-tokenised array_record shards.

``scalinglab data prepare --dataset files/NAME --config files=GLOB[,GLOB...] [--config key=value]
[--workers N]``. Config keys (:data:`DEFAULTS`): ``files``, ``text_field``, ``format``
(``jsonl``|``parquet``|``text`` for every file instead of the name's suffix), ``tokenizer``,
``eos``, ``validation_fraction``, ``validation_files``, ``on_error`` (``stop``|``skip``),
``vocab_multiple`` (round the model's ``vocab_size`` up to a multiple; 1 = no rounding),
``unit_bytes`` (input bytes per unit of work), ``tiktoken_pattern``.

Steps:

1. Plan (nothing written yet): resolve the tokenizer and its EOS, expand the globs, stat and
   probe every file, cut them into units (:mod:`scalinglab.data.corpus_files`). Bad input
   stops here with one line.
2. Stage: ``<data_dir>/files/.NAME.prepare/`` holds ``plan.json`` (with a fingerprint of the
   config, the files' sizes and mtimes and the tokenizer), the tokenizer file, and per unit
   ``units/UUUUU.{train,validation}.array_record`` plus ``units/UUUUU.json`` (its counts, written
   last). A rerun with the same plan skips finished units (resume after a kill); any other plan
   starts over.
3. Tokenise the pending units in ``workers`` processes (``spawn``; one in-process worker when
   ``workers == 1``), each document encoded without added special tokens; a document goes to
   validation when ``blake2b(text)`` as a fraction of 2**64 is below ``validation_fraction`` (the
   same text always lands in the same split), or when it comes from ``validation_files``.
   Each record is the document's ids as little-endian ``uint16`` (vocab ≤ 65536) or ``int32``;
   empty documents are skipped and counted.
4. Finish: check the splits are non-empty, write ``prepared.json`` and move the directory into
   place. A :class:`~scalinglab.errors.UserError` (bad line, unreadable file, empty corpus)
   removes the staging directory: nothing half-written is left.

Records are in unit order, documents in file order within a unit, so the result does not depend
on the worker count or on interruptions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scalinglab.data import corpus_files, corpus_tokenizers
from scalinglab.errors import UserError

DEFAULTS: dict[str, Any] = {
    "files": "",
    "text_field": "text",
    "format": "",
    "tokenizer": "bytes",
    "eos": "",
    "validation_fraction": 0.01,
    "validation_files": "",
    "on_error": "stop",
    "vocab_multiple": 1,
    "unit_bytes": 32 * 2**20,
    "tiktoken_pattern": "",
}
PLAN_VERSION = 1
SPLITS = ("train", "validation")
WRITER_OPTIONS = "group_size:1"  # random access per record, as grain and TFDS use
BATCH_DOCS = 256  # documents per encode_batch call
BATCH_CHARS = 1 << 20  # ... or this many characters, whichever comes first
REPORT_EVERY_S = 0.5


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults ← ``config``, typed and checked."""
    from scalinglab.data.prepared import _coerce

    cfg = dict(DEFAULTS)
    for key, value in dict(config or {}).items():
        if key not in DEFAULTS:
            raise UserError(f"unknown config key {key!r} for files; known: {', '.join(sorted(DEFAULTS))}")
        cfg[key] = _coerce(key, value, DEFAULTS[key])
    if not cfg["files"].strip():
        raise UserError(
            "the files builder needs --config files=GLOB[,GLOB...] (jsonl, jsonl.gz, jsonl.zst, parquet, txt, md)"
        )
    if cfg["validation_files"] and "validation_fraction" in dict(config or {}):
        raise UserError("give either validation_fraction or validation_files, not both")
    if not cfg["validation_files"] and not 0 < cfg["validation_fraction"] < 1:
        raise UserError(f"validation_fraction must be in (0, 1), got {cfg['validation_fraction']}")
    if cfg["format"]:
        corpus_files.format_of("", cfg["format"])  # checks the name
    if cfg["on_error"] not in ("stop", "skip"):
        raise UserError(f"on_error must be stop or skip, got {cfg['on_error']!r}")
    if cfg["vocab_multiple"] < 1 or cfg["unit_bytes"] < 1:
        raise UserError("vocab_multiple and unit_bytes must be >= 1")
    return cfg


def token_dtype(vocab_size: int) -> str:
    """Storage dtype of the ids: ``uint16`` when every id fits, else ``int32``."""
    return "uint16" if vocab_size <= 2**16 else "int32"


def in_validation(text: str, fraction: float) -> bool:
    """True when the document goes to validation: ``blake2b-64(text) / 2**64 < fraction``."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    return h / 2.0**64 < fraction


def _staging_dir(final: Path) -> Path:
    return final.parent / f".{final.name}.prepare"


@dataclasses.dataclass
class Plan:
    """Everything a worker needs, JSON-able (``units``: :meth:`Unit.to_json` dicts)."""

    staging: str
    units: list[dict]
    text_field: str
    on_error: str
    validation_fraction: float
    validation_files: list[str]
    tokenizer_spec: dict[str, Any]
    dtype: str


# ---------------------------------------------------------------------------------------------
# One unit of work (runs in a worker process, or in-process for one worker)

_TOKENIZERS: dict[str, Any] = {}  # staging dir → tokenizer, one per process
_PROGRESS_QUEUE = None  # set in spawned workers (with the plan)
_PLAN: Plan | None = None
_PARENT_PID: int | None = None


def _tokenizer(plan: Plan):
    if plan.staging not in _TOKENIZERS:
        _TOKENIZERS[plan.staging] = corpus_tokenizers.load_saved(plan.tokenizer_spec, plan.staging)
    return _TOKENIZERS[plan.staging]


def _unit_paths(staging: str, index: int) -> dict[str, Path]:
    base = Path(staging) / "shards"
    return {
        "train": base / f"{index:05d}.train.array_record",
        "validation": base / f"{index:05d}.validation.array_record",
        "done": base / f"{index:05d}.json",
    }


def run_unit(plan: Plan, index: int, report: Callable[[int, int, int], None]) -> dict[str, Any]:
    """Tokenise unit ``index`` of ``plan`` into its two shards, write its counts file, return
    the counts. ``report(n_bytes, n_docs, n_tokens)`` is called about every 0.5 s."""
    from array_record.python.array_record_module import ArrayRecordWriter

    from scalinglab.fileio import atomic_write_json

    unit = corpus_files.Unit.from_json(plan.units[index])
    tok = _tokenizer(plan)
    dtype = np.dtype(plan.dtype).newbyteorder("<")
    val_files = set(plan.validation_files)
    paths = _unit_paths(plan.staging, index)
    tmp = {s: paths[s].with_name(f"{paths[s].name}.{os.getpid()}.tmp") for s in SPLITS}
    writers: dict[str, Any] = {}
    counts = {s: {"documents": 0, "document_tokens": 0} for s in SPLITS}
    skipped: dict[str, int] = {}
    empty = 0
    pending = [0, 0, 0]  # bytes, docs, tokens not yet reported
    reported_bytes = 0
    last_report = time.monotonic()

    def count_skip(kind: str) -> None:
        skipped[kind] = skipped.get(kind, 0) + 1

    def flush(batch: list[tuple[str, str]]) -> None:
        nonlocal last_report, reported_bytes
        encoded = tok.encode_batch([text for _, text in batch])
        for (split, _), ids in zip(batch, encoded):
            if split not in writers:
                writers[split] = ArrayRecordWriter(str(tmp[split]), WRITER_OPTIONS)
            writers[split].write(np.asarray(ids, dtype=dtype).tobytes())
            counts[split]["documents"] += 1
            counts[split]["document_tokens"] += len(ids)
            pending[1] += 1
            pending[2] += len(ids)
        if time.monotonic() - last_report >= REPORT_EVERY_S:
            report(*pending)
            reported_bytes += pending[0]
            pending[:] = [0, 0, 0]
            last_report = time.monotonic()

    try:
        batch: list[tuple[str, str]] = []
        chars = 0
        for doc in corpus_files.read_unit(unit, plan.text_field, plan.on_error, count_skip):
            pending[0] += doc.n_bytes
            if not doc.text:
                empty += 1
                continue
            if val_files:
                split = "validation" if doc.path in val_files else "train"
            else:
                split = "validation" if in_validation(doc.text, plan.validation_fraction) else "train"
            batch.append((split, doc.text))
            chars += len(doc.text)
            if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
                flush(batch)
                batch, chars = [], 0
        if batch:
            flush(batch)
        for w in writers.values():
            w.close()
        if _PARENT_PID is not None and os.getppid() != _PARENT_PID:  # orphaned: leave the unit to a rerun
            raise SystemExit(1)
        for split in writers:
            os.replace(tmp[split], paths[split])
    except BaseException:
        for split in SPLITS:
            tmp[split].unlink(missing_ok=True)
        raise
    done = {"unit": index, "splits": counts, "skipped": skipped, "empty_documents": empty, "n_bytes": unit.n_bytes}
    atomic_write_json(paths["done"], done)
    report(unit.n_bytes - reported_bytes, pending[1], pending[2])  # the unit's bytes add up exactly
    return done


def _worker_init(queue, plan: Plan) -> None:
    """Spawned worker: one tokenizer thread (the processes are the parallelism), die with the parent."""
    global _PROGRESS_QUEUE, _PLAN, _PARENT_PID
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    _PROGRESS_QUEUE, _PLAN, _PARENT_PID = queue, plan, os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _worker_run(index: int) -> dict[str, Any]:
    return run_unit(_PLAN, index, lambda b, d, t: _PROGRESS_QUEUE.put((b, d, t)))


# ---------------------------------------------------------------------------------------------
# Orchestration (the parent process)


class _Progress:
    """tqdm bar over input bytes (time left) with documents and tokens/s; off when stderr is no TTY."""

    def __init__(self, name: str, total_bytes: int, done_bytes: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total_bytes,
            initial=done_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"prepare {name}",
            disable=None,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self.docs = 0
        self.tokens = 0
        self.t0 = time.monotonic()

    def update(self, n_bytes: int, n_docs: int, n_tokens: int) -> None:
        self.docs += n_docs
        self.tokens += n_tokens
        rate = self.tokens / max(time.monotonic() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self.docs:,} docs, {rate:,.0f} tok/s", refresh=False)
        self.bar.update(n_bytes)

    def close(self) -> None:
        self.bar.close()


def _pending_units(plan: Plan) -> list[int]:
    for stale in (Path(plan.staging) / "shards").glob("*.tmp"):  # from a killed run
        stale.unlink(missing_ok=True)
    return [i for i in range(len(plan.units)) if not _unit_paths(plan.staging, i)["done"].is_file()]


def _run_units(plan: Plan, pending: list[int], workers: int, progress: _Progress) -> None:
    """Run the ``pending`` units in ``workers`` spawned processes (in-process for one)."""
    if workers <= 1 or len(pending) <= 1:
        for i in pending:
            run_unit(plan, i, progress.update)
        return
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")  # no fork of a process that may hold JAX or tokenizer threads
    q = ctx.Queue()

    def drain() -> None:
        while True:
            try:
                progress.update(*q.get_nowait())
            except queue_mod.Empty:
                return

    with ctx.Pool(min(workers, len(pending)), initializer=_worker_init, initargs=(q, plan)) as pool:
        results = pool.imap_unordered(_worker_run, pending)
        remaining = len(pending)
        while remaining:
            try:
                results.next(timeout=0.2)
                remaining -= 1
            except mp.TimeoutError:
                pass
            drain()
    time.sleep(0.05)  # the queue's feeder thread may still deliver the last reports
    drain()


def _plan(name: str, final: Path, cfg: dict[str, Any]) -> tuple[Plan, bool]:
    """Resolve everything (no output yet), then open or start the staging dir; (plan, resumed)."""
    from scalinglab.fileio import atomic_write_json, read_json

    tok = corpus_tokenizers.open_tokenizer(cfg["tokenizer"], cfg["eos"] or None, cfg["tiktoken_pattern"] or None)
    files = corpus_files.expand(cfg["files"])
    val_files = corpus_files.expand(cfg["validation_files"]) if cfg["validation_files"] else []
    paths = sorted(set(files) | set(val_files))
    probes = corpus_files.probe_files(paths, cfg["format"])
    units = corpus_files.make_units(paths, probes, cfg["unit_bytes"], cfg["format"])
    final.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "version": PLAN_VERSION,
                "config": cfg,
                "files": [[p, size, mtime] for p, (size, mtime, _) in zip(paths, probes)],
                "tokenizer": tok.spec,
                "tokenizer_sha256": hashlib.sha256(corpus_tokenizers.serialized(tok)).hexdigest(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    staging = _staging_dir(final)
    plan_file = staging / "plan.json"
    if plan_file.is_file():
        try:
            saved = read_json(plan_file)
            if saved.get("fingerprint") == fingerprint:
                return Plan(**saved["plan"]), True
        except (OSError, ValueError, TypeError):
            pass
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "shards").mkdir(parents=True)
    spec = corpus_tokenizers.save_tokenizer(tok, staging)
    plan = Plan(
        staging=str(staging),
        units=[u.to_json() for u in units],
        text_field=cfg["text_field"],
        on_error=cfg["on_error"],
        validation_fraction=cfg["validation_fraction"],
        validation_files=val_files,
        tokenizer_spec=spec,
        dtype=token_dtype(tok.vocab_size),
    )
    atomic_write_json(
        plan_file,
        {
            "fingerprint": fingerprint,
            "plan": dataclasses.asdict(plan),
            "sources": {"files": len(paths), "bytes": sum(p[0] for p in probes)},
        },
    )
    return plan, False


def _finish(name: str, plan: Plan, cfg: dict[str, Any]) -> dict[str, Any]:
    """Sum the units' counts, check the splits, write the manifest; return it."""
    from scalinglab.data.prepared import FORMAT_VERSION, MANIFEST
    from scalinglab.fileio import atomic_write_json, read_json

    staging = Path(plan.staging)
    splits = {s: {"documents": 0, "document_tokens": 0, "tokens": 0} for s in SPLITS}
    shards: dict[str, list] = {s: [] for s in SPLITS}
    skipped: dict[str, int] = {}
    empty = 0
    for i in range(len(plan.units)):
        paths = _unit_paths(plan.staging, i)
        done = read_json(paths["done"])
        for s in SPLITS:
            c = done["splits"][s]
            splits[s]["documents"] += c["documents"]
            splits[s]["document_tokens"] += c["document_tokens"]
            if c["documents"]:
                shards[s].append([paths[s].relative_to(staging).as_posix(), c["documents"]])
        for kind, n in done["skipped"].items():
            skipped[kind] = skipped.get(kind, 0) + n
        empty += done["empty_documents"]
    for s in SPLITS:
        splits[s]["tokens"] = splits[s]["document_tokens"] + splits[s]["documents"]
    n_train, n_val = splits["train"]["documents"], splits["validation"]["documents"]
    if n_train + n_val == 0:
        why = f" ({sum(skipped.values())} bad records skipped, {empty} empty)" if skipped or empty else ""
        raise UserError(f"empty corpus: files={cfg['files']} hold no documents{why}")
    if not n_train or not n_val:
        raise UserError(
            f"a split is empty ({n_train} train, {n_val} validation documents): "
            "add documents or change validation_fraction / validation_files"
        )
    spec = plan.tokenizer_spec
    multiple = cfg["vocab_multiple"]
    plan_info = read_json(staging / "plan.json")
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "builder": "files",
        "config": cfg,
        "feature": "tokens",
        "storage": "tokens",
        "token_dtype": plan.dtype,
        "shards": shards,
        "tokenizer": spec["kind"],
        "tokenizer_spec": spec,
        "tokenizer_vocab_size": spec["vocab_size"],
        "vocab_size": -(-spec["vocab_size"] // multiple) * multiple,
        "separator_id": spec["separator_id"],
        "entropy_rate": None,
        "conditional_entropies": None,
        "splits": splits,
        "skipped_records": skipped,
        "empty_documents": empty,
        "sources": plan_info["sources"],
    }
    for i in range(len(plan.units)):
        _unit_paths(plan.staging, i)["done"].unlink()
    (staging / "plan.json").unlink()
    atomic_write_json(staging / MANIFEST, manifest)
    return manifest


def prepare(
    name: str, data_dir: str | os.PathLike | None, config: Mapping[str, Any] | None, workers: int | None = None
) -> None:
    """Build ``files/NAME`` under the data dir (see the module doc); ``workers`` processes
    (default: the CPU count, at most one per pending unit)."""
    from scalinglab.data import datadir
    from scalinglab.fileio import swap_into_place

    cfg = resolve_config(config)
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    final = datadir.dataset_dir(name, data_dir)
    plan, _ = _plan(name, final, cfg)
    try:
        pending = _pending_units(plan)
        total = sum(u["n_bytes"] for u in plan.units)
        progress = _Progress(name, total, total - sum(plan.units[i]["n_bytes"] for i in pending))
        try:
            _run_units(plan, pending, workers or os.cpu_count() or 1, progress)
        finally:
            progress.close()
        _finish(name, plan, cfg)
        swap_into_place(Path(plan.staging), final)
    except UserError:
        shutil.rmtree(plan.staging, ignore_errors=True)  # bad input: nothing half-written stays
        raise
