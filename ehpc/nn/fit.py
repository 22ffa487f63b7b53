"""A minimal single-process training loop and the Hamiltonian error metrics.

The loss is over real matrix elements in eV (the numbers the dataset stores), MSE or
MAE, with an optional extra weight on on-site blocks, whose large diagonal (core and
valence levels) dominates the band positions.  The distributed trainer in
``ehpc.train`` builds on the same pieces.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..io.dataset import HamiltonianRecord
from ..units import EV_TO_MICROHARTREE
from .data import Graph, collate, record_to_graph
from .model import HamiltonianModel

LOSSES = ("mse", "mae")
OPTIMIZERS = ("adam", "lbfgs", "lm")

#: the Levenberg-Marquardt Jacobian (entries x parameters) may hold at most this many numbers
MAX_JACOBIAN_SIZE = 200_000_000
#: damping factor changes of Levenberg-Marquardt, and the damping at which it gives up
LM_DAMPING_STEP = 10.0
LM_DAMPING_MAX = 1.0e8
#: L-BFGS inner iterations per epoch and remembered curvature pairs
LBFGS_ITERATIONS = 20
LBFGS_HISTORY = 50


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a fit can be repeated exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def graphs_for(model: HamiltonianModel, records: Sequence[HamiltonianRecord]) -> list[Graph]:
    """Check every record against the model and turn it into a training graph."""
    graphs = []
    for record in records:
        model.check_compatible(model.basis, record.numbers, record.name)
        graphs.append(record_to_graph(record, model.cutoff, model.elements, model.basis))
    return graphs


def batches(
    graphs: list[Graph], batch_size: int | None, shuffle: bool, rng: np.random.Generator
) -> list[Graph]:
    """Collated batches of ``batch_size`` graphs (all in one when None)."""
    order = rng.permutation(len(graphs)) if shuffle else np.arange(len(graphs))
    size = batch_size or len(graphs)
    return [collate([graphs[k] for k in order[s : s + size]]) for s in range(0, len(graphs), size)]


def entry_weights(graph: Graph, diag_weight: float) -> torch.Tensor:
    """Loss weight per flat entry: ``diag_weight`` on on-site blocks, 1 elsewhere."""
    one = torch.ones_like(graph.target)
    return torch.where(graph.onsite_entries, one * diag_weight, one)  # [n_entries]


def block_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str
) -> torch.Tensor:
    """Weighted mean squared or absolute error over matrix elements (eV^2 or eV)."""
    diff = pred - target  # [n_entries]
    err = diff.square() if kind == "mse" else diff.abs()
    return (weight * err).sum() / weight.sum()


def fit(
    model: HamiltonianModel,
    train_records: Sequence[HamiltonianRecord],
    val_records: Sequence[HamiltonianRecord] = (),
    epochs: int = 100,
    lr: float = 5.0e-3,
    loss: str = "mse",
    diag_weight: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    optimizer: str = "adam",
    lr_final: float | None = None,
    device=None,
    eval_every: int = 1,
    callback: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` on labelled records; returns one history row per epoch.

    Readout scales/shifts and the neighbour normalisation are fitted to
    ``train_records`` first unless the model already has them.

    Args:
        model: the network (modified in place, moved to ``device``/``dtype``).
        train_records: labelled structures to fit.
        val_records: labelled structures to monitor.
        epochs: passes over ``train_records``.
        lr: initial learning rate (Adam, L-BFGS) or initial relative damping (``"lm"``).
        loss: ``"mse"`` or ``"mae"`` over matrix elements.
        diag_weight: extra loss weight of on-site blocks.
        seed: seeds Python, NumPy, torch and the batch order.
        dtype: floating type of the whole computation.
        batch_size: structures per step; None for full batches.
        optimizer: ``"adam"`` (cosine-decayed to ``lr_final``); ``"lbfgs"``
            (full batch, strong-Wolfe line search); or ``"lm"``, Levenberg-Marquardt on
            the full Jacobian (full batch, MSE only; one epoch is one accepted step).
            The last two suit small data sets in float64 (over-fitting checks, fine
            tuning): ``"lm"`` reaches round-off on a handful of molecules in ~10 steps.
        lr_final: learning rate reached at the last epoch (Adam); default ``lr / 100``.
        device: torch device.
        eval_every: compute validation metrics every this many epochs.
        callback: called with each history row (logging, checkpoints).

    Returns:
        Rows ``{"epoch", "loss", "lr", "seconds", "val_mae_eV", "val_mae_uHa"}``.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is not one of {LOSSES}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} is not one of {OPTIMIZERS}")
    if optimizer == "lm" and loss != "mse":
        raise ValueError("optimizer 'lm' minimises squared errors; use loss='mse'")
    if not train_records:
        raise ValueError("fit needs at least one training record")
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model.to(device=device, dtype=dtype)
    if not bool(model.has_statistics):
        model.set_statistics(list(train_records))
    train_graphs = graphs_for(model, train_records)
    full_batch = batch_size is None or batch_size >= len(train_graphs) or optimizer != "adam"
    fixed, weights = None, None
    if full_batch:
        fixed = [g.to(model.device, dtype) for g in batches(train_graphs, None, False, rng)]
        weights = [entry_weights(g, diag_weight) for g in fixed]

    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        final = lr / 100.0 if lr_final is None else lr_final
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=final)
    elif optimizer == "lm":
        opt = LevenbergMarquardt(model, lr)
        sched = None
    else:
        opt = torch.optim.LBFGS(
            model.parameters(), lr=lr, max_iter=LBFGS_ITERATIONS, history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0,
        )
        sched = None

    history = []
    model.train()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        if fixed is None:
            step_graphs = [
                g.to(model.device, dtype) for g in batches(train_graphs, batch_size, True, rng)
            ]
            step_weights = [entry_weights(g, diag_weight) for g in step_graphs]
        else:
            step_graphs, step_weights = fixed, weights
        total = 0.0
        for graph, weight in zip(step_graphs, step_weights):

            def closure(graph=graph, weight=weight):
                if optimizer == "lm":
                    scaled = (weight / weight.mean()).sqrt()  # [n_entries]
                    return (model(graph) - graph.target) * scaled  # [n_entries]
                opt.zero_grad(set_to_none=True)
                value = block_loss(model(graph), graph.target, weight, loss)
                value.backward()
                return value

            total += float(opt.step(closure).detach()) * len(graph.names)
        if sched is not None:
            sched.step()
        row = {
            "epoch": epoch,
            "loss": total / len(train_graphs),
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        if val_records and (epoch % eval_every == 0 or epoch == epochs):
            metrics = evaluate(model, val_records)
            row["val_mae_eV"] = metrics["mae_eV"]
            row["val_mae_uHa"] = metrics["mae_uHa"]
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(
                f"fit: loss became {row['loss']} at epoch {epoch}; lower lr or check the data"
            )
        history.append(row)
        if callback is not None:
            callback(row)
        if optimizer == "lm" and opt.converged:
            break
    model.eval()
    return history


class LevenbergMarquardt:
    """Damped Gauss-Newton steps on all parameters, for least squares over few entries.

    The step is ``d = J^T (J J^T + mu I)^-1 r`` (or the equivalent parameter-space form
    when there are fewer parameters than residuals), ``mu`` being ``damping`` times the
    mean of ``diag(J J^T)``.  A step that lowers the loss is kept and the damping drops;
    otherwise the damping grows and the step is retried.

    Args:
        model: the network.
        damping: initial relative damping.
    """

    def __init__(self, model: torch.nn.Module, damping: float = 1.0e-3):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.damping = float(damping)
        self.converged = False
        self.param_groups = [{"lr": self.damping}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def _jacobian(self, residual: torch.Tensor) -> torch.Tensor:
        n = residual.numel()
        n_params = sum(p.numel() for p in self.params)
        if n * n_params > MAX_JACOBIAN_SIZE:
            raise MemoryError(
                f"Levenberg-Marquardt needs a {n} x {n_params} Jacobian; "
                "use optimizer='adam' for this much data"
            )
        eye = torch.eye(n, dtype=residual.dtype, device=residual.device)
        grads = torch.autograd.grad(residual, self.params, grad_outputs=eye, is_grads_batched=True,
                                    allow_unused=True)
        columns = [
            residual.new_zeros(n, p.numel()) if g is None else g.reshape(n, -1)
            for g, p in zip(grads, self.params)
        ]
        return torch.cat(columns, dim=1)  # [n_entries, n_params]

    def _set(self, flat: torch.Tensor) -> None:
        start = 0
        for p in self.params:
            p.data.copy_(flat[start : start + p.numel()].view_as(p))
            start += p.numel()

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One accepted step; ``closure`` must return the weighted residual vector."""
        residual = closure()  # [n_entries]
        loss = residual.detach().square().mean()
        jac = self._jacobian(residual)  # [n_entries, n_params]
        r = residual.detach()
        theta = torch.cat([p.detach().reshape(-1) for p in self.params])
        small = jac @ jac.T if jac.shape[0] <= jac.shape[1] else jac.T @ jac
        scale = small.diagonal().mean()
        eye = torch.eye(small.shape[0], dtype=small.dtype, device=small.device)
        while self.damping <= LM_DAMPING_MAX:
            system = small + self.damping * scale * eye
            if jac.shape[0] <= jac.shape[1]:
                delta = jac.T @ torch.linalg.solve(system, r)
            else:
                delta = torch.linalg.solve(system, jac.T @ r)
            self._set(theta - delta)
            with torch.no_grad():
                trial = closure().square().mean()
            if trial < loss:
                self.damping = max(self.damping / LM_DAMPING_STEP, torch.finfo(r.dtype).eps)
                self.param_groups[0]["lr"] = self.damping
                return trial
            self.damping *= LM_DAMPING_STEP
        self._set(theta)
        self.converged = True  # no step lowers the loss: at a (round-off) minimum
        return loss


