"""Exact one-electron integral blocks (overlap S; kinetic T for reference Hamiltonians).

The one home of libcint in ehpc: labels (:mod:`ehpc.dft`), inference
(:mod:`ehpc.infer.overlap`) and analysis (exact S(R) for bands) all take their integrals
and their ranges from here.

Blocks come straight from libcint, batch by batch: the basis data of every element is
built once by PySCF, then tiled over the atoms of a batch (a few dozen owned atoms and
the neighbour images they touch), and ``gto.moleintor.getints`` returns the cross matrix
between the two sets, exactly what ``gto.intor_cross`` computes but without building a
``Mole`` for every batch.  Nothing of size N x N is ever formed.

Gaussian integrals decay as ``exp(-a b / (a + b) d^2)``, so every element pair has a
distance beyond which its block is below ``tol``; :func:`integral_ranges` finds it by
scanning a dimer, and the sparsity pattern keeps every pair closer than that.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .basis import Basis
from .errors import UserError
from .io.layout import BlockLayout, block_offsets
from .units import HARTREE_TO_EV, pyscf_bohr_to_angstrom

#: default magnitude (Frobenius norm of a block) below which a pair's integrals are dropped.
#: The tolerance of the labels' S (PySCF) and of the exact S that band scoring uses; blocks
#: of 1e-10 move eigenvalues by ~1e-10 of the bandwidth.  Inference drops more: its default
#: is ehpc.infer.overlap.OVERLAP_DROP_TOLERANCE (ehpc-infer --overlap-tol and the
#: workflow's ``infer.overlap_tol`` in configs/schema.yaml equal that one; a test holds them).
INTEGRAL_TOLERANCE = 1.0e-10

#: the dimer scan for the range of an element pair, in Å
RANGE_SCAN_STEP = 0.01
RANGE_SCAN_MAX = 60.0

#: target number of entries in one libcint cross matrix (sets the batch size)
BATCH_ENTRIES = 1 << 22

#: libcint integral names and the factor that takes their atomic units to ehpc's
OPERATORS = {
    "overlap": ("int1e_ovlp_sph", 1.0),
    "kinetic": ("int1e_kin_sph", HARTREE_TO_EV),
}


class IntegralError(UserError, ValueError):
    """An integral request the basis or the geometry cannot satisfy."""


@dataclass(frozen=True)
class ElementTemplate:
    """libcint description of one basis for a set of elements, ready to tile over atoms.

    Attributes:
        env: basis exponents and coefficients of every element (libcint ``env`` head).
        atm: one libcint ``atm`` row per element.                  # {Z: [6]}
        bas: the element's shells, ``ATOM_OF`` still to be set.    # {Z: [n_shells, 8]}
        nao: orbitals per element.                                 # {Z: int}
    """

    env: np.ndarray
    atm: dict
    bas: dict
    nao: dict


@functools.lru_cache(maxsize=32)
def element_template(basis: Basis, elements: tuple[int, ...]) -> ElementTemplate:
    """Build the libcint data of ``elements`` (atomic numbers) in ``basis`` once."""
    from ase.data import chemical_symbols
    from pyscf import gto

    atoms = [[chemical_symbols[z], (0.0, 0.0, 10.0 * k)] for k, z in enumerate(elements)]
    try:
        mol = gto.M(atom=atoms, basis=basis.name, spin=sum(elements) % 2, unit="Bohr", verbose=0)
    except (KeyError, RuntimeError, ValueError) as err:
        raise IntegralError(
            f"basis {basis.name!r} cannot describe elements {elements}: {err}"
        ) from None
    atm, bas, nao = {}, {}, {}
    for k, z in enumerate(elements):
        atm[z] = mol._atm[k].copy()
        rows = mol._bas[mol._bas[:, gto.ATOM_OF] == k].copy()
        bas[z] = rows
        nao[z] = int(sum((2 * r[gto.ANG_OF] + 1) * r[gto.NCTR_OF] for r in rows))
        expected = basis.element(z).nao
        if nao[z] != expected:
            raise IntegralError(
                f"basis {basis.name!r}: PySCF gives {nao[z]} orbitals for Z={z}, "
                f"the registry {expected}"
            )
    return ElementTemplate(env=mol._env.copy(), atm=atm, bas=bas, nao=nao)


def _tile(template: ElementTemplate, numbers: np.ndarray, positions_bohr: np.ndarray):
    """libcint ``atm, bas, env`` for atoms ``numbers`` at ``positions_bohr``."""
    from pyscf import gto

    n_head = len(template.env)
    env = np.concatenate([template.env, positions_bohr.reshape(-1)])  # [n_head + 3 n_atoms]
    atm = np.array([template.atm[int(z)] for z in numbers], dtype=np.int32).reshape(-1, 6)
    atm[:, gto.PTR_COORD] = n_head + 3 * np.arange(len(numbers))
    bas = []
    for k, z in enumerate(numbers):
        rows = template.bas[int(z)].copy()
        rows[:, gto.ATOM_OF] = k
        bas.append(rows)
    bas = np.concatenate(bas).astype(np.int32) if bas else np.zeros((0, 8), np.int32)
    return atm, bas, env


def cross_integrals(
    operator: str,
    basis: Basis,
    numbers_a: np.ndarray,
    positions_a: np.ndarray,
    numbers_b: np.ndarray,
    positions_b: np.ndarray,
) -> np.ndarray:
    """Dense integrals <a|op|b> between two sets of atoms, in ehpc units.

    Args:
        operator: ``"overlap"`` or ``"kinetic"``.
        basis: orbital basis.
        numbers_a, positions_a: bra atoms (Å).          # [n_a], [n_a, 3]
        numbers_b, positions_b: ket atoms (Å).          # [n_b], [n_b, 3]

    Returns:
        The ``[nao_a, nao_b]`` matrix in PySCF AO order, atom by atom.
    """
    from pyscf.gto import moleintor

    intor, factor = _operator(operator)
    numbers = np.concatenate([numbers_a, numbers_b]).astype(np.int64)
    bohr = pyscf_bohr_to_angstrom()
    positions = np.concatenate([positions_a, positions_b]) / bohr  # [n_a + n_b, 3]
    template = element_template(basis, tuple(sorted({int(z) for z in numbers})))
    atm, bas, env = _tile(template, numbers, positions)
    n_bas_a = sum(len(template.bas[int(z)]) for z in numbers_a)
    shls = (0, n_bas_a, n_bas_a, len(bas))
    out = moleintor.getints(intor, atm, bas, env, shls_slice=shls, comp=1)  # [nao_a, nao_b]
    return out * factor if factor != 1.0 else out


def _operator(operator: str) -> tuple[str, float]:
    if operator not in OPERATORS:
        raise IntegralError(
            f"unknown one-electron operator {operator!r}; choose from {sorted(OPERATORS)}"
        )
    return OPERATORS[operator]


@functools.lru_cache(maxsize=64)
def _pair_range(operator: str, basis: Basis, z_i: int, z_j: int, tol: float,
                step: float) -> float:
    """Distance (Å) beyond which the (z_i, z_j) block has Frobenius norm below ``tol``.

    The Frobenius norm of a block is invariant under rotation of the pair (the Wigner
    matrices are orthogonal), so one direction suffices.  The dimer is scanned every
    ``step`` Å out to ``RANGE_SCAN_MAX``; the answer is the first scanned distance past
    the last one still at or above ``tol``.
    """
    steps = np.arange(1, int(round(RANGE_SCAN_MAX / step)) + 1) * step  # [n_steps]
    images = np.zeros((len(steps), 3))
    images[:, 2] = steps
    nao_i, nao_j = basis.element(z_i).nao, basis.element(z_j).nao
    block = cross_integrals(
        operator, basis, np.array([z_i]), np.zeros((1, 3)), np.full(len(steps), z_j), images
    ).reshape(nao_i, len(steps), nao_j)  # [nao_i, n_steps, nao_j]
    norms = np.sqrt((block**2).sum(axis=(0, 2)))  # [n_steps]
    above = np.flatnonzero(norms >= tol)
    if len(above) and above[-1] == len(steps) - 1:
        raise IntegralError(
            f"basis {basis.name!r}: {operator} between Z={z_i} and Z={z_j} is still "
            f"{norms[-1]:.1e} at {RANGE_SCAN_MAX} Å; the basis is too diffuse for a sparse "
            "calculation"
        )
    return float(steps[above[-1] + 1]) if len(above) else float(steps[0])


def integral_ranges(operator: str, basis: Basis, numbers, tol: float = INTEGRAL_TOLERANCE,
                    step: float = RANGE_SCAN_STEP) -> dict:
    """Interaction range in Å of every element pair of ``numbers`` for ``operator``.

    The one range scan of ehpc: the inference pattern (``overlap``, at the overlap
    tolerance) and the label band mesh (:func:`ehpc.dft.periodic.overlap_decay_radius`,
    at the aliasing tolerance on a coarser ``step``) both come from it.

    Returns:
        ``{(z_i, z_j): distance}`` for every ordered pair of elements present.
    """
    elements = sorted({int(z) for z in np.unique(numbers)})
    return {(a, b): _pair_range(operator, basis, min(a, b), max(a, b), float(tol), float(step))
            for a in elements for b in elements}


def pair_blocks(
    operator: str,
    basis: Basis,
    numbers: np.ndarray,
    positions: np.ndarray,
    pairs: np.ndarray,
    batch_entries: int = BATCH_ENTRIES,
    nao: np.ndarray | None = None,
) -> np.ndarray:
    """Flat blocks of ``operator`` for the pairs ``(i, j)`` of an explicit cluster.

    Args:
        operator: ``"overlap"`` or ``"kinetic"``.
        basis: orbital basis.
        numbers: atomic numbers of the cluster.                      # [n_cluster]
        positions: Cartesian positions of the cluster in Å.           # [n_cluster, 3]
        pairs: ``[i, j]`` cluster indices, grouped by ``i`` with rows of
            nearby ``i`` close together (e.g. sorted by ``i`` in a
            spatially ordered cluster).                               # [n_pairs, 2]
        batch_entries: bound on the entries of one libcint cross matrix.
        nao: orbitals per cluster atom, if already known.           # [n_cluster]

    Returns:
        Flat ``nao_i x nao_j`` row-major blocks in the order of ``pairs``, laid out as
        ``block_offsets`` of the same pairs.                           # [n_entries]
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if nao is None:
        nao = basis.nao_per_atom(numbers) if len(numbers) else np.zeros(0, np.int64)
    keys = np.column_stack([np.zeros((len(pairs), 3), np.int64), pairs])  # [n_pairs, 5]
    offsets = block_offsets(keys, nao)
    out = np.empty(offsets[-1])
    for batch in _batches(pairs, nao, batch_entries):
        _fill_batch(operator, basis, numbers, positions, pairs, nao, offsets, batch, out)
    return out


