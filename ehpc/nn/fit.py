"""Fit a model to records in memory, in one process: a thin call of the training core.

:func:`fit` builds a config from its arguments and runs ``ehpc.train.loop.Trainer``,
the same loop, loss (``ehpc.train.loss``) and metrics (``ehpc.train.metrics``) as
``ehpc-train``, without a dataset file, ranks or a run folder.  :func:`evaluate`
scores a model on records with the shared reducer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..io.dataset import HamiltonianRecord
from .data import collate
from .model import HamiltonianModel

LOSSES = ("mse", "mae")
OPTIMIZERS = ("adam", "lbfgs", "lm")


def fit(
    model: HamiltonianModel,
    train_records: Sequence[HamiltonianRecord],
    val_records: Sequence[HamiltonianRecord] = (),
    epochs: int = 100,
    lr: float = 5.0e-3,
    loss: str = "mse",
    diag_weight: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    optimizer: str = "adam",
    lr_final: float | None = None,
    device=None,
    eval_every: int = 1,
    callback: Callable[[dict], None] | None = None,
    band_weight: float = 0.0,
    band_window: float = 2.0,
    band_kpoints: int = 4,
    band_virtual: int = 4,
    max_minutes: float | None = None,
) -> list[dict]:
    """Train ``model`` on labelled records; returns one history row per epoch.

    Readout scales/shifts and the neighbour normalisation are fitted to
    ``train_records`` first unless the model already has them.  No EMA, no gradient
    clipping, no warm-up: the plain optimizer on the plain loss.

    Args:
        model: the network (modified in place, moved to ``device``/``dtype``).
        train_records: labelled structures to fit.
        val_records: labelled structures to monitor.
        epochs: passes over ``train_records``.
        lr: initial learning rate (Adam, L-BFGS) or initial relative damping (``"lm"``).
        loss: ``"mse"`` or ``"mae"`` over matrix elements (and eigenvalues).
        diag_weight: extra loss weight of on-site blocks.
        seed: seeds Python, NumPy, torch and the batch order.
        dtype: floating type of the network.
        batch_size: structures per step; None for full batches.
        optimizer: ``"adam"`` (cosine-decayed to ``lr_final``); ``"lbfgs"``
            (full batch, strong-Wolfe line search); or ``"lm"``, Levenberg-Marquardt on
            the full Jacobian (full batch, MSE only; one epoch is one accepted step).
        lr_final: learning rate reached at the last epoch (Adam); default ``lr / 100``.
        device: torch device.
        eval_every: compute validation metrics every this many epochs.
        callback: called with each history row (logging, checkpoints).
        band_weight, band_window, band_kpoints, band_virtual: the band-energy loss
            (``train.band_*`` of the config; ``ehpc.train.loss``); weight 0 is off.
        max_minutes: stop before an epoch would pass this wall time.

    Returns:
        Rows ``{"epoch", "loss", "lr", "seconds"}``, plus ``"val_mae_eV"``,
        ``"val_mae_uHa"`` (and ``"val_band_mae_meV"``) on validation epochs.
    """
    from ..train.config import from_dict
    from ..train.data import RecordData
    from ..train.distributed import DistInfo
    from ..train.loop import Trainer, TrainingDiverged, seed_everything

    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is not one of {LOSSES}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} is not one of {OPTIMIZERS}")
    if not train_records:
        raise ValueError("fit needs at least one training record")
    train = {
        "epochs": epochs, "lr": lr, "loss": loss, "diag_weight": diag_weight, "seed": seed,
        "dtype": str(dtype).removeprefix("torch."), "optimizer": optimizer,
        "batch_size": batch_size or len(train_records), "eval_every": eval_every,
        "schedule": "cosine" if optimizer == "adam" else "constant",
        "lr_min": lr / 100.0 if lr_final is None else lr_final, "warmup_steps": 0,
        "ema_decay": None, "grad_clip": None, "band_weight": band_weight,
        "band_window": band_window, "band_kpoints": band_kpoints,
        "band_virtual": band_virtual, "max_minutes": max_minutes,
    }
    config = from_dict({"train": train, "log": {"progress": False, "tensorboard": False}}, "fit")
    seed_everything(seed)
    where = torch.device(device) if device is not None else torch.device("cpu")
    model.to(device=where, dtype=dtype)
    for record in [*train_records, *val_records]:
        model.check_compatible(model.basis, record.numbers, record.name)
    data = RecordData(model.basis, list(train_records), list(val_records))
    if not bool(model.has_statistics):  # from the training graphs the trainer reuses
        model.set_statistics([data.graph(n, model) for n in data.train_names])
        model.set_fermi_offset(list(train_records))
    history: list[dict] = []

    def on_epoch(row: dict) -> None:
        out = {"epoch": row["epoch"], "loss": row["train_loss"], "lr": row["lr"],
               "seconds": row["seconds"]}
        out.update({k: v for k, v in row.items()
                    if k in ("val_mae_eV", "val_mae_uHa", "val_band_mae_meV",
                             "train_band_loss")})
        history.append(out)
        if callback is not None:
            callback(out)

    trainer = Trainer(config, DistInfo(0, 1, 0, where, "single"), None, model, data,
                      on_epoch=on_epoch)
    try:
        trainer.run()
    except TrainingDiverged as err:
        raise FloatingPointError(f"fit: {err}") from None
    finally:
        data.close()
    model.eval()
    return history


@torch.no_grad()
def evaluate(
    model: HamiltonianModel, records: Sequence[HamiltonianRecord], batch_size: int = 8
) -> dict:
    """Errors of the model's H blocks against labelled records, over every matrix element.

    Returns:
        ``mae_eV``, ``mae_uHa``, ``rmse_eV``, ``max_abs_eV``, ``onsite_mae_eV``,
        ``offsite_mae_eV``, ``n_entries``, ``n_structures``.
    """
    from ..train.metrics import ErrorSums

    was_training = model.training
    model.eval()
    sums = ErrorSums()
    graphs = []
    for record in records:
        graphs.append(model.graph_of(record))
    for s in range(0, len(graphs), batch_size):
        batch = graphs[s : s + batch_size]
        graph = collate(batch).to(model.device, model.dtype)
        sums.add_entries(model(graph).cpu(), graph.target.cpu(), graph.onsite_entries.cpu(),
                         len(batch))
    model.train(was_training)
    return sums.matrix()
