"""Exponential moving average of the weights, the model that is validated and exported.

After optimizer step n the shadow weights move as ``s <- d s + (1 - d) w`` with
``d = min(decay, (1 + n) / (10 + n))``: early on the average follows the weights
closely, so it does not drag the random initialisation along (the warm-up used by
MACE and NequIP through ``torch_ema``).
"""

from __future__ import annotations

import torch


class ExponentialMovingAverage:
    """Shadow copies of a module's parameters.

    Args:
        module: the trained module (not its DDP wrapper).
        decay: the long-run decay factor d in [0, 1).
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters()}

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Fold the module's current parameters into the average (after each step)."""
        self.num_updates += 1
        weight = 1.0 - self.current_decay()
        for name, p in module.named_parameters():
            self.shadow[name].lerp_(p.detach(), weight)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        """Write the averaged parameters into ``module`` (same architecture)."""
        for name, p in module.named_parameters():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:3]}")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
