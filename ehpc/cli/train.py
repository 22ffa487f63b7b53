"""``ehpc-train``: train a HamiltonianModel on one or many GPUs/CPUs, resumable at any point.

One process::

    ehpc-train --config configs/train_default.yaml --set data.path=dataset.h5 --out-dir run

Several (each rank trains on its share of every batch; see docs/TRAINING.md)::

    torchrun --standalone --nproc_per_node=4 -m ehpc.cli.train --config ...
    srun ehpc-train --config ...              # one task per GPU
    mpirun -x MASTER_ADDR=$(hostname) -n 4 ehpc-train --config ...

The run folder gets ``config.yaml`` (resolved), ``train.log``, ``metrics.jsonl``,
``last.pt``/``best.pt`` (atomic checkpoints), and at the end ``model.pt`` (the averaged
weights, self-describing) and ``learning_curve.png``.  ``--resume`` continues from
``last.pt`` exactly where the run stopped; SIGTERM/SIGUSR1 write a checkpoint and stop.

Bad input ends every rank with one line ``ehpc-train: error: ...`` (printed once) and
exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from ..errors import USER_ERRORS

PROG = "ehpc-train"

#: exit statuses: bad input (as argparse); a stop signal adds its number to SIGNAL_BASE
USAGE_ERROR = 2
SIGNAL_BASE = 128

#: keys that may differ from the checkpoint's when resuming (``section.*``: all of a section)
RESUMABLE = ("train.epochs", "train.max_minutes", "train.patience", "train.eval_every",
             "train.checkpoint_every",
             "train.export", "train.device", "data.path", "data.cache", "out_dir", "log.*")

log = logging.getLogger("ehpc.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.strip().splitlines()[0].replace("``", ""),
        epilog="Every config key, its type and default: ehpc-train --print-config")
    parser.add_argument("--config", type=Path, help="YAML config (keys: docs/TRAINING.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a dotted key, e.g. train.lr=1e-3 "
                        "(repeatable; values are YAML)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out-dir from its last.pt")
    parser.add_argument("--out-dir", type=Path, help="run folder (default: the config's out_dir)")
    parser.add_argument("--max-minutes", type=float, metavar="M",
                        help="wall-time budget: stop cleanly (last.pt, model.pt) before an "
                        "epoch would pass M minutes (sets train.max_minutes)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config with every key's meaning, then exit")
    return parser


# ---------------------------------------------------------------------- set-up phases


def resolve_config(args: argparse.Namespace):
    """The config from ``--config`` and ``--set`` with ``--out-dir`` applied."""
    from ..train.config import load_config

    overrides = list(args.overrides)
    if args.out_dir is not None:
        overrides.append(f"out_dir={json.dumps(str(args.out_dir))}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes!r}")
    return load_config(args.config, overrides)


def resume_config(args: argparse.Namespace, saved: dict, fresh):
    """The checkpoint's config, changed only where resuming allows.

    Without ``--config`` the checkpoint's config is the base and ``--set`` applies on
    top; with it, the new config must agree with the checkpoint's except for
    :data:`RESUMABLE` keys.
    """
    from ..train.config import ConfigError, differences, from_dict, load_config

    old = from_dict(saved, "checkpoint config")
    if args.config is None:
        overrides = list(args.overrides) + [f"out_dir={json.dumps(fresh.out_dir)}"]
        if getattr(args, "max_minutes", None) is not None:
            overrides.append(f"train.max_minutes={args.max_minutes!r}")
        new = load_config(None, overrides, base=saved)
    else:
        new = fresh
    for key in differences(old, new):
        if key in RESUMABLE or f"{key.split('.')[0]}.*" in RESUMABLE:
            continue
        raise ConfigError(
            f"--resume: {key} is {old.get(key)!r} in the checkpoint but {new.get(key)!r} now; "
            f"only {', '.join(RESUMABLE)} may change when resuming (start a new --out-dir "
            "to change the rest)"
        )
    return new


def open_run_folder(config, resume: bool):
    """Rank 0: check the run folder and read ``last.pt`` when resuming."""
    from ..train.checkpoint import LAST, CheckpointError, load_checkpoint, remove_stale_temporaries
    from . import CLIError

    out = Path(config.out_dir)
    last = out / LAST
    if resume:
        if not last.exists():
            raise CheckpointError(f"--resume: {out} has no {LAST} to resume; run without "
                                  "--resume to start training there")
        remove_stale_temporaries(out)
        return load_checkpoint(last)
    if last.exists():
        raise CLIError(f"{out} already holds a run ({LAST}); pass --resume to continue it or "
                       "choose another --out-dir")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    return None


def build_model(config, data, blob):
    """A fresh model, the model to fine-tune (``model.init``), or the checkpoint's."""
    from ..nn.model import HamiltonianModel
    from ..train.config import ConfigError

    mc = config.model
    if blob is not None:
        return HamiltonianModel.from_metadata(json.loads(blob["model_metadata"]))
    if mc.init is not None:
        path = Path(mc.init)
        if not path.is_file():
            raise ConfigError(f"model.init: {path}: model file not found")
        try:
            return HamiltonianModel.load(path)
        except (KeyError, RuntimeError, json.JSONDecodeError, ValueError) as err:
            raise ConfigError(f"model.init: {path}: not an ehpc model file ({err})") from None
    cutoff = mc.cutoff
    if cutoff is None:
        found = data.min_label_cutoff()
        if found is None:
            raise ConfigError(f"model.cutoff: not set and {data.path} does not record the "
                              "label cutoff; set model.cutoff (Å)")
        cutoff = found[0]
    elements = mc.elements or data.elements()
    try:
        return HamiltonianModel(data.basis, elements, cutoff, mc.n_layers, **mc.hparams())
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def check_data(model, data) -> None:
    """Every structure in the model's basis and elements, labelled to the model's cutoff."""
    from ..nn.model import ModelCompatibilityError

    for name in data.train_names + data.val_names:
        model.check_compatible(data.basis, data.numbers[name], f"{data.path}: {name}")
    found = data.min_label_cutoff()
    if found is not None and model.cutoff > found[0] * (1 + 1e-9):
        raise ModelCompatibilityError(
            f"{data.path}: {found[1]}: labels stop at pairs within {found[0]:g} Å but the "
            f"model's cutoff is {model.cutoff:g} Å; lower model.cutoff or relabel with a "
            "larger --cutoff"
        )


