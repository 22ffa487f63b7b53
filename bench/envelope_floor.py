"""What a cutoff envelope alone costs the bands of a crystal: DFT's own blocks times u(r).

A model multiplies every off-site block it predicts by its envelope u(r), and its edge
features carry u(r) as well, so blocks that u damps can only be reached through
compensating features many times larger.  This takes the labelled crystals of a dataset,
multiplies DFT's H blocks by each envelope (on-site blocks untouched) and scores the bands,
with the exact S, against the SCF's own bands stored in the record, within ±2 eV of E_F.

    python bench/envelope_floor.py --dataset results/default/dataset.h5 \\
        --out bench/results/envelope_floor_si.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch


def envelopes(cutoff: float) -> dict:
    from ehpc.nn.radial import DEFAULT_ENVELOPE_POWER, PolynomialCutoff, SwitchCutoff

    found = {"none (label floor)": None,
             f"polynomial p={DEFAULT_ENVELOPE_POWER}": PolynomialCutoff(cutoff)}
    for width in (0.5, 1.0, 2.0):
        found[f"switch w={width} Å"] = SwitchCutoff(cutoff, width)
    return found


def score(record, basis, cutoff: float) -> dict:
    from ehpc.analysis.bands import bands_with_exact_overlap, exact_overlap
    from ehpc.dft.floor import band_error

    atoms = record.to_atoms()
    pairs = np.asarray(record.atom_pairs)
    nao = basis.nao_per_atom(atoms.numbers)
    lengths = np.linalg.norm(atoms.positions[pairs[:, 4]] - atoms.positions[pairs[:, 3]]
                             + pairs[:, :3] @ np.asarray(atoms.cell[:]), axis=1)  # [n_pairs]
    onsite = lengths < 1e-8
    sizes = nao[pairs[:, 3]] * nao[pairs[:, 4]]
    overlap = exact_overlap(atoms, basis)
    truth = np.asarray(record.reference_bands)
    fermi = float(record.attrs["fermi_level"])
    n_occ = None if record.attrs.get("smearing") else int(record.attrs["n_electrons"]) // 2
    rows = {}
    for name, envelope in envelopes(cutoff).items():
        u = np.ones(len(pairs)) if envelope is None else \
            envelope(torch.as_tensor(lengths)).numpy()
        u[onsite] = 1.0
        h = np.asarray(record.hamiltonian) * np.repeat(u, sizes)
        bands = bands_with_exact_overlap(pairs, h, atoms, basis, record.reference_kpts,
                                         name=record.name, overlap=overlap)
        mae, worst, _, _, gap = band_error(bands, truth, fermi, n_occ)
        rows[name] = {"mae_meV": mae, "max_meV": worst, "gap_shift_meV": gap}
    return rows


def main(argv: list[str] | None = None) -> int:
    from ehpc.io.dataset import Dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    dataset = Dataset(args.dataset)
    results = {}
    for record in dataset:
        if record.reference_bands is None:
            continue
        cutoff = float(record.attrs["cutoff"])
        results[record.name] = score(record, dataset.basis, cutoff)
        print(record.name, json.dumps(results[record.name]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "commit": commit,
                                    "dataset": str(args.dataset), "basis": dataset.basis.name,
                                    "structures": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
