#!/usr/bin/env bash
# Graphene, smeared, on a smaller scale than silicon (docs/BENCHMARKS.md, "Graphene:
# floor, model and total band errors"), trained and scored the way the default workflow
# does silicon:
#
#     bash bench/graphene.sh
#
# 1. bench/accuracy.py labels 9 rattled (0.05 Å) and strained (1 %) 2-atom sheets, PBE,
#    gth-dzvp-molopt-sr, pairs within 10 Å, Fermi-Dirac 0.1 eV on a 3x3x1 mesh (it holds
#    K), split 6/1/2, and a rattled 72-atom sheet at Γ (6x6 folds K onto Γ), all cached in
#    bench/data/graphene;
# 2. bench/train_like_default.sh: the default workflow's training (kinetic baseline,
#    TRAIN_MINUTES of Adam, default 3, then the readout fit with the band window at 36
#    k-points, the 6x6x1 refinement);
# 3. bench/transfer_scores.sh: the model with and without the band terms on the held-out
#    sheets, the band path Γ-M-K-Γ of the perfect sheet and the 72-atom sheet, all
#    against the true (smeared) SCF.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(./run.sh env)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
D=bench/data/graphene
R=$D/run
python bench/accuracy.py graphene --n-train 6 --n-val 1 --n-test 2 --kmesh 3 3 1 \
    --transfer 6 --data-only --out "$D/data_only.json"
bash bench/train_like_default.sh "$R" "$D/c2_gth-dzvp-molopt-sr_c10_fermi0.1_6_1_2.h5" \
    "${TRAIN_MINUTES:-3}" 36
python -c "import sys; sys.path.insert(0, 'bench'); from accuracy import CRYSTALS; \
from ase.io import write; write('$R/band_cell.extxyz', CRYSTALS['graphene'].unit())"
BAND_ARGS="--kmesh 3 3 1 --band-path GMKG" FINE_TUNES="0.1:5e-4" bash bench/transfer_scores.sh "$R" "$D/scores" \
    "$D/c72_00000_gth-dzvp-molopt-sr_gamma_c10_fermi0.1.h5"
