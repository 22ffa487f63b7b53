"""One reducer of Hamiltonian errors, for training, validation and ``ehpc-evaluate``.

Errors are kept as sums and counts (float64), never as means, so batches, ranks and
structures of any size combine exactly: add per batch, all-reduce once, then divide.
The MAE is entry-weighted: every real matrix element counts once, whatever structure
it belongs to.
"""

from __future__ import annotations

import math

import torch

from ..units import EV_TO_MEV, EV_TO_MICROHARTREE
from .distributed import all_reduce

#: the summed quantities, in the order of :attr:`ErrorSums.sums`
FIELDS = ("loss", "weight", "abs", "square", "entries", "onsite_abs", "onsite_entries",
          "offsite_abs", "offsite_entries", "structures", "band", "band_abs", "band_count")


class ErrorSums:
    """Sums of matrix-element (and eigenvalue) errors, reducible over ranks.

    Args:
        device: where the sums live (the device of the collective).
    """

    def __init__(self, device=None):
        self.sums = torch.zeros(len(FIELDS), dtype=torch.float64, device=device)
        self.worst = torch.zeros(1, dtype=torch.float64, device=device)

    def __getitem__(self, field: str) -> float:
        return float(self.sums[FIELDS.index(field)])

    def add(self, **values) -> None:
        """Add named sums (``abs=..., entries=...``); keys from :data:`FIELDS`."""
        for key, value in values.items():
            self.sums[FIELDS.index(key)] += float(value)

    @torch.no_grad()
    def add_entries(self, pred: torch.Tensor, target: torch.Tensor,
                    onsite: torch.Tensor | None = None, structures: int = 0) -> None:
        """Add the errors of predicted against target flat blocks (eV)."""
        diff = pred.to(torch.float64) - target.to(torch.float64)  # [n_entries]
        err = diff.abs()
        sums = {"abs": err.sum(), "square": diff.square().sum(), "entries": err.numel(),
                "structures": structures}
        if onsite is not None:
            sums.update(onsite_abs=err[onsite].sum(), onsite_entries=onsite.sum(),
                        offsite_abs=err[~onsite].sum(), offsite_entries=(~onsite).sum())
        self.add(**sums)
        if err.numel():
            self.worst = torch.maximum(self.worst, err.max().reshape(1).to(self.worst))

    def all_reduce(self) -> ErrorSums:
        """Sum (and max) over all ranks, in place; a no-op in one process."""
        all_reduce(self.sums)
        all_reduce(self.worst, "max")
        return self

    def matrix(self) -> dict:
        """``mae_eV``, ``mae_uHa``, ``rmse_eV``, ``max_abs_eV``, on-/off-site MAE, counts."""
        n = self["entries"]
        mae = self["abs"] / n if n else 0.0
        return {
            "mae_eV": mae,
            "mae_uHa": mae * EV_TO_MICROHARTREE,
            "rmse_eV": math.sqrt(self["square"] / n) if n else 0.0,
            "max_abs_eV": float(self.worst.item()),
            "onsite_mae_eV": _ratio(self["onsite_abs"], self["onsite_entries"]),
            "offsite_mae_eV": _ratio(self["offsite_abs"], self["offsite_entries"]),
            "n_entries": int(n),
            "n_structures": int(self["structures"]),
        }

    def eigenvalue_mae(self) -> float:
        """Mean absolute eigenvalue error in eV (0 when none was added)."""
        return _ratio(self["band_abs"], self["band_count"])


def _ratio(total: float, count: float) -> float:
    return total / count if count else 0.0


def validation_row(sums: ErrorSums, loss) -> dict:
    """The ``val_*`` keys of a metrics row from reduced validation sums."""
    m = sums.matrix()
    row = {
        "val_loss": float(loss.combine(sums["loss"], sums["weight"], sums["band"],
                                       sums["band_count"])),
        "val_mae_eV": m["mae_eV"],
        "val_mae_uHa": m["mae_uHa"],
        "val_rmse_eV": m["rmse_eV"],
        "val_max_abs_eV": m["max_abs_eV"],
        "val_onsite_mae_eV": m["onsite_mae_eV"],
        "val_offsite_mae_eV": m["offsite_mae_eV"],
        "val_entries": m["n_entries"],
        "val_structures": m["n_structures"],
    }
    if loss.uses_bands:
        row["val_band_mae_meV"] = sums.eigenvalue_mae() * EV_TO_MEV
    return row
