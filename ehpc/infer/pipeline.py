"""The distributed inference pipeline, stage by stage, on every rank of a communicator.

partition → halo → predict → overlap → assemble → fermi → solve → write

Every rank holds the structure's positions and numbers (cheap, O(N)), the partition
(one integer per atom) and otherwise only its own atoms, its halo and its matrix rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from .. import __version__
from ..structure import validate
from .assemble import LocalPattern, assemble, local_pattern
from .fermi import (
    FERMI_TOLERANCE,
    OVERLAP_EIGENVALUE_FLOOR,
    FermiResult,
    InertiaCounter,
    check_overlap,
    fermi_level,
    occupied_states,
    rayleigh_bounds,
)
from .halo import Halo, build_halo, cluster_pairs
from .overlap import INTEGRAL_TOLERANCE, cluster_overlap, integral_ranges
from .partition import Partition, partition
from .predict import DEFAULT_CHUNK_ATOMS, predict_blocks, select_device
from .solve import Eigenstates, solve_near
from .stages import StageLog
from .write import RankPart, write_results


@dataclass
class InferenceOptions:
    """Knobs of one run (the PETSc/SLEPc ones come from the options database).

    Attributes:
        nev: eigenpairs nearest the Fermi level.
        chunk_atoms: owned atoms per model call (bounds the network's memory).
        eigenvectors: also keep and write the eigenvectors.
        overlap_tol: overlap blocks with a smaller Frobenius norm are dropped.
        overlap_floor: smallest acceptable eigenvalue of S.
        fermi_tol: bracket width (eV) at which a gapless Fermi search stops.
        charge: total charge (electrons removed).
        device: torch device for the model (None: ``cuda:local_rank % n_gpus`` or cpu).
        dtype: torch dtype for the model (None: the model's own).
        solve: run the Fermi search and eigensolver (False stops after assembly).
    """

    nev: int = 20
    chunk_atoms: int = DEFAULT_CHUNK_ATOMS
    eigenvectors: bool = False
    overlap_tol: float = INTEGRAL_TOLERANCE
    overlap_floor: float = OVERLAP_EIGENVALUE_FLOOR
    fermi_tol: float = FERMI_TOLERANCE
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
    fermi: FermiResult | None = None
    states: Eigenstates | None = None
    stages: StageLog = field(default_factory=StageLog)

    @property
    def fermi_level(self) -> float:
        """Mid-gap when the bisection found a gap and both edges converged, else σ."""
        if self.fermi is None:
            return float("nan")
        if self.fermi.gap_found and self.states is not None and np.isfinite(self.states.gap):
            return 0.5 * (self.states.homo + self.states.lumo)
        return self.fermi.sigma

    def rank_pairs(self) -> np.ndarray:
        """This rank's pairs as ``[Rx, Ry, Rz, i, j]`` with ORIGINAL atom ids."""  # [n_pairs, 5]
        i, k = self.pairs[:, 0], self.pairs[:, 1]
        return np.column_stack([self.halo.shifts[k], self.halo.atom_ids[i], self.halo.atom_ids[k]])


def check_inputs(atoms: Atoms, model, name: str, charge: int = 0) -> int:
    """Every check that can fail before heavy work; returns the occupied-state count."""
    validate(atoms, name, model.basis)
    model.check_compatible(model.basis, atoms.numbers, name)
    basis = model.basis
    n_electrons = basis.n_electrons(atoms.numbers, charge)
    return occupied_states(n_electrons, int(basis.nao_per_atom(atoms.numbers).sum()))


def run_inference(
    atoms: Atoms,
    model,
    options: InferenceOptions | None = None,
    out: str | Path | None = None,
    comm=None,
    log=None,
) -> Inference:
    """Run the pipeline collectively on ``comm`` (default ``PETSc.COMM_WORLD``).

    Args:
        atoms: the structure (identical on every rank).
        model: a HamiltonianModel (or any object with its inference interface).
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
    n_occupied = check_inputs(atoms, model, name, options.charge)
    n_electrons = 2 * n_occupied
    numbers = np.asarray(atoms.numbers)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    stages = StageLog()

    def done(stage: str) -> None:
        peak_mib = stages.peak_bytes[-1] / 2**20
        log(f"{stage:>10s}: {stages.seconds[-1]:8.2f} s, peak {peak_mib:8.1f} MiB (rank 0)")

    with stages.stage("partition"):
        parts = partition(positions, basis.nao_per_atom(numbers), size)
    done("partition")

    with stages.stage("halo"):
        ranges = integral_ranges("overlap", basis, numbers, options.overlap_tol)
        cutoff_of = {key: max(r, model.cutoff) for key, r in ranges.items()}
        radius = max(model.receptive_field, max(cutoff_of.values()))
        halo = build_halo(positions, numbers, cell, atoms.pbc, parts.owned(rank), radius)
        pairs, distances = cluster_pairs(halo, positions, cell, cutoff_of)
    done("halo")

    with stages.stage("predict"):
        device = options.device or select_device()
        h_blocks = predict_blocks(
            model, halo, pairs, distances, options.chunk_atoms, device, options.dtype
        )
    done("predict")

    with stages.stage("overlap"):
        s_blocks = cluster_overlap(basis, halo, pairs)
    done("overlap")

    with stages.stage("assemble"):
        pattern = local_pattern(parts, halo, pairs, rank)
        (hamiltonian, overlap), asymmetry = assemble(parts, pattern, [h_blocks, s_blocks], comm)
    done("assemble")

    result = Inference(name, parts, halo, pairs, pattern, h_blocks, s_blocks, hamiltonian, overlap,
                       tuple(asymmetry), n_electrons, n_occupied, stages=stages)
    if options.solve:
        with stages.stage("fermi"):
            counter = InertiaCounter(hamiltonian, overlap)
            check_overlap(counter, options.overlap_floor)
            result.fermi = fermi_level(counter, n_occupied, rayleigh_bounds(hamiltonian, overlap),
                                       options.fermi_tol)
            counter.destroy()
        done("fermi")
        with stages.stage("solve"):
            result.states = solve_near(hamiltonian, overlap, result.fermi.sigma, options.nev,
                                       options.eigenvectors)
        done("solve")
    if out is not None:
        write(result, atoms, model, options, out, mpi)
        done("write")
    return result


def write(
    result: Inference, atoms: Atoms, model, options: InferenceOptions, out, mpi
) -> Path | None:
    """Write ``result`` collectively (see :mod:`ehpc.infer.write`)."""
    states = result.states
    part = RankPart(
        atom_pairs=result.rank_pairs(),
        hamiltonian=result.hamiltonian_blocks,
        overlap=result.overlap_blocks,
        eigenvectors=None if states is None or states.vectors is None else states.vectors,
    )
    header = {}
    if mpi.Get_rank() == 0:
        header = _header(result, atoms, model, options)
    return write_results(out, mpi, part, result.partition.nao, header, result.stages)


def _header(result: Inference, atoms: Atoms, model, options: InferenceOptions) -> dict:
    states, fermi = result.states, result.fermi
    nan = float("nan")
    scalars = {
        "fermi_level": result.fermi_level,
        "fermi_sigma": fermi.sigma if fermi else nan,
        "fermi_bracket": np.asarray(fermi.bracket if fermi else (nan, nan)),
        "gap_found": bool(fermi.gap_found) if fermi else False,
        "factorizations": fermi.factorizations if fermi else 0,
        "homo": states.homo if states else nan,
        "lumo": states.lumo if states else nan,
        "gap": states.gap if states else nan,
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
