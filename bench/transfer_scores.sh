#!/usr/bin/env bash
# Band scores of a default run's model, with and without the band terms, on transfer cells
# labelled at Γ by bench/label_supercell.py (docs/BENCHMARKS.md, "The kinetic baseline and
# the band window"):
#
#     bash bench/transfer_scores.sh R OUT [LABEL.h5 ...]
#
# R is the workdir of a finished default workflow (./run.sh: results/default). Four models:
#   window  R's model as trained (readout fitted with the band window, the default)
#   nowindow  its readout refitted to the matrix elements alone (bench/readout_refit.py)
#   bw0.1, bw1  R's model fine-tuned with the band-energy loss, weight 0.1 (lr 5e-4) and
#               1 (lr 2e-4), 100 epochs, readout kept
# Each is scored by ehpc-evaluate on R's held-out cell (with the band path; the band
# cell's SCF runs for the first model only, the others reuse its bands.json) and on every
# LABEL; OUT/<model>/<cell>/metrics.json hold the scores, and the table is printed at the
# end. Models and scores already in OUT are reused, so a rerun adds only what is missing.
# BAND_ARGS (default "--kmesh 3 3 3", silicon's) are ehpc-evaluate's band-structure
# options for R's cell; graphene: BAND_ARGS="--kmesh 3 3 1 --band-path GMKG". FINE_TUNES
# (default "0.1:5e-4 1:2e-4") lists the band-energy fine-tunes as WEIGHT:LR. HELD_OUT
# (default test) is the split of R's dataset scored as the held-out cell.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,20p "$0"; exit 2; }
R=$1 OUT=$2
shift 2
cd "$(dirname "$0")/.."
eval "$(./run.sh env)"
mkdir -p "$OUT"
MODEL=$R/train/model.pt
[ -f "$MODEL" ] || { echo "transfer_scores: $MODEL: no trained model (run ./run.sh first)"; exit 1; }

FINE_TUNES=${FINE_TUNES:-0.1:5e-4 1:2e-4}
declare -A MODELS=([window]=$MODEL [nowindow]=$OUT/nowindow.pt)
[ -f "$OUT/nowindow.pt" ] || python bench/readout_refit.py --model "$MODEL" \
    --dataset "$R/dataset.h5" --out "$OUT/nowindow.pt" --threads 2
for pair in $FINE_TUNES; do
    W=${pair%%:*} LR=${pair##*:}
    MODELS[bw$W]=$OUT/bw$W/model.pt
    [ -f "$OUT/bw$W/model.pt" ] || ehpc-train --config "$R/train/config.yaml" \
        --set data.path="$R/dataset.h5" --set model.init="$MODEL" \
        --set train.band_weight="$W" --set train.band_kpoints=27 --set train.lr="$LR" \
        --set train.warmup_steps=0 --set train.readout_fit=false --set train.epochs=100 \
        --set train.patience=100 --set train.max_minutes=8 --out-dir "$OUT/bw$W"
done

REFERENCE=()  # the band cell's SCF runs once; later models reuse its bands.json
for name in "${!MODELS[@]}"; do
    M=${MODELS[$name]}
    [ -f "$OUT/$name/held_out/metrics.json" ] || ehpc-evaluate --model "$M" \
        --dataset "$R/dataset.h5" --split "${HELD_OUT:-test}" --out-dir "$OUT/$name/held_out" \
        --band-structure "$R/band_cell.extxyz" ${BAND_ARGS:---kmesh 3 3 3} --band-points 60 \
        "${REFERENCE[@]}"
    grep -q '"reference"' "$OUT/$name/held_out/bands.json" &&
        REFERENCE=(--band-reference "$OUT/$name/held_out/bands.json")
    for label in "$@"; do
        cell=$OUT/$name/$(basename "$label" .h5)
        [ -f "$cell/metrics.json" ] || ehpc-evaluate --model "$M" --dataset "$label" \
            --split all --out-dir "$cell"
    done
done
python bench/summarise_transfer.py "$OUT"
