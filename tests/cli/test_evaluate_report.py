"""ehpc-evaluate and ehpc-report on real PySCF labels: numbers, files and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule

from ehpc.basis import Basis
from ehpc.cli import CLIError
from ehpc.cli import evaluate as evaluate_cli
from ehpc.cli import report as report_cli
from ehpc.dft import label_structure
from ehpc.analysis.evaluate import compare, summarise
from ehpc.io.dataset import DatasetWriter
from ehpc.io.splits import write_splits
from ehpc.nn.model import HamiltonianModel

BASIS = Basis("sto-3g")


@pytest.fixture(scope="module")
def water_set(tmp_path_factory):
    """Four displaced water molecules labelled by PySCF, split 2 train / 2 test."""
    folder = tmp_path_factory.mktemp("water")
    rng = np.random.default_rng(0)
    records = []
    for k in range(4):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        records.append(label_structure(atoms, BASIS, "pbe", 4.0, f"w{k}"))
    path = folder / "water.h5"
    with DatasetWriter(path, BASIS, "pbe") as writer:
        for record in records:
            writer.write(record)
    write_splits(path, {"train": ["w0", "w1"], "test": ["w2", "w3"]})
    model = HamiltonianModel(BASIS, [1, 8], cutoff=4.0, n_layers=1, channels=4)
    model_path = model.save(folder / "model.pt")
    return path, model_path, records


def test_evaluate_writes_the_metrics_of_the_held_out_split(water_set, tmp_path, capsys):
    data, model_path, records = water_set
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--model", str(model_path), "--dataset", str(data),
                              "--out-dir", str(out), "--plot-dir", str(tmp_path / "plots")]) == 0
    report = json.loads((out / "metrics.json").read_text())
    model = HamiltonianModel.load(model_path)
    expected = summarise([compare(model, r) for r in records[2:]])
    assert report["split"] == "test"
    assert [row["name"] for row in report["structures"]] == ["w2", "w3"]
    for key in ("h_mae_eV", "eigenvalue_mae_eV", "occupied_cosine", "gap_mae_eV"):
        assert report["metrics"][key] == pytest.approx(expected[key], rel=1e-10), key
    assert (tmp_path / "plots" / "parity.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "H MAE" in out
    assert (f"HOMO / LUMO MAE {report['metrics']['homo_mae_eV'] * 1e3:.1f} / "
            f"{report['metrics']['lumo_mae_eV'] * 1e3:.1f} meV") in out


@pytest.mark.parametrize("argv, message", [
    (["--split", "val"], "no split 'val'"),
    (["--band-structure", "missing.extxyz"], "band-structure file not found"),
    (["--smearing", "cold:0.1"], "--smearing: smearing 'cold:0.1'"),
    (["--band-reference", "bands.json"], "--band-reference: needs --band-structure"),
])
def test_evaluate_bad_input_is_one_line(water_set, tmp_path, capsys, argv, message):
    data, model_path, _ = water_set
    status = evaluate_cli.main(["--model", str(model_path), "--dataset", str(data),
                                "--out-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_evaluate_refuses_a_model_of_another_basis(water_set, tmp_path, capsys):
    data, _, _ = water_set
    other = HamiltonianModel(Basis("def2-svp"), [1, 8], cutoff=4.0, n_layers=1, channels=4)
    path = other.save(tmp_path / "svp.pt")
    status = evaluate_cli.main(["--model", str(path), "--dataset", str(data),
                                "--out-dir", str(tmp_path)])
    assert status == 2
    assert "def2-svp" in capsys.readouterr().err


def test_report_summarises_the_evaluation(water_set, tmp_path):
    data, model_path, _ = water_set
    evaluate_cli.main(["--model", str(model_path), "--dataset", str(data), "--split", "all",
                       "--out-dir", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert report_cli.main(["--evaluation", str(tmp_path / "metrics.json"),
                            "--out-dir", str(tmp_path / "plots")]) == 0
    text = (tmp_path / "plots" / "summary.txt").read_text()
    assert f"{metrics['h_mae_meV']:10.3f} meV" in text
    assert "'all' split (4 structures" in text
    assert "Not given: training, inference" in text


def test_report_names_a_missing_input(tmp_path, capsys):
    assert report_cli.main(["--inference", str(tmp_path / "none.h5"),
                            "--out-dir", str(tmp_path)]) == 2
    assert "none.h5: file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_band_comparison_writes_plot_and_consistent_json(tmp_path):
    """The band step of ehpc-evaluate on primitive Si (a 2x2x2 PySCF SCF), with the exact
    kinetic operator standing in for the model: the JSON holds both band sets along the
    path, and the reported errors and gaps follow from them."""
    import argparse

    from ase.build import bulk
    from ase.io import write

    from ehpc.integrals import IntegralModel

    cell = tmp_path / "si2.extxyz"
    write(cell, bulk("Si", "diamond", a=5.43))
    basis = Basis("gth-szv", "gth-pbe")
    kinetic = IntegralModel(basis, "kinetic").with_cutoff_for([14])
    args = argparse.Namespace(band_structure=cell, band_path="LGX", band_points=7,
                              kmesh=[2, 2, 2], conv_tol=1e-8, out_dir=tmp_path, plot_dir=tmp_path,
                              smearing=None, band_reference=None)
    result = evaluate_cli.compare_bands(kinetic, args, "pbe")
    saved = json.loads((tmp_path / "bands.json").read_text())
    dft, model = np.array(saved["dft_eV"]), np.array(saved["model_eV"])
    assert dft.shape == model.shape == (7, 8)
    assert saved["path"] == "LGX" and [t[1] for t in saved["ticks"]] == ["L", "G", "X"]
    assert result["band_mae_eV"] == pytest.approx(np.abs(dft - model).mean())
    cut = np.array(saved["cutoff_dft_eV"])  # DFT's H(R) kept within the kinetic range
    window = np.abs(dft - saved["fermi_level_dft_eV"]) <= 2.0
    assert result["model_mae_window_eV"] == pytest.approx(np.abs(model - cut)[window].mean())
    assert result["floor_mae_window_eV"] == pytest.approx(np.abs(cut - dft)[window].mean())
    assert result["total_mae_window_eV"] == pytest.approx(np.abs(model - dft)[window].mean())
    assert result["floor_mae_window_eV"] < 0.5 * np.abs(model - dft)[window].mean()
    assert result["gap_dft_eV"] == pytest.approx(dft[:, 4].min() - dft[:, 3].max())
    assert 0.0 < result["gap_dft_eV"] < 3.0  # silicon: a small gap in a minimal basis
    assert (tmp_path / "bands.png").stat().st_size > 0

    # a second model on the same cell takes the DFT bands from this bands.json, no SCF
    again = tmp_path / "again"
    again.mkdir()
    args.out_dir = args.plot_dir = again
    args.band_reference = tmp_path / "bands.json"
    other = IntegralModel(basis, "overlap", cutoff=kinetic.cutoff)
    reused = evaluate_cli.compare_bands(other, args, "pbe")
    second = json.loads((again / "bands.json").read_text())
    assert second["dft_eV"] == saved["dft_eV"] and second["cutoff_dft_eV"] == saved["cutoff_dft_eV"]
    assert reused["dft_seconds"] == 0.0 and reused["gap_dft_eV"] == result["gap_dft_eV"]
    assert reused["model_mae_window_eV"] != pytest.approx(result["model_mae_window_eV"])
    # ... and refuses it where the SCF would differ: another mesh, another cell
    args.kmesh = [3, 3, 3]
    with pytest.raises(CLIError, match="bands.json: .*another scf_kmesh"):
        evaluate_cli.compare_bands(kinetic, args, "pbe")
    args.kmesh = [2, 2, 2]
    write(cell, bulk("Si", "diamond", a=5.50))
    with pytest.raises(CLIError, match="bands.json: .*another cell"):
        evaluate_cli.compare_bands(kinetic, args, "pbe")
    # a JSON that is not an evaluation's bands.json is one line, not a traceback
    for text in ('[1, 2]', json.dumps({"dft_eV": saved["dft_eV"]})):
        args.band_reference.write_text(text)
        with pytest.raises(CLIError, match="bands.json: holds no reference bands"):
            evaluate_cli.compare_bands(kinetic, args, "pbe")


def test_report_gives_the_molecular_frontier_errors(tmp_path):
    metrics = {"n_structures": 2, "n_entries": 10, "h_mae_meV": 3.0, "h_mae_uHa": 110.0,
               "eigenvalue_mae_meV": 5.0, "gap_mae_eV": 0.5, "occupied_cosine": 0.99,
               "homo_mae_eV": 0.125, "lumo_mae_eV": 0.75, "lumo_mean_error_eV": -0.625}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"split": "test", "metrics": metrics}))
    text = "\n".join(report_cli.evaluation_lines(path))
    assert "HOMO / LUMO MAE          125.000 / 750.000 meV  (LUMO mean signed error -625.000 meV)" in text


def test_report_gives_the_frontier_errors_against_the_true_scf(tmp_path):
    """A crystal's three scores each show MAE / max and the HOMO / LUMO / gap errors."""
    scores = {key: {"mae_meV": mae, "max_meV": 2 * mae, "homo_abs_error_meV": mae + 0.25,
                    "lumo_abs_error_meV": mae + 0.5, "gap_abs_error_meV": mae + 0.75}
              for key, mae in (("floor", 1.0), ("model", 10.0), ("total", 11.0))}
    metrics = {"n_structures": 1, "n_entries": 10, "h_mae_meV": 3.0, "h_mae_uHa": 110.0,
               "eigenvalue_mae_meV": 5.0, "gap_mae_eV": 0.001, "occupied_cosine": 0.99,
               "bands_vs_scf": {"n_crystals": 1, **scores}}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"split": "test", "metrics": metrics}))
    text = "\n".join(report_cli.evaluation_lines(path))
    assert "floor       1.00 /      2.00;  1.25 / 1.50 / 1.75  (labels cut at the cutoff)" in text
    assert "total      11.00 /     22.00;  11.25 / 11.50 / 11.75  (model vs true SCF)" in text
