#!/usr/bin/env bash
# MiniLM-L6 SST-2 at FLOPs kept 0.5: calibration size 64 ... 1024 x seeds (conf/experiment/cmp_calib.yaml), STAT vs
# Kwon et al.; one Hydra multirun. Study: results/minilm/calibration_size.
set -euo pipefail
OUT=${OUT:-outputs/minilm_calibration_size}
python run.py -m experiment=cmp_calib seed=${SEEDS:-0,1,2} logger=${LOGGER:-wandb} \
  logger.group=minilm/calibration_size hydra.sweep.dir="$OUT" "$@"
python -m stat_exp.report results/minilm/calibration_size "$OUT" --metric accuracy_sst2 --by calib
