"""Molecular labels against an independent PySCF run: orbital energies, pairs, failures."""

import itertools

import numpy as np
import pytest
import scipy.linalg
from ase.build import molecule
from pyscf import dft, gto

from ehpc.basis import Basis
from ehpc.dft import SCFNotConverged, label_structure
from ehpc.dft.blocks import pair_list
from ehpc.units import HARTREE_TO_EV

BASIS = Basis("def2-svp")
XC = "pbe"
CUTOFF = 5.0  # Å, longer than every distance in water: the blocks rebuild the full matrices
CONV_TOL = 1e-10


@pytest.fixture(scope="module")
def water():
    return molecule("H2O")


@pytest.fixture(scope="module")
def record(water):
    return label_structure(water, BASIS, XC, CUTOFF, "water", conv_tol=CONV_TOL)


@pytest.fixture(scope="module")
def reference(water):
    """PySCF on its own, without any ehpc code."""
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(water.get_chemical_symbols(), water.positions)],
                basis="def2-svp", unit="Angstrom", verbose=0)
    mf = dft.RKS(mol, xc=XC)
    mf.conv_tol = CONV_TOL
    mf.kernel()
    assert mf.converged
    return mf


def dense(record, which: str) -> np.ndarray:
    """Scatter the stored blocks back into one matrix (a molecule has only R = 0)."""
    nao = BASIS.nao_per_atom(record.numbers)
    starts = np.concatenate([[0], np.cumsum(nao)])
    out = np.full((starts[-1], starts[-1]), np.nan)
    for p, (rx, ry, rz, i, j) in enumerate(record.atom_pairs):
        assert (rx, ry, rz) == (0, 0, 0)
        out[starts[i] : starts[i + 1], starts[j] : starts[j + 1]] = record.block(p, nao, which)
    return out


def brute_force_pairs(positions: np.ndarray, cutoff: float) -> set:
    n = len(positions)
    return {(0, 0, 0, i, j) for i, j in itertools.product(range(n), range(n))
            if i == j or np.linalg.norm(positions[j] - positions[i]) < cutoff}


def test_record_is_well_formed(record):
    record.check(BASIS)
    assert record.attrs["converged"] is True
    assert record.attrs["n_electrons"] == 10
    assert record.attrs["xc"] == XC and record.attrs["source"] == "water"
    assert record.attrs["scf_cycles"] > 0 and record.attrs["wall_time_s"] > 0


def test_blocks_reproduce_pyscf_orbital_energies(record, reference):
    h, s = dense(record, "hamiltonian"), dense(record, "overlap")
    assert not np.isnan(h).any(), "some orbital pair is missing from the blocks"
    assert np.allclose(s, reference.mol.intor("int1e_ovlp"), atol=1e-12)
    energies = scipy.linalg.eigh(h, s, eigvals_only=True)  # eV
    expected = np.asarray(reference.mo_energy) * HARTREE_TO_EV
    np.testing.assert_allclose(energies, expected, atol=1e-4)  # eV, SCF-tolerance limited


def test_scalars_match_pyscf(record, reference):
    occupied = reference.mo_occ > 0
    homo = reference.mo_energy[occupied].max() * HARTREE_TO_EV
    lumo = reference.mo_energy[~occupied].min() * HARTREE_TO_EV
    assert record.attrs["homo"] == pytest.approx(homo, abs=1e-4)
    assert record.attrs["lumo"] == pytest.approx(lumo, abs=1e-4)
    assert record.attrs["fermi_level"] == pytest.approx(0.5 * (homo + lumo), abs=1e-4)
    assert record.attrs["energy"] == pytest.approx(reference.e_tot * HARTREE_TO_EV, abs=1e-6)


def test_record_pairs_are_all_pairs_within_cutoff(record, water):
    assert {tuple(int(x) for x in row) for row in record.atom_pairs} == brute_force_pairs(water.positions, CUTOFF)
    assert len(record.atom_pairs) == len(set(map(tuple, record.atom_pairs)))


@pytest.mark.parametrize("cutoff", [1.2, 2.0, 2.6])
def test_pair_list_matches_brute_force(cutoff):
    ethanol = molecule("CH3CH2OH")
    pairs = pair_list(ethanol, cutoff)
    assert {tuple(int(x) for x in row) for row in pairs} == brute_force_pairs(ethanol.positions, cutoff)
    assert len(pairs) == len(set(map(tuple, pairs)))


def test_unconverged_scf_is_reported_by_name(water):
    with pytest.raises(SCFNotConverged) as info:
        label_structure(water, BASIS, XC, CUTOFF, "water_stubborn", conv_tol=1e-12, max_cycle=1)
    assert info.value.name == "water_stubborn"
    message = str(info.value)
    assert message.startswith("water_stubborn:") and "\n" not in message
