"""host_malloc: with the settings, a jitted function's 64 MiB output stops costing page faults.

The reference is the closed form: a buffer that comes from fresh pages costs bytes / page size
minor faults (the kernel zero-fills each page on first touch); a reused one costs none.
"""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from scalinglab import host_malloc, platforms

PROBE = """
import resource
from scalinglab import host_malloc
applied = host_malloc.keep_freed_memory()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096), jnp.float32)  # 64 MiB
f = jax.jit(lambda x: jnp.sin(x) * 2.0 + x)  # a fresh 64 MiB output buffer per call
def call():
    y = f(x)
    y.block_until_ready()
for _ in range(25):  # the runtime frees buffers lazily: reuse sets in after ~15 calls
    call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    call()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""

BUFFER_PAGES = 64 * 2**20 // resource.getpagesize()


def _probe(**env) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    return out[-2] == "True", float(out[-1])


def _thp_always() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[always]" in path.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_kept_memory_ends_the_page_faults_of_each_call():
    applied, faults = _probe()
    assert applied
    assert faults < 0.01 * BUFFER_PAGES
    applied, faults = _probe(SCALINGLAB_MALLOC="default")
    assert not applied
    if not _thp_always():  # with huge pages always on, a fresh buffer faults per 2 MiB instead
        assert faults >= 0.9 * BUFFER_PAGES


def test_user_settings_win():
    assert host_malloc.user_tuned({"SCALINGLAB_MALLOC": "default"})
    assert host_malloc.user_tuned({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
    assert host_malloc.user_tuned({"MALLOC_ARENA_MAX_": "2"})
    assert not host_malloc.user_tuned({"MALLOC_CHECK": "x", "PATH": "/bin"})
    assert not host_malloc.keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})


def test_runs_on_cpu_follows_jax_platforms_and_the_host(tmp_path):
    assert platforms.runs_on_cpu({"JAX_PLATFORMS": "cpu"})
    assert not platforms.runs_on_cpu({"JAX_PLATFORMS": "cuda,cpu"})
    assert not platforms.runs_on_cpu({"JAX_PLATFORMS": "tpu"})
    # without JAX_PLATFORMS: the CPU unless a CUDA plugin, or libtpu with chips, is here
    expected = not platforms.has_cuda_plugin()
    assert platforms.runs_on_cpu({}, dev_globs=(str(tmp_path / "accel*"),)) == expected
