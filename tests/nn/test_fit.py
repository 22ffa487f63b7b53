"""Fitting real PySCF Hamiltonians, and the model's data pipeline, persistence and checks.

Labels: water in STO-3G with LDA from ``ehpc.dft.label_structure`` (tight SCF), a basis
small enough that a handful of molecules fit in seconds on one core.
"""

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy.spatial.transform import Rotation

from ehpc.basis import Basis
from ehpc.dft import label_structure
from ehpc.io.dataset import Dataset, DatasetWriter
from ehpc.nn import HamiltonianModel, ModelCompatibilityError, record_to_graph
from ehpc.nn.fit import evaluate, fit
from ehpc.units import EV_TO_MICROHARTREE

BASIS = Basis("sto-3g")
XC = "lda"
LABEL_CUTOFF = 4.0  # Å: every pair of a water molecule


def water(seed: int):
    atoms = molecule("H2O")
    atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def records():
    """Three rattled waters to fit, one to hold out, and training water 0 rotated and inverted."""
    def label(atoms, name):
        return label_structure(atoms, BASIS, XC, LABEL_CUTOFF, name, conv_tol=1e-12)

    out = [label(water(k), f"water_{k}") for k in range(4)]
    turned = water(0)
    improper = -Rotation.random(random_state=5).as_matrix()
    turned.positions = turned.positions @ improper.T + [0.3, -0.2, 0.5]
    out.append(label(turned, "water_0_turned"))
    return out


def small_model(seed: int = 0, **hparams) -> HamiltonianModel:
    torch.manual_seed(seed)
    return HamiltonianModel(BASIS, [1, 8], cutoff=3.0, n_layers=2, channels=8, radial_hidden=32,
                            **hparams)


def test_overfit_a_handful_of_waters_below_one_microhartree(records):
    train, held_out, turned = records[:3], records[3], records[4]
    model = small_model()
    history = fit(model, train, epochs=30, lr=1e-3, dtype=torch.float64, optimizer="lm", seed=0)
    metrics = evaluate(model, train)
    assert metrics["mae_uHa"] < 1.0, history[-1]
    assert metrics["mae_uHa"] == pytest.approx(metrics["mae_eV"] * EV_TO_MICROHARTREE)
    # PySCF's own Fock of the rotated, inverted molecule, never seen in training: only
    # exact equivariance in PySCF's AO convention reproduces it (to DFT-grid noise, ~0.1 uHa)
    assert evaluate(model, [turned])["mae_uHa"] < 1.0
    # a genuinely new geometry is not memorised: the fit is not a lookup of the target
    assert evaluate(model, [held_out])["mae_uHa"] > 10.0


def test_adam_fit_is_reproducible_and_learns(records):
    runs = []
    for _ in range(2):
        model = small_model(seed=3)
        runs.append(fit(model, records[:2], epochs=25, lr=1e-2, loss="mae", diag_weight=4.0, seed=7,
                        dtype=torch.float64, val_records=records[3:4], eval_every=5))
    first, second = runs
    assert [r["loss"] for r in first] == [r["loss"] for r in second]
    assert first[-1]["loss"] < 0.5 * first[0]["loss"]
    assert "val_mae_eV" in first[-1]


def test_training_graph_keeps_only_pairs_within_the_model_cutoff(records):
    record = records[0]
    nao = BASIS.nao_per_atom(record.numbers)
    cutoff = 1.2  # O-H bonds (~0.96 Å) in, H-H (~1.5 Å) out
    model = HamiltonianModel(BASIS, [1, 8], cutoff=cutoff, n_layers=1, channels=2)
    graph = record_to_graph(record, model.cutoff, model.elements, model.basis)
    expected = []
    for p, (sx, sy, sz, i, j) in enumerate(record.atom_pairs):
        vector = record.positions[j] + np.array([sx, sy, sz]) @ record.cell - record.positions[i]
        d = np.linalg.norm(vector)
        if d < cutoff:
            expected.append(record.block(p, nao).ravel())
    np.testing.assert_array_equal(graph.target.numpy(), np.concatenate(expected))
    assert len(graph.pairs) == len(expected) < len(record.atom_pairs)
    assert model(graph.to(dtype=torch.float32)).shape == graph.target.shape


def test_save_and_load_round_trip(tmp_path, records):
    model = small_model(seed=2).to(torch.float64)
    model.set_statistics(records[:2])
    path = model.save(tmp_path / "model.pt")
    blob = torch.load(path, weights_only=True)  # plain tensors and a JSON string, no pickled code
    meta = json.loads(blob["metadata"])
    assert meta["basis"] == "sto-3g" and meta["elements"] == [1, 8]
    assert meta["units"] == {"energy": "eV", "length": "Angstrom"}
    assert meta["hparams"]["channels"] == 8 and meta["n_layers"] == 2
    loaded = HamiltonianModel.load(path)
    assert loaded.dtype == torch.float64 and loaded.receptive_field == pytest.approx(3 * 3.0)
    atoms = water(9)
    pairs_a, a = model.predict(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc)
    pairs_b, b = loaded.predict(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc)
    np.testing.assert_array_equal(pairs_a, pairs_b)
    np.testing.assert_array_equal(a, b)


def test_model_refuses_other_bases_and_elements(records):
    model = HamiltonianModel(BASIS, [1, 8], cutoff=3.0, n_layers=1, channels=2)
    wrong_basis = r"water_0: basis 'def2-svp'.*model's basis 'sto-3g'"
    with pytest.raises(ModelCompatibilityError, match=wrong_basis):
        model.check_compatible(Basis("def2-svp"), records[0].numbers, "water_0")
    methane = molecule("CH4")
    stranger = r"methane: element C is not among the model's elements \[H, O\]"
    with pytest.raises(ModelCompatibilityError, match=stranger):
        model.predict(methane.numbers, methane.positions, methane.cell[:], methane.pbc,
                      name="methane")


def test_model_for_dataset(tmp_path, records):
    path = tmp_path / "water.h5"
    with DatasetWriter(path, BASIS, XC) as writer:
        for record in records[:2]:
            writer.write(record)
    data = Dataset(path)
    model = HamiltonianModel.for_dataset(data, cutoff=3.0, n_layers=1, channels=2)
    assert model.elements == (1, 8) and model.basis == BASIS
    metrics = evaluate(model, list(data))
    assert metrics["n_structures"] == 2
    assert metrics["n_entries"] == sum(len(r.hamiltonian) for r in records[:2])
