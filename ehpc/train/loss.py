"""The training losses: matrix elements (weighted), and eigenvalues of H(k), S(k).

Matrix elements.  The error is over real matrix elements in eV (the numbers the dataset
stores), squared (``"mse"``) or absolute (``"mae"``), with an extra weight on on-site
blocks, whose large diagonal (core and valence levels) dominates the band positions.
Sums are returned, not means: the trainer divides by the weight total of the global
batch (all ranks), so every rank count takes the same step.

Band energies (HamGNN's "secondary training").  Matrix-element errors of a few meV can
still move an eigenvalue by much more, because errors add up coherently in a Bloch sum.
This loss compares the eigenvalues of the predicted ``H(k) c = ε S(k) c`` with those of
the DFT blocks of the same structure, at the same k and with the same pairs:

- crystals: Γ plus a few points of the SCF mesh (record attr ``kmesh``); the bands within
  ``window`` eV of the record's Fermi level (attr ``fermi_level``);
- molecules: Γ only; the occupied orbitals plus the lowest ``n_virtual`` empty ones
  (the LUMO is the weak spot of a model fitted to matrix elements alone).

S(k) is the record's own overlap (every stored pair), fixed: it is factorised once,
``S = L L^H``, and the generalised problem becomes the standard one of
``L^-1 H L^-H``, whose eigenvalues ``torch.linalg.eigvalsh`` differentiates
(``dε_n = c_n^H dH c_n``, stable even for degenerate levels).  Everything is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..io.dataset import DatasetError, HamiltonianRecord
from ..io.layout import BlockLayout

LOSSES = ("mse", "mae")


# ---------------------------------------------------------------------- matrix elements


def entry_weights(graph, diag_weight: float) -> torch.Tensor:
    """Loss weight per flat entry: ``diag_weight`` on on-site blocks, 1 elsewhere."""
    one = torch.ones_like(graph.target)
    return torch.where(graph.onsite_entries, one * diag_weight, one)  # [n_entries]


def pointwise(diff: torch.Tensor, kind: str) -> torch.Tensor:
    """Squared (``"mse"``) or absolute (``"mae"``) error of each difference."""
    return diff.square() if kind == "mse" else diff.abs()


def error_sum(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
              kind: str) -> torch.Tensor:
    """Weighted sum of squared or absolute errors over matrix elements, in float64."""
    diff = pred.to(torch.float64) - target.to(torch.float64)  # [n_entries]
    return (weight * pointwise(diff, kind)).sum()


# ---------------------------------------------------------------------- band energies


@dataclass
class BandTarget:
    """What the band loss of one structure needs, built once from its DFT record.

    Attributes:
        name: structure name.
        n_orbitals: orbitals of the structure (size of H(k)).
        index: dense position ``row * n + col`` of each graph entry.  # [n_entries]
        cos: ``cos(2π k·R)`` per k-point and entry.          # [n_k, n_entries]
        sin: ``sin(2π k·R)`` per k-point and entry (None at Γ only).  # [n_k, n_entries]
        l_inv: inverse Cholesky factor of S(k).              # [n_k, n, n]
        reference: DFT eigenvalues in eV.                    # [n_k, n]
        vectors: their eigenvectors in the S-orthonormal basis, as columns.  # [n_k, n, n]
        select: which eigenvalues enter the loss.            # [n_k, n]
        kpts: fractional k-points.                           # [n_k, 3]
    """

    name: str
    n_orbitals: int
    index: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor | None
    l_inv: torch.Tensor
    reference: torch.Tensor
    vectors: torch.Tensor
    select: torch.Tensor
    kpts: np.ndarray

    @property
    def count(self) -> int:
        return int(self.select.sum())

    def to(self, device) -> BandTarget:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return BandTarget(self.name, self.n_orbitals, move(self.index), move(self.cos),
                          move(self.sin), move(self.l_inv), move(self.reference),
                          move(self.vectors), move(self.select), self.kpts)


def band_kpoints(record: HamiltonianRecord, n_kpoints: int) -> np.ndarray:
    """Γ, then the next points of the record's Γ-centred SCF mesh, up to ``n_kpoints``.

    Molecules (no periodic axis) get Γ only.  The mesh points come in order of their
    distance from Γ in fractional units, so a few of them already reach the zone edge.
    Asked for more points than the SCF mesh holds, the mesh is refined by a whole factor
    along its periodic axes until it holds them: the reference eigenvalues are those of
    the label's own blocks, known at any k, and the nearly singular S(k) of a faithful
    basis lies between the points of a coarse SCF mesh (near X in silicon).
    """
    if not np.asarray(record.pbc).any():
        return np.zeros((1, 3))
    mesh = np.asarray(record.attrs.get("kmesh", (1, 1, 1)), dtype=np.int64).reshape(3)
    periodic = np.asarray(record.pbc, dtype=bool).reshape(3)
    axes = periodic & (mesh > 1) if (periodic & (mesh > 1)).any() else periodic  # not vacuum
    factor = 1
    while np.prod(np.where(axes, mesh * factor, mesh)) < n_kpoints and factor < 64:
        factor += 1
    mesh = np.where(axes, mesh * factor, mesh)
    grid = np.stack(np.meshgrid(*[np.arange(m) / m for m in mesh], indexing="ij"), -1)
    points = grid.reshape(-1, 3)
    folded = points - np.round(points)  # into [-1/2, 1/2]: the distance from Γ
    order = np.lexsort((np.arange(len(points)), np.abs(folded).sum(axis=1)))
    return points[order[: max(1, n_kpoints)]]  # [n_k, 3]


def _phases(pairs: np.ndarray, kpts: np.ndarray, nao_atom: np.ndarray) -> np.ndarray:
    """``2π k·R`` per k-point and flat entry of ``pairs``' blocks."""
    angle = 2.0 * np.pi * kpts @ pairs[:, :3].T.astype(np.float64)  # [n_k, n_pairs]
    return np.repeat(angle, BlockLayout(pairs, nao_atom).sizes, axis=1)  # [n_k, n_entries]


