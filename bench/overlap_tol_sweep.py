"""How ehpc-infer's overlap drop tolerance moves E_F and the states near it (issue 13 §2).

Runs ``mpirun -n 1 ehpc-infer`` on one rattled cubic diamond-Si supercell once per
``--overlap-tol`` and records, per run: E_F, HOMO, LUMO, gap, the eigenvalues near E_F,
the nonzeros of H - σS (from the fermi log line), factorisations, per-stage seconds, and
the shifts of E_F and of the states near E_F against the first (tightest) tolerance.
Records are written (atomically, after every run) to ``--json``.

Example:
    OMP_NUM_THREADS=2 python bench/overlap_tol_sweep.py --model bench/data/si_dzvp_model.pt \
        --size 3 --tols 1e-10 1e-8 1e-6 1e-4 1e-3 1e-2
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ehpc.cli import write_atomic

LATTICE_CONSTANT = 5.43  # Å, silicon
NONZEROS = re.compile(r"\((\d+) orbitals, (\d+) nonzeros\)")


def run_one(args, tol: float, out: Path) -> dict:
    """One ehpc-infer run at overlap tolerance ``tol``; the record for the JSON file."""
    from ehpc.io.results import read_results

    size = args.size
    cmd = ["mpirun", "-n", "1", shutil.which("ehpc-infer") or "ehpc-infer",
           "--model", str(args.model),
           "--supercell", f"Si:diamond:{LATTICE_CONSTANT}:{size}x{size}x{size}",
           "--rattle", str(args.rattle), "--seed", "0", "--nev", str(args.nev),
           "--overlap-tol", repr(tol), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    record = {"overlap_tol": tol, "n_atoms": 8 * size**3, "command": cmd,
              "wall_seconds": time.perf_counter() - start, "returncode": proc.returncode}
    if proc.returncode != 0:
        record["error"] = (proc.stdout + proc.stderr)[-3000:]
        return record
    found = NONZEROS.search(proc.stdout + proc.stderr)
    res = read_results(out)
    record.update(
        n_orbitals=int(res.attrs["n_orbitals"]),
        nonzeros=int(found.group(2)) if found else None,
        fermi_level=float(res.fermi_level), homo=float(res.homo), lumo=float(res.lumo),
        gap=float(res.gap), factorizations=int(res.attrs["factorizations"]),
        eigenvalues=[float(e) for e in np.sort(res.eigenvalues)],
        seconds={s: float(max(v)) for s, v in res.timings.items()},
    )
    return record


def add_shifts(record: dict, reference: dict) -> None:
    """Shifts against the reference run, meV. The states near E_F are matched by their
    place relative to the HOMO: the windows of two runs need not start at the same state."""
    if "eigenvalues" not in record or "eigenvalues" not in reference:
        return
    mine, ref = np.array(record["eigenvalues"]), np.array(reference["eigenvalues"])
    offset = int(np.argmin(np.abs(mine - record["homo"]))) - int(np.argmin(np.abs(ref - reference["homo"])))
    first, last = max(0, -offset), min(len(ref), len(mine) - offset)
    shifts = mine[first + offset : last + offset] - ref[first:last]  # [n_matched]
    record["n_matched_states"] = int(len(shifts))
    record["max_abs_shift_meV"] = float(1e3 * np.abs(shifts).max())
    for key in ("fermi_level", "homo", "lumo", "gap"):
        record[f"d_{key}_meV"] = 1e3 * (record[key] - reference[key])


def reshift(path: Path) -> None:
    """Recompute every record's shifts against the tightest tolerance run of its size."""
    records = json.loads(path.read_text())
    for record in records:
        same = [r for r in records if r["n_atoms"] == record["n_atoms"] and "eigenvalues" in r]
        if same and "eigenvalues" in record:
            add_shifts(record, min(same, key=lambda r: r["overlap_tol"]))
    write_atomic(path, json.dumps(records, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="trained HamiltonianModel file")
    parser.add_argument("--size", type=int, default=3, help="cubic cells per side")
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-10, 1e-8, 1e-6, 1e-4, 1e-3])
    parser.add_argument("--nev", type=int, default=20)
    parser.add_argument("--rattle", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, default=Path("bench/results/overlap_tol_si_dzvp.json"))
    parser.add_argument("--reshift", action="store_true",
                        help="only recompute the shifts of the records in --json")
    args = parser.parse_args(argv)
    if args.reshift:
        reshift(args.json)
        return 0
    if args.model is None or not args.model.is_file():
        parser.error(f"--model {args.model}: no such model file")
    records = json.loads(args.json.read_text()) if args.json.is_file() else []
    with tempfile.TemporaryDirectory(prefix="overlap_tol_") as tmp:
        reference = None
        for tol in args.tols:
            record = run_one(args, tol, Path(tmp) / f"si_{args.size}_{tol:g}.h5")
            reference = reference or record
            add_shifts(record, reference)
            records.append(record)
            write_atomic(args.json, json.dumps(records, indent=1))
            print(json.dumps({k: v for k, v in record.items()
                              if k not in ("command", "eigenvalues", "seconds")}),
                  f"fermi {record.get('seconds', {}).get('fermi', float('nan')):.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
