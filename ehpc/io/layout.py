"""Where each atom pair's block lives: in the flat block array and in the orbital matrix.

Every block-sparse array in ehpc (dataset records, model predictions, a rank's H and S
at inference, results files) stores the ``nao_i x nao_j`` block of pair p row-major,
blocks concatenated in pair order and unpadded (docs/DATASET.md).  A
:class:`BlockLayout` is built once per pair list and answers everything that layout
implies: where each block starts (``offsets``), the flat index of any set of blocks
(``entries``), and the matrix row and column of every entry (the CSR pattern), from
which Γ-point and Bloch matrices are built.
"""

from __future__ import annotations

import functools

import numpy as np


def ranges_within(sizes: np.ndarray) -> np.ndarray:
    """``[0..sizes[0]), [0..sizes[1]), ...`` concatenated."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    return np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)


class BlockLayout:
    """The flat layout of the blocks of ``pairs`` over atoms with ``nao`` orbitals each.

    Args:
        pairs: rows whose last two columns are the atoms ``i, j`` of each pair, e.g.
            ``[Rx, Ry, Rz, i, j]`` or ``[i, k]``.                 # [n_pairs, k]
        nao: orbitals per atom.                                    # [n_atoms]

    Attributes:
        sizes: entries of each block, ``nao_i * nao_j``.           # [n_pairs]
        offsets: start of each block in the flat array, then the total.  # [n_pairs + 1]
    """

    def __init__(self, pairs: np.ndarray, nao: np.ndarray):
        self.pairs = np.asarray(pairs, dtype=np.int64)
        self.nao = np.asarray(nao, dtype=np.int64)
        i, j = self.pairs[:, -2], self.pairs[:, -1]
        self.sizes = self.nao[i] * self.nao[j]  # [n_pairs]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def n_entries(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_orbitals(self) -> int:
        return int(self.nao.sum())

    def entries(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Flat indices of the blocks of pairs ``rows``, block after block.  # [n_selected]"""
        if rows is None:
            return np.arange(self.n_entries)
        rows = np.asarray(rows, dtype=np.int64)
        return np.repeat(self.offsets[rows], self.sizes[rows]) + ranges_within(self.sizes[rows])

    @functools.cached_property
    def orbital_start(self) -> np.ndarray:
        """First orbital of each atom, then the total.  # [n_atoms + 1]"""
        return np.concatenate([[0], np.cumsum(self.nao)]).astype(np.int64)

    @functools.cached_property
    def matrix_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Matrix row and column of every flat entry (the block-sparse pattern).

        Returns:
            ``(rows, cols)``, orbital indices.           # [n_entries], [n_entries]
        """
        i, j = self.pairs[:, -2], self.pairs[:, -1]
        e = ranges_within(self.sizes)  # position inside each row-major block  # [n_entries]
        width = np.repeat(self.nao[j], self.sizes)
        rows = np.repeat(self.orbital_start[i], self.sizes) + e // width  # [n_entries]
        cols = np.repeat(self.orbital_start[j], self.sizes) + e % width  # [n_entries]
        return rows, cols

    def gamma(self, flat: np.ndarray):
        """Γ-point matrix ``Σ_R M_ij(R)`` as scipy CSR; periodic images are summed.

        Args:
            flat: blocks in this layout, real or complex (complex: already multiplied
                by Bloch phases).                             # [n_entries]
        """
        import scipy.sparse as sp

        flat = np.asarray(flat)
        values = flat if np.iscomplexobj(flat) else flat.astype(np.float64, copy=False)
        n = self.n_orbitals
        return sp.coo_matrix((values, self.matrix_index), shape=(n, n)).tocsr()

    def bloch(self, flat: np.ndarray, k_frac: np.ndarray) -> np.ndarray:
        """Dense ``Σ_R e^{2πi k·R} M(R)`` at one fractional k (``pairs`` must be
        ``[Rx, Ry, Rz, i, j]``).                             # [n_orbitals, n_orbitals]"""
        phases = np.exp(2j * np.pi * self.pairs[:, :3] @ np.asarray(k_frac, dtype=np.float64))
        return self.gamma(np.repeat(phases, self.sizes) * flat).toarray()


def block_offsets(atom_pairs: np.ndarray, nao: np.ndarray) -> np.ndarray:
    """Start of each pair's block in a flat array, plus the total at the end."""
    return BlockLayout(atom_pairs, nao).offsets


def gamma_matrix(atom_pairs: np.ndarray, flat: np.ndarray, nao: np.ndarray):
    """Γ-point matrix ``Σ_R M_ij(R)`` as scipy CSR from block-sparse ``M(R)``.

    Args:
        atom_pairs: ``[Rx, Ry, Rz, i, j]`` rows.           # [n_pairs, 5]
        flat: row-major blocks laid out by ``block_offsets``, real or complex
            (complex: already multiplied by Bloch phases).  # [n_entries]
        nao: orbitals per atom.                             # [n_atoms]
    """
    return BlockLayout(np.asarray(atom_pairs).reshape(-1, 5), nao).gamma(flat)


def bloch_sum(atom_pairs: np.ndarray, flat: np.ndarray, nao: np.ndarray,
              k_frac: np.ndarray) -> np.ndarray:
    """Dense ``Σ_R e^{2πi k·R} M(R)`` from block-sparse ``M(R)`` at one fractional k.

    Args:
        atom_pairs: ``[Rx, Ry, Rz, i, j]`` rows.            # [n_pairs, 5]
        flat: row-major blocks laid out by ``block_offsets``.  # [n_entries]
        nao: orbitals per atom.                              # [n_atoms]
        k_frac: k in units of the reciprocal lattice vectors.  # [3]
    """
    return BlockLayout(np.asarray(atom_pairs).reshape(-1, 5), nao).bloch(flat, k_frac)
