"""The training and validation structures, checked before training.

:class:`TrainingData` reads a dataset file: opening reads only what is cheap for every
structure of the two splits (atomic numbers, the label cutoff); the Hamiltonians are
read when a structure is first needed, checked for non-finite entries, turned into a
graph and (optionally) cached.  :class:`RecordData` holds records already in memory
(``ehpc.nn.fit``, benchmarks).  The trainer reads both through the same methods.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..io.dataset import NUMBERS, STRUCTURES, Dataset, DatasetError
from ..io.splits import read_splits
from ..io.dataset import HamiltonianRecord
from ..nn.data import Graph
from .config import suggest
from .loss import BandTarget, band_target


class Structures:
    """What the trainer reads: names of the two splits, sizes, graphs and band targets.

    Subclasses set ``train_names``, ``val_names``, ``numbers``, ``basis``, ``cache`` and
    implement :meth:`record`.
    """

    train_names: list[str]
    val_names: list[str]
    numbers: dict[str, np.ndarray]
    cache: bool = True

    def record(self, name: str) -> HamiltonianRecord:
        raise NotImplementedError

    def orbitals(self, names: list[str]) -> np.ndarray:
        """Orbitals of each named structure in the dataset's basis."""
        return np.array([int(self.basis.nao_per_atom(self.numbers[n]).sum()) for n in names],
                        dtype=np.int64)

    def elements(self) -> list[int]:
        """Atomic numbers present in the training and validation splits."""
        return sorted({int(z) for n in self.numbers.values() for z in np.unique(n)})

    def graph(self, name: str, model) -> Graph:
        """The training graph of structure ``name`` for ``model`` (its cutoff, elements,
        basis and baseline; one model per data object, since graphs are cached)."""
        cached = self._graphs.get(name)
        if cached is not None:
            return cached
        graph = model.graph_of(self.record(name))
        if self.cache:
            self._graphs[name] = graph
        return graph

    def band(self, name: str, graph: Graph, n_kpoints: int, window: float,
             n_virtual: int) -> BandTarget:
        """The band-energy target of structure ``name`` (``graph``: its training graph)."""
        cached = self._bands.get(name)
        if cached is not None:
            return cached
        target = band_target(self.record(name), graph, self.basis, n_kpoints, window,
                             n_virtual)
        if self.cache:
            self._bands[name] = target
        return target


class RecordData(Structures):
    """Records in memory as the trainer's structures (names made unique per split).

    Args:
        basis: their basis.
        train: labelled structures to fit.
        val: labelled structures to monitor.
    """

    def __init__(self, basis, train: list[HamiltonianRecord], val: list[HamiltonianRecord] = ()):
        self.basis = basis
        self._records = {f"train/{k}/{r.name}": r for k, r in enumerate(train)}
        self.train_names = list(self._records)
        val_records = {f"val/{k}/{r.name}": r for k, r in enumerate(val)}
        self.val_names = list(val_records)
        self._records.update(val_records)
        self.numbers = {n: np.asarray(r.numbers, dtype=np.int64) for n, r in self._records.items()}
        self._graphs: dict[str, Graph] = {}
        self._bands: dict[str, BandTarget] = {}

    def record(self, name: str) -> HamiltonianRecord:
        return self._records[name]

    def close(self) -> None:
        self._graphs.clear()
        self._bands.clear()


class TrainingData(Structures):
    """Names, sizes and graphs of a dataset's training and validation splits.

    Args:
        path: dataset file written by ``ehpc-dataset``.
        train_split: name of the training subset in ``/splits``.
        val_split: name of the validation subset, or None for none.
        cache: keep graphs in memory after they are first built.

    Raises:
        DatasetError: missing file, no such split, an empty split, split names that are
            not structures of the file, or a structure in both splits.
    """

    def __init__(self, path: str | Path, train_split: str, val_split: str | None,
                 cache: bool = True):
        self.path = Path(path)
        self.dataset = Dataset(self.path)
        splits = read_splits(self.path)
        if not splits:
            raise DatasetError(f"{self.path}: no train/validation splits in the file; write "
                               "them with ehpc-dataset --split train=0.9,val=0.1")
        self.train_names = self._subset(splits, train_split, "data.train_split")
        self.val_names = self._subset(splits, val_split, "data.val_split") if val_split else []
        both = sorted(set(self.train_names) & set(self.val_names))
        if both:
            raise DatasetError(f"{self.path}: structure {both[0]!r} is in both split "
                               f"{train_split!r} and split {val_split!r} ({len(both)} shared)")
        self.numbers, self.label_cutoffs = self._read_cheap(self.train_names + self.val_names)
        self.cache = cache
        self._graphs: dict[str, Graph] = {}
        self._bands: dict[str, BandTarget] = {}

    @property
    def basis(self):
        return self.dataset.basis

    def _subset(self, splits: dict[str, list[str]], name: str, key: str) -> list[str]:
        if name not in splits:
            raise DatasetError(f"{self.path}: no split {name!r} ({key}){suggest(name, splits)}; "
                               f"the file has {sorted(splits)}")
        names = list(splits[name])
        if not names:
            raise DatasetError(f"{self.path}: split {name!r} ({key}) is empty; re-split the "
                               "dataset with ehpc-dataset --split or choose another split")
        known = set(self.dataset.names)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise DatasetError(f"{self.path}: split {name!r} names {len(unknown)} structure(s) "
                               f"not in the file, e.g. {unknown[0]!r}")
        return names

    def _read_cheap(self, names: list[str]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        numbers, cutoffs = {}, {}
        with h5py.File(self.path, "r") as f:
            group = f[STRUCTURES]
            for name in names:
                numbers[name] = np.asarray(group[name][NUMBERS][()], dtype=np.int64)
                if "cutoff" in group[name].attrs:
                    cutoffs[name] = float(group[name].attrs["cutoff"])
        return numbers, cutoffs

    def min_label_cutoff(self) -> tuple[float, str] | None:
        """The smallest pair cutoff the labels were made with, and its structure."""
        if not self.label_cutoffs:
            return None
        name = min(self.label_cutoffs, key=self.label_cutoffs.get)
        return self.label_cutoffs[name], name

    def record(self, name: str) -> HamiltonianRecord:
        """Structure ``name`` read from the file (labels checked to be finite)."""
        record = self.dataset[name]
        if record.hamiltonian is None:
            raise DatasetError(f"{self.path}: structure {name!r} has no Hamiltonian to train on")
        record.check(self.basis)
        bad = np.flatnonzero(~np.isfinite(record.hamiltonian))
        if len(bad):
            pair = int(np.searchsorted(record.block_offsets, bad[0], side="right")) - 1
            rx, ry, rz, i, j = (int(v) for v in record.atom_pairs[pair])
            raise DatasetError(
                f"{self.path}: structure {name!r} has {len(bad)} non-finite Hamiltonian "
                f"entries (first in block i={i}, j={j}, R=[{rx}, {ry}, {rz}]); relabel it or "
                "leave it out of the splits"
            )
        return record

    def close(self) -> None:
        self.dataset.close()
        self._graphs.clear()
        self._bands.clear()
