#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct (GQA 12 query / 2 KV heads): FLAP and Wanda-sp as their authors released them at
# both attention-unit granularities, WikiText-2 first 10 windows of 2048, calibration 16 × 2048 C4 tokens, fp32
# weights; the same protocol as the STAT rows of the Qwen table (sweeps/issue11_qwen15_table.sh). BUDGETS picks
# the FLOPs kept (default 0.8; 0.9,0.8,0.7 take about 3 h per granularity on a 2-core CPU), UNITS the
# granularities, QH_BASELINES the methods run beside FLAP with query-head units (default Wanda-sp).
# One run directory per granularity; rerunnable (finished rows are skipped).
set -euo pipefail
OUT=${OUT:-outputs/qwen25_1_5b_baselines_released}
for units in ${UNITS:-kv_group query_head}; do
  extra=[wanda_sp]
  [ "$units" = query_head ] && extra=${QH_BASELINES:-[wanda_sp]}
  python run.py model=qwen25_coder_1_5b model.dtype=float32 method=flap baselines="$extra" \
    budget=[${BUDGETS:-0.8}] attn_units=$units dense=false logger=none paths.cache_max_gb=12 \
    hydra.run.dir="$OUT/$units" "$@"
done
R=results/qwen25_1_5b_wikitext2_baselines_released
for u in kv_group query_head; do
  [ -f "$OUT/$u/results.jsonl" ] || continue
  mkdir -p $R/runs/$u; cp "$OUT"/$u/results.jsonl $R/runs/$u/
done
python -m stat_exp.report $R $R/runs --metric ppl_wikitext2 --best-of attn_units
