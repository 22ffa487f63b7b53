"""Accuracy and speed tables from ``accuracy.py`` JSON results (Markdown on stdout).

    python bench/summarise_accuracy.py bench/results/water.json bench/results/silicon.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ehpc.units import EV_TO_MICROHARTREE


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(*names) -> list[str]:
    return [row(*names), row(*["---"] * len(names))]


def run_lines(doc: dict) -> list[str]:
    env, train, model = doc["env"], doc["training"], doc["model"]
    return [
        f"`{env['command']}`",
        "",
        f"commit `{env['commit']}`{' (dirty tree)' if env['dirty'] else ''}, {env['date']}, "
        f"{env['cpu']}, {env['cores']} cores, OMP_NUM_THREADS={env['omp_num_threads']}, "
        f"{env['torch_threads']} torch thread(s)",
        "",
        f"split {doc['sizes']}; model {model['n_layers']} layers, {model['channels']} channels, "
        f"cutoff {model['cutoff']} Å, {model['n_parameters']:,} parameters; trained "
        f"{train['epochs_run']} of {train['epochs_planned']} epochs in {train['seconds']:.0f} s "
        f"(last validation MAE {1e3 * train['last_val_mae_eV']:.1f} meV)",
        "",
    ]


def water(doc: dict) -> list[str]:
    h, orb = doc["h_test"], doc["orbitals_test"]
    title = "### Water" + (f", band-energy loss weight {doc['band_weight']}"
                           if "band_weight" in doc else "")
    lines = [title, "", *run_lines(doc)]
    lines += header("metric (test split)", "value")
    lines += [
        row("structures", h["n_structures"]),
        row("H MAE", f"{1e3 * h['mae_eV']:.1f} meV = {h['mae_uHa']:.0f} μHa"),
        row("H MAE on-site / off-site", f"{1e3 * h['onsite_mae_eV']:.1f} / "
                                        f"{1e3 * h['offsite_mae_eV']:.1f} meV"),
        row("H max error", f"{h['max_abs_eV']:.3f} eV"),
        row("occupied orbital energy MAE", f"{orb['eigenvalue_mae_meV']:.1f} meV = "
                                          f"{orb['eigenvalue_mae_eV'] * EV_TO_MICROHARTREE:.0f} μHa"),
        row(r"occupied orbital similarity \|<c_pred\|S\|c_dft>\|", f"{orb['occupied_cosine']:.5f}"),
    ]
    if "homo_mae_eV" in orb:  # runs before the HOMO / LUMO errors were recorded lack them
        lines += [
            row("HOMO / LUMO / gap MAE", f"{1e3 * orb['homo_mae_eV']:.0f} / "
                f"{1e3 * orb['lumo_mae_eV']:.0f} / {1e3 * orb['gap_mae_eV']:.0f} meV"),
            row("LUMO mean signed error; LUMO below DFT's",
                f"{1e3 * orb['lumo_mean_error_eV']:+.0f} meV; {orb['lumo_below_dft']} of "
                f"{h['n_structures']} molecules"),
        ]
    return lines + [""]


def crystal(doc: dict) -> list[str]:
    test, bands8, atoms = doc["h_test"], doc["bands_test"], doc["training_cell_atoms"]
    smearing = f", smearing {doc['smearing']}" if doc.get("smearing") else ""
    lines = [f"### {doc['system'].capitalize()}", "", f"{doc['level']}{smearing}, band-energy "
             f"loss weight {doc.get('band_weight', 0.0)}", "", *run_lines(doc)]
    lines += header("cell", "atoms", "H MAE (meV)", "on / off-site (meV)")
    lines.append(row(f"held-out {atoms}-atom cells", f"{test['n_structures']} × {atoms}",
                     f"{test['mae_meV']:.1f}",
                     f"{1e3 * test['onsite_mae_eV']:.1f} / {1e3 * test['offsite_mae_eV']:.1f}"))
    for cell in doc["transfer"]:
        h = cell["h"]
        lines.append(row(f"unseen {cell['name']}", cell["n_atoms"], f"{h['mae_meV']:.1f}",
                         f"{1e3 * h['onsite_mae_eV']:.1f} / {1e3 * h['offsite_mae_eV']:.1f}"))
    lines += ["", "Bands within ±2 eV of E_F against the true SCF (meV): floor = DFT cut at the "
              "cutoff vs SCF, model = model vs cut DFT, total = model vs SCF.", ""]
    lines += header("cell", "floor MAE / max", "model MAE / max", "total MAE / max",
                    "total gap error")
    lines.append(row(f"held-out {atoms}-atom cells",
                     *[f"{bands8[k]['mae_meV']:.1f} / {bands8[k]['max_meV']:.1f}"
                       for k in ("floor", "model", "total")],
                     f"{bands8['total']['gap_abs_error_meV']:.1f} (mean abs)"))
    for cell in doc["transfer"]:
        b = cell["bands"]
        lines.append(row(f"unseen {cell['name']} (Γ)",
                         *[f"{b[k]['mae_meV']:.1f} / {b[k]['max_meV']:.1f}"
                           for k in ("floor", "model", "total")],
                         f"{b['total']['gap_meV']:+.1f} (HOMO {b['total']['homo_meV']:+.1f}, "
                         f"LUMO {b['total']['lumo_meV']:+.1f})"))
    lines += ["", *header("cell", "atoms", "model predict (s)", "PySCF Γ SCF (s)",
                          "SCF threads", "speed-up")]
    for cell in doc["transfer"]:
        lines.append(row(cell["name"], cell["n_atoms"], f"{cell['predict_seconds']:.3f}",
                         f"{cell['scf_seconds']:.0f}", cell.get("scf_omp_threads") or "?",
                         f"{cell['speedup_vs_scf']:,.0f}×"))
    lines += ["", *header("throughput cell", "atoms", "edges", "seconds", "atoms/s", "edges/s")]
    for t in doc["throughput"]:
        lines.append(row(f"{doc['system']} {t['n_atoms']}", t["n_atoms"], f"{t['n_edges']:,}",
                         f"{t['seconds']:.3f}", f"{t['atoms_per_s']:.0f}", f"{t['edges_per_s']:,.0f}"))
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="accuracy.py JSON files")
    args = parser.parse_args(argv)
    for path in args.results:
        doc = json.loads(path.read_text())
        print("\n".join(water(doc) if doc["system"] == "water" else crystal(doc)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
