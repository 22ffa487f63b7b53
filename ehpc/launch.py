"""Which launcher started this process, and where the process sits: one table for all.

How each launcher announces a process's place (the first that matches wins):

================  ===========================  =========================  ======================
launcher          rank                         world size                 local rank
================  ===========================  =========================  ======================
torchrun          ``RANK``                     ``WORLD_SIZE``             ``LOCAL_RANK``
srun              ``SLURM_PROCID``             ``SLURM_STEP_NUM_TASKS``   ``SLURM_LOCALID``
Open MPI mpirun   ``OMPI_COMM_WORLD_RANK``     ``OMPI_COMM_WORLD_SIZE``   ``..._LOCAL_RANK``
MPICH/Intel MPI   ``PMI_RANK``                 ``PMI_SIZE``               ``MPI_LOCALRANKID``
================  ===========================  =========================  ======================

``ehpc-train`` (``train/distributed.py``) reads all four columns; ``ehpc-infer`` needs only
the local rank, to give each rank on a node its own GPU.  Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: env var names per launcher: (rank, world size, local rank, recognised by)
LAUNCHERS = {
    "torchrun": ("RANK", "WORLD_SIZE", "LOCAL_RANK", "WORLD_SIZE"),
    "srun": ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS"),
    "mpirun": ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
               "OMPI_COMM_WORLD_SIZE"),
    "mpich": ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "PMI_SIZE"),
}

#: the launchers of MPI jobs (``mpirun ehpc-infer``), in the order their local rank is read
MPI_LAUNCHERS = ("mpirun", "mpich", "srun")


def mpi_local_rank(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's rank on its node as an MPI launcher set it; None when none did."""
    env = os.environ if environ is None else environ
    for launcher in MPI_LAUNCHERS:
        local_var = LAUNCHERS[launcher][2]
        if local_var in env:
            return int(env[local_var])
    return None
