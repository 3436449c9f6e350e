#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct at FLOPs kept 0.8: STAT's own allocation against FLAP's sizes with STAT's units
# (method=stat_flap_sizes) on held-out C4 (first 10 windows of 2048 of the validation slice), the calibration data's
# own distribution. On WikiText-2 FLAP's sizes win (17.85 against 19.57, results/qwen25_1_5b/units_vs_compensation)
# while on the calibration windows STAT's own plan has the lower loss (what method=stat_choose compares): this tells
# a corpus effect from an in-sample one. fp32, query-head units, 16 x 2048 C4 train tokens, seed 0; STAT's statistics
# from the cache of the units-vs-compensation runs; about 25 min alone on a 2-core CPU; rerunnable (finished rows
# are skipped). Study: results/qwen25_1_5b/c4_allocations.
set -euo pipefail
OUT=${OUT:-outputs/qwen25_1_5b_c4_allocations}
python run.py model=qwen25_coder_1_5b model.dtype=float32 task=c4 attn_units=query_head eval_windows=10 \
  budget=[${BUDGETS:-0.8}] dense=false method=stat "baselines=${METHODS:-[stat_flap_sizes]}" paths.cache_max_gb=12 \
  logger=${LOGGER:-wandb} logger.group=qwen25_1_5b/c4_allocations hydra.run.dir="$OUT"
python -m stat_exp.report results/qwen25_1_5b/c4_allocations results/qwen25_1_5b/c4_allocations "$OUT" \
  --metric ppl_c4
