"""Structures and dataset records -> graph tensors, and the plan that lays out H blocks.

A :class:`Graph` holds what the network reads (species, positions, directed edges with
their periodic offsets) and a :class:`BlockPlan`: which atom pairs to predict and where
each block goes in the dataset's flat, unpadded layout (``ehpc.io.layout.BlockLayout``).

Targets stay in PySCF AO order and eV.  The network itself works in e3nn's order and
frame; its last, fixed linear map (``ehpc.nn.blocks.PairBlockSpec.matrix``) already
contains the signed permutation ``ehpc.basis.pyscf_to_e3nn``, so data never needs
converting and the loss is over the very numbers the dataset stores.

Hermiticity: H_ji(-S) = H_ij(S)^T.  The plan names each unordered pair once, in its
canonical direction (i < j, or i == j with S lexicographically positive); the model
predicts that block from both directed edges and every requested direction is read off
it, the reverse one by transposition, so the identity holds bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..basis import Basis
from ..errors import UserError
from ..graph import neighbour_list
from ..io.dataset import HamiltonianRecord
from ..io.layout import BlockLayout
from .baseline import baseline_integrals


class GraphError(UserError, ValueError):
    """A structure or pair list the model cannot turn into blocks."""


@dataclass
class OnsiteGroup:
    """On-site blocks (i, i, 0) of atoms of one species.

    Attributes:
        species: index of the element in the model's element list.
        nodes: atoms whose on-site block is wanted.   # [n]
    """

    species: int
    nodes: torch.Tensor


@dataclass
class OffsiteGroup:
    """Unordered atom pairs whose canonical direction joins species (a, b).

    Attributes:
        species: (a, b) of the canonical direction i -> j.
        forward: edge index of the canonical direction (i, j, S).     # [n]
        reverse: edge index of the reverse direction (j, i, -S).      # [n]
        direct: rows wanted as (i, j, S), in output order.            # [k]
        flipped: rows wanted as (j, i, -S), in output order.          # [k']
    """

    species: tuple[int, int]
    forward: torch.Tensor
    reverse: torch.Tensor
    direct: torch.Tensor
    flipped: torch.Tensor


@dataclass
class BlockPlan:
    """Where the model's block pieces go: ``flat = cat(pieces)[gather]``.

    Pieces come in this order: each on-site group, then for each off-site group its
    direct rows followed by its flipped (transposed) rows.
    """

    onsite: list[OnsiteGroup]
    offsite: list[OffsiteGroup]
    gather: torch.Tensor  # [n_entries]
    n_entries: int

    def to(self, device) -> "BlockPlan":
        return BlockPlan(
            [OnsiteGroup(g.species, g.nodes.to(device)) for g in self.onsite],
            [
                OffsiteGroup(g.species, g.forward.to(device), g.reverse.to(device),
                             g.direct.to(device), g.flipped.to(device))
                for g in self.offsite
            ],
            self.gather.to(device),
            self.n_entries,
        )


@dataclass
class Graph:
    """One structure, or several concatenated into a batch.

    Attributes:
        species: element index of each atom (into ``elements``).      # [n_atoms]
        positions: Cartesian positions in Å.                          # [n_atoms, 3]
        edge_index: (i, j) of every directed edge within the cutoff.  # [2, n_edges]
        edge_offset: ``S @ cell`` of each edge in Å.                  # [n_edges, 3]
        edge_rows: ``[Sx, Sy, Sz, i, j]`` of each edge.               # [n_edges, 5]
        pairs: requested ``[Rx, Ry, Rz, i, j]`` rows, in output order. # [n_pairs, 5]
        nao: orbitals per species.                                    # [n_species]
        plan: the block layout of ``pairs``.
        target: flat H blocks of ``pairs`` in eV, PySCF order.        # [n_entries]
        onsite_entries: which flat entries belong to on-site blocks.  # [n_entries]
        kinetic: exact kinetic blocks T of ``pairs`` in eV, for a model with the
            kinetic baseline (``ehpc.nn.baseline``).                   # [n_entries]
        overlap: exact overlap blocks S of ``pairs``, likewise.        # [n_entries]
        names: structure names in the batch.
        pair_ranges: ``pairs`` row range of each structure.
    """

    species: torch.Tensor
    positions: torch.Tensor
    edge_index: torch.Tensor
    edge_offset: torch.Tensor
    edge_rows: np.ndarray
    pairs: np.ndarray
    nao: np.ndarray
    plan: BlockPlan
    target: torch.Tensor | None = None
    onsite_entries: torch.Tensor | None = None
    kinetic: torch.Tensor | None = None
    overlap: torch.Tensor | None = None
    names: list[str] = field(default_factory=list)
    pair_ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_atoms(self) -> int:
        return len(self.species)

    @property
    def n_edges(self) -> int:
        return self.edge_index.shape[1]

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Graph":
        """Move to ``device``; floating inputs also to ``dtype``.

        The target and the baseline integrals stay float64: a float32 model's errors are
        then measured against the exact labels, not against labels rounded to float32
        (~1e-5 eV at core levels).
        """

        def keep64(t):
            return None if t is None else t.to(device=device)

        def move(t):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return replace(
            self,
            species=move(self.species),
            positions=move(self.positions),
            edge_index=move(self.edge_index),
            edge_offset=move(self.edge_offset),
            plan=self.plan.to(device) if device is not None else self.plan,
            target=keep64(self.target),
            onsite_entries=move(self.onsite_entries),
            kinetic=keep64(self.kinetic),
            overlap=keep64(self.overlap),
        )


def species_index(numbers, elements, where: str = "structure") -> np.ndarray:
    """Position of each atomic number in ``elements``; a one-line error for a stranger."""
    from ase.data import chemical_symbols

    numbers = np.asarray(numbers, dtype=np.int64)
    table = np.full(max(int(numbers.max(initial=0)), max(elements)) + 1, -1, dtype=np.int64)
    table[np.asarray(elements, dtype=np.int64)] = np.arange(len(elements))
    index = table[numbers]
    if (index < 0).any():
        z = int(numbers[np.flatnonzero(index < 0)[0]])
        known = ", ".join(chemical_symbols[e] for e in elements)
        raise GraphError(
            f"{where}: element {chemical_symbols[z]} is not among the model's elements [{known}]"
        )
    return index


def reverse_pairs(pairs: np.ndarray) -> np.ndarray:
    """(i, j, S) -> (j, i, -S) for ``[Sx, Sy, Sz, i, j]`` rows."""
    return np.column_stack([-pairs[:, :3], pairs[:, 4], pairs[:, 3]])  # [n, 5]


def match_rows(query: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index in ``table`` of each row of ``query`` (-1 where absent); integer rows."""
    if len(table) == 0 or len(query) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    t = _row_keys(table)
    q = _row_keys(query)
    order = np.argsort(t, kind="stable")
    pos = np.searchsorted(t[order], q).clip(max=len(t) - 1)
    found = order[pos]
    return np.where(t[found] == q, found, -1).astype(np.int64)


