"""``ehpc-evaluate``: a trained model against DFT on held-out structures, with plots.

    ehpc-evaluate --model train/model.pt --dataset dataset.h5 --split test --out-dir eval
    ehpc-evaluate ... --band-structure si2.extxyz --kmesh 4 4 4     # + ML vs DFT bands

The output folder gets ``metrics.json`` (H MAE in eV/meV/μHa, eigenvalue MAE, occupied
cosine, HOMO, LUMO and gap errors; overall and per structure, see
:mod:`ehpc.analysis.evaluate`), and the plot folder ``parity.png``.  With
``--band-structure`` (a small periodic cell, first frame of any file ASE reads) it also
runs a PySCF k-point SCF of that cell and writes ``bands.png`` and ``bands.json``: along
the lattice's standard k-path, the DFT bands, the bands of DFT's H(R) cut at the model's
cutoff (the best any model with that cutoff can do), and the model's bands.  The
model's bands use its predicted H(R) and the exact overlap S(R); the DFT bands use
neither a cutoff nor the model.  ``--band-reference`` takes the DFT bands from the
``bands.json`` of an earlier evaluation of the same cell (another model, say) instead of a
new SCF, after checking that structure, basis, k-points, SCF settings and cutoff agree.
Every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import CLIError, run_main, summary, write_atomic

PROG = "ehpc-evaluate"


def build_parser() -> argparse.ArgumentParser:
    # the defaults of the code that uses them (imported here: the module itself stays light)
    from ..analysis.bands import BAND_PATH_POINTS
    from ..dft.scf import SCF_CONV_TOL

    parser = argparse.ArgumentParser(prog=PROG, description=summary(__doc__))
    parser.add_argument("--model", type=Path, required=True, help="model file from ehpc-train")
    parser.add_argument("--dataset", type=Path, required=True, help="labelled dataset (.h5)")
    parser.add_argument("--split", default="test",
                        help="subset of the dataset's /splits to evaluate, or 'all' (default: test)")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for metrics.json")
    parser.add_argument("--plot-dir", type=Path, help="folder for the PNGs (default: --out-dir)")
    bands = parser.add_argument_group("band structure (periodic cells)")
    bands.add_argument("--band-structure", type=Path,
                       help="small periodic cell to compare bands on (any ASE format)")
    bands.add_argument("--band-path", default=None,
                       help="special points, e.g. LGXUKG (default: the lattice's standard path)")
    bands.add_argument("--band-points", type=int, default=BAND_PATH_POINTS,
                       help="k-points along the path")
    bands.add_argument("--kmesh", type=int, nargs=3, default=[4, 4, 4],
                       help="SCF k-mesh of the DFT reference (default: 4 4 4)")
    bands.add_argument("--xc", default=None, help="functional (default: the dataset's)")
    bands.add_argument("--conv-tol", type=float, default=SCF_CONV_TOL,
                       help="SCF tolerance (Hartree)")
    bands.add_argument("--band-reference", type=Path, default=None, metavar="BANDS_JSON",
                       help="reuse the DFT bands of an earlier evaluation's bands.json of the "
                            "same cell and settings instead of running the SCF again")
    bands.add_argument("--smearing", default=None, metavar="METHOD:WIDTH_EV",
                       help="occupation smearing of the SCF, e.g. fermi:0.1, or 'none' "
                            "(default: the labels' own, as stored in the dataset)")
    return parser


def held_out_records(dataset, split: str, where: Path) -> list:
    """Records of ``split`` (or every record for ``all``), with a clear error if absent."""
    from ..io.splits import read_splits

    if split == "all":
        return list(dataset)
    splits = read_splits(where)
    if split not in splits:
        known = ", ".join(sorted(splits)) or "none"
        raise CLIError(f"{where}: no split {split!r} (splits: {known}); use --split all or one of those")
    if not splits[split]:
        raise CLIError(f"{where}: split {split!r} is empty; label more structures or pick another split")
    return [dataset[name] for name in splits[split]]


def evaluate_records(model, records: list) -> tuple[dict, list[dict], np.ndarray, np.ndarray]:
    """Metrics, per-structure rows, and all DFT and predicted elements (for the parity plot).

    Crystals labelled with their SCF's own bands also get the floor, model and total band
    errors against that truth (``metrics["bands_vs_scf"]``, see
    :func:`ehpc.analysis.evaluate.score_against_truth`).
    """
    from ..analysis.evaluate import (TRUTH_SCORES, compare, predict_record, score_against_truth,
                            summarise, summarise_truth)

    errors, truths, dft, predicted = [], [], [], []
    for record in records:
        flat = predict_record(model, record)  # refuses elements the model does not know
        errors.append(compare(model, record, predicted=flat))
        truths.append(score_against_truth(record, flat, model.basis))
        dft.append(record.hamiltonian)
        predicted.append(flat)
    rows = [{"name": e.name, "h_mae_meV": e.mae * 1e3, "n_entries": e.n_entries,
             "homo_dft_eV": e.homo_dft, "homo_model_eV": e.homo_model, "lumo_dft_eV": e.lumo_dft,
             "lumo_model_eV": e.lumo_model, "gap_dft_eV": e.gap_dft, "gap_model_eV": e.gap_model,
             "fermi_dft_eV": e.fermi_dft,
             "occupied_cosine": e.occupied_cosine} for e in errors]
    for row, truth in zip(rows, truths):
        if truth is not None:
            row.update({f"{key}_band_mae_meV": getattr(truth, key)[0] for key in TRUTH_SCORES})
            row.update({f"{key}_band_max_meV": getattr(truth, key)[1] for key in TRUTH_SCORES})
    metrics = summarise(errors)
    against_truth = summarise_truth(truths)
    if against_truth is not None:
        metrics["bands_vs_scf"] = against_truth
    return metrics, rows, np.concatenate(dft), np.concatenate(predicted)


def frontier_text(metrics: dict) -> str:
    """``, HOMO / LUMO MAE a / b meV`` (empty when no structure has an empty orbital)."""
    if not np.isfinite(metrics["lumo_mae_eV"]):
        return ""
    return (f", HOMO / LUMO MAE {metrics['homo_mae_eV'] * 1e3:.1f} / "
            f"{metrics['lumo_mae_eV'] * 1e3:.1f} meV")


def format_truth(scores: dict) -> str:
    """One line: floor, model and total band errors (meV) of the crystals."""
    parts = [f"{key} {scores[key]['mae_meV']:.1f} (max {scores[key]['max_meV']:.1f})"
             for key in ("floor", "model", "total")]
    total = scores["total"]
    frontier = ""
    if np.isfinite(total["gap_abs_error_meV"]):
        frontier = ("; total |error| of HOMO %.1f, LUMO %.1f, gap %.1f meV"
                    % tuple(total[f"{level}_abs_error_meV"] for level in ("homo", "lumo", "gap")))
    return (f"bands within ±2 eV of E_F against the SCF, {scores['n_crystals']} crystal(s), "
            f"MAE meV: " + ", ".join(parts) + frontier)


def band_smearing(text: str | None, records: list):
    """The band reference's smearing: ``--smearing`` if given ('none': off), else the first
    labelled structure's (a dataset of smeared labels gets a smeared reference)."""
    from ..dft.scf import Smearing

    if text is not None and text.strip().lower() == "none":
        return None
    if text is None:
        attrs = records[0].attrs if records else {}
        if "smearing" not in attrs:
            return None
        return Smearing(str(attrs["smearing"]), float(attrs["smearing_width_eV"]))
    try:
        return Smearing.parse(text)
    except ValueError as err:
        raise CLIError(f"--smearing: {err}") from None


