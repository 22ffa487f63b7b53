"""Reading and checking atomic structures before any heavy work.

Every check raises :class:`StructureError` with one line that names the structure and
the problem, so a bad file in a batch of thousands is found at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from .errors import UserError
from .units import MIN_INTERATOMIC_DISTANCE


class StructureError(UserError, ValueError):
    """A structure that cannot be used, with the reason and its name."""


def read_structures(path: str | Path, index: str = ":") -> list[Atoms]:
    """Every frame of any file ``ase.io.read`` understands, named ``<stem>_<k>``.

    Raises:
        StructureError: the file is missing, unreadable, truncated or empty.
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise StructureError(f"{path}: structure file not found")
    try:
        frames = ase.io.read(path, index=index)
    except Exception as err:  # ase raises many unrelated types for bad files
        raise StructureError(f"{path}: cannot read structure file ({type(err).__name__}: {err})") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if len(frames) == 0:
        raise StructureError(f"{path}: file holds no structures")
    for k, atoms in enumerate(frames):
        atoms.info.setdefault("name", f"{path.stem}_{k:05d}" if len(frames) > 1 else path.stem)
    return frames


def validate(atoms: Atoms, name: str | None = None, basis=None) -> None:
    """Reject structures no DFT code or model should see.

    Checks: not empty; finite coordinates; a non-singular cell where pbc is set; no two
    atoms closer than ``MIN_INTERATOMIC_DISTANCE``; every element in ``basis``.
    """
    name = name or atoms.info.get("name", atoms.get_chemical_formula())
    if len(atoms) == 0:
        raise StructureError(f"{name}: structure has no atoms")
    positions = atoms.get_positions()
    if not np.all(np.isfinite(positions)):
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise StructureError(f"{name}: atom {bad} has a non-finite coordinate {positions[bad].tolist()}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if pbc.any():
        if not np.all(np.isfinite(cell)):
            raise StructureError(f"{name}: cell has non-finite entries")
        vectors = cell[pbc]
        gram = vectors @ vectors.T
        if abs(np.linalg.det(gram)) < 1e-8 * max(1.0, np.abs(gram).max()) ** len(vectors):
            raise StructureError(
                f"{name}: cell is singular along periodic axes {np.flatnonzero(pbc).tolist()}; "
                "give three independent lattice vectors or set pbc=False"
            )
    if basis is not None:
        from .basis import BasisError

        try:
            basis.check(atoms.numbers)
        except BasisError as err:
            raise StructureError(f"{name}: {err}") from None
    _check_distances(atoms, name)


def _check_distances(atoms: Atoms, name: str) -> None:
    from .graph import neighbour_list

    edges = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, MIN_INTERATOMIC_DISTANCE)
    if len(edges):
        k = int(np.argmin(edges.lengths))
        raise StructureError(
            f"{name}: atoms {edges.sender[k]} and {edges.receiver[k]} are {edges.lengths[k]:.3f} Å apart "
            f"(minimum {MIN_INTERATOMIC_DISTANCE} Å)"
        )
    if atoms.pbc.any() and len(atoms) == 1:
        pass  # a single atom is only too close to itself via a tiny cell, caught above
