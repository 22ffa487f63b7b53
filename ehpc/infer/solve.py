"""Eigenstates of H c = ε S c nearest a shift σ (SLEPc, shift-and-invert), with the inertia.

Krylov-Schur on ``(H - σ S)^-1 S`` turns the eigenvalues nearest σ into the largest ones
of the transformed operator, so ``nev`` of them converge in a few dozen iterations
whatever the size of the spectrum; each iteration is one solve with a MUMPS LDLᵀ factor
of ``H - σ S`` computed once.  That same factor also gives, by Sylvester's law of
inertia, the number of eigenvalues below σ (see :mod:`ehpc.infer.fermi`), so one
factorisation places the computed window in the spectrum: :class:`ShiftInvert` exposes
both.  Asking the same object for more eigenpairs reuses the factor, and the pairs it
already holds become SLEPc's deflation space, so only the new ones are iterated for.
Eigenvector purification is off: it guards against a singular S, and S has passed the
overlap check (:func:`ehpc.infer.fermi.check_overlap`) before any solve.

MUMPS reports the global inertia only with ``ICNTL(13)=1`` and ``ICNTL(24)=1``; they are
set as defaults under the ST's prefix ``st_``.  Defaults are set in code and then
``setFromOptions()`` runs last, so every ``-eps_*``, ``-st_*`` and ``-st_mat_mumps_*``
option given on the command line overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError

#: options prefix of the shift-and-invert factorisation (SLEPc's ST)
ST_PREFIX = "st_"

#: MUMPS settings without which the ST factor's inertia is not the global one
ST_INERTIA_DEFAULTS = {"mat_mumps_icntl_13": "1", "mat_mumps_icntl_24": "1"}

#: Krylov-Schur's relative convergence tolerance (SLEPc's own default: 1e-8; ``-eps_tol``
#: overrides).  On silicon's DFT blocks it took 14 % and 38 % fewer triangular solves than
#: 1e-8 at 6,656 and 13,000 orbitals (none fewer at 30,576), with the 40 states near E_F
#: the same to 1e-9 meV and residuals of at most 5e-8 (docs/BENCHMARKS.md, "SLEPc's
#: tolerance")
EIGEN_TOLERANCE = 1.0e-6


class SolveError(UserError, RuntimeError):
    """The eigensolver did not deliver the states asked for."""


@dataclass
class Eigenstates:
    """Eigenpairs near the Fermi level.

    Attributes:
        eigenvalues: converged eigenvalues in eV, ascending.               # [n_states]
        vectors: this rank's rows of the S-normalised eigenvectors, in the
            partition's orbital order (None unless requested).             # [n_states, n_local]
        homo: highest occupied state (state ``n_occupied``, counted from the bottom of
            the spectrum by inertia); NaN if not determined.
        lumo: lowest empty state (state ``n_occupied + 1``); equals ``homo`` when a
            degenerate level is partly filled.
        iterations: Krylov-Schur restarts used.
        residuals: relative residual norm of each pair.                    # [n_states]
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


@dataclass
class Window:
    """The eigenpairs nearest σ from one factorisation, placed in the spectrum.

    Attributes:
        sigma: the shift (eV).
        below: eigenvalues of (H, S) below σ, from the inertia of ``H - σ S``.
        values: the computed eigenvalues nearest σ, ascending.             # [k]
        residuals: relative residual of each.                              # [k]
        vectors: this rank's eigenvector rows or None.                     # [k, n_local]
        iterations: Krylov-Schur restarts of every solve on this factor.
    """

    sigma: float
    below: int
    values: np.ndarray
    residuals: np.ndarray
    vectors: np.ndarray | None
    iterations: int

    @property
    def first(self) -> int:
        """0-based index in the whole spectrum of ``values[0]``."""
        return self.below - int(np.count_nonzero(self.values < self.sigma))

    @property
    def last(self) -> int:
        """0-based index in the whole spectrum of ``values[-1]``."""
        return self.first + len(self.values) - 1


