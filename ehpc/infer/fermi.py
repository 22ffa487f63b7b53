"""Fermi level from the electron count, by bisection on Sylvester inertia.

For symmetric H and positive-definite S, the number of generalised eigenvalues of
(H, S) below σ equals the number of negative eigenvalues of ``H - σ S`` (Sylvester's
law of inertia applied to ``L^-1 (H - σ S) L^-T`` with ``S = L L^T``).  A sparse LDLᵀ
factorisation (MUMPS) gives that count exactly without a single eigenvalue, so the
Fermi level of a closed-shell system, where ``n_electrons / 2`` states are occupied, is
found by bisection on σ.

A near-singular S is caught before any of that (:func:`check_overlap`): a Krylov–Schur
estimate of S's smallest eigenvalue needs only products with S, a few hundred of them,
and settles the common case of an S far from singular without a factorisation.  When
the estimate comes within ``ESTIMATE_MARGIN`` of the floor, or does not converge, the
exact count of eigenvalues below the floor (the inertia of ``S - floor * I``) decides.

MUMPS needs ``ICNTL(13)=1`` (no ScaLAPACK root) and ``ICNTL(24)=1`` (null-pivot
detection) for a correct global inertia.  The symbolic analysis is done once and reused
for every σ, so it must not depend on the values of the first ``H - σ S``:
``ICNTL(12)=1`` turns off the value-based (matching) ordering and scaling of the
analysis, which an unlucky first σ close to an eigenvalue would otherwise spoil for all
later factorisations.  These are defaults under the options prefix ``fermi_`` and can
be overridden on the command line like any other option (``-fermi_mat_mumps_icntl_14
50``, ``-fermi_pc_factor_mat_solver_type mumps``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError

#: options prefix of the inertia factorisations
PREFIX = "fermi_"

#: MUMPS settings without which its inertia is not the global one
INERTIA_DEFAULTS = {"mat_mumps_icntl_13": "1", "mat_mumps_icntl_24": "1", "mat_mumps_icntl_12": "1"}

#: relative nudge of σ off an eigenvalue when the factorisation meets a null pivot
SHIFT_NUDGE = 1.0e-9

#: below this generalised eigenvalue of S the basis is treated as linearly dependent:
#: S^-1 would amplify round-off in H by more than its inverse
OVERLAP_EIGENVALUE_FLOOR = 1.0e-6

#: the Krylov estimate of S's smallest eigenvalue settles the overlap check only when it
#: lies this many times above the floor; nearer, the exact inertia count decides
ESTIMATE_MARGIN = 10.0

#: options prefix, relative tolerance and basis size of that estimate
#: (``-overlap_eps_ncv 32`` etc. override them)
OVERLAP_PREFIX = "overlap_"
ESTIMATE_TOLERANCE = 1.0e-3
ESTIMATE_NCV = 64
ESTIMATE_MAX_RESTARTS = 200

#: bisection stops when the bracket is this narrow (eV) without finding a gap
FERMI_TOLERANCE = 1.0e-6

MAX_BISECTIONS = 200

#: widest energy window (eV) searched for the Fermi level before giving up
MAX_BRACKET = 1.0e6


class FermiError(UserError, RuntimeError):
    """The electron count cannot be placed (bad count, singular S, failed factorisation)."""


@dataclass(frozen=True)
class FermiResult:
    """Outcome of the inertia bisection.

    Attributes:
        sigma: an energy (eV) with exactly ``n_occupied`` states below it when
            ``gap_found``; otherwise the midpoint of the final bracket.
        n_occupied: states to fill (``n_electrons / 2``).
        count: states below ``sigma`` (equals ``n_occupied`` when ``gap_found``).
        bracket: final ``(lower, upper)`` with fewer / more states below them.
        gap_found: whether σ lies strictly between HOMO and LUMO.
        factorizations: LDLᵀ factorisations used.
    """

    sigma: float
    n_occupied: int
    count: int
    bracket: tuple[float, float]
    gap_found: bool
    factorizations: int


class InertiaCounter:
    """Counts eigenvalues of (H, S) below σ via the inertia of ``H - σ S``.

    One work matrix and one KSP are reused for every σ, so MUMPS keeps its symbolic
    analysis and only the numerical factorisation is repeated.

    Args:
        hamiltonian: assembled symmetric MPIAIJ H.
        overlap: assembled SPD MPIAIJ S with the same nonzero pattern.
    """

    def __init__(self, hamiltonian, overlap):
        from petsc4py import PETSc

        self.hamiltonian = hamiltonian
        self.overlap = overlap
        self.work = None
        self._new_work()
        _set_default_options(PREFIX, INERTIA_DEFAULTS)
        self.ksp = PETSc.KSP().create(hamiltonian.getComm())
        self.ksp.setOptionsPrefix(PREFIX)
        self.ksp.setType(PETSc.KSP.Type.PREONLY)
        pc = self.ksp.getPC()
        pc.setType(PETSc.PC.Type.CHOLESKY)
        pc.setFactorSolverType("mumps")
        self.ksp.setOperators(self.work)
        self.ksp.setFromOptions()
        self.factorizations = 0

    def _new_work(self) -> None:
        from petsc4py import PETSc

        self.work = self.hamiltonian.duplicate(copy=True)
        self.work.setOption(PETSc.Mat.Option.SPD, False)  # H - σS is indefinite
        self.work.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        self.work.setOptionsPrefix(PREFIX)

    def release(self) -> None:
        """Free the factor and the work matrix until the next count: another factor (the
        shift-and-invert solve's) can then take their memory.  The next count repeats the
        symbolic analysis."""
        self.ksp.reset()
        if self.work is not None:
            self.work.destroy()
            self.work = None

    def inertia(self, shift: float) -> tuple[int, int, int]:
        """(negative, zero, positive) eigenvalue counts of ``H - shift * S`` (shift in eV)."""
        from petsc4py import PETSc

        if self.work is None:
            self._new_work()
        same = PETSc.Mat.Structure.SAME_NONZERO_PATTERN
        self.hamiltonian.copy(self.work, structure=same)
        if shift != 0.0:
            self.work.axpy(-shift, self.overlap, structure=same)
        return self._factor()

    def inertia_of(self, matrix, diagonal_shift: float, definite: bool = False
                   ) -> tuple[int, int, int]:
        """Inertia of ``matrix - diagonal_shift * I`` (matrix with the shared pattern).

        ``definite``: the matrix is expected to be positive definite (S in the overlap
        check), so MUMPS factorises it without pivoting (its SYM=1 mode, the cheaper
        one) and still counts negative pivots; should that factorisation fail, the
        pivoting LDLᵀ decides.  The factor is freed afterwards either way, so the next
        count of ``H - σS`` builds its own indefinite one.
        """
        from petsc4py import PETSc

        if definite:
            self.release()
            self._new_work()
            self.work.setOption(PETSc.Mat.Option.SPD, True)
        elif self.work is None:
            self._new_work()
        matrix.copy(self.work, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        self.work.shift(-diagonal_shift)
        if not definite:
            return self._factor()
        try:
            return self._factor()
        except FermiError:
            self.release()
            return self.inertia_of(matrix, diagonal_shift)
        finally:
            self.release()

    def _factor(self) -> tuple[int, int, int]:
        from petsc4py import PETSc

        self.ksp.setOperators(self.work)
        try:
            self.ksp.setUp()
            factor = self.ksp.getPC().getFactorMatrix()
            negative, zero, positive = factor.getInertia()
        except PETSc.Error as err:
            raise FermiError(
                f"LDLᵀ factorisation for the inertia failed (PETSc error {err.ierr}); "
                "see the PETSc message above"
            ) from None
        self.factorizations += 1
        return int(negative), int(zero), int(positive)

    def count_below(self, sigma: float) -> tuple[int, int]:
        """(states below σ, null pivots); σ is nudged upwards once if it hits an eigenvalue."""
        negative, zero, _ = self.inertia(sigma)
        if zero:
            negative, zero, _ = self.inertia(sigma + SHIFT_NUDGE * max(1.0, abs(sigma)))
        return negative, zero

    def destroy(self) -> None:
        self.ksp.destroy()
        if self.work is not None:
            self.work.destroy()


def _set_default_options(prefix: str, defaults: dict) -> None:
    """Put ``defaults`` in the options database unless the user already set them."""
    from petsc4py import PETSc

    options = PETSc.Options()
    for key, value in defaults.items():
        if not options.hasName(prefix + key):
            options.setValue(prefix + key, value)


@dataclass(frozen=True)
class OverlapCheck:
    """What the overlap check found.

    Attributes:
        smallest: Krylov estimate of S's smallest eigenvalue (NaN if it did not converge).
        factorizations: 0 when the estimate settled the check, 1 when the exact count of
            eigenvalues below the floor was needed.
    """

    smallest: float
    factorizations: int


def smallest_eigenvalue(matrix) -> float:
    """Krylov–Schur estimate of the smallest eigenvalue of a symmetric PETSc matrix from
    products with it alone (no factorisation); NaN if it does not converge.

    A Ritz value never lies below the smallest eigenvalue, and the converged one has an
    eigenvalue within its residual; a start vector orthogonal to the lowest eigenvector,
    the one way to miss it, is not met with SLEPc's random start in practice.
    """
    from slepc4py import SLEPc

    eps = SLEPc.EPS().create(matrix.getComm())
    try:
        eps.setOptionsPrefix(OVERLAP_PREFIX)
        eps.setOperators(matrix)
        eps.setProblemType(SLEPc.EPS.ProblemType.HEP)
        eps.setWhichEigenpairs(SLEPc.EPS.Which.SMALLEST_REAL)
        eps.setDimensions(1, min(ESTIMATE_NCV, matrix.getSize()[0]))
        eps.setTolerances(ESTIMATE_TOLERANCE, ESTIMATE_MAX_RESTARTS)
        eps.setFromOptions()
        eps.solve()
        if eps.getConverged() < 1:
            return float("nan")
        return float(eps.getEigenvalue(0).real)
    finally:
        eps.destroy()


def check_overlap(counter: InertiaCounter, floor: float = OVERLAP_EIGENVALUE_FLOOR
                  ) -> OverlapCheck:
    """Raise FermiError if S has eigenvalues below ``floor`` (near-linear dependence).

    The Krylov estimate of the smallest eigenvalue settles it when it lies far above the
    floor; otherwise the count of eigenvalues below ``floor``, the inertia of
    ``S - floor * I``, does.
    """
    smallest = smallest_eigenvalue(counter.overlap)
    if smallest > ESTIMATE_MARGIN * floor:  # False for NaN
        return OverlapCheck(smallest, 0)
    negative, zero, _ = counter.inertia_of(counter.overlap, floor, definite=True)
    if negative + zero:
        raise FermiError(
            f"overlap matrix S is near-singular: {negative + zero} of its eigenvalues are below "
            f"{floor:g} (basis functions nearly linearly dependent: atoms too close, or a basis "
            "too diffuse for this structure); check the geometry or use a less diffuse basis"
        )
    return OverlapCheck(smallest, 1)


def occupied_states(n_electrons: int, n_orbitals: int) -> int:
    """Closed-shell occupation ``n_electrons / 2``, checked against the basis size."""
    if n_electrons % 2:
        raise FermiError(
            f"{n_electrons} electrons: a closed-shell Fermi level needs an even count; "
            "change --charge"
        )
    n_occupied = n_electrons // 2
    if not 0 < n_occupied < n_orbitals:
        raise FermiError(
            f"{n_electrons} electrons fill {n_occupied} of {n_orbitals} orbitals; need at least "
            "one occupied and one empty state"
        )
    return n_occupied


def fermi_level(
    counter: InertiaCounter,
    n_occupied: int,
    guess: tuple[float, float],
    tol: float = FERMI_TOLERANCE,
) -> FermiResult:
    """Bisect σ until exactly ``n_occupied`` states lie below it (or the bracket closes).

    Args:
        counter: the inertia counter of (H, S).
        n_occupied: states to fill.
        guess: an initial ``(lower, upper)`` energy range in eV; it is widened until it
            brackets the Fermi level.
        tol: bracket width (eV) at which a gapless (metallic) count stops.
    """
    lower, upper = sorted(float(x) for x in guess)
    width = max(upper - lower, 1.0)
    count_lower, _ = counter.count_below(lower)
    while count_lower >= n_occupied:  # widen downwards until fewer states lie below
        _check_width(width, lower, upper)
        if count_lower == n_occupied:
            return _found(lower, n_occupied, (lower, upper), counter)
        upper, lower = lower, lower - width
        width *= 2
        count_lower, _ = counter.count_below(lower)
    count_upper, _ = counter.count_below(upper)
    while count_upper <= n_occupied:  # widen upwards until more states lie below
        _check_width(width, lower, upper)
        if count_upper == n_occupied:
            return _found(upper, n_occupied, (lower, upper), counter)
        lower, count_lower, upper = upper, count_upper, upper + width
        width *= 2
        count_upper, _ = counter.count_below(upper)
    moved: list[bool] = []  # which end each step moved (True: the lower one)
    for _ in range(MAX_BISECTIONS):
        # interpolate unless the last two steps moved the same end (regula falsi stalling)
        interpolate = len(moved) < 2 or moved[-1] != moved[-2]
        sigma = _next_shift(lower, upper, count_lower, count_upper, n_occupied, interpolate)
        count, zero = counter.count_below(sigma)
        if count == n_occupied and zero == 0:
            return _found(sigma, n_occupied, (lower, upper), counter)
        if count < n_occupied:
            lower, count_lower = sigma, count
        else:
            upper, count_upper = sigma, count
        moved.append(count < n_occupied)
        if upper - lower < tol:
            break
    sigma = 0.5 * (lower + upper)
    count, _ = counter.count_below(sigma)
    return FermiResult(sigma, n_occupied, count, (lower, upper), False, counter.factorizations)


def _found(sigma: float, n_occupied: int, bracket: tuple[float, float], counter) -> FermiResult:
    """σ with exactly ``n_occupied`` states below it: inside the gap."""
    return FermiResult(sigma, n_occupied, n_occupied, bracket, True, counter.factorizations)


def _check_width(width: float, lower: float, upper: float) -> None:
    if not np.isfinite(width) or width > MAX_BRACKET:
        raise FermiError(
            f"no energy window up to {MAX_BRACKET:g} eV ([{lower:.4g}, {upper:.4g}] eV tried) "
            "brackets the electron count; H or S is not usable (check the model and the overlap)"
        )


def _next_shift(lower: float, upper: float, count_lower: int, count_upper: int, n_occupied: int,
                interpolate: bool) -> float:
    """Next σ: where a locally uniform density of states puts the gap above state
    ``n_occupied`` (``interpolate``), else the midpoint of the bracket.

    The staircase ``count(σ)`` is close to linear over a narrow bracket, so interpolation
    saves many bisection steps; falling back to the midpoint whenever one end stays fixed
    bounds the worst case by twice bisection's.
    """
    width = upper - lower
    if not interpolate or count_upper <= count_lower:
        return lower + 0.5 * width
    fraction = (n_occupied + 0.5 - count_lower) / (count_upper - count_lower)
    margin = 1.0e-3  # never land on the bracket ends themselves
    return lower + width * min(max(fraction, margin), 1.0 - margin)


def rayleigh_bounds(hamiltonian, overlap) -> tuple[float, float]:
    """``min`` and ``max`` of ``H_ii / S_ii``: Rayleigh quotients, so inside the spectrum."""
    from mpi4py import MPI

    h = hamiltonian.getDiagonal().getArray()
    s = overlap.getDiagonal().getArray()
    ratio = h / s
    comm = hamiltonian.getComm().tompi4py()
    low = float(ratio.min()) if len(ratio) else np.inf
    high = float(ratio.max()) if len(ratio) else -np.inf
    return comm.allreduce(low, op=MPI.MIN), comm.allreduce(high, op=MPI.MAX)
