"""MPI-sharded inference: structure -> distributed H, S -> Fermi level -> eigenstates -> HDF5.

Stages, one module each: ``partition`` (recursive coordinate bisection), ``halo``
(owned atoms plus periodic images within reach), ``predict`` (chunked model calls),
``overlap`` (exact S from libcint), ``assemble`` (PETSc MPIAIJ), ``fermi`` (inertia
bisection), ``solve`` (SLEPc shift-and-invert), ``write`` (per-rank HDF5 joined by
virtual datasets); ``pipeline`` runs them in order.  PETSc is imported lazily, so
``petsc4py.init(argv)`` can run first with the command-line options.
"""

from .partition import Partition, partition

__all__ = ["Partition", "partition"]
