"""How much of a model's band error on crystals is one rigid offset of every level.

    python bench/band_offset.py --model M.pt --dataset LABEL.h5 [LABEL.h5 ...]
    python bench/band_offset.py --bands EVAL/bands.json [...]     # ehpc-evaluate's band path

For each crystal record with the SCF's own bands (``reference_bands``) this prints, within
±2 eV of E_F as ``ehpc-evaluate`` scores: the total MAE of the model's bands (predicted H,
exact S) against the SCF, their mean signed error (the offset: positive when the model's
levels lie above the SCF's) and the MAE left after removing that offset, in meV.  A label
SCF on a coarser k-mesh than the cell scored (see ``ehpc-basis --kmesh-convergence``)
shows up as an offset.  ``--bands`` does the same for the band paths of
``ehpc-evaluate --band-structure`` (its ``bands.json``: model against the SCF reference).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ehpc.analysis.evaluate import crystal_bands, predict_record
from ehpc.dft.floor import window_errors
from ehpc.io.dataset import Dataset
from ehpc.nn.model import HamiltonianModel


def row(name: str, error: np.ndarray) -> str:
    """Total MAE, offset (mean signed error) and the MAE around it, of errors in meV."""
    offset = float(error.mean())
    return (f"{name:>14} {np.abs(error).mean():10.1f} {offset:8.1f} "
            f"{np.abs(error - offset).mean():13.1f}")


def label_rows(model_path: Path, paths: list[Path]) -> list[str]:
    model = HamiltonianModel.load(model_path)
    rows = []
    for path in paths:
        dataset = Dataset(path)
        for record in dataset:
            bands = crystal_bands(record, predict_record(model, record), dataset.basis)
            if bands is not None:
                error = window_errors(bands.model, bands.truth, bands.fermi)
                rows.append(row(record.name, error * 1e3))
    return rows


def path_rows(paths: list[Path]) -> list[str]:
    rows = []
    for path in paths:
        bands = json.loads(path.read_text())
        truth, ml = np.array(bands["dft_eV"]), np.array(bands["model_eV"])  # [n_k, n_bands]
        error = window_errors(ml, truth, bands["fermi_level_dft_eV"])
        rows.append(row(path.parent.name, error * 1e3))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--dataset", type=Path, nargs="+", default=[])
    parser.add_argument("--bands", type=Path, nargs="+", default=[])
    args = parser.parse_args(argv)
    if args.dataset and args.model is None:
        parser.error("--dataset needs --model")
    print(f"{'cell':>14} {'total MAE':>10} {'offset':>8} {'MAE - offset':>13}  (meV)")
    for line in label_rows(args.model, args.dataset) if args.dataset else []:
        print(line)
    for line in path_rows(args.bands):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
