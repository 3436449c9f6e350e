#!/usr/bin/env bash
# Issue 13: SmolLM2-135M (GQA 9 query / 3 KV heads), WikiText-2 first 10 windows of 1024, FLOPs kept 0.9…0.5:
# STAT, FLAP and Wanda-sp with KV-group units vs query-head units (one shared calibration per unit choice).
set -euo pipefail
python run.py -m attn_units=kv_group,query_head budget=[0.9,0.8,0.7,0.6,0.5] baselines=[flap,wanda_sp] \
  eval_windows=10 logger=none hydra.sweep.dir=outputs/issue13_query_heads "$@"
python -m stat_exp.report results/issue13_query_heads outputs/issue13_query_heads/* --metric ppl_wikitext2 \
  --by attn_units
