#!/usr/bin/env bash
# MiniLM-L6 SST-2 at FLOPs kept 0.5: measured CPU latency of the dense and every sliced model (32 x 128 random tokens,
# median of 20 after 3 warm-ups). Run it alone on the machine. Study: results/minilm/latency.
set -euo pipefail
OUT=${OUT:-outputs/minilm_latency}
python run.py experiment=minilm_glue task=sst2 budget=0.5 baselines=[kwon,flap,magnitude] latency.enabled=true \
  latency.batch_size=32 latency.seqlen=128 latency.repeats=20 logger=${LOGGER:-wandb} logger.group=minilm/latency \
  hydra.run.dir="$OUT" "$@"
python -m stat_exp.report results/minilm/latency "$OUT" --metric accuracy_sst2
