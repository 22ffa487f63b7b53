"""The E(3)-equivariant Hamiltonian network and its data pipeline.

Training lives in ``ehpc.train`` (``ehpc.nn.fit.fit`` is a single-process call of it).
"""

from .blocks import PairBlockSpec, pair_block_spec
from .data import Graph, GraphError, build_graph, collate, record_to_graph
from .model import HamiltonianModel, ModelCompatibilityError

__all__ = [
    "Graph",
    "GraphError",
    "HamiltonianModel",
    "ModelCompatibilityError",
    "PairBlockSpec",
    "build_graph",
    "collate",
    "pair_block_spec",
    "record_to_graph",
]
