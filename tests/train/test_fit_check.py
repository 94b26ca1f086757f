"""`ladder --ladder-preset` refuses a plan whose largest run does not fit one device, naming the lever.

The bytes in the refusal are checked against the closed form written out here (weights, gradient
and AdamW moments in f32 plus a bf16 copy, and the activations of train/memory.py's module doc);
the levers are FSDP mesh, --remat full, doubling --grad-accum, taken in turn until that form fits.
"""

import importlib.util

import pytest

from scalinglab.cli import main
from scalinglab.train.fit_check import largest_run
from scalinglab.train.plan import LADDER_PRESETS, plan_ladder

PRESET = "tpu-v5e-16"


def _ladder(*flags):
    return ["ladder", "--ladder-preset", PRESET, "--dataset", "files/none", "--dry-run", *flags]


def _largest():
    return largest_run(plan_ladder(LADDER_PRESETS[PRESET].spec))


def _gib(n):
    return f"{n / 2**30:.2f} GiB"


def test_unsharded_state_refused_naming_fsdp(capsys):
    run = _largest()
    c = run.config
    assert main(_ladder("--mesh", "data=16", "--grad-accum", "1", "--remat", "full", "--fit-check", "estimate")) == 2
    err = capsys.readouterr().err
    state = 18 * run.total  # unsharded: f32 weights, gradient, two moments + the bf16 copy
    per_token = c.n_layer * c.d_model + 16 * c.d_model + 2 * c.ff_dim + 2 * c.n_head * run.seq_len + 3 * c.vocab_size
    act = 4 * run.batch_size * run.seq_len * per_token // 16  # remat full, batch over 16 data shards
    assert len(err.strip().splitlines()) == 1, err
    assert f"largest run {run.name}" in err and f"needs {_gib(state + act)} per device" in err, err
    assert "16.00 GiB available" in err and err.strip().endswith(
        "use an FSDP mesh (--mesh fsdp=16) and --grad-accum 4"
    ), err


def test_activations_refused_naming_remat(capsys):
    assert main(_ladder("--remat", "none", "--grad-accum", "1", "--fit-check", "estimate")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.strip().endswith("use --remat full and --grad-accum 4"), err


def test_the_presets_fit_by_the_estimate(capsys):
    for name in LADDER_PRESETS:
        argv = ["ladder", "--ladder-preset", name, "--dataset", "files/none", "--dry-run", "--json"]
        assert main([*argv, "--fit-check", "estimate"]) == 0, capsys.readouterr().err
        capsys.readouterr()


def test_largest_run_has_most_parameters():
    runs = plan_ladder(LADDER_PRESETS[PRESET].spec)
    assert largest_run(runs).total == max(r.total for r in runs)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu (make venv-tpu)")
@pytest.mark.parametrize("name", ["tpu-v5e-16", "tpu-v4-32"])
def test_the_tpu_presets_fit_by_the_aot_check(name, capsys):
    """The real step of the preset's largest run, compiled for its slice (minutes per preset)."""
    argv = ["ladder", "--ladder-preset", name, "--dataset", "files/none", "--dry-run", "--json"]
    assert main([*argv, "--fit-check", "aot"]) == 0, capsys.readouterr().err
