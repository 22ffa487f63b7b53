"""The kinetic baseline H0 = T + v S: its fit, and that training and inference add the same
exact blocks (T and S from ``IntegralModel``, which tests/test_bands.py and
tests/infer/test_overlap.py hold to PySCF's own integrals)."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from ehpc.basis import Basis
from ehpc.graph import neighbour_list
from ehpc.integrals import IntegralModel
from ehpc.io.dataset import HamiltonianRecord, block_offsets
from ehpc.nn import HamiltonianModel
from ehpc.nn.baseline import fit_potential
from ehpc.nn.data import GraphError, record_to_graph

BASIS = Basis("gth-szv")
CUTOFF = 4.0
POTENTIAL = -2.75  # eV, the constant the synthetic labels are built with


@pytest.fixture(scope="module")
def silicon():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + [[0.02, 0.01, 0], [0, -0.01, 0.03], [0, 0, 0.01]]),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=4)
    return atoms


def exact(operator, atoms, pairs):
    return IntegralModel(BASIS, operator, cutoff=CUTOFF).predict(
        atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc, pairs=pairs)[1]


@pytest.fixture(scope="module")
def record(silicon):
    """Labels whose off-site blocks are exactly T + POTENTIAL S; on-site blocks are noise."""
    pairs = neighbour_list(silicon.positions, silicon.cell[:], silicon.pbc, CUTOFF,
                           self_edges=True).atom_pairs()
    nao = BASIS.nao_per_atom(silicon.numbers)
    offsets = block_offsets(pairs, nao)
    h = exact("kinetic", silicon, pairs) + POTENTIAL * exact("overlap", silicon, pairs)
    onsite = (pairs[:, 3] == pairs[:, 4]) & ~pairs[:, :3].any(axis=1)
    rng = np.random.default_rng(0)
    for p in np.flatnonzero(onsite):
        n = nao[pairs[p, 3]]
        a = rng.normal(size=(n, n))
        h[offsets[p] : offsets[p + 1]] = (5.0 * (a + a.T)).reshape(-1)
    return HamiltonianRecord("si_synthetic", silicon.numbers, silicon.positions,
                             silicon.cell[:], silicon.pbc, pairs, offsets, h)


@pytest.fixture(scope="module")
def model(record):
    torch.manual_seed(0)
    model = HamiltonianModel(BASIS, [14], cutoff=CUTOFF, n_layers=1, channels=4,
                             baseline="kinetic").to(torch.float64)
    model.set_statistics([record])
    return model


def test_fitted_potential_is_the_labels_constant(model):
    # the on-site noise would pull a fit over all entries far away from the constant
    assert float(model.baseline_potential) == pytest.approx(POTENTIAL, abs=1e-9)


def test_fit_potential_least_squares():
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=50), rng.normal(size=50)
    h = t + 1.5 * s + 0.01 * rng.normal(size=50)
    expected = np.linalg.lstsq(s[:, None], h - t, rcond=None)[0][0]
    assert fit_potential([(h[:20], t[:20], s[:20]), (h[20:], t[20:], s[20:])]) == \
        pytest.approx(expected, rel=1e-12)
    assert fit_potential([]) == 0.0


def test_training_and_inference_add_the_same_exact_blocks(model, record, silicon):
    graph = model.graph_of(record)
    full = model(graph).detach().numpy()
    network = model.readout(graph, *model.encode(graph)).detach().numpy()
    pairs = graph.pairs
    baseline = exact("kinetic", silicon, pairs) + POTENTIAL * exact("overlap", silicon, pairs)
    np.testing.assert_allclose(full - network, baseline, atol=1e-9)
    _, predicted = model.predict(silicon.numbers, silicon.positions, silicon.cell[:],
                                 silicon.pbc, pairs=pairs)
    np.testing.assert_allclose(predicted, full, atol=1e-12)


def test_statistics_see_only_what_the_baseline_leaves(model, record):
    """The off-site labels are exactly the baseline, so the network's off-site readout is
    scaled to the floor: its output is tiny next to a bond's kinetic block."""
    graph = model.graph_of(record)
    network = model.readout(graph, *model.encode(graph)).detach().numpy()
    offsite = ~graph.onsite_entries.numpy()
    assert np.abs(network[offsite]).max() < 1e-2 * np.abs(graph.target.numpy()[offsite]).max()


def test_saved_model_keeps_the_baseline(model, tmp_path):
    loaded = HamiltonianModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.hparams["baseline"] == "kinetic"
    assert float(loaded.baseline_potential) == float(model.baseline_potential)
    meta = {k: v for k, v in model.metadata.items()}
    meta["hparams"] = {k: v for k, v in meta["hparams"].items() if k != "baseline"}
    assert not HamiltonianModel.from_metadata(meta).uses_baseline  # files from before the key


def test_graph_without_integrals_is_refused(model, record):
    graph = record_to_graph(record, CUTOFF, [14], BASIS)  # no baseline integrals
    with pytest.raises(GraphError, match="kinetic baseline"):
        model(graph)


def test_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="baseline='hartree'"):
        HamiltonianModel(BASIS, [14], cutoff=CUTOFF, n_layers=1, baseline="hartree")
