"""HamiltonianModel: atoms -> Kohn-Sham Hamiltonian blocks H_ij(R) in eV, PySCF AO order.

Pipeline (Zhong et al., npj Comput. Mater. 9, 182 (2023), the HamGNN method):

1. graph: atoms and every directed edge (i, j, S) within ``cutoff``; edge vectors are
   handed to e3nn in ``ehpc.basis.E3NN_FRAME``;
2. ``n_layers`` equivariant rounds updating atom and edge features (``layers.py``);
3. readout: per element (on-site, from atom features) or per ordered element pair
   (off-site, from edge features) an ``o3.Linear`` gives the block's irreps, a per-irrep
   scale and (for invariant components) shift fitted to training data bring them to the
   data's size, and the fixed Clebsch-Gordan matrix of ``blocks.py`` turns them into the
   flat PySCF-order block.  Off-site blocks carry the cutoff envelope, so a block fades
   to zero as its pair leaves the cutoff, and (``block_decay``) the size the training
   blocks of that element pair have at that distance, ``g(r) = exp(c0 + c1 r + c2 r^2)``
   fitted to their RMS: the network then predicts every distance shell on one scale,
   and a block a thousand times smaller than a bond's is learned to the same relative
   accuracy instead of drowning in the bonds' absolute error.

Hermiticity holds by construction: on-site blocks are symmetrised, and the off-site
block of an unordered pair is the average of its two directed predictions (one
transposed), from which both directions are read.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from e3nn import o3

from .. import __version__
from ..basis import E3NN_FRAME, Basis
from ..errors import UserError
from ..graph import receptive_cutoff
from ..io.dataset import HamiltonianRecord
from ..io.layout import BlockLayout
from ..train.config import ModelConfig
from ..units import ENERGY_UNIT, LENGTH_UNIT
from .baseline import BASELINES, baseline_integrals, fit_potential
from .blocks import PairBlockSpec, pair_block_spec, transpose_index
from .data import (Edges, Graph, GraphError, build_graph, is_onsite, neighbour_edges,
                   pair_lengths, record_to_graph, species_index)
from .layers import EdgeEmbedding, InteractionLayer, hidden_irreps
from .radial import RadialEmbedding

#: default hyper-parameters, the training config's (lmax None: the largest L the basis'
#: blocks need; sh_lmax None: lmax); every one is recorded in ``model.metadata``
DEFAULT_HPARAMS = ModelConfig().hparams()

#: a scale fitted to data never drops below this fraction of its readout's largest one,
#: so irreps that happen to vanish in the training set can still be learned
MIN_RELATIVE_SCALE = 1.0e-3

#: pairs per readout pass in ``predict`` unless told otherwise
DEFAULT_CHUNK = 200_000

#: degree of the polynomial in r of log g(r), the off-site block size (``block_decay``)
DECAY_DEGREE = 2

_W3J_BUFFER = re.compile(r"_w3j_(\d+)_(\d+)_(\d+)$")


class ModelCompatibilityError(UserError, ValueError):
    """A structure or dataset whose basis or elements the model was not built for."""


class ModelFileError(ModelCompatibilityError):
    """A ``--model`` file that is not an ehpc model file (a checkpoint, random bytes, HDF5)."""


class BlockReadout(torch.nn.Module):
    """Features -> flat H blocks of one element pair (or one element, on-site).

    ``block = (scale * Linear(x) + shift) @ W`` with W the orthogonal Clebsch-Gordan and
    PySCF-order matrix of :class:`PairBlockSpec`.

    Args:
        irreps_in: feature irreps.
        spec: the pair's block specification.
    """

    def __init__(self, irreps_in: o3.Irreps, spec: PairBlockSpec):
        super().__init__()
        self.spec = spec
        self.linear = o3.Linear(irreps_in, spec.irreps)
        dim = spec.irreps.dim
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("matrix", torch.as_tensor(spec.matrix), persistent=False)
        n1, n2 = spec.shape
        transpose = torch.as_tensor(transpose_index(n1, n2))
        self.register_buffer("transpose", transpose, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x) * self.scale + self.shift  # [n, dim]
        return y @ self.matrix  # [n, nao_i * nao_j]

    def refresh_constants(self) -> None:
        """Re-derive W from float64 so a dtype change never carries rounding along."""
        self.matrix = self.scale.new_tensor(self.spec.matrix)

    def set_statistics(self, irreps: np.ndarray) -> None:
        """Per-(a, b, L) scale and invariant shift from training blocks' irreps components.

        Args:
            irreps: the training blocks of this pair type as irreps vectors.  # [n, dim]
        """
        slot = self.spec.slot
        shift = np.where(self.spec.scalar, irreps.mean(axis=0), 0.0)  # [dim]
        sq = ((irreps - shift) ** 2).mean(axis=0)  # [dim]
        per_slot = np.sqrt(np.bincount(slot, sq) / np.bincount(slot))  # [n_slots]
        # a single sample has no spread at all: fall back on the blocks' size
        reference = per_slot.max() if per_slot.max() > 0.0 else float(np.sqrt((irreps**2).mean()))
        self.shift.copy_(torch.as_tensor(shift))
        if reference == 0.0:
            return
        per_slot = np.maximum(per_slot, MIN_RELATIVE_SCALE * reference)
        self.scale.copy_(torch.as_tensor(per_slot[slot]))


def onsite_fermi_estimate(h_diagonal: np.ndarray, s_diagonal: np.ndarray,
                          n_occupied: int) -> float:
    """Where the on-site Rayleigh quotients ``H_ii / S_ii`` (a zero-hopping spectrum) put
    the Fermi level: the midpoint of the ``n_occupied``-th and next smallest quotient.

    ``ehpc.infer.window.initial_shift`` computes the same number on distributed matrices.
    """
    quotients = np.sort(np.asarray(h_diagonal) / np.asarray(s_diagonal))  # [nao]
    n = int(np.clip(n_occupied, 1, len(quotients)))
    return float(0.5 * (quotients[n - 1] + quotients[min(n, len(quotients) - 1)]))


def record_fermi_offset(record: HamiltonianRecord, nao: np.ndarray) -> float | None:
    """The record's E_F minus its :func:`onsite_fermi_estimate` (eV), or None when the
    record lacks S, E_F or the electron count."""
    attrs = record.attrs
    if record.overlap is None or "fermi_level" not in attrs or "n_electrons" not in attrs:
        return None
    pairs = np.asarray(record.atom_pairs)
    layout = BlockLayout(pairs, nao)
    rows, cols = layout.matrix_index
    onsite = np.repeat(is_onsite(pairs), layout.sizes)  # [n_entries]
    diagonal = np.flatnonzero(onsite & (rows == cols))  # flat index of each H_ii
    if len(diagonal) != layout.n_orbitals:
        return None
    h = np.asarray(record.hamiltonian)[diagonal]
    s = np.asarray(record.overlap)[diagonal]
    n_occupied = int(round(float(attrs["n_electrons"]))) // 2
    return float(attrs["fermi_level"]) - onsite_fermi_estimate(h, s, n_occupied)


def block_multiplicity(basis: Basis, elements) -> int:
    """The most copies of one irrep (L, parity) that any on-site or pair block of
    ``elements`` holds: the fewest hidden channels whose linear readout can span them."""
    ls = [basis.element(int(z)).ls for z in elements]
    return max(mul for la in ls for lb in ls
               for mul, _ in pair_block_spec(la, lb).irreps)


class HamiltonianModel(torch.nn.Module):
    """E(3)-equivariant network predicting H_ij(R) blocks for any elements of a basis.

    Args:
        basis: the orbital basis of the training labels.
        elements: atomic numbers the model handles.
        cutoff: edge cutoff in Å; pairs farther apart get no block.
        n_layers: message-passing rounds; no default here: the one default is
            ``model.n_layers`` of the training config (``ehpc.train.config``).
        channels: multiplicity of every hidden irrep; raised to
            :func:`block_multiplicity` when smaller, since a block readout maps ``channels``
            copies of each irrep linearly onto the copies its blocks need, and fewer cannot
            span them (Si in gth-dzvp-molopt-sr needs 12 copies of 1o).
        lmax: highest hidden angular momentum; at least the largest L of any block.
        sh_lmax: highest spherical harmonic of the edge direction.
        n_radial: Bessel functions in the radial basis.
        radial_hidden: width of the radial networks.
        envelope_power: order of the polynomial cutoff envelope (when ``envelope_width``
            is None).
        envelope_width: Å over which the switch envelope falls to 0 at the cutoff; None:
            the polynomial envelope over the whole cutoff (models saved before the switch).
        block_decay: scale off-site blocks by the size g(r) that the training blocks of
            their element pair have at their distance (fitted by :meth:`set_statistics`).
        baseline: ``"kinetic"``: the blocks are ``T + v S`` plus the network's output, with
            the exact kinetic and overlap blocks and one potential ``v`` fitted by
            :meth:`set_statistics` (``ehpc.nn.baseline``); ``"none"``: the network's alone.
        widen: raise ``channels`` to :func:`block_multiplicity` (False rebuilds a saved
            architecture exactly).

    Example:
        >>> model = HamiltonianModel(Basis("sto-3g"), [1, 8], cutoff=4.0,
        ...                          n_layers=2)                            # doctest: +SKIP
        >>> pairs, blocks = model.predict(atoms.numbers, atoms.positions,
        ...                               atoms.cell[:], atoms.pbc)          # doctest: +SKIP
    """

    def __init__(self, basis: Basis, elements, cutoff: float, n_layers: int,
                 widen: bool = True, **hparams):
        super().__init__()
        unknown = set(hparams) - set(DEFAULT_HPARAMS)
        if unknown:
            raise TypeError(f"HamiltonianModel: unknown hyper-parameters {sorted(unknown)}")
        hp = {**DEFAULT_HPARAMS, **hparams}
        self.basis = basis
        self.elements = tuple(sorted(int(z) for z in set(elements)))
        self.cutoff = float(cutoff)
        self.n_layers = int(n_layers)
        ls = {z: basis.element(z).ls for z in self.elements}
        needed_l = 2 * max(max(v) for v in ls.values())
        if hp["lmax"] is None:
            hp["lmax"] = needed_l
        if hp["lmax"] < needed_l:
            raise ValueError(
                f"lmax={hp['lmax']} is too small: basis {basis.name!r} blocks of "
                f"{self._symbols()} need L up to {needed_l}"
            )
        if hp["sh_lmax"] is None:
            hp["sh_lmax"] = hp["lmax"]
        need = block_multiplicity(basis, self.elements)
        if widen and hp["channels"] < need:
            warnings.warn(
                f"channels raised from {hp['channels']} to {need}: basis {basis.name!r} blocks "
                f"of {self._symbols()} need {need} copies of one irrep", stacklevel=2)
            hp["channels"] = need
        if hp["baseline"] not in BASELINES:
            raise ValueError(f"baseline={hp['baseline']!r}: choose one of {list(BASELINES)}")
        self.hparams = hp

        n_species = len(self.elements)
        self.irreps_hidden = hidden_irreps(hp["channels"], hp["lmax"])
        self.irreps_sh = o3.Irreps.spherical_harmonics(hp["sh_lmax"])
        self.radial = RadialEmbedding(self.cutoff, hp["n_radial"], hp["envelope_power"],
                                      hp["envelope_width"])
        self.node_embedding = o3.Linear(o3.Irreps([(n_species, (0, 1))]), self.irreps_hidden)
        hidden, sh = self.irreps_hidden, self.irreps_sh
        self.edge_embedding = EdgeEmbedding(n_species, sh, hidden, hp["n_radial"],
                                            hp["radial_hidden"])
        self.layers = torch.nn.ModuleList(
            InteractionLayer(hidden, sh, hp["n_radial"], hp["radial_hidden"])
            for _ in range(self.n_layers)
        )
        self.onsite = torch.nn.ModuleDict({
            str(z): BlockReadout(hidden, pair_block_spec(ls[z], ls[z])) for z in self.elements
        })
        self.offsite = torch.nn.ModuleDict({
            _pair_key(za, zb): BlockReadout(hidden, pair_block_spec(ls[za], ls[zb]))
            for za in self.elements
            for zb in self.elements
        })
        self.register_buffer("avg_neighbours", torch.ones(()))
        # log g(r) = Σ_p decay[a, b, p] r^p with r clamped to decay_range (zeros: g = 1)
        self.register_buffer("decay", torch.zeros(n_species, n_species, DECAY_DEGREE + 1))
        self.register_buffer("decay_range", torch.tensor([0.0, self.cutoff]))
        self.register_buffer("has_statistics", torch.zeros((), dtype=torch.bool))
        # E_F minus the on-site estimate, averaged over the training structures (NaN:
        # unknown); ehpc-infer starts its E_F search there (ehpc.infer.window)
        self.register_buffer("fermi_offset", torch.tensor(float("nan"), dtype=torch.float64))
        if self.uses_baseline:  # v of H0 = T + v S in eV (fitted by set_statistics)
            self.register_buffer("baseline_potential", torch.zeros((), dtype=torch.float64))
        self.refresh_constants()

    # ------------------------------------------------------------------ description

    def _symbols(self) -> str:
        from ase.data import chemical_symbols

        return "[" + ", ".join(chemical_symbols[z] for z in self.elements) + "]"

    @property
    def uses_baseline(self) -> bool:
        """Whether the blocks include the kinetic baseline ``T + v S``."""
        return self.hparams["baseline"] != "none"

    @property
    def receptive_field(self) -> float:
        """Å: atoms farther than this from both atoms of a pair cannot change its block."""
        return receptive_cutoff(self.cutoff, self.n_layers)

    @property
    def metadata(self) -> dict:
        """Everything needed to rebuild the model (and to refuse mismatched data)."""
        return {
            "model": type(self).__name__,
            "ehpc_version": __version__,
            "basis": self.basis.name,
            "pseudo": self.basis.pseudo,
            "elements": list(self.elements),
            "cutoff": self.cutoff,
            "n_layers": self.n_layers,
            "units": {"energy": ENERGY_UNIT, "length": LENGTH_UNIT},
            "hparams": dict(self.hparams),
        }

    @classmethod
    def from_metadata(cls, meta: dict) -> "HamiltonianModel":
        """An untrained model with the architecture ``meta`` describes."""
        units = meta.get("units", {})
        if units and (units.get("energy"), units.get("length")) != (ENERGY_UNIT, LENGTH_UNIT):
            raise ModelCompatibilityError(
                f"model metadata has units {units}; ehpc uses {ENERGY_UNIT}/{LENGTH_UNIT}"
            )
        basis = Basis(meta["basis"], meta.get("pseudo") or None)
        # older files: polynomial envelope, no block decay
        hparams = {"envelope_width": None, "block_decay": False, "baseline": "none",
                   **meta.get("hparams", {})}
        return cls(basis, meta["elements"], meta["cutoff"], meta["n_layers"], widen=False,
                   **hparams)

    @classmethod
    def for_dataset(cls, source, cutoff: float, elements=None, **hparams) -> "HamiltonianModel":
        """A model for the basis and elements of a ``Dataset`` (or a ``Basis`` and ``elements``).

        Args:
            source: an ``ehpc.io.dataset.Dataset`` or an ``ehpc.basis.Basis``.
            cutoff: edge cutoff in Å.
            elements: atomic numbers; read from the dataset when not given.
            **hparams: ``n_layers`` and the hyper-parameters of :class:`HamiltonianModel`.
        """
        if isinstance(source, Basis):
            if elements is None:
                raise ValueError("for_dataset(basis, ...) needs elements=[atomic numbers]")
            return cls(source, elements, cutoff, **hparams)
        if elements is None:
            elements = source.elements()
        return cls(source.basis, elements, cutoff, **hparams)

    def check_compatible(self, basis: Basis, numbers, where: str = "structure") -> None:
        """Refuse data in another basis or with elements the model does not know."""
        if (basis.name, basis.pseudo) != (self.basis.name, self.basis.pseudo):
            raise ModelCompatibilityError(
                f"{where}: basis {basis.name!r} (pseudo {basis.pseudo}) differs from the model's "
                f"basis {self.basis.name!r} (pseudo {self.basis.pseudo}); "
                "relabel the data or use a matching model"
            )
        try:
            species_index(numbers, self.elements, where)
        except GraphError as err:
            raise ModelCompatibilityError(f"{err} (basis {self.basis.name!r})") from None

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write weights and JSON metadata to one ``torch.load(weights_only=True)`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"metadata": json.dumps(self.metadata), "state_dict": state}, path)
        return path

    @staticmethod
    def read_metadata(path: str | Path) -> dict:
        return json.loads(read_model_file(path)["metadata"])

    @classmethod
    def load(cls, path: str | Path, device=None) -> "HamiltonianModel":
        """Rebuild a saved model (its dtype is that of the saved weights)."""
        blob = read_model_file(path)
        model = cls.from_metadata(json.loads(blob["metadata"]))
        dtype = next(v.dtype for v in blob["state_dict"].values() if v.is_floating_point())
        model.to(dtype=dtype)
        state = dict(blob["state_dict"])
        for name in ("fermi_offset", "decay", "decay_range"):  # files written before them
            state.setdefault(name, getattr(model, name))
        model.load_state_dict(state)
        return model.to(device) if device is not None else model

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.refresh_constants()
        return result

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.refresh_constants()
        return self

    def refresh_constants(self) -> None:
        """Recompute Clebsch-Gordan constants in the current dtype from float64.

        e3nn stores them in the dtype current at construction, so a float32-built model
        moved to float64 would otherwise keep float32-rounded (1e-7) coefficients.
        """
        for module in self.modules():
            if isinstance(module, BlockReadout):
                module.refresh_constants()
            for name, buf in list(module.named_buffers(recurse=False)):
                m = _W3J_BUFFER.search(name)
                if m and buf.is_floating_point():
                    l1, l2, l3 = (int(g) for g in m.groups())
                    exact = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
                    buf.copy_(exact.to(buf.dtype))

    @property
    def dtype(self) -> torch.dtype:
        return self.avg_neighbours.dtype

    @property
    def device(self) -> torch.device:
        return self.avg_neighbours.device

    # ------------------------------------------------------------------ statistics

    @torch.no_grad()
    def set_statistics(self, structures: list[HamiltonianRecord | Graph]) -> None:
        """Fit readout scales/shifts and the mean neighbour count to training structures.

        Args:
            structures: labelled records, or their training graphs (:meth:`graph_of`),
                which saves searching their neighbours again.
        """
        samples: dict[tuple[str, str], list[np.ndarray]] = {}
        distances: dict[tuple[str, str], list[np.ndarray]] = {}
        n_edges, n_atoms = 0, 0
        graphs = [self.graph_of(g) if isinstance(g, HamiltonianRecord) else g
                  for g in structures]
        if self.uses_baseline:
            self._fit_baseline(graphs)
        for graph in graphs:
            n_edges += graph.n_edges
            n_atoms += graph.n_atoms
            pairs = graph.pairs  # the record's pairs within the cutoff, and on-site
            species = graph.species.cpu().numpy()
            layout = BlockLayout(pairs, graph.nao[species])
            flat = graph.target.cpu().numpy()
            if self.uses_baseline:  # the network learns what the baseline leaves
                flat = flat - self.baseline(graph).cpu().numpy()
            length = pair_lengths(graph)  # [n_pairs]
            onsite = (pairs[:, 3] == pairs[:, 4]) & ~pairs[:, :3].any(axis=1)
            si, sj = species[pairs[:, 3]], species[pairs[:, 4]]
            for ia, a in enumerate(self.elements):
                for ib, b in enumerate(self.elements):
                    for kind, mask in (("onsite", onsite), ("offsite", ~onsite)):
                        rows = np.flatnonzero(mask & (si == ia) & (sj == ib))
                        if len(rows) == 0:
                            continue
                        key = (kind, str(a) if kind == "onsite" else _pair_key(a, b))
                        block = flat[layout.entries(rows)].reshape(len(rows), -1)  # [n_rows, size]
                        samples.setdefault(key, []).append(block)
                        distances.setdefault(key, []).append(length[rows])
        if self.hparams.get("block_decay"):
            self._fit_decay({key: (np.concatenate(distances[key]), np.concatenate(blocks))
                             for key, blocks in samples.items() if key[0] == "offsite"})
        for (kind, key), blocks in samples.items():
            readout = getattr(self, kind)[key]
            blocks = np.concatenate(blocks)
            if kind == "offsite":  # the readout predicts blocks in units of g(r)
                a, b = (self.elements.index(int(z)) for z in key.split("_"))
                r = torch.as_tensor(np.concatenate(distances[(kind, key)]), dtype=self.decay.dtype)
                blocks = blocks / self.block_size(a, b, r).cpu().numpy()[:, None]
            readout.set_statistics(readout.spec.to_irreps(blocks))
        if n_atoms:
            self.avg_neighbours.fill_(max(n_edges / n_atoms, 1.0))
        self.has_statistics.fill_(True)

    def _fit_baseline(self, graphs: list[Graph]) -> None:
        """Fit v of ``T + v S`` to the off-site blocks of ``graphs``."""
        samples = []
        for graph in graphs:
            self._check_integrals(graph)
            offsite = ~graph.onsite_entries.cpu().numpy()
            samples.append(tuple(x.cpu().numpy()[offsite] for x in
                                 (graph.target, graph.kinetic, graph.overlap)))
        self.baseline_potential.fill_(fit_potential(samples))

    def _check_integrals(self, graph: Graph) -> None:
        if graph.kinetic is None or graph.overlap is None:
            raise GraphError(f"{graph.names[0] if graph.names else 'graph'}: the model adds "
                             "the kinetic baseline but the graph has no kinetic and overlap "
                             "blocks; build it with model.graph_of(record)")

    def _fit_decay(self, offsite: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
        """Fit log g(r) of every element pair to its blocks' log RMS (both directions).

        Args:
            offsite: per ``("offsite", "za_zb")``: pair distances in Å and flat blocks.
        """
        lengths = np.concatenate([r for r, _ in offsite.values()])
        if not len(lengths):
            return
        self.decay_range.copy_(torch.as_tensor([lengths.min(), lengths.max()]))
        for ia, a in enumerate(self.elements):
            for ib, b in enumerate(self.elements[ia:], start=ia):
                # both directions, in a fixed order (a set's order changes between processes)
                keys = dict.fromkeys((_pair_key(a, b), _pair_key(b, a)))
                found = [offsite[("offsite", k)] for k in keys if ("offsite", k) in offsite]
                if not found:
                    continue
                r = np.concatenate([d for d, _ in found])
                rms = np.concatenate([np.sqrt((x**2).mean(axis=1)) for _, x in found])
                keep = rms > 0.0
                if not keep.any():
                    continue
                r, log_rms = r[keep], np.log(rms[keep])
                # fewer distinct distances than coefficients: a lower degree (a dimer: constant)
                degree = min(DECAY_DEGREE, len(np.unique(np.round(r, 3))) - 1)
                # normal equations from plain sums and a small solve (a resumed or restarted
                # run must reproduce these coefficients bit for bit)
                powers = np.stack([r**p for p in range(degree + 1)], axis=1)  # [n, degree + 1]
                coef = np.zeros(DECAY_DEGREE + 1)
                gram = (powers[:, :, None] * powers[:, None, :]).sum(axis=0)
                coef[: degree + 1] = np.linalg.solve(gram, (powers * log_rms[:, None]).sum(axis=0))
                self.decay[ia, ib] = self.decay[ib, ia] = torch.as_tensor(coef)

    def block_size(self, a: int, b: int, lengths: torch.Tensor) -> torch.Tensor:
        """g(r) of element pair (a, b) (indices into ``elements``) at ``lengths`` Å.  # [n]"""
        lo, hi = self.decay_range
        r = lengths.clamp(float(lo), float(hi))
        log_size = torch.zeros_like(r)
        for c in self.decay[a, b].to(r.dtype).flip(0):  # Horner's rule
            log_size = log_size * r + c
        return torch.exp(log_size)

    @torch.no_grad()
    def set_fermi_offset(self, records: list[HamiltonianRecord]) -> None:
        """Record how far E_F lies above the on-site estimate in the training ``records``
        (their mean; records without S, E_F or an electron count are skipped)."""
        offsets = [record_fermi_offset(r, self.basis.nao_per_atom(r.numbers)) for r in records]
        offsets = [o for o in offsets if o is not None]
        if offsets:
            self.fermi_offset.fill_(float(np.mean(offsets)))

    @property
    def fermi_offset_eV(self) -> float | None:
        """E_F minus the on-site estimate of the training structures (None: unknown)."""
        value = float(self.fermi_offset)
        return value if np.isfinite(value) else None

    # ------------------------------------------------------------------ forward

    def encode(self, graph: Graph
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atom features, edge features, edge envelopes and edge lengths after all layers."""
        i, j = graph.edge_index
        vectors = graph.positions[j] - graph.positions[i] + graph.edge_offset  # [n_edges, 3]
        lengths = vectors.norm(dim=1)  # [n_edges]
        radial, envelope = self.radial(lengths)  # [n_edges, n_radial], [n_edges]
        sh = o3.spherical_harmonics(self.irreps_sh, vectors[:, list(E3NN_FRAME)], normalize=True,
                                    normalization="component")  # [n_edges, sh_dim]
        onehot = torch.nn.functional.one_hot(graph.species, len(self.elements))  # [n_atoms, n_el]
        onehot = onehot.to(vectors.dtype)
        node = self.node_embedding(onehot)  # [n_atoms, hidden]
        edge = self.edge_embedding(onehot, graph.edge_index, sh, radial)  # [n_edges, hidden]
        for layer in self.layers:
            node, edge = layer(node, edge, graph.edge_index, sh, radial, envelope,
                               self.avg_neighbours)
        return node, edge, envelope, lengths

    def readout(self, graph: Graph, node: torch.Tensor, edge: torch.Tensor, envelope: torch.Tensor,
                lengths: torch.Tensor, plan=None) -> torch.Tensor:
        """Flat H blocks (eV, PySCF order) of the plan's pairs."""
        plan = graph.plan if plan is None else plan
        pieces = []
        for group in plan.onsite:
            readout = self.onsite[str(self.elements[group.species])]
            raw = readout(node[group.nodes])  # [n, nao^2]
            pieces.append((0.5 * (raw + raw[:, readout.transpose])).reshape(-1))
        for group in plan.offsite:
            za, zb = (self.elements[s] for s in group.species)
            fwd = self.offsite[_pair_key(za, zb)]
            rev = self.offsite[_pair_key(zb, za)]
            x = fwd(edge[group.forward])  # [n, nao_a * nao_b]
            y = rev(edge[group.reverse])  # [n, nao_b * nao_a]
            block = 0.5 * (x + y[:, rev.transpose])  # [n, nao_a * nao_b]
            size = envelope[group.forward] * self.block_size(*group.species, lengths[group.forward])
            block = block * size[:, None]
            pieces.append(block[group.direct].reshape(-1))
            pieces.append(block[group.flipped][:, fwd.transpose].reshape(-1))
        if not pieces:
            return node.new_zeros(0)
        return torch.cat(pieces)[plan.gather]  # [n_entries]

    def baseline(self, graph: Graph) -> torch.Tensor | None:
        """``T + v S`` of the graph's pairs in float64 (None without the baseline)."""
        if not self.uses_baseline:
            return None
        self._check_integrals(graph)
        return graph.kinetic + self.baseline_potential.to(torch.float64) * graph.overlap

    def forward(self, graph: Graph) -> torch.Tensor:
        flat = self.readout(graph, *self.encode(graph))
        if self.uses_baseline:
            flat = flat + self.baseline(graph).to(flat.dtype)
        return flat

    def graph_of(self, record: HamiltonianRecord) -> Graph:
        """The training graph of a labelled record: its pairs within the cutoff, its H as
        target, and the baseline's integrals when the model adds them."""
        self.check_compatible(self.basis, record.numbers, record.name)
        return record_to_graph(record, self.cutoff, self.elements, self.basis,
                               baseline=self.uses_baseline)

    # ------------------------------------------------------------------ inference

    def graph(self, numbers, positions, cell, pbc, pairs: np.ndarray | None = None,
              name: str = "structure", edges: Edges | None = None) -> Graph:
        """The model's graph of one structure (``pairs=None``: all pairs within the cutoff).

        ``edges``: the structure's neighbour search, if already done.
        """
        self.check_compatible(self.basis, numbers, name)
        return build_graph(numbers, positions, cell, pbc, self.cutoff, self.elements, self.basis,
                           pairs=pairs, name=name, edges=edges)

    @torch.no_grad()
    def predict(self, numbers, positions, cell, pbc, pairs: np.ndarray | None = None, device=None,
                dtype: torch.dtype | None = None, chunk: int | None = None, name: str = "structure"
                ) -> tuple[np.ndarray, np.ndarray]:
        """Predict H blocks of one structure (periodic, or a cluster of explicit atoms).

        Args:
            numbers: atomic numbers.                         # [n_atoms]
            positions: Cartesian positions in Å.             # [n_atoms, 3]
            cell: lattice vectors as rows in Å (unused where pbc is False).
            pbc: periodicity per axis.
            pairs: ``[Rx, Ry, Rz, i, j]`` rows to predict (each within the cutoff or
                on-site); None for all pairs within the cutoff plus on-site, sorted like
                ``ehpc.graph.neighbour_list(..., self_edges=True)``.
            device: where to run; the model is moved there.
            dtype: floating type to run in; the model is converted to it.
            chunk: largest number of pairs read out at once (bounds memory).
            name: structure name for error messages.

        Returns:
            ``(pairs, blocks)``: the int64 ``[n, 5]`` pair rows and the float64 flat blocks
            in eV, PySCF AO order, laid out as ``block_offsets(pairs, nao)``.
        """
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)
        was_training = self.training
        self.eval()
        self.check_compatible(self.basis, numbers, name)
        # one neighbour search: the graph's edges and, by default, the pairs to predict
        edges = neighbour_edges(numbers, positions, cell, pbc, self.cutoff, self.elements,
                                self.basis, name)
        no_pairs = np.zeros((0, 5), np.int64)
        graph = self.graph(numbers, positions, cell, pbc, pairs=no_pairs, name=name, edges=edges)
        pairs = np.asarray(edges.rows if pairs is None else pairs, dtype=np.int64).reshape(-1, 5)
        graph = graph.to(self.device, self.dtype)
        encoded = self.encode(graph)
        from .data import build_plan

        species = graph.species.cpu().numpy()
        chunk = int(chunk or DEFAULT_CHUNK)
        out = []
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            plan = build_plan(part, species, graph.edge_rows, graph.nao, name)
            flat = self.readout(graph, *encoded, plan=plan.to(self.device))
            flat = flat.detach().cpu().to(torch.float64).numpy()
            if self.uses_baseline:
                kinetic, overlap = baseline_integrals(self.basis, numbers, positions, cell,
                                                      pbc, part)
                flat = flat + kinetic + float(self.baseline_potential) * overlap
            out.append(flat)
        self.train(was_training)
        return pairs, (np.concatenate(out) if out else np.zeros(0))


