"""The band-energy loss: exact at the DFT blocks, differentiable, and it trains.

References are independent: dense ``scipy.linalg.eigh`` of the generalised problem
built with ``ehpc.io.layout.bloch_sum`` (crystal) or by hand (molecule), never the loss's
own torch path.
"""

import numpy as np
import pytest
import scipy.linalg
import torch
from ase import Atoms

from ehpc.io.layout import bloch_sum
from ehpc.basis import Basis
from ehpc.dft import label_structure
from ehpc.nn import HamiltonianModel, record_to_graph
from ehpc.nn.fit import fit
from ehpc.train.loss import band_eigenvalues, band_error_sum, band_kpoints, band_target

from .conftest import BASIS

CRYSTAL_BASIS = Basis("gth-szv")
MODEL_CUTOFF = 3.0  # Å, below the label cutoffs: the loss must use the same kept pairs
#: the H2 crystal has two bands 20 eV apart: a window that holds both
CRYSTAL_WINDOW = 15.0


@pytest.fixture(scope="module")
def crystal():
    """A tiny H2 molecular crystal, PBE/gth-szv on a 2x2x2 mesh (~10 s of PySCF)."""
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.76, 0.1, 0.05]], cell=np.diag([3.0, 2.8, 2.9]),
                  pbc=True)
    return label_structure(atoms, CRYSTAL_BASIS, "pbe", 5.0, "h2_crystal", kmesh=(2, 2, 2),
                           conv_tol=1e-10)


def kept(record, cutoff):
    """Rows of the record's pairs that the model predicts: on-site, or closer than cutoff."""
    pairs = record.atom_pairs
    vectors = (record.positions[pairs[:, 4]] + pairs[:, :3] @ record.cell
               - record.positions[pairs[:, 3]])
    onsite = (pairs[:, 3] == pairs[:, 4]) & ~pairs[:, :3].any(axis=1)
    return onsite | (np.linalg.norm(vectors, axis=1) < cutoff)


def scipy_bands(record, basis, kpts, scale=1.0):
    """Eigenvalues of (scale * H_kept(k), S(k)) by dense scipy.linalg.eigh."""
    nao = basis.nao_per_atom(record.numbers)
    keep = kept(record, MODEL_CUTOFF)
    sizes = nao[record.atom_pairs[:, 3]] * nao[record.atom_pairs[:, 4]]
    h_flat = np.where(np.repeat(keep, sizes), record.hamiltonian, 0.0) * scale
    out = []
    for k in kpts:
        h = bloch_sum(record.atom_pairs, h_flat, nao, k)
        s = bloch_sum(record.atom_pairs, record.overlap, nao, k)
        out.append(scipy.linalg.eigh(h, s, eigvals_only=True))
    return np.array(out)  # [n_k, n]


def target_of(record, basis, elements, window=2.0, n_virtual=2):
    graph = record_to_graph(record, MODEL_CUTOFF, elements, basis)
    return graph, band_target(record, graph, basis, 4, window, n_virtual)


@pytest.mark.parametrize("which", ["molecule", "crystal"])
def test_band_loss_is_zero_at_the_dft_blocks_and_positive_away(which, records, crystal):
    if which == "molecule":
        record, basis, elements, window = records["water_0"], BASIS, [1, 8], 2.0
    else:
        record, basis, elements, window = crystal, CRYSTAL_BASIS, [1], CRYSTAL_WINDOW
    graph, target = target_of(record, basis, elements, window)
    kpts = band_kpoints(record, 4)
    assert len(kpts) == (1 if which == "molecule" else 4)
    expected = scipy_bands(record, basis, kpts)
    np.testing.assert_allclose(target.reference.numpy(), expected, atol=1e-8, rtol=0)
    if which == "molecule":  # 5 occupied orbitals of water, plus 2 virtual ones
        assert target.select.numpy().tolist() == [[True] * 7]
    else:  # the bands within the window around the record's E_F
        near = np.abs(expected - record.attrs["fermi_level"]) <= window
        assert target.select.numpy().tolist() == near.tolist() and near.sum() >= len(kpts)
    ranges = [(0, len(graph.target))]
    at_dft, _, count = band_error_sum(graph.target, [target], "mse", ranges)
    assert count == target.count and float(at_dft) / count < 1e-8
    # H scaled by 1.02: the loss is the mean squared shift of the selected eigenvalues
    moved, moved_abs, _ = band_error_sum(graph.target * 1.02, [target], "mse", ranges)
    shift = (scipy_bands(record, basis, kpts, 1.02) - expected)[target.select.numpy()]
    assert float(moved) / count == pytest.approx(np.mean(shift**2), rel=1e-8)
    assert float(moved) > 1e-6
    assert float(moved_abs) == pytest.approx(np.abs(shift).sum(), rel=1e-8)


