"""PySCF reference labels: block-sparse Kohn-Sham H(R) and S(R) of molecules and crystals.

``label_structure`` is the one entry point; it sends periodic structures to
:mod:`ehpc.dft.periodic` and the rest to :mod:`ehpc.dft.molecule`.
"""

from __future__ import annotations

import inspect

from ase import Atoms

from ..basis import Basis
from ..io.dataset import HamiltonianRecord
from .molecule import label_molecule
from .floor import TruncationFloorError
from .periodic import label_crystal
from .scf import SCFNotConverged, Smearing, pyscf_version

__all__ = ["SCFNotConverged", "Smearing", "TruncationFloorError", "label_crystal",
           "label_molecule", "label_structure", "pyscf_version"]

#: the options of label_structure a molecule uses (the others are about k-points and cells)
MOLECULE_OPTIONS = ("conv_tol", "max_cycle")


def label_structure(
    atoms: Atoms, basis: Basis, xc: str, cutoff: float, name: str, **options
) -> HamiltonianRecord:
    """Kohn-Sham H (eV) and S blocks of every atom pair closer than ``cutoff`` Å.

    Args:
        atoms: the structure; any periodic axis makes it a crystal.
        basis: orbital basis (a GTH basis for crystals).
        xc: PySCF functional name, e.g. ``"pbe"``.
        cutoff: pair radius in Å; both directions and the on-site pairs are stored.
        name: structure name, used in the record and in every error.
        **options: keywords of :func:`label_crystal` (``kmesh``, ``conv_tol``,
            ``max_cycle``, ``smearing``, ``floor_tol``, ...), whose defaults are the ones;
            a molecule takes only ``conv_tol`` and ``max_cycle`` and ignores the rest.

    Raises:
        SCFNotConverged: the SCF did not converge; the structure should be left out.
        TruncationFloorError: a crystal's cutoff costs more than ``floor_tol``.
    """
    unknown = set(options) - set(inspect.signature(label_crystal).parameters)
    if unknown:  # a misspelt option must not be dropped silently for a molecule
        raise TypeError(f"label_structure: unknown options {sorted(unknown)}")
    if atoms.pbc.any():
        return label_crystal(atoms, basis, xc, cutoff, name, **options)
    molecular = {k: v for k, v in options.items() if k in MOLECULE_OPTIONS}
    return label_molecule(atoms, basis, xc, cutoff, name, **molecular)
