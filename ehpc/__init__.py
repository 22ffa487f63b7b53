"""ehpc: E(3)-equivariant Hamiltonian prediction and MPI-sharded eigen-solves."""

__version__ = "0.1.0"
