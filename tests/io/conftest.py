"""Water labelled by ehpc.dft, and the same molecule's matrices straight from PySCF."""

import pytest
from ase.build import molecule

from ehpc.basis import Basis
from ehpc.dft import label_structure
from ehpc.units import HARTREE_TO_EV

WATER_BASIS = Basis("def2-svp")


@pytest.fixture(scope="session")
def water_record():
    return label_structure(molecule("H2O"), WATER_BASIS, "pbe", 6.0, "water")


@pytest.fixture(scope="session")
def water_pyscf():
    """(AO slice per atom, Kohn-Sham matrix in eV, overlap) from PySCF directly."""
    from pyscf import dft, gto

    atoms = molecule("H2O")
    mol = gto.M(atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis=WATER_BASIS.name, unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc = "pbe"
    mf.conv_tol = 1e-10
    mf.kernel()
    slices = [slice(a[2], a[3]) for a in mol.aoslice_by_atom()]
    return slices, mf.get_fock() * HARTREE_TO_EV, mol.intor("int1e_ovlp")
