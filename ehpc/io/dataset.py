"""The block-sparse HDF5 Hamiltonian dataset (schema in docs/DATASET.md).

One file holds many structures under ``/structures/<name>``.  Each structure stores its
atoms, the list of atom pairs ``[Rx, Ry, Rz, i, j]`` (0-based, integer cell shift of
``j``) and, for every pair, the ``nao_i x nao_j`` blocks of H (eV) and S flattened
row-major and concatenated; ``block_offsets[p]`` is where pair ``p`` starts.  No block is
padded: each holds exactly the orbitals of its two elements.

Files are opened lazily so that data-loader workers can fork after construction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms

from .. import __version__
from ..atomic import replacing
from ..basis import Basis
from ..errors import UserError
from ..units import FILE_UNITS
from .layout import block_offsets  # noqa: F401  (the schema's offsets; re-exported)

SCHEMA_VERSION = 1
STRUCTURES = "structures"

# Key names of the per-structure datasets
NUMBERS = "numbers"
POSITIONS = "positions"
CELL = "cell"
PBC = "pbc"
ATOM_PAIRS = "atom_pairs"
BLOCK_OFFSETS = "block_offsets"
HAMILTONIAN = "hamiltonian"
OVERLAP = "overlap"
#: crystals: fractional k-points (caller's reciprocal vectors) and the SCF's own,
#: untruncated bands there (eV), the truth models are scored against
REFERENCE_KPTS = "reference_kpts"
REFERENCE_BANDS = "reference_bands"


class DatasetError(UserError, ValueError):
    """A dataset file that is missing, malformed, or does not match what is asked."""


@dataclass
class HamiltonianRecord:
    """One structure with its block-sparse H(R) (eV) and S(R).

    Attributes:
        name: unique structure name within a dataset.
        numbers: atomic numbers.                               # [n_atoms]
        positions: Cartesian positions in Å.                   # [n_atoms, 3]
        cell: lattice vectors as rows in Å.                    # [3, 3]
        pbc: periodicity per axis.                             # [3]
        atom_pairs: rows ``[Rx, Ry, Rz, i, j]``.               # [n_pairs, 5]
        block_offsets: start of each block in the flat arrays. # [n_pairs + 1]
        hamiltonian: flat H blocks in eV (None if unlabelled). # [n_entries]
        overlap: flat S blocks (None if not stored).           # [n_entries]
        attrs: per-structure scalars: ``fermi_level`` (eV), ``n_electrons``,
            ``energy`` (eV), ``converged``, ``source``, crystals' ``floor_*`` ...
        reference_kpts: crystals: fractional k of the reference bands.  # [n_k, 3]
        reference_bands: crystals: the SCF's untruncated bands there, eV. # [n_k, nao_cell]
    """

    name: str
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    atom_pairs: np.ndarray
    block_offsets: np.ndarray
    hamiltonian: np.ndarray | None = None
    overlap: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)
    reference_kpts: np.ndarray | None = None
    reference_bands: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def n_pairs(self) -> int:
        return len(self.atom_pairs)

    def block_shape(self, p: int, nao: np.ndarray) -> tuple[int, int]:
        _, _, _, i, j = self.atom_pairs[p]
        return int(nao[i]), int(nao[j])

    def block(self, p: int, nao: np.ndarray, which: str = HAMILTONIAN) -> np.ndarray:
        """Block ``p`` of H or S as an ``nao_i x nao_j`` array (a view)."""
        flat = getattr(self, which)
        start, stop = self.block_offsets[p], self.block_offsets[p + 1]
        return flat[start:stop].reshape(self.block_shape(p, nao))

    def to_atoms(self) -> Atoms:
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info["name"] = self.name
        return atoms

    def check(self, basis: Basis) -> None:
        """Raise DatasetError if shapes disagree with ``basis`` (names the structure)."""
        nao = basis.nao_per_atom(self.numbers)
        expected = block_offsets(self.atom_pairs, nao)
        if not np.array_equal(expected, self.block_offsets):
            raise DatasetError(f"{self.name}: block offsets do not match basis {basis.name!r}")
        for key in (HAMILTONIAN, OVERLAP):
            flat = getattr(self, key)
            if flat is not None and len(flat) != expected[-1]:
                raise DatasetError(
                    f"{self.name}: {key} has {len(flat)} entries, basis {basis.name!r} needs {expected[-1]}"
                )


class DatasetWriter:
    """Write records into one HDF5 file, atomically.

    The file is built under a temporary name and renamed on :meth:`close`, so a killed
    run never leaves a file that looks complete.

    Args:
        path: output file.
        basis: orbital basis of every record.
        xc: exchange-correlation functional, e.g. ``"pbe"``.
        code: DFT code that produced the labels, e.g. ``"pyscf"``.
        code_version: its version string.
    """

    def __init__(self, path: str | Path, basis: Basis, xc: str, code: str = "pyscf", code_version: str = ""):
        self.path = Path(path)
        self.basis = basis
        self._target = replacing(self.path)
        self._file = h5py.File(self._target.tmp, "w")
        attrs = {
            **basis.to_attrs(),
            **FILE_UNITS,
            "xc": xc,
            "code": code,
            "code_version": code_version,
            "ehpc_version": __version__,
            "schema_version": SCHEMA_VERSION,
        }
        self._file.attrs.update(attrs)
        self._group = self._file.create_group(STRUCTURES)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, record: HamiltonianRecord) -> None:
        record.check(self.basis)
        if record.name in self._group:
            raise DatasetError(f"{self.path}: duplicate structure name {record.name!r}")
        write_record(self._group.create_group(record.name), record)

    def close(self) -> None:
        self._file.close()
        self._target.commit()

    def abort(self) -> None:
        self._file.close()
        self._target.discard()


def write_record(group: h5py.Group, record: HamiltonianRecord) -> None:
    """Store one record's arrays and scalar attributes in ``group``."""
    group.create_dataset(NUMBERS, data=np.asarray(record.numbers, dtype=np.int64))
    group.create_dataset(POSITIONS, data=np.asarray(record.positions, dtype=np.float64))
    group.create_dataset(CELL, data=np.asarray(record.cell, dtype=np.float64).reshape(3, 3))
    group.create_dataset(PBC, data=np.asarray(record.pbc, dtype=bool).reshape(3))
    group.create_dataset(ATOM_PAIRS, data=np.asarray(record.atom_pairs, dtype=np.int64).reshape(-1, 5))
    group.create_dataset(BLOCK_OFFSETS, data=np.asarray(record.block_offsets, dtype=np.int64))
    for key in (HAMILTONIAN, OVERLAP):
        flat = getattr(record, key)
        if flat is not None:
            group.create_dataset(key, data=np.asarray(flat, dtype=np.float64), compression="gzip",
                                 compression_opts=1, shuffle=True)
    for key in (REFERENCE_KPTS, REFERENCE_BANDS):
        value = getattr(record, key)
        if value is not None:
            group.create_dataset(key, data=np.asarray(value, dtype=np.float64))
    for key, value in record.attrs.items():
        group.attrs[key] = value