@torch.no_grad()
def evaluate(
    model: HamiltonianModel, records: Sequence[HamiltonianRecord], batch_size: int = 8
) -> dict:
    """Errors of the model's H blocks against labelled records, over every matrix element.

    Returns:
        ``mae_eV``, ``mae_uHa``, ``rmse_eV``, ``max_abs_eV``, ``onsite_mae_eV``,
        ``offsite_mae_eV``, ``n_entries``, ``n_structures``.
    """
    was_training = model.training
    model.eval()
    errors, onsite = [], []
    graphs = graphs_for(model, records)
    for s in range(0, len(graphs), batch_size):
        graph = collate(graphs[s : s + batch_size]).to(model.device, model.dtype)
        errors.append((model(graph) - graph.target).double().cpu())
        onsite.append(graph.onsite_entries.cpu())
    model.train(was_training)
    err = torch.cat(errors).abs()  # [n_entries]
    mask = torch.cat(onsite)
    mae = float(err.mean())
    return {
        "mae_eV": mae,
        "mae_uHa": mae * EV_TO_MICROHARTREE,
        "rmse_eV": float(err.square().mean().sqrt()),
        "max_abs_eV": float(err.max()),
        "onsite_mae_eV": float(err[mask].mean()) if mask.any() else 0.0,
        "offsite_mae_eV": float(err[~mask].mean()) if (~mask).any() else 0.0,
        "n_entries": int(err.numel()),
        "n_structures": len(records),
    }
