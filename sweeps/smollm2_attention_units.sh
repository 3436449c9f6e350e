#!/usr/bin/env bash
# SmolLM2-135M (GQA: 9 query / 3 KV heads), WikiText-2 first 10 windows of 1024, calibration 16 x 1024 C4: KV-group vs
# query-head attention units, STAT and the baselines, FLOPs kept 0.9 ... 0.5. Study: results/smollm2/attention_units.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_attention_units}
python run.py -m attn_units=kv_group,query_head budget=[0.9,0.8,0.7,0.6,0.5] baselines=[flap,wanda_sp] \
  eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/attention_units hydra.sweep.dir="$OUT" "$@"
python -m stat_exp.report results/smollm2/attention_units "$OUT" --metric ppl_wikitext2
