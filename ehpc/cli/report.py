"""``ehpc-report``: one-page summary and figures of a workflow run.

    ehpc-report --evaluation eval/metrics.json --training train \\
                --inference infer/supercell.h5 --out-dir plots --summary summary.txt

Reads what the earlier stages wrote and produces, atomically:

* ``dos.png``: density of states around E_F from the large structure's eigenvalues;
* ``learning_curve.png``: loss and validation MAE per epoch of the training run;
* the text summary: held-out errors, band-structure errors, the large structure's E_F,
  HOMO, LUMO and gap, and the wall time and peak memory of every inference stage.

Each input is optional; the summary says which parts were not given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from . import CLIError, run_main, summary, write_atomic

PROG = "ehpc-report"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=summary(__doc__))
    parser.add_argument("--evaluation", type=Path, help="metrics.json from ehpc-evaluate")
    parser.add_argument("--training", type=Path, help="run folder of ehpc-train")
    parser.add_argument("--inference", type=Path, help="results file of ehpc-infer")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the figures")
    parser.add_argument("--summary", type=Path, help="text summary (default: OUT_DIR/summary.txt)")
    return parser


def evaluation_lines(path: Path) -> list[str]:
    report = json.loads(path.read_text())
    m = report["metrics"]
    lines = [
        f"Model vs DFT on the {report['split']!r} split ({m['n_structures']} structures, "
        f"{m['n_entries']} matrix elements):",
        f"  H MAE                 {m['h_mae_meV']:10.3f} meV  ({m['h_mae_uHa']:.1f} μHa)",
        f"  eigenvalue MAE        {m['eigenvalue_mae_meV']:10.3f} meV  (vs the labels' own blocks; "
        "crystals: Γ, S cut too)",
        f"  gap MAE               {m['gap_mae_eV'] * 1e3:10.3f} meV",
        *([f"  HOMO / LUMO MAE       {m['homo_mae_eV'] * 1e3:10.3f} / "
           f"{m['lumo_mae_eV'] * 1e3:.3f} meV  (LUMO mean signed error "
           f"{m['lumo_mean_error_eV'] * 1e3:+.3f} meV)"] if "homo_mae_eV" in m else []),
        f"  occupied cosine       {m['occupied_cosine']:10.5f}",
    ]
    floor = report.get("dataset_floor")
    if floor:
        from ..dft.floor import format_floor_summary

        lines.append(f"  labels: {format_floor_summary(floor)}")
    truth = m.get("bands_vs_scf")
    if truth:
        lines.append(f"  bands within ±2 eV of E_F against the true SCF ({truth['n_crystals']} "
                     "crystals), MAE / max meV; |error| of HOMO / LUMO / gap meV:")
        for key, what in (("floor", "labels cut at the cutoff"), ("model", "model vs cut DFT"),
                          ("total", "model vs true SCF")):
            row = truth[key]
            frontier = " / ".join(f"{row.get(f'{level}_abs_error_meV', float('nan')):.2f}"
                                  for level in ("homo", "lumo", "gap"))
            lines.append(f"    {key:<6} {row['mae_meV']:9.2f} / {row['max_meV']:9.2f};  "
                         f"{frontier}  ({what})")
    bands = report.get("bands")
    if bands:
        lines += [
            f"Band structure of {bands['structure']} along {bands['path']} "
            f"({bands['n_kpoints']} k-points, DFT SCF mesh {bands['scf_kmesh']}):",
            "  band MAE within ±2 eV of E_F (meV):",
            f"    floor: DFT cut at {bands['cutoff']:g} Å vs true SCF  "
            f"{bands['floor_mae_window_eV'] * 1e3:9.1f}",
            f"    model: model vs cut DFT            {bands['model_mae_window_eV'] * 1e3:9.1f}",
            f"    total: model vs true SCF           {bands['total_mae_window_eV'] * 1e3:9.1f}",
            f"  gap SCF / cut DFT / model  {bands['gap_dft_eV']:.3f} / "
            f"{bands['gap_cutoff_dft_eV']:.3f} / {bands['gap_model_eV']:.3f} eV",
            f"  time DFT / model      {bands['dft_seconds']:10.2f} / {bands['model_seconds']:.2f} s",
        ]
    return lines


def inference_lines(results) -> list[str]:
    attrs = results.attrs
    lines = [
        f"Inference on {results.name}: {len(results.atoms)} atoms, {attrs.get('n_orbitals')} "
        f"orbitals, {results.n_ranks} MPI rank(s):",
        f"  E_F                   {results.fermi_level:10.4f} eV",
        f"  HOMO / LUMO           {results.homo:10.4f} / {results.lumo:.4f} eV",
        f"  gap                   {results.gap:10.4f} eV",
        f"  states near E_F       {len(results.eigenvalues):10d}",
        "  stage          seconds (slowest rank)   peak memory (largest rank)",
    ]
    for stage, seconds in results.timings.items():
        peak = results.peak_memory.get(stage)
        peak_text = f"{max(peak) / 2**20:8.0f} MiB" if peak is not None else ""
        lines.append(f"  {stage:<14s} {max(seconds):10.2f}                {peak_text}")
    total = sum(max(s) for s in results.timings.values())
    lines.append(f"  {'total':<14s} {total:10.2f}")
    return lines


def training_lines(folder: Path) -> list[str]:
    from ..analysis.learning_curve import read_metrics

    rows = [r for r in read_metrics(folder / "metrics.jsonl") if r.get("kind") == "epoch"]
    if not rows:
        return [f"Training in {folder}: no epoch finished"]
    scored = [r for r in rows if r.get("val_mae_eV") is not None]
    best = min(scored, key=lambda r: r["val_loss"]) if scored else None
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    line = f"Training in {folder}: {len(rows)} epochs, {seconds:.0f} s"
    if best is not None:
        line += f"; best validation MAE {best['val_mae_eV'] * 1e3:.3f} meV at epoch {best['epoch']}"
    return [line]


def run(args: argparse.Namespace) -> int:
    from ..analysis import plots
    from ..io.results import read_results
    from ..analysis.learning_curve import plot_learning_curve

    for option, path in (("--evaluation", args.evaluation), ("--inference", args.inference)):
        if path is not None and not path.is_file():
            raise CLIError(f"{option} {path}: file not found")
    if args.training is not None and not (args.training / "metrics.jsonl").is_file():
        raise CLIError(f"--training {args.training}: no metrics.jsonl in that folder")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    sections = [["ehpc run summary (energies in eV)"]]
    if args.training is not None:
        plot_learning_curve(args.training / "metrics.jsonl", args.out_dir / "learning_curve.png",
                            title=str(args.training))
        sections.append(training_lines(args.training))
    if args.evaluation is not None:
        sections.append(evaluation_lines(args.evaluation))
    if args.inference is not None:
        results = read_results(args.inference)
        sections.append(inference_lines(results))
        if len(results.eigenvalues) and math.isfinite(results.fermi_level):
            plots.density_of_states(np.asarray(results.eigenvalues), results.fermi_level,
                                    args.out_dir / "dos.png",
                                    title=f"{results.name}: {len(results.eigenvalues)} states near E_F")
    missing = [o for o, v in (("training", args.training), ("evaluation", args.evaluation),
                              ("inference", args.inference)) if v is None]
    if missing:
        sections.append([f"Not given: {', '.join(missing)}"])
    text = "\n\n".join("\n".join(lines) for lines in sections) + "\n"
    write_atomic(args.summary or args.out_dir / "summary.txt", text)
    print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
