"""The distributed trainer: DDP steps, exact validation, checkpoints, EMA, stopping.

Loss and DDP.  The loss of a step is the weighted mean error over every matrix element
of the *global* batch (all ranks together)::

    L = sum_r S_r / sum_r w_r,   S_r = sum_{e on rank r} w_e err_e

DDP averages gradients over the W ranks, so rank r back-propagates ``W S_r / sum w``
(the weight total is all-reduced first): the average of those gradients is exactly the
gradient of L, and W ranks with b structures each take the same step as one process
with W b structures (``ehpc.train.batching``), whatever the sizes of the structures.

The same all-reduce carries a stop flag (SIGTERM/SIGUSR1 received on any rank), so
all ranks stop, or go on, together.  A non-finite loss or gradient norm, known on
every rank from the reduced sums, stops the run before the optimizer step: the weights
and the last checkpoint stay those of the last good step.

Validation runs on the exponential moving average of the weights, each validation
structure on exactly one rank; error sums and counts are all-reduced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ..nn.data import collate
from ..nn.fit import entry_weights
from ..nn.model import HamiltonianModel
from ..units import EV_TO_MEV, EV_TO_MICROHARTREE
from .batching import DistributedBatchSampler, pack, validation_shard
from .checkpoint import BEST, LAST, atomic_save, make_checkpoint, restore
from .config import Config
from .data import TrainingData
from .distributed import DistInfo, all_reduce
from .ema import ExponentialMovingAverage
from .schedule import LRSchedule

log = logging.getLogger("ehpc.train")

METRICS = "metrics.jsonl"
#: signals that ask for a checkpoint and a clean stop (SLURM: ``--signal=USR1@120``)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
LOSS_UNITS = {"mse": "eV^2", "mae": "eV"}


class TrainingDiverged(ValueError):
    """The loss or gradient became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """A stop signal arrived; a checkpoint was written and the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class Progress:
    """Where training stands; stored in every checkpoint.

    Attributes:
        epoch: completed epochs.
        step: optimizer steps taken.
        batch: batches done of epoch ``epoch`` (non-zero only in a mid-epoch checkpoint).
        loss_sum: weighted error sum of those batches (all ranks).
        weight_sum: their weight total.
        lr: learning rate of the last step.
        best_loss: lowest monitored loss so far.
        best_epoch: the epoch that reached it.
        bad_evaluations: evaluations since then (early stopping).
    """

    epoch: int = 0
    step: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    weight_sum: float = 0.0
    lr: float = 0.0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_evaluations: int = 0


def error_sum(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
              kind: str) -> torch.Tensor:
    """Weighted sum of squared (``"mse"``) or absolute (``"mae"``) errors, in float64."""
    diff = pred.to(torch.float64) - target  # [n_entries]
    err = diff.square() if kind == "mse" else diff.abs()
    return (weight * err).sum()


class StopSignals:
    """Record SIGTERM/SIGUSR1 instead of dying, while training; restores handlers on exit."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum

    def __enter__(self) -> StopSignals:
        if _in_main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class MetricsLog:
    """Rank 0's ``metrics.jsonl``: one JSON object per line, flushed as written.

    On resume, rows after the checkpoint's step (written by the killed run after its
    last checkpoint, possibly half a line) are dropped, so the file reads as if the
    run had never stopped.
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("step", math.inf) <= resume_step:
                    kept.append(line)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept))
            tmp.replace(path)
        elif resume_step is None:
            path.write_text("")
        self._file = open(path, "a")

    def write(self, row: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in row.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _tensorboard(out_dir: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard is not installed; metrics go to %s only", METRICS)
        return None
    return SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step)


class Trainer:
    """Trains a :class:`HamiltonianModel` on the train split of ``data`` across all ranks.

    Args:
        config: the resolved config.
        dist: this rank's place (``init_distributed``).
        out_dir: run folder (checkpoints, metrics).
        model: the model, already on ``dist.device`` in the training dtype, with statistics.
        data: the training and validation structures.
        resume: a loaded checkpoint to continue from, or None.
    """

    def __init__(self, config: Config, dist: DistInfo, out_dir: Path, model: HamiltonianModel,
                 data: TrainingData, resume: dict | None = None):
        tc = config.train
        self.config = config
        self.tc = tc
        self.dist = dist
        self.out_dir = out_dir
        self.module = model
        self.data = data
        self.device = dist.device
        self.dtype = model.dtype
        if dist.is_distributed:
            # with several elements, a rank's batch may lack an element (pair) and give
            # its readout no gradient; DDP must then look for unused parameters
            self.net = DistributedDataParallel(model,
                                               find_unused_parameters=len(model.elements) > 1)
        else:
            self.net = model
        optimizer = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.schedule = LRSchedule(self.optimizer, tc.lr, tc.schedule, tc.epochs, tc.warmup_steps,
                                   tc.lr_min, tc.plateau_factor, tc.plateau_patience)
        self.ema = ExponentialMovingAverage(model, tc.ema_decay) if tc.ema_decay else None
        self.progress = Progress()
        if resume is not None:
            self.progress = Progress(**restore(resume, model, self.optimizer, self.schedule,
                                               self.ema))
        self.train_sizes = data.orbitals(data.train_names)
        self.sampler = DistributedBatchSampler(self.train_sizes, tc.batch_size, tc.max_orbitals,
                                               dist.rank, dist.world_size, True, tc.seed)
        val_sizes = data.orbitals(data.val_names)
        shard = validation_shard(len(data.val_names), dist.rank, dist.world_size)
        self.val_batches = pack(shard, val_sizes, tc.val_batch_size or tc.batch_size,
                                tc.max_orbitals)
        self.metrics: MetricsLog | None = None
        self.board = None

    # ------------------------------------------------------------------ data

    def _batch(self, names: list[str]):
        graphs = [self.data.graph(n, self.module.cutoff, self.module.elements, self.module.basis)
                  for n in names]
        return collate(graphs).to(self.device, self.dtype)

    # ------------------------------------------------------------------ steps

    def train_step(self, names: list[str], stop: bool) -> tuple[float, float, bool]:
        """One optimizer step on this rank's ``names``; returns global (sum, weight, stop)."""
        graph = self._batch(names)
        weight = entry_weights(graph, self.tc.diag_weight)  # [n_entries]
        self.optimizer.zero_grad(set_to_none=True)
        local = error_sum(self.net(graph), graph.target, weight, self.tc.loss)
        sums = torch.stack([local.detach(), weight.sum(),
                            local.new_tensor(1.0 if stop else 0.0)])  # [3]
        all_reduce(sums)
        total, weight_total, stop_any = (float(v) for v in sums.cpu())
        p = self.progress
        if not math.isfinite(total / weight_total):
            raise TrainingDiverged(
                f"loss became {total / weight_total} at epoch {p.epoch + 1}, step {p.step + 1} "
                f"(lr {p.lr:.3g}); {self._last_good()}; lower train.lr or check the data"
            )
        (local * (self.dist.world_size / weight_total)).backward()
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(),
                                              self.tc.grad_clip or math.inf)
        if not math.isfinite(float(norm)):
            raise TrainingDiverged(
                f"gradient norm became {float(norm)} at epoch {p.epoch + 1}, step {p.step + 1}; "
                f"{self._last_good()}; lower train.lr or set train.dtype=float64"
            )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.module)
        return total, weight_total, stop_any > 0

    def _last_good(self) -> str:
        last = self.out_dir / LAST
        if last.exists():
            return f"the last good checkpoint {last} (epoch {self.progress.epoch}) is unchanged"
        return "no checkpoint was written yet"

    @contextlib.contextmanager
    def averaged_weights(self):
        """Swap the EMA weights into the model for evaluation, and back afterwards."""
        if self.ema is None:
            yield self.module
            return
        saved = {k: p.detach().clone() for k, p in self.module.named_parameters()}
        self.ema.copy_to(self.module)
        try:
            yield self.module
        finally:
            with torch.no_grad():
                for k, p in self.module.named_parameters():
                    p.copy_(saved[k])

    @torch.no_grad()
    def validate(self) -> dict:
        """Errors of the averaged model over the validation split (exact over ranks)."""
        # [loss sum, weight, |e| sum, e^2 sum, entries, on-site |e|, on-site n,
        #  off-site |e|, off-site n, structures]
        sums = torch.zeros(10, dtype=torch.float64, device=self.device)
        worst = torch.zeros(1, dtype=torch.float64, device=self.device)
        names = self.data.val_names
        with self.averaged_weights() as model:
            was_training = model.training
            model.eval()
            for batch in self.val_batches:
                graph = self._batch([names[i] for i in batch])
                pred = model(graph)
                weight = entry_weights(graph, self.tc.diag_weight)
                diff = pred.to(torch.float64) - graph.target  # [n_entries]
                err = diff.abs()
                on = graph.onsite_entries
                sums += torch.stack([
                    error_sum(pred, graph.target, weight, self.tc.loss), weight.sum(),
                    err.sum(), diff.square().sum(), sums.new_tensor(err.numel()),
                    err[on].sum(), on.sum().to(sums), err[~on].sum(), (~on).sum().to(sums),
                    sums.new_tensor(len(batch)),
                ])
                worst = torch.maximum(worst, err.max(dim=0, keepdim=True).values)
            model.train(was_training)
        all_reduce(sums)
        all_reduce(worst, "max")
        s = [float(v) for v in sums.cpu()]
        mae = s[2] / s[4]
        return {
            "val_loss": s[0] / s[1],
            "val_mae_eV": mae,
            "val_mae_uHa": mae * EV_TO_MICROHARTREE,
            "val_rmse_eV": math.sqrt(s[3] / s[4]),
            "val_max_abs_eV": float(worst.item()),
            "val_onsite_mae_eV": s[5] / s[6] if s[6] else 0.0,
            "val_offsite_mae_eV": s[7] / s[8] if s[8] else 0.0,
            "val_entries": int(s[4]),
            "val_structures": int(s[9]),
        }

    # ------------------------------------------------------------------ checkpoints

    def save(self, name: str) -> Path | None:
        """Rank 0 writes the full training state to ``out_dir/name`` atomically."""
        if not self.dist.is_main:
            return None
        blob = make_checkpoint(self.module, self.optimizer, self.schedule, self.ema,
                               asdict(self.progress), self.config.to_dict(),
                               self.dist.world_size)
        return atomic_save(blob, self.out_dir / name)

    # ------------------------------------------------------------------ the run

    def run(self) -> Progress:
        """Train until ``train.epochs``, early stopping, divergence or a stop signal."""
        resumed = self.progress.step > 0 or self.progress.epoch > 0
        if self.dist.is_main:
            self.metrics = MetricsLog(self.out_dir / METRICS,
                                      self.progress.step if resumed else None)
            if self.config.log.tensorboard:
                self.board = _tensorboard(self.out_dir, self.progress.step if resumed else None)
        try:
            with StopSignals() as signals:
                self._epochs(signals)
        finally:
            if self.metrics is not None:
                self.metrics.close()
            if self.board is not None:
                self.board.close()
        return self.progress

    def _epochs(self, signals: StopSignals) -> None:
        tc, p = self.tc, self.progress
        unit = LOSS_UNITS[tc.loss]
        while p.epoch < tc.epochs:
            epoch = p.epoch
            self.sampler.set_epoch(epoch)
            batches = self.sampler.batches()
            names = self.data.train_names
            start = time.perf_counter()
            bar = self._progress_bar(len(batches), p.batch, epoch)
            stop = False
            for k in range(p.batch, len(batches)):
                p.lr = self.schedule.apply(p.step, epoch + k / len(batches))
                total, weight, stop = self.train_step([names[i] for i in batches[k]],
                                                      signals.received is not None)
                p.step += 1
                p.batch = k + 1
                p.loss_sum += total
                p.weight_sum += weight
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total / weight:.3g}")
                if self.metrics is not None and self.config.log.step_metrics:
                    self.metrics.write({"kind": "step", "epoch": epoch + 1, "step": p.step,
                                        "lr": p.lr, "loss": total / weight})
                if stop and k + 1 < len(batches):
                    self._interrupt(signals.received, epoch)
            if bar is not None:
                bar.close()
            row = self._end_epoch(epoch, time.perf_counter() - start)
            log.info(self._describe(row, unit))
            if stop:
                self._interrupt(signals.received, epoch)
            if tc.patience is not None and p.bad_evaluations >= tc.patience:
                log.info("early stopping: no better %s for %d evaluations (best %.6g at "
                         "epoch %d)", self._monitor_name(), p.bad_evaluations, p.best_loss,
                         p.best_epoch)
                if p.epoch % tc.checkpoint_every:  # the last epoch was not saved yet
                    self.save(LAST)
                return

    def _monitor_name(self) -> str:
        return "val_loss" if self.data.val_names else "train_loss"

    def _end_epoch(self, epoch: int, seconds: float) -> dict:
        tc, p = self.tc, self.progress
        train_loss = p.loss_sum / p.weight_sum
        p.epoch, p.batch, p.loss_sum, p.weight_sum = epoch + 1, 0, 0.0, 0.0
        row = {"kind": "epoch", "epoch": p.epoch, "step": p.step, "lr": p.lr,
               "train_loss": train_loss}
        last = p.epoch == tc.epochs
        improved = False
        if p.epoch % tc.eval_every == 0 or last:
            if self.data.val_names:
                row.update(self.validate())
            monitored = row[self._monitor_name()]
            self.schedule.report(monitored)
            improved = math.isfinite(monitored) and monitored < p.best_loss
            if improved:
                p.best_loss, p.best_epoch, p.bad_evaluations = monitored, p.epoch, 0
            else:
                p.bad_evaluations += 1
        row.update(best_loss=p.best_loss, seconds=seconds, time=time.time())
        if self.metrics is not None:
            self.metrics.write(row)
        if self.board is not None:
            for key, value in row.items():
                if key not in ("kind", "epoch", "step", "time") and isinstance(value, float):
                    self.board.add_scalar(key, value, p.step)
        if improved:
            self.save(BEST)
        if p.epoch % tc.checkpoint_every == 0 or last:
            self.save(LAST)
        return row

    def _interrupt(self, signum: int | None, epoch: int) -> None:
        path = self.save(LAST) or self.out_dir / LAST
        name = signal.Signals(signum).name if signum else "a stop signal"
        raise TrainingInterrupted(
            f"stopped by {name} in epoch {epoch + 1} after step {self.progress.step}; "
            f"state saved to {path}; continue with --resume", signum or signal.SIGTERM)

    def _describe(self, row: dict, unit: str) -> str:
        text = (f"epoch {row['epoch']}/{self.tc.epochs}  step {row['step']}  "
                f"lr {row['lr']:.3g}  train_loss {row['train_loss']:.4g} {unit}")
        if "val_loss" in row:
            text += (f"  val_loss {row['val_loss']:.4g} {unit}  val_mae "
                     f"{row['val_mae_eV'] * EV_TO_MEV:.4g} meV ({row['val_mae_uHa']:.4g} uHa)")
        return text + f"  ({row['seconds']:.1f} s)"

    def _progress_bar(self, total: int, done: int, epoch: int):
        """tqdm on rank 0, only when stderr is a terminal (never in logs or pipes)."""
        if not (self.dist.is_main and self.config.log.progress and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}", leave=False,
                    file=sys.stderr, dynamic_ncols=True)
