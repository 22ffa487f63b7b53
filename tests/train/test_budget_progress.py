"""Training for a wall-time budget, and the per-epoch progress line with an ETA."""

import pytest

from ehpc.cli import train as cli
from ehpc.nn import HamiltonianModel
from ehpc.nn.fit import evaluate
from ehpc.train.checkpoint import LAST, load_checkpoint

from .conftest import SPLITS, read_rows

EPOCHS = 50


def test_time_budget_stops_cleanly_with_a_usable_model(tmp_path, config_file, records):
    out = tmp_path / "run"
    # 0.0001 min = 6 ms: no second epoch fits, so the run stops after the first of 50;
    # validation is due only every 5 epochs, but the last epoch is always validated
    code = cli.main(["--config", str(config_file), "--out-dir", str(out), "--max-minutes",
                     "0.0001", "--set", f"train.epochs={EPOCHS}", "--set", "train.eval_every=5"])
    assert code == 0
    rows = read_rows(out / "metrics.jsonl", "epoch")
    assert [r["epoch"] for r in rows] == [1]
    assert load_checkpoint(out / LAST)["progress"]["epoch"] == 1
    # model.pt is written as at a normal end, and it is the model that was validated
    model = HamiltonianModel.load(out / "model.pt")
    val = evaluate(model, [records[n] for n in SPLITS["val"]])
    assert val["mae_eV"] == pytest.approx(rows[0]["val_mae_eV"], rel=1e-9)
    log = (out / "train.log").read_text()
    # the per-epoch progress line: epoch i/n, losses, pace, elapsed time and ETA
    (line,) = [line for line in log.splitlines() if "epoch 1/50 (2%)" in line]
    assert "train_loss" in line and "val_loss" in line and "s/epoch" in line
    assert "elapsed 0:00:" in line and "ETA 0:00:00" in line  # the budget caps the ETA
    assert "wall-time budget train.max_minutes=0.0001: stopping after epoch 1 of 50" in log
    # the budget is resumable: --resume continues the same run
    assert cli.main(["--config", str(config_file), "--out-dir", str(out), "--resume",
                     "--set", f"train.epochs={EPOCHS}", "--set", "train.eval_every=5",
                     "--max-minutes", "0.0001"]) == 0
    assert [r["epoch"] for r in read_rows(out / "metrics.jsonl", "epoch")] == [1, 2]
