"""Chinchilla approach 3 at the paper's scale: ours (vmapped optax L-BFGS) vs a scipy loop.

Workload: a 250-point IsoFLOP table generated from the published law (E=1.69, A=406.4,
B=410.7, alpha=0.34, beta=0.28) with 1 % multiplicative noise; the 4,500-start grid of
Hoffmann et al.; 1,000 bootstrap resamples, each refitted from the best 4 full-data optima.

Reference: the way published replications do it, ``scipy.optimize.minimize(method="L-BFGS-B")``
in a Python loop over the same starts and the same (resample, start) pairs, with an analytic
numpy gradient (``benchmarks/scipy_loop.py``).  In process, the loop is timed on an evenly
spaced subset and extrapolated linearly (per-start cost × number of starts); the JSON says so.

As whole processes (``cli_processes``, run by ``benchmarks/fit_process.py``): ``scalinglab fit CSV
--law chinchilla --starts hoffmann --bootstrap 1000`` with a fresh compilation cache (first call
compiles and fills it, later calls load), interleaved with ``python -m scalinglab.benchmarks.scipy_loop``
run in full (no extrapolation); medians of wall and CPU seconds of each child process, and the load
average around them (the machine is shared: compare the ratios, not the absolute seconds).
"""

from __future__ import annotations

import inspect
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scalinglab.benchmarks.common import write_result
from scalinglab.benchmarks.scipy_loop import scipy_fit, scipy_objective  # noqa: F401 - re-exported for tests
from scalinglab.scaling import chinchilla
from scalinglab.scaling.bootstrap import resample_counts

PUBLISHED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def isoflop_table(
    n_budgets: int = 10, n_per_budget: int = 25, sigma: float = 0.01, seed: int = 0, law: dict | None = None
) -> dict[str, np.ndarray]:
    """``{"params", "tokens", "flops", "loss"}``: n_budgets FLOP budgets 1e18..1e22, each with
    n_per_budget model sizes spanning ±0.75 decades around 20 tokens/parameter."""
    law = law or PUBLISHED
    rng = np.random.default_rng(seed)
    budgets = np.logspace(18, 22, n_budgets)
    n, c = [], []
    for budget in budgets:
        centre = np.log10(np.sqrt(budget / 6 / 20))
        n.extend(np.logspace(centre - 0.75, centre + 0.75, n_per_budget))
        c.extend([budget] * n_per_budget)
    n, c = np.array(n), np.array(c)
    d = c / (6 * n)
    loss = chinchilla.predict_loss(law, n, d) * np.exp(sigma * rng.standard_normal(n.size))
    return {"params": n, "tokens": d, "flops": c, "loss": loss}


