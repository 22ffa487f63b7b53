"""A factorisation-free Fermi level for ehpc-infer's matrices (issue 13, "the aim beyond the wall").

For each rattled cubic diamond-Si supercell (8 n^3 atoms, a = 5.43 Å, rattle 0.05 Å, seed 0)
``mpirun -n 1 ehpc-infer`` predicts H with the trained model, builds the exact S, finds E_F
by MUMPS inertia and writes H and S (its "fermi" stage seconds are the factorisation path's
cost).  The same Γ-point H and S are then read back as scipy CSR and E_F is estimated
WITHOUT any factorisation:

* block-Jacobi congruence: ``H~ = B^-1/2 H B^-1/2``, ``S~ = B^-1/2 S B^-1/2`` with B the
  per-atom diagonal blocks of S (S~ has identity diagonal blocks, so plain CG on S~ is
  block-Jacobi preconditioned CG on S; the generalised eigenvalues are unchanged);
* spectral bounds of ``A = S~^-1 H~`` from Lanczos in the S~ inner product;
* stochastic KPM: ``mu_n = r^T T_n(A') r`` for Rademacher r, with A' the spectrum-scaled A.
  ``Tr T_n(A')`` is similarity-invariant, so ``E[mu_n]`` is the Chebyshev moment of the
  generalised spectrum; every application of ``S~^-1`` is a CG solve;
* Jackson kernel, the integrated DOS ``N(E)``, and ``N(E_F) = n_occupied``; the spread of
  the per-vector estimates gives the statistical error.

``--hybrid`` reruns ehpc-infer with ``--fermi-guess`` at the KPM E_F (how many LDLᵀ the
window search then needs); ``--spread`` computes densely the exact per-vector spread of the
count estimator and the condition of S.  ehpc-infer's results file is reused when present.
The reference eigenvalues come from dense ``scipy.linalg.eigh(H, S)`` up to ``--dense-max``
orbitals and from ehpc-infer's window (MUMPS) beyond.  Records go atomically to ``--json``.

Example:
    OMP_NUM_THREADS=1 nice python bench/fermi_free.py --model bench/data/si_dzvp_model.pt \
        --sizes 2 --moments 256 --vectors 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp

from bench_mumps import git_commit  # bench/ is on the path of a bench script
from ehpc.cli import write_atomic

LATTICE_CONSTANT = 5.43  # Å, silicon
#: relative margin added to the Lanczos spectral bounds before scaling into [-1, 1]
BOUND_MARGIN = 0.02


@dataclass
class SolveLog:
    """Counts of the S~^-1 applications (one per column) and of CG iterations."""

    solves: int = 0          # column solves
    block_solves: int = 0    # solves of a block of columns at once
    iterations: int = 0      # CG iterations summed over block solves (one SpMM each)
    column_iterations: int = 0  # CG iterations summed over columns (until each converged)
    max_iterations: int = 0
    seconds: float = 0.0


def block_jacobi_congruence(h, s, nao: np.ndarray):
    """``B^-1/2 H B^-1/2`` and ``B^-1/2 S B^-1/2`` with B the per-atom diagonal blocks of S.

    Args:
        h, s: Γ-point CSR matrices.          # [n_orb, n_orb]
        nao: orbitals per atom.              # [n_atoms]
    """
    start = np.concatenate([[0], np.cumsum(nao)])
    blocks = []
    for a in range(len(nao)):
        block = s[start[a]:start[a + 1], start[a]:start[a + 1]].toarray()  # [nao_a, nao_a]
        w, v = np.linalg.eigh(block)
        blocks.append((v / np.sqrt(w)) @ v.T)  # B_a^-1/2
    root = sp.block_diag(blocks, format="csr")
    return (root @ h @ root).tocsr(), (root @ s @ root).tocsr()


def block_cg(s, b: np.ndarray, rtol: float, log: SolveLog, max_iter: int = 5000) -> np.ndarray:
    """Solve ``s x = b`` for every column of b by CG (column-wise step lengths).

    Every column runs until the slowest has ``|r| <= rtol |b|``; the per-column
    iteration counts to convergence are logged too.
    """
    start = time.perf_counter()
    x = np.zeros_like(b)                                   # [n, k]
    r = b.copy()
    p = r.copy()
    rr = np.einsum("ij,ij->j", r, r)                       # [k]
    target = rtol**2 * np.einsum("ij,ij->j", b, b)
    done_at = np.full(b.shape[1], -1)
    it = 0
    while it < max_iter:
        converged = rr <= target
        done_at[converged & (done_at < 0)] = it
        if converged.all():
            break
        sp_ = s @ p                                        # [n, k]
        alpha = rr / np.maximum(np.einsum("ij,ij->j", p, sp_), 1e-300)
        x += alpha * p
        r -= alpha * sp_
        rr_new = np.einsum("ij,ij->j", r, r)
        p = r + (rr_new / np.maximum(rr, 1e-300)) * p
        rr = rr_new
        it += 1
    done_at[done_at < 0] = it
    log.solves += b.shape[1]
    log.block_solves += 1
    log.iterations += it
    log.column_iterations += int(done_at.sum())
    log.max_iterations = max(log.max_iterations, it)
    log.seconds += time.perf_counter() - start
    return x


def lanczos_bounds(h, s, steps: int, rtol: float, log: SolveLog, seed: int) -> tuple[float, float]:
    """Extreme generalised eigenvalues of (h, s) by Lanczos in the s inner product, widened
    by the last residual bound and ``BOUND_MARGIN`` of the width (safe for Chebyshev)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((h.shape[0], 1))               # [n, 1]
    v /= np.sqrt((v.T @ (s @ v)).item())
    v_prev = np.zeros_like(v)
    alphas, betas, beta = [], [], 0.0
    for _ in range(steps):
        hv = h @ v
        u = block_cg(s, hv, rtol, log)                     # A v with A = s^-1 h
        alpha = (v.T @ hv).item()
        u -= alpha * v + beta * v_prev
        beta = float(np.sqrt(max((u.T @ (s @ u)).item(), 0.0)))
        alphas.append(alpha)
        betas.append(beta)
        if beta == 0.0:
            break
        v_prev, v = v, u / beta
    theta, vecs = sl.eigh_tridiagonal(np.array(alphas), np.array(betas[:-1]))
    residual = np.abs(betas[-1] * vecs[-1, :])             # Ritz residual bounds
    low, high = theta[0] - residual[0], theta[-1] + residual[-1]
    pad = BOUND_MARGIN * (high - low)
    return low - pad, high + pad


