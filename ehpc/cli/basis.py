"""``ehpc-basis``: show what ehpc knows about a basis for some elements.

For each element: the radial functions per l in PySCF order, the orbital count, the
valence and pseudised core electrons; then, for every l present, the signed permutation
taking PySCF's real spherical harmonics to e3nn's, ``Y_e3nn[k] = sign[k] * Y_pyscf[perm[k]]``
with vectors handed to e3nn in the frame (y, z, x).

``--locality`` runs one PySCF SCF of a reference crystal (ASE's bulk structure of a single
element, or ``--structure FILE``) and prints, for a range of pair cutoffs, how far the
bands within 2 eV of E_F of H cut at that radius lie from the SCF's own bands: the
truncation floor every label of that basis and cutoff would have.  ``--kmesh-convergence
N ...`` runs one SCF of that crystal per mesh N×N×N (N along the axes where ``--kmesh`` is
above 1) and prints how far the levels near E_F at the lattice's special points lie from
the densest mesh's: the k-mesh error every label on that mesh would carry.  Use them to
choose a basis, cutoff and mesh before labelling anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..basis import E3NN_FRAME, Basis, angular_map
from . import CLIError, run_main, summary

PROG = "ehpc-basis"
#: default pair cutoffs (Å) of the locality table
DEFAULT_CUTOFFS = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0]
#: floors (max error, meV) whose smallest sufficient cutoff (or mesh) the tables name
FLOOR_TARGETS_MEV = (10.0, 1.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=summary(__doc__))
    parser.add_argument("basis", help="PySCF basis name, e.g. def2-svp or gth-dzvp")
    parser.add_argument("elements", nargs="+", help="chemical symbols or atomic numbers")
    parser.add_argument("--pseudo", default=None,
                        help="pseudopotential (default gth-pbe for gth-* bases)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    local = parser.add_argument_group("crystal checks (each runs PySCF SCFs)")
    local.add_argument("--locality", action="store_true",
                       help="print the truncation floor against the pair cutoff for a crystal")
    local.add_argument("--kmesh-convergence", type=int, nargs="+", default=None, metavar="N",
                       help="print how the levels near E_F move with the SCF mesh, N points "
                            "along each axis where --kmesh is above 1, e.g. 2 3 4 6")
    local.add_argument("--structure", type=Path, default=None, metavar="FILE",
                       help="reference crystal (any ase.io.read format); default: ASE's bulk "
                            "crystal of the single element given")
    local.add_argument("--cutoffs", type=float, nargs="+", default=DEFAULT_CUTOFFS, metavar="Å",
                       help="pair cutoffs to score (default %(default)s)")
    local.add_argument("--kmesh", type=int, nargs=3, default=[4, 4, 4], metavar=("K1", "K2", "K3"),
                       help="SCF k-mesh of the reference crystal (default 4 4 4)")
    local.add_argument("--xc", default="pbe", help="functional (default pbe)")
    local.add_argument("--smearing", default=None, metavar="METHOD:WIDTH_EV",
                       help="fractional occupations for metals, e.g. fermi:0.1")
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


def reference_crystal(args: argparse.Namespace):
    """The crystal of the locality table: ``--structure`` or ASE's bulk of one element."""
    import ase.io
    from ase.build import bulk

    if args.structure is not None:
        if not args.structure.is_file():
            raise CLIError(f"--structure {args.structure}: file not found")
        atoms = ase.io.read(args.structure)
        atoms.info["name"] = args.structure.stem
        return atoms
    if len(args.elements) != 1:
        raise CLIError("--locality and --kmesh-convergence with several elements need "
                       "--structure FILE (a crystal of them)")
    symbol = args.elements[0]
    try:
        atoms = bulk(symbol)
    except (ValueError, KeyError):
        raise CLIError(f"ASE knows no bulk crystal of {symbol!r}; give --structure FILE") from None
    atoms.info["name"] = f"{symbol}-{atoms.info.get('crystal', 'bulk')}"
    return atoms


def reference_smearing(args: argparse.Namespace):
    """The reference crystal's occupations from ``--smearing`` (None: integer)."""
    from ..dft.scf import Smearing

    try:
        return Smearing.parse(args.smearing) if args.smearing else None
    except ValueError as err:
        raise CLIError(f"--smearing: {err}") from None


def locality(args: argparse.Namespace, basis: Basis) -> dict:
    from ..dft.locality import locality_table

    if min(args.kmesh) < 1 or min(args.cutoffs) <= 0:
        raise CLIError("--kmesh and --cutoffs must be positive")
    smearing = reference_smearing(args)
    atoms = reference_crystal(args)
    table = locality_table(atoms, basis, args.cutoffs, tuple(args.kmesh), args.xc,
                           atoms.info["name"], smearing)
    doc = asdict(table)
    doc["gap"] = table.gap
    doc["cutoff_for_meV"] = {str(t): table.cutoff_for(t) for t in FLOOR_TARGETS_MEV}
    return doc


