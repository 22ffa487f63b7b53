"""Clebsch-Gordan block construction against ehpc.basis' PySCF-verified rotation rule."""

import numpy as np
import pytest
from e3nn import o3
from scipy.spatial.transform import Rotation

from ehpc.basis import Basis, atom_rotation, e3nn_wigner_d
from ehpc.nn.blocks import build_pair_block_spec, pair_block_spec, transpose_index


def random_orthogonal(seed: int, improper: bool) -> np.ndarray:
    r = Rotation.random(random_state=seed).as_matrix()
    return -r if improper else r


def irreps_rotation(irreps: o3.Irreps, rotation: np.ndarray) -> np.ndarray:
    """D(R) on an irreps vector; an irrep of parity p gets p under inversion."""
    improper = np.linalg.det(rotation) < 0
    blocks = []
    for mul, ir in irreps:
        d = e3nn_wigner_d(ir.l, rotation)  # carries (-1)^l for improper R
        if improper:
            d = d * ir.p * (-1) ** ir.l
        blocks += [d] * mul
    from scipy.linalg import block_diag

    return block_diag(*blocks)


LS_PAIRS = [
    ((0, 0, 1, 1, 2), (0, 0, 1, 1, 2)),  # Si gth-dzvp on-site
    ((0, 0, 1), (0,)),                   # O-H in sto-3g
    ((0, 0, 0, 1, 1, 2), (0, 0, 1)),     # def2-svp O-H
    ((3,), (1, 2)),
]


@pytest.mark.parametrize("ls_i,ls_j", LS_PAIRS)
def test_block_matrix_is_orthogonal_and_complete(ls_i, ls_j):
    spec = pair_block_spec(ls_i, ls_j)
    n = spec.size
    assert spec.irreps.dim == n  # the product of two shells decomposes completely
    np.testing.assert_allclose(spec.matrix @ spec.matrix.T, np.eye(n), atol=1e-13)
    # one (a, b, L) slot per coupling allowed by the triangle rule
    assert spec.n_slots == sum(min(a, b) * 2 + 1 for a in ls_i for b in ls_j)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("ls_i,ls_j", LS_PAIRS)
def test_rotated_irreps_give_rotated_pyscf_blocks(ls_i, ls_j, improper):
    """x' = D_irreps x must give H' = D_i H D_j^T with ehpc.basis' PySCF-order D."""
    spec = pair_block_spec(ls_i, ls_j)
    rot = random_orthogonal(5, improper)
    x = np.random.default_rng(0).normal(size=spec.irreps.dim)
    h = spec.to_blocks(x).reshape(spec.shape)
    h_rot = spec.to_blocks(irreps_rotation(spec.irreps, rot) @ x).reshape(spec.shape)
    expected = atom_rotation(ls_i, rot) @ h @ atom_rotation(ls_j, rot).T
    np.testing.assert_allclose(h_rot, expected, atol=1e-12)


def test_wrong_l1_convention_breaks_the_rotation_rule():
    """PySCF orders p as (x, y, z); pretending it is e3nn's (y, z, x) must fail."""
    ls_i, ls_j = (0, 1), (1,)
    wrong = build_pair_block_spec(ls_i, ls_j, angular=lambda l: np.eye(2 * l + 1))
    rot = random_orthogonal(6, False)
    x = np.random.default_rng(1).normal(size=wrong.irreps.dim)
    h = wrong.to_blocks(x).reshape(wrong.shape)
    h_rot = wrong.to_blocks(irreps_rotation(wrong.irreps, rot) @ x).reshape(wrong.shape)
    expected = atom_rotation(ls_i, rot) @ h @ atom_rotation(ls_j, rot).T
    assert np.abs(h_rot - expected).max() > 1e-2


def test_scalar_components_hold_a_spherical_atom():
    """An isotropic on-site block (H = e * 1 per shell) has only invariant (0e) components."""
    ls = Basis("def2-svp").element("O").ls
    spec = pair_block_spec(ls, ls)
    levels = np.repeat(np.arange(len(ls), dtype=float) - 7.0, [2 * l + 1 for l in ls])
    x = spec.to_irreps(np.diag(levels).ravel())
    assert np.abs(x[~spec.scalar]).max() < 1e-12
    assert np.abs(x[spec.scalar]).max() > 1.0


def test_transpose_index():
    block = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(block.ravel()[transpose_index(3, 4)], block.T.ravel())


def test_block_multiplicity_counts_the_couplings_of_a_d_basis():
    # Si in gth-dzvp-molopt-sr has radial functions l = (0, 0, 1, 1, 2); the 1o copies of
    # a Si-Si block come from s-p (2 x 2, twice) and p-d (2 x 1, twice): 8 + 4 = 12
    from ehpc.nn.model import block_multiplicity

    assert Basis("gth-dzvp-molopt-sr").element(14).ls == (0, 0, 1, 1, 2)
    assert block_multiplicity(Basis("gth-dzvp-molopt-sr"), [14]) == 12
    assert block_multiplicity(Basis("gth-szv"), [14]) == 2  # s-p and p-s


@pytest.mark.filterwarnings("ignore:channels raised")
def test_every_block_is_reachable_by_the_readout_of_a_narrow_model():
    # whatever `channels` asks for, the readout's image must be the whole block space:
    # a linear map from too few copies of an irrep cannot span the blocks' copies of it
    import torch

    from ehpc.nn.model import HamiltonianModel

    torch.manual_seed(0)
    model = HamiltonianModel(Basis("gth-dzvp-molopt-sr"), [14], cutoff=4.0, n_layers=1,
                             channels=4).double()
    for readout in [*model.offsite.values(), *model.onsite.values()]:
        x = torch.randn(400, readout.linear.irreps_in.dim, dtype=torch.float64)
        with torch.no_grad():
            y = readout(x) - readout(torch.zeros_like(x[:1]))  # [400, 169], shift removed
        assert np.linalg.matrix_rank(y.numpy()) == readout.spec.irreps.dim == 169
