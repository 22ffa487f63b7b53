#!/usr/bin/env bash
# Trains a benchmark's dataset the way the default workflow trains its own: the training
# config and the train.set overrides of configs/default.yaml, with the caller's wall-time
# budget and band-window k-points in place of the default's:
#
#     bash bench/train_like_default.sh R DATASET MINUTES KPOINTS
#
# R/dataset.h5 becomes a link to DATASET and the model goes to R/train, laid out as a
# workflow's workdir for bench/transfer_scores.sh.  A model already in R/train is kept.
set -euo pipefail
[ $# -eq 4 ] || { sed -n 2,9p "$0"; exit 2; }
R=$1 DATASET=$2 MINUTES=$3 KPOINTS=$4
cd "$(dirname "$0")/.."
eval "$(./run.sh env)"
mkdir -p "$R"
ln -sf "$(realpath --relative-to="$R" "$DATASET")" "$R/dataset.h5"
[ -f "$R/train/model.pt" ] && exit 0
mapfile -t DEFAULT < <(python -c "
import json, yaml
train = yaml.safe_load(open('configs/default.yaml'))['train']
print(train['config'])
for key, value in (train['set'] or {}).items():
    print(f'--set={key}={json.dumps(value)}')")
ehpc-train --config "${DEFAULT[0]}" "${DEFAULT[@]:1}" --set data.path="$R/dataset.h5" \
    --set train.max_minutes="$MINUTES" --set train.readout_kpoints="$KPOINTS" --out-dir "$R/train"
