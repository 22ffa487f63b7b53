"""The overlap check two ways on one assembled S: the exact count (LDLᵀ of S - floor·I)
against the Krylov–Schur estimate of S's smallest eigenvalue that replaces it by default.

    OMP_NUM_THREADS=2 python bench/overlap_check.py \\
        --table bench/data/table/labels/Si_perfect.h5 --supercell Si:diamond:5.43:5x5x5

The structure is a perfect supercell of the label's primitive cell (``crystal_table.py``);
H and S are assembled by ``ehpc-infer``'s own stages (``solve=False``), then each check
runs on the same S, one after the other, in this process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="primitive-cell label file")
    parser.add_argument("--supercell", required=True, help="SYMBOL:LATTICE:A:NxNxN")
    parser.add_argument("--overlap-tol", type=float, default=None)
    args = parser.parse_args(argv)

    from crystal_table import CrystalTable  # bench/ is on the path of a bench script

    from ehpc.cli.infer import parse_supercell
    from ehpc.infer.fermi import ESTIMATE_MARGIN, InertiaCounter, smallest_eigenvalue
    from ehpc.infer.pipeline import InferenceOptions, run_inference

    options = InferenceOptions(solve=False)
    if args.overlap_tol is not None:
        options.overlap_tol = args.overlap_tol
    result = run_inference(parse_supercell(args.supercell), CrystalTable.load(args.table),
                           options)
    overlap = result.overlap
    print(f"S: {overlap.getSize()[0]} orbitals, {overlap.getInfo()['nz_used']:.0f} nonzeros")

    counter = InertiaCounter(result.hamiltonian, overlap)
    start = time.perf_counter()
    negative, zero, _ = counter.inertia_of(overlap, options.overlap_floor, definite=True)
    exact = time.perf_counter() - start
    counter.destroy()
    print(f"exact count: {negative + zero} eigenvalues below {options.overlap_floor:g}, "
          f"{exact:.1f} s (one LDLᵀ)")
    start = time.perf_counter()
    smallest = smallest_eigenvalue(overlap)
    estimate = time.perf_counter() - start
    settles = smallest > ESTIMATE_MARGIN * options.overlap_floor
    print(f"Krylov estimate: smallest eigenvalue {smallest:.6g}, {estimate:.1f} s "
          f"({'settles the check' if settles else 'the exact count would decide'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
