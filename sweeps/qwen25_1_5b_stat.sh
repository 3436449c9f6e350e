#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct, WikiText-2 first 10 windows of 2048, calibration 16 x 2048 C4, fp32, seed 0: STAT
# at FLOPs kept 0.9 ... 0.5 (about 3 h on a 2-core CPU with the baselines; rerunnable). METHODS adds baselines.
# Study: results/qwen25_1_5b/stat_budgets.
set -euo pipefail
OUT=${OUT:-outputs/qwen25_1_5b_stat_budgets}
python run.py model=qwen25_coder_1_5b model.dtype=float32 budget=[0.9,0.8,0.7,0.6,0.5] baselines=${METHODS:-[]} \
  logger=${LOGGER:-wandb} logger.group=qwen25_1_5b/stat_budgets paths.cache_max_gb=12 hydra.run.dir="$OUT" "$@"
python -m stat_exp.report results/qwen25_1_5b/stat_budgets "$OUT" --metric ppl_wikitext2