def compare_bands(model, args: argparse.Namespace, xc: str) -> dict:
    """DFT and model bands of ``--band-structure`` along a k-path: plot, JSON, and errors."""
    from ..analysis import plots
    from ..analysis.bands import band_path, model_bands
    from ..analysis.dft_bands import dft_bands, reference_inputs, reference_record, reused_reference
    from ..analysis.evaluate import EIGEN_WINDOW_EV
    from ..structure import read_structures

    atoms = read_structures(args.band_structure)[0]
    name = args.band_structure.name
    if not np.all(atoms.pbc):
        raise CLIError(f"{args.band_structure}: band structures need a fully periodic cell")
    model.check_compatible(model.basis, atoms.numbers, name)  # before the SCF, not after
    path = band_path(atoms, args.band_path, args.band_points)
    start = time.perf_counter()
    inputs = reference_inputs(atoms, model.basis, xc, args.kmesh, path.kpts, args.conv_tol,
                              model.cutoff, args.smearing)
    if args.band_reference is not None:
        try:
            saved = json.loads(args.band_reference.read_text())
            reference = reused_reference(saved, inputs, str(args.band_reference))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CLIError(f"{args.band_reference}: not a bands.json of ehpc-evaluate ({err})")
        except ValueError as err:
            raise CLIError(str(err)) from None
    else:
        reference = dft_bands(atoms, model.basis, xc, args.kmesh, path.kpts, name, args.conv_tol,
                              cutoff=model.cutoff, smearing=args.smearing)
    predicted = model_bands(model, atoms, path.kpts, name=name)
    model_seconds = time.perf_counter() - start - reference.wall_time_s
    fermi = reference.fermi_level
    n_occ = reference.n_electrons // 2
    window = np.abs(reference.energies - fermi) <= EIGEN_WINDOW_EV

    def mae(a: np.ndarray, b: np.ndarray, where=None) -> float:
        errors = np.abs(a - b) if where is None else np.abs(a - b)[where]
        return float(errors.mean()) if errors.size else float("nan")

    def gap(e: np.ndarray) -> float:
        return float(e[:, n_occ].min() - e[:, n_occ - 1].max())

    result = {
        "structure": str(args.band_structure), "path": path.path, "n_kpoints": len(path.kpts),
        "xc": xc, "scf_kmesh": list(args.kmesh), "fermi_level_dft_eV": fermi,
        "smearing": None if args.smearing is None else
        f"{args.smearing.method}:{args.smearing.width_eV:g}",
        "cutoff": model.cutoff,
        "band_mae_eV": mae(predicted, reference.energies),
        "floor_mae_window_eV": mae(reference.truncated, reference.energies, window),
        "model_mae_window_eV": mae(predicted, reference.truncated, window),
        "total_mae_window_eV": mae(predicted, reference.energies, window),
        "gap_dft_eV": gap(reference.energies),
        "gap_cutoff_dft_eV": gap(reference.truncated),
        "gap_model_eV": gap(predicted),
        "dft_seconds": reference.wall_time_s, "model_seconds": model_seconds,
        "band_reference": None if args.band_reference is None else str(args.band_reference),
    }
    within = f"DFT, H cut at {model.cutoff:g} Å"
    plots.band_structure(path.x, {"true SCF (PySCF)": reference.energies, within: reference.truncated,
                                  "ehpc model": predicted},
                         path.ticks, args.plot_dir / "bands.png", fermi=fermi,
                         title=f"{atoms.get_chemical_formula()}: model vs DFT")
    write_json(args.out_dir / "bands.json", {
        **result, "x": path.x.tolist(), "ticks": path.ticks, "kpts_frac": path.kpts.tolist(),
        "model_eV": predicted.tolist(), **reference_record(reference, inputs)})
    return result


