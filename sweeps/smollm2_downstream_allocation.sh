#!/usr/bin/env bash
# SmolLM2-135M, WikiText-2 (first 10 windows of 1024): STAT's allocation that prices downstream growth
# (allocation=fisher: each site's ID error curve weighted by the model's Fisher on the site's output) against
# today's (greedy, residual-normalised), both attention-unit granularities, FLOPs kept 0.9 ... 0.5; calibration
# 16 x 1024 C4 train tokens, seed 0; the same run, so the same calibration tokens and windows. Then the measured
# propagation (method=stat_propagated: greedy sizes, each layer's error growth measured on the model pruned to
# them, greedy again on the curves weighted by the growth to the last layer), same tokens and windows (seeded); and
# the greedy allocation with each layer's curve normalised by its median token's residual energy instead of the mean
# (normalize=median: blind to the attention sinks' massive activations), query heads, on the three calibration draws
# of the seeds study below (seed 0 in this study too); about 2.5 min a draw alone.
# Study: results/smollm2/downstream_allocation. Last, with query heads, STAT, the Fisher allocation and FLAP at 16 and
# at 32 x 1024 calibration tokens (the three methods on the same tokens in each run; about 8 min alone per run):
# study results/smollm2/calibration_size_query_heads. Then the same three methods at 16 x 1024 over three calibration
# draws (seed=0,1,2: the tokens and the Fisher's sampled targets; the windows stay the first 10): how far the
# draw alone moves each row; study results/smollm2/calibration_seeds_query_heads.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_downstream_allocation}
python run.py -m attn_units=kv_group,query_head budget=[0.9,0.8,0.7,0.6,0.5] baselines=[stat_fisher] \
  eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/downstream_allocation hydra.sweep.dir="$OUT" "$@"
python run.py -m attn_units=kv_group,query_head budget=[0.9,0.8,0.7,0.6,0.5] method=stat_propagated \
  eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/downstream_allocation hydra.sweep.dir="$OUT/propagated" "$@"
python run.py -m seed=0,1,2 attn_units=query_head budget=[0.9,0.8,0.7,0.6,0.5] method.options.normalize=median \
  dense=false eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/downstream_allocation \
  hydra.sweep.dir="$OUT/median" "$@"
python -m stat_exp.report results/smollm2/downstream_allocation "$OUT"/[01]_* "$OUT/propagated" "$OUT"/median/0_* \
  --metric ppl_wikitext2 --best-of attn_units  # the seed-0 runs (Hydra's job folders are <num>_<overrides>)
python run.py -m calib=16,32 attn_units=query_head budget=[0.9,0.8,0.7,0.6,0.5] baselines=[stat_fisher,flap] \
  eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/calibration_size_query_heads hydra.sweep.dir="$OUT/calibration" "$@"
python -m stat_exp.report results/smollm2/calibration_size_query_heads "$OUT/calibration" --metric ppl_wikitext2
python run.py -m seed=0,1,2 attn_units=query_head budget=[0.9,0.8,0.7,0.6,0.5] baselines=[stat_fisher,flap] \
  eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/calibration_seeds_query_heads hydra.sweep.dir="$OUT/seeds" "$@"
python -m stat_exp.report results/smollm2/calibration_seeds_query_heads "$OUT/seeds" "$OUT/median" --metric ppl_wikitext2 \
  --columns seed