def _process(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd`` to completion: wall seconds, CPU seconds (user + sys of the child), stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed: {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": proc.stdout}


def cli_processes(table: dict[str, np.ndarray], *, n_bootstrap: int, quick: bool = False, rounds: int = 1) -> dict:
    """``scalinglab fit CSV --law chinchilla --starts hoffmann --bootstrap K`` as whole processes,
    first (empty compilation cache) and later invocations, against the scipy loop as a whole
    process (``benchmarks/scipy_loop.py``: same starts, same resamples, the same number of
    bootstrap starts as ``fit_approach3``'s default).

    Interleaved on a shared machine: the cold call, then ``rounds`` times (warm call, scipy
    process), then one more warm call; the warm and scipy figures are medians (wall and CPU
    seconds of each child process), with every single time and the load average kept."""
    grid = "small" if quick else "hoffmann"
    starts = chinchilla.small_grid() if quick else chinchilla.hoffmann_grid()
    boot_starts = inspect.signature(chinchilla.fit_approach3).parameters["bootstrap_starts"].default
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "table.csv"
        csv.write_text(
            "params,tokens,loss\n"
            + "".join(
                f"{n:.17g},{d:.17g},{l:.17g}\n" for n, d, l in zip(table["params"], table["tokens"], table["loss"])
            )
        )
        np.save(Path(tmp) / "starts.npy", starts)
        env = {k: v for k, v in os.environ.items() if k != "SCALINGLAB_NO_CACHE" and not k.startswith("JAX_")}
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        fit = [
            sys.executable,
            "-m",
            "scalinglab.cli",
            "fit",
            str(csv),
            "--law",
            "chinchilla",
            "--starts",
            grid,
            "--bootstrap",
            str(n_bootstrap),
            "--json",
        ]
        ref_cmd = [
            sys.executable,
            "-m",
            "scalinglab.benchmarks.scipy_loop",
            str(csv),
            str(Path(tmp) / "starts.npy"),
            "--bootstrap",
            str(n_bootstrap),
            "--bootstrap-starts",
            str(boot_starts),
        ]
        load = [os.getloadavg()[0]]
        first = _process(fit, env)
        warm, scipy = [], []
        for _ in range(rounds):
            warm.append(_process(fit, env))
            scipy.append(_process(ref_cmd, env))
            load.append(os.getloadavg()[0])
        warm.append(_process(fit, env))
        load.append(os.getloadavg()[0])
    import json

    def med(runs, key):
        return float(np.median([r[key] for r in runs]))

    ours, ref = json.loads(warm[0]["stdout"]), json.loads(scipy[0]["stdout"])
    second = {"wall_s": med(warm, "wall_s"), "cpu_s": med(warm, "cpu_s")}
    ref_t = {"wall_s": med(scipy, "wall_s"), "cpu_s": med(scipy, "cpu_s")}
    return {
        "command": " ".join(["scalinglab", fit[3], "CSV", *fit[5:]]),
        "reference_command": "python -m scalinglab.benchmarks.scipy_loop CSV STARTS.npy "
        f"--bootstrap {n_bootstrap} --bootstrap-starts {boot_starts}",
        "n_starts": int(len(starts)),
        "n_bootstrap": n_bootstrap,
        "bootstrap_starts": boot_starts,
        "order": "cold, then rounds x (warm, scipy), then warm; medians",
        "rounds": rounds,
        "first": {k: first[k] for k in ("wall_s", "cpu_s")},
        "second": second,
        "scipy": ref_t,
        "warm_runs": [{k: r[k] for k in ("wall_s", "cpu_s")} for r in warm],
        "scipy_runs": [{k: r[k] for k in ("wall_s", "cpu_s")} for r in scipy],
        "speedup_second": ref_t["wall_s"] / second["wall_s"],
        "speedup_first": ref_t["wall_s"] / first["wall_s"],
        "speedup_second_cpu": ref_t["cpu_s"] / second["cpu_s"],
        "speedup_first_cpu": ref_t["cpu_s"] / first["cpu_s"],
        "alpha_ours_vs_scipy": [ours["alpha"], ref["x"][3]],
        "ci_alpha_ours_vs_scipy": [ours["ci"]["alpha"], ref.get("ci_alpha")],
        "first_equals_warm": all(json.loads(first["stdout"]) == json.loads(r["stdout"]) for r in warm),
        "bootstrap_optimizer": ours.get("optimizer", {}).get("bootstrap"),
        "load_average_1min": load,
    }


def headline(cli: dict) -> list[dict]:
    """The README rows of a :func:`cli_processes` result (2nd call and 1st call vs the scipy process)."""
    return [
        {
            "metric": f"`{cli['command']}`, whole process, 2nd call (warm compile cache) vs scipy process (s)",
            "ours": cli["second"]["wall_s"],
            "reference": cli["scipy"]["wall_s"],
            "ratio": cli["speedup_second"],
            "goal": ">= 20x faster",
        },
        {
            "metric": f"`{cli['command']}`, whole process, 1st call (empty compile cache) vs scipy process (s)",
            "ours": cli["first"]["wall_s"],
            "reference": cli["scipy"]["wall_s"],
            "ratio": cli["speedup_first"],
        },
    ]


def run(quick: bool = False) -> dict:
    n_budgets, n_per = (10, 25)
    n_boot = 100 if quick else 1000
    starts = chinchilla.hoffmann_grid()
    if quick:
        starts = starts[::10]
    table = isoflop_table(n_budgets, n_per)
    n, d, l = table["params"], table["tokens"], table["loss"]

    chinchilla.fit_approach3(n[:40], d[:40], l[:40], starts=starts[:8], n_bootstrap=4)  # warm the tracer caches
    t0 = time.perf_counter()
    chinchilla.fit_approach3(n, d, l, starts=starts, n_bootstrap=n_boot, bootstrap_starts=4)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = chinchilla.fit_approach3(n, d, l, starts=starts, n_bootstrap=n_boot, bootstrap_starts=4)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    chinchilla.fit_approach3(n, d, l, starts=starts)
    t_fit_only = time.perf_counter() - t0

    # scipy: same starts (subset timed, extrapolated), and the same bootstrap problems.
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(l)
    stride = 1 if quick else 30
    sub = starts[::stride]
    t0 = time.perf_counter()
    x_sp, _, _ = scipy_fit(sub, log_n, log_d, log_l)
    t_sub = time.perf_counter() - t0
    t_scipy_grid = t_sub / len(sub) * len(starts)
    obj_scipy = chinchilla.huber_objective(x_sp, n, d, l)

    # bootstrap: resample k from the 4 best distinct optima of the full fit (approximated by
    # our polished optimum plus the scipy one; each problem costs about the same).
    counts = resample_counts(n.size, n_boot, seed=0)
    x_best = np.array([np.log(ours["A"]), np.log(ours["B"]), np.log(ours["E"]), ours["alpha"], ours["beta"]])
    n_boot_timed = min(n_boot, 10 if quick else 25)
    t0 = time.perf_counter()
    for k in range(n_boot_timed):
        scipy_fit(np.repeat(x_best[None], 4, axis=0), log_n, log_d, log_l, counts[k])
    t_scipy_boot = (time.perf_counter() - t0) / n_boot_timed * n_boot

    t_scipy = t_scipy_grid + t_scipy_boot
    return {
        "whole_process": "see benchmarks/fit_process.py (fit_process.json)",
        "workload": {
            "n_points": int(n.size),
            "n_starts": int(len(starts)),
            "n_bootstrap": n_boot,
            "bootstrap_starts_per_resample": 4,
            "noise_sigma": 0.01,
            "generator": PUBLISHED,
        },
        "ours": {
            "total_s": t_ours,
            "first_call_s_including_compile": t_first,
            "fit_only_s": t_fit_only,
            "objective": ours["objective"],
            "params": {k: ours[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b")},
            "ci": ours.get("ci"),
        },
        "scipy_lbfgsb_loop": {
            "total_s_extrapolated": t_scipy,
            "grid_s_extrapolated": t_scipy_grid,
            "bootstrap_s_extrapolated": t_scipy_boot,
            "objective": obj_scipy,
            "timed_subset": {
                "starts": int(len(sub)),
                "of_starts": int(len(starts)),
                "start_stride": stride,
                "grid_subset_s": t_sub,
                "bootstrap_resamples": n_boot_timed,
                "of_resamples": n_boot,
            },
            "note": "scipy timed on a subset of starts/resamples and extrapolated linearly",
        },
        "objective_abs_diff": abs(ours["objective"] - obj_scipy),
        "ours_objective_not_worse_by_more_than_1e-6": bool(ours["objective"] <= obj_scipy + 1e-6),
        "speedup": t_scipy / t_ours,
        "speedup_fit_only": t_scipy_grid / t_fit_only,
        "goal": ">= 20x faster at the same optimum",
        "headline": [
            {
                "metric": f"approach 3: {len(starts)} starts + {n_boot} bootstrap refits, 250 points (s)",
                "ours": t_ours,
                "reference": t_scipy,
                "ratio": t_scipy / t_ours,
                "goal": ">= 20x faster",
            },
        ],
    }


if __name__ == "__main__":
    import json
    import sys

    result = run(quick="--quick" in sys.argv)
    path = write_result("chinchilla_fit", result)
    print(json.dumps(result, indent=2))
    print(path)
