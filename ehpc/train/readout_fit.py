"""The readout solved exactly: ridge least squares for the last layer, features fixed.

Once the atom and edge features are computed, every block the model outputs is linear in
the weights of its block readouts (the ``o3.Linear`` of each ``BlockReadout``): the
scale, shift, Clebsch-Gordan matrix, envelope, block size g(r) and the average of the two
directions are all fixed linear maps.  So for fixed features the readout that minimises
the weighted squared matrix-element error of the training split is the solution of one
linear least-squares problem, which a few hundred gradient steps only approach.  On the
default silicon data (gth-dzvp-molopt-sr, 9 Å, 2 training cells) it took a 5-minute
Adam model from 49 to 11 meV H MAE on the held-out cells in 12 s (docs/BENCHMARKS.md).

The design matrix ``J`` (entries x readout weights) is built column by column: the
prediction with one weight set to 1 and the others to 0, minus the prediction with all of
them 0.  That is one readout pass per weight and training structure, and no backward
pass; the normal equations ``(JᵀWJ + λ I) w = JᵀW (y - c)`` are summed over structures
and ranks, so every rank solves the same system.  ``W`` is the loss's entry weight
(``train.diag_weight`` on on-site blocks); ``λ`` is :data:`RIDGE` times the mean of the
diagonal of ``JᵀWJ``.

A model with the kinetic baseline (``model.baseline: kinetic``) adds ``T + v S`` to
those blocks, and v enters linearly too: it is solved for with the readout weights, its
design column being S.

With ``train.readout_kpoints`` the fit also matches the bands: H(k) in an S-orthonormal
basis, ``L^-1 H(k) L^-H`` with ``S(k) = L L^H`` (the label's S), turned into the basis of
the DFT eigenvectors ``U`` and kept on the states of the band window (the band loss's
``train.band_window`` around E_F; molecules: occupied and ``band_virtual`` empty
orbitals), at that many k-points of each training structure.  The diagonal of
``U^H L^-1 (H_model - H_DFT)(k) L^-H U`` is each window eigenvalue's error to first
order, and the rest of the window block is what mixes those states.  The whole H(k),
without the window, would be dominated by the states tens of eV up that a nearly singular
S(k) makes (diffuse d functions in silicon, min eig S(k) ≈ 0.008 near X), which no band
near E_F depends on.  The term is linear in the readout weights too, so the normal
equations just gain a second part, ``Σ_k Re(A_kᴴ A_k)``, with ``A_k`` the windowed image
of each design column.  Its weight relative to the matrix elements is chosen from
:data:`WINDOW_WEIGHTS` by the validation split's eigenvalue error at the same
k-points (:meth:`ehpc.train.loop.Trainer.refit_readout`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..nn.model import BlockReadout, HamiltonianModel
from .loss import BandTarget, entry_weights, hermitian_part

#: ridge λ relative to the mean diagonal of JᵀWJ; on the default silicon data 1e-8, 1e-6
#: and 1e-4 gave 10.7, 11.0 and 13.1 meV held-out H MAE
RIDGE = 1.0e-8

#: weights of the band-window term (per element of the window block, relative to the
#: matrix-element term per entry) among which validation chooses; on the default run's
#: model (216 k-points) 0.01, 0.1 and 1 gave the band path 16, 10 and 8.8 meV from the
#: SCF, against 51 meV without the term, and 10 gave 19 meV (docs/BENCHMARKS.md, "The
#: kinetic baseline and the band window")
WINDOW_WEIGHTS = (0.0, 1.0e-2, 3.0e-2, 1.0e-1, 3.0e-1, 1.0, 3.0, 10.0)

#: bytes of the Bloch sums one sparse product may give (k-points are grouped to fit)
CHUNK_BYTES = 2**28


@dataclass
class NormalEquations:
    """One least-squares term ``|J w - y|²`` as ``(JᵀJ, Jᵀy)`` and its row count."""

    gram: torch.Tensor  # [n_w, n_w]
    rhs: torch.Tensor  # [n_w]
    count: torch.Tensor  # [] rows (or the weight total)

    @classmethod
    def zeros(cls, n_w: int, device) -> NormalEquations:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return cls(torch.zeros(n_w, n_w, dtype=torch.float64, device=device),
                   torch.zeros(n_w, dtype=torch.float64, device=device), zero)

    def reduce(self, reduce: Callable[[torch.Tensor], None]) -> None:
        """Sum over ranks in place."""
        for tensor in (self.gram, self.rhs, self.count):
            reduce(tensor)


def readout_weights(model: HamiltonianModel) -> list[torch.Tensor]:
    """What the fit solves for, in a fixed order: the linear weights of every block readout
    and, with the kinetic baseline, its potential v (a 0-d buffer)."""
    weights = [m.linear.weight for m in model.modules() if isinstance(m, BlockReadout)]
    if model.uses_baseline:
        weights.append(model.baseline_potential)
    return weights


def _design(model: HamiltonianModel, graph) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J, c)``: the prediction is ``J w + c`` in the fitted weights w (all zeroed here;
    the caller restores them).                                  # [n_entries, n_w], [n_entries]"""
    weights = readout_weights(model)
    flat = [w.view(-1) for w in weights]
    encoded = model.encode(graph)

    def blocks() -> torch.Tensor:
        out = model.readout(graph, *encoded).to(torch.float64)
        return out + model.baseline(graph) if model.uses_baseline else out

    for w in weights:
        w.zero_()
    constant = blocks()  # [n_entries]
    columns = torch.empty(len(constant), sum(len(f) for f in flat), dtype=torch.float64,
                          device=constant.device)
    k = 0
    for f in flat:
        for i in range(len(f)):
            f[i] = 1.0
            columns[:, k] = blocks() - constant
            f[i] = 0.0
            k += 1
    return columns, constant


