"""Real-space Kohn-Sham H(R) and S(R) of a crystal from a PySCF k-point calculation.

Method
------
1. SCF: restricted Kohn-Sham on the Γ-centred ``kmesh`` with GTH pseudopotentials; the
   Coulomb and XC potentials are evaluated with PySCF's multigrid integrator.  A Γ-only
   mesh (large supercells) runs as a real-arithmetic RKS, several times faster, and
   agrees with the one-k-point KRKS to ~1e-7 eV on H (tests/dft/test_gamma_path.py).
2. H(R): the Bloch Fock matrix ``H(k) = Σ_R e^{ik·R} H(R)`` of the converged density is
   smooth in k, so sampling it on an N1 x N2 x N3 mesh and transforming back returns
   ``Σ_L H(R + L)`` over the lattice ``L`` of the N-fold supercell, not ``H(R)`` itself.
   Transforming back the SCF mesh's Fock matrices would therefore fold distant blocks
   onto the stored ones.  Instead the Fock matrix is rebuilt non-self-consistently from
   the converged density (exactly what PySCF's ``get_bands`` does) on a denser "band"
   mesh whose supercell's shortest lattice vector exceeds ``cutoff + r_decay``.
   ``r_decay`` is where the overlap of the two most diffuse functions of any element
   pair falls below ``alias_tol``; H decays with S (a one-electron operator between
   Gaussians), so every folded-in image lies where H has vanished to that tolerance.
   Time reversal, ``H(-k) = H(k)*``, halves the k-points needed.
   H(k) is the kinetic lattice sum, the short-range and non-local GTH pseudopotential
   (PySCF's analytic integrals), and one local potential on the grid (Hartree, XC and
   the long-range pseudopotential) integrated at k by the multigrid in memory-bounded
   slices (:mod:`ehpc.dft.local_potential`).  The two pseudopotential parts together
   (:func:`pseudopotential_at_kpts`) agree with PySCF's analytic GDF route to ~1e-9 Ha
   and, unlike it, stay affordable for hundreds of atoms.
3. S(R): exact, from molecular overlap integrals between the home cell and the cell
   displaced by R (no lattice sum, no aliasing).

Accuracy (tests/dft/test_periodic_bands.py): for primitive Si in gth-szv/PBE on a 2x2x2
SCF mesh, bands rebuilt from the stored blocks match ``get_bands`` off the mesh to
7.5 / 1.4 / 0.3 / 0.1 meV with cutoffs of 11 / 12 / 12.5 / 13 Å: the cutoff, not the
transform, limits the accuracy, and basis functions as diffuse as gth-szv need ~13 Å.
With gth-dzvp, bands within 2 eV of the Fermi level reach 0.3 / 0.07 meV at 13 / 14 Å,
but high-lying empty bands, governed by a nearly singular S(k), stay off by tens of meV
even at 15 Å, and below ~12 Å the truncated S(k) is not even positive definite.
The whole procedure is rotation covariant: PySCF's real-space grid is spanned by the
lattice vectors and turns with the cell (tests/dft/test_rotation_convention.py).

Left-handed cells are handed to PySCF with two lattice vectors swapped (the same
lattice), since PySCF's integrals assume a right-handed frame; shifts R are always in
the caller's lattice vectors.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
from ase import Atoms

from ..basis import Basis
from ..io.dataset import HamiltonianRecord
from ..structure import StructureError
from ..units import HARTREE_TO_EV, pyscf_bohr_to_angstrom
from .blocks import gather_blocks, make_record, pair_list
from .floor import (TruncationFloor, band_error, check_floor, floor_kpoints, generalised_bands,
                    measure_floor)
from .local_potential import local_potential_g, matrices_at_kpts
from .scf import (SCF_CONV_TOL, SCF_MAX_CYCLE, Smearing, check_converged, check_orbital_count,
                  pyscf_atoms, scf_attrs)

#: overlap below which distant images may be folded onto the stored blocks
ALIAS_TOL = 1e-7
#: distance step (Å) of the overlap-decay scan
_DECAY_STEP = 0.25


@dataclass(frozen=True)
class PySCFCell:
    """A PySCF cell and how its lattice vectors relate to the caller's.

    Attributes:
        cell: the built ``pyscf.pbc.gto.Cell``.
        order: PySCF lattice vector ``a`` is the caller's vector ``order[a]``.
    """

    cell: object
    order: tuple[int, int, int]


def build_cell(atoms: Atoms, basis: Basis, name: str, precision: float | None = None) -> PySCFCell:
    """The PySCF cell of a fully periodic structure (positions kept as given, in Å).

    Raises:
        StructureError: the structure is only partly periodic or the basis has no
            pseudopotential.
    """
    from pyscf.pbc import gto

    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.all():
        raise StructureError(
            f"{name}: periodic along axes {np.flatnonzero(pbc).tolist()} only; ehpc labels fully "
            "periodic cells, so set pbc=True and add vacuum along the open directions"
        )
    if not basis.is_pseudo:
        raise StructureError(
            f"{name}: basis {basis.name!r} has no pseudopotential; periodic labels need a GTH "
            "basis such as gth-szv or gth-dzvp"
        )
    lattice = np.asarray(atoms.cell[:], dtype=np.float64)
    order = (1, 0, 2) if np.linalg.det(lattice) < 0 else (0, 1, 2)
    cell = gto.Cell(
        atom=pyscf_atoms(atoms),
        a=lattice[list(order)],
        basis=basis.name,
        pseudo=basis.pseudo,
        unit="Angstrom",
        verbose=0,
    )
    if precision is not None:
        cell.precision = precision
    # only to pass PySCF's parity check: k-point RKS fills the bands of all k together
    cell.spin = basis.n_electrons(atoms.numbers) % 2
    cell.build()
    return PySCFCell(cell, order)


def run_krks(pcell: PySCFCell, xc: str, kmesh, name: str, conv_tol: float = SCF_CONV_TOL,
             max_cycle: int = SCF_MAX_CYCLE, smearing: Smearing | None = None,
             chkfile: Path | None = None):
    """Converged k-point restricted Kohn-Sham object with the multigrid integrator.

    A Γ-only mesh runs as a real-arithmetic RKS with PySCF's pair multigrid, about five
    times faster than a one-k-point KRKS for a 64-atom cell, and is returned as a
    one-k-point KRKS object holding that converged state (see :func:`_gamma_as_krks`).

    Args:
        pcell: from :func:`build_cell`.
        xc: PySCF functional name.
        kmesh: k-points per caller lattice vector.
        name: structure name for errors.
        conv_tol: SCF energy tolerance in Hartree.
        max_cycle: SCF iteration limit.
        smearing: fractional occupations (metals, semimetals); integer ones if None.
        chkfile: PySCF checkpoint, written every cycle; when it already exists the SCF
            starts from its orbitals, so a rerun after a later failure converges in a
            few cycles instead of repeating the whole SCF.

    Raises:
        SCFNotConverged: the SCF did not reach ``conv_tol`` in ``max_cycle`` cycles.
    """
    from pyscf.pbc import dft

    cell = pcell.cell
    mesh = [int(kmesh[a]) for a in pcell.order]
    gamma_only = mesh == [1, 1, 1]
    if gamma_only:
        mf = dft.RKS(cell, xc=xc).multigrid_numint()
    else:
        mf = dft.KRKS(cell, cell.make_kpts(mesh), xc=xc).multigrid_numint()
    if smearing is not None:
        mf = smearing.apply(mf)
    mf.conv_tol = conv_tol
    mf.max_cycle = max_cycle
    dm0 = None
    if chkfile is not None:
        if _checkpoint_fits(chkfile, cell):
            dm0 = mf.from_chk(str(chkfile))
        mf.chkfile = str(chkfile)
    mf.kernel(dm0)
    check_converged(mf, name, conv_tol, max_cycle)
    if smearing is not None:  # the chemical potential of the converged levels
        mf.mu = smearing.chemical_potential(mf.mo_energy, cell.nelectron)
    return _gamma_as_krks(mf, xc) if gamma_only else mf


def _checkpoint_fits(chkfile, cell) -> bool:
    """Whether ``chkfile`` holds orbitals of this cell's size (a guess from another
    structure of the same name would be projected or fail, so it is started afresh)."""
    from pyscf import lib

    if not Path(chkfile).is_file():
        return False
    try:
        mo_coeff = lib.chkfile.load(str(chkfile), "scf/mo_coeff")
    except (OSError, KeyError):
        return False
    return mo_coeff is not None and np.shape(mo_coeff)[-2] == cell.nao_nr()


def _gamma_as_krks(mf, xc: str):
    """A converged Γ-point RKS as a one-k-point multigrid KRKS (what the band rebuild takes).

    PySCF's own ``to_kscf`` drops the multigrid integrator, which makes every later
    Fock build several times slower, so the state is copied into a fresh KRKS instead.
    """
    from pyscf.pbc import dft

    cell = mf.cell
    out = dft.KRKS(cell, np.zeros((1, 3)), xc=xc).multigrid_numint()
    out.mo_coeff = [np.asarray(mf.mo_coeff)]
    out.mo_occ = [np.asarray(mf.mo_occ)]
    out.mo_energy = [np.asarray(mf.mo_energy)]
    out.e_tot = mf.e_tot
    out.converged = mf.converged
    out.cycles = getattr(mf, "cycles", -1)
    if getattr(mf, "sigma", None):  # smeared: keep the chemical potential for the record
        out.mu, out.sigma = mf.mu, mf.sigma
    return out


def overlap_decay_radius(basis: Basis, numbers, tol: float = ALIAS_TOL) -> float:
    """Distance (Å) beyond which every element pair's overlap block is below ``tol``.

    The overlap range scan of :mod:`ehpc.integrals`, on a ``_DECAY_STEP`` grid.
    """
    from ..integrals import integral_ranges

    return max(integral_ranges("overlap", basis, numbers, tol, step=_DECAY_STEP).values())


def band_kmesh(lattice: np.ndarray, reach: float) -> tuple[int, int, int]:
    """Smallest mesh whose supercell has no nonzero lattice vector shorter than ``reach`` Å.

    Args:
        lattice: lattice vectors as rows in Å.               # [3, 3]
        reach: required length of the supercell's shortest vector.
    """
    lattice = np.asarray(lattice, dtype=np.float64)
    heights = abs(np.linalg.det(lattice)) / np.linalg.norm(
        np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]]), axis=1
    )  # [3] spacing of lattice planes
    mesh = np.maximum(1, np.ceil(reach / np.linalg.norm(lattice, axis=1))).astype(int)
    while _shortest_vector(mesh[:, None] * lattice, heights * mesh, reach) < reach:
        mesh[np.argmin(heights * mesh)] += 1
    return tuple(int(n) for n in mesh)


def _shortest_vector(supercell: np.ndarray, heights: np.ndarray, reach: float) -> float:
    """Length of the shortest nonzero vector of ``supercell`` (exact below ``reach``).

    A vector with integer coefficient n_a is at least ``|n_a| * heights[a]`` long, so
    coefficients beyond ``reach / heights`` cannot give anything shorter than ``reach``.
    """
    bounds = [range(-b, b + 1) for b in np.floor(reach / heights).astype(int)]
    coefficients = np.array([c for c in itertools.product(*bounds) if any(c)])  # [n, 3]
    if len(coefficients) == 0:
        return math.inf  # every plane spacing already exceeds reach
    return float(np.linalg.norm(coefficients @ supercell, axis=1).min())


def half_mesh(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Fractional k-points of a Γ-centred mesh, one of each ``(k, -k)`` pair, and weights.

    Returns:
        ``kpts`` (fractional, PySCF lattice)  # [n_half, 3]
        ``weights``: 1 for k ≡ -k, else 2; they sum to the full mesh size.  # [n_half]
    """
    mesh = np.asarray(mesh)
    index = np.array(list(itertools.product(*[range(n) for n in mesh])))  # [n_full, 3]
    partner = (-index) % mesh  # [n_full, 3]
    keep = [tuple(i) <= tuple(p) for i, p in zip(index, partner)]
    index, partner = index[keep], partner[keep]
    weights = np.where((index == partner).all(axis=1), 1.0, 2.0)
    return index / mesh, weights


