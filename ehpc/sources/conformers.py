"""Thermal molecular conformers and molecular clusters.

Conformers are drawn from the classical harmonic (normal-mode) distribution at
temperature T: each vibrational normal coordinate q_k (mass-weighted) is Gaussian with
variance k_B T / omega_k^2, where omega_k^2 are eigenvalues of the mass-weighted Hessian
(:mod:`ehpc.sources.hessian`) with translations and rotations projected out (Wilson,
Decius & Cross, *Molecular Vibrations*, ch. 2).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ..basis import Basis
from ..structure import StructureError, validate
from ..units import BOLTZMANN_EV_PER_K
from .common import SourceError, _as_basis, _check_positive_int, _default_prefix, _sample_valid
from .hessian import molecular_hessian

#: mass-weighted eigenvalues below this fraction of the largest count as rigid-body modes
RIGID_BODY_TOLERANCE = 1e-10



@dataclass(frozen=True)
class NormalModes:
    """Vibrational normal modes of a molecule at its reference geometry.

    Attributes:
        omega2: mass-weighted Hessian eigenvalues in eV / (Å² amu).  # [n_modes]
        vectors: orthonormal mass-weighted mode vectors.              # [3 n_atoms, n_modes]
        masses: atomic masses in amu.                                  # [n_atoms]
    """

    omega2: np.ndarray
    vectors: np.ndarray
    masses: np.ndarray

    def displacements(self, rng: np.random.Generator, temperature: float) -> np.ndarray:
        """One classical thermal sample of Cartesian displacements in Å.  # [n_atoms, 3]"""
        kt = BOLTZMANN_EV_PER_K * temperature  # eV
        q = rng.normal(size=len(self.omega2)) * np.sqrt(kt / np.abs(self.omega2))  # [n_modes]
        weighted = self.vectors @ q  # [3 n_atoms], Å amu^1/2
        return weighted.reshape(-1, 3) / np.sqrt(self.masses)[:, None]


def molecular_conformers(
    atoms: Atoms,
    n: int,
    temperature: float,
    seed: int = 0,
    method: str = "normal_modes",
    basis: Basis | str = "def2-svp",
    xc: str = "pbe",
    charge: int = 0,
    spin: int | None = None,
    cache_dir: str | Path | None = None,
    prefix: str | None = None,
) -> list[Atoms]:
    """Thermal conformers of a molecule around its reference geometry.

    Args:
        atoms: the molecule (ideally near a minimum of the chosen level of theory; modes
            with negative curvature are sampled with their absolute curvature, with a
            warning).
        n: number of conformers.
        temperature: temperature in K of the classical harmonic distribution.
        seed: random seed.
        method: ``"normal_modes"`` (the only one implemented).
        basis: all-electron basis of the PySCF Hessian.
        xc: functional of the PySCF Hessian.
        charge: molecular charge.
        spin: 2S; defaults to 0 or 1 by electron parity.
        cache_dir: folder for Hessians on disk (shared by restarts and chunked jobs).
        prefix: name stem; defaults to ``atoms.info["name"]`` or the formula.

    Returns:
        ``n`` molecules named ``<prefix>_<k>`` with every distance at least
        ``MIN_INTERATOMIC_DISTANCE``.
    """
    prefix = prefix or _default_prefix(atoms)
    _check_positive_int(n, "n", prefix)
    if not np.isfinite(temperature) or temperature < 0:
        raise SourceError(f"{prefix}: temperature must be >= 0 K, got {temperature}")
    if method not in CONFORMER_METHODS:
        raise SourceError(
            f"{prefix}: unknown conformer method {method!r}; "
            f"choose from {sorted(CONFORMER_METHODS)}"
        )
    try:
        validate(atoms, prefix)
    except StructureError as err:
        raise SourceError(f"reference geometry: {err}") from None
    sampler = CONFORMER_METHODS[method]
    return sampler(atoms, n, temperature, seed, _as_basis(basis), xc, charge, spin, cache_dir,
                   prefix)


