"""Radial functions of the edge length: a Bessel basis and a smooth cutoff envelope.

Both follow DimeNet (Gasteiger, Groß & Günnemann, ICLR 2020, eqs. 7-8).  Every quantity
that reaches a node or a Hamiltonian block from an edge is multiplied by the envelope,
so predictions stay continuous (with continuous first derivatives) when an atom crosses
the cutoff sphere.
"""

from __future__ import annotations

import math

import torch

from ..train.config import ModelConfig

#: Bessel functions of the radial basis; the defaults here are the training config's
DEFAULT_N_BASIS = ModelConfig().n_radial

#: polynomial order of the envelope (why 6: ModelConfig.envelope_power)
DEFAULT_ENVELOPE_POWER = ModelConfig().envelope_power

#: Å over which the switch envelope falls from 1 to 0 just inside the cutoff (why 0.5 Å:
#: ModelConfig.envelope_width)
DEFAULT_ENVELOPE_WIDTH = ModelConfig().envelope_width


class BesselBasis(torch.nn.Module):
    """``sqrt(2 / r_c) sin(n pi r / r_c) / r`` for ``n = 1 .. n_basis``.

    Args:
        r_max: cutoff radius r_c in Å.
        n_basis: number of radial functions.
        trainable: learn the frequencies ``n pi / r_c``.
    """

    def __init__(self, r_max: float, n_basis: int = DEFAULT_N_BASIS, trainable: bool = False):
        super().__init__()
        self.r_max = float(r_max)
        self.n_basis = int(n_basis)
        frequencies = torch.arange(1, n_basis + 1, dtype=torch.float64) * math.pi / self.r_max
        if trainable:
            self.frequencies = torch.nn.Parameter(frequencies.to(torch.get_default_dtype()))
        else:
            self.register_buffer("frequencies", frequencies.to(torch.get_default_dtype()))
        self.prefactor = math.sqrt(2.0 / self.r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Radial basis of edge lengths ``r`` (> 0, Å)."""
        r = r[:, None]  # [n_edges, 1]
        return self.prefactor * torch.sin(r * self.frequencies) / r  # [n_edges, n_basis]


class PolynomialCutoff(torch.nn.Module):
    """Smooth envelope u(r): 1 at r = 0, exactly 0 with p - 1 vanishing derivatives at r_c.

    ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, ``x = r / r_c``.

    Args:
        r_max: cutoff radius r_c in Å.
        p: polynomial order.
    """

    def __init__(self, r_max: float, p: int = DEFAULT_ENVELOPE_POWER):
        super().__init__()
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.r_max
        u = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * x.pow(p)
            + p * (p + 2.0) * x.pow(p + 1)
            - p * (p + 1.0) / 2.0 * x.pow(p + 2)
        )  # [n_edges]
        return u * (x < 1.0)


class SwitchCutoff(torch.nn.Module):
    """Envelope u(r) = 1 up to ``r_c - w``, then the quintic smoothstep down to 0 at r_c.

    ``u = 1 - 10 x^3 + 15 x^4 - 6 x^5`` with ``x = (r - r_c + w) / w`` in [0, 1]: the first
    and second derivatives vanish at both ends.  Unlike :class:`PolynomialCutoff`, which
    already damps a block at 0.9 r_c to 4 %, it leaves every pair but the last ``w``
    Å untouched, so the blocks the labels keep can be represented at their true size.

    Args:
        r_max: cutoff radius r_c in Å.
        width: w in Å (at most r_c).
    """

    def __init__(self, r_max: float, width: float = DEFAULT_ENVELOPE_WIDTH):
        super().__init__()
        self.r_max = float(r_max)
        self.width = min(float(width), self.r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = ((r - self.r_max + self.width) / self.width).clamp(0.0, 1.0)  # [n_edges]
        return 1.0 - x.pow(3) * (10.0 - 15.0 * x + 6.0 * x.pow(2))


class RadialEmbedding(torch.nn.Module):
    """Bessel basis times envelope, and the envelope itself.

    Args:
        r_max: cutoff radius in Å.
        n_basis: number of Bessel functions.
        p: order of the polynomial envelope, used when ``width`` is None.
        width: Å of the switch envelope (:class:`SwitchCutoff`).
    """

    def __init__(self, r_max: float, n_basis: int = DEFAULT_N_BASIS,
                 p: int = DEFAULT_ENVELOPE_POWER, width: float | None = None):
        super().__init__()
        self.bessel = BesselBasis(r_max, n_basis)
        self.envelope = PolynomialCutoff(r_max, p) if width is None else SwitchCutoff(r_max, width)

    @property
    def n_basis(self) -> int:
        return self.bessel.n_basis

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.envelope(r)  # [n_edges]
        return self.bessel(r) * u[:, None], u  # [n_edges, n_basis], [n_edges]
