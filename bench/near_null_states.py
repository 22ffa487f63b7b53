"""Where a model's crystal bands go wrong: the states near the HOMO along the band path,
each with |c|² (the Euclidean norm of its S-normalised coefficients) and the smallest
eigenvalue of S(k).

    python bench/near_null_states.py --model results/default/train/model.pt \
        --cell results/default/band_cell.extxyz [--points 30] [--every 3]

|c|² near 1 is an ordinary state; |c|² of tens means the state is made of the nearly
linearly dependent combinations of the basis (the near-null space of S(k)), where an error
in H moves an eigenvalue by about |c|² times as much.
"""

from __future__ import annotations

import argparse

import ase.io
import numpy as np
import scipy.linalg
import torch

from ehpc.analysis.bands import band_path, exact_overlap
from ehpc.io.layout import BlockLayout
from ehpc.nn.model import HamiltonianModel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cell", required=True, help="the periodic cell (any ASE format)")
    parser.add_argument("--points", type=int, default=30, help="k-points along the path")
    parser.add_argument("--every", type=int, default=3, help="print every n-th k-point")
    parser.add_argument("--around", type=int, default=2, help="states each side of the HOMO")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    model = HamiltonianModel.load(args.model).to(torch.float64)
    atoms = ase.io.read(args.cell)
    h_pairs, h_flat = model.predict(atoms.numbers, atoms.positions, np.asarray(atoms.cell[:]),
                                    atoms.pbc)
    s_pairs, s_flat = exact_overlap(atoms, model.basis)
    nao = model.basis.nao_per_atom(atoms.numbers)
    h_layout, s_layout = BlockLayout(h_pairs, nao), BlockLayout(s_pairs, nao)
    n_occupied = model.basis.n_electrons(atoms.numbers) // 2
    lo, hi = n_occupied - args.around, n_occupied + args.around
    print(f"states {lo + 1}..{hi} (HOMO = {n_occupied}): energy (eV) and |c|²")
    for k in band_path(atoms, None, args.points).kpts[:: args.every]:
        h, s = h_layout.bloch(h_flat, k), s_layout.bloch(s_flat, k)
        energies, vectors = scipy.linalg.eigh(h, s)
        norms = (np.abs(vectors) ** 2).sum(axis=0)
        smallest = np.linalg.eigvalsh(s)[0]
        print(f"k = {np.array2string(np.round(k, 2)):18s} min eig S(k) {smallest:7.4f}  "
              + "  ".join(f"{e:7.2f} ({c:5.1f})" for e, c in zip(energies[lo:hi], norms[lo:hi])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
