"""``ehpc-datagen``: label structures with PySCF, one resumable file per structure.

Every structure is checked before any DFT runs, so a bad one in a batch of thousands
stops the job at once with its name.  Each finished structure is written to
``OUT_DIR/<name>.h5`` (atomically) as soon as it completes: a killed job loses only the
structure in progress, and a rerun skips every file already there.  A structure whose
SCF does not converge is reported on stderr and in ``OUT_DIR/<name>.failed.json`` and
never enters the dataset; a rerun tries it again.

``--chunk K --n-chunks N`` takes every N-th structure from the K-th, one SLURM array
task per chunk; all chunks can share one ``OUT_DIR``.  Merge the results with
``ehpc-dataset``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from .. import __version__
from ..atomic import leftovers
from ..basis import Basis
from ..dft.floor import FLOOR_TOL_MEV
from ..dft.scf import SCF_CONV_TOL, SCF_MAX_CYCLE, Smearing
from ..io.dataset import Dataset, DatasetError, DatasetWriter
from ..sources import check_unique_names, from_file, from_spec_file
from ..structure import validate
from . import CLIError, check_xc, run_main, summary, write_atomic

PROG = "ehpc-datagen"
FAILED_SUFFIX = ".failed.json"
#: a crystal's PySCF SCF checkpoint in the output folder, deleted once its label is written
CHECKPOINT_SUFFIX = ".scf.chk"
#: Å: a finished label is reused only for positions and cell this close to the structure's
GEOMETRY_TOL = 1e-6
HESSIAN_CACHE = ".hessians"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=summary(__doc__))
    source = parser.add_argument_group("structures (at least one)")
    source.add_argument("--structures", nargs="+", type=Path, default=[], metavar="FILE",
                        help="structure files any ase.io.read format")
    source.add_argument("--spec", nargs="+", type=Path, default=[], metavar="FILE",
                        help="YAML/JSON structure specs (see ehpc.sources.from_spec)")
    level = parser.add_argument_group("level of theory")
    level.add_argument("--basis", required=True, help="PySCF basis, e.g. def2-svp or gth-dzvp")
    level.add_argument("--pseudo", default=None,
                       help="GTH pseudopotential (default gth-pbe for gth-* bases)")
    level.add_argument("--xc", required=True, help="exchange-correlation functional, e.g. pbe")
    level.add_argument("--cutoff", type=float, required=True,
                       help="atom-pair cutoff of stored blocks, Å")
    level.add_argument("--kmesh", type=int, nargs=3, default=[1, 1, 1], metavar=("K1", "K2", "K3"),
                       help="k-point mesh of periodic cells")
    level.add_argument("--max-cycle", type=int, default=SCF_MAX_CYCLE, help="SCF iteration limit")
    level.add_argument("--conv-tol", type=float, default=SCF_CONV_TOL,
                       help="SCF energy tolerance, Hartree")
    level.add_argument("--smearing", default=None, metavar="METHOD:WIDTH_EV",
                       help="crystals: fractional occupations for metals and semimetals, "
                            "e.g. fermi:0.1 or gaussian:0.05 (width in eV)")
    level.add_argument("--floor-tol", type=float, default=FLOOR_TOL_MEV, metavar="MEV",
                       help="crystals: stop if bands of the blocks cut at --cutoff miss the SCF "
                            "bands within 2 eV of E_F by more than this (default %(default)g meV)")
    level.add_argument("--allow-large-floor", action="store_true",
                       help="keep labels whose truncation floor exceeds --floor-tol")
    parser.add_argument("--out-dir", type=Path, required=True,
                        help="folder of per-structure .h5 files")
    parser.add_argument("--chunk", type=int, default=0, help="this job's chunk, 0-based")
    parser.add_argument("--n-chunks", type=int, default=1,
                        help="number of chunks the structures are split into")
    parser.add_argument("--summary", type=Path, default=None, metavar="FILE",
                        help="write the chunk's counts as JSON when it finishes (a workflow marker)")
    return parser


@dataclass
class Tally:
    done: int = 0
    skipped: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"{self.done} done, {self.skipped} skipped, {self.failed} failed"


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    basis = Basis(args.basis, args.pseudo)
    structures = collect_structures(args, basis)
    for atoms in structures:
        validate(atoms, atoms.info["name"], basis)
    mine = structures[args.chunk::args.n_chunks]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tally = label_all(mine, args, basis)
    print(f"{PROG}: {tally} (chunk {args.chunk}/{args.n_chunks}: "
          f"{len(mine)} of {len(structures)} structures)")
    if args.summary is not None and tally.done + tally.skipped > 0:
        _write_summary(args.summary, tally, args, len(mine))
    return 0 if tally.done + tally.skipped > 0 or tally.failed == 0 else 1


def _write_summary(path: Path, tally: Tally, args: argparse.Namespace, n_structures: int) -> None:
    doc = {"chunk": args.chunk, "n_chunks": args.n_chunks, "structures": n_structures,
           "done": tally.done, "skipped": tally.skipped, "failed": tally.failed,
           "out_dir": str(args.out_dir)}
    write_atomic(path, json.dumps(doc, indent=1) + "\n")


def _check_options(args: argparse.Namespace) -> None:
    if not args.structures and not args.spec:
        raise CLIError("no structures: give --structures FILE or --spec FILE")
    if args.n_chunks < 1 or not 0 <= args.chunk < args.n_chunks:
        raise CLIError(
            f"--chunk {args.chunk} must be in 0..{args.n_chunks - 1} (--n-chunks {args.n_chunks})"
        )
    if not args.cutoff > 0:
        raise CLIError(f"--cutoff must be positive, got {args.cutoff}")
    if min(args.kmesh) < 1:
        raise CLIError(f"--kmesh needs three positive integers, got {args.kmesh}")
    if args.max_cycle < 1 or not args.conv_tol > 0:
        raise CLIError("--max-cycle and --conv-tol must be positive")
    if not args.floor_tol > 0:
        raise CLIError(f"--floor-tol must be positive, got {args.floor_tol}")
    try:
        args.smearing = Smearing.parse(args.smearing) if args.smearing else None
    except ValueError as err:
        raise CLIError(f"--smearing: {err}") from None
    check_xc(args.xc)


def collect_structures(args: argparse.Namespace, basis: Basis) -> list[Atoms]:
    """All structures of the run, in a fixed order, with unique file-safe names."""
    structures: list[Atoms] = []
    for path in args.structures:
        structures += from_file(path)
    for path in args.spec:
        structures += from_spec_file(path, basis, args.xc, cache_dir=args.out_dir / HESSIAN_CACHE)
    check_unique_names(structures)
    for atoms in structures:
        _check_file_name(atoms.info["name"])
    return structures


def _check_file_name(name: str) -> None:
    if name.startswith(".") or any(c in name for c in "/\\\0") or any(c.isspace() for c in name):
        raise CLIError(
            f"{name!r}: structure name cannot become a file name (no '/', whitespace or "
            "leading '.'); rename the file or set atoms.info['name']"
        )


def label_all(structures: list[Atoms], args: argparse.Namespace, basis: Basis) -> Tally:
    from tqdm import tqdm

    tally = Tally()
    bar = tqdm(structures, desc=PROG, unit="structure", disable=None, file=sys.stderr)
    for i, atoms in enumerate(bar, start=1):
        outcome = label_one(atoms, args, basis, f"structure {i} of {len(structures)}")
        setattr(tally, outcome, getattr(tally, outcome) + 1)
        bar.set_postfix_str(str(tally), refresh=False)
    bar.close()
    if tally.skipped:
        print(f"{PROG}: skipped {tally.skipped} structure(s) already labelled in {args.out_dir}",
              file=sys.stderr)
    return tally


def progress(message: str) -> None:
    """One line on stderr, flushed at once: a log redirected to a file shows it now."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: {message}", file=sys.stderr)
    sys.stderr.flush()


