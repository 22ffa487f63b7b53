"""Each rank's atoms plus every atom image within reach of them, as an explicit cluster.

The cluster is non-periodic: periodic images are separate atoms carrying the integer
cell shift they came from, so a pair ``(owned i, cluster k)`` is the periodic pair
``(i, atom_ids[k], shifts[k])`` of the dataset's ``[Rx, Ry, Rz, i, j]`` convention.

Candidates are the atom images inside the owned atoms' bounding box grown by the
radius, over the few cell shifts that can reach it: one vectorised pass over the
positions per shift (O(N) time, like reading them), while what is kept, and every
later array, scales with the owned volume plus its skin, not with the structure.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: slack (Å) on KD-tree searches before distances are recomputed exactly
SEARCH_SLACK = 1.0e-6


@dataclass(frozen=True)
class Halo:
    """Owned atoms (first ``n_owned``) followed by the halo atoms.

    Attributes:
        atom_ids: original atom id of each cluster atom.   # [n_cluster]
        shifts: integer cell shift of each cluster atom.   # [n_cluster, 3]
        positions: Cartesian positions in Å.               # [n_cluster, 3]
        numbers: atomic numbers.                           # [n_cluster]
        n_owned: the owned atoms come first, zero shift, in partition order.
        radius: every image within this distance (Å) of an owned atom is present.
    """

    atom_ids: np.ndarray
    shifts: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    n_owned: int
    radius: float

    def __len__(self) -> int:
        return len(self.atom_ids)


def build_halo(
    positions: np.ndarray,
    numbers: np.ndarray,
    cell: np.ndarray,
    pbc,
    owned: np.ndarray,
    radius: float,
) -> Halo:
    """The cluster of ``owned`` atoms and every atom image within ``radius`` Å of them.

    Args:
        positions: all positions in Å, original order (not wrapped).  # [n_atoms, 3]
        numbers: all atomic numbers.                                  # [n_atoms]
        cell: lattice vectors as rows in Å.                           # [3, 3]
        pbc: periodicity per axis.
        owned: original ids of the owned atoms, in partition order.   # [n_owned]
        radius: halo radius in Å (receptive field or pair range).
    """
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, dtype=np.float64)
    owned = np.asarray(owned, dtype=np.int64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    lower = positions[owned].min(axis=0) - radius
    upper = positions[owned].max(axis=0) + radius
    ids, shifts = _images_in_box(positions, cell, pbc, lower, upper)
    # drop the owned atoms themselves; they open the cluster
    is_owned = np.zeros(len(positions), dtype=bool)
    is_owned[owned] = True
    keep = ~(is_owned[ids] & ~shifts.any(axis=1))
    ids, shifts = ids[keep], shifts[keep]
    image_positions = positions[ids] + shifts @ cell  # [n_candidates, 3]
    if len(ids):
        distance, _ = cKDTree(positions[owned]).query(
            image_positions, k=1, distance_upper_bound=radius + SEARCH_SLACK
        )  # [n_candidates]
        near = np.isfinite(distance)
        ids, shifts, image_positions = ids[near], shifts[near], image_positions[near]
    return Halo(
        atom_ids=np.concatenate([owned, ids]),
        shifts=np.concatenate([np.zeros((len(owned), 3), np.int64), shifts]),
        positions=np.concatenate([positions[owned], image_positions]),
        numbers=np.asarray(numbers)[np.concatenate([owned, ids])],
        n_owned=len(owned),
        radius=float(radius),
    )


def _images_in_box(positions, cell, pbc, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """Every (atom, cell shift) whose image lies inside the box ``[lower, upper]``."""
    if not pbc.any():
        inside = np.all((positions >= lower) & (positions <= upper), axis=1)
        ids = np.flatnonzero(inside)
        return ids, np.zeros((len(ids), 3), np.int64)
    reciprocal = np.linalg.inv(_full_cell(cell, pbc)).T  # rows b_a with a_k . b_a = delta
    corners = np.array(list(itertools.product(*zip(lower, upper))))  # [8, 3]
    box_frac = corners @ reciprocal.T  # [8, 3] fractional coordinates of the box corners
    frac = positions @ reciprocal.T  # [n_atoms, 3]
    ranges = []
    for a in range(3):
        if pbc[a]:
            first = int(np.floor(box_frac[:, a].min() - frac[:, a].max()))
            last = int(np.ceil(box_frac[:, a].max() - frac[:, a].min()))
            ranges.append(np.arange(first, last + 1))
        else:
            ranges.append(np.zeros(1, np.int64))
    id_parts, shift_parts = [], []
    for shift in np.array(np.meshgrid(*ranges, indexing="ij")).reshape(3, -1).T:
        image = positions + shift @ cell  # [n_atoms, 3]
        inside = np.flatnonzero(np.all((image >= lower) & (image <= upper), axis=1))
        if len(inside):
            id_parts.append(inside)
            shift_parts.append(np.broadcast_to(shift, (len(inside), 3)))
    if not id_parts:
        return np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    return np.concatenate(id_parts).astype(np.int64), np.concatenate(shift_parts).astype(np.int64)


def _full_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The cell with its non-periodic rows replaced by unit vectors normal to the periodic ones.

    Fractional coordinates along the periodic axes are then well defined whatever the
    non-periodic rows held (often zeros).
    """
    full = cell.copy()
    periodic = cell[pbc]
    _, _, vt = np.linalg.svd(periodic) if len(periodic) else (None, None, np.eye(3))
    full[~pbc] = vt[len(periodic) :]  # orthonormal complement of the periodic vectors
    return full


