"""The E(3)-equivariant Hamiltonian network, its data pipeline and a single-process fit loop."""

from .blocks import PairBlockSpec, pair_block_spec
from .data import Graph, GraphError, build_graph, collate, record_to_graph
from .fit import evaluate, fit
from .model import HamiltonianModel, ModelCompatibilityError

__all__ = [
    "Graph",
    "GraphError",
    "HamiltonianModel",
    "ModelCompatibilityError",
    "PairBlockSpec",
    "build_graph",
    "collate",
    "evaluate",
    "fit",
    "pair_block_spec",
    "record_to_graph",
]
