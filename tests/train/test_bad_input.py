"""Bad input stops ehpc-train with one line naming the problem and exit status 2.

Real files throughout: a copy of the session dataset with an empty split or a NaN
label, model files saved in another basis or for other elements, a run whose loss
diverges (a huge learning rate) after its first checkpoint.
"""

import re

import h5py
import numpy as np
import pytest
import torch

from ehpc.basis import Basis
from ehpc.cli import train as cli
from ehpc.io.splits import write_splits
from ehpc.nn import HamiltonianModel
from ehpc.train.checkpoint import LAST, load_checkpoint

from .conftest import SPLITS, copy_dataset, run_trainer


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ehpc-train: error: ")
    return err[0]


def train(config_file, out, *sets) -> int:
    argv = ["--config", str(config_file), "--out-dir", str(out), "--set", "train.epochs=1"]
    for item in sets:
        argv += ["--set", item]
    return cli.main(argv)


def test_missing_dataset_file(tmp_path, config_file, capsys):
    missing = tmp_path / "nowhere.h5"
    assert train(config_file, tmp_path / "run", f"data.path={missing}") == 2
    assert f"{missing}: dataset file not found" in error_line(capsys)


def test_no_dataset_given(tmp_path, capsys):
    assert cli.main(["--out-dir", str(tmp_path / "run")]) == 2
    assert "data.path: no dataset given; pass --set data.path=" in error_line(capsys)


def test_empty_and_unknown_splits(tmp_path, dataset, config_file, capsys):
    data = copy_dataset(dataset, tmp_path)
    write_splits(data, {"train": SPLITS["train"], "val": []})
    assert train(config_file, tmp_path / "a", f"data.path={data}") == 2
    assert f"{data}: split 'val' (data.val_split) is empty" in error_line(capsys)
    assert train(config_file, tmp_path / "b", f"data.path={dataset}", "data.val_split=valid") == 2
    assert "no split 'valid' (data.val_split); did you mean 'val'?" in error_line(capsys)


def test_nan_label_names_the_structure(tmp_path, dataset, config_file, capsys):
    data = copy_dataset(dataset, tmp_path)
    with h5py.File(data, "a") as f:
        h = f["structures/water_1/hamiltonian"]
        values = h[()]
        values[30] = np.nan
        h[...] = values
    assert train(config_file, tmp_path / "run", f"data.path={data}") == 2
    line = error_line(capsys)
    assert "structure 'water_1' has 1 non-finite Hamiltonian entries" in line
    assert not (tmp_path / "run" / LAST).exists()  # refused before any training


def save_model(path, basis: str, elements) -> str:
    HamiltonianModel(Basis(basis), elements, cutoff=3.0, n_layers=1, channels=2).save(path)
    return str(path)


def test_fine_tuning_a_model_of_another_basis_or_elements(tmp_path, config_file, capsys):
    other_basis = save_model(tmp_path / "svp.pt", "def2-svp", [1, 8])
    assert train(config_file, tmp_path / "a", f"model.init={other_basis}") == 2
    line = error_line(capsys)
    assert "basis 'sto-3g' (pseudo None) differs from the model's basis 'def2-svp'" in line
    no_oxygen = save_model(tmp_path / "hc.pt", "sto-3g", [1, 6])
    assert train(config_file, tmp_path / "b", f"model.init={no_oxygen}") == 2
    assert "element O is not among the model's elements [H, C]" in error_line(capsys)
    assert train(config_file, tmp_path / "c", f"model.init={tmp_path / 'none.pt'}") == 2
    assert "model.init: " in error_line(capsys)


def test_model_cutoff_beyond_the_labels(tmp_path, config_file, capsys):
    assert train(config_file, tmp_path / "run", "model.cutoff=5.0") == 2
    line = error_line(capsys)
    assert "labels stop at pairs within 4 Å but the model's cutoff is 5 Å" in line


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    # one step per epoch; the first step (finite loss) throws the weights to ~1e300, so
    # the second step's loss overflows
    code = cli.main(["--config", str(config_file), "--out-dir", str(out), "--set", "train.epochs=5",
                     "--set", "train.batch_size=6", "--set", "train.lr=1e300",
                     "--set", "train.warmup_steps=0"])
    assert code == 2
    line = error_line(capsys)
    assert "loss became" in line and "at epoch 2, step 2" in line
    assert f"the last good checkpoint {out / LAST} (epoch 1) is unchanged" in line
    saved = load_checkpoint(out / LAST)
    assert saved["progress"]["epoch"] == 1 and saved["progress"]["step"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert not (out / "model.pt").exists()


def test_two_ranks_report_bad_input_once(tmp_path, dataset, config_file):
    data = copy_dataset(dataset, tmp_path)
    write_splits(data, {"train": [], "val": SPLITS["val"]})
    done = run_trainer(["--config", str(config_file), "--out-dir", str(tmp_path / "run"),
                        "--set", f"data.path={data}"], ranks=2)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines()
             if "ehpc-train: error:" in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith(f"{data}: split 'train' (data.train_split) is empty; re-split the "
                             "dataset with ehpc-dataset --split or choose another split")
    # torchrun prints its own launcher traceback and failure table; the workers none.
    # Each worker exits with the bad-input status, unless torchrun has already stopped it
    # (SIGTERM, -15) after the first one failed: which happens first depends on the load.
    assert "/ehpc/" not in done.stderr.replace(str(data), "")
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", done.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, done.stderr


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
