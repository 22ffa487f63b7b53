"""Checkpoints survive being killed; a resumed run is the run that was never stopped.

The reference is an uninterrupted run with the same config (deterministic mode, float64):
a run killed with SIGKILL right after a checkpoint appears, then resumed with
``--resume``, must write the very same metrics, step by step, and the same model.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import yaml

from ehpc.cli import train as cli
from ehpc.nn import HamiltonianModel
from ehpc.train.checkpoint import (
    LAST,
    CheckpointError,
    atomic_save,
    load_checkpoint,
    rng_state,
    set_rng_state,
)

from ehpc.train.batching import epoch_order

from .conftest import BASIS, SPLITS, TINY, read_rows, train_env

EPOCHS = 20  # long enough that the kill lands mid-run, short enough for a test
RUN = ["--set", f"train.epochs={EPOCHS}", "--set", "train.batch_size=1",
       "--set", "log.step_metrics=true"]
POLL = 0.01  # s


class FailsHalfway:
    """Serialises after the tensors were already written: a write that dies midway."""

    def __reduce__(self):
        raise RuntimeError("disk full")


def test_atomic_save_leaves_the_previous_checkpoint_when_writing_fails(tmp_path):
    path = tmp_path / LAST
    atomic_save({"format": "x", "weights": torch.arange(5.0)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"weights": torch.zeros(3), "tail": FailsHalfway()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]  # no temporary left behind


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    atomic_save({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def args(config_file, out, *extra) -> list[str]:
    return ["--config", str(config_file), "--out-dir", str(out), *RUN, *extra]


def wait_for(path, process: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None:
            assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(POLL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset):
    """An uninterrupted run: (its config file, its run folder)."""
    folder = tmp_path_factory.mktemp("reference")
    config = folder / "train.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": {"path": str(dataset)}}))
    assert cli.main(args(config, folder / "run")) == 0
    return config, folder / "run"


def assert_same_run(reference_run, run):
    for kind in ("step", "epoch"):
        expected = read_rows(reference_run / "metrics.jsonl", kind)
        got = read_rows(run / "metrics.jsonl", kind)
        assert len(got) == len(expected) == (EPOCHS * 6 if kind == "step" else EPOCHS)
        for a, b in zip(expected, got, strict=True):
            for row in (a, b):
                row.pop("seconds", None), row.pop("time", None)
            assert a == b  # bit for bit: deterministic mode, same steps, same state
    a = HamiltonianModel.load(reference_run / "model.pt").state_dict()
    b = HamiltonianModel.load(run / "model.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_then_resume_gives_the_uninterrupted_run(tmp_path, reference):
    config, reference_run = reference
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ehpc.cli.train", *args(config, out)]
    process = subprocess.Popen(command, env=train_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for(out / LAST, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    saved = load_checkpoint(out / LAST)  # complete and readable, whenever the kill landed
    assert 1 <= saved["progress"]["epoch"] < EPOCHS, "the run finished before it was killed"
    assert not (out / "model.pt").exists()

    assert cli.main(args(config, out, "--resume")) == 0
    assert_same_run(reference_run, out)


def entries_within(record, cutoff: float) -> int:
    """Matrix elements of the record's on-site blocks and pairs closer than ``cutoff`` Å."""
    nao = BASIS.nao_per_atom(record.numbers)
    pairs = record.atom_pairs
    vectors = (record.positions[pairs[:, 4]] + pairs[:, :3] @ record.cell
               - record.positions[pairs[:, 3]])
    onsite = (pairs[:, 3] == pairs[:, 4]) & ~pairs[:, :3].any(axis=1)
    keep = onsite | (np.linalg.norm(vectors, axis=1) < cutoff)
    return int((nao[pairs[keep, 3]] * nao[pairs[keep, 4]]).sum())


def test_sigterm_saves_and_stops_then_resumes_exactly(tmp_path, reference, records, capsys):
    config, reference_run = reference
    out = tmp_path / "run"

    def terminate_after_first_checkpoint():
        wait_for(out / LAST)
        os.kill(os.getpid(), signal.SIGTERM)

    # a harmless handler of our own, in case the signal lands after the trainer restored it
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        threading.Thread(target=terminate_after_first_checkpoint, daemon=True).start()
        code = cli.main(args(config, out))
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    progress = load_checkpoint(out / LAST)["progress"]
    assert 1 <= progress["epoch"] < EPOCHS
    # usually mid-epoch: the position in the epoch and its partial sums are saved too.
    # Batch size 1 and on-site weight 1: the weight so far is the number of matrix
    # elements of the structures this epoch has taken, in the order of (seed, epoch)
    train = SPLITS["train"]
    order = epoch_order(len(train), TINY["train"]["seed"], progress["epoch"])
    taken = [records[train[i]] for i in order[: progress["batch"]]]
    cutoff = TINY["model"]["cutoff"]
    assert progress["weight_sum"] == sum(entries_within(r, cutoff) for r in taken)
    assert (progress["loss_sum"] > 0) == (progress["batch"] > 0)

    assert cli.main(args(config, out, "--resume")) == 0
    assert_same_run(reference_run, out)


def test_a_run_is_never_overwritten_and_resume_needs_a_checkpoint(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    base = ["--config", str(config_file), "--out-dir", str(out), "--set", "train.epochs=1"]
    assert cli.main([*base, "--resume"]) == 2
    assert f"{out} has no last.pt to resume" in capsys.readouterr().err
    assert cli.main(base) == 0
    first = (out / LAST).read_bytes()
    capsys.readouterr()
    assert cli.main(base) == 2
    assert f"{out} already holds a run (last.pt); pass --resume" in capsys.readouterr().err
    assert (out / LAST).read_bytes() == first

    # resuming may extend the run but not change what was trained
    assert cli.main([*base, "--resume", "--set", "model.channels=8"]) == 2
    line = capsys.readouterr().err.strip()
    assert "--resume: model.channels is 4 in the checkpoint but 8 now" in line
    assert cli.main([*base, "--resume", "--set", "train.epochs=2"]) == 0
    assert [r["epoch"] for r in read_rows(out / "metrics.jsonl", "epoch")] == [1, 2]


def test_a_damaged_checkpoint_is_reported_not_loaded(tmp_path):
    path = tmp_path / LAST
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(path)


def test_early_stopping_checkpoints_and_exports_the_best(tmp_path, config_file):
    out = tmp_path / "run"
    # a step of 1e-300 leaves float64 weights unchanged: the validation loss cannot improve
    # after epoch 1, so patience 2 stops after epoch 3 of 10
    code = cli.main(["--config", str(config_file), "--out-dir", str(out),
                     "--set", "train.epochs=10", "--set", "train.patience=2",
                     "--set", "train.lr=1e-300", "--set", "train.lr_min=0",
                     "--set", "train.ema_decay=null"])
    assert code == 0
    assert [r["epoch"] for r in read_rows(out / "metrics.jsonl", "epoch")] == [1, 2, 3]
    assert load_checkpoint(out / LAST)["progress"]["epoch"] == 3
    best = load_checkpoint(out / "best.pt")
    assert best["progress"]["best_epoch"] == 1
    exported = HamiltonianModel.load(out / "model.pt").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in best["model"].items())