class ShiftInvert:
    """One LDLᵀ factorisation of ``H - σ S``: inertia and the eigenpairs nearest σ.

    Args:
        hamiltonian: assembled symmetric MPIAIJ H (eV).
        overlap: assembled SPD MPIAIJ S with the same pattern.
        sigma: the shift in eV.
        eigenvectors: keep this rank's part of each eigenvector.
    """

    def __init__(self, hamiltonian, overlap, sigma: float, eigenvectors: bool = False):
        from petsc4py import PETSc
        from slepc4py import SLEPc

        from .fermi import _set_default_options

        self.hamiltonian, self.sigma, self.eigenvectors = hamiltonian, float(sigma), eigenvectors
        self.n = hamiltonian.getSize()[0]
        _set_default_options(ST_PREFIX, ST_INERTIA_DEFAULTS)
        eps = SLEPc.EPS().create(hamiltonian.getComm())
        eps.setOperators(hamiltonian, overlap)
        eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
        eps.setType(SLEPc.EPS.Type.KRYLOVSCHUR)
        eps.setTarget(self.sigma)
        eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_REAL)
        st = eps.getST()
        st.setType(SLEPc.ST.Type.SINVERT)
        st.setMatStructure(PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        ksp = st.getKSP()
        ksp.setType(PETSc.KSP.Type.PREONLY)
        pc = ksp.getPC()
        pc.setType(PETSc.PC.Type.CHOLESKY)
        pc.setFactorSolverType("mumps")
        eps.setPurify(False)  # S is positive definite: purification costs one solve per pair
        eps.setTolerances(tol=EIGEN_TOLERANCE)
        eps.setFromOptions()  # last: command-line options override everything above
        self.eps = eps
        options = PETSc.Options(eps.getOptionsPrefix())
        # -eps_ncv / -eps_mpd outlive every setDimensions below (None: SLEPc decides)
        self.user_ncv, self.user_mpd = (
            options.getInt(name) if options.hasName(name) else None for name in ("eps_ncv", "eps_mpd"))
        self.found = _Found()
        try:
            eps.setUp()  # the numerical factorisation of H - σS happens here, once
        except PETSc.Error as err:
            raise SolveError(
                f"LDLᵀ factorisation of H - σS at σ = {self.sigma:.6f} eV failed (PETSc error "
                f"{err.ierr}); see the PETSc message above"
            ) from None

    def inertia(self) -> tuple[int, int, int] | None:
        """(negative, zero, positive) of ``H - σ S`` from the factor, or None when the
        options replaced the direct solver (no factor to read)."""
        from petsc4py import PETSc

        try:
            factor = self.eps.getST().getKSP().getPC().getFactorMatrix()
            negative, zero, positive = factor.getInertia()
        except PETSc.Error:
            return None
        return int(negative), int(zero), int(positive)

    def solve(self, nev: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
        """The ``nev`` eigenpairs nearest σ, ascending: (values, residuals, vectors, its).

        Pairs found by earlier calls on this factor are kept; only the missing ones are
        solved for, in the complement of the kept vectors (SLEPc's deflation space).
        """
        if not 0 < nev <= self.n:
            raise SolveError(f"--nev {nev} must be between 1 and the number of orbitals {self.n}")
        found = self.found
        if len(found.values) < nev:
            self._solve_more(nev - len(found.values))
        nearest = np.argsort(np.abs(found.values - self.sigma), kind="stable")[:nev]
        order = nearest[np.argsort(found.values[nearest], kind="stable")]
        vectors = None
        if self.eigenvectors:
            vectors = np.asarray([found.vectors[k].getArray() for k in order]).reshape(len(order), -1)
        return found.values[order], found.residuals[order], vectors, found.iterations

    def _solve_more(self, wanted: int) -> None:
        """Solve for the ``wanted`` pairs nearest σ outside those already found."""
        from slepc4py import SLEPc

        found, eps = self.found, self.eps
        if found.vectors:
            eps.setDeflationSpace(found.vectors)  # cleared by SLEPc after each solve
        ncv = self.user_ncv if self.user_ncv is not None and self.user_ncv > wanted else None
        eps.setDimensions(nev=wanted, ncv=ncv, mpd=self.user_mpd)  # the factor is kept
        eps.solve()
        n_conv = eps.getConverged()
        if n_conv < wanted:
            reason = eps.getConvergedReason()
            raise SolveError(
                f"SLEPc converged {n_conv} of {wanted} eigenpairs near {self.sigma:.4f} eV "
                f"(reason {reason}); raise -eps_max_it or -eps_ncv"
            )
        values = np.array([eps.getEigenvalue(k).real for k in range(n_conv)])
        # SLEPc may converge more than asked, not necessarily the nearest: keep the nearest
        keep = np.argsort(np.abs(values - self.sigma), kind="stable")[:wanted]
        for k in keep:
            vec = self.hamiltonian.createVecRight()
            eps.getEigenvector(k, vec)
            found.vectors.append(vec)
        residuals = [eps.computeError(k, SLEPc.EPS.ErrorType.RELATIVE) for k in keep]
        found.values = np.concatenate([found.values, values[keep]])
        found.residuals = np.concatenate([found.residuals, residuals])
        found.iterations += eps.getIterationNumber()

    def window(self, nev: int, below: int) -> Window:
        """:meth:`solve` as a :class:`Window` with ``below`` states under σ."""
        values, residuals, vectors, iterations = self.solve(nev)
        return Window(self.sigma, below, values, residuals, vectors, iterations)

    def destroy(self) -> None:
        for vec in self.found.vectors:
            vec.destroy()
        self.found = _Found()
        self.eps.destroy()


@dataclass
class _Found:
    """The pairs one :class:`ShiftInvert` has converged so far (its deflation space)."""

    values: np.ndarray = field(default_factory=lambda: np.zeros(0))   # [k]
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [k]
    vectors: list = field(default_factory=list)  # k PETSc Vecs
    iterations: int = 0


def solve_near(
    hamiltonian,
    overlap,
    sigma: float,
    nev: int,
    eigenvectors: bool = False,
) -> Eigenstates:
    """The ``nev`` generalised eigenpairs of (H, S) nearest ``sigma``.

    HOMO and LUMO are set only relative to σ here (nearest computed state below / at or
    above); :func:`ehpc.infer.window.near_fermi` places them by the electron count.

    Args:
        hamiltonian: assembled symmetric MPIAIJ H (eV).
        overlap: assembled SPD MPIAIJ S with the same pattern.
        sigma: target energy in eV; must not be an eigenvalue.
        nev: number of eigenpairs.
        eigenvectors: keep this rank's part of each eigenvector.
    """
    n = hamiltonian.getSize()[0]
    if not 0 < nev <= n:
        raise SolveError(f"--nev {nev} must be between 1 and the number of orbitals {n}")
    shifted = ShiftInvert(hamiltonian, overlap, sigma, eigenvectors)
    try:
        values, residuals, vectors, iterations = shifted.solve(nev)
    finally:
        shifted.destroy()
    below, above = values[values < sigma], values[values >= sigma]
    homo = float(below.max()) if len(below) else float("nan")
    lumo = float(above.min()) if len(above) else float("nan")
    return Eigenstates(values, vectors, homo, lumo, iterations, residuals)