def _bloch_operator(target: BandTarget, ks: list[int]) -> torch.Tensor:
    """Sparse ``[len(ks) * 2 * n², n_entries]`` map from flat blocks to the real and
    imaginary parts of the dense Bloch sums at k-points ``ks``."""
    n_entries, n2 = len(target.index), target.n_orbitals**2
    entries = torch.arange(n_entries, device=target.index.device)
    rows, cols, values = [], [], []
    for slot, k in enumerate(ks):
        parts = [target.cos[k]] if target.sin is None else [target.cos[k], target.sin[k]]
        for part, phase in enumerate(parts):
            rows.append((2 * slot + part) * n2 + target.index)
            cols.append(entries)
            values.append(phase)
    indices = torch.stack([torch.cat(rows), torch.cat(cols)])
    return torch.sparse_coo_tensor(indices, torch.cat(values),
                                   (2 * len(ks) * n2, n_entries)).to_sparse_csr()


def time_reversal_weights(kpts: np.ndarray) -> np.ndarray:
    """How often each k-point counts once its partner -k (mod 1) is left out.  # [n_k]

    Real H(R) and S(R) give ``H(-k) = H(k)*`` and ``S(-k) = S(k)*``, so the error image at
    -k is the complex conjugate of the one at k and adds the same to the normal equations.
    """
    def folded(k: np.ndarray) -> tuple:
        return tuple(np.round(np.mod(k, 1.0), 8) % 1.0)

    first: dict[tuple, int] = {}
    weights = np.zeros(len(kpts), dtype=np.int64)
    for i, k in enumerate(np.asarray(kpts)):
        partner = folded(-k)
        if partner in first:
            weights[first[partner]] += 1
        else:
            first[folded(k)] = i
            weights[i] = 1
    return weights


