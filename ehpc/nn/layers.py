"""Equivariant message passing that updates node (atom) and edge (atom-pair) features.

Off-site Hamiltonian blocks are read from edge features, so edges carry their own
equivariant state through the network (as in HamGNN, Zhong et al. 2023): each layer
first refreshes every edge from its two end atoms, its own state, the direction's
spherical harmonics and the radial basis, then refreshes every atom from the sum of
its updated edges.  Every layer declares the irreps it reads and writes, so a mismatch
fails when the model is built.
"""

from __future__ import annotations

import torch
from e3nn import nn, o3


def hidden_irreps(channels: int, lmax: int) -> o3.Irreps:
    """``channels`` copies of every irrep up to ``lmax``, both parities.

    Hamiltonian blocks need both parities at each L (s-p couplings give 1o, p-p give 1e),
    so the hidden features carry both.
    """
    return o3.Irreps([(channels, (l, p)) for l in range(lmax + 1) for p in (1, -1)])


def uvu_instructions(
    irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps
) -> list[tuple]:
    """Every allowed path of a channel-wise (``uvu``) tensor product with edge weights."""
    return [
        (i1, i2, i_out, "uvu", True)
        for i1, (_, ir1) in enumerate(irreps_in1)
        for i2, (_, ir2) in enumerate(irreps_in2)
        for i_out, (_, ir_out) in enumerate(irreps_out)
        if ir_out in ir1 * ir2
    ]


class GatedLinear(torch.nn.Module):
    """Equivariant dense layer: ``o3.Linear`` then a gate nonlinearity.

    Scalars pass through SiLU (even) or tanh (odd, keeping parity); each l > 0 irrep is
    multiplied by its own sigmoid-activated scalar gate.

    Args:
        irreps_in: input irreps.
        irreps_out: output irreps; the result has exactly these.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__()
        irreps_out = o3.Irreps(irreps_out)
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
        gates = o3.Irreps([(gated.num_irreps, (0, 1))]) if gated.num_irreps else o3.Irreps("")
        acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
        self.gate = nn.Gate(scalars, acts, gates, [torch.sigmoid] * len(gates), gated)
        self.linear = o3.Linear(irreps_in, self.gate.irreps_in)
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = self.gate.irreps_out
        if self.irreps_out != irreps_out:
            raise ValueError(f"GatedLinear: gate gives {self.irreps_out}, expected {irreps_out}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.linear(x))  # [n, irreps_out.dim]


class EdgeEmbedding(torch.nn.Module):
    """First edge features: element-pair scalars times the edge's spherical harmonics.

    Args:
        n_species: number of elements.
        irreps_sh: spherical harmonics irreps.
        irreps_out: edge feature irreps.
        n_radial: size of the radial basis.
        radial_hidden: width of the radial network.
    """

    def __init__(self, n_species: int, irreps_sh: o3.Irreps, irreps_out: o3.Irreps, n_radial: int,
                 radial_hidden: int):
        super().__init__()
        channels = irreps_out[0].mul
        irreps_scalar = o3.Irreps([(channels, (0, 1))])
        irreps_mid = o3.Irreps([(channels, ir) for _, ir in irreps_sh])
        self.pair = o3.Linear(o3.Irreps([(2 * n_species, (0, 1))]), irreps_scalar)
        self.tp = o3.TensorProduct(irreps_scalar, irreps_sh, irreps_mid,
                                   uvu_instructions(irreps_scalar, irreps_sh, irreps_mid),
                                   shared_weights=False, internal_weights=False)
        self.radial = nn.FullyConnectedNet([n_radial, radial_hidden, self.tp.weight_numel],
                                           torch.nn.functional.silu)
        self.out = o3.Linear(irreps_mid, irreps_out)
        self.irreps_out = o3.Irreps(irreps_out)

    def forward(self, onehot: torch.Tensor, edge_index: torch.Tensor, sh: torch.Tensor,
                radial: torch.Tensor) -> torch.Tensor:
        i, j = edge_index
        pair = self.pair(torch.cat([onehot[i], onehot[j]], dim=1))  # [n_edges, channels]
        return self.out(self.tp(pair, sh, self.radial(radial)))  # [n_edges, irreps_out.dim]


class InteractionLayer(torch.nn.Module):
    """One round of edge update then node update.

    Edge (i, j, S):  e <- e + Gate(Linear[e, TP(h_i, Y), TP(h_j, Y)]), the tensor
    products weighted per edge by a radial network (``Y``: spherical harmonics of the
    edge direction).  Atom i:  h <- h + Gate(Linear[h, sum_j u(r_ij) Linear(e_ij) / sqrt(k)])
    with u the cutoff envelope and k the mean neighbour count (sum / sqrt(k)).

    Args:
        irreps_hidden: node and edge feature irreps (the same for both).
        irreps_sh: spherical harmonics irreps.
        n_radial: size of the radial basis.
        radial_hidden: width of the radial network.
    """

    def __init__(
        self, irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps, n_radial: int, radial_hidden: int
    ):
        super().__init__()
        h = o3.Irreps(irreps_hidden)
        instructions = uvu_instructions(h, irreps_sh, h)
        self.tp_self = o3.TensorProduct(h, irreps_sh, h, instructions, shared_weights=False,
                                        internal_weights=False)
        self.tp_other = o3.TensorProduct(h, irreps_sh, h, instructions, shared_weights=False,
                                         internal_weights=False)
        n_weights = self.tp_self.weight_numel
        self.radial = nn.FullyConnectedNet([n_radial, radial_hidden, 2 * n_weights],
                                           torch.nn.functional.silu)
        self.edge_update = GatedLinear(h + h + h, h)
        self.message = o3.Linear(h, h)
        self.node_update = GatedLinear(h + h, h)
        self.irreps_in = h
        self.irreps_out = h

    def forward(
        self,
        node: torch.Tensor,
        edge: torch.Tensor,
        edge_index: torch.Tensor,
        sh: torch.Tensor,
        radial: torch.Tensor,
        envelope: torch.Tensor,
        avg_neighbours: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = edge_index
        w_self, w_other = self.radial(radial).chunk(2, dim=1)  # [n_edges, n_weights] each
        t_self = self.tp_self(node[i], sh, w_self)  # [n_edges, hidden]
        t_other = self.tp_other(node[j], sh, w_other)  # [n_edges, hidden]
        edge = edge + self.edge_update(torch.cat([edge, t_self, t_other], dim=1))  # [n_edges, h]
        message = self.message(edge) * envelope[:, None]  # [n_edges, hidden]
        # a sum over ~k random-signed messages grows like sqrt(k) (as in NequIP)
        summed = torch.zeros_like(node).index_add_(0, i, message)  # [n_atoms, hidden]
        summed = summed / avg_neighbours.sqrt()
        node = node + self.node_update(torch.cat([node, summed], dim=1))  # [n_atoms, hidden]
        return node, edge
