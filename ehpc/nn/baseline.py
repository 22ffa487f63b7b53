"""The kinetic baseline ``H0 = T + v S`` that a model's network output is added to.

Between two atoms the Kohn-Sham potential is nearly flat, so a block between distant,
diffuse orbitals is close to that of a free electron in a constant potential ``v``:
``<phi_i| -1/2 nabla^2 + v |phi_j> = T_ij + v S_ij``.  Both integrals are exact, cheap
two-centre integrals of the basis (the ones inference already computes for S), so they
carry the part of H that decays like the basis functions' own overlap, and the network
learns only what is left.  In silicon (gth-dzvp-molopt-sr) that is 5-20 times smaller
than H itself for pairs beyond 5 Å (docs/BENCHMARKS.md, "The kinetic baseline"), and
errors of those far blocks are what a nearly singular S(k) amplifies into the bands.

``v`` is one number per model, fitted by least squares to the training blocks between
different atoms (:func:`fit_potential`); on-site blocks, where the cores' potential is
anything but flat, are left to the network.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..basis import Basis
from ..integrals import IntegralModel

#: ``model.baseline`` values: no baseline, or ``T + v S``
BASELINES = ("none", "kinetic")


def baseline_integrals(basis: Basis, numbers, positions, cell, pbc, pairs: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Exact kinetic and overlap blocks (eV, and dimensionless) of ``pairs``.

    Args:
        basis: the orbital basis.
        numbers, positions, cell, pbc: the structure (Å).
        pairs: ``[Rx, Ry, Rz, i, j]`` rows.                            # [n_pairs, 5]

    Returns:
        ``(T, S)`` flat, laid out as ``block_offsets(pairs, nao)``.      # [n_entries] x 2
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    blocks = []
    for operator in ("kinetic", "overlap"):
        # the cutoff only lists pairs when none are given
        _, flat = IntegralModel(basis, operator, cutoff=np.inf).predict(
            numbers, positions, cell, pbc, pairs=pairs)
        blocks.append(np.asarray(flat, dtype=np.float64))
    return blocks[0], blocks[1]


def fit_potential(samples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """The ``v`` minimising ``Σ (H - T - v S)^2`` over the given entries.

    Args:
        samples: ``(H, T, S)`` flat arrays of the off-site entries of each structure.

    Returns:
        ``v`` in eV; 0 when no entry has any overlap.
    """
    numerator = denominator = 0.0
    for h, t, s in samples:
        numerator += float(np.dot(h - t, s))
        denominator += float(np.dot(s, s))
    return numerator / denominator if denominator > 0.0 else 0.0
