"""Stored H(R), S(R) of silicon rebuild PySCF's own bands at k-points off the SCF mesh.

Reference: ``mf.get_bands(k)``, which builds the Fock matrix of the converged density
directly at k (no real-space blocks, no cutoff, no Fourier transform back).
"""

import itertools

import numpy as np
import pytest
from ase.build import bulk

from ehpc.analysis.bands import band_energies, bloch_matrix
from ehpc.basis import Basis
from ehpc.dft import label_structure
from ehpc.dft.local_potential import local_potential_g, matrices_at_kpts
from ehpc.dft.periodic import (band_kmesh, build_cell, crystal_record, half_mesh,
                               pseudopotential_at_kpts, run_krks)
from ehpc.io.dataset import HamiltonianRecord, block_offsets
from ehpc.structure import StructureError
from ehpc.units import EV_TO_MEV, HARTREE_TO_EV

BASIS = Basis("gth-szv")
XC = "pbe"
SCF_KMESH = (2, 2, 2)
#: pair radius (Å) that brings the rebuilt Si gth-szv bands within 1 meV of PySCF's
CUTOFF = 13.0
TOL_MEV = 1.0
WINDOW_EV = 2.0  # bands this close to the Fermi level are compared
#: fractional k-points, none on the 2x2x2 SCF mesh: near Γ (valence maximum), near X
#: (conduction minimum), a 4x4x4-mesh point, a third, and random points
KPTS = np.vstack([
    [[0.05, 0.02, 0.0], [0.1, 0.0, 0.1], [0.42, 0.0, 0.42], [0.45, 0.05, 0.45],
     [0.25, 0.0, 0.25], [1 / 3, 1 / 3, 0.0]],
    np.random.default_rng(7).random((4, 3)),
])


@pytest.fixture(scope="module")
def silicon():
    return bulk("Si", "diamond", a=5.43)


@pytest.fixture(scope="module")
def scf(silicon):
    pcell = build_cell(silicon, BASIS, "si2")
    return pcell, run_krks(pcell, XC, SCF_KMESH, "si2", conv_tol=1e-10)


@pytest.fixture(scope="module")
def record(silicon, scf):
    pcell, mf = scf
    return crystal_record(silicon, BASIS, mf, pcell, CUTOFF, "si2", XC, SCF_KMESH)


@pytest.fixture(scope="module")
def reference(scf):
    """PySCF's bands (eV) at KPTS."""
    pcell, mf = scf
    energies, _ = mf.get_bands(pcell.cell.get_abs_kpts(KPTS))
    return np.array(energies) * HARTREE_TO_EV  # [n_k, nao]


def band_errors_mev(record, reference) -> np.ndarray:
    """|ε_ours - ε_PySCF| in meV for the bands within WINDOW_EV of the Fermi level."""
    near = np.abs(reference - record.attrs["fermi_level"]) < WINDOW_EV  # [n_k, nao]
    assert near.sum() >= len(KPTS), "too few bands near the Fermi level to test anything"
    return np.abs(band_energies(record, BASIS, KPTS) - reference)[near] * EV_TO_MEV


def within(record: HamiltonianRecord, cutoff: float) -> HamiltonianRecord:
    """The same record keeping only the pairs closer than ``cutoff`` Å."""
    nao = BASIS.nao_per_atom(record.numbers)
    pairs = record.atom_pairs
    vectors = record.positions[pairs[:, 4]] + pairs[:, :3] @ record.cell - record.positions[pairs[:, 3]]
    keep = np.flatnonzero(np.linalg.norm(vectors, axis=1) < cutoff)

    def subset(flat):
        return np.concatenate([flat[record.block_offsets[p] : record.block_offsets[p + 1]] for p in keep])

    return HamiltonianRecord(
        record.name, record.numbers, record.positions, record.cell, record.pbc, pairs[keep],
        block_offsets(pairs[keep], nao), subset(record.hamiltonian), subset(record.overlap), record.attrs,
    )


def test_kpoints_are_off_the_scf_mesh():
    on_mesh = np.all(np.isclose((KPTS * np.array(SCF_KMESH)) % 1.0, 0.0) |
                     np.isclose((KPTS * np.array(SCF_KMESH)) % 1.0, 1.0), axis=1)
    assert not on_mesh.any()


@pytest.mark.slow
def test_bands_match_pyscf_off_the_scf_mesh(record, reference):
    record.check(BASIS)
    assert band_errors_mev(record, reference).max() < TOL_MEV


