"""MUMPS settings of the counting LDLᵀ factorisation of H - σS, on real faithful-basis matrices.

A rattled cubic diamond-Si supercell (8 n^3 atoms) in gth-dzvp-molopt-sr (13 orbitals per
atom) is assembled once exactly as ``ehpc-infer`` assembles it (``run_inference`` with
``solve=False``): H is the exact kinetic operator on the 9 Å pair pattern of the default
model (a physical, smoothly decaying operator), S the exact overlap at the default
tolerance.  Both are stored as PETSc binary files under ``--workdir`` and reused.

Then every MUMPS setting runs in a fresh ``mpirun -n P`` process (``--bind-to none``, so
P = 1 with two BLAS threads really uses both cores) through
:class:`ehpc.infer.fermi.InertiaCounter`, the object that counts states for the E_F
search, with the setting given as ``-fermi_mat_mumps_*`` options.  The worker times two
factorisations at the same σ: the first includes MUMPS' analysis (ordering, symbolic
factorisation), the second is the numerical factorisation alone (what every later σ
of a search costs).  It records the inertia, MUMPS' INFOG/RINFOG figures (factor
entries, memory, flops, ordering used) and the peak resident memory of each rank.  σ is
the median of H_ii / S_ii (strictly inside the spectrum); below ``--dense-max`` orbitals
the count is checked against dense ``scipy.linalg.eigh``.  Debian's MUMPS 5.5 uses no
OpenMP: threads act only in OpenBLAS (``OMP_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS``).

Examples:
    python bench/bench_mumps.py --repeat 2                         # 64 atoms, 832 orbitals
    python bench/bench_mumps.py --repeat 3 --json bench/results/bench_mumps_si_dzvp.json
    python bench/bench_mumps.py --repeat 5 --settings auto metis blr2_1e-5 --layouts 1x2 2x1
    python bench/bench_mumps.py --repeat 5 --below-eigenvalue 1e-5 --settings auto blr2_1e-3
    python bench/bench_mumps.py --table bench/results/bench_mumps_si_dzvp.json   # Markdown

``--below-eigenvalue DELTA`` puts σ DELTA eV below the first eigenvalue above the default σ
(one full-rank shift-and-invert solve finds it): there a lossy factorisation (block
low-rank, ICNTL(35)) shows whether it still counts exactly.  A setting measured again in a
later call is merged into its row (seconds: median over all its processes).

A layout ``PxT`` is P MPI ranks with T threads each.  Results of all runs of one call go to
``--json`` (records of other sizes already in the file are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ehpc.integrals import INTEGRAL_TOLERANCE

LATTICE_CONSTANT = 5.43  # Å, silicon
BASIS = "gth-dzvp-molopt-sr"
PREFIX = "fermi_"  # the options prefix of ehpc.infer.fermi.InertiaCounter

#: named settings: MUMPS options (without the ``-fermi_mat_mumps_`` prefix) and the
#: smallest rank count they make sense at
SETTINGS: dict[str, dict[str, str]] = {
    "auto": {},  # MUMPS' own choice (ICNTL(7)=7), what ehpc-infer runs today
    "amd": {"icntl_7": "0"},
    "amf": {"icntl_7": "2"},
    "scotch": {"icntl_7": "3"},
    "pord": {"icntl_7": "4"},
    "metis": {"icntl_7": "5"},
    "qamd": {"icntl_7": "6"},
    "ptscotch": {"icntl_28": "2", "icntl_29": "1"},
    "parmetis": {"icntl_28": "2", "icntl_29": "2"},
    "mem20": {"icntl_14": "20"},
    "mem50": {"icntl_14": "50"},
    "blr1_1e-5": {"icntl_35": "1", "cntl_7": "1e-5"},
    "blr2_1e-8": {"icntl_35": "2", "cntl_7": "1e-8"},
    "blr2_1e-5": {"icntl_35": "2", "cntl_7": "1e-5"},
    "blr2_1e-3": {"icntl_35": "2", "cntl_7": "1e-3"},
}
PARALLEL_ONLY = {"ptscotch", "parmetis"}  # ICNTL(28)=2 needs more than one rank

#: INFOG entries recorded (MUMPS 5.5 user guide, section 6)
INFOG = {
    3: "factor_entries_estimated",  # negative: millions
    7: "ordering_used",
    9: "factor_entries",  # real entries in the factors; negative: millions
    10: "factor_int_entries",
    12: "negative_pivots",
    16: "mem_estimated_max_mb",  # in-core, max over ranks, after analysis
    17: "mem_estimated_sum_mb",
    18: "mem_allocated_max_mb",  # allocated during factorisation
    19: "mem_allocated_sum_mb",
    21: "mem_used_max_mb",  # effectively used during factorisation
    22: "mem_used_sum_mb",
    28: "null_pivots",
    29: "factor_entries_effective",  # INFOG(29); the same with and without BLR in our runs
    32: "ordering_kind",  # 1 sequential, 2 parallel
}
RINFOG = {1: "flops_analysis_estimate", 3: "flops_elimination", 14: "flops_blr_elimination"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="n: 8 n^3 atoms (2: 64, 3: 216)")
    parser.add_argument("--cutoff", type=float, default=9.0, help="Å, pair range of H")
    parser.add_argument("--rattle", type=float, default=0.05, help="Å")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--layouts", nargs="+", default=["1x2", "2x1"],
                        help="PxT: P ranks with T threads each")
    parser.add_argument("--repeats", type=int, default=1,
                        help="fresh processes per setting (seconds: their median)")
    parser.add_argument("--overlap-tol", type=float, default=INTEGRAL_TOLERANCE,
                        help="overlap blocks below this norm are dropped (ehpc-infer's default)")
    parser.add_argument("--sigma", type=float, help="eV (default: median of H_ii / S_ii)")
    parser.add_argument("--below-eigenvalue", type=float, metavar="DELTA",
                        help="eV: put σ this far below the first eigenvalue above the default σ "
                        "(found by one full-rank shift-and-invert solve): a hard case for BLR")
    parser.add_argument("--dense-max", type=int, default=3000,
                        help="check the count with dense eigh up to this many orbitals")
    parser.add_argument("--workdir", type=Path, default=Path("bench/data/mumps_work"))
    parser.add_argument("--json", type=Path, default=Path("bench/results/bench_mumps.json"))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
    parser.add_argument("--table", type=Path, help="print the Markdown tables of this JSON and stop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one setting, one process
    parser.add_argument("--assemble", action="store_true", help=argparse.SUPPRESS)  # internal
    return parser


def structure(repeat: int, rattle: float, seed: int):
    from ehpc.cli.infer import parse_supercell
    from ehpc.sources import rattle as rattle_atoms

    atoms = parse_supercell(f"Si:diamond:{LATTICE_CONSTANT}:{repeat}x{repeat}x{repeat}")
    return rattle_atoms(atoms, rattle, seed=seed)


def matrix_dir(args) -> Path:
    return args.workdir / (f"si_{args.repeat}_{args.cutoff:g}A_r{args.rattle:g}_s{args.seed}"
                           f"_tol{args.overlap_tol:g}")


def common_args(args) -> list[str]:
    return ["--repeat", str(args.repeat), "--cutoff", str(args.cutoff), "--rattle",
            str(args.rattle), "--seed", str(args.seed), "--workdir", str(args.workdir),
            "--dense-max", str(args.dense_max), "--overlap-tol", str(args.overlap_tol)]


def assemble_once(args) -> dict:
    """The metadata of the stored H and S, assembling them first (in a child process, so
    this driver never initialises MPI and can start ``mpirun`` cleanly) if needed."""
    meta_file = matrix_dir(args) / "meta.json"
    if not meta_file.exists():
        subprocess.run([sys.executable, __file__, *common_args(args), "--assemble"], check=True)
    return json.loads(meta_file.read_text())


def assemble(args) -> int:
    """H and S as ehpc-infer assembles them (one rank), saved as PETSc binary; metadata."""
    folder = matrix_dir(args)
    meta_file = folder / "meta.json"
    from petsc4py import PETSc

    from ehpc.atomic import replacing
    from ehpc.basis import Basis
    from ehpc.infer.pipeline import InferenceOptions, run_inference
    from ehpc.integrals import IntegralModel

    atoms = structure(args.repeat, args.rattle, args.seed)
    model = IntegralModel(Basis(BASIS), "kinetic", cutoff=args.cutoff)
    start = time.perf_counter()
    options = InferenceOptions(solve=False, overlap_tol=args.overlap_tol)
    result = run_inference(atoms, model, options, comm=PETSc.COMM_SELF)
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    for name, mat in (("H", result.hamiltonian), ("S", result.overlap)):
        with replacing(folder / f"{name}.bin") as tmp:
            viewer = PETSc.Viewer().createBinary(str(tmp), "w", comm=PETSc.COMM_SELF)
            mat.view(viewer)
            viewer.destroy()
        for info in folder.glob(f".{name}.bin.*.info"):  # PETSc's side file of the temporary
            info.unlink()
    h_diag = result.hamiltonian.getDiagonal().getArray()
    s_diag = result.overlap.getDiagonal().getArray()
    meta = {
        "n_atoms": len(atoms),
        "n_orbitals": int(result.hamiltonian.getSize()[0]),
        "nonzeros": int(result.hamiltonian.getInfo()["nz_used"]),
        "atom_pairs": int(len(result.pairs)),
        "median_diagonal_ratio": float(statistics.median(h_diag / s_diag)),
        "assemble_seconds": seconds,
    }
    if meta["n_orbitals"] <= args.dense_max:
        meta["dense_eigenvalues"] = dense_eigenvalues(result.hamiltonian, result.overlap)
    with replacing(meta_file) as tmp:
        tmp.write_text(json.dumps(meta))
    return 0


def dense_eigenvalues(hamiltonian, overlap) -> list[float]:
    """All generalised eigenvalues of (H, S) by dense LAPACK: the reference count."""
    import numpy as np
    import scipy.linalg

    def dense(mat):
        indptr, indices, values = mat.getValuesCSR()
        n = mat.getSize()[0]
        out = np.zeros((n, n))  # [n, n]
        rows = np.repeat(np.arange(n), np.diff(indptr))
        out[rows, indices] = values
        return out

    h, s = dense(hamiltonian), dense(overlap)
    return scipy.linalg.eigh(0.5 * (h + h.T), 0.5 * (s + s.T), eigvals_only=True).tolist()


def eigenvalue_above(args, sigma: float) -> float:
    """The smallest eigenvalue of (H, S) above σ: full-rank shift-and-invert, one process."""
    out = matrix_dir(args) / f"above_{sigma:.8g}.json"
    if not out.exists():
        setting = json.dumps({"options": {}, "sigma": sigma, "out": str(out), "nearest": True})
        subprocess.run(["mpirun", "--bind-to", "none", "-n", "1", sys.executable, __file__,
                        *common_args(args), "--worker", setting], check=True,
                       env=dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2"))
    values = json.loads(out.read_text())
    return min(v for v in values if v > sigma)


def nearest_eigenvalues(mats, sigma: float, out: str) -> int:
    from ehpc.infer.solve import ShiftInvert

    shift = ShiftInvert(*mats, sigma)
    values, *_ = shift.solve(6)
    shift.destroy()
    Path(out).write_text(json.dumps([float(v) for v in values]))
    return 0


def worker(args) -> int:
    """One setting in this (fresh) process: two factorisations at σ, one JSON file."""
    import petsc4py

    setting = json.loads(args.worker)
    options = [f"-{PREFIX}mat_mumps_{k}" if i == 0 else v
               for k, v in setting["options"].items() for i in range(2)]
    petsc4py.init([sys.argv[0], *options])
    from mpi4py import MPI
    from petsc4py import PETSc

    from ehpc.infer.fermi import FermiError, InertiaCounter

    folder = matrix_dir(args)
    comm = PETSc.COMM_WORLD
    mats = []
    for name in ("H", "S"):
        viewer = PETSc.Viewer().createBinary(str(folder / f"{name}.bin"), "r", comm=comm)
        mat = PETSc.Mat().create(comm)
        mat.setType(PETSc.Mat.Type.AIJ)
        mat.load(viewer)
        viewer.destroy()
        mats.append(mat)
    if setting.get("nearest"):
        return nearest_eigenvalues(mats, setting["sigma"], setting["out"])
    counter = InertiaCounter(*mats)
    mpi = comm.tompi4py()
    record = {"seconds": [], "inertia": []}
    for _ in range(2):  # first: analysis + factorisation; second: factorisation only
        mpi.Barrier()
        start = time.perf_counter()
        try:
            record["inertia"].append(list(counter.inertia(setting["sigma"])))
        except FermiError as err:  # MUMPS' own status says why (user guide, section 8)
            factor = counter.ksp.getPC().getFactorMatrix()
            codes = [factor.getMumpsInfog(1), factor.getMumpsInfog(2)]
            print(f"Error: {err}; MUMPS INFOG(1), INFOG(2) = {codes}", file=sys.stderr)
            return 1
        record["seconds"].append(mpi.allreduce(time.perf_counter() - start, op=MPI.MAX))
    factor = counter.ksp.getPC().getFactorMatrix()
    record["icntl"] = {k: factor.getMumpsIcntl(k) for k in (7, 12, 13, 14, 24, 28, 29, 35)}
    record["cntl_7"] = factor.getMumpsCntl(7)
    record["infog"] = {name: factor.getMumpsInfog(k) for k, name in INFOG.items()}
    record["rinfog"] = {name: factor.getMumpsRinfog(k) for k, name in RINFOG.items()}
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peaks = mpi.gather(peak_kib)  # collective: every rank calls it
    record["peak_rss_mib"] = [x / 1024 for x in peaks] if mpi.rank == 0 else None
    counter.destroy()
    if mpi.rank == 0:
        Path(setting["out"]).write_text(json.dumps(record))
    return 0


def run_setting(args, name: str, ranks: int, threads: int, sigma: float, out: Path) -> dict:
    """One fresh ``mpirun`` of the worker; the record of the run."""
    setting = {"options": SETTINGS[name], "sigma": sigma, "out": str(out)}
    cmd = ["mpirun", "--bind-to", "none", "-n", str(ranks), sys.executable, __file__,
           *common_args(args), "--worker", json.dumps(setting)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:g} s"}
    record = {"wall_seconds": time.perf_counter() - start, "returncode": proc.returncode}
    if proc.returncode != 0 or not out.exists():
        record["error"] = error_lines(proc.stderr or proc.stdout)
        return record
    record.update(json.loads(out.read_text()))
    return record


def error_lines(text: str) -> str:
    """The lines of a failed worker's output that say why (PETSc, MUMPS, PORD)."""
    keep = [ln for ln in text.splitlines()
            if any(k in ln for k in ("PETSC ERROR: Error", "MUMPS", "INFOG", "Error in", "stages",
                                     "Error:", "error", "not available"))
            and "mpirun" not in ln]
    return "\n".join(dict.fromkeys(keep))[-3000:] or text[-3000:]


