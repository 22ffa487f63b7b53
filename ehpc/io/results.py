"""Reader for ``ehpc-infer`` results files (written by :mod:`ehpc.infer.write`).

Example:
    >>> res = read_results("results.h5")                       # doctest: +SKIP
    >>> res.fermi_level, res.gap                                # doctest: +SKIP
    >>> h = res.hamiltonian()   # scipy.sparse, Γ point, original atom order
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms

from ..basis import Basis
from .dataset import (
    CELL,
    NUMBERS,
    PBC,
    POSITIONS,
    STRUCTURES,
    Dataset,
    DatasetError,
    HamiltonianRecord,
    plain_value,
)
from .layout import BlockLayout, ranges_within

RESULTS = "results"


@dataclass
class Results:
    """One inference run: structure, block-sparse H and S, eigenstates near E_F, costs.

    The blocks are read from disk only when :attr:`record`, :meth:`hamiltonian` or
    :meth:`overlap` is first used, so scalars and timings of a huge run load at once.

    Attributes:
        path: the results file.
        name: the structure's name under ``/structures``.
        eigenvalues: converged eigenvalues near the Fermi level, ascending (eV).
        fermi_level, homo, lumo, gap: eV (NaN where not determined); HOMO and LUMO are
            states n_occupied and n_occupied + 1, equal (gap 0) in a partly filled level.
        n_electrons: electrons counted from the basis' valence charges.
        timings: seconds per stage, one value per rank.            # {stage: [n_ranks]}
        peak_memory: peak resident bytes after each stage per rank. # {stage: [n_ranks]}
        attrs: every scalar attribute of ``/results``.
        atom_order: original atom id at each partition position.   # [n_atoms]
    """

    path: Path
    name: str
    eigenvalues: np.ndarray
    fermi_level: float
    homo: float
    lumo: float
    gap: float
    n_electrons: int
    timings: dict
    peak_memory: dict
    attrs: dict = field(default_factory=dict)
    atom_order: np.ndarray | None = None

    @functools.cached_property
    def record(self) -> HamiltonianRecord:
        """The structure with its block-sparse H(R) and S(R) (read on first use)."""
        data = Dataset(self.path)
        record = data[self.name]
        nao = data.basis.nao_per_atom(record.numbers)
        data.close()
        if not np.array_equal(BlockLayout(record.atom_pairs, nao).offsets, record.block_offsets):
            raise DatasetError(
                f"{self.path}: block offsets do not match the atom pairs in basis "
                f"{data.basis.name!r}"
            )
        return record

    @functools.cached_property
    def atoms(self) -> Atoms:
        with h5py.File(self.path, "r") as f:
            group = f[STRUCTURES][self.name]
            atoms = Atoms(
                numbers=group[NUMBERS][()],
                positions=group[POSITIONS][()],
                cell=group[CELL][()],
                pbc=group[PBC][()],
            )
        atoms.info["name"] = self.name
        return atoms

    @functools.cached_property
    def basis(self) -> Basis:
        with h5py.File(self.path, "r") as f:
            return Basis.from_attrs(dict(f.attrs))

    @property
    def n_ranks(self) -> int:
        return int(self.attrs.get("n_ranks", 1))

    @property
    def fermi_method(self) -> str:
        """How E_F was found: ``window``, ``bisection`` or ``window+bisection`` (fallback)."""
        return str(self.attrs.get("fermi_method", "bisection"))

    @property
    def factorizations(self) -> int:
        """LDLᵀ factorisations of H - σS the E_F search and eigensolve took."""
        return int(self.attrs.get("factorizations", 0))

    @property
    def gap_found(self) -> bool:
        """False when a degenerate level holds both HOMO and LUMO (partly filled: gap 0)."""
        return bool(self.attrs.get("gap_found", False))

    @property
    def occupancy(self) -> tuple[int, int]:
        """(filled, states) of the partly filled level; (0, 0) when gapped."""
        return int(self.attrs.get("level_filled", 0)), int(self.attrs.get("level_states", 0))

    @property
    def _nao(self) -> np.ndarray:
        return self.basis.nao_per_atom(self.atoms.numbers)

    @functools.cached_property
    def layout(self) -> BlockLayout:
        """The block layout of the stored pairs (H and S share it)."""
        return BlockLayout(self.record.atom_pairs, self._nao)

    def hamiltonian(self):
        """Γ-point H (eV) as scipy CSR over the orbitals of the ORIGINAL atom order."""
        return self.layout.gamma(self.record.hamiltonian)

    def overlap(self):
        """Γ-point S as scipy CSR over the orbitals of the ORIGINAL atom order."""
        return self.layout.gamma(self.record.overlap)

    def eigenvectors(self) -> np.ndarray | None:
        """S-normalised eigenvectors ``[n_states, n_orbitals]`` in the original orbital order."""
        with h5py.File(self.path, "r") as f:
            if "eigenvectors" not in f[RESULTS]:
                return None
            stored = f[RESULTS]["eigenvectors"][()]  # [n_states, n_orbitals], partition order
        nao = self._nao
        first = np.concatenate([[0], np.cumsum(nao)])[:-1]
        sizes = nao[self.atom_order]
        # original orbital index at each stored (partition-order) position
        original = np.repeat(first[self.atom_order], sizes) + ranges_within(sizes)
        out = np.empty_like(stored)
        out[:, original] = stored
        return out


def read_results(path: str | Path) -> Results:
    """Open an ``ehpc-infer`` results file (its ``.ranks`` folder must sit beside it)."""
    path = Path(path)
    Dataset(path)  # checks the file is a readable ehpc dataset in eV/Å
    with h5py.File(path, "r") as f:
        if RESULTS not in f:
            raise DatasetError(f"{path}: not an ehpc-infer results file (no /{RESULTS} group)")
        group = f[RESULTS]
        attrs = {k: plain_value(v) for k, v in group.attrs.items()}
        _check_sources(path, f)
        stages = json.loads(attrs["stages"])
        timings = group["timings"][()]  # [n_ranks, n_stages]
        memory = group["peak_memory"][()]  # [n_ranks, n_stages]
        eigenvalues = group["eigenvalues"][()]
        atom_order = group["partition"]["atom_order"][()]
    return Results(
        path=path,
        name=attrs["structure"],
        eigenvalues=eigenvalues,
        fermi_level=float(attrs["fermi_level"]),
        homo=float(attrs["homo"]),
        lumo=float(attrs["lumo"]),
        gap=float(attrs["gap"]),
        n_electrons=int(attrs["n_electrons"]),
        timings={s: timings[:, k] for k, s in enumerate(stages)},
        peak_memory={s: memory[:, k] for k, s in enumerate(stages)},
        attrs=attrs,
        atom_order=atom_order,
    )


def _check_sources(path: Path, f: h5py.File) -> None:
    """Raise if a rank file that a virtual dataset maps is missing (HDF5 would read zeros)."""
    missing: set[str] = set()

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            for source in obj.virtual_sources():
                if not (path.parent / source.file_name).is_file():
                    missing.add(source.file_name)

    f.visititems(visit)
    if missing:
        raise DatasetError(
            f"{path}: {len(missing)} rank file(s) it joins are missing, e.g. {sorted(missing)[0]}; "
            f"keep the {path.name}.ranks folder beside it"
        )

