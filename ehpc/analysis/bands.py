"""Band energies from real-space blocks: ``H(k) = Σ_R e^{2πi k·R} H(R)``.

With ``H_ij(R) = <phi_i(cell 0)|H|phi_j(cell R)>`` and Bloch sums
``Σ_R e^{2πi k·R} phi_j(r - R)`` (PySCF's convention), the generalised eigenproblem
``H(k) c = ε S(k) c`` gives the bands at fractional k.

Two sources of blocks:

* a labelled record (:func:`band_energies`), whose H and S are both cut at the record's
  pair cutoff, so S(k) can lose positive definiteness for diffuse bases;
* a model (:func:`model_bands`): H predicted for every pair within the model's cutoff,
  S exact from the basis functions out to where it falls below ``overlap_tol``;
* any block-sparse H(R) with the exact S (:func:`bands_with_exact_overlap`), e.g. DFT's
  H(R) cut at the model's cutoff: the best bands a model with that cutoff can give.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..basis import Basis
from ..io.dataset import HAMILTONIAN, OVERLAP, HamiltonianRecord
from ..io.layout import BlockLayout
from ..predictor import BlockPredictor

#: k-points along a default band path
BAND_PATH_POINTS = 80
#: overlap entries below this are dropped when building S(k) for model bands
OVERLAP_TOL = 1e-10


def bloch_matrix(
    record: HamiltonianRecord, basis: Basis, k_frac: np.ndarray, which: str = HAMILTONIAN
) -> np.ndarray:
    """``Σ_R e^{2πi k·R} M(R)`` for H or S of ``record`` at one fractional k-point."""
    return BlockLayout(record.atom_pairs, basis.nao_per_atom(record.numbers)).bloch(
        _stored(record, which), k_frac)


def _stored(record: HamiltonianRecord, which: str) -> np.ndarray:
    flat = getattr(record, which)
    if flat is None:
        raise ValueError(f"{record.name}: record stores no {which}; relabel it with overlaps")
    return flat


def _solve(h_of_k, s_of_k, kpts_frac: np.ndarray, name: str) -> np.ndarray:
    bands = []
    for k in kpts_frac:
        try:
            bands.append(scipy.linalg.eigh(h_of_k(k), s_of_k(k), eigvals_only=True))
        except np.linalg.LinAlgError:
            raise ValueError(
                f"{name}: overlap S(k) at k={k.tolist()} is not positive definite; "
                "the overlap is cut too short for this basis"
            ) from None
    return np.array(bands)  # [n_k, nao_cell]


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
    layout = BlockLayout(record.atom_pairs, basis.nao_per_atom(record.numbers))  # H and S share it
    h, s = _stored(record, HAMILTONIAN), _stored(record, OVERLAP)
    return _solve(lambda k: layout.bloch(h, k), lambda k: layout.bloch(s, k), kpts_frac,
                  record.name)


def model_bands(model: BlockPredictor, atoms, kpts_frac: np.ndarray,
                overlap_tol: float = OVERLAP_TOL, name: str = "band structure") -> np.ndarray:
    """Bands in eV of a periodic ``atoms`` from the model's H(R) and the exact S(R).

    Args:
        model: predicts the H blocks (e.g. a HamiltonianModel).
        atoms: a fully periodic ``ase.Atoms``.
        kpts_frac: k-points in units of the reciprocal lattice vectors.  # [n_k, 3]
        overlap_tol: S(R) blocks are computed for every pair whose overlap can exceed this.
        name: used in errors.

    Returns:
        Band energies in eV, ascending.                                   # [n_k, nao_cell]
    """
    h_pairs, h_flat = model.predict(atoms.numbers, atoms.positions, np.asarray(atoms.cell[:]),
                                    atoms.pbc, name=name)
    return bands_with_exact_overlap(h_pairs, h_flat, atoms, model.basis, kpts_frac,
                                    overlap_tol, name)


def exact_overlap(atoms, basis: Basis, overlap_tol: float = OVERLAP_TOL
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Block-sparse exact S(R) of a periodic ``atoms``: every pair whose overlap can exceed
    ``overlap_tol``, as ``(pairs, flat)``."""
    from ..integrals import IntegralModel

    numbers = atoms.numbers
    exact = IntegralModel(basis, "overlap", tol=overlap_tol).with_cutoff_for(numbers)
    return exact.predict(numbers, atoms.positions, np.asarray(atoms.cell[:]), atoms.pbc)


def bands_with_exact_overlap(h_pairs: np.ndarray, h_flat: np.ndarray, atoms, basis: Basis,
                             kpts_frac: np.ndarray, overlap_tol: float = OVERLAP_TOL,
                             name: str = "band structure", overlap=None) -> np.ndarray:
    """Bands in eV from block-sparse H(R) (any pair list) and the exact S(R) of ``atoms``.

    Args:
        h_pairs: ``[Rx, Ry, Rz, i, j]`` of the H blocks.          # [n_pairs, 5]
        h_flat: the H blocks in eV, laid out by ``block_offsets``.  # [n_entries]
        atoms: the periodic structure.
        basis: its orbital basis.
        kpts_frac: fractional k-points.                            # [n_k, 3]
        overlap_tol: S(R) blocks are computed for every pair whose overlap can exceed this.
        name: used in errors.
        overlap: ``(pairs, flat)`` from :func:`exact_overlap`, to reuse for several H.
    """
    s_pairs, s_flat = exact_overlap(atoms, basis, overlap_tol) if overlap is None else overlap
    nao = basis.nao_per_atom(atoms.numbers)
    h_layout = BlockLayout(np.asarray(h_pairs).reshape(-1, 5), nao)
    s_layout = BlockLayout(np.asarray(s_pairs).reshape(-1, 5), nao)
    kpts_frac = np.atleast_2d(np.asarray(kpts_frac, dtype=np.float64))
    return _solve(lambda k: h_layout.bloch(h_flat, k), lambda k: s_layout.bloch(s_flat, k),
                  kpts_frac, name)


@dataclass(frozen=True)
class BandPath:
    """k-points along a path through the special points of a cell's Brillouin zone."""

    kpts: np.ndarray  # [n_k, 3] fractional
    x: np.ndarray  # [n_k] cumulative path length (1/Å)
    ticks: list[tuple[float, str]]  # (x, label) of the special points
    path: str


def band_path(atoms, path: str | None = None, npoints: int = BAND_PATH_POINTS) -> BandPath:
    """The standard path of the cell's Bravais lattice (ASE/Setyawan–Curtarolo) or ``path``.

    Args:
        atoms: a periodic ``ase.Atoms``.
        path: special-point letters, e.g. ``"LGXWK"``; the lattice's default if None.
        npoints: k-points along the whole path.
    """
    bandpath = atoms.cell.bandpath(path, npoints=npoints)
    x, special_x, labels = bandpath.get_linear_kpoint_axis()
    return BandPath(np.asarray(bandpath.kpts), np.asarray(x),
                    [(float(p), str(label)) for p, label in zip(special_x, labels)],
                    bandpath.path)
