"""What SLEPc's convergence tolerance costs and changes in ehpc-infer's solve (issue 13).

Runs ``bench/crystal_table.py`` (``ehpc-infer`` on the DFT blocks of a perfect crystal,
tabulated from one primitive-cell label) once per ``-eps_tol`` on the same supercell, with
PETSc's ``-log_view`` on, and records per run: E_F, HOMO, LUMO, the eigenvalues and
residuals of the states near E_F, the triangular solves (``MatSolve``) and their seconds,
the numerical factorisations, the Krylov-Schur seconds (``EPSSolve``), per-stage seconds
and the shifts against the first (tightest) tolerance.  Records are written atomically
after every run to ``--json``.

Example:
    OMP_NUM_THREADS=2 python bench/eps_tol_sweep.py \
        --table bench/data/table/labels/Si_perfect.h5 --supercell Si:diamond:5.43:4x4x4 \
        --tols 1e-8 1e-6 1e-5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_mumps import git_commit  # noqa: E402
from overlap_tol_sweep import add_shifts  # noqa: E402

from ehpc.cli import write_atomic  # noqa: E402

EVENT = re.compile(r"^(MatSolve|MatMult|MatCholFctrNum|EPSSetUp|EPSSolve|BVOrthogonalize)\s+(\d+)"
                   r"\s+\S+\s+(\S+)", re.MULTILINE)


def log_events(text: str) -> dict:
    """{event: (count, seconds)} of the -log_view events this benchmark reads."""
    return {name: (int(count), float(seconds)) for name, count, seconds in EVENT.findall(text)}


def run_one(args, tol: float, tmp: Path) -> dict:
    """One crystal_table run at ``-eps_tol tol``; the record for the JSON file."""
    from ehpc.io.results import RESULTS, read_results

    out, log = tmp / f"run_{tol:g}.h5", tmp / f"log_{tol:g}.txt"
    cmd = ["mpirun", "-n", str(args.ranks), sys.executable, str(Path(__file__).parent / "crystal_table.py"),
           "--model", str(args.table), "--supercell", args.supercell, "--rattle", "0",
           "--nev", str(args.nev), "--out", str(out), *args.extra]
    options = f"{os.environ.get('PETSC_OPTIONS', '')} -eps_tol {tol!r} -log_view :{log}".strip()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                          env={**os.environ, "PETSC_OPTIONS": options})
    record = {"eps_tol": tol, "supercell": args.supercell, "command": cmd,
              "petsc_options": options, "wall_seconds": time.perf_counter() - start,
              "returncode": proc.returncode, "load": os.getloadavg(), "commit": git_commit()}
    if proc.returncode != 0:
        record["error"] = (proc.stdout + proc.stderr)[-3000:]
        return record
    res = read_results(out)
    with h5py.File(out, "r") as f:
        residuals = f[RESULTS]["residuals"][()]
    events = log_events(log.read_text())
    record.update(
        n_orbitals=int(res.attrs["n_orbitals"]),
        fermi_level=float(res.fermi_level), homo=float(res.homo), lumo=float(res.lumo),
        gap=float(res.gap), factorizations=int(res.attrs["factorizations"]),
        eigenvalues=[float(e) for e in np.sort(res.eigenvalues)],
        max_residual=float(np.max(residuals)),
        triangular_solves=events.get("MatSolve", (None, None))[0],
        triangular_solve_seconds=events.get("MatSolve", (None, None))[1],
        factorization_seconds=events.get("MatCholFctrNum", (None, None))[1],
        krylov_seconds=events.get("EPSSolve", (None, None))[1],
        events={name: {"count": count, "seconds": seconds} for name, (count, seconds) in events.items()},
        seconds={s: float(max(v)) for s, v in res.timings.items()},
    )
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="primitive-cell label file")
    parser.add_argument("--supercell", required=True, help="as ehpc-infer's --supercell")
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-8, 1e-6])
    parser.add_argument("--nev", type=int, default=40)
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, default=Path("bench/results/eps_tol_si_dzvp.json"))
    parser.add_argument("extra", nargs="*", help="more ehpc-infer arguments (after --)")
    args = parser.parse_args(argv)
    if not args.table.is_file():
        parser.error(f"--table {args.table}: no such label file")
    records = json.loads(args.json.read_text()) if args.json.is_file() else []
    with tempfile.TemporaryDirectory(prefix="eps_tol_") as tmp:
        reference = None
        for tol in args.tols:
            record = run_one(args, tol, Path(tmp))
            reference = reference or record
            add_shifts(record, reference)
            records.append(record)
            write_atomic(args.json, json.dumps(records, indent=1))
            print(json.dumps({k: v for k, v in record.items()
                              if k not in ("command", "eigenvalues", "seconds", "petsc_options")}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
