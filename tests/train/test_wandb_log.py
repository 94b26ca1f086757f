"""``--wandb PROJECT``: a clear error without the package; with it (offline mode), the W&B run holds
exactly the metrics.jsonl numbers, read back from wandb's own run file."""

import json
import struct
import sys

import pytest

from scalinglab.cli import main
from scalinglab.rundir import read_metrics


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--steps", "3", "--wandb", "proj"],
        ["batch-sweep", "--tokens", "1e4", "--out", "OUT", "--wandb", "proj"],
        ["ladder", "--dry-run", "--vocab-size", "257", "--wandb", "proj"],
    ],
)
def test_wandb_missing_says_how_to_install(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as when not installed
    argv = [str(tmp_path / "sw") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'scalinglab[wandb]'" in err and "Traceback" not in err
    assert not (tmp_path / "sw").exists()


def _wandb_history(run_file):
    """History rows of a ``.wandb`` run file (wandb's LevelDB-style log of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = run_file.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, buf, rows = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0 and n == 0:
            break
        buf += raw[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.mark.e2e
def test_wandb_offline_run_holds_the_metrics(make_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from scalinglab.train.loop import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(make_config(out, steps=4, eval_every=2, wandb="proj"), progress=False)
    records = read_metrics(out)
    run_id = (out / "wandb" / "run_id").read_text().strip()
    (run_file,) = (out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    history = {row["_step"]: row for row in _wandb_history(run_file)}
    assert sorted(history) == [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        for key in ("loss", "lr", "grad_norm", "tokens", "flops"):
            assert history[r["step"]][key] == pytest.approx(r[key], rel=1e-12), (r["step"], key)
        assert ("eval_loss" in history[r["step"]]) == ("eval_loss" in r)
