"""The basis registry against PySCF itself: orbital counts, electrons, angular convention."""

import numpy as np
import pytest
from ase.build import bulk, molecule
from pyscf import gto
from pyscf.pbc import gto as pbcgto
from scipy.spatial.transform import Rotation

from ehpc.basis import Basis, BasisError, angular_matrix, atom_rotation, wigner_d


def random_orthogonal(seed: int, improper: bool) -> np.ndarray:
    r = Rotation.random(random_state=seed).as_matrix()
    return -r if improper else r


@pytest.mark.parametrize("name", ["def2-svp", "gth-szv", "gth-dzvp"])
def test_orbital_and_electron_counts_match_pyscf(name):
    atoms = molecule("CH3CH2OH")
    basis = Basis(name)
    if basis.is_pseudo:
        cell = pbcgto.Cell(atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                           a=np.eye(3) * 12.0, basis=name, pseudo=basis.pseudo, verbose=0)
        cell.build()
        mol = cell
    else:
        mol = gto.M(atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                    basis=name, verbose=0)
    assert basis.nao_per_atom(atoms.numbers).sum() == mol.nao
    assert basis.n_electrons(atoms.numbers) == mol.nelectron
    # per-atom AO ranges agree with PySCF's own bookkeeping
    starts = np.concatenate([[0], np.cumsum(basis.nao_per_atom(atoms.numbers))])
    assert np.array_equal(starts[:-1], mol.aoslice_by_atom()[:, 2])


def test_gth_core_electrons():
    si = Basis("gth-dzvp").element("Si")
    assert si.n_valence + si.n_core == 14
    assert si.n_valence == pbcgto.Cell(atom="Si 0 0 0", a=np.eye(3) * 8, basis="gth-dzvp",
                                       pseudo="gth-pbe", spin=0, verbose=0).build().atom_charge(0)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("l", [1, 2, 3, 4])
def test_wigner_d_rotates_pyscf_orbitals(l, improper):
    """PySCF's own AO values on rotated points obey Y(R r) = D(R) Y(r)."""
    rot = random_orthogonal(seed=10 + l, improper=improper)
    mol = gto.M(atom="H 0 0 0", basis={"H": [[l, [0.7, 1.0]]]}, spin=1, verbose=0)
    points = np.random.default_rng(l).normal(size=(30, 3))
    y = mol.eval_gto("GTOval_sph", points)            # [n_points, 2l+1]
    y_rot = mol.eval_gto("GTOval_sph", points @ rot.T)  # [n_points, 2l+1]
    d = wigner_d(l, rot)
    np.testing.assert_allclose(y_rot, y @ d.T, atol=1e-12)
    # the rule is sharp: the transpose (the inverse rotation) fails for l >= 1
    assert np.abs(y_rot - y @ d).max() > 1e-3


def test_angular_map_is_signed_permutation():
    for l in range(5):
        q = angular_matrix(l)
        np.testing.assert_array_equal(np.abs(q).sum(axis=0), 1)
        np.testing.assert_allclose(q @ q.T, np.eye(2 * l + 1))


def test_atom_rotation_is_a_representation():
    ls = Basis("gth-dzvp").element("Si").ls
    r1, r2 = random_orthogonal(1, False), random_orthogonal(2, True)
    d12 = atom_rotation(ls, r1 @ r2)
    np.testing.assert_allclose(d12, atom_rotation(ls, r1) @ atom_rotation(ls, r2), atol=1e-12)


def test_unknown_element_is_a_clear_error():
    with pytest.raises(BasisError, match="U .*gth-szv"):
        Basis("gth-szv").element("U")
    with pytest.raises(BasisError, match="not a chemical symbol"):
        Basis("def2-svp").element("Xx")


def test_bulk_silicon_counts():
    si = bulk("Si", "diamond", 5.43, cubic=True)
    assert Basis("gth-szv").n_electrons(si.numbers) == 32
