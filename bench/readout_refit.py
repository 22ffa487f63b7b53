"""Refit a trained model's readout by least squares and score H per split and per shell.

    python bench/readout_refit.py --model results/default/train/model.pt \
        --dataset results/default/dataset.h5 --out refit.pt --json bench/results/readout_refit.json

The readout weights are solved on the dataset's training split with the features of the
given model fixed (``ehpc.train.readout_fit``, what ``train.readout_fit: true`` does after
training). Printed: H MAE per split before and after, and on the first held-out
structure the MAE and mean block size per distance shell, which shows where a model's
error sits. Score the bands of ``--out`` with ``ehpc-evaluate`` as usual.

With ``--kpoints N`` the fit also matches the bands near E_F at N k-points (the window
block of H(k) in the DFT eigenbasis, ``train.readout_kpoints``), once per weight of
``--weights``; printed per weight: H MAE
per split, the eigenvalue MAE of each held-out split at the same k-points (the bands of
its label's blocks, in the band loss's ±2 eV window), and with ``--bands`` (an
``ehpc-evaluate`` ``bands.json`` and its cell) the model's band path against the true SCF
bands stored there. ``--out`` then holds the last weight's readout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ehpc.io.dataset import Dataset
from ehpc.io.layout import BlockLayout
from ehpc.io.splits import read_splits
from ehpc.nn.data import pair_lengths
from ehpc.nn.fit import evaluate
from ehpc.nn.model import HamiltonianModel
from ehpc.nn.data import collate
from ehpc.train.loss import band_eigenvalues, band_target
from ehpc.train.readout_fit import (
    RIDGE,
    WINDOW_WEIGHTS,
    fit_readout,
    normal_equations,
    solve_readout,
)

#: distance shells (Å) of the per-shell table; 0 to 0.1 is on-site
SHELLS = (0.0, 0.1, 2.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 12.0)


def shell_errors(model: HamiltonianModel, record) -> list[dict]:
    """MAE and mean |block| (meV) of the record's blocks per distance shell."""
    graph = model.graph_of(record)
    graph = graph.to("cpu", model.dtype)
    with torch.no_grad():
        pred = model(graph).double().numpy()
    target = graph.target.double().numpy()
    layout = BlockLayout(np.asarray(graph.pairs), model.basis.nao_per_atom(record.numbers))
    length = pair_lengths(graph)  # [n_pairs]
    rows = []
    for lo, hi in zip(SHELLS[:-1], SHELLS[1:]):
        pick = np.flatnonzero((length >= lo) & (length < hi))
        if not len(pick):
            continue
        entries = layout.entries(pick)
        rows.append({"from_A": lo, "to_A": hi, "pairs": int(len(pick)),
                     "block_meV": float(np.abs(target[entries]).mean() * 1e3),
                     "mae_meV": float(np.abs(pred[entries] - target[entries]).mean() * 1e3)})
    return rows


