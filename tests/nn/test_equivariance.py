"""Symmetries of the predicted Hamiltonian, in float64, for a molecule and a crystal.

The reference for rotations is ``ehpc.basis.atom_rotation``, whose rule H' = D H D^T is
proven against PySCF itself in ``tests/test_basis.py``.
"""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from ehpc.basis import Basis, atom_rotation
from ehpc.graph import neighbour_list
from ehpc.io.dataset import HamiltonianRecord, block_offsets
from ehpc.nn import HamiltonianModel
from ehpc.nn.blocks import build_pair_block_spec

TOL = 1e-10  # relative to the largest matrix element


def random_orthogonal(seed: int, improper: bool) -> np.ndarray:
    r = Rotation.random(random_state=seed).as_matrix()
    return -r if improper else r


def fake_statistics(model: HamiltonianModel, atoms) -> None:
    """Give the readouts non-trivial scales and invariant shifts from a random 'dataset'."""
    nl = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, model.cutoff, self_edges=True)
    pairs = nl.atom_pairs()
    nao = model.basis.nao_per_atom(atoms.numbers)
    offsets = block_offsets(pairs, nao)
    rng = np.random.default_rng(3)
    noise = rng.normal(size=offsets[-1]) * 5.0 - 2.0
    record = HamiltonianRecord("random", atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc,
                               pairs, offsets, noise)
    model.set_statistics([record])


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture(scope="module")
def silicon():
    """A rattled, sheared two-atom Si cell: no symmetry left to hide mistakes."""
    atoms = bulk("Si", "diamond", a=5.43)
    strain = np.eye(3) + [[0.02, 0.03, 0.0], [0.0, -0.01, 0.04], [0.01, 0.0, 0.03]]
    atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
    atoms.rattle(0.08, seed=2)
    return atoms


@pytest.fixture(scope="module")
def mol_model(ethanol):
    torch.manual_seed(0)
    model = HamiltonianModel(Basis("def2-svp"), [1, 6, 8], cutoff=3.0, n_layers=2, channels=4)
    fake_statistics(model, ethanol)
    return model.to(torch.float64)  # built in float32: the conversion must restore exact constants


@pytest.fixture(scope="module")
def si_model(silicon):
    torch.manual_seed(1)
    model = HamiltonianModel(Basis("gth-dzvp"), [14], cutoff=4.0, n_layers=2, channels=4)
    fake_statistics(model, silicon)
    return model.to(torch.float64)


@pytest.fixture(scope="module")
def si_baseline_model(silicon):
    """The crystal model with the kinetic baseline T + v S (exact integrals) added."""
    torch.manual_seed(1)
    model = HamiltonianModel(Basis("gth-dzvp"), [14], cutoff=4.0, n_layers=2, channels=4,
                             baseline="kinetic")
    fake_statistics(model, silicon)
    return model.to(torch.float64)


def predict(model, atoms, pairs=None):
    return model.predict(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc, pairs=pairs)


def blocks_of(model, numbers, pairs, flat):
    nao = model.basis.nao_per_atom(numbers)
    offsets = block_offsets(pairs, nao)
    return [
        flat[offsets[p] : offsets[p + 1]].reshape(nao[i], nao[j])
        for p, (*_, i, j) in enumerate(pairs)
    ]


def rotation_error(model, atoms, rot, pairs, flat):
    """Largest |D_i H_ij D_j^T - H'_ij| over all pairs, relative to max |H|."""
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T
    moved.set_cell(atoms.cell[:] @ rot.T, scale_atoms=False)
    _, flat_rot = predict(model, moved, pairs)
    d = {int(z): atom_rotation(model.basis.element(int(z)).ls, rot) for z in set(atoms.numbers)}
    err = 0.0
    for (*_, i, j), h, h_rot in zip(pairs, blocks_of(model, atoms.numbers, pairs, flat),
                                    blocks_of(model, atoms.numbers, pairs, flat_rot)):
        err = max(err, np.abs(d[atoms.numbers[i]] @ h @ d[atoms.numbers[j]].T - h_rot).max())
    return err / np.abs(flat).max()


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("system", ["mol", "si", "si_baseline"])
def test_rotation_and_inversion(system, improper, request):
    model = request.getfixturevalue(f"{system}_model")
    atoms = request.getfixturevalue("ethanol" if system == "mol" else "silicon")
    pairs, flat = predict(model, atoms)
    assert np.abs(flat).max() > 1e-3
    for seed in (11, 12):
        assert rotation_error(model, atoms, random_orthogonal(seed, improper), pairs, flat) < TOL


