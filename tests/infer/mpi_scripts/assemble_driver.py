"""Assemble H and S of each structure on every rank and save what rank 0 gathers.

Usage: mpirun -n P python assemble_driver.py MODEL OUT_DIR CHUNK_ATOMS STRUCTURE...

S is kept down to INTEGRAL_TOLERANCE (1e-10).  For each STRUCTURE (a .traj file) it writes ``OUT_DIR/<stem>.npz`` with the dense
gathered Γ-point H and S in the original orbital order, the PETSc nonzero counts and the
asymmetry removed, and ``OUT_DIR/<stem>.h5``, the results file.
"""

import sys
from pathlib import Path

import petsc4py

petsc4py.init(sys.argv[:1])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from petsc4py import PETSc  # noqa: E402

from ehpc.infer.assemble import gather_on_root  # noqa: E402
from ehpc.infer.pipeline import InferenceOptions, run_inference  # noqa: E402
from ehpc.integrals import INTEGRAL_TOLERANCE  # noqa: E402
from ehpc.nn.model import HamiltonianModel  # noqa: E402
from ehpc.structure import read_structures  # noqa: E402


def main(model_path: str, out_dir: str, chunk_atoms: str, *structures: str) -> None:
    comm = PETSc.COMM_WORLD
    model = HamiltonianModel.load(model_path)
    # S kept down to the labels' tolerance, not inference's looser default, so that it can
    # be held to PySCF's dense overlap entry by entry
    options = InferenceOptions(solve=False, chunk_atoms=int(chunk_atoms), dtype=torch.float64,
                               device="cpu", overlap_tol=INTEGRAL_TOLERANCE)
    for path in structures:
        atoms = read_structures(path)[0]
        stem = Path(path).stem
        result = run_inference(atoms, model, options, out=Path(out_dir) / f"{stem}.h5")
        info = result.hamiltonian.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)
        hamiltonian = gather_on_root(result.hamiltonian, result.partition, comm)
        overlap = gather_on_root(result.overlap, result.partition, comm)
        if comm.getRank() == 0:
            np.savez(
                Path(out_dir) / f"{stem}.npz",
                hamiltonian=hamiltonian.toarray(),
                overlap=overlap.toarray(),
                nz_used=info["nz_used"],
                nz_unneeded=info["nz_unneeded"],
                mallocs=info["mallocs"],
                asymmetry=np.asarray(result.asymmetry),
            )
        result.hamiltonian.destroy()
        result.overlap.destroy()


if __name__ == "__main__":
    main(*sys.argv[1:])
