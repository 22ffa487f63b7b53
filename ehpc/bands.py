"""Band energies from stored real-space blocks: ``H(k) = Σ_R e^{2πi k·R} H(R)``.

With ``H_ij(R) = <phi_i(cell 0)|H|phi_j(cell R)>`` and Bloch sums
``Σ_R e^{2πi k·R} phi_j(r - R)`` (PySCF's convention), the generalised eigenproblem
``H(k) c = ε S(k) c`` gives the bands at fractional k.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .basis import Basis
from .io.dataset import HAMILTONIAN, OVERLAP, HamiltonianRecord


def bloch_matrix(
    record: HamiltonianRecord, basis: Basis, k_frac: np.ndarray, which: str = HAMILTONIAN
) -> np.ndarray:
    """``Σ_R e^{2πi k·R} M(R)`` for H or S of ``record`` at one fractional k-point."""
    flat = getattr(record, which)
    if flat is None:
        raise ValueError(f"{record.name}: record stores no {which}; relabel it with overlaps")
    nao = basis.nao_per_atom(record.numbers)
    starts = np.concatenate([[0], np.cumsum(nao)])
    pairs = record.atom_pairs
    phases = np.exp(2j * np.pi * pairs[:, :3] @ np.asarray(k_frac, dtype=np.float64))  # [n_pairs]
    matrix = np.zeros((starts[-1], starts[-1]), dtype=np.complex128)  # [nao_cell, nao_cell]
    for p, (phase, i, j) in enumerate(zip(phases, pairs[:, 3], pairs[:, 4])):
        block = flat[record.block_offsets[p] : record.block_offsets[p + 1]].reshape(nao[i], nao[j])
        matrix[starts[i] : starts[i + 1], starts[j] : starts[j + 1]] += phase * block
    return matrix


def band_energies(record: HamiltonianRecord, basis: Basis, kpts_frac: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``H(k) c = ε S(k) c`` in eV, ascending, at fractional k-points.

    Args:
        record: a labelled structure (H in eV and S).
        basis: the basis the record was made with.
        kpts_frac: k-points in units of the reciprocal lattice vectors.  # [n_k, 3]

    Returns:
        Band energies in eV.                                              # [n_k, nao_cell]

    Raises:
        ValueError: S(k) is not positive definite, which happens when the stored pair
            cutoff truncates the overlap too early.
    """
    kpts_frac = np.atleast_2d(np.asarray(kpts_frac, dtype=np.float64))
    bands = []
    for k in kpts_frac:
        h = bloch_matrix(record, basis, k, HAMILTONIAN)  # [nao_cell, nao_cell]
        s = bloch_matrix(record, basis, k, OVERLAP)  # [nao_cell, nao_cell]
        try:
            bands.append(scipy.linalg.eigh(h, s, eigvals_only=True))  # [nao_cell]
        except np.linalg.LinAlgError:
            raise ValueError(
                f"{record.name}: overlap S(k) at k={k.tolist()} is not positive definite; "
                "the stored pair cutoff is too short for this basis"
            ) from None
    return np.array(bands)  # [n_k, nao_cell]
