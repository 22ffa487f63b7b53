"""Exact overlap blocks from the per-rank path against PySCF's dense integrals."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule

from ehpc.basis import Basis
from ehpc.infer.halo import build_halo, cluster_pairs
from ehpc.infer.overlap import cluster_overlap
from ehpc.integrals import IntegralModel, integral_ranges
from ehpc.infer.partition import partition
from ehpc.io.layout import gamma_matrix
from ehpc.units import HARTREE_TO_EV

TOL = 1e-10
RANGE_TOL = 1e-12


def _distributed_overlap(atoms, basis: Basis, n_ranks: int) -> np.ndarray:
    """Γ-point S assembled from every rank's cluster blocks, as the pipeline computes them."""
    ranges = integral_ranges("overlap", basis, atoms.numbers, RANGE_TOL)
    nao = basis.nao_per_atom(atoms.numbers)
    part = partition(atoms.positions, nao, n_ranks)
    all_pairs, all_flat = [], []
    for rank in range(n_ranks):
        halo = build_halo(atoms.positions, atoms.numbers, atoms.cell[:], atoms.pbc,
                          part.owned(rank), max(ranges.values()))
        pairs, _ = cluster_pairs(halo, atoms.positions, atoms.cell[:], ranges)
        all_flat.append(cluster_overlap(basis, halo, pairs, group_atoms=3))
        all_pairs.append(np.column_stack([halo.shifts[pairs[:, 1]], halo.atom_ids[pairs[:, 0]],
                                          halo.atom_ids[pairs[:, 1]]]))
    return gamma_matrix(np.concatenate(all_pairs), np.concatenate(all_flat), nao).toarray()


def _mole(atoms, basis: str):
    from pyscf import gto

    spec = [[s, p] for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    spin = int(atoms.numbers.sum()) % 2
    return gto.M(atom=spec, basis=basis, unit="Angstrom", spin=spin, verbose=0)


def _cell(atoms, basis: str):
    from pyscf.pbc import gto as pbcgto

    spec = [[s, p] for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    cell = pbcgto.Cell(atom=spec, a=atoms.cell[:], basis=basis, pseudo="gth-pbe", unit="Angstrom",
                       precision=1e-16, verbose=0)
    cell.build()
    return cell


@pytest.mark.parametrize("n_ranks", [1, 3])
def test_molecule_overlap_matches_pyscf(n_ranks):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=3)
    reference = _mole(atoms, "def2-svp").intor("int1e_ovlp")  # s, p and d shells
    assert np.abs(_distributed_overlap(atoms, Basis("def2-svp"), n_ranks) - reference).max() <= TOL


@pytest.mark.parametrize("basis", ["gth-szv", "gth-dzvp"])
def test_crystal_gamma_overlap_matches_pbc_intor(basis):
    atoms = bulk("Si", "diamond", a=5.43)  # 2-atom fcc cell: dozens of images per pair
    atoms.rattle(0.03, seed=4)
    reference = _cell(atoms, basis).pbc_intor("int1e_ovlp", hermi=1)
    assert np.abs(_distributed_overlap(atoms, Basis(basis), 2) - reference).max() <= TOL


def test_range_bounds_the_blocks():
    """Just inside the range a block is above the tolerance, just outside below."""
    from pyscf import gto

    basis = Basis("def2-svp")
    ranges = integral_ranges("overlap", basis, [1, 8], RANGE_TOL)
    for (a, b), r in ranges.items():
        norms = []
        for d in (r - 0.05, r + 0.05):
            mol_a = gto.M(atom=[[int(a), (0, 0, 0)]], basis="def2-svp", spin=a % 2,
                          unit="Angstrom", verbose=0)
            mol_b = gto.M(atom=[[int(b), (0, 0.6 * d, 0.8 * d)]], basis="def2-svp", spin=b % 2,
                          unit="Angstrom", verbose=0)
            norms.append(np.linalg.norm(gto.intor_cross("int1e_ovlp", mol_a, mol_b)))
        assert norms[0] >= RANGE_TOL > norms[1], (a, b, r, norms)


def test_kinetic_reference_model_matches_pyscf():
    atoms = molecule("H2O")
    model = IntegralModel(Basis("def2-svp"), "kinetic").with_cutoff_for(atoms.numbers)
    pairs, flat = model.predict(atoms.numbers, atoms.positions, atoms.cell[:], False)
    ours = gamma_matrix(pairs, flat, model.basis.nao_per_atom(atoms.numbers)).toarray()
    reference = _mole(atoms, "def2-svp").intor("int1e_kin") * HARTREE_TO_EV
    assert np.abs(ours - reference).max() <= TOL * HARTREE_TO_EV
