"""``scalinglab aot``: compile the real train step for a TPU topology on this host (needs ``make venv-tpu``).

    scalinglab aot --topology v5e:2x2 --preset gpt2-small --seq-len 1024 --batch-size 32 --dtype bfloat16
    scalinglab aot --ladder-preset tpu-v5e-16 --largest --json

A run that does not fit its chips is a result (``"fits": false``, exit 0). See
:mod:`scalinglab.train.aot` for the reported numbers.
"""

from __future__ import annotations

import argparse
import dataclasses

from scalinglab.cli import emit_json
from scalinglab.errors import UserError


def _configs(args: argparse.Namespace) -> tuple[str, list[tuple[str, object, object]]]:
    """The topology and ``(name, TrainConfig, ModelConfig)`` of every run to check."""
    from scalinglab.models.config import get_config, parse_model_set
    from scalinglab.train.config import TrainConfig, parse_mesh, validate

    if bool(args.preset) == bool(args.ladder_preset):
        raise UserError("give either --preset (one run) or --ladder-preset (a ladder's runs)")
    if args.ladder_preset:
        from scalinglab.train.ladder import preset_train_configs

        preset, cfgs = preset_train_configs(args.ladder_preset, largest=args.largest)
        topology = args.topology or preset.topology
        if not topology:
            raise UserError(f"--ladder-preset {args.ladder_preset} is not for a TPU slice; give --topology")
        changes = {
            k: v
            for k, v in (
                ("dtype", args.dtype),
                ("remat", args.remat),
                ("grad_accum", args.grad_accum),
                ("mesh", parse_mesh(args.mesh) if args.mesh else None),
            )
            if v is not None
        }
        cfgs = [dataclasses.replace(c, **changes) for c in cfgs]
        return topology, [(c.name, validate(c), get_config(c.preset, c.overrides)) for c in cfgs]
    if not args.topology:
        raise UserError("give --topology, e.g. v5e:2x2 or v4-32")
    if args.seq_len is None or args.batch_size is None:
        raise UserError("--preset needs --seq-len and --batch-size")
    overrides = parse_model_set(args.set)
    model_cfg = get_config(args.preset, overrides)
    if args.seq_len > model_cfg.n_ctx:
        raise UserError(f"--seq-len {args.seq_len} exceeds n_ctx={model_cfg.n_ctx}; add --set n_ctx={args.seq_len}")
    cfg = validate(
        TrainConfig(
            name=args.preset,
            preset=args.preset,
            overrides=overrides,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            steps=1,
            dtype=args.dtype or "float32",
            remat=args.remat or "none",
            grad_accum=args.grad_accum or 1,
            mesh=parse_mesh(args.mesh) if args.mesh else None,
        )
    )
    return args.topology, [(args.preset, cfg, model_cfg)]


def _fmt_bytes(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.2f} GiB"


def _aot(args: argparse.Namespace) -> int:
    from scalinglab.train import aot

    aot.require_libtpu()
    topology, runs = _configs(args)
    devices = aot.topology_devices(topology)
    results = []
    for name, cfg, model_cfg in runs:
        results.append({"name": name, **aot.check(cfg, model_cfg, topology, devices)})
    if args.json:
        emit_json(results)
        return 0
    for r in results:
        step = "?" if r["estimated_step_s"] is None else f"{r['estimated_step_s']:.4g}"
        mfu = "?" if r["predicted_mfu"] is None else f"{r['predicted_mfu']:.3f}"
        mfu_c = "?" if r["predicted_mfu_causal"] is None else f"{r['predicted_mfu_causal']:.3f}"
        print(
            f"{r['name']}: {r['topology']} ({r['chips']}× {r['device_kind']}), mesh {r['mesh']}, "
            f"B={r['batch_size']} T={r['seq_len']} {r['dtype']} remat={r['remat']} accum={r['grad_accum']}: "
            f"HBM {_fmt_bytes(r['hbm_bytes_per_chip'])} of {_fmt_bytes(r['hbm_capacity_bytes'])} per chip "
            f"({'fits' if r['fits'] else 'DOES NOT FIT'}), step ≈ {step} s, "
            f"predicted MFU {mfu} (causal count {mfu_c})"
            + ("" if r["roofline_step_s"] is None else f"; roofline bound {r['roofline_step_s']:.4g} s")
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from scalinglab.train.config import DTYPES, REMATS

    p = sub.add_parser("aot", help="compile the train step for a TPU topology here: per-chip HBM, step time, MFU")
    p.add_argument(
        "--topology",
        default=None,
        help="TPU slice: v5e:2x2, v4:2x2x4, or an accelerator type (v4-32, v5litepod-16, v5p-8, v6e-8)",
    )
    p.add_argument("--preset", default="", help="model preset (one run)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model config field (repeatable)")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch, sequences")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="compute dtype (default float32, or the preset's)")
    p.add_argument("--mesh", default=None, help="data=..,fsdp=..,tensor=.. (default: all devices on data)")
    p.add_argument("--remat", choices=REMATS, default=None, help="per-block rematerialisation (default none)")
    p.add_argument("--grad-accum", type=int, default=None, help="microbatches per step (default 1)")
    p.add_argument("--ladder-preset", default="", help="check the runs of a ladder preset (its topology by default)")
    p.add_argument("--largest", action="store_true", help="with --ladder-preset: only its largest run")
    p.add_argument("--json", action="store_true", help="a JSON list, one object per run")
    # no persistent compilation cache: a compile-only TPU executable cannot be loaded back without
    # a TPU client (JAX warns "PjRtCompiler must be constructed with a Client" on every later run)
    p.set_defaults(func=_aot, no_cache=True)
