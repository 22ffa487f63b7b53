"""Print the table of ``bench/transfer_scores.sh``: one row per model and scored cell.

    python bench/summarise_transfer.py OUT

Reads ``OUT/<model>/<cell>/metrics.json`` (``ehpc-evaluate``). Band errors are within
±2 eV of E_F against the true SCF (meV): the label floor (DFT cut at the cutoff), the model
against the cut DFT, and the total; HOMO, LUMO and gap errors are absolute, of the total.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODEL_ORDER = ("nowindow", "window")  # then the band-energy fine-tunes, bw<weight>


def row(model: str, metrics_file: Path) -> str:
    report = json.loads(metrics_file.read_text())
    metrics = report["metrics"]
    truth = metrics.get("bands_vs_scf")
    cells = [model, metrics_file.parent.name, f"{metrics['h_mae_meV']:.2f}"]
    if truth is None:
        cells += ["(no SCF truth)"] * 4
    else:
        floor, fit, total = truth["floor"], truth["model"], truth["total"]
        cells += [f"{floor['mae_meV']:.2f} / {floor['max_meV']:.2f}",
                  f"{fit['mae_meV']:.1f}",
                  f"{total['mae_meV']:.1f} / {total['max_meV']:.0f}",
                  " / ".join(f"{total[f'{level}_abs_error_meV']:.1f}"
                             for level in ("homo", "lumo", "gap"))]
    bands = report.get("bands")
    cells.append("" if bands is None else
                 f"{bands['total_mae_window_eV'] * 1e3:.1f}; {bands['gap_model_eV']:.3f} "
                 f"(SCF {bands['gap_dft_eV']:.3f})")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip())
        return 2
    out = Path(argv[0])
    print("| model | cell | H MAE | floor MAE / max | model vs cut DFT, MAE | total MAE / max "
          "| HOMO / LUMO / gap | band path total MAE; gap (eV) |")
    print("|---|---|---|---|---|---|---|---|")
    fine_tunes = sorted((p.name for p in out.glob("bw*") if p.is_dir()),
                        key=lambda name: float(name[2:]))
    for model in (*MODEL_ORDER, *fine_tunes):
        for metrics_file in sorted((out / model).glob("*/metrics.json")):
            print(row(model, metrics_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
