"""Model-vs-DFT metrics and plots on a real PySCF record."""

import numpy as np
import pytest
import scipy.linalg
from ase.build import molecule

from ehpc.basis import Basis
from ehpc.dft import label_structure
from ehpc.analysis.evaluate import compare, summarise
from ehpc.nn.model import HamiltonianModel
from ehpc.units import EV_TO_MICROHARTREE


@pytest.fixture(scope="module")
def water():
    basis = Basis("sto-3g")
    return basis, label_structure(molecule("H2O"), basis, "pbe", 4.0, "water")


def test_exact_prediction_has_zero_error(water):
    basis, record = water
    model = HamiltonianModel(basis, [1, 8], cutoff=4.0, n_layers=1, channels=4)
    errors = compare(model, record, predicted=record.hamiltonian.copy())
    metrics = summarise([errors])
    assert metrics["h_mae_eV"] == 0.0
    assert metrics["eigenvalue_mae_eV"] < 1e-10
    assert abs(metrics["occupied_cosine"] - 1.0) < 1e-10


def test_perturbed_prediction_errors_match_direct_computation(water):
    basis, record = water
    model = HamiltonianModel(basis, [1, 8], cutoff=4.0, n_layers=1, channels=4)
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=1e-3, size=len(record.hamiltonian))
    errors = compare(model, record, predicted=record.hamiltonian + noise)
    metrics = summarise([errors])
    assert metrics["h_mae_uHa"] == pytest.approx(np.abs(noise).mean() * EV_TO_MICROHARTREE)
    # occupied eigenvalue error from an independent dense solve of the full matrices
    nao = basis.nao_per_atom(record.numbers)
    n = nao.sum()
    start = np.concatenate([[0], np.cumsum(nao)])
    h0, h1, s = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
    for p, (_, _, _, i, j) in enumerate(record.atom_pairs):
        a, b = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
        lo, hi = record.block_offsets[p], record.block_offsets[p + 1]
        h0[a, b] = record.hamiltonian[lo:hi].reshape(nao[i], nao[j])
        h1[a, b] = (record.hamiltonian + noise)[lo:hi].reshape(nao[i], nao[j])
        s[a, b] = record.overlap[lo:hi].reshape(nao[i], nao[j])
    n_occ = record.attrs["n_electrons"] // 2
    e0 = scipy.linalg.eigh(h0, s, eigvals_only=True)[:n_occ]
    e1 = scipy.linalg.eigh(h1, s, eigvals_only=True)[:n_occ]
    assert metrics["eigenvalue_mae_eV"] == pytest.approx(np.abs(e1 - e0).mean(), rel=1e-8)
    assert 0.9 < metrics["occupied_cosine"] < 1.0


def test_frontier_levels_follow_a_shift_of_h_by_the_overlap(water):
    """H + c S has the eigenvectors of H and every eigenvalue moved by c: the HOMO and
    LUMO errors are c (the LUMO's signed mean too) and the gap error 0, whatever the basis."""
    basis, record = water
    model = HamiltonianModel(basis, [1, 8], cutoff=4.0, n_layers=1, channels=4)
    shift = 0.25  # eV
    errors = compare(model, record, predicted=record.hamiltonian + shift * record.overlap)
    assert errors.homo_dft < errors.lumo_dft  # water is closed-shell with empty orbitals
    assert errors.homo_model - errors.homo_dft == pytest.approx(shift, abs=1e-9)
    assert errors.lumo_model - errors.lumo_dft == pytest.approx(shift, abs=1e-9)
    metrics = summarise([errors, compare(model, record, predicted=record.hamiltonian
                                         - 3 * shift * record.overlap)])
    assert metrics["homo_mae_eV"] == pytest.approx(2 * shift, abs=1e-9)  # (0.25 + 0.75) / 2
    assert metrics["lumo_mae_eV"] == pytest.approx(2 * shift, abs=1e-9)
    assert metrics["lumo_mean_error_eV"] == pytest.approx(-shift, abs=1e-9)  # (0.25 - 0.75) / 2
    assert metrics["gap_mae_eV"] == pytest.approx(0.0, abs=1e-9)


def test_given_overlap_replaces_the_records(water):
    """With S doubled every eigenvalue halves, so the eigenvalue error halves too."""
    from ehpc.io.layout import gamma_matrix

    basis, record = water
    model = HamiltonianModel(basis, [1, 8], cutoff=4.0, n_layers=1, channels=4)
    noise = np.random.default_rng(1).normal(scale=1e-2, size=len(record.hamiltonian))
    s = gamma_matrix(record.atom_pairs, record.overlap, basis.nao_per_atom(record.numbers)).toarray()
    own = compare(model, record, predicted=record.hamiltonian + noise)
    same = compare(model, record, predicted=record.hamiltonian + noise, overlap=s)
    doubled = compare(model, record, predicted=record.hamiltonian + noise, overlap=2.0 * s)
    assert same == own
    assert doubled.eig_abs_error_sum == pytest.approx(0.5 * own.eig_abs_error_sum, rel=1e-9)
    assert doubled.abs_error_sum == own.abs_error_sum
    with pytest.raises(ValueError, match="water: overlap has shape"):
        compare(model, record, predicted=record.hamiltonian, overlap=s[:-1, :-1])


def test_plots_are_written(water, tmp_path):
    from ehpc.analysis import plots

    _, record = water
    path = plots.parity(record.hamiltonian, record.hamiltonian * 1.01, tmp_path / "parity.png")
    assert path.stat().st_size > 1000
    path = plots.density_of_states(np.linspace(-1, 1, 20), 0.0, tmp_path / "dos.png")
    assert path.stat().st_size > 1000
    x = np.linspace(0, 1, 10)
    bands = {"DFT": np.c_[x, -x], "model": np.c_[x, -x] + 0.01}
    path = plots.band_structure(x, bands, [(0, "G"), (1, "X")], tmp_path / "bands.png")
    assert path.stat().st_size > 1000
