"""``ehpc-dataset``: merging per-structure files and storing reproducible splits."""

import dataclasses
import json

import h5py
import numpy as np
import pytest

from ehpc.basis import Basis
from ehpc.cli import dataset as dataset_cli
from ehpc.io.dataset import Dataset, DatasetWriter
from ehpc.io.splits import SplitError, make_splits, parse_split, read_splits


def write_labels(folder, record, names, basis=Basis("def2-svp")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        with DatasetWriter(folder / f"{name}.h5", basis, "pbe", "pyscf", "test") as writer:
            writer.write(dataclasses.replace(record, name=name))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ehpc-dataset: error: ")
    return err[0]


def test_merge_sorted_skips_failed_and_partial(tmp_path, water_record, capsys):
    labels = tmp_path / "labels"
    write_labels(labels, water_record, ["w_c", "w_a", "w_b"])
    (labels / "w_d.failed.json").write_text(json.dumps({"name": "w_d", "reason": "SCF not converged"}))
    (labels / ".w_e.h5.12345.tmp").write_bytes(b"\x89HDF partial")
    assert dataset_cli.main(["--labels", str(labels), "--out", str(tmp_path / "all.h5")]) == 0
    captured = capsys.readouterr()
    assert "merged 3 structures" in captured.out
    assert "1 structure(s) failed" in captured.err
    data = Dataset(tmp_path / "all.h5")
    assert data.names == ["w_a", "w_b", "w_c"]
    with h5py.File(tmp_path / "all.h5", "r") as f:
        assert list(f["structures"].keys()) == ["w_a", "w_b", "w_c"]
    record = data["w_b"]
    np.testing.assert_array_equal(record.hamiltonian, water_record.hamiltonian)
    np.testing.assert_array_equal(record.atom_pairs, water_record.atom_pairs)
    assert data.basis == Basis("def2-svp") and data.xc == "pbe"
    assert read_splits(tmp_path / "all.h5") == {}


def test_empty_labels_folder_is_refused(tmp_path, capsys):
    (tmp_path / "labels").mkdir()
    assert dataset_cli.main(["--labels", str(tmp_path / "labels"), "--out", str(tmp_path / "all.h5")]) == 2
    assert "no labelled structures" in one_error_line(capsys)
    assert dataset_cli.main(["--labels", str(tmp_path / "nowhere"), "--out", str(tmp_path / "all.h5")]) == 2
    assert "labels folder not found" in one_error_line(capsys)
    assert not (tmp_path / "all.h5").exists()


def test_truncated_label_file_names_the_file(tmp_path, water_record, capsys):
    labels = tmp_path / "labels"
    write_labels(labels, water_record, ["w_a", "w_b"])
    data = (labels / "w_b.h5").read_bytes()
    (labels / "w_b.h5").write_bytes(data[: len(data) // 2])
    assert dataset_cli.main(["--labels", str(labels), "--out", str(tmp_path / "all.h5")]) == 2
    line = one_error_line(capsys)
    assert "w_b.h5" in line and "truncated" in line
    assert not (tmp_path / "all.h5").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_mixed_basis_is_refused(tmp_path, water_record, capsys):
    labels = tmp_path / "labels"
    write_labels(labels, water_record, ["w_a"])
    other = dataclasses.replace(water_record, name="w_b")
    with DatasetWriter(labels / "w_b.h5", Basis("def2-svp"), "b3lyp", "pyscf", "test") as writer:
        writer.write(other)
    assert dataset_cli.main(["--labels", str(labels), "--out", str(tmp_path / "all.h5")]) == 2
    assert "w_b.h5: basis/xc def2-svp/b3lyp differs" in one_error_line(capsys)


@pytest.mark.parametrize(("split", "sizes"), [("train=0.8,val=0.1,test=0.1", [16, 2, 2]),
                                              ("train=5,val=5,test=10", [5, 5, 10]),
                                              ("train=0.5,test=0.25", [10, 5])])
def test_split_written_as_string_datasets(tmp_path, water_record, split, sizes):
    labels = tmp_path / "labels"
    names = [f"w_{k:02d}" for k in range(20)]
    write_labels(labels, water_record, names)
    out = tmp_path / "all.h5"
    assert dataset_cli.main(["--labels", str(labels), "--out", str(out), "--split", split, "--seed", "3"]) == 0
    subsets = [item.split("=")[0] for item in split.split(",")]
    with h5py.File(out, "r") as f:
        assert sorted(f["splits"].keys()) == sorted(subsets)
        assert h5py.check_string_dtype(f["splits"][subsets[0]].dtype) is not None
        on_disk = {k: [s.decode() for s in f["splits"][k][()]] for k in subsets}
    assert [len(on_disk[k]) for k in subsets] == sizes
    chosen = [n for k in subsets for n in on_disk[k]]
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(names)
    assert read_splits(out) == on_disk
    # the same seed gives the same split, another seed another one
    assert make_splits(names, parse_split(split), seed=3) == on_disk
    assert make_splits(names, parse_split(split), seed=4) != on_disk


def test_fractions_use_every_structure():
    names = [f"s{k}" for k in range(7)]
    splits = make_splits(names, parse_split("train=0.5,val=0.25,test=0.25"), seed=0)
    assert sorted(n for v in splits.values() for n in v) == sorted(names)
    assert abs(len(splits["train"]) - 3.5) <= 1


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ("train=0.8,val=0.3", "add up to 1.1 > 1"),
        ("train=0.8,val=5", "mixes fractions and counts"),
        ("train=15,val=10", "needs 25 structures but only 20"),
        ("train", "not of the form name=size"),
        ("train=x", "size 'x' is not a number"),
        ("train=0.5,train=0.5", "given twice"),
    ],
)
def test_bad_split_fails_clearly(tmp_path, water_record, capsys, split, message):
    names = [f"w_{k:02d}" for k in range(20)]
    with pytest.raises(SplitError, match=message):
        make_splits(names, parse_split(split))
    labels = tmp_path / "labels"
    write_labels(labels, water_record, names[:2])
    capsys.readouterr()
    out = tmp_path / "all.h5"
    assert dataset_cli.main(["--labels", str(labels), "--out", str(out), "--split", split]) == 2
    one_error_line(capsys)
    assert not out.exists()