def kmesh_convergence(args: argparse.Namespace, basis: Basis) -> dict:
    from ..dft.mesh_convergence import mesh_table, scaled_meshes

    if min(args.kmesh_convergence) < 1 or min(args.kmesh) < 1:
        raise CLIError("--kmesh and --kmesh-convergence must be positive")
    if len(set(args.kmesh_convergence)) < 2:
        raise CLIError("--kmesh-convergence: give at least two meshes to compare")
    smearing = reference_smearing(args)
    atoms = reference_crystal(args)
    meshes = scaled_meshes(args.kmesh_convergence, [k > 1 for k in args.kmesh])
    table = mesh_table(atoms, basis, meshes, args.xc, atoms.info["name"], smearing)
    doc = asdict(table)
    doc["n_atoms"] = len(atoms)
    doc["mesh_for_meV"] = {str(t): table.mesh_for(t) for t in FLOOR_TARGETS_MEV}
    return doc


def format_kmesh_convergence(doc: dict) -> str:
    def mesh(k) -> str:
        return "x".join(map(str, k))

    densest = mesh(doc["rows"][-1]["kmesh"])
    lines = [
        f"{doc['basis']} in {doc['structure']} ({doc['n_atoms']} atoms): levels within 2 eV of "
        f"E_F at {' '.join(doc['points'])} (bands {doc['bands'][0] + 1}-{doc['bands'][-1] + 1}) "
        f"against the {densest} SCF mesh's, meV:",
        f"{'SCF mesh':>9} {'MAE':>8} {'max':>8} {'E_F shift':>10} {'gap shift':>10} {'seconds':>8}",
    ]
    for row in doc["rows"]:
        gap = "" if row["gap_shift_meV"] is None else f"{row['gap_shift_meV']:.1f}"
        lines.append(f"{mesh(row['kmesh']):>9} {row['mae_meV']:8.1f} {row['max_meV']:8.1f} "
                     f"{row['fermi_shift_meV']:10.1f} {gap:>10} {row['wall_time_s']:8.0f}")
    for target, kmesh in doc["mesh_for_meV"].items():
        where = mesh(kmesh) if kmesh is not None else f"none coarser than {densest}"
        lines.append(f"levels ≤ {float(target):g} meV max from {densest}'s: {where}")
    return "\n".join(lines)


def format_locality(doc: dict) -> str:
    mesh = "x".join(map(str, doc["kmesh"]))
    band = "x".join(map(str, doc["band_kmesh"]))
    lines = [
        f"{doc['basis']} in {doc['structure']} ({doc['n_atoms']} atoms, {doc['nao_per_cell']} "
        f"orbitals per cell): SCF mesh {mesh}, H(R) rebuilt on {band}; overlap below 1e-7 "
        f"beyond {doc['decay_radius']:.2f} Å",
        f"gap over the sampled k {doc['gap']:.3f} eV (HOMO {doc['homo']:.3f}, LUMO "
        f"{doc['lumo']:.3f} eV); bands within 2 eV of E_F against the SCF's own, meV:",
        f"{'cutoff Å':>9} {'neighbours':>10} {'H cut MAE':>10} {'max':>9} "
        f"{'H,S cut MAE':>12} {'max':>9} {'min eig S_cut':>14}",
    ]
    for row in doc["rows"]:
        if row["cut_s_mae"] is None:
            cut = f"{'S(k) not PD':>12} {'':>9}"
        else:
            cut = f"{row['cut_s_mae']:12.2f} {row['cut_s_max']:9.2f}"
        lines.append(f"{row['cutoff']:9.2f} {row['neighbours']:10.1f} {row['exact_s_mae']:10.2f} "
                     f"{row['exact_s_max']:9.2f} {cut} {row['overlap_min_eig']:14.2e}")
    for target, cutoff in doc["cutoff_for_meV"].items():
        where = f"{cutoff:g} Å" if cutoff is not None else "beyond the cutoffs listed"
        lines.append(f"floor ≤ {float(target):g} meV max (H cut, S exact): {where}")
    lines.append(f"({doc['wall_time_s']:.0f} s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    basis = Basis(args.basis, args.pseudo)
    if args.locality:
        doc = locality(args, basis)
        print(json.dumps(doc, indent=1) if args.json else format_locality(doc))
    if args.kmesh_convergence:
        doc = kmesh_convergence(args, basis)
        print(json.dumps(doc, indent=1) if args.json else format_kmesh_convergence(doc))
    if args.locality or args.kmesh_convergence:
        return 0
    info = describe(basis, args.elements)
    print(json.dumps(info, indent=1) if args.json else format_text(info))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
