"""Fermi level by inertia and SLEPc eigenstates near it, against dense diagonalisation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from .conftest import check, mpirun, pencil, petsc_dense, random_si_model, si_crystal, write_traj

NEV = 10
TOL_EIGENVALUE = 1e-8  # eV


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``mpirun -n 2 ehpc-infer`` on 512 Si atoms (2048 orbitals) with pass-through options."""
    folder = tmp_path_factory.mktemp("solve")
    model = random_si_model(cutoff=3.0, n_layers=1).save(folder / "model.pt")
    structure = write_traj(si_crystal((4, 4, 4), seed=5), folder / "si512.traj")
    out = folder / "results.h5"
    run = check(mpirun(
        2, "ehpc-infer", "--model", model, "--structure", structure, "--nev", NEV, "--out", out,
        "--eigenvectors", "--overlap-tol", "1e-8", "-eps_tol", "1e-12", "-eps_view",
    ))
    from ehpc.io.results import read_results

    results = read_results(out)
    h = results.hamiltonian().toarray()
    s = results.overlap().toarray()
    dense = scipy.linalg.eigh(0.5 * (h + h.T), 0.5 * (s + s.T), eigvals_only=True)
    return run, results, h, s, dense


@pytest.mark.mpi
@pytest.mark.slow
def test_inertia_fermi_level_counts_the_electrons(cli_run):
    _, results, _, _, dense = cli_run
    n_occupied = results.attrs["n_occupied"]
    assert n_occupied == results.n_electrons // 2 == 1024
    assert results.attrs["gap_found"]
    # the inertia of the last factorised H - σS counted the states below σ exactly
    assert np.count_nonzero(dense < results.attrs["fermi_sigma"]) == results.attrs["fermi_count"]
    assert np.count_nonzero(dense < results.fermi_level) == n_occupied


@pytest.mark.mpi
@pytest.mark.slow
def test_slepc_eigenvalues_near_fermi_level_match_dense(cli_run):
    _, results, _, _, dense = cli_run
    fermi = results.fermi_level
    nearest = np.sort(dense[np.argsort(np.abs(dense - fermi))[:NEV]])  # no tie: NEV is even
    assert len(results.eigenvalues) == NEV
    assert np.abs(results.eigenvalues - nearest).max() <= TOL_EIGENVALUE
    n_occupied = results.attrs["n_occupied"]
    assert abs(results.homo - dense[n_occupied - 1]) <= TOL_EIGENVALUE
    assert abs(results.lumo - dense[n_occupied]) <= TOL_EIGENVALUE
    assert abs(results.gap - (dense[n_occupied] - dense[n_occupied - 1])) <= 2 * TOL_EIGENVALUE


@pytest.mark.mpi
@pytest.mark.slow
def test_overlap_check_by_krylov_estimate_needs_no_factorisation(cli_run):
    run, results, _, s, _ = cli_run
    smallest = np.linalg.eigvalsh(0.5 * (s + s.T))[0]
    assert abs(results.attrs["overlap_smallest_eigenvalue"] - smallest) <= 1e-3 * smallest
    assert results.attrs["overlap_factorizations"] == 0
    assert "0 factorisation(s) of S" in run.stdout


@pytest.mark.mpi
@pytest.mark.slow
def test_eigenvectors_in_original_order(cli_run):
    _, results, h, s, _ = cli_run
    vectors = results.eigenvectors()  # [NEV, n_orbitals]
    residual = h @ vectors.T - (s @ vectors.T) * results.eigenvalues
    assert np.abs(residual).max() <= 1e-7
    assert np.abs(vectors @ s @ vectors.T - np.eye(NEV)).max() <= 1e-8


@pytest.mark.mpi
@pytest.mark.slow
def test_petsc_options_pass_through(cli_run):
    run, *_ = cli_run
    assert "tolerance: 1e-12" in run.stdout  # -eps_tol reached the solver after the code's defaults


# --------------------------------------------------------------------------- in-process (1 rank)


@pytest.mark.parametrize("n_occupied, gapped", [(3, True), (4, False), (6, True)])
def test_fermi_bisection_on_known_spectrum(n_occupied, gapped):
    """Levels with a double degeneracy at states 4-5: filling 4 has no gap."""
    from ehpc.infer.fermi import InertiaCounter, fermi_level, rayleigh_bounds

    levels = np.array([-5.0, -3.0, -1.0, 0.5, 0.5, 2.0, 4.0, 7.0])
    h, s = pencil(levels, scale=0.2)
    hamiltonian, overlap = petsc_dense(h), petsc_dense(s)
    counter = InertiaCounter(hamiltonian, overlap)
    result = fermi_level(counter, n_occupied, rayleigh_bounds(hamiltonian, overlap), tol=1e-9)
    assert result.gap_found == gapped
    if gapped:
        assert levels[n_occupied - 1] < result.sigma < levels[n_occupied]
    else:
        assert abs(result.sigma - levels[n_occupied - 1]) <= 1e-8
    counter.destroy()


