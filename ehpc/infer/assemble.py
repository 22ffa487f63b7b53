"""Distributed Γ-point H and S as PETSc MPIAIJ matrices with exact preallocation.

Rank ``r`` owns the orbital rows of its atoms (``Partition.orbital_ranges``) and sets
only those rows.  The Γ-point matrix sums the blocks of all periodic images,
``H_ij(Γ) = Σ_R H_ij(R)``, so pairs that differ only in their cell shift land on the
same entries.  H and S share one sparsity pattern (every pair closer than the larger of
the model cutoff and the overlap range), which lets ``H - σ S`` be formed with
``SAME_NONZERO_PATTERN`` and factorised with one symbolic analysis.

The diagonal-block / off-diagonal-block nonzeros of every row are counted from the atom
pairs before the matrix is created, exactly: PETSc would stop with an error on any entry
outside them, and :func:`check_preallocation` confirms none of them was left unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.layout import BlockLayout, ranges_within
from .halo import Halo
from .partition import Partition


class AssemblyError(RuntimeError):
    """A matrix whose layout or symmetry is not what the pipeline requires."""


@dataclass
class LocalPattern:
    """One rank's rows of the block pattern, in the partition's (new) numbering.

    Attributes:
        row_atom: new index of the row atom of each pair.         # [n_pairs]
        col_atom: new index of the column atom of each pair.      # [n_pairs]
        row_start: first pair of each owned atom, and the total.  # [n_owned + 1]
        layout: where each pair's block lies in the rank's flat H and S.
    """

    row_atom: np.ndarray
    col_atom: np.ndarray
    row_start: np.ndarray
    layout: BlockLayout


def local_pattern(partition: Partition, halo: Halo, pairs: np.ndarray, rank: int,
                  layout: BlockLayout | None = None) -> LocalPattern:
    """Map the rank's cluster pairs ``[i, k]`` (sorted by i) to new atom indices.

    ``layout`` is the block layout of ``pairs`` in the cluster, if the caller has it.
    """
    first = int(partition.atom_ranges[rank])
    row_atom = first + pairs[:, 0]
    col_atom = partition.new_index[halo.atom_ids[pairs[:, 1]]]
    row_start = np.searchsorted(pairs[:, 0], np.arange(halo.n_owned + 1))
    if layout is None:
        layout = BlockLayout(pairs, partition.nao[halo.atom_ids])
    return LocalPattern(row_atom=row_atom, col_atom=col_atom, row_start=row_start, layout=layout)


def preallocation(
    partition: Partition, pattern: LocalPattern, rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact nonzeros per local row in the diagonal and off-diagonal PETSc blocks.

    Returns:
        ``(d_nnz, o_nnz)``, one entry per local orbital row.  # [n_local_rows] each
    """
    nao_new = partition.nao[partition.order]  # [n_atoms]
    lo, hi = partition.atom_ranges[rank], partition.atom_ranges[rank + 1]
    # distinct (row atom, column atom): images of one pair share their entries at Γ
    distinct = np.unique(np.column_stack([pattern.row_atom, pattern.col_atom]), axis=0)
    owned_col = (distinct[:, 1] >= lo) & (distinct[:, 1] < hi)
    row = distinct[:, 0] - lo
    n_owned = int(hi - lo)
    d_atom = np.bincount(row, weights=nao_new[distinct[:, 1]] * owned_col, minlength=n_owned)
    o_atom = np.bincount(row, weights=nao_new[distinct[:, 1]] * ~owned_col, minlength=n_owned)
    sizes = nao_new[lo:hi]
    return (np.repeat(d_atom, sizes).astype(np.int32), np.repeat(o_atom, sizes).astype(np.int32))


def assemble(
    partition: Partition,
    pattern: LocalPattern,
    flats: list[np.ndarray],
    comm,
    symmetrize: bool = True,
):
    """Γ-point PETSc matrices from the rank's flat blocks.

    Args:
        partition: the atom/orbital distribution.
        pattern: the rank's pairs in new numbering.
        flats: flat blocks (e.g. ``[H, S]``) laid out over the pattern's pairs, in its order.
        comm: the PETSc communicator (``PETSc.COMM_WORLD``).
        symmetrize: replace each matrix by ``(A + A^T) / 2`` (removes round-off
            asymmetry between blocks computed on different ranks).

    Returns:
        ``(matrices, asymmetry)``: one assembled MPIAIJ matrix per flat array, and the
        relative Frobenius norm ``|A - A^T| / |A|`` each had before symmetrisation.
    """
    from petsc4py import PETSc

    rank = comm.getRank()
    lo, hi = partition.orbital_ranges[rank], partition.orbital_ranges[rank + 1]
    n = partition.n_orbitals
    d_nnz, o_nnz = preallocation(partition, pattern, rank)
    matrices = []
    for _ in flats:
        layout = ((hi - lo, n), (hi - lo, n))
        mat = PETSc.Mat().createAIJ(size=layout, nnz=(d_nnz, o_nnz), comm=comm)
        mat.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
        mat.setOption(PETSc.Mat.Option.IGNORE_ZERO_ENTRIES, False)  # the pattern is kept whole
        matrices.append(mat)
    _set_rows(partition, pattern, flats, matrices)
    asymmetry = []
    for mat in matrices:
        mat.assemble()
        check_preallocation(mat)
        asymmetry.append(relative_asymmetry(mat, symmetrize))
        for option in ("SYMMETRIC", "HERMITIAN", "STRUCTURALLY_SYMMETRIC", "SYMMETRY_ETERNAL"):
            mat.setOption(getattr(PETSc.Mat.Option, option), True)
    return matrices, asymmetry