def load_average() -> list[float]:
    return list(os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args)
    if args.assemble:
        return assemble(args)
    if args.table:
        print(tables(json.loads(args.table.read_text())))
        return 0
    meta = assemble_once(args)
    sigma = meta["median_diagonal_ratio"] if args.sigma is None else args.sigma
    if args.below_eigenvalue is not None:
        above = eigenvalue_above(args, sigma)
        args.sigma, sigma = above - args.below_eigenvalue, above - args.below_eigenvalue
        meta["eigenvalue_above_eV"] = above
    reference = None
    if "dense_eigenvalues" in meta:
        reference = sum(1 for e in meta["dense_eigenvalues"] if e < sigma)
    print(f"{meta['n_atoms']} atoms, {meta['n_orbitals']} orbitals, {meta['nonzeros']} nonzeros, "
          f"sigma {sigma:.4f} eV, dense count {reference}", flush=True)
    runs = []
    for layout in args.layouts:
        ranks, threads = (int(x) for x in layout.lower().split("x"))
        for name in args.settings:
            if name in PARALLEL_ONLY and ranks < 2:
                continue
            repeats = []
            for k in range(args.repeats):
                load = load_average()
                rec = run_setting(args, name, ranks, threads, sigma, matrix_dir(args) / "out.json")
                rec["load_before"] = load
                repeats.append(rec)
            runs.append(summarise(name, ranks, threads, repeats, reference))
            print(line(runs[-1]), flush=True)
    full_rank = {r["inertia"] for r in runs if "error" not in r and not r["blr"]}
    record = {
        "case": (f"si_diamond_{args.repeat}x{args.repeat}x{args.repeat}_tol{args.overlap_tol:g}"
                 + ("" if args.sigma is None else f"_sigma{args.sigma:.8g}")),
        "basis": BASIS, "h_operator": "kinetic", "h_cutoff_A": args.cutoff,
        "rattle_A": args.rattle, "seed": args.seed, "overlap_tol": args.overlap_tol,
        "sigma_eV": sigma,
        "dense_count_below_sigma": reference,
        "full_rank_inertias": sorted(full_rank),
        **{k: v for k, v in meta.items() if k != "dense_eigenvalues"},
        "commit": git_commit(), "host": os.uname().nodename, "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_after": load_average(),
        "runs": runs,
    }
    save(args.json, record)
    return 0


