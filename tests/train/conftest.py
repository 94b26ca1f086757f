"""Shared fixtures for the training tests: a tiny prepared dataset and a compilation cache.

The dataset is prepared once per session into a temporary data dir with
``scalinglab.data.pipeline.prepare_dataset``; every run uses gpt2-tiny-sized models with
seq_len 32 so the whole directory trains in a few minutes on two CPU cores.
"""

import os

import jax
import pytest

DATASET = "synthetic_markov"
TINY_DATA = {"train_docs": 32, "validation_docs": 4, "doc_length": 1024}  # ~33k train tokens


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    from scalinglab.data import pipeline

    d = tmp_path_factory.mktemp("data")
    pipeline.prepare_dataset(DATASET, data_dir=str(d), config=TINY_DATA)
    return str(d)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Persistent XLA cache shared by this session and its subprocesses (same programs compile once)."""
    d = str(tmp_path_factory.mktemp("xla_cache"))
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", d)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = d
    yield d
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    jax.config.update("jax_compilation_cache_dir", previous)


@pytest.fixture
def make_config(data_dir):
    """``make_config(out, **fields)``: a small TrainConfig (gpt2-tiny with one layer, seq 32, batch 16,
    log every step); one layer keeps XLA compile time, which dominates these runs, low."""
    return lambda out, **kw: base_config(data_dir, out, **kw)


@pytest.fixture(scope="session")
def dataset_name():
    return DATASET


def base_config(data_dir, out, **kw):
    from scalinglab.train.config import TrainConfig

    defaults = dict(
        preset="gpt2-tiny",
        overrides={"n_layer": 1},
        dataset=DATASET,
        data_dir=data_dir,
        seq_len=32,
        batch_size=16,
        steps=6,
        lr=3e-3,
        warmup=1,
        log_every=1,
        eval_every=0,
        eval_batches=2,
        checkpoint_every=0,
        out=str(out),
    )
    defaults.update(kw)
    return TrainConfig(**defaults)


@pytest.fixture
def run_processes():
    """``run_processes(cmd, n=2, devices=2, timeout=600, until=None) -> [(returncode, output)]``: ``cmd``
    as ``n`` local processes under jax.distributed (``scalinglab.launch_local``'s environment, ``devices``
    CPU devices each). ``until(procs)``: polled every 0.1 s while they run; when it returns True every
    process is SIGKILLed (return codes then are -9)."""
    import subprocess
    import time

    from scalinglab.launch_local import free_port, process_envs

    def run(cmd, n=2, devices=2, timeout=600, until=None):
        procs = [
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for env in process_envs(n, devices, free_port())
        ]
        deadline = time.time() + timeout
        try:
            if until is not None:
                while any(p.poll() is None for p in procs) and time.time() < deadline:
                    if until():
                        for p in procs:
                            p.kill()
                        break
                    time.sleep(0.1)
            return [
                (p.returncode if p.poll() is not None else p.wait(), p.communicate(timeout=timeout)[0].decode())
                for p in procs
            ]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()

    return run
