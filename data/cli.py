"""``scalinglab data prepare|stats``: build a prepared dataset, print its token accounting."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scalinglab.cli import emit_json, parse_set

DATA_DIR_HELP = "data directory (default $SCALINGLAB_DATA_DIR, else ~/.cache/scalinglab/data)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="prepare and inspect datasets (TFDS array_record + tokenizer)",
        description="Prepare offline datasets and report their documents and exact token counts.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=type(p))
    sub.required = True

    prep = sub.add_parser(
        "prepare",
        help="build a dataset under the data dir",
        description=(
            "Build NAME (local_text, local_text/bpe, synthetic_markov, files/NAME for your own corpus, "
            "or BUILDER/VARIANT) under the data dir; --config key=value overrides builder and tokenizer "
            "fields. Your own corpus: --dataset files/NAME --config files=GLOB[,GLOB...] "
            "[--config text_field=text] [--config tokenizer=bytes|PATH.json|PATH.model|PATH.tiktoken|ENCODING] "
            "[--config eos=TOKEN] [--config validation_fraction=F | validation_files=GLOB] "
            "[--config on_error=stop|skip] [--config vocab_multiple=128] [--workers N]."
        ),
    )
    prep.add_argument("--dataset", default="local_text", metavar="NAME", help="dataset name (default local_text)")
    prep.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. root=DIR, pattern='**/*.txt', tokenizer=bpe, "
        "bpe_vocab_size=4096, vocab=64, order=3, files='shards/*.jsonl.zst' (repeatable)",
    )
    prep.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="tokenising processes for files/NAME (default: the CPU count)",
    )
    prep.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    prep.add_argument("--json", action="store_true", help="print the stats as JSON")
    prep.set_defaults(func=_prepare)

    st = sub.add_parser("stats", help="documents, tokens per split, tokenizer, entropy rate")
    st.add_argument("--dataset", default="local_text", metavar="NAME", help="dataset name (default local_text)")
    st.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    st.add_argument("--seq-len", type=int, default=None, help="also report per-batch accounting for this window")
    st.add_argument("--batch-size", type=int, default=None, help="global batch size (sequences) for --seq-len")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=_stats)


def _stats_dict(ds, seq_len: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    from scalinglab.data import pipeline
    from scalinglab.errors import UserError

    out = ds.stats()
    if seq_len is not None:
        if seq_len < 1:
            raise UserError(f"--seq-len must be >= 1, got {seq_len}")
        batch = batch_size or 1
        if batch < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch}")
        windows = ds.n_tokens("train") // (seq_len + 1)
        out["batching"] = {
            "seq_len": seq_len,
            "batch_size": batch,
            "tokens_per_batch": pipeline.tokens_per_batch(batch, seq_len),
            "stream_tokens_per_batch": batch * (seq_len + 1),
            "windows_per_epoch": windows,
            "batches_per_epoch": windows // batch,
            "window_entropy": ds.window_entropy(seq_len),
        }
    return out


def _print_text(s: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"dataset      {s['dataset']}  ({s['directory']})\n")
    w(f"tokenizer    {s['tokenizer']}  vocab_size {s['vocab_size']}  separator_id {s['separator_id']}")
    spec = s.get("tokenizer_spec")
    if spec:
        eos = f", eos {spec['eos']!r}" if spec["eos"] else ""
        w(f"  ({spec['source']}{eos}, {spec['vocab_size']} ids)")
    w("\n")
    for split, d in s["splits"].items():
        w(
            f"{split:<12} {d['documents']:>10,} documents  {d['tokens']:>14,} tokens"
            f"  ({d['document_tokens']:,} + {d['documents']:,} separators)\n"
        )
    w(f"total        {s['total_tokens']:>40,} tokens\n")
    skipped = s.get("skipped_records")
    if skipped or s.get("empty_documents"):
        bad = ", ".join(f"{n:,} {kind}" for kind, n in sorted((skipped or {}).items())) or "none"
        w(f"skipped      bad records: {bad}; empty documents: {s.get('empty_documents', 0):,}\n")
    if s["entropy_rate"] is not None:
        w(f"entropy_rate {s['entropy_rate']:.6f} nats/token (irreducible loss, context >= order)\n")
        cond = ", ".join(f"{h:.4f}" for h in s["conditional_entropies"])
        w(f"H(X | j previous tokens), j = 0..order: {cond}\n")
    b = s.get("batching")
    if b:
        w(
            f"batch        {b['batch_size']} x {b['seq_len']} = {b['tokens_per_batch']:,} target tokens/batch,"
            f" {b['batches_per_epoch']:,} batches/epoch\n"
        )
        if b["window_entropy"] is not None:
            w(f"window_entropy {b['window_entropy']:.6f} nats/target (Bayes loss of seq_len windows)\n")


def _prepare(args: argparse.Namespace) -> int:
    from scalinglab.data import pipeline

    ds = pipeline.prepare_dataset(args.dataset, args.data_dir, parse_set(args.config), workers=args.workers)
    s = _stats_dict(ds)
    if args.json:
        emit_json(s)
    else:
        _print_text(s)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from scalinglab.data import pipeline

    s = _stats_dict(pipeline.load_dataset(args.dataset, args.data_dir), args.seq_len, args.batch_size)
    if args.json:
        emit_json(s)
    else:
        _print_text(s)
    return 0
