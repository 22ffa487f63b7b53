"""The distributed inference pipeline, stage by stage, on every rank of a communicator.

partition → halo → predict → overlap → assemble → fermi (E_F and the states near it) → write

Every rank holds the structure's positions and numbers (cheap, O(N)), the partition
(one integer per atom) and otherwise only its own atoms, its halo and its matrix rows.
Before any of that, the ranks compare a hash of the structure they read, so a file
rewritten between rank starts cannot give a mixed geometry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from .. import __version__
from ..errors import UserError
from ..structure import validate
from .assemble import LocalPattern, assemble, local_pattern
from .fermi import (
    FERMI_TOLERANCE,
    OVERLAP_EIGENVALUE_FLOOR,
    InertiaCounter,
    OverlapCheck,
    check_overlap,
    occupied_states,
)
from .halo import Halo, build_halo, cluster_pairs
from ..integrals import integral_ranges
from ..io.layout import BlockLayout
from ..predictor import BlockPredictor
from .overlap import OVERLAP_DROP_TOLERANCE, cluster_overlap
from .partition import Partition, partition
from .predict import DEFAULT_CHUNK_ATOMS, predict_blocks, select_device
from .solve import Eigenstates, SolveError
from .stages import StageLog
from .window import NearFermi, near_fermi
from .write import RankPart, write_results


@dataclass
class InferenceOptions:
    """Knobs of one run (the PETSc/SLEPc ones come from the options database).

    Attributes:
        nev: eigenpairs nearest the Fermi level.
        chunk_atoms: owned atoms per model call (bounds the network's memory).
        eigenvectors: also keep and write the eigenvectors.
        overlap_tol: overlap blocks with a smaller Frobenius norm are dropped (default
            ``OVERLAP_DROP_TOLERANCE``, looser than the labels' ``INTEGRAL_TOLERANCE``).
        overlap_floor: smallest acceptable eigenvalue of S.
        fermi_tol: eV; levels closer than this are one (degenerate) level, and a
            gapless bisection stops at a bracket this narrow.
        fermi_method: ``"window"`` (shift-and-invert windows placed by inertia) or
            ``"bisection"`` (inertia bisection, then one window).
        fermi_guess: first shift σ₀ in eV (None: from the diagonal of H and S, moved by the
            model's ``fermi_offset_eV`` when it has one).
        charge: total charge (electrons removed).
        device: torch device for the model (None: ``cuda:local_rank % n_gpus`` or cpu).
        dtype: torch dtype for the model (None: the model's own).
        solve: run the Fermi search and eigensolver (False stops after assembly).
    """

    nev: int = 20
    chunk_atoms: int = DEFAULT_CHUNK_ATOMS
    eigenvectors: bool = False
    overlap_tol: float = OVERLAP_DROP_TOLERANCE
    overlap_floor: float = OVERLAP_EIGENVALUE_FLOOR
    fermi_tol: float = FERMI_TOLERANCE
    fermi_method: str = "window"
    fermi_guess: float | None = None
    charge: int = 0
    device: str | None = None
    dtype: object = None
    solve: bool = True


@dataclass
class Inference:
    """Everything one rank produced; the PETSc matrices are distributed."""

    name: str
    partition: Partition
    halo: Halo
    pairs: np.ndarray
    pattern: LocalPattern
    hamiltonian_blocks: np.ndarray
    overlap_blocks: np.ndarray
    hamiltonian: object
    overlap: object
    asymmetry: tuple[float, float]
    n_electrons: int
    n_occupied: int
    fermi: NearFermi | None = None
    states: Eigenstates | None = None
    overlap_check: OverlapCheck | None = None
    stages: StageLog = field(default_factory=StageLog)

    @property
    def fermi_level(self) -> float:
        """Mid-gap, or the partly filled level (eV); NaN before the search."""
        return float("nan") if self.fermi is None else self.fermi.fermi_level

    def rank_pairs(self) -> np.ndarray:
        """This rank's pairs as ``[Rx, Ry, Rz, i, j]`` with ORIGINAL atom ids."""  # [n_pairs, 5]
        i, k = self.pairs[:, 0], self.pairs[:, 1]
        return np.column_stack([self.halo.shifts[k], self.halo.atom_ids[i], self.halo.atom_ids[k]])


def check_inputs(atoms: Atoms, model: BlockPredictor, name: str, charge: int = 0,
                 nev: int = 1) -> int:
    """Every check that can fail before heavy work; returns the occupied-state count."""
    validate(atoms, name, model.basis)
    model.check_compatible(model.basis, atoms.numbers, name)
    basis = model.basis
    n_electrons = basis.n_electrons(atoms.numbers, charge)
    n_orbitals = int(basis.nao_per_atom(atoms.numbers).sum())
    if not 0 < nev <= n_orbitals:
        raise SolveError(
            f"--nev {nev}: {name} has {n_orbitals} orbitals in {basis.name}; "
            f"choose --nev between 1 and {n_orbitals}"
        )
    return occupied_states(n_electrons, n_orbitals)


def structure_hash(atoms: Atoms, charge: int = 0) -> str:
    """SHA-256 of everything that defines the structure (exact float64 bytes)."""
    digest = hashlib.sha256()
    for array in (np.asarray(atoms.numbers, np.int64), np.asarray(atoms.positions, np.float64),
                  np.asarray(atoms.cell[:], np.float64), np.asarray(atoms.pbc, bool),
                  np.asarray([charge], np.int64)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class StructureMismatch(UserError, ValueError):
    """Ranks read different structures; raised on every rank alike."""

    collective = True


class InputRefused(UserError, ValueError):
    """Another rank refused the input (its own message is printed by rank 0's peer)."""


def on_every_rank(mpi, check):
    """Run ``check()`` on every rank; if it fails on any, raise on all, marked ``collective``.

    A collective error needs no ``MPI_Abort``: no rank is left waiting, so rank 0 alone
    reports it in one line and every rank exits with the same status.
    """
    try:
        value, error = check(), None
    except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
        value, error = None, err
    failed = mpi.allgather(error is not None)
    if any(failed):
        if error is None:
            error = InputRefused(f"rank {failed.index(True)} refused the input")
        error.collective = True
        raise error
    return value


def check_same_structure(atoms: Atoms, charge: int, mpi, name: str) -> None:
    """Raise :class:`StructureMismatch` on every rank unless all ranks hold the same structure."""
    hashes = mpi.allgather(structure_hash(atoms, charge))
    differ = [r for r, h in enumerate(hashes) if h != hashes[0]]
    if differ:
        raise StructureMismatch(
            f"{name}: rank(s) {', '.join(map(str, differ[:8]))} read a different structure "
            "(positions, cell, numbers or charge) than rank 0; was the structure file "
            "rewritten while the job started?"
        )


def run_inference(
    atoms: Atoms,
    model: BlockPredictor,
    options: InferenceOptions | None = None,
    out: str | Path | None = None,
    comm=None,
    log=None,
) -> Inference:
    """Run the pipeline collectively on ``comm`` (default ``PETSc.COMM_WORLD``).

    Args:
        atoms: the structure (identical on every rank).
        model: predicts the H blocks (a HamiltonianModel; an IntegralModel in tests).
        options: run options.
        out: results file to write (None: write nothing).
        comm: PETSc communicator.
        log: ``print``-like callable for progress lines (rank 0 only is sensible).
    """
    from petsc4py import PETSc

    options = options or InferenceOptions()
    comm = comm or PETSc.COMM_WORLD
    mpi = comm.tompi4py()
    rank, size = mpi.Get_rank(), mpi.Get_size()
    log = log or (lambda *_: None)
    name = str(atoms.info.get("name", atoms.get_chemical_formula()))
    basis = model.basis
    check_same_structure(atoms, options.charge, mpi, name)  # before any heavy work
    n_occupied = on_every_rank(
        mpi, lambda: check_inputs(atoms, model, name, options.charge, options.nev))
    n_electrons = 2 * n_occupied
    numbers = np.asarray(atoms.numbers)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    stages = StageLog()

    def done(stage: str) -> None:
        peak_mib = stages.peak_bytes[-1] / 2**20
        log(f"{stage:>10s}: {stages.seconds[-1]:8.2f} s, peak {peak_mib:8.1f} MiB (rank 0)")

    def starting(stage: str, what: str) -> None:  # says what a long stage is waiting on
        log(f"{stage:>10s}: {what} ...")

    n_orbitals = int(basis.nao_per_atom(numbers).sum())
    starting("partition", f"{len(numbers)} atoms, {n_orbitals} orbitals over {size} rank(s)")
    with stages.stage("partition"):
        parts = partition(positions, basis.nao_per_atom(numbers), size)
    done("partition")

    starting("halo", f"{len(parts.owned(rank))} atoms on rank 0 and their neighbours")
    with stages.stage("halo"):
        ranges = integral_ranges("overlap", basis, numbers, options.overlap_tol)
        cutoff_of = {key: max(r, model.cutoff) for key, r in ranges.items()}
        radius = max(model.receptive_field, max(cutoff_of.values()))
        halo = build_halo(positions, numbers, cell, atoms.pbc, parts.owned(rank), radius)
        pairs, distances = cluster_pairs(halo, positions, cell, cutoff_of)
        # one block layout of the rank's pairs for every later stage (H, S, assembly, file)
        layout = BlockLayout(pairs, basis.nao_per_atom(halo.numbers))
    done("halo")

    device = options.device or select_device()
    starting("predict", f"model on {device}: {len(pairs)} atom pairs on rank 0, "
             f"{options.chunk_atoms} atoms per call")
    with stages.stage("predict"):
        h_blocks = predict_blocks(
            model, halo, pairs, distances, options.chunk_atoms, device, options.dtype,
            structure=atoms, layout=layout,
        )
    done("predict")

    starting("overlap", f"exact S blocks of {len(pairs)} atom pairs on rank 0")
    with stages.stage("overlap"):
        s_blocks = cluster_overlap(basis, halo, pairs, layout=layout)
    done("overlap")

    starting("assemble", f"distributed {n_orbitals} x {n_orbitals} H and S")
    with stages.stage("assemble"):
        pattern = local_pattern(parts, halo, pairs, rank, layout)
        (hamiltonian, overlap), asymmetry = assemble(parts, pattern, [h_blocks, s_blocks], comm)
    done("assemble")

    result = Inference(name, parts, halo, pairs, pattern, h_blocks, s_blocks, hamiltonian, overlap,
                       tuple(asymmetry), n_electrons, n_occupied, stages=stages)
    if options.solve:
        starting("fermi", f"overlap check (S's smallest eigenvalue against "
                 f"{options.overlap_floor:g}), then E_F for {n_occupied} occupied states "
                 f"({options.fermi_method})")
        with stages.stage("fermi"):
            counter = InertiaCounter(hamiltonian, overlap)
            try:
                result.overlap_check = check_overlap(counter, options.overlap_floor)
                counter.release()  # S's factor must not stay beside the first H - σS factor
                result.fermi, result.states = near_fermi(
                    hamiltonian, overlap, counter, n_occupied, options.nev, options.fermi_guess,
                    options.fermi_tol, options.fermi_method, options.eigenvectors, log,
                    start_offset=getattr(model, "fermi_offset_eV", None))
            finally:
                counter.destroy()
        done("fermi")
    if out is not None:
        write(result, atoms, model, options, out, mpi)
        done("write")
    return result


def write(
    result: Inference, atoms: Atoms, model: BlockPredictor, options: InferenceOptions, out, mpi
) -> Path | None:
    """Write ``result`` collectively (see :mod:`ehpc.infer.write`)."""
    states = result.states
    part = RankPart(
        atom_pairs=result.rank_pairs(),
        hamiltonian=result.hamiltonian_blocks,
        overlap=result.overlap_blocks,
        eigenvectors=None if states is None or states.vectors is None else states.vectors,
        layout=result.pattern.layout,
    )
    header = {}
    if mpi.Get_rank() == 0:
        header = _header(result, atoms, model, options)
    return write_results(out, mpi, part, result.partition.nao, header, result.stages)


def _header(result: Inference, atoms: Atoms, model: BlockPredictor,
            options: InferenceOptions) -> dict:
    states, fermi, check = result.states, result.fermi, result.overlap_check
    nan = float("nan")
    scalars = {
        "fermi_level": result.fermi_level,
        "fermi_sigma": fermi.sigma if fermi else nan,
        "fermi_bracket": np.asarray(fermi.bracket if fermi else (nan, nan)),
        "fermi_method": fermi.method if fermi else "",
        "fermi_shifts": np.asarray(fermi.shifts if fermi else (), dtype=np.float64),
        "fermi_count": fermi.count if fermi else -1,
        "gap_found": bool(fermi.gap_found) if fermi else False,
        "level_states": fermi.level_states if fermi else 0,
        "level_filled": fermi.level_filled if fermi else 0,
        "factorizations": fermi.factorizations if fermi else 0,
        "overlap_factorizations": check.factorizations if check else 0,
        "overlap_smallest_eigenvalue": check.smallest if check else nan,
        "homo": fermi.homo if fermi else nan,
        "lumo": fermi.lumo if fermi else nan,
        "gap": fermi.gap if fermi else nan,
        "fermi_tolerance": options.fermi_tol,
        "eps_iterations": states.iterations if states else 0,
        "n_electrons": result.n_electrons,
        "n_occupied": result.n_occupied,
        "n_orbitals": result.partition.n_orbitals,
        "nev": options.nev,
        "charge": options.charge,
        "overlap_tolerance": options.overlap_tol,
        "hamiltonian_asymmetry": result.asymmetry[0],
        "overlap_asymmetry": result.asymmetry[1],
        "model_metadata": json.dumps(getattr(model, "metadata", {}), default=str),
        "code_version": __version__,
    }
    parts = result.partition
    return {
        "name": result.name,
        "basis": model.basis,
        "xc": str(getattr(model, "metadata", {}).get("xc", "")),
        "numbers": atoms.numbers,
        "positions": atoms.positions,
        "cell": atoms.cell[:],
        "pbc": atoms.pbc,
        "attrs": {"fermi_level": scalars["fermi_level"], "n_electrons": result.n_electrons,
                  "source": "ehpc-infer"},
        "results": scalars,
        "eigenvalues": states.eigenvalues if states else np.zeros(0),
        "residuals": states.residuals if states else np.zeros(0),
        "partition": {
            "atom_order": parts.order,
            "atom_ranges": parts.atom_ranges,
            "orbital_ranges": parts.orbital_ranges,
        },
    }
