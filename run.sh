#!/usr/bin/env bash
# Set up everything ehpc needs (system packages when root, a virtual environment),
# then run the default workflow or the test suite.
#
#   ./run.sh            the default workflow (configs/default.yaml)
#   ./run.sh test       the test suite
#   ./run.sh shell      a shell with the environment activated
#   ./run.sh env        print the environment to `eval` in your own shell
#
# EHPC_VENV (default .venv), EHPC_PYTHON (default /usr/bin/python3) and EHPC_TORCH
# (default torch==2.13.0, the CPU wheel) change the set-up; see README.md for clusters.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=${EHPC_VENV:-$ROOT/.venv}
PYTHON=${EHPC_PYTHON:-/usr/bin/python3}
TORCH=${EHPC_TORCH:-torch==2.13.0}
APT_PACKAGES="python3-venv python3-dev python3-mpi4py python3-petsc4py-real python3-slepc4py-real
  openmpi-bin libopenmpi-dev libopenblas0-pthread"

log() { printf '[ehpc setup] %s\n' "$*" >&2; }

install_system() {
  local missing=()
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing system packages: ${missing[*]}"
    log "run as root: apt-get install -y ${missing[*]}  (or see README.md for clusters)"
    exit 1
  fi
  log "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

export_env() {
  export PETSC_DIR=${PETSC_DIR:-/usr/lib/petscdir/petsc3.18/x86_64-linux-gnu-real}
  export SLEPC_DIR=${SLEPC_DIR:-/usr/lib/slepcdir/slepc3.18/x86_64-linux-gnu-real}
  # OpenMPI refuses root and more ranks than cores unless told; harmless elsewhere.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_rmaps_base_oversubscribe=1
  export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"
}

install_venv() {
  local stamp="$VENV/.ehpc-installed" want
  want=$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV (from $PYTHON, with system site packages)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  fi
  log "installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
  "$VENV/bin/python" -m pip install -q "$TORCH" "numpy<2"
  "$VENV/bin/python" -m pip install -q -e . "numpy<2"
  "$VENV/bin/python" - <<'PY'
import petsc4py, slepc4py, mpi4py  # noqa: F401  (fail here, not in the middle of a run)
from petsc4py import PETSc
from slepc4py import SLEPc  # noqa: F401
print("[ehpc setup] PETSc", ".".join(map(str, PETSc.Sys.getVersion())), "ready")
PY
  echo "$want" > "$stamp"
}

setup() { install_system; export_env; install_venv; }

cmd=${1:-workflow}
[ $# -gt 0 ] && shift
case "$cmd" in
  workflow)
    setup
    # Snakemake killed outright (SIGKILL, a lost login node) leaves its lock behind; with
    # no other Snakemake running, release it so that the rerun resumes.
    if [ -n "$(ls -A .snakemake/locks 2>/dev/null)" ] && ! pgrep -f "bin/snakemake" >/dev/null; then
      snakemake --unlock --cores 1 >/dev/null 2>&1 || true
    fi
    exec snakemake --cores "${EHPC_CORES:-all}" --rerun-incomplete --configfile configs/default.yaml "$@" ;;
  test)
    setup
    exec python -m pytest -q -p no:cacheprovider "$@" ;;
  shell)
    setup
    exec "${SHELL:-bash}" -i ;;
  env)
    export_env
    printf 'export PETSC_DIR=%q SLEPC_DIR=%q OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 PATH=%q VIRTUAL_ENV=%q\n' \
      "$PETSC_DIR" "$SLEPC_DIR" "$PATH" "$VENV" ;;
  *)
    echo "usage: ./run.sh [workflow|test|shell|env] [extra arguments]" >&2; exit 2 ;;
esac