def kpm_moments(h, s, center: float, half_width: float, n_moments: int, n_vectors: int,
                rtol: float, log: SolveLog, seed: int) -> np.ndarray:
    """Per-vector Chebyshev moments ``r^T T_n(A') r``, ``A' = (s^-1 h - center) / half_width``.

    Returns:
        moments, one row per random vector.      # [n_vectors, n_moments]
    """
    rng = np.random.default_rng(seed)
    r = rng.choice([-1.0, 1.0], size=(h.shape[0], n_vectors))  # Rademacher  # [n, R]

    def apply(v):
        return (block_cg(s, h @ v, rtol, log) - center * v) / half_width

    mu = np.empty((n_vectors, n_moments))
    v_prev, v = r, apply(r)
    mu[:, 0] = np.einsum("ij,ij->j", r, r)
    mu[:, 1] = np.einsum("ij,ij->j", r, v)
    for n in range(2, n_moments):
        v_prev, v = v, 2.0 * apply(v) - v_prev
        mu[:, n] = np.einsum("ij,ij->j", r, v)
        if not np.all(np.abs(mu[:, n]) <= 1.5 * mu[:, 0]):  # |T_n| <= 1 on the spectrum
            raise RuntimeError(f"Chebyshev moment {n} diverged: spectrum outside the bounds")
    return mu


def jackson(n_moments: int) -> np.ndarray:
    """Jackson kernel damping factors g_n."""
    n = np.arange(n_moments)
    q = np.pi / (n_moments + 1)
    return ((n_moments - n + 1) * np.cos(q * n) + np.sin(q * n) / np.tan(q)) / (n_moments + 1)


