"""Eigenstates of H c = ε S c nearest the Fermi level (SLEPc, shift-and-invert).

Krylov-Schur on ``(H - σ S)^-1 S`` with σ = E_F turns the eigenvalues nearest E_F into
the largest ones of the transformed operator, so ``nev`` of them converge in a few
dozen iterations whatever the size of the spectrum; each iteration is one solve with
a MUMPS Cholesky/LDLᵀ factor computed once.  Defaults are set in code and then
``setFromOptions()`` runs last, so every ``-eps_*``, ``-st_*`` and ``-st_mat_mumps_*``
option given on the command line overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class SolveError(RuntimeError):
    """The eigensolver did not deliver the states asked for."""


@dataclass
class Eigenstates:
    """Eigenpairs near the Fermi level.

    Attributes:
        eigenvalues: converged eigenvalues in eV, ascending.               # [n_conv]
        vectors: this rank's rows of the S-normalised eigenvectors, in the
            partition's orbital order (None unless requested).             # [n_conv, n_local]
        homo: highest eigenvalue below σ (NaN if none converged there).
        lumo: lowest eigenvalue at or above σ (NaN if none).
        iterations: Krylov-Schur restarts used.
        residuals: relative residual norm of each pair.                    # [n_conv]
    """

    eigenvalues: np.ndarray
    vectors: np.ndarray | None
    homo: float
    lumo: float
    iterations: int
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def gap(self) -> float:
        return self.lumo - self.homo


def solve_near(
    hamiltonian,
    overlap,
    sigma: float,
    nev: int,
    eigenvectors: bool = False,
) -> Eigenstates:
    """The ``nev`` generalised eigenpairs of (H, S) nearest ``sigma``.

    Args:
        hamiltonian: assembled symmetric MPIAIJ H (eV).
        overlap: assembled SPD MPIAIJ S with the same pattern.
        sigma: target energy in eV; must not be an eigenvalue (the Fermi bisection
            returns one with a nonsingular ``H - σ S``).
        nev: number of eigenpairs.
        eigenvectors: keep this rank's part of each eigenvector.
    """
    from petsc4py import PETSc
    from slepc4py import SLEPc

    n = hamiltonian.getSize()[0]
    if not 0 < nev <= n:
        raise SolveError(f"--nev {nev} must be between 1 and the number of orbitals {n}")
    eps = SLEPc.EPS().create(hamiltonian.getComm())
    eps.setOperators(hamiltonian, overlap)
    eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
    eps.setType(SLEPc.EPS.Type.KRYLOVSCHUR)
    eps.setDimensions(nev=nev)
    eps.setTarget(sigma)
    eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_REAL)
    st = eps.getST()
    st.setType(SLEPc.ST.Type.SINVERT)
    st.setMatStructure(PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
    ksp = st.getKSP()
    ksp.setType(PETSc.KSP.Type.PREONLY)
    pc = ksp.getPC()
    pc.setType(PETSc.PC.Type.CHOLESKY)
    pc.setFactorSolverType("mumps")
    eps.setFromOptions()  # last: command-line options override everything above
    eps.solve()
    n_conv = eps.getConverged()
    if n_conv < min(nev, n):
        reason = eps.getConvergedReason()
        raise SolveError(
            f"SLEPc converged {n_conv} of {nev} eigenpairs near {sigma:.4f} eV (reason {reason}); "
            "raise -eps_max_it or -eps_ncv"
        )
    values = np.empty(n_conv)
    residuals = np.empty(n_conv)
    vectors = None
    vec = hamiltonian.createVecRight() if eigenvectors else None
    local = []
    for k in range(n_conv):
        values[k] = eps.getEigenpair(k, vec).real if eigenvectors else eps.getEigenvalue(k).real
        residuals[k] = eps.computeError(k, SLEPc.EPS.ErrorType.RELATIVE)
        if eigenvectors:
            local.append(vec.getArray().copy())
    # SLEPc may converge more than nev: keep the nev nearest sigma, in ascending order
    nearest = np.argsort(np.abs(values - sigma), kind="stable")[:nev]
    order = nearest[np.argsort(values[nearest], kind="stable")]
    if eigenvectors:
        vectors = np.asarray(local).reshape(n_conv, -1)[order]
    values, residuals = values[order], residuals[order]
    below, above = values[values < sigma], values[values >= sigma]
    homo = float(below.max()) if len(below) else float("nan")
    lumo = float(above.min()) if len(above) else float("nan")
    iterations = eps.getIterationNumber()
    eps.destroy()
    return Eigenstates(values, vectors, homo, lumo, iterations, residuals)