def _set_rows(partition: Partition, pattern: LocalPattern, flats, matrices) -> None:
    """Insert each owned atom's row panel (all its column blocks, images summed)."""
    nao_new = partition.nao[partition.order]
    start_new = partition.orbital_offsets
    sizes, offsets = pattern.layout.sizes, pattern.layout.offsets  # [n_pairs], [n_pairs + 1]
    for a in range(len(pattern.row_start) - 1):
        p0, p1 = pattern.row_start[a], pattern.row_start[a + 1]
        if p0 == p1:
            continue
        atom = int(pattern.row_atom[p0])
        col_atoms, which = np.unique(pattern.col_atom[p0:p1], return_inverse=True)
        panel_col = np.concatenate([[0], np.cumsum(nao_new[col_atoms])])  # each column atom's start
        n_rows, n_cols = int(nao_new[atom]), int(panel_col[-1])
        block = sizes[p0:p1]
        width = np.repeat(nao_new[pattern.col_atom[p0:p1]], block)  # [n_entries]
        e = ranges_within(block)  # position inside each row-major block  # [n_entries]
        column = np.repeat(panel_col[which], block) + e % width  # [n_entries]
        linear = (e // width) * n_cols + column  # [n_entries]
        rows = np.arange(start_new[atom], start_new[atom] + n_rows, dtype=np.int32)
        cols = np.concatenate([np.arange(start_new[c], start_new[c] + nao_new[c])
                               for c in col_atoms])
        for flat, mat in zip(flats, matrices):
            # images of one pair add up at Γ: bincount sums their entries
            values = flat[offsets[p0] : offsets[p1]]
            panel = np.bincount(linear, weights=values, minlength=n_rows * n_cols)
            mat.setValues(rows, cols.astype(np.int32), panel.reshape(n_rows, n_cols))


def check_preallocation(mat) -> None:
    """Raise if the assembled matrix left preallocated entries unused (or had to malloc)."""
    from petsc4py import PETSc

    info = mat.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)
    if info["nz_unneeded"] != 0 or info["mallocs"] != 0:
        raise AssemblyError(
            f"preallocation was not exact: {int(info['nz_unneeded'])} unused entries, "
            f"{int(info['mallocs'])} mallocs"
        )


def relative_asymmetry(mat, symmetrize: bool = False) -> float:
    """``|A - A^T|_F / |A|_F``, optionally replacing A by ``(A + A^T) / 2`` in place.

    The pair pattern is symmetric, so A^T has exactly A's nonzero pattern.
    """
    from petsc4py import PETSc

    same = PETSc.Mat.Structure.SAME_NONZERO_PATTERN
    diff = PETSc.Mat()
    mat.transpose(diff)  # an empty target makes a new matrix (no target would transpose in place)
    diff.axpy(-1.0, mat, structure=same)  # A^T - A
    norm = mat.norm(PETSc.NormType.FROBENIUS)
    value = diff.norm(PETSc.NormType.FROBENIUS) / norm if norm > 0 else 0.0
    if symmetrize:
        mat.axpy(0.5, diff, structure=same)
    diff.destroy()
    return float(value)


def gather_on_root(mat, partition: Partition, comm):
    """The whole matrix as scipy CSR in the ORIGINAL orbital order, on rank 0 only.

    For tests and small systems: it defeats the point of distributing the matrix.
    """
    import scipy.sparse as sp

    indptr, indices, values = mat.getValuesCSR()
    lo, hi = mat.getOwnershipRange()
    local = sp.csr_matrix((values, indices, indptr), shape=(hi - lo, mat.getSize()[1]))
    pieces = comm.tompi4py().gather(local, root=0)
    if comm.getRank() != 0:
        return None
    full = sp.vstack(pieces).tocsr()
    inverse = np.argsort(partition.orbital_order())  # new position of each original orbital
    return full[inverse][:, inverse]
