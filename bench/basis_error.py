"""Basis error of crystal bands: each basis's own SCF bands against a reference basis.

For primitive diamond silicon (PBE, GTH-PBE), one k-point SCF per basis, then PySCF's
``get_bands`` (no cutoff anywhere) at a fixed set of k-points: Γ, X, L and the points of
a 6×6×6 mesh of the irreducible wedge's edges.  Reported per basis: the orbital count,
the indirect gap over those k, and the MAE / max of its bands within ±2 eV of the
reference basis's mid-gap against the reference basis's (same band indices), both as
computed and with each basis's valence-band maximum aligned to the reference's (the
absolute level of GTH bands shifts slightly with the basis).  This is
the error of the basis itself, before any truncation; ``ehpc-basis --locality`` gives
the truncation floor on top of it.

    python bench/basis_error.py --out bench/results/basis_error_si.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BASES = ["gth-szv", "gth-szv-molopt-sr", "gth-dzvp-molopt-sr", "gth-dzvp"]
REFERENCE = "gth-dzvp"
WINDOW_EV = 2.0


def bands(basis_name: str, kmesh, kpts_frac: np.ndarray) -> tuple[np.ndarray, int, float, float]:
    """Bands (eV) at ``kpts_frac``, orbitals per cell, SCF seconds, electrons."""
    from ase.build import bulk

    from ehpc.basis import Basis
    from ehpc.dft.periodic import build_cell, run_krks
    from ehpc.units import HARTREE_TO_EV

    si = bulk("Si", "diamond", a=5.43)
    start = time.perf_counter()
    pcell = build_cell(si, Basis(basis_name), basis_name)
    mf = run_krks(pcell, "pbe", kmesh, basis_name)
    seconds = time.perf_counter() - start
    energies, _ = mf.get_bands(pcell.cell.get_abs_kpts(kpts_frac))
    return np.array(energies) * HARTREE_TO_EV, pcell.cell.nao, seconds, pcell.cell.nelectron


def path_kpoints() -> np.ndarray:
    """Γ–X, Γ–L and X–W–K edges sampled finely enough to catch the conduction minimum."""
    from ase.build import bulk

    path = bulk("Si", "diamond", a=5.43).cell.bandpath("GXWKGL", npoints=40)
    return np.asarray(path.kpts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kmesh", type=int, nargs=3, default=[4, 4, 4])
    parser.add_argument("--bases", nargs="+", default=BASES)
    args = parser.parse_args(argv)
    kpts = path_kpoints()
    results = {}
    for name in args.bases:
        energies, nao, seconds, nelectron = bands(name, tuple(args.kmesh), kpts)
        n_occ = int(nelectron) // 2
        gap = float(energies[:, n_occ].min() - energies[:, n_occ - 1].max())
        results[name] = {"nao": int(nao), "scf_seconds": seconds, "indirect_gap_eV": gap,
                         "energies": energies.tolist(), "n_occ": n_occ}
        print(f"{name}: {nao} orbitals, gap {gap:.3f} eV, SCF {seconds:.0f} s", flush=True)
    if REFERENCE in results:
        ref = np.array(results[REFERENCE]["energies"])
        n_occ = results[REFERENCE]["n_occ"]
        mid = 0.5 * (ref[:, n_occ].min() + ref[:, n_occ - 1].max())
        for name, row in results.items():
            mine = np.array(row["energies"])
            n = min(mine.shape[1], ref.shape[1])
            inside = np.abs(ref[:, :n] - mid) <= WINDOW_EV
            diff = np.abs(mine[:, :n] - ref[:, :n])[inside] * 1000.0  # meV
            shift = mine[:, n_occ - 1].max() - ref[:, n_occ - 1].max()  # eV, VBM to VBM
            aligned = np.abs(mine[:, :n] - shift - ref[:, :n])[inside] * 1000.0  # meV
            row["vs_reference_mae_meV"] = float(diff.mean())
            row["vs_reference_max_meV"] = float(diff.max())
            row["vbm_shift_meV"] = float(shift * 1000.0)
            row["vs_reference_aligned_mae_meV"] = float(aligned.mean())
            row["vs_reference_aligned_max_meV"] = float(aligned.max())
            print(f"{name} vs {REFERENCE}: MAE {diff.mean():.0f} meV, max {diff.max():.0f} meV; "
                  f"VBM-aligned MAE {aligned.mean():.0f} meV, max {aligned.max():.0f} meV "
                  f"(VBM shift {shift * 1000.0:+.0f} meV)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    doc = {"command": " ".join(sys.argv), "commit": commit, "kmesh": args.kmesh,
           "reference": REFERENCE, "window_eV": WINDOW_EV, "n_kpts": len(kpts),
           "bases": {k: {kk: vv for kk, vv in v.items() if kk != "energies"}
                     for k, v in results.items()}}
    from ehpc.cli import write_atomic

    write_atomic(args.out, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
