"""Label one rattled cubic diamond-Si supercell at Γ (or on a k-mesh) with PySCF, for transfer scores.

The cell is what ``bench/accuracy.py`` labels for transfer (``rattled_supercells`` of the
8-atom cubic cell, seed 1000 + repeat), at the basis, cutoff and rattle given here, so a
model trained elsewhere (e.g. the default workflow's) can be scored on it:

    python bench/label_supercell.py --repeat 2 --rattle 0.03 --cutoff 9 --out bench/data/transfer
    ehpc-evaluate --model results/default/train/model.pt --split all \\
        --dataset bench/data/transfer/si64_00000_gth-dzvp-molopt-sr_gamma_c9_r0.03.h5 --out-dir E

The label file is a one-structure dataset whose reference bands are the SCF's own Γ
eigenvalues (the truth ``ehpc-evaluate`` scores against).  ``--kmesh K`` labels on a K×K×K
mesh instead, e.g. the perfect 8-atom cell on the training cells' mesh (``--repeat 1
--rattle 0 --kmesh 2``).  A rerun finds the finished label and stops.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="cubic repeats (2: 64 atoms)")
    parser.add_argument("--rattle", type=float, default=0.03, help="Å")
    parser.add_argument("--cutoff", type=float, default=9.0, help="Å, pairs kept")
    parser.add_argument("--kmesh", type=int, default=1, help="SCF mesh K×K×K (1: Γ)")
    parser.add_argument("--basis", default="gth-dzvp-molopt-sr")
    parser.add_argument("--out", type=Path, default=BENCH / "data" / "transfer")
    args = parser.parse_args(argv)

    from ase.build import bulk

    from ehpc.basis import Basis
    from ehpc.sources import rattled_supercells

    sys.path.insert(0, str(BENCH))
    from accuracy import SI_LATTICE, label_cell

    unit = bulk("Si", "diamond", a=SI_LATTICE, cubic=True)
    cell = rattled_supercells(unit, (args.repeat,) * 3, 1, args.rattle, 0.0,
                              1000 + args.repeat, prefix=f"si{8 * args.repeat**3}")[0]
    name = cell.info["name"]
    args.out.mkdir(parents=True, exist_ok=True)
    mesh = "gamma" if args.kmesh == 1 else f"k{args.kmesh}{args.kmesh}{args.kmesh}"
    path = args.out / f"{name}_{args.basis}_{mesh}_c{args.cutoff:g}_r{args.rattle:g}.h5"
    info = label_cell(cell, Basis(args.basis), args.cutoff, (args.kmesh,) * 3, name, path)
    print(json.dumps({"file": str(path), **info}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
