#!/usr/bin/env bash
# SmolLM2-135M, WikiText-2 first 40 windows of 1024, calibration 32 x 1024 C4: the simple baselines
# (conf/experiment/smollm2_baselines.yaml). Study: results/smollm2/wikitext2_40_windows.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_simple_baselines}
python run.py experiment=smollm2_baselines logger=${LOGGER:-wandb} logger.group=smollm2/wikitext2_40_windows \
  hydra.run.dir="$OUT" "$@"
python -m stat_exp.report results/smollm2/wikitext2_40_windows "$OUT" --metric ppl_wikitext2
