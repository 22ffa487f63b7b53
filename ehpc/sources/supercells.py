"""Perturbed crystals: supercells with seeded Gaussian rattles and random strains.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from .common import _check_positive_int, _default_prefix, _sample_valid, check_spread

def rattled_supercells(
    atoms: Atoms,
    repeat=(1, 1, 1),
    n: int = 1,
    rattle_std: float = 0.0,
    strain_std: float = 0.0,
    seed: int = 0,
    prefix: str | None = None,
) -> list[Atoms]:
    """Supercells with random homogeneous strain and random atomic displacements.

    Args:
        atoms: the primitive or conventional cell.
        repeat: supercell multiples along the three lattice vectors.
        n: number of structures.
        rattle_std: standard deviation of each Cartesian displacement, in Å.
        strain_std: standard deviation of each of the six independent components of the
            symmetric strain tensor (fractional); the cell and positions are deformed by
            ``(1 + strain)`` so fractional coordinates are kept before rattling.
        seed: random seed.
        prefix: name stem; defaults to ``atoms.info["name"]`` or the formula.

    Returns:
        ``n`` structures named ``<prefix>_<k>``, each with all distances at least
        ``MIN_INTERATOMIC_DISTANCE``.
    """
    _check_positive_int(n, "n", prefix)
    check_spread(rattle_std, "rattle_std", prefix or "supercell")
    check_spread(strain_std, "strain_std", prefix or "supercell")
    base = atoms.repeat(tuple(int(r) for r in repeat))
    prefix = prefix or _default_prefix(atoms)
    rng = np.random.default_rng(seed)

    def sample() -> Atoms:
        eps = _symmetric_strain(rng, strain_std)  # [3, 3]
        deformation = np.eye(3) + eps
        new = base.copy()
        new.set_cell(base.cell[:] @ deformation, scale_atoms=False)
        noise = rng.normal(scale=rattle_std, size=base.positions.shape)  # [n_atoms, 3] Å
        new.positions = base.positions @ deformation + noise
        return new

    return _sample_valid(sample, n, prefix, "lower rattle_std or strain_std")



def rattle(atoms: Atoms, stdev: float, seed: int = 0, where: str = "--rattle") -> Atoms:
    """Displace every atom by a seeded Gaussian of ``stdev`` Å, in place; the name is kept.

    The same seed gives the same positions on every MPI rank.  A negative or non-finite
    ``stdev`` raises SourceError naming ``where`` (the option or spec key).
    """
    stdev = check_spread(stdev, "standard deviation", where)
    if stdev > 0:
        info = dict(atoms.info)
        atoms.rattle(stdev=stdev, seed=seed)
        atoms.info = info
    return atoms


def _symmetric_strain(rng: np.random.Generator, std: float) -> np.ndarray:
    """Strain tensor with six independent Gaussian (Voigt) components."""
    voigt = rng.normal(scale=std, size=6)  # [6]: xx, yy, zz, yz, xz, xy
    xx, yy, zz, yz, xz, xy = voigt
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
