#!/usr/bin/env bash
# SmolLM2-135M, WikiText-2 (first 10 windows of 1024), query-head units, FLOPs kept 0.9 ... 0.5, three calibration
# draws (16 x 1024 C4 train tokens, seeds 0, 1, 2): STAT's best configuration on seed 0 (the Fisher allocation on the
# pruned path, units chosen again within the dense plan's KV groups, fold ridge 1e-2; results/smollm2/pruned_path)
# against the one dense pass of plain STAT, the Fisher allocation and FLAP on the same tokens (the rows of
# results/smollm2/calibration_seeds_query_heads, recomputed here). About 35 min alone.
# Study: results/smollm2/pruned_path_seeds.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_pruned_path_seeds}
common=(seed=0,1,2 attn_units=query_head budget=[0.9,0.8,0.7,0.6,0.5] eval_windows=10 logger=${LOGGER:-wandb})
python run.py -m "${common[@]}" baselines=[stat_fisher,flap] logger.group=smollm2/pruned_path_seeds \
  hydra.sweep.dir="$OUT/dense_pass" "$@"
python run.py -m "${common[@]}" method=stat_fisher +method.options.propagate=pruned +method.options.ridge=1e-2 \
  logger.group=smollm2/pruned_path_seeds hydra.sweep.dir="$OUT/pruned_path" "$@"
python -m stat_exp.report results/smollm2/pruned_path_seeds "$OUT" --metric ppl_wikitext2 --columns seed