def molecular_cluster(
    atoms: Atoms, grid, spacing: float, seed: int = 0, prefix: str | None = None
) -> Atoms:
    """Copies of a molecule, each randomly rotated, on a cubic grid: a finite cluster.

    A quick stand-in for a liquid droplet when testing inference at scale (water at
    ``spacing`` 3.1 Å has about the density of liquid water).

    Args:
        atoms: the molecule.
        grid: copies along x, y and z.
        spacing: distance in Å between neighbouring molecular centres.
        seed: random seed of the orientations.
        prefix: name stem; defaults to ``atoms.info["name"]`` or the formula.

    Raises:
        SourceError: a bad grid or spacing, or two copies closer than
            ``MIN_INTERATOMIC_DISTANCE``.
    """
    from scipy.spatial.transform import Rotation

    prefix = prefix or _default_prefix(atoms)
    if len(grid) != 3 or not all(isinstance(g, int) and g >= 1 for g in grid):
        raise SourceError(f"{prefix}: 'grid' must be three positive integers, got {grid!r}")
    if not np.isfinite(spacing) or spacing <= 0:
        raise SourceError(f"{prefix}: 'spacing' must be a positive length in Å, got {spacing}")
    rng = np.random.default_rng(seed)
    centred = atoms.positions - atoms.get_center_of_mass()  # [n_mol, 3]
    centres = spacing * np.array(list(itertools.product(*[range(g) for g in grid])), float)
    rotations = Rotation.random(len(centres), random_state=rng).as_matrix()  # [n_copies, 3, 3]
    positions = np.einsum("cij,aj->cai", rotations, centred) + centres[:, None, :]
    cluster = Atoms(numbers=np.tile(atoms.numbers, len(centres)),
                    positions=positions.reshape(-1, 3), pbc=False)
    cluster.info["name"] = f"{prefix}_cluster_{len(centres)}"
    try:
        validate(cluster, cluster.info["name"])
    except StructureError as err:
        raise SourceError(f"{err}; increase 'spacing'") from None
    return cluster


def _normal_mode_conformers(
    atoms, n, temperature, seed, basis, xc, charge, spin, cache_dir, prefix
) -> list[Atoms]:
    modes = normal_modes(atoms, basis, xc, charge, spin, cache_dir, prefix)
    rng = np.random.default_rng(seed)

    def sample() -> Atoms:
        new = atoms.copy()
        new.positions = atoms.positions + modes.displacements(rng, temperature)
        return new

    return _sample_valid(sample, n, prefix, "lower the temperature")


#: conformer samplers by name; each takes the arguments of :func:`molecular_conformers`
CONFORMER_METHODS: dict[str, Callable[..., list[Atoms]]] = {"normal_modes": _normal_mode_conformers}


def normal_modes(
    atoms: Atoms,
    basis: Basis | str,
    xc: str,
    charge: int = 0,
    spin: int | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> NormalModes:
    """Vibrational modes from the PySCF Hessian, rigid-body motions projected out.

    Args:
        atoms: the molecule (``pbc`` must be off).
        basis: all-electron basis.
        xc: functional.
        charge: molecular charge.
        spin: 2S; defaults to electron parity.
        cache_dir: optional on-disk Hessian cache.
        name: structure name for messages.
    """
    name = name or _default_prefix(atoms)
    basis = _as_basis(basis)
    if len(atoms) < 2:
        raise SourceError(f"{name}: a single atom has no vibrations; use more than one atom")
    hessian = molecular_hessian(atoms, basis, xc, charge, spin, cache_dir, name)  # [3N, 3N] eV/Å²
    masses = atoms.get_masses()  # [n_atoms] amu
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)  # [3N]
    weighted = hessian * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]  # [3N, 3N]
    complement = _vibrational_subspace(atoms.positions, masses)  # [3N, n_vib]
    omega2, v = np.linalg.eigh(complement.T @ weighted @ complement)
    scale = max(np.abs(omega2).max(), np.finfo(float).tiny)
    soft = np.abs(omega2) < RIGID_BODY_TOLERANCE * scale
    if soft.any():
        raise SourceError(
            f"{name}: Hessian has {int(soft.sum())} vibrational mode(s) with zero curvature"
        )
    if (omega2 < 0).any():
        warnings.warn(
            f"{name}: {int((omega2 < 0).sum())} imaginary mode(s) at {basis.name}/{xc}; the "
            "geometry is not a minimum, those modes are sampled with their absolute curvature",
            stacklevel=2,
        )
    return NormalModes(omega2=omega2, vectors=complement @ v, masses=masses)


def _vibrational_subspace(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal basis of mass-weighted displacements with no translation or rotation.

    Translations are ``sqrt(m_a) e_k`` and infinitesimal rotations ``sqrt(m_a) e_k x r_a``
    (r from the centre of mass); the Eckart conditions make the vibrations orthogonal to
    both.  Linear molecules have one rotation fewer, found from the rank.
    """
    n = len(masses)
    sqrt_m = np.sqrt(masses)[:, None]  # [n, 1]
    centred = positions - masses @ positions / masses.sum()  # [n, 3]
    rigid = []
    for k in range(3):
        axis = np.eye(3)[k]
        rigid.append((sqrt_m * axis).ravel())
        rigid.append((sqrt_m * np.cross(axis, centred)).ravel())
    u, s, _ = np.linalg.svd(np.array(rigid).T, full_matrices=True)  # u: [3N, 3N]
    rank = int((s > RIGID_BODY_TOLERANCE ** 0.5 * s.max()).sum())
    return u[:, rank:3 * n]
