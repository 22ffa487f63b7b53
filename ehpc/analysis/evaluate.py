"""Model versus DFT on labelled structures: matrix-element and eigenvalue errors.

For every structure the model predicts exactly the pairs the DFT record holds; errors are
taken over all real matrix elements.  Eigenvalues come from the generalised problem
``H c = e S c`` with the exact S of the record: the whole matrix for molecules and the
Γ-point matrices ``Σ_R H(R)`` for crystals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..io.dataset import HamiltonianRecord
from ..io.layout import BlockLayout
from ..predictor import BlockPredictor
from ..units import EV_TO_MEV, EV_TO_MICROHARTREE

#: energy window around E_F (eV) for the eigenvalue error of crystals
EIGEN_WINDOW_EV = 2.0


@dataclass
class StructureErrors:
    """Errors of one structure (eV unless named otherwise)."""

    name: str
    n_entries: int
    abs_error_sum: float
    eig_abs_error_sum: float
    n_eig: int
    occupied_cosine: float
    fermi_dft: float
    homo_dft: float
    lumo_dft: float  # NaN when every orbital is occupied (HOMO: when none is)
    homo_model: float
    lumo_model: float

    @property
    def mae(self) -> float:
        return self.abs_error_sum / max(self.n_entries, 1)

    @property
    def gap_dft(self) -> float:
        return self.lumo_dft - self.homo_dft

    @property
    def gap_model(self) -> float:
        return self.lumo_model - self.homo_model


def predict_record(model: BlockPredictor, record: HamiltonianRecord) -> np.ndarray:
    """Model blocks for exactly the record's pairs, flat in the record's layout."""
    _, flat = model.predict(record.numbers, record.positions, record.cell, record.pbc,
                            pairs=record.atom_pairs, name=record.name)
    return flat


def compare(model: BlockPredictor, record: HamiltonianRecord, predicted: np.ndarray | None = None,
            overlap: np.ndarray | None = None) -> StructureErrors:
    """Matrix-element, eigenvalue and occupied-state errors of one structure.

    Args:
        model: predicts the record's pairs unless ``predicted`` is given.
        record: the DFT labels.
        predicted: flat blocks in the record's layout, eV.
        overlap: dense Γ-point S to solve both eigenproblems with, instead of the sum of
            the record's blocks (those stop at the pair cutoff; a crystal's exact,
            lattice-summed S is the alternative).                # [nao_total, nao_total]
    """
    predicted = predict_record(model, record) if predicted is None else predicted
    nao = model.basis.nao_per_atom(record.numbers)
    layout = BlockLayout(record.atom_pairs, nao)  # one pattern for H_DFT, H_model and S
    h_dft = layout.gamma(record.hamiltonian).toarray()
    h_ml = layout.gamma(predicted).toarray()
    if overlap is None:
        s = layout.gamma(record.overlap).toarray()
    else:
        s = np.asarray(overlap, dtype=np.float64)
        if s.shape != h_dft.shape:
            raise ValueError(f"{record.name}: overlap has shape {s.shape}, the record's H "
                             f"is {h_dft.shape}")
    e_dft, c_dft = scipy.linalg.eigh(h_dft, s)
    e_ml, c_ml = scipy.linalg.eigh(h_ml, s)
    if "smearing" in record.attrs:  # a metal: the levels either side of its chemical potential
        fermi = float(record.attrs["fermi_level"])
        n_occ = int(np.count_nonzero(e_dft <= fermi))
    else:
        n_occ = int(record.attrs.get("n_electrons", model.basis.n_electrons(record.numbers))) // 2
        fermi = 0.5 * (e_dft[n_occ - 1] + e_dft[n_occ]) if n_occ < len(e_dft) else e_dft[-1]
    if np.asarray(record.pbc).any():
        window = np.abs(e_dft - fermi) <= EIGEN_WINDOW_EV
    else:
        window = np.arange(len(e_dft)) < n_occ
    # |<c_ml|S|c_dft>| per occupied state: 1 when the predicted orbital is exact
    cosine = np.abs(np.einsum("ik,ij,jk->k", c_ml[:, :n_occ], s, c_dft[:, :n_occ]))
    level = lambda e, i: float(e[i]) if 0 <= i < len(e) else float("nan")  # noqa: E731
    return StructureErrors(
        name=record.name,
        n_entries=len(predicted),
        abs_error_sum=float(np.abs(predicted - record.hamiltonian).sum()),
        eig_abs_error_sum=float(np.abs(e_ml - e_dft)[window].sum()),
        n_eig=int(window.sum()),
        occupied_cosine=float(cosine.mean()) if n_occ else float("nan"),
        fermi_dft=float(fermi),
        homo_dft=level(e_dft, n_occ - 1),
        lumo_dft=level(e_dft, n_occ),
        homo_model=level(e_ml, n_occ - 1),
        lumo_model=level(e_ml, n_occ),
    )


def summarise(errors: list[StructureErrors]) -> dict:
    """Dataset-level metrics from per-structure errors (entry-weighted MAE).

    The sums are reduced by ``ehpc.train.metrics.ErrorSums``, the reducer training and
    validation use, so ``h_mae_eV`` here and ``val_mae_eV`` there are the same number.
    """
    from ..train.metrics import ErrorSums

    sums = ErrorSums()
    for e in errors:
        sums.add(abs=e.abs_error_sum, entries=e.n_entries, structures=1,
                 band_abs=e.eig_abs_error_sum, band_count=e.n_eig)
    matrix = sums.matrix()
    mae = matrix["mae_eV"]
    # NaN, not 0, when no eigenvalue lay in a window (a crystal with none within 2 eV of E_F at Γ)
    eig = sums.eigenvalue_mae() if sums["band_count"] else float("nan")
    return {
        "n_structures": matrix["n_structures"],
        "n_entries": matrix["n_entries"],
        "h_mae_eV": mae,
        "h_mae_meV": mae * EV_TO_MEV,
        "h_mae_uHa": mae * EV_TO_MICROHARTREE,
        "eigenvalue_mae_eV": eig,
        "eigenvalue_mae_meV": eig * EV_TO_MEV,
        "occupied_cosine": float(np.nanmean([e.occupied_cosine for e in errors])),
        "gap_mae_eV": _nanmean([abs(e.gap_model - e.gap_dft) for e in errors]),
        "homo_mae_eV": _nanmean([abs(e.homo_model - e.homo_dft) for e in errors]),
        "lumo_mae_eV": _nanmean([abs(e.lumo_model - e.lumo_dft) for e in errors]),
        # signed: below zero when the model puts the LUMO too low (narrows the gap)
        "lumo_mean_error_eV": _nanmean([e.lumo_model - e.lumo_dft for e in errors]),
    }


def _nanmean(values) -> float:
    """Mean over the finite values; NaN (without NumPy's warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


#: the three band errors of a crystal, each scored within ±2 eV of the DFT Fermi level
TRUTH_SCORES = ("floor", "model", "total")


@dataclass
class TruthErrors:
    """Band errors (meV) of one crystal at its reference k-points, against the true SCF.

    Each entry is ``(MAE, max, HOMO shift, LUMO shift, gap shift)`` from
    :func:`ehpc.dft.floor.band_error`:

    * ``floor``: DFT's blocks cut at the pair radius against the SCF's own bands (what
      the cutoff costs; no model can do better);
    * ``model``: the model against those cut DFT blocks (what the learning costs);
    * ``total``: the model against the SCF's own bands (what a user gets).
    """

    name: str
    floor: tuple
    model: tuple
    total: tuple


@dataclass
class CrystalBands:
    """One crystal's bands at its reference k-points, eV, each ``[n_k, nao_cell]``:
    the SCF's own (``truth``), DFT's blocks cut at the pair radius (``cut``) and the
    model's (``model``), the last two solved with the exact lattice-summed S."""

    truth: np.ndarray
    cut: np.ndarray
    model: np.ndarray
    #: the SCF's Fermi level, eV
    fermi: float
    #: doubly occupied levels per cell; None when smeared (no integer filling)
    n_occupied: int | None


def crystal_bands(record: HamiltonianRecord, predicted: np.ndarray, basis
                  ) -> CrystalBands | None:
    """The true, cut-DFT and model bands of a crystal record (None without reference bands)."""
    from .bands import bands_with_exact_overlap, exact_overlap

    if record.reference_bands is None or not np.asarray(record.pbc).any():
        return None
    atoms, kpts = record.to_atoms(), record.reference_kpts
    overlap = exact_overlap(atoms, basis)  # computed once for both block sets
    cut = bands_with_exact_overlap(record.atom_pairs, record.hamiltonian, atoms, basis, kpts,
                                   name=record.name, overlap=overlap)
    ml = bands_with_exact_overlap(record.atom_pairs, predicted, atoms, basis, kpts,
                                  name=record.name, overlap=overlap)
    n_occ = None if record.attrs.get("smearing") else int(record.attrs["n_electrons"]) // 2
    return CrystalBands(np.asarray(record.reference_bands), cut, ml,
                        float(record.attrs["fermi_level"]), n_occ)


def score_against_truth(record: HamiltonianRecord, predicted: np.ndarray, basis
                        ) -> TruthErrors | None:
    """Floor, model and total band errors of a crystal record (None without reference bands)."""
    from ..dft.floor import band_error

    bands = crystal_bands(record, predicted, basis)
    if bands is None:
        return None
    fermi, n_occ = bands.fermi, bands.n_occupied
    return TruthErrors(record.name, band_error(bands.cut, bands.truth, fermi, n_occ),
                       band_error(bands.model, bands.cut, fermi, n_occ),
                       band_error(bands.model, bands.truth, fermi, n_occ))


def summarise_truth(scores: list[TruthErrors]) -> dict | None:
    """Per score: mean MAE, worst max and the mean |shift| of HOMO, LUMO and gap over the
    crystals (meV; NaN where no crystal is gapped)."""
    scores = [s for s in scores if s is not None]
    if not scores:
        return None
    out = {"n_crystals": len(scores)}
    for key in TRUTH_SCORES:
        rows = np.array([getattr(s, key) for s in scores], dtype=np.float64)  # [n, 5]
        out[key] = {"mae_meV": float(np.nanmean(rows[:, 0])),
                    "max_meV": float(np.nanmax(rows[:, 1]))}
        for column, level in ((2, "homo"), (3, "lumo"), (4, "gap")):
            out[key][f"{level}_abs_error_meV"] = _nanmean(np.abs(rows[:, column]))
    return out
