"""Learning curve PNG from a run's ``metrics.jsonl`` (matplotlib, no display needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import replacing
from ..units import EV_TO_MEV


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` file (a torn last line is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_learning_curve(metrics: str | Path, out: str | Path, title: str = "") -> Path:
    """Loss (log scale) and validation MAE against epoch, plus the learning rate.

    Args:
        metrics: ``metrics.jsonl`` written by the trainer.
        out: PNG file to write (atomically).
        title: figure title, e.g. the run folder.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics) if r.get("kind") == "epoch"]

    def values(key: str, scale: float = 1.0) -> list[float]:
        return [math.nan if r.get(key) is None else r[key] * scale for r in rows]

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True,
                                         height_ratios=(3, 1))
    epochs = [r["epoch"] for r in rows]
    ax_loss.plot(epochs, values("train_loss"), label="train loss")
    evaluated = [r for r in rows if r.get("val_loss") is not None]
    if evaluated:
        val_epochs = [r["epoch"] for r in evaluated]
        ax_loss.plot(val_epochs, [r["val_loss"] for r in evaluated], "o-", ms=3,
                     label="val loss (EMA)")
        mae = ax_loss.twinx()
        mae.plot(val_epochs, [r["val_mae_eV"] * EV_TO_MEV for r in evaluated], "s--", ms=3,
                 color="C2", label="val MAE")
        mae.set_ylabel("validation MAE (meV)")
        mae.set_yscale("log")
        mae.legend(loc="upper center")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="upper right")
    ax_lr.plot(epochs, values("lr"), color="C3")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with replacing(out, suffix=".png") as tmp:  # matplotlib picks the format from the name
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return Path(out)
