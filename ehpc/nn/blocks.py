"""Orbital blocks <-> irreducible representations, with Clebsch-Gordan coefficients.

The sub-block between radial function ``a`` (angular momentum l1) of atom i and ``b``
(l2) of atom j transforms as ``D^{l1} H_ab D^{l2 T}``, i.e. as the product
representation l1 x l2 = sum over L = |l1-l2| .. l1+l2 of irreps L with parity
(-1)^(l1+l2).  In e3nn's order and frame

    H_ab[m1, m2] = sum_L sum_M sqrt(2L+1) C^{l1 l2 L}[m1, m2, M] x_L[M]

with ``C = o3.wigner_3j(l1, l2, L)``; the sqrt(2L+1) makes the map orthogonal.  The
conversion to PySCF's AO order, ``H_pyscf = Q_i^T H_e3nn Q_j`` with the signed
permutation ``Q = ehpc.basis.pyscf_to_e3nn(ls)``, is linear too, so a whole pair block
is one orthogonal matrix applied to one irreps vector: ``flat_block = x @ W``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3

from ..basis import angular_matrix, atom_block_diag


def parity(l1: int, l2: int) -> int:
    """Parity of every irrep in l1 x l2: orbitals of angular momentum l have (-1)^l."""
    return (-1) ** (l1 + l2)


def coupled_ls(l1: int, l2: int) -> range:
    """Total angular momenta L of the product of l1 and l2 (triangle rule)."""
    return range(abs(l1 - l2), l1 + l2 + 1)


@dataclass(frozen=True)
class PairBlockSpec:
    """How the irreps vector of one (element i, element j) pair becomes its H block.

    Attributes:
        ls_i: angular momentum per radial function of element i (PySCF order).
        ls_j: the same for element j.
        irreps: irreps the network must output, grouped by irrep (one entry per
            distinct (L, parity), as ``o3.Linear`` likes them).
        matrix: ``W`` with ``flat_block_pyscf = x @ W``; orthogonal.   # [dim, nao_i * nao_j]
        slot: which (a, b, L) coupling each component belongs to.      # [dim]
        scalar: components that are rotation- and inversion-invariant (0e).  # [dim]
    """

    ls_i: tuple[int, ...]
    ls_j: tuple[int, ...]
    irreps: o3.Irreps
    matrix: np.ndarray
    slot: np.ndarray
    scalar: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return _nao(self.ls_i), _nao(self.ls_j)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_slots(self) -> int:
        return int(self.slot.max()) + 1 if len(self.slot) else 0

    def to_irreps(self, flat: np.ndarray) -> np.ndarray:
        """Irreps components of flat PySCF-order blocks (inverse of ``x @ W``)."""
        return np.asarray(flat) @ self.matrix.T  # [n, dim]

    def to_blocks(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) @ self.matrix  # [n, nao_i * nao_j]


def _nao(ls) -> int:
    return sum(2 * l + 1 for l in ls)


@functools.lru_cache(maxsize=None)
def pair_block_spec(ls_i: tuple[int, ...], ls_j: tuple[int, ...]) -> PairBlockSpec:
    """The Clebsch-Gordan map of the (ls_i, ls_j) pair block (cached)."""
    return build_pair_block_spec(tuple(ls_i), tuple(ls_j))


def build_pair_block_spec(
    ls_i, ls_j, angular: Callable[[int], np.ndarray] = angular_matrix
) -> PairBlockSpec:
    """Build the map of :func:`pair_block_spec` with a given PySCF -> e3nn convention.

    Args:
        ls_i: angular momentum per radial function of element i.
        ls_j: the same for element j.
        angular: ``Q_l`` with ``Y_e3nn = Q_l Y_pyscf``; ``ehpc.basis.angular_matrix``
            is the right one, others exist only to show that tests catch a wrong one.
    """
    n_i, n_j = _nao(ls_i), _nao(ls_j)
    start_i = np.concatenate([[0], np.cumsum([2 * l + 1 for l in ls_i])])
    start_j = np.concatenate([[0], np.cumsum([2 * l + 1 for l in ls_j])])
    # one row of W per (a, b, L, M), collected per irrep (L, parity) so that the readout
    # sees a few wide irreps instead of many narrow ones
    rows: dict[tuple[int, int], list[np.ndarray]] = {}
    slots: dict[tuple[int, int], list[int]] = {}
    slot = 0
    for a, l1 in enumerate(ls_i):
        for b, l2 in enumerate(ls_j):
            for big_l in coupled_ls(l1, l2):
                cg = o3.wigner_3j(l1, l2, big_l, dtype=torch.float64).numpy()
                # cg: [2l1+1, 2l2+1, 2L+1]
                block = np.zeros((2 * big_l + 1, n_i, n_j))
                block[:, start_i[a] : start_i[a + 1], start_j[b] : start_j[b + 1]] = (
                    np.sqrt(2 * big_l + 1) * cg.transpose(2, 0, 1)
                )
                key = (big_l, parity(l1, l2))
                rows.setdefault(key, []).append(block.reshape(2 * big_l + 1, n_i * n_j))
                slots.setdefault(key, []).append(slot)
                slot += 1
    keys = sorted(rows, key=lambda k: (k[0], -k[1]))
    irreps = o3.Irreps([(len(rows[k]), k) for k in keys])
    w_e3nn = np.concatenate(
        [np.stack(rows[k], axis=0).reshape(-1, n_i * n_j) for k in keys], axis=0
    )  # [dim, n_i * n_j], rows ordered (irrep, multiplicity, M) like e3nn features
    slot_of = np.concatenate(
        [np.repeat(np.asarray(slots[k]), 2 * k[0] + 1) for k in keys]
    ).astype(np.int64)  # [dim]
    # flat(Q_i^T H Q_j) = flat(H) @ kron(Q_i, Q_j)
    q_i, q_j = atom_block_diag(ls_i, angular), atom_block_diag(ls_j, angular)
    w = w_e3nn @ np.kron(q_i, q_j)  # [dim, n_i * n_j]
    scalar = np.concatenate(
        [np.full(len(rows[k]) * (2 * k[0] + 1), k == (0, 1)) for k in keys]
    )  # [dim]
    return PairBlockSpec(tuple(ls_i), tuple(ls_j), irreps, w, slot_of, scalar)


def transpose_index(n1: int, n2: int) -> np.ndarray:
    """Gather index turning a flat row-major ``n1 x n2`` block into its transpose.

    ``flat.T.ravel() == flat.ravel()[transpose_index(n1, n2)]``.
    """
    return np.arange(n1 * n2).reshape(n1, n2).T.ravel()
