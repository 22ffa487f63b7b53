"""Fermi level, HOMO, LUMO and the states near them from one factorisation per shift.

One LDLᵀ factorisation of ``H - σ S`` gives two things (:class:`~ehpc.infer.solve.ShiftInvert`):
the number ``c`` of states below σ (Sylvester inertia) and, by shift-and-invert
Krylov-Schur, the ``k`` states nearest σ.  Together they place the computed window in the
spectrum: its lowest state is state ``c - b`` (``b`` of the window lie below σ).  With
``n`` occupied states the HOMO is state ``n - 1`` and the LUMO state ``n`` (0-based), so
when both fall inside the window E_F, HOMO, LUMO and the gap are known.  Otherwise σ is
moved by the missing number of states divided by the window's local density of states
and the step repeats; a window that misses by fewer states than it holds is first widened
on the same factor (a solve is cheap next to a factorisation).  For a gapped system with
σ₀ within a few windows of the gap this takes one or two factorisations; the inertia
bisection of :mod:`ehpc.infer.fermi` remains as ``method="bisection"`` and as the fallback.

A level whose members lie within ``tol`` of each other is one degenerate level.  If the
HOMO and LUMO belong to the same level it is partly filled: HOMO = LUMO = E_F = the
level, gap 0, and the occupancy (states filled of the level's states) is reported;
a gap is never taken across such a level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fermi import (
    FERMI_TOLERANCE,
    SHIFT_NUDGE,
    FermiError,
    InertiaCounter,
    fermi_level,
    rayleigh_bounds,
)
from .solve import Eigenstates, ShiftInvert, SolveError, Window

#: E_F search methods: shift-and-invert windows placed by inertia, or inertia bisection
METHODS = ("window", "bisection")

#: fewest states solved for per shift: a Krylov solve is cheap next to the factorisation,
#: and a wider window is likelier to hold both HOMO and LUMO
MIN_WINDOW = 16

#: states solved for at a shift whose count shows the window cannot reach the HOMO: only
#: the local density of states is wanted there
PROBE_STATES = MIN_WINDOW

#: widest window solved on one factor before the shift is moved instead
MAX_WINDOW = 512

#: factorisations the window path may use before it falls back to bisection
MAX_SHIFTS = 8

#: iterations of the order-statistic bisection for σ₀ (range / 2^60: below round-off)
QUANTILE_STEPS = 60


@dataclass(frozen=True)
class NearFermi:
    """Where the electron count puts the Fermi level.

    Attributes:
        fermi_level: mid-gap for a gapped system, else the partly filled level (eV).
        homo, lumo: states ``n_occupied`` and ``n_occupied + 1`` (equal when a degenerate
            level is partly filled).
        gap: ``lumo - homo`` (0 for a partly filled level).
        gap_found: whether HOMO and LUMO are distinct levels (more than ``tol`` apart).
        level_states: states in the partly filled level (0 when gapped).
        level_filled: how many of them are occupied (0 when gapped).
        n_occupied: states to fill.
        sigma: the last shift factorised (eV).
        count: states below ``sigma``.
        bracket: ``(homo, lumo)``: E_F lies in it.
        method: ``"window"``, ``"bisection"`` or ``"window+bisection"`` (fallback).
        factorizations: LDLᵀ factorisations of ``H - σ S`` (bisection and solve included;
            the overlap check's, of S when it needs one, is not one of them).
        shifts: every σ factorised for a window, in order (eV).
    """

    fermi_level: float
    homo: float
    lumo: float
    gap: float
    gap_found: bool
    level_states: int
    level_filled: int
    n_occupied: int
    sigma: float
    count: int
    bracket: tuple[float, float]
    method: str
    factorizations: int
    shifts: tuple[float, ...]


@dataclass(frozen=True)
class _Miss:
    """The window does not settle E_F: it lacks states ``up`` (True) or down, ``states`` away.

    ``placement`` is set when HOMO and LUMO are inside and only the edges of the
    degenerate level or of the nev states nearest E_F might lie outside.
    """

    up: bool
    states: int
    placement: tuple | None = None


def initial_shift(hamiltonian, overlap, n_occupied: int) -> float:
    """σ₀ from sparse data only: where the diagonal Rayleigh quotients ``H_ii / S_ii``
    (the on-site energies, a zero-hopping spectrum) put the Fermi level.

    It is the midpoint of the ``n_occupied``-th and next smallest quotient, found by a
    bisection whose every step is one integer all-reduce, so it is O(N / P) per rank.
    """
    from mpi4py import MPI

    ratio = hamiltonian.getDiagonal().getArray() / overlap.getDiagonal().getArray()  # [n_local]
    comm = hamiltonian.getComm().tompi4py()
    low, high = rayleigh_bounds(hamiltonian, overlap)

    def smallest(k: int) -> float:  # k-th smallest quotient, 1-based
        lo, hi = low, high
        for _ in range(QUANTILE_STEPS):
            mid = 0.5 * (lo + hi)
            if comm.allreduce(int(np.count_nonzero(ratio <= mid)), op=MPI.SUM) >= k:
                hi = mid
            else:
                lo = mid
        return hi

    n = hamiltonian.getSize()[0]
    return 0.5 * (smallest(n_occupied) + smallest(min(n_occupied + 1, n)))


def near_fermi(
    hamiltonian,
    overlap,
    counter: InertiaCounter,
    n_occupied: int,
    nev: int,
    sigma0: float | None = None,
    tol: float = FERMI_TOLERANCE,
    method: str = "window",
    eigenvectors: bool = False,
    log=None,
    start_offset: float | None = None,
) -> tuple[NearFermi, Eigenstates]:
    """E_F, HOMO, LUMO and the ``nev`` states nearest E_F, whatever ``nev`` is.

    Args:
        hamiltonian, overlap: assembled MPIAIJ H (eV) and SPD S with the same pattern.
        counter: inertia counter of (H, S) (used by the bisection path and fallback).
        n_occupied: states to fill.
        nev: states nearest E_F to return (the window solved may be wider).
        sigma0: first shift in eV (None: :func:`initial_shift` plus ``start_offset``).
        tol: eV; levels closer than this are one degenerate level, and the bisection
            stops at a bracket this narrow.
        method: one of :data:`METHODS`.
        eigenvectors: also return this rank's rows of the eigenvectors.
        log: ``print``-like callable for progress lines.
        start_offset: eV added to the on-site estimate when ``sigma0`` is None: how far E_F
            lay above that estimate in the model's training structures
            (``HamiltonianModel.fermi_offset_eV``).
    """
    if method not in METHODS:
        raise FermiError(f"--fermi-method {method!r}: choose one of {', '.join(METHODS)}")
    search = _Search(hamiltonian, overlap, counter, n_occupied, nev, tol, eigenvectors,
                     log or (lambda *_: None))
    if method == "bisection":
        return search.bisect(rayleigh_bounds(hamiltonian, overlap), "bisection")
    if sigma0 is not None:
        sigma, source = float(sigma0), "--fermi-guess"
    else:
        sigma = initial_shift(hamiltonian, overlap, n_occupied) + (start_offset or 0.0)
        source = "on-site estimate" + (f" {start_offset:+.3f} eV (model's training E_F)"
                                       if start_offset else "")
    search.log(f"     fermi: first shift {sigma:.4f} eV from the {source}")
    for _ in range(MAX_SHIFTS):
        found = search.attempt(sigma)
        if not isinstance(found, _Miss):
            return search.finish(*found, "window")
        sigma = search.next_shift(found)
    search.log(f"     fermi: no window settled E_F after {MAX_SHIFTS} shifts; bisecting")
    lower, upper = search.bracket
    guess = (lower, upper) if np.isfinite(lower) and np.isfinite(upper) else \
        rayleigh_bounds(hamiltonian, overlap)
    return search.bisect(guess, "window+bisection")


class _Search:
    """State of one E_F search: shifts tried, bracket, factorisations, last window."""

    def __init__(self, hamiltonian, overlap, counter, n_occupied, nev, tol, eigenvectors, log):
        self.hamiltonian, self.overlap, self.counter = hamiltonian, overlap, counter
        self.n = hamiltonian.getSize()[0]
        self.n_occupied, self.nev, self.tol = n_occupied, nev, tol
        self.eigenvectors, self.log = eigenvectors, log
        # beyond nev, a margin so that the nev nearest E_F (not σ) are inside even when the
        # density of states differs 3:1 across the gap: 2 nev states cost about as many
        # Krylov steps as 1.5 nev (359 against 364 solves at 2,808 orbitals), while
        # widening on the same factor costs a second solve (docs/BENCHMARKS.md)
        self.k = min(self.n, max(2 * nev, MIN_WINDOW))
        self.max_window = min(self.n, max(MAX_WINDOW, 4 * nev))
        self.shifts: list[float] = []
        self.points: list[tuple[float, float]] = []  # (energy, states below it) known exactly
        self.bracket = (-np.inf, np.inf)
        self.factorizations = 0
        self.window: Window | None = None

    def attempt(self, sigma: float, known_below: int | None = None):
        """Factorise at σ and solve, widening on the same factor while that can reach
        HOMO and LUMO; returns ``(window, placement)`` or a :class:`_Miss`."""
        for _ in range(2):  # a second try only if σ hit an eigenvalue
            self.log(f"     fermi: factorising H - σS at σ = {sigma:.6f} eV "
                     f"({self.n} orbitals, {self._nonzeros()} nonzeros) ...")
            shifted = ShiftInvert(self.hamiltonian, self.overlap, sigma, self.eigenvectors)
            self.factorizations += 1
            self.shifts.append(sigma)
            inertia = shifted.inertia()
            if inertia is None and known_below is None:
                shifted.destroy()
                raise FermiError(
                    "the -st_ options replaced the direct LDLᵀ solver, so the shift-and-invert "
                    "factor gives no inertia; use --fermi-method bisection or a direct -st_pc_type"
                )
            below, zero = (known_below, 0) if inertia is None else inertia[:2]
            if not zero:
                break
            shifted.destroy()
            sigma += SHIFT_NUDGE * max(1.0, abs(sigma))
        try:
            return self._widen(shifted, below)
        finally:
            shifted.destroy()

    def _widen(self, shifted: ShiftInvert, below: int):
        self.points.append((shifted.sigma, float(below)))
        far = abs(below - self.n_occupied) > self.k  # out of reach of this factor's windows
        while True:
            k = min(self.k, PROBE_STATES) if far else self.k
            self.log(f"     fermi: {below} states below σ (need {self.n_occupied}); solving "
                     f"for the {k} states nearest σ ...")
            window = shifted.window(k, below)
            self.window = window
            # just below its lowest state there are `first` states, just above its highest last + 1
            self.points += [(float(window.values[0]), window.first + 0.5),
                            (float(window.values[-1]), window.last + 0.5)]
            found = self._place(window)
            if far and isinstance(found, _Miss):
                return found
            if not isinstance(found, _Miss):
                return window, found
            if self.k >= self.max_window and found.placement is not None:
                return window, found.placement  # as complete as a window on this factor gets
            if found.states > self.k or self.k >= self.max_window:
                return found
            self.k = min(self.max_window, self.k + 2 * self._missing(window, found))

    def _place(self, window: Window):
        """HOMO/LUMO/E_F from the window, or how far the window is from them."""
        values, first, last = window.values, window.first, window.last
        homo_at, lumo_at = self.n_occupied - 1, self.n_occupied  # 0-based spectrum indices
        if homo_at < first:
            return _Miss(up=False, states=first - homo_at)
        if lumo_at > last:
            return _Miss(up=True, states=lumo_at - last)
        a, b = homo_at - first, lumo_at - first  # window positions of HOMO and LUMO
        if values[b] - values[a] <= self.tol:  # one level holds both: partly filled
            while a > 0 and values[a] - values[a - 1] <= self.tol:
                a -= 1
            while b < len(values) - 1 and values[b + 1] - values[b] <= self.tol:
                b += 1
            level = float(values[a:b + 1].mean())
            placement = (level, level, level, b - a + 1, lumo_at - first - a)
            if a == 0 and first > 0:  # the level may go on below the window
                return _Miss(up=False, states=1, placement=placement)
            if b == len(values) - 1 and last < self.n - 1:
                return _Miss(up=True, states=1, placement=placement)
        else:
            homo, lumo = float(values[a]), float(values[b])
            placement = (0.5 * (homo + lumo), homo, lumo, 0, 0)
        return self._nearest_complete(window, placement) or placement

    def _nearest_complete(self, window: Window, placement: tuple) -> _Miss | None:
        """A miss if a state outside the window could be among the nev nearest E_F;
        ``states`` then estimates how many more it needs on that side."""
        values, energy = window.values, placement[0]
        reach = np.sort(np.abs(values - energy))[min(self.nev, len(values)) - 1]
        density = (len(values) - 1) / max(float(values[-1] - values[0]), self.tol)  # per eV
        if window.first > 0 and reach > energy - values[0]:
            short = reach - (energy - values[0])
            return _Miss(up=False, states=1 + int(short * density), placement=placement)
        if window.last < self.n - 1 and reach > values[-1] - energy:
            short = reach - (values[-1] - energy)
            return _Miss(up=True, states=1 + int(short * density), placement=placement)
        return None

    def _missing(self, window: Window, miss: _Miss) -> int:
        """States to add on the short side (the window grows on both sides of σ), in one
        step: every widening is another Krylov solve (for the new states only)."""
        # HOMO/LUMO still outside: beyond them, half the nev nearest E_F lie further out
        margin = 0 if miss.placement is not None else self.nev // 2 + 1
        return max(miss.states + margin, len(window.values) // 4, 2)

    def next_shift(self, miss: _Miss) -> float:
        """Next σ where the staircase N(E) of states below E reaches ``n_occupied``.

        Every factorisation gives exact points of N(E): (σ, count) and the window's two
        edges.  Between the nearest points on either side of the target N is interpolated
        linearly (regula falsi on the staircase); with points on one side only, it is
        extrapolated with the last window's local density of states.
        """
        target = float(self.n_occupied)  # N(E) inside the gap above state n_occupied
        under = [p for p in self.points if p[1] < target]
        over = [p for p in self.points if p[1] > target]
        low = max(under, key=lambda p: (p[1], p[0]), default=None)
        high = min(over, key=lambda p: (p[1], -p[0]), default=None)
        self.bracket = (low[0] if low else -np.inf, high[0] if high else np.inf)
        if low and high and high[0] > low[0]:
            fraction = (target - low[1]) / (high[1] - low[1])
            return float(low[0] + fraction * (high[0] - low[0]))
        values = self.window.values
        spread = float(values[-1] - values[0])
        anchor = high if not miss.up and high else low if miss.up and low else None
        if len(values) > 1 and spread > self.tol and anchor is not None:
            density = (len(values) - 1) / spread  # states per eV
            return float(anchor[0] + (target - anchor[1]) / density)
        # no density to go by: step by the distance moved so far, at least 1 eV
        step = max(1.0, abs(self.shifts[-1] - self.shifts[0]))
        return self.window.sigma + (step if miss.up else -step)

    def bisect(self, guess, method: str) -> tuple[NearFermi, Eigenstates]:
        """Inertia bisection to a σ inside the gap (or on the level), then one window there."""
        before = self.counter.factorizations
        self.log(f"     fermi: bisecting on inertia in [{guess[0]:.4f}, {guess[1]:.4f}] eV ...")
        result = fermi_level(self.counter, self.n_occupied, guess, self.tol)
        self.factorizations += self.counter.factorizations - before
        self.counter.release()  # the counting factor must not stay beside the solve's
        self.bracket = result.bracket
        known = result.count if result.gap_found else None
        found = self.attempt(result.sigma, known)
        if isinstance(found, _Miss):
            raise SolveError(
                f"the {self.k} states nearest σ = {result.sigma:.6f} eV do not reach the "
                f"HOMO/LUMO (states {self.n_occupied}/{self.n_occupied + 1}); raise --nev"
            )
        return self.finish(*found, method)

    def finish(self, window: Window, placement, method: str) -> tuple[NearFermi, Eigenstates]:
        energy, homo, lumo, level_states, level_filled = placement
        fermi = NearFermi(
            fermi_level=energy, homo=homo, lumo=lumo, gap=lumo - homo, gap_found=level_states == 0,
            level_states=level_states, level_filled=level_filled, n_occupied=self.n_occupied,
            sigma=window.sigma, count=window.below, bracket=(homo, lumo), method=method,
            factorizations=self.factorizations, shifts=tuple(self.shifts),
        )
        return fermi, self._states(window, fermi)

    def _states(self, window: Window, fermi: NearFermi) -> Eigenstates:
        """The nev window states nearest E_F, ascending."""
        nearest = np.argsort(np.abs(window.values - fermi.fermi_level), kind="stable")[:self.nev]
        keep = np.sort(nearest)
        vectors = None if window.vectors is None else window.vectors[keep]
        return Eigenstates(window.values[keep], vectors, fermi.homo, fermi.lumo,
                           window.iterations, window.residuals[keep])

    def _nonzeros(self) -> int:
        from petsc4py import PETSc

        return int(self.hamiltonian.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)["nz_used"])
