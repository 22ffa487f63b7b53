"""Γ-point matrices from block-sparse records, and the orbital metrics of the benchmarks.

Each metric compares a predicted Hamiltonian with the DFT one through the generalised
eigenproblem ``H c = e S c`` solved with the *exact* overlap for both, so that only the
error of H enters.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ehpc.io.results import gamma_matrix as sparse_gamma_matrix
from ehpc.units import EV_TO_MICROHARTREE


def gamma_matrix(pairs: np.ndarray, flat: np.ndarray, nao: np.ndarray) -> np.ndarray:
    """Dense, symmetrised ``Σ_R M_ij(R)`` (the Γ-point Bloch matrix; R = 0 for molecules).

    Args:
        pairs: ``[Rx, Ry, Rz, i, j]`` rows.               # [n_pairs, 5]
        flat: the blocks, row-major, PySCF AO order.      # [n_entries]
        nao: orbitals per atom.                           # [n_atoms]
    """
    out = sparse_gamma_matrix(pairs, flat, nao).toarray()  # [nao_total, nao_total]
    return 0.5 * (out + out.T)


def occupied_metrics(h_pred: np.ndarray, h_ref: np.ndarray, s: np.ndarray,
                     n_occupied: int) -> dict:
    """Occupied orbital energies and coefficient similarity of predicted vs reference H.

    The similarity of orbital k is ``|c_pred,k^T S c_ref,k|`` with both S-normalised
    (1 means the same orbital up to sign).

    Returns:
        ``energy_mae_eV`` over the occupied orbitals, ``cosine`` averaged over them, and
        the per-orbital arrays.
    """
    e_pred, c_pred = scipy.linalg.eigh(h_pred, s)  # [nao], [nao, nao]
    e_ref, c_ref = scipy.linalg.eigh(h_ref, s)  # [nao], [nao, nao]
    occ = slice(0, n_occupied)
    overlap = np.abs(np.einsum("ak,ab,bk->k", c_pred[:, occ], s, c_ref[:, occ]))  # [n_occ]
    err = np.abs(e_pred[occ] - e_ref[occ])  # [n_occ] eV
    return {"energy_mae_eV": float(err.mean()), "cosine": float(overlap.mean()),
            "energy_err_eV": err, "cosine_per_orbital": overlap}


def window_metrics(h_pred: np.ndarray, h_ref: np.ndarray, s: np.ndarray, fermi: float,
                   window: float) -> dict:
    """Raw (unaligned) eigenvalue errors of the states within ``fermi ± window`` eV.

    States are matched by index in the sorted spectrum; the window is taken on the
    reference eigenvalues.
    """
    e_pred = scipy.linalg.eigh(h_pred, s, eigvals_only=True)  # [nao]
    e_ref = scipy.linalg.eigh(h_ref, s, eigvals_only=True)  # [nao]
    inside = np.abs(e_ref - fermi) <= window  # [nao]
    err = np.abs(e_pred[inside] - e_ref[inside])  # [n_window] eV
    return {"n_states": int(inside.sum()),
            "eig_mae_eV": float(err.mean()) if len(err) else float("nan"),
            "eig_max_eV": float(err.max()) if len(err) else float("nan"),
            "eig_mae_uHa": float(err.mean() * EV_TO_MICROHARTREE) if len(err) else float("nan")}
