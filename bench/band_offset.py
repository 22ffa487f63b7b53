"""How much of a model's band error on crystals is one rigid offset of every level.

    python bench/band_offset.py --model M.pt --dataset LABEL.h5 [LABEL.h5 ...]

For each crystal record with the SCF's own bands (``reference_bands``) this prints, within
±2 eV of E_F as ``ehpc-evaluate`` scores: the total MAE of the model's bands (predicted H,
exact S) against the SCF, their mean signed error (the offset: positive when the model's
levels lie above the SCF's) and the MAE left after removing that offset, in meV.  A label
SCF on a coarser k-mesh than the cell scored (see ``ehpc-basis --kmesh-convergence``)
shows up as an offset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ehpc.analysis.bands import bands_with_exact_overlap
from ehpc.analysis.evaluate import predict_record
from ehpc.dft.floor import FLOOR_WINDOW_EV
from ehpc.io.dataset import Dataset
from ehpc.nn.model import HamiltonianModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, nargs="+", required=True)
    args = parser.parse_args(argv)
    model = HamiltonianModel.load(args.model)
    print(f"{'cell':>14} {'total MAE':>10} {'offset':>8} {'MAE - offset':>13}  (meV, {args.model})")
    for path in args.dataset:
        dataset = Dataset(path)
        for record in dataset:
            if record.reference_bands is None:
                continue
            truth = np.asarray(record.reference_bands)  # [n_k, nao_cell] eV
            ml = bands_with_exact_overlap(record.atom_pairs, predict_record(model, record),
                                          record.to_atoms(), dataset.basis,
                                          record.reference_kpts, name=record.name)
            inside = np.abs(truth - float(record.attrs["fermi_level"])) <= FLOOR_WINDOW_EV
            error = (ml - truth)[inside] * 1e3  # meV
            offset = float(error.mean())
            print(f"{record.name:>14} {np.abs(error).mean():10.1f} {offset:8.1f} "
                  f"{np.abs(error - offset).mean():13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
