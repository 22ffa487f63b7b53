"""The model's forward pass on a GPU, the way ``ehpc-infer``'s predict stage runs it.

Each MPI rank (``mpirun -n P``, or one process without mpirun) takes its spatial domain
of a cubic diamond-Si supercell with ``partition``, cuts its halo with ``build_halo``,
lists its pairs within the model cutoff with ``cluster_pairs`` and predicts their blocks
with ``predict_blocks`` on ``select_device()`` (``cuda:local_rank % n_gpus``), exactly as
``ehpc-infer`` does before it builds the PETSc matrices (a halo larger than the structure
makes ``predict_blocks`` run the model on the periodic structure itself).  The model is untrained (the
cost does not depend on the weights) with the size ``bench_model_cost.py`` uses.

    python bench/bench_gpu.py forward --basis gth-szv --cutoff 6 --repeat 11 --out f.json
    mpirun -n 2 python bench/bench_gpu.py forward --basis gth-dzvp-molopt-sr --cutoff 9 \\
        --repeat 11 --out f2.json
    python bench/bench_gpu.py agree --model model.pt --out agree.json

``agree`` predicts one structure with a trained model on the CPU in float64 and on the
device in float32 and reports the largest block difference in meV.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

import numpy as np


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _silicon(repeat: int):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((repeat,) * 3)
    atoms.rattle(0.03, seed=1)
    return atoms


def predict_domain(atoms, model, rank: int, size: int, device: str, dtype, chunk_atoms: int
                   ) -> dict:
    """Partition, halo, pairs within the model cutoff and ``predict_blocks`` on one rank."""
    from ehpc.infer.halo import build_halo, cluster_pairs
    from ehpc.infer.partition import partition
    from ehpc.infer.predict import predict_blocks

    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    nao = model.basis.nao_per_atom(atoms.numbers)
    start = time.perf_counter()
    parts = partition(positions, nao, size)
    halo = build_halo(positions, atoms.numbers, cell, atoms.pbc, parts.owned(rank),
                      model.receptive_field)
    cutoff_of = {(z1, z2): model.cutoff for z1 in model.elements for z2 in model.elements}
    pairs, distances = cluster_pairs(halo, positions, cell, cutoff_of)
    prepared = time.perf_counter()
    _sync(device)
    blocks = predict_blocks(model, halo, pairs, distances, chunk_atoms, device, dtype,
                            structure=atoms)
    _sync(device)
    done = time.perf_counter()
    return {"rank": rank, "n_owned": int(halo.n_owned), "n_cluster": len(halo),
            "n_pairs": len(pairs), "n_entries": len(blocks),
            "path": "periodic structure" if len(atoms) < len(halo) else "halo chunks",
            "halo_pairs_s": prepared - start, "predict_s": done - prepared,
            "owned_atoms_per_s": halo.n_owned / (done - prepared),
            "finite": bool(np.isfinite(blocks).all())}


def _untrained(basis_name: str, cutoff: float, layers: int, channels: int):
    import torch

    from ehpc.basis import Basis
    from ehpc.nn.model import HamiltonianModel

    torch.manual_seed(0)
    model = HamiltonianModel(Basis(basis_name), [14], cutoff=cutoff, n_layers=layers,
                             channels=channels)
    model.eval()
    return model


def forward(args) -> dict:
    import torch

    from ehpc.infer.predict import select_device

    try:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    except ImportError:  # one process
        comm = None
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    device = args.device or select_device()
    dtype = getattr(torch, args.dtype)
    model = _untrained(args.basis, args.cutoff, args.layers, args.channels)
    # warm-up: CUDA context, kernels and e3nn's compiled paths, on a 64-atom cell
    predict_domain(_silicon(2), model, 0, 1, device, dtype, args.chunk_atoms)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    atoms = _silicon(args.repeat)
    if comm is not None:
        comm.Barrier()
    wall = time.perf_counter()
    row = predict_domain(atoms, model, rank, size, device, dtype, args.chunk_atoms)
    if comm is not None:
        comm.Barrier()
    row["wall_s"] = time.perf_counter() - wall
    row["device"] = device
    row["host"] = socket.gethostname()
    row["peak_gpu_MiB"] = (torch.cuda.max_memory_allocated(device) / 2**20
                           if device.startswith("cuda") else None)
    row["peak_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = comm.gather(row, root=0) if comm is not None else [row]
    if rank != 0:
        return {}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"case": "forward", "basis": args.basis, "cutoff": args.cutoff,
            "n_atoms": len(atoms), "n_orbitals": int(model.basis.nao_per_atom(atoms.numbers).sum()),
            "ranks": size, "dtype": args.dtype, "chunk_atoms": args.chunk_atoms,
            "layers": args.layers, "channels": model.hparams["channels"], "gpu": gpu,
            "torch": torch.__version__, "wall_s": max(r["wall_s"] for r in rows),
            "atoms_per_s": len(atoms) / max(r["wall_s"] for r in rows), "per_rank": rows}


def agree(args) -> dict:
    """Largest |H_device,float32 - H_cpu,float64| over every block of one structure."""
    import torch

    from ehpc.infer.predict import select_device
    from ehpc.nn.model import HamiltonianModel

    device = args.device or select_device()
    model = HamiltonianModel.load(args.model)
    atoms = _silicon(args.repeat)
    args_ = (atoms.numbers, atoms.positions, np.asarray(atoms.cell[:]), atoms.pbc)
    pairs_cpu, cpu = model.predict(*args_, device="cpu", dtype=torch.float64)
    pairs_dev, dev = model.predict(*args_, device=device, dtype=getattr(torch, args.dtype))
    if not np.array_equal(pairs_cpu, pairs_dev):
        raise SystemExit("the two devices predicted different pair lists")
    return {"case": "agree", "model": str(args.model), "n_atoms": len(atoms),
            "device": device, "dtype": args.dtype, "n_entries": len(cpu),
            "max_abs_diff_meV": float(np.abs(cpu - dev).max() * 1e3),
            "max_abs_block_meV": float(np.abs(cpu).max() * 1e3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    fwd = sub.add_parser("forward", help="predict stage of one supercell on every rank")
    fwd.add_argument("--basis", default="gth-dzvp-molopt-sr")
    fwd.add_argument("--cutoff", type=float, default=9.0)
    fwd.add_argument("--repeat", type=int, default=11, help="cubic 8-atom cells per axis")
    fwd.add_argument("--chunk-atoms", type=int, default=2000)
    fwd.add_argument("--layers", type=int, default=2)
    fwd.add_argument("--channels", type=int, default=8)
    fwd.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    fwd.add_argument("--device", default=None)
    fwd.add_argument("--out", type=Path, required=True)
    chk = sub.add_parser("agree", help="device float32 against CPU float64, trained model")
    chk.add_argument("--model", type=Path, required=True)
    chk.add_argument("--repeat", type=int, default=2)
    chk.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    chk.add_argument("--device", default=None)
    chk.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    doc = forward(args) if args.what == "forward" else agree(args)
    if doc:
        doc["command"] = " ".join(sys.argv)
        doc["threads"] = os.environ.get("OMP_NUM_THREADS")
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(json.dumps({k: v for k, v in doc.items() if k != "per_rank"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
