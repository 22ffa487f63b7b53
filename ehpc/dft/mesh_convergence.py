"""How the Kohn-Sham levels of a crystal move with the SCF's k-mesh.

A label's H is the Fock matrix of its own SCF density, so it carries that density's k-mesh
error, and a model trained on it learns the error too.  A large cell labelled at Γ samples
the Brillouin zone as its supercell does (216 atoms of cubic silicon at Γ are a 3×3×3
mesh of the 8-atom cell), so training cells and transfer cells agree only as far as both
meshes are converged.  For SCF meshes of increasing density this gives the absolute
levels at the lattice's special points (non-self-consistent, as PySCF's ``get_bands``)
and how far each lies from the densest mesh's: the mesh's share of a label's error,
beside the truncation floor of :mod:`ehpc.dft.floor`.  ``ehpc-basis --kmesh-convergence``
prints the table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from ..basis import Basis
from ..units import HARTREE_TO_EV
from .floor import FLOOR_WINDOW_EV
from .periodic import build_cell, levels_at_kpts, run_krks
from .scf import SCF_CONV_TOL, Smearing, fermi_and_frontier


@dataclass(frozen=True)
class MeshRow:
    """One SCF mesh: its E_F and its levels at the special points, with their shifts from
    the densest mesh's (meV)."""

    kmesh: tuple[int, int, int]
    fermi_eV: float
    levels_eV: list  # [n_points][n_bands] the bands near E_F at each special point
    mae_meV: float
    max_meV: float
    fermi_shift_meV: float
    gap_shift_meV: float | None  # of the gap between the special points' levels; None if smeared
    wall_time_s: float


@dataclass
class MeshTable:
    """The k-mesh convergence of ``basis`` in one reference crystal."""

    basis: str
    structure: str
    points: list  # special point names
    bands: list  # band indices compared (0-based, ascending energy)
    rows: list[MeshRow] = field(default_factory=list)

    def mesh_for(self, tolerance_meV: float) -> tuple[int, int, int] | None:
        """The coarsest listed mesh whose levels lie within ``tolerance_meV`` (max) of the
        densest mesh's, and stay so for every denser one listed."""
        good = None
        for row in reversed(self.rows[:-1]):
            if row.max_meV > tolerance_meV:
                break
            good = row.kmesh
        return good


def scaled_meshes(densities, periodic_axes) -> list[tuple[int, int, int]]:
    """``n`` points along every axis of ``periodic_axes``, one along the others, per ``n``
    in ``densities``, coarsest first."""
    axes = [bool(a) for a in periodic_axes]
    return [tuple(int(n) if a else 1 for a in axes) for n in sorted(set(densities))]


def special_points(atoms: Atoms) -> tuple[list[str], np.ndarray]:
    """Names and fractional coordinates (in the caller's reciprocal vectors) of the
    lattice's special k-points, Γ first."""
    points = atoms.cell.bandpath(npoints=0).special_points
    names = sorted(points, key=lambda p: (p != "G", p))
    return names, np.array([points[p] for p in names], dtype=np.float64)


def mesh_table(atoms: Atoms, basis: Basis, meshes, xc: str = "pbe", name: str = "reference",
               smearing: Smearing | None = None,
               conv_tol: float = SCF_CONV_TOL) -> MeshTable:
    """The levels near E_F at the special points of ``atoms`` for each SCF mesh in
    ``meshes`` (coarse to dense), scored against the last one's."""
    names, kpts_frac = special_points(atoms)
    pcell = build_cell(atoms, basis, name)
    results = []
    for kmesh in meshes:
        start = time.perf_counter()
        mf = run_krks(pcell, xc, kmesh, f"{name} {'x'.join(map(str, kmesh))}", conv_tol,
                      smearing=smearing)
        levels = levels_at_kpts(mf, pcell, kpts_frac) * HARTREE_TO_EV  # [n_points, nao_cell]
        fermi = fermi_and_frontier(mf)[0] * HARTREE_TO_EV
        results.append((tuple(int(k) for k in kmesh), fermi, levels, time.perf_counter() - start))
    dense_fermi, dense = results[-1][1], results[-1][2]  # [n_points, nao_cell]
    # the bands with a level within the floor's window of the densest mesh's E_F
    bands = np.flatnonzero((np.abs(dense - dense_fermi) <= FLOOR_WINDOW_EV).any(axis=0))
    n_occ = None if smearing is not None else int(pcell.cell.nelectron) // 2
    table = MeshTable(basis.name, name, names, bands.tolist())
    for kmesh, fermi, levels, seconds in results:
        shift = np.abs(levels[:, bands] - dense[:, bands]) * 1e3  # [n_points, n_bands] meV
        gap_shift = None
        if n_occ is not None:
            gap_shift = float((_gap(levels, n_occ) - _gap(dense, n_occ)) * 1e3)
        table.rows.append(MeshRow(kmesh, float(fermi), levels[:, bands].tolist(),
                                  float(shift.mean()), float(shift.max()),
                                  float((fermi - dense_fermi) * 1e3), gap_shift, seconds))
    return table


def _gap(levels: np.ndarray, n_occ: int) -> float:
    """Lowest empty minus highest occupied level over the sampled points (eV)."""
    return float(levels[:, n_occ].min() - levels[:, n_occ - 1].max())
