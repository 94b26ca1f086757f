"""``scalinglab aot``: the real train step compiled for a TPU topology with libtpu on this CPU host.

Independent references: per chip the arguments hold at least the f32 parameters and both AdamW
moments (12 bytes per parameter, :func:`param_counts`) — all of them on a data-parallel mesh, a
quarter of them when fsdp=4 shards them; HBM of a v5e chip is 16 GiB (Cloud TPU docs). The tests
that compile need libtpu (``make venv-tpu``; CI installs it) and are skipped without it.
"""

import importlib.util
import json

import pytest

from scalinglab import cli
from scalinglab.models.accounting import forward_flops_per_token, param_counts
from scalinglab.models.config import get_config
from scalinglab.train import aot

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (make venv-tpu)"
)

# 2 layers of d_model 8192: 1.6e9 parameters, 12 bytes each = 19 GB of state per chip, data-parallel.
BIG = ["--set", "n_layer=2", "--set", "d_model=8192", "--set", "n_head=64"]


def _aot(capsys, *args):
    rc = cli.main(["aot", "--topology", "v5e:2x2", "--json", *args])
    out = capsys.readouterr().out
    assert rc == 0
    [result] = json.loads(out)
    return result


@needs_libtpu
def test_small_config_fits_v5e_with_positive_estimate_and_mfu(capsys):
    r = _aot(capsys, "--preset", "gpt2-tiny", "--seq-len", "64", "--batch-size", "8", "--dtype", "bfloat16")
    n_total = param_counts(get_config("gpt2-tiny"))["total"]
    assert r["device_kind"] == "TPU v5 lite" and r["chips"] == 4 and r["topology"] == "v5e:2x2"
    assert r["hbm_capacity_bytes"] == 16 * 2**30 and r["fits"] is True
    assert r["memory_source"] == "memory_analysis"
    # replicated params + mu + nu on every chip (+ a few scalars: step counters, GNS EMAs, RNG key);
    # the arguments add this chip's batch rows (and TPU tile padding of the small arrays)
    assert 12 * n_total <= r["state_bytes_per_chip"] < 12 * n_total + 4096
    assert r["argument_bytes"] >= r["state_bytes_per_chip"] + 2 * 65 * 4
    assert r["hbm_bytes_per_chip"] == (r["argument_bytes"] + r["temp_bytes"] + r["output_bytes"] - r["alias_bytes"])
    assert r["estimated_step_s"] > 0
    assert 0 < r["predicted_mfu_causal"] < r["predicted_mfu"] <= 1
    forward = forward_flops_per_token(get_config("gpt2-tiny"), 64)["matmul_exact"]
    assert r["train_flops_per_step"] == 8 * 64 * 3 * forward
    # the roofline bound: at least the exact training FLOPs of one chip's quarter at the v5e bf16 peak
    assert r["roofline_step_s"] >= r["train_flops_per_step"] / (4 * 197e12)
    assert r["roofline_mfu"] == pytest.approx(r["train_flops_per_step"] / (4 * 197e12 * r["roofline_step_s"]))


def test_roofline_is_the_slower_of_compute_and_hbm_traffic():
    """v5e: 197e12 bf16 FLOP/s and 819 GB/s per chip (Cloud TPU v5e system architecture page)."""
    assert aot.roofline_seconds({"flops": 2 * 197e12, "bytes accessed": 819e9}, "TPU v5 lite") == 2.0
    assert aot.roofline_seconds({"flops": 197e12, "bytes accessed": 3 * 819e9}, "TPU v5 lite") == 3.0
    assert aot.roofline_seconds({"flops": 275e12, "bytes accessed": 0.0}, "TPU v4") == 1.0
    assert aot.roofline_seconds({"optimal_seconds": -1.0}, "TPU v5 lite") is None  # no flops/bytes: none
    assert aot.roofline_seconds({"flops": 1e12, "bytes accessed": 1e9}, "cpu") is None  # unknown chip


@needs_libtpu
def test_oversized_config_does_not_fit(capsys):
    n_total = param_counts(get_config("gpt2-tiny", {"n_layer": 2, "d_model": 8192, "n_head": 64}))["total"]
    r = _aot(capsys, "--preset", "gpt2-tiny", *BIG, "--seq-len", "32", "--batch-size", "4")
    assert r["fits"] is False and r["hbm_bytes_per_chip"] > r["hbm_capacity_bytes"] == 16 * 2**30
    assert 12 * n_total <= r["state_bytes_per_chip"] < 12 * n_total + 4096


@needs_libtpu
@pytest.mark.slow  # the fsdp compile of this model takes minutes on two cores
def test_fsdp_shards_the_oversized_state_until_it_fits(capsys):
    n_total = param_counts(get_config("gpt2-tiny", {"n_layer": 2, "d_model": 8192, "n_head": 64}))["total"]
    sharded = _aot(capsys, "--preset", "gpt2-tiny", *BIG, "--seq-len", "32", "--batch-size", "4", "--mesh", "fsdp=4")
    assert sharded["mesh"] == "data=1,fsdp=4,tensor=1"
    assert 12 * n_total / 4 <= sharded["state_bytes_per_chip"] < 1.01 * 12 * n_total / 4
    assert sharded["fits"] is True and sharded["hbm_bytes_per_chip"] < 16 * 2**30


def test_without_libtpu_one_line_names_make_venv_tpu(monkeypatch, capsys):
    monkeypatch.setattr(aot.importlib.util, "find_spec", lambda name: None)
    rc = cli.main(["aot", "--topology", "v5e:2x2", "--preset", "gpt2-tiny", "--seq-len", "8", "--batch-size", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "make venv-tpu" in err and len(err.strip().splitlines()) == 1


def test_topology_names():
    assert aot.topology_name("v4-32") == ("v4:2x2x4", "megacore")
    assert aot.topology_name("v5litepod-16") == ("v5e:4x4", "default")
    assert aot.topology_name("v5p-8") == ("v5:2x2x1", "megacore")
    assert aot.topology_name("v6e-8") == ("v6e:2x4", "default")
    assert aot.topology_name("v5e:2x2") == ("v5e:2x2", "default")
    with pytest.raises(aot.UserError):
        aot.topology_name("v9-3")
