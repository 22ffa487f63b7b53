"""How local a basis is in a crystal: the band error of cutting its blocks at each radius.

One SCF of a reference crystal, the band-mesh rebuild of H(R) out to the largest radius
asked (plus the overlap decay radius, so nothing aliases), then for every cutoff r_c the
bands within 2 eV of E_F of

* (b) H cut at r_c with the exact S, the truncation ehpc's labels and inference use, and
* (a) H and S both cut at r_c (``None`` where the cut S(k) is not positive definite),

against the SCF's own bands (see :mod:`ehpc.dft.floor`).  ``ehpc-basis --locality``
prints the table, so a basis and cutoff can be chosen before labelling anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from ..basis import Basis
from ..graph import neighbour_list
from ..units import HARTREE_TO_EV
from .floor import band_error, generalised_bands
from .periodic import (ALIAS_TOL, FloorProbe, RealSpaceFock, band_kmesh, blocks_within,
                       build_cell, caller_mesh, overlap_decay_radius, run_krks)
from .scf import SCF_CONV_TOL, Smearing, scf_attrs


@dataclass(frozen=True)
class CutoffRow:
    """Floor of one cutoff (meV); ``cut_s_*`` is None when the cut S(k) is not positive definite."""

    cutoff: float
    neighbours: float  # pairs per atom within the cutoff, the atom itself included
    exact_s_mae: float
    exact_s_max: float
    cut_s_mae: float | None
    cut_s_max: float | None
    overlap_min_eig: float


@dataclass
class LocalityTable:
    """The locality of ``basis`` in one reference crystal."""

    basis: str
    structure: str
    n_atoms: int
    nao_per_cell: int
    kmesh: tuple[int, int, int]
    band_kmesh: tuple[int, int, int]
    decay_radius: float  # Å where every overlap block falls below ALIAS_TOL
    homo: float  # eV, over the sampled k
    lumo: float
    rows: list[CutoffRow] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def gap(self) -> float:
        return self.lumo - self.homo

    def cutoff_for(self, tolerance_meV: float) -> float | None:
        """Smallest listed cutoff whose floor (H cut, S exact) has max error ≤ tolerance,
        and stays so for every larger one listed."""
        good = None
        for row in reversed(self.rows):
            if row.exact_s_max > tolerance_meV:
                break
            good = row.cutoff
        return good


def locality_table(atoms: Atoms, basis: Basis, cutoffs, kmesh=(4, 4, 4), xc: str = "pbe",
                   name: str = "reference", smearing: Smearing | None = None,
                   conv_tol: float = SCF_CONV_TOL) -> LocalityTable:
    """The floor of every cutoff in ``cutoffs`` (Å) for ``basis`` in the crystal ``atoms``."""
    start = time.perf_counter()
    cutoffs = sorted(float(c) for c in cutoffs)
    pcell = build_cell(atoms, basis, name)
    mf = run_krks(pcell, xc, kmesh, name, conv_tol=conv_tol, smearing=smearing)
    decay = overlap_decay_radius(basis, atoms.numbers, ALIAS_TOL)
    lattice = np.asarray(atoms.cell[:], dtype=np.float64)
    mesh = band_kmesh(lattice[list(pcell.order)], cutoffs[-1] + decay)
    fock = RealSpaceFock(mf, mesh)
    probe = FloorProbe(fock, pcell, atoms, basis)
    mol = pcell.cell.to_mol()
    nao = basis.nao_per_atom(atoms.numbers)
    fermi = float(scf_attrs(mf, name, xc, pcell.cell.nelectron, 0.0)["fermi_level"])
    n_occ = None if smearing is not None else int(pcell.cell.nelectron) // 2
    true = generalised_bands(probe.h_true, probe.s_exact)  # [n_k, nao_cell]
    rows = []
    for cutoff in cutoffs:
        pairs, h, s = blocks_within(atoms, fock, nao, cutoff, mol)
        h_k, s_cut = probe.bloch(pairs, h * HARTREE_TO_EV), probe.bloch(pairs, s)
        exact = band_error(generalised_bands(h_k, probe.s_exact), true, fermi, n_occ)
        min_eig = min(float(np.linalg.eigvalsh(m)[0]) for m in s_cut)
        cut_mae = cut_max = None
        if min_eig > 0:
            try:
                cut_mae, cut_max = band_error(generalised_bands(h_k, s_cut), true, fermi, n_occ)[:2]
            except np.linalg.LinAlgError:
                pass
        rows.append(CutoffRow(cutoff, _neighbours(atoms, cutoff), exact[0], exact[1], cut_mae,
                              cut_max, min_eig))
    if n_occ is not None:
        homo, lumo = float(true[:, n_occ - 1].max()), float(true[:, n_occ].min())
    else:
        homo = lumo = fermi
    return LocalityTable(basis.name, name, len(atoms), int(pcell.cell.nao),
                         tuple(int(k) for k in kmesh), caller_mesh(mesh, pcell.order), decay,
                         homo, lumo,
                         rows, time.perf_counter() - start)


def _neighbours(atoms: Atoms, cutoff: float) -> float:
    """Mean number of atoms within ``cutoff`` of each atom (itself included)."""
    edges = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, cutoff, self_edges=True)
    return len(edges.atom_pairs()) / len(atoms)
