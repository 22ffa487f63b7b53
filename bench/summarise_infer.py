"""Tables and scaling exponents from ``bench_infer.py`` JSON results (Markdown on stdout).

For every material and rank count: the slowest rank's seconds per stage, the job's wall
time and the largest per-rank peak memory at each size; then the exponent b of
``t ∝ N^b`` per stage, a least-squares fit of log t against log N over the sizes
measured (the later record wins when a size was run twice).

    python bench/summarise_infer.py bench/results/bench_infer_si_sweep.json \\
        bench/results/bench_infer_graphene.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

STAGES = ("partition", "halo", "predict", "overlap", "assemble", "fermi", "solve", "write")
#: stages shorter than this (seconds) at every size get no exponent (timer noise)
MIN_SECONDS = 0.05


def latest_records(paths: list[Path]) -> dict[tuple, dict]:
    """(material, n_ranks, overlap_tol, n_atoms) -> the last successful record."""
    records = {}
    for path in paths:
        for record in json.loads(path.read_text()):
            if record.get("returncode") != 0:
                continue
            command = record["command"]
            tol = command[command.index("--overlap-tol") + 1]
            records[(record["material"], record["n_ranks"], tol, record["n_atoms"])] = record
    return records


def exponent(sizes: list[int], seconds: list[float]) -> float:
    if len(sizes) < 2 or max(seconds) < MIN_SECONDS:
        return math.nan
    slope, _ = np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-6)), 1)
    return float(slope)


def fmt(b: float) -> str:
    return "–" if math.isnan(b) else f"{b:.2f}"


def table(records: dict, material: str, n_ranks: int, tol: str) -> list[str]:
    rows = sorted((k[3], r) for k, r in records.items() if k[:3] == (material, n_ranks, tol))
    if not rows:
        return []
    sizes = [n for n, _ in rows]
    head = f"### {material}, P = {n_ranks}, overlap tol {tol}"
    lines = [head, "", "| stage | " + " | ".join(f"{n} atoms" for n in sizes) + " | exponent |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for stage in STAGES:
        seconds = [max(r["seconds"][stage]) for _, r in rows]
        b = exponent(sizes, seconds)
        lines.append(f"| {stage} | " + " | ".join(f"{t:.2f}" for t in seconds) + f" | {fmt(b)} |")
    walls = [r["wall_seconds"] for _, r in rows]
    lines.append("| **job wall** | " + " | ".join(f"**{t:.1f}**" for t in walls)
                 + f" | {fmt(exponent(sizes, walls))} |")
    peaks = [max(max(v) for v in r["peak_bytes"].values()) / 2**30 for _, r in rows]
    lines.append("| peak RSS per rank (GiB) | " + " | ".join(f"{p:.2f}" for p in peaks)
                 + f" | {fmt(exponent(sizes, peaks))} |")
    factorizations = [r.get("factorizations", 0) for _, r in rows]
    lines.append("| factorisations (E_F) | " + " | ".join(str(f) for f in factorizations) + " | |")
    if all(factorizations):
        per = [max(r["seconds"]["fermi"]) / f for (_, r), f in zip(rows, factorizations)]
        lines.append("| fermi s per factorisation | " + " | ".join(f"{t:.2f}" for t in per)
                     + f" | {fmt(exponent(sizes, per))} |")
    orbitals = [r.get("n_orbitals", "") for _, r in rows]
    lines.append("| orbitals | " + " | ".join(str(o) for o in orbitals) + " | |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+")
    args = parser.parse_args(argv)
    records = latest_records(args.json)
    keys = sorted({k[:3] for k in records})
    for material, n_ranks, tol in keys:
        print("\n".join(table(records, material, n_ranks, tol)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
