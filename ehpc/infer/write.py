"""HDF5 results of a distributed run: per-rank files joined by virtual datasets.

Every rank writes its own part (its atoms' H and S blocks, its rows of the eigenvectors,
its timings) to ``<out>.ranks/rankNNNNN.h5``; rank 0 then writes ``<out>``, whose large
datasets are HDF5 virtual datasets mapping those parts end to end, so no rank ever holds
more than its own share.  The layout under ``/structures/<name>`` is the dataset schema
of :mod:`ehpc.io.dataset` (atom indices in the ORIGINAL order, blocks grouped by rank),
so ``ehpc.io.dataset.Dataset(out)`` reads a result like any labelled structure;
``/results`` adds eigenvalues, Fermi level, partition, timings and memory
(:func:`ehpc.io.results.read_results`).

Every file is written under a temporary name and renamed when complete; ``<out>`` itself
appears last, after all rank files, so a file named ``<out>`` is always whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import replacing
from ..basis import Basis
from ..io import dataset as ds
from ..io.layout import BlockLayout
from ..units import FILE_UNITS

RESULTS = "results"
PARTITION = "partition"
RANK_DIR_SUFFIX = ".ranks"

# per-rank dataset names (inside rank files)
_PAIRS, _OFFSETS, _H, _S = "atom_pairs", "block_offsets", "hamiltonian", "overlap"
_VECTORS, _TIMINGS, _MEMORY = "eigenvectors", "timings", "peak_memory"


@dataclass
class RankPart:
    """What one rank contributes to the results file.

    Attributes:
        atom_pairs: ``[Rx, Ry, Rz, i, j]`` with ORIGINAL atom ids.     # [n_pairs, 5]
        hamiltonian: flat H blocks (eV).                              # [n_entries]
        overlap: flat S blocks.                                       # [n_entries]
        eigenvectors: this rank's eigenvector rows (new orbital order) or None.
                                                                      # [n_states, n_local]
        layout: the blocks' layout, if the caller has it (else built from the pairs).
    """

    atom_pairs: np.ndarray
    hamiltonian: np.ndarray
    overlap: np.ndarray
    eigenvectors: np.ndarray | None = None
    layout: BlockLayout | None = None


def rank_dir(out: Path) -> Path:
    return out.with_name(out.name + RANK_DIR_SUFFIX)


def rank_file(out: Path, rank: int) -> Path:
    return rank_dir(out) / f"rank{rank:05d}.h5"


def write_results(
    out: str | Path,
    comm,
    part: RankPart,
    nao: np.ndarray,
    global_header: dict,
    stages,
) -> Path | None:
    """Write the rank files and (on rank 0) the joining file; collective.

    Args:
        out: results file path.
        comm: mpi4py communicator.
        part: this rank's blocks and eigenvector rows.
        nao: orbitals per atom, original order.                       # [n_atoms]
        global_header: rank 0's structure and scalar results (see :func:`_write_master`);
            ignored on other ranks.
        stages: the rank's :class:`~ehpc.infer.stages.StageLog`; a ``write`` stage is
            recorded before its timings are stored.

    Returns:
        the results path on rank 0, None elsewhere.
    """
    import time

    start = time.perf_counter()
    out = Path(out).resolve()
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0:
        out.unlink(missing_ok=True)  # no stale joining file may point at new parts
        rank_dir(out).mkdir(parents=True, exist_ok=True)
        for stale in rank_dir(out).glob("rank*.h5"):
            if int(stale.stem[4:]) >= size:
                stale.unlink()
    comm.Barrier()
    layout = BlockLayout(part.atom_pairs, nao) if part.layout is None else part.layout
    sizes = layout.sizes  # [n_pairs]
    counts = np.array([len(part.atom_pairs), int(sizes.sum())], dtype=np.int64)
    before = np.zeros(2, np.int64)
    from mpi4py import MPI

    comm.Exscan(counts, before, op=MPI.SUM)
    if rank == 0:
        before[:] = 0
    offsets = before[1] + layout.offsets[:-1]
    if rank == size - 1:
        offsets = np.concatenate([offsets, [before[1] + sizes.sum()]])  # the total closes the list

    path = rank_file(out, rank)
    with replacing(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(_PAIRS, data=np.asarray(part.atom_pairs, np.int64).reshape(-1, 5))
        f.create_dataset(_OFFSETS, data=offsets.astype(np.int64))
        for key, flat in ((_H, part.hamiltonian), (_S, part.overlap)):
            f.create_dataset(key, data=np.asarray(flat, np.float64), compression="gzip",
                             compression_opts=1, shuffle=True)
        if part.eigenvectors is not None:
            f.create_dataset(_VECTORS, data=np.asarray(part.eigenvectors, np.float64))
        stages.record("write", time.perf_counter() - start)
        f.create_dataset(_TIMINGS, data=np.asarray(stages.seconds))
        f.create_dataset(_MEMORY, data=np.asarray(stages.peak_bytes, np.int64))
        f.attrs["stages"] = json.dumps(stages.names)
        f.attrs["rank"] = rank

    shapes = comm.gather(
        {
            "pairs": len(part.atom_pairs),
            "offsets": len(offsets),
            "entries": int(sizes.sum()),
            "vectors": None if part.eigenvectors is None else tuple(np.shape(part.eigenvectors)),
            "stages": list(stages.names),
        },
        root=0,
    )
    comm.Barrier()  # every rank file is complete before the joining file is written
    if rank != 0:
        comm.Barrier()
        return None
    try:
        _write_master(out, shapes, global_header)
    finally:
        comm.Barrier()
    return out


def _write_master(out: Path, shapes: list[dict], header: dict) -> None:
    """The joining file: structure, virtual datasets over the rank files, scalar results.

    ``header`` keys: ``name``, ``basis`` (Basis), ``numbers``, ``positions``, ``cell``,
    ``pbc``, ``attrs`` (per-structure attributes), ``results`` (scalar attributes of
    /results), ``eigenvalues``, ``residuals``, ``partition`` (dict of arrays), ``xc``.
    """
    size = len(shapes)
    names = shapes[0]["stages"]
    if any(s["stages"] != names for s in shapes):
        raise RuntimeError("ranks recorded different pipeline stages")
    basis: Basis = header["basis"]
    with replacing(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({
            **basis.to_attrs(),
            **FILE_UNITS,
            "xc": header.get("xc", ""),
            "code": "ehpc-infer",
            "code_version": __version__,
            "ehpc_version": __version__,
            "schema_version": ds.SCHEMA_VERSION,
        })
        group = f.create_group(ds.STRUCTURES).create_group(header["name"])
        group.create_dataset(ds.NUMBERS, data=np.asarray(header["numbers"], np.int64))
        group.create_dataset(ds.POSITIONS, data=np.asarray(header["positions"], np.float64))
        group.create_dataset(ds.CELL, data=np.asarray(header["cell"], np.float64).reshape(3, 3))
        group.create_dataset(ds.PBC, data=np.asarray(header["pbc"], bool).reshape(3))
        pair_shapes = [(s["pairs"], 5) for s in shapes]
        offset_shapes = [(s["offsets"],) for s in shapes]
        _join(group, ds.ATOM_PAIRS, _PAIRS, out, pair_shapes, np.int64, axis=0)
        _join(group, ds.BLOCK_OFFSETS, _OFFSETS, out, offset_shapes, np.int64, axis=0)
        for key, source in ((ds.HAMILTONIAN, _H), (ds.OVERLAP, _S)):
            _join(group, key, source, out, [(s["entries"],) for s in shapes], np.float64, axis=0)
        for key, value in header["attrs"].items():
            group.attrs[key] = value

        results = f.create_group(RESULTS)
        results.attrs.update(header["results"])
        results.attrs["structure"] = header["name"]
        results.attrs["n_ranks"] = size
        results.attrs["stages"] = json.dumps(names)
        results.create_dataset("eigenvalues", data=np.asarray(header["eigenvalues"], np.float64))
        results.create_dataset("residuals", data=np.asarray(header["residuals"], np.float64))
        if shapes[0]["vectors"] is not None:
            vector_shapes = [s["vectors"] for s in shapes]
            _join(results, "eigenvectors", _VECTORS, out, vector_shapes, np.float64, axis=1)
        _join(results, "timings", _TIMINGS, out, [(len(names),)] * size, np.float64, axis=None)
        _join(results, "peak_memory", _MEMORY, out, [(len(names),)] * size, np.int64, axis=None)
        partition = results.create_group(PARTITION)
        for key, value in header["partition"].items():
            partition.create_dataset(key, data=np.asarray(value))


def _join(
    group, name: str, source: str, out: Path, shapes: list[tuple], dtype, axis: int | None
) -> None:
    """A virtual dataset concatenating ``source`` of every rank file along ``axis``.

    ``axis=None`` stacks the per-rank 1-D arrays as rows of a ``[n_ranks, n]`` table.
    """
    if axis is None:
        layout = h5py.VirtualLayout(shape=(len(shapes), *shapes[0]), dtype=dtype)
    else:
        total = list(shapes[0])
        total[axis] = sum(s[axis] for s in shapes)
        layout = h5py.VirtualLayout(shape=tuple(total), dtype=dtype)
    start = 0
    for rank, shape in enumerate(shapes):
        # relative names: HDF5 resolves them against the joining file's directory
        name_on_disk = str(rank_file(out, rank).relative_to(out.parent))
        vsource = h5py.VirtualSource(name_on_disk, source, shape=tuple(shape), dtype=dtype)
        if axis is None:
            layout[rank] = vsource
        elif shape[axis] > 0:
            index = [slice(None)] * len(shape)
            index[axis] = slice(start, start + shape[axis])
            layout[tuple(index)] = vsource
            start += shape[axis]
    group.create_virtual_dataset(name, layout, fillvalue=0)
