"""The one training core: DDP steps, exact validation, checkpoints, EMA, stopping.

``ehpc-train`` runs it on a dataset file over any number of ranks; ``ehpc.nn.fit`` runs
it in one process on records in memory.  The loss is ``ehpc.train.loss``'s, the metrics
``ehpc.train.metrics``'s.

Loss and DDP.  The loss of a step is the weighted mean error over every matrix element
of the *global* batch (all ranks together), plus the optional band-energy term::

    L = sum_r S_r / sum_r w_r + λ sum_r B_r / sum_r N_r,
    S_r = sum_{e on rank r} w_e err_e,   B_r = sum_{eigenvalues on rank r} err

DDP averages gradients over the W ranks, so rank r back-propagates
``W (S_r / sum w + λ B_r / sum N)`` (the totals are all-reduced first): the average of
those gradients is exactly the gradient of L, and W ranks with b structures each take
the same step as one process with W b structures (``ehpc.train.batching``), whatever
the sizes of the structures.

The same all-reduce carries a stop flag (SIGTERM/SIGUSR1 received on any rank), so
all ranks stop, or go on, together.  A non-finite loss or gradient norm, known on
every rank from the reduced sums, stops the run before the optimizer step: the weights
and the last checkpoint stay those of the last good step.

Validation runs on the exponential moving average of the weights, each validation
structure on exactly one rank; error sums and counts are all-reduced.

Feedback and budget.  Rank 0 logs one line per epoch: epoch i/n, losses, seconds per
epoch, elapsed time and the ETA.  With ``train.max_minutes`` the run stops after the
epoch that leaves too little time for another one (all ranks agree), validates,
writes ``last.pt`` as a normal end would, and can be continued with ``--resume``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..atomic import write_text
from ..errors import UserError
from ..nn.data import collate
from ..nn.model import HamiltonianModel
from ..units import EV_TO_MEV
from .batching import DistributedBatchSampler, pack, validation_shard
from .checkpoint import BEST, LAST, atomic_save, make_checkpoint, restore
from .config import Config, ConfigError
from .data import Structures
from .distributed import DistInfo, all_reduce
from .ema import ExponentialMovingAverage
from .loss import BandTarget, Loss, band_error_sum, band_target, entry_weights
from .metrics import ErrorSums, validation_row
from .optim import LBFGS_HISTORY, LBFGS_ITERATIONS, LevenbergMarquardt
from .readout_fit import (
    WINDOW_WEIGHTS,
    NormalEquations,
    normal_equations,
    readout_weights,
    solve_readout,
)
from .schedule import LRSchedule

log = logging.getLogger("ehpc.train")

METRICS = "metrics.jsonl"
#: signals that ask for a checkpoint and a clean stop (SLURM: ``--signal=USR1@120``)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
LOSS_UNITS = {"mse": "eV^2", "mae": "eV"}
#: optimizers that take a whole-batch closure (one process, full batch)
CLOSURE_OPTIMIZERS = ("lbfgs", "lm")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingDiverged(UserError, ValueError):
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
        band_sum: band-energy error sum of those batches (all ranks).
        band_count: eigenvalues in it.
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
    band_sum: float = 0.0
    band_count: float = 0.0


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
            write_text(path, "".join(f"{line}\n" for line in kept))
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
        out_dir: run folder (checkpoints, metrics); None writes nothing (``nn.fit``).
        model: the model, already on ``dist.device`` in the training dtype, with statistics.
        data: the training and validation structures (a dataset file or records).
        resume: a loaded checkpoint to continue from, or None.
        on_epoch: called on rank 0 with every epoch's metrics row.
    """

    def __init__(self, config: Config, dist: DistInfo, out_dir: Path | None,
                 model: HamiltonianModel, data: Structures, resume: dict | None = None,
                 on_epoch: Callable[[dict], None] | None = None):
        tc = config.train
        self.config = config
        self.tc = tc
        self.dist = dist
        self.out_dir = out_dir
        self.module = model
        self.data = data
        self.device = dist.device
        self.dtype = model.dtype
        self.on_epoch = on_epoch
        self.loss = Loss(tc.loss, tc.diag_weight, tc.band_weight)
        self._check_optimizer(tc, dist)
        if dist.is_distributed:
            # with several elements, a rank's batch may lack an element (pair) and give
            # its readout no gradient; DDP must then look for unused parameters
            self.net = DistributedDataParallel(model,
                                               find_unused_parameters=len(model.elements) > 1)
        else:
            self.net = model
        self.optimizer = make_optimizer(tc, model)
        self.schedule = LRSchedule(self.optimizer, tc.lr, tc.schedule, tc.epochs, tc.warmup_steps,
                                   tc.lr_min, tc.plateau_factor, tc.plateau_patience)
        self.ema = ExponentialMovingAverage(model, tc.ema_decay) if tc.ema_decay else None
        self.progress = Progress()
        if resume is not None:
            self.progress = Progress(**restore(resume, model, self.optimizer, self.schedule,
                                               self.ema))
        self.train_sizes = data.orbitals(data.train_names)
        batch_size = (len(data.train_names) if tc.optimizer in CLOSURE_OPTIMIZERS
                      else tc.batch_size)
        self.sampler = DistributedBatchSampler(self.train_sizes, batch_size, tc.max_orbitals,
                                               dist.rank, dist.world_size, True, tc.seed)
        val_sizes = data.orbitals(data.val_names)
        shard = validation_shard(len(data.val_names), dist.rank, dist.world_size)
        self.val_batches = pack(shard, val_sizes, tc.val_batch_size or tc.batch_size,
                                tc.max_orbitals)
        self.metrics: MetricsLog | None = None
        self.board = None
        self._clock = RunClock(tc.max_minutes)

    @staticmethod
    def _check_optimizer(tc, dist: DistInfo) -> None:
        if tc.optimizer not in CLOSURE_OPTIMIZERS:
            return
        if dist.is_distributed:
            raise ConfigError(f"train.optimizer: {tc.optimizer!r} runs in one process; use "
                              "adam or adamw with several ranks")
        if tc.optimizer == "lm" and (tc.loss != "mse" or tc.band_weight > 0):
            raise ConfigError("train.optimizer: 'lm' minimises squared matrix-element errors; "
                              "set train.loss=mse and train.band_weight=0, or use adam")

    # ------------------------------------------------------------------ data

    def _batch(self, names: list[str]):
        """The collated graph of ``names`` and their band targets (None when off)."""
        m = self.module
        graphs = [self.data.graph(n, m) for n in names]
        bands = None
        if self.loss.uses_bands:
            tc = self.tc
            bands = [self.data.band(n, g, tc.band_kpoints, tc.band_window, tc.band_virtual)
                     .to(self.device) for n, g in zip(names, graphs)]
        return collate(graphs).to(self.device, self.dtype), bands

    # ------------------------------------------------------------------ steps

    def train_step(self, names: list[str], stop: bool) -> tuple[torch.Tensor, bool]:
        """One optimizer step on this rank's ``names``.

        Returns:
            The global sums ``[element, weight, band, band_abs, band_count]`` of the
            batch before the step, and whether any rank asked to stop.
        """
        graph, bands = self._batch(names)
        if self.tc.optimizer in CLOSURE_OPTIMIZERS:
            return self._closure_step(graph, bands), stop
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.loss.terms(self.net(graph), graph, bands)
        sums = torch.stack([terms.element.detach(), terms.weight, terms.band.detach(),
                            terms.band_abs, terms.element.new_tensor(float(terms.band_count)),
                            terms.element.new_tensor(1.0 if stop else 0.0)])  # [6]
        all_reduce(sums)
        element, weight, band, _, count, stop_any = (float(v) for v in sums.cpu())
        value = self.loss.combine(element, weight, band, count)
        p = self.progress
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss became {value} at epoch {p.epoch + 1}, step {p.step + 1} "
                f"(lr {p.lr:.3g}); {self._last_good()}; lower train.lr or check the data"
            )
        local = terms.element * (self.dist.world_size / weight)
        if self.loss.uses_bands and count:
            local = local + terms.band * (self.loss.band_weight * self.dist.world_size / count)
        local.backward()
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
        return sums[:5].cpu(), stop_any > 0

    def _closure_step(self, graph, bands) -> torch.Tensor:
        """One L-BFGS or Levenberg-Marquardt step on the whole batch (one process)."""
        first: list[torch.Tensor] = []
        weight = entry_weights(graph, self.tc.diag_weight)  # [n_entries]

        def record(element, band, band_abs, count):
            if not first:
                first.append(torch.stack([element.detach(), weight.sum().to(element),
                                          band.detach(), band_abs,
                                          element.new_tensor(float(count))]).cpu())

        def closure():
            if self.tc.optimizer == "lm":
                scaled = (weight / weight.mean()).sqrt()  # [n_entries]
                residual = (self.net(graph) - graph.target) * scaled  # [n_entries]
                element = residual.detach().to(torch.float64).square().sum() * weight.mean()
                record(element, element.new_zeros(()), element.new_zeros(()), 0)
                return residual
            self.optimizer.zero_grad(set_to_none=True)
            terms = self.loss.terms(self.net(graph), graph, bands)
            value = self.loss.combine(terms.element, terms.weight, terms.band, terms.band_count)
            value.backward()
            record(terms.element, terms.band, terms.band_abs, terms.band_count)
            return value

        self.optimizer.step(closure)
        if self.ema is not None:
            self.ema.update(self.module)
        sums = first[0]
        value = self.loss.combine(*(float(v) for v in sums[[0, 1, 2, 4]]))
        if not math.isfinite(value):
            p = self.progress
            raise TrainingDiverged(f"loss became {value} at epoch {p.epoch + 1}; lower "
                                   "train.lr or check the data")
        return sums

    def _last_good(self) -> str:
        last = None if self.out_dir is None else self.out_dir / LAST
        if last is not None and last.exists():
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
    def validate(self, averaged: bool = True) -> dict:
        """Errors of the averaged model (``averaged=False``: the model as it is) over the
        validation split (exact over ranks)."""
        sums = ErrorSums(self.device)
        names = self.data.val_names
        with self.averaged_weights() if averaged else contextlib.nullcontext(self.module) as model:
            was_training = model.training
            model.eval()
            for batch in self.val_batches:
                graph, bands = self._batch([names[i] for i in batch])
                pred = model(graph)
                terms = self.loss.terms(pred, graph, bands)
                sums.add(loss=terms.element, weight=terms.weight, band=terms.band,
                         band_abs=terms.band_abs, band_count=terms.band_count)
                sums.add_entries(pred, graph.target, graph.onsite_entries, len(batch))
            model.train(was_training)
        return validation_row(sums.all_reduce(), self.loss)

    def refit_readout(self) -> dict:
        """``train.readout_fit``: solve the model's readout by least squares on the training
        split (:mod:`ehpc.train.readout_fit`), features as they are.  Every rank must call it.

        Without ``train.readout_kpoints`` the fit is to the matrix elements and is kept
        only if it lowers the validation loss.  With them, the window block of H(k) in the
        DFT eigenbasis at those k-points joins the fit; its weight is the one of
        :data:`WINDOW_WEIGHTS` whose readout gives the validation split the smallest
        eigenvalue error at the same k-points, and the result is kept only if that error
        drops.  A model with the kinetic baseline has its potential v solved for too.

        Returns:
            ``before`` and ``after`` validation rows, ``kept``, ``seconds``, and with
            k-points ``weight`` (the chosen one) and ``band_mae_meV`` (before, after).
        """
        start = time.perf_counter()
        model = self.module
        kpoints = self.tc.readout_kpoints if self.data.val_names else 0
        before = self.validate(averaged=False)
        saved = [w.detach().clone() for w in readout_weights(model)]
        was_training = model.training
        model.eval()
        if kpoints:
            val = [(n, self._readout_target(n, kpoints)) for n in
                   (self.data.val_names[i] for i in validation_shard(
                       len(self.data.val_names), self.dist.rank, self.dist.world_size))]
            band_before = self._band_error(val)
        names = self.data.train_names[self.dist.rank :: self.dist.world_size]
        batches = ((self._batch([n])[0], [self._readout_target(n, kpoints)] if kpoints else None)
                   for n in names)
        elements, bands = normal_equations(model, batches, self.tc.diag_weight)
        if self.dist.is_distributed:
            elements.reduce(all_reduce)
            if kpoints:
                bands = bands or NormalEquations.zeros(len(elements.rhs), model.device)
                bands.reduce(all_reduce)
        extra = {}
        if kpoints:
            errors = {}
            for weight in WINDOW_WEIGHTS:
                solve_readout(model, elements, bands, weight)
                errors[weight] = self._band_error(val)
            chosen = min(errors, key=errors.get)  # among equal errors the lightest weight
            solve_readout(model, elements, bands, chosen)
            extra = {"weight": chosen, "band_mae_meV": (band_before, errors[chosen])}
        else:
            solve_readout(model, elements)
        model.train(was_training)
        after = self.validate(averaged=False)
        if kpoints:
            kept = errors[chosen] < band_before
        else:
            kept = after["val_loss"] < before["val_loss"]
        if not kept:
            with torch.no_grad():
                for w, s in zip(readout_weights(model), saved):
                    w.copy_(s)
        return {"before": before, "after": after, "kept": kept,
                "seconds": time.perf_counter() - start, **extra}

    def _readout_target(self, name: str, kpoints: int) -> BandTarget:
        """The band target of ``name`` at ``kpoints`` k-points, for the readout fit (not the
        band loss's cached one, whose k-points are ``train.band_kpoints``)."""
        m, tc = self.module, self.tc
        graph = self.data.graph(name, m)
        return band_target(self.data.record(name), graph, m.basis, kpoints, tc.band_window,
                           tc.band_virtual).to(self.device)

    @torch.no_grad()
    def _band_error(self, targets: list[tuple[str, BandTarget]]) -> float:
        """Mean absolute eigenvalue error (meV) of the model as it is over ``(name,
        target)`` pairs, this rank's share of the validation split (exact over ranks)."""
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for name, target in targets:
            graph, _ = self._batch([name])
            pred = self.module(graph)
            _, absolute, count = band_error_sum(pred, [target], "mae", [(0, len(pred))])
            total += torch.stack([absolute, absolute.new_tensor(float(count))])
        if self.dist.is_distributed:
            all_reduce(total)
        return float(total[0] / total[1].clamp_min(1.0)) * EV_TO_MEV

    # ------------------------------------------------------------------ checkpoints

    def save(self, name: str) -> Path | None:
        """Rank 0 writes the full training state to ``out_dir/name`` atomically."""
        if not self.dist.is_main or self.out_dir is None:
            return None
        blob = make_checkpoint(self.module, self.optimizer, self.schedule, self.ema,
                               asdict(self.progress), self.config.to_dict(),
                               self.dist.world_size)
        return atomic_save(blob, self.out_dir / name)

    # ------------------------------------------------------------------ the run

    def run(self) -> Progress:
        """Train until ``train.epochs``, early stopping, the time budget, divergence or a
        stop signal."""
        resumed = self.progress.step > 0 or self.progress.epoch > 0
        if self.dist.is_main and self.out_dir is not None:
            self.metrics = MetricsLog(self.out_dir / METRICS,
                                      self.progress.step if resumed else None)
            if self.config.log.tensorboard:
                self.board = _tensorboard(self.out_dir, self.progress.step if resumed else None)
        self._clock.start(self.progress.epoch)
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
                p.lr = self._set_lr(p.step, epoch + k / len(batches))
                sums, stop = self.train_step([names[i] for i in batches[k]],
                                             signals.received is not None)
                element, weight, band, _, count = (float(v) for v in sums)
                p.step += 1
                p.batch = k + 1
                p.loss_sum += element
                p.weight_sum += weight
                p.band_sum += band
                p.band_count += count
                loss = self.loss.combine(element, weight, band, count)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3g}")
                if self.metrics is not None and self.config.log.step_metrics:
                    self.metrics.write({"kind": "step", "epoch": epoch + 1, "step": p.step,
                                        "lr": p.lr, "loss": loss})
                if stop and k + 1 < len(batches):
                    self._interrupt(signals.received, epoch)
            if bar is not None:
                bar.close()
            seconds = time.perf_counter() - start
            self._clock.finished(epoch + 1)
            out_of_time = epoch + 1 < tc.epochs and self._clock.no_time_for_another()
            row = self._end_epoch(epoch, seconds, final=out_of_time)
            log.info(self._describe(row, unit))
            if self.on_epoch is not None and self.dist.is_main:
                self.on_epoch(row)
            if stop:
                self._interrupt(signals.received, epoch)
            if out_of_time:
                log.info("wall-time budget train.max_minutes=%g: stopping after epoch %d of %d "
                         "(%s elapsed, ~%.1f s per epoch); last.pt is saved, continue with "
                         "--resume", tc.max_minutes, p.epoch, tc.epochs,
                         _clock_text(self._clock.elapsed()), self._clock.per_epoch())
                return
            if tc.patience is not None and p.bad_evaluations >= tc.patience:
                log.info("early stopping: no better %s for %d evaluations (best %.6g at "
                         "epoch %d)", self._monitor_name(), p.bad_evaluations, p.best_loss,
                         p.best_epoch)
                if p.epoch % tc.checkpoint_every:  # the last epoch was not saved yet
                    self.save(LAST)
                return
            if getattr(self.optimizer, "converged", False):
                log.info("Levenberg-Marquardt converged: no step lowers the loss")
                if p.epoch % tc.checkpoint_every:
                    self.save(LAST)
                return

    def _set_lr(self, step: int, progress: float) -> float:
        if isinstance(self.optimizer, LevenbergMarquardt):
            return self.optimizer.damping  # its own adaptive damping, not a schedule
        return self.schedule.apply(step, progress)

    def _monitor_name(self) -> str:
        return "val_loss" if self.data.val_names else "train_loss"

    def _end_epoch(self, epoch: int, seconds: float, final: bool = False) -> dict:
        tc, p = self.tc, self.progress
        train_loss = self.loss.combine(p.loss_sum, p.weight_sum, p.band_sum, p.band_count)
        band = (p.band_sum / p.band_count) if self.loss.uses_bands and p.band_count else None
        p.epoch, p.batch, p.loss_sum, p.weight_sum = epoch + 1, 0, 0.0, 0.0
        p.band_sum, p.band_count = 0.0, 0.0
        row = {"kind": "epoch", "epoch": p.epoch, "step": p.step, "lr": p.lr,
               "train_loss": train_loss}
        if band is not None:
            row["train_band_loss"] = band
        last = p.epoch == tc.epochs or final
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
        path = self.save(LAST) or (self.out_dir or Path(".")) / LAST
        name = signal.Signals(signum).name if signum else "a stop signal"
        raise TrainingInterrupted(
            f"stopped by {name} in epoch {epoch + 1} after step {self.progress.step}; "
            f"state saved to {path}; continue with --resume", signum or signal.SIGTERM)

    def _describe(self, row: dict, unit: str) -> str:
        """The progress line: epoch i/n, losses, time per epoch, elapsed and ETA."""
        n = self.tc.epochs
        text = (f"epoch {row['epoch']}/{n} ({100.0 * row['epoch'] / n:.0f}%)  "
                f"step {row['step']}  lr {row['lr']:.3g}  "
                f"train_loss {row['train_loss']:.4g} {unit}")
        if "train_band_loss" in row:
            text += f" (band {row['train_band_loss']:.4g} {unit})"
        if "val_loss" in row:
            text += (f"  val_loss {row['val_loss']:.4g} {unit}  val_mae "
                     f"{row['val_mae_eV'] * EV_TO_MEV:.4g} meV ({row['val_mae_uHa']:.4g} uHa)")
        if "val_band_mae_meV" in row:
            text += f"  val_band_mae {row['val_band_mae_meV']:.4g} meV"
        clock = self._clock
        eta = clock.eta(n - row["epoch"])
        return (text + f"  | {row['seconds']:.2f} s/epoch  elapsed "
                f"{_clock_text(clock.elapsed())}  ETA {_clock_text(eta)}")

    def _progress_bar(self, total: int, done: int, epoch: int):
        """tqdm on rank 0, only when stderr is a terminal (never in logs or pipes)."""
        if not (self.dist.is_main and self.config.log.progress and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}", leave=False,
                    file=sys.stderr, dynamic_ncols=True)


