"""The Cartesian Hessian of a molecule from PySCF Kohn-Sham, cached by geometry and level.

The cache key is the geometry, charge, spin, basis and functional, so a restarted job
or another chunk of the same run reuses the result from the cache folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from ase import Atoms

from ..atomic import replacing
from ..basis import Basis
from ..units import BOHR_TO_ANGSTROM, HARTREE_TO_EV
from .common import SourceError, _as_basis, _default_prefix

_HESSIANS: dict[str, np.ndarray] = {}


def molecular_hessian(
    atoms: Atoms,
    basis: Basis | str,
    xc: str,
    charge: int = 0,
    spin: int | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Cartesian Hessian in eV/Å² from a PySCF Kohn-Sham calculation, cached.  # [3N, 3N]

    The cache key is the geometry, charge, spin, basis and functional, so a restarted
    job or another chunk of the same run reuses the result from ``cache_dir``.
    """
    basis = _as_basis(basis)
    name = name or _default_prefix(atoms)
    if basis.is_pseudo:
        raise SourceError(
            f"{name}: basis {basis.name!r} uses a pseudopotential; the molecular Hessian needs an "
            "all-electron basis (set 'hessian_basis', e.g. def2-svp)"
        )
    if np.asarray(atoms.pbc).any():
        raise SourceError(f"{name}: normal-mode sampling is for molecules; set pbc=False")
    spin = _default_spin(atoms, charge) if spin is None else int(spin)
    key = _hessian_key(atoms, basis, xc, charge, spin)
    path = Path(cache_dir) / f"hessian-{key}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        hessian = np.load(path)
    elif key in _HESSIANS:
        hessian = _HESSIANS[key]
    else:
        hessian = _pyscf_hessian(atoms, basis, xc, charge, spin, name)
    if path is not None and not path.is_file():
        _save_atomic(path, hessian)
    _HESSIANS[key] = hessian
    return hessian.copy()


def _pyscf_hessian(atoms, basis: Basis, xc: str, charge: int, spin: int, name: str) -> np.ndarray:
    from pyscf import dft, gto

    mol = gto.M(
        atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
        unit="Angstrom", basis=basis.name, charge=charge, spin=spin, verbose=0,
    )
    mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
    mf.xc = xc
    mf.kernel()
    if not mf.converged:
        raise SourceError(
            f"{name}: SCF for the normal-mode Hessian did not converge at {basis.name}/{xc}"
        )
    hessian = mf.Hessian().kernel()  # [n_atoms, n_atoms, 3, 3] Hartree/Bohr²
    n = len(atoms)
    hessian = hessian.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)  # [3N, 3N]
    hessian = 0.5 * (hessian + hessian.T)
    return hessian * HARTREE_TO_EV / BOHR_TO_ANGSTROM**2


def _hessian_key(atoms: Atoms, basis: Basis, xc: str, charge: int, spin: int) -> str:
    payload = json.dumps({
        "numbers": atoms.numbers.tolist(),
        "positions": [f"{x:.10f}" for x in atoms.positions.ravel()],
        "basis": basis.name, "pseudo": basis.pseudo, "xc": xc.lower(),
        "charge": charge, "spin": spin,
    })
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _default_spin(atoms: Atoms, charge: int) -> int:
    return int((atoms.numbers.sum() - charge) % 2)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
