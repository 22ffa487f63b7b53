"""Distributed training of the Hamiltonian network (``ehpc-train``).

- ``config.py``: the config schema, ``--set`` overrides, the resolved ``config.yaml``;
- ``distributed.py``: ``init_distributed()`` for torchrun, srun and mpirun;
- ``batching.py``: per-rank batches in lockstep, exact validation shards;
- ``data.py``: the training/validation splits, checked, as graphs;
- ``loop.py``: the one training core (DDP, EMA, checkpoints, early stopping, time
  budget, progress line); ``ehpc.nn.fit`` calls it in one process;
- ``loss.py``: the losses (matrix elements with their weights; band energies);
- ``metrics.py``: the one error reducer (training, validation, ``ehpc-evaluate``);
- ``optim.py``: Levenberg-Marquardt for small exact fits;
- ``checkpoint.py``, ``ema.py``, ``schedule.py``: its parts (the learning-curve figure is
  ``ehpc.analysis.learning_curve``).
"""

from .config import Config, ConfigError, load_config
from .distributed import DistInfo, init_distributed
from .loop import Trainer, TrainingDiverged, TrainingInterrupted

__all__ = [
    "Config",
    "ConfigError",
    "DistInfo",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "init_distributed",
    "load_config",
]
