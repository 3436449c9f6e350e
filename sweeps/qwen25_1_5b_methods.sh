#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct (GQA 12 query / 2 KV heads), WikiText-2 first 10 windows of 2048, calibration
# 16 x 2048 C4 tokens, fp32 weights, seed 0: STAT, FLAP and Wanda-sp as released at both attention-unit
# granularities. BUDGETS picks the FLOPs kept (default 0.8; the study has 0.9,0.8,0.7 at both granularities: about
# 2 h per granularity alone on a 2-core CPU once STAT's statistics are cached, Wanda-sp's sequential pass ~20 min
# and every evaluation ~6 min per budget; and 0.6,0.5 with KV groups: UNITS=kv_group BUDGETS=0.6,0.5, 58 min alone
# with the statistics walk), UNITS the granularities, METHODS the methods beside the main `method=`. One run
# directory per granularity; rerunnable (finished rows are skipped). Study: results/qwen25_1_5b/wikitext2_methods.
set -euo pipefail
OUT=${OUT:-outputs/qwen25_1_5b_wikitext2_methods}
for units in ${UNITS:-kv_group query_head}; do
  python run.py model=qwen25_coder_1_5b model.dtype=float32 baselines=${METHODS:-[flap,wanda_sp]} \
    budget=[${BUDGETS:-0.8}] attn_units=$units logger=${LOGGER:-wandb} logger.group=qwen25_1_5b/wikitext2_methods \
    paths.cache_max_gb=12 hydra.run.dir="$OUT/$units" "$@"
done
python -m stat_exp.report results/qwen25_1_5b/wikitext2_methods "$OUT" --metric auto --methods stat,flap,wanda_sp \
  --best-of attn_units --pool quant