def check_share(model, data, rank: int, world_size: int, train_config=None) -> None:
    """Read and check this rank's share of the structures (non-finite labels fail here).

    With the band-energy loss on (``train_config.band_weight > 0``) each structure's band
    target is built too, so an overlap that is not positive definite stops every rank
    before training instead of one rank in the middle of it.
    """
    bands = train_config is not None and train_config.band_weight > 0
    for name in data.train_names[rank::world_size] + data.val_names[rank::world_size]:
        graph = data.graph(name, model)
        if bands:
            tc = train_config
            data.band(name, graph, tc.band_kpoints, tc.band_window, tc.band_virtual)


# ---------------------------------------------------------------------- process state


@contextlib.contextmanager
def logging_to(out_dir: Path | None, rank: int, level: str):
    """INFO to stdout and warnings to stderr (rank 0; errors from any rank), file on rank 0."""
    from ..train.distributed import RankZeroFilter

    logger = logging.getLogger("ehpc.train")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO)
    console.addFilter(lambda record: record.levelno < logging.WARNING)
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [console, errors]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    if out_dir is not None and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(out_dir / "train.log")
        file.setLevel(getattr(logging, level.upper()))
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(file)
    rank_filter = RankZeroFilter(rank)
    for handler in handlers:
        handler.addFilter(rank_filter)
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def reproducible(seed: int, deterministic: bool):
    """Seed every generator; optionally force deterministic kernels for the duration."""
    import torch

    from ..train.loop import seed_everything

    seed_everything(seed)
    before = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def collective(dist, work, *args):
    """Run ``work(*args)`` on every rank; if it fails anywhere, fail everywhere (one report)."""
    from ..train.distributed import agree

    error, result = None, None
    try:
        result = work(*args)
    except Exception as err:  # a bug too must stop the other ranks, not leave them waiting
        error = err
    agree(error, dist.rank, dist.world_size)
    return result


