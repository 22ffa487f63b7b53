"""The truncation floor of a crystal label: what cutting H(R) at the pair radius costs.

A model whose blocks end at the cutoff r_c can at best reproduce the bands of DFT's own
H(R) cut at r_c.  The band-mesh rebuild (:class:`ehpc.dft.periodic.RealSpaceFock`) holds
the untruncated Bloch Fock matrices H(k) at every k of the band mesh, so the floor is
measured there for free: eigenvalues of ``H_cut(k) c = ε S(k) c`` (kept blocks, exact
lattice-summed S, the truncation inference uses) against those of ``H(k) c = ε S(k) c``
(the SCF's own bands, what PySCF's ``get_bands`` returns).  The bands compared are those
within ``window`` eV of the Fermi level.  The smallest eigenvalue of the overlap cut at
r_c as well tells whether a model that also cut S would still have a positive-definite
S(k).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg

from ..errors import UserError
from ..units import EV_TO_MEV

#: bands within this many eV of the Fermi level enter the floor
FLOOR_WINDOW_EV = 2.0
#: default largest floor (max error, meV) a label may have before labelling stops
FLOOR_TOL_MEV = 10.0
#: dense generalised eigensolves per label are limited to about this many flops
_FLOOR_FLOPS = 2.0e10
_MAX_FLOOR_KPTS = 16


class TruncationFloorError(UserError, ValueError):
    """The pair cutoff costs more band accuracy than the tolerance allows."""


@dataclass(frozen=True)
class TruncationFloor:
    """Band error (meV) of H cut at the pair radius, S exact, against the SCF's bands.

    Attributes:
        mae_meV / max_meV: over bands within ``window_eV`` of E_F at the sampled k.
        homo_shift_meV / lumo_shift_meV / gap_shift_meV: cut minus true (NaN for metals).
        overlap_min_eig: smallest eigenvalue of S(k) cut at the same radius.
        n_kpts: k-points sampled.
        window_eV: the energy window.
    """

    mae_meV: float
    max_meV: float
    homo_shift_meV: float
    lumo_shift_meV: float
    gap_shift_meV: float
    overlap_min_eig: float
    n_kpts: int
    window_eV: float

    def attrs(self) -> dict:
        """The record attributes (``floor_*`` and ``overlap_min_eig``)."""
        values = asdict(self)
        out = {f"floor_{k}": float(v) for k, v in values.items() if k not in ("overlap_min_eig",
                                                                              "n_kpts")}
        out["floor_n_kpts"] = int(self.n_kpts)
        out["overlap_min_eig"] = float(self.overlap_min_eig)
        return out

    def line(self) -> str:
        """One line for logs: the max and mean error, the gap shift and min eig of cut S."""
        gap = "" if np.isnan(self.gap_shift_meV) else f", gap shift {self.gap_shift_meV:+.1f} meV"
        return (f"truncation floor max {self.max_meV:.2f} meV, MAE {self.mae_meV:.2f} meV"
                f"{gap}, min eig of cut S(k) {self.overlap_min_eig:.2e}")


def floor_kpoints(weights: np.ndarray, nao: int) -> np.ndarray:
    """Indices into a half band mesh to sample: Γ first, then evenly spread, size-capped.

    Each sampled k costs two dense generalised eigensolves of the cell's ``nao`` orbitals,
    so large cells get fewer k-points (Γ alone for a few thousand orbitals).
    """
    n_half = len(weights)
    n_k = int(np.clip(_FLOOR_FLOPS / max(nao, 1) ** 3, 1, _MAX_FLOOR_KPTS))
    if n_k >= n_half:
        return np.arange(n_half)
    return np.unique(np.linspace(0, n_half - 1, n_k).round().astype(int))


def window_errors(cut: np.ndarray, true: np.ndarray, fermi: float,
                  window: float = FLOOR_WINDOW_EV) -> np.ndarray:
    """Signed errors ``cut - true`` (eV) of the bands whose reference lies within
    ``window`` of ``fermi``, the levels every band score here compares.   # [n_inside]"""
    cut, true = np.atleast_2d(cut), np.atleast_2d(true)
    return (cut - true)[np.abs(true - fermi) <= window]