def test_wrong_l1_map_breaks_rotation_check(mol_model, ethanol):
    """The same check fails when p orbitals are taken in e3nn's order as if PySCF's."""
    model = HamiltonianModel.from_metadata(mol_model.metadata).to(torch.float64)
    model.load_state_dict(mol_model.state_dict())
    for readout in list(model.onsite.values()) + list(model.offsite.values()):
        readout.spec = build_pair_block_spec(readout.spec.ls_i, readout.spec.ls_j,
                                             angular=lambda l: np.eye(2 * l + 1))
    model.refresh_constants()
    pairs, flat = predict(model, ethanol)
    assert rotation_error(model, ethanol, random_orthogonal(11, False), pairs, flat) > 1e-3


@pytest.mark.parametrize("system", ["mol", "si"])
def test_translation_invariance(system, request):
    model = request.getfixturevalue(f"{system}_model")
    atoms = request.getfixturevalue("ethanol" if system == "mol" else "silicon")
    pairs, flat = predict(model, atoms)
    moved = atoms.copy()
    moved.positions += [1.7, -2.3, 0.4]
    _, flat_moved = predict(model, moved, pairs)
    assert np.abs(flat_moved - flat).max() < TOL * np.abs(flat).max()


def test_atom_permutation(mol_model, ethanol):
    pairs, flat = predict(mol_model, ethanol)
    perm = np.random.default_rng(4).permutation(len(ethanol))  # new atom k is old atom perm[k]
    shuffled = ethanol[perm]
    new_index = np.argsort(perm)
    new_pairs = np.column_stack([pairs[:, :3], new_index[pairs[:, 3]], new_index[pairs[:, 4]]])
    _, flat_new = predict(mol_model, shuffled, new_pairs)
    # both are laid out pair by pair in the same order with the same block sizes
    assert np.abs(flat_new - flat).max() < TOL * np.abs(flat).max()


@pytest.mark.parametrize("system", ["mol", "si"])
def test_hermiticity_is_exact(system, request):
    model = request.getfixturevalue(f"{system}_model")
    atoms = request.getfixturevalue("ethanol" if system == "mol" else "silicon")
    pairs, flat = predict(model, atoms)
    blocks = blocks_of(model, atoms.numbers, pairs, flat)
    index = {tuple(p): k for k, p in enumerate(pairs.tolist())}
    n_self_images = 0
    for k, (sx, sy, sz, i, j) in enumerate(pairs.tolist()):
        partner = index[(-sx, -sy, -sz, j, i)]
        np.testing.assert_array_equal(blocks[partner], blocks[k].T)
        n_self_images += i == j and (sx, sy, sz) != (0, 0, 0)
    if system == "si":
        assert n_self_images > 0  # (i, i, S != 0) pairs were exercised too


def test_supercell_gives_the_same_blocks(si_model, silicon):
    """A 2x2x2 supercell is the same crystal: every block must match the primitive cell's."""
    n = len(silicon)
    reps = (2, 2, 2)
    sc = silicon * reps
    # ase repeats atoms translation by translation: atom k is primitive atom k % n moved by T_k
    t = np.array([(a, b, c) for a in range(2) for b in range(2) for c in range(2)])
    t = t.repeat(n, axis=0)  # [n_atoms_sc, 3]
    pairs_sc, flat_sc = predict(si_model, sc)
    i_sc, j_sc = pairs_sc[:, 3], pairs_sc[:, 4]
    shift_prim = t[j_sc] + pairs_sc[:, :3] * np.array(reps) - t[i_sc]
    pairs_prim = np.column_stack([shift_prim, i_sc % n, j_sc % n])
    _, flat_prim = predict(si_model, silicon, pairs_prim)
    assert len(flat_sc) == len(flat_prim)
    assert np.abs(flat_sc - flat_prim).max() < TOL * np.abs(flat_prim).max()


