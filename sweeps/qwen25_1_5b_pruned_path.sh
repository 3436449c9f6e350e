#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B fp32, WikiText-2 (first 10 windows of 2048), KV-group units (STAT's better granularity at 0.8),
# FLOPs kept 0.8 and 0.7: STAT on the pruned path (propagate=pruned: each layer's statistics, selection and fold on the model
# whose earlier layers are already pruned, sizes from the dense allocation) with the fold's ridge at 1e-2, the
# configuration that gained most on SmolLM2-135M (results/smollm2/pruned_path). Calibration 16 x 2048 C4 train
# tokens, seed 0: the tokens of results/qwen25_1_5b/wikitext2_methods (STAT 19.11, FLAP 18.94 at 0.8). About 75 min
# alone on a 2-core CPU (the dense statistics walk about 13-19 min, each budget's pruned-path walk about 21, its evaluation 3-4);
# a 1.5B fp32 model holds about 15 GB: run it alone on a 24 GB machine. The dense statistics (4.6 GB) stay cached
# under paths.cache_max_gb=12; a run with the default bound (4) evicts them. Study: results/qwen25_1_5b/pruned_path.
set -euo pipefail
OUT=${OUT:-outputs/qwen25_1_5b_pruned_path}
python run.py model=qwen25_coder_1_5b model.dtype=float32 calib=16 attn_units=kv_group budget=[0.8,0.7] eval_windows=10 \
  dense=false method.options.propagate=pruned method.options.ridge=1e-2 paths.cache_max_gb=12 \
  logger=${LOGGER:-wandb} logger.group=qwen25_1_5b/pruned_path hydra.run.dir="$OUT" "$@"
# STAT's units at FLAP's sizes (method=stat_flap_sizes: each site's count from FLAP's score and global threshold,
# query heads chosen by their pivots within FLAP's KV groups), query heads, 0.8, on the pruned path: about 30 min
# (its dense pass, 17.85: results/qwen25_1_5b/units_vs_compensation).
python run.py model=qwen25_coder_1_5b model.dtype=float32 calib=16 attn_units=query_head budget=[0.8] eval_windows=10 \
  dense=false method=stat_flap_sizes ++method.options.propagate=pruned ++method.options.ridge=1e-2 \
  paths.cache_max_gb=12 logger=${LOGGER:-wandb} logger.group=qwen25_1_5b/pruned_path hydra.run.dir="$OUT/flap_sizes" "$@"
# The table sets the row beside the baselines study's rows on the same tokens (STAT's dense pass, FLAP, Wanda-sp).
python -m stat_exp.report results/qwen25_1_5b/pruned_path "$OUT" results/qwen25_1_5b/wikitext2_methods --metric ppl_wikitext2 \
  --pool quant