def pair_lengths(graph: Graph) -> np.ndarray:
    """Å between the atoms of each of ``graph.pairs`` (0 on-site).   # [n_pairs]"""
    i, j = graph.edge_index.cpu().numpy()
    vectors = (graph.positions[j] - graph.positions[i] + graph.edge_offset).cpu().numpy()
    edge_length = np.linalg.norm(vectors, axis=1)  # [n_edges]
    at = match_rows(np.asarray(graph.pairs, dtype=np.int64), np.asarray(graph.edge_rows))
    return np.where(at >= 0, edge_length[np.maximum(at, 0)], 0.0)


def _row_keys(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


def is_onsite(pairs: np.ndarray) -> np.ndarray:
    return (pairs[:, 3] == pairs[:, 4]) & ~pairs[:, :3].any(axis=1)


def _is_canonical(pairs: np.ndarray) -> np.ndarray:
    """i < j, or i == j with the first non-zero shift component positive."""
    s = pairs[:, :3]
    first = np.argmax(s != 0, axis=1)
    positive = s[np.arange(len(s)), first] > 0
    return (pairs[:, 3] < pairs[:, 4]) | ((pairs[:, 3] == pairs[:, 4]) & positive)


def build_plan(pairs: np.ndarray, species: np.ndarray, edge_rows: np.ndarray, nao: np.ndarray,
               where: str = "structure") -> BlockPlan:
    """Group requested pairs by species and direction and lay their blocks out flat.

    Args:
        pairs: requested ``[Rx, Ry, Rz, i, j]`` rows.     # [n_pairs, 5]
        species: element index of each atom.              # [n_atoms]
        edge_rows: ``[Sx, Sy, Sz, i, j]`` of the graph's directed edges.  # [n_edges, 5]
        nao: orbitals per species.                        # [n_species]
        where: structure name for error messages.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    layout = BlockLayout(pairs, nao[species])
    destinations = layout.entries
    onsite = is_onsite(pairs)
    pieces: list[np.ndarray] = []  # destination of every flat entry, piece by piece

    onsite_groups = []
    onsite_rows = np.flatnonzero(onsite)
    for a in np.unique(species[pairs[onsite_rows, 3]]):
        rows = onsite_rows[species[pairs[onsite_rows, 3]] == a]
        onsite_groups.append(OnsiteGroup(int(a), torch.as_tensor(pairs[rows, 3])))
        pieces.append(destinations(rows))

    off_rows = np.flatnonzero(~onsite)
    off = pairs[off_rows]
    canonical = _is_canonical(off)
    canon = np.where(canonical[:, None], off, reverse_pairs(off))  # [n_off, 5]
    unique, inverse = np.unique(canon, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    forward = match_rows(unique, edge_rows)
    reverse = match_rows(reverse_pairs(unique), edge_rows)
    missing = np.flatnonzero((forward < 0) | (reverse < 0))
    if len(missing):
        raise GraphError(
            f"{where}: atom pair (R={unique[missing[0], :3].tolist()}, i={unique[missing[0], 3]}, "
            f"j={unique[missing[0], 4]}) is not within the model's cutoff; "
            "ask only for pairs closer than the cutoff (or on-site)"
        )
    type_a = species[unique[:, 3]]
    type_b = species[unique[:, 4]]
    offsite_groups = []
    for a, b in sorted(set(zip(type_a.tolist(), type_b.tolist()))):
        members = np.flatnonzero((type_a == a) & (type_b == b))  # unique ids in this group
        row_in_group = np.full(len(unique), -1, dtype=np.int64)
        row_in_group[members] = np.arange(len(members))
        in_group = row_in_group[inverse] >= 0  # requested off-site pairs of this group
        direct = np.flatnonzero(in_group & canonical)
        flipped = np.flatnonzero(in_group & ~canonical)
        offsite_groups.append(OffsiteGroup(
            (int(a), int(b)),
            torch.as_tensor(forward[members]),
            torch.as_tensor(reverse[members]),
            torch.as_tensor(row_in_group[inverse[direct]]),
            torch.as_tensor(row_in_group[inverse[flipped]]),
        ))
        pieces.append(destinations(off_rows[direct]))
        pieces.append(destinations(off_rows[flipped]))
    dest = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if len(dest) != layout.n_entries:
        raise GraphError(f"{where}: block layout covers {len(dest)} of {layout.n_entries} entries")
    gather = torch.as_tensor(np.argsort(dest, kind="stable"))
    return BlockPlan(onsite_groups, offsite_groups, gather, layout.n_entries)


@dataclass(frozen=True)
class Edges:
    """The neighbour search of one structure, done once and shared by its graphs.

    Attributes:
        species: element index of each atom.                       # [n_atoms]
        cell: lattice vectors as rows in Å.                        # [3, 3]
        rows: ``[Sx, Sy, Sz, i, j]`` of every pair within the cutoff plus on-site,
            sorted like ``neighbour_list(..., self_edges=True)``.   # [n_rows, 5]
        nao: orbitals per species.                                 # [n_species]
    """

    species: np.ndarray
    cell: np.ndarray
    rows: np.ndarray
    nao: np.ndarray

    @property
    def edge_rows(self) -> np.ndarray:
        """The directed edges (on-site rows left out).  # [n_edges, 5]"""
        return self.rows[~is_onsite(self.rows)]


def neighbour_edges(numbers, positions, cell, pbc, cutoff: float, elements, basis: Basis,
                    name: str = "structure") -> Edges:
    """Species and every pair within ``cutoff`` of one structure (see :class:`Edges`)."""
    species = species_index(numbers, elements, name)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    rows = neighbour_list(positions, cell, pbc, cutoff, self_edges=True).atom_pairs()
    nao = np.array([basis.element(int(z)).nao for z in elements], dtype=np.int64)
    return Edges(species, cell, rows, nao)


def build_graph(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc,
    cutoff: float,
    elements,
    basis: Basis,
    pairs: np.ndarray | None = None,
    name: str = "structure",
    edges: Edges | None = None,
) -> Graph:
    """Neighbour graph of one structure and the plan for ``pairs``.

    Args:
        numbers: atomic numbers.                       # [n_atoms]
        positions: Cartesian positions in Å.           # [n_atoms, 3]
        cell: lattice vectors as rows in Å.            # [3, 3]
        pbc: periodicity per axis.
        cutoff: edge cutoff in Å.
        elements: the model's atomic numbers, in its order.
        basis: the model's basis (orbitals per element).
        pairs: ``[Rx, Ry, Rz, i, j]`` rows to predict; None for every pair within the
            cutoff plus on-site, sorted like ``neighbour_list(..., self_edges=True)``.
        name: structure name for error messages.
        edges: this structure's :func:`neighbour_edges`, if already searched.
    """
    if edges is None:
        edges = neighbour_edges(numbers, positions, cell, pbc, cutoff, elements, basis, name)
    return _graph(edges, positions, edges.rows if pairs is None else pairs, name)


def _graph(edges: Edges, positions, pairs: np.ndarray, name: str, **labels) -> Graph:
    """The graph of ``edges`` with the plan of ``pairs`` (``labels``: target fields)."""
    edge_rows = edges.edge_rows
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    return Graph(
        species=torch.as_tensor(edges.species),
        positions=torch.as_tensor(np.asarray(positions, dtype=np.float64)),
        edge_index=torch.as_tensor(edge_rows[:, 3:].T.copy()),
        edge_offset=torch.as_tensor(edge_rows[:, :3] @ edges.cell, dtype=torch.float64),
        edge_rows=edge_rows,
        pairs=pairs,
        nao=edges.nao,
        plan=build_plan(pairs, edges.species, edge_rows, edges.nao, name),
        names=[name],
        pair_ranges=[(0, len(pairs))],
        **labels,
    )


def record_to_graph(record: HamiltonianRecord, cutoff: float, elements, basis: Basis,
                    baseline: bool = False) -> Graph:
    """Graph of a labelled record with its H blocks as the target.

    Only the record's pairs within ``cutoff`` (and on-site) are kept: a model cannot
    predict farther pairs, and the dataset may have been labelled with a larger cutoff.
    One neighbour search and one plan per record.  ``baseline``: also compute the exact
    kinetic and overlap blocks of the kept pairs (``ehpc.nn.baseline``).
    """
    edges = neighbour_edges(record.numbers, record.positions, record.cell, record.pbc, cutoff,
                            elements, basis, record.name)
    pairs = np.asarray(record.atom_pairs, dtype=np.int64)
    keep = np.flatnonzero(is_onsite(pairs) | (match_rows(pairs, edges.edge_rows) >= 0))
    kept = pairs[keep]
    layout = BlockLayout(pairs, basis.nao_per_atom(record.numbers))
    entries = layout.entries(keep)  # flat indices of the kept blocks, block after block
    onsite = np.repeat(is_onsite(kept), layout.sizes[keep])
    if record.hamiltonian is None:
        raise GraphError(f"{record.name}: record has no Hamiltonian to train on")
    integrals = {}
    if baseline:
        t, s = baseline_integrals(basis, record.numbers, record.positions, record.cell,
                                  record.pbc, kept)
        integrals = {"kinetic": torch.as_tensor(t), "overlap": torch.as_tensor(s)}
    return _graph(
        edges, record.positions, kept, record.name,
        target=torch.as_tensor(np.asarray(record.hamiltonian, dtype=np.float64)[entries]),
        onsite_entries=torch.as_tensor(onsite), **integrals,
    )


def collate(graphs: list[Graph]) -> Graph:
    """Concatenate graphs into one disconnected batch graph with a fresh plan."""
    if len(graphs) == 1:
        return graphs[0]
    node_shift = np.cumsum([0] + [g.n_atoms for g in graphs[:-1]])
    edge_rows = np.concatenate([g.edge_rows + [0, 0, 0, s, s] for g, s in zip(graphs, node_shift)])
    pairs = np.concatenate([g.pairs + [0, 0, 0, s, s] for g, s in zip(graphs, node_shift)])
    species = torch.cat([g.species for g in graphs])
    has_target = all(g.target is not None for g in graphs)
    has_integrals = all(g.kinetic is not None for g in graphs)
    pair_start = np.cumsum([0] + [len(g.pairs) for g in graphs])
    return Graph(
        species=species,
        positions=torch.cat([g.positions for g in graphs]),
        edge_index=torch.as_tensor(edge_rows[:, 3:].T.copy()),
        edge_offset=torch.cat([g.edge_offset for g in graphs]),
        edge_rows=edge_rows,
        pairs=pairs,
        nao=graphs[0].nao,
        plan=build_plan(pairs, species.numpy(), edge_rows, graphs[0].nao, graphs[0].names[0]),
        target=torch.cat([g.target for g in graphs]) if has_target else None,
        onsite_entries=torch.cat([g.onsite_entries for g in graphs]) if has_target else None,
        kinetic=torch.cat([g.kinetic for g in graphs]) if has_integrals else None,
        overlap=torch.cat([g.overlap for g in graphs]) if has_integrals else None,
        names=[n for g in graphs for n in g.names],
        pair_ranges=[(int(pair_start[k]), int(pair_start[k + 1])) for k in range(len(graphs))],
    )
