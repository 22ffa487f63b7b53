"""Chunked prediction of the H blocks of one rank's atoms.

The owned atoms are cut into spatially compact chunks (the same bisection as the rank
partition).  For each chunk the model sees only the chunk's atoms and the cluster atoms
within its receptive field, so the peak memory of the network is set by
``chunk_atoms`` (plus the receptive-field skin), not by the rank's share of the structure.

A block of the pair (i, j) depends only on atoms within ``model.receptive_field`` of i,
so predicting it in that non-periodic sub-cluster gives the same numbers as predicting
it in the full periodic structure.  When the periodic structure has no more atoms than
the largest chunk's sub-cluster (a cell not much larger than the receptive field, common
with long cutoffs), the model runs on the periodic structure instead: the same blocks
from a graph no larger than a chunk's, of which the rank reads out only its own pairs.
"""

from __future__ import annotations

import numpy as np

from ..io.layout import BlockLayout
from ..launch import mpi_local_rank
from ..predictor import BlockPredictor
from .halo import SEARCH_SLACK, Halo
from .partition import bisect

#: owned atoms per model call unless told otherwise
DEFAULT_CHUNK_ATOMS = 2000


class PredictionError(RuntimeError):
    """The model did not return the blocks it was asked for."""


def select_device(local_rank: int | None = None) -> str:
    """``cuda:<local rank % GPUs>`` when CUDA is present, else ``cpu``.

    Args:
        local_rank: rank among the processes of this node; read from the MPI launcher's
            environment (Open MPI, MPICH/Hydra, SLURM) or from an MPI shared-memory
            split when not given.
    """
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return "cpu"
    if local_rank is None:
        local_rank = node_local_rank()
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def node_local_rank() -> int:
    """This process's rank among the MPI processes on its node."""
    local = mpi_local_rank()
    if local is not None:
        return local
    from mpi4py import MPI

    return MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()


