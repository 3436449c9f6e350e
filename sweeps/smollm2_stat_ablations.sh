#!/usr/bin/env bash
# SmolLM2-135M, WikiText-2 first 10 windows of 1024, calibration 32 x 1024 C4: STAT vs its ablations (stat_nocorr,
# stat_paper) and the baselines at FLOPs kept 0.9 ... 0.5. Study: results/smollm2/stat_ablations.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_stat_ablations}
python run.py method=stat baselines=[stat_paper,stat_nocorr,flap,wanda_sp,magnitude] calib=32 eval_windows=10 \
  budget=[0.9,0.8,0.7,0.6,0.5] logger=${LOGGER:-wandb} logger.group=smollm2/stat_ablations hydra.run.dir="$OUT" "$@"
python -m stat_exp.report results/smollm2/stat_ablations "$OUT" --metric ppl_wikitext2
