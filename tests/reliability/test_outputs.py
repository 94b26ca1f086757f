"""Outputs never destroy inputs: every writer refuses a directory that is not its own (exit 2, one
line) unless --force, and even then replaces only its own files (issue 12, item 1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scalinglab.cli import main
from scalinglab.outdir import MARKER, read_marker
from scalinglab.scaling.synthetic import write_run


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (what must survive untouched)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ladder(root: Path) -> Path:
    """Six synthetic finished runs (3 sizes × 2 budgets): enough for every report fit to run."""
    for i, n in enumerate((1e5, 3e5, 1e6, 2e5, 6e5, 2e6)):
        write_run(
            root / f"run{i}",
            n=n,
            total=1.2 * n,
            steps=12,
            tokens_per_step=int(n * (2 + i % 3)) // 12,
            flops_per_token=6 * n,
            loss_fn=lambda tok, n=n: 1.7 + 400 / n**0.34 + 400 / tok**0.28,
        )
    return root


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_report_into_its_own_runs_dir_is_refused_and_deletes_nothing(tmp_path, capsys):
    runs = _ladder(tmp_path / "C")
    before = _tree(runs)
    rc, err = _cli(capsys, "report", str(runs), "--out", str(runs), "--bootstrap", "0")
    assert rc == 2 and "holds training runs" in _one_line(err)
    assert _tree(runs) == before


def test_report_force_into_runs_dir_adds_only_report_files(tmp_path, capsys):
    runs = _ladder(tmp_path / "C")
    before = _tree(runs)
    rc, _ = _cli(capsys, "report", str(runs), "--out", str(runs), "--bootstrap", "0", "--force")
    assert rc == 0
    after = _tree(runs)
    assert {k: after[k] for k in before} == before  # every run file byte-identical
    fits = json.loads((runs / "fits.json").read_text())
    assert set(after) - set(before) == {"report.md", "report.html", "fits.json", *fits["figures"]}
    assert read_marker(runs) is None  # a foreign directory is not claimed


def test_unrelated_file_in_existing_out_survives(tmp_path, capsys):
    runs = _ladder(tmp_path / "C")
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.txt").write_text("four years of work")
    rc, err = _cli(capsys, "report", str(runs), "--out", str(out), "--bootstrap", "0")
    assert rc == 2 and "not written by scalinglab report" in _one_line(err)
    assert sorted(os.listdir(out)) == ["thesis.txt"]
    rc, _ = _cli(capsys, "report", str(runs), "--out", str(out), "--bootstrap", "0", "--force")
    assert rc == 0
    assert (out / "thesis.txt").read_text() == "four years of work" and (out / "report.md").exists()


def test_report_rerun_replaces_its_own_files_and_removes_its_stale_ones(tmp_path, capsys):
    runs = _ladder(tmp_path / "C")
    out = tmp_path / "report"
    assert _cli(capsys, "report", str(runs), "--out", str(out), "--bootstrap", "0")[0] == 0
    marker = read_marker(out)
    assert marker["kind"] == "report" and "report.md" in marker["files"]
    # a figure an earlier version drew (listed in the marker) and a file the user put there
    (out / "old_figure.png").write_bytes(b"x")
    (out / MARKER).write_text(json.dumps({"kind": "report", "files": [*marker["files"], "old_figure.png"]}))
    (out / "notes.txt").write_text("mine")
    (out / "report.md").write_text("stale")
    assert _cli(capsys, "report", str(runs), "--out", str(out), "--bootstrap", "0")[0] == 0
    assert not (out / "old_figure.png").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "report.md").read_text().startswith("#")
    # a report directory from before markers (only report files) is still ours
    (out / "notes.txt").unlink()
    (out / MARKER).unlink()
    assert _cli(capsys, "report", str(runs), "--out", str(out), "--bootstrap", "0")[0] == 0
    assert read_marker(out)["kind"] == "report"


@pytest.mark.parametrize("cmd", ["fit", "fit-batch"])
def test_plot_dir_not_ours_refused_before_fitting(tmp_path, capsys, cmd):
    runs = _ladder(tmp_path / "C")
    args = [str(runs), "--law", "kaplan-n"] if cmd == "fit" else [str(tmp_path / "no-such-sweep")]
    rc, err = _cli(capsys, cmd, *args, "--plot", str(runs))
    assert rc == 2 and "--plot" in _one_line(err) and "holds training runs" in err
    plot = tmp_path / "figs"
    plot.write_text("a file")
    rc, err = _cli(capsys, cmd, *args, "--plot", str(plot))
    assert rc == 2 and "not a directory" in _one_line(err)


def test_fit_plot_force_keeps_foreign_files(tmp_path, capsys):
    runs = _ladder(tmp_path / "C")
    plot = tmp_path / "figs"
    plot.mkdir()
    (plot / "thesis.txt").write_text("keep")
    rc, _ = _cli(capsys, "fit", str(runs), "--law", "kaplan-n", "--plot", str(plot), "--force")
    assert rc == 0
    assert (plot / "thesis.txt").read_text() == "keep" and (plot / "loss_curves.png").stat().st_size > 0


def _no_training(cfg):
    raise AssertionError(f"trained {cfg.out}")


def test_ladder_and_sweep_refuse_foreign_out_before_anything(tmp_path):
    from scalinglab.errors import UserError
    from scalinglab.train.config import TrainConfig
    from scalinglab.train.ladder import run_ladder
    from scalinglab.train.plan import LadderSpec, plan_ladder
    from scalinglab.train.sweep import run_sweep

    runs = plan_ladder(
        LadderSpec(budgets=(1e9,), sizes_per_budget=3, vocab_size=256, batch_size=2, seq_len=16, lr_protocol="fixed")
    )
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep")
    with pytest.raises(UserError, match="not written by scalinglab ladder"):
        run_ladder(runs, foreign, train_fn=_no_training)
    run = write_run(tmp_path / "run")
    with pytest.raises(UserError, match="holds training runs"):
        run_ladder(runs, run, train_fn=_no_training)
    base = TrainConfig(tokens=10_000, seq_len=32)
    with pytest.raises(UserError, match="batch-sweep"):
        run_sweep(base, [2, 4, 8], out=foreign, train_fn=_no_training)
    with pytest.raises(UserError, match="holds training runs"):
        run_sweep(base, [2, 4, 8], out=run, train_fn=_no_training)
    assert sorted(os.listdir(foreign)) == ["thesis.txt"]
    assert sorted(os.listdir(run)) == ["config.json", "metrics.jsonl", "summary.json"]


def test_ladder_force_keeps_foreign_files_and_marks_nothing(tmp_path):
    from scalinglab.train.ladder import run_ladder
    from scalinglab.train.plan import LadderSpec, plan_ladder

    runs = plan_ladder(
        LadderSpec(budgets=(1e9,), sizes_per_budget=3, vocab_size=256, batch_size=2, seq_len=16, lr_protocol="fixed")
    )
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep")
    trained = []
    run_ladder(runs, foreign, train_fn=lambda cfg: trained.append(cfg.out) or {}, force=True)
    assert len(trained) == len(runs) and (foreign / "thesis.txt").read_text() == "keep"
    assert read_marker(foreign) is None
    new = tmp_path / "new"
    run_ladder(runs, new, train_fn=lambda cfg: {})
    assert read_marker(new)["kind"] == "ladder"
    run_ladder(runs, new, train_fn=lambda cfg: {})  # its own directory: accepted again


def test_out_under_a_file_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv in (
        ["report", str(tmp_path), "--out", str(blocker / "r")],
        ["ladder", "--budgets", "3e10", "--vocab-size", "256", "--out", str(blocker / "l")],
        ["demo", "--out", str(blocker / "d")],
        ["batch-sweep", "--tokens", "1e4", "--batch-sizes", "2,4,8", "--out", str(blocker / "s")],
        ["train", "--steps", "1", "--out", str(blocker / "t")],
    ):
        p = subprocess.run([sys.executable, "-m", "scalinglab.cli", *argv], capture_output=True, text=True, timeout=300)
        assert p.returncode == 2, (argv, p.stderr)
        assert "not a directory" in _one_line(p.stderr), argv
    assert blocker.read_text() == "x"
