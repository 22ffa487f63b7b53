"""The orbital rotation rule H' = D(R) H D(R)^T, checked against PySCF on rotated copies.

A structure and its copy under a random orthogonal Q (positions and lattice vectors
both transformed; det Q = -1 included) are labelled independently by PySCF.  Every
stored block must then obey ``H'_ij(R) = D_i(Q) H_ij(R) D_j(Q)^T`` with ``D`` from
:func:`ehpc.basis.atom_rotation`, and the same for S.  The test also shows it can fail:
the unpermuted l=1 mapping and the transposed rotation miss by orders of magnitude.
"""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from ehpc.basis import Basis, atom_rotation, e3nn_wigner_d, wigner_d
from ehpc.dft.molecule import label_molecule
from ehpc.dft.periodic import label_crystal
from ehpc.units import EV_TO_HARTREE

TOL = 1e-6  # Hartree
WRONG_BY = 1e-3  # Hartree: a wrong convention must miss by at least this much
XC = "pbe"
CONV_TOL = 1e-11
MOLECULE_BASIS = Basis("def2-svp")
CRYSTAL_BASIS = Basis("gth-szv")
#: a finer atom-centred grid than PySCF's default: Lebedev grids do not rotate with the molecule
MOLECULE_GRID_LEVEL = 5
#: covariance does not need alias-free blocks (the band mesh rotates with the cell), so a
#: loose alias tolerance keeps the band mesh, and the test, small
CRYSTAL_ALIAS_TOL = 1e-2


def random_orthogonal(seed: int, improper: bool) -> np.ndarray:
    rotation = Rotation.random(random_state=seed).as_matrix()
    return -rotation if improper else rotation


def transformed(atoms: Atoms, q: np.ndarray) -> Atoms:
    out = atoms.copy()
    out.set_cell(atoms.cell[:] @ q.T, scale_atoms=False)
    out.positions = atoms.positions @ q.T
    return out


def low_symmetry_silicon() -> Atoms:
    """Primitive Si with strained lattice vectors and displaced atoms (no symmetry left)."""
    rng = np.random.default_rng(11)
    si = bulk("Si", "diamond", a=5.43)
    si.set_cell(si.cell[:] @ (np.eye(3) + rng.normal(scale=0.03, size=(3, 3))), scale_atoms=True)
    si.positions += rng.normal(scale=0.03, size=si.positions.shape)
    return si


def d_correct(ls, q):
    return atom_rotation(ls, q)


def d_identity_l1_map(ls, q):
    """What D would be if PySCF's p order (x, y, z) were taken as e3nn's (y, z, x)."""
    blocks = [e3nn_wigner_d(l, q) if l == 1 else wigner_d(l, q) for l in ls]
    return _block_diag(blocks)


def d_transposed(ls, q):
    return atom_rotation(ls, q).T


def _block_diag(blocks):
    n = sum(len(b) for b in blocks)
    out, start = np.zeros((n, n)), 0
    for b in blocks:
        out[start : start + len(b), start : start + len(b)] = b
        start += len(b)
    return out


def covariance_error(record, rotated, basis, q, rule=d_correct) -> tuple[float, float]:
    """Largest |D_i X D_j^T - X'| over all blocks, for H (Hartree) and S."""
    assert np.array_equal(record.atom_pairs, rotated.atom_pairs)
    nao = basis.nao_per_atom(record.numbers)
    d = {int(z): rule(basis.element(int(z)).ls, q) for z in np.unique(record.numbers)}
    h_err = s_err = 0.0
    for p, (_, _, _, i, j) in enumerate(record.atom_pairs):
        di, dj = d[int(record.numbers[i])], d[int(record.numbers[j])]
        h = di @ record.block(p, nao, "hamiltonian") @ dj.T - rotated.block(p, nao, "hamiltonian")
        s = di @ record.block(p, nao, "overlap") @ dj.T - rotated.block(p, nao, "overlap")
        h_err = max(h_err, float(np.abs(h).max()) * EV_TO_HARTREE)
        s_err = max(s_err, float(np.abs(s).max()))
    return h_err, s_err


def label_water(atoms, name):
    return label_molecule(atoms, MOLECULE_BASIS, XC, 5.0, name, conv_tol=CONV_TOL,
                          grid_level=MOLECULE_GRID_LEVEL)


def label_silicon(atoms, name):
    return label_crystal(atoms, CRYSTAL_BASIS, XC, 4.0, name, kmesh=(1, 1, 1), conv_tol=CONV_TOL,
                         alias_tol=CRYSTAL_ALIAS_TOL)


@pytest.fixture(scope="module")
def water():
    atoms = molecule("H2O")
    return atoms, label_water(atoms, "water")


@pytest.fixture(scope="module")
def silicon():
    atoms = low_symmetry_silicon()
    return atoms, label_silicon(atoms, "si")


@pytest.fixture(scope="module", params=[False, True], ids=["rotation", "improper"])
def rotated_water(request, water):
    q = random_orthogonal(3, request.param)
    return q, label_water(transformed(water[0], q), "water_rotated")


@pytest.fixture(scope="module", params=[False, True], ids=["rotation", "improper"])
def rotated_silicon(request, silicon):
    q = random_orthogonal(5, request.param)
    return q, label_silicon(transformed(silicon[0], q), "si_rotated")


def test_molecule_blocks_rotate_with_wigner_d(water, rotated_water):
    q, rotated = rotated_water
    h_err, s_err = covariance_error(water[1], rotated, MOLECULE_BASIS, q)
    assert s_err < TOL
    assert h_err < TOL


@pytest.mark.slow
def test_crystal_blocks_rotate_with_wigner_d(silicon, rotated_silicon):
    q, rotated = rotated_silicon
    assert rotated.n_pairs > 4 * len(silicon[0]), "the cutoff must reach neighbouring cells"
    h_err, s_err = covariance_error(silicon[1], rotated, CRYSTAL_BASIS, q)
    assert s_err < TOL
    assert h_err < TOL


@pytest.mark.parametrize("rule", [d_identity_l1_map, d_transposed])
def test_wrong_conventions_fail_for_molecule(water, rotated_water, rule):
    q, rotated = rotated_water
    h_err, s_err = covariance_error(water[1], rotated, MOLECULE_BASIS, q, rule)
    assert h_err > WRONG_BY and s_err > WRONG_BY


@pytest.mark.slow
@pytest.mark.parametrize("rule", [d_identity_l1_map, d_transposed])
def test_wrong_conventions_fail_for_crystal(silicon, rotated_silicon, rule):
    q, rotated = rotated_silicon
    h_err, s_err = covariance_error(silicon[1], rotated, CRYSTAL_BASIS, q, rule)
    assert h_err > WRONG_BY and s_err > WRONG_BY
