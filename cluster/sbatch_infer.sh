#!/bin/bash
# Bare MPI inference on a large supercell, outside Snakemake:  sbatch cluster/sbatch_infer.sh
#SBATCH --job-name=ehpc-infer
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=32
#SBATCH --cpus-per-task=1
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --output=logs/ehpc-infer-%j.log
set -euo pipefail
# Site modules providing PETSc/SLEPc built with MUMPS (see README.md, "Clusters")
# module load petsc slepc openmpi
source .venv/bin/activate
export OMP_NUM_THREADS=1
srun ehpc-infer --model results/silicon/train/model.pt \
    --supercell Si:diamond:5.43:30x30x30 --rattle 0.02 \
    --nev 40 --out results/silicon/infer_30x30x30.h5 \
    -st_mat_mumps_icntl_14 80