@pytest.mark.slow
def test_scf_mesh_transform_aliases(silicon, scf, reference):
    """Transforming back from the SCF's own 2x2x2 mesh folds far blocks in: bands go wrong."""
    pcell, mf = scf
    aliased = crystal_record(silicon, BASIS, mf, pcell, CUTOFF, "si2_aliased", XC, SCF_KMESH,
                             band_mesh=SCF_KMESH)
    assert band_errors_mev(aliased, reference).max() > 10 * TOL_MEV


@pytest.mark.slow
def test_shorter_cutoff_misses_the_tolerance(record, reference):
    assert band_errors_mev(within(record, 9.0), reference).max() > 5 * TOL_MEV


@pytest.mark.slow
def test_blocks_are_hermitian_across_directions(record):
    nao = BASIS.nao_per_atom(record.numbers)
    index = {tuple(int(x) for x in row): p for p, row in enumerate(record.atom_pairs)}
    for p, (rx, ry, rz, i, j) in enumerate(record.atom_pairs):
        q = index[(-rx, -ry, -rz, j, i)]
        np.testing.assert_allclose(record.block(p, nao), record.block(q, nao).T, atol=1e-9)
        np.testing.assert_allclose(record.block(p, nao, "overlap"), record.block(q, nao, "overlap").T, atol=1e-12)


@pytest.mark.slow
def test_overlap_matches_pyscf_lattice_sum(record, scf):
    pcell, _ = scf
    expected = pcell.cell.pbc_intor("int1e_ovlp", hermi=1, kpts=pcell.cell.get_abs_kpts(KPTS))
    for k, s_k in zip(KPTS, expected):
        np.testing.assert_allclose(bloch_matrix(record, BASIS, k, "overlap"), s_k, atol=1e-5)


@pytest.mark.slow
def test_attributes(record):
    assert record.attrs["n_electrons"] == 8
    assert record.attrs["lumo"] > record.attrs["homo"]
    assert np.array_equal(record.attrs["kmesh"], SCF_KMESH)
    supercell = record.attrs["band_kmesh"][:, None] * record.cell
    assert _shortest(supercell) > 2 * CUTOFF


@pytest.mark.parametrize("reach", [7.0, 17.3, 25.0])
@pytest.mark.parametrize("lattice", ["fcc", "triclinic"])
def test_band_kmesh_supercell_is_long_enough(lattice, reach):
    cell = bulk("Si", "diamond", a=5.43).cell[:] if lattice == "fcc" else np.array(
        [[4.0, 0.0, 0.0], [3.1, 2.5, 0.0], [1.2, -0.7, 3.3]])
    mesh = np.array(band_kmesh(cell, reach))
    assert _shortest(mesh[:, None] * cell) >= reach
    # never more k-points than the plain rule "N_a * plane spacing >= reach"
    heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    assert np.prod(mesh) <= np.prod(np.ceil(reach / heights))


@pytest.mark.parametrize("mesh", [(1, 1, 1), (2, 3, 4), (5, 5, 5)])
def test_half_mesh_covers_the_mesh(mesh):
    kpts, weights = half_mesh(mesh)
    assert weights.sum() == np.prod(mesh)
    full = {tuple(np.round(k * mesh).astype(int) % mesh) for k in kpts} | \
           {tuple(np.round(-k * mesh).astype(int) % mesh) for k in kpts}
    assert full == set(itertools.product(*[range(n) for n in mesh]))


def test_partly_periodic_structure_is_refused(silicon):
    slab = silicon.copy()
    slab.pbc = (True, True, False)
    with pytest.raises(StructureError, match="si_slab"):
        label_structure(slab, BASIS, XC, 4.0, "si_slab")


def _shortest(lattice: np.ndarray, span: int = 4) -> float:
    """Brute-force shortest nonzero lattice vector (coefficients up to ``span``)."""
    coefficients = np.array([c for c in itertools.product(range(-span, span + 1), repeat=3) if any(c)])
    return float(np.linalg.norm(coefficients @ lattice, axis=1).min())


def test_band_kmesh_when_first_guess_suffices():
    """A mesh whose supercell planes are all farther apart than ``reach`` needs no search."""
    from ehpc.dft.periodic import band_kmesh

    lattice = np.eye(3) * 5.43
    mesh = band_kmesh(lattice, 19.25)
    assert mesh == (4, 4, 4)  # 4 * 5.43 = 21.7 Å > 19.25 Å, while 3 * 5.43 = 16.3 Å is not


