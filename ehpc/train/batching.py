"""Which structures each rank trains and validates on, step by step.

Training: every epoch draws one permutation of the training structures from
``(seed, epoch)`` -- the same on every rank -- pads it by wrapping around to a multiple
of the world size (as ``torch.utils.data.DistributedSampler`` does) and deals it out
like cards: rank r gets positions r, r + W, r + 2W, ...  Ranks then cut their shards in
lockstep, so every rank makes the same number of optimizer steps (DDP needs that): a
step takes the same count n of structures on every rank, at most ``batch_size`` and
small enough that no rank's batch exceeds ``max_orbitals`` (at least one structure).

Without an orbital cap, the union of the rank batches of step s is exactly positions
``[s W b, (s + 1) W b)`` of the permutation, i.e. the batch of a single process with
``batch_size = W b``: W ranks with b structures each make the same steps as one
process with W b, given a loss normalised by the global batch.

Validation: rank r takes structures r, r + W, ... with no padding, so each validation
structure is evaluated exactly once over all ranks and summed metrics are exact.
"""

from __future__ import annotations

import itertools

import numpy as np


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's permutation of ``range(n)``, a function of ``(seed, epoch)`` only."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def deal(order: np.ndarray, world_size: int) -> np.ndarray:
    """Pad ``order`` by wrapping to a multiple of ``world_size``; row r is rank r's shard."""
    per_rank = -(-len(order) // world_size)
    padded = np.resize(order, per_rank * world_size)  # np.resize repeats from the start
    return padded.reshape(per_rank, world_size).T  # [world_size, per_rank]


def lockstep_cuts(shards: np.ndarray, sizes: np.ndarray, batch_size: int,
                  max_orbitals: int | None) -> list[int]:
    """Shard positions where steps start and end, the same for every rank.

    Args:
        shards: structure indices of every rank.        # [world_size, per_rank]
        sizes: orbitals of each structure.              # [n_structures]
        batch_size: most structures per rank and step.
        max_orbitals: most orbitals per rank and step (None: no cap).
    """
    per_rank = shards.shape[1]
    totals = np.concatenate([np.zeros((len(shards), 1), dtype=np.int64),
                             np.cumsum(sizes[shards], axis=1)], axis=1)  # [W, per_rank + 1]
    cuts, pos = [0], 0
    while pos < per_rank:
        n = min(batch_size, per_rank - pos)
        if max_orbitals is not None:
            grown = totals[:, pos + 1 : pos + n + 1] - totals[:, pos : pos + 1]  # [W, n]
            # sizes are positive, so the fitting prefixes are the first ones
            n = max(1, int((grown <= max_orbitals).all(axis=0).sum()))
        pos += n
        cuts.append(pos)
    return cuts


class DistributedBatchSampler:
    """Per-rank training batches (arrays of structure indices), reshuffled per epoch.

    Args:
        sizes: orbitals of each training structure.   # [n_structures]
        batch_size: structures per rank and step.
        max_orbitals: cap on the orbitals of one rank's batch (None: no cap).
        rank: this process's rank.
        world_size: number of ranks.
        shuffle: draw a new order every epoch.
        seed: seed of the orders (must agree across ranks).

    Example:
        >>> sampler = DistributedBatchSampler(np.array([7, 2, 12, 7]), 1, rank=1, world_size=2)
        >>> sampler.set_epoch(0); len(sampler)
        2
    """

    def __init__(self, sizes, batch_size: int, max_orbitals: int | None = None, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, seed: int = 0):
        if len(sizes) == 0:
            raise ValueError("DistributedBatchSampler needs at least one structure")
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.max_orbitals = max_orbitals
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[np.ndarray]:
        """This rank's batches of the current epoch, in step order."""
        shards = deal(epoch_order(len(self.sizes), self.seed, self.epoch, self.shuffle),
                      self.world_size)
        cuts = lockstep_cuts(shards, self.sizes, self.batch_size, self.max_orbitals)
        mine = shards[self.rank]
        return [mine[a:b] for a, b in itertools.pairwise(cuts)]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def validation_shard(n: int, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s validation structures: every one exactly once over all ranks."""
    return np.arange(rank, n, world_size)


def pack(indices: np.ndarray, sizes: np.ndarray, batch_size: int,
         max_orbitals: int | None = None) -> list[np.ndarray]:
    """Consecutive batches of ``indices`` with at most ``batch_size`` structures and
    ``max_orbitals`` orbitals (a structure larger than the cap goes alone)."""
    batches, current, total = [], [], 0
    for index in indices:
        size = int(sizes[index])
        full = len(current) == batch_size
        over = max_orbitals is not None and current and total + size > max_orbitals
        if full or over:
            batches.append(np.asarray(current, dtype=np.int64))
            current, total = [], 0
        current.append(int(index))
        total += size
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches
