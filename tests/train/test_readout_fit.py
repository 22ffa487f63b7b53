"""The least-squares readout (train.readout_fit) and the fitted block size g(r)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ehpc.nn import HamiltonianModel, record_to_graph
from ehpc.nn.fit import evaluate
from ehpc.train.readout_fit import fit_readout, readout_weights

from .conftest import BASIS, SPLITS, run_trainer


def tiny_model(seed: int = 0, **hparams) -> HamiltonianModel:
    torch.manual_seed(seed)
    return HamiltonianModel(BASIS, [1, 8], cutoff=3.0, n_layers=1, channels=4, n_radial=4,
                            radial_hidden=8, **hparams).to(torch.float64)


def test_least_squares_readout_matches_an_independent_solve(records):
    train = [records[n] for n in SPLITS["train"]]
    model = tiny_model()
    model.set_statistics(train)
    graphs = [record_to_graph(r, model.cutoff, model.elements, model.basis).to("cpu", torch.float64)
              for r in train]
    target = torch.cat([g.target for g in graphs])
    weights = readout_weights(model)
    # the Jacobian by backpropagation, one entry at a time (not the module's weight columns)
    pred = torch.cat([model(g) for g in graphs])
    rows = []
    for k in range(len(pred)):
        grads = torch.autograd.grad(pred[k], weights, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(w) if g is None else g).reshape(-1)
                               for w, g in zip(weights, grads)]))
    jacobian = torch.stack(rows)  # [n_entries, n_weights]
    start = torch.cat([w.detach().reshape(-1) for w in weights])
    pred = pred.detach()
    offset = pred - jacobian @ start  # the prediction is linear in the readout weights
    best = torch.linalg.lstsq(jacobian, target - offset, driver="gelsd").solution  # rank-deficient
    best_error = float((jacobian @ best + offset - target).square().sum())
    before = float((pred - target).square().sum())

    fit_readout(model, graphs, diag_weight=1.0, ridge=1e-12)  # near the plain optimum
    after = torch.cat([model(g).detach() for g in graphs])
    after_error = float((after - target).square().sum())
    assert after_error < 0.5 * before
    assert after_error == pytest.approx(best_error, rel=1e-4)
    # optimal: no first-order change of the error along any readout weight
    gradient = jacobian.T @ (after - target)
    assert float(gradient.abs().max()) <= 1e-7 * float((jacobian.T @ (pred - target)).abs().max())


def test_block_size_recovers_an_exponential_decay_and_clamps():
    model = tiny_model()
    rng = np.random.default_rng(0)
    r = rng.uniform(1.0, 3.0, 300)
    patterns = rng.normal(size=(300, 4))
    patterns /= np.sqrt((patterns**2).mean(axis=1, keepdims=True))  # unit RMS each
    blocks = patterns * np.exp(0.7 - 1.3 * r)[:, None]
    model._fit_decay({("offsite", "1_8"): (r, blocks)})
    o, h = model.elements.index(8), model.elements.index(1)
    np.testing.assert_allclose(model.decay[h, o].numpy(), [0.7, -1.3, 0.0], atol=1e-10)
    np.testing.assert_allclose(model.decay[o, h].numpy(), model.decay[h, o].numpy())
    assert not model.decay[o, o].any()  # no O-O pairs: g = 1
    inside = torch.tensor([1.5, 2.5], dtype=torch.float64)
    np.testing.assert_allclose(model.block_size(h, o, inside).numpy(), np.exp(0.7 - 1.3 * inside))
    lo, hi = (float(x) for x in model.decay_range)
    outside = torch.tensor([0.1, 9.0], dtype=torch.float64)  # clamped to the fitted range
    np.testing.assert_allclose(model.block_size(h, o, outside).numpy(),
                               np.exp(0.7 - 1.3 * np.array([lo, hi])))


def test_model_files_from_before_the_block_size_load_unchanged(records, tmp_path):
    model = tiny_model(block_decay=False)
    model.set_statistics([records["water_0"]])
    path = model.save(tmp_path / "model.pt")
    blob = torch.load(path, weights_only=True)
    import json

    meta = json.loads(blob["metadata"])
    del meta["hparams"]["block_decay"]
    state = {k: v for k, v in blob["state_dict"].items() if k not in ("decay", "decay_range")}
    torch.save({"metadata": json.dumps(meta), "state_dict": state}, tmp_path / "old.pt")
    old = HamiltonianModel.load(tmp_path / "old.pt")
    assert old.hparams["block_decay"] is False
    graph = record_to_graph(records["water_3"], 3.0, model.elements, BASIS).to("cpu", torch.float64)
    torch.testing.assert_close(old(graph), model(graph))


def test_ehpc_train_readout_fit_writes_what_it_reports(tmp_path, config_file, records):
    out = tmp_path / "run"
    run = run_trainer(["--config", str(config_file), "--set", "train.readout_fit=true",
                       "--out-dir", str(out)])
    assert run.returncode == 0, run.stderr[-3000:]
    line = re.search(r"readout least squares .*: validation H MAE ([\d.]+) -> ([\d.]+) meV, "
                     r"loss \S+ -> \S+; (model.pt now holds it|not kept)", run.stderr + run.stdout)
    assert line, (run.stderr + run.stdout)[-3000:]
    before, after = float(line[1]), float(line[2])
    held = after if line[3] == "model.pt now holds it" else before
    val = [records[n] for n in SPLITS["val"]]
    model = HamiltonianModel.load(out / "model.pt")
    assert evaluate(model, val)["mae_eV"] * 1e3 == pytest.approx(held, abs=0.01)


def test_two_ranks_solve_the_readout_of_one(tmp_path, config_file, records):
    """The normal equations are summed over the ranks' shards: two torchrun ranks (batch 1
    each) end with the model of one process (batch 2)."""
    runs = {}
    for ranks, batch in ((1, 2), (2, 1)):
        out = tmp_path / f"ranks{ranks}"
        run = run_trainer(["--config", str(config_file), "--out-dir", str(out), "--set",
                           "train.readout_fit=true", "--set", f"train.batch_size={batch}"],
                          ranks=ranks)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "readout least squares" in run.stderr + run.stdout
        runs[ranks] = HamiltonianModel.load(out / "model.pt").to(torch.float64)
    for name in SPLITS["val"]:
        graph = record_to_graph(records[name], 3.0, runs[1].elements, BASIS).to("cpu", torch.float64)
        with torch.no_grad():
            # the ranks sum their normal equations in another order: equal to rounding,
            # relative to blocks of a few hartree
            torch.testing.assert_close(runs[2](graph), runs[1](graph), rtol=1e-7, atol=1e-8)


def test_ehpc_train_readout_against_h_of_k_reports_the_eigenvalue_error_model_pt_has(
        tmp_path, config_file, records):
    """``train.readout_kpoints`` (molecules: Γ): the log's validation eigenvalue error is
    that of model.pt, recomputed here with scipy's generalised eigensolver."""
    import scipy.linalg

    from ehpc.io.layout import bloch_sum

    out = tmp_path / "run"
    run = run_trainer(["--config", str(config_file), "--set", "train.readout_fit=true",
                       "--set", "train.readout_kpoints=1", "--out-dir", str(out)])
    assert run.returncode == 0, run.stderr[-3000:]
    line = re.search(r"H\(k\) weight (\S+): validation eigenvalue MAE ([\d.]+) -> ([\d.]+) meV "
                     r"at 1 k-points; (model.pt now holds it|not kept)", run.stderr + run.stdout)
    assert line, (run.stderr + run.stdout)[-3000:]
    held = float(line[3]) if line[4] == "model.pt now holds it" else float(line[2])
    model = HamiltonianModel.load(out / "model.pt").to(torch.float64)
    n_virtual = 4  # train.band_virtual's default
    errors = []
    for name in SPLITS["val"]:
        record = records[name]
        graph = record_to_graph(record, model.cutoff, model.elements, BASIS)
        graph = graph.to("cpu", torch.float64)
        nao = BASIS.nao_per_atom(record.numbers)
        with torch.no_grad():
            predicted = model(graph).numpy()
        s = bloch_sum(record.atom_pairs, record.overlap, nao, np.zeros(3))
        pairs = np.asarray(graph.pairs)
        levels = [scipy.linalg.eigh(bloch_sum(pairs, flat, nao, np.zeros(3)), s, eigvals_only=True)
                  for flat in (predicted, graph.target.numpy())]
        n = BASIS.n_electrons(record.numbers) // 2 + n_virtual
        errors.append(np.abs(levels[0][:n] - levels[1][:n]))
    assert np.concatenate(errors).mean() * 1e3 == pytest.approx(held, abs=0.06)
