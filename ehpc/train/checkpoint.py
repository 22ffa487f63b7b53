"""Training checkpoints that survive being killed at any moment.

A checkpoint is written with :class:`ehpc.atomic.replacing` (a temporary file in the run
folder, flushed to disk, renamed over ``last.pt`` or ``best.pt``): a reader, or a run
resumed after SIGKILL or a node failure, sees either the previous complete checkpoint or
the new complete one, never a torn file.

Contents (all plain tensors, numbers and strings: ``torch.load(weights_only=True)``
reads it without running pickled code):

- ``model``: the raw (not averaged) weights and buffers; ``model_metadata``: the
  model's JSON metadata (basis, elements, cutoff, hyper-parameters), enough to rebuild it;
- ``optimizer``, ``schedule``, ``ema``: their state dicts;
- ``rng``: Python, NumPy, torch and CUDA generator states;
- ``progress``: epoch, step, batch within the epoch, partial epoch sums, best loss,
  early-stopping count;
- ``config``: the resolved training config; ``world_size``: ranks that wrote it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import leftovers, replacing
from ..errors import UserError

FORMAT = "ehpc-train-checkpoint"
VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or from something else."""


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``.

    If saving fails the previous file at ``path`` is untouched and the temporary removed.
    """
    with replacing(path, durable=True) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary checkpoint files left by a killed run; returns what was removed."""
    removed = []
    for name in (LAST, BEST):
        for tmp in leftovers(folder, name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# ---------------------------------------------------------------------- random state


def rng_state() -> dict:
    """Python, NumPy, torch and (when present) CUDA generator states as plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (the CUDA part on the current device, if both have one)."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------- checkpoints


def make_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule, ema,
                    progress: dict, config: dict, world_size: int) -> dict:
    """Everything a resumed run needs, as plain tensors and values.

    Args:
        model: the trained ``HamiltonianModel`` (not its DDP wrapper).
        optimizer: its optimizer.
        schedule: the :class:`~ehpc.train.schedule.LRSchedule`.
        ema: the :class:`~ehpc.train.ema.ExponentialMovingAverage`, or None.
        progress: counters (epoch, step, batch, partial sums, best loss ...).
        config: the resolved config as a nested dict.
        world_size: number of ranks of the run.
    """
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_metadata": json.dumps(model.metadata),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "rng": rng_state(),
        "progress": dict(progress),
        "config": config,
        "world_size": int(world_size),
    }


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`make_checkpoint` (``weights_only``).

    Raises:
        CheckpointError: the file is missing, unreadable, or not an ehpc-train checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({first})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ehpc-train checkpoint")
    if blob.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {blob.get('version')} is not "
                              f"{VERSION}; resume it with the ehpc version that wrote it")
    return blob


def restore(blob: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule,
            ema) -> dict:
    """Load weights, optimizer, schedule, EMA and random states; returns the progress."""
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    schedule.load_state_dict(blob["schedule"])
    if ema is not None:
        if blob["ema"] is None:
            raise CheckpointError("checkpoint has no EMA weights but train.ema_decay is set")
        ema.load_state_dict(blob["ema"])
    set_rng_state(blob["rng"])
    return dict(blob["progress"])


def export_model(checkpoint: str | Path, out: str | Path, model=None) -> Path:
    """Write the checkpoint's averaged (EMA) weights as a self-describing model file.

    The file is ``HamiltonianModel.save``'s: JSON metadata plus a state dict, readable
    with ``torch.load(weights_only=True)`` and ``HamiltonianModel.load``.  Written under
    a temporary name and renamed.

    Args:
        checkpoint: ``best.pt`` or ``last.pt``.
        out: model file to write.
        model: a model of the checkpoint's architecture to load the weights into (its
            own weights are overwritten); None builds one from the checkpoint's metadata.
    """
    from ..nn.model import HamiltonianModel

    blob = load_checkpoint(checkpoint)
    metadata = json.loads(blob["model_metadata"])
    if model is None or model.metadata != metadata:
        model = HamiltonianModel.from_metadata(metadata)
    dtype = next(v.dtype for v in blob["model"].values() if v.is_floating_point())
    model.to(dtype=dtype)
    model.load_state_dict(blob["model"])
    if blob["ema"] is not None:
        shadow = blob["ema"]["shadow"]
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(shadow[name])
    with replacing(out) as tmp:
        model.save(tmp)
    return Path(out)
