"""Bad input fails early with one line naming the structure and the problem, both in
``ehpc.structure.validate`` and through ``ehpc-datagen``; a non-converged SCF is
reported, recorded and kept out of the dataset."""

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from ehpc.basis import Basis
from ehpc.cli import datagen, dataset
from ehpc.io.dataset import Dataset, DatasetError
from ehpc.structure import StructureError, read_structures, validate

WATER = molecule("H2O")


def bad_structures() -> dict[str, tuple[Atoms, str, str]]:
    """name -> (atoms, basis, expected message fragment)."""
    uranyl = Atoms("UO2", positions=[[0, 0, 0], [0, 0, 1.8], [0, 0, -1.8]])
    close = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.3]])
    nan = Atoms("H2", positions=[[0, 0, np.nan], [0, 0, 0.74]])
    inf = Atoms("H2", positions=[[0, 0, 0], [0, np.inf, 0.74]])
    singular = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[[5, 0, 0], [10, 0, 0], [0, 0, 5]], pbc=True)
    return {
        "uranyl": (uranyl, "gth-szv", "element U is not available in basis 'gth-szv'"),
        "squashed": (close, "def2-svp", "atoms 0 and 1 are 0.300 Å apart (minimum 0.5 Å)"),
        "nan_coords": (nan, "def2-svp", "atom 0 has a non-finite coordinate [0.0, 0.0, nan]"),
        "inf_coords": (inf, "def2-svp", "atom 1 has a non-finite coordinate [0.0, inf, 0.74]"),
        "empty": (Atoms(), "def2-svp", "structure has no atoms"),
        "flat_cell": (singular, "def2-svp", "cell is singular along periodic axes [0, 1, 2]"),
    }


def datagen_args(structures, out_dir, basis="def2-svp", *extra) -> list[str]:
    return ["--structures", str(structures), "--basis", basis, "--xc", "pbe", "--cutoff", "6.0",
            "--out-dir", str(out_dir), *extra]


def one_error_line(capsys, prog="ehpc-datagen") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: ")
    return err[0]


@pytest.mark.parametrize("name", list(bad_structures()))
def test_validate_names_structure_and_problem(name):
    atoms, basis, message = bad_structures()[name]
    with pytest.raises(StructureError) as err:
        validate(atoms, name, Basis(basis))
    assert str(err.value).startswith(f"{name}: ") and message in str(err.value)


@pytest.mark.parametrize("name", list(bad_structures()))
def test_datagen_refuses_before_any_dft(tmp_path, capsys, name):
    atoms, basis, message = bad_structures()[name]
    good = WATER.copy()
    good.info["name"] = "fine_water"
    atoms = atoms.copy()
    atoms.info["name"] = name
    path = tmp_path / "batch.extxyz"
    ase.io.write(path, [good, atoms], format="extxyz")
    assert [a.info["name"] for a in read_structures(path)] == ["fine_water", name]
    assert datagen.main(datagen_args(path, tmp_path / "out", basis)) == 2
    line = one_error_line(capsys)
    assert f"error: {name}: " in line and message in line
    assert not list((tmp_path / "out").glob("*.h5"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"3\nwater\nO 0 0 0\nH 0.76 0.58 0\nH -0.76 0.\n", "cannot read structure file"),  # cut mid-line
        (b"3\nwater\nO 0 0 0\nH 0.76 0.58 0\n", "Frame has 2 atoms, expected 3"),  # cut between lines
        (b"\x7fELF\x02\x01\x01\x00\xb0\xff\xfe", "cannot read structure file"),
        (b"", "cannot read structure file"),
    ],
)
def test_unreadable_and_truncated_files(tmp_path, capsys, content, message):
    path = tmp_path / "broken.xyz"
    path.write_bytes(content)
    with pytest.raises(StructureError, match=message):
        read_structures(path)
    assert datagen.main(datagen_args(path, tmp_path / "out")) == 2
    line = one_error_line(capsys)
    assert "broken.xyz" in line and message in line


