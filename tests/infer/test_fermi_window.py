"""E_F, HOMO, LUMO by shift-and-invert windows placed by inertia, against dense ``eigh``.

Known spectra (H, S) = (L D Lᵀ, L Lᵀ) check the window logic in process; the assembled
H and S of real runs (an untrained model, exact S) check it end to end, in process and
under ``mpirun ehpc-infer`` at P = 1, 2, 3.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from .conftest import check, mpirun, pencil, petsc_dense, random_si_model, si_crystal, write_traj

TOL = 1e-8  # eV, eigenvalues against dense


def _factorisations() -> int:
    """Numerical Cholesky/LDLᵀ factorisations PETSc has logged so far."""
    from petsc4py import PETSc

    return int(PETSc.Log.Event("MatCholFctrNum").getPerfInfo()["count"])


def _near_fermi(h, s, n_occupied, nev, **kwargs):
    from petsc4py import PETSc

    from ehpc.infer.fermi import InertiaCounter
    from ehpc.infer.window import near_fermi

    PETSc.Log.begin()
    hamiltonian, overlap = petsc_dense(h), petsc_dense(s)
    counter = InertiaCounter(hamiltonian, overlap)
    before = _factorisations()
    fermi, states = near_fermi(hamiltonian, overlap, counter, n_occupied, nev, **kwargs)
    logged = _factorisations() - before
    counter.destroy()
    return fermi, states, logged


def _dense(h, s) -> np.ndarray:
    return scipy.linalg.eigh(h, s, eigvals_only=True)


def _gapped_levels() -> np.ndarray:
    """60 levels: a 'valence band' of 30 in [-6, -1] eV and a 'conduction band' above 1 eV."""
    rng = np.random.default_rng(3)
    return np.concatenate([np.sort(rng.uniform(-6, -1, 30)), np.sort(rng.uniform(1, 6, 30))])


@pytest.mark.parametrize("nev", [1, 2, 20, 60])
@pytest.mark.parametrize("sigma0", [None, -1.5, 40.0, -400.0])
def test_gapped_homo_lumo_for_any_nev_and_first_shift(nev, sigma0):
    h, s = pencil(_gapped_levels())
    dense = _dense(h, s)
    fermi, states, logged = _near_fermi(h, s, 30, nev, sigma0=sigma0)
    assert abs(fermi.homo - dense[29]) <= TOL and abs(fermi.lumo - dense[30]) <= TOL
    assert fermi.gap_found and abs(fermi.gap - (dense[30] - dense[29])) <= 2 * TOL
    assert abs(fermi.fermi_level - 0.5 * (dense[29] + dense[30])) <= TOL
    # the nev nearest E_F (HOMO and LUMO tie at mid-gap: compare distances, then membership)
    distance = np.sort(np.abs(dense - fermi.fermi_level))[:nev]
    assert np.abs(np.sort(np.abs(states.eigenvalues - fermi.fermi_level)) - distance).max() <= TOL
    assert np.abs(states.eigenvalues[:, None] - dense).min(axis=1).max() <= TOL
    assert len(states.eigenvalues) == nev and np.all(np.diff(states.eigenvalues) >= 0)
    assert fermi.factorizations == logged  # the recorded count is PETSc's own
    assert fermi.method == "window"


def test_first_shift_inside_the_valence_band_needs_two_factorisations():
    h, s = pencil(_gapped_levels())
    fermi, _, logged = _near_fermi(h, s, 30, 4, sigma0=-3.0)
    assert logged == fermi.factorizations <= 2


@pytest.mark.parametrize("n_occupied, filled", [(31, 1), (32, 2)])
@pytest.mark.parametrize("nev", [1, 5, 20])
def test_partly_filled_degenerate_level_has_no_gap(n_occupied, filled, nev):
    """A triply degenerate level at 0.5 eV holds states 31-33; 31 or 32 states are filled."""
    levels = _gapped_levels()
    levels[30:33] = 0.5
    h, s = pencil(np.sort(levels))
    dense = _dense(h, s)
    assert dense[n_occupied] - dense[n_occupied - 1] < 1e-9  # HOMO and LUMO share the level
    fermi, _, _ = _near_fermi(h, s, n_occupied, nev, sigma0=-400.0)
    assert not fermi.gap_found and fermi.gap == 0.0
    assert fermi.homo == fermi.lumo == fermi.fermi_level
    assert abs(fermi.fermi_level - 0.5) <= TOL
    assert (fermi.level_states, fermi.level_filled) == (3, filled)


def test_filled_degenerate_level_is_gapped_above_it():
    levels = _gapped_levels()
    levels[27:30] = -0.9  # the top of the valence band triply degenerate and full
    h, s = pencil(np.sort(levels))
    dense = _dense(h, s)
    fermi, _, _ = _near_fermi(h, s, 30, 3)
    assert fermi.gap_found
    assert abs(fermi.homo - dense[29]) <= TOL and abs(fermi.lumo - dense[30]) <= TOL


def test_bisection_method_agrees_and_counts_its_factorisations():
    h, s = pencil(_gapped_levels())
    dense = _dense(h, s)
    fermi, _, logged = _near_fermi(h, s, 30, 1, method="bisection")
    assert fermi.method == "bisection" and fermi.factorizations == logged > 2
    assert abs(fermi.homo - dense[29]) <= TOL and abs(fermi.lumo - dense[30]) <= TOL


def test_fallback_to_bisection_after_too_many_shifts(monkeypatch):
    from ehpc.infer import window

    monkeypatch.setattr(window, "MAX_SHIFTS", 1)
    h, s = pencil(_gapped_levels())
    dense = _dense(h, s)
    fermi, _, logged = _near_fermi(h, s, 30, 2, sigma0=-400.0)
    assert fermi.method == "window+bisection" and fermi.factorizations == logged
    assert abs(fermi.homo - dense[29]) <= TOL and abs(fermi.lumo - dense[30]) <= TOL


# --------------------------------------------------------------------- real H and S, one rank


def _run(atoms, nev: int, **options):
    import torch
    from petsc4py import PETSc

    from ehpc.infer.assemble import gather_on_root
    from ehpc.infer.pipeline import InferenceOptions, run_inference

    model_offset = options.pop("model_offset", None)
    model = random_si_model(cutoff=3.0, n_layers=1)
    if model_offset is not None:  # as if set_statistics had met it in training structures
        model.fermi_offset.fill_(model_offset)
    opts = InferenceOptions(nev=nev, dtype=torch.float64, device="cpu", **options)
    result = run_inference(atoms, model, opts)
    comm = PETSc.COMM_WORLD
    h = gather_on_root(result.hamiltonian, result.partition, comm).toarray()
    s = gather_on_root(result.overlap, result.partition, comm).toarray()
    return result, _dense(0.5 * (h + h.T), 0.5 * (s + s.T))


def _lone_si(periodic: bool):
    from ase import Atoms

    if periodic:  # simple cubic: the p level stays threefold at Γ
        return Atoms("Si", positions=[[0, 0, 0]], cell=np.eye(3) * 3.2, pbc=True)
    return Atoms("Si", positions=[[0, 0, 0]], pbc=False)


@pytest.mark.parametrize("periodic", [True, False], ids=["crystal", "atom"])
@pytest.mark.parametrize("nev", [1, 4])
def test_single_si_partly_filled_p_level(periodic, nev):
    """s² p²: 2 states filled of 4; the untrained model may put s below or above the p level."""
    result, dense = _run(_lone_si(periodic), nev)
    fermi = result.fermi
    assert result.n_occupied == 2 and dense[2] - dense[1] < 1e-9  # dense: HOMO = LUMO
    assert not fermi.gap_found and fermi.gap == 0.0
    assert abs(fermi.homo - dense[1]) <= TOL and fermi.lumo == fermi.homo
    assert abs(result.fermi_level - dense[1]) <= TOL and np.isfinite(fermi.lumo)
    assert (fermi.level_states, fermi.level_filled) == (3, _filled(dense, 2))


def _filled(dense: np.ndarray, n_occupied: int) -> int:
    """Occupied members of the (dense) level that holds state n_occupied."""
    level = np.abs(dense - dense[n_occupied - 1]) < 1e-9
    return int(np.count_nonzero(level[:n_occupied]))


def test_crystal_far_first_shift_and_two_factorisations_by_default():
    atoms = si_crystal((2, 2, 2))
    result, dense = _run(atoms, 20)
    n = result.n_occupied
    assert abs(result.fermi.homo - dense[n - 1]) <= TOL
    assert abs(result.fermi.lumo - dense[n]) <= TOL
    assert result.fermi.factorizations <= 2
    far, _ = _run(atoms, 3, fermi_guess=-50.0)  # wrong sign, below the whole spectrum
    assert abs(far.fermi.homo - dense[n - 1]) <= TOL and abs(far.fermi.lumo - dense[n]) <= TOL


def test_model_fermi_offset_starts_in_the_gap_and_needs_one_factorisation():
    """The search starts at the on-site estimate moved by the model's E_F offset: right, one
    factorisation settles E_F, HOMO and LUMO; 8 eV off, more (dense eigh is the truth)."""
    from ehpc.nn.model import onsite_fermi_estimate

    atoms = si_crystal((2, 2, 2))
    plain, dense = _run(atoms, 20)
    n = plain.n_occupied
    h, s = (plain.hamiltonian, plain.overlap)
    from petsc4py import PETSc

    from ehpc.infer.assemble import gather_on_root
    comm = PETSc.COMM_WORLD
    h = gather_on_root(h, plain.partition, comm).toarray()
    s = gather_on_root(s, plain.partition, comm).toarray()
    start = onsite_fermi_estimate(np.diag(h), np.diag(s), n)
    midgap = 0.5 * (dense[n - 1] + dense[n])
    informed, _ = _run(atoms, 20, model_offset=midgap - start)
    assert informed.fermi.factorizations == 1
    assert informed.fermi.shifts[0] == pytest.approx(midgap, abs=1e-9)
    misled, _ = _run(atoms, 20, model_offset=midgap - start - 8.0)  # 8 eV too low
    assert misled.fermi.shifts[0] == pytest.approx(midgap - 8.0, abs=1e-9)
    assert misled.fermi.factorizations >= 2
    for run in (informed, misled):
        assert abs(run.fermi.homo - dense[n - 1]) <= TOL
        assert abs(run.fermi.lumo - dense[n]) <= TOL


def test_record_fermi_offset_of_a_hand_made_atom():
    # one atom, on-site H = diag(-5, 1, 1, 1), S = 1: with 4 electrons (2 states) the
    # on-site estimate is the midpoint of the 2nd and 3rd quotient, 1 eV; E_F 0.5 eV
    from ehpc.io.dataset import HamiltonianRecord
    from ehpc.nn.model import record_fermi_offset

    record = HamiltonianRecord(
        "atom", np.array([14]), np.zeros((1, 3)), np.eye(3) * 10, np.array([True] * 3),
        np.zeros((1, 5), np.int64), np.array([0, 16]),
        hamiltonian=np.diag([-5.0, 1.0, 1.0, 1.0]).ravel(), overlap=np.eye(4).ravel(),
        attrs={"fermi_level": 0.5, "n_electrons": 4})
    assert record_fermi_offset(record, np.array([4])) == pytest.approx(-0.5, abs=1e-12)
    del record.attrs["fermi_level"]
    assert record_fermi_offset(record, np.array([4])) is None


def test_nev_above_orbital_count_refused_before_heavy_work():
    from ehpc.infer.solve import SolveError

    with pytest.raises(SolveError, match="--nev 5: .* 4 orbitals"):
        _run(_lone_si(True), 5)


def test_structure_hash_sees_one_ulp():
    from ehpc.infer.pipeline import structure_hash

    atoms = si_crystal((1, 1, 1))
    moved = atoms.copy()
    moved.positions[3, 1] = np.nextafter(moved.positions[3, 1], np.inf)
    assert structure_hash(atoms) != structure_hash(moved)
    assert structure_hash(atoms) == structure_hash(atoms.copy())
    assert structure_hash(atoms, charge=2) != structure_hash(atoms)


# ------------------------------------------------------------------------------ command line


@pytest.mark.parametrize("option, value", [
    ("--fermi-tol", "-1"), ("--overlap-floor", "-1"), ("--overlap-tol", "-1"),
    ("--fermi-tol", "nan"), ("--overlap-floor", "2"), ("--nev", "0"), ("--chunk-atoms", "-3"),
    ("--rattle", "-0.1"), ("--fermi-guess", "inf"),
])
def test_numeric_options_refused_with_one_line(option, value, tmp_path, capsys):
    from ehpc.cli.infer import main

    status = main(["--model", str(tmp_path / "absent.pt"), "--supercell",
                   "Si:diamond:5.43:1x1x1", option, value, "--out", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and option in err[0], err


@pytest.fixture(scope="module")
def crystal_runs(tmp_path_factory):
    """``mpirun -n P ehpc-infer`` at default nev on 64 Si atoms for P = 1, 2, 3."""
    from ehpc.io.results import read_results

    folder = tmp_path_factory.mktemp("window")
    model = random_si_model(cutoff=3.0, n_layers=1).save(folder / "model.pt")
    structure = write_traj(si_crystal((2, 2, 2), seed=7), folder / "si64.traj")
    runs = {}
    for ranks in (1, 2, 3):
        out = folder / f"p{ranks}.h5"
        run = check(mpirun(ranks, "ehpc-infer", "--model", model, "--structure", structure,
                           "--out", out, "-eps_tol", "1e-12"))
        runs[ranks] = run, read_results(out)
    return runs


@pytest.mark.mpi
@pytest.mark.slow
def test_cli_window_path_matches_dense_at_every_rank_count(crystal_runs):
    _, first = crystal_runs[1]
    h, s = first.hamiltonian().toarray(), first.overlap().toarray()
    dense = _dense(0.5 * (h + h.T), 0.5 * (s + s.T))
    n = first.attrs["n_occupied"]
    for ranks, (run, res) in crystal_runs.items():
        assert res.fermi_method == "window" and res.gap_found
        assert res.factorizations <= 2, ranks
        assert abs(res.homo - dense[n - 1]) <= TOL and abs(res.lumo - dense[n]) <= TOL, ranks
        assert abs(res.gap - (dense[n] - dense[n - 1])) <= 2 * TOL
        assert abs(res.fermi_level - first.fermi_level) <= TOL
        assert len(res.eigenvalues) == 20
        assert "E_F path: window" in run.stdout and "gap_found=True" in run.stdout
        assert "fermi: factorising H - σS" in run.stdout  # says what it is waiting on


@pytest.mark.mpi
def test_ranks_reading_different_structures_stop_before_heavy_work(si_model_path, tmp_path):
    """MPMD: rank 1 builds a rattled cell, rank 0 the plain one."""
    import os
    import shutil
    import subprocess

    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not found")
    common = ["ehpc-infer", "--model", str(si_model_path), "--supercell",
              "Si:diamond:5.43:1x1x1", "--out", str(tmp_path / "never.h5")]
    cmd = ["mpirun", "--oversubscribe", "-n", "1", *common, ":", "-n", "1", *common,
           "--rattle", "0.01"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode != 0
    lines = [x for x in run.stderr.splitlines() if "ehpc-infer" in x]
    assert len(lines) == 1 and "rank(s) 1 read a different structure" in lines[0], run.stderr
    assert "predict" not in run.stdout
    assert not (tmp_path / "never.h5").exists()


@pytest.mark.mpi
def test_cli_lone_atom_shows_partly_filled_level(si_model_path, tmp_path):
    """A non-periodic Si atom, nev 1: HOMO = LUMO (no NaN), gap 0, occupancy printed."""
    from ehpc.io.results import read_results

    structure = write_traj(_lone_si(periodic=False), tmp_path / "si1.traj")
    out = tmp_path / "si1.h5"
    run = check(mpirun(1, "ehpc-infer", "--model", si_model_path, "--structure", structure,
                       "--nev", 1, "--out", out))
    res = read_results(out)
    dense = _dense(res.hamiltonian().toarray(), res.overlap().toarray())
    assert abs(res.homo - dense[1]) <= TOL and res.lumo == res.homo and res.gap == 0.0
    assert abs(res.fermi_level - dense[1]) <= TOL
    filled = _filled(dense, 2)
    assert not res.gap_found and res.occupancy == (filled, 3)
    assert f"gap = 0: a degenerate level of 3 states holds {filled} of them filled " \
        "(gap_found=False)" in run.stdout


@pytest.mark.mpi
def test_cli_nev_above_orbital_count_one_line_before_predict(si_model_path, tmp_path):
    run = mpirun(2, "ehpc-infer", "--model", si_model_path, "--supercell",
                 "Si:diamond:5.43:1x1x1", "--nev", 33, "--out", tmp_path / "never.h5")
    lines = [x for x in run.stderr.splitlines() if x.startswith("ehpc-infer")]
    assert run.returncode != 0 and len(lines) == 1, run.stderr
    assert "--nev 33" in lines[0] and "32 orbitals" in lines[0]
    assert "predict" not in run.stdout and not (tmp_path / "never.h5").exists()