def read_model_file(path: str | Path) -> dict:
    """The ``{"metadata", "state_dict"}`` mapping of a file written by ``HamiltonianModel.save``.

    Read with ``weights_only=True``: pickled code in a foreign file is never run.  Any other
    file (a training checkpoint, random bytes, HDF5) raises ModelFileError with one line;
    torch's own message is left out, as it advises ``weights_only=False``, which would run
    such code.

    Raises:
        OSError: the file is missing or unreadable.
        ModelFileError: the file is not an ehpc model file.
    """
    from ..train.checkpoint import FORMAT as CHECKPOINT_FORMAT

    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception:  # torch raises many types for a foreign or damaged file
        raise ModelFileError(f"{path}: not an ehpc model file (torch cannot read it as one; "
                             "use the model.pt that ehpc-train writes)") from None
    if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: a training checkpoint, not a model file; use the model "
                             f"file ehpc-train exported next to it: {path.with_name('model.pt')}")
    if not (isinstance(blob, dict) and isinstance(blob.get("metadata"), str)
            and isinstance(blob.get("state_dict"), dict)):
        raise ModelFileError(f"{path}: not an ehpc model file (no model metadata and weights)")
    return blob


def _pair_key(za: int, zb: int) -> str:
    return f"{za}_{zb}"