def broadcast(dist, obj):
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_distributed:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Train as configured; returns the exit status."""
    from ..train.config import dump_yaml

    if args.print_config:
        print(dump_yaml(resolve_config(args)), end="")
        return 0
    from ..train.distributed import init_distributed, shutdown_distributed

    config, error = None, None
    try:
        config = resolve_config(args)
    except USER_ERRORS as err:
        error = err
    dist = init_distributed(config.train.device if config is not None else "cpu")
    try:
        collective(dist, _raise, error)
        out = Path(config.out_dir)
        with logging_to(out, dist.rank, config.log.level), \
                reproducible(config.train.seed, config.train.deterministic):
            return _train(args, config, dist)
    finally:
        shutdown_distributed()


def _raise(error):
    if error is not None:
        raise error


def _train(args, config, dist) -> int:
    import torch

    from ..train.checkpoint import BEST, LAST, export_model
    from ..train.config import ConfigError, save_config
    from ..train.data import TrainingData
    from ..train.distributed import barrier
    from ..train.loop import Trainer
    from ..analysis.learning_curve import plot_learning_curve

    out = Path(config.out_dir)
    blob = collective(dist, lambda: open_run_folder(config, args.resume) if dist.is_main else None)
    blob = broadcast(dist, blob)
    if blob is not None:
        config = collective(dist, resume_config, args, blob["config"], config)

    def prepare():
        if config.data.path is None:
            raise ConfigError("data.path: no dataset given; pass --set data.path=dataset.h5")
        data = TrainingData(config.data.path, config.data.train_split, config.data.val_split,
                            config.data.cache)
        model = build_model(config, data, blob)
        check_data(model, data)
        check_share(model, data, dist.rank, dist.world_size, config.train)
        return data, model

    data, model = collective(dist, prepare)
    dtype = getattr(torch, config.train.dtype)
    model.to(device=dist.device, dtype=dtype)
    if blob is None and not bool(model.has_statistics):
        names = sorted(data.train_names)[: config.data.statistics_structures]
        # the training graphs (cached by check_share's rank or built once here)
        model.set_statistics([data.graph(n, model) for n in names])
        model.set_fermi_offset([data.record(n) for n in names])
    if dist.is_main:
        save_config(config, out / "config.yaml")
    n_params = sum(p.numel() for p in model.parameters())
    where = (f"{dist.world_size} ranks via {dist.launcher}" if dist.is_distributed
             else "1 process")
    log.info("%s on %s, %s; %s: %d train / %d val structures, basis %s", where, dist.device,
             config.train.dtype, data.path, len(data.train_names), len(data.val_names),
             data.basis.name)
    log.info("model: %d parameters, elements %s, cutoff %g Å, %d layers", n_params,
             list(model.elements), model.cutoff, model.n_layers)
    trainer = Trainer(config, dist, out, model, data, resume=blob)
    if blob is not None:
        log.info("resumed from %s at epoch %d, step %d", out / LAST, trainer.progress.epoch,
                 trainer.progress.step)
        if blob["world_size"] != dist.world_size and trainer.progress.batch:
            log.warning("checkpoint was written mid-epoch by %d rank(s); restarting epoch %d "
                        "with %d", blob["world_size"], trainer.progress.epoch + 1,
                        dist.world_size)
            p = trainer.progress
            p.batch, p.loss_sum, p.weight_sum = 0, 0.0, 0.0
    blob = None  # the trainer holds the state now
    try:
        progress = trainer.run()
        if dist.is_main:
            source = out / (BEST if config.train.export == "best" and (out / BEST).exists()
                            else LAST)
            export_model(source, out / "model.pt", model)  # training is over: reuse the model
            log.info("wrote %s (EMA weights of %s; best %s at epoch %d)", out / "model.pt",
                     source.name, f"{progress.best_loss:.6g}", progress.best_epoch)
            try:
                plot_learning_curve(out / "metrics.jsonl", out / "learning_curve.png", str(out))
            except Exception as err:  # a plotting problem must not lose a finished training
                log.warning("could not draw the learning curve: %s", err)
        barrier()
        if config.train.readout_fit:
            _refit_readout(trainer, model, out, dist)
    finally:
        data.close()
    barrier()
    return 0


def _refit_readout(trainer, model, out: Path, dist) -> None:
    """``train.readout_fit``: least-squares readout of model.pt, kept if validation improves."""
    from ..atomic import replacing
    from ..nn.model import HamiltonianModel

    exported = HamiltonianModel.load(out / "model.pt")
    model.load_state_dict(exported.state_dict())  # every rank: the weights model.pt holds
    fit = trainer.refit_readout()
    before, after = fit["before"], fit["after"]
    bands = ""
    if "weight" in fit:
        bands = (" H(k) weight %g: validation eigenvalue MAE %.1f -> %.1f meV at %d k-points;"
                 % (fit["weight"], *fit["band_mae_meV"], trainer.tc.readout_kpoints))
    log.info("readout least squares (%.0f s): validation H MAE %.2f -> %.2f meV, loss %.6g -> "
             "%.6g;%s %s", fit["seconds"], before["val_mae_eV"] * 1e3, after["val_mae_eV"] * 1e3,
             before["val_loss"], after["val_loss"], bands,
             "model.pt now holds it" if fit["kept"] else "not kept (model.pt unchanged)")
    if fit["kept"] and dist.is_main:
        with replacing(out / "model.pt") as tmp:
            model.save(tmp)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train, and turn bad input into one line and exit status 2."""
    from ..train.distributed import PeerFailed
    from ..train.loop import TrainingInterrupted

    warnings.filterwarnings("ignore", message="Basis may be available in basis-set-exchange")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    rank = _env_rank()
    try:
        return int(run(args))
    except PeerFailed:
        return USAGE_ERROR  # the failing rank has said why
    except TrainingInterrupted as stop:
        if rank == 0:
            print(f"{PROG}: {stop}", file=sys.stderr)
        return SIGNAL_BASE + int(stop.signum)
    except USER_ERRORS as err:
        from ..train.distributed import DistributedError

        own = getattr(err, "failed_rank", None)
        if rank == 0 or own == rank or isinstance(err, DistributedError):
            prefix = f"rank {rank}: " if rank else ""
            message = " ".join(str(err).split())
            print(f"{PROG}: error: {prefix}{message}", file=sys.stderr)
        return USAGE_ERROR


def _env_rank() -> int:
    from ..train.distributed import DistributedError, launch_env

    try:
        return launch_env().rank
    except DistributedError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
