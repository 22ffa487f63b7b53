"""``ehpc-basis``: show what ehpc knows about a basis for some elements.

For each element: the radial functions per l in PySCF order, the orbital count, the
valence and pseudised core electrons; then, for every l present, the signed permutation
taking PySCF's real spherical harmonics to e3nn's, ``Y_e3nn[k] = sign[k] * Y_pyscf[perm[k]]``
with vectors handed to e3nn in the frame (y, z, x).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..basis import E3NN_FRAME, Basis, angular_map
from . import run_main, summary

PROG = "ehpc-basis"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=summary(__doc__))
    parser.add_argument("basis", help="PySCF basis name, e.g. def2-svp or gth-dzvp")
    parser.add_argument("elements", nargs="+", help="chemical symbols or atomic numbers")
    parser.add_argument("--pseudo", default=None,
                        help="pseudopotential (default gth-pbe for gth-* bases)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def describe(basis: Basis, elements: list[str]) -> dict:
    """The registry entries of ``elements`` and the angular maps of their l values."""
    table = {}
    for symbol in elements:
        element = basis.element(int(symbol) if symbol.isdigit() else symbol)
        table[element.symbol] = {
            "Z": element.number,
            "ls": list(element.ls),
            "shells_per_l": {str(l): c for l, c in sorted(element.shell_counts().items())},
            "nao": element.nao,
            "n_valence": element.n_valence,
            "n_core": element.n_core,
        }
    ls = sorted({l for entry in table.values() for l in entry["ls"]})
    maps = {}
    for l in ls:
        perm, signs = angular_map(l)
        maps[str(l)] = {"perm": list(perm), "signs": [int(s) for s in signs]}
    return {"basis": basis.name, "pseudo": basis.pseudo, "e3nn_frame": list(E3NN_FRAME),
            "elements": table, "pyscf_to_e3nn": maps}


def format_text(info: dict) -> str:
    lines = [f"basis {info['basis']}  pseudopotential {info['pseudo'] or 'none (all-electron)'}"]
    for symbol, e in info["elements"].items():
        shells = ", ".join(f"l={l}: {c}" for l, c in e["shells_per_l"].items())
        lines.append(f"{symbol:>2} (Z={e['Z']}): nao {e['nao']}, valence {e['n_valence']}, "
                     f"core {e['n_core']}; shells {shells}; PySCF order l={e['ls']}")
    axes = "".join("xyz"[k] for k in info["e3nn_frame"])
    lines.append(f"PySCF -> e3nn (e3nn sees vectors as ({', '.join(axes)})): "
                 "Y_e3nn[k] = sign[k] * Y_pyscf[perm[k]]")
    for l, m in info["pyscf_to_e3nn"].items():
        signs = " ".join("+" if s > 0 else "-" for s in m["signs"])
        lines.append(f"  l={l}: perm {m['perm']}  signs {signs}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = describe(Basis(args.basis, args.pseudo), args.elements)
    print(json.dumps(info, indent=1) if args.json else format_text(info))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
