"""Neighbour lists with periodic images, from vesin (O(N) cell lists, no Python loops).

An edge ``(i, j, S)`` joins atom ``i`` in the home cell to atom ``j`` displaced by the
integer cell shift ``S``: its vector is ``positions[j] + S @ cell - positions[i]``.
This is the ``(Rx, Ry, Rz, i, j)`` key of the dataset's ``atom_pairs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Edges:
    """A full (both directions) neighbour list.

    Attributes:
        sender: atom index ``i`` of each edge.        # [n_edges]
        receiver: atom index ``j`` of each edge.      # [n_edges]
        shifts: integer cell shift ``S`` of ``j``.    # [n_edges, 3]
        vectors: ``r_j + S @ cell - r_i`` in Å.       # [n_edges, 3]
    """

    sender: np.ndarray
    receiver: np.ndarray
    shifts: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.sender)

    @property
    def lengths(self) -> np.ndarray:
        return np.linalg.norm(self.vectors, axis=1)

    def atom_pairs(self) -> np.ndarray:
        """The dataset's ``[Rx, Ry, Rz, i, j]`` rows."""  # [n_edges, 5]
        return np.column_stack([self.shifts, self.sender, self.receiver]).astype(np.int64)


def neighbour_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc,
    cutoff: float,
    self_edges: bool = False,
) -> Edges:
    """All ordered pairs closer than ``cutoff`` Å, with periodic images where ``pbc``.

    Args:
        positions: Cartesian coordinates in Å.               # [n_atoms, 3]
        cell: lattice vectors as rows, in Å (ignored where pbc is False).
        pbc: periodicity per axis (bool or three bools).
        cutoff: radius in Å.
        self_edges: also return the on-site pair ``(i, i, 0)`` of every atom.

    Returns:
        Edges sorted by (sender, receiver, shift) so the order is reproducible.
    """
    from vesin import NeighborList

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    box = np.where(pbc[:, None], cell, 0.0) if pbc.any() else np.zeros((3, 3))
    if pbc.any() and not pbc.all():
        # vesin needs a full-rank box; non-periodic axes get a vector that is never used
        box = _complete_box(box, pbc, positions, cutoff)
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Edges(empty, empty, np.zeros((0, 3), np.int64), np.zeros((0, 3)))
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s, d = nl.compute(positions, box, [bool(p) for p in pbc], quantities="ijSD")
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    s = s.astype(np.int64)
    if self_edges:
        n = len(positions)
        i = np.concatenate([np.arange(n), i])
        j = np.concatenate([np.arange(n), j])
        s = np.concatenate([np.zeros((n, 3), np.int64), s])
        d = np.concatenate([np.zeros((n, 3)), d])
    order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    return Edges(i[order], j[order], s[order], np.asarray(d, dtype=np.float64)[order])


def _complete_box(box: np.ndarray, pbc: np.ndarray, positions: np.ndarray, cutoff: float):
    """Fill non-periodic rows with orthogonal vectors longer than the structure."""
    box = box.copy()
    extent = np.ptp(positions, axis=0).max() + 2 * cutoff + 1.0
    periodic_rows = box[pbc]
    for axis in np.flatnonzero(~pbc):
        basis = np.vstack([box[pbc], box[~pbc][: 0]])
        # direction orthogonal to the periodic vectors already placed
        candidate = np.eye(3)[axis]
        for v in basis:
            candidate = candidate - candidate @ v / (v @ v) * v
        if np.linalg.norm(candidate) < 1e-8:
            candidate = np.cross(*periodic_rows[:2]) if len(periodic_rows) >= 2 else np.eye(3)[axis]
        box[axis] = candidate / np.linalg.norm(candidate) * extent
        pbc = pbc.copy()
        pbc[axis] = True  # include this row in later orthogonalisation
    return box


def receptive_cutoff(edge_cutoff: float, n_layers: int) -> float:
    """Radius whose atoms can influence an edge after ``n_layers`` of message passing."""
    return edge_cutoff * (n_layers + 1)
