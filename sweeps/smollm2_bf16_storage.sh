#!/usr/bin/env bash
# SmolLM2-135M: fp32 vs bf16 weight storage (statistics in fp32/fp64 either way), STAT, FLAP, Wanda-sp at 0.9 and
# 0.7; WikiText-2 first 10 windows, calibration 16 x 1024 C4. Study: results/smollm2/bf16_storage.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_bf16_storage}
python run.py -m model.dtype=float32,bfloat16 budget=[0.9,0.7] baselines=[flap,wanda_sp] eval_windows=10 \
  logger=${LOGGER:-wandb} logger.group=smollm2/bf16_storage hydra.sweep.dir="$OUT" "$@"
python -m stat_exp.report results/smollm2/bf16_storage "$OUT" --metric ppl_wikitext2
