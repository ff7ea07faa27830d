#!/usr/bin/env bash
# Augmentation ablation on unseen speakers: folds 1-2 of the actors protocol (8 test actors, 480 clips),
# 30 epochs each, seed 0; every variant adds one augmentation to the notebook's white noise.
# Results: runs/ablation/<variant>/metrics.json; table: python scripts/ablation_summary.py.
set -euo pipefail
DATA=${1:-../shared/data/ravdess}
COMMON=(--data "$DATA" --protocol actors --no-final --only-folds 1 2 --epochs 30 --resume)
run() { name=$1; shift; python -m train "${COMMON[@]}" --out "runs/ablation/$name" "$@"; }
run noise-only       --no-time-shift --no-spec-augment
run noise-shift-spec
run noise-speed      --no-time-shift --no-spec-augment --speed 0.9 1.0 1.1
run noise-shift      --no-spec-augment
run noise-mixup      --no-time-shift --no-spec-augment --mixup 0.2
