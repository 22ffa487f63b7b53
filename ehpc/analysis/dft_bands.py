"""Reference DFT band structure of a small crystal, for comparison with model bands.

A k-point SCF (as in :mod:`ehpc.dft.periodic`), then the Bloch Fock matrix of the
converged density at each requested k (non-self-consistent, as PySCF's ``get_bands``)
and the exact Bloch overlap.  Nothing is cut at a pair radius, so these are the bands
the model is judged against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from ase import Atoms

from ..basis import Basis
from ..dft.periodic import build_cell, crystal_record, fock_at_kpts, run_krks
from ..dft.scf import SCF_CONV_TOL, SCF_MAX_CYCLE, Smearing, fermi_and_frontier
from ..units import HARTREE_TO_EV
from .bands import bands_with_exact_overlap


@dataclass(frozen=True)
class ReferenceBands:
    """DFT bands along a k-path, energies in eV."""

    energies: np.ndarray  # [n_k, nao_cell]
    #: bands of DFT's H(R) kept only within ``cutoff`` (exact S); None without a cutoff
    truncated: np.ndarray | None
    #: HOMO/LUMO midpoint of the SCF mesh (HOMO if nothing is empty); μ if smeared
    fermi_level: float
    homo: float
    lumo: float
    n_electrons: int
    wall_time_s: float


def dft_bands(
    atoms: Atoms,
    basis: Basis,
    xc: str,
    kmesh,
    kpts_frac: np.ndarray,
    name: str = "band structure",
    conv_tol: float = SCF_CONV_TOL,
    max_cycle: int = SCF_MAX_CYCLE,
    cutoff: float | None = None,
    smearing: Smearing | None = None,
) -> ReferenceBands:
    """Kohn-Sham bands of a periodic ``atoms`` at fractional k-points.

    With ``cutoff``, also the bands of the same DFT Hamiltonian with every block H_ij(R)
    of atoms farther apart than ``cutoff`` dropped (S kept exact).  A model whose pairs
    end at ``cutoff`` can at best reproduce those; the gap between them and the full
    bands is the cost of the cutoff, not of the learning.

    Args:
        atoms: a fully periodic structure.
        basis: a GTH basis with its pseudopotential.
        xc: PySCF functional name.
        kmesh: SCF k-points along each lattice vector.
        kpts_frac: k in units of the caller's reciprocal lattice vectors.  # [n_k, 3]
        name: used in errors.
        conv_tol: SCF energy tolerance in Hartree.
        max_cycle: SCF iteration limit.
        cutoff: pair radius in Å for the truncated bands; none are computed if None.
        smearing: fractional occupations (metals, semimetals), as the labels used; E_F is
            then the SCF's chemical potential and HOMO/LUMO the levels either side of it.

    Raises:
        SCFNotConverged: the SCF did not converge.
        StructureError: the structure is not fully periodic or the basis has no pseudopotential.
    """
    start = time.perf_counter()
    pcell = build_cell(atoms, basis, name)
    mf = run_krks(pcell, xc, kmesh, name, conv_tol, max_cycle, smearing)
    cell = pcell.cell
    kpts_frac = np.atleast_2d(np.asarray(kpts_frac, dtype=np.float64))
    # PySCF's lattice vector a is the caller's order[a]; so are the reciprocal vectors
    kpts_abs = cell.get_abs_kpts(kpts_frac[:, list(pcell.order)])  # [n_k, 3] 1/Bohr
    fock = fock_at_kpts(mf, kpts_abs)  # [n_k, nao, nao] Hartree
    overlap = np.asarray(cell.pbc_intor("int1e_ovlp", hermi=1, kpts=kpts_abs))  # [n_k, nao, nao]
    energies = np.array([scipy.linalg.eigh(f, s, eigvals_only=True)
                         for f, s in zip(fock, overlap.reshape(fock.shape))])  # [n_k, nao]
    truncated = None
    if cutoff is not None:
        record = crystal_record(atoms, basis, mf, pcell, cutoff, name, xc, kmesh,
                                smearing=smearing)
        truncated = bands_with_exact_overlap(record.atom_pairs, record.hamiltonian, atoms, basis,
                                             kpts_frac, name=name)
    fermi, homo, lumo = fermi_and_frontier(mf)
    return ReferenceBands(
        energies=energies * HARTREE_TO_EV,
        truncated=truncated,
        fermi_level=fermi * HARTREE_TO_EV,
        homo=homo * HARTREE_TO_EV,
        lumo=lumo * HARTREE_TO_EV,
        n_electrons=int(cell.nelectron),
        wall_time_s=time.perf_counter() - start,
    )