def halo_cluster(atoms, owned, radius):
    """Owned atoms (home cell) plus every periodic image within ``radius`` of one: pbc False."""
    nl = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, radius)
    from_owned = np.isin(nl.sender, owned)
    images = np.unique(np.column_stack([nl.receiver[from_owned], nl.shifts[from_owned]]), axis=0)
    images = np.concatenate([np.column_stack([owned, np.zeros((len(owned), 3), int)]), images])
    _, first = np.unique(images, axis=0, return_index=True)
    images = images[np.sort(first)]  # owned atoms stay first, each image once
    positions = atoms.positions[images[:, 0]] + images[:, 1:] @ atoms.cell[:]
    return images, atoms.numbers[images[:, 0]], positions


def cluster_vs_periodic_error(model, atoms, owned, radius):
    pairs, flat = predict(model, atoms)
    images, numbers, positions = halo_cluster(atoms, owned, radius)
    no_cell = np.zeros((3, 3))
    local = neighbour_list(positions, no_cell, False, model.cutoff, self_edges=True).atom_pairs()
    wanted = local[local[:, 3] < len(owned)]  # pairs whose first atom is owned
    _, flat_local = model.predict(numbers, positions, no_cell, False, pairs=wanted, chunk=7)
    # the same pairs in the periodic structure's indexing
    periodic = np.column_stack([images[wanted[:, 4], 1:] - images[wanted[:, 3], 1:],
                                images[wanted[:, 3], 0], images[wanted[:, 4], 0]])
    _, flat_periodic = predict(model, atoms, periodic)
    sub = np.isin(pairs[:, 3], owned)
    assert len(wanted) == sub.sum()  # every owned pair of the crystal is in the cluster
    return np.abs(flat_local - flat_periodic).max() / np.abs(flat).max()


@pytest.mark.parametrize("name", ["si_model", "si_baseline_model"])
def test_halo_cluster_matches_periodic_prediction(name, silicon, request):
    """What sharded inference relies on: owned atoms + a receptive-field halo, pbc off
    (with the kinetic baseline, its integrals in the cluster equal the crystal's)."""
    model = request.getfixturevalue(name)
    crystal = silicon * (2, 1, 1)
    owned = np.array([1, 2])
    assert cluster_vs_periodic_error(model, crystal, owned, model.receptive_field) < TOL
    # the check is sharp: a halo of one cutoff misses atoms that shape the owned blocks
    # (round-off is ~1e-15; the missing second shell shows up many orders above it)
    assert cluster_vs_periodic_error(model, crystal, owned, model.cutoff) > 1e-9


def test_blocks_fade_out_at_the_cutoff(mol_model):
    """An atom crossing the cutoff changes nothing discontinuously."""
    rc = mol_model.cutoff
    base = molecule("H2O")

    def with_far_h(distance):
        atoms = base.copy()
        atoms.append("H")
        atoms.positions[-1] = atoms.positions[0] + distance * np.array([0.0, -0.6, 0.8])
        return atoms

    inside, outside = with_far_h(rc * (1 - 1e-4)), with_far_h(rc * (1 + 1e-4))
    near = [0, 1, 2]
    onsite = np.array([[0, 0, 0, k, k] for k in near])
    _, a = predict(mol_model, inside, onsite)
    _, b = predict(mol_model, outside, onsite)
    assert np.abs(a - b).max() < 1e-8 * np.abs(a).max()
    _, fading = predict(mol_model, inside, np.array([[0, 0, 0, 0, 3]]))
    assert np.abs(fading).max() < 1e-8 * np.abs(a).max()
    _, well_inside = predict(mol_model, with_far_h(0.8 * rc), np.array([[0, 0, 0, 0, 3]]))
    assert np.abs(well_inside).max() > 1e-4 * np.abs(a).max()