def make_optimizer(tc, model: torch.nn.Module):
    """The optimizer ``train.optimizer`` names, over all parameters of ``model``."""
    if tc.optimizer == "lm":
        return LevenbergMarquardt(model, tc.lr)
    if tc.optimizer == "lbfgs":
        return torch.optim.LBFGS(
            model.parameters(), lr=tc.lr, max_iter=LBFGS_ITERATIONS, history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    optimizer = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    return optimizer(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)


class RunClock:
    """Wall time of this run's epochs: seconds per epoch, ETA, and the time budget.

    Args:
        max_minutes: the budget, or None.
    """

    def __init__(self, max_minutes: float | None):
        self.budget = None if max_minutes is None else 60.0 * max_minutes
        self._start = time.monotonic()
        self._first_epoch = 0
        self._done = 0

    def start(self, epoch: int) -> None:
        self._start = time.monotonic()
        self._first_epoch = epoch

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def per_epoch(self) -> float:
        return self.elapsed() / max(self._done, 1)

    def eta(self, remaining_epochs: int) -> float:
        """Seconds left: the remaining epochs at the mean pace, capped by the budget."""
        left = self.per_epoch() * remaining_epochs
        if self.budget is not None:
            left = min(left, max(self.budget - self.elapsed(), 0.0))
        return left

    def finished(self, epochs_done: int) -> None:
        """Epoch ``epochs_done`` (counted from the run's start, resumed ones included) ended."""
        self._done = epochs_done - self._first_epoch

    def no_time_for_another(self) -> bool:
        """Would one more epoch pass the budget?  The same answer on every rank."""
        if self.budget is None:
            return False
        flag = torch.tensor([1.0 if self.elapsed() + self.per_epoch() > self.budget else 0.0])
        all_reduce(flag, "max")  # rank clocks differ slightly: stop together
        return bool(flag.item() > 0)


def _clock_text(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))