#: memory (bytes) PySCF's pseudopotential buffer may take per call (k-points times atoms)
PP_BUFFER_BYTES = 4 * 2**30


def pseudopotential_at_kpts(cell, kpts_abs: np.ndarray) -> np.ndarray:
    """Bloch matrices of the full GTH pseudopotential (local and non-local) at arbitrary k.

    The short-range local and the non-local parts are PySCF's analytic integrals at any k;
    the long-range local part (a smooth potential on the grid) is integrated at k by the
    k-point multigrid.  Together they equal PySCF's analytic GDF ``get_pp`` to ~1e-9 Ha
    (tests/dft/test_periodic_bands.py) at a fraction of its cost for large cells.

    Returns:
        ``V_PP(k)`` in Hartree.                              # [n_k, nao, nao]
    """
    from pyscf.pbc.dft.multigrid import multigrid_pair
    from pyscf.pbc.dft.multigrid.pp import _get_vpplocG_part1

    pair = multigrid_pair.MultiGridNumInt(cell)
    kpts_abs = np.asarray(kpts_abs).reshape(-1, 3)
    return (short_range_pseudopotential(cell, kpts_abs)
            + matrices_at_kpts(cell, _get_vpplocG_part1(pair, with_rho_core=True), kpts_abs))


def short_range_pseudopotential(cell, kpts_abs: np.ndarray) -> np.ndarray:
    """The short-range local and the non-local GTH pseudopotential at k, in Hartree, with
    its PySCF buffer within ``PP_BUFFER_BYTES``.                   # [n_k, nao, nao]"""
    shape = (len(kpts_abs), cell.nao, cell.nao)
    # PySCF's three-centre buffer of the short-range part holds every orbital pair times
    # every atom per k, real and imaginary parts (51 GiB for 216 Si atoms at 8 k-points):
    # k-points, then atoms, go in batches that keep it under PP_BUFFER_BYTES.  Both parts
    # are sums over atoms, so a batch of atoms is the cell with the others as ghosts.
    per_atom_k = 16 * cell.nao * (cell.nao + 1) // 2
    k_batch = max(1, int(PP_BUFFER_BYTES // (per_atom_k * cell.natm)))
    atom_batch = cell.natm if k_batch > 1 else max(1, int(PP_BUFFER_BYTES // per_atom_k))
    short_range = np.zeros(shape, dtype=np.complex128)
    for first in range(0, cell.natm, atom_batch):
        part = _with_pseudopotentials_on(cell, range(first, min(first + atom_batch, cell.natm)))
        for k in range(0, len(kpts_abs), k_batch):
            short_range[k:k + k_batch] += _short_range_pp(part, kpts_abs[k:k + k_batch])
    return short_range


def _with_pseudopotentials_on(cell, atoms):
    """``cell`` with the pseudopotentials of ``atoms`` only: the other atoms are ghosts
    (same basis functions, same order, no pseudopotential, no charge)."""
    keep = set(atoms)
    if len(keep) == cell.natm:
        return cell
    part = cell.copy(deep=False)
    part.atom = [(symbol if i in keep else f"ghost-{symbol}", tuple(coords))
                 for i, (symbol, coords) in enumerate(cell._atom)]
    part.a = cell.lattice_vectors()  # cell._atom and these are in Bohr
    part.unit = "Bohr"
    part.spin = int(cell.atom_charges()[sorted(keep)].sum()) % 2  # PySCF's parity check
    part.build()
    if part.nao != cell.nao:
        raise RuntimeError(f"ghost atoms changed the basis: {part.nao} vs {cell.nao} orbitals")
    return part


def _short_range_pp(cell, kpts_abs: np.ndarray) -> np.ndarray:
    """The short-range local and the non-local pseudopotential at k (PySCF's analytic
    integrals, the part the pair multigrid's ``get_pp`` leaves off the grid).  # [n_k, nao, nao]"""
    from pyscf.pbc.gto.pseudo import pp_int

    shape = (len(kpts_abs), cell.nao, cell.nao)
    local = np.asarray(pp_int.get_pp_loc_part2(cell, kpts_abs)).reshape(shape)
    nonlocal_ = np.asarray(pp_int.get_pp_nl(cell, kpts_abs)).reshape(shape)
    return local + nonlocal_


def fock_at_kpts(mf, kpts_abs: np.ndarray) -> np.ndarray:
    """Bloch Fock matrices of the converged density at arbitrary k (as ``get_bands``).

    Args:
        mf: converged k-point Kohn-Sham object.
        kpts_abs: k-points in 1/Bohr.                       # [n_k, 3]

    Returns:
        ``H(k)`` in Hartree.                                # [n_k, nao, nao]
    """
    cell = mf.cell
    kpts_abs = np.asarray(kpts_abs).reshape(-1, 3)
    kinetic = np.asarray(cell.pbc_intor("int1e_kin", hermi=1, kpts=kpts_abs))  # [n_k, nao, nao]
    kinetic = kinetic.reshape(len(kpts_abs), cell.nao, cell.nao)
    # Hartree, XC and the long-range local pseudopotential: one potential on the grid
    local = matrices_at_kpts(cell, local_potential_g(mf), kpts_abs)  # [n_k, nao, nao]
    return kinetic + short_range_pseudopotential(cell, kpts_abs) + local


def levels_at_kpts(mf, pcell: PySCFCell, kpts_frac: np.ndarray) -> np.ndarray:
    """Kohn-Sham levels of the converged density at fractional k (in the caller's
    reciprocal vectors), non-self-consistent as ``get_bands``: ascending, in Hartree.
    # [n_k, nao]"""
    cell = pcell.cell
    kpts_frac = np.atleast_2d(np.asarray(kpts_frac, dtype=np.float64))
    # PySCF's lattice vector a is the caller's order[a]; so are the reciprocal vectors
    kpts_abs = cell.get_abs_kpts(kpts_frac[:, list(pcell.order)])  # [n_k, 3] 1/Bohr
    fock = fock_at_kpts(mf, kpts_abs)  # [n_k, nao, nao] Hartree
    overlap = np.asarray(cell.pbc_intor("int1e_ovlp", hermi=1, kpts=kpts_abs))
    return np.array([scipy.linalg.eigh(f, s, eigvals_only=True)
                     for f, s in zip(fock, overlap.reshape(fock.shape))])


class RealSpaceFock:
    """H(R) of the converged density, transformed back from a half band mesh.

    Args:
        mf: converged k-point Kohn-Sham object.
        mesh: band mesh along PySCF's lattice vectors (see :func:`band_kmesh`).
    """

    def __init__(self, mf, mesh):
        cell = mf.cell
        kpts_frac, self.weights = half_mesh(mesh)  # [n_half, 3], [n_half]
        self.n_full = int(np.prod(mesh))
        self.kpts_abs = cell.get_abs_kpts(kpts_frac)  # [n_half, 3] 1/Bohr
        self.fock = fock_at_kpts(mf, self.kpts_abs)  # [n_half, nao, nao]

    def at(self, translation_bohr: np.ndarray) -> np.ndarray:
        """Real ``H(T)`` for a Cartesian lattice translation T in Bohr."""
        phases = self.weights * np.exp(-1j * self.kpts_abs @ translation_bohr)  # [n_half]
        return np.tensordot(phases, self.fock, axes=1).real / self.n_full  # [nao, nao], one GEMV


def overlap_at(mol, translation_bohr: np.ndarray) -> np.ndarray:
    """Exact ``S_ij(T) = <phi_i|phi_j(· - T)>`` between the home cell and its copy shifted by T."""
    from pyscf import gto

    shifted = mol.set_geom_(mol.atom_coords() + translation_bohr, unit="Bohr", inplace=False)
    return gto.intor_cross("int1e_ovlp", mol, shifted)  # [nao, nao]


def caller_mesh(mesh, order) -> tuple[int, int, int]:
    """A k-mesh along PySCF's lattice vectors, reordered along the caller's."""
    out = [0, 0, 0]
    for pyscf_axis, caller_axis in enumerate(order):
        out[caller_axis] = int(mesh[pyscf_axis])
    return tuple(out)


def translation_bohr(shift, lattice: np.ndarray) -> np.ndarray:
    """Cartesian lattice translation (Bohr) of an integer cell shift in the caller's vectors."""
    return np.asarray(shift, dtype=np.float64) @ lattice / pyscf_bohr_to_angstrom()  # [3]


def blocks_within(atoms: Atoms, fock: "RealSpaceFock", nao: np.ndarray, radius: float,
                  mol=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pairs within ``radius`` Å, their H blocks (Hartree) from ``fock`` and, given the
    cell's ``mol``, their exact S blocks (else None)."""
    lattice = np.asarray(atoms.cell[:], dtype=np.float64)
    pairs = pair_list(atoms, radius)  # [n_pairs, 5]
    h = gather_blocks(lambda r: fock.at(translation_bohr(r, lattice)), pairs, nao)
    s = None if mol is None else gather_blocks(
        lambda r: overlap_at(mol, translation_bohr(r, lattice)), pairs, nao)
    return pairs, h, s


class FloorProbe:
    """Untruncated H(k) and exact S(k) at a sample of the band mesh, to score cut blocks.

    Args:
        fock: the band-mesh rebuild of the converged density.
        pcell: the PySCF cell.
        atoms: the caller's structure (its lattice vectors define the fractional k).
        basis: its orbital basis.
    """

    def __init__(self, fock: "RealSpaceFock", pcell: PySCFCell, atoms: Atoms, basis: Basis):
        index = floor_kpoints(fock.weights, pcell.cell.nao)
        kpts_abs = fock.kpts_abs[index]  # [n_k, 3] 1/Bohr
        lattice_bohr = np.asarray(atoms.cell[:], dtype=np.float64) / pyscf_bohr_to_angstrom()
        #: k in units of the caller's reciprocal lattice vectors   # [n_k, 3]
        self.kpts_frac = kpts_abs @ lattice_bohr.T / (2.0 * np.pi)
        self.h_true = fock.fock[index] * HARTREE_TO_EV  # [n_k, nao, nao] eV
        self.s_exact = np.asarray(
            pcell.cell.pbc_intor("int1e_ovlp", hermi=1, kpts=kpts_abs)
        ).reshape(self.h_true.shape)  # [n_k, nao, nao]
        self.nao = basis.nao_per_atom(atoms.numbers)

    def bloch(self, pairs: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """``Σ_R e^{2πi k·R} M(R)`` of block-sparse ``M`` at the sampled k.  # [n_k, nao, nao]"""
        from ..io.layout import BlockLayout

        layout = BlockLayout(np.asarray(pairs).reshape(-1, 5), self.nao)
        return np.array([layout.bloch(flat, k) for k in self.kpts_frac])

    def floor(self, pairs, h_flat_ev, s_flat, fermi: float, n_occupied: int | None
              ) -> tuple[TruncationFloor, np.ndarray]:
        """The floor of blocks ``h_flat_ev`` (eV) and the true bands (eV) at the sampled k."""
        return measure_floor(self.bloch(pairs, h_flat_ev), self.h_true, self.s_exact,
                             self.bloch(pairs, s_flat), fermi, n_occupied)

    def cut_max_error(self, pairs, h_flat_ev, true_bands, fermi: float) -> float:
        """Largest error (meV) within the window of H cut at ``pairs``, S exact."""
        cut = generalised_bands(self.bloch(pairs, h_flat_ev), self.s_exact)
        return band_error(cut, true_bands, fermi, None)[1]


#: step (Å) of the search for the cutoff a floor tolerance needs
_CUTOFF_STEP = 0.5


def crystal_record(
    atoms: Atoms,
    basis: Basis,
    mf,
    pcell: PySCFCell,
    cutoff: float,
    name: str,
    xc: str,
    kmesh,
    alias_tol: float = ALIAS_TOL,
    start_time: float | None = None,
    band_mesh=None,
    floor_tol: float | None = None,
    smearing: Smearing | None = None,
) -> HamiltonianRecord:
    """Block-sparse H(R) (eV) and S(R) of a converged calculation, for pairs within ``cutoff``.

    The record also carries its truncation floor (``floor_*`` attributes, see
    :mod:`ehpc.dft.floor`) and the SCF's untruncated bands at the k-points it was
    measured on (``reference_kpts``, ``reference_bands``), the truth that evaluation
    scores models against.

    Args:
        atoms: the structure ``pcell`` was built from.
        basis: its orbital basis.
        mf: converged result of :func:`run_krks`.
        pcell: from :func:`build_cell`.
        cutoff: pair radius in Å.
        name: structure name.
        xc: functional name (stored in the attributes).
        kmesh: the SCF k-mesh (stored in the attributes).
        alias_tol: overlap magnitude treated as zero when sizing the band mesh.
        start_time: ``time.perf_counter()`` at the start of the labelling, for the record.
        band_mesh: k-mesh (caller's axes) for the transform back to real space; chosen
            from ``cutoff`` and ``alias_tol`` if None.  A mesh too coarse aliases H(R).
        floor_tol: largest truncation floor (max error, meV) accepted; None accepts any.
        smearing: the occupations the SCF used (stored in the attributes).

    Raises:
        TruncationFloorError: the floor exceeds ``floor_tol``; the message names the
            cutoff that would meet it.
    """
    start = time.perf_counter() if start_time is None else start_time
    lattice = np.asarray(atoms.cell[:], dtype=np.float64)  # [3, 3] caller's vectors, Å
    reach = cutoff + overlap_decay_radius(basis, atoms.numbers, alias_tol)
    if band_mesh is None:
        mesh = band_kmesh(lattice[list(pcell.order)], reach)
    else:
        mesh = tuple(int(band_mesh[caller_axis]) for caller_axis in pcell.order)
    fock = RealSpaceFock(mf, mesh)
    mol = pcell.cell.to_mol()
    check_orbital_count(name, basis, atoms.numbers, pcell.cell.nao)
    nao = basis.nao_per_atom(atoms.numbers)

    pairs, h_flat, s_flat = blocks_within(atoms, fock, nao, cutoff, mol)
    attrs = scf_attrs(mf, name, xc, pcell.cell.nelectron, time.perf_counter() - start)
    attrs.update(cutoff=float(cutoff), kmesh=np.asarray(kmesh, dtype=np.int64),
                 band_kmesh=np.asarray(caller_mesh(mesh, pcell.order), dtype=np.int64),
                 alias_tol=float(alias_tol))
    if smearing is not None:
        attrs.update(smearing=smearing.method, smearing_width_eV=float(smearing.width_eV))
    probe = FloorProbe(fock, pcell, atoms, basis)
    fermi = float(attrs["fermi_level"])
    n_occupied = None if smearing is not None else int(pcell.cell.nelectron) // 2
    floor, true_bands = probe.floor(pairs, h_flat * HARTREE_TO_EV, s_flat, fermi, n_occupied)
    attrs.update(floor.attrs())
    if floor_tol is not None and floor.max_meV > floor_tol:
        needed = None
        for radius in np.arange(cutoff + _CUTOFF_STEP, reach + 1e-9, _CUTOFF_STEP):
            wider, h_wider, _ = blocks_within(atoms, fock, nao, float(radius))
            if probe.cut_max_error(wider, h_wider * HARTREE_TO_EV, true_bands, fermi) <= floor_tol:
                needed = float(radius)
                break
        check_floor(floor, floor_tol, name, cutoff, needed)
    record = make_record(atoms, name, basis, pairs, h_flat, s_flat, attrs)
    record.reference_kpts = probe.kpts_frac
    record.reference_bands = true_bands
    return record


def label_crystal(
    atoms: Atoms,
    basis: Basis,
    xc: str,
    cutoff: float,
    name: str,
    kmesh=(1, 1, 1),
    conv_tol: float = SCF_CONV_TOL,
    max_cycle: int = SCF_MAX_CYCLE,
    precision: float | None = None,
    alias_tol: float = ALIAS_TOL,
    smearing: Smearing | None = None,
    floor_tol: float | None = None,
    chkfile: Path | None = None,
) -> HamiltonianRecord:
    """H(R) (eV) and S(R) blocks of every atom pair closer than ``cutoff`` Å in a crystal.

    Args:
        atoms: a fully periodic structure.
        basis: a GTH basis with its pseudopotential.
        xc: PySCF functional name, e.g. ``"pbe"``.
        cutoff: pair radius in Å.
        name: structure name, used in records and errors.
        kmesh: SCF k-points along each lattice vector (Γ-centred).
        conv_tol: SCF energy tolerance in Hartree.
        max_cycle: SCF iteration limit.
        precision: PySCF ``cell.precision`` (integral screening and grid); PySCF's default if None.
        alias_tol: overlap magnitude treated as zero when sizing the band mesh.
        smearing: fractional occupations for metals and semimetals.
        floor_tol: largest truncation floor (max band error within 2 eV of E_F, meV)
            accepted; None accepts any (the floor is still measured and stored).
        chkfile: SCF checkpoint (see :func:`run_krks`): a rerun after the job was killed
            or failed past the SCF continues from the orbitals it holds.

    Raises:
        SCFNotConverged: the SCF did not reach ``conv_tol`` in ``max_cycle`` cycles.
        StructureError: the structure is not fully periodic or the basis has no pseudopotential.
        TruncationFloorError: the cutoff costs more than ``floor_tol``.
    """
    start = time.perf_counter()
    pcell = build_cell(atoms, basis, name, precision)
    mf = run_krks(pcell, xc, kmesh, name, conv_tol, max_cycle, smearing, chkfile)
    return crystal_record(atoms, basis, mf, pcell, cutoff, name, xc, kmesh, alias_tol, start,
                          floor_tol=floor_tol, smearing=smearing)

