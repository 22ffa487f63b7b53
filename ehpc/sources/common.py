"""What every structure source shares: its error, names, redrawing invalid samples.

Every source returns a list of ``ase.Atoms`` whose ``atoms.info["name"]`` is set and
unique within the list, so each structure can become one labelled file of its own.
All sampling is seeded, so a restarted or chunked run rebuilds the same structures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from ase import Atoms

from ..basis import Basis
from ..errors import UserError
from ..structure import StructureError, read_structures, validate

#: resampling attempts per structure before giving up on a too-hot or too-rattled source
MAX_ATTEMPTS = 100



class SourceError(UserError, ValueError):
    """A structure source that is misconfigured or cannot produce valid structures."""


def from_file(path: str | Path) -> list[Atoms]:
    """Every frame of any file ``ase.io.read`` understands, named ``<stem>`` or ``<stem>_<k>``."""
    return read_structures(path)


def check_spread(value, key: str, where: str) -> float:
    """``value`` as a float if it is a finite standard deviation (>= 0), else SourceError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not np.isfinite(number) or number < 0:
        raise SourceError(f"{where}: {key} must be a finite number >= 0, got {value!r}")
    return number



def _sample_valid(sample: Callable[[], Atoms], n: int, prefix: str, fix: str) -> list[Atoms]:
    """Draw ``n`` structures, redrawing any that fail :func:`ehpc.structure.validate`."""
    out = []
    for k in range(n):
        name = f"{prefix}_{k:05d}"
        for _ in range(MAX_ATTEMPTS):
            atoms = sample()
            try:
                validate(atoms, name)
            except StructureError:
                continue
            break
        else:
            raise SourceError(f"{name}: no valid structure in {MAX_ATTEMPTS} draws; {fix}")
        atoms.info = {"name": name}
        out.append(atoms)
    return out


def _default_prefix(atoms: Atoms) -> str:
    return str(atoms.info.get("name") or atoms.get_chemical_formula())


def _as_basis(basis: Basis | str) -> Basis:
    return basis if isinstance(basis, Basis) else Basis(str(basis))


def _check_positive_int(value, key: str, where: str | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SourceError(f"{where or 'source'}: {key} must be a positive integer, got {value!r}")


def check_unique_names(structures: Iterable[Atoms]) -> None:
    """Raise SourceError naming the first structure name used twice."""
    seen: set[str] = set()
    for atoms in structures:
        name = atoms.info.get("name")
        if not name:
            formula = atoms.get_chemical_formula()
            raise SourceError(f"structure {formula} has no name (set atoms.info['name'])")
        if name in seen:
            raise SourceError(
                f"{name}: structure name used twice; give each source a distinct 'prefix'"
            )
        seen.add(name)
