#!/usr/bin/env bash
# MiniLM-L6 (BERT) fine-tuned per GLUE task (the task configs' CPU-sized recipes), then pruned at FLOPs kept
# 0.7/0.6/0.5/0.4: STAT vs Kwon et al., FLAP and magnitude-sp as released, SST-2, MRPC, STS-B and QNLI × pruning
# seeds 0, 1, 2 (calibration: 512 train examples; Kwon et al. also draw their released 2048 labelled examples).
# One Hydra multirun; rerunnable (finished jobs' rows are kept and skipped). Pass a launcher to parallelise.
set -euo pipefail
OUT=${OUT:-outputs/minilm_glue_baselines_released}
python run.py -m experiment=cmp_glue task=${TASKS:-sst2,mrpc,stsb,qnli} baselines=[kwon,flap,magnitude] \
  latency.enabled=false logger=none hydra.sweep.dir="$OUT" "$@"
R=results/minilm_glue_baselines_released
for d in "$OUT"/*/; do j=$(basename "$d"); mkdir -p "$R/runs/${j%%_*}"; cp "$d/results.jsonl" "$R/runs/${j%%_*}/"; done
python -m stat_exp.report $R $R/runs --metric auto
