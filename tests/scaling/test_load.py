"""Loading CSV tables and run directories (format of docs/interfaces.md)."""

import numpy as np
import pytest

from scalinglab.errors import UserError
from scalinglab.scaling.load import load_source, parse_columns
from scalinglab.scaling.synthetic import write_run


def test_csv_with_default_flops(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("params,tokens,loss\n1e6,2e7,3.5\n2e6,2e7,3.2\n")
    t = load_source(p)
    np.testing.assert_allclose(t.flops, 6 * t.params * t.tokens)
    assert len(t) == 2 and t.loss[1] == 3.2


def test_csv_with_flops_and_extra_columns(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("name,params,tokens,flops,loss,notes\na,1e6,2e7,1.3e14,3.5,x\nb,2e6,2e7,2.5e14,3.2,y\n")
    t = load_source(p)
    assert t.names == ["a", "b"]
    np.testing.assert_allclose(t.flops, [1.3e14, 2.5e14])


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("params,tokens\n1,2\n", "missing column(s) loss"),
        ("params,tokens,loss\n1e6,abc,3\n", "not a number"),
        ("params,tokens,loss\n1e6,-5,3\n", "positive"),
        ("params,tokens,loss\n1e6,0,3\n", "positive"),
        ("params,tokens,loss\n1e6,1e7,nan\n", "positive"),
        ("params,tokens,loss\n", "no data rows"),
        ("", "empty CSV"),
        ("params,tokens,loss\n1e6,1e7\n", "expected 3 values"),
    ],
)
def test_bad_csv(tmp_path, text, fragment):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(UserError, match=None) as e:
        load_source(p)
    assert fragment in str(e.value)


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run directories"):
        load_source(tmp_path / "empty")


def test_run_directories_recursive_and_incomplete(tmp_path, capsys):
    write_run(tmp_path / "ladder" / "a", n=1e6)
    write_run(tmp_path / "ladder" / "sub" / "b", n=4e6, steps=20)
    write_run(tmp_path / "ladder" / "c", n=9e6, complete=False)
    t = load_source(tmp_path / "ladder")
    assert sorted(t.params.tolist()) == [1e6, 4e6]
    assert "skipping incomplete run" in capsys.readouterr().err
    i = t.names.index("b")
    assert t.tokens[i] == 20 * 1000 and t.flops[i] == 20 * 1000 * 6e6
    assert t.loss[i] == pytest.approx(2.0 + 10.0 / 20000**0.3)  # final eval loss
    assert t.params_total[i] == 1.5e6 and t.steps[i] == 20 and t.batch_size[i] == 4
    cv = t.curves[i]
    assert cv.loss_kind == "eval" and cv.flops.size == 4  # evals at steps 5, 10, 15, 20
    assert cv.train_loss.size == 20
    both = load_source(tmp_path / "ladder", include_incomplete=True)
    assert len(both) == 3 and both.complete.tolist().count(False) == 1
    # incomplete run: tokens/loss from its last metrics line
    j = both.names.index("c")
    assert both.tokens[j] == 10 * 1000 and both.loss[j] == pytest.approx(2.0 + 10.0 / 10000**0.3)


def test_single_run_dir_and_truncated_metrics(tmp_path):
    d = write_run(tmp_path / "r", n=2e6)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "tok')  # killed mid-write
    t = load_source(d)
    assert len(t) == 1 and t.params[0] == 2e6
    assert t.to_records()[0]["params"] == 2e6


def test_csv_column_mapping_and_run_curves(tmp_path):
    p = tmp_path / "curves.csv"
    rows = ["id,N,D,val_loss,C"]
    for run, n in (("small", 1e6), ("big", 4e6)):
        for d in (1e7, 2e7, 4e7):
            rows.append(f"{run},{n},{d},{3.0 + 1e6 / n * 1e7 / d},{6 * n * d * 1.1}")
    p.write_text("\n".join(rows) + "\n")
    cols = parse_columns("params=N,tokens=D,loss=val_loss,flops=C,run=id")
    t = load_source(p, columns=cols)
    assert t.names == ["small", "big"] and len(t.curves) == 2
    np.testing.assert_allclose(t.tokens, [4e7, 4e7])  # a run's row is its last point
    np.testing.assert_allclose(t.loss, [3.0 + 0.25, 3.0 + 0.0625])
    np.testing.assert_allclose(t.curves[1].tokens, [1e7, 2e7, 4e7])
    np.testing.assert_allclose(t.curves[0].flops, 6.6 * 1e6 * np.array([1e7, 2e7, 4e7]))
    assert t.subset([1]).curves[0] is t.curves[1]
    with pytest.raises(UserError, match="unknown column name"):
        parse_columns("parms=N")
    with pytest.raises(UserError, match="no column 'X'"):
        load_source(p, columns=parse_columns("params=X,tokens=D,loss=val_loss"))
    with pytest.raises(UserError, match="CSV table"):
        load_source(tmp_path, columns=cols)


def test_parameter_conventions(tmp_path):
    write_run(tmp_path / "a", n=1e6, total=1.5e6)
    t = load_source(tmp_path)
    # write_run's model has no vocab_size/d_model: with_head is unknown for it
    assert t.with_params("total").params[0] == 1.5e6 and t.with_params("total").params_convention == "total"
    assert t.with_params("total").with_params("non_embedding").params[0] == 1e6
    with pytest.raises(UserError, match="with_head"):
        t.with_params("with_head")
    p = tmp_path / "t.csv"
    p.write_text("params,tokens,loss\n1e6,2e7,3.5\n")
    c = load_source(p)
    assert c.with_params("total").params[0] == 1e6  # a CSV's params column is in the convention named
    assert "taken as total" in c.with_params("total").params_source()
