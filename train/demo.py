"""``scalinglab demo``: the main job on a laptop CPU, end to end, in minutes.

1. prepares the default offline corpus (byte-level ``local_text``: the Python standard library's
   own sources) or, with ``--synthetic``, the ``synthetic_markov`` source whose entropy rate is known;
2. trains an IsoFLOP ladder (3 budgets spanning 10× in compute, 5 sizes each spanning ~30× in N)
   under the ``search`` learning-rate protocol: 3 sizes of the smallest budget × 5 learning rates
   first, then lr_opt(N) for every run, warmup = N tokens, β2 0.99 (Porian et al. 2024);
3. trains a small batch-size sweep (for the critical batch size): 5 batch sizes × a 5-point lr grid,
   steps to each target = the minimum over a batch size's learning rates;
4. fits everything and writes the report (``report.md``, ``report.html``, ``fits.json``, figures).

Everything is resumable: rerunning the demo skips finished runs and resumes partial ones.
Run as several processes (``scalinglab-launch-local``, a TPU slice) it starts ``jax.distributed``;
process 0 decides and writes, the others follow.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from scalinglab.errors import UserError
from scalinglab.rundir import RESOLVED_CONFIG
from scalinglab.train.config import TrainConfig
from scalinglab.train.config_file import write_config_file
from scalinglab.train.executor import Executor, ExecutorOptions, make_executor
from scalinglab.train.multihost import agreed, is_main
from scalinglab.train.options import Part, Schema, option
from scalinglab.train.plan import LadderSpec, format_seconds, plan_ladder, plan_lr_search, plan_table
from scalinglab.train.sweep import DEFAULT_LR_GRID

# The CPU demo ladder: budgets in training FLOPs per run, sizes in non-embedding parameters.
DEMO_SPEC = LadderSpec(
    plan="isoflop",
    budgets=(5e10, 1.6e11, 5e11),
    family="gpt2",
    sizes_per_budget=5,
    size_span=48.0,  # after rounding to real configs every budget still spans >= 30x in N
    # Byte-level micro models: the vocabulary projection dominates their FLOPs, and their
    # measured optimum sits near 100-300 tokens/parameter, not Chinchilla's 20.
    tokens_per_param=150.0,
    aspect_ratio=32.0,
    head_dim=8,
    seq_len=64,
    batch_size=8,  # 512 tokens/step: the largest model of the smallest budget still gets > 100 steps
    lr=3e-3,  # the centre of the lr search grid (0.75e-3 .. 12e-3)
    lr_protocol="search",
    lr_search_sizes=3,
    lr_search_extend=2,  # a size whose best lr is at the grid edge gets up to 2 more runs beyond it
)
# The demo's batch-size sweep: a small model on a fixed token budget, every batch size at the default
# 5-point lr grid (0.25..4 × the √ rule from 2e-3 at B = 16). Batch sizes 2..32 sequences around its
# B_crit (a few sequences at these losses); 0.5M tokens per run keeps the 25 runs' steps (40k) below
# the former 6-run √-rule sweep's (32k at 2M tokens, B = 2..64) plus a quarter.
DEMO_SWEEP = dict(
    preset="gpt2-tiny", batch_sizes=(2, 4, 8, 16, 32), tokens=524_288, lr=2e-3, base_batch=16, lr_grid=DEFAULT_LR_GRID
)
DEMO_TRAIN = dict(eval_every=50, eval_batches=16, log_every=5, checkpoint_every=0)


# make demo-synthetic: a first-order source (vocab 32, 4 successors per state). With the default
# second-order source, CPU budgets up to 5e11 FLOPs leave every model still learning the
# second-order structure (losses 1.26-2.8 nats vs the rate 1.0755), and approach 3 cannot place
# E (it fitted E -> 0); the first-order chain is learnable at these budgets.
SYNTHETIC_DATASET = ("synthetic_markov/order1", {"order": 1})


def ensure_prepared(dataset: str, data_dir: str | None, log, config: dict | None = None) -> object:
    """Load ``dataset``, preparing it first if this machine has not (offline: built from local files)."""
    from scalinglab.data.pipeline import load_dataset, prepare_dataset

    try:
        return load_dataset(dataset, data_dir)
    except UserError:
        log(f"[demo] preparing dataset {dataset} (once per machine)")
        prepare_dataset(dataset, data_dir, config)
        return load_dataset(dataset, data_dir)


def run_demo(
    out: str | Path,
    *,
    synthetic: bool = False,
    data_dir: str | None = None,
    log=lambda s: print(s, file=sys.stderr, flush=True),
    resolved_config: dict | None = None,
    force: bool = False,
    executor: Executor | None = None,
) -> Path:
    """Run the whole demo into ``out`` (``out/ladder``, ``out/ladder/sweep``, ``out/report``); returns
    the report directory. An ``out`` that is not a demo directory is refused unless ``force``.

    ``resolved_config``: the command's settings, written as ``out/config.yaml`` once the data is ready.
    ``executor``: trains the runs of the ladder and of the sweep (default: one after another, here).
    Several processes (``jax.distributed``): process 0 checks ``out``, prepares the data (into a
    ``data_dir`` every process reads), writes and logs; the others wait for its decisions
    (:func:`scalinglab.train.multihost.agreed`) and train the same runs with it.
    """
    from scalinglab.outdir import check_out_dir, mark_out_dir
    from scalinglab.scaling.report import write_report
    from scalinglab.train.ladder import run_ladder
    from scalinglab.train.sweep import run_sweep

    t0 = time.perf_counter()
    out = Path(out)
    main = is_main()  # several processes: process 0 checks, prepares and writes; the others follow
    if not main:
        log = lambda s: None  # noqa: E731
    dataset, config = SYNTHETIC_DATASET if synthetic else ("local_text", None)

    def start() -> int:
        """The out-dir check, the data preparation and the first writes (process 0); the vocabulary size."""
        ours = check_out_dir(out, "demo", owned=("ladder", "report", RESOLVED_CONFIG), force=force)
        ds = ensure_prepared(dataset, data_dir, log, config)
        mark_out_dir(out, "demo", ours)
        if resolved_config is not None:
            write_config_file(out / RESOLVED_CONFIG, resolved_config)
        return int(ds.vocab_size)

    vocab_size = agreed(start)  # the other processes wait until the data is prepared (shared data dir)
    spec = dataclasses.replace(DEMO_SPEC, vocab_size=vocab_size)
    runs = plan_ladder(spec)
    search = plan_lr_search(spec, runs)
    log(plan_table([*search, *runs]))
    ladder_dir = out / "ladder"
    run_ladder(
        runs,
        ladder_dir,
        search_runs=search,
        extend_search=spec.lr_search_extend,
        dataset=dataset,
        data_dir=data_dir,
        executor=executor,
        log=log,
        **DEMO_TRAIN,
    )
    log(f"[demo] ladder done after {format_seconds(time.perf_counter() - t0)}; batch-size sweep next")

    sweep = DEMO_SWEEP
    base = TrainConfig(
        preset=sweep["preset"],
        overrides={"vocab_size": vocab_size, "n_ctx": spec.seq_len},
        dataset=dataset,
        data_dir=data_dir,
        seq_len=spec.seq_len,
        tokens=sweep["tokens"],
        lr=sweep["lr"],
        schedule="constant",
        eval_batches=DEMO_TRAIN["eval_batches"],
    )
    run_sweep(
        base,
        sweep["batch_sizes"],
        out=ladder_dir / "sweep",
        base_batch=sweep["base_batch"],
        lr_grid=sweep["lr_grid"],
        log=log,
        executor=executor,
        log_every=DEMO_TRAIN["log_every"],
        eval_every=0,
        checkpoint_every=0,
    )
    log(f"[demo] sweep done after {format_seconds(time.perf_counter() - t0)}; fitting and writing the report")
    # process 0 fits and writes the report; the others wait for it (and share a UserError it raises)
    report_dir = Path(agreed(lambda: str(write_report(ladder_dir, out / "report"))))
    log(f"[demo] finished in {format_seconds(time.perf_counter() - t0)}: {report_dir / 'report.md'}")
    return report_dir


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """The demo's settings (config-file section ``demo``; the data directory is ``data.data_dir``)."""

    synthetic: bool = option(False, "use the synthetic Markov source (known entropy rate) instead of the stdlib corpus")
    out: str | None = option(None, "output directory (default runs/demo; runs/demo-synthetic with --synthetic)")
    force: bool = option(False, "run into an --out that is not a demo directory (nothing in it is replaced)")


SCHEMA = Schema(
    "demo",
    Part(DemoOptions, section="demo"),
    Part(TrainConfig, include=("data_dir",)),
    Part(ExecutorOptions, section="demo", exclude=("only",)),
)


def _demo(args: argparse.Namespace) -> int:
    from scalinglab.train import distributed

    distributed.initialize()  # several processes (env SCALINGLAB_COORDINATOR..., Cloud TPU): jax.distributed
    values = SCHEMA.values(args)
    opts: DemoOptions = SCHEMA.build(DemoOptions, values)
    data: TrainConfig = SCHEMA.build(TrainConfig, values)
    out = opts.out or ("runs/demo-synthetic" if opts.synthetic else "runs/demo")
    resolved = SCHEMA.dump(dataclasses.replace(opts, out=out), data)
    with make_executor(SCHEMA.build(ExecutorOptions, values)) as executor:
        report = run_demo(
            out,
            synthetic=opts.synthetic,
            data_dir=data.data_dir,
            resolved_config=resolved,
            force=opts.force,
            executor=executor,
        )
    if is_main():
        print(report / "report.md")
    return 0


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job on CPU: a ladder, a batch sweep and the report")
    SCHEMA.add_flags(p)
    p.set_defaults(func=_demo)
