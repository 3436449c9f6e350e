#!/usr/bin/env bash
# MiniLM-L6 fine-tuned per task (the task configs' CPU-sized recipes; checkpoints cached), then STAT vs Kwon et al.,
# FLAP and magnitude-sp as released at FLOPs kept 0.7 ... 0.4; calibration 512 train examples, Kwon et al. on its
# released 2048 labelled examples. TASKS (default sst2,mrpc,stsb,qnli) x seeds 0,1,2 (pass seed=0 for one seed).
# Per seed on a 2-core CPU, alone: SST-2 5 min, MRPC 9, STS-B 9, QNLI 19 (Kwon et al.'s mask tuning is most of it);
# a fine-tune the first time: STS-B 96 s, QNLI 240 s. One Hydra multirun; rerunnable (finished runs are skipped).
# Study: results/minilm/glue_methods (times.md: each method's calibration and pruning seconds).
set -euo pipefail
OUT=${OUT:-outputs/minilm_glue_methods}
python run.py -m experiment=cmp_glue task=${TASKS:-sst2,mrpc,stsb,qnli} baselines=[kwon,flap,magnitude] \
  latency.enabled=false logger=${LOGGER:-wandb} logger.group=minilm/glue_methods hydra.sweep.dir="$OUT" "$@"
python -m stat_exp.report results/minilm/glue_methods "$OUT" --metric auto --times
