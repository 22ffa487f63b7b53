"""``ehpc-infer``: predict H for a huge structure across MPI ranks and find states near E_F.

Run as ``mpirun -n P ehpc-infer --model model.pt --supercell Si:diamond:5.43:30x30x30
--nev 20 --out results.h5``.  Options with one dash (``-eps_tol 1e-10``,
``-st_mat_mumps_icntl_14 80``, ``-fermi_mat_mumps_icntl_23 4000``, ``-log_view``) go
to PETSc/SLEPc unchanged.

Every rank builds or reads the whole structure (positions are cheap: a generated
supercell is built independently on each rank; a structure file is read by every
rank), and keeps only its own share of everything else.  An exception on any rank
prints ``ehpc-infer: rank R: <cause>`` and aborts the whole MPI job, so a failure
never leaves the other ranks waiting in a collective call.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from pathlib import Path

from ..errors import USER_ERRORS
from ..infer.fermi import FERMI_TOLERANCE, OVERLAP_EIGENVALUE_FLOOR
from ..infer.overlap import OVERLAP_DROP_TOLERANCE
from ..infer.predict import DEFAULT_CHUNK_ATOMS
from ..infer.window import METHODS

PROG = "ehpc-infer"

#: exit statuses: bad input (as argparse) and anything else
USAGE_ERROR = 2
FAILURE = 1

#: crystal structures ``ase.build.bulk`` can build as a cubic conventional cell
_CUBIC = {"sc", "fcc", "bcc", "diamond", "zincblende", "rocksalt", "cesiumchloride", "fluorite"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        epilog="Options with a single dash (-eps_*, -st_*, -st_mat_mumps_*, -fermi_mat_mumps_*, "
        "-log_view) are passed to PETSc/SLEPc.",
    )
    add = parser.add_argument
    add("--model", required=True, type=Path, help="trained HamiltonianModel file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--structure", type=Path,
                        help="one-structure file any ase.io reader understands")
    source.add_argument("--supercell", help="SYMBOL:LATTICE:A:NxNxN (cubic cell, Å), "
                        "e.g. Si:diamond:5.43:30x30x30")
    add("--rattle", type=float, default=0.0, help="Gaussian displacement of every atom, Å")
    add("--seed", type=int, default=0, help="seed of --rattle")
    add("--nev", type=int, default=20, help="eigenpairs nearest the Fermi level")
    add("--out", type=Path, default=Path("results.h5"), help="results file")
    add("--chunk-atoms", type=int, default=DEFAULT_CHUNK_ATOMS,
        help="owned atoms per model call (bounds the network's memory)")
    add("--eigenvectors", action="store_true", help="also write the eigenvectors")
    add("--charge", type=int, default=0, help="total charge of the structure")
    add("--overlap-tol", type=float, default=OVERLAP_DROP_TOLERANCE,
        help="drop overlap blocks with a smaller Frobenius norm (default %(default)g, looser "
        "than the labels' 1e-10; measured shifts of the states near E_F < 4e-6 of |ε|)")
    add("--overlap-floor", type=float, default=OVERLAP_EIGENVALUE_FLOOR,
        help="smallest acceptable eigenvalue of S")
    add("--fermi-tol", type=float, default=FERMI_TOLERANCE,
        help="eV; levels closer than this are one degenerate level (gap 0), and a gapless "
        "bisection stops at a bracket this narrow")
    add("--fermi-method", choices=METHODS, default=METHODS[0],
        help="window: factorise H - σS at a few shifts, each giving the count below σ and the "
        "states near it (1-2 factorisations when gapped); bisection: inertia bisection first")
    add("--fermi-guess", type=float,
        help="eV; first shift of the window method (default: from the diagonal of H and S)")
    add("--dtype", choices=("float32", "float64"), help="model precision (default: the model's)")
    add("--device", help="torch device (default: cuda:local_rank %% n_gpus, else cpu)")
    return parser


def parse_supercell(spec: str):
    """``Si:diamond:5.43:30x30x30`` -> the cubic supercell as ase.Atoms."""
    from ase.build import bulk

    from . import CLIError

    try:
        symbol, lattice, a, reps = spec.split(":")
        repeat = tuple(int(n) for n in reps.lower().split("x"))
        a = float(a)
    except ValueError:
        raise CLIError(
            f"--supercell {spec!r}: expected SYMBOL:LATTICE:A:NxNxN, e.g. Si:diamond:5.43:4x4x4"
        ) from None
    if len(repeat) != 3 or min(repeat) < 1 or a <= 0:
        raise CLIError(
            f"--supercell {spec!r}: need three positive repeats and a positive lattice constant"
        )
    try:
        cell = bulk(symbol, lattice, a=a, cubic=lattice in _CUBIC)
    except (ValueError, KeyError, RuntimeError) as err:
        raise CLIError(f"--supercell {spec!r}: ase cannot build it ({err})") from None
    atoms = cell * repeat
    atoms.info["name"] = f"{symbol}_{lattice}_{'x'.join(map(str, repeat))}"
    return atoms


def load_structure(args: argparse.Namespace):
    """The structure of ``--structure`` or ``--supercell``, rattled if asked."""
    from ..sources import rattle
    from ..structure import read_structures
    from . import CLIError

    if args.supercell:
        atoms = parse_supercell(args.supercell)
    else:
        frames = read_structures(args.structure)
        if len(frames) != 1:
            raise CLIError(
                f"{args.structure}: holds {len(frames)} structures; ehpc-infer takes one per run"
            )
        atoms = frames[0]
    return rattle(atoms, args.rattle, seed=args.seed)  # same seed on every rank: same positions


def init_petsc(petsc_options: list[str]) -> None:
    """Initialise petsc4py and slepc4py with the pass-through options (before any import)."""
    import petsc4py

    argv = [PROG, *petsc_options]
    petsc4py.init(argv)
    import slepc4py

    slepc4py.init(argv)


#: numeric options and the open interval each must lie in
_RANGES = {
    "nev": (0, math.inf),
    "chunk_atoms": (0, math.inf),
    "overlap_tol": (0.0, 1.0),  # S blocks have norm ≤ 1 for normalised functions
    "overlap_floor": (0.0, 1.0),  # S has unit diagonal: its smallest eigenvalue is below 1
    "fermi_tol": (0.0, math.inf),
}


def validate_args(args: argparse.Namespace) -> None:
    """One line naming the option for any out-of-range or non-finite number."""
    from ..sources import check_spread
    from . import CLIError

    for key, (low, high) in _RANGES.items():
        value = getattr(args, key)
        if not (math.isfinite(value) and low < value < high):
            bound = f"between {low:g} and {high:g} (exclusive)" if math.isfinite(high) else \
                "positive"
            raise CLIError(f"--{key.replace('_', '-')} must be {bound}, got {value}")
    check_spread(args.rattle, "standard deviation (Å)", "--rattle")
    if args.fermi_guess is not None and not math.isfinite(args.fermi_guess):
        raise CLIError(f"--fermi-guess must be a finite energy in eV, got {args.fermi_guess}")


def run(args: argparse.Namespace, load_model=None) -> int:
    """Run inference as ``args`` ask; ``load_model(path)`` gives the block predictor
    (default :meth:`HamiltonianModel.load`; benchmarks pass other predictors)."""
    validate_args(args)
    init_petsc(getattr(args, "petsc_options", []))
    import torch
    from mpi4py import MPI
    from petsc4py import PETSc

    from ..infer.pipeline import InferenceOptions, run_inference
    from ..nn.model import HamiltonianModel
    from . import CLIError

    def log(line: str) -> None:  # rank 0, flushed: a log file shows what is being waited on
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(line, flush=True)

    atoms = load_structure(args)
    if not args.model.is_file():
        raise CLIError(f"--model {args.model}: file not found")
    model = (load_model or HamiltonianModel.load)(args.model)
    options = InferenceOptions(
        nev=args.nev,
        chunk_atoms=args.chunk_atoms,
        eigenvectors=args.eigenvectors,
        overlap_tol=args.overlap_tol,
        overlap_floor=args.overlap_floor,
        fermi_tol=args.fermi_tol,
        fermi_method=args.fermi_method,
        fermi_guess=args.fermi_guess,
        charge=args.charge,
        device=args.device,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
    )
    size = PETSc.COMM_WORLD.getSize()
    log(f"{PROG}: {atoms.info['name']}: {len(atoms)} atoms on {size} rank(s)")
    result = run_inference(atoms, model, options, out=args.out, log=log)
    for line in summary(result.fermi, result.overlap_check):
        log(f"{PROG}: {line}")
    log(f"{PROG}: wrote {args.out}")
    return 0


def summary(fermi, overlap_check=None) -> list[str]:
    """E_F, HOMO, LUMO, gap and occupancy, how E_F was found, and what the overlap check
    cost, as printed lines."""
    if fermi.gap_found:
        state = f"gap = {fermi.gap:.6f} eV (gap_found=True)"
    else:
        state = (f"gap = 0: a degenerate level of {fermi.level_states} states holds "
                 f"{fermi.level_filled} of them filled (gap_found=False)")
    return [
        f"E_F = {fermi.fermi_level:.6f} eV, HOMO = {fermi.homo:.6f} eV, "
        f"LUMO = {fermi.lumo:.6f} eV, {state}",
        f"E_F path: {fermi.method}, {fermi.factorizations} factorisation(s) of H - σS, "
        f"{fermi.n_occupied} occupied states",
    ] + ([] if overlap_check is None else [
        f"overlap check: smallest eigenvalue of S ≈ {overlap_check.smallest:.3g} (Krylov), "
        f"{overlap_check.factorizations} factorisation(s) of S"])


def _abort(err: BaseException) -> int:
    """Report ``err`` as this rank's and end the whole MPI job."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    user_error = isinstance(err, USER_ERRORS)
    if getattr(err, "collective", False):  # every rank raised it: no one waits, one line
        if world.Get_rank() == 0:
            message = " ".join(str(err).split())
            print(f"{PROG}: rank 0: {message}", file=sys.stderr, flush=True)
        return USAGE_ERROR if user_error else FAILURE
    if not user_error:
        traceback.print_exc(file=sys.stderr)
    message = " ".join(str(err).split()) or type(err).__name__
    kind = "" if user_error else f"{type(err).__name__}: "
    print(f"{PROG}: rank {world.Get_rank()}: {kind}{message}", file=sys.stderr, flush=True)
    status = USAGE_ERROR if user_error else FAILURE
    if world.Get_size() > 1:
        world.Abort(status)  # the other ranks may be waiting in a collective: end them too
    return status


def main(argv: list[str] | None = None, load_model=None) -> int:
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
        stray = [a for a in rest if a.startswith("--")]
        if stray:
            parser.error(
                f"unrecognized arguments: {' '.join(stray)} (PETSc/SLEPc options take one dash)"
            )
    except SystemExit as exit_:  # --help, or a bad option (argparse printed why)
        return int(exit_.code or 0)
    args.petsc_options = rest
    try:
        return run(args, load_model)
    except Exception as err:  # noqa: BLE001 - every failure must end all ranks, with its cause
        return _abort(err)


if __name__ == "__main__":
    sys.exit(main())
