"""ehpc-infer's default overlap drop tolerance: used, and harmless to the states near E_F.

Inference drops S blocks below ``OVERLAP_DROP_TOLERANCE`` (1e-6), looser than the labels'
1e-10. The states near E_F of a run at the default are held to dense ``scipy.linalg.eigh``
of the exact pencil: H from one model call on the whole structure, S from PySCF's Γ-point
overlap (which drops nothing).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from .conftest import check, mpirun, si_crystal, write_traj

pytestmark = pytest.mark.mpi

#: the states near E_F against the exact pencil, relative to max(1 eV, |ε|): dropping ΔS
#: moves a state by -ε cᵀΔS c to first order, so the shift scales with ε in the model's
#: energy zero (ε ≈ -4.9 eV in the 64-atom cell below). Measured there, largest |Δε| of
#: the 20 states: 1.9e-5 eV at the default 1e-6 (3.9e-6 |ε|), 2.0e-4 eV at --overlap-tol
#: 1e-5, 1.4e-3 eV at 1e-4, 0.18 eV at 1e-2, 1.5e-9 eV at 1e-10.
TOL_RELATIVE = 1e-5


def _exact_pencil(model_path, atoms) -> tuple[np.ndarray, np.ndarray]:
    """Dense Γ-point H (the model on the whole structure) and S (PySCF, nothing dropped)."""
    import torch
    from pyscf.pbc import gto as pbcgto

    from ehpc.io.layout import gamma_matrix
    from ehpc.nn.model import HamiltonianModel

    model = HamiltonianModel.load(model_path)
    pairs, flat = model.predict(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc,
                                dtype=torch.float64)
    h = gamma_matrix(pairs, flat, model.basis.nao_per_atom(atoms.numbers)).toarray()
    spec = [[s, p] for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    cell = pbcgto.Cell(atom=spec, a=atoms.cell[:], basis="gth-szv", pseudo="gth-pbe",
                       unit="Angstrom", precision=1e-16, verbose=0)
    cell.build()
    return h, cell.pbc_intor("int1e_ovlp", hermi=1)


def test_default_tolerance_is_used_and_keeps_states_near_fermi(si_model_path, tmp_path):
    from ehpc.infer.overlap import OVERLAP_DROP_TOLERANCE
    from ehpc.io.results import read_results

    atoms = si_crystal((2, 2, 2))  # 64 atoms, 256 orbitals; S at 1e-10 reaches 15.6 Å
    structure = write_traj(atoms, tmp_path / "si64.traj")
    out = tmp_path / "si64.h5"
    check(mpirun(1, "ehpc-infer", "--model", si_model_path, "--structure", structure,
                 "--out", out, "-eps_tol", "1e-12"))
    res = read_results(out)
    assert res.attrs["overlap_tolerance"] == OVERLAP_DROP_TOLERANCE == 1e-6

    h, s = _exact_pencil(si_model_path, atoms)
    dense = scipy.linalg.eigh(0.5 * (h + h.T), 0.5 * (s + s.T), eigvals_only=True)
    states = np.sort(res.eigenvalues)  # [nev]
    n_occupied = int(res.attrs["n_occupied"])
    # line the window up with the dense spectrum by the HOMO's place in it
    first = n_occupied - 1 - int(np.argmin(np.abs(states - res.homo)))
    reference = dense[first : first + len(states)]
    assert len(states) == 20 and len(reference) == len(states)
    bound = TOL_RELATIVE * np.maximum(1.0, np.abs(reference))  # eV  # [nev]
    assert np.all(np.abs(states - reference) <= bound), np.abs(states - reference).max()
    for computed, exact in ((res.homo, dense[n_occupied - 1]), (res.lumo, dense[n_occupied])):
        assert abs(computed - exact) <= TOL_RELATIVE * max(1.0, abs(exact))
