#!/usr/bin/env bash
# MiniLM-L6 fine-tuned per task (the task configs' CPU-sized recipes; checkpoints cached), then STAT vs Kwon et al.,
# FLAP and magnitude-sp as released at FLOPs kept 0.7 ... 0.4; calibration 512 train examples, Kwon et al. on its
# released 2048 labelled examples. TASKS (default sst2,mrpc,stsb,qnli) x seeds 0,1,2 (pass seed=0 for one seed).
# One Hydra multirun; rerunnable. Study: results/minilm/glue_methods.
set -euo pipefail
OUT=${OUT:-outputs/minilm_glue_methods}
python run.py -m experiment=cmp_glue task=${TASKS:-sst2,mrpc,stsb,qnli} baselines=[kwon,flap,magnitude] \
  latency.enabled=false logger=${LOGGER:-wandb} logger.group=minilm/glue_methods hydra.sweep.dir="$OUT" "$@"
python -m stat_exp.report results/minilm/glue_methods "$OUT" --metric auto
