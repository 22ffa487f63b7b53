"""Spatial partition of the atoms over MPI ranks by recursive coordinate bisection.

Each cut halves the longest extent of a group so that the orbital counts of the two
sides are in proportion to the ranks they will get; groups therefore stay compact (few
halo atoms, few off-rank matrix columns) and the ranks hold nearly equal numbers of
matrix rows.  Atoms are then renumbered so that rank ``r`` owns the contiguous atoms
``atom_ranges[r]:atom_ranges[r+1]`` and orbitals ``orbital_ranges[r]:orbital_ranges[r+1]``,
which is the row distribution of a PETSc MPIAIJ matrix.

The partition depends only on positions and orbital counts, so every rank computes the
same one independently; it costs O(N) memory (one integer per atom), like the positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.layout import ranges_within


@dataclass(frozen=True)
class Partition:
    """Atoms and orbitals distributed over ranks.

    Attributes:
        order: original atom id at each new position (the permutation).  # [n_atoms]
        atom_ranges: first new atom index of each rank, and the total.  # [n_ranks + 1]
        nao: orbitals of each atom in the ORIGINAL order.              # [n_atoms]
    """

    order: np.ndarray
    atom_ranges: np.ndarray
    nao: np.ndarray

    @property
    def n_ranks(self) -> int:
        return len(self.atom_ranges) - 1

    @property
    def n_atoms(self) -> int:
        return len(self.order)

    @property
    def new_index(self) -> np.ndarray:
        """New position of each original atom (inverse permutation)."""  # [n_atoms]
        inverse = np.empty_like(self.order)
        inverse[self.order] = np.arange(len(self.order))
        return inverse

    @property
    def orbital_offsets(self) -> np.ndarray:
        """First orbital of each atom in the NEW order, and the total."""  # [n_atoms + 1]
        return np.concatenate([[0], np.cumsum(self.nao[self.order])]).astype(np.int64)

    @property
    def orbital_ranges(self) -> np.ndarray:
        """First orbital row of each rank, and the total."""  # [n_ranks + 1]
        return self.orbital_offsets[self.atom_ranges]

    @property
    def n_orbitals(self) -> int:
        return int(self.nao.sum())

    def owned(self, rank: int) -> np.ndarray:
        """Original ids of the atoms rank ``rank`` owns, in new order."""
        return self.order[self.atom_ranges[rank] : self.atom_ranges[rank + 1]]

    def orbital_order(self) -> np.ndarray:
        """Original orbital index at each new orbital position."""  # [n_orbitals]
        start = np.concatenate([[0], np.cumsum(self.nao)])[:-1]  # original first orbital per atom
        sizes = self.nao[self.order]
        return np.repeat(start[self.order], sizes) + ranges_within(sizes)




def bisect(positions: np.ndarray, weights: np.ndarray, n_parts: int) -> list[np.ndarray]:
    """Split points into ``n_parts`` compact groups of nearly equal total weight.

    Args:
        positions: Cartesian coordinates.                  # [n, 3]
        weights: positive weight of each point (orbitals).  # [n]
        n_parts: number of groups (any positive integer, not only powers of two).

    Returns:
        Indices of each group, each sorted ascending; groups in spatial order.
    """
    if n_parts < 1:
        raise ValueError(f"cannot split atoms into {n_parts} parts")
    if n_parts > len(positions):
        raise ValueError(
            f"cannot give {n_parts} ranks a share of only {len(positions)} atoms; use fewer ranks"
        )
    parts: list[np.ndarray] = []
    weights = np.asarray(weights, dtype=np.float64)
    _bisect(np.arange(len(positions)), positions, weights, n_parts, parts)
    return [np.sort(p) for p in parts]


def _bisect(
    ids: np.ndarray, positions: np.ndarray, weights: np.ndarray, n_parts: int, out: list
) -> None:
    if n_parts == 1:
        out.append(ids)
        return
    points = positions[ids]  # [n_ids, 3]
    axis = int(np.argmax(np.ptp(points, axis=0)))
    # stable sort with the atom id as tie-break keeps the cut reproducible on every rank
    order = ids[np.lexsort((ids, points[:, axis]))]
    n_left = n_parts // 2
    cumulative = np.cumsum(weights[order])  # [n_ids]
    target = cumulative[-1] * n_left / n_parts
    cut = int(np.searchsorted(cumulative, target))
    below = cumulative[cut - 1] if cut else 0.0  # left total without atom ``cut``
    if cut < len(order) - 1 and abs(cumulative[cut] - target) < abs(below - target):
        cut += 1  # the left total with atom ``cut`` is closer to the target
    cut = min(max(cut, n_left), len(order) - (n_parts - n_left))  # every part keeps an atom
    _bisect(order[:cut], positions, weights, n_left, out)
    _bisect(order[cut:], positions, weights, n_parts - n_left, out)


def partition(positions: np.ndarray, nao: np.ndarray, n_ranks: int) -> Partition:
    """Recursive coordinate bisection of the atoms over ``n_ranks``, balancing orbitals.

    Args:
        positions: Cartesian positions in Å, original order.  # [n_atoms, 3]
        nao: orbitals per atom, original order.              # [n_atoms]
        n_ranks: number of MPI ranks.
    """
    nao = np.asarray(nao, dtype=np.int64)
    parts = bisect(np.asarray(positions, dtype=np.float64), nao, n_ranks)
    order = np.concatenate(parts).astype(np.int64)
    atom_ranges = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return Partition(order=order, atom_ranges=atom_ranges, nao=nao)
