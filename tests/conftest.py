"""Test-wide setup: 8 forced CPU devices (multi-device tests), f32 matmuls at full precision."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# in-process CLI calls must not write the user's compilation cache (tests/package_root/test_compile_cache.py
# runs it in subprocesses with a temporary XDG_CACHE_HOME)
os.environ.setdefault("SCALINGLAB_NO_CACHE", "1")

from scalinglab import host_malloc  # noqa: E402 - after the environment, before JAX starts threads

host_malloc.keep_freed_memory()  # as the scalinglab command does on CPU
