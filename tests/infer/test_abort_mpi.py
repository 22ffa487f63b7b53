"""A failure on one rank ends the whole MPI job promptly, with one message naming the rank."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms

from .conftest import mpirun, random_si_model, write_traj

pytestmark = pytest.mark.mpi

#: a job whose other ranks hang in a collective would be killed by the timeout instead
PROMPT_EXIT_S = 30


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("abort")
    return random_si_model(cutoff=3.0, n_layers=1).save(folder / "model.pt")


def test_exception_on_one_rank_aborts_all(model_path, tmp_path):
    start = time.monotonic()
    run = mpirun(
        2, "abort_driver.py", 1, "--model", model_path, "--supercell", "Si:diamond:5.43:1x1x2",
        "--out", tmp_path / "never.h5", timeout=4 * PROMPT_EXIT_S,
    )
    elapsed = time.monotonic() - start
    assert run.returncode != 0
    assert elapsed < PROMPT_EXIT_S, f"job took {elapsed:.0f} s to end"
    assert "ehpc-infer: rank 1: RuntimeError: injected failure in prediction" in run.stderr
    assert not (tmp_path / "never.h5").exists()


def test_bad_structure_is_a_clear_error_before_heavy_work(model_path, tmp_path):
    atoms = Atoms("Si2", positions=[[0, 0, 0], [0, 0, 0.3]], cell=np.eye(3) * 6.0, pbc=True)
    structure = write_traj(atoms, tmp_path / "close.traj")
    run = mpirun(2, "ehpc-infer", "--model", model_path, "--structure", structure,
                 "--out", tmp_path / "out.h5", timeout=4 * PROMPT_EXIT_S)
    assert run.returncode != 0
    assert "0.300 Å apart" in run.stderr and "ehpc-infer: rank " in run.stderr
    assert "Traceback" not in run.stderr  # a user error is one line, not a stack


def test_element_missing_from_model_is_a_clear_error(model_path, tmp_path, capsys):
    """In one process: ``main`` returns the status instead of aborting MPI."""
    from ase.build import bulk

    from ehpc.cli.infer import USAGE_ERROR, main

    carbon = write_traj(bulk("C", "diamond", a=3.57, cubic=True), tmp_path / "carbon.traj")
    status = main(["--model", str(model_path), "--structure", str(carbon),
                   "--out", str(tmp_path / "c.h5")])
    assert status == USAGE_ERROR
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("ehpc-infer: rank 0: ")
    assert "C" in message[0]
    assert not (tmp_path / "c.h5").exists()
