#!/usr/bin/env bash
# Augmentation ablation on unseen speakers: folds 1-2 of the actors protocol (8 test actors, 480 clips),
# 30 epochs each, seed 0; every variant adds one augmentation to the notebook's white noise.
# Results: runs/ablation/<variant>/metrics.json; table: python scripts/ablation_summary.py.
set -euo pipefail
DATA=${1:-../shared/data/ravdess}
COMMON=(--data "$DATA" --protocol actors --no-final --only-folds 1 2 --epochs 30 --resume --early-stopping)
run() { name=$1; shift; python -m train "${COMMON[@]}" --out "runs/ablation/$name" "$@"; }
run noise-only       --speed 1.0 --no-time-shift --no-spec-augment
run noise-shift-spec --speed 1.0 --time-shift --spec-augment
run noise-speed      --speed 0.9 1.0 1.1 --no-time-shift --no-spec-augment
run noise-shift      --speed 1.0 --time-shift --no-spec-augment
run noise-mixup      --speed 1.0 --no-time-shift --no-spec-augment --mixup 0.2