def test_band_loss_gradient_matches_finite_differences(records, crystal):
    for record, basis, elements, window in ((records["water_0"], BASIS, [1, 8], 2.0),
                                            (crystal, CRYSTAL_BASIS, [1], CRYSTAL_WINDOW)):
        graph, target = target_of(record, basis, elements, window)
        noise = torch.randn(graph.target.shape, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
        start = (graph.target + 0.05 * noise).requires_grad_()

        def loss(flat, target=target):
            # errors of ~0.1 eV, not the eigenvalues themselves (O 1s is -500 eV): the
            # finite differences would drown in round-off
            diff = band_eigenvalues(flat, target) - target.reference
            return diff[target.select].square().sum()

        assert torch.autograd.gradcheck(loss, (start,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("which", ["molecule", "crystal"])
def test_band_loss_drops_when_overfitting_one_structure(which, records, crystal):
    if which == "molecule":
        record, basis, elements, window = records["h2_0"], BASIS, [1], 2.0
    else:
        record, basis, elements, window = crystal, CRYSTAL_BASIS, [1], CRYSTAL_WINDOW
    torch.manual_seed(0)
    # the loss is under test, not the block-size parametrisation: without it the tiny
    # model starts 100 times further off, so the drop is the loss's own work
    model = HamiltonianModel(basis, elements, cutoff=MODEL_CUTOFF, n_layers=1, channels=4,
                             n_radial=4, radial_hidden=8, block_decay=False)
    history = fit(model, [record], epochs=2, lr=1.0, optimizer="lbfgs", dtype=torch.float64,
                  band_weight=1.0, band_window=window, band_virtual=1, seed=0)
    before, after = history[0]["train_band_loss"], history[-1]["train_band_loss"]
    assert after < before / 20, (before, after)
    # the model's own eigenvalues, checked against scipy on its predicted blocks
    graph, target = target_of(record, basis, elements, window, n_virtual=1)
    with torch.no_grad():
        pred = model(graph.to(dtype=torch.float64))
    loss, _, count = band_error_sum(pred, [target], "mse", [(0, len(pred))])
    assert float(loss) / count < before / 20


def test_ehpc_train_reports_the_band_error_of_its_model(tmp_path, config_file, records):
    """Adam steps with the band term, and ``val_band_mae_meV`` is the exported model's."""
    from ehpc.cli import train as cli
    from ehpc.io.layout import gamma_matrix

    from .conftest import SPLITS, read_rows

    out = tmp_path / "run"
    assert cli.main(["--config", str(config_file), "--out-dir", str(out), "--set",
                     "train.epochs=2", "--set", "train.band_weight=0.5", "--set",
                     "train.band_virtual=2", "--set", "train.export=last"]) == 0
    row = read_rows(out / "metrics.jsonl", "epoch")[-1]
    assert row["train_band_loss"] > 0
    model = HamiltonianModel.load(out / "model.pt")
    errors = []
    for name in SPLITS["val"]:
        record = records[name]
        graph = record_to_graph(record, model.cutoff, model.elements, model.basis)
        with torch.no_grad():
            pred = model(graph.to(dtype=model.dtype)).double().numpy()
        nao = BASIS.nao_per_atom(record.numbers)
        s = gamma_matrix(record.atom_pairs, record.overlap, nao).toarray()
        e_ml = scipy.linalg.eigh(gamma_matrix(graph.pairs, pred, nao).toarray(), s,
                                 eigvals_only=True)
        e_dft = scipy.linalg.eigh(gamma_matrix(graph.pairs, graph.target.numpy(), nao)
                                  .toarray(), s, eigvals_only=True)
        n_levels = int(record.attrs["n_electrons"]) // 2 + 2
        errors.extend(np.abs(e_ml - e_dft)[:n_levels])
    assert row["val_band_mae_meV"] == pytest.approx(1000 * np.mean(errors), rel=1e-6)


def test_band_kpoints_refine_the_scf_mesh_when_asked_for_more(crystal):
    """Up to the SCF mesh: its points; beyond: a mesh refined by a whole factor, which
    holds the SCF mesh and the zone edge between its points."""
    mesh = np.asarray(crystal.attrs["kmesh"])
    scf = band_kpoints(crystal, int(np.prod(mesh)))
    assert sorted(map(tuple, np.round(scf * mesh, 6))) == sorted(
        map(tuple, np.round(np.indices(mesh).reshape(3, -1).T.astype(float), 6)))
    finer = band_kpoints(crystal, 8 * int(np.prod(mesh)))  # all of the mesh times 2
    assert len({tuple(k) for k in np.round(finer, 9)}) == len(finer) == 8 * np.prod(mesh)
    on_finer_mesh = finer * 2 * mesh
    np.testing.assert_allclose(on_finer_mesh, np.round(on_finer_mesh), atol=1e-9)
    assert {tuple(k) for k in np.round(scf, 9)} <= {tuple(k) for k in np.round(finer, 9)}
    assert np.isclose(np.abs(finer - np.round(finer)), 0.5).any()  # the zone edge


def in_orthonormal_basis(factor: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``L^-1 M L^-H`` for Hermitian M and the lower Cholesky factor L of S."""
    return scipy.linalg.solve_triangular(
        factor, scipy.linalg.solve_triangular(factor, matrix, lower=True).conj().T, lower=True)


@pytest.mark.parametrize("which", ["molecule", "crystal", "crystal with baseline"])
def test_readout_fit_with_the_band_window_term_is_stationary(which, records, crystal):
    """``train.readout_kpoints``: the solved readout minimises matrix-element error per
    entry plus ``weight`` times the error of ``U^H L^-1 H(k) L^-H U`` per element of its
    window block (U: DFT eigenvectors; window: the states within CRYSTAL_WINDOW of E_F, or
    occupied + 1 for the molecule), the objective rebuilt here from the model's own
    predictions with numpy Bloch sums, scipy's Cholesky factor and scipy's eigenvectors
    (quadratic in the readout: a central difference is its gradient).  With the kinetic
    baseline the potential v is solved for with the readout weights."""
    from ehpc.train.readout_fit import normal_equations, readout_weights, solve_readout

    if which == "molecule":
        record, basis, elements, kpts = records["water_0"], BASIS, [1, 8], np.zeros((1, 3))
    else:
        record, basis, elements, kpts = crystal, CRYSTAL_BASIS, [1], band_kpoints(crystal, 8)
    assert which == "molecule" or np.count_nonzero(kpts.any(axis=1)) == 7  # complex H(k)
    torch.manual_seed(0)
    model = HamiltonianModel(basis, elements, cutoff=MODEL_CUTOFF, n_layers=1, channels=4,
                             n_radial=4, radial_hidden=8,
                             baseline="kinetic" if "baseline" in which else "none")
    model = model.to(torch.float64)
    model.set_statistics([record])
    graph = model.graph_of(record).to("cpu", torch.float64)
    n_virtual = 1  # water in sto-3g has 5 occupied and 2 empty orbitals: a window of 6
    target = band_target(record, graph, basis, len(kpts), CRYSTAL_WINDOW, n_virtual)
    nao = basis.nao_per_atom(record.numbers)
    pairs, dft = np.asarray(graph.pairs), graph.target.numpy()
    factors, windows = [], []
    n_electrons = int(record.attrs.get("n_electrons", basis.n_electrons(record.numbers)))
    for k in kpts:
        factor = scipy.linalg.cholesky(bloch_sum(record.atom_pairs, record.overlap, nao, k),
                                       lower=True)
        levels, vectors = scipy.linalg.eigh(in_orthonormal_basis(factor, bloch_sum(pairs, dft, nao, k)))
        if which == "molecule":
            keep = np.arange(len(levels)) < n_electrons // 2 + n_virtual
        else:
            keep = np.abs(levels - record.attrs["fermi_level"]) <= CRYSTAL_WINDOW
        factors.append(factor)
        windows.append(vectors[:, keep])
    assert 0 < sum(w.shape[1] for w in windows) < len(kpts) * windows[0].shape[0]
    weight = 0.3

    def objective() -> float:
        with torch.no_grad():
            error = model(graph).numpy() - dft
        total = 0.0
        for k, factor, window in zip(kpts, factors, windows):
            block = window.conj().T @ in_orthonormal_basis(factor, bloch_sum(pairs, error, nao, k)) @ window
            total += np.sum(np.abs(block) ** 2)
        return float(np.mean(error**2)) + weight * total / sum(w.shape[1] ** 2 for w in windows)

    flat = torch.cat([w.detach().reshape(-1) for w in readout_weights(model)])
    directions = torch.randn(5, len(flat), dtype=torch.float64)

    def slopes(centre: torch.Tensor, step: float = 1e-3) -> np.ndarray:
        out = []
        for d in directions:
            values = []
            for sign in (1.0, -1.0):
                start = 0
                with torch.no_grad():
                    for w in readout_weights(model):
                        w.copy_((centre + sign * step * d)[start:start + w.numel()].view_as(w))
                        start += w.numel()
                values.append(objective())
            out.append((values[0] - values[1]) / (2 * step))
        return np.array(out)

    initial = slopes(flat)
    elements_term, bands = normal_equations(model, [(graph, [target])], diag_weight=1.0)
    solve_readout(model, elements_term, bands, weight, ridge=1e-14)
    solved = torch.cat([w.detach().reshape(-1) for w in readout_weights(model)])
    at_minimum = objective()
    assert np.abs(slopes(solved)).max() <= 1e-6 * np.abs(initial).max()
    # and the band-window term changed the answer: matrix elements alone give another one
    solve_readout(model, elements_term, ridge=1e-14)
    assert objective() > at_minimum * (1 + 1e-6)


def test_time_reversal_pairs_count_once_each_with_the_same_normal_equations(crystal):
    """Of k and -k only one is Bloch-summed, counted twice: the normal equations equal
    those of every point computed (their images are complex conjugates)."""
    from ehpc.train import readout_fit
    from ehpc.train.readout_fit import time_reversal_weights

    kpts = band_kpoints(crystal, 64)  # the whole 4x4x4 mesh (the 2x2x2 SCF mesh refined)
    weights = time_reversal_weights(kpts)
    # 8 points are their own partner (every component 0 or 1/2), the other 56 pair up
    assert weights.sum() == 64 and np.count_nonzero(weights) == 8 + 56 // 2
    torch.manual_seed(1)
    model = HamiltonianModel(CRYSTAL_BASIS, [1], cutoff=MODEL_CUTOFF, n_layers=1, channels=4,
                             n_radial=4, radial_hidden=8).to(torch.float64)
    model.set_statistics([crystal])
    graph = record_to_graph(crystal, MODEL_CUTOFF, [1], CRYSTAL_BASIS).to("cpu", torch.float64)
    target = band_target(crystal, graph, CRYSTAL_BASIS, 64, CRYSTAL_WINDOW, 2)
    paired = readout_fit.normal_equations(model, [(graph, [target])], 1.0)[1]
    every = readout_fit.time_reversal_weights
    try:
        readout_fit.time_reversal_weights = lambda k: np.ones(len(k), dtype=np.int64)
        full = readout_fit.normal_equations(model, [(graph, [target])], 1.0)[1]
    finally:
        readout_fit.time_reversal_weights = every
    assert float(full.count) == float(paired.count)
    torch.testing.assert_close(paired.gram, full.gram, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(paired.rhs, full.rhs, rtol=1e-10, atol=1e-12)
    assert float(full.gram.abs().max()) > 0
