"""Bad input that used to end in a traceback now ends in one line and exit status 2:
files given as ``--model`` that are not model files, an unknown functional, a negative
rattle, and a DeepH folder whose ``info.json`` contradicts the options."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from ehpc.cli import USAGE_ERROR
from ehpc.cli import infer as infer_cli


def error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A run folder as ehpc-train leaves it: model.pt and the checkpoint last.pt."""
    from ehpc.basis import Basis
    from ehpc.nn.model import HamiltonianModel
    from ehpc.train.checkpoint import LAST, atomic_save, make_checkpoint

    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = HamiltonianModel(Basis("gth-szv"), [14], cutoff=3.0, n_layers=1, channels=4)
    model.save(folder / "model.pt")
    optimizer = torch.optim.Adam(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    blob = make_checkpoint(model, optimizer, schedule, None, {"epoch": 1}, {}, 1)
    atomic_save(blob, folder / LAST)
    return folder


def infer_with_model(model, tmp_path) -> int:
    return infer_cli.main(["--model", str(model), "--supercell", "Si:diamond:5.43:1x1x1",
                           "--out", str(tmp_path / "out.h5")])


def test_checkpoint_given_as_model_names_the_model_file(model_run, tmp_path, capsys):
    assert infer_with_model(model_run / "last.pt", tmp_path) == USAGE_ERROR
    err = error_lines(capsys)
    assert len(err) <= 3, err
    assert "training checkpoint" in err[0] and str(model_run / "model.pt") in err[0]
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("kind", ["random", "hdf5"])
def test_foreign_file_given_as_model_is_refused_without_unsafe_advice(kind, tmp_path, capsys):
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        with h5py.File(path, "w") as f:
            f["H"] = np.eye(4)
    assert infer_with_model(path, tmp_path) == USAGE_ERROR
    err = error_lines(capsys)
    assert len(err) <= 3, err
    assert "not an ehpc model file" in err[0]
    assert "weights_only" not in "\n".join(err)


def test_real_model_file_still_loads(model_run):
    from ehpc.nn.model import HamiltonianModel

    model = HamiltonianModel.load(model_run / "model.pt")
    assert list(model.elements) == [14]


# ---------------------------------------------------------------------- ehpc-datagen


def test_unknown_functional_is_refused_before_any_scf(tmp_path, capsys):
    import ase.io
    from ase.build import molecule

    from ehpc.cli import datagen

    ase.io.write(tmp_path / "water.xyz", molecule("H2O"))
    out = tmp_path / "out"
    status = datagen.main(["--structures", str(tmp_path / "water.xyz"), "--basis", "sto-3g",
                           "--xc", "pbee", "--cutoff", "4", "--out-dir", str(out)])
    assert status == USAGE_ERROR
    err = error_lines(capsys)
    assert len(err) <= 3, err
    assert err[0].startswith("ehpc-datagen: error: --xc 'pbee'")
    assert not out.exists()


def test_datagen_prints_a_line_as_each_structure_starts_and_ends(tmp_path, capsys):
    import ase.io
    from ase.build import molecule

    from ehpc.cli import datagen
    from ehpc.io.dataset import Dataset

    first, second = molecule("H2"), molecule("H2")
    second.positions[1, 2] += 0.05
    first.info["name"], second.info["name"] = "h2_a", "h2_b"
    ase.io.write(tmp_path / "h2.extxyz", [first, second], format="extxyz")
    args = ["--structures", str(tmp_path / "h2.extxyz"), "--basis", "sto-3g", "--xc", "lda,vwn",
            "--cutoff", "4", "--out-dir", str(tmp_path / "out")]
    assert datagen.main(args) == 0
    lines = [line for line in error_lines(capsys) if "structure " in line]
    assert [line.split(",")[0] for line in lines] == [
        "ehpc-datagen: h2_a: structure 1 of 2", "ehpc-datagen: h2_a: structure 1 of 2",
        "ehpc-datagen: h2_b: structure 2 of 2", "ehpc-datagen: h2_b: structure 2 of 2"]
    assert "SCF started (2 atoms)" in lines[0]
    for line, name in ((lines[1], "h2_a"), (lines[3], "h2_b")):
        cycles = int(Dataset(tmp_path / "out" / f"{name}.h5")[name].attrs["scf_cycles"])
        assert cycles > 0
        assert f"s, {cycles} SCF cycles" in line and " done in " in line
    # a rerun says which structures it skips
    assert datagen.main(args) == 0
    assert "h2_b: structure 2 of 2, already labelled" in capsys.readouterr().err


def test_datagen_end_line_shows_the_floor_diagnostics_of_crystals():
    from ehpc.cli.datagen import end_summary

    crystal = {"scf_cycles": 12, "floor_max_meV": 1.5, "floor_mae_meV": 0.25,
               "overlap_min_eig": 0.0125}
    assert end_summary(crystal) == ("12 SCF cycles, floor max 1.5 meV, floor MAE 0.25 meV, "
                                    "min eig(S) 0.0125")
    assert end_summary({"scf_cycles": 7}) == "7 SCF cycles"


# ---------------------------------------------------------------------- structures


def test_negative_rattle_is_refused_in_one_line(tmp_path):
    import subprocess

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps([{"kind": "bulk", "name": "Si", "crystal": "diamond", "a": 5.43,
                                 "n": 2, "rattle": -0.1}]))
    result = subprocess.run(["ehpc-structures", "--spec", str(spec), "--out",
                             str(tmp_path / "out.extxyz")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == USAGE_ERROR
    err = result.stderr.strip().splitlines()
    assert len(err) <= 3, err
    assert "'Si': rattle must be >= 0, got -0.1" in err[0]
    assert not (tmp_path / "out.extxyz").exists()


def test_shared_rattle_refuses_a_negative_spread_and_keeps_the_name():
    from ase.build import bulk

    from ehpc.sources import SourceError, rattle

    atoms = bulk("Si", "diamond", a=5.43)
    atoms.info["name"] = "Si"
    with pytest.raises(SourceError, match=r"--rattle: standard deviation must .* >= 0, got -0.1"):
        rattle(atoms.copy(), -0.1)
    moved = rattle(atoms.copy(), 0.05, seed=3)
    assert moved.info["name"] == "Si"
    assert 0 < np.abs(moved.positions - atoms.positions).max() < 0.5