def summarise(name: str, ranks: int, threads: int, repeats: list[dict], reference) -> dict:
    """One table row: median seconds over the fresh processes, the rest from the first."""
    ok = [r for r in repeats if "error" not in r]
    row = {"setting": name, "options": SETTINGS[name], "ranks": ranks, "threads": threads,
           "blr": "icntl_35" in SETTINGS[name], "load_before": repeats[0]["load_before"]}
    if not ok:
        row["error"] = repeats[0].get("error", "")
        return row
    first = ok[0]
    inertias = {tuple(i) for r in ok for i in r["inertia"]}
    row.update(
        first_seconds=statistics.median(r["seconds"][0] for r in ok),
        refactor_seconds=statistics.median(r["seconds"][1] for r in ok),
        all_seconds=[r["seconds"] for r in ok],
        inertia=tuple(first["inertia"][0]),
        inertia_stable=len(inertias) == 1,
        count_matches_dense=None if reference is None else first["inertia"][0][0] == reference,
        icntl=first["icntl"], cntl_7=first["cntl_7"], infog=first["infog"],
        rinfog=first["rinfog"], peak_rss_mib=first["peak_rss_mib"],
        wall_seconds=[r["wall_seconds"] for r in ok],
    )
    return row


def line(row: dict) -> str:
    head = f"{row['setting']:>10s} P={row['ranks']} T={row['threads']}"
    if "error" in row:
        return f"{head}: ERROR {row['error'].strip().splitlines()[-1] if row['error'] else ''}"
    g = row["infog"]
    return (f"{head}: first {row['first_seconds']:7.2f} s, refactor {row['refactor_seconds']:7.2f} s,"
            f" inertia {row['inertia']}, ordering {g['ordering_used']}/{g['ordering_kind']}, "
            f"factor {mega(g['factor_entries'])} M (eff {mega(g['factor_entries_effective'])} M), "
            f"mem sum {g['mem_used_sum_mb']} MB, rss {max(row['peak_rss_mib']):.0f} MiB")


