"""One ``init_distributed()`` for torchrun, srun and mpirun launches, and rank-aware helpers.

How each launcher announces a process's place is the table in :mod:`ehpc.launch`
(``LAUNCHERS``; the first that matches wins).

srun is recognised by ``SLURM_STEP_NUM_TASKS``, which only srun sets: a batch script's
own environment also has ``SLURM_PROCID=0`` and ``SLURM_NTASKS``, and a plain
``ehpc-train`` there must not wait for ranks that were never started.

The rendezvous address is ``MASTER_ADDR``/``MASTER_PORT`` when set; under srun it
defaults to the first host of the step's node list and a port derived from the job id
(so two jobs sharing a node do not collide); under mpirun ``MASTER_ADDR`` must be
exported (``mpirun -x MASTER_ADDR=$(hostname) ...``).

With CUDA each rank uses ``cuda:LOCAL_RANK`` and the process group is
``cpu:gloo,cuda:nccl`` (NCCL for GPU tensors, gloo for CPU ones); without CUDA it is
gloo.  A world of one process creates no process group at all.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import UserError
from ..launch import LAUNCHERS

#: the rendezvous port when nothing else says; srun adds ``SLURM_JOB_ID % SLURM_PORT_SPREAD``
DEFAULT_PORT = 29500
SLURM_PORT_SPREAD = 1000

#: how long a collective may wait for a slow or dead rank before the job fails
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


class DistributedError(UserError, RuntimeError):
    """A launch environment that is incomplete or inconsistent (the message says what to set)."""


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits, as read from the launcher's environment."""

    launcher: str  # "single", "torchrun", "srun", "mpirun" or "mpich"
    rank: int
    world_size: int
    local_rank: int
    master_addr: str | None
    master_port: int | None


@dataclass(frozen=True)
class DistInfo:
    """This process's rank, world and device after :func:`init_distributed`."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    launcher: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``"gpu[07-09,12],login1"`` -> ``"gpu07"``.

    Every bracketed range is replaced by its first member, keeping zero padding.
    """
    depth, end = 0, len(nodelist)
    for k, char in enumerate(nodelist):  # the first top-level comma ends the first entry
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = k
            break
    entry = nodelist[:end].strip()
    host = re.sub(r"\[([^\],-]+)[^\]]*\]", r"\1", entry)
    if not host or "[" in host or "]" in host:
        raise DistributedError(f"SLURM node list {nodelist!r}: cannot read its first host; "
                               "export MASTER_ADDR")
    return host


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read the launcher's variables (``environ`` defaults to ``os.environ``)."""
    env = os.environ if environ is None else environ
    for launcher, (rank_var, size_var, local_var, marker) in LAUNCHERS.items():
        if marker not in env:
            continue
        try:
            rank, size = int(env[rank_var]), int(env[size_var])
            local = int(env.get(local_var, rank))
        except (KeyError, ValueError):
            raise DistributedError(
                f"{launcher} launch: {rank_var}/{size_var}/{local_var} are missing or not "
                f"integers ({rank_var}={env.get(rank_var)!r}, {size_var}={env.get(size_var)!r})"
            ) from None
        if not 0 <= rank < size:
            raise DistributedError(f"{launcher} launch: rank {rank} is outside world size {size}")
        addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
        if launcher == "srun" and size > 1:
            nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") \
                or env.get("SLURM_NODELIST")
            if addr is None and nodes:
                addr = first_host(nodes)
            if port is None:
                port = DEFAULT_PORT + int(env.get("SLURM_JOB_ID", "0")) % SLURM_PORT_SPREAD
        if size > 1 and addr is None:
            raise DistributedError(
                f"{launcher} launch of {size} ranks: MASTER_ADDR is not set; export it "
                "(e.g. mpirun -x MASTER_ADDR=$(hostname) -x MASTER_PORT=29500 ...)"
            )
        return LaunchEnv(launcher, rank, size, local, addr,
                         int(port) if port is not None else (DEFAULT_PORT if size > 1 else None))
    return LaunchEnv("single", 0, 1, 0, None, None)


def init_distributed(device: str = "auto", environ: Mapping[str, str] | None = None) -> DistInfo:
    """Join the process group of this launch (a no-op for a single process).

    Args:
        device: ``"auto"`` (``cuda:LOCAL_RANK`` when CUDA is present, else CPU),
            ``"cuda"`` or ``"cpu"``.
        environ: launcher variables; ``os.environ`` when None.

    Raises:
        DistributedError: the environment names too few GPUs or no rendezvous address.
    """
    launch = launch_env(environ)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        n_gpus = torch.cuda.device_count()
        if launch.local_rank >= n_gpus:
            raise DistributedError(
                f"rank {launch.rank}: local rank {launch.local_rank} has no GPU "
                f"({n_gpus} visible); start at most {n_gpus} ranks per node"
            )
        torch.cuda.set_device(launch.local_rank)
        where = torch.device("cuda", launch.local_rank)
    else:
        where = torch.device("cpu")
    if launch.world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", str(launch.master_addr))
        os.environ.setdefault("MASTER_PORT", str(launch.master_port))
        backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size,
                                timeout=COLLECTIVE_TIMEOUT,
                                device_id=where if use_cuda else None)
    return DistInfo(launch.rank, launch.world_size, launch.local_rank, where, launch.launcher)


def shutdown_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------- collectives


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``"sum"``, ``"max"`` or ``"min"``); identity for one process."""
    if is_active():
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                                    "min": dist.ReduceOp.MIN}[op])
    return tensor


def barrier() -> None:
    if is_active():
        dist.barrier()


class PeerFailed(RuntimeError):
    """Another rank failed and reported why; this rank stops without repeating it."""


def agree(error: BaseException | None, rank: int, world_size: int) -> None:
    """Collective check after a phase that may fail on some ranks only.

    Every rank calls this; if any failed, all raise: the lowest failing rank its own
    error, the others :class:`PeerFailed`.  So one line reports the cause and no rank
    waits forever in a later collective.
    """
    if not is_active():
        if error is not None:
            raise error
        return
    # a CPU tensor: gloo carries it whether or not NCCL is the GPU backend
    first = torch.tensor([rank if error is not None else world_size], dtype=torch.int64)
    all_reduce(first, "min")
    failed = int(first.item())
    if failed == world_size:
        return
    if failed == rank:
        error.failed_rank = rank  # this rank reports; the others stay quiet
        raise error
    raise PeerFailed(f"rank {failed} failed")


# ---------------------------------------------------------------------- logging


class RankZeroFilter(logging.Filter):
    """Pass records on rank 0; on other ranks only errors, prefixed with the rank."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        if self.rank == 0:
            return True
        if record.levelno >= logging.ERROR:
            record.msg = f"rank {self.rank}: {record.msg}"
            return True
        return False
