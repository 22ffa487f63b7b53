"""Train/validation/test splits stored beside the structures of a dataset file.

A split is a list of structure names per subset, written as string datasets
``/splits/<subset>`` so every later stage (training, benchmarks) reads the same
partition instead of re-drawing it.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import UserError

SPLITS = "splits"


class SplitError(UserError, ValueError):
    """A split specification that cannot be satisfied."""


def parse_split(text: str) -> dict[str, float | int]:
    """``"train=0.8,val=0.1,test=0.1"`` (fractions) or ``"train=500,val=500,test=1000"`` (counts).

    Raises:
        SplitError: malformed entries, repeated subsets, negative sizes, or fractions
            mixed with counts.
    """
    sizes: dict[str, float | int] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SplitError(f"split entry {item!r} is not of the form name=size (e.g. train=0.8)")
        if key in sizes:
            raise SplitError(f"split subset {key!r} given twice in {text!r}")
        try:
            number = int(value) if value.strip().isdigit() else float(value)
        except ValueError:
            raise SplitError(f"split subset {key!r}: size {value!r} is not a number") from None
        if not np.isfinite(number) or number < 0:
            raise SplitError(f"split subset {key!r}: size must be >= 0, got {value!r}")
        sizes[key] = number
    kinds = {isinstance(v, int) for v in sizes.values()}
    if len(kinds) > 1:
        raise SplitError(f"split {text!r} mixes fractions and counts; use one kind")
    return sizes


def make_splits(
    names: list[str], sizes: dict[str, float | int], seed: int = 0
) -> dict[str, list[str]]:
    """Disjoint random subsets of ``names`` with the given fractions or counts.

    Fractions summing to 1 use every structure (rounding remainders go to the subsets
    with the largest fractional parts); smaller sums leave the rest unassigned.

    Raises:
        SplitError: the sizes ask for more structures than exist.
    """
    n = len(names)
    counts = _counts(sizes, n)
    if sum(counts.values()) > n:
        raise SplitError(
            f"split {sizes} needs {sum(counts.values())} structures but only {n} are available"
        )
    order = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for key, count in counts.items():
        out[key] = sorted(names[k] for k in order[start:start + count])
        start += count
    return out


def _counts(sizes: dict[str, float | int], n: int) -> dict[str, int]:
    if all(isinstance(v, int) for v in sizes.values()):
        return dict(sizes)
    total = sum(sizes.values())
    if total > 1 + 1e-9:
        raise SplitError(f"split fractions {sizes} add up to {total:g} > 1")
    exact = {k: v * n for k, v in sizes.items()}
    counts = {k: int(np.floor(v + 1e-9)) for k, v in exact.items()}
    if abs(total - 1) < 1e-9:
        leftover = n - sum(counts.values())
        for key in sorted(exact, key=lambda k: counts[k] - exact[k])[:leftover]:
            counts[key] += 1
    return counts


def write_splits(path: str | Path, splits: dict[str, list[str]]) -> None:
    """Store ``splits`` in an existing dataset file, replacing any earlier ones."""
    with h5py.File(path, "a") as f:
        if SPLITS in f:
            del f[SPLITS]
        group = f.create_group(SPLITS, track_order=True)
        for key, names in splits.items():
            group.create_dataset(key, data=np.array(names, dtype=object), dtype=h5py.string_dtype())


def read_splits(path: str | Path) -> dict[str, list[str]]:
    """The ``/splits`` subsets of a dataset file (empty if it has none)."""
    with h5py.File(path, "r") as f:
        if SPLITS not in f:
            return {}
        return {key: [s.decode() for s in f[SPLITS][key][()]] for key in f[SPLITS]}