def _batches(pairs: np.ndarray, nao: np.ndarray, batch_entries: int):
    """Slices of whole row atoms whose cross matrix holds at most ~``batch_entries``.

    The bound used, (orbitals of the rows) x (orbitals of all their pairs), ignores
    that nearby rows share neighbours, so real cross matrices are smaller.
    """
    if len(pairs) == 0:
        return
    starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])  # [n_rows]
    row_orbitals = np.concatenate([[0], np.cumsum(nao[pairs[starts, 0]])])  # [n_rows + 1]
    pair_orbitals = np.concatenate([[0], np.cumsum(nao[pairs[:, 1]])])  # [n_pairs + 1]
    col_orbitals = pair_orbitals[np.r_[starts, len(pairs)]]  # [n_rows + 1]
    n_rows, first = len(starts), 0
    while first < n_rows:
        lo, hi = first + 1, n_rows  # at least one row atom per batch
        while lo < hi:  # largest last row that keeps the bound
            mid = (lo + hi + 1) // 2
            rows = row_orbitals[mid] - row_orbitals[first]
            size = rows * (col_orbitals[mid] - col_orbitals[first])
            lo, hi = (mid, hi) if size <= batch_entries else (lo, mid - 1)
        stop = int(starts[lo]) if lo < n_rows else len(pairs)
        yield slice(int(starts[first]), stop)
        first = lo


