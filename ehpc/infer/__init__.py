"""MPI-sharded inference: structure -> distributed H, S -> Fermi level -> eigenstates -> HDF5.

Stages, one module each: ``partition`` (recursive coordinate bisection), ``halo``
(owned atoms plus periodic images within reach), ``predict`` (chunked model calls),
``overlap`` (exact S from libcint), ``assemble`` (PETSc MPIAIJ), ``window`` (E_F, HOMO,
LUMO and the states near them from shift-and-invert windows placed by inertia, 1-2
factorisations when gapped), ``fermi`` (inertia counting and the bisection fallback),
``solve`` (SLEPc shift-and-invert on one MUMPS factor, with its inertia), ``write``
(per-rank HDF5 joined by virtual datasets); ``pipeline`` runs them in order.  PETSc is imported lazily, so
``petsc4py.init(argv)`` can run first with the command-line options.
"""

from .partition import Partition, partition

__all__ = ["Partition", "partition"]
