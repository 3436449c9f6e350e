#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct: STAT vs FLAP vs Wanda-sp at FLOPs kept 0.9…0.5 on WikiText-2 (first 10 windows of
# 2048), calibrated on 16 × 2048 C4 tokens, fp32 weights (this CPU has no bf16 units). One run directory: rows
# already in its results.jsonl are skipped, so the command can be stopped and rerun (≈ 3 h on a 2-core CPU).
set -euo pipefail
out=${OUT:-outputs/issue11_qwen15_table}
python run.py model=qwen25_coder_1_5b model.dtype=float32 budget=[0.9,0.8,0.7,0.6,0.5] baselines=[flap,wanda_sp] \
  logger=none paths.cache_max_gb=12 hydra.run.dir="$out" "$@"
python -m stat_exp.report results/issue11_qwen15_table "$out" --metric ppl_wikitext2
