"""Learning rate per optimizer step: linear warm-up, then cosine decay or cuts on plateaus.

The rate of a step is ``warm(step) * decay``:

- ``warm(k) = min(1, (k + 1) / warmup_steps)`` over the first ``warmup_steps`` steps;
- ``cosine``: ``lr_min + (lr - lr_min) (1 + cos(pi t / epochs)) / 2`` with ``t`` the
  fractional epoch reached, so it ends at ``lr_min`` whatever the steps per epoch;
- ``plateau``: ``max(lr * scale, lr_min)``, ``scale`` multiplied by ``plateau_factor``
  after more than ``plateau_patience`` evaluations without a new best loss;
- ``constant``: ``lr``.

The rate is a function of the step counters and the plateau bookkeeping only, so a
resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math

import torch

KINDS = ("cosine", "plateau", "constant")


class LRSchedule:
    """Sets the learning rate of every parameter group before each step.

    Args:
        optimizer: the optimizer whose rate is set.
        lr: peak rate.
        kind: ``"cosine"``, ``"plateau"`` or ``"constant"``.
        epochs: length of the run (cosine reaches ``lr_min`` at its end).
        warmup_steps: optimizer steps of linear warm-up.
        lr_min: lowest rate after decay.
        plateau_factor: rate multiplier of a plateau cut.
        plateau_patience: evaluations without improvement tolerated before a cut.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, kind: str, epochs: int,
                 warmup_steps: int = 0, lr_min: float = 0.0, plateau_factor: float = 0.5,
                 plateau_patience: int = 10):
        if kind not in KINDS:
            raise ValueError(f"schedule {kind!r} is not one of {KINDS}")
        self.optimizer = optimizer
        self.lr = float(lr)
        self.kind = kind
        self.epochs = int(epochs)
        self.warmup_steps = int(warmup_steps)
        self.lr_min = float(lr_min)
        self.plateau_factor = float(plateau_factor)
        self.plateau_patience = int(plateau_patience)
        self.scale = 1.0
        self.best = math.inf
        self.bad_evaluations = 0

    def rate(self, step: int, progress: float) -> float:
        """Learning rate of optimizer step ``step`` (0-based) at fractional epoch ``progress``."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "cosine":
            t = min(max(progress / self.epochs, 0.0), 1.0)
            decay = self.lr_min + (self.lr - self.lr_min) * 0.5 * (1.0 + math.cos(math.pi * t))
        elif self.kind == "plateau":
            decay = max(self.lr * self.scale, self.lr_min)
        else:
            decay = self.lr
        return warm * decay

    def apply(self, step: int, progress: float) -> float:
        """Set the rate of ``step`` in the optimizer and return it."""
        lr = self.rate(step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def report(self, loss: float) -> None:
        """Plateau bookkeeping after an evaluation of the monitored loss."""
        if self.kind != "plateau":
            return
        if math.isfinite(loss) and loss < self.best:
            self.best, self.bad_evaluations = loss, 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations > self.plateau_patience:
            self.scale *= self.plateau_factor
            self.bad_evaluations = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.best = float(state["best"])
        self.bad_evaluations = int(state["bad_evaluations"])
