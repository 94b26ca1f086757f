"""Runs that cannot fit in memory: one line with the estimated bytes and the levers, exit 2, nothing
left behind; a batch sweep checks every batch size before training any."""

import os
import subprocess
import sys

import pytest

from scalinglab.errors import UserError
from scalinglab.models.config import get_config
from scalinglab.train.memory import check_fits, estimate


def test_estimate_matches_closed_form_for_a_small_gpt2():
    cfg = get_config("gpt2-tiny", {"n_layer": 2, "d_model": 64, "n_head": 4, "vocab_size": 257, "n_ctx": 32})
    from scalinglab.models import accounting

    n = accounting.param_counts(cfg)["total"]
    est = estimate(cfg, batch_size=8, seq_len=32)
    assert est["state"] == 16 * n
    assert est["activations"] == 4 * 8 * 32 * (2 * (16 * 64 + 2 * 256 + 2 * 4 * 32) + 3 * 257)
    assert estimate(cfg, batch_size=8, seq_len=32, grad_accum=4)["activations"] == est["activations"] // 4


def test_check_fits_names_bytes_and_levers():
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cfg = get_config("gpt2-tiny", {"n_ctx": 65536})
    with pytest.raises(
        UserError,
        match=r"needs at least [\d.]+ GiB .* host RAM is [\d.]+ GiB; lower --batch-size, "
        r"raise --grad-accum",
    ):
        check_fits(cfg, batch_size=64, seq_len=65536)
    assert estimate(cfg, batch_size=64, seq_len=65536)["total"] > ram
    check_fits(get_config("gpt2-tiny"), batch_size=8, seq_len=64)  # a small run passes


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "scalinglab.cli", *argv], capture_output=True, text=True, timeout=600)


def test_huge_context_train_refused_fast_and_leaves_no_run_dir(tmp_path, data_dir):
    run = tmp_path / "run"
    p = _cli(
        "train",
        "--preset",
        "gpt2-tiny",
        "--set",
        "n_ctx=65536",
        "--seq-len",
        "65536",
        "--batch-size",
        "64",
        "--steps",
        "2",
        "--dataset",
        "synthetic_markov",
        "--data-dir",
        data_dir,
        "--out",
        str(run),
        "--no-progress",
    )
    errors = [ln for ln in p.stderr.splitlines() if "error" in ln]  # (a note on data repeats may precede it)
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "GiB" in errors[0] and "--grad-accum" in errors[0]
    assert not run.exists()


def test_sweep_checks_every_batch_before_training_any(tmp_path, data_dir):
    out = tmp_path / "sweep"
    p = _cli(
        "batch-sweep",
        "--preset",
        "gpt2-tiny",
        "--set",
        "n_ctx=32768",
        "--seq-len",
        "32768",
        "--batch-sizes",
        "1,2,512",
        "--tokens",
        "3e7",
        "--dataset",
        "synthetic_markov",
        "--data-dir",
        data_dir,
        "--out",
        str(out),
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "batch size 512" in lines[0], p.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing trained, nothing that blocks a corrected rerun