def test_reference_bands_of_a_left_handed_cell_match_get_bands(silicon, reference):
    """dft_bands on the same crystal with two lattice vectors swapped (a left-handed cell,
    k-point components swapped to match) reproduces PySCF's bands of the original cell."""
    from ehpc.analysis.dft_bands import dft_bands

    swapped = silicon.copy()
    swapped.set_cell(silicon.cell[[1, 0, 2]])  # same lattice and positions, det < 0
    assert np.linalg.det(swapped.cell[:]) < 0
    bands = dft_bands(swapped, BASIS, XC, SCF_KMESH, KPTS[:, [1, 0, 2]], conv_tol=1e-10)
    np.testing.assert_allclose(bands.energies, reference, atol=1e-5)
    assert bands.homo < bands.fermi_level < bands.lumo
    assert bands.n_electrons == 8


def test_pseudopotential_matches_pyscf_analytic_route():
    """Multigrid V_PP(k) equals PySCF's GDF ``get_pp`` at general k (complex blocks)."""
    from pyscf.pbc import df

    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=4)
    cell = build_cell(atoms, BASIS, "si8").cell
    kpts = cell.get_abs_kpts(np.vstack([np.zeros(3), KPTS[:3]]))
    ours = pseudopotential_at_kpts(cell, kpts)  # [n_k, nao, nao]
    reference = np.asarray(df.GDF(cell).get_pp(kpts))  # [n_k, nao, nao]
    assert np.abs(reference).max() > 0.1
    assert np.abs(ours - reference).max() < 1e-7


@pytest.mark.parametrize("atoms_per_call", [3, 1])
def test_pseudopotential_in_batches_of_k_points_and_atoms(monkeypatch, atoms_per_call):
    """A large cell's V_PP(k) goes one k-point and a few atoms (the others ghosts) per
    PySCF call; the pieces add up to the all-at-once matrices, with every atom counted
    once (an uneven last batch included) and the basis order kept."""
    from ehpc.dft import periodic

    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=4)
    cell = build_cell(atoms, BASIS, "si8").cell
    # the band-mesh points of a label (half-integer k): PySCF's k-point builder is quick there
    kpts = cell.get_abs_kpts(np.array([[0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.5]]))
    whole = pseudopotential_at_kpts(cell, kpts)  # [n_k, nao, nao]
    assert np.abs(whole[1:] - whole[0]).max(axis=(1, 2)).min() > 1e-2  # each k its own
    per_atom_and_k = 16 * cell.nao * (cell.nao + 1) // 2
    monkeypatch.setattr(periodic, "PP_BUFFER_BYTES", atoms_per_call * per_atom_and_k)
    assert np.abs(pseudopotential_at_kpts(cell, kpts) - whole).max() < 1e-7


# --- the truncation floor each crystal label records -------------------------------------

SHORT_CUTOFF = 6.0  # Å: far too short for gth-szv (floor of order eV)


@pytest.fixture(scope="module")
def short_record(silicon, scf):
    pcell, mf = scf
    return crystal_record(silicon, BASIS, mf, pcell, SHORT_CUTOFF, "si2", XC, SCF_KMESH)


@pytest.mark.parametrize("which", ["short", "long"])
def test_recorded_floor_equals_cut_bands_against_get_bands(which, short_record, record, scf,
                                                           silicon):
    """The floor in the record is what one gets by hand: bands of the kept H blocks with the
    exact overlap, against PySCF's own get_bands at the same k-points."""
    from ehpc.analysis.bands import bands_with_exact_overlap

    rec = short_record if which == "short" else record
    pcell, mf = scf
    truth, _ = mf.get_bands(pcell.cell.get_abs_kpts(rec.reference_kpts))
    truth = np.array(truth) * HARTREE_TO_EV  # [n_k, nao]
    np.testing.assert_allclose(rec.reference_bands, truth, atol=1e-6)
    cut = bands_with_exact_overlap(rec.atom_pairs, rec.hamiltonian, silicon, BASIS,
                                   rec.reference_kpts)
    inside = np.abs(truth - rec.attrs["fermi_level"]) <= WINDOW_EV
    errors = np.abs(cut - truth)[inside] * EV_TO_MEV
    assert rec.attrs["floor_mae_meV"] == pytest.approx(errors.mean(), rel=1e-4, abs=1e-4)
    assert rec.attrs["floor_max_meV"] == pytest.approx(errors.max(), rel=1e-4, abs=1e-4)
    n_occ = rec.attrs["n_electrons"] // 2
    gap_shift = ((cut[:, n_occ].min() - cut[:, n_occ - 1].max())
                 - (truth[:, n_occ].min() - truth[:, n_occ - 1].max())) * EV_TO_MEV
    assert rec.attrs["floor_gap_shift_meV"] == pytest.approx(gap_shift, abs=1e-3)
    assert rec.attrs["floor_n_kpts"] == len(rec.reference_kpts) > 1