def _flat_index(pairs: np.ndarray, nao_atom: np.ndarray) -> np.ndarray:
    """``row * n + col`` in the dense matrix of each flat entry of ``pairs``' blocks."""
    layout = BlockLayout(pairs, nao_atom)
    rows, cols = layout.matrix_index
    return rows * layout.n_orbitals + cols  # [n_entries]


def _dense(flat: torch.Tensor, index: torch.Tensor, cos: torch.Tensor,
           sin: torch.Tensor | None, n: int) -> torch.Tensor:
    """Hermitian ``Σ_R e^{2πi k·R} M(R)`` at every k from flat blocks.   # [n_k, n, n]"""
    n_k = cos.shape[0]
    offsets = (torch.arange(n_k, device=index.device) * n * n)[:, None]  # [n_k, 1]
    where = (offsets + index[None, :]).reshape(-1)  # [n_k * n_entries]
    real = flat.new_zeros(n_k * n * n).index_add_(0, where, (cos * flat).reshape(-1))
    matrix = real.reshape(n_k, n, n)
    if sin is not None:
        imag = flat.new_zeros(n_k * n * n).index_add_(0, where, (sin * flat).reshape(-1))
        matrix = torch.complex(matrix, imag.reshape(n_k, n, n))
    # the blocks hold both directions of every pair, so this only removes round-off
    return hermitian_part(matrix)


def hermitian_part(matrix: torch.Tensor) -> torch.Tensor:
    """``(M + Mᴴ) / 2`` over the last two axes."""
    return 0.5 * (matrix + matrix.transpose(-1, -2).conj())


def orthonormal_basis(h: torch.Tensor, l_inv: torch.Tensor) -> torch.Tensor:
    """``L^-1 H L^-H`` (``S = L L^H``): H in an S-orthonormal basis, whose eigenvalues
    are those of ``H c = ε S c``.                                     # [..., n, n]"""
    return l_inv @ h @ l_inv.transpose(-1, -2).conj()