def test_overlap_floor_against_numpy_smallest_eigenvalue():
    """Near the floor the exact count decides; far above it the Krylov estimate does."""
    from pyscf import gto

    from ehpc.infer.fermi import ESTIMATE_MARGIN, FermiError, InertiaCounter, check_overlap

    mol = gto.M(atom="He 0 0 0; He 0 0 0.55; He 0 0.6 0.3", basis="aug-cc-pvdz",
                unit="Angstrom", verbose=0)
    s = mol.intor("int1e_ovlp")
    smallest = np.linalg.eigvalsh(s)[0]
    counter = InertiaCounter(petsc_dense(np.diag(np.arange(len(s), dtype=float))), petsc_dense(s))
    try:
        near = check_overlap(counter, floor=0.5 * smallest)
        assert near.factorizations == 1
        far = check_overlap(counter, floor=0.5 * smallest / ESTIMATE_MARGIN)
        assert far.factorizations == 0
        for found in (near, far):
            assert abs(found.smallest - smallest) <= 1e-3 * smallest
        with pytest.raises(FermiError, match="near-singular"):
            check_overlap(counter, floor=2.0 * smallest)
    finally:
        counter.destroy()


@pytest.mark.parametrize("lattice, singular", [(1.8, True), (3.0, False)])
def test_pipeline_reports_near_singular_overlap(lattice, singular):
    """Dense fcc He with diffuse functions: Γ-point S has eigenvalues ~1e-11 at a = 1.8 Å."""
    from ase.build import bulk

    from ehpc.basis import Basis
    from ehpc.infer.fermi import FermiError
    from ehpc.integrals import IntegralModel
    from ehpc.infer.pipeline import InferenceOptions, run_inference

    atoms = bulk("He", "fcc", a=lattice) * (2, 1, 1)
    model = IntegralModel(Basis("aug-cc-pvdz"), "kinetic", cutoff=2.0)
    options = InferenceOptions(nev=1, overlap_tol=1e-6)
    if singular:
        with pytest.raises(FermiError, match="near-singular"):
            run_inference(atoms, model, options)
    else:
        assert run_inference(atoms, model, options).fermi.gap_found


def test_wider_window_on_one_factor_adds_only_the_next_nearest_states():
    """A second, wider solve on the same factor deflates the pairs already found and
    returns exactly the states nearest σ, degenerate levels included."""
    from ehpc.infer.solve import ShiftInvert

    levels = np.concatenate([np.linspace(-3.0, -0.4, 30), [-0.2, -0.2, -0.2, 0.3, 0.3],
                             np.linspace(0.5, 3.0, 25)])
    h, s = pencil(levels, seed=3)
    sigma = 0.01
    shifted = ShiftInvert(petsc_dense(h), petsc_dense(s), sigma, eigenvectors=True)
    try:
        by_distance = levels[np.argsort(np.abs(levels - sigma), kind="stable")]
        first, _, _, _ = shifted.solve(6)
        assert np.abs(first - np.sort(by_distance[:6])).max() <= TOL_EIGENVALUE
        assert len(shifted.found.values) == 6
        wider, residuals, vectors, _ = shifted.solve(17)
        assert len(shifted.found.values) == 17  # 11 more, not 17 again
        assert np.abs(wider - np.sort(by_distance[:17])).max() <= TOL_EIGENVALUE
        # Krylov-Schur converges the transformed operator to EIGEN_TOLERANCE = 1e-6
        assert residuals.max() <= 1e-6
        # S-orthonormal eigenvectors of H c = ε S c (a pair found twice would be O(1) off)
        assert np.abs(vectors @ s @ vectors.T - np.eye(17)).max() <= 1e-8
        assert np.abs(vectors @ h @ vectors.T - np.diag(wider)).max() <= 1e-7
        narrower, _, _, _ = shifted.solve(4)  # no new solve: the nearest of those found
        assert len(shifted.found.values) == 17
        assert np.abs(narrower - np.sort(by_distance[:4])).max() <= TOL_EIGENVALUE
    finally:
        shifted.destroy()
