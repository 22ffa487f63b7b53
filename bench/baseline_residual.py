"""What the kinetic baseline T + v S leaves of H, shell by shell, in a labelled dataset.

For every structure of a split, the exact kinetic and overlap blocks of its pairs
(``ehpc.nn.baseline.baseline_integrals``) are set beside the DFT blocks; ``v`` is fitted
to the off-site blocks of all of them (``fit_potential``, as ``model.baseline: kinetic``
fits it to the training split).  Printed per distance shell: the mean |H|, |H - T| and
|H - T - v S| in meV, i.e. the size of what a network has to learn with and without the
baseline.

    python bench/baseline_residual.py results/default/dataset.h5 --split train
    python bench/baseline_residual.py labels/one_crystal.h5 --split all
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from ehpc.io.dataset import Dataset
from ehpc.io.layout import BlockLayout
from ehpc.io.splits import read_splits
from ehpc.nn.baseline import baseline_integrals, fit_potential

SHELLS = (0.0, 0.1, 3.0, 5.0, 6.2, 7.3, 8.3, 9.1)  # Å: on-site, then bins of pair distance


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="train", help="a split of the file, or all")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args(argv)

    dataset = Dataset(args.dataset)
    names = ([r.name for r in dataset] if args.split == "all"
             else read_splits(args.dataset)[args.split])
    rows = []  # (distance, H, T, S) per entry, over all structures
    for name in names:
        record = dataset[name]
        pairs = np.asarray(record.atom_pairs)
        layout = BlockLayout(pairs, dataset.basis.nao_per_atom(record.numbers))
        cell = np.asarray(record.cell)
        pos = np.asarray(record.positions)
        distance = np.linalg.norm(pos[pairs[:, 4]] + pairs[:, :3] @ cell - pos[pairs[:, 3]],
                                  axis=1)
        t, s = baseline_integrals(dataset.basis, record.numbers, pos, cell, record.pbc, pairs)
        rows.append((np.repeat(distance, layout.sizes), record.hamiltonian, t, s))
    distance, h, t, s = (np.concatenate(x) for x in zip(*rows))
    offsite = distance > SHELLS[1]
    v = fit_potential([(h[offsite], t[offsite], s[offsite])])
    print(f"{args.dataset} [{args.split}]: {len(names)} structures, fitted v = {v:.4f} eV")
    print(f"{'shell (Å)':>12} {'entries':>9} {'|H| meV':>10} {'|H-T| meV':>10} "
          f"{'|H-T-vS| meV':>13} {'ratio':>6}")
    table = []
    for lo, hi in zip(SHELLS[:-1], SHELLS[1:]):
        m = (distance >= lo) & (distance < hi)
        if not m.any():
            continue
        sizes = [float(np.abs(x).mean() * 1e3) for x in (h[m], h[m] - t[m], h[m] - t[m] - v * s[m])]
        table.append({"from": lo, "to": hi, "entries": int(m.sum()), "h_meV": sizes[0],
                      "h_minus_t_meV": sizes[1], "residual_meV": sizes[2]})
        print(f"{lo:5.1f}-{hi:<5.1f} {int(m.sum()):>10} {sizes[0]:10.2f} {sizes[1]:10.2f} "
              f"{sizes[2]:13.3f} {sizes[0] / sizes[2]:6.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": args.dataset, "split": args.split, "v_eV": v, "shells": table},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
