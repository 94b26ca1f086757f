"""``scalinglab params`` / ``scalinglab flops``: JSON contract, tables, and bad input (exit 2, one line)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scalinglab.cli import main

SCALINGLAB = Path(sys.executable).parent / "scalinglab"


def _run(*args):
    return subprocess.run([str(SCALINGLAB), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["params", "--preset", "gpt2-nonexistent"], "unknown preset"),
        (["flops", "--preset", "gpt2-tiny", "--set", "n_head=5", "--seq-len", "16"], "does not divide d_model"),
    ],
)
def test_bad_input_subprocess_exit_2_one_line(args, needle):
    res = _run(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0] and "Traceback" not in res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize(
    "args, needle",
    [
        (["params", "--preset", "gpt2-tiny", "--set", "d_model=0"], "d_model must be positive"),
        (["params", "--preset", "modern-tiny", "--set", "n_kv_head=3"], "does not divide n_head"),
        (["params", "--preset", "gpt2-tiny", "--set", "n_layers=3"], "unknown model field"),
        (["params", "--preset", "gpt2-tiny", "--set", "n_layer=two"], "expected int"),
        (["flops", "--preset", "gpt2-tiny", "--seq-len", "257"], "n_ctx=256"),
        (["params", "--set", "n_layer=3"], "--set needs --preset"),
    ],
)
def test_bad_input_in_process(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_params_json_gpt2_small(capsys):
    assert main(["params", "--preset", "gpt2-small", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"] == 124_439_808
    assert out["non_embedding"] == 124_439_808 - (50257 + 1024) * 768
    assert out["embedding"] == (50257 + 1024) * 768
    assert out["closed_form_12Ld2"] == 12 * 12 * 768**2
    assert sum(out["by_group"].values()) == out["total"]


def test_params_set_overrides(capsys):
    assert main(["params", "--preset", "gpt2-small", "--set", "n_layer=6", "--set", "vocab_size=50304", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    d = 768
    assert out["total"] == 50304 * d + 1024 * d + 6 * (12 * d * d + 13 * d) + 2 * d
    assert out["config"]["n_layer"] == 6


def test_flops_json_subprocess():
    res = _run("flops", "--preset", "modern-tiny", "--seq-len", "64", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    fw = out["forward_per_token"]
    assert set(fw) == {"kaplan", "chinchilla", "matmul_exact", "jaxpr"}
    assert fw["jaxpr"] == fw["matmul_exact"]
    assert out["train_per_token"] == 3 * fw["matmul_exact"]
    # modern-tiny: L=2, d=64, 4 query / 2 kv heads of 16, SwiGLU F=192, V=257 untied, T=64
    L, d, N, K, H, F, V, T = 2, 64, 4, 2, 16, 192, 257, 64
    per_layer = 2 * d * H * (N + 2 * K) + 4 * T * N * H + 2 * N * H * d + 3 * 2 * d * F
    assert fw["matmul_exact"] == L * per_layer + 2 * d * V


def test_tables(capsys):
    assert main(["params"]) == 0
    table = capsys.readouterr().out
    for name in ("gpt2-small", "gpt2-xl", "modern-tiny"):
        assert name in table
    assert "124,439,808" in table and "1,557,611,200" in table
    assert main(["flops", "--preset", "gpt2-tiny", "--seq-len", "32", "--no-xla"]) == 0
    table = capsys.readouterr().out
    assert "matmul_exact" in table and "jaxpr" in table and "kaplan" in table and "chinchilla" in table
