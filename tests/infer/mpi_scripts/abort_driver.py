"""Run ehpc-infer with one rank failing in the middle of the pipeline.

Usage: mpirun -n P python abort_driver.py FAILING_RANK ehpc-infer-arguments...

The failing rank raises inside the prediction stage while the others go on into the
collective assembly, where they would wait forever unless the failure aborts the job.
"""

import sys

from mpi4py import MPI

import ehpc.infer.pipeline as pipeline
from ehpc.cli.infer import main

failing_rank = int(sys.argv[1])
if MPI.COMM_WORLD.Get_rank() == failing_rank:

    def predict_blocks(*args, **kwargs):
        raise RuntimeError("injected failure in prediction")

    pipeline.predict_blocks = predict_blocks

sys.exit(main(sys.argv[2:]))
