"""Regenerate examples/chinchilla_synthetic.csv: the published Chinchilla approach-3 law
(Hoffmann et al. 2022: E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28) evaluated on an
IsoFLOP grid (8 budgets, 6e18 .. 3e21 FLOPs, 11 model sizes each spanning ±0.8 decades
around 20 tokens/parameter, C = 6·N·D) with 1 % multiplicative log-normal noise (seed 0).

    .venv/bin/python examples/make_chinchilla_synthetic.py
"""

from pathlib import Path

import numpy as np

LAW = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


DEFAULT_PATH = Path(__file__).with_name("chinchilla_synthetic.csv")


def main(path: Path = DEFAULT_PATH) -> None:
    rng = np.random.default_rng(0)
    lines = ["params,tokens,flops,loss"]
    for budget in np.geomspace(6e18, 3e21, 8):
        centre = np.log10(np.sqrt(budget / 6 / 20))
        for n in np.logspace(centre - 0.8, centre + 0.8, 11):
            d = budget / (6 * n)
            loss = LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]
            loss *= np.exp(0.01 * rng.standard_normal())
            lines.append(f"{n:.6g},{d:.6g},{budget:.6g},{loss:.6f}")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
