"""A tiny real dataset for the trainer: PySCF STO-3G/PBE labels of small molecules.

Water, H2 and H2O2 with random displacements: structures of different sizes (2, 7
and 12 orbitals), so a per-rank loss normalisation that ignored the global batch, or
a rank that skipped a structure, would show.  Splits: 6 train, 3 val (odd on purpose:
2 ranks get 2 and 1), 1 test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import molecule

from ehpc.basis import Basis
from ehpc.dft import label_structure, pyscf_version
from ehpc.io.dataset import DatasetWriter
from ehpc.io.splits import write_splits

BASIS = Basis("sto-3g")
XC = "pbe"
LABEL_CUTOFF = 4.0  # Å: every pair of these molecules
RATTLE = 0.05  # Å

#: name -> (molecule, displacement seed)
MOLECULES = {
    "water_0": ("H2O", 0), "water_1": ("H2O", 1), "water_2": ("H2O", 2), "water_3": ("H2O", 3),
    "water_4": ("H2O", 4), "h2_0": ("H2", 5), "h2_1": ("H2", 6), "h2o2_0": ("H2O2", 7),
    "h2o2_1": ("H2O2", 8), "h2o2_2": ("H2O2", 9),
}
SPLITS = {
    "train": ["h2_0", "h2o2_0", "h2o2_1", "water_0", "water_1", "water_2"],
    "val": ["h2_1", "h2o2_2", "water_3"],
    "test": ["water_4"],
}

#: a network small enough to train in seconds on one core, in float64 and bit-repeatable
TINY = {
    "model": {"cutoff": 3.0, "n_layers": 1, "channels": 4, "n_radial": 4, "radial_hidden": 8},
    "train": {"epochs": 3, "batch_size": 2, "lr": 5.0e-3, "warmup_steps": 2, "dtype": "float64",
              "deterministic": True, "ema_decay": 0.9, "grad_clip": 10.0, "seed": 3},
    "log": {"progress": False, "tensorboard": False},
}


def labelled(name: str):
    formula, seed = MOLECULES[name]
    atoms = molecule(formula)
    atoms.rattle(RATTLE, seed=seed)
    return label_structure(atoms, BASIS, XC, LABEL_CUTOFF, name, conv_tol=1e-10)


def write_dataset(path: Path, records, splits: dict[str, list[str]]) -> Path:
    with DatasetWriter(path, BASIS, XC, "pyscf", pyscf_version()) as writer:
        for record in records:
            writer.write(record)
    write_splits(path, splits)
    return path


@pytest.fixture(scope="session")
def records():
    return {name: labelled(name) for name in MOLECULES}


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, records) -> Path:
    folder = tmp_path_factory.mktemp("train_data")
    return write_dataset(folder / "molecules.h5", records.values(), SPLITS)


@pytest.fixture
def config_file(tmp_path, dataset) -> Path:
    """The tiny config with the dataset filled in, as a YAML file."""
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data": {"path": str(dataset)}}))
    return path


def copy_dataset(dataset: Path, folder: Path) -> Path:
    target = folder / dataset.name
    shutil.copy(dataset, target)
    return target


def train_env() -> dict[str, str]:
    """Environment of a trainer subprocess: one thread, no launcher variables inherited."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_")) and k not in
           ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_trainer(args: list[str], ranks: int = 1, timeout: float = 240.0,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m ehpc.cli.train`` (one rank) or under ``torchrun --standalone``."""
    if ranks == 1:
        command = [sys.executable, "-m", "ehpc.cli.train", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={ranks}", "-m", "ehpc.cli.train", *args]
    return subprocess.run(command, env=env or train_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def read_rows(path: Path, kind: str) -> list[dict]:
    import json

    return [row for row in map(json.loads, path.read_text().splitlines()) if row["kind"] == kind]


def assert_rows_close(a: list[dict], b: list[dict], rtol: float, skip=("seconds", "time")):
    assert len(a) == len(b) > 0
    for row_a, row_b in zip(a, b, strict=True):
        assert set(row_a) == set(row_b)
        for key in row_a:
            if key in skip:
                continue
            if isinstance(row_a[key], float):
                np.testing.assert_allclose(row_b[key], row_a[key], rtol=rtol, atol=0, err_msg=key)
            else:
                assert row_b[key] == row_a[key], key
