#!/usr/bin/env bash
# Channel-robustness ablation on unseen speakers: folds 1-2 of the actors protocol (8 test actors, 480 clips),
# 60 epochs each, seed 0. Every fold's model is scored clean and under each train.robustness condition.
# Results: runs/ablation-channels/<variant>/metrics.json; table: python scripts/ablation_summary.py --channels.
set -euo pipefail
DATA=${1:-../shared/data/ravdess}
COMMON=(--data "$DATA" --protocol actors --no-final --only-folds 1 2 --epochs 60 --resume --early-stopping)
run() { name=$1; shift; python -m train "${COMMON[@]}" --out "runs/ablation-channels/$name" "$@"; }
run channels                    # every channel of ChannelConfig's defaults, before trimming
run channels-floor60 --model dynamic_range_db=60
run channels-mild    --reverb-prob 0.2 --noise-prob 0.5 --snr 5 30 --gain-prob 0.2
run white-only       --noise-types white --snr 15 30 --reverb-prob 0 --telephone-prob 0 --codec-prob 0 --gain-prob 0
run channels-bandnorm --model normalize_bands=true  # cepstral mean normalisation of the log-mel
run channels-90ep --epochs 90  # the longer schedule: validation was still rising at epoch 50-60
run channels-90ep-p30 --epochs 90 --patience 30  # the same, with patience scaled to the schedule
run channels-ema --ema-decay 0.995  # validate and keep an exponential moving average of the weights
run channels-ema-speed08-12 --ema-decay 0.995 --speed 0.8 0.9 1.0 1.1 1.2  # wider speed perturbation
run channels-ema-hiss --ema-decay 0.995 --hiss-prob 0.5  # a microphone hiss 35-65 dB below the voice on half the clips
run channels-consistency --consistency 1.0  # the KL of each degraded clip's prediction from its clean view
run channels-seed1 --seed 1  # the shipped recipe with other seeds: how far apart two draws of one recipe land,
run channels-seed2 --seed 2  # and what an ensemble of seeds gives (python scripts/ablation_summary.py --ensemble)
# Distillation: one model of the shipped size taught by the three seeds' models of the same fold (their mean
# scored 62.5% on folds 1-2); half the loss is the KL from the teachers' mean probabilities at temperature 2.
run channels-distill3 --teachers runs/ship runs/ablation-channels/channels-seed1 runs/ablation-channels/channels-seed2
# ... the same, the teachers hearing each clip clean while the student hears it degraded
run channels-distill3-clean --teachers-hear-clean \
  --teachers runs/ship runs/ablation-channels/channels-seed1 runs/ablation-channels/channels-seed2
run channels-floor-q10 --model noise_floor_quantile=0.1  # spectral subtraction of each band's 10% quantile
run channels-no-es --no-early-stopping  # the 2 validation actors train too (16 per fold), full schedule, last epoch kept
run channels-pcen --model pcen=true  # per-channel energy normalisation (fixed parameters) in place of the dB scale
