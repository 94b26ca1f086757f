"""Fit-quality checks: parameters the data do not identify are never printed as numbers."""

from types import SimpleNamespace

import numpy as np
import pytest

from scalinglab.cli import main
from scalinglab.errors import UserError
from scalinglab.scaling import quality
from scalinglab.scaling.laws import fit_law
from scalinglab.scaling.load import load_source


def test_demo_report_l_of_n_is_not_identified():
    # the demo report's L(N) before issue 16: N_c = 3e-82 [2e-205, 3e131]
    res = {
        "law": "kaplan-n",
        "params": {"N_c": 3e-82, "alpha_N": 0.0021},
        "param_names": ["N_c", "alpha_N"],
        "ci": {"N_c": [2e-205, 3e131], "alpha_N": [-0.001, 0.006]},
    }
    q = quality.assess(res)
    assert set(q["not_identified"]) == {"N_c", "alpha_N"}  # 1.5e336x (overflows: not finite); reaches zero
    assert "alpha_N = 0.0021 is outside" in " ".join(q["warnings"])
    quality.apply(res)
    assert quality.shown(res, "N_c", lambda v: f"{v:.3g}") == "not identified"
    # a well-identified interval is shown as a number
    ok = {"params": {"alpha": 0.34}, "ci": {"alpha": [0.31, 0.37]}}
    assert quality.not_identified(ok) == {} and quality.shown(ok, "alpha", lambda v: f"{v:.2f}") == "0.34"
    assert quality.not_identified({"params": {"A": 5.0}, "ci": {"A": [1.0, 10.5]}}) == {
        "A": pytest.approx("interval [1, 10.5] spans 10.5x (> 10x)")
    }


def test_e_above_lowest_loss_and_implausible_exponents():
    res = {
        "law": "chinchilla",
        "params": {"E": 2.5, "A": 1.0, "B": 1.0, "alpha": 3.0, "beta": 0.3, "a": 0.09, "b": 0.91},
    }
    w = quality.assess(res, SimpleNamespace(loss=np.array([2.4, 2.6, 3.0])))["warnings"]
    assert any("E = 2.5 is at or above the lowest observed loss 2.4" in x for x in w)
    assert sum("outside its plausible range" in x for x in w) == 3  # alpha, a, b


def test_rows_that_cannot_identify_the_law(tmp_path):
    p = tmp_path / "same.csv"
    p.write_text("params,tokens,loss\n" + "1e6,1e8,3.0\n" * 6)
    with pytest.raises(UserError, match="identical"):
        fit_law(load_source(p), "chinchilla")
    p.write_text("params,tokens,loss\n" + "".join(f"1e6,{d:g},{3 + 1e8 / d:.4f}\n" for d in np.geomspace(1e8, 1e9, 6)))
    with pytest.raises(UserError, match="same model size N"):
        fit_law(load_source(p), "chinchilla")
    with pytest.raises(UserError, match="same model size N"):
        fit_law(load_source(p), "kaplan-n")
    assert main(["fit", str(p), "--law", "chinchilla"]) == 2


def test_flat_l_of_n_prints_not_identified(tmp_path, capsys):
    # L(N) that does not fall with N: N_c and alpha_N are not identified, and the text says so
    rng = np.random.default_rng(0)
    n = np.geomspace(1e6, 1e8, 8)
    p = tmp_path / "flat.csv"
    p.write_text(
        "params,tokens,loss\n" + "".join(f"{x:g},1e9,{3 * np.exp(0.003 * rng.standard_normal()):.5f}\n" for x in n)
    )
    assert main(["fit", str(p), "--law", "kaplan-n", "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "N_c = not identified" in out
    assert "N_c = 0" not in out and "N_c = 1" not in out
