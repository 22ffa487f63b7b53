"""DFT blocks of a perfect crystal, tabulated from one primitive-cell label: a block
predictor that lets the inference benchmarks run on the true H of large supercells.

A supercell of a perfect crystal has, by translation symmetry, exactly the H(R) blocks of
its primitive cell: the block of atoms (a, b) equals the primitive block of their
sublattices (s_a, s_b) at lattice vector n_b - n_a.  :class:`CrystalTable` reads the
primitive cell's label (an ``ehpc-datagen`` file: blocks within the label cutoff, from the
SCF) and answers ``predict`` by lookup, so ``ehpc-infer``'s solver stages see a physical,
gapped Hamiltonian in the label's basis without a trained model.  Atoms must sit on the
perfect lattice (no rattle); anything else is refused with one line.

Check a table (diamond-structure labels): the Γ eigenvalues of the 8-atom cubic cell built
from it must equal the primitive bands at the four k-points folding onto Γ:

    python bench/crystal_table.py --check bench/data/table/labels/Si_perfect.h5

Run it as ``ehpc-infer`` with the label file in place of the model:

    mpirun -n 1 python bench/crystal_table.py --model bench/data/table/labels/Si_perfect.h5 \\
        --supercell Si:diamond:5.43:7x7x7 --nev 40 --out si2744.h5
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SITE_TOLERANCE = 1e-4  # Å: how far an atom may sit from a lattice site


class CrystalTable:
    """A ``BlockPredictor`` that looks up the primitive cell's DFT blocks.

    Args:
        record: the primitive cell's label (a ``HamiltonianRecord`` with H and S).
        basis: its basis.
        cutoff: the label's pair cutoff in Å.
    """

    def __init__(self, record, basis, cutoff: float):
        from ehpc.io.layout import BlockLayout
        from ehpc.nn.model import record_fermi_offset

        self.basis = basis
        self._cutoff = float(cutoff)
        atoms = record.to_atoms()
        self.numbers = np.asarray(atoms.numbers)
        self.positions = np.asarray(atoms.positions)
        self.cell = np.asarray(atoms.cell[:])
        self.pairs = np.asarray(record.atom_pairs, dtype=np.int64)  # [n_pairs, 5]
        nao = basis.nao_per_atom(self.numbers)
        self.layout = BlockLayout(self.pairs, nao)
        self.blocks = np.asarray(record.hamiltonian, dtype=np.float64)  # [n_entries]
        self.fermi_offset_eV = record_fermi_offset(record, nao)

    @classmethod
    def load(cls, path: Path) -> CrystalTable:
        """The table of the single structure in label file ``path``."""
        from ehpc.io.dataset import Dataset

        data = Dataset(path)
        if len(data) != 1:
            raise ValueError(f"{path}: holds {len(data)} structures, expected one primitive cell")
        record = data[0]
        cutoff = record.attrs.get("cutoff", data.attrs.get("cutoff"))
        if cutoff is None:
            raise ValueError(f"{path}: no pair cutoff recorded")
        return cls(record, data.basis, float(cutoff))

    @property
    def cutoff(self) -> float:
        return self._cutoff

    @property
    def receptive_field(self) -> float:
        return self._cutoff  # a block depends on its own pair only

    def check_compatible(self, basis, numbers, where: str = "structure") -> None:
        if basis.name != self.basis.name:
            raise ValueError(f"{where}: basis {basis.name} is not the table's {self.basis.name}")
        missing = set(np.unique(numbers)) - set(self.numbers.tolist())
        if missing:
            raise ValueError(f"{where}: elements {sorted(missing)} are not in the table's cell")

    def sites(self, numbers, positions) -> tuple[np.ndarray, np.ndarray]:
        """Sublattice and integer lattice translation of each atom.  # [n], [n, 3]"""
        inverse = np.linalg.inv(self.cell)
        sublattice = np.full(len(positions), -1, dtype=np.int64)
        translation = np.zeros((len(positions), 3), dtype=np.int64)
        for s, (z, site) in enumerate(zip(self.numbers, self.positions)):
            frac = (positions - site) @ inverse  # [n, 3]
            whole = np.round(frac)
            on_site = (np.linalg.norm((frac - whole) @ self.cell, axis=1) < SITE_TOLERANCE)
            on_site &= (numbers == z) & (sublattice < 0)
            sublattice[on_site] = s
            translation[on_site] = whole[on_site].astype(np.int64)
        if (sublattice < 0).any():
            bad = int(np.flatnonzero(sublattice < 0)[0])
            raise ValueError(f"atom {bad} is not on a site of the table's perfect lattice")
        return sublattice, translation

    def predict(self, numbers, positions, cell, pbc, pairs=None, device=None, dtype=None, *,
                name: str = "structure"):
        from ehpc.nn.data import match_rows
        from ehpc.predictor import prediction_request

        numbers, positions, cell, pairs = prediction_request(numbers, positions, cell, pbc,
                                                             self.cutoff, pairs)
        sublattice, translation = self.sites(numbers, positions)
        # the periodic image vector R of the structure's cell, in primitive lattice vectors
        image = np.round(pairs[:, :3] @ cell @ np.linalg.inv(self.cell)).astype(np.int64)
        i, j = pairs[:, 3], pairs[:, 4]
        keys = np.column_stack([translation[j] + image - translation[i],
                                sublattice[i], sublattice[j]])  # [n_pairs, 5]
        index = match_rows(keys, self.pairs)  # [n_pairs]
        if (index < 0).any():
            raise ValueError(f"{name}: {int((index < 0).sum())} pairs lie beyond the table's "
                             f"{self.cutoff} Å label")
        # sites() matched each atom's element, so its block sizes are its sublattice's
        return pairs, self.blocks[self.layout.entries(index)]


