#!/usr/bin/env bash
# SmolLM2-135M (GQA 9 query / 3 KV heads), WikiText-2 first 10 windows of 1024, calibration 16 × 1024 C4 tokens,
# FLOPs kept 0.9…0.5: STAT vs FLAP and Wanda-sp as their authors released them, at both attention-unit
# granularities (one shared calibration per granularity). Rerunnable: finished rows are skipped.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_baselines_released}
python run.py -m attn_units=kv_group,query_head budget=[0.9,0.8,0.7,0.6,0.5] baselines=[flap,wanda_sp] \
  eval_windows=10 logger=none hydra.sweep.dir="$OUT" "$@"
R=results/smollm2_wikitext2_baselines_released
for u in kv_group query_head; do mkdir -p $R/runs/$u; cp "$OUT"/*attn_units=$u*/results.jsonl $R/runs/$u/; done
python -m stat_exp.report $R $R/runs --metric ppl_wikitext2 --best-of attn_units