def write_json(path: Path, payload: dict) -> None:
    """``payload`` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(payload, indent=1, default=float) + "\n")


def run(args: argparse.Namespace) -> int:
    from ..analysis import plots
    from ..io.dataset import Dataset
    from ..nn.model import HamiltonianModel

    if not args.model.is_file():
        raise CLIError(f"{args.model}: model file not found")
    if args.band_structure is not None and not args.band_structure.is_file():
        raise CLIError(f"{args.band_structure}: band-structure file not found")
    if args.band_reference is not None:
        if args.band_structure is None:
            raise CLIError("--band-reference: needs --band-structure, the cell its bands are of")
        if not args.band_reference.is_file():
            raise CLIError(f"{args.band_reference}: band-reference file not found")
    if args.band_points < 2:
        raise CLIError(f"--band-points {args.band_points}: need at least 2")
    dataset = Dataset(args.dataset)
    model = HamiltonianModel.load(args.model)
    model.check_compatible(dataset.basis, [], str(args.dataset))
    records = held_out_records(dataset, args.split, args.dataset)
    args.smearing = band_smearing(args.smearing, records)
    args.plot_dir = args.plot_dir or args.out_dir
    for folder in (args.out_dir, args.plot_dir):
        folder.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    metrics, rows, dft, predicted = evaluate_records(model, records)
    report = {"model": str(args.model), "dataset": str(args.dataset), "split": args.split,
              "metrics": metrics, "structures": rows,
              "seconds": time.perf_counter() - start}
    if "floor_max_meV" in dataset.attrs:  # the labels' truncation floor, over the whole dataset
        report["dataset_floor"] = {k: dataset.attrs[k] for k in (
            "floor_max_meV", "floor_mae_meV", "floor_worst", "overlap_min_eig", "n_with_floor")}
    plots.parity(dft, predicted, args.plot_dir / "parity.png",
                 title=f"{args.split} split: {len(records)} structures")
    print(f"{PROG}: {args.split}: {len(records)} structures, H MAE "
          f"{metrics['h_mae_meV']:.3f} meV ({metrics['h_mae_uHa']:.1f} μHa), eigenvalue MAE vs the labels' blocks "
          f"{metrics['eigenvalue_mae_meV']:.3f} meV" + frontier_text(metrics))
    if "bands_vs_scf" in metrics:
        print(f"{PROG}: {args.split}: {format_truth(metrics['bands_vs_scf'])}")
    if args.band_structure is not None:
        report["bands"] = bands = compare_bands(model, args, args.xc or dataset.xc)
        print(f"{PROG}: bands of {args.band_structure} within ±2 eV of E_F, MAE: floor (DFT cut "
              f"at {model.cutoff:g} Å vs SCF) {bands['floor_mae_window_eV'] * 1e3:.1f} meV, model "
              f"(vs cut DFT) {bands['model_mae_window_eV'] * 1e3:.1f} meV, total (vs SCF) "
              f"{bands['total_mae_window_eV'] * 1e3:.1f} meV; gap SCF {bands['gap_dft_eV']:.3f} "
              f"eV, cut DFT {bands['gap_cutoff_dft_eV']:.3f} eV, model {bands['gap_model_eV']:.3f} eV")
    write_json(args.out_dir / "metrics.json", report)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
