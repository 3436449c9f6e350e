#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct, WikiText-2 (first 10 windows of 2048), FLOPs kept 0.8, query-head units, fp32,
# calibration 16 x 2048 C4 train tokens, seed 0: STAT with the allocation that prices downstream growth
# (allocation=fisher) against today's greedy allocation and Wanda-sp as released, one run (same calibration
# tokens and windows). The Fisher pass goes one window at a time (task.label_batch_size=1: a 2048-token backward
# pass peaks near 14 GB with each layer recomputed). About 2 h alone on a 2-core CPU; rerunnable (finished rows are skipped).
# Then the measured propagation (method=stat_propagated) with KV-group units, STAT's better granularity at 0.8 (its
# greedy row, 19.11, is in results/qwen25_1_5b/wikitext2_methods, whose rows the study shows beside): about 60 min
# alone (statistics walk 19 min, propagation walk 29 min, factorise and fold 4 min, the evaluation 6 min).
# Then the greedy allocation with each layer's curve normalised by its median token's residual energy instead of the
# mean (normalize=median, query heads: the statistics walk and about 5 min per budget, the walk cached), and STAT's
# usual greedy at 0.5 with query heads beside it (about 8 min from the cached walk).
# Studies: results/qwen25_1_5b/downstream_allocation and results/qwen25_1_5b/wikitext2_methods.
set -euo pipefail
OUT=${OUT:-outputs/qwen25_1_5b_query_head}
python run.py model=qwen25_coder_1_5b model.dtype=float32 method=stat_fisher baselines=[stat,wanda_sp] \
  attn_units=query_head budget=[0.8] task.label_batch_size=1 eval_windows=10 paths.cache_max_gb=12 \
  logger=${LOGGER:-wandb} logger.group=qwen25_1_5b/downstream_allocation hydra.run.dir="$OUT" "$@"
python run.py model=qwen25_coder_1_5b model.dtype=float32 method=stat_propagated attn_units=kv_group budget=[0.8] \
  dense=false eval_windows=10 paths.cache_max_gb=12 logger=${LOGGER:-wandb} logger.group=qwen25_1_5b/downstream_allocation \
  hydra.run.dir="${OUT}_propagated" "$@"
python run.py model=qwen25_coder_1_5b model.dtype=float32 attn_units=query_head budget=[0.8,0.7,0.5] \
  method.options.normalize=median dense=false eval_windows=10 paths.cache_max_gb=16 logger=${LOGGER:-wandb} \
  logger.group=qwen25_1_5b/downstream_allocation hydra.run.dir="${OUT}_median" "$@"
python run.py model=qwen25_coder_1_5b model.dtype=float32 attn_units=query_head budget=[0.5] dense=false \
  eval_windows=10 paths.cache_max_gb=16 logger=${LOGGER:-wandb} logger.group=qwen25_1_5b/downstream_allocation \
  hydra.run.dir="${OUT}_0.5" "$@"
python -m stat_exp.report results/qwen25_1_5b/downstream_allocation "$OUT" "${OUT}_propagated" "${OUT}_median" "${OUT}_0.5" \
  results/qwen25_1_5b/wikitext2_methods --metric ppl_wikitext2 --methods stat,stat_fisher,stat_propagated,flap,wanda_sp \
  --best-of attn_units --pool quant
python -m stat_exp.report results/qwen25_1_5b/wikitext2_methods "$OUT" --metric auto --methods stat,flap,wanda_sp \
  --best-of attn_units --pool quant
