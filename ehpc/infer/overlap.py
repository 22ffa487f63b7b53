"""Exact S blocks of one rank's pairs in its halo cluster (the ``overlap`` stage).

The integrals themselves, and the range beyond which a pair's overlap is dropped, come
from :mod:`ehpc.integrals`; this stage only groups a rank's owned atoms so that each
libcint batch serves pairs that share their neighbour images.
"""

from __future__ import annotations

import numpy as np

from ..basis import Basis
from ..integrals import pair_blocks
from ..io.layout import BlockLayout

#: inference's default for dropping S blocks (Frobenius norm), ehpc-infer's --overlap-tol.
#: Looser than the labels' INTEGRAL_TOLERANCE (1e-10, kept for PySCF and the exact S of
#: band scoring).  Against 1e-10 (bench/overlap_tol_sweep.py, docs/BENCHMARKS.md "Overlap
#: drop tolerance"): in gth-dzvp-molopt-sr Si at 216 and 512 atoms, E_F and each of the 20
#: states nearest it move by < 0.6 µeV, and at 512 atoms the nonzeros of H - σS fall 36 %
#: and the E_F stage ~20 %; in gth-szv, whose overlap decays slower, by < 3 µeV at 216 and
#: 512 atoms (nonzeros -28 % at 512).  To first order a state moves by -ε cᵀΔS c, so the
#: shift grows with |ε| in the model's energy zero: up to 4e-6 of |ε| in the cases measured
#: (19 µeV at ε ≈ -4.9 eV in the 64-atom gth-szv cell of tests/infer/test_overlap_tolerance.py).
OVERLAP_DROP_TOLERANCE = 1.0e-6

#: owned atoms per group when computing a rank's overlap blocks (compact groups share
#: most of their neighbours, so one cross matrix serves many pairs)
GROUP_ATOMS = 64


def cluster_overlap(
    basis: Basis, halo, pairs: np.ndarray, group_atoms: int = GROUP_ATOMS,
    layout: BlockLayout | None = None,
) -> np.ndarray:
    """Exact S blocks of a rank's pairs ``[i, k]`` (i owned, sorted by i) in its halo cluster.

    Owned atoms are taken in spatially compact groups so that each libcint batch covers
    pairs that share their neighbour images.

    Args:
        layout: the block layout of ``pairs`` in the cluster, if the caller has it.

    Returns:
        Flat blocks laid out as ``layout``.  # [n_entries]
    """
    from .partition import bisect

    nao = basis.nao_per_atom(halo.numbers)  # [n_cluster]
    layout = BlockLayout(pairs, nao) if layout is None else layout
    out = np.empty(layout.n_entries)
    row_start = np.searchsorted(pairs[:, 0], np.arange(halo.n_owned + 1))
    n_groups = max(1, -(-halo.n_owned // group_atoms))
    for group in bisect(halo.positions[: halo.n_owned], nao[: halo.n_owned], n_groups):
        rows = np.concatenate([np.arange(row_start[a], row_start[a + 1]) for a in group])
        flat = pair_blocks("overlap", basis, halo.numbers, halo.positions, pairs[rows], nao=nao)
        out[layout.entries(rows)] = flat
    return out
