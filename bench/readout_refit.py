"""Refit a trained model's readout by least squares and score H per split and per shell.

    python bench/readout_refit.py --model results/default/train/model.pt \
        --dataset results/default/dataset.h5 --out refit.pt --json bench/results/readout_refit.json

The readout weights are solved on the dataset's training split with the features of the
given model fixed (``ehpc.train.readout_fit``, what ``train.readout_fit: true`` does after
training). Printed: H MAE per split before and after, and on the first held-out
structure the MAE and mean block size per distance shell, which shows where a model's
error sits. Score the bands of ``--out`` with ``ehpc-evaluate`` as usual.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ehpc.io.dataset import Dataset
from ehpc.io.layout import BlockLayout
from ehpc.io.splits import read_splits
from ehpc.nn.data import pair_lengths, record_to_graph
from ehpc.nn.fit import evaluate
from ehpc.nn.model import HamiltonianModel
from ehpc.train.readout_fit import RIDGE, fit_readout

#: distance shells (Å) of the per-shell table; 0 to 0.1 is on-site
SHELLS = (0.0, 0.1, 2.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 12.0)


def shell_errors(model: HamiltonianModel, record) -> list[dict]:
    """MAE and mean |block| (meV) of the record's blocks per distance shell."""
    graph = record_to_graph(record, model.cutoff, model.elements, model.basis)
    graph = graph.to("cpu", model.dtype)
    with torch.no_grad():
        pred = model(graph).double().numpy()
    target = graph.target.double().numpy()
    layout = BlockLayout(np.asarray(graph.pairs), model.basis.nao_per_atom(record.numbers))
    length = pair_lengths(graph)  # [n_pairs]
    rows = []
    for lo, hi in zip(SHELLS[:-1], SHELLS[1:]):
        pick = np.flatnonzero((length >= lo) & (length < hi))
        if not len(pick):
            continue
        entries = layout.entries(pick)
        rows.append({"from_A": lo, "to_A": hi, "pairs": int(len(pick)),
                     "block_meV": float(np.abs(target[entries]).mean() * 1e3),
                     "mae_meV": float(np.abs(pred[entries] - target[entries]).mean() * 1e3)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the refitted model file")
    parser.add_argument("--json", type=Path, help="append the record to this JSON list")
    parser.add_argument("--ridge", type=float, default=RIDGE)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    model = HamiltonianModel.load(args.model).to(torch.float64)
    dataset = Dataset(args.dataset)
    records = {r.name: r for r in dataset}
    splits = {k: [records[n] for n in v] for k, v in read_splits(args.dataset).items()}
    held_out = next(iter(splits.get("test") or splits.get("val")))

    def scores() -> dict:
        return {"H_mae_meV": {k: evaluate(model, v)["mae_eV"] * 1e3 for k, v in splits.items()},
                "shells": shell_errors(model, held_out)}

    before = scores()
    start = time.perf_counter()
    graphs = [record_to_graph(r, model.cutoff, model.elements, model.basis).to("cpu", model.dtype)
              for r in splits["train"]]
    fit_readout(model, graphs, diag_weight=1.0, ridge=args.ridge)
    seconds = time.perf_counter() - start
    after = scores()
    model.to(torch.float32).save(args.out)

    print(f"readout least squares in {seconds:.1f} s (one thread), ridge {args.ridge:g}")
    for split in before["H_mae_meV"]:
        print(f"  {split:6s} H MAE {before['H_mae_meV'][split]:8.2f} -> "
              f"{after['H_mae_meV'][split]:8.2f} meV")
    print(f"  {held_out.name} per shell: pairs, mean |block|, MAE before -> after (meV)")
    for b, a in zip(before["shells"], after["shells"]):
        print(f"    {b['from_A']:4.1f}-{b['to_A']:4.1f} Å {b['pairs']:5d} {b['block_meV']:9.2f} "
              f"{b['mae_meV']:9.2f} -> {a['mae_meV']:8.2f}")
    if args.json:
        from bench_mumps import git_commit  # bench/ is on the path of a bench script

        old = json.loads(args.json.read_text()) if args.json.exists() else []
        old.append({"model": str(args.model), "dataset": str(args.dataset),
                    "held_out": held_out.name, "ridge": args.ridge, "seconds": seconds,
                    "before": before, "after": after, "commit": git_commit()})
        args.json.write_text(json.dumps(old, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