def test_missing_file_and_bad_options(tmp_path, capsys):
    assert datagen.main(datagen_args(tmp_path / "nowhere.xyz", tmp_path / "out")) == 2
    assert "nowhere.xyz: structure file not found" in one_error_line(capsys)
    path = tmp_path / "water.xyz"
    ase.io.write(path, WATER)
    assert datagen.main(datagen_args(path, tmp_path / "out", "def2-svp", "--chunk", "2", "--n-chunks", "2")) == 2
    assert "--chunk 2 must be in 0..1" in one_error_line(capsys)
    spec = tmp_path / "spec.yaml"
    spec.write_text("- {kind: bulk, name: Si, rattle: 0.1, strian: 0.01}\n")
    argv = ["--spec", str(spec), "--basis", "gth-szv", "--xc", "pbe", "--cutoff", "6", "--out-dir", str(tmp_path)]
    assert datagen.main(argv) == 2
    assert "unknown key 'strian' for kind 'bulk'" in one_error_line(capsys)


def test_truncated_dataset_file(tmp_path, water_h5):
    data = water_h5.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatasetError, match=r"cut.h5: unreadable or truncated HDF5 file"):
        Dataset(cut)


def test_truncated_label_is_recomputed_on_resume(tmp_path, capsys, water_h5):
    path = tmp_path / "water.xyz"
    ase.io.write(path, WATER)
    out = tmp_path / "out"
    out.mkdir()
    data = water_h5.read_bytes()
    (out / "water.h5").write_bytes(data[: len(data) // 2])
    assert datagen.main(datagen_args(path, out)) == 0
    captured = capsys.readouterr()
    assert "water: existing water.h5 is unusable" in captured.err
    assert "1 done, 0 skipped, 0 failed" in captured.out
    assert Dataset(out / "water.h5").names == ["water"]


@pytest.fixture(scope="module")
def water_h5(tmp_path_factory):
    """A real labelled water file from ehpc-datagen."""
    folder = tmp_path_factory.mktemp("labelled")
    path = folder / "water.xyz"
    ase.io.write(path, WATER)
    assert datagen.main(datagen_args(path, folder / "out")) == 0
    return folder / "out" / "water.h5"


def test_unconverged_scf_is_reported_and_left_out(tmp_path, capsys):
    first, second = WATER.copy(), WATER.copy()
    second.positions[1] += [0.0, 0.05, 0.02]
    first.info["name"], second.info["name"] = "water_a", "water_b"
    path = tmp_path / "pair.extxyz"
    ase.io.write(path, [first, second], format="extxyz")
    out = tmp_path / "out"
    assert datagen.main(datagen_args(path, out, "def2-svp", "--chunk", "0", "--n-chunks", "2")) == 0
    capsys.readouterr()
    assert datagen.main(datagen_args(path, out, "def2-svp", "--max-cycle", "1")) == 0
    captured = capsys.readouterr()
    assert "0 done, 1 skipped, 1 failed" in captured.out
    assert any(line.startswith("ehpc-datagen: water_b: ") for line in captured.err.splitlines())
    failure = json.loads((out / "water_b.failed.json").read_text())
    assert failure["name"] == "water_b" and failure["max_cycle"] == 1 and failure["reason"]
    assert not (out / "water_b.h5").exists()
    assert dataset.main(["--labels", str(out), "--out", str(tmp_path / "all.h5")]) == 0
    assert "1 structure(s) failed" in capsys.readouterr().err
    assert Dataset(tmp_path / "all.h5").names == ["water_a"]
    # nothing succeeds at all: non-zero status
    alone = tmp_path / "alone"
    assert datagen.main(datagen_args(path, alone, "def2-svp", "--max-cycle", "1", "--chunk", "1",
                                     "--n-chunks", "2")) == 1
    assert "0 done, 0 skipped, 1 failed" in capsys.readouterr().out


def test_failed_structure_is_retried_and_cleared(tmp_path, capsys):
    path = tmp_path / "water.xyz"
    ase.io.write(path, WATER)
    out = tmp_path / "out"
    assert datagen.main(datagen_args(path, out, "def2-svp", "--max-cycle", "1")) == 1
    assert (out / "water.failed.json").is_file()
    assert datagen.main(datagen_args(path, out)) == 0
    assert "1 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert not (out / "water.failed.json").exists()
