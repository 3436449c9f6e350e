#!/usr/bin/env bash
# What bf16 storage changes: SmolLM2-135M stored in fp32 vs bf16 (a CPU computes both in fp32, a layer at a
# time for bf16), WikiText-2 first 10 windows of 1024, calib 16 × 1024 C4, STAT, FLAP and Wanda-sp at 0.9/0.7.
set -euo pipefail
python run.py -m model.dtype=float32,bfloat16 budget=[0.9,0.7] baselines=[flap,wanda_sp] eval_windows=10 \
  logger=none hydra.sweep.dir=outputs/issue11_smollm2_bf16 "$@"
python -m stat_exp.report results/issue11_smollm2_bf16 outputs/issue11_smollm2_bf16/* --metric ppl_wikitext2 \
  --by dtype
