"""Dense atomic-orbital matrices -> the dataset's block-sparse pair arrays.

A DFT code hands back whole ``nao x nao`` matrices, one per lattice translation R.  The
dataset keeps only the blocks ``H_ij(R) = <phi_i(cell 0)|H|phi_j(cell R)>`` of atom pairs
closer than the cutoff; this module picks those blocks out, row-major, in pair order,
and wraps everything into a :class:`~ehpc.io.dataset.HamiltonianRecord`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms

from ..basis import Basis
from ..graph import neighbour_list
from ..io.dataset import HamiltonianRecord, block_offsets
from ..units import HARTREE_TO_EV

Shift = tuple[int, int, int]


def pair_list(atoms: Atoms, cutoff: float) -> np.ndarray:
    """Every ``[Rx, Ry, Rz, i, j]`` with ``|r_j + R @ cell - r_i| < cutoff``, plus on-site pairs.

    Both directions ``(i, j, R)`` and ``(j, i, -R)`` are included.
    """
    edges = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, cutoff, self_edges=True)
    return edges.atom_pairs()  # [n_pairs, 5]


def ao_offsets(nao_per_atom: np.ndarray) -> np.ndarray:
    """First AO index of every atom in the dense matrices, plus the total at the end."""
    return np.concatenate([[0], np.cumsum(nao_per_atom)]).astype(np.int64)  # [n_atoms + 1]


def unique_shifts(atom_pairs: np.ndarray) -> list[Shift]:
    """The distinct cell shifts R of a pair list, in sorted order."""
    shifts = np.unique(np.asarray(atom_pairs)[:, :3], axis=0)  # [n_shifts, 3]
    return [tuple(int(x) for x in s) for s in shifts]


def gather_blocks(
    dense_at: Callable[[Shift], np.ndarray],
    atom_pairs: np.ndarray,
    nao_per_atom: np.ndarray,
) -> np.ndarray:
    """Flat concatenation of the pair blocks of dense matrices.

    Args:
        dense_at: returns the dense real ``nao x nao`` matrix M(R) for a shift R; called
            once per distinct R, so it may compute M(R) on demand.
        atom_pairs: rows ``[Rx, Ry, Rz, i, j]``.                     # [n_pairs, 5]
        nao_per_atom: orbitals of each atom.                         # [n_atoms]

    Returns:
        The blocks ``M(R)[i_slice, j_slice]`` flattened row-major and concatenated in
        pair order, laid out as :func:`ehpc.io.dataset.block_offsets` says.  # [n_entries]
    """
    atom_pairs = np.asarray(atom_pairs, dtype=np.int64)
    starts = ao_offsets(nao_per_atom)
    offsets = block_offsets(atom_pairs, np.asarray(nao_per_atom))
    flat = np.empty(offsets[-1])  # [n_entries]
    for shift in unique_shifts(atom_pairs):
        matrix = np.asarray(dense_at(shift))  # [nao, nao]
        if np.iscomplexobj(matrix):
            raise ValueError(f"matrix at cell shift {shift} is complex; real-space blocks are real")
        rows = np.flatnonzero((atom_pairs[:, :3] == shift).all(axis=1))
        for p in rows:
            i, j = atom_pairs[p, 3], atom_pairs[p, 4]
            block = matrix[starts[i] : starts[i + 1], starts[j] : starts[j + 1]]
            flat[offsets[p] : offsets[p + 1]] = block.ravel()
    return flat


def make_record(
    atoms: Atoms,
    name: str,
    basis: Basis,
    atom_pairs: np.ndarray,
    hamiltonian_hartree: np.ndarray,
    overlap: np.ndarray,
    attrs: dict,
) -> HamiltonianRecord:
    """Assemble a checked record; the flat Hamiltonian arrives in Hartree, leaves in eV."""
    nao = basis.nao_per_atom(atoms.numbers)
    record = HamiltonianRecord(
        name=name,
        numbers=np.asarray(atoms.numbers, dtype=np.int64),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=np.asarray(atoms.cell[:], dtype=np.float64),
        pbc=np.asarray(atoms.pbc, dtype=bool),
        atom_pairs=np.asarray(atom_pairs, dtype=np.int64),
        block_offsets=block_offsets(atom_pairs, nao),
        hamiltonian=np.asarray(hamiltonian_hartree) * HARTREE_TO_EV,
        overlap=np.asarray(overlap, dtype=np.float64),
        attrs=dict(attrs),
    )
    record.check(basis)
    return record