def _eigenvalues(h: torch.Tensor, l_inv: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of ``H c = ε S c`` via ``L^-1 H L^-H`` (``S = L L^H``).   # [n_k, n]"""
    return torch.linalg.eigvalsh(hermitian_part(orthonormal_basis(h, l_inv)))


def band_target(record: HamiltonianRecord, graph, basis, n_kpoints: int, window: float,
                n_virtual: int) -> BandTarget:
    """The band-loss data of one structure: its graph's pairs, the record's S and labels.

    Args:
        record: the DFT record (H and S blocks, attrs ``fermi_level``, ``kmesh``).
        graph: its training graph (one structure): the pairs the model predicts and their
            DFT blocks as target; the reference eigenvalues use exactly these.
        basis: the dataset's basis.
        n_kpoints: crystals: Γ plus this many minus one points of the SCF mesh.
        window: crystals: bands within this many eV of the Fermi level.
        n_virtual: molecules: empty orbitals above the occupied ones.

    Raises:
        DatasetError: the record has no overlap, or S(k) is not positive definite.
    """
    if record.overlap is None:
        raise DatasetError(f"{record.name}: the band-energy loss needs the overlap S, which "
                           "the record does not store; relabel it or set train.band_weight=0")
    nao_atom = basis.nao_per_atom(record.numbers)
    n = int(nao_atom.sum())
    kpts = band_kpoints(record, n_kpoints)
    periodic = bool(np.asarray(record.pbc).any())
    pairs = np.asarray(graph.pairs, dtype=np.int64)
    angle = torch.as_tensor(_phases(pairs, kpts, nao_atom))  # [n_k, n_entries]
    index = torch.as_tensor(_flat_index(pairs, nao_atom))
    sin = angle.sin() if periodic and np.any(kpts) else None
    s_pairs = np.asarray(record.atom_pairs, dtype=np.int64)
    s_angle = torch.as_tensor(_phases(s_pairs, kpts, nao_atom))
    s = _dense(torch.as_tensor(np.asarray(record.overlap, dtype=np.float64)),
               torch.as_tensor(_flat_index(s_pairs, nao_atom)), s_angle.cos(),
               None if sin is None else s_angle.sin(), n)  # [n_k, n, n]
    chol, info = torch.linalg.cholesky_ex(s)
    if bool((info > 0).any()):
        k = kpts[int(torch.nonzero(info)[0])]
        raise DatasetError(f"{record.name}: overlap S(k) at k={k.tolist()} is not positive "
                           "definite (the stored pairs cut it too short); the band-energy "
                           "loss cannot use this structure")
    eye = torch.eye(n, dtype=chol.dtype).expand_as(chol)
    l_inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # [n_k, n, n]
    cos = angle.cos()
    h = _dense(graph.target.to(torch.float64), index, cos, sin, n)
    reference, vectors = torch.linalg.eigh(hermitian_part(orthonormal_basis(h, l_inv)))
    if periodic:
        fermi = record.attrs.get("fermi_level")
        if fermi is None:
            n_occ = int(record.attrs.get("n_electrons", basis.n_electrons(record.numbers))) // 2
            levels = reference[0]
            fermi = float(0.5 * (levels[n_occ - 1] + levels[min(n_occ, n - 1)]))
        select = (reference - float(fermi)).abs() <= window
    else:
        n_occ = int(record.attrs.get("n_electrons", basis.n_electrons(record.numbers))) // 2
        select = (torch.arange(n) < n_occ + n_virtual)[None, :].expand(len(kpts), n).clone()
    return BandTarget(record.name, n, index, cos, sin, l_inv, reference, vectors, select, kpts)


def band_eigenvalues(flat: torch.Tensor, target: BandTarget) -> torch.Tensor:
    """Eigenvalues (eV) of one structure's predicted blocks at its k-points.  # [n_k, n]"""
    h = _dense(flat.to(torch.float64), target.index, target.cos, target.sin,
               target.n_orbitals)
    return _eigenvalues(h, target.l_inv)


def band_error_sum(flat: torch.Tensor, targets: list[BandTarget], kind: str,
                   ranges: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Band-energy error of a batch: (squared or absolute sum, absolute sum, count).

    Args:
        flat: the batch's predicted blocks, structure after structure.  # [n_entries]
        targets: one :class:`BandTarget` per structure of the batch.
        kind: ``"mse"`` or ``"mae"``.
        ranges: ``flat`` entry range of each structure.
    """
    loss = flat.new_zeros((), dtype=torch.float64)
    absolute = flat.new_zeros((), dtype=torch.float64)
    count = 0
    for target, (a, b) in zip(targets, ranges, strict=True):
        if not target.count:
            continue
        diff = (band_eigenvalues(flat[a:b], target) - target.reference)[target.select]
        loss = loss + pointwise(diff, kind).sum()
        absolute = absolute + diff.detach().abs().sum()
        count += target.count
    return loss, absolute, count


def entry_ranges(graph) -> list[tuple[int, int]]:
    """Flat entry range of each structure of a (collated) graph."""
    nao = np.asarray(graph.nao)
    species = graph.species.cpu().numpy()
    pairs = np.asarray(graph.pairs)
    ends = BlockLayout(pairs, nao[species]).offsets  # [n_pairs + 1]
    return [(int(ends[a]), int(ends[b])) for a, b in graph.pair_ranges]


@dataclass
class LossTerms:
    """One batch's loss as sums, to be all-reduced before dividing.

    Attributes:
        element: weighted matrix-element error sum (eV² or eV), differentiable.
        weight: its weight total.
        band: band-energy error sum (eV² or eV), differentiable (zero when off).
        band_abs: absolute band-energy error sum in eV (a metric).
        band_count: eigenvalues in ``band``.
    """

    element: torch.Tensor
    weight: torch.Tensor
    band: torch.Tensor
    band_abs: torch.Tensor
    band_count: int


class Loss:
    """The training objective: ``E / W + band_weight * B / N`` over the global batch.

    ``E`` is the weighted matrix-element error sum, ``W`` its weight total, ``B`` the
    band-energy error sum over ``N`` eigenvalues (all summed over ranks first).

    Args:
        kind: ``"mse"`` or ``"mae"`` (of matrix elements and of eigenvalues).
        diag_weight: extra weight of on-site blocks.
        band_weight: weight of the band-energy term; 0 switches it off.
    """

    def __init__(self, kind: str = "mse", diag_weight: float = 1.0, band_weight: float = 0.0):
        if kind not in LOSSES:
            raise ValueError(f"loss {kind!r} is not one of {LOSSES}")
        self.kind = kind
        self.diag_weight = float(diag_weight)
        self.band_weight = float(band_weight)

    @property
    def uses_bands(self) -> bool:
        return self.band_weight > 0

    def terms(self, pred: torch.Tensor, graph, bands: list[BandTarget] | None) -> LossTerms:
        """The sums of one batch (``bands``: one target per structure, or None)."""
        weight = entry_weights(graph, self.diag_weight)  # [n_entries]
        element = error_sum(pred, graph.target, weight, self.kind)
        zero = element.new_zeros(())
        if not self.uses_bands or bands is None:
            return LossTerms(element, weight.sum().to(torch.float64), zero, zero, 0)
        band, band_abs, count = band_error_sum(pred, bands, self.kind, entry_ranges(graph))
        return LossTerms(element, weight.sum().to(torch.float64), band, band_abs, count)

    def combine(self, element, weight, band, band_count):
        """The loss from global sums (tensors or floats); a missing band term counts 0."""
        value = element / weight
        if self.uses_bands and band_count:
            value = value + self.band_weight * band / band_count
        return value