def _fill_batch(operator, basis, numbers, positions, pairs, nao, offsets, batch, out) -> None:
    """Compute one batch's cross matrix and copy each pair's block into ``out``."""
    sub = pairs[batch]  # [n_batch, 2]
    rows, row_of = np.unique(sub[:, 0], return_inverse=True)
    cols, col_of = np.unique(sub[:, 1], return_inverse=True)
    matrix = cross_integrals(
        operator, basis, numbers[rows], positions[rows], numbers[cols], positions[cols]
    )  # [nao(rows), nao(cols)]
    row_start = np.concatenate([[0], np.cumsum(nao[rows])])[row_of]  # [n_batch]
    col_start = np.concatenate([[0], np.cumsum(nao[cols])])[col_of]  # [n_batch]
    n_i, n_j = nao[sub[:, 0]], nao[sub[:, 1]]
    starts = offsets[batch.start : batch.stop]
    # one vectorised gather per block shape (element pair)
    for a, b in {(int(x), int(y)) for x, y in zip(n_i, n_j)}:
        sel = np.flatnonzero((n_i == a) & (n_j == b))
        r = row_start[sel, None, None] + np.arange(a)[None, :, None]  # [n_sel, a, 1]
        c = col_start[sel, None, None] + np.arange(b)[None, None, :]  # [n_sel, 1, b]
        dest = starts[sel, None] + np.arange(a * b)[None, :]  # [n_sel, a*b]
        out[dest] = matrix[r, c].reshape(len(sel), a * b)