def band_scan(model: HamiltonianModel, splits: dict, kpoints: int, weights, bands_json,
              ridge: float) -> list[dict]:
    """Solve the readout with the band-window term at each weight and score it."""
    def graph_and_target(record):
        graph = model.graph_of(record)
        return (collate([graph]).to("cpu", model.dtype),
                band_target(record, graph, model.basis, kpoints, 2.0, 4))

    start = time.perf_counter()
    train = [graph_and_target(r) for r in splits["train"]]
    elements, bands = normal_equations(model, [(g, [t]) for g, t in train], 1.0)
    print(f"normal equations at {kpoints} k-points: {time.perf_counter() - start:.0f} s, "
          f"{torch.get_num_threads()} thread(s)")
    held = {k: [graph_and_target(r) for r in v] for k, v in splits.items() if k != "train"}
    path = None
    if bands_json:
        import ase.io

        from ehpc.analysis.bands import bands_with_exact_overlap, exact_overlap

        stored = json.loads(bands_json.read_text())
        atoms = ase.io.read(bands_json.parent.parent / "band_cell.extxyz")
        path = (stored, atoms, exact_overlap(atoms, model.basis))
    rows = []
    for weight in weights:
        solve_readout(model, elements, bands, weight, ridge)
        row = {"weight": weight,
               "H_mae_meV": {k: evaluate(model, v)["mae_eV"] * 1e3 for k, v in splits.items()},
               "band_mae_meV": {}}
        with torch.no_grad():
            for split, items in held.items():
                diffs = [(band_eigenvalues(model(g), t) - t.reference)[t.select] for g, t in items]
                row["band_mae_meV"][split] = float(torch.cat(diffs).abs().mean()) * 1e3
        if path is not None:
            stored, atoms, overlap = path
            truth = np.asarray(stored["dft_eV"])
            pairs, flat = model.predict(atoms.numbers, atoms.positions, np.asarray(atoms.cell[:]),
                                        atoms.pbc)
            bands = bands_with_exact_overlap(pairs, flat, atoms, model.basis,
                                             np.asarray(stored["kpts_frac"]), overlap=overlap)
            window = np.abs(truth - stored["fermi_level_dft_eV"]) <= 2.0
            n_occ = model.basis.n_electrons(atoms.numbers) // 2
            row["path_mae_meV"] = float(np.abs(bands - truth)[window].mean()) * 1e3
            row["path_max_meV"] = float(np.abs(bands - truth)[window].max()) * 1e3
            row["path_gap_eV"] = float(bands[:, n_occ].min() - bands[:, n_occ - 1].max())
            row["true_gap_eV"] = float(truth[:, n_occ].min() - truth[:, n_occ - 1].max())
        rows.append(row)
        text = (f"  weight {weight:<8g} H MAE " + " ".join(
            f"{k} {v:.2f}" for k, v in row["H_mae_meV"].items()) + " | eigenvalue MAE at "
            f"{kpoints} k " + " ".join(f"{k} {v:.1f}" for k, v in row["band_mae_meV"].items()))
        if "path_gap_eV" in row:
            text += (f" | path MAE {row['path_mae_meV']:.1f} max {row['path_max_meV']:.0f}, "
                     f"gap {row['path_gap_eV']:.3f} (SCF {row['true_gap_eV']:.3f}) eV")
        print(text + " (meV)", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the refitted model file")
    parser.add_argument("--json", type=Path, help="append the record to this JSON list")
    parser.add_argument("--ridge", type=float, default=RIDGE)
    parser.add_argument("--kpoints", type=int, default=0,
                        help="also fit the bands near E_F at this many k-points")
    parser.add_argument("--weights", type=float, nargs="+", default=list(WINDOW_WEIGHTS),
                        help="weights of that term to scan (with --kpoints)")
    parser.add_argument("--bands", type=Path,
                        help="an ehpc-evaluate bands.json (its run's band_cell.extxyz beside "
                        "its folder) to score the band path against the true SCF")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model = HamiltonianModel.load(args.model).to(torch.float64)
    dataset = Dataset(args.dataset)
    records = {r.name: r for r in dataset}
    splits = {k: [records[n] for n in v] for k, v in read_splits(args.dataset).items()}
    held_out = next(iter(splits.get("test") or splits.get("val")))

    def scores() -> dict:
        return {"H_mae_meV": {k: evaluate(model, v)["mae_eV"] * 1e3 for k, v in splits.items()},
                "shells": shell_errors(model, held_out)}

    if args.kpoints:
        rows = band_scan(model, splits, args.kpoints, args.weights, args.bands, args.ridge)
        model.to(torch.float32).save(args.out)
        if args.json:
            from bench_mumps import git_commit

            old = json.loads(args.json.read_text()) if args.json.exists() else []
            old.append({"model": str(args.model), "dataset": str(args.dataset),
                        "kpoints": args.kpoints, "ridge": args.ridge, "scan": rows,
                        "commit": git_commit()})
            args.json.write_text(json.dumps(old, indent=1) + "\n")
        return 0

    before = scores()
    start = time.perf_counter()
    graphs = [model.graph_of(r).to("cpu", model.dtype)
              for r in splits["train"]]
    fit_readout(model, graphs, diag_weight=1.0, ridge=args.ridge)
    seconds = time.perf_counter() - start
    after = scores()
    model.to(torch.float32).save(args.out)

    print(f"readout least squares in {seconds:.1f} s ({args.threads} thread(s)), "
          f"ridge {args.ridge:g}")
    for split in before["H_mae_meV"]:
        print(f"  {split:6s} H MAE {before['H_mae_meV'][split]:8.2f} -> "
              f"{after['H_mae_meV'][split]:8.2f} meV")
    print(f"  {held_out.name} per shell: pairs, mean |block|, MAE before -> after (meV)")
    for b, a in zip(before["shells"], after["shells"]):
        print(f"    {b['from_A']:4.1f}-{b['to_A']:4.1f} Å {b['pairs']:5d} {b['block_meV']:9.2f} "
              f"{b['mae_meV']:9.2f} -> {a['mae_meV']:8.2f}")
    if args.json:
        from bench_mumps import git_commit  # bench/ is on the path of a bench script

        old = json.loads(args.json.read_text()) if args.json.exists() else []
        old.append({"model": str(args.model), "dataset": str(args.dataset),
                    "held_out": held_out.name, "ridge": args.ridge, "seconds": seconds,
                    "before": before, "after": after, "commit": git_commit()})
        args.json.write_text(json.dumps(old, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
