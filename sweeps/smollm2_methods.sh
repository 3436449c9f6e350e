#!/usr/bin/env bash
# SmolLM2-135M, WikiText-2 (first 10 windows of 1024): STAT vs FLAP and Wanda-sp as released, both attention-unit
# granularities, FLOPs kept 0.9 ... 0.5; calibration 16 x 1024 C4 train tokens, seed 0. One Hydra multirun over
# attn_units (every method of a job on one calibration capture); rerunnable (finished rows are skipped).
# Study: results/smollm2/wikitext2_methods (each method at its better granularity: best.md).
set -euo pipefail
OUT=${OUT:-outputs/smollm2_wikitext2_methods}
python run.py -m attn_units=kv_group,query_head budget=[0.9,0.8,0.7,0.6,0.5] baselines=[flap,wanda_sp] \
  eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/wikitext2_methods hydra.sweep.dir="$OUT" "$@"
python -m stat_exp.report results/smollm2/wikitext2_methods "$OUT" --metric ppl_wikitext2 --best-of attn_units
