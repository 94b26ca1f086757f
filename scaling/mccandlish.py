"""Synthetic batch-size sweeps from McCandlish et al.'s (2018) model of SGD, with a known B_crit(L).

Pure numpy; used by tests (does ``fit-batch`` recover the truth?) and by the README's bias numbers.

The model (McCandlish et al. 2018, section 2 and appendix A). Measure progress by ``tau``, the
number of steps an optimiser with an infinite batch and the best step size would need (units:
steps). At batch size ``B`` (examples) and learning rate ``lr``, one step advances ``tau`` by

    dtau/dstep = r·(2 − r) / (1 + B_noise(L)/B),      r = lr / lr_opt(B, L),
    lr_opt(B, L) = lr_max / (1 + B_noise(L)/B),

i.e. the quadratic model's loss improvement at step size ``r × optimal`` (``r(2−r)``, zero at
``r = 2``: a larger step makes no progress — the run stalls there), divided by the batch's noise
penalty. The loss follows progress: ``L(tau) = E + (L0 − E)·(1 + tau/tau_scale)^(−p)``, and the
noise scale grows as loss falls, ``B_noise(L) = b_noise_star · (L − E)^(−q)``.

Tuned at every step (``r = 1``) the steps to reach loss L at batch B are exactly
``S(B) = S_min(L) + E_min(L)/B`` with ``S_min = tau(L)`` and ``E_min = ∫_0^tau(L) B_noise dtau'``,
so the true critical batch is the path average ``B_crit(L) = E_min/S_min`` (:meth:`true_b_crit`).
A run at one constant ``lr`` is slower (``r`` drifts as ``B_noise`` grows), which is what a sweep
measures; the best of a grid of constant learning rates comes close to the tuned limit.

Units: steps (updates), examples (sequences), losses in nats/token, learning rates as given.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scalinglab.rundir import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, SWEEP_FILE


@dataclasses.dataclass(frozen=True)
class McCandlishModel:
    """Parameters of the synthetic optimiser (see the module docstring)."""

    loss_inf: float = 1.5  # E, nats/token
    loss_0: float = 5.0  # L at tau = 0
    tau_scale: float = 50.0  # steps
    power: float = 0.6  # p
    b_noise_star: float = 12.0  # B_noise at L − E = 1, examples
    q: float = 1.0  # B_noise ∝ (L − E)^−q
    lr_max: float = 1e-2  # best step size at an infinite batch

    def loss(self, tau):
        """L(tau), nats/token."""
        return self.loss_inf + (self.loss_0 - self.loss_inf) * (1.0 + np.asarray(tau) / self.tau_scale) ** -self.power

    def tau_at(self, loss):
        """Inverse of :meth:`loss`: progress (ideal steps) at which L is reached."""
        frac = (np.asarray(loss, dtype=np.float64) - self.loss_inf) / (self.loss_0 - self.loss_inf)
        return self.tau_scale * (frac ** (-1.0 / self.power) - 1.0)

    def b_noise(self, loss):
        """B_noise(L), examples."""
        return self.b_noise_star * (np.asarray(loss, dtype=np.float64) - self.loss_inf) ** -self.q

    def lr_opt(self, batch_size, loss):
        """The step size that makes the most progress per step at batch B and loss L."""
        return self.lr_max / (1.0 + self.b_noise(loss) / np.asarray(batch_size, dtype=np.float64))

    def _tau_grid(self, tau_max: float, n: int = 4000) -> np.ndarray:
        return np.concatenate([[0.0], np.geomspace(1e-3 * self.tau_scale, tau_max, n)])

    def true_s_min(self, loss):
        """S_min(L) = tau(L), steps (tuned learning rate, infinite batch)."""
        return self.tau_at(loss)

    def true_e_min(self, loss):
        """E_min(L) = ∫_0^tau(L) B_noise(L(tau')) dtau', examples (tuned learning rate, batch → 0)."""
        loss = np.atleast_1d(np.asarray(loss, dtype=np.float64))
        taus = self.tau_at(loss)
        grid = self._tau_grid(float(taus.max()) * 1.01)
        bn = self.b_noise(self.loss(grid))
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (bn[1:] + bn[:-1]) * np.diff(grid))])
        return np.interp(taus, grid, cum)

    def true_b_crit(self, loss):
        """B_crit(L) = E_min/S_min, examples: the exact trade-off of the tuned optimiser."""
        return self.true_e_min(loss) / self.true_s_min(loss)

    def steps_to_tau(self, batch_size: float, lr: float, tau_max: float):
        """(tau grid, steps needed to reach each tau) for one run at constant ``lr``; steps are +inf
        beyond the point where the run stalls (r ≥ 2)."""
        tau = self._tau_grid(tau_max)
        loss = self.loss(tau)
        bn = self.b_noise(loss)
        r = lr * (1.0 + bn / batch_size) / self.lr_max
        rate = r * (2.0 - r) / (1.0 + bn / batch_size)  # dtau/dstep
        with np.errstate(divide="ignore"):
            inv = np.where(rate > 0, 1.0 / np.where(rate > 0, rate, 1.0), np.inf)
        seg = 0.5 * (inv[1:] + inv[:-1]) * np.diff(tau)
        return tau, np.concatenate([[0.0], np.cumsum(seg)])  # inf from the first stalled segment on

    def curve(self, batch_size: float, lr: float, n_steps: int, log_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free loss at logged steps ``log_every, 2·log_every, ..., ≤ n_steps`` of one run."""
        steps_T = np.arange(log_every, n_steps + 1, log_every, dtype=np.float64)
        tau_max = float(n_steps) * 1.05  # tau grows at most one per step
        tau, steps = self.steps_to_tau(batch_size, lr, tau_max)
        ok = np.isfinite(steps)
        tau_T = np.interp(steps_T, steps[ok], tau[ok])  # beyond a stall: stays at the stall's tau
        return steps_T, self.loss(tau_T)

    def steps_to_loss(self, batch_size: float, lr: float, loss) -> np.ndarray:
        """Exact steps to reach each target ``loss`` at constant ``lr`` (inf if the run stalls first)."""
        loss = np.atleast_1d(np.asarray(loss, dtype=np.float64))
        taus = self.tau_at(loss)
        tau, steps = self.steps_to_tau(batch_size, lr, float(taus.max()) * 1.01)
        out = np.interp(taus, tau, np.where(np.isfinite(steps), steps, 1e300))
        return np.where(out >= 1e299, np.inf, out)


def sqrt_rule(base_lr: float, base_batch: float, batch_size: float) -> float:
    """lr·sqrt(B/B0): the √ rule the sweep centres its grid on."""
    return base_lr * math.sqrt(batch_size / base_batch)


def write_sweep(
    root: str | Path,
    model: McCandlishModel,
    batch_sizes: Sequence[int],
    *,
    base_lr: float,
    base_batch: int,
    factors: Sequence[float] = (1.0,),
    examples: int,
    seq_len: int = 64,
    log_per_run: int = 400,
    noise: float = 0.0,
    eval_every_frac: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write a batch-sweep directory in ``scalinglab batch-sweep``'s format from the model.

    Every (B, factor) pair is one run at ``lr = factor × sqrt_rule(B)`` trained on ``examples``
    sequences (steps = examples/B), logging ``log_per_run`` training losses with Gaussian noise of
    standard deviation ``noise·sqrt(8/B)`` (minibatch noise ∝ 1/√B). ``eval_every_frac`` > 0 adds
    noise-free ``eval_loss`` rows every that fraction of the run. ``sweep.json`` lists every run
    per batch size under ``"grid"`` ({B: {subdir: lr}}) and ``lr_rule`` ``"grid"`` (or ``"sqrt"``
    with one factor 1).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    grid: dict[str, dict[str, float]] = {}
    runs: dict[str, str] = {}
    for b in sorted(batch_sizes):
        n_steps = max(2, examples // b)
        log_every = max(1, n_steps // log_per_run)
        for f in factors:
            lr = f * sqrt_rule(base_lr, base_batch, b)
            sub = f"b{b}" if len(factors) == 1 else f"b{b}_lr{lr:.3g}"
            steps_T, clean_T = model.curve(b, lr, n_steps, log_every)
            noisy_T = clean_T + noise * math.sqrt(8.0 / b) * rng.standard_normal(len(steps_T))
            eval_every = max(1, int(round(eval_every_frac * n_steps))) if eval_every_frac > 0 else 0
            rows = []
            for s, y, c in zip(steps_T, noisy_T, clean_T):
                row = {"step": int(s), "tokens": int(s) * b * seq_len, "loss": float(y)}
                if eval_every and int(s) % eval_every == 0:
                    row["eval_loss"] = float(c)
                rows.append(row)
            run = root / sub
            run.mkdir(parents=True, exist_ok=True)
            train = {"batch_size": b, "seq_len": seq_len, "lr": lr, "warmup": 0, "steps": n_steps}
            (run / CONFIG_FILE).write_text(json.dumps({"name": sub, "train": train}))
            (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
            (run / SUMMARY_FILE).write_text(json.dumps({"status": "complete", "final_eval_loss": float(clean_T[-1])}))
            grid.setdefault(str(b), {})[sub] = lr
        best = min(grid[str(b)], key=lambda k: json.loads((root / k / SUMMARY_FILE).read_text())["final_eval_loss"])
        runs[str(b)] = best
    meta = {
        "kind": "batch-sweep",
        "batch_sizes": sorted(int(b) for b in batch_sizes),
        "lr_rule": "grid" if len(factors) > 1 else "sqrt",
        "runs": runs,
        "grid": grid,
        "lr": {b: grid[b][sub] for b, sub in runs.items()},
        "settings": {"lr_grid": list(factors) if len(factors) > 1 else None},
    }
    (root / SWEEP_FILE).write_text(json.dumps(meta))
    return root