def test_floor_separates_short_and_converged_cutoffs(short_record, record):
    """gth-szv cut at 6 Å misses the bands by eV; at 13 Å by under TOL_MEV."""
    assert short_record.attrs["floor_max_meV"] > 500.0
    assert record.attrs["floor_max_meV"] < TOL_MEV
    assert 0.0 < short_record.attrs["overlap_min_eig"] < 1.0


def test_large_floor_is_refused_naming_the_cutoff_it_needs(silicon, scf):
    from ehpc.dft import TruncationFloorError

    pcell, mf = scf
    with pytest.raises(TruncationFloorError) as info:
        crystal_record(silicon, BASIS, mf, pcell, SHORT_CUTOFF, "si2", XC, SCF_KMESH,
                       floor_tol=10.0)
    message = str(info.value)
    assert "\n" not in message and message.startswith("si2: blocks cut at 6 Å")
    needed = float(message.split("use cutoff ")[1].split(" Å")[0])
    assert 9.0 <= needed <= 13.0  # gth-szv needs ~11 Å for a 10 meV floor


def test_evaluation_separates_floor_model_and_total(short_record):
    """A "model" that returns DFT's own cut blocks: no model error, and the total error is
    the floor recorded at labelling time (two routes to the exact S: PySCF's lattice sum
    there, ehpc's integral model here)."""
    from ehpc.analysis.evaluate import score_against_truth, summarise_truth

    scores = score_against_truth(short_record, short_record.hamiltonian, BASIS)
    assert scores.model[0] == 0.0 and scores.model[1] == 0.0
    assert scores.total[:2] == pytest.approx(scores.floor[:2])
    assert scores.floor[0] == pytest.approx(short_record.attrs["floor_mae_meV"], rel=1e-3)
    assert scores.floor[1] == pytest.approx(short_record.attrs["floor_max_meV"], rel=1e-3)
    # a model 0.1 eV off on every on-site diagonal entry is scored as a model error
    nao = BASIS.nao_per_atom(short_record.numbers)
    shifted = short_record.hamiltonian.copy()
    for p, (rx, ry, rz, i, j) in enumerate(short_record.atom_pairs):
        if (rx, ry, rz) == (0, 0, 0) and i == j:
            block = shifted[short_record.block_offsets[p]:short_record.block_offsets[p + 1]]
            block.reshape(nao[i], nao[j])[np.diag_indices(nao[i])] += 0.1
    worse = score_against_truth(short_record, shifted, BASIS)
    assert worse.model[0] > 10.0 and worse.floor == scores.floor
    summary = summarise_truth([scores, worse])
    assert summary["n_crystals"] == 2
    assert summary["model"]["max_meV"] == pytest.approx(worse.model[1])
    # raising the on-site diagonal by 0.1 eV raises a level by 0.1 eV · cᵀc / cᵀSc: both
    # frontier levels go up, by different amounts
    homo, lumo = worse.model[2], worse.model[3]
    assert 30.0 < homo < 1000.0 and 30.0 < lumo < 1000.0 and abs(lumo - homo) > 1.0
    assert summary["model"]["homo_abs_error_meV"] == pytest.approx(homo / 2)  # mean with 0
    assert summary["model"]["lumo_abs_error_meV"] == pytest.approx(lumo / 2)
    assert summary["model"]["gap_abs_error_meV"] == pytest.approx(abs(lumo - homo) / 2)


def test_local_potential_in_slices_equals_pyscfs_integral(scf, monkeypatch):
    """The memory-bounded multigrid integral (bra shells in slices, all k-points per
    collocation) gives the matrices of PySCF's own single call."""
    from pyscf.pbc.dft.multigrid import multigrid

    pcell, mf = scf
    cell = pcell.cell
    kpts = cell.get_abs_kpts(KPTS[:3])
    potential = local_potential_g(mf)
    reference = multigrid._get_j_pass2(multigrid.MultiGridNumInt(cell), potential, 1, kpts)[0]
    calls = []
    whole_eval_mat = multigrid.eval_mat
    monkeypatch.setattr(multigrid, "eval_mat",
                        lambda *a, **k: calls.append(1) or whole_eval_mat(*a, **k))
    default = matrices_at_kpts(cell, potential, kpts)
    n_default = len(calls)
    sliced = matrices_at_kpts(cell, potential, kpts, max_bytes=2**18)
    assert len(calls) - n_default > 3 * n_default  # it did slice
    assert np.abs(reference).max() > 0.1
    for ours in (default, sliced):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
