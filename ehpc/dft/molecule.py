"""Kohn-Sham H and S of a molecule from a restricted PySCF calculation.

The label is the converged Fock matrix ``F[D]`` (``mf.get_fock()`` with the final
density, no DIIS or level shift) and the AO overlap, cut into atom-pair blocks.
Odd-electron molecules run restricted open-shell (PySCF picks ROKS for ``spin=1``), whose
effective Fock matrix reproduces the reported orbital energies.
"""

from __future__ import annotations

import time

import numpy as np
from ase import Atoms

from ..basis import Basis
from ..io.dataset import HamiltonianRecord
from .blocks import gather_blocks, make_record, pair_list
from .scf import (SCF_CONV_TOL, SCF_MAX_CYCLE, check_converged, check_orbital_count, pyscf_atoms,
                  scf_attrs)

#: PySCF's default atom-centred grid; finer levels make the labels more rotation-exact
DEFAULT_GRID_LEVEL = 3


def build_molecule(atoms: Atoms, basis: Basis):
    """A neutral PySCF ``Mole`` in Å with spin set by the electron count's parity."""
    from pyscf import gto

    spin = basis.n_electrons(atoms.numbers) % 2
    return gto.M(
        atom=pyscf_atoms(atoms),
        basis=basis.name,
        pseudo=basis.pseudo,
        unit="Angstrom",
        charge=0,
        spin=spin,
        verbose=0,
    )


def run_rks(mol, xc: str, name: str, conv_tol: float = SCF_CONV_TOL, max_cycle: int = SCF_MAX_CYCLE,
            grid_level: int = DEFAULT_GRID_LEVEL):
    """Converged restricted Kohn-Sham object; raises SCFNotConverged naming ``name``."""
    from pyscf import dft

    mf = dft.RKS(mol, xc=xc)
    mf.conv_tol = conv_tol
    mf.max_cycle = max_cycle
    mf.grids.level = grid_level
    mf.kernel()
    check_converged(mf, name, conv_tol, max_cycle)
    return mf


def label_molecule(
    atoms: Atoms,
    basis: Basis,
    xc: str,
    cutoff: float,
    name: str,
    conv_tol: float = SCF_CONV_TOL,
    max_cycle: int = SCF_MAX_CYCLE,
    grid_level: int = DEFAULT_GRID_LEVEL,
) -> HamiltonianRecord:
    """H (eV) and S blocks of every atom pair closer than ``cutoff`` Å.

    Args:
        atoms: a non-periodic structure.
        basis: orbital basis (and pseudopotential, if any).
        xc: PySCF functional name, e.g. ``"pbe"``.
        cutoff: pair radius in Å.
        name: structure name, used in records and errors.
        conv_tol: SCF energy tolerance in Hartree.
        max_cycle: SCF iteration limit.
        grid_level: PySCF DFT grid level (3 is PySCF's default).

    Raises:
        SCFNotConverged: the SCF did not reach ``conv_tol`` in ``max_cycle`` cycles.
    """
    start = time.perf_counter()
    mol = build_molecule(atoms, basis)
    mf = run_rks(mol, xc, name, conv_tol, max_cycle, grid_level)
    fock = np.asarray(mf.get_fock())  # [nao, nao] Hartree
    overlap = mol.intor("int1e_ovlp")  # [nao, nao]
    pairs = pair_list(atoms, cutoff)  # [n_pairs, 5]
    check_orbital_count(name, basis, atoms.numbers, mol.nao)
    nao = basis.nao_per_atom(atoms.numbers)
    h_flat = gather_blocks(lambda shift: fock, pairs, nao)
    s_flat = gather_blocks(lambda shift: overlap, pairs, nao)
    attrs = scf_attrs(mf, name, xc, mol.nelectron, time.perf_counter() - start)
    attrs.update(cutoff=float(cutoff), grid_level=int(grid_level))
    return make_record(atoms, name, basis, pairs, h_flat, s_flat, attrs)
