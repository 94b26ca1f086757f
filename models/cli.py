"""``scalinglab params`` and ``scalinglab flops``: exact parameter and FLOP accounting.

* ``scalinglab params --preset NAME [--set k=v ...] [--json]`` — parameter counts by group,
  total, embedding, Kaplan's non-embedding N, 12·n_layer·d_model² and the gap.
  Without ``--preset`` (or with ``--all``): one table row per preset.
* ``scalinglab flops --preset NAME [--set k=v ...] --seq-len T [--json]`` — forward FLOPs per
  token (kaplan, chinchilla, matmul_exact, jaxpr), training FLOPs per token, and XLA's own
  cost analysis for comparison.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from scalinglab.cli import emit_json
from scalinglab.errors import UserError
from scalinglab.models import accounting
from scalinglab.models.config import PRESETS, ModelConfig, get_config, parse_model_set


def _add_model_args(p: argparse.ArgumentParser, *, preset_required: bool) -> None:
    p.add_argument("--preset", required=preset_required, metavar="NAME", help=f"model preset: {', '.join(PRESETS)}")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (n_layer, d_model, n_head, n_kv_head, d_ff, n_ctx, "
        "vocab_size, tie_embeddings, ...); repeatable",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "params",
        help="exact parameter counts (by group, total, Kaplan's non-embedding N, 12·L·d²)",
        description="Exact parameter counts of a model config. Without --preset, a table of all presets.",
    )
    _add_model_args(p, preset_required=False)
    p.add_argument("--all", action="store_true", help="table of every preset (the default without --preset)")
    p.set_defaults(func=run_params)

    f = subparsers.add_parser(
        "flops",
        help="forward/training FLOPs per token: Kaplan, Chinchilla, matmul-exact, jaxpr walk, XLA",
        description=(
            "Forward FLOPs per token counted four ways (Kaplan's 2N + 2·L·T·d, Chinchilla's appendix-F "
            "count, the exact closed-form matmul sum, and a walk of the traced forward jaxpr), the "
            "training FLOPs per token (3 × matmul-exact), and XLA's cost analysis for comparison."
        ),
    )
    _add_model_args(f, preset_required=True)
    f.add_argument("--seq-len", type=int, metavar="T", help="sequence length in tokens (default: n_ctx)")
    f.add_argument(
        "--no-xla", action="store_true", help="skip XLA's cost analysis (lowering big presets takes seconds)"
    )
    f.set_defaults(func=run_flops)


def _config(args: argparse.Namespace) -> ModelConfig:
    return get_config(args.preset, parse_model_set(args.set))


def _fmt(n: Any) -> str:
    if n is None:
        return "n/a"
    if isinstance(n, float):
        return f"{n:,.1f}"
    return f"{n:,}"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    cols = list(zip(header, *rows))
    widths = [max(len(c) for c in col) for col in cols]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def params_report(preset: str, cfg: ModelConfig) -> dict[str, Any]:
    """JSON object of ``scalinglab params`` for one config."""
    return {"preset": preset, "config": cfg.to_dict(), **accounting.param_counts(cfg)}


def run_params(args: argparse.Namespace) -> int:
    if args.preset is None or args.all:
        if args.preset is not None:
            raise UserError("--all prints every preset; drop --preset (or drop --all)")
        if args.set:
            raise UserError("--set needs --preset NAME (the config to change)")
        return _params_all(args.json)
    rep = params_report(args.preset, _config(args))
    if args.json:
        emit_json(rep)
        return 0
    c = rep["config"]
    print(
        f"{args.preset}: {c['family']}  n_layer={c['n_layer']} d_model={c['d_model']} n_head={c['n_head']} "
        f"n_kv_head={c['n_kv_head']} d_ff={c['d_ff']} n_ctx={c['n_ctx']} vocab_size={c['vocab_size']} "
        f"tied={c['tie_embeddings']}"
    )
    rows = [[g, _fmt(n)] for g, n in rep["by_group"].items()]
    rows += [
        [k, _fmt(rep[k])]
        for k in ("total", "embedding", "non_embedding", "non_embedding_with_head", "closed_form_12Ld2", "gap_vs_12Ld2")
    ]
    print(_table(rows, ["parameters", "count"]))
    return 0


def _params_all(as_json: bool) -> int:
    reports = {name: params_report(name, get_config(name)) for name in PRESETS}
    if as_json:
        emit_json({"presets": reports})
        return 0
    header = [
        "preset",
        "family",
        "L",
        "d_model",
        "heads",
        "total",
        "embedding",
        "head",
        "non_embedding N",
        "12·L·d²",
        "gap",
        "train FLOPs/token @n_ctx",
    ]
    rows = []
    for name, r in reports.items():
        c = r["config"]
        cfg = get_config(name)
        rows.append(
            [
                name,
                c["family"],
                str(c["n_layer"]),
                str(c["d_model"]),
                f"{c['n_head']}/{c['n_kv_head']}",
                _fmt(r["total"]),
                _fmt(r["embedding"]),
                _fmt(r["head"]),
                _fmt(r["non_embedding"]),
                _fmt(r["closed_form_12Ld2"]),
                _fmt(r["gap_vs_12Ld2"]),
                _fmt(accounting.train_flops_per_token(cfg, cfg.n_ctx)),
            ]
        )
    print(_table(rows, header))
    return 0


def flops_report(preset: str, cfg: ModelConfig, seq_len: int, *, xla: bool = True) -> dict[str, Any]:
    """JSON object of ``scalinglab flops`` for one config and sequence length."""
    forward = accounting.forward_flops_per_token(cfg, seq_len)
    measured = accounting.measured_flops_per_token(cfg, seq_len, xla=xla)
    counts = accounting.param_counts(cfg)
    return {
        "preset": preset,
        "config": cfg.to_dict(),
        "seq_len": seq_len,
        "non_embedding": counts["non_embedding"],
        "total": counts["total"],
        "forward_per_token": {**forward, "jaxpr": measured["jaxpr"]},
        "train_per_token": accounting.train_flops_per_token(cfg, seq_len),
        "train_per_token_by_method": {k: 3 * v for k, v in forward.items()},
        "six_n": 6 * counts["non_embedding"],
        "chinchilla_terms": accounting.chinchilla_terms(cfg, seq_len),
        "xla_forward_per_token": measured["xla"],
    }


def run_flops(args: argparse.Namespace) -> int:
    cfg = _config(args)
    seq_len = cfg.n_ctx if args.seq_len is None else args.seq_len
    rep = flops_report(args.preset, cfg, seq_len, xla=not args.no_xla)
    if args.json:
        emit_json(rep)
        return 0
    fw = rep["forward_per_token"]
    exact = fw["matmul_exact"]
    print(
        f"{args.preset}: seq_len={seq_len}  N (non-embedding)={_fmt(rep['non_embedding'])}  total={_fmt(rep['total'])}"
    )
    rows = [[k, _fmt(v), f"{v / exact:.4f}"] for k, v in fw.items()]
    xla = rep["xla_forward_per_token"]
    rows.append(["xla cost_analysis", _fmt(xla), "n/a" if xla is None else f"{xla / exact:.4f}"])
    rows.append(["train (3 × matmul_exact)", _fmt(rep["train_per_token"]), "3.0000"])
    rows.append(["6N", _fmt(rep["six_n"]), f"{rep['six_n'] / exact:.4f}"])
    print(_table(rows, ["FLOPs per token", "count", "/ matmul_exact"]))
    return 0