def owned_chunks(halo: Halo, nao_owned: np.ndarray, chunk_atoms: int) -> list[np.ndarray]:
    """Compact groups of at most ~``chunk_atoms`` owned atoms (cluster indices)."""
    if chunk_atoms < 1:
        raise ValueError(f"chunk_atoms must be positive, got {chunk_atoms}")
    n_chunks = max(1, -(-halo.n_owned // chunk_atoms))
    return bisect(halo.positions[: halo.n_owned], nao_owned, n_chunks)


def predict_blocks(
    model: BlockPredictor,
    halo: Halo,
    pairs: np.ndarray,
    distances: np.ndarray,
    chunk_atoms: int = DEFAULT_CHUNK_ATOMS,
    device=None,
    dtype=None,
    structure=None,
    layout: BlockLayout | None = None,
) -> np.ndarray:
    """H blocks (eV) of the rank's pattern ``pairs``; pairs beyond ``model.cutoff`` stay 0.

    Args:
        model: predicts the blocks (a HamiltonianModel, or an IntegralModel in tests).
        halo: the rank's cluster; ``halo.radius`` must be at least the receptive field.
        pairs: ``[i, k]`` cluster indices, i owned, sorted by i.   # [n_pairs, 2]
        distances: length of each pair in Å.                      # [n_pairs]
        chunk_atoms: owned atoms per model call.
        device: torch device of the model.
        dtype: torch dtype to predict in (None: the model's).
        structure: the whole periodic structure (``ase.Atoms``) the halo was cut from;
            predicted on directly when it has no more atoms than the largest chunk's
            sub-cluster (never a larger graph than the chunked route's largest call).
        layout: the block layout of ``pairs`` in the cluster, if the caller has it.

    Returns:
        Flat blocks laid out as ``layout``.                       # [n_entries]
    """
    if halo.radius + SEARCH_SLACK < model.receptive_field:
        raise ValueError(
            f"halo radius {halo.radius:.2f} Å is smaller than the model's receptive field "
            f"{model.receptive_field:.2f} Å"
        )
    nao = model.basis.nao_per_atom(halo.numbers)  # [n_cluster]
    layout = BlockLayout(pairs, nao) if layout is None else layout
    out = np.zeros(layout.n_entries)
    predicted = (distances < model.cutoff) | (pairs[:, 0] == pairs[:, 1])
    chunks = owned_chunks(halo, nao[: halo.n_owned], chunk_atoms)
    calls = [_chunk_members(halo, chunk, model.receptive_field) for chunk in chunks]
    largest = max((len(members) for members in calls), default=0)
    if structure is not None and np.any(structure.pbc) and len(structure) <= largest:
        rows = np.flatnonzero(predicted)
        _predict_periodic(model, halo, structure, pairs, rows, layout, out, device, dtype)
        return out
    # pairs row_start[a]:row_start[a + 1] belong to owned atom a
    row_start = np.searchsorted(pairs[:, 0], np.arange(halo.n_owned + 1))
    for chunk, members in zip(chunks, calls):
        local = np.full(len(halo), -1, dtype=np.int64)
        local[members] = np.arange(len(members))
        rows = np.concatenate([np.arange(row_start[a], row_start[a + 1]) for a in chunk])
        rows = rows[predicted[rows]]
        asked = np.zeros((len(rows), 5), dtype=np.int64)
        asked[:, 3] = local[pairs[rows, 0]]
        asked[:, 4] = local[pairs[rows, 1]]
        if (asked[:, 4] < 0).any():
            raise PredictionError(
                "a pair reaches outside its chunk's cluster; halo radius too small"
            )
        got_pairs, flat = model.predict(
            halo.numbers[members], halo.positions[members], np.zeros((3, 3)), False,
            pairs=asked, device=device, dtype=dtype,
        )
        if not np.array_equal(np.asarray(got_pairs), asked):
            raise PredictionError("model.predict returned other pairs than the ones asked for")
        out[layout.entries(rows)] = np.asarray(flat, dtype=np.float64)  # [n_chunk_entries]
    return out


def _chunk_members(halo: Halo, chunk: np.ndarray, reach: float) -> np.ndarray:
    """Cluster atoms within ``reach`` of the chunk, chunk atoms first: the graph of one
    model call.                                                          # [n_members]"""
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(halo.positions[chunk]).query(
        halo.positions, k=1, distance_upper_bound=reach + SEARCH_SLACK
    )  # [n_cluster]
    others = np.setdiff1d(np.flatnonzero(np.isfinite(distance)), chunk)
    return np.concatenate([chunk, others])


def _predict_periodic(model: BlockPredictor, halo: Halo, structure, pairs: np.ndarray,
                      rows: np.ndarray, layout: BlockLayout, out: np.ndarray, device, dtype
                      ) -> None:
    """Blocks of ``pairs[rows]`` from the model run on the periodic structure itself.

    The model's graph is the whole structure (its message passing cannot be split further
    when the structure is smaller than the rank's halo), but only this rank's own pairs are
    read out, so P ranks share the readout.  A requested pair that the periodic neighbour
    list leaves out lies at the cutoff to round-off, where the envelope makes its block
    vanish, and stays zero.
    """
    from ..graph import neighbour_list
    from ..nn.data import match_rows

    i, k = pairs[rows, 0], pairs[rows, 1]
    asked = np.column_stack([halo.shifts[k] - halo.shifts[i], halo.atom_ids[i],
                             halo.atom_ids[k]]).astype(np.int64)  # [n_rows, 5]
    cell = np.asarray(structure.cell[:])
    graph_rows = neighbour_list(structure.positions, cell, structure.pbc, model.cutoff,
                                self_edges=True).atom_pairs()  # [n_graph_pairs, 5]
    found = match_rows(asked, graph_rows) >= 0  # [n_rows]
    onsite = (i == k)
    if not found[onsite].all():
        raise PredictionError("the model's periodic graph lacks an on-site block")
    got_pairs, flat = model.predict(
        structure.numbers, structure.positions, cell, structure.pbc, pairs=asked[found],
        device=device, dtype=dtype,
    )
    if not np.array_equal(np.asarray(got_pairs), asked[found]):
        raise PredictionError("model.predict returned other pairs than the ones asked for")
    out[layout.entries(rows[found])] = np.asarray(flat, dtype=np.float64)  # [n_entries]
