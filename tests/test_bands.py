"""Band energies from block-sparse operators against PySCF's own Bloch integrals."""

import numpy as np
import pytest
import scipy.linalg
from ase.build import bulk

from ehpc.analysis.bands import band_path, model_bands
from ehpc.basis import Basis
from ehpc.integrals import IntegralModel
from ehpc.units import HARTREE_TO_EV

BASIS = Basis("gth-szv", "gth-pbe")


def pyscf_bands(atoms, kpts_frac):
    """Eigenvalues of T(k) c = e S(k) c from PySCF's lattice-summed integrals (eV)."""
    from pyscf.pbc import gto

    cell = gto.Cell(atom=[(a.symbol, tuple(a.position)) for a in atoms], a=atoms.cell[:],
                    basis=BASIS.name, pseudo=BASIS.pseudo, unit="Angstrom", verbose=0)
    cell.build()
    k = cell.get_abs_kpts(kpts_frac)
    kinetic = cell.pbc_intor("int1e_kin", hermi=1, kpts=k)
    overlap = cell.pbc_intor("int1e_ovlp", hermi=1, kpts=k)
    return np.array([scipy.linalg.eigh(t, s, eigvals_only=True)
                     for t, s in zip(kinetic, overlap)]) * HARTREE_TO_EV


@pytest.mark.parametrize("rattle", [0.0, 0.1])
def test_model_bands_of_the_kinetic_operator_match_pyscf(rattle):
    """An exact operator in place of the model: its H(R) blocks and the exact S(R) give
    PySCF's bands along the standard path (phases, shifts and orbital order all enter)."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(rattle, seed=3)
    path = band_path(atoms, npoints=12)
    kinetic = IntegralModel(BASIS, "kinetic", tol=1e-11).with_cutoff_for(atoms.numbers)
    bands = model_bands(kinetic, atoms, path.kpts, overlap_tol=1e-11)
    np.testing.assert_allclose(bands, pyscf_bands(atoms, path.kpts), atol=1e-5)


def test_band_path_follows_the_lattice():
    path = band_path(bulk("Si", "diamond", a=5.43), npoints=30)
    assert path.path.startswith("GX")
    assert path.kpts.shape == (30, 3)
    assert [label for _, label in path.ticks][:2] == ["G", "X"]
    assert np.all(np.diff(path.x) >= 0)
    np.testing.assert_allclose(path.kpts[0], 0.0)
