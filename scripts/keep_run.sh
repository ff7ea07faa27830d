#!/usr/bin/env bash
# Copy a training run's finished parts into experiments/, to commit so a later session can resume the run:
#   scripts/keep_run.sh runs/cb2-s4
# Kept: the run's own files (clips.csv, train_config.json, and once finished its model, card and metrics) and
# every finished fold (result.json and model/). Not kept: last.pt, the per-epoch resume state, so an unfinished
# fold or final fit starts again.
set -euo pipefail
run=${1:?usage: scripts/keep_run.sh RUN_DIR}
dest=$(pwd)/experiments/$(basename "$run")
mkdir -p "$dest"
find "$run" -maxdepth 1 -type f ! -name '*.pt' -exec cp {} "$dest/" \;
# The final fit's model is written at the run's top level (copied above); runs/final holds only its last.pt.
for fold in "$run"/runs/actors-fold*/; do
  [ -f "$fold/result.json" ] || continue
  name=$(basename "$fold")
  mkdir -p "$dest/runs/$name"
  (cd "$fold" && find . -type f ! -name '*.pt' -exec cp --parents {} "$dest/runs/$name/" \;)
done
du -sh "$dest"
