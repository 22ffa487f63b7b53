#!/usr/bin/env bash
# Set up everything ehpc needs (system packages when root, a virtual environment),
# then run the default workflow or the test suite.
#
#   ./run.sh [SNAKEMAKE ARGS]  the workflow (configs/default.yaml unless --configfile);
#                              ./run.sh workflow [ARGS] is the same
#   ./run.sh setup             set up only: system packages, the environment, and
#                              cluster/slurm as the Snakemake profile `slurm`
#   ./run.sh setup --check     say whether the set-up is current, change nothing
#   ./run.sh test              the test suite
#   ./run.sh shell             a shell with the environment activated
#   ./run.sh env               print the environment to `eval` in your own shell
#
# EHPC_VENV (default .venv), EHPC_PYTHON (default /usr/bin/python3) and EHPC_TORCH
# (default torch==2.13.0, the CPU wheel; may carry pip options such as --index-url)
# change the set-up; see README.md for clusters.
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
  if ! command -v dpkg-query >/dev/null; then
    log "no dpkg: skipping system packages; MPI, petsc4py, slepc4py and mpi4py come from the site"
    return 0
  fi
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

# What the environment was installed from: the package's dependencies, the torch
# requirement and the text of install_venv below; a change to any of them reinstalls
# (other edits of this script do not).
setup_stamp() {
  { cat pyproject.toml; echo "$TORCH"; sed -n '/^install_venv() {$/,/^}$/p' run.sh; } \
    | sha256sum | cut -c1-16
}

venv_current() {
  [ -x "$VENV/bin/python" ] && [ -f "$VENV/.ehpc-installed" ] \
    && [ "$(cat "$VENV/.ehpc-installed")" = "$(setup_stamp)" ]
}

install_venv() {
  local stamp="$VENV/.ehpc-installed" want torch_args
  want=$(setup_stamp)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV (from $PYTHON, with system site packages)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  fi
  log "installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
  # EHPC_TORCH is split into words so that it can carry pip options (--index-url ...).
  read -r -a torch_args <<< "$TORCH"
  "$VENV/bin/python" -m pip install -q "${torch_args[@]}"
  # the workflow (snakemake) and test (pytest) extras: ./run.sh and ./run.sh test need both
  "$VENV/bin/python" -m pip install -q -e ".[workflow,test]" "numpy<2"
  "$VENV/bin/python" - <<'PY'
import petsc4py, slepc4py, mpi4py  # noqa: F401  (fail here, not in the middle of a run)
from petsc4py import PETSc
from slepc4py import SLEPc  # noqa: F401
print("[ehpc setup] PETSc", ".".join(map(str, PETSc.Sys.getVersion())), "ready")
PY
  echo "$want" > "$stamp"
}

setup() { install_system; export_env; install_venv; }

# `snakemake --profile slurm` finds a profile by name in ~/.config/snakemake/ (or
# $XDG_CONFIG_HOME/snakemake/): link cluster/slurm there, never replacing a user's own.
install_profile() {
  local dir="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake" link
  link="$dir/slurm"
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$ROOT/cluster/slurm" ]; then return 0; fi
  if [ -e "$link" ] || [ -L "$link" ]; then
    log "$link exists and is not this checkout's profile; left as it is (use --profile $ROOT/cluster/slurm)"
    return 0
  fi
  mkdir -p "$dir"
  ln -s "$ROOT/cluster/slurm" "$link"
  log "linked $link -> $ROOT/cluster/slurm: snakemake --profile slurm now uses it"
}

cmd=${1:-workflow}
case "$cmd" in
  -*) cmd=workflow ;;  # ./run.sh -n, ./run.sh --configfile ...: all of it goes to Snakemake
  *) [ $# -gt 0 ] && shift ;;
esac
case "$cmd" in
  workflow)
    setup
    # Snakemake killed outright (SIGKILL, a lost login node) leaves its lock behind; with
    # no other Snakemake running, release it so that the rerun resumes.
    if [ -n "$(ls -A .snakemake/locks 2>/dev/null)" ] && ! pgrep -f "bin/snakemake" >/dev/null; then
      snakemake --unlock --cores 1 >/dev/null 2>&1 || true
    fi
    # without --configfile the Snakefile reads configs/default.yaml itself
    exec snakemake --cores "${EHPC_CORES:-all}" --rerun-incomplete "$@" ;;
  setup)
    if [ "${1:-}" = "--check" ]; then
      if venv_current; then log "environment ready: $VENV"; exit 0; fi
      log "$VENV is not set up for this checkout (wanted stamp $(setup_stamp)); run ./run.sh setup"
      exit 1
    fi
    [ $# -eq 0 ] || { echo "usage: ./run.sh setup [--check]" >&2; exit 2; }
    setup
    install_profile
    log "environment ready: $VENV (use it with: eval \"\$(./run.sh env)\")" ;;
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
    echo "usage: ./run.sh [workflow|setup|test|shell|env] [extra arguments], or ./run.sh [snakemake options]" >&2; exit 2 ;;
esac
