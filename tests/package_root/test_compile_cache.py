"""Persistent compilation cache: where it lives, and that a cached program gives the same fit.

The end-to-end check runs ``scalinglab fit`` as three real processes sharing one cache
directory: cold (compiles, writes entries), warm (loads them: no new entry is written) and
``--no-cache``; the three JSON outputs must be identical to the last bit.
"""

import importlib.metadata
import json
import os
import subprocess
import sys

from scalinglab import compile_cache
from scalinglab.benchmarks.chinchilla_fit import isoflop_table


def test_cache_dir_honours_xdg_and_is_keyed_by_jax_version(monkeypatch, tmp_path):
    version = importlib.metadata.version("jax")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_dir() == tmp_path / "xdg" / "scalinglab" / f"jax-{version}"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.cache_dir() == tmp_path / "home" / ".cache" / "scalinglab" / f"jax-{version}"


def test_env_switch(monkeypatch):
    for value, off in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(compile_cache.DISABLE_ENV, value)
        assert compile_cache.disabled_by_env() is off
    monkeypatch.setenv(compile_cache.DISABLE_ENV, "1")
    assert compile_cache.enable() is None


def _entries(path):
    return sorted(p.name for p in path.rglob("*-cache")) if path.exists() else []


def test_fit_identical_cold_warm_and_without_cache(tmp_path):
    t = isoflop_table(4, 10, sigma=0.01, seed=3)
    csv = tmp_path / "table.csv"
    csv.write_text(
        "params,tokens,loss\n"
        + "".join(f"{n:.17g},{d:.17g},{l:.17g}\n" for n, d, l in zip(t["params"], t["tokens"], t["loss"]))
    )
    env = {k: v for k, v in os.environ.items() if k != compile_cache.DISABLE_ENV and not k.startswith("JAX_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env["JAX_PLATFORMS"] = "cpu"
    cache = tmp_path / "xdg" / "scalinglab" / f"jax-{importlib.metadata.version('jax')}"

    def fit(*extra):
        cmd = [
            sys.executable,
            "-m",
            "scalinglab.cli",
            "fit",
            str(csv),
            "--law",
            "chinchilla",
            "--bootstrap",
            "16",
            "--json",
            *extra,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    cold = fit()
    after_cold = _entries(cache)
    assert len(after_cold) >= 3  # at least the wide pass, the polish and the bootstrap programs
    warm = fit()
    assert _entries(cache) == after_cold  # every program came from the cache: nothing new compiled
    uncached = fit("--no-cache")
    assert _entries(cache) == after_cold
    assert warm == cold
    assert uncached == cold