def band_error(cut: np.ndarray, true: np.ndarray, fermi: float, n_occupied: int | None,
               window: float = FLOOR_WINDOW_EV) -> tuple[float, float, float, float, float]:
    """(MAE, max, HOMO shift, LUMO shift, gap shift) in meV of ``cut`` against ``true`` bands.

    Args:
        cut: band energies in eV, ascending per k.           # [n_k, n_bands]
        true: the reference bands at the same k.             # [n_k, n_bands]
        fermi: Fermi level (eV) of the reference.
        n_occupied: filled bands of a gapped system; None for a metal (no frontier shifts).
        window: bands whose reference lies within this of ``fermi`` are compared.
    """
    cut, true = np.atleast_2d(cut), np.atleast_2d(true)
    diff = np.abs(window_errors(cut, true, fermi, window))
    mae = float(diff.mean()) * EV_TO_MEV if diff.size else float("nan")
    worst = float(diff.max()) * EV_TO_MEV if diff.size else float("nan")
    if n_occupied is None or not 0 < n_occupied < true.shape[1]:
        nan = float("nan")
        return mae, worst, nan, nan, nan
    homo = (cut[:, n_occupied - 1].max() - true[:, n_occupied - 1].max()) * EV_TO_MEV
    lumo = (cut[:, n_occupied].min() - true[:, n_occupied].min()) * EV_TO_MEV
    return mae, worst, float(homo), float(lumo), float(lumo - homo)


def generalised_bands(h_k: np.ndarray, s_k: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of ``H(k) c = ε S(k) c`` at each k.   # [n_k, nao]

    Raises:
        numpy.linalg.LinAlgError: an S(k) is not positive definite.
    """
    return np.array([scipy.linalg.eigh(h, s, eigvals_only=True) for h, s in zip(h_k, s_k)])


def measure_floor(h_cut: np.ndarray, h_true: np.ndarray, s_exact: np.ndarray,
                  s_cut: np.ndarray, fermi: float, n_occupied: int | None,
                  window: float = FLOOR_WINDOW_EV) -> tuple[TruncationFloor, np.ndarray]:
    """The floor from Bloch matrices at the sampled k (all in one energy unit, eV).

    Args:
        h_cut: H(k) of the kept blocks.                      # [n_k, nao, nao]
        h_true: the untruncated H(k).                        # [n_k, nao, nao]
        s_exact: the exact S(k).                             # [n_k, nao, nao]
        s_cut: S(k) of the overlap blocks within the cutoff. # [n_k, nao, nao]
        fermi: the SCF Fermi level in eV.
        n_occupied: filled bands (None for a smeared metal).
        window: energy window around ``fermi`` in eV.

    Returns:
        The floor and the true bands (eV) it was measured against.  # [n_k, nao]
    """
    true = generalised_bands(h_true, s_exact)
    cut = generalised_bands(h_cut, s_exact)
    min_eig = min(float(np.linalg.eigvalsh(s)[0]) for s in s_cut)
    errors = band_error(cut, true, fermi, n_occupied, window)
    return TruncationFloor(*errors, overlap_min_eig=min_eig, n_kpts=len(h_true),
                           window_eV=float(window)), true


def check_floor(floor: TruncationFloor, tolerance_meV: float, name: str, cutoff: float,
                needed_cutoff: float | None) -> None:
    """Raise :class:`TruncationFloorError` (one line) if the floor exceeds the tolerance."""
    if not floor.max_meV > tolerance_meV:
        return
    advice = (f"use cutoff {needed_cutoff:g} Å or more" if needed_cutoff is not None
              else "no cutoff within the overlap reach meets it; choose a less diffuse basis")
    raise TruncationFloorError(
        f"{name}: blocks cut at {cutoff:g} Å miss the SCF bands by up to {floor.max_meV:.1f} meV "
        f"(tolerance {tolerance_meV:g} meV); {advice}, or set dft.allow_large_floor "
        "(--allow-large-floor) to keep them"
    )


def summarise_floors(attrs_list) -> dict | None:
    """Dataset-wide floor from per-structure attributes; None if no structure has one.

    Returns:
        ``floor_max_meV`` (worst structure), ``floor_mae_meV`` (mean of the structures'
        MAEs), ``floor_worst`` (its name), ``overlap_min_eig`` (smallest) and
        ``n_with_floor``.
    """
    rows = [a for a in attrs_list if "floor_max_meV" in a]
    if not rows:
        return None
    worst = max(rows, key=lambda a: float(a["floor_max_meV"]))
    return {
        "floor_max_meV": float(worst["floor_max_meV"]),
        "floor_mae_meV": float(np.mean([float(a["floor_mae_meV"]) for a in rows])),
        "floor_worst": str(worst.get("source", "")),
        "overlap_min_eig": float(min(float(a["overlap_min_eig"]) for a in rows)),
        "n_with_floor": len(rows),
    }


def format_floor_summary(summary: dict) -> str:
    """One line: the dataset's truncation floor."""
    return (f"truncation floor over {summary['n_with_floor']} crystal(s): max "
            f"{summary['floor_max_meV']:.2f} meV ({summary['floor_worst']}), mean MAE "
            f"{summary['floor_mae_meV']:.2f} meV, min eig of cut S(k) "
            f"{summary['overlap_min_eig']:.2e}")
