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
    python bench/bench_infer.py --sizes 2 3 --ranks 1 --fermi-methods window bisection

With several ``--fermi-methods`` every structure is run once per method in the same
sweep, and a side-by-side line compares their factorisations and E_F-stage seconds.

Without ``--model`` a small untrained float64 model (gth-szv Si or C) is built: costs depend
on the architecture and cutoff, not on the weights.  With ``--table LABEL.h5`` (a
primitive-cell label) the solver stages run on the perfect crystal's own DFT blocks
(bench/crystal_table.py): a physical, gapped H in the label's basis, e.g.

    python bench/bench_infer.py --table bench/data/table/labels/Si_perfect.h5 --sizes 3 \
        --ranks 1 --fermi-methods window bisection
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

from ehpc.infer.overlap import OVERLAP_DROP_TOLERANCE

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
    parser.add_argument("--table", type=Path,
                        help="primitive-cell label file (ehpc-datagen): run on the crystal's "
                             "own DFT blocks (bench/crystal_table.py) instead of a model; "
                             "perfect lattice, so --rattle is ignored")
    parser.add_argument("--cutoff", type=float, default=4.0, help="Å, for the default model")
    parser.add_argument("--layers", type=int, default=2,
                        help="message-passing layers of the default model")
    parser.add_argument("--nev", type=int, default=20)
    parser.add_argument("--chunk-atoms", type=int, default=2000)
    parser.add_argument("--overlap-tol", type=float, default=OVERLAP_DROP_TOLERANCE,
                        help="ehpc-infer's default (before it was 1e-10: pass that to repeat "
                        "the older sweeps of docs/BENCHMARKS.md)")
    parser.add_argument("--rattle", type=float, default=0.05)
    parser.add_argument("--fermi-methods", nargs="+", default=["window"],
                        choices=("window", "bisection"),
                        help="E_F paths to run on each structure (several: side by side)")
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


def run_one(args, model: Path, size: int, n_ranks: int, workdir: Path,
            method: str = "window") -> dict:
    """One ``mpirun`` of ehpc-infer; returns the record for the JSON file."""
    from ehpc.io.results import read_results

    out = workdir / f"{args.material}_{size}_p{n_ranks}_{method}.h5"
    if args.material == "si":
        source = ["--supercell", f"Si:diamond:{LATTICE_CONSTANT}:{size}x{size}x{size}"]
        n_atoms = ATOMS_PER_CUBIC_CELL * size**3
    else:
        source = ["--structure", str(graphene_file(workdir, size))]
        n_atoms = ATOMS_PER_GRAPHENE_CELL * size**2
    if args.table:  # the crystal's DFT blocks by lookup, on the perfect lattice
        program = [sys.executable, str(Path(__file__).with_name("crystal_table.py"))]
        rattle = 0.0  # main() passes the table as the model
    else:
        program, rattle = [shutil.which("ehpc-infer") or "ehpc-infer"], args.rattle
    cmd = [
        "mpirun", "--oversubscribe", "-n", str(n_ranks), *program,
        "--model", str(model), *source,
        "--rattle", str(rattle), "--nev", str(args.nev),
        "--chunk-atoms", str(args.chunk_atoms), "--overlap-tol", str(args.overlap_tol),
        "--fermi-method", method, "--out", str(out), *args.petsc_options,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:  # a record that says so, and the sweep goes on
        proc = subprocess.CompletedProcess(cmd, 124, "", f"timed out after {args.timeout:g} s")
    wall = time.perf_counter() - start
    record = {
        "material": args.material,
        "n_atoms": n_atoms,
        "repeat": size,
        "n_ranks": n_ranks,
        "fermi_method": method,
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
        fermi_shifts=[float(x) for x in results.attrs.get("fermi_shifts", [])],
        homo=results.homo,
        lumo=results.lumo,
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


def side_by_side(records: list[dict]) -> str:
    """One line comparing the E_F paths run on the same structure and rank count."""
    first = records[0]
    cells = []
    for r in records:
        fermi = max(r.get("seconds", {}).get("fermi", [float("nan")]))
        cells.append(f"{r['fermi_method']}: {r.get('factorizations', '?')} LDLᵀ, "
                     f"fermi {fermi:.2f} s, wall {r['wall_seconds']:.1f} s, "
                     f"E_F {r.get('fermi_level', float('nan')):.6f} eV")
    return f"{first['n_atoms']:>8d} atoms P={first['n_ranks']} | " + " | ".join(cells)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if shutil.which("mpirun") is None:
        print("bench_infer: mpirun not found", file=sys.stderr)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(args.json.read_text()) if args.json.is_file() else []
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        workdir = Path(tmp)
        model = args.table or args.model or default_model(workdir / "model.pt", args.cutoff, args.layers,
                                            ELEMENT[args.material])
        for size in args.sizes:
            for n_ranks in args.ranks:
                same = []
                for method in args.fermi_methods:
                    record = run_one(args, model, size, n_ranks, workdir, method)
                    untrained = f"untrained cutoff={args.cutoff} layers={args.layers}"
                    record["model"] = (f"DFT blocks of {args.table}" if args.table
                                       else str(args.model or untrained))
                    records.append(record)
                    args.json.write_text(json.dumps(records, indent=1))  # resumable
                    print(summarise(record), flush=True)
                    same.append(record)
                if len(same) > 1:
                    print(side_by_side(same), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
