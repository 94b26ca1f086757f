"""libtpu installed on a host without TPU chips: the TPU backend is left out (no libtpu warnings)."""

import importlib.util

import pytest

from scalinglab import platforms


@pytest.fixture
def installed(monkeypatch):
    """``installed(*modules)``: find_spec answers as if exactly these optional modules were installed."""

    def set_installed(*names):
        real = importlib.util.find_spec
        optional = {"libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin"}
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: (object() if name in names else None) if name in optional else real(name, *a),
        )

    return set_installed


def test_libtpu_without_chips_runs_on_cpu(installed, tmp_path):
    installed("libtpu")
    env = {}
    assert platforms.skip_absent_tpu(env, (str(tmp_path / "accel*"),)) == "cpu" and env == {"JAX_PLATFORMS": "cpu"}


def test_libtpu_and_cuda_without_tpu_chips_keep_the_gpu(installed, tmp_path):
    installed("libtpu", "jax_cuda12_plugin")
    env = {}
    assert platforms.skip_absent_tpu(env, (str(tmp_path / "accel*"),)) == "cuda,cpu"


def test_tpu_host_user_choice_and_no_libtpu_are_left_alone(installed, tmp_path):
    (tmp_path / "accel0").touch()
    installed("libtpu")
    env = {}
    assert platforms.skip_absent_tpu(env, (str(tmp_path / "accel*"),)) is None and env == {}  # a TPU VM
    env = {"JAX_PLATFORMS": "tpu"}
    assert platforms.skip_absent_tpu(env, (str(tmp_path / "none*"),)) is None and env == {"JAX_PLATFORMS": "tpu"}
    installed()
    env = {}
    assert platforms.skip_absent_tpu(env, (str(tmp_path / "none*"),)) is None and env == {}
