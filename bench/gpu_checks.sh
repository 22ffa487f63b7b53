#!/bin/bash
# The GPU checks of the scale issue, in one run on a machine with one NVIDIA GPU:
#   1. a trained model's blocks on the GPU in float32 against the CPU in float64;
#   2. forward throughput of the predict stage, float32, gth-szv (6 Å) and
#      gth-dzvp-molopt-sr (9 Å), 10^4 to 10^5 atoms;
#   3. the predict stage under `mpirun -n 2` with both ranks on the one GPU;
#   4. ehpc-train on the GPU under torchrun (band-energy loss on, so the float64
#      eigh runs there too).
# Usage: bash bench/gpu_checks.sh WHEELS OUT
#   WHEELS holds the ase, mpi4py, mpich and vesin wheels, pyscf (pruned of its post-HF modules, as a .tgz or .txz), and
#   dataset.h5 / model.pt of a default run; OUT receives the JSON files and the logs.
# PETSc/SLEPc (petsc4py) have no wheels, so the solve stages of ehpc-infer are not run
# here; everything before them (partition, halo, pairs, predict) is.
set -u
W=${1:?wheel folder}
OUT=${2:?output folder}
mkdir -p "$OUT" /tmp/site /tmp/mpich
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    "$W"/ase-*.whl "$W"/mpi4py-*.whl "$W"/vesin-*.whl || exit 1
tar xf "$W"/pyscf_pruned.t*z -C /tmp/site || exit 1
python3 -m zipfile -e "$W"/mpich-*.whl /tmp/mpich || exit 1
MPICH=$(echo /tmp/mpich/mpich-*.data/data)
chmod +x "$MPICH"/bin/*
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=$MPICH/lib:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, e3nn, numpy, scipy, h5py; print('torch', torch.__version__, \
'e3nn', e3nn.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
step() { echo "== $(date +%T) $*"; }
B="python3 bench/bench_gpu.py"
step agree; timeout 60 $B agree --model "$W"/model.pt --repeat 2 --out "$OUT"/agree.json
step dzvp 10648; timeout 100 $B forward --basis gth-dzvp-molopt-sr --cutoff 9 --repeat 11 \
    --out "$OUT"/fwd_dzvp_10k.json
step dzvp 10648 two ranks; timeout 100 "$MPICH"/bin/mpiexec -n 2 $B forward \
    --basis gth-dzvp-molopt-sr --cutoff 9 --repeat 11 --out "$OUT"/fwd_dzvp_10k_p2.json
step train; timeout 100 torchrun --standalone --nproc_per_node=1 -m ehpc.cli.train \
    --config configs/train_default.yaml --set data.path="$W"/dataset.h5 \
    --set train.device=cuda --set train.epochs=20 --set train.band_weight=0.1 \
    --set model.channels=16 --set log.tensorboard=false --out-dir /tmp/train \
    > "$OUT"/train.log 2>&1
echo "train rc $?"; tail -4 "$OUT"/train.log
step szv 10648; timeout 60 $B forward --basis gth-szv --cutoff 6 --repeat 11 \
    --out "$OUT"/fwd_szv_10k.json
step szv 97336; timeout 120 $B forward --basis gth-szv --cutoff 6 --repeat 23 \
    --out "$OUT"/fwd_szv_97k.json
step done