class IntegralModel:
    """A model-shaped wrapper that returns exact one-electron blocks, e.g. H = T.

    It has the interface of :class:`ehpc.nn.model.HamiltonianModel` used by inference
    (``basis``, ``cutoff``, ``receptive_field``, ``predict``), so the pipeline can be run
    and checked with a physical, exactly known operator before a trained model exists.

    Args:
        basis: orbital basis.
        operator: ``"kinetic"`` (default) or ``"overlap"``.
        cutoff: pair range in Å; defaults to the operator's range at ``tol``.
        tol: integral tolerance used for the default cutoff.
    """

    def __init__(self, basis: Basis, operator: str = "kinetic", cutoff: float | None = None,
                 tol: float = INTEGRAL_TOLERANCE):
        _operator(operator)
        self.basis = basis
        self.operator = operator
        self.tol = tol
        self._cutoff = cutoff
        self.metadata = {"basis": basis.name, "pseudo": basis.pseudo or "", "operator": operator}

    @property
    def cutoff(self) -> float:
        if self._cutoff is None:
            raise IntegralError("IntegralModel: call with_cutoff_for(numbers) or give cutoff=")
        return self._cutoff

    def with_cutoff_for(self, numbers) -> "IntegralModel":
        """Set the cutoff to the operator's range over the elements of ``numbers``."""
        self._cutoff = max(integral_ranges(self.operator, self.basis, numbers, self.tol).values())
        return self

    @property
    def receptive_field(self) -> float:
        return self.cutoff  # integrals depend on the two atoms only

    def check_compatible(self, basis: Basis, numbers, where: str = "structure") -> None:
        if basis != self.basis:
            raise IntegralError(
                f"{where}: basis {basis.name!r} differs from the operator's {self.basis.name!r}"
            )
        self.basis.check(numbers, where)

    def predict(self, numbers, positions, cell, pbc, pairs=None, device=None, dtype=None,
                name=None):
        """Blocks for ``pairs`` ``[Rx, Ry, Rz, i, j]`` (default: all pairs within cutoff).

        ``device``, ``dtype`` and ``name`` are accepted for the model interface and unused.
        """
        from .predictor import prediction_request

        numbers, positions, cell, pairs = prediction_request(numbers, positions, cell, pbc,
                                                             self.cutoff, pairs)
        # each periodic pair (i, j, R) becomes (i, image of j) in an explicit cluster
        images, image_of = np.unique(pairs[:, [4, 0, 1, 2]], axis=0, return_inverse=True)
        image_of = image_of.reshape(-1)
        cluster_numbers = np.concatenate([numbers, numbers[images[:, 0]]])
        image_positions = positions[images[:, 0]] + images[:, 1:] @ cell  # [n_images, 3]
        cluster_positions = np.concatenate([positions, image_positions])
        local = np.column_stack([pairs[:, 3], len(numbers) + image_of])  # [n_pairs, 2]
        order = np.argsort(local[:, 0], kind="stable")
        nao = self.basis.nao_per_atom(numbers)
        flat_sorted = pair_blocks(
            self.operator, self.basis, cluster_numbers, cluster_positions, local[order]
        )
        return pairs, reorder_blocks(flat_sorted, pairs[order], nao, np.argsort(order))


def reorder_blocks(
    flat: np.ndarray, pairs: np.ndarray, nao: np.ndarray, order: np.ndarray
) -> np.ndarray:
    """Flat blocks of ``pairs[order]`` from the flat blocks of ``pairs`` (vectorised).

    Args:
        flat: blocks laid out as ``block_offsets(pairs, nao)``.      # [n_entries]
        pairs: rows ``[..., i, j]`` whose last two columns are atoms. # [n_pairs, k]
        nao: orbitals per atom.                                      # [n_atoms]
        order: the new order of the pairs.                           # [n_pairs]
    """
    return flat[BlockLayout(pairs, nao).entries(order)]