def fold_check(label: Path) -> float:
    """Largest difference (eV) between the Γ eigenvalues of the table's 8-atom cubic
    diamond cell and the primitive label's bands at the four k-points that fold onto Γ."""
    import scipy.linalg
    from ase.build import bulk

    from ehpc.analysis.bands import exact_overlap
    from ehpc.io.dataset import Dataset
    from ehpc.io.layout import BlockLayout

    table = CrystalTable.load(label)
    record = Dataset(label)[0]
    primitive = record.to_atoms()
    a = float(np.linalg.norm(primitive.cell[0])) * np.sqrt(2.0)
    cubic = bulk(primitive.get_chemical_symbols()[0], "diamond", a=a, cubic=True)
    pairs, flat = table.predict(cubic.numbers, cubic.positions, cubic.cell[:], cubic.pbc)
    nao = table.basis.nao_per_atom(cubic.numbers)
    s_pairs, s_flat = exact_overlap(cubic, table.basis)
    supercell = scipy.linalg.eigh(BlockLayout(pairs, nao).gamma(flat).toarray(),
                                  BlockLayout(s_pairs, nao).gamma(s_flat).toarray(),
                                  eigvals_only=True)
    nao_p = table.basis.nao_per_atom(primitive.numbers)
    h_layout = BlockLayout(np.asarray(record.atom_pairs), nao_p)
    s_pairs_p, s_flat_p = exact_overlap(primitive, table.basis)
    s_layout = BlockLayout(s_pairs_p, nao_p)
    repeat = np.linalg.solve(primitive.cell[:].T, cubic.cell[:].T).T  # cubic = repeat @ prim
    folded = np.unique(np.round([np.linalg.solve(repeat, g) % 1.0
                                 for g in np.ndindex(2, 2, 2)], 8) % 1.0, axis=0)
    bands = [scipy.linalg.eigh(h_layout.bloch(record.hamiltonian, k), s_layout.bloch(s_flat_p, k),
                               eigvals_only=True) for k in folded]
    return float(np.abs(np.sort(supercell) - np.sort(np.concatenate(bands))).max())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":  # python bench/crystal_table.py --check LABEL
        print(f"largest |Γ eigenvalue of the 8-atom cell - folded band| = "
              f"{fold_check(Path(sys.argv[2])):.2e} eV")
        sys.exit(0)
    from ehpc.cli.infer import main

    sys.exit(main(load_model=CrystalTable.load))
