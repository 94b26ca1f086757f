"""``scalinglab fit``: the JSON contract, text output, plots, and every error path.

Error paths run in-process through ``scalinglab.cli.main`` (the function the console script
calls with ``sys.exit(main())``), so they share one jax import; two of them also run as real
subprocesses to check the exit status and the one-line stderr end to end.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scalinglab.benchmarks.chinchilla_fit import isoflop_table
from scalinglab.cli import main
from scalinglab.scaling import plots


@pytest.fixture(scope="module")
def csv60(tmp_path_factory):
    t = isoflop_table(6, 10, sigma=0.01, seed=7)  # same shapes as test_chinchilla: shared compilation
    p = tmp_path_factory.mktemp("csv") / "table.csv"
    rows = ["params,tokens,flops,loss"] + [
        f"{n:.17g},{d:.17g},{c:.17g},{l:.17g}" for n, d, c, l in zip(t["params"], t["tokens"], t["flops"], t["loss"])
    ]
    p.write_text("\n".join(rows) + "\n")
    return p


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_chinchilla_json_contract_and_plots(csv60, tmp_path, capsys):
    out_dir = tmp_path / "figs"
    rc = main(
        [
            "fit",
            str(csv60),
            "--law",
            "chinchilla",
            "--bootstrap",
            "64",
            "--json",
            "--plot",
            str(out_dir),
            "--flops",
            "5.76e23",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    for k in ("E", "A", "B", "alpha", "beta", "a", "b", "objective", "n_points", "ci"):
        assert k in res
    assert res["n_points"] == 60
    assert set(res["ci"]) >= {"E", "A", "B", "alpha", "beta", "a", "b"}
    assert all(lo <= res[k] <= hi for k, (lo, hi) in res["ci"].items() if k in ("E", "alpha", "beta"))
    assert res["a"] == pytest.approx(res["beta"] / (res["alpha"] + res["beta"]), rel=1e-12)
    assert "bootstrap_samples" not in res
    assert res["allocation"][0]["flops"] == 5.76e23
    names = sorted(n for n in os.listdir(out_dir) if n != ".scalinglab.json")  # the output marker aside
    assert names == ["contours.png", "frontier.png", "isoflop.png", "loss_curves.png", "residuals.png"]
    for n in names:
        assert (out_dir / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_output_isoflop_with_holdout(csv60, capsys):
    assert main(["fit", str(csv60), "--law", "isoflop", "--holdout", "1", "--bootstrap", "20"]) == 0
    text = capsys.readouterr().out
    assert "law: isoflop" in text and "hold-out of the 1 largest budgets" in text and " a = " in text


def test_plot_failure_leaves_no_partial_directory(csv60, tmp_path, monkeypatch):
    out_dir = tmp_path / "figs"

    def boom(*a, **k):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(plots, "plot_residuals", boom)
    with pytest.raises(RuntimeError):
        main(["fit", str(csv60), "--law", "kaplan-n", "--plot", str(out_dir)])
    assert not out_dir.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".figs")] == []


ERROR_CASES = [
    ("missing source", lambda t: ["fit", str(t / "nope.csv"), "--law", "kaplan-n"], "no such file"),
    (
        "missing column",
        lambda t: ["fit", _write(t, "a.csv", "params,loss\n1,2\n"), "--law", "kaplan-n"],
        "missing column(s) tokens",
    ),
    (
        "non-numeric",
        lambda t: ["fit", _write(t, "b.csv", "params,tokens,loss\n1e6,x,3\n"), "--law", "kaplan-n"],
        "not a number",
    ),
    (
        "non-positive",
        lambda t: ["fit", _write(t, "c.csv", "params,tokens,loss\n1e6,1e7,-3\n"), "--law", "kaplan-n"],
        "finite and positive",
    ),
    (
        "too few points",
        lambda t: [
            "fit",
            _write(t, "d.csv", "params,tokens,loss\n1e6,1e7,3\n2e6,1e7,2.9\n4e6,1e7,2.8\n8e6,1e7,2.7\n"),
            "--law",
            "chinchilla",
        ],
        "has 5 parameters but",
    ),
    (
        "one point for kaplan-n",
        lambda t: ["fit", _write(t, "e.csv", "params,tokens,loss\n1e6,1e7,3\n"), "--law", "kaplan-n"],
        "has 2 parameters but",
    ),
    ("empty runs dir", lambda t: ["fit", str(t), "--law", "kaplan-n"], "no run directories"),
    ("negative bootstrap", lambda t: ["fit", str(t), "--law", "kaplan-n", "--bootstrap", "-3"], "--bootstrap"),
    ("negative holdout", lambda t: ["fit", str(t), "--law", "kaplan-n", "--holdout", "-1"], "--holdout"),
    ("bad level", lambda t: ["fit", str(t), "--law", "kaplan-n", "--level", "1.5"], "--level"),
    ("flops with kaplan", lambda t: ["fit", str(t), "--law", "kaplan-n", "--flops", "1e20"], "--flops needs"),
    (
        "plot target is a file",
        lambda t: ["fit", str(t), "--law", "kaplan-n", "--plot", _write(t, "f.png", "x")],
        "not a directory",
    ),
    (
        "holdout too large",
        lambda t: [
            "fit",
            _write(t, "g.csv", "params,tokens,loss\n1e6,1e7,3\n2e6,1e7,2.9\n4e6,1e7,2.8\n"),
            "--law",
            "kaplan-n",
            "--holdout",
            "3",
        ],
        "leaves no runs",
    ),
    (
        "isoflop one budget",
        lambda t: [
            "fit",
            _write(
                t,
                "h.csv",
                "params,tokens,loss\n1e6,1e7,3\n2e6,5e6,2.9\n"
                "4e6,2.5e6,2.95\n8e6,1.25e6,3.1\n5e5,2e7,3.2\n4e5,2.5e7,3.3\n",
            ),
            "--law",
            "isoflop",
        ],
        "at least 2 FLOP budgets",
    ),
]


@pytest.mark.parametrize("name, argv, fragment", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_paths_in_process(name, argv, fragment, tmp_path, capsys):
    rc = main(argv(tmp_path))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("scalinglab fit: error: ") and err.count("\n") == 1
    assert fragment in err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--law", "nonsense"], "invalid choice"),
        (None, "missing column(s)"),
    ],
)
def test_error_paths_subprocess(args, fragment, tmp_path):
    if args is None:
        args = ["--law", "chinchilla"]
        src = _write(tmp_path, "bad.csv", "params,tokens\n1,2\n")
    else:
        src = str(tmp_path / "missing.csv")
    proc = subprocess.run(
        [sys.executable, "-m", "scalinglab.cli", "fit", src, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_no_partial_output_on_error(tmp_path):
    out = tmp_path / "figs"
    assert (
        main(["fit", _write(tmp_path, "x.csv", "params,tokens\n1,2\n"), "--law", "kaplan-n", "--plot", str(out)]) == 2
    )
    assert not out.exists()
    assert np.array_equal(sorted(os.listdir(tmp_path)), ["x.csv"])


def test_conventions_columns_and_options_recorded_in_json(csv60, tmp_path, capsys):
    # a CSV with its own headers and a total-parameter column 1.25x the non-embedding one
    t = isoflop_table(6, 10, sigma=0.01, seed=7)
    p = tmp_path / "mine.csv"
    rows = zip(t["params"], t["tokens"], t["flops"], t["loss"])
    p.write_text(
        "N_ne,N_tot,D,C,val\n"
        + "".join(f"{n:.17g},{1.25 * n:.17g},{d:.17g},{c:.17g},{l:.17g}\n" for n, d, c, l in rows)
    )
    cols = "params=N_ne,params_total=N_tot,tokens=D,flops=C,loss=val"
    assert main(["fit", str(p), "--columns", cols, "--law", "isoflop", "--isoflop-keep", "7", "--json"]) == 0
    auto = json.loads(capsys.readouterr().out)
    assert auto["params_convention"] == "total" and auto["selection"]["keep"] == 7
    assert (
        main(
            [
                "fit",
                str(p),
                "--columns",
                cols,
                "--law",
                "isoflop",
                "--isoflop-keep",
                "7",
                "--params",
                "non_embedding",
                "--json",
            ]
        )
        == 0
    )
    ne = json.loads(capsys.readouterr().out)
    assert ne["params_convention"] == "non_embedding"
    assert ne["a"] == pytest.approx(auto["a"], abs=1e-9)  # a constant factor moves N_coef only
    assert auto["N_coef"] == pytest.approx(1.25 * ne["N_coef"], rel=1e-9)
    assert main(["fit", str(csv60), "--law", "chinchilla", "--huber-delta", "0.01", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["huber_delta"] == 0.01 and res["flops_model"]["form"] and res["allocation_exponents"]["a"] > 0
    assert main(["fit", str(csv60), "--law", "envelope", "--envelope", "hull", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["envelope"] == "hull"
    for argv, msg in (
        (["--huber-delta", "0"], "--huber-delta must be positive"),
        (["--columns", "bogus=x"], "unknown column name"),
        (["--sweep", str(tmp_path)], "--sweep needs"),
    ):
        assert main(["fit", str(csv60), "--law", "chinchilla", *argv]) == 2
        assert msg in capsys.readouterr().err