def tables(records: list[dict]) -> str:
    """One Markdown table per case: seconds, inertia, factor size and memory per setting."""
    out = []
    for rec in records:
        out += [f"**{rec['case']}**: {rec['n_atoms']} atoms, {rec['n_orbitals']} orbitals, "
                f"{rec['nonzeros']:,} nonzeros, σ = {rec['sigma_eV']:.6f} eV"
                + (f" (first eigenvalue above: {rec['eigenvalue_above_eV']:.6f} eV)"
                   if "eigenvalue_above_eV" in rec else "")
                + (f", dense count {rec['dense_count_below_sigma']}"
                   if rec.get("dense_count_below_sigma") is not None else ""), "",
                "| setting | P×T | 1st LDLᵀ (s) | refactor (s) | runs | negative | ordering used "
                "| factor entries (M) | MUMPS mem, sum (MB) | peak RSS, max rank (MiB) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for row in sorted(rec["runs"], key=lambda r: (r["ranks"], r.get("first_seconds", 1e9))):
            head = f"| {row['setting']} | {row['ranks']}×{row['threads']} |"
            if "error" in row:
                why = row["error"].strip().splitlines()[-1][-90:].replace("|", "/")
                out.append(f"{head} failed: {why} | | | | | | | |")
                continue
            g = row["infog"]
            out.append(f"{head} {row['first_seconds']:.2f} | {row['refactor_seconds']:.2f} | "
                       f"{len(row['all_seconds'])} | {row['inertia'][0]} | {g['ordering_used']} | "
                       f"{mega(g['factor_entries']):.1f} | {g['mem_used_sum_mb']} | "
                       f"{max(row['peak_rss_mib']):.0f} |")
        out.append("")
    return "\n".join(out)


def mega(infog_entries: int) -> float:
    """MUMPS' entry counts: negative means millions."""
    return -infog_entries if infog_entries < 0 else infog_entries / 1e6


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def merge_rows(old: dict | None, new: dict) -> dict:
    """A setting measured again in a later call: seconds are the median over all processes."""
    if old is None or "error" in old or "error" in new:
        return new
    merged = dict(new)
    merged["all_seconds"] = old["all_seconds"] + new["all_seconds"]
    merged["wall_seconds"] = old["wall_seconds"] + new["wall_seconds"]
    merged["first_seconds"] = statistics.median(x[0] for x in merged["all_seconds"])
    merged["refactor_seconds"] = statistics.median(x[1] for x in merged["all_seconds"])
    merged["inertia_stable"] = (old["inertia_stable"] and new["inertia_stable"]
                                and list(old["inertia"]) == list(new["inertia"]))
    merged["load_before"] = [old["load_before"], new["load_before"]]
    return merged


def save(path: Path, record: dict) -> None:
    """Add ``record`` to the JSON list at ``path``, replacing one of the same case."""
    from ehpc.atomic import replacing

    records = json.loads(path.read_text()) if path.exists() else []
    old = [r for r in records if r.get("case") == record["case"]]
    if old:  # rows of settings not rerun now are kept
        key = lambda row: (row["setting"], row["ranks"], row["threads"])  # noqa: E731
        previous = {key(row): row for row in old[0]["runs"]}
        runs = [merge_rows(previous.pop(key(row), None), row) for row in record["runs"]]
        record["runs"] = list(previous.values()) + runs
        record["full_rank_inertias"] = sorted(
            {tuple(r["inertia"]) for r in record["runs"] if "error" not in r and not r["blr"]})
    records = [r for r in records if r.get("case") != record["case"]] + [record]
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(records, indent=1, default=list) + "\n")


if __name__ == "__main__":
    sys.exit(main())
