"""Recursive coordinate bisection and per-rank halos, checked against vesin neighbour lists."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, fcc111, molecule

from ehpc.basis import Basis
from ehpc.graph import neighbour_list
from ehpc.infer.halo import build_halo, cluster_pairs
from ehpc.infer.partition import bisect, partition

from .conftest import si_cluster, si_crystal


def _mixed_molecule_cluster():
    """Several water and methane molecules spread in space: uneven orbital counts."""
    parts = []
    for k, name in enumerate(["H2O", "CH4", "H2O", "CH4", "CH3OH", "H2O", "C2H6"]):
        m = molecule(name)
        m.translate([3.5 * k, 1.5 * (k % 3), 0.7 * (k % 2)])
        parts.append(m)
    atoms = parts[0]
    for m in parts[1:]:
        atoms += m
    return atoms


@pytest.mark.parametrize("n_ranks", [1, 2, 3, 5, 8])
def test_partition_is_a_balanced_contiguous_permutation(n_ranks):
    atoms = _mixed_molecule_cluster()
    nao = Basis("def2-svp").nao_per_atom(atoms.numbers)
    part = partition(atoms.positions, nao, n_ranks)
    assert sorted(part.order.tolist()) == list(range(len(atoms)))
    assert part.atom_ranges[0] == 0 and part.atom_ranges[-1] == len(atoms)
    assert np.all(np.diff(part.atom_ranges) > 0)
    # orbital rows: contiguous per rank, and the permutation maps new rows to original ones
    orbitals = part.orbital_order()
    first = np.concatenate([[0], np.cumsum(nao)])
    for new_position, atom in enumerate(part.order):
        rows = orbitals[part.orbital_offsets[new_position] : part.orbital_offsets[new_position + 1]]
        assert rows.tolist() == list(range(first[atom], first[atom + 1]))
    assert np.array_equal(part.new_index[part.order], np.arange(len(atoms)))
    # each cut is placed within one atom of the ideal orbital split
    loads = np.diff(part.orbital_ranges)
    assert loads.sum() == nao.sum()
    assert loads.max() - loads.min() <= 2 * nao.max() * np.ceil(np.log2(n_ranks) + 1)


def test_bisection_splits_a_crystal_into_slabs():
    atoms = si_crystal((4, 2, 2))  # longest along x: the first cut is a plane normal to x
    groups = bisect(atoms.positions, np.ones(len(atoms)), 2)
    x = atoms.positions[:, 0]
    assert x[groups[0]].max() <= x[groups[1]].min()
    assert abs(len(groups[0]) - len(groups[1])) <= 1


def test_bisection_refuses_more_parts_than_atoms():
    with pytest.raises(ValueError, match="use fewer ranks"):
        bisect(np.zeros((3, 3)), np.ones(3), 4)


def _pair_set(rows):
    return {tuple(int(v) for v in r) for r in rows}


@pytest.mark.parametrize(
    "atoms",
    [
        si_crystal((2, 2, 2)),
        si_cluster(),
        bulk("Si", "diamond", a=5.43),  # primitive 2-atom cell: many images of itself
        fcc111("Al", size=(3, 3, 3), vacuum=6.0),  # periodic in x, y only
    ],
    ids=["crystal", "cluster", "primitive", "slab"],
)
def test_halo_holds_every_image_within_the_radius(atoms):
    """Union over ranks of (owned i, image j, S) within r equals the vesin neighbour list."""
    radius, cutoff = 7.0, 4.0
    nao = np.ones(len(atoms), dtype=np.int64)
    n_ranks = min(3, len(atoms))
    part = partition(atoms.positions, nao, n_ranks)
    cell = atoms.cell[:]
    def reference(r):
        edges = neighbour_list(atoms.positions, cell, atoms.pbc, r, self_edges=True)
        return _pair_set(edges.atom_pairs())

    reference_halo, reference_pairs = reference(radius), reference(cutoff)
    found_halo, found_pairs = set(), set()
    for rank in range(n_ranks):
        halo = build_halo(atoms.positions, atoms.numbers, cell, atoms.pbc, part.owned(rank), radius)
        assert halo.n_owned == len(part.owned(rank))
        assert np.allclose(halo.positions, atoms.positions[halo.atom_ids] + halo.shifts @ cell)
        assert len(np.unique(np.column_stack([halo.atom_ids, halo.shifts]), axis=0)) == len(halo)
        owned = halo.positions[: halo.n_owned]
        distance = np.linalg.norm(owned[:, None] - halo.positions[None], axis=2)  # [owned, cluster]
        assert np.all(distance.min(axis=0) <= radius + 1e-6)  # no atom farther than needed
        for i, k in zip(*np.nonzero(distance < radius)):
            found_halo.add((*halo.shifts[k].tolist(), int(halo.atom_ids[i]), int(halo.atom_ids[k])))
        cutoff_of = {(z, z): cutoff for z in set(atoms.numbers)}
        pairs, distances = cluster_pairs(halo, atoms.positions, cell, cutoff_of)
        assert np.all(distances < cutoff)
        i, k = pairs[:, 0], pairs[:, 1]
        rows = np.column_stack([halo.shifts[k], halo.atom_ids[i], halo.atom_ids[k]])
        found_pairs |= _pair_set(rows)
    assert found_halo == reference_halo
    assert found_pairs == reference_pairs