def label_one(atoms: Atoms, args: argparse.Namespace, basis: Basis, where: str = "") -> str:
    """Label one structure unless its file exists; returns "done", "skipped" or "failed".

    Prints a progress line (name, ``where`` such as "structure 3 of 16") as the structure
    starts and as it ends (seconds, SCF cycles).
    """
    from ..dft import SCFNotConverged, label_structure, pyscf_version

    name = atoms.info["name"]
    path = args.out_dir / f"{name}.h5"
    failed = args.out_dir / f"{name}{FAILED_SUFFIX}"
    checkpoint = args.out_dir / f"{name}{CHECKPOINT_SUFFIX}"  # a crystal's SCF, kept until done
    where = f"{name}: {where}," if where else f"{name}:"
    if path.is_file():
        problem = _finished_problem(path, atoms, args, basis)
        if problem is None:
            progress(f"{where} already labelled in {path.name}, skipped")
            return "skipped"
        progress(f"{name}: existing {path.name} is unusable ({problem}); recomputing")
    _remove_partial_files(args.out_dir, name)
    progress(f"{where} SCF started ({len(atoms)} atoms)")
    start = time.perf_counter()
    try:
        floor_tol = None if args.allow_large_floor else args.floor_tol
        record = label_structure(atoms, basis, args.xc, args.cutoff, name, kmesh=tuple(args.kmesh),
                                 conv_tol=args.conv_tol, max_cycle=args.max_cycle,
                                 smearing=args.smearing, floor_tol=floor_tol,
                                 chkfile=checkpoint)
        if record.attrs.get("converged") is False:
            raise SCFNotConverged(f"{name}: SCF not converged")
    except (SCFNotConverged, np.linalg.LinAlgError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        _write_failure(failed, name, reason, type(err).__name__, args, basis)
        progress(f"{where} failed after {time.perf_counter() - start:.1f} s: {reason}; "
                 f"left out of the dataset (see {failed})")
        return "failed"
    with DatasetWriter(path, basis, args.xc, code="pyscf", code_version=pyscf_version()) as writer:
        writer.write(record)
    failed.unlink(missing_ok=True)
    checkpoint.unlink(missing_ok=True)
    progress(f"{where} done in {time.perf_counter() - start:.1f} s, {end_summary(record.attrs)}")
    return "done"


def end_summary(attrs) -> str:
    """SCF cycles and, for crystals labelled with them, the overlap-floor diagnostics."""
    parts = [f"{int(attrs.get('scf_cycles', -1))} SCF cycles"]
    floor = [("floor_max_meV", "floor max {:.3g} meV"), ("floor_mae_meV", "floor MAE {:.3g} meV"),
             ("overlap_min_eig", "min eig(S) {:.3g}")]
    parts += [text.format(float(attrs[key])) for key, text in floor if attrs.get(key) is not None]
    return ", ".join(parts)


def _finished_problem(path: Path, atoms: Atoms, args: argparse.Namespace,
                      basis: Basis) -> str | None:
    """None if ``path`` holds this very structure labelled at these settings, else why not.

    A rerun after the structures or the level of theory changed must not keep labels of
    another geometry under the same name.
    """
    name = atoms.info["name"]
    try:
        data = Dataset(path)
    except DatasetError as err:
        return str(err)
    try:
        if name not in data.names:
            return f"it does not hold structure {name!r}"
        if (data.basis, data.xc) != (basis, args.xc):
            return (f"it was labelled with {data.basis.name}/{data.xc}, "
                    f"not {basis.name}/{args.xc}")
        record = data[name]
        cutoff = record.attrs.get("cutoff")
        if cutoff is not None and not np.isclose(float(cutoff), args.cutoff, rtol=0, atol=1e-9):
            return f"its pair cutoff is {float(cutoff):g} Å, not {args.cutoff:g} Å"
        smearing = (args.smearing.method, args.smearing.width_eV) if args.smearing else None
        stored = record.attrs.get("smearing")
        if stored is not None:
            stored = (stored, float(record.attrs.get("smearing_width_eV", 0.0)))
        if record.pbc.any() and stored != smearing:
            return f"it was labelled with smearing {stored}, not {smearing}"
        same = (np.array_equal(record.numbers, atoms.numbers)
                and np.allclose(record.positions, atoms.positions, rtol=0, atol=GEOMETRY_TOL)
                and np.allclose(record.cell, atoms.cell[:], rtol=0, atol=GEOMETRY_TOL)
                and np.array_equal(np.asarray(record.pbc, bool), atoms.pbc))
        return None if same else "the structure changed since it was labelled"
    finally:
        data.close()


def _remove_partial_files(out_dir: Path, name: str) -> None:
    """Delete temporary files a killed job left for this structure (this chunk owns it)."""
    for tmp in leftovers(out_dir, f"{name}.h5"):
        tmp.unlink(missing_ok=True)


def _write_failure(
    path: Path, name: str, reason: str, kind: str, args: argparse.Namespace, basis: Basis
) -> None:
    record = {
        "name": name,
        "reason": reason,
        "error": kind,
        "basis": basis.name,
        "pseudo": basis.pseudo,
        "xc": args.xc,
        "max_cycle": args.max_cycle,
        "conv_tol": args.conv_tol,
        "kmesh": list(args.kmesh),
        "ehpc_version": __version__,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_atomic(path, json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
