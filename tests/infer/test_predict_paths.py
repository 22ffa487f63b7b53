"""The two prediction routes of a rank give the same blocks.

A rank's halo cluster (explicit periodic images within the receptive field) and, when the
cell is smaller than that cluster, the periodic structure itself: both must give every
owned pair's H block to round-off, here for a rattled 64-atom Si crystal split in three.
"""

from __future__ import annotations

import numpy as np
import pytest

from ehpc.infer.halo import build_halo, cluster_pairs
from ehpc.infer.partition import partition
from ehpc.infer.predict import predict_blocks

from .conftest import random_si_model, si_crystal


@pytest.mark.parametrize("rank", [0, 2])
def test_cluster_and_periodic_routes_agree(rank):
    import torch

    model = random_si_model(cutoff=3.0, n_layers=2)
    atoms = si_crystal()
    numbers, positions = atoms.numbers, atoms.positions
    cell = np.asarray(atoms.cell[:])
    parts = partition(positions, model.basis.nao_per_atom(numbers), 3)
    halo = build_halo(positions, numbers, cell, atoms.pbc, parts.owned(rank),
                      model.receptive_field)
    pairs, distances = cluster_pairs(halo, positions, cell, {(14, 14): model.cutoff})
    assert len(halo) > len(atoms)  # the cluster is the larger graph: both routes apply
    cluster = predict_blocks(model, halo, pairs, distances, chunk_atoms=8, dtype=torch.float64)
    periodic = predict_blocks(model, halo, pairs, distances, dtype=torch.float64,
                              structure=atoms)
    assert np.abs(cluster).max() > 1e-3  # something was predicted
    np.testing.assert_allclose(periodic, cluster, rtol=0, atol=1e-11)


class CountingPredictor:
    """The real model, recording how many pairs each ``predict`` call reads out."""

    def __init__(self, model):
        self.model = model
        self.asked: list[int | None] = []
        self.periodic: list[bool] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, numbers, positions, cell, pbc, pairs=None, **kwargs):
        self.asked.append(None if pairs is None else len(pairs))
        self.periodic.append(bool(np.any(pbc)))
        return self.model.predict(numbers, positions, cell, pbc, pairs=pairs, **kwargs)


def test_periodic_route_reads_out_only_the_ranks_pairs():
    """Three ranks on a cell smaller than their halos share the readout: each asks the
    periodic model for its own pairs only, not the structure's (the blocks themselves are
    checked against the cluster route above)."""
    import torch

    from ehpc.graph import neighbour_list

    model = random_si_model(cutoff=3.0, n_layers=2)
    atoms = si_crystal()
    numbers, positions = atoms.numbers, atoms.positions
    cell = np.asarray(atoms.cell[:])
    all_pairs = neighbour_list(positions, cell, atoms.pbc, model.cutoff,
                               self_edges=True).atom_pairs()
    parts = partition(positions, model.basis.nao_per_atom(numbers), 3)
    counted = 0
    for rank in range(3):
        halo = build_halo(positions, numbers, cell, atoms.pbc, parts.owned(rank),
                          model.receptive_field)
        pairs, distances = cluster_pairs(halo, positions, cell, {(14, 14): model.cutoff})
        spy = CountingPredictor(model)
        periodic = predict_blocks(spy, halo, pairs, distances, dtype=torch.float64,
                                  structure=atoms)
        assert np.abs(periodic).max() > 1e-3
        assert len(spy.asked) == 1 and spy.asked[0] is not None
        assert spy.asked[0] < len(all_pairs)
        counted += spy.asked[0]
    assert counted == len(all_pairs)  # every pair of the structure, read out once


def test_large_cell_takes_the_chunked_route():
    """A periodic cell larger than every chunk's sub-cluster is predicted chunk by chunk
    (no call sees the whole structure), and the blocks equal the periodic route's."""
    import torch

    from ehpc.infer.predict import _predict_periodic
    from ehpc.io.layout import BlockLayout

    model = random_si_model(cutoff=2.6, n_layers=1)
    atoms = si_crystal(repeat=(3, 3, 3))  # 216 atoms
    numbers, positions = atoms.numbers, atoms.positions
    cell = np.asarray(atoms.cell[:])
    parts = partition(positions, model.basis.nao_per_atom(numbers), 2)
    halo = build_halo(positions, numbers, cell, atoms.pbc, parts.owned(0), model.receptive_field)
    pairs, distances = cluster_pairs(halo, positions, cell, {(14, 14): model.cutoff})
    spy = CountingPredictor(model)
    chunked = predict_blocks(spy, halo, pairs, distances, chunk_atoms=16, dtype=torch.float64,
                             structure=atoms)
    assert len(spy.asked) > 1 and not any(spy.periodic)  # chunks' clusters, never the cell
    layout = BlockLayout(pairs, model.basis.nao_per_atom(halo.numbers))
    periodic = np.zeros(layout.n_entries)
    rows = np.flatnonzero((distances < model.cutoff) | (pairs[:, 0] == pairs[:, 1]))
    _predict_periodic(model, halo, atoms, pairs, rows, layout, periodic, None, torch.float64)
    assert np.abs(periodic).max() > 1e-3
    np.testing.assert_allclose(chunked, periodic, rtol=0, atol=1e-11)
