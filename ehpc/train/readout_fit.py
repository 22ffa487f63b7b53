"""The readout solved exactly: ridge least squares for the last layer, features fixed.

Once the atom and edge features are computed, every block the model outputs is linear in
the weights of its block readouts (the ``o3.Linear`` of each ``BlockReadout``): the
scale, shift, Clebsch-Gordan matrix, envelope, block size g(r) and the average of the two
directions are all fixed linear maps.  So for fixed features the readout that minimises
the weighted squared matrix-element error of the training split is the solution of one
linear least-squares problem, which a few hundred gradient steps only approach.  On the
default silicon data (gth-dzvp-molopt-sr, 9 Å, 2 training cells) it took a 5-minute
Adam model from 49 to 11 meV H MAE on the held-out cells in 12 s (docs/BENCHMARKS.md).

The design matrix ``J`` (entries x readout weights) is built column by column: the
prediction with one weight set to 1 and the others to 0, minus the prediction with all of
them 0.  That is one readout pass per weight and training structure, and no backward
pass; the normal equations ``(JᵀWJ + λ I) w = JᵀW (y - c)`` are summed over structures
and ranks, so every rank solves the same system.  ``W`` is the loss's entry weight
(``train.diag_weight`` on on-site blocks); ``λ`` is :data:`RIDGE` times the mean of the
diagonal of ``JᵀWJ``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..nn.model import BlockReadout, HamiltonianModel
from .loss import entry_weights

#: ridge λ relative to the mean diagonal of JᵀWJ; on the default silicon data 1e-8, 1e-6
#: and 1e-4 gave 10.7, 11.0 and 13.1 meV held-out H MAE
RIDGE = 1.0e-8


def readout_weights(model: HamiltonianModel) -> list[torch.nn.Parameter]:
    """The linear weights of every block readout, in a fixed order."""
    return [m.linear.weight for m in model.modules() if isinstance(m, BlockReadout)]


@torch.no_grad()
def normal_equations(model: HamiltonianModel, graphs: Iterable, diag_weight: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(JᵀWJ, JᵀW(y - c))`` of the readout weights over ``graphs``, in float64.

    Args:
        model: the network, features frozen (its readout weights are restored after).
        graphs: collated training graphs on the model's device, with targets.
        diag_weight: loss weight of on-site entries.
    """
    weights = readout_weights(model)
    saved = [w.detach().clone() for w in weights]
    flat = [w.view(-1) for w in weights]
    n_w = sum(len(f) for f in flat)
    gram = torch.zeros(n_w, n_w, dtype=torch.float64, device=model.device)
    rhs = torch.zeros(n_w, dtype=torch.float64, device=model.device)
    try:
        for graph in graphs:
            encoded = model.encode(graph)
            for w in weights:
                w.zero_()
            constant = model.readout(graph, *encoded).to(torch.float64)  # [n_entries]
            columns = torch.empty(len(constant), n_w, dtype=torch.float64, device=model.device)
            k = 0
            for f in flat:
                for i in range(len(f)):
                    f[i] = 1.0
                    columns[:, k] = model.readout(graph, *encoded).to(torch.float64) - constant
                    f[i] = 0.0
                    k += 1
            weight = entry_weights(graph, diag_weight).to(torch.float64)[:, None]  # [n, 1]
            gram += columns.T @ (weight * columns)
            rhs += columns.T @ (weight[:, 0] * (graph.target.to(torch.float64) - constant))
    finally:
        for w, s in zip(weights, saved):
            w.copy_(s)
    return gram, rhs


@torch.no_grad()
def solve_readout(model: HamiltonianModel, gram: torch.Tensor, rhs: torch.Tensor,
                  ridge: float = RIDGE) -> None:
    """Set the readout weights to the ridge solution of the normal equations."""
    n_w = len(rhs)
    damping = ridge * float(gram.diagonal().mean())
    solution = torch.linalg.solve(gram + damping * torch.eye(n_w, dtype=gram.dtype,
                                                             device=gram.device), rhs)
    start = 0
    for w in readout_weights(model):
        w.copy_(solution[start : start + w.numel()].view_as(w).to(w.dtype))
        start += w.numel()


def fit_readout(model: HamiltonianModel, graphs: Iterable, diag_weight: float,
                reduce: Callable[[torch.Tensor], None] | None = None,
                ridge: float = RIDGE) -> None:
    """Solve the readout of ``model`` by least squares on ``graphs`` (this rank's share).

    Args:
        reduce: in-place sum over ranks (``all_reduce``); None in one process.
    """
    gram, rhs = normal_equations(model, graphs, diag_weight)
    if reduce is not None:
        reduce(gram)
        reduce(rhs)
    solve_readout(model, gram, rhs, ridge)
