"""Which JAX platforms a ``scalinglab`` command starts.

With libtpu installed (the ``tpu`` extra, which ``scalinglab aot`` needs on any host) JAX tries
the TPU backend first; on a host without TPU chips libtpu then prints a screen of warnings
(accelerator type, worker hostnames) on every command that touches JAX, and error output is no
longer one line. :func:`skip_absent_tpu` leaves the TPU backend out there. ``aot`` does not need
it: it compiles for a described topology (``get_topology_desc``), not for local chips.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from collections.abc import MutableMapping

# TPU chips appear as /dev/accel* (v2-v5e) or VFIO groups (v5p, v6e): what libtpu itself probes.
TPU_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*")


def has_tpu_chips(dev_globs: tuple[str, ...] = TPU_DEVICE_GLOBS) -> bool:
    """Whether this host exposes TPU chips."""
    return any(glob.glob(g) for g in dev_globs)


def has_cuda_plugin() -> bool:
    """Whether JAX's CUDA plugin is installed (the ``cuda`` extra)."""
    return any(importlib.util.find_spec(m) is not None for m in ("jax_cuda12_plugin", "jax_cuda13_plugin"))


def skip_absent_tpu(
    environ: MutableMapping[str, str] = os.environ, dev_globs: tuple[str, ...] = TPU_DEVICE_GLOBS
) -> str | None:
    """Set ``JAX_PLATFORMS`` to the installed non-TPU platforms (``cuda,cpu`` or ``cpu``) when
    libtpu is installed but this host has no TPU chips and the user set no ``JAX_PLATFORMS``;
    returns the value set, or None when nothing changed."""
    if environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None or has_tpu_chips(dev_globs):
        return None
    environ["JAX_PLATFORMS"] = value = "cuda,cpu" if has_cuda_plugin() else "cpu"
    if "jax" in sys.modules and environ is os.environ:  # imported already: JAX read the variable then
        sys.modules["jax"].config.update("jax_platforms", value)
    return value


def runs_on_cpu(environ: MutableMapping[str, str] = os.environ, dev_globs: tuple[str, ...] = TPU_DEVICE_GLOBS) -> bool:
    """Whether JAX will compute on the host CPU here: ``JAX_PLATFORMS=cpu``, or no TPU chips and
    no CUDA plugin installed (decided without importing JAX)."""
    chosen = environ.get("JAX_PLATFORMS", "")
    if chosen:
        return chosen.split(",")[0].strip() == "cpu"
    return not has_cuda_plugin() and not (importlib.util.find_spec("libtpu") is not None and has_tpu_chips(dev_globs))
