"""Forward cost of the model in two bases: throughput and peak memory, one torch thread.

The same network (layers, channels, radial basis) is built for silicon in the minimal
gth-szv basis (4 orbitals, blocks up to L = 2, cutoff 6 Å) and in the faithful
gth-dzvp-molopt-sr basis (13 orbitals with d, blocks up to L = 4, cutoff 9 Å), untrained
(the cost does not depend on the weights).  Each case runs in its own process so that
its peak resident memory is its own.  Side by side in one run, so the ratio is
meaningful on a noisy machine.

    python bench/bench_model_cost.py --out bench/results/model_cost.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = [("gth-szv", 6.0), ("gth-dzvp-molopt-sr", 9.0)]
REPEATS = (2, 4)  # cubic 8-atom cell repeated: 64 and 512 atoms


def one_case(basis_name: str, cutoff: float, repeat: int, layers: int, channels: int) -> dict:
    import torch
    from ase.build import bulk

    from ehpc.basis import Basis
    from ehpc.nn.model import HamiltonianModel

    torch.set_num_threads(1)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((repeat,) * 3)
    model = HamiltonianModel(Basis(basis_name), [14], cutoff=cutoff, n_layers=layers,
                             channels=channels)
    model.eval()
    graph = model.graph(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc)
    graph = graph.to(model.device, model.dtype)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = float("inf")
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            model(graph)
            best = min(best, time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"basis": basis_name, "cutoff": cutoff, "n_atoms": len(atoms),
            "n_edges": int(graph.n_edges), "seconds": best, "atoms_per_s": len(atoms) / best,
            "edges_per_s": graph.n_edges / best, "peak_rss_MiB": peak / 1024,
            "forward_rss_growth_MiB": (peak - before) / 1024,
            "n_parameters": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--case", nargs=3, metavar=("BASIS", "CUTOFF", "REPEAT"),
                        help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args(argv)
    if args.case:
        basis, cutoff, repeat = args.case
        print(json.dumps(one_case(basis, float(cutoff), int(repeat), args.layers, args.channels)))
        return 0
    rows = []
    for repeat in REPEATS:
        for basis, cutoff in CASES:
            out = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--layers",
                                  str(args.layers), "--channels", str(args.channels), "--case",
                                  basis, str(cutoff), str(repeat)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    doc = {"command": " ".join(sys.argv), "commit": commit, "layers": args.layers,
           "channels": args.channels, "rows": rows}
    from ehpc.cli import write_atomic

    write_atomic(args.out, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