def count_below(mu: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integrated KPM DOS: states below scaled energies x (mu: trace moments, Jackson-damped).

    ``N(x) = g0 mu0 (pi - t)/pi - (2/pi) sum_n g_n mu_n sin(n t) / n`` with ``x = cos t``.
    """
    g = jackson(len(mu)) * mu                               # [M]
    t = np.arccos(np.clip(x, -1.0, 1.0))                    # [n_x]
    n = np.arange(1, len(mu))
    series = np.sin(np.outer(t, n)) / n @ g[1:]             # [n_x]
    return g[0] * (np.pi - t) / np.pi - 2.0 / np.pi * series


def fermi_from_moments(mu: np.ndarray, n_occupied: int, center: float, half_width: float) -> float:
    """E_F (eV) where the KPM count first reaches ``n_occupied`` (grid, then bisection)."""
    x = np.linspace(-0.999999, 0.999999, 20001)
    counts = count_below(mu, x)
    above = np.nonzero(counts >= n_occupied)[0]
    if len(above) == 0 or above[0] == 0:
        return float("nan")
    lo, hi = x[above[0] - 1], x[above[0]]
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if count_below(mu, np.array([mid]))[0] >= n_occupied:
            hi = mid
        else:
            lo = mid
    return center + half_width * 0.5 * (lo + hi)


def fermi_estimates(mu_vectors: np.ndarray, n_occupied: int, center: float, half_width: float,
                    orders: list[int]) -> dict:
    """E_F from the mean moments and from each vector alone, per truncation order."""
    out = {}
    for m in orders:
        mean = fermi_from_moments(mu_vectors[:, :m].mean(axis=0), n_occupied, center, half_width)
        each = np.array([fermi_from_moments(v[:m], n_occupied, center, half_width)
                         for v in mu_vectors])
        spread = float(np.nanstd(each, ddof=1) / np.sqrt(len(each))) if len(each) > 1 else float("nan")
        out[str(m)] = {"fermi_level": mean, "std_error": spread,
                       "resolution_eV": float(np.pi * half_width / m),
                       "per_vector": [float(e) for e in each]}
    return out


def estimator_spread(ht, st, n_occupied: int) -> dict:
    """Exact per-vector spread of the Rademacher count estimate of n_occupied (dense; small cells).

    For ``F = Θ(E_F - A)``, ``Var(r^T F r) = 2 Σ_{i≠j} ((F + F^T)/2)_ij^2``.  Compared for the
    non-symmetric ``A = S~^-1 H~`` (what the KPM above samples, ``F = C_occ C_occ^T S~``) and
    the Löwdin-symmetric ``S~^-1/2 H~ S~^-1/2`` (``F = U_occ U_occ^T``), which a
    factorisation-free ``S^-1/2 r`` (Krylov) would give.
    """
    hd, sd = ht.toarray(), st.toarray()
    w, c = sl.eigh(hd, sd)                                  # C^T S C = 1
    occ = c[:, :n_occupied]                                 # [n, n_occ]
    f = occ @ (occ.T @ sd)                                  # projector in A's frame
    sw, sv = np.linalg.eigh(sd)
    root = (sv / np.sqrt(sw)) @ sv.T                        # S~^-1/2
    _, u = np.linalg.eigh(root @ hd @ root)
    p = u[:, :n_occupied] @ u[:, :n_occupied].T

    def spread(m):
        sym = 0.5 * (m + m.T)
        return float(np.sqrt(2.0 * (np.sum(sym**2) - np.sum(np.diag(sym) ** 2))))

    fermi = 0.5 * (w[n_occupied - 1] + w[n_occupied])
    dos = float(np.sum(np.abs(w - fermi) < 0.5))  # states per eV around E_F
    return {"count_std_generalised": spread(f), "count_std_lowdin": spread(p),
            "states_per_eV_at_fermi": dos,
            "fermi_std_generalised_eV": spread(f) / dos, "fermi_std_lowdin_eV": spread(p) / dos}


def overlap_condition(s, st) -> dict:
    """Condition numbers of S as given, point-Jacobi scaled, and block-Jacobi congruent (dense)."""
    d = 1.0 / np.sqrt(s.diagonal())
    out = {}
    for name, m in (("raw", s.toarray()), ("jacobi", d[:, None] * s.toarray() * d[None, :]),
                    ("block_jacobi", st.toarray())):
        w = np.linalg.eigvalsh(m)
        out[name] = {"min": float(w[0]), "max": float(w[-1]), "condition": float(w[-1] / w[0])}
    return out


def spmm_seconds(matrix, n_columns: int, repeats: int = 5) -> float:
    """Seconds of one sparse product with a block of ``n_columns`` vectors."""
    x = np.ones((matrix.shape[0], n_columns))
    start = time.perf_counter()
    for _ in range(repeats):
        matrix @ x
    return (time.perf_counter() - start) / repeats


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def holds_structure(path: Path, size: int, rattle: float, nev: int) -> bool:
    """Whether an existing results file is of this supercell, rattle (seed 0) and ``--nev``."""
    from ehpc.cli.infer import parse_supercell
    from ehpc.io.results import read_results
    from ehpc.sources import rattle as rattled

    try:
        res = read_results(path)
    except Exception:  # noqa: BLE001 - unreadable: recompute
        return False
    atoms = rattled(parse_supercell(f"Si:diamond:{LATTICE_CONSTANT}:{size}x{size}x{size}"),
                    rattle, seed=0)
    return (int(res.attrs["nev"]) == nev and len(res.atoms) == len(atoms)
            and np.allclose(res.atoms.positions, atoms.positions, atol=1e-10))


def run_ehpc_infer(args, size: int, out: Path, guess: float | None = None) -> dict:
    """The factorisation path: ``mpirun -n 1 ehpc-infer`` (skipped when ``out`` exists)."""
    cmd = ["mpirun", "-n", "1", shutil.which("ehpc-infer") or "ehpc-infer",
           "--model", str(args.model),
           "--supercell", f"Si:diamond:{LATTICE_CONSTANT}:{size}x{size}x{size}",
           "--rattle", str(args.rattle), "--seed", "0", "--nev", str(args.nev), "--out", str(out)]
    if guess is not None:
        cmd += ["--fermi-guess", repr(guess)]
    if out.is_file() and not holds_structure(out, size, args.rattle, args.nev):
        out.unlink()
        shutil.rmtree(out.with_name(out.name + ".ranks"), ignore_errors=True)
    if not out.is_file():
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError((proc.stdout + proc.stderr)[-2000:])
    return {"ehpc_infer_command": cmd}


def run_size(args, size: int) -> dict:
    from ehpc.io.results import read_results

    out = args.work / f"si_{size}.h5"  # reused when it holds this structure and --nev
    record = {"n_atoms": 8 * size**3, "size": size, "command": sys.argv, "commit": git_commit(),
              "load_average_start": list(os.getloadavg()),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    record.update(run_ehpc_infer(args, size, out))
    res = read_results(out)
    n_occ = int(res.attrs["n_occupied"])
    h, s = res.hamiltonian(), res.overlap()
    nao = res.basis.nao_per_atom(res.atoms.numbers)
    record.update(
        n_orbitals=int(h.shape[0]), n_occupied=n_occ, nnz_h=int(h.nnz), nnz_s=int(s.nnz),
        mumps={"fermi_level": float(res.fermi_level), "homo": float(res.homo),
               "lumo": float(res.lumo), "gap": float(res.gap),
               "factorizations": int(res.attrs["factorizations"]),
               "fermi_seconds": float(max(res.timings["fermi"])),
               "seconds": {k: float(max(v)) for k, v in res.timings.items()},
               "eigenvalues": [float(e) for e in np.sort(res.eigenvalues)]},
    )
    t0 = time.perf_counter()
    ht, st = block_jacobi_congruence(h, s, nao)
    t_prep = time.perf_counter() - t0
    if args.moments > 0:
        record["kpm"] = kpm_record(args, ht, st, n_occ)
        record["kpm"]["seconds"]["congruence"] = t_prep
        record["kpm"]["seconds"]["total"] += t_prep
        if args.hybrid:  # the KPM E_F as the window's first shift σ0
            record["hybrid"] = hybrid_run(args, size, record["kpm"]["estimates"][str(args.moments)])
    reference, ref_w = record["mumps"]["fermi_level"], None
    if h.shape[0] <= args.dense_max:
        t1 = time.perf_counter()
        ref_w = sl.eigh(h.toarray(), s.toarray(), eigvals_only=True)
        reference = 0.5 * (ref_w[n_occ - 1] + ref_w[n_occ])
        record["dense"] = {"seconds": time.perf_counter() - t1, "fermi_level": float(reference),
                           "homo": float(ref_w[n_occ - 1]), "lumo": float(ref_w[n_occ]),
                           "bounds_eV": [float(ref_w[0]), float(ref_w[-1])],
                           "near": [float(e) for e in ref_w[max(0, n_occ - 30):n_occ + 30]]}
        if args.spread:
            record["dense"]["estimator_spread"] = estimator_spread(ht, st, n_occ)
            record["dense"]["overlap_condition"] = overlap_condition(s, st)
    record["reference_fermi_level"] = float(reference)
    record["load_average_end"] = list(os.getloadavg())
    for est in record.get("kpm", {}).get("estimates", {}).values():
        est["abs_error_eV"] = abs(est["fermi_level"] - reference)
        if ref_w is not None:  # how many states the KPM E_F miscounts
            est["count_error_states"] = int(np.searchsorted(ref_w, est["fermi_level"]) - n_occ)
    return record


def hybrid_run(args, size: int, estimate: dict) -> dict:
    """ehpc-infer's window search started at the KPM E_F: factorisations and seconds."""
    from ehpc.io.results import read_results

    out = args.work / f"si_{size}_kpm_guess.h5"
    if out.is_file():
        out.unlink()
        shutil.rmtree(out.with_name(out.name + ".ranks"), ignore_errors=True)
    info = run_ehpc_infer(args, size, out, guess=estimate["fermi_level"])
    res = read_results(out)
    return {"command": info["ehpc_infer_command"], "fermi_guess": estimate["fermi_level"],
            "fermi_level": float(res.fermi_level), "homo": float(res.homo),
            "lumo": float(res.lumo), "factorizations": int(res.attrs["factorizations"]),
            "fermi_seconds": float(max(res.timings["fermi"])),
            "fermi_shifts": [float(x) for x in np.atleast_1d(res.attrs["fermi_shifts"])]}


def kpm_record(args, ht, st, n_occ: int) -> dict:
    """Bounds, moments and E_F estimates of the congruent pair (ht, st), with their costs."""
    log_bounds, log_kpm = SolveLog(), SolveLog()
    t0 = time.perf_counter()
    if args.bounds:  # given (e.g. from a smaller cell's Lanczos): a cost-only run
        low, high = args.bounds
    else:
        low, high = lanczos_bounds(ht, st, args.lanczos, args.cg_rtol, log_bounds, seed=1)
    center, half = 0.5 * (high + low), 0.5 * (high - low)
    t_bounds = time.perf_counter() - t0
    mu = kpm_moments(ht, st, center, half, args.moments, args.vectors, args.cg_rtol, log_kpm, seed=2)
    t_kpm = time.perf_counter() - t0 - t_bounds
    orders = sorted({m for m in (args.moments // 4, args.moments // 2) if m >= 16} | {args.moments})
    return {
        "moments": args.moments, "vectors": args.vectors, "cg_rtol": args.cg_rtol,
        "lanczos_steps": 0 if args.bounds else args.lanczos, "bounds_eV": [low, high],
        "bounds_given": bool(args.bounds),
        "seconds": {"bounds": t_bounds, "moments": t_kpm, "total": t_bounds + t_kpm},
        "solves": {"bounds": vars(log_bounds), "moments": vars(log_kpm)},
        "peak_rss_mib": peak_rss_mib(),
        "matrix_mib": (ht.data.nbytes + ht.indices.nbytes + st.data.nbytes + st.indices.nbytes) / 2**20,
        "seconds_per_moment": t_kpm / args.moments,
        "spmm_seconds": {"s": spmm_seconds(st, args.vectors), "h": spmm_seconds(ht, args.vectors)},
        "estimates": fermi_estimates(mu, n_occ, center, half, orders),
        "moments_mean": mu.mean(axis=0).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("bench/data/si_dzvp_model.pt"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--rattle", type=float, default=0.05)
    parser.add_argument("--nev", type=int, default=20)
    parser.add_argument("--moments", type=int, default=256, help="0: no KPM (dense only)")
    parser.add_argument("--vectors", type=int, default=16)
    parser.add_argument("--lanczos", type=int, default=40)
    parser.add_argument("--bounds", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="eV; skip the Lanczos bounds (for cost-per-moment runs)")
    parser.add_argument("--cg-rtol", type=float, default=1e-6)
    parser.add_argument("--dense-max", type=int, default=3000, help="largest dense eigh")
    parser.add_argument("--hybrid", action="store_true",
                        help="also run ehpc-infer with --fermi-guess at the KPM E_F")
    parser.add_argument("--spread", action="store_true",
                        help="also the exact per-vector spread of the count (dense)")
    parser.add_argument("--work", type=Path, default=Path("bench/data/fermi_free"))
    parser.add_argument("--json", type=Path, default=Path("bench/results/fermi_free_si_dzvp.json"))
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"--model {args.model}: no such model file")
    args.work.mkdir(parents=True, exist_ok=True)
    records = json.loads(args.json.read_text()) if args.json.is_file() else []
    for size in args.sizes:
        record = run_size(args, size)
        records.append(record)
        write_atomic(args.json, json.dumps(records, indent=1))
        if "kpm" not in record:
            print(f"n={size}: dense reference only", flush=True)
            continue
        best = record["kpm"]["estimates"][str(args.moments)]
        print(f"n={size} {record['n_orbitals']} orb: KPM E_F {best['fermi_level']:.4f} "
              f"± {best['std_error']:.4f} eV, ref {record['reference_fermi_level']:.4f}, "
              f"KPM {record['kpm']['seconds']['total']:.1f} s "
              f"({record['kpm']['solves']['moments']['iterations']} CG its), "
              f"MUMPS fermi {record['mumps']['fermi_seconds']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
