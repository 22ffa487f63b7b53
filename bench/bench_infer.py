"""Cost of ``ehpc-infer`` per stage versus atom count, for silicon and graphene supercells.

For every supercell size and rank count it runs ``mpirun -n P ehpc-infer`` on a rattled
cubic diamond-Si supercell (8 n^3 atoms), or with ``--material graphene`` on a rattled
n x n graphene sheet (2 n^2 atoms, periodic in-plane only), and records, from the results file, the wall
time and peak resident memory of each stage on each rank, plus the total wall time of
the job.  Results are appended as JSON to ``--json`` (one record per run), so a long
sweep can be resumed and plotted.

Examples:
    python bench/bench_infer.py --sizes 5 --ranks 1                # 1000 atoms, quick look
    python bench/bench_infer.py --sizes 5 6 8 10 13 --ranks 1 2 --model model.pt
    python bench/bench_infer.py --sizes 5 --ranks 2 -- -st_mat_mumps_icntl_14 80
    python bench/bench_infer.py --material graphene --sizes 23 50 --ranks 1 2

Without ``--model`` a small untrained float64 model (gth-szv Si or C) is built: costs depend
on the architecture and cutoff, not on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ehpc.infer.overlap import INTEGRAL_TOLERANCE

STAGES = ("partition", "halo", "predict", "overlap", "assemble", "fermi", "solve", "write")
ATOMS_PER_CUBIC_CELL = 8
LATTICE_CONSTANT = 5.43  # Å, silicon
GRAPHENE_LATTICE = 2.46  # Å
GRAPHENE_VACUUM = 10.0  # Å on each side of the sheet (no periodic images along z)
ATOMS_PER_GRAPHENE_CELL = 2
ELEMENT = {"si": 14, "graphene": 6}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--material", choices=("si", "graphene"), default="si")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 6, 8, 10],
                        help="repeats n: Si 8 n^3 atoms (5 gives 1000), graphene 2 n^2")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="MPI rank counts")
    parser.add_argument("--model", type=Path,
                        help="trained model file (default: small untrained Si model)")
    parser.add_argument("--cutoff", type=float, default=4.0, help="Å, for the default model")
    parser.add_argument("--layers", type=int, default=2,
                        help="message-passing layers of the default model")
    parser.add_argument("--nev", type=int, default=20)
    parser.add_argument("--chunk-atoms", type=int, default=2000)
    parser.add_argument("--overlap-tol", type=float, default=INTEGRAL_TOLERANCE)
    parser.add_argument("--rattle", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=Path("bench/results/bench_infer.json"))
    parser.add_argument("--timeout", type=float, default=24 * 3600, help="seconds per run")
    parser.add_argument("--keep", action="store_true", help="keep the results files")
    parser.add_argument("petsc_options", nargs="*",
                        help="after --: options passed to ehpc-infer/PETSc")
    return parser


def default_model(path: Path, cutoff: float, n_layers: int, element: int = 14) -> Path:
    import torch

    from ehpc.basis import Basis
    from ehpc.nn.model import HamiltonianModel

    torch.manual_seed(0)
    model = HamiltonianModel(Basis("gth-szv"), [element], cutoff=cutoff, n_layers=n_layers)
    return model.to(torch.float64).save(path)


def graphene_file(workdir: Path, size: int) -> Path:
    """An n x n graphene sheet (2 n^2 atoms) written as extended XYZ (keeps the pbc)."""
    from ase.build import graphene
    from ase.io import write

    path = workdir / f"graphene_{size}.extxyz"
    sheet = graphene(a=GRAPHENE_LATTICE, size=(size, size, 1), vacuum=GRAPHENE_VACUUM)
    sheet.pbc = (True, True, False)
    write(path, sheet)
    return path


def run_one(args, model: Path, size: int, n_ranks: int, workdir: Path) -> dict:
    """One ``mpirun`` of ehpc-infer; returns the record for the JSON file."""
    from ehpc.io.results import read_results

    out = workdir / f"{args.material}_{size}_p{n_ranks}.h5"
    if args.material == "si":
        source = ["--supercell", f"Si:diamond:{LATTICE_CONSTANT}:{size}x{size}x{size}"]
        n_atoms = ATOMS_PER_CUBIC_CELL * size**3
    else:
        source = ["--structure", str(graphene_file(workdir, size))]
        n_atoms = ATOMS_PER_GRAPHENE_CELL * size**2
    cmd = [
        "mpirun", "--oversubscribe", "-n", str(n_ranks), shutil.which("ehpc-infer") or "ehpc-infer",
        "--model", str(model), *source,
        "--rattle", str(args.rattle), "--nev", str(args.nev),
        "--chunk-atoms", str(args.chunk_atoms), "--overlap-tol", str(args.overlap_tol),
        "--out", str(out), *args.petsc_options,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    wall = time.perf_counter() - start
    record = {
        "material": args.material,
        "n_atoms": n_atoms,
        "repeat": size,
        "n_ranks": n_ranks,
        "wall_seconds": wall,
        "returncode": proc.returncode,
        "command": cmd,
        "omp_num_threads": env["OMP_NUM_THREADS"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if proc.returncode != 0:
        record["error"] = proc.stderr[-4000:]
        return record
    results = read_results(out)
    record.update(
        n_orbitals=int(results.attrs["n_orbitals"]),
        fermi_level=results.fermi_level,
        gap=results.gap,
        factorizations=int(results.attrs["factorizations"]),
        seconds={s: results.timings[s].tolist() for s in STAGES if s in results.timings},
        peak_bytes={s: results.peak_memory[s].tolist() for s in STAGES if s in results.peak_memory},
    )
    if not args.keep:
        out.unlink()
        shutil.rmtree(out.with_name(out.name + ".ranks"), ignore_errors=True)
    return record


def summarise(record: dict) -> str:
    """One line: atoms, ranks, wall time, peak memory per rank, slowest rank per stage."""
    seconds = record.get("seconds", {})
    stages = " ".join(f"{s}={max(v):.2f}s" for s, v in seconds.items())
    peaks = [max(v) for v in record.get("peak_bytes", {}).values()]
    peak_mib = max(peaks, default=0) / 2**20
    return (f"{record['n_atoms']:>8d} atoms P={record['n_ranks']}: {record['wall_seconds']:.1f} s "
            f"wall, peak {peak_mib:.0f} MiB/rank; {stages or record.get('error', '')}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if shutil.which("mpirun") is None:
        print("bench_infer: mpirun not found", file=sys.stderr)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(args.json.read_text()) if args.json.is_file() else []
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        workdir = Path(tmp)
        model = args.model or default_model(workdir / "model.pt", args.cutoff, args.layers,
                                            ELEMENT[args.material])
        for size in args.sizes:
            for n_ranks in args.ranks:
                record = run_one(args, model, size, n_ranks, workdir)
                untrained = f"untrained cutoff={args.cutoff} layers={args.layers}"
                record["model"] = str(args.model or untrained)
                records.append(record)
                args.json.write_text(json.dumps(records, indent=1))  # after every run: resumable
                print(summarise(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
