"""Shared fixtures for the inference tests: a tiny random model and an mpirun helper."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MPI_SCRIPTS = Path(__file__).parent / "mpi_scripts"

#: generous bound on one mpirun of the test drivers (they take seconds)
MPIRUN_TIMEOUT = 300


def mpirun(n_ranks: int, *command, timeout: float = MPIRUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``command`` (a driver script name or an executable and its arguments) on ``n_ranks``."""
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not found")
    first = str(command[0])
    program = [sys.executable, str(MPI_SCRIPTS / first)] if first.endswith(".py") else [first]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "--oversubscribe", "-n", str(n_ranks), *program, *map(str, command[1:])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail with the job's output if it did not succeed."""
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"mpirun failed ({result.returncode}):\n{output}"
    return result


def random_si_model(cutoff: float, n_layers: int, seed: int = 0):
    """An untrained float64 HamiltonianModel for silicon in gth-szv."""
    import torch

    from ehpc.basis import Basis
    from ehpc.nn.model import HamiltonianModel

    torch.manual_seed(seed)
    model = HamiltonianModel(Basis("gth-szv"), [14], cutoff=cutoff, n_layers=n_layers, channels=4)
    return model.to(torch.float64)


@pytest.fixture(scope="session")
def si_model_path(tmp_path_factory) -> Path:
    """Two message-passing layers: receptive field 9 Å, more than the 64-atom cell's half width."""
    return random_si_model(cutoff=3.0, n_layers=2).save(tmp_path_factory.mktemp("model") / "si.pt")


def si_crystal(repeat=(2, 2, 2), seed: int = 1):
    """A rattled cubic diamond-Si supercell (8 atoms per repeat)."""
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * repeat
    atoms.rattle(stdev=0.05, seed=seed)
    atoms.info["name"] = "si_crystal"
    return atoms


def si_cluster(radius: float = 5.0, seed: int = 2):
    """A non-periodic Si cluster cut from the bulk, rattled."""
    from ase.build import bulk

    big = bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3)
    centre = big.get_cell().sum(axis=0) / 2
    keep = np.linalg.norm(big.positions - centre, axis=1) < radius
    atoms = big[keep]
    atoms.set_pbc(False)
    atoms.set_cell(np.zeros((3, 3)))
    atoms.rattle(stdev=0.05, seed=seed)
    atoms.info["name"] = "si_cluster"
    return atoms


def write_traj(atoms, path: Path) -> Path:
    """Write one structure losslessly (float64 positions) for a driver to read."""
    import ase.io

    ase.io.write(path, atoms, format="traj")
    return path


def petsc_dense(matrix: np.ndarray):
    """A small dense symmetric matrix as a sequential PETSc AIJ matrix."""
    from petsc4py import PETSc

    n = len(matrix)
    mat = PETSc.Mat().createAIJ(size=(n, n), nnz=n, comm=PETSc.COMM_SELF)
    mat.setValues(range(n), range(n), matrix)
    mat.assemble()
    mat.setOption(PETSc.Mat.Option.SYMMETRIC, True)
    return mat


def pencil(levels: np.ndarray, seed: int = 0, scale: float = 0.1):
    """(H, S) = (L D Lᵀ, L Lᵀ): generalised eigenvalues exactly ``levels``."""
    rng = np.random.default_rng(seed)
    n = len(levels)
    lower = np.tril(rng.normal(scale=scale, size=(n, n)), -1) + np.diag(rng.uniform(0.8, 1.2, n))
    return lower @ np.diag(levels) @ lower.T, lower @ lower.T
