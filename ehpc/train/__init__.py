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

#: the torch side loads on first use, so ``ehpc.train.config`` stays light: ehpc.nn takes
#: the model defaults from it while this package is not yet loaded, and the Snakefile
#: checks training configs with it
_LAZY = {"DistInfo": ".distributed", "init_distributed": ".distributed", "Trainer": ".loop",
         "TrainingDiverged": ".loop", "TrainingInterrupted": ".loop"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name], __name__), name)


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
