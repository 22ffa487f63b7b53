"""Optimizers for small, exact fits that torch does not provide: Levenberg-Marquardt.

Levenberg-Marquardt suits a handful of structures in float64 (over-fitting checks,
fine tuning): it reaches round-off on a few molecules in ~10 steps, where Adam needs
thousands.  It forms the full Jacobian, so it runs in one process, on the full batch,
with the squared error only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: the Levenberg-Marquardt Jacobian (entries x parameters) may hold at most this many numbers
MAX_JACOBIAN_SIZE = 200_000_000
#: damping factor changes of Levenberg-Marquardt, and the damping at which it gives up
LM_DAMPING_STEP = 10.0
LM_DAMPING_MAX = 1.0e8
#: L-BFGS inner iterations per step and remembered curvature pairs
LBFGS_ITERATIONS = 20
LBFGS_HISTORY = 50


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

    def state_dict(self) -> dict:
        return {"damping": self.damping, "converged": self.converged}

    def load_state_dict(self, state: dict) -> None:
        self.damping = float(state["damping"])
        self.converged = bool(state["converged"])
        self.param_groups[0]["lr"] = self.damping

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