def window_vectors(target: BandTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_k = L_k^-H U_k P_k``: the DFT eigenvectors of each k-point's window in the
    original basis, so that ``W_k^H M W_k`` is M's window block in the eigenbasis; zero
    columns pad every k-point to the widest window.  Also the window size per k-point.
                                                                # [n_k, n, m], [n_k]"""
    sizes = target.select.sum(dim=1)  # [n_k]
    width = max(int(sizes.max()), 1)
    # the window's columns first, in order; the rest after, then cut off or zeroed
    order = torch.argsort((~target.select).to(torch.int8), dim=1, stable=True)[:, :width]
    picked = torch.gather(target.vectors, 2, order[:, None, :].expand(-1, target.n_orbitals, -1))
    inside = torch.arange(width, device=sizes.device)[None, :] < sizes[:, None]  # [n_k, m]
    return target.l_inv.transpose(-1, -2).conj() @ (picked * inside[:, None, :]), sizes


def _add_window(equations: NormalEquations, columns: torch.Tensor, residual: torch.Tensor,
                target: BandTarget) -> None:
    """Add ``Σ_k |W_k^H (Bloch_k(J w) - Bloch_k(y)) W_k|²`` of one structure, the window
    block of the error in the DFT eigenbasis (:func:`window_vectors`).

    The Bloch sums of every design column at a group of k-points (``CHUNK_BYTES`` of
    them) come from one sparse product, so the design matrix is read once per group
    rather than once per k-point; of each pair k, -k only one is computed, counted twice.
    """
    n = target.n_orbitals
    both = torch.cat([columns, residual[:, None]], dim=1)  # [n_entries, n_w + 1]
    window, sizes = window_vectors(target)
    m = window.shape[-1]
    multiplicity = time_reversal_weights(target.kpts)
    kept = np.flatnonzero(multiplicity)
    chunk = max(1, CHUNK_BYTES // (16 * n * n * both.shape[1]))
    for first in range(0, len(kept), chunk):
        ks = kept[first : first + chunk].tolist()
        with warnings.catch_warnings():  # torch calls its sparse CSR support beta
            warnings.simplefilter("ignore", UserWarning)
            sums = (_bloch_operator(target, ks) @ both).reshape(len(ks), 2, n, n, -1)
        bloch = sums[:, 0] if target.sin is None else torch.complex(sums[:, 0], sums[:, 1])
        w = window[ks]  # [n_ks, n, m]
        if not torch.is_complex(bloch):
            w = w.real  # Γ only: real H and real eigenvectors
        columns_last = bloch.permute(0, 1, 3, 2).reshape(len(ks), -1, n)  # [n_ks, n*(n_w+1), n]
        half = (columns_last @ w).reshape(len(ks), n, -1, m)  # [n_ks, n, n_w + 1, m]
        blocks = w.transpose(-1, -2).conj() @ half.reshape(len(ks), n, -1)  # [n_ks, m, (n_w+1) m]
        blocks = blocks.reshape(len(ks), m, -1, m).permute(0, 2, 1, 3)  # [n_ks, n_w + 1, m, m]
        times = torch.as_tensor(multiplicity[ks], dtype=torch.float64, device=both.device)
        blocks = hermitian_part(blocks) * times.sqrt()[:, None, None, None]
        if torch.is_complex(blocks):  # Re(a^H b) is the dot product of (Re, Im) pairs
            blocks = torch.view_as_real(blocks)
        rows = blocks.transpose(0, 1).reshape(both.shape[1], -1)  # [n_w + 1, n_ks m² (x2)]
        a, b = rows[:-1], rows[-1]
        equations.gram += a @ a.T
        equations.rhs += a @ b
        equations.count += float((sizes[ks].to(torch.float64) ** 2 * times).sum())


@torch.no_grad()
def normal_equations(model: HamiltonianModel, batches: Iterable, diag_weight: float
                     ) -> tuple[NormalEquations, NormalEquations | None]:
    """The matrix-element and band-window terms of the readout weights, in float64.

    Args:
        model: the network, features frozen (its readout weights are restored after).
        batches: ``(graph, targets)`` per training structure: a collated graph on the
            model's device with its blocks as target, and a one-element list with its
            :class:`BandTarget` for the band-window term, or None without it.
        diag_weight: loss weight of on-site entries.

    Returns:
        The matrix-element term (rows weighted by the loss's entry weights) and the
        band-window term (None when no batch had targets).
    """
    weights = readout_weights(model)
    saved = [w.detach().clone() for w in weights]
    n_w = sum(w.numel() for w in weights)
    elements = NormalEquations.zeros(n_w, model.device)
    bands = None
    try:
        for graph, targets in batches:
            columns, constant = _design(model, graph)
            residual = graph.target.to(torch.float64) - constant  # [n_entries]
            weight = entry_weights(graph, diag_weight).to(torch.float64)  # [n_entries]
            elements.gram += columns.T @ (weight[:, None] * columns)
            elements.rhs += columns.T @ (weight * residual)
            elements.count += weight.sum()
            for target in targets or ():
                if bands is None:
                    bands = NormalEquations.zeros(n_w, model.device)
                _add_window(bands, columns, residual, target.to(model.device))
    finally:
        for w, s in zip(weights, saved):
            w.copy_(s)
    return elements, bands


@torch.no_grad()
def solve_readout(model: HamiltonianModel, elements: NormalEquations,
                  bands: NormalEquations | None = None, weight: float = 0.0,
                  ridge: float = RIDGE) -> None:
    """Set the readout weights to the ridge solution of
    ``|J w - y|²_W / W + weight * |A w - b|² / N`` (each term per row)."""
    gram = elements.gram / elements.count
    rhs = elements.rhs / elements.count
    if bands is not None and weight > 0:
        gram = gram + weight * bands.gram / bands.count
        rhs = rhs + weight * bands.rhs / bands.count
    n_w = len(rhs)
    damping = ridge * float(gram.diagonal().mean())
    solution = torch.linalg.solve(gram + damping * torch.eye(n_w, dtype=gram.dtype,
                                                             device=gram.device), rhs)
    start = 0
    for w in readout_weights(model):
        w.copy_(solution[start : start + w.numel()].view_as(w).to(w.dtype))
        start += w.numel()


def fit_readout(model: HamiltonianModel, graphs: Iterable, diag_weight: float,
                reduce: Callable[[torch.Tensor], None] | None = None,
                ridge: float = RIDGE) -> None:
    """Solve the readout of ``model`` by least squares on the matrix elements of
    ``graphs`` (this rank's share).

    Args:
        reduce: in-place sum over ranks (``all_reduce``); None in one process.
    """
    elements, _ = normal_equations(model, ((g, None) for g in graphs), diag_weight)
    if reduce is not None:
        elements.reduce(reduce)
    solve_readout(model, elements, ridge=ridge)
