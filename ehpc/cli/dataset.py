"""``ehpc-dataset``: merge the per-structure files of ``ehpc-datagen`` into one dataset.

Structures are added in sorted name order; ``--split`` also stores a reproducible
train/validation/test partition of the names as ``/splits/<subset>`` in the output
(read it back with :func:`ehpc.io.splits.read_splits`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py

from ..atomic import replacing
from ..dft.floor import format_floor_summary, summarise_floors
from ..io.dataset import STRUCTURES, Dataset, merge
from ..io.splits import make_splits, parse_split, write_splits
from . import CLIError, run_main, summary
from .datagen import FAILED_SUFFIX

PROG = "ehpc-dataset"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=summary(__doc__))
    parser.add_argument("--labels", type=Path, required=True,
                        help="folder of per-structure .h5 files")
    parser.add_argument("--out", type=Path, required=True, help="merged dataset file")
    parser.add_argument("--split", default=None,
                        help="subsets as fractions (train=0.8,val=0.1,test=0.1) or counts "
                             "(train=500,val=500,test=1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    return parser


def label_files(folder: Path, exclude: Path | None = None) -> list[Path]:
    """The per-structure dataset files of ``folder``, sorted by name."""
    if not folder.is_dir():
        raise CLIError(f"{folder}: labels folder not found")
    skip = exclude.resolve() if exclude is not None else None
    files = sorted(p for p in folder.glob("*.h5")
                   if not p.name.startswith(".") and p.resolve() != skip)
    if not files:
        raise CLIError(f"{folder}: no labelled structures (*.h5); run ehpc-datagen first")
    return files


def run(args: argparse.Namespace) -> int:
    sizes = parse_split(args.split) if args.split else None
    files = label_files(args.labels, exclude=args.out)
    failed = sorted(args.labels.glob(f"*{FAILED_SUFFIX}"))
    if failed:
        print(f"{PROG}: {len(failed)} structure(s) failed to label and are not included "
              f"(see {args.labels}/*{FAILED_SUFFIX})", file=sys.stderr)
    with replacing(args.out) as tmp:
        merge(files, tmp)
        names = Dataset(tmp).names
        with h5py.File(tmp, "a") as f:  # the floor needs only each structure's attributes
            floor = summarise_floors(dict(f[STRUCTURES][n].attrs) for n in names)
            if floor is not None:
                f.attrs.update(floor)
        if sizes is not None:
            splits = make_splits(names, sizes, seed=args.seed)
            write_splits(tmp, splits)
    summary = f"{PROG}: merged {len(names)} structures into {args.out}"
    if sizes is not None:
        summary += " (" + ", ".join(f"{k}={len(v)}" for k, v in splits.items()) + ")"
    print(summary)
    if floor is not None:
        print(f"{PROG}: {format_floor_summary(floor)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
