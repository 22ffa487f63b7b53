"""What inference and analysis need of a model: something that predicts H blocks.

:class:`ehpc.nn.model.HamiltonianModel` (the trained network) and
:class:`ehpc.integrals.IntegralModel` (an exact one-electron operator, e.g. H = T, used
to check the pipeline against a known answer) both have this shape.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .basis import Basis


class BlockPredictor(Protocol):
    """Predicts the block-sparse H(R) (eV, PySCF AO order) of a structure.

    Attributes:
        basis: the orbital basis of the blocks.
        cutoff: pairs farther apart than this (Å) are never predicted (their block is 0).
        receptive_field: a block of (i, j) depends only on atoms within this (Å) of i.
    """

    basis: Basis

    @property
    def cutoff(self) -> float: ...

    @property
    def receptive_field(self) -> float: ...

    def check_compatible(self, basis: Basis, numbers, where: str = "structure") -> None:
        """Raise with one line if a structure in ``basis`` with ``numbers`` cannot be predicted."""

    def predict(self, numbers, positions, cell, pbc, pairs: np.ndarray | None = None,
                device=None, dtype=None, *, name: str = "structure"
                ) -> tuple[np.ndarray, np.ndarray]:
        """``(pairs, flat)``: the ``[Rx, Ry, Rz, i, j]`` rows and their blocks laid out as
        :class:`ehpc.io.layout.BlockLayout` of those rows (all pairs within the cutoff
        when ``pairs`` is None)."""


def prediction_request(numbers, positions, cell, pbc, cutoff: float, pairs=None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``predict``'s arguments as arrays: ``(numbers, positions, cell, pairs)``, with
    ``pairs`` (``[Rx, Ry, Rz, i, j]``) defaulting to every pair within ``cutoff`` plus the
    on-site ones."""
    from .graph import neighbour_list

    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if pairs is None:
        pairs = neighbour_list(positions, cell, pbc, cutoff, self_edges=True).atom_pairs()
    return numbers, positions, cell, np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
