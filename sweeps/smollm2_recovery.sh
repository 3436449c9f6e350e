#!/usr/bin/env bash
# SmolLM2-135M, WikiText-2 (first 10 windows of 1024): recovery fine-tuning after pruning. STAT (its best
# configuration: allocation=fisher, query-head units) and FLAP as released (its better granularity at these budgets,
# query heads), each at FLOPs kept 0.8 and 0.7, then LoRA (rank 8, alpha 16, 64 steps x 1 window of 1024 C4 train
# tokens that are not calibration windows, lr 3e-4) merged back; each row holds the score before and after.
# Calibration 16 x 1024 C4 train tokens, seed 0. Then 256 steps at 0.8 (four times the tokens and minutes).
# Study: results/smollm2/recovery.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_recovery}
python run.py method=stat_fisher baselines=[flap] attn_units=query_head budget=[0.8,0.7] recover=lora \
  eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/recovery hydra.run.dir="$OUT" "$@"
python run.py method=stat_fisher baselines=[flap] attn_units=query_head budget=0.8 recover=lora recover.steps=256 \
  eval_windows=10 logger=${LOGGER:-wandb} logger.group=smollm2/recovery hydra.run.dir="${OUT}_256" "$@"
python -m stat_exp.report results/smollm2/recovery "$OUT" "${OUT}_256" --metric ppl_wikitext2 --by recover_steps \
  --columns ppl_wikitext2_before_recovery,recover_steps,recover_tokens,recover_s,recover_loss_start,recover_loss_end
