"""``ehpc-deeph``: convert between ehpc datasets and DeepH structure folders.

``ehpc-deeph export data.h5 OUT --convention deeph`` writes ``OUT/<name>/`` per structure;
``ehpc-deeph import FOLDER... --out data.h5`` reads structure folders (or folders of them).
The basis, pseudopotential, functional and orbital order (``--convention``: ``deeph`` for
DeepH-pack's preprocessed data, ``pyscf`` for ehpc's own order) come from each folder's
``info.json`` where it states them (ehpc's export does); an option that contradicts it is
refused, and one the folders do not state must be given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..basis import Basis
from ..io.dataset import Dataset, DatasetWriter
from ..io.deeph import CONVENTIONS, export_deeph, import_deeph, stated_level
from . import CLIError, run_main, summary

PROG = "ehpc-deeph"

#: a file every DeepH structure folder has, used to tell structure folders from parents
MARKER = "element.dat"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=summary(__doc__))
    sub = parser.add_subparsers(dest="command", required=True)
    conventions = sorted(CONVENTIONS)

    exp = sub.add_parser("export", help="ehpc dataset -> DeepH folders")
    exp.add_argument("dataset", type=Path, help="ehpc dataset file")
    exp.add_argument("out", type=Path, help="folder that receives one subfolder per structure")
    exp.add_argument("--convention", required=True, choices=conventions,
                     help="orbital order written")
    exp.add_argument("--names", nargs="+", default=None, help="only these structures")
    exp.add_argument("--overwrite", action="store_true", help="replace existing structure folders")

    imp = sub.add_parser("import", help="DeepH folders -> ehpc dataset")
    imp.add_argument("folders", type=Path, nargs="+", help="structure folders or folders of them")
    imp.add_argument("--basis", default=None,
                     help="basis the DeepH data were computed in (default: from info.json)")
    imp.add_argument("--pseudo", default=None,
                     help="its pseudopotential, if any (default: from info.json)")
    imp.add_argument("--xc", default=None,
                     help="functional the DeepH data were computed with (default: from info.json)")
    imp.add_argument("--convention", default=None, choices=conventions,
                     help="orbital order in the files (default: from info.json)")
    imp.add_argument("--code", default="unknown",
                     help="DFT code that produced the data, e.g. openmx")
    imp.add_argument("--out", type=Path, required=True, help="ehpc dataset file to write")
    return parser


def structure_folders(paths: list[Path]) -> list[Path]:
    """Each path if it is a structure folder, else its structure subfolders (sorted)."""
    out = []
    for path in paths:
        if not path.is_dir():
            raise CLIError(f"{path}: not a folder")
        if (path / MARKER).is_file():
            out.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / MARKER).is_file())
        if not children:
            raise CLIError(
                f"{path}: neither a DeepH structure folder nor a folder of them (no {MARKER})"
            )
        out += children
    return out


def run_export(args: argparse.Namespace) -> int:
    data = Dataset(args.dataset)
    names = args.names or data.names
    missing = sorted(set(names) - set(data.names))
    if missing:
        raise CLIError(f"{args.dataset}: no structure named {missing[0]!r}")
    for name in names:
        export_deeph(data[name], data.basis, args.out / name, args.convention,
                     overwrite=args.overwrite, xc=data.xc)
    print(f"{PROG}: exported {len(names)} structures to {args.out} "
          f"({args.convention} orbital order)")
    return 0


#: what an import must know, with the option that states it
LEVEL_OPTIONS = {"basis": "--basis", "pseudo": "--pseudo", "xc": "--xc",
                 "convention": "--convention"}


def level_of_theory(args: argparse.Namespace, folders: list[Path]) -> dict[str, str | None]:
    """Basis, pseudo, xc and convention: from the options, else from the folders' info.json.

    Raises:
        CLIError: an option contradicts a folder, two folders disagree, or a required
            value is stated nowhere.
    """
    stated = {folder: stated_level(folder) for folder in folders}
    level = {}
    for key, option in LEVEL_OPTIONS.items():
        given = getattr(args, key)
        sources = [(folder, values[key]) for folder, values in stated.items() if key in values]
        for folder, value in sources:
            if given is not None and not _same(key, given, value):
                raise CLIError(f"{option} {given} contradicts {folder / 'info.json'}, which says "
                               f"{key} {value}; leave {option} out to use it")
            if not _same(key, value, sources[0][1]):
                raise CLIError(f"{folder / 'info.json'} says {key} {value} but "
                               f"{sources[0][0] / 'info.json'} says {sources[0][1]}; "
                               "import them separately")
        level[key] = given if given is not None else (sources[0][1] if sources else None)
        if level[key] is None and key in ("basis", "xc", "convention"):
            raise CLIError(f"{option} is needed: {folders[0] / 'info.json'} does not state the "
                           f"{key} of the data")
    if level["convention"] not in CONVENTIONS:
        raise CLIError(f"orbital convention {level['convention']!r} of the folders is not one "
                       f"of {sorted(CONVENTIONS)}")
    return level


def _same(key: str, a: str | None, b: str | None) -> bool:
    """Basis, pseudo and functional names are case-insensitive; so are conventions' aliases."""
    if a is None or b is None:
        return a is b
    if key == "convention":
        return CONVENTIONS.get(a) == CONVENTIONS.get(b)
    return a.lower() == b.lower()


def run_import(args: argparse.Namespace) -> int:
    folders = structure_folders(args.folders)
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise CLIError(f"{duplicate!r}: two structure folders share this name")
    level = level_of_theory(args, folders)
    basis = Basis(level["basis"], level["pseudo"])
    with DatasetWriter(args.out, basis, level["xc"], code=args.code) as writer:
        for folder in folders:
            writer.write(import_deeph(folder, basis, folder.name, level["convention"]))
    print(f"{PROG}: imported {len(folders)} structures into {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"export": run_export, "import": run_import}[args.command](args)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
