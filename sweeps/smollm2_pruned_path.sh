#!/usr/bin/env bash
# SmolLM2-135M, WikiText-2 (first 10 windows of 1024), KV-group units, FLOPs kept 0.9 ... 0.5: STAT's statistics
# from the pruned path (propagate=pruned: each layer's statistics, selection and fold on the model whose earlier
# layers are already pruned, sizes from the dense allocation), fitting the layer's own output on that path
# (target=self) or the dense model's (target=dense), and target=self with a larger fold ridge (1e-2), against the
# one dense pass (plain STAT). Calibration 16 x 1024 C4 train tokens, seed 0, for every run (the statistics cache
# key), the same windows. About 40 min alone. Study: results/smollm2/pruned_path.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_pruned_path}
common=(attn_units=kv_group budget=[0.9,0.8,0.7,0.6,0.5] eval_windows=10 logger=${LOGGER:-wandb})
python run.py "${common[@]}" logger.group=smollm2/pruned_path hydra.run.dir="$OUT/dense_pass" "$@"
python run.py -m "${common[@]}" method.options.propagate=pruned method.options.target=self,dense \
  logger.group=smollm2/pruned_path hydra.sweep.dir="$OUT" "$@"
python run.py "${common[@]}" method.options.propagate=pruned method.options.ridge=1e-2 \
  logger.group=smollm2/pruned_path hydra.run.dir="$OUT/ridge" "$@"
# Without reselection (reselect=false: the dense plan's units, folds refitted on the pruned path), KV groups; then
# query heads with the Fisher allocation (STAT's best configuration): chosen again on the pruned path among the heads
# of the KV groups the dense plan keeps (reselect=true), or the dense plan's units (reselect=false, beside plain STAT
# in the same run), and the Fisher allocation's dense pass; then the Fisher allocation with KV groups on the pruned path.
python run.py "${common[@]}" method.options.propagate=pruned method.options.reselect=false method.options.ridge=1e-2 \
  logger.group=smollm2/pruned_path hydra.run.dir="$OUT/dense_plan_units" "$@"
qh=(attn_units=query_head budget=[0.9,0.8,0.7,0.6,0.5] eval_windows=10 logger=${LOGGER:-wandb} method=stat_fisher)
python run.py "${qh[@]}" +method.options.propagate=pruned +method.options.ridge=1e-2 logger.group=smollm2/pruned_path \
  hydra.run.dir="$OUT/query_heads/reselect" "$@"
python run.py -m "${qh[@]}" +method.options.propagate=pruned +method.options.reselect=false \
  +method.options.ridge=1e-2 baselines=[stat] logger.group=smollm2/pruned_path hydra.sweep.dir="$OUT/query_heads" "$@"
python run.py "${qh[@]}" logger.group=smollm2/pruned_path hydra.run.dir="$OUT/query_heads/dense_pass" "$@"
python run.py "${common[@]}" method=stat_fisher +method.options.propagate=pruned +method.options.ridge=1e-2 \
  logger.group=smollm2/pruned_path hydra.run.dir="$OUT/fisher_kv_groups" "$@"
# Plain STAT (greedy allocation) with query heads on the pruned path.
python run.py "${qh[@]/method=stat_fisher/method=stat}" ++method.options.propagate=pruned ++method.options.ridge=1e-2 \
  logger.group=smollm2/pruned_path hydra.run.dir="$OUT/query_heads/greedy" "$@"
# The ridge alone: one dense pass with the fold's ridge at 1e-2 (KV groups).
python run.py "${common[@]}" method.options.ridge=1e-2 logger.group=smollm2/pruned_path hydra.run.dir="$OUT/ridge_dense_pass" "$@"
# STAT's units at FLAP's sizes (method=stat_flap_sizes), query heads, 0.8, on the pruned path (its dense pass:
# results/smollm2/units_vs_compensation).
python run.py attn_units=query_head budget=[0.8] eval_windows=10 logger=${LOGGER:-wandb} method=stat_flap_sizes \
  ++method.options.propagate=pruned ++method.options.ridge=1e-2 logger.group=smollm2/pruned_path \
  hydra.run.dir="$OUT/flap_sizes" "$@"
python -m stat_exp.report results/smollm2/pruned_path "$OUT" --metric ppl_wikitext2
