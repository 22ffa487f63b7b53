"""``ehpc-structures``: build the structures a workflow will label, from a spec file.

The spec is a YAML or JSON list of sources (see :func:`ehpc.sources.from_spec`): files,
rattled/strained supercells, molecular conformers.  The output is one extended-XYZ file
with every structure checked and named in ``info["name"]``.  Molecular conformers need a
Hessian, computed with ``--basis``/``--xc`` and cached beside the output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import replacing
from ..basis import Basis
from . import check_xc, run_main, summary

PROG = "ehpc-structures"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=summary(__doc__))
    parser.add_argument("--spec", required=True, type=Path, help="YAML/JSON list of structure sources")
    parser.add_argument("--out", required=True, type=Path, help="output .extxyz file")
    parser.add_argument("--basis", default="def2-svp", help="basis of conformer Hessians")
    parser.add_argument("--pseudo", default=None, help="pseudopotential of conformer Hessians")
    parser.add_argument("--xc", default="pbe", help="functional of conformer Hessians")
    return parser


def run(args: argparse.Namespace) -> int:
    import ase.io

    from ..sources import from_spec_file
    from ..structure import validate

    check_xc(args.xc)
    basis = Basis(args.basis, args.pseudo)
    cache = args.out.parent / ".hessians"
    frames = from_spec_file(args.spec, basis, args.xc, cache_dir=cache)
    for atoms in frames:
        validate(atoms, atoms.info["name"])
    with replacing(args.out) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    print(f"{PROG}: wrote {len(frames)} structures to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