def cluster_pairs(
    halo: Halo, positions: np.ndarray, cell: np.ndarray, cutoff_of: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (owned i, cluster k) closer than ``cutoff_of(Z_i, Z_k)``, on-site included.

    The distance of each candidate is recomputed from the ORIGINAL positions as
    ``|(r_j - r_i) + S @ cell|``; that expression is exactly antisymmetric in floating
    point, so the pair (i, j, S) is kept if and only if (j, i, -S) is, whichever rank
    finds it, and the sparsity pattern is exactly symmetric.

    Args:
        halo: the rank's cluster.
        positions: all positions in Å, original order.     # [n_atoms, 3]
        cell: lattice vectors as rows in Å.                # [3, 3]
        cutoff_of: ``{(Z_i, Z_j): range}`` in Å (strict ``<``).

    Returns:
        ``pairs`` ``[i, k]`` cluster indices sorted by ``(i, k)`` and their distances.
    """
    from scipy.spatial import cKDTree

    max_cutoff = max(cutoff_of.values())
    owned_tree = cKDTree(halo.positions[: halo.n_owned])
    near = owned_tree.sparse_distance_matrix(
        cKDTree(halo.positions), max_cutoff + SEARCH_SLACK, output_type="ndarray"
    )  # structured [n_candidates] (i, j, v); zero distances (on-site) are omitted
    i = np.concatenate([np.arange(halo.n_owned), near["i"].astype(np.int64)])
    k = np.concatenate([np.arange(halo.n_owned), near["j"].astype(np.int64)])
    vectors = (positions[halo.atom_ids[k]] - positions[halo.atom_ids[i]]) + halo.shifts[k] @ cell
    distance = np.sqrt((vectors**2).sum(axis=1))  # [n_candidates]
    limit = _pair_limits(halo.numbers[i], halo.numbers[k], cutoff_of)
    keep = (distance < limit) | (i == k)
    i, k, distance = i[keep], k[keep], distance[keep]
    unique = np.unique(np.column_stack([i, k]), axis=0, return_index=True)[1]
    return np.column_stack([i, k])[unique], distance[unique]


def _pair_limits(z_i: np.ndarray, z_j: np.ndarray, cutoff_of) -> np.ndarray:
    out = np.empty(len(z_i))
    for (a, b), r in cutoff_of.items():
        out[(z_i == a) & (z_j == b)] = r
    return out