def read_record(group: h5py.Group, name: str | None = None) -> HamiltonianRecord:
    """Inverse of :func:`write_record`."""
    try:
        arrays = {k: group[k][()] for k in (NUMBERS, POSITIONS, CELL, PBC, ATOM_PAIRS, BLOCK_OFFSETS)}
    except KeyError as err:
        raise DatasetError(f"{group.file.filename}:{group.name}: missing dataset ({err})") from None
    return HamiltonianRecord(
        name=name or group.name.rsplit("/", 1)[-1],
        hamiltonian=group[HAMILTONIAN][()] if HAMILTONIAN in group else None,
        overlap=group[OVERLAP][()] if OVERLAP in group else None,
        reference_kpts=group[REFERENCE_KPTS][()] if REFERENCE_KPTS in group else None,
        reference_bands=group[REFERENCE_BANDS][()] if REFERENCE_BANDS in group else None,
        attrs={k: plain_value(v) for k, v in group.attrs.items()},
        **arrays,
    )


class Dataset:
    """Read-only, lazily opened view of a dataset file.

    Example:
        >>> data = Dataset("water.h5")              # doctest: +SKIP
        >>> record = data[0]; data.basis.name       # doctest: +SKIP
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: dataset file not found")
        try:
            with h5py.File(self.path, "r") as f:
                if STRUCTURES not in f:
                    raise DatasetError(f"{self.path}: not an ehpc dataset (no /{STRUCTURES} group)")
                self.attrs = {k: plain_value(v) for k, v in f.attrs.items()}
                self.names = sorted(f[STRUCTURES].keys())
        except OSError as err:
            raise DatasetError(f"{self.path}: unreadable or truncated HDF5 file ({err})") from None
        for key in ("basis", "energy_unit", "length_unit"):
            if key not in self.attrs:
                raise DatasetError(f"{self.path}: missing file attribute {key!r}")
        if self.attrs["energy_unit"] != FILE_UNITS["energy_unit"]:
            raise DatasetError(f"{self.path}: energies are in {self.attrs['energy_unit']}, expected eV")
        self.basis = Basis.from_attrs(self.attrs)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int | str) -> HamiltonianRecord:
        name = self.names[index] if isinstance(index, (int, np.integer)) else index
        if name not in self._handle()[STRUCTURES]:
            raise DatasetError(f"{self.path}: no structure named {name!r}")
        return read_record(self._handle()[STRUCTURES][name], name)

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    @property
    def xc(self) -> str:
        return str(self.attrs.get("xc", ""))

    def elements(self) -> list[int]:
        """Every atomic number in the file, read without loading the Hamiltonians."""
        found: set[int] = set()
        with h5py.File(self.path, "r") as f:
            for name in f[STRUCTURES]:
                found.update(int(z) for z in np.unique(f[STRUCTURES][name][NUMBERS][()]))
        return sorted(found)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state


def merge(paths, out: str | Path) -> Path:
    """Join dataset files (e.g. one per structure) into one, atomically.

    All inputs must share basis, pseudopotential and xc.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DatasetError(f"{out}: nothing to merge")
    first = Dataset(paths[0])
    with DatasetWriter(out, first.basis, first.xc, first.attrs.get("code", ""),
                       first.attrs.get("code_version", "")) as writer:
        for path in paths:
            data = Dataset(path)
            if (data.basis, data.xc) != (first.basis, first.xc):
                raise DatasetError(
                    f"{path}: basis/xc {data.basis.name}/{data.xc} differs from "
                    f"{first.basis.name}/{first.xc} of {paths[0]}"
                )
            for record in data:
                writer.write(record)
            data.close()
    return Path(out)


def plain_value(value):
    """An HDF5 attribute as a plain Python value (bytes decoded, NumPy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
