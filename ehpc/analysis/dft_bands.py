"""Reference DFT band structure of a small crystal, for comparison with model bands.

A k-point SCF (as in :mod:`ehpc.dft.periodic`), then the Bloch Fock matrix of the
converged density at each requested k (non-self-consistent, as PySCF's ``get_bands``)
and the exact Bloch overlap.  Nothing is cut at a pair radius, so these are the bands
the model is judged against.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms

from ..basis import Basis
from ..dft.periodic import build_cell, crystal_record, levels_at_kpts, run_krks
from ..dft.scf import SCF_CONV_TOL, SCF_MAX_CYCLE, Smearing, fermi_and_frontier
from ..units import HARTREE_TO_EV
from .bands import bands_with_exact_overlap


@dataclass(frozen=True)
class ReferenceBands:
    """DFT bands along a k-path, energies in eV."""

    energies: np.ndarray  # [n_k, nao_cell]
    #: bands of DFT's H(R) kept only within ``cutoff`` (exact S); None without a cutoff
    truncated: np.ndarray | None
    #: HOMO/LUMO midpoint of the SCF mesh (HOMO if nothing is empty); μ if smeared
    fermi_level: float
    homo: float
    lumo: float
    n_electrons: int
    wall_time_s: float


def dft_bands(
    atoms: Atoms,
    basis: Basis,
    xc: str,
    kmesh,
    kpts_frac: np.ndarray,
    name: str = "band structure",
    conv_tol: float = SCF_CONV_TOL,
    max_cycle: int = SCF_MAX_CYCLE,
    cutoff: float | None = None,
    smearing: Smearing | None = None,
) -> ReferenceBands:
    """Kohn-Sham bands of a periodic ``atoms`` at fractional k-points.

    With ``cutoff``, also the bands of the same DFT Hamiltonian with every block H_ij(R)
    of atoms farther apart than ``cutoff`` dropped (S kept exact).  A model whose pairs
    end at ``cutoff`` can at best reproduce those; the gap between them and the full
    bands is the cost of the cutoff, not of the learning.

    Args:
        atoms: a fully periodic structure.
        basis: a GTH basis with its pseudopotential.
        xc: PySCF functional name.
        kmesh: SCF k-points along each lattice vector.
        kpts_frac: k in units of the caller's reciprocal lattice vectors.  # [n_k, 3]
        name: used in errors.
        conv_tol: SCF energy tolerance in Hartree.
        max_cycle: SCF iteration limit.
        cutoff: pair radius in Å for the truncated bands; none are computed if None.
        smearing: fractional occupations (metals, semimetals), as the labels used; E_F is
            then the SCF's chemical potential and HOMO/LUMO the levels either side of it.

    Raises:
        SCFNotConverged: the SCF did not converge.
        StructureError: the structure is not fully periodic or the basis has no pseudopotential.
    """
    start = time.perf_counter()
    pcell = build_cell(atoms, basis, name)
    mf = run_krks(pcell, xc, kmesh, name, conv_tol, max_cycle, smearing)
    cell = pcell.cell
    kpts_frac = np.atleast_2d(np.asarray(kpts_frac, dtype=np.float64))
    energies = levels_at_kpts(mf, pcell, kpts_frac)  # [n_k, nao] Hartree
    truncated = None
    if cutoff is not None:
        record = crystal_record(atoms, basis, mf, pcell, cutoff, name, xc, kmesh,
                                smearing=smearing)
        truncated = bands_with_exact_overlap(record.atom_pairs, record.hamiltonian, atoms, basis,
                                             kpts_frac, name=name)
    fermi, homo, lumo = fermi_and_frontier(mf)
    return ReferenceBands(
        energies=energies * HARTREE_TO_EV,
        truncated=truncated,
        fermi_level=fermi * HARTREE_TO_EV,
        homo=homo * HARTREE_TO_EV,
        lumo=lumo * HARTREE_TO_EV,
        n_electrons=int(cell.nelectron),
        wall_time_s=time.perf_counter() - start,
    )


def reference_inputs(atoms: Atoms, basis: Basis, xc: str, kmesh, kpts_frac: np.ndarray,
                     conv_tol: float, cutoff: float | None,
                     smearing: Smearing | None) -> dict:
    """Everything :func:`dft_bands` depends on, as JSON values: two reference band sets
    are interchangeable exactly where these agree (see :func:`reused_reference`)."""
    return {
        "numbers": atoms.numbers.tolist(), "cell": np.asarray(atoms.cell).tolist(),
        "positions": atoms.positions.tolist(), "basis": basis.name, "pseudo": basis.pseudo,
        "xc": xc, "scf_kmesh": [int(k) for k in kmesh],
        "kpts_frac": np.atleast_2d(kpts_frac).tolist(), "conv_tol": conv_tol,
        "cutoff": cutoff, "smearing": None if smearing is None else asdict(smearing),
    }


def reference_record(reference: ReferenceBands, inputs: dict) -> dict:
    """``reference`` and the inputs it came from, as the JSON keys of a ``bands.json``:
    the bands themselves (``dft_eV``, ``cutoff_dft_eV``, read by plots and tools) and a
    ``reference`` entry with the inputs and scalars that :func:`reused_reference` needs."""
    return {
        "dft_eV": reference.energies.tolist(),
        "cutoff_dft_eV": None if reference.truncated is None else reference.truncated.tolist(),
        "reference": {
            "inputs": inputs, "fermi_level_eV": reference.fermi_level,
            "homo_eV": reference.homo, "lumo_eV": reference.lumo,
            "n_electrons": reference.n_electrons, "wall_time_s": reference.wall_time_s,
        },
    }


def reused_reference(saved: dict, inputs: dict, where: str) -> ReferenceBands:
    """The reference bands of ``saved`` (a ``bands.json`` holding a :func:`reference_record`),
    if they were computed from ``inputs``; coordinates and k-points agree to 1e-8,
    everything else exactly.

    Raises:
        ValueError: one line naming ``where`` and the first input that differs.
    """
    record = saved.get("reference") if isinstance(saved, dict) else None
    if not isinstance(record, dict) or "inputs" not in record or "dft_eV" not in saved:
        raise ValueError(f"{where}: holds no reference bands (write it with ehpc-evaluate "
                         "--band-structure)")
    for key, value in inputs.items():
        old = record["inputs"].get(key)
        if key in ("cell", "positions", "kpts_frac"):
            same = old is not None and np.shape(old) == np.shape(value) and np.allclose(
                old, value, rtol=0.0, atol=1e-8)
        else:
            same = old == value
        if not same:
            raise ValueError(f"{where}: its reference bands were computed with another {key} "
                             f"({old!r:.60} here, this evaluation needs {value!r:.60}); "
                             "drop the reference to recompute them")
    truncated = saved.get("cutoff_dft_eV")
    return ReferenceBands(
        energies=np.asarray(saved["dft_eV"], dtype=np.float64),
        truncated=None if truncated is None else np.asarray(truncated, dtype=np.float64),
        fermi_level=float(record["fermi_level_eV"]), homo=float(record["homo_eV"]),
        lumo=float(record["lumo_eV"]), n_electrons=int(record["n_electrons"]),
        wall_time_s=0.0,
    )
