"""PySCF reference labels: block-sparse Kohn-Sham H(R) and S(R) of molecules and crystals.

``label_structure`` is the one entry point; it sends periodic structures to
:mod:`ehpc.dft.periodic` and the rest to :mod:`ehpc.dft.molecule`.
"""

from __future__ import annotations

from ase import Atoms

from ..basis import Basis
from ..io.dataset import HamiltonianRecord
from .molecule import label_molecule
from .floor import TruncationFloorError
from .periodic import label_crystal
from .scf import SCFNotConverged, Smearing, pyscf_version

__all__ = ["SCFNotConverged", "Smearing", "TruncationFloorError", "label_crystal",
           "label_molecule", "label_structure", "pyscf_version"]


def label_structure(
    atoms: Atoms,
    basis: Basis,
    xc: str,
    cutoff: float,
    name: str,
    kmesh=(1, 1, 1),
    conv_tol: float = 1e-9,
    max_cycle: int = 100,
    smearing: Smearing | None = None,
    floor_tol: float | None = None,
) -> HamiltonianRecord:
    """Kohn-Sham H (eV) and S blocks of every atom pair closer than ``cutoff`` Å.

    Args:
        atoms: the structure; any periodic axis makes it a crystal.
        basis: orbital basis (a GTH basis for crystals).
        xc: PySCF functional name, e.g. ``"pbe"``.
        cutoff: pair radius in Å; both directions and the on-site pairs are stored.
        name: structure name, used in the record and in every error.
        kmesh: SCF k-mesh for crystals (ignored for molecules).
        conv_tol: SCF energy tolerance in Hartree.
        max_cycle: SCF iteration limit.
        smearing: crystals: fractional occupations for metals and semimetals.
        floor_tol: crystals: largest truncation floor (meV) accepted; None accepts any.

    Raises:
        SCFNotConverged: the SCF did not converge; the structure should be left out.
        TruncationFloorError: a crystal's cutoff costs more than ``floor_tol``.
    """
    if atoms.pbc.any():
        return label_crystal(atoms, basis, xc, cutoff, name, kmesh, conv_tol, max_cycle,
                             smearing=smearing, floor_tol=floor_tol)
    return label_molecule(atoms, basis, xc, cutoff, name, conv_tol, max_cycle)
