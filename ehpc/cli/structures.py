"""``ehpc-structures``: build the structures a workflow will label, from a spec list.

The spec is a JSON or YAML list of source dicts (see :func:`ehpc.sources.from_spec`);
the output is one extended-XYZ file with every structure named in ``info["name"]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PROG = "ehpc-structures"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, type=Path, help="JSON or YAML list of source dicts")
    parser.add_argument("--out", required=True, type=Path, help="output .extxyz file")
    return parser


def load_spec(path: Path) -> list[dict]:
    import yaml

    if not path.is_file():
        raise ValueError(f"{path}: spec file not found")
    text = path.read_text()
    spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if isinstance(spec, dict):
        spec = spec.get("structures", [spec])
    if not isinstance(spec, list) or not spec:
        raise ValueError(f"{path}: expected a non-empty list of structure sources")
    return spec


def run(args: argparse.Namespace) -> int:
    import ase.io

    from ..sources import from_spec
    from ..structure import validate

    frames = []
    for k, source in enumerate(load_spec(args.spec)):
        frames += from_spec(source)
    names = [a.info["name"] for a in frames]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{args.spec}: structure names repeat across sources: {duplicates[:5]}")
    for atoms in frames:
        validate(atoms, atoms.info["name"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.{os.getpid()}.tmp")
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, args.out)
    print(f"{PROG}: wrote {len(frames)} structures to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, KeyError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
